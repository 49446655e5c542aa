//! Feature rows → Parquet, the format Spark, pandas and DuckDB all read. Failed images are rows too,
//! with `error` set and the other columns null, so a job's output always has one row per input.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Float32Type, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, ImageError};
use crate::pipeline::Record;

/// One input and what became of it.
pub type Row<'a> = (&'a str, &'a Result<Record, ImageError>);

fn box_fields() -> Fields {
    ["xmin", "ymin", "xmax", "ymax"].iter().map(|n| Field::new(*n, DataType::Float32, false)).collect()
}

fn crop_fields() -> Fields {
    ["left", "top", "right", "bottom"].iter().map(|n| Field::new(*n, DataType::Int32, false)).collect()
}

/// The output schema; `code_bytes` is the packed code length (bits / 8).
pub fn schema(code_bytes: usize) -> SchemaRef {
    let feature = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
    let code = DataType::FixedSizeBinary(code_bytes as i32);
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("width", DataType::Int32, true),
        Field::new("height", DataType::Int32, true),
        Field::new("detected", DataType::Boolean, true),
        Field::new("class_id", DataType::Int32, true),
        Field::new("class_name", DataType::Utf8, true),
        Field::new("score", DataType::Float32, true),
        Field::new("box", DataType::Struct(box_fields()), true),
        Field::new("crop", DataType::Struct(crop_fields()), true),
        Field::new("feature", feature.clone(), true),
        Field::new("code", code.clone(), true),
        Field::new("whole_feature", feature, true),
        Field::new("whole_code", code, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// Builds one Arrow batch from rows.
pub fn record_batch(rows: &[Row], code_bytes: usize) -> Result<RecordBatch, Error> {
    let ok = |i: usize| rows[i].1.as_ref().ok();
    let records: Vec<Option<&Record>> = (0..rows.len()).map(ok).collect();
    let int = |f: &dyn Fn(&Record) -> Option<i32>| -> ArrayRef {
        Arc::new(records.iter().map(|r| r.and_then(f)).collect::<Int32Array>())
    };
    let valid = |f: &dyn Fn(&Record) -> bool| -> NullBuffer { records.iter().map(|r| r.is_some_and(f)).collect() };

    let boxes = records.iter().map(|r| r.and_then(|r| r.bbox));
    let box_coords: Vec<[f32; 4]> = boxes.clone().map(|b| b.map_or([0.0; 4], |b| [b.xmin, b.ymin, b.xmax, b.ymax])).collect();
    let box_children: Vec<ArrayRef> =
        (0..4).map(|c| Arc::new(Float32Array::from_iter_values(box_coords.iter().map(|b| b[c]))) as ArrayRef).collect();
    let box_array = StructArray::try_new(box_fields(), box_children, Some(valid(&|r| r.bbox.is_some())))?;

    let crop_coords: Vec<[i32; 4]> = records
        .iter()
        .map(|r| r.map_or([0; 4], |r| [r.crop.left, r.crop.top, r.crop.right, r.crop.bottom].map(|v| v as i32)))
        .collect();
    let crop_children: Vec<ArrayRef> =
        (0..4).map(|c| Arc::new(Int32Array::from_iter_values(crop_coords.iter().map(|b| b[c]))) as ArrayRef).collect();
    let crop_array = StructArray::try_new(crop_fields(), crop_children, Some(valid(&|_| true)))?;

    let features = |f: &dyn Fn(&Record) -> Option<&Vec<f32>>| -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
            records.iter().map(|r| r.and_then(f).map(|v| v.iter().map(|x| Some(*x)))),
        ))
    };
    let codes = |f: &dyn Fn(&Record) -> Option<&Vec<u8>>| -> Result<ArrayRef, Error> {
        let array = FixedSizeBinaryArray::try_from_sparse_iter_with_size(records.iter().map(|r| r.and_then(f)), code_bytes as i32)?;
        Ok(Arc::new(array))
    };

    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(path, _)| *path))),
        int(&|r| Some(r.width as i32)),
        int(&|r| Some(r.height as i32)),
        Arc::new(records.iter().map(|r| r.map(|r| r.detected)).collect::<BooleanArray>()),
        int(&|r| r.class_id.map(|c| c as i32)),
        Arc::new(records.iter().map(|r| r.and_then(|r| r.class_name.as_deref())).collect::<StringArray>()),
        Arc::new(records.iter().map(|r| r.and_then(|r| r.score)).collect::<Float32Array>()),
        Arc::new(box_array),
        Arc::new(crop_array),
        features(&|r| r.feature.as_ref()),
        codes(&|r| r.code.as_ref())?,
        features(&|r| r.whole_feature.as_ref()),
        codes(&|r| r.whole_code.as_ref())?,
        Arc::new(rows.iter().map(|(_, result)| result.as_ref().err().map(|e| e.to_string())).collect::<StringArray>()),
    ];
    Ok(RecordBatch::try_new(schema(code_bytes), columns)?)
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error::Output(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Error {
        Error::Output(e.to_string())
    }
}

/// Streams rows into a Snappy-compressed Parquet file, batch by batch, so memory stays flat however
/// many images a run covers.
pub struct ParquetSink {
    writer: ArrowWriter<File>,
    code_bytes: usize,
}

impl ParquetSink {
    pub fn create(path: &Path, code_bytes: usize) -> Result<ParquetSink, Error> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, schema(code_bytes), Some(properties))?;
        Ok(ParquetSink { writer, code_bytes })
    }

    pub fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        let batch = record_batch(rows, self.code_bytes)?;
        self.writer.write(&batch)?;
        Ok(())
    }

    pub fn finish(self) -> Result<(), Error> {
        self.writer.close()?;
        Ok(())
    }
}

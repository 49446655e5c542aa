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
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
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

/// The record batches of a features Parquet file written by `imgfeat extract` (or a Spark job), read
/// one at a time; errors name the file.
pub fn read_features(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch, Error>>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|e| features_error(path, e))?;
    let path = path.to_path_buf();
    Ok(reader.map(move |batch| batch.map_err(|e| features_error(&path, e))))
}

/// A column of a features file's batch, or an error saying the file is not one.
pub fn features_column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a ArrayRef, Error> {
    batch.column_by_name(name).ok_or_else(|| features_error(path, format!("no column {name:?}; is it an imgfeat features file?")))
}

/// What is wrong with a features file, naming it.
pub fn features_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {message}", path.display()))
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
        // Row groups of 4096 rows (~45 MB of features): the writer holds one in memory at a time.
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(4096))
            .build();
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

/// Near-duplicate groups (`imgfeat dedup`) as Parquet: one row per member, with its group number and
/// the group's representative.
pub fn write_groups(path: &Path, groups: &[Vec<usize>], rows: &[crate::search::IndexedRow]) -> Result<(), Error> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("group", DataType::Int32, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("representative", DataType::Utf8, false),
    ]));
    let members = groups.iter().enumerate().flat_map(|(g, m)| m.iter().map(move |&r| (g, r, m[0])));
    let (mut group, mut member, mut representative) = (Vec::new(), Vec::new(), Vec::new());
    for (g, r, first) in members {
        group.push(g as i32);
        member.push(rows[r].path.as_str());
        representative.push(rows[first].path.as_str());
    }
    let columns: Vec<ArrayRef> =
        vec![Arc::new(Int32Array::from(group)), Arc::new(StringArray::from(member)), Arc::new(StringArray::from(representative))];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Rows packed into one buffer for the JNI edge: one copy across the boundary per batch instead of
/// dozens of small Java arrays per row. Little-endian; `str` is an i32 byte length and UTF-8 bytes;
/// `floats` and `bytes` are an i32 element count (-1 for null) and the elements.
///
/// ```text
/// "IFR1"  u32 rows
/// per row: u8 status (0 ok, 1 error)
///   error: str message
///   ok:    i32 width, i32 height, u8 detected,
///          if detected: i32 class_id, str class_name, f32 score, f32 xmin, ymin, xmax, ymax
///          i32 crop left, top, right, bottom
///          floats feature, bytes code, floats whole_feature, bytes whole_code
/// ```
/// `jvm-bindings/src/main/scala/ai/imgfeat/PackedRows.scala` reads it.
pub fn pack_rows(results: &[Result<Record, ImageError>]) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn put_i32(out: &mut Vec<u8>, v: i32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f32(out: &mut Vec<u8>, v: f32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn put_floats(out: &mut Vec<u8>, v: Option<&Vec<f32>>) {
        put_i32(out, v.map_or(-1, |v| v.len() as i32));
        v.into_iter().flatten().for_each(|&x| put_f32(out, x));
    }
    fn put_bytes(out: &mut Vec<u8>, v: Option<&Vec<u8>>) {
        put_i32(out, v.map_or(-1, |v| v.len() as i32));
        out.extend_from_slice(v.map_or(&[][..], Vec::as_slice));
    }
    let mut out = Vec::with_capacity(8 + results.len() * 11_000);
    out.extend_from_slice(b"IFR1");
    out.extend_from_slice(&(results.len() as u32).to_le_bytes());
    for result in results {
        match result {
            Err(e) => {
                out.push(1);
                put_str(&mut out, &e.to_string());
            }
            Ok(r) => {
                out.push(0);
                put_i32(&mut out, r.width as i32);
                put_i32(&mut out, r.height as i32);
                out.push(r.detected as u8);
                if let (true, Some(class_id), Some(score), Some(b)) = (r.detected, r.class_id, r.score, r.bbox) {
                    put_i32(&mut out, class_id as i32);
                    put_str(&mut out, r.class_name.as_deref().unwrap_or(""));
                    for v in [score, b.xmin, b.ymin, b.xmax, b.ymax] {
                        put_f32(&mut out, v);
                    }
                }
                for v in [r.crop.left, r.crop.top, r.crop.right, r.crop.bottom] {
                    put_i32(&mut out, v as i32);
                }
                put_floats(&mut out, r.feature.as_ref());
                put_bytes(&mut out, r.code.as_ref());
                put_floats(&mut out, r.whole_feature.as_ref());
                put_bytes(&mut out, r.whole_code.as_ref());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crop::PixelRect;
    use arrow::array::Array;
    use crate::detect::BoundingBox;

    fn record() -> Record {
        Record {
            width: 640,
            height: 480,
            detected: true,
            class_id: Some(47),
            class_name: Some("cup".into()),
            score: Some(0.9),
            bbox: Some(BoundingBox { xmin: 0.1, ymin: 0.2, xmax: 0.3, ymax: 0.4 }),
            crop: PixelRect { left: 1, top: 2, right: 3, bottom: 4 },
            feature: Some(vec![0.5, -0.5]),
            code: Some(vec![0xAB]),
            whole_feature: None,
            whole_code: None,
            detections: Vec::new(),
        }
    }

    #[test]
    fn packed_rows_follow_the_documented_layout() {
        let packed = pack_rows(&[Ok(record()), Err(ImageError::Empty)]);
        let mut expected: Vec<u8> = b"IFR1".to_vec();
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.push(0);
        for v in [640i32, 480] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        expected.push(1);
        expected.extend_from_slice(&47i32.to_le_bytes());
        expected.extend_from_slice(&3i32.to_le_bytes());
        expected.extend_from_slice(b"cup");
        for v in [0.9f32, 0.1, 0.2, 0.3, 0.4] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        for v in [1i32, 2, 3, 4, 2] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0.5f32, -0.5] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        expected.extend_from_slice(&1i32.to_le_bytes());
        expected.push(0xAB);
        expected.extend_from_slice(&(-1i32).to_le_bytes());
        expected.extend_from_slice(&(-1i32).to_le_bytes());
        expected.push(1);
        let message = ImageError::Empty.to_string();
        expected.extend_from_slice(&(message.len() as i32).to_le_bytes());
        expected.extend_from_slice(message.as_bytes());
        assert_eq!(packed, expected);
    }

    #[test]
    fn record_batches_keep_error_rows() {
        let results = [Ok(record()), Err(ImageError::Empty)];
        let rows: Vec<Row> = vec![("a.jpg", &results[0]), ("b.jpg", &results[1])];
        let batch = record_batch(&rows, 1).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let errors = batch.column_by_name("error").unwrap();
        assert_eq!((errors.null_count(), errors.is_null(0)), (1, true));
        assert!(batch.column_by_name("code").unwrap().is_valid(0));
        assert!(batch.column_by_name("whole_code").unwrap().is_null(0));
    }
}

//! The table's columns and types, the record of how its rows were made ([`Provenance`]), and
//! records → Arrow batches: what the reader and the writer both build on.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeBinaryArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
    StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, Float32Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::codes::Projection;
use crate::config::{Config, Precision};
use crate::crop::PixelRect;
use crate::error::{Error, ImageError};
use crate::detect::Detection;
use crate::model::Arithmetic;
use crate::pipeline::{Inset, Record};

/// The Parquet key under which a table records how its rows were made ([`Provenance`]).
pub const PROVENANCE_KEY: &str = "imgfeat.provenance";

/// How a table's rows were made: rows made otherwise cannot be compared with them (other codes, other
/// features), so a run refuses to append to or resume a table whose provenance differs from its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// imgfeat's version that wrote the table.
    pub version: String,
    pub code_bits: usize,
    /// The projection's [`fingerprint`](crate::codes::Projection::fingerprint): codes from another
    /// projection (another fit, another file) cannot be compared with these. Absent in tables written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    /// Every setting that changes a row's values (the configuration less threads, model folder and
    /// resource limits), as JSON.
    pub settings: serde_json::Value,
    /// The precision the rows were made in and the kernels that made them: `settings` holds the
    /// precision asked for, which a CPU without its instructions runs in f32. Absent in tables
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arithmetic: Option<Arithmetic>,
}

impl Provenance {
    /// A provenance as a table records it (Parquet key-value or Arrow schema metadata); `source` names
    /// the table in the error, so that a damaged record is refused rather than taken for no record.
    pub fn parse(json: &str, source: &std::path::Path) -> Result<Provenance, Error> {
        serde_json::from_str(json).map_err(|e| Error::Read { path: source.to_path_buf(), message: format!("unreadable {PROVENANCE_KEY}: {e}") })
    }

    /// How `config` makes rows in `arithmetic` (what its loaded models run in:
    /// [`Pipeline::arithmetic`](crate::Pipeline::arithmetic)); reads its projection file to fingerprint it.
    pub fn of(config: &Config, arithmetic: Arithmetic) -> Result<Provenance, Error> {
        let projection = Projection::load(&config.projection_path())?;
        let mut settings: serde_json::Value = serde_json::from_str(&config.to_json()).expect("Config is JSON");
        if let Some(fields) = settings.as_object_mut() {
            for field in ["threads", "model_dir", "limits"] {
                fields.remove(field);
            }
        }
        Ok(Provenance {
            version: env!("CARGO_PKG_VERSION").into(),
            code_bits: config.codes.bits,
            projection: Some(projection.fingerprint().to_string()),
            settings,
            arithmetic: Some(arithmetic),
        })
    }

    /// `batch` with this provenance in its schema's metadata, where pyarrow keeps it (and writes it to
    /// a Parquet file's key-value metadata, which the reader takes it from).
    pub fn attach(&self, batch: RecordBatch) -> RecordBatch {
        let mut metadata = batch.schema().metadata().clone();
        metadata.insert(PROVENANCE_KEY.to_string(), self.to_json());
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
        batch.with_schema(schema).expect("only the metadata changed")
    }

    /// The record as a table stores it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a provenance is JSON")
    }

    /// Why codes made as `self` cannot be compared with codes made as `other` (other lengths, another
    /// projection), or `None` when they can: searching or grouping them together would rank noise.
    pub fn codes_mismatch(&self, other: &Provenance) -> Option<String> {
        if self.code_bits != other.code_bits {
            return Some(format!("codes of {} bits against codes of {} bits", self.code_bits, other.code_bits));
        }
        match (&self.projection, &other.projection) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                Some(format!("codes from projection {ours} against codes from projection {theirs}"))
            }
            _ => None,
        }
    }

    /// The precision the rows were made in: recorded, or in a table from before it was, the one its
    /// settings named (f32 where they named none; `auto` did not exist then).
    fn made_in(&self) -> Precision {
        if let Some(arithmetic) = &self.arithmetic {
            return arithmetic.precision;
        }
        match self.settings.get("engine").and_then(|engine| engine.get("precision")).and_then(|p| p.as_str()) {
            Some("int8") => Precision::Int8,
            Some("bf16") => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// Why rows made as `self` cannot join a table made as `other`, or `None` when they can.
    pub fn mismatch(&self, other: &Provenance) -> Option<String> {
        if self.code_bits != other.code_bits {
            return Some(format!("its codes have {} bits, this run makes {}", other.code_bits, self.code_bits));
        }
        if let Some(codes) = self.codes_mismatch(other) {
            return Some(format!("it holds {codes}"));
        }
        // Rows of another precision differ by more than rounding; other kernels of the same
        // precision (another instruction set) only by rounding (in int8 not at all), and may join.
        if self.made_in() != other.made_in() {
            return Some(match (&self.arithmetic, &other.arithmetic) {
                (Some(ours), Some(theirs)) => format!("its rows were made in {theirs}, this run makes them in {ours}"),
                _ => format!("its rows were made in {}, this run makes them in {}", other.made_in().name(), self.made_in().name()),
            });
        }
        // The precision asked for is left out of the settings compared: `auto` and `bf16` make the
        // same rows where the CPU runs bf16, `auto` and `f32` where it does not (compared above).
        let (our_settings, their_settings) = (without_precision(&self.settings), without_precision(&other.settings));
        let differing: Vec<&String> = match (our_settings.as_object(), their_settings.as_object()) {
            (Some(ours), Some(theirs)) => {
                ours.keys().chain(theirs.keys()).filter(|k| ours.get(*k) != theirs.get(*k)).collect()
            }
            _ => return (our_settings != their_settings).then(|| "it was made with other settings".into()),
        };
        let mut differing: Vec<&str> = differing.into_iter().map(String::as_str).collect();
        differing.sort_unstable();
        differing.dedup();
        (!differing.is_empty()).then(|| format!("it was made with other settings ({})", differing.join(", ")))
    }
}

/// `settings` less the precision asked for (`engine.precision`).
fn without_precision(settings: &serde_json::Value) -> serde_json::Value {
    let mut settings = settings.clone();
    if let Some(engine) = settings.get_mut("engine").and_then(serde_json::Value::as_object_mut) {
        engine.remove("precision");
    }
    settings
}

/// A row's `path` as a local file path: Spark writes local files as `file:` URIs (`file:/a/b.jpg`,
/// `file:///a/b.jpg`), the CLI as plain paths.
pub fn local_path(path: &str) -> &str {
    path.strip_prefix("file://").or_else(|| path.strip_prefix("file:")).unwrap_or(path)
}

/// One input and what became of it.
pub type Row<'a> = (&'a str, &'a Result<Record, ImageError>);

fn box_fields() -> Fields {
    ["xmin", "ymin", "xmax", "ymax"].iter().map(|n| Field::new(*n, DataType::Float32, false)).collect()
}

fn crop_fields() -> Fields {
    ["left", "top", "right", "bottom"].iter().map(|n| Field::new(*n, DataType::Int32, false)).collect()
}

/// The fields of one inset: where it is in the photo's pixels (as `crop`), its feature and its code.
fn inset_fields(code_bytes: usize) -> Fields {
    let mut fields: Vec<Field> = crop_fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("feature", feature_type(), true));
    fields.push(Field::new("code", DataType::FixedSizeBinary(code_bytes as i32), true));
    fields.into()
}

fn feature_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}

/// An item of the `insets` list.
fn inset_item(code_bytes: usize) -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(inset_fields(code_bytes)), false))
}

/// The output schema; `code_bytes` is the packed code length (bits / 8).
pub fn schema(code_bytes: usize) -> SchemaRef {
    let feature = feature_type();
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
        Field::new("insets", DataType::List(inset_item(code_bytes)), true),
        Field::new("arithmetic", DataType::Utf8, true),
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

    fn main_object<'a>(record: &Option<&'a Record>) -> Option<&'a Detection> {
        record.and_then(|r| r.main_object.as_ref())
    }
    let boxes = records.iter().map(|r| main_object(r).map(|o| o.bbox));
    let box_coords: Vec<[f32; 4]> = boxes.clone().map(|b| b.map_or([0.0; 4], |b| [b.xmin, b.ymin, b.xmax, b.ymax])).collect();
    let box_children: Vec<ArrayRef> =
        (0..4).map(|c| Arc::new(Float32Array::from_iter_values(box_coords.iter().map(|b| b[c]))) as ArrayRef).collect();
    let box_array = StructArray::try_new(box_fields(), box_children, Some(valid(&|r| r.main_object.is_some())))?;

    let crops = records.iter().map(|r| r.map_or(PixelRect { left: 0, top: 0, right: 0, bottom: 0 }, |r| r.crop));
    let crop_array = StructArray::try_new(crop_fields(), corner_columns(crops), Some(valid(&|_| true)))?;

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
        Arc::new(records.iter().map(|r| r.map(|r| r.main_object.is_some())).collect::<BooleanArray>()),
        int(&|r| r.main_object.as_ref().map(|o| o.class_id as i32)),
        Arc::new(records.iter().map(|r| main_object(r).map(|o| o.class_name.as_str())).collect::<StringArray>()),
        Arc::new(records.iter().map(|r| main_object(r).map(|o| o.score)).collect::<Float32Array>()),
        Arc::new(box_array),
        Arc::new(crop_array),
        features(&|r| r.feature.as_ref()),
        codes(&|r| r.code.as_ref())?,
        features(&|r| r.whole_feature.as_ref()),
        codes(&|r| r.whole_code.as_ref())?,
        insets_array(&records, code_bytes)?,
        Arc::new(records.iter().map(|r| r.map(|r| r.arithmetic.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|(_, result)| result.as_ref().err().map(|e| e.to_string())).collect::<StringArray>()),
    ];
    Ok(RecordBatch::try_new(schema(code_bytes), columns)?)
}

/// The left, top, right and bottom columns of a struct of [`crop_fields`] (a row's `crop`, an inset's place).
fn corner_columns(rects: impl Iterator<Item = PixelRect>) -> Vec<ArrayRef> {
    let corners: Vec<[i32; 4]> = rects.map(|r| [r.left, r.top, r.right, r.bottom].map(|v| v as i32)).collect();
    (0..4).map(|c| Arc::new(Int32Array::from_iter_values(corners.iter().map(|b| b[c]))) as ArrayRef).collect()
}

/// The `insets` column: each row's list of insets, null for an error row.
fn insets_array(records: &[Option<&Record>], code_bytes: usize) -> Result<ArrayRef, Error> {
    let insets: Vec<&Inset> = records.iter().flatten().flat_map(|r| &r.insets).collect();
    let mut children = corner_columns(insets.iter().map(|i| i.rect));
    children.push(Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
        insets.iter().map(|i| Some(i.feature.iter().map(|x| Some(*x)))),
    )));
    children.push(Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        insets.iter().map(|i| i.code.as_ref()),
        code_bytes as i32,
    )?));
    let values = StructArray::try_new(inset_fields(code_bytes), children, None)?;
    let offsets = OffsetBuffer::from_lengths(records.iter().map(|r| r.map_or(0, |r| r.insets.len())));
    let valid: NullBuffer = records.iter().map(Option::is_some).collect();
    Ok(Arc::new(ListArray::try_new(inset_item(code_bytes), offsets, Arc::new(values), Some(valid))?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crop::PixelRect;
    use arrow::array::Array;
    use crate::detect::{BoundingBox, Detection};

    pub(crate) fn record() -> Record {
        Record {
            width: 640,
            height: 480,
            main_object: Some(Detection {
                class_id: 47,
                class_name: "cup".into(),
                score: 0.9,
                bbox: BoundingBox { xmin: 0.1, ymin: 0.2, xmax: 0.3, ymax: 0.4 },
                anchor: 0,
            }),
            crop: PixelRect { left: 1, top: 2, right: 3, bottom: 4 },
            feature: Some(vec![0.5, -0.5]),
            code: Some(vec![0xAB]),
            whole_feature: None,
            whole_code: None,
            detections: Vec::new(),
            insets: Vec::new(),
            arithmetic: "f32 (avx2)".into(),
        }
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

    fn made(precision_setting: Option<&str>, arithmetic: Option<(Precision, &str)>) -> Provenance {
        let engine = precision_setting.map_or(serde_json::json!({"executor": "native"}), |p| serde_json::json!({"executor": "native", "precision": p}));
        Provenance {
            version: "0.1.0".into(),
            code_bits: 256,
            projection: Some("abc".into()),
            settings: serde_json::json!({"detector": "coco", "engine": engine}),
            arithmetic: arithmetic.map(|(precision, kernels)| Arithmetic { precision, kernels: kernels.into() }),
        }
    }

    #[test]
    fn rows_of_the_same_precision_join_whatever_precision_was_asked_for() {
        let auto_bf16 = made(Some("auto"), Some((Precision::Bf16, "avx512-bf16")));
        let auto_f32 = made(Some("auto"), Some((Precision::F32, "avx2")));
        // `auto` and `bf16` on a bf16 CPU; f32 on another instruction set; a table from before the
        // arithmetic was recorded, f32 by its settings (or by naming none).
        assert_eq!(auto_bf16.mismatch(&made(Some("bf16"), Some((Precision::Bf16, "avx512-bf16")))), None);
        assert_eq!(auto_f32.mismatch(&made(Some("f32"), Some((Precision::F32, "avx512")))), None);
        assert_eq!(auto_f32.mismatch(&made(Some("f32"), None)), None);
        assert_eq!(auto_f32.mismatch(&made(None, None)), None);
        // Another precision is refused, naming both; other settings still are.
        let why = auto_f32.mismatch(&auto_bf16).unwrap();
        assert_eq!(why, "its rows were made in bf16 (avx512-bf16), this run makes them in f32 (avx2)");
        assert_eq!(auto_bf16.mismatch(&made(Some("f32"), None)).unwrap(), "its rows were made in f32, this run makes them in bf16");
        let mut other = made(Some("auto"), Some((Precision::Bf16, "avx512-bf16")));
        other.settings["detector"] = "oidv4".into();
        assert_eq!(auto_bf16.mismatch(&other).unwrap(), "it was made with other settings (detector)");
    }
}

//! What imgfeat writes besides the features table: the packed rows the JNI edge hands to the JVM, and
//! `imgfeat dedup`'s groups.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, ImageError};
use crate::pipeline::Record;

/// Near-duplicate groups (`imgfeat dedup`) as Parquet: see [`groups_batch`].
pub fn write_groups(path: &Path, groups: &[Vec<usize>], rows: &[crate::search::IndexedRow]) -> Result<(), Error> {
    let batch = groups_batch(groups, rows)?;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

/// Near-duplicate groups as rows (`group`, `path`, `representative`): one row per member, with its
/// group number and the group's representative (its first member, the smallest path).
pub fn groups_batch(groups: &[Vec<usize>], rows: &[crate::search::IndexedRow]) -> Result<RecordBatch, Error> {
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
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Rows packed into one buffer for the JNI edge: one copy across the boundary per batch instead of
/// dozens of small Java arrays per row. Little-endian; `str` is an i32 byte length and UTF-8 bytes;
/// `floats` and `bytes` are an i32 element count (-1 for null) and the elements.
///
/// ```text
/// "IFR3"  u32 rows
/// per row: u8 status (0 ok, 1 error)
///   error: str message
///   ok:    i32 width, i32 height, u8 detected,
///          if detected: i32 class_id, str class_name, f32 score, f32 xmin, ymin, xmax, ymax
///          i32 crop left, top, right, bottom
///          floats feature, bytes code, floats whole_feature, bytes whole_code
///          i32 insets, per inset: i32 left, top, right, bottom, floats feature, bytes code
///          str arithmetic
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
    out.extend_from_slice(b"IFR3");
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
                out.push(r.main_object.is_some() as u8);
                if let Some(object) = &r.main_object {
                    put_i32(&mut out, object.class_id as i32);
                    put_str(&mut out, &object.class_name);
                    let b = object.bbox;
                    for v in [object.score, b.xmin, b.ymin, b.xmax, b.ymax] {
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
                put_i32(&mut out, r.insets.len() as i32);
                for inset in &r.insets {
                    for v in [inset.rect.left, inset.rect.top, inset.rect.right, inset.rect.bottom] {
                        put_i32(&mut out, v as i32);
                    }
                    put_floats(&mut out, Some(&inset.feature));
                    put_bytes(&mut out, inset.code.as_ref());
                }
                put_str(&mut out, &r.arithmetic);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crop::PixelRect;
    use crate::features::tests::record;
    use crate::pipeline::Inset;

    #[test]
    fn packed_rows_follow_the_documented_layout() {
        let mut row = record();
        row.insets.push(Inset { rect: PixelRect { left: 5, top: 6, right: 7, bottom: 8 }, feature: vec![0.25], code: Some(vec![0xCD]) });
        let packed = pack_rows(&[Ok(row), Err(ImageError::Empty)]);
        let mut expected: Vec<u8> = b"IFR3".to_vec();
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
        for v in [1i32, 5, 6, 7, 8, 1] {
            expected.extend_from_slice(&v.to_le_bytes());
        }
        expected.extend_from_slice(&0.25f32.to_le_bytes());
        expected.extend_from_slice(&1i32.to_le_bytes());
        expected.push(0xCD);
        expected.extend_from_slice(&10i32.to_le_bytes());
        expected.extend_from_slice(b"f32 (avx2)");
        expected.push(1);
        let message = ImageError::Empty.to_string();
        expected.extend_from_slice(&(message.len() as i32).to_le_bytes());
        expected.extend_from_slice(message.as_bytes());
        assert_eq!(packed, expected);
    }
}

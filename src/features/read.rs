//! Reads a features table in every shape imgfeat writes it, and hands it on in one shape: the columns
//! of [`super::schema()`], flat, codes as fixed-size binary.
//!
//! Shapes accepted: one Parquet file (`imgfeat extract`), or a directory of part files as Spark writes
//! it (`_SUCCESS`, `_`- and `.`-files ignored); the feature columns flat beside `path` (the CLI, the
//! example jobs) or nested in one struct column (the transformer's output written as it is); codes as
//! fixed-size binary (the CLI) or plain binary (Spark); lists of floats however the writer named their
//! items. Anything else is a read error naming the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::schema::{schema, Provenance, PROVENANCE_KEY};
use crate::error::Error;

/// A features table opened for reading: its Parquet files, in order.
#[derive(Debug, Clone)]
pub struct FeaturesReader {
    files: Vec<PathBuf>,
}

/// A read error naming the file (or the table's directory).
pub(crate) fn read_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Read { path: path.to_path_buf(), message: message.to_string() }
}

impl FeaturesReader {
    /// Opens a table: a Parquet file, or a directory of part files.
    pub fn open(table: &Path) -> Result<FeaturesReader, Error> {
        let metadata = std::fs::metadata(table).map_err(|e| read_error(table, e))?;
        let files = if metadata.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(table).map_err(|e| read_error(table, e))? {
                let entry = entry.map_err(|e| read_error(table, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Spark's markers (_SUCCESS, _committed_…), checksums (.part-….crc), hidden files.
                if name.starts_with('_') || name.starts_with('.') {
                    continue;
                }
                if entry.file_type().map_err(|e| read_error(&entry.path(), e))?.is_file() {
                    files.push(entry.path());
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(read_error(table, "the directory holds no Parquet part files"));
            }
            files
        } else {
            vec![table.to_path_buf()]
        };
        Ok(FeaturesReader { files })
    }

    /// A table of the given Parquet files (one run's parts), read in this order.
    pub(crate) fn from_files(files: Vec<PathBuf>) -> FeaturesReader {
        FeaturesReader { files }
    }

    /// The Parquet files of the table, in the order their rows are read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The table's rows in batches of [`super::schema()`], file after file.
    pub fn batches(&self) -> Batches {
        Batches { files: self.files.clone(), next_file: 0, current: None, code_bytes: None }
    }

    /// How the table's rows were made, when imgfeat recorded it (Spark's output has none): the first
    /// recorded file's. Files whose codes cannot be compared with it (another projection, as when
    /// the part files of two runs share a folder) are an error naming both.
    pub fn provenance(&self) -> Result<Option<Provenance>, Error> {
        let mut first: Option<(&PathBuf, Provenance)> = None;
        for file in &self.files {
            let Some(this) = provenance(file)? else { continue };
            match &first {
                None => first = Some((file, this)),
                Some((first_file, made)) => {
                    if let Some(why) = made.codes_mismatch(&this) {
                        let message = format!("its codes cannot be compared with {}'s: {why}", first_file.display());
                        return Err(read_error(file, message));
                    }
                }
            }
        }
        Ok(first.map(|(_, made)| made))
    }
}

/// How one Parquet file's rows were made ([`Provenance`]), from its key-value metadata.
pub fn provenance(file: &Path) -> Result<Option<Provenance>, Error> {
    let opened = File::open(file).map_err(|e| read_error(file, e))?;
    let reader = SerializedFileReader::new(opened).map_err(|e| read_error(file, e))?;
    let Some(pairs) = reader.metadata().file_metadata().key_value_metadata() else { return Ok(None) };
    match pairs.iter().find(|kv| kv.key == PROVENANCE_KEY).and_then(|kv| kv.value.as_deref()) {
        Some(json) => Provenance::parse(json, file).map(Some),
        None => Ok(None),
    }
}

/// The batches of a table, each in the one shape; see [`FeaturesReader::batches`].
pub struct Batches {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(PathBuf, ParquetRecordBatchReader)>,
    /// The code length of the table, from its first code: every later file must have the same.
    code_bytes: Option<usize>,
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((file, reader)) = &mut self.current {
                match reader.next() {
                    Some(Ok(batch)) => return Some(conform(&batch, &mut self.code_bytes, file)),
                    Some(Err(e)) => {
                        let error = read_error(file, e);
                        self.current = None;
                        self.next_file = self.files.len(); // a damaged table ends the read
                        return Some(Err(error));
                    }
                    None => self.current = None,
                }
            }
            let file = self.files.get(self.next_file)?.clone();
            self.next_file += 1;
            let opened = File::open(&file)
                .map_err(|e| read_error(&file, e))
                .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| read_error(&file, e)))
                .and_then(|builder| builder.build().map_err(|e| read_error(&file, e)));
            match opened {
                Ok(reader) => self.current = Some((file, reader)),
                Err(e) => {
                    self.next_file = self.files.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// One batch as it was written → the same rows in [`super::schema()`]; `code_bytes` carries the table's
/// code length from batch to batch, `file` names the source in errors.
pub(crate) fn conform(batch: &RecordBatch, code_bytes: &mut Option<usize>, file: &Path) -> Result<RecordBatch, Error> {
    let not_features = || {
        read_error(file, "not an imgfeat features table: it has no column \"code\" or \"whole_code\", flat or inside a struct column")
    };
    let top = batch.schema();
    // The feature columns: top-level, or the fields of the one struct column that holds them.
    let nested: Option<&StructArray> = if top.column_with_name("whole_code").is_some() || top.column_with_name("code").is_some() {
        None
    } else {
        let holder = batch.columns().iter().filter_map(|c| c.as_struct_opt()).find(|s| {
            let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
            names.contains(&"error") && (names.contains(&"code") || names.contains(&"whole_code"))
        });
        Some(holder.ok_or_else(not_features)?)
    };
    let column = |name: &str| -> Option<ArrayRef> {
        match (name, nested) {
            ("path", _) | (_, None) => batch.column_by_name(name).cloned(),
            (_, Some(features)) => features.column_by_name(name).cloned(),
        }
    };
    let bytes = table_code_bytes(&column, code_bytes, file)?;
    let target = schema(bytes);
    let mut columns = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        // Tables written before rows carried insets (or their arithmetic) have none.
        if ["insets", "arithmetic"].contains(&field.name().as_str()) && column(field.name()).is_none() {
            columns.push(arrow::array::new_null_array(field.data_type(), batch.num_rows()));
            continue;
        }
        let found = column(field.name()).ok_or_else(|| read_error(file, format!("not an imgfeat features table: no column {:?}", field.name())))?;
        columns.push(conform_column(&found, field.data_type()).map_err(|e| read_error(file, format!("column {:?}: {e}", field.name())))?);
    }
    let target: SchemaRef = target;
    RecordBatch::try_new(target, columns).map_err(|e| read_error(file, e))
}

/// The code length in bytes of this batch's codes, checked against the table's so far.
fn table_code_bytes(column: &dyn Fn(&str) -> Option<ArrayRef>, table: &mut Option<usize>, file: &Path) -> Result<usize, Error> {
    let mut found: Option<usize> = None;
    for name in ["code", "whole_code"] {
        let Some(codes) = column(name) else { continue };
        let lengths: Vec<usize> = match codes.data_type() {
            DataType::FixedSizeBinary(n) => vec![*n as usize],
            DataType::Binary => codes.as_binary::<i32>().iter().flatten().map(<[u8]>::len).collect(),
            DataType::LargeBinary => codes.as_binary::<i64>().iter().flatten().map(<[u8]>::len).collect(),
            other => return Err(read_error(file, format!("column {name:?} holds {other}, not binary codes"))),
        };
        for length in lengths {
            match found.get_or_insert(length) {
                n if *n == length => {}
                n => return Err(read_error(file, format!("codes of different lengths ({} and {} bits)", *n * 8, length * 8))),
            }
        }
    }
    match (found, *table) {
        (Some(n), Some(t)) if n != t => {
            Err(read_error(file, format!("its codes have {} bits, the table's earlier files {}", n * 8, t * 8)))
        }
        (Some(0), _) => Err(read_error(file, "its codes are empty")),
        (Some(n), _) => {
            *table = Some(n);
            Ok(n)
        }
        // A batch of error rows only: any length will do, its codes are all null.
        (None, t) => Ok(t.unwrap_or(32)),
    }
}

/// A column in the type the schema gives it: structs field by field (by name), lists of structs item
/// by item, the rest by Arrow's cast, which fails rather than turn a value it cannot convert into a null.
fn conform_column(column: &ArrayRef, target: &DataType) -> Result<ArrayRef, String> {
    if column.data_type() == target {
        return Ok(column.clone());
    }
    if let DataType::List(item) = target {
        if matches!(item.data_type(), DataType::Struct(_)) {
            let found = column.as_list_opt::<i32>().ok_or_else(|| format!("holds {}, not a list", column.data_type()))?;
            let values = conform_column(found.values(), item.data_type())?;
            return ListArray::try_new(item.clone(), found.offsets().clone(), values, found.nulls().cloned())
                .map(|l| Arc::new(l) as ArrayRef)
                .map_err(|e| e.to_string());
        }
    }
    if let DataType::Struct(fields) = target {
        let found = column.as_struct_opt().ok_or_else(|| format!("holds {}, not a struct", column.data_type()))?;
        let children = fields
            .iter()
            .map(|f| {
                let child = found.column_by_name(f.name()).ok_or_else(|| format!("has no field {:?}", f.name()))?;
                conform_column(child, f.data_type())
            })
            .collect::<Result<Vec<_>, String>>()?;
        return StructArray::try_new(fields.clone(), children, found.nulls().cloned())
            .map(|s| Arc::new(s) as ArrayRef)
            .map_err(|e| e.to_string());
    }
    let options = CastOptions { safe: false, ..Default::default() };
    cast_with_options(column, target, &options).map_err(|e| format!("cannot read {} as {target}: {e}", column.data_type()))
}

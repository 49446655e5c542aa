//! Writes features tables so that no run loses finished work: a file is written aside and renamed over
//! its name only once complete ([`FeaturesWriter`]), and a long run commits its rows batch by batch as
//! part files that a rerun resumes from ([`ExtractOutput`]).
//!
//! `imgfeat extract -o features.parquet` keeps, while it runs, a folder `features.parquet.parts/` of
//! part files, each written aside and renamed into place when its batch is done. Killed (SIGKILL, OOM,
//! power loss), a run loses only the batches in flight; the same command run again skips every path a
//! part already holds and finishes the rest. When all are done, the parts (and, with `--append`, the
//! rows of the existing table) are merged in path order into a new file that replaces the old table
//! in one rename, and the folder is removed.

use std::collections::{BinaryHeap, HashSet};
use std::cmp::Reverse;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::read::{provenance, Batches, FeaturesReader};
use super::schema::{record_batch, schema, Provenance, Row, PROVENANCE_KEY};
use crate::error::Error;

fn write_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Output(format!("{}: {message}", path.display()))
}

/// Streams rows into a Snappy-compressed Parquet file batch by batch (memory stays flat however many
/// images a run covers). The rows go to a hidden file beside `path`, which becomes `path` in one
/// rename when [`FeaturesWriter::finish`] has flushed it to disk: until then an earlier file at `path`
/// is untouched, and a killed run leaves at most a hidden `.NAME.writing-PID` behind.
pub struct FeaturesWriter {
    writer: ArrowWriter<File>,
    code_bytes: usize,
    aside: PathBuf,
    path: PathBuf,
}

impl FeaturesWriter {
    pub fn create(path: &Path, provenance: &Provenance) -> Result<FeaturesWriter, Error> {
        let name = path.file_name().ok_or_else(|| write_error(path, "not a file name"))?.to_string_lossy();
        let aside = path.with_file_name(format!(".{name}.writing-{}", std::process::id()));
        let file = File::create(&aside).map_err(|e| Error::io(&aside, e))?;
        let metadata = KeyValue::new(PROVENANCE_KEY.to_string(), provenance.to_json());
        // Row groups of 4096 rows (~45 MB of features): the writer holds one in memory at a time.
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(4096))
            .set_key_value_metadata(Some(vec![metadata.clone()]))
            .build();
        let code_bytes = provenance.code_bits / 8;
        // In the Arrow schema too: pyarrow reads a file's schema metadata from the Arrow schema arrow-rs
        // embeds, so the Python API's `Index` sees the provenance only there.
        let recorded = std::collections::HashMap::from([(metadata.key.clone(), metadata.value.clone().unwrap_or_default())]);
        let described = schema(code_bytes).as_ref().clone().with_metadata(recorded);
        let writer = ArrowWriter::try_new(file, std::sync::Arc::new(described), Some(properties))?;
        Ok(FeaturesWriter { writer, code_bytes, aside, path: path.to_path_buf() })
    }

    pub fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        let batch = record_batch(rows, self.code_bytes)?;
        self.write_batch(&batch)
    }

    /// Writes a batch already in [`super::schema()`] (as [`FeaturesReader`] gives them).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        self.writer.write(batch).map_err(|e| write_error(&self.aside, e))
    }

    /// Completes the file, flushes it to disk and renames it over `path`.
    pub fn finish(self) -> Result<(), Error> {
        let file = self.writer.into_inner().map_err(|e| write_error(&self.aside, e))?;
        file.sync_all().map_err(|e| Error::io(&self.aside, e))?;
        drop(file);
        std::fs::rename(&self.aside, &self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_parent(&self.path)
    }
}

/// Flushes a directory entry (a rename) to disk, so that a power loss cannot undo it.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| Error::io(parent, e))
}

/// The output of one `imgfeat extract` run: see the module's documentation.
pub struct ExtractOutput {
    output: PathBuf,
    parts: PathBuf,
    provenance: Provenance,
    /// Whether the existing table's rows are kept (`--append`).
    append: bool,
    /// This run's number among the runs whose parts are in the folder (a resumed run is a new one).
    run: usize,
    next_part: usize,
    /// Paths (as written, and canonical where the file still exists) whose rows are already committed.
    done: HashSet<String>,
    /// Rows committed before this run: in an interrupted run's parts, and in the table (with append).
    resumed: usize,
    kept: usize,
}

impl ExtractOutput {
    /// Prepares `output` for a run. The committed parts of an interrupted run into the same output are
    /// resumed; with `append`, an existing table's rows are kept. Parts or a table made with other
    /// settings (another code length, model, precision…) or a file that is not a features table are
    /// refused, never mixed in.
    pub fn open(output: &Path, provenance: Provenance, append: bool) -> Result<ExtractOutput, Error> {
        let name = output.file_name().ok_or_else(|| write_error(output, "not a file name"))?.to_string_lossy();
        let parts = output.with_file_name(format!("{name}.parts"));
        let mut this = ExtractOutput {
            output: output.to_path_buf(),
            parts,
            provenance,
            append,
            run: 0,
            next_part: 0,
            done: HashSet::new(),
            resumed: 0,
            kept: 0,
        };
        if append && output.exists() {
            if output.is_dir() {
                return Err(write_error(output, "--append adds to a table written by imgfeat extract (one file); this is a directory"));
            }
            this.check_provenance(output)?;
            this.kept = this.remember(output)?;
        }
        if this.parts.is_dir() {
            for (run, _, part) in this.part_files()? {
                this.check_provenance(&part)?;
                this.resumed += this.remember(&part)?;
                this.run = this.run.max(run + 1);
            }
        }
        std::fs::create_dir_all(&this.parts).map_err(|e| Error::io(&this.parts, e))?;
        Ok(this)
    }

    /// Rows an interrupted run had already committed, now resumed.
    pub fn resumed(&self) -> usize {
        self.resumed
    }

    /// Rows of the existing table kept by `--append`.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// Whether `path`'s row is already committed (by an interrupted run, or in the appended table).
    pub fn is_done(&self, path: &Path) -> bool {
        self.done.contains(path.to_string_lossy().as_ref())
            || std::fs::canonicalize(path).is_ok_and(|c| self.done.contains(c.to_string_lossy().as_ref()))
    }

    /// Commits a batch of rows as one part file: written aside, flushed, renamed into the folder.
    pub fn commit(&mut self, rows: &[Row]) -> Result<(), Error> {
        let part = self.parts.join(format!("part-{:04}-{:06}.parquet", self.run, self.next_part));
        self.next_part += 1;
        let mut writer = FeaturesWriter::create(&part, &self.provenance)?;
        writer.write(rows)?;
        writer.finish()
    }

    /// Merges the kept rows and every part, in path order, into a new table that replaces `output`
    /// in one rename, then removes the parts. Returns the table's row count.
    pub fn finish(self) -> Result<usize, Error> {
        let mut sources: Vec<Batches> = Vec::new();
        if self.append && self.output.is_file() {
            sources.push(FeaturesReader::open(&self.output)?.batches());
        }
        // One run's parts hold its rows in path order, one after another: one sorted source per run.
        let mut runs: Vec<(usize, Vec<PathBuf>)> = Vec::new();
        for (run, _, part) in self.part_files()? {
            match runs.last_mut() {
                Some((r, files)) if *r == run => files.push(part),
                _ => runs.push((run, vec![part])),
            }
        }
        for (_, files) in &runs {
            sources.push(FeaturesReader::from_files(files.clone()).batches());
        }
        let mut writer = FeaturesWriter::create(&self.output, &self.provenance)?;
        let rows = merge_by_path(sources, &mut writer)?;
        writer.finish()?;
        std::fs::remove_dir_all(&self.parts).map_err(|e| Error::io(&self.parts, e))?;
        Ok(rows)
    }

    /// The committed part files as (run, part number, path), in order; half-written ones are deleted.
    fn part_files(&self) -> Result<Vec<(usize, usize, PathBuf)>, Error> {
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(&self.parts).map_err(|e| Error::io(&self.parts, e))? {
            let path = entry.map_err(|e| Error::io(&self.parts, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                // A part that was being written when the run was killed: its rows were never committed.
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                continue;
            }
            let numbers: Option<(usize, usize)> = name
                .strip_prefix("part-")
                .and_then(|n| n.strip_suffix(".parquet"))
                .and_then(|n| n.split_once('-'))
                .and_then(|(run, part)| Some((run.parse().ok()?, part.parse().ok()?)));
            match numbers {
                Some((run, part)) => parts.push((run, part, path)),
                None => return Err(write_error(&path, "unexpected file in the folder of an interrupted run's parts")),
            }
        }
        parts.sort();
        Ok(parts)
    }

    fn check_provenance(&self, file: &Path) -> Result<(), Error> {
        let what = if file == self.output { "the table" } else { "an interrupted run's part" };
        let remedy = if file == self.output {
            "write to another file, or run without --append to replace it".to_string()
        } else {
            format!("rerun with the settings it was made with, or delete {} to start over", self.parts.display())
        };
        match provenance(file)? {
            None => Err(write_error(file, format!("{what} was not written by imgfeat extract (no {PROVENANCE_KEY}); {remedy}"))),
            Some(theirs) => match self.provenance.mismatch(&theirs) {
                Some(why) => Err(write_error(file, format!("cannot add rows to {what}: {why}; {remedy}"))),
                None => Ok(()),
            },
        }
    }

    /// Adds the paths of a table's rows to `done`; returns how many rows it has.
    fn remember(&mut self, table: &Path) -> Result<usize, Error> {
        let mut rows = 0;
        for batch in FeaturesReader::open(table)?.batches() {
            let batch = batch?;
            let paths = batch.column_by_name("path").expect("the schema has path").as_string::<i32>();
            for path in paths.iter().flatten() {
                if let Ok(canonical) = std::fs::canonicalize(path) {
                    self.done.insert(canonical.to_string_lossy().into_owned());
                }
                self.done.insert(path.to_string());
            }
            rows += batch.num_rows();
        }
        Ok(rows)
    }
}

/// Merges sources whose rows are each in path order into `writer`, in path order; a path met again
/// (a run killed after its table was renamed into place but before its parts were removed) is
/// written once. Returns the rows written.
fn merge_by_path(sources: Vec<Batches>, writer: &mut FeaturesWriter) -> Result<usize, Error> {
    const CHUNK: usize = 4096;
    struct Cursor {
        batches: Batches,
        batch: RecordBatch,
        row: usize,
    }
    impl Cursor {
        fn path(&self) -> String {
            self.batch.column(0).as_string::<i32>().value(self.row).to_string()
        }
    }
    let mut cursors: Vec<Cursor> = Vec::new();
    for mut batches in sources {
        if let Some(batch) = next_nonempty(&mut batches)? {
            cursors.push(Cursor { batches, batch, row: 0 });
        }
    }
    let mut heap: BinaryHeap<Reverse<(String, usize)>> = cursors.iter().enumerate().map(|(i, c)| Reverse((c.path(), i))).collect();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    let mut written = 0;
    let mut last: Option<String> = None;
    let flush = |cursors: &[Cursor], pending: &mut Vec<(usize, usize)>, writer: &mut FeaturesWriter| -> Result<usize, Error> {
        if pending.is_empty() {
            return Ok(0);
        }
        let batches: Vec<&RecordBatch> = cursors.iter().map(|c| &c.batch).collect();
        let merged = interleave_record_batch(&batches, pending)?;
        writer.write_batch(&merged)?;
        Ok(std::mem::take(pending).len())
    };
    while let Some(Reverse((path, i))) = heap.pop() {
        if last.as_deref() != Some(path.as_str()) {
            pending.push((i, cursors[i].row));
            last = Some(path);
        }
        cursors[i].row += 1;
        if cursors[i].row == cursors[i].batch.num_rows() {
            // The batch is about to be replaced: write what refers to it first.
            written += flush(&cursors, &mut pending, writer)?;
            match next_nonempty(&mut cursors[i].batches)? {
                Some(batch) => (cursors[i].batch, cursors[i].row) = (batch, 0),
                None => continue,
            }
        }
        heap.push(Reverse((cursors[i].path(), i)));
        if pending.len() >= CHUNK {
            written += flush(&cursors, &mut pending, writer)?;
        }
    }
    written += flush(&cursors, &mut pending, writer)?;
    Ok(written)
}

fn next_nonempty(batches: &mut Batches) -> Result<Option<RecordBatch>, Error> {
    for batch in batches.by_ref() {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

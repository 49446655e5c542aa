//! The features table as users meet it: every shape imgfeat writes is read by `search`, `dedup`,
//! `report` and `show --index` with the same answers; bad tables are clear errors; `extract` never
//! loses finished work (killed with SIGKILL and resumed, appended to) and walks folders without
//! reaching a file twice.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, ListArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use common::{fixture_folder, fixtures, imgfeat, near_duplicate_photos, temp_dir};
use imgfeat::features::FeaturesReader;


fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{:?} failed:\n{}\n{}", command, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn fails(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(!out.status.success(), "{command:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every row of a Parquet file, as written, in one batch.
fn raw_rows(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

/// A folder with the fixtures and near-duplicates of two of them, and its table from `extract`.
fn photos_and_table(dir: &Path) -> (PathBuf, PathBuf) {
    let photos = near_duplicate_photos(dir);
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let table = dir.join("features.parquet");
    run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&table).arg(&photos));
    (photos, table)
}

/// The CLI's table rewritten as a PySpark job writes the transformer's output without selecting the
/// struct's fields: a directory of part files (rows shuffled across them), `file:` URIs, the features
/// nested in a struct beside the photo's bytes, codes as plain binary, list items named `element`,
/// Spark's `_SUCCESS` and `.crc` files.
fn as_spark_writes_it(table: &Path, dir: &Path) -> PathBuf {
    let flat = raw_rows(table);
    let out = dir.join("spark-output");
    std::fs::create_dir_all(&out).unwrap();
    let nested_fields: Vec<(Arc<Field>, ArrayRef)> = flat
        .schema()
        .fields()
        .iter()
        .zip(flat.columns())
        .filter(|(f, _)| f.name() != "path")
        .map(|(f, column)| {
            let converted = as_spark_types(column);
            (Arc::new(Field::new(f.name(), converted.data_type().clone(), true)), converted)
        })
        .collect();
    let features = StructArray::from(nested_fields);
    let paths: StringArray = flat.column(0).as_string::<i32>().iter().map(|p| p.map(|p| format!("file:{p}"))).collect();
    let content: BinaryArray = (0..flat.num_rows()).map(|_| Some(&b"bytes of the photo"[..])).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, true),
        Field::new("content", DataType::Binary, true),
        Field::new("features", features.data_type().clone(), true),
    ]));
    let all = RecordBatch::try_new(schema, vec![Arc::new(paths), Arc::new(content), Arc::new(features)]).unwrap();
    // Rows out of path order: odd rows in the first part, even rows in the second, each reversed.
    for (part, parity) in [(0, 1), (1, 0)] {
        let rows: Vec<u32> = (0..all.num_rows() as u32).rev().filter(|r| r % 2 == parity).collect();
        let taken = arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(rows)).unwrap();
        write_parquet(&out.join(format!("part-0000{part}-abc.snappy.parquet")), &taken);
        std::fs::write(out.join(format!(".part-0000{part}-abc.snappy.parquet.crc")), b"crc").unwrap();
    }
    std::fs::write(out.join("_SUCCESS"), b"").unwrap();
    out
}

/// A column in the types Spark writes: codes as plain binary, list items named `element` (the
/// insets' structs field by field).
fn as_spark_types(column: &ArrayRef) -> ArrayRef {
    match column.data_type() {
        DataType::FixedSizeBinary(_) => Arc::new(column.as_fixed_size_binary().iter().collect::<BinaryArray>()),
        DataType::List(_) => {
            let list = column.as_list::<i32>();
            let values = as_spark_types(list.values());
            let item = Arc::new(Field::new("element", values.data_type().clone(), false));
            Arc::new(ListArray::new(item, list.offsets().clone(), values, list.nulls().cloned()))
        }
        DataType::Struct(fields) => {
            let found = column.as_struct();
            let children: Vec<(Arc<Field>, ArrayRef)> = fields
                .iter()
                .zip(found.columns())
                .map(|(f, child)| {
                    let child = as_spark_types(child);
                    (Arc::new(Field::new(f.name(), child.data_type().clone(), f.is_nullable())), child)
                })
                .collect();
            Arc::new(StructArray::from(children))
        }
        _ => column.clone(),
    }
}

/// `file:` URIs → local paths, so that answers about the same photos compare equal.
fn local(text: &str) -> String {
    text.replace("file:", "")
}

#[test]
fn search_dedup_report_and_show_give_the_same_answers_on_a_spark_shaped_table() {
    let dir = temp_dir("features-shapes");
    let (photos, table) = photos_and_table(&dir);
    let spark = as_spark_writes_it(&table, &dir);

    // The reader gives the one shape for both.
    let rows = |t: &Path| -> Vec<RecordBatch> { FeaturesReader::open(t).unwrap().batches().map(Result::unwrap).collect() };
    let (cli_batches, spark_batches) = (rows(&table), rows(&spark));
    assert_eq!(cli_batches[0].schema(), spark_batches[0].schema());
    assert_eq!(FeaturesReader::open(&spark).unwrap().files().len(), 2, "_SUCCESS and .crc files are not parts");
    let count = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert_eq!(count(&cli_batches), count(&spark_batches));
    // A table from before rows carried insets and their arithmetic (no such columns) reads as rows
    // without any.
    let flat = raw_rows(&table);
    let old = dir.join("without-insets.parquet");
    let later = ["insets", "arithmetic"];
    write_parquet(&old, &flat.project(&(0..flat.num_columns()).filter(|&c| !later.contains(&flat.schema().field(c).name().as_str())).collect::<Vec<_>>()).unwrap());
    let old_batches = rows(&old);
    assert_eq!(old_batches[0].schema(), cli_batches[0].schema());
    for column in later {
        assert_eq!(old_batches.iter().map(|b| b.column_by_name(column).unwrap().null_count()).sum::<usize>(), count(&cli_batches), "{column}");
    }

    for query in ["chelsea-mirrored.png", "coffee-small.jpg", "rocket.jpg"] {
        let search = |t: &Path| {
            let out = run(imgfeat().args(["search", "--json", "-k", "5", "--threads", "1", "--index"]).arg(t).arg(photos.join(query)));
            local(&String::from_utf8_lossy(&out.stdout))
        };
        let (from_cli, from_spark) = (search(&table), search(&spark));
        assert!(from_cli.contains(query), "{from_cli}");
        assert_eq!(from_cli, from_spark, "search for {query}");
    }

    let dedup = |t: &Path, out: &str| {
        run(imgfeat().args(["dedup", "--max-distance", "40", "-o"]).arg(dir.join(out)).arg(t));
        local(&std::fs::read_to_string(dir.join(out)).unwrap())
    };
    let (from_cli, from_spark) = (dedup(&table, "cli.csv"), dedup(&spark, "spark.csv"));
    assert!(from_cli.contains("chelsea-mirrored.png") && from_cli.lines().count() == 5, "{from_cli}");
    assert_eq!(from_cli, from_spark);

    let report = |t: &Path, out: &str| {
        run(imgfeat().args(["report", "--max-distance", "40", "-o"]).arg(dir.join(out)).arg(t));
        local(&std::fs::read_to_string(dir.join(out)).unwrap().replace(&t.display().to_string(), "TABLE"))
    };
    let (from_cli, from_spark) = (report(&table, "cli.html"), report(&spark, "spark.html"));
    assert!(from_cli.contains("notes.txt") && from_cli.contains("class=\"group\""));
    assert_eq!(from_cli, from_spark, "the same page");

    let show = |t: &Path| local(&String::from_utf8_lossy(&run(imgfeat().args(["show", "--json", "--index"]).arg(t).arg(photos.join("coffee.jpg"))).stdout));
    let (from_cli, from_spark) = (show(&table), show(&spark));
    assert!(from_cli.contains("\"class_name\": \"cup\"") && from_cli.contains("whole_feature"), "{from_cli}");
    assert_eq!(from_cli, from_spark);
    // The stored row is the computed one.
    let computed = run(imgfeat().args(["show", "--threads", "1"]).arg(photos.join("coffee.jpg")));
    let stored = run(imgfeat().args(["show", "--index"]).arg(&spark).arg(photos.join("coffee.jpg")));
    let code = |out: &Output| String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("code:")).unwrap().to_string();
    assert_eq!(code(&computed), code(&stored));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tables_that_cannot_be_read_are_errors_naming_the_file() {
    let dir = temp_dir("features-bad");
    let (_, table) = photos_and_table(&dir);
    let error = |t: &Path| fails(imgfeat().args(["dedup", "-o"]).arg(dir.join("out.csv")).arg(t));

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("_SUCCESS"), b"").unwrap();
    let message = error(&empty);
    assert!(message.contains("cannot read features table") && message.contains("no Parquet part files"), "{message}");

    let other = dir.join("other.parquet");
    let batch = RecordBatch::try_from_iter([("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]).unwrap();
    write_parquet(&other, &batch);
    let message = error(&other);
    assert!(message.contains("other.parquet") && message.contains("not an imgfeat features table"), "{message}");

    let truncated = dir.join("truncated");
    std::fs::create_dir_all(&truncated).unwrap();
    let bytes = std::fs::read(&table).unwrap();
    std::fs::write(truncated.join("part-00000.parquet"), &bytes).unwrap();
    std::fs::write(truncated.join("part-00001.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let message = error(&truncated);
    assert!(message.contains("part-00001.parquet") && !message.contains("panick"), "{message}");

    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(&table, mixed.join("part-00000.parquet")).unwrap();
    run(imgfeat().args(["extract", "--bits", "64", "-o"]).arg(mixed.join("part-00001.parquet")).arg(fixtures().join("coffee.jpg")));
    let message = error(&mixed);
    assert!(message.contains("part-00001.parquet") && message.contains("64 bits"), "{message}");

    // A table whose feature columns are empty: the default rule verifies with features, so dedup asks
    // for the rule without verification, which groups by the codes.
    let rows = raw_rows(&table);
    let columns: Vec<ArrayRef> = rows
        .schema()
        .fields()
        .iter()
        .zip(rows.columns())
        .map(|(field, column)| match field.name().ends_with("feature") {
            true => arrow::array::new_null_array(field.data_type(), rows.num_rows()),
            false => column.clone(),
        })
        .collect();
    let featureless = dir.join("featureless.parquet");
    write_parquet(&featureless, &RecordBatch::try_new(rows.schema(), columns).unwrap());
    let message = error(&featureless);
    assert!(message.contains("no features") && message.contains("--no-verify"), "{message}");
    run(imgfeat().args(["dedup", "--no-verify", "-o"]).arg(dir.join("codes-only.csv")).arg(&featureless));
    assert!(std::fs::read_to_string(dir.join("codes-only.csv")).unwrap().contains("chelsea-mirrored.png"));

    // Rows made in two precisions (as executors on different CPUs make them): read, with a warning.
    let arithmetic = rows.column_by_name("arithmetic").unwrap().as_string::<i32>();
    let other = |made: &str| if made.starts_with("int8") { "f32 (avx2)" } else { "int8 (avx2-int8)" };
    let made: Vec<usize> = (0..rows.num_rows()).filter(|&r| arithmetic.is_valid(r)).collect();
    assert!(made.len() >= 2, "the fixtures make at least two rows");
    let (changed, made_in) = (made[0], arithmetic.value(made[1]));
    let mixed: StringArray = (0..rows.num_rows()).map(|r| arithmetic.is_valid(r).then(|| if r == changed { other(made_in) } else { arithmetic.value(r) })).collect();
    let columns: Vec<ArrayRef> = rows.schema().fields().iter().zip(rows.columns()).map(|(field, column)| match field.name().as_str() {
        "arithmetic" => Arc::new(mixed.clone()) as ArrayRef,
        _ => column.clone(),
    }).collect();
    let two_precisions = dir.join("two-precisions.parquet");
    write_parquet(&two_precisions, &RecordBatch::try_new(rows.schema(), columns).unwrap());
    let warned = run(imgfeat().args(["dedup", "-o"]).arg(dir.join("two-precisions.csv")).arg(&two_precisions));
    let warning = String::from_utf8_lossy(&warned.stderr);
    assert!(warning.contains("made in 2 precisions") && warning.contains(&format!("1 in {}", other(made_in))), "{warning}");
    let one = run(imgfeat().args(["dedup", "-o"]).arg(dir.join("one-precision.csv")).arg(&table));
    assert!(!String::from_utf8_lossy(&one.stderr).contains("precisions"), "one precision is no warning");

    // In memory (the Python API's pyarrow tables, whose schema metadata carries the provenance): the
    // record is read, so foreign codes are refused, and a damaged record is an error rather than taken
    // for no record.
    let made = imgfeat::features::read::provenance(&table).unwrap().expect("extract records the provenance");
    // Each row says what made it, as the table's record does (a Spark job's table has only the rows' word).
    let (arithmetic, errors) = (rows.column_by_name("arithmetic").unwrap().as_string::<i32>(), rows.column_by_name("error").unwrap());
    let recorded = made.arithmetic.as_ref().expect("extract records the arithmetic").to_string();
    for r in 0..rows.num_rows() {
        assert_eq!(arithmetic.is_valid(r), errors.is_null(r), "row {r}: an error row was made by nothing");
        assert!(arithmetic.is_null(r) || arithmetic.value(r) == recorded, "row {r}: {} against {recorded}", arithmetic.value(r));
    }
    let with_provenance = |json: String| {
        let mut metadata = rows.schema().metadata().clone();
        metadata.insert("imgfeat.provenance", json);
        let schema = Arc::new(rows.schema().as_ref().clone().with_metadata(metadata));
        RecordBatch::try_new(schema, rows.columns().to_vec()).unwrap()
    };
    let index = imgfeat::search::Index::from_batches([with_provenance(serde_json::to_string(&made).unwrap())]).unwrap();
    let message = index.check_comparable(256, Some("0123456789abcdef")).unwrap_err().to_string();
    assert!(message.contains("projection 0123456789abcdef"), "{message}");
    index.check_comparable(256, made.projection.as_deref()).unwrap();
    let message = imgfeat::search::Index::from_batches([with_provenance("{not json".into())]).unwrap_err().to_string();
    assert!(message.contains("unreadable imgfeat.provenance"), "{message}");

    let message = error(&dir.join("missing.parquet"));
    assert!(message.contains("cannot read features table") && message.contains("missing.parquet"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The photos a long run works on: the 700 shared ImageNet photos, or the fixtures copied to 700 names.
fn many_photos(dir: &Path) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/imagenet-sample");
    if shared.is_dir() {
        return shared;
    }
    common::skipped(format_args!("SKIPPED part: {} is absent; the fixtures copied to 700 names stand in", shared.display()));
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let names = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"];
    for i in 0..700 {
        std::fs::copy(fixtures().join(names[i % 4]), photos.join(format!("{i:03}-{}", names[i % 4]))).unwrap();
    }
    photos
}

/// Rows by path, every column, as the reader gives them.
fn rows_by_path(table: &Path) -> BTreeMap<String, Vec<String>> {
    let mut rows = BTreeMap::new();
    for batch in FeaturesReader::open(table).unwrap().batches() {
        let batch = batch.unwrap();
        let paths = batch.column(0).as_string::<i32>();
        for r in 0..batch.num_rows() {
            let values = batch.columns().iter().map(|c| format!("{:?}", c.slice(r, 1))).collect();
            assert!(rows.insert(paths.value(r).to_string(), values).is_none(), "two rows for {}", paths.value(r));
        }
    }
    rows
}

#[test]
fn an_extract_killed_at_random_moments_resumes_to_the_uninterrupted_rows() {
    let dir = temp_dir("features-kill");
    let photos = many_photos(&dir);
    let files = std::fs::read_dir(&photos).unwrap().count();
    let clean = dir.join("clean.parquet");
    run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&clean).arg(&photos));

    // An earlier, good table at the output path must survive every kill untouched.
    let output = dir.join("features.parquet");
    run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&output).arg(fixtures()));
    let earlier = std::fs::read(&output).unwrap();

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut state = seed;
    let mut kills = 0;
    let mut resumed_rows = Vec::new();
    let mut runs = 0;
    while kills < 5 {
        runs += 1;
        assert!(runs < 100, "only {kills} kills in {runs} runs (seed {seed})");
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let moment = Duration::from_millis(300 + (state >> 33) % 2500);
        let mut child = imgfeat().args(["extract", "--threads", "2", "--batch-size", "16", "-o"]).arg(&output).arg(&photos)
            .stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::sleep(moment);
        if child.try_wait().unwrap().is_some() {
            // It finished (on a fast CPU the resumed rest of a run can be shorter than the moment): the
            // table must be the uninterrupted one; then start over from the earlier table, so that the
            // remaining kills fall inside a run as well.
            assert!(child.wait_with_output().unwrap().status.success(), "a resumed run failed (seed {seed})");
            assert_eq!(rows_by_path(&output), rows_by_path(&clean), "a resumed run finished with other rows (seed {seed})");
            std::fs::write(&output, &earlier).unwrap();
            resumed_rows.clear();
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        let stderr = child.wait_with_output().unwrap().stderr;
        kills += 1;
        assert_eq!(std::fs::read(&output).unwrap(), earlier, "killed after {moment:?} (seed {seed}): the earlier table changed");
        let resumed = String::from_utf8_lossy(&stderr).lines().find_map(|l| {
            l.strip_prefix("resuming an interrupted run: ").and_then(|n| n.split_whitespace().next()?.parse::<usize>().ok())
        });
        resumed_rows.push(resumed.unwrap_or(0));
        assert!(resumed_rows.windows(2).all(|w| w[0] <= w[1]), "committed rows never go back: {resumed_rows:?}");
    }
    let last = run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&output).arg(&photos));
    assert!(!dir.join("features.parquet.parts").exists(), "the parts are removed once merged");
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(stdout.contains(&format!("({files} rows)")), "{stdout}");
    let (finished, uninterrupted) = (rows_by_path(&output), rows_by_path(&clean));
    assert_eq!(finished.len(), files);
    assert!(finished == uninterrupted, "the resumed table differs from the uninterrupted run's (seed {seed}, resumed {resumed_rows:?})");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn append_adds_only_new_photos_and_refuses_tables_made_otherwise() {
    let dir = temp_dir("features-append");
    let photos = fixture_folder(&dir, &["chelsea.jpg", "coffee.jpg"]);
    let output = dir.join("features.parquet");
    run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&output).arg(&photos));
    for name in ["astronaut.jpg", "rocket.jpg"] {
        std::fs::copy(fixtures().join(name), photos.join(name)).unwrap();
    }
    let out = run(imgfeat().args(["extract", "--append", "--threads", "2", "-o"]).arg(&output).arg(&photos));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("2 images: 2 ok") && stdout.contains("(2 already in the table)") && stdout.contains("(4 rows)"), "{stdout}");
    let fresh = dir.join("fresh.parquet");
    run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&fresh).arg(&photos));
    assert!(rows_by_path(&output) == rows_by_path(&fresh), "appended rows equal a fresh run's, in path order");
    let paths: Vec<String> = raw_rows(&output).column(0).as_string::<i32>().iter().map(|p| p.unwrap().to_string()).collect();
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "{paths:?}");

    // Other settings, or a file that is not a features table: refused, and the table untouched.
    let before = std::fs::read(&output).unwrap();
    let message = fails(imgfeat().args(["extract", "--append", "--bits", "64", "-o"]).arg(&output).arg(&photos));
    assert!(message.contains("its codes have 256 bits, this run makes 64"), "{message}");
    let message = fails(imgfeat().args(["extract", "--append", "--detector", "oidv4", "-o"]).arg(&output).arg(&photos));
    assert!(message.contains("other settings (detector)"), "{message}");
    assert_eq!(std::fs::read(&output).unwrap(), before);
    let other = dir.join("other.parquet");
    write_parquet(&other, &RecordBatch::try_from_iter([("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)]).unwrap());
    let message = fails(imgfeat().args(["extract", "--append", "-o"]).arg(&other).arg(&photos));
    assert!(message.contains("other.parquet") && message.contains("not written by imgfeat extract"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_file_reached_twice_is_one_row_and_a_symlink_loop_is_reported_once() {
    let dir = temp_dir("features-walk");
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("nested")).unwrap();
    std::fs::copy(fixtures().join("coffee.jpg"), photos.join("nested/coffee.jpg")).unwrap();
    std::fs::copy(fixtures().join("chelsea.jpg"), photos.join("chelsea.jpg")).unwrap();
    std::os::unix::fs::symlink(&photos, photos.join("nested/loop")).unwrap(); // a loop
    std::os::unix::fs::symlink(photos.join("nested"), photos.join("again")).unwrap(); // the same folder twice
    std::os::unix::fs::symlink(dir.join("gone.jpg"), photos.join("broken.jpg")).unwrap(); // a broken link
    let output = dir.join("features.parquet");
    let out = run(imgfeat().args(["extract", "--threads", "2", "-o"]).arg(&output).arg(&photos).arg(photos.join("chelsea.jpg")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.contains("loop")).count(), 1, "{stderr}");
    let rows = rows_by_path(&output);
    let names: Vec<&str> = rows.keys().map(|p| p.strip_prefix(photos.to_str().unwrap()).unwrap()).collect();
    // coffee.jpg is reached as again/coffee.jpg first (walks go in name order) and kept by that name.
    assert_eq!(names, ["/again/coffee.jpg", "/broken.jpg", "/chelsea.jpg"], "{names:?}");
    let batch = raw_rows(&output);
    let errors = batch.column_by_name("error").unwrap().as_string::<i32>();
    assert!(errors.value(1).contains("cannot read"), "a broken link is an error row: {:?}", errors.value(1));
    assert!(errors.is_null(0) && errors.is_null(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

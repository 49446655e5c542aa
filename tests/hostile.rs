//! The pipeline over the hostile-input corpus (`tests/hostile/generate_corpus.py`, ~10,000 files:
//! random bytes, truncations, mutations, decompression bombs, lying signatures, odd colour spaces and
//! shapes): every input gives a row or an error that says what was wrong, none panics, none hangs.
//! scripts/test.sh generates the corpus into target/hostile-corpus before `cargo test`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imgfeat::{Config, ImageError, Pipeline, Record};

/// A hang detector, not a speed test: the slowest legitimate input (a 4000x4000 PNG) takes well under
/// a second.
const PER_INPUT_LIMIT: Duration = Duration::from_secs(20);

fn corpus() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("IMGFEAT_HOSTILE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/hostile-corpus"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        common::skipped(format_args!(
            "SKIPPED: no hostile corpus at {}; generate it with `python tests/hostile/generate_corpus.py {}`",
            dir.display(),
            dir.display()
        ));
        return None;
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    Some(files)
}

/// One input's path, what the pipeline made of it, and how long that took.
type Outcome = (String, Result<Record, ImageError>, Duration);

#[test]
fn every_hostile_input_gives_a_row_or_a_clear_error() {
    let Some(files) = corpus() else { return };
    assert!(files.len() >= 9000, "the corpus has {} files; regenerate it", files.len());
    let pipeline = Pipeline::new(Config::from_json(r#"{"threads": 1}"#).unwrap()).unwrap();
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                let bytes = std::fs::read(path).unwrap();
                let started = Instant::now();
                let result = pipeline.process_one(&bytes);
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                results.lock().unwrap().push((name, result, started.elapsed()));
            });
        }
    });
    let results = results.into_inner().unwrap();
    assert_eq!(results.len(), files.len(), "one result per input");

    let mut failures = Vec::new();
    let (mut rows, mut errors) = (0, 0);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let slowest = results.iter().max_by_key(|(_, _, took)| *took).unwrap();
    for (name, result, took) in &results {
        if *took > PER_INPUT_LIMIT {
            failures.push(format!("{name}: took {took:?}"));
        }
        match result {
            Ok(record) => {
                rows += 1;
                if record.feature.as_ref().is_none_or(|f| f.iter().any(|x| !x.is_finite())) {
                    failures.push(format!("{name}: a row without a finite feature"));
                }
            }
            Err(error) => {
                errors += 1;
                let message = error.to_string();
                *kinds.entry(message.split([':', '(']).next().unwrap_or_default().trim().to_string()).or_default() += 1;
                if matches!(error, ImageError::Internal(_)) {
                    failures.push(format!("{name}: a panic inside the pipeline: {message}"));
                } else if message.len() < 12 {
                    failures.push(format!("{name}: an error that does not say what was wrong: {message:?}"));
                }
            }
        }
        // Inputs that are valid images (if unusual) must give rows; bombs must be refused.
        let must_decode = ["valid-", "cmyk-", "gray-", "png-16-bit", "rgba-", "palette-", "one-by-", "100000-by-one", "exif-", "animated-", "trailing-garbage-", "large-png-"];
        if must_decode.iter().any(|p| name.starts_with(p)) && result.is_err() {
            failures.push(format!("{name}: a valid image refused: {}", result.as_ref().unwrap_err()));
        }
        if name.starts_with("bomb-") && result.is_ok() {
            failures.push(format!("{name}: a decompression bomb was decoded"));
        }
        if name == "empty" && !matches!(result, Err(ImageError::Empty)) {
            failures.push(format!("{name}: {result:?}"));
        }
    }
    eprintln!(
        "{} hostile inputs: {rows} rows, {errors} errors, 0 crashes; slowest {} in {:?}; errors by kind: {kinds:?}",
        results.len(),
        slowest.0,
        slowest.2
    );
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

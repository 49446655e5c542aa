//! Which files a list of inputs names: files as given, folders walked. The CLI's `extract` and
//! `fit-codes` and the Python API's `extract` list their inputs here, so that all make the same rows.

use std::path::PathBuf;

use crate::error::Error;

/// Every file under `inputs` (folders walked recursively, symlinks followed), each once however many
/// ways it is reached, in path order. A symlink loop is reported once and not followed; an entry that
/// cannot be examined (a broken link) is kept, so that it becomes an error row rather than vanish.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut loops = std::collections::HashSet::new();
    for input in inputs {
        if !input.exists() {
            return Err(Error::io(input.clone(), std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let hidden = |entry: &walkdir::DirEntry| entry.depth() > 0 && entry.file_name().to_string_lossy().starts_with('.');
        for entry in walkdir::WalkDir::new(input).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| !hidden(e)) {
            let path = match entry {
                Ok(entry) if entry.file_type().is_dir() => continue,
                Ok(entry) => entry.into_path(),
                Err(e) if e.loop_ancestor().is_some() => {
                    // One loop can be met through several links: say so once.
                    let ancestor = e.loop_ancestor().map(|a| std::fs::canonicalize(a).unwrap_or_else(|_| a.to_path_buf()));
                    if loops.insert(ancestor) {
                        log::warn!("{e}; not followed");
                    }
                    continue;
                }
                Err(e) => match (e.path(), e.depth()) {
                    (Some(path), depth) if depth > 0 => path.to_path_buf(),
                    _ => return Err(Error::io(input.clone(), e.into_io_error().unwrap_or_else(|| std::io::Error::other("cannot walk")))),
                },
            };
            // The same file through two names (a symlinked folder, an input named twice): one row.
            let identity = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.insert(identity) {
                files.push(path);
            }
        }
    }
    // Path order as text, the order the table's rows are merged in.
    files.sort_by_cached_key(|p| p.to_string_lossy().into_owned());
    Ok(files)
}


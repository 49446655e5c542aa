//! What the integration tests share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Says (`SKIPPED …`) that a test, or part of it, did not run for want of material outside the repository
/// (`../shared/data`, the generated hostile corpus). Written to the stderr handle, not with
/// `eprintln!`: libtest captures the macros' output of a passing test, and a skip nobody sees is a
/// silent one.
#[allow(dead_code)]
pub fn skipped(message: std::fmt::Arguments) {
    // A note that cannot be written has nowhere else to go; the test goes on either way.
    let _ = writeln!(std::io::stderr(), "{message}");
}

// The helpers below serve the tests that run the binary (cli, features); the other test binaries that
// include this module use only `skipped`.

/// The `imgfeat` binary of this build.
#[allow(dead_code)]
pub fn imgfeat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgfeat"))
}

/// The committed fixture photos.
#[allow(dead_code)]
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos")
}

/// A fresh, empty folder for one test, named after it and this process.
#[allow(dead_code)]
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgfeat-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `dir/photos` with copies of the fixtures `names`.
#[allow(dead_code)]
pub fn fixture_folder(dir: &Path, names: &[&str]) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in names {
        std::fs::copy(fixtures().join(name), photos.join(name)).unwrap();
    }
    photos
}

/// `dir/photos`: the four fixtures, a mirrored copy of chelsea.jpg and a half-size JPEG of coffee.jpg
/// (near-duplicates that `dedup` and `search` must find).
#[allow(dead_code)]
pub fn near_duplicate_photos(dir: &Path) -> PathBuf {
    let photos = fixture_folder(dir, &["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]);
    let chelsea = image::open(fixtures().join("chelsea.jpg")).unwrap().to_rgb8();
    image::imageops::flip_horizontal(&chelsea).save(photos.join("chelsea-mirrored.png")).unwrap();
    let coffee = image::open(fixtures().join("coffee.jpg")).unwrap().to_rgb8();
    image::imageops::resize(&coffee, 300, 200, image::imageops::FilterType::Triangle).save(photos.join("coffee-small.jpg")).unwrap();
    photos
}

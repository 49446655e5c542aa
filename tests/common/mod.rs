//! What the integration tests share.

use std::io::Write;

/// Says (`SKIPPED …`) that a test, or part of it, did not run for want of material outside the repository
/// (`../shared/data`, the generated hostile corpus). Written to the stderr handle, not with
/// `eprintln!`: libtest captures the macros' output of a passing test, and a skip nobody sees is a
/// silent one.
pub fn skipped(message: std::fmt::Arguments) {
    // A note that cannot be written has nowhere else to go; the test goes on either way.
    let _ = writeln!(std::io::stderr(), "{message}");
}

//! Integration tests of the domain crate.

mod merkle;
mod patch;
mod plugin;
mod query;
mod schema;

/// This crate's directory, read when the test runs (cargo and nextest set it): a test binary
/// reused from a build in another checkout (one shared target directory) then still reads this
/// checkout's files, not the directory it was compiled in.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

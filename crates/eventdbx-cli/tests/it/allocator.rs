//! The `dbx` binary's allocator: jemalloc with its background thread, which gives the memory of
//! large messages back to the system once they are answered (docs/server.md, "Messages in
//! flight"); glibc's malloc kept it.

/// jemalloc's compiled-in options are a string in the binary: `background_thread:true` is the
/// setting that purges freed pages while the server idles. Without it (glibc's malloc, or
/// jemalloc purging only when the freeing thread allocates again) the RSS stays high after a
/// burst of large messages. Read from the file, not measured, so the test needs no timing.
#[test]
fn dbx_runs_on_jemalloc_with_its_background_thread() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_dbx")).expect("read the dbx binary");
    let needle = b"background_thread:true";
    assert!(
        binary.windows(needle.len()).any(|window| window == needle),
        "dbx is not built with jemalloc's background thread (the workspace's tikv-jemallocator \
         dependency with the `background_threads` feature, and the #[global_allocator] in \
         crates/eventdbx-cli/src/main.rs)"
    );
}

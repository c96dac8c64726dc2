//! Integration tests of the server.
mod admission;
mod architecture;
mod auth;
mod busy_poll;
mod config;
mod control;
mod correctness;
mod error_codes;
mod flood;
mod flows;
mod messages;
mod plugins;
mod process_plugin;
mod references;
mod restart;
mod runtime_flavor;
mod shared;
mod shutdown;
mod standalone;
mod subscriptions;
mod support;
mod tenants;
mod tenants_control;

/// This crate's directory, read when the test runs (cargo and nextest set it): a test binary
/// reused from a build in another checkout (one shared target directory) then still reads this
/// checkout's files, not the directory it was compiled in.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

//! Integration tests of the store.

mod crash;
mod crash_cascade;
mod jobs;
mod references;
mod relaxed;
mod store;

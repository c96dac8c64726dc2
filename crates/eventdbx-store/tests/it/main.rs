//! Integration tests of the store.

mod crash;
mod crash_cascade;
mod references;
mod store;

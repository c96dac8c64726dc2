//! Integration tests of the store.

mod crash;
mod references;
mod store;

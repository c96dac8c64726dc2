//! Integration tests of the store.

mod crash;
mod store;

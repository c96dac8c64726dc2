//! Integration tests of the store.

mod store;

//! Integration tests of the domain crate.

mod merkle;
mod patch;
mod query;
mod schema;

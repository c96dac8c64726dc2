//! Integration tests of the domain crate.

mod merkle;
mod patch;
mod plugin;
mod query;
mod schema;

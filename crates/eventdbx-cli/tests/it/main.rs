//! Integration tests of `dbx`: the real binary, against a real `dbx serve` where it needs one.

mod aggregates;
mod allocator;
mod chaos;
mod config;
mod durability;
mod full_disk;
mod init_and_serve;
mod plugins;
mod postgres;
mod schema;
mod store;
mod subscriptions;
mod tenants;
mod tokens;
mod workspace;

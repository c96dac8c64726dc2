//! Integration tests of `dbx`: the real binary, against a real `dbx serve` where it needs one.

mod aggregates;
mod allocator;
mod chaos;
mod config;
mod durability;
mod full_disk;
mod init_and_serve;
mod migrate;
mod pg_outage;
mod plugins;
mod postgres;
mod scale_out;
mod schema;
mod store;
mod subscriptions;
mod tenants;
mod tokens;
mod workspace;

//! The `dbx` server as a library.
//!
//! # Layout
//! - [`config`]: `.dbx/config.toml`, discovery, secrets in 0600 files, workspace init.
//! - [`auth`]: Ed25519 JWT tokens: issue, verify (cached), authorise, revoke; the v2 token-id
//!   registry.
//! - [`tenants`]: tenant placement (shards), quotas, schema sets and their published versions.

pub mod auth;
pub mod config;
pub mod tenants;

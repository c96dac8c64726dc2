//! The `dbx` server as a library.
//!
//! # Layout
//! - [`config`]: `.dbx/config.toml`, discovery, secrets in 0600 files, workspace init.
//! - [`auth`]: Ed25519 JWT tokens: issue, verify (cached), authorise, revoke; the v2 token-id
//!   registry.
//! - [`tenants`]: tenant placement (shards), quotas, schema sets and their published versions.
//! - `server`: [`Server`] (open a data directory, [`Server::run`] the control port, serve HTTP
//!   health and metrics) and [`run`].
//! - `connection`: the hello, the v1/v2 handshakes and the session loops.
//! - `commands`: one type per control request: parse, authorise, apply, encode.
//! - [`process_plugin`]: the `process` plugin kind: one long-lived child per plugin, fed
//!   `PluginEnvelope` messages and acknowledging each; binaries from the local plugin registry.
//! - [`plugins`]: the plugin registry, publish-target routing and the delivery workers.

mod commands;
mod connection;
pub mod error;
mod http;
pub mod plugins;
mod server;

pub mod auth;
pub mod config;
// Public for its integration tests; the plugin registry's delivery workers call it.
pub mod process_plugin;
pub mod tenants;

pub use server::{
    authority_config, read_server_key, run, Metrics, Server, ServerState, StartError, IDLE_TIMEOUT,
    MAX_CONNECTIONS,
};

//! The `dbx` server as a library.
//!
//! # Layout
//! Modules import one another in one direction (checked by `tests/it/architecture.rs`; the map
//! is in `docs/architecture.md`, "Server modules"):
//! - [`config`]: `.dbx/config.toml`, discovery, secrets in 0600 files, workspace init.
//! - [`fs`]: the one atomic file write and the one owner-only secret reader every file the server
//!   writes or every secret it reads goes through.
//! - [`auth`]: Ed25519 JWT tokens: issue, verify (cached), authorise, revoke; the v2 token-id
//!   registry.
//! - [`tenants`]: tenant placement (shards), quotas, schema sets and their published versions.
//! - [`plugins`]: the plugin registry, publish-target routing, the delivery workers and the
//!   [`plugins::process`] kind (one long-lived child per plugin, fed `PluginEnvelope` messages
//!   and acknowledging each; binaries from the local plugin registry).
//! - `state`: [`ServerState`] and [`Metrics`], what every connection shares; imports none of
//!   the modules below.
//! - `server`: [`Server`] (open a data directory, [`Server::run`] the control port, serve HTTP
//!   health and metrics) and [`run`].
//! - `control`: the poll of the control documents servers sharing a database keep their
//!   tokens, tenants and plugin definitions in.
//! - `connection`: the hello, the v1/v2 handshakes and the session loops.
//! - `commands`: one type per control request: parse, authorise, apply, encode.
//! - `http`: `/health` and `/metrics`.

mod commands;
mod connection;
mod control;
pub mod error;
mod heads;
mod http;
pub mod plugins;
mod server;
mod state;

pub mod auth;
pub mod config;
pub mod fs;
mod random_id;
pub mod tenants;

pub use connection::admission::{MAX_PREAUTH, MAX_PREAUTH_PER_IP, PREAUTH_DEADLINE};
pub use server::{
    authority_config, open_authority, read_server_key, run, Server, StartError, MAX_CONNECTIONS,
};
#[cfg(feature = "test-hooks")]
pub use state::HeldRead;
pub use state::{Metrics, ServerState, DRAIN_TIMEOUT, IDLE_TIMEOUT};

//! The EventDBX control protocol, without sockets.
//!
//! This crate is to the server and the client what `postgres-protocol` is to `tokio-postgres`:
//! it knows every byte of the wire and nothing of the network. Callers feed it bytes they read
//! and write the bytes it produces.
//!
//! # Layout
//! - [`schema`]: the Cap'n Proto messages (committed generated code; see `schema/*.capnp`).
//! - [`control`]: one typed request and reply per member of the control unions, shared by the
//!   server and the client.
//! - [`message`]: encoding and decoding of whole stream messages with reader limits.
//! - [`hello`]: the `ControlHello` / `ControlHelloResponse` codec (raw stream messages, no prefix).
//! - [`frame`]: u32 big-endian length frames with typed limit errors.
//! - [`noise`]: the v1 (`Noise_NNpsk0`) and v2 (`Noise_XXpsk3`) handshake and transport state
//!   machines, plus v2 chunking of large logical messages.
//! - [`plugin`]: the `PluginEnvelope` messages on a `process` plugin's stdin and stdout, owned,
//!   with an incremental decoder.
//! - [`negotiate`]: which protocol version to try, and whether a rejection allows a fallback.
//! - `transport` (feature `tokio`): frames, the hello and busy-poll turns over any tokio
//!   `AsyncRead`/`AsyncWrite`, shared by the server and the client; the sockets stay theirs.

pub mod control;
pub mod error;
pub mod frame;
pub mod hello;
pub mod message;
pub mod negotiate;
pub mod noise;
pub mod plugin;
pub mod schema;
#[cfg(feature = "tokio")]
pub mod transport;

pub use error::{ProtoError, Result};

//! The EventDBX client: an async client over the control protocol, and a [`blocking`] wrapper.
//!
//! [`Client::connect`] opens a connection and performs the handshake: protocol v2 (Noise XX
//! with a token-derived PSK, optionally pinned to the server's key) by default, falling back to
//! protocol v1 (`Noise_NNpsk0`) on a server that does not speak v2, or plaintext when asked and
//! granted. One client serves any number of tasks; on v2 their requests are in flight together.
//!
//! ```no_run
//! use eventdbx_client::{Client, ClientConfig, EventsQuery, RetryOptions, Write};
//!
//! # async fn demo() -> eventdbx_client::Result<()> {
//! let config = ClientConfig::new("<token>", "default").retry(RetryOptions::attempts(3));
//! let client = Client::connect(config).await?;
//! client
//!     .write(Write::create("person", "p-1", "person_registered", r#"{"name":"Jane"}"#))
//!     .await?;
//! client
//!     .write(Write::apply("person", "p-1", "person_renamed", r#"{"name":"Janet"}"#).expected_version(1))
//!     .await?;
//! let person = client.get("person", "p-1").await?.value()?;
//! let events = client.events(&EventsQuery::new("person", "p-1")).await?.events()?;
//! assert_eq!(events.len(), 2);
//! match client.write(Write::create("person", "p-1", "person_registered", "{}")).await {
//!     Err(err) if err.code() == "aggregate_exists" => {}
//!     other => panic!("{other:?} {person:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`ClientConfig`], [`RetryOptions`], [`Transport`], `from_env()`.
//! - `known_v2`: the servers that spoke v2 ([`KnownV2Hosts`]), for which the v1 fallback is
//!   refused.
//! - `connection`: the handshake, and the reader and writer tasks that own a socket; requests
//!   are matched to responses by id.
//! - `client`: [`Client`] — every operation, retries, lazy reconnection, pagination.
//! - [`types`]: typed arguments ([`Write`], [`ListQuery`], …) and results that keep the raw JSON
//!   with parsed views.
//! - [`error`]: the opaque [`Error`] with [`kind`](Error::kind), [`code`](Error::code) and
//!   predicates.
//! - [`blocking`]: the same API for synchronous code, holding the async client and a runtime.
//!
//! # Retries
//! Connecting and reads are retried per [`RetryOptions`] after transport failures (connection
//! loss, timeouts, undecodable replies), each time on a new connection with a full handshake and
//! a new request id; server errors are never retried. Mutations are retried only when the
//! request provably never left the client, or it carries an idempotency key: with retries on,
//! the client adds a random key to `create`, `apply` and `patch` when the server honours keys.
//! A reconnect uses exactly the transport the first connection negotiated: a client that spoke
//! v2 never falls back to v1 later, whatever a server (or a man in the middle) answers; nor
//! does a new client for a `host:port` that spoke v2 before ([`KnownV2Hosts`]).
//!
//! # Timeouts and cancellation
//! `connect_timeout` bounds connecting plus the handshake, `request_timeout` each call
//! ([`Client::with_request_timeout`] gives a handle with another one). After a timeout on v2 the
//! late answer is dropped when it arrives and the connection stays; on v1, where answers come in
//! order, the connection is discarded. Dropping a call's future is safe in both: a request
//! abandoned half-written discards the connection, one abandoned later has its answer dropped.

pub mod blocking;
mod client;
pub mod config;
mod connection;
pub mod error;
mod known_v2;
mod stream;
pub mod types;

pub use client::{
    AggregatePages, Client, EventPages, SubscribeOptions, SubscribedEvent, Subscription,
    SubscriptionStart,
};
pub use config::{ClientConfig, KnownV2Hosts, RetryOptions, Transport};
pub use connection::{offered_socket, AnswerSocket, LoopReading, Protocol, FEW_IN_FLIGHT};
pub use error::{Error, ErrorKind, Result};
pub use eventdbx_proto::noise::v2::Fingerprint;
pub use futures_core::Stream;
pub use stream::ItemStream;
pub use types::{
    AggregatesPage, EventsPage, EventsQuery, Found, JsonList, ListQuery, OutboxPage, PublishTarget,
    SchemaActivateResult, SchemaPublish, SchemaPublishResult, SnapshotQuery, TenantAssignResult,
    TenantQuotaResult, Write, Written,
};

//! The Python extension `eventdbx._core`: the Rust client and an embedded server, for the thin
//! Python package in `python/eventdbx/`.
//!
//! # Layout
//! - `awaited`: a Rust future as an `asyncio.Future`, polled on the event loop's thread and
//!   woken through a socket the loop watches.
//! - `client`: [`client::Client`], one class whose methods either block (releasing the GIL) or
//!   return an awaitable, over the one async `eventdbx_client::Client`.
//! - `error`: the one function that maps the client's errors onto the exceptions of
//!   `eventdbx/exceptions.py`.
//! - `logging`: the bridge from the crates' `tracing` events to Python's `logging` (logger
//!   `eventdbx`).
//! - `runtime`: the shared tokio runtime of the asynchronous clients (one worker per four
//!   CPUs).
//! - `server`: [`server::EmbeddedServer`], a real server on `127.0.0.1` for tests and
//!   `python -m eventdbx.server`.
//! - `subscription`: [`subscription::Subscription`], a running subscription whose `next`
//!   blocks or returns an awaitable; `eventdbx/subscription.py` makes it an (async) iterator.
//!
//! A synchronous client (`EventDBXClient`) owns a current-thread tokio runtime: its calls run
//! on the calling thread with the GIL released, and that thread waits for the socket itself, so
//! a round trip wakes no other thread. An asynchronous client (`AsyncEventDBXClient`) sends
//! each request from the event loop's thread; a worker of the shared runtime reads the answer
//! and wakes the loop once, which finishes the call on its thread. Both call the one async
//! `eventdbx_client::Client`.

use pyo3::prelude::*;

mod awaited;
pub mod client;
mod error;
mod logging;
mod runtime;
pub mod server;
pub mod subscription;

/// The encoded `ControlHello` stream message (no length prefix) that opens a v1 connection or
/// names a v2 one; the caller validates and trims.
#[pyfunction]
#[pyo3(signature = (*, protocol_version, token, tenant_id, no_noise = false))]
fn build_control_hello<'py>(
    py: Python<'py>,
    protocol_version: u16,
    token: String,
    tenant_id: String,
    no_noise: bool,
) -> Bound<'py, pyo3::types::PyBytes> {
    let hello = eventdbx_proto::hello::Hello {
        protocol_version,
        token,
        tenant_id,
        no_noise,
    };
    pyo3::types::PyBytes::new(py, &hello.encode())
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add_class::<client::Client>()?;
    m.add_class::<server::EmbeddedServer>()?;
    m.add_class::<subscription::Subscription>()?;
    m.add_function(wrap_pyfunction!(build_control_hello, m)?)?;
    m.add_function(wrap_pyfunction!(server::issue_token, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

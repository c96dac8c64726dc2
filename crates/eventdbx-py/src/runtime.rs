//! The extension's shared tokio runtime: what the asynchronous client's connections run on.
//!
//! Its workers only read the connections' sockets (and run subscriptions' tasks): every
//! request is written, and every answer turned into Python objects, on the event loop's thread
//! (see `awaited`). One Python process has one such thread per event loop, so the runtime has
//! one worker per four CPUs, at least one. A worker per CPU (tokio's default) would only add
//! threads that wake each other to look for work (on two CPUs, four workers spent 2.3 times
//! the CPU of the thread doing the work: `docs/benchmarks.md`, "The asynchronous client's
//! cost").

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// CPUs per runtime worker.
const CPUS_PER_WORKER: usize = 4;

/// The name of the runtime's threads (workers and blocking pool), as `/proc` and debuggers
/// show it.
pub(crate) const THREAD_NAME: &str = "eventdbx-client";

static RUNTIME: PyOnceLock<tokio::runtime::Runtime> = PyOnceLock::new();

/// How many workers the runtime has on this machine.
fn workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus / CPUS_PER_WORKER).max(1)
}

/// The runtime, started on first use.
pub(crate) fn runtime(py: Python<'_>) -> PyResult<&'static tokio::runtime::Runtime> {
    RUNTIME.get_or_try_init(py, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .map_err(|err| PyRuntimeError::new_err(format!("cannot start the runtime: {err}")))
    })
}

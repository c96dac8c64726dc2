//! [`Subscription`]: the Python-facing handle on one `eventdbx_client::Subscription`. The
//! Python package wraps it in an iterator (`for`) or an async iterator (`async for`) of typed
//! events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;

use crate::client::Home;

/// A running subscription; `next` yields `(position, event_json)` or `None` once it ended.
#[pyclass(module = "eventdbx._core", frozen)]
#[derive(Debug)]
pub struct Subscription {
    /// `None` once closed, which ends the subscription (the server is told).
    events: Arc<tokio::sync::Mutex<Option<eventdbx_client::Subscription>>>,
    /// Set by `close`: a `next` waiting meanwhile ends the subscription when it returns.
    closed: Arc<AtomicBool>,
    home: Home,
}

impl Subscription {
    pub(crate) fn new(events: eventdbx_client::Subscription, home: Home) -> Self {
        Subscription {
            events: Arc::new(tokio::sync::Mutex::new(Some(events))),
            closed: Arc::new(AtomicBool::new(false)),
            home,
        }
    }
}

#[pymethods]
impl Subscription {
    /// The next event as `(position, event_json)`, blocking (GIL released) or as an awaitable;
    /// `None` once the subscription is closed. A failure the client could not resume from
    /// raises, and the subscription then ends.
    #[pyo3(signature = (*, asynchronous = false))]
    fn next(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        let (events, closed) = (Arc::clone(&self.events), Arc::clone(&self.closed));
        self.home.run(py, asynchronous, async move {
            let mut events = events.lock().await;
            if closed.load(Ordering::Acquire) {
                *events = None;
            }
            let Some(subscription) = events.as_mut() else {
                return Ok(None);
            };
            match subscription.next().await {
                Some(Ok(event)) => Ok(Some((event.position, event.event.to_string()))),
                Some(Err(err)) => {
                    *events = None;
                    Err(err)
                }
                None => {
                    *events = None;
                    Ok(None)
                }
            }
        })
    }

    /// Ends the subscription. Idempotent; never waits: while another thread's `next` is in
    /// progress, the subscription ends at the following `next` (which returns `None`).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut events) = self.events.try_lock() {
            *events = None;
        }
    }
}

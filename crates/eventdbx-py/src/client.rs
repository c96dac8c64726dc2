//! [`Client`]: the Python-facing handle on one `eventdbx_client::Client`.
//!
//! Every operation takes `asynchronous`: `False` blocks the calling thread with the GIL
//! released and returns the result; `True` returns an awaitable for asyncio. A client connected
//! with `asynchronous=False` has its own current-thread runtime (see [`Home`]). Arguments and
//! results are plain Python values (strings, tuples, booleans); the Python package turns them
//! into the README's keyword arguments and result classes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_client::{
    ClientConfig, EventsQuery, KnownV2Hosts, ListQuery, PublishTarget, RetryOptions, SchemaPublish,
    SnapshotQuery, SubscribeOptions, SubscriptionStart, Transport, Write,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::awaited::{self, outcome, Outcome};
use crate::error::to_py_err;
use crate::runtime::runtime;

/// Where a client's calls run.
#[derive(Debug, Clone)]
pub(crate) enum Home {
    /// Connected for synchronous use (`EventDBXClient`): the client's own current-thread
    /// runtime. A call runs on the calling thread (GIL released), which writes the request and
    /// reads the answer itself, in a blocking read
    /// (`eventdbx_client::Client::connect_blocking_caller`): no other thread is woken per round
    /// trip, and the runtime's `epoll` is not involved. Threads sharing the client take turns
    /// driving the runtime (as `eventdbx_client::blocking`).
    Own(Arc<tokio::runtime::Runtime>),
    /// Connected for asyncio (`AsyncEventDBXClient`): the extension's shared runtime
    /// ([`runtime`]), whose workers read the sockets, while each call is polled on the event
    /// loop's thread ([`awaited`]).
    Shared,
}

impl Home {
    /// Runs `call` to completion: blocking without the GIL, or as an awaitable.
    pub(crate) fn run<T, F>(
        &self,
        py: Python<'_>,
        asynchronous: bool,
        call: F,
    ) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = eventdbx_client::Result<T>> + Send + 'static,
        T: for<'py> IntoPyObject<'py> + Send + 'static,
    {
        if asynchronous {
            let awaitable = match self {
                Home::Shared => awaited::spawn(py, async move { outcome(call.await) })?,
                // Awaited on a client of the synchronous kind: its runtime is driven by a
                // blocking thread of the shared one.
                Home::Own(own) => {
                    let own = Arc::clone(own);
                    awaited::spawn(py, async move {
                        match tokio::task::spawn_blocking(move || own.block_on(call)).await {
                            Ok(result) => outcome(result),
                            Err(err) => {
                                let err = PyRuntimeError::new_err(format!(
                                    "the call did not complete: {err}"
                                ));
                                Box::new(move |_: Python<'_>| Err(err)) as Outcome
                            }
                        }
                    })?
                }
            };
            return Ok(awaitable.unbind());
        }
        match self.block_on(py, call)? {
            Ok(value) => value.into_py_any(py),
            Err(err) => Err(to_py_err(py, &err)),
        }
    }

    /// Enters the runtime, so a task spawned meanwhile (a subscription's) runs on it.
    fn enter(&self, py: Python<'_>) -> PyResult<tokio::runtime::EnterGuard<'_>> {
        Ok(match self {
            Home::Own(own) => own.enter(),
            Home::Shared => runtime(py)?.enter(),
        })
    }

    /// Runs `future` to completion on this thread with the GIL released, giving way to signals:
    /// when a signal handler raises (Ctrl-C's `KeyboardInterrupt`), the future is dropped (which
    /// abandons the call and its socket) and the handler's exception is returned.
    fn block_on<F>(&self, py: Python<'_>, future: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let interruptible = interruptible(future);
        match self {
            Home::Own(own) => py.detach(|| eventdbx_client::blocking::run(own, interruptible)),
            Home::Shared => {
                let runtime = runtime(py)?;
                py.detach(|| runtime.block_on(interruptible))
            }
        }
    }
}

/// How long a blocking call waits between looks at pending signals: short enough that Ctrl-C
/// feels immediate, long enough that taking the GIL to look costs nothing measurable.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// `future`, raced against Python's pending signals. CPython only records a signal in its C
/// handler; the Python-level handler (`KeyboardInterrupt` for SIGINT) runs when some thread
/// holding the GIL checks, which a call blocked in Rust never does by itself. On a thread other
/// than the main one `check_signals` does nothing, as Python delivers signals only there.
async fn interruptible<F: Future>(future: F) -> PyResult<F::Output> {
    tokio::pin!(future);
    loop {
        tokio::select! {
            biased;
            output = &mut future => return Ok(output),
            () = tokio::time::sleep(SIGNAL_CHECK_INTERVAL) => {
                Python::attach(|py| py.check_signals())?;
            }
        }
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if value.is_nan() || value <= 0.0 {
        return Err(PyValueError::new_err(format!("{name} must be positive")));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{name} is out of range")))
}

/// A publish target as Python passes it: `(plugin, mode, priority)`.
type TargetTuple = (String, Option<String>, Option<String>);

/// A connection to an EventDBX server (one per token and tenant), shared by any number of
/// threads and tasks.
#[pyclass(module = "eventdbx._core", frozen)]
#[derive(Debug)]
pub struct Client {
    client: eventdbx_client::Client,
    home: Home,
}

impl Client {
    /// The client, with another request timeout when `timeout` is given.
    fn handle(&self, timeout: Option<f64>) -> PyResult<eventdbx_client::Client> {
        match timeout {
            None => Ok(self.client.clone()),
            Some(timeout) => Ok(self
                .client
                .with_request_timeout(seconds("timeout", timeout)?)),
        }
    }
}

#[pymethods]
impl Client {
    /// Connects and performs the handshake; returns a `Client` (or an awaitable of one).
    ///
    /// `transport` is `auto`, `v1`, `v2` or `plaintext`. `known_v2_hosts` is the file of servers
    /// seen speaking v2 (`None`: the default location, `""`, `"off"` or `"none"`: remember
    /// nothing, as for `EVENTDBX_KNOWN_V2_HOSTS`);
    /// `allow_v1_fallback = False` refuses the v1 fallback even on first contact.
    /// `busy_poll_us` is how long a synchronous call polls the socket for its answer before it
    /// sleeps (`None`: the Rust client's default, `0`: never); an asynchronous client never
    /// polls.
    #[staticmethod]
    #[pyo3(signature = (
        *, host, port, token, tenant_id, transport = "auto", server_key = None,
        connect_timeout = 5.0, read_timeout = 15.0, attempts = 1, initial_delay_ms = 100,
        max_delay_ms = 1000, verbose = true, max_message_bytes = 16777216,
        asynchronous = false, known_v2_hosts = None, allow_v1_fallback = true,
        busy_poll_us = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        host: String,
        port: u16,
        token: String,
        tenant_id: String,
        transport: &str,
        server_key: Option<&str>,
        connect_timeout: f64,
        read_timeout: f64,
        attempts: u32,
        initial_delay_ms: u64,
        max_delay_ms: u64,
        verbose: bool,
        max_message_bytes: usize,
        asynchronous: bool,
        known_v2_hosts: Option<String>,
        allow_v1_fallback: bool,
        busy_poll_us: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let transport = match transport {
            "auto" => Transport::Auto,
            "v1" => Transport::V1,
            "v2" => Transport::V2,
            "plaintext" => Transport::Plaintext,
            other => {
                return Err(PyValueError::new_err(format!(
                    "transport must be auto, v1, v2 or plaintext, not '{other}'"
                )))
            }
        };
        let mut config = ClientConfig::new(token, tenant_id)
            .host(host)
            .port(port)
            .transport(transport)
            .connect_timeout(seconds("connect_timeout", connect_timeout)?)
            .request_timeout(seconds("read_timeout", read_timeout)?)
            .retry(RetryOptions {
                attempts,
                initial_delay: Duration::from_millis(initial_delay_ms),
                max_delay: Duration::from_millis(max_delay_ms),
                jitter: false,
            })
            .verbose(verbose)
            .max_message_bytes(max_message_bytes)
            .allow_v1_fallback(allow_v1_fallback)
            .known_v2_hosts(match known_v2_hosts {
                None => KnownV2Hosts::Default,
                Some(setting) => KnownV2Hosts::from_setting(&setting),
            });
        if let Some(micros) = busy_poll_us {
            config = config.busy_poll(Duration::from_micros(micros));
        }
        if let Some(key) = server_key {
            let key = key.trim().to_ascii_lowercase();
            config = config.server_key(key.parse().map_err(|err| {
                PyValueError::new_err(format!("server_key is not a key fingerprint: {err}"))
            })?);
        }
        if asynchronous {
            // A poll would spin on the event loop's thread, with the GIL: the loop waits for
            // the answer in `epoll` instead (see `crate::awaited`).
            config = config.busy_poll(Duration::ZERO);
            return Home::Shared.run(py, true, async move {
                eventdbx_client::Client::connect(config)
                    .await
                    .map(|client| Client {
                        client,
                        home: Home::Shared,
                    })
            });
        }
        let own = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| PyRuntimeError::new_err(format!("cannot start the runtime: {err}")))?;
        let home = Home::Own(Arc::new(own));
        let client = home
            .block_on(py, eventdbx_client::Client::connect_blocking_caller(config))?
            .map_err(|err| to_py_err(py, &err))?;
        Client { client, home }.into_py_any(py)
    }

    /// Closes the connection; later calls fail at once. Idempotent.
    #[pyo3(signature = (*, asynchronous = false))]
    fn close(&self, py: Python<'_>, asynchronous: bool) -> PyResult<Py<PyAny>> {
        let client = self.client.clone();
        self.home.run(py, asynchronous, async move {
            client.close().await;
            Ok(())
        })
    }

    /// True once `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.client.is_closed()
    }

    /// True while a live connection is held.
    #[getter]
    fn connected(&self, py: Python<'_>) -> PyResult<bool> {
        let client = self.client.clone();
        self.home.block_on(py, client.is_connected())
    }

    /// The transport of the current connection: `v2`, `v1`, `plaintext`, or `None`.
    #[getter]
    fn protocol(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        let client = self.client.clone();
        Ok(self
            .home
            .block_on(py, client.protocol())?
            .map(|protocol| match protocol {
                eventdbx_client::Protocol::V2 => "v2",
                eventdbx_client::Protocol::V1 => "v1",
                eventdbx_client::Protocol::Plaintext => "plaintext",
            }))
    }

    /// The capability tokens of the server's hello response.
    #[getter]
    fn server_capabilities(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let client = self.client.clone();
        self.home.block_on(py, client.server_capabilities())
    }

    /// The server key fingerprint (protocol v2 only).
    #[getter]
    fn server_fingerprint(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let client = self.client.clone();
        Ok(self
            .home
            .block_on(py, client.server_fingerprint())?
            .map(|fingerprint| fingerprint.to_string()))
    }

    /// `create`, `apply` or `patch`; returns the stored JSON (`""` for an acknowledgement).
    ///
    /// `publish_targets` items are `(plugin, mode, priority)`.
    #[pyo3(signature = (
        kind, aggregate_type, aggregate_id, event_type, body_json, *, note = None,
        metadata_json = None, publish_targets = None, expected_version = None,
        idempotency_key = None, timeout = None, asynchronous = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        py: Python<'_>,
        kind: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        body_json: &str,
        note: Option<String>,
        metadata_json: Option<String>,
        publish_targets: Option<Vec<TargetTuple>>,
        expected_version: Option<u64>,
        idempotency_key: Option<String>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut write = match kind {
            "create" => Write::create(aggregate_type, aggregate_id, event_type, body_json),
            "apply" => Write::apply(aggregate_type, aggregate_id, event_type, body_json),
            "patch" => Write::patch(aggregate_type, aggregate_id, event_type, body_json),
            other => {
                return Err(PyValueError::new_err(format!(
                    "kind must be create, apply or patch, not '{other}'"
                )))
            }
        };
        if let Some(note) = note {
            write = write.note(note);
        }
        if let Some(metadata_json) = metadata_json {
            write = write.metadata_json(metadata_json);
        }
        if let Some(targets) = publish_targets {
            write = write.publish_targets(
                targets
                    .into_iter()
                    .map(|(plugin, mode, priority)| PublishTarget {
                        plugin,
                        mode,
                        priority,
                    })
                    .collect(),
            );
        }
        if let Some(version) = expected_version {
            write = write.expected_version(version);
        }
        if let Some(key) = idempotency_key {
            write = write.idempotency_key(key);
        }
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.write(write).await.map(|written| written.json)
        })
    }

    /// Archives (`archived=True`) or restores an aggregate; returns the stored JSON.
    #[pyo3(signature = (aggregate_type, aggregate_id, archived, *, note = None, timeout = None, asynchronous = false))]
    #[allow(clippy::too_many_arguments)]
    fn set_archived(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        archived: bool,
        note: Option<String>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            let written = if archived {
                client
                    .archive(&aggregate_type, &aggregate_id, note.as_deref())
                    .await
            } else {
                client
                    .restore(&aggregate_type, &aggregate_id, note.as_deref())
                    .await
            };
            written.map(|written| written.json)
        })
    }

    /// Takes a snapshot; returns the snapshot JSON (`""` for an acknowledgement).
    #[pyo3(signature = (aggregate_type, aggregate_id, *, comment = None, timeout = None, asynchronous = false))]
    fn create_snapshot(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        comment: Option<String>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .create_snapshot(&aggregate_type, &aggregate_id, comment.as_deref())
                .await
                .map(|written| written.json)
        })
    }

    /// The aggregate JSON, or `None` when not found.
    #[pyo3(signature = (aggregate_type, aggregate_id, *, timeout = None, asynchronous = false))]
    fn get(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .get(&aggregate_type, &aggregate_id)
                .await
                .map(|found| found.json)
        })
    }

    /// The selection JSON, or `None` when not found.
    #[pyo3(signature = (aggregate_type, aggregate_id, fields, *, timeout = None, asynchronous = false))]
    fn select(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        fields: Vec<String>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            client
                .select(&aggregate_type, &aggregate_id, &fields)
                .await
                .map(|found| found.json)
        })
    }

    /// One page of aggregates: `(aggregates_json, next_cursor)`.
    #[pyo3(signature = (
        *, cursor = None, take = None, filter_expr = None, sort = None, include_archived = None,
        archived_only = None, timeout = None, asynchronous = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        py: Python<'_>,
        cursor: Option<String>,
        take: Option<u64>,
        filter_expr: Option<String>,
        sort: Option<String>,
        include_archived: Option<bool>,
        archived_only: Option<bool>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let query = ListQuery {
            cursor,
            take,
            filter: filter_expr,
            sort,
            include_archived,
            archived_only,
        };
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .list(&query)
                .await
                .map(|page| (page.aggregates_json, page.next_cursor))
        })
    }

    /// One page of events: `(events_json, next_cursor, positions)`, `positions` one per event
    /// (`None` for an event without one) or `None` when the server sent none.
    #[pyo3(signature = (
        aggregate_type, aggregate_id, *, cursor = None, take = None, filter_expr = None,
        timeout = None, asynchronous = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn events(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        cursor: Option<String>,
        take: Option<u64>,
        filter_expr: Option<String>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let query = EventsQuery {
            aggregate_type,
            aggregate_id,
            cursor,
            take,
            filter: filter_expr,
        };
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.events(&query).await.map(|page| {
                let positions = (!page.positions.is_empty()).then_some(page.positions);
                (page.events_json, page.next_cursor, positions)
            })
        })
    }

    /// Follows the tenant's events (`docs/subscriptions.md`): from the head when `from_end`,
    /// else after position `after` (0: from the first event). Returns a `Subscription`.
    #[pyo3(signature = (
        *, from_end = false, after = 0, aggregate_type = None, aggregate_id = None,
        event_types = Vec::new(), batch_size = 0, credit_window = 0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &self,
        py: Python<'_>,
        from_end: bool,
        after: u64,
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        event_types: Vec<String>,
        batch_size: u32,
        credit_window: u32,
    ) -> PyResult<crate::subscription::Subscription> {
        let start = match (from_end, after) {
            (true, _) => SubscriptionStart::End,
            (false, 0) => SubscriptionStart::Beginning,
            (false, position) => SubscriptionStart::After(position),
        };
        let options = SubscribeOptions {
            start,
            aggregate_type,
            aggregate_id,
            event_types,
            batch_size,
            credit_window,
        };
        let _entered = self.home.enter(py)?;
        Ok(crate::subscription::Subscription::new(
            self.client.subscribe(options),
            self.home.clone(),
        ))
    }

    /// The Merkle root of an aggregate's events (64 hex digits).
    #[pyo3(signature = (aggregate_type, aggregate_id, *, timeout = None, asynchronous = false))]
    fn verify(
        &self,
        py: Python<'_>,
        aggregate_type: String,
        aggregate_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.verify(&aggregate_type, &aggregate_id).await
        })
    }

    /// The snapshots JSON array.
    #[pyo3(signature = (*, aggregate_type = None, aggregate_id = None, version = None, timeout = None, asynchronous = false))]
    fn list_snapshots(
        &self,
        py: Python<'_>,
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        version: Option<u64>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let query = SnapshotQuery {
            aggregate_type,
            aggregate_id,
            version,
        };
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.list_snapshots(&query).await.map(|list| list.json)
        })
    }

    /// The snapshot JSON, or `None` when not found.
    #[pyo3(signature = (snapshot_id, *, timeout = None, asynchronous = false))]
    fn get_snapshot(
        &self,
        py: Python<'_>,
        snapshot_id: u64,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .get_snapshot(snapshot_id)
                .await
                .map(|found| found.json)
        })
    }

    /// The schema map JSON.
    #[pyo3(signature = (*, timeout = None, asynchronous = false))]
    fn list_schemas(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home
            .run(py, asynchronous, async move { client.list_schemas().await })
    }

    /// Replaces the schema map; returns how many schemas were replaced.
    #[pyo3(signature = (schemas_json, *, timeout = None, asynchronous = false))]
    fn replace_schemas(
        &self,
        py: Python<'_>,
        schemas_json: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.replace_schemas(&schemas_json).await
        })
    }

    /// `(changed, shard_id)`.
    #[pyo3(signature = (tenant_id, shard_id, *, timeout = None, asynchronous = false))]
    fn tenant_assign(
        &self,
        py: Python<'_>,
        tenant_id: String,
        shard_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .tenant_assign(&tenant_id, &shard_id)
                .await
                .map(|result| (result.changed, result.shard_id))
        })
    }

    /// Whether the assignment changed.
    #[pyo3(signature = (tenant_id, *, timeout = None, asynchronous = false))]
    fn tenant_unassign(
        &self,
        py: Python<'_>,
        tenant_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.tenant_unassign(&tenant_id).await
        })
    }

    /// `(changed, quota_mb)`.
    #[pyo3(signature = (tenant_id, max_storage_mb, *, timeout = None, asynchronous = false))]
    fn tenant_quota_set(
        &self,
        py: Python<'_>,
        tenant_id: String,
        max_storage_mb: u64,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .tenant_quota_set(&tenant_id, max_storage_mb)
                .await
                .map(|result| (result.changed, result.quota_mb))
        })
    }

    /// Whether a quota was cleared.
    #[pyo3(signature = (tenant_id, *, timeout = None, asynchronous = false))]
    fn tenant_quota_clear(
        &self,
        py: Python<'_>,
        tenant_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.tenant_quota_clear(&tenant_id).await
        })
    }

    /// The tenant's storage in bytes, recomputed.
    #[pyo3(signature = (tenant_id, *, timeout = None, asynchronous = false))]
    fn tenant_quota_recalc(
        &self,
        py: Python<'_>,
        tenant_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.tenant_quota_recalc(&tenant_id).await
        })
    }

    /// Whether the tenant was reloaded.
    #[pyo3(signature = (tenant_id, *, timeout = None, asynchronous = false))]
    fn tenant_reload(
        &self,
        py: Python<'_>,
        tenant_id: String,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client.tenant_reload(&tenant_id).await
        })
    }

    /// `(version_id, activated, skipped)`.
    #[pyo3(signature = (
        tenant_id, *, reason = None, actor = None, labels = Vec::new(), activate = false,
        force = false, reload = false, timeout = None, asynchronous = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn tenant_schema_publish(
        &self,
        py: Python<'_>,
        tenant_id: String,
        reason: Option<String>,
        actor: Option<String>,
        labels: Vec<String>,
        activate: bool,
        force: bool,
        reload: bool,
        timeout: Option<f64>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let publish = SchemaPublish {
            tenant_id,
            reason,
            actor,
            labels,
            activate,
            force,
            reload,
        };
        let client = self.handle(timeout)?;
        self.home.run(py, asynchronous, async move {
            client
                .tenant_schema_publish(&publish)
                .await
                .map(|result| (result.version_id, result.activated, result.skipped))
        })
    }
}

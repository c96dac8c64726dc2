//! [`EmbeddedServer`]: a real `dbx` server in this process, for tests and
//! `python -m eventdbx.server`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;

use eventdbx_server::auth::{Authority, TokenRequest};
use eventdbx_server::config::Config;
use eventdbx_server::{authority_config, Server};
use eventdbx_store::Durability;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use tokio::sync::oneshot;

/// Every action a control token can grant: the token of [`EmbeddedServer`] is a root token.
const ALL_ACTIONS: [&str; 7] = [
    "aggregate.create",
    "aggregate.append",
    "aggregate.archive",
    "aggregate.read",
    "tenant.manage",
    "schema.read",
    "schema.write",
];

/// A server on `127.0.0.1` running on its own thread and runtime until `stop()`.
#[pyclass(module = "eventdbx._core", frozen)]
#[derive(Debug)]
pub struct EmbeddedServer {
    /// The control port.
    #[pyo3(get)]
    port: u16,
    /// The data directory.
    #[pyo3(get)]
    data_dir: PathBuf,
    /// The v2 server key fingerprint clients pin.
    #[pyo3(get)]
    fingerprint: String,
    /// The port of the HTTP `/health` and `/metrics` endpoint, when one was asked for.
    #[pyo3(get)]
    http_port: Option<u16>,
    running: Mutex<Option<Running>>,
}

/// What a running server holds; `stop()` drops it, and with it the last handle on the store, so
/// that the data directory can be opened again at once (by a restart in this process too).
#[derive(Debug)]
struct Running {
    server: Server,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

fn os_error(what: &str, err: impl std::fmt::Display) -> PyErr {
    PyOSError::new_err(format!("{what}: {err}"))
}

#[pymethods]
impl EmbeddedServer {
    /// Opens `data_dir` (created when missing) and serves the control port on
    /// `127.0.0.1:port` (0 picks a free port).
    ///
    /// `durable=False` acknowledges writes before fsync (the server's `relaxed` mode), which
    /// is what tests want; `allow_plaintext` lets clients ask for `no_noise`. With `http_port`
    /// (0 picks a free port) the server also serves `/health` and `/metrics` over HTTP on
    /// `127.0.0.1`.
    #[staticmethod]
    #[pyo3(signature = (data_dir, *, port = 0, allow_plaintext = false, durable = false, verbose_responses = true, http_port = None))]
    fn start(
        py: Python<'_>,
        data_dir: PathBuf,
        port: u16,
        allow_plaintext: bool,
        durable: bool,
        verbose_responses: bool,
        http_port: Option<u16>,
    ) -> PyResult<EmbeddedServer> {
        py.detach(|| {
            let mut config = Config::defaults(data_dir.clone());
            config.storage.durability = if durable {
                Durability::Fsync
            } else {
                Durability::Relaxed
            };
            config.allow_plaintext = allow_plaintext;
            config.verbose_responses = verbose_responses;
            let server = Server::open(config).map_err(|err| os_error("cannot open server", err))?;
            let listener = std::net::TcpListener::bind(("127.0.0.1", port))
                .map_err(|err| os_error("cannot bind the control port", err))?;
            listener
                .set_nonblocking(true)
                .map_err(|err| os_error("cannot set up the listener", err))?;
            let port = listener
                .local_addr()
                .map_err(|err| os_error("cannot read the control address", err))?
                .port();
            let http = match http_port {
                Some(http_port) => {
                    let http = std::net::TcpListener::bind(("127.0.0.1", http_port))
                        .map_err(|err| os_error("cannot bind the HTTP port", err))?;
                    http.set_nonblocking(true)
                        .map_err(|err| os_error("cannot set up the HTTP listener", err))?;
                    Some(http)
                }
                None => None,
            };
            let http_port = match &http {
                Some(http) => Some(
                    http.local_addr()
                        .map_err(|err| os_error("cannot read the HTTP address", err))?
                        .port(),
                ),
                None => None,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("eventdbx-server")
                .enable_all()
                .build()
                .map_err(|err| os_error("cannot start the server runtime", err))?;
            let (stop, stopped) = oneshot::channel::<()>();
            let serving = server.clone();
            let thread = std::thread::Builder::new()
                .name("eventdbx-server".into())
                .spawn(move || {
                    runtime.block_on(async move {
                        // The HTTP endpoint stops with the control port (its shutdown future
                        // completes when this sender is dropped, after `run` returns).
                        let (http_stop, http_stopped) = oneshot::channel::<()>();
                        let http_task = http.and_then(|http| {
                            let http = match tokio::net::TcpListener::from_std(http) {
                                Ok(http) => http,
                                Err(err) => {
                                    tracing_error(&err);
                                    return None;
                                }
                            };
                            let serving = serving.clone();
                            Some(tokio::spawn(async move {
                                if let Err(err) = serving
                                    .serve_http(http, async {
                                        let _ = http_stopped.await;
                                    })
                                    .await
                                {
                                    tracing_error(&err);
                                }
                            }))
                        });
                        let listener = match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => listener,
                            Err(err) => {
                                tracing_error(&err);
                                return;
                            }
                        };
                        if let Err(err) = serving
                            .run(listener, async {
                                let _ = stopped.await;
                            })
                            .await
                        {
                            tracing_error(&err);
                        }
                        drop(http_stop);
                        if let Some(http_task) = http_task {
                            let _ = http_task.await;
                        }
                    });
                })
                .map_err(|err| os_error("cannot start the server thread", err))?;
            Ok(EmbeddedServer {
                fingerprint: server.fingerprint().to_string(),
                port,
                http_port,
                data_dir,
                running: Mutex::new(Some(Running {
                    server,
                    stop,
                    thread,
                })),
            })
        })
    }

    /// Issues a control token: every action and every tenant unless narrowed.
    #[pyo3(signature = (*, actions = None, tenants = Vec::new(), ttl_secs = 0))]
    fn issue_token(
        &self,
        py: Python<'_>,
        actions: Option<Vec<String>>,
        tenants: Vec<String>,
        ttl_secs: u64,
    ) -> PyResult<String> {
        let server = self
            .running
            .lock()
            .ok()
            .and_then(|running| running.as_ref().map(|running| running.server.clone()));
        // Without the GIL: the token registry's lock may be held by a server thread that is
        // waiting for the GIL to log (the `logging` bridge).
        py.detach(|| match server {
            Some(server) => issue(server.auth(), actions, tenants, ttl_secs),
            // Stopped: the token files of the data directory, as for a server in another
            // process; a server started on it again accepts the token.
            None => issue_in(self.data_dir.clone(), actions, tenants, ttl_secs),
        })
    }

    /// True until `stop()`.
    #[getter]
    fn running(&self) -> bool {
        self.running
            .lock()
            .map(|running| running.is_some())
            .unwrap_or(false)
    }

    /// Stops accepting, lets open connections finish their requests, and waits for the
    /// server to close its store and release its files. Idempotent.
    fn stop(&self, py: Python<'_>) {
        let running = self
            .running
            .lock()
            .ok()
            .and_then(|mut running| running.take());
        if let Some(Running {
            server,
            stop,
            thread,
        }) = running
        {
            drop(server);
            let _ = stop.send(());
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }
}

/// Issues a control token in the data directory of a server running in another process (as
/// `dbx token generate` does): every action and every tenant unless narrowed. The server
/// accepts it at once (it re-reads its token files for an unknown token id).
#[pyfunction]
#[pyo3(signature = (data_dir, *, actions = None, tenants = Vec::new(), ttl_secs = 0))]
pub fn issue_token(
    py: Python<'_>,
    data_dir: PathBuf,
    actions: Option<Vec<String>>,
    tenants: Vec<String>,
    ttl_secs: u64,
) -> PyResult<String> {
    py.detach(|| issue_in(data_dir, actions, tenants, ttl_secs))
}

fn issue_in(
    data_dir: PathBuf,
    actions: Option<Vec<String>>,
    tenants: Vec<String>,
    ttl_secs: u64,
) -> PyResult<String> {
    let authority = Authority::open(authority_config(&Config::defaults(data_dir)))
        .map_err(|err| os_error("cannot open the token authority", err))?;
    issue(&authority, actions, tenants, ttl_secs)
}

fn issue(
    authority: &Authority,
    actions: Option<Vec<String>>,
    tenants: Vec<String>,
    ttl_secs: u64,
) -> PyResult<String> {
    let actions = actions.unwrap_or_else(|| ALL_ACTIONS.iter().map(|a| (*a).to_owned()).collect());
    authority
        .issue(TokenRequest {
            group: "python".into(),
            user: "embedded".into(),
            actions,
            tenants,
            ttl_secs: Some(ttl_secs),
            ..TokenRequest::default()
        })
        .map(|(token, _)| token)
        .map_err(|err| PyRuntimeError::new_err(format!("cannot issue a token: {err}")))
}

fn tracing_error(err: &dyn std::fmt::Display) {
    // The server thread has no caller to report to; stderr is where a test runner shows it.
    eprintln!("eventdbx embedded server stopped: {err}");
}

//! A real server on `127.0.0.1:0` and a small blocking client built only from `eventdbx-proto`.
//!
//! The client speaks exactly the bytes of `docs/protocol.md`: a raw hello, the v1
//! (`Noise_NNpsk0`) or v2 (`Noise_XXpsk3`) handshake, then framed `ControlRequest`s. It records
//! every byte it sends and receives so tests can inspect the wire.

#![allow(dead_code)]

mod reply;
mod requests;
mod session;
mod wire;

pub use reply::{decode, err, ok, Reply, ORDER_SCHEMA};
pub use requests::{ListOpts, WriteOpts};
pub use session::{connect_v1, connect_v2, Client};
pub use wire::{hello_exchange, raw_exchange, v1_hello, with_receive_buffer, Wire};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use eventdbx_proto::noise::v2::Fingerprint;
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Every action of the common set-up token `T`, plus the schema actions.
pub const ALL_ACTIONS: [&str; 7] = [
    "aggregate.create",
    "aggregate.append",
    "aggregate.archive",
    "aggregate.read",
    "tenant.manage",
    "schema.read",
    "schema.write",
];

/// How long a test polls for a condition (a delivery, a job state, a closed session) before
/// calling the server broken: only a safety net, far beyond what a loaded machine needs.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// How long a test waits for the server before calling it hung.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A server running in a background thread on its own multi-thread runtime.
pub struct TestServer {
    /// The control address.
    pub addr: SocketAddr,
    server: Server,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a fresh data directory; `adjust` edits the default config first
    /// (durability starts `relaxed`: these tests are not about fsync).
    pub fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = TempDir::new().expect("temp dir");
        let mut config = Config::defaults(dir.path().join("data"));
        config.storage.durability = Durability::Relaxed;
        adjust(&mut config);
        let server = Server::open(config).expect("open server");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serving
                    .run(listener, async {
                        let _ = stop.await;
                    })
                    .await
                    .expect("server run");
            });
        });
        TestServer {
            addr,
            server,
            dir,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The opened server (token authority, fingerprint, config).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding everything.
    #[allow(dead_code)]
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The v2 fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.server.fingerprint()
    }

    /// A token for group `ops`, user `jane`, resources `*`.
    pub fn token(&self, actions: &[&str], tenants: &[&str]) -> String {
        self.token_for(actions, &["*"], tenants)
    }

    /// A token with explicit resources.
    pub fn token_for(&self, actions: &[&str], resources: &[&str], tenants: &[&str]) -> String {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        self.server
            .auth()
            .issue(TokenRequest {
                group: "ops".into(),
                user: "jane".into(),
                actions: strings(actions),
                resources: strings(resources),
                tenants: strings(tenants),
                ttl_secs: Some(3600),
                ..TokenRequest::default()
            })
            .expect("issue token")
            .0
    }

    /// The common set-up token `T` (every action, every tenant).
    pub fn admin_token(&self) -> String {
        self.token(&ALL_ACTIONS, &[])
    }

    /// A v2 session for `tenant` with the admin token, pinned to this server's key.
    pub fn v2(&self, tenant: &str) -> Client {
        connect_v2(
            self.addr,
            &self.admin_token(),
            tenant,
            Some(self.fingerprint()),
        )
        .expect("v2 session")
    }

    /// A v1 (Noise) session for `tenant` with the admin token.
    pub fn v1(&self, tenant: &str) -> Client {
        connect_v1(self.addr, &self.admin_token(), tenant, false).expect("v1 session")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A token for `actions` on every resource of every tenant, issued by `server` itself: for tests
/// that run a `Server` of their own rather than a [`TestServer`].
pub fn issue_token(server: &Server, actions: &[&str]) -> String {
    server
        .auth()
        .issue(TokenRequest {
            group: "ops".into(),
            user: "jane".into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            resources: vec!["*".into()],
            ttl_secs: Some(3600),
            ..TokenRequest::default()
        })
        .expect("issue token")
        .0
}

/// `server` running on a fresh loopback port as a task of `runtime`, until the sender is used
/// (or dropped): its address, the stop signal, and the task, which ends when `run` returns.
pub fn serve_on(
    runtime: &tokio::runtime::Runtime,
    server: Server,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        server
            .run(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("server run");
    });
    (addr, stop, task)
}

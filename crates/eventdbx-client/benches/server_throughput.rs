//! Server throughput over loopback through the Rust client (issue 4's targets):
//! - sequential relaxed `apply` from one connection: target >= 15,000/s (also shown with the
//!   client on a current-thread runtime, as a sequential caller usually runs it);
//! - durable `apply` from 16 connections: target >= 4,000/s.
//!
//! The server runs in this process on its own runtime (2 worker threads), the client on another
//! (2 workers unless said otherwise); each measurement uses a fresh data directory under /tmp (a
//! real disk). `cargo bench -p eventdbx-client --bench server_throughput` (set
//! `EVENTDBX_BENCH_QUICK=1` for a shorter run).

use std::time::{Duration, Instant};

use eventdbx_client::{Client, ClientConfig};
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Running {
    config: ClientConfig,
    _dir: tempfile::TempDir,
    _server: tokio::runtime::Runtime,
}

fn start(durability: Durability) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::defaults(dir.path().to_path_buf());
    config.storage.durability = durability;
    config.verbose_responses = false;
    let server = Server::open(config)?;
    let (token, _) = server.auth().issue(TokenRequest {
        group: "bench".into(),
        user: "bench".into(),
        actions: vec!["*".into()],
        ttl_secs: Some(0),
        ..TokenRequest::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    Ok(Running {
        config: ClientConfig::new(token, "default").port(port),
        _dir: dir,
        _server: runtime,
    })
}

/// Appends from `connections` clients, each to its own aggregates, for `duration`; events/s.
async fn appends(config: &ClientConfig, connections: usize, duration: Duration) -> Result<f64> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect(config.clone()).await?);
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let id = format!("a-{n}-{}", done % 8);
                client.apply("bench", &id, "ticked", r#"{"n": 1}"#).await?;
                done += 1;
            }
            Ok::<u64, eventdbx_client::Error>(done)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn report(name: &str, rate: f64, target: f64) {
    let verdict = if rate >= target { "PASS" } else { "MISS" };
    println!("{name:<55} {rate:>9.0} ev/s   target >= {target:.0} ev/s  {verdict}");
}

fn main() -> Result<()> {
    let quick = std::env::var_os("EVENTDBX_BENCH_QUICK").is_some_and(|v| v != "0");
    let duration = Duration::from_secs(if quick { 1 } else { 3 });
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // A sequential caller's usual runtime (the blocking client's, the Python SDK's synchronous
    // client's): the calling thread drives the connection itself.
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("server throughput over loopback through the Rust client ({duration:?} per run, median of 3)");
    for (name, durability, connections, client_runtime, target) in [
        (
            "sequential relaxed apply, 1 connection (v2)",
            Durability::Relaxed,
            1,
            &multi_thread,
            15_000.0,
        ),
        (
            "  the same, client on a current-thread runtime",
            Durability::Relaxed,
            1,
            &current_thread,
            15_000.0,
        ),
        (
            "durable apply, 16 connections (v2)",
            Durability::Fsync,
            16,
            &multi_thread,
            4_000.0,
        ),
    ] {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let running = start(durability)?;
            rates.push(client_runtime.block_on(appends(&running.config, connections, duration))?);
        }
        rates.sort_by(f64::total_cmp);
        report(name, rates[1], target);
    }
    Ok(())
}

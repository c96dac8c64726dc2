//! Stopping a server and opening its data directory again at once, round after round, with
//! sessions writing, requests in flight, idle sessions and plugin workers delivering at the
//! moment it stops. `run` returns only once nothing holds the store any more, so the next open
//! never finds the database locked; every acknowledged write survives, and every event is
//! delivered to the plugin in the end.

use std::net::SocketAddr;
use std::sync::mpsc;

use eventdbx_proto::noise::v2::Fingerprint;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::plugins::receiver::{http_plugin, write_plugins, Receiver};
use crate::support::{connect_v2, issue_token, ok, serve_on, Client, WriteOpts, ALL_ACTIONS};

const ROUNDS: u64 = 12;
const WRITERS: usize = 3;

/// A server serving as a task of a runtime that outlives it, as in an application that restarts
/// its server: only `run` returning says the server is done (dropping the runtime would wait
/// for stray tasks and hide them). Nothing else holds the server.
struct Running<'r> {
    runtime: &'r Runtime,
    addr: SocketAddr,
    token: String,
    fingerprint: Fingerprint,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start<'r>(
    runtime: &'r Runtime,
    data: &std::path::Path,
    durability: Durability,
    round: u64,
) -> Running<'r> {
    let mut config = Config::defaults(data.to_path_buf());
    config.storage.durability = durability;
    let server = Server::open(config)
        .unwrap_or_else(|err| panic!("round {round}: reopening the data directory: {err}"));
    let token = issue_token(&server, &ALL_ACTIONS);
    let fingerprint = server.fingerprint();
    let (addr, stop, task) = serve_on(runtime, server);
    Running {
        runtime,
        addr,
        token,
        fingerprint,
        stop,
        task,
    }
}

impl Running<'_> {
    fn session(&self) -> Client {
        connect_v2(self.addr, &self.token, "default", Some(self.fingerprint)).expect("session")
    }

    /// Signals shutdown and waits for `run` to return.
    fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.block_on(self.task).expect("server task");
    }
}

/// Appends to `id` until the server goes away; reports its first acknowledgement on `first`
/// and returns how many were acknowledged.
fn write_until_stopped(mut session: Client, id: &str, first: mpsc::Sender<()>) -> u64 {
    let publish = WriteOpts {
        targets: Some(vec![("hook", None, None)]),
        ..WriteOpts::default()
    };
    let mut acknowledged = 0;
    loop {
        match session.try_apply_with("order", id, "changed", r#"{"n":1}"#, &publish) {
            Ok(reply) => {
                ok(reply);
                acknowledged += 1;
                if acknowledged == 1 {
                    let _ = first.send(());
                }
            }
            // The server closed the session at shutdown, answered or not.
            Err(_) => return acknowledged,
        }
    }
}

#[test]
fn a_server_reopens_its_directory_at_once_whatever_was_running_when_it_stopped() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rx = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    write_plugins(&data, &[http_plugin(&rx, "hook", "all", true)]);
    let ids: Vec<String> = (0..WRITERS).map(|w| format!("o-{w}")).collect();
    let mut acknowledged = vec![0u64; WRITERS];
    for round in 0..ROUNDS {
        let durability = if round % 2 == 0 {
            Durability::Relaxed
        } else {
            Durability::Fsync
        };
        let server = start(&runtime, &data, durability, round);
        if round == 0 {
            let mut setup = server.session();
            for id in &ids {
                ok(setup.create("order", id, "created", r#"{"n":0}"#));
            }
        }
        let mut idle = server.session();
        let (first, started) = mpsc::channel();
        let writers: Vec<_> = ids
            .iter()
            .map(|id| {
                let (session, id, first) = (server.session(), id.clone(), first.clone());
                std::thread::spawn(move || write_until_stopped(session, &id, first))
            })
            .collect();
        // Every writer is mid-conversation (and publishing jobs) before the stop.
        for _ in 0..WRITERS {
            started.recv().expect("a writer got an answer");
        }
        server.stop();
        assert!(
            idle.wire.closed_by_peer(),
            "round {round}: idle session left open"
        );
        for (count, writer) in acknowledged.iter_mut().zip(writers) {
            *count += writer.join().expect("writer");
        }
    }
    let server = start(&runtime, &data, Durability::Relaxed, ROUNDS);
    let mut check = server.session();
    for (id, acked) in ids.iter().zip(&acknowledged) {
        let got = ok(check.get("order", id));
        let version = got["aggregate"]["version"].as_u64().expect("version");
        // A write in flight at a stop may be committed with its answer lost: at most one per
        // writer per round beyond the acknowledged ones.
        assert!(
            (1 + acked..=1 + acked + ROUNDS).contains(&version),
            "{id}: version {version}, {acked} appends acknowledged"
        );
    }
    // Jobs a stop interrupted are requeued by the next start: each event reaches the plugin.
    let appended: u64 = acknowledged.iter().sum();
    rx.wait_for("hook", usize::try_from(appended).expect("count"));
    server.stop();
}

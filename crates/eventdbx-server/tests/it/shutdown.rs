//! `Server::run` returns only when nothing it started still holds the store: a subscription's
//! read in flight when the server stops (held there by the `test-hooks` seam, so the order of
//! events is fixed, not left to the scheduler) keeps `run` waiting, and the data directory opens
//! again the moment `run` returns. A session that cannot finish (its peer reads nothing) is
//! aborted at the drain deadline instead of keeping `run` from returning.

use std::time::Duration;

use eventdbx_proto::control::SubscribeRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;

use crate::support::{connect_v2, issue_token, serve_on, ALL_ACTIONS};

fn config(data: &std::path::Path) -> Config {
    let mut config = Config::defaults(data.to_path_buf());
    config.storage.durability = Durability::Relaxed;
    config
}

#[test]
fn run_returns_only_after_a_subscription_read_in_flight_has_released_the_store() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::open(config(&data)).expect("open server");
    let token = issue_token(&server, &["aggregate.read"]);
    let fingerprint = server.fingerprint();
    let mut held = server.hold_next_read();
    let (addr, stop, mut serving) = serve_on(&runtime, server);

    let mut session = connect_v2(addr, &token, "default", Some(fingerprint)).expect("session");
    let request = SubscribeRequest {
        token: token.clone(),
        ..SubscribeRequest::default()
    };
    session
        .send(|payload| {
            request
                .encode(payload.init_subscribe())
                .expect("encode subscribe");
        })
        .expect("send subscribe");
    // The subscription's first read is held on a blocking thread, with the server's state.
    runtime.block_on(held.entered());

    let _ = stop.send(());
    // Either `run` returns while the read is still held (the bug: the store is still open), or
    // it says it waits for the read, which is then let go.
    let returned_while_held = runtime.block_on(async {
        tokio::select! {
            joined = &mut serving => {
                joined.expect("server task");
                true
            }
            () = held.server_waiting() => false,
        }
    });
    if !returned_while_held {
        held.release();
        runtime.block_on(serving).expect("server task");
    }
    assert!(
        session.wire.closed_by_peer(),
        "the subscriber's session was left open"
    );
    let reopened = Server::open(config(&data));
    held.release();
    if let Err(err) = reopened {
        panic!(
            "the data directory does not open right after run returned \
             (returned while a read was held: {returned_while_held}): {err}"
        );
    }
    assert!(
        !returned_while_held,
        "run returned while a subscription's read still held the store"
    );
}

#[test]
fn a_session_whose_peer_reads_nothing_is_aborted_at_the_drain_deadline_and_run_returns() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = Server::open(config(&data)).expect("open server");
    let token = issue_token(&server, &ALL_ACTIONS);
    let fingerprint = server.fingerprint();
    let (addr, stop, serving) = serve_on(&runtime, server);

    // A page of aggregates far larger than the socket buffers between the server and a peer
    // that reads nothing: writing it cannot finish.
    let mut writer = connect_v2(addr, &token, "default", Some(fingerprint)).expect("session");
    writer.create_large_orders(60);
    drop(writer);
    let mut stalled = connect_v2(addr, &token, "default", Some(fingerprint)).expect("session");
    stalled.send_list(60).expect("send list");
    // The answer has begun: the session is now writing it, and stays there.
    stalled.wire.wait_readable().expect("the answer begins");

    let _ = stop.send(());
    // Only a guard against hanging forever (the bug): the drain deadline is far shorter.
    let returned =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(120), serving).await });
    returned
        .expect("run did not return: a session writing to a peer that reads nothing held it")
        .expect("server task");
    assert!(
        stalled.recv().is_err(),
        "the stalled session got its whole answer"
    );
    Server::open(config(&data)).expect("the data directory opens right after run returned");
}

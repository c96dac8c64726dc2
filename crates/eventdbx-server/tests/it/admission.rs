//! Connection admission (`docs/server.md`, "Connection limits"): idle unauthenticated
//! connections never lock a client out, and every connection that fails or abandons its
//! handshake, or ends its session on a bad message, is counted.

use std::sync::atomic::Ordering;

use eventdbx_server::{Server, MAX_PREAUTH_PER_IP};

use crate::support::*;

/// More idle connections than the pending budget of one address (all of them come from
/// loopback); a few hundred keep the test quick.
const IDLE: usize = 4 * MAX_PREAUTH_PER_IP + 44;

/// Stops `server` and waits until every connection task has ended, so the counters are final.
fn stop(server: TestServer) -> Server {
    let handle = server.server().clone();
    drop(server);
    handle
}

#[test]
fn idle_unauthenticated_connections_never_lock_a_client_out() {
    let server = TestServer::start(|_| {});
    let mut idle: Vec<Wire> = (0..IDLE).map(|_| Wire::connect(server.addr)).collect();

    // The newest connection always gets its chance: a real client completes its handshake
    // and is answered while every idle socket is still held open.
    let mut client = server.v2("default");
    ok(client.list(&ListOpts::default()));

    // The oldest idle connection made room (or ran out of time): the server closed it.
    assert!(
        idle[0].closed_by_peer(),
        "the oldest idle connection is closed"
    );
    let metrics = server.server().metrics();
    assert!(
        metrics.preauth_rejected.load(Ordering::Relaxed) >= 1,
        "pending connections over the budget are evicted and counted"
    );
    assert_eq!(metrics.sessions_refused.load(Ordering::Relaxed), 0);

    // Half the idle sockets leave; the server closes the rest, still pending, as it stops.
    idle.truncate(IDLE / 2);
    drop(client);
    let metrics = stop(server);
    drop(idle);
    let metrics = metrics.metrics();
    // Every idle connection ended without a handshake (evicted, out of time, left, or closed at
    // shutdown), and each one counts; the client's session does not.
    assert_eq!(
        metrics.handshake_failures.load(Ordering::Relaxed),
        IDLE as u64
    );
    assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 0);
}

#[test]
fn failed_handshakes_and_bad_messages_are_counted() {
    let server = TestServer::start(|config| config.allow_plaintext = true);
    // A v2 handshake with a token the server does not know: closed without a word.
    let unknown = server.token(&ALL_ACTIONS, &[]);
    let wrong = format!("{unknown}x");
    assert!(connect_v2(server.addr, &wrong, "default", Some(server.fingerprint())).is_err());
    // A v1 hello without a token: refused with a reason.
    let Err(refused) = connect_v1(server.addr, "", "default", false) else {
        panic!("a hello without a token is refused");
    };
    assert!(refused.contains("missing control token"), "{refused}");
    // A peer that leaves without a hello (accepted before the session below: the listener
    // takes connections in order).
    drop(Wire::connect(server.addr));

    // A session whose message does not decode ends; it completed its handshake.
    let mut session = server.v2("default");
    session
        .send_message(b"not a control message")
        .expect("send");
    told_why_then_closed(&mut session, "message does not decode");

    // A frame header announcing more than any frame may hold ends the session too.
    let mut session = server.v2("default");
    session.wire.write(&[0xff; 4]).expect("send");
    told_why_then_closed(&mut session, "unreadable frame");
    // A peer that leaves mid-frame is no protocol error: the session ends quietly.
    let mut leaving = server.v1("default");
    leaving.wire.write(&[0, 0, 0, 9, 1]).expect("send");
    drop(leaving);

    drop(session);
    let metrics = stop(server);
    let metrics = metrics.metrics();
    assert_eq!(metrics.handshake_failures.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.protocol_errors.load(Ordering::Relaxed), 2);
}

/// The session's last message is the closing notice, with `reason`; then the server closes it.
fn told_why_then_closed(session: &mut Client, reason: &str) {
    assert_eq!(
        session.closing_notice(),
        format!("protocol error: the session is closed: {reason}")
    );
}

#[test]
fn a_v1_session_closed_for_a_bad_message_is_told_why() {
    let server = TestServer::start(|_| {});
    let mut session = server.v1("default");
    session
        .send_message(b"not a control message")
        .expect("send");
    told_why_then_closed(&mut session, "message does not decode");
    let metrics = stop(server);
    assert_eq!(metrics.metrics().protocol_errors.load(Ordering::Relaxed), 1);
}

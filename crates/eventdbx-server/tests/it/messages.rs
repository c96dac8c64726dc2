//! Messages in flight (`docs/server.md`, "Connection limits"): a message begun must arrive
//! whole within `[socket] message_timeout_ms`, an answer must find its peer taking some of it
//! within `[socket] answer_timeout_ms`, and large messages reserve their length from a budget
//! shared by every connection, waiting for room instead of allocating past it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eventdbx_proto::frame;
use eventdbx_proto::message;
use eventdbx_proto::noise::v2;

use crate::support::*;

/// Waits until `counter` reaches at least `at_least`; the bound only keeps a broken server from
/// hanging the suite.
fn wait_for(counter: &AtomicU64, at_least: u64, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "{what}: never reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `getAggregate` request of about `len` bytes (an absurdly long aggregate id): a real
/// request the server answers, with an error, once it has it whole.
fn large_request(id: u64, token: &str, len: usize) -> Vec<u8> {
    let aggregate_id = "x".repeat(len);
    message::encode_request(|mut request| {
        request.set_id(id);
        let mut get = request.init_payload().init_get_aggregate();
        get.set_token(token);
        get.set_aggregate_type("order");
        get.set_aggregate_id(aggregate_id.as_str());
        Ok(())
    })
    .expect("encode")
}

/// The frames of a sealed v2 message, each with its header.
fn frames_of(sealed: &[u8]) -> Vec<&[u8]> {
    let mut rest = sealed;
    let mut frames = Vec::new();
    while let Some((_, used)) = frame::split(rest, v2::FRAME_LIMIT).expect("frame") {
        frames.push(&rest[..used]);
        rest = &rest[used..];
    }
    frames
}

#[test]
fn a_message_that_stalls_midway_closes_its_session() {
    let server = TestServer::start(|config| config.socket.message_timeout_ms = 300);
    let metrics = server.server().metrics();
    // Opened first, then idle for longer than the message timeout while the others stall.
    let mut quiet = server.v2("default");

    // Half a frame header, then nothing.
    let mut header = server.v2("default");
    header.wire.write(&[0, 0]).expect("send");
    assert!(header.wire.closed_by_peer(), "closed in the frame header");

    // The first chunks of a large message, then nothing.
    let mut chunks = server.v2("default");
    let token = chunks.token.clone();
    let sealed = chunks
        .seal(&large_request(1, &token, 300_000))
        .expect("seal");
    let frames = frames_of(&sealed);
    assert!(frames.len() > 2, "several chunks");
    chunks.wire.write(&frames[..2].concat()).expect("send");
    assert!(chunks.wire.closed_by_peer(), "closed between chunks");
    assert_eq!(
        metrics.message_bytes_reserved.load(Ordering::SeqCst),
        0,
        "the stalled message gave its reservation back"
    );

    // A v1 frame cut short.
    let mut v1 = server.v1("default");
    let token = v1.token.clone();
    let framed = v1.seal(&large_request(1, &token, 1_000)).expect("seal");
    v1.wire.write(&framed[..framed.len() / 2]).expect("send");
    assert!(v1.wire.closed_by_peer(), "closed in the frame");

    assert_eq!(metrics.message_timeouts.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.protocol_errors.load(Ordering::SeqCst), 3);
    // Idleness between messages is not a stall.
    ok(quiet.list(&ListOpts::default()));
}

#[test]
fn a_peer_that_stops_reading_has_its_session_closed_and_its_answers_dropped() {
    let server = TestServer::start(|config| config.socket.answer_timeout_ms = 300);
    let metrics = server.server().metrics();
    // Opened first, then idle for longer than the answer timeout: idle is not stalled.
    let mut quiet = server.v2("default");
    // Two answers of 12 MiB each, far more than the socket buffers between the server and a
    // peer that reads nothing hold (its own receive buffer fixed at 64 KiB).
    let mut writer = server.v2("default");
    writer.create_large_orders(60);
    let mut stalled = with_receive_buffer(64 * 1024, || server.v2("default"));
    for _ in 0..2 {
        stalled.send_list(60).expect("send list");
    }
    // Nothing is read until the server has given up on the peer.
    wait_for(&metrics.answer_timeouts, 1, "answer timeouts");
    let read = stalled
        .wire
        .drain_until_closed()
        .expect("the session of the peer that stopped reading was closed");
    assert!(
        read < 2 * 60 * 200 * 1024,
        "the peer got its answers whole ({read} bytes) although it read nothing in time"
    );
    assert_eq!(metrics.answer_timeouts.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.protocol_errors.load(Ordering::SeqCst), 1);
    // The other sessions go on, the idle one and the writer alike.
    ok(quiet.list(&ListOpts::default()));
    ok(writer.create("order", "after", "created", "{}"));
}

#[test]
fn a_v1_peer_that_stops_reading_has_its_session_closed() {
    let server = TestServer::start(|config| config.socket.answer_timeout_ms = 300);
    let metrics = server.server().metrics();
    let mut writer = server.v2("default");
    let blob = "x".repeat(10 * 1024);
    let payload = format!(r#"{{"blob":"{blob}"}}"#);
    ok(writer.create("order", "big", "created", &payload));
    // How many bytes one answer is on a v1 wire (at most 64 KiB).
    let mut probe = server.v1("default");
    let before = probe.wire.received.len();
    ok(probe.get("order", "big"));
    let per_answer = probe.wire.received.len() - before;
    assert!(per_answer > 10 * 1024, "{per_answer} bytes");
    // Requests sent ahead whose answers make 24 MiB, more than the socket buffers hold (the
    // peer's receive buffer fixed at 64 KiB).
    let requests = (24 << 20) / per_answer + 1;
    let mut stalled = with_receive_buffer(64 * 1024, || server.v1("default"));
    let token = stalled.token.clone();
    for _ in 0..requests {
        stalled
            .send(|payload| {
                let mut get = payload.init_get_aggregate();
                get.set_token(token.as_str());
                get.set_aggregate_type("order");
                get.set_aggregate_id("big");
            })
            .expect("send get");
    }
    wait_for(&metrics.answer_timeouts, 1, "answer timeouts");
    let read = stalled
        .wire
        .drain_until_closed()
        .expect("the session of the peer that stopped reading was closed");
    assert!(read < 24 << 20, "every answer arrived ({read} bytes)");
    ok(writer.create("order", "after", "created", "{}"));
}

#[test]
fn large_messages_wait_for_the_budget_and_never_exceed_it() {
    const BUDGET: u64 = 1024 * 1024;
    const LEN: usize = 700_000;
    let server = TestServer::start(|config| config.socket.message_budget_bytes = BUDGET);
    let metrics = server.server().metrics();

    // The first message holds its reservation while its last chunk is held back.
    let mut first = server.v2("default");
    let token = first.token.clone();
    let sealed = first.seal(&large_request(1, &token, LEN)).expect("seal");
    let frames = frames_of(&sealed);
    let (last, rest) = frames.split_last().expect("frames");
    first.wire.write(&rest.concat()).expect("send");
    wait_for(
        &metrics.message_bytes_reserved,
        LEN as u64,
        "the first message's reservation",
    );

    // The second does not fit beside it: it waits rather than being read.
    let mut second = server.v2("default");
    let token = second.token.clone();
    second
        .send_message(&large_request(1, &token, LEN))
        .expect("send");
    wait_for(
        &metrics.message_budget_waits,
        1,
        "the second message's wait",
    );
    assert!(metrics.message_bytes_reserved.load(Ordering::SeqCst) <= BUDGET);

    // Once the first is whole and answered, the second gets its turn; both are answered.
    first.wire.write(last).expect("send");
    for session in [&mut first, &mut second] {
        let (id, reply) = session.recv().expect("answered");
        assert_eq!(id, 1);
        assert!(!reply.is_empty());
    }
    let deadline = Instant::now() + PATIENCE;
    while metrics.message_bytes_reserved.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < deadline,
            "reservations outlived their answers"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let peak = metrics.message_bytes_reserved_peak.load(Ordering::SeqCst);
    assert!(
        (LEN as u64..=BUDGET).contains(&peak),
        "peak {peak} within the budget"
    );
    assert_eq!(metrics.message_budget_waits.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.message_timeouts.load(Ordering::SeqCst), 0);
}

//! Busy-polling a hot session's socket after an answer (`[socket] busy_poll_us`): requests are
//! read whole whatever their timing, a zero budget never polls, and no more sessions poll at
//! once than the cap allows (one per runtime worker but one; the test server has two). On a
//! single CPU no session polls.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use eventdbx_server::Metrics;

use crate::support::{connect_v1, ok, Client, TestServer, PATIENCE};

/// Whether sessions may poll here at all (not on a single CPU).
fn several_cpus() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) > 1
}

fn poll_counts(metrics: &Metrics) -> (u64, u64) {
    (
        metrics.busy_polls.load(Ordering::SeqCst),
        metrics.busy_poll_hits.load(Ordering::SeqCst),
    )
}

/// A `getAggregate` request for `id`, sent in `pieces` writes `pause` apart; checks the answer.
fn get_in_pieces(session: &mut Client, id: &str, pieces: usize, pause: Duration) {
    let token = session.token.clone();
    let sent = session
        .send_in_pieces(
            |p| {
                let mut r = p.init_get_aggregate();
                r.set_token(token.as_str());
                r.set_aggregate_type("order");
                r.set_aggregate_id(id);
            },
            pieces,
            pause,
        )
        .expect("request written");
    let (got, bytes) = session.recv().expect("answer");
    assert_eq!(got, sent);
    let answer = ok(crate::support::decode(&bytes));
    assert_eq!(answer["aggregate"]["aggregate_id"], id, "{answer}");
}

/// Polls started and polls that caught a request never disagree: a hit is a poll, and no
/// session still holds a polling slot once it has answered and gone quiet.
fn assert_counts_consistent(metrics: &Metrics, name: &str) {
    let (polls, hits) = poll_counts(metrics);
    assert!(hits <= polls, "{name}: {hits} hits out of {polls} polls");
    if !several_cpus() {
        assert_eq!((polls, hits), (0, 0), "{name}: no polls on one CPU");
    }
}

#[test]
fn a_polling_session_reads_a_request_written_in_pieces_slower_than_the_poll() {
    let server = TestServer::start(|config| {
        config.socket.busy_poll_us = 1000;
        config.allow_plaintext = true;
    });
    let token = server.admin_token();
    let sessions = [
        (
            "plaintext",
            connect_v1(server.addr, &token, "default", true),
        ),
        ("v1", connect_v1(server.addr, &token, "default", false)),
        ("v2", Ok(server.v2("default"))),
    ];
    let metrics = server.server().metrics();
    for (name, session) in sessions {
        let mut session = session.expect("session");
        ok(session.create("order", name, "created", r#"{"n":1}"#));
        // Quick calls make the conversation hot, so the server is likely polling when the
        // first piece comes; the later pieces come after any 1 ms poll has ended. Whichever
        // way each read goes, a request written in pieces must be answered whole, and the
        // session must go on working.
        for (round, pieces) in (2..=5).enumerate() {
            for _ in 0..20 {
                ok(session.get("order", name));
            }
            get_in_pieces(&mut session, name, pieces, Duration::from_millis(5));
            let n = round as u64 + 2;
            let event = ok(session.apply("order", name, "changed", &format!(r#"{{"n":{n}}}"#)));
            assert_eq!(event["version"], n, "{name}: {event}");
            assert_counts_consistent(metrics, name);
        }
        let got = ok(session.get("order", name));
        assert_eq!(got["aggregate"]["state"]["n"], 5, "{name}: {got}");
    }
}

#[test]
fn a_zero_budget_never_polls_and_the_default_does() {
    for micros in [0, 50] {
        let server = TestServer::start(|config| {
            if micros == 0 {
                config.socket.busy_poll_us = 0;
            }
        });
        assert_eq!(server.server().config().socket.busy_poll_us, micros);
        let mut session = server.v2("default");
        ok(session.create("order", "o-1", "created", r#"{"n":1}"#));
        for n in 2..=200u64 {
            let event = ok(session.apply("order", "o-1", "changed", &format!(r#"{{"n":{n}}}"#)));
            assert_eq!(event["version"], n, "{event}");
            let got = ok(session.get("order", "o-1"));
            assert_eq!(got["aggregate"]["state"]["n"], n, "{got}");
        }
        let metrics = server.server().metrics();
        if micros == 0 || !several_cpus() {
            assert_eq!(poll_counts(metrics), (0, 0), "busy_poll_us = {micros}");
            continue;
        }
        // A session polls only once its client answers within a millisecond, which a loaded
        // machine may not manage for a while: keep the conversation going until one does.
        // The deadline only stops a broken server from hanging the suite.
        let deadline = Instant::now() + PATIENCE;
        while poll_counts(metrics).0 == 0 {
            assert!(
                Instant::now() < deadline,
                "busy_poll_us = {micros}: never polled"
            );
            ok(session.get("order", "o-1"));
        }
        assert_counts_consistent(metrics, "default budget");
    }
}

#[test]
fn polling_sessions_stay_under_the_cap_and_give_their_slots_back() {
    let server = TestServer::start(|config| {
        config.socket.busy_poll_us = 1000;
        config.allow_plaintext = true;
    });
    let token = server.admin_token();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let token = token.as_str();
            let addr = server.addr;
            scope.spawn(move || {
                let mut session = connect_v1(addr, token, "default", true).expect("session");
                let id = format!("o-{t}");
                ok(session.create("order", &id, "created", r#"{"n":1}"#));
                for _ in 0..300 {
                    let got = ok(session.get("order", &id));
                    assert_eq!(got["aggregate"]["aggregate_id"], id.as_str());
                }
                match t {
                    // Half a frame header, then the connection goes (likely mid-poll).
                    0 => {
                        let _ = session.wire.write(&[0, 0]);
                    }
                    // A frame that is no Cap'n Proto message: the server says why (the
                    // closing notice, request id 0) and ends the session.
                    1 => {
                        let _ = session
                            .wire
                            .write(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
                        session.closing_notice();
                    }
                    _ => {}
                }
            });
        }
    });
    let metrics = server.server().metrics();
    if several_cpus() {
        // Whether those sessions polled depends on how quickly their clients answered; one
        // more hot conversation runs until a poll catches a request, however long a loaded
        // machine takes (the deadline only stops a broken server from hanging the suite).
        let mut session = connect_v1(server.addr, &token, "default", true).expect("session");
        ok(session.create("order", "o-last", "created", r#"{"n":1}"#));
        let deadline = Instant::now() + PATIENCE;
        while poll_counts(metrics).1 == 0 {
            assert!(Instant::now() < deadline, "no poll ever caught a request");
            ok(session.get("order", "o-last"));
        }
    }
    // The server notices each client leave on its own schedule; the deadline is only a safety
    // net.
    let deadline = Instant::now() + PATIENCE;
    while metrics.connections_open.load(Ordering::SeqCst) > 0 {
        assert!(Instant::now() < deadline, "sessions still open");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (polls, hits) = poll_counts(metrics);
    let cap = u64::from(several_cpus());
    assert_eq!(polls > 0 && hits > 0, cap > 0, "{polls} polls, {hits} hits");
    assert_eq!(
        metrics.busy_polling_peak.load(Ordering::SeqCst),
        cap,
        "two runtime workers: one session polls at a time (none on one CPU)"
    );
    assert_counts_consistent(metrics, "capped");
    assert_eq!(metrics.busy_polling.load(Ordering::SeqCst), 0);
}

/// A client that always sends its next request a little after the poll has ended (300 µs after
/// reading an answer: too late for any poll of the default 50 µs, yet within the millisecond
/// that makes a conversation look busy) costs the server ever fewer polls: each poll that
/// catches nothing doubles the waits before the next (1, 2, 4, … 1,024), so 2,000 requests see
/// at most 11 polls. A slower machine only stretches the gaps, which makes fewer polls, with one
/// exception: a poll whose thread is preempted past the request's arrival catches it, and each
/// catch restarts the back-off (at most 4 halving polls, then 11 more).
#[test]
fn a_client_slower_than_the_poll_costs_ever_fewer_polls() {
    let server = TestServer::start(|config| config.allow_plaintext = true);
    assert_eq!(server.server().config().socket.busy_poll_us, 50);
    let token = server.admin_token();
    let mut session = connect_v1(server.addr, &token, "default", true).expect("session");
    ok(session.create("order", "o-slow", "created", r#"{"n":1}"#));
    for _ in 0..2_000 {
        // The client's own pace (a lower bound on the gap), not a synchronisation.
        std::thread::sleep(Duration::from_micros(300));
        let got = ok(session.get("order", "o-slow"));
        assert_eq!(got["aggregate"]["aggregate_id"], "o-slow", "{got}");
    }
    let (polls, hits) = poll_counts(server.server().metrics());
    assert!(
        polls <= 11 + 15 * hits,
        "{polls} polls ({hits} caught a request) for 2,000 requests sent after the poll ended"
    );
}

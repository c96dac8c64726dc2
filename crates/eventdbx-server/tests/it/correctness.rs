//! Correctness decisions over real sockets and query errors.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use serde_json::{json, Value};

use crate::support::*;

fn array(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

#[test]
fn racing_creates_have_one_winner() {
    let server = TestServer::start(|_| {});
    let clients: Vec<Client> = (0..20)
        .map(|n| {
            if n % 2 == 0 {
                server.v1("default")
            } else {
                server.v2("default")
            }
        })
        .collect();
    let barrier = Arc::new(Barrier::new(clients.len()));
    let results: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, mut client)| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    barrier.wait();
                    client.create("item", "race", "made", &format!(r#"{{"by":{n}}}"#))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1);
    for result in results.into_iter().filter(Result::is_err) {
        assert_eq!(
            err(result).pair(),
            ("aggregate_exists", "aggregate item::race already exists")
        );
    }
    let mut c = server.v2("default");
    assert_eq!(ok(c.get("item", "race"))["aggregate"]["version"], 1);
    let events = ok(c.events("item", "race", None, None, None));
    assert_eq!(array(&events["events"]).len(), 1);
}

/// 04-acceptance 95: 16 durable writers on 16 aggregates and on one aggregate. Every write is
/// acknowledged, and each aggregate's versions are exactly 1..=N with every writer's events
/// present once. (That different aggregates are not serialised behind one lock is measured by
/// the store and server benchmarks, not timed here.)
#[test]
fn parallel_writers_keep_versions_gap_free() {
    use eventdbx_store::Durability;
    const WRITERS: usize = 16;
    const EACH: usize = 25;
    let server = TestServer::start(|config| config.storage.durability = Durability::Fsync);
    let mut setup = server.v2("default");
    ok(setup.create("ledger", "shared", "opened", "{}"));
    for w in 0..WRITERS {
        ok(setup.create("ledger", &format!("own-{w}"), "opened", "{}"));
    }
    let barrier = Arc::new(Barrier::new(WRITERS));
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let barrier = Arc::clone(&barrier);
            let mut client = server.v2("default");
            scope.spawn(move || {
                barrier.wait();
                for n in 0..EACH {
                    let body = format!(r#"{{"writer":{w},"n":{n}}}"#);
                    ok(client.apply("ledger", "shared", "posted", &body));
                    ok(client.apply("ledger", &format!("own-{w}"), "posted", &body));
                }
            });
        }
    });
    let mut c = server.v2("default");
    let check = |c: &mut Client, id: &str, expected: usize| {
        let take = u64::try_from(expected + 10).expect("fits");
        let events = array(&ok(c.events("ledger", id, Some(take), None, None))["events"]);
        let versions: Vec<u64> = events
            .iter()
            .map(|e| e["version"].as_u64().expect("version"))
            .collect();
        let want: Vec<u64> = (1..=u64::try_from(expected).expect("fits")).collect();
        assert_eq!(versions, want, "{id}");
        let distinct: HashSet<(u64, u64)> = events
            .iter()
            .skip(1)
            .map(|e| {
                (
                    e["payload"]["writer"].as_u64().expect("writer"),
                    e["payload"]["n"].as_u64().expect("n"),
                )
            })
            .collect();
        assert_eq!(
            distinct.len(),
            expected - 1,
            "{id}: a write is missing or doubled"
        );
    };
    check(&mut c, "shared", 1 + WRITERS * EACH);
    for w in 0..WRITERS {
        check(&mut c, &format!("own-{w}"), 1 + EACH);
    }
}

#[test]
fn expected_version_is_optimistic_concurrency() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.create("item", "i-1", "made", "{}"));
    ok(c.apply("item", "i-1", "changed", "{}"));
    ok(c.apply("item", "i-1", "changed", "{}"));
    let at3 = WriteOpts {
        expected_version: Some(3),
        ..WriteOpts::default()
    };
    assert_eq!(
        ok(c.apply_with("item", "i-1", "changed", r#"{"n":4}"#, &at3))["version"],
        4
    );
    assert_eq!(
        err(c.apply_with("item", "i-1", "changed", r#"{"n":5}"#, &at3)).pair(),
        (
            "version_conflict",
            "version conflict: expected version 3, current version 4"
        )
    );
    let new = WriteOpts {
        expected_version: Some(0),
        ..WriteOpts::default()
    };
    assert_eq!(
        ok(c.apply_with("item", "i-2", "made", "{}", &new))["version"],
        1
    );
    assert_eq!(
        err(c.apply_with("item", "i-2", "made", "{}", &new)).code,
        "version_conflict"
    );
    assert_eq!(ok(c.get("item", "i-1"))["aggregate"]["version"], 4);
}

#[test]
fn idempotent_retries_apply_once() {
    let server = TestServer::start(|_| {});
    let mut c = server.v1("default");
    ok(c.create("item", "i-1", "made", "{}"));
    let key = WriteOpts {
        idempotency_key: Some("k1"),
        ..WriteOpts::default()
    };
    let first = ok(c.apply_with("item", "i-1", "changed", r#"{"n":1}"#, &key));
    // A retry on a new connection gets the original event.
    let mut retry = server.v2("default");
    let second = ok(retry.apply_with("item", "i-1", "changed", r#"{"n":1}"#, &key));
    assert_eq!(first, second);
    let error = err(c.apply_with("item", "i-1", "changed", r#"{"n":2}"#, &key));
    assert_eq!(
        error.pair(),
        (
            "idempotency_conflict",
            "idempotency key 'k1' was already used for a different request"
        )
    );
    let events = ok(c.events("item", "i-1", None, None, None));
    assert_eq!(array(&events["events"]).len(), 2);
}

#[test]
fn state_keeps_json_types() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.create(
        "item",
        "t-1",
        "made",
        r#"{"code":"123","n":123,"b":"true","x":null}"#,
    ));
    let state = &ok(c.get("item", "t-1"))["aggregate"]["state"];
    assert_eq!(
        state,
        &json!({"code": "123", "n": 123, "b": "true", "x": null})
    );
    let selected = ok(c.select("item", "t-1", &["code", "n"]));
    assert_eq!(selected["selection"], json!({"code": "123", "n": 123}));
    let matching = ok(c.list(&ListOpts {
        filter: Some(r#"code = "123""#),
        ..ListOpts::default()
    }));
    assert_eq!(array(&matching["aggregates"]).len(), 1);
    let typed = ok(c.list(&ListOpts {
        filter: Some("code = 123"),
        ..ListOpts::default()
    }));
    assert_eq!(array(&typed["aggregates"]).len(), 0);
}

/// Walks every page over `client` with `sort`, returning the ids in order and the page sizes.
fn walk(client: &mut Client, sort: Option<&str>) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = ok(client.list(&ListOpts {
            take: Some(100),
            sort,
            cursor: cursor.as_deref(),
            ..ListOpts::default()
        }));
        let items = array(&page["aggregates"]);
        sizes.push(items.len());
        for item in &items {
            ids.push(item["aggregate_id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => {
                if sort.is_none() {
                    // Natural order: the cursor names the last item sent.
                    let last = items.last().expect("a cursor follows items");
                    assert_eq!(
                        next,
                        format!("a:page:{}", last["aggregate_id"].as_str().expect("id"))
                    );
                }
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(sizes.len() < 50, "paging does not end");
    }
    (ids, sizes)
}

#[test]
fn v1_pages_are_cut_without_skipping_items() {
    let server = TestServer::start(|_| {});
    let mut writer = server.v2("default");
    let filler = "f".repeat(1000);
    let token = writer.token.clone();
    let total = 300;
    for n in 0..total {
        writer
            .send(|p| {
                let mut w = p.init_create_aggregate();
                w.set_token(token.as_str());
                w.set_aggregate_type("page");
                w.set_aggregate_id(format!("p-{n:03}").as_str());
                w.set_event_type("made");
                w.set_payload_json(format!(r#"{{"n":{n},"filler":"{filler}"}}"#).as_str());
            })
            .expect("send");
    }
    for _ in 0..total {
        let (_, bytes) = writer.recv().expect("reply");
        ok(decode(&bytes));
    }
    let mut v1 = server.v1("default");
    for sort in [
        None,
        Some("created_at:desc"),
        Some("aggregate_id:desc"),
        Some("version:asc,aggregate_id:asc"),
    ] {
        let (ids, sizes) = walk(&mut v1, sort);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            ids.len(),
            total,
            "{sort:?}: every item once, sizes {sizes:?}"
        );
        assert_eq!(unique.len(), total, "{sort:?}: no repeats");
        assert!(
            sizes.iter().any(|&s| s > 0 && s < 100),
            "{sort:?}: pages were cut: {sizes:?}"
        );
        match sort {
            Some("aggregate_id:desc") => {
                let mut expected = ids.clone();
                expected.sort_by(|a, b| b.cmp(a));
                assert_eq!(ids, expected);
            }
            Some("version:asc,aggregate_id:asc") | None => {
                let mut expected = ids.clone();
                expected.sort();
                assert_eq!(ids, expected, "{sort:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn bad_filters_sorts_and_cursors_have_spec_errors() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    ok(c.create("order", "o-1", "made", r#"{"status":"a"}"#));
    let list = |c: &mut Client, opts: ListOpts<'_>| err(c.list(&opts));

    let cases = [
        (
            r#"status @ "pending""#,
            "invalid schema: invalid filter expression: expected comparison operator",
        ),
        (
            r#"a = "x"#,
            "invalid schema: invalid filter expression: unterminated string literal",
        ),
    ];
    for (filter, message) in cases {
        let error = list(
            &mut c,
            ListOpts {
                filter: Some(filter),
                ..ListOpts::default()
            },
        );
        assert_eq!(error.pair(), ("invalid_schema", message), "{filter}");
        let error = err(c.events("order", "o-1", None, None, Some(filter)));
        assert_eq!(error.pair(), ("invalid_schema", message), "events {filter}");
    }
    let error = list(
        &mut c,
        ListOpts {
            sort: Some("bogus:asc"),
            ..ListOpts::default()
        },
    );
    assert_eq!(
        error.pair(),
        (
            "invalid_schema",
            "invalid schema: invalid sort specification: unsupported aggregate sort field 'bogus'"
        )
    );
    let error = list(
        &mut c,
        ListOpts {
            sort: Some("created_at:sideways"),
            ..ListOpts::default()
        },
    );
    assert_eq!(
        error.message,
        "invalid schema: invalid sort specification: invalid sort order 'sideways' (expected \
         'asc' or 'desc')"
    );
    let error = list(
        &mut c,
        ListOpts {
            cursor: Some("x:y"),
            ..ListOpts::default()
        },
    );
    assert_eq!(
        error.pair(),
        (
            "invalid_cursor",
            "invalid cursor: unknown cursor segment 'x'"
        )
    );
    let error = list(
        &mut c,
        ListOpts {
            cursor: Some("r:order:o-1"),
            ..ListOpts::default()
        },
    );
    assert_eq!(
        error.pair(),
        (
            "invalid_cursor",
            "invalid cursor: cursor points to archived aggregates but scope uses active records"
        )
    );
    let error = list(
        &mut c,
        ListOpts {
            sort: Some("created_at:desc"),
            cursor: Some("ts:order:nope"),
            ..ListOpts::default()
        },
    );
    assert_eq!(
        error.pair(),
        (
            "invalid_cursor",
            "invalid cursor: cursor references unknown aggregate 'order:nope'"
        )
    );
    let error = err(c.events("order", "o-1", None, Some("a:order:o-1:abc"), None));
    assert_eq!(
        error.pair(),
        (
            "invalid_cursor",
            "invalid cursor: cursor version 'abc' is not a number"
        )
    );
    // The session survived every error.
    assert_eq!(ok(c.get("order", "o-1"))["found"], true);
}

#[test]
fn a_dangling_and_expects_a_field_name() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    let error = err(c.list(&ListOpts {
        filter: Some("a = 1 AND"),
        ..ListOpts::default()
    }));
    assert_eq!(
        error.pair(),
        (
            "invalid_schema",
            "invalid schema: invalid filter expression: expected field name in comparison"
        )
    );
}

#[test]
fn events_filter_and_cursor() {
    let server = TestServer::start(|_| {});
    let mut c = server.v1("default");
    ok(c.create("order", "o-1", "order_created", "{}"));
    for _ in 0..4 {
        ok(c.apply("order", "o-1", "order_status_updated", "{}"));
    }
    let versions = |reply: &Value| -> Vec<u64> {
        array(&reply["events"])
            .iter()
            .filter_map(|e| e["version"].as_u64())
            .collect()
    };
    let recent = ok(c.events("order", "o-1", None, None, Some("version >= 3")));
    assert_eq!(versions(&recent), vec![3, 4, 5]);
    let created = ok(c.events(
        "order",
        "o-1",
        None,
        None,
        Some(r#"event_type = "order_created""#),
    ));
    assert_eq!(versions(&created), vec![1]);
    let first = ok(c.events("order", "o-1", Some(2), None, None));
    assert_eq!(versions(&first), vec![1, 2]);
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(cursor, "a:order:o-1:2");
    let rest = ok(c.events("order", "o-1", Some(10), Some(&cursor), None));
    assert_eq!(versions(&rest), vec![3, 4, 5]);
}

#[test]
fn exact_prefixes_keep_o1_and_o10_apart() {
    let server = TestServer::start(|_| {});
    let mut c = server.v2("default");
    for id in ["o-1", "o-10"] {
        ok(c.create("order", id, "made", "{}"));
        ok(c.apply("order", id, "changed", "{}"));
        ok(c.create_snapshot("order", id, None));
    }
    let events = ok(c.events("order", "o-1", None, None, None));
    assert!(array(&events["events"])
        .iter()
        .all(|e| e["aggregate_id"] == "o-1"));
    assert_eq!(array(&events["events"]).len(), 2);
    let snapshots = ok(c.list_snapshots(Some("order"), Some("o-1")));
    assert_eq!(array(&snapshots).len(), 1);
    assert_eq!(snapshots[0]["aggregate_id"], "o-1");
}

#[test]
fn large_requests_need_v2_and_a_refused_one_keeps_the_v1_session() {
    let server = TestServer::start(|_| {});
    let mut v1 = server.v1("default");
    ok(v1.create("item", "big", "made", "{}"));
    let payload = format!(r#"{{"blob":"{}"}}"#, "b".repeat(70 * 1024));
    let token = v1.token.clone();
    let refused = v1.try_call(|p| {
        let mut w = p.init_append_event();
        w.set_token(token.as_str());
        w.set_aggregate_type("item");
        w.set_aggregate_id("big");
        w.set_event_type("changed");
        w.set_payload_json(payload.as_str());
    });
    let message = refused.expect_err("refused before sending");
    assert!(message.contains("request too large"), "{message}");
    assert_eq!(ok(v1.get("item", "big"))["aggregate"]["version"], 1);

    let mut v2 = server.v2("default");
    let payload = format!(r#"{{"blob":"{}"}}"#, "b".repeat(200 * 1024));
    assert_eq!(
        ok(v2.apply("item", "big", "changed", &payload))["version"],
        2
    );
    let state = &ok(v2.get("item", "big"))["aggregate"]["state"];
    assert_eq!(state["blob"].as_str().map(str::len), Some(200 * 1024));
}

#[test]
fn no_existence_oracle_and_per_request_resources() {
    let server = TestServer::start(|_| {});
    let mut admin = server.v2("default");
    ok(admin.create("person", "p-1", "made", r#"{"name":"a"}"#));
    ok(admin.create("order", "o-1", "made", "{}"));
    let snapshot = ok(admin.create_snapshot("person", "p-1", None));
    let snapshot_id: u64 = snapshot["snapshot_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");

    // 78: a read-only token gets the same answer for existing and missing aggregates.
    let mut reader = server.v2("default");
    reader.token = server.token(&["aggregate.read"], &[]);
    for id in ["p-1", "p-404"] {
        for reply in [
            reader.apply("person", id, "changed", "{}"),
            reader.patch(
                "person",
                id,
                "changed",
                r#"[{"op":"add","path":"/x","value":1}]"#,
            ),
            reader.create("person", id, "made", "{}"),
        ] {
            assert_eq!(err(reply).pair(), ("unauthorized", "unauthorized"), "{id}");
        }
    }

    // 80: resources restrict every listing.
    let mut orders = server.v2("default");
    orders.token = server.token_for(&["aggregate.read"], &["aggregate:order:*"], &[]);
    let listed = ok(orders.list(&ListOpts::default()));
    let types: Vec<Value> = array(&listed["aggregates"])
        .iter()
        .map(|a| a["aggregate_type"].clone())
        .collect();
    assert_eq!(types, vec![json!("order")]);
    let outbox = ok(orders.outbox(None, Some(100)));
    assert!(array(&outbox["events"])
        .iter()
        .all(|e| e["aggregate_type"] == "order"));
    assert_eq!(array(&outbox["events"]).len(), 1);
    assert_eq!(ok(orders.list_snapshots(Some("person"), None)), json!([]));
    assert_eq!(ok(orders.get_snapshot(snapshot_id))["found"], false);
    assert_eq!(ok(orders.get_snapshot(snapshot_id + 1))["found"], false);
    assert_eq!(err(orders.get("person", "p-1")).code, "unauthorized");
}

//! Two servers on one PostgreSQL database (`docs/storage.md`, "Several servers"): tokens,
//! revocations, quotas, schemas and plugin definitions changed through one are in force on the
//! other within `[storage] sync_interval_ms`. Each test has its own database on the process's
//! scratch cluster; a change is awaited by polling the other server's answer, with a bound.

use std::time::{Duration, Instant};

use eventdbx_server::auth::TokenRequest;
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::{json, Value};

use crate::support::*;

/// A short interval, so the tests wait little; the bound below is far longer.
const SYNC_INTERVAL_MS: u64 = 50;

/// Two servers on the fresh database `name`, started one after the other.
fn two_servers(name: &str) -> (TestServer, TestServer) {
    let url = TestCluster::shared().database(name);
    let start = || {
        TestServer::start(|config| {
            config.storage.backend = "postgres".into();
            config.storage.url = Some(url.clone());
            config.storage.pool_size = 4;
            config.storage.sync_interval_ms = SYNC_INTERVAL_MS;
        })
    };
    let first = start();
    let second = start();
    (first, second)
}

/// Polls `check` until it gives a value, failing the test after [`PATIENCE`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A v2 session on `server` with `token`, once the server knows the token.
fn session_when_known(server: &TestServer, token: &str, tenant: &str) -> Client {
    eventually("the token is known to the other server", || {
        connect_v2(server.addr, token, tenant, Some(server.fingerprint())).ok()
    })
}

fn issue(server: &TestServer, user: &str) -> String {
    server
        .server()
        .auth()
        .issue(TokenRequest {
            group: "ops".into(),
            user: user.into(),
            actions: vec!["*.*".into()],
            ttl_secs: Some(3600),
            ..TokenRequest::default()
        })
        .expect("issue")
        .0
}

#[test]
fn a_token_issued_through_one_server_works_on_the_other() {
    let (a, b) = two_servers("shared_token_issue");
    let token = issue(&a, "issued-on-a");
    // v1 carries the token itself: only the signature (A's key, in the shared key set) counts.
    let mut v1 = connect_v1(b.addr, &token, "default", false).expect("v1 session on b");
    ok(v1.create("order", "o-1", "created", "{}"));
    // v2 needs the token's registry entry, written by A.
    let mut v2 = session_when_known(&b, &token, "default");
    assert_eq!(ok(v2.get("order", "o-1"))["aggregate"]["version"], 1);
    // And the other way round.
    let token = issue(&b, "issued-on-b");
    let mut on_a = session_when_known(&a, &token, "default");
    ok(on_a.apply("order", "o-1", "paid", "{}"));
}

#[test]
fn a_token_revoked_through_one_server_is_refused_by_the_other() {
    let (a, b) = two_servers("shared_token_revoke");
    let admin = issue(&b, "admin");
    let victim = issue(&a, "victim");
    let mut c = session_when_known(&b, &admin, "default");
    c.token = victim.clone();
    ok(c.create("order", "o-1", "created", "{}"));
    a.server()
        .auth()
        .revoke(&victim, Some("leaked"))
        .expect("revoke");
    let refused = eventually("the revocation reaches the other server", || {
        c.get("order", "o-1").err()
    });
    assert_eq!(refused.code, "invalid_token", "{refused:?}");
    // A new v2 handshake with it is told so, too.
    assert!(connect_v2(b.addr, &victim, "default", Some(b.fingerprint())).is_err());
}

#[test]
fn a_quota_set_through_one_server_binds_on_the_other() {
    let (a, b) = two_servers("shared_quota");
    let mut on_a = a.v2("default");
    let mut on_b = session_when_known(&b, &on_a.token.clone(), "default");
    ok(on_b.create("order", "before", "created", "{}"));
    ok(on_a.quota_set("default", 0));
    let mut n = 0;
    let refused = eventually("the quota reaches the other server", || {
        n += 1;
        on_b.create("order", &format!("o-{n}"), "created", "{}")
            .err()
    });
    assert_eq!(refused.code, "tenant_quota", "{refused:?}");
    ok(on_a.quota_clear("default"));
    eventually("the cleared quota reaches the other server", || {
        n += 1;
        on_b.create("order", &format!("o-{n}"), "created", "{}")
            .ok()
    });
}

#[test]
fn a_schema_published_through_one_server_validates_on_the_other() {
    let (a, b) = two_servers("shared_schema");
    let mut on_a = a.v2("default");
    let mut on_b = session_when_known(&b, &on_a.token.clone(), "default");
    ok(on_b.create("order", "o-1", "anything", "{}"));
    assert_eq!(ok(on_a.replace_schemas(ORDER_SCHEMA)), json!(1));
    let published = ok(on_a.schema_publish("default", Some("first"), true, false));
    let version = published["version_id"]
        .as_str()
        .expect("version id")
        .to_owned();
    let refused = eventually("the schema reaches the other server", || {
        on_b.apply("order", "o-1", "anything", "{}").err()
    });
    assert_eq!(
        refused.pair(),
        (
            "schema_violation",
            "schema violation: event anything is not defined for aggregate order"
        )
    );
    ok(on_b.apply("order", "o-1", "order_created", "{}"));
    // The manifest is a document of its own: the other server may reload it one interval after
    // the schemas it describes (docs/storage.md, "Within one interval").
    eventually("the version reaches the other server's history", || {
        let history = ok(on_b.schema_history("default")).to_string();
        history.contains(&version).then_some(())
    });
    // A publish through the other server builds on the first one's manifest.
    let again = ok(on_b.schema_publish("default", Some("again"), true, true));
    let second = again["version_id"].as_str().expect("version id").to_owned();
    let history = eventually("the second version reaches the first server", || {
        let history = ok(on_a.schema_history("default")).to_string();
        history.contains(&second).then_some(history)
    });
    assert!(history.contains(&version), "{history}");
}

#[test]
fn a_plugin_defined_through_one_server_is_seen_by_the_other() {
    let (a, b) = two_servers("shared_plugins");
    let admin = issue(&a, "admin");
    let mut on_a = connect_v1(a.addr, &admin, "default", false).expect("session on a");
    let mut on_b = connect_v1(b.addr, &admin, "default", false).expect("session on b");
    let definition = json!({"enabled": true, "name": "audit", "config": {"type": "log"}});
    ok(on_a.admin("plugin.add", json!({ "definition": definition })));
    let listed = eventually("the definition reaches the other server", || {
        let listed = ok(on_b.admin("plugin.list", json!({})));
        let names: Vec<Value> = listed
            .as_array()
            .expect("list")
            .iter()
            .map(|plugin| plugin["name"].clone())
            .collect();
        names.contains(&json!("audit")).then_some(listed)
    });
    assert_eq!(listed[0]["kind"], "log", "{listed}");
    // Changed through the other server, on a definition it got from the first.
    ok(on_b.admin("plugin.disable", json!({"name": "audit"})));
    eventually("the change comes back", || {
        let listed = ok(on_a.admin("plugin.list", json!({})));
        (listed[0]["enabled"] == json!(false)).then_some(())
    });
}

#[test]
fn tokens_issued_at_once_on_both_servers_all_persist() {
    const EACH: usize = 12;
    let (a, b) = two_servers("shared_token_race");
    let issued: Vec<String> = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (server, side) in [(&a, "a"), (&b, "b")] {
            for worker in 0..2 {
                workers.push(scope.spawn(move || {
                    (0..EACH / 2)
                        .map(|n| issue(server, &format!("{side}-{worker}-{n}")))
                        .collect::<Vec<_>>()
                }));
            }
        }
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("issuer"))
            .collect()
    });
    assert_eq!(issued.len(), 2 * 2 * (EACH / 2));
    for server in [&a, &b] {
        let auth = server.server().auth();
        auth.reload().expect("reload");
        let ledger: Vec<String> = auth.list().into_iter().map(|record| record.user).collect();
        for side in ["a", "b"] {
            for worker in 0..2 {
                for n in 0..EACH / 2 {
                    let user = format!("{side}-{worker}-{n}");
                    assert!(ledger.contains(&user), "{user} missing from {ledger:?}");
                }
            }
        }
    }
    // Every one of them opens a v2 session on either server.
    for token in &issued {
        session_when_known(&a, token, "default");
        session_when_known(&b, token, "default");
    }
}

//! `dbx serve` on the PostgreSQL backend, end to end: two workspaces (two servers, as two hosts
//! would run them) configured with `[storage] backend = "postgres"` on one database of a scratch
//! cluster; the Rust client writes through the first and reads, verifies and appends through
//! the second: only a shared database lets the second server see the first one's writes, and
//! the second's event pages carry the positions of the first one's events.

use std::collections::BTreeMap;

use eventdbx_client::{
    Client, ClientConfig, EventsQuery, KnownV2Hosts, SubscribeOptions, Transport,
};
use eventdbx_store_postgres::cluster::TestCluster;
use serde_json::Value;

use crate::workspace::{dbx_in, serve, text, Serving};

/// `dbx init` in a fresh directory, on ephemeral ports, storing in `url`; returns the running
/// server, its port and its CLI token.
fn postgres_workspace(url: &str, dir: &tempfile::TempDir) -> (Serving, u16, String) {
    let init = dbx_in(dir.path()).arg("init").output().expect("dbx init");
    assert!(init.status.success(), "{}", text(&init.stderr));
    let config_path = dir.path().join(".dbx/config.toml");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "bind_addr = \"127.0.0.1:6363\"",
            "bind_addr = \"127.0.0.1:0\"",
        )
        .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n")
        .replace(
            "backend = \"embedded\"",
            &format!("backend = \"postgres\"\nurl = \"{url}\"\npool_size = 4"),
        );
    assert!(config.contains("backend = \"postgres\""), "{config}");
    std::fs::write(&config_path, config).expect("write config");
    let (serving, port, _, _) = serve(dir.path(), "warn");
    let token = std::fs::read_to_string(dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();
    (serving, port, token)
}

#[test]
fn two_servers_on_one_postgres_database_serve_the_same_aggregates() {
    let url = TestCluster::shared().database("cli_e2e");
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_first, first_port, first_token) = postgres_workspace(&url, &first_dir);
    let (_second, second_port, second_token) = postgres_workspace(&url, &second_dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let first = Client::connect(ClientConfig::new(first_token, "default").port(first_port))
            .await
            .expect("connect to the first server");
        first
            .create(
                "order",
                "o-1",
                "created",
                r#"{"status": "new", "total": 42}"#,
            )
            .await
            .expect("create");
        first
            .apply("order", "o-1", "paid", r#"{"status": "paid"}"#)
            .await
            .expect("apply");

        // Each workspace has its own signing key: the second server is reached with its own.
        let second = Client::connect(ClientConfig::new(second_token, "default").port(second_port))
            .await
            .expect("connect to the second server");
        let found = second.get("order", "o-1").await.expect("get");
        let aggregate: Value =
            serde_json::from_str(found.json.as_deref().expect("the aggregate exists"))
                .expect("json");
        assert_eq!(aggregate["version"], 2, "{aggregate}");
        assert_eq!(aggregate["state"]["status"], "paid", "{aggregate}");
        assert_eq!(aggregate["state"]["total"], 42, "{aggregate}");
        let root = second.verify("order", "o-1").await.expect("verify");
        assert_eq!(
            Some(root.as_str()),
            aggregate["merkle_root"].as_str(),
            "the recomputed root is the stored one"
        );
        second
            .apply("order", "o-1", "shipped", r#"{"status": "shipped"}"#)
            .await
            .expect("apply through the second server");
        let found = first.get("order", "o-1").await.expect("get");
        let aggregate: Value =
            serde_json::from_str(found.json.as_deref().expect("exists")).expect("json");
        assert_eq!(aggregate["version"], 3, "{aggregate}");
    });
}

/// Each event's position on a page, keyed by (aggregate id, version).
fn positioned(
    events: &[Value],
    position: impl Fn(usize) -> Option<u64>,
) -> BTreeMap<(String, u64), u64> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let id = event["aggregate_id"].as_str().expect("id").to_owned();
            let version = event["version"].as_u64().expect("version");
            let position =
                position(index).unwrap_or_else(|| panic!("no position for {id} version {version}"));
            ((id, version), position)
        })
        .collect()
}

/// `listEvents` and `readOutbox` through a server on PostgreSQL carry each event's position,
/// the one a subscription delivers it with, also for events another server committed a moment
/// before (`docs/subscriptions.md`, "Positions of event pages").
#[test]
fn event_pages_on_postgres_carry_the_positions_a_subscription_delivers() {
    const IDS: [&str; 3] = ["o-0", "o-1", "o-2"];
    const PER_AGGREGATE: usize = 4;
    let url = TestCluster::shared().database("cli_page_positions");
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (_first, first_port, first_token) = postgres_workspace(&url, &first_dir);
    let (_second, second_port, second_token) = postgres_workspace(&url, &second_dir);
    let config = |token: String, port: u16| {
        ClientConfig::new(token, "default")
            .port(port)
            .transport(Transport::V2)
            .known_v2_hosts(KnownV2Hosts::Disabled)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let first = Client::connect(config(first_token, first_port))
            .await
            .expect("connect to the first server");
        for n in 0..PER_AGGREGATE {
            for id in IDS {
                let payload = format!(r#"{{"n": {n}}}"#);
                if n == 0 {
                    first.create("order", id, "created", &payload).await
                } else {
                    first.apply("order", id, "changed", &payload).await
                }
                .expect("write");
            }
        }
        // Read through the second server at once: its pages may hold events no round has
        // numbered yet.
        let second = Client::connect(config(second_token, second_port))
            .await
            .expect("connect to the second server");
        let mut paged = BTreeMap::new();
        for id in IDS {
            let page = second
                .events(&EventsQuery::new("order", id))
                .await
                .expect("events");
            paged.extend(positioned(&page.events().expect("events json"), |i| {
                page.position(i)
            }));
        }
        let outbox = second.read_outbox(None, Some(100)).await.expect("outbox");
        let from_outbox = positioned(&outbox.events().expect("events json"), |i| {
            outbox.position(i)
        });
        let mut subscription = second.subscribe(SubscribeOptions::new());
        let mut delivered = BTreeMap::new();
        for _ in 0..IDS.len() * PER_AGGREGATE {
            let event = subscription
                .next()
                .await
                .expect("the stream stays open")
                .expect("an event");
            delivered.insert((event.aggregate_id, event.version), event.position);
        }
        assert_eq!(paged, delivered, "listEvents");
        assert_eq!(from_outbox, delivered, "readOutbox");
    });
}

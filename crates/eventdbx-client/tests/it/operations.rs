//! Every operation round-trips over v2, v1 and plaintext with correct results.

use eventdbx_client::{
    Client, ErrorKind, EventsQuery, ListQuery, PublishTarget, SchemaPublish, SnapshotQuery,
    Transport, Write,
};
use serde_json::{json, Value};

use crate::harness::{Options, TestServer};

async fn exercise(client: &Client) {
    // create, and a second create of the same aggregate
    let created = client
        .write(
            Write::create("order", "o-1", "order.created", r#"{"status":"new","n":1}"#)
                .note("first"),
        )
        .await
        .expect("create")
        .value()
        .expect("json")
        .expect("verbose");
    assert_eq!(created["aggregate_type"], "order");
    assert_eq!(created["aggregate_id"], "o-1");
    assert_eq!(created["version"], 1);
    assert_eq!(created["state"], json!({"status": "new", "n": 1}));
    let err = client
        .create("order", "o-1", "order_created", "{}")
        .await
        .expect_err("exists");
    assert_eq!(err.kind(), ErrorKind::Server);
    assert_eq!(err.code(), "aggregate_exists", "{err}");
    assert!(!err.is_retriable());
    assert!(err.to_string().starts_with("aggregate_exists: "), "{err}");

    // apply with expected version, a conflict, and an idempotent repeat
    let event = client
        .write(
            Write::apply("order", "o-1", "order_paid", r#"{"status":"paid"}"#)
                .expected_version(1)
                .metadata_json(r#"{"@actor":"jane"}"#),
        )
        .await
        .expect("apply")
        .value()
        .expect("json")
        .expect("verbose");
    assert_eq!(event["version"], 2);
    assert_eq!(event["event_type"], "order_paid");
    assert_eq!(event["payload"], json!({"status": "paid"}));
    assert_eq!(event["extensions"], json!({"@actor": "jane"}));
    let err = client
        .write(Write::apply("order", "o-1", "order_paid", "{}").expected_version(1))
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), "version_conflict", "{err}");
    let keyed = || {
        Write::apply("order", "o-1", "order_shipped", r#"{"shipped":true}"#)
            .idempotency_key("ship-1")
    };
    let first = client.write(keyed()).await.expect("keyed write");
    let again = client.write(keyed()).await.expect("keyed repeat");
    assert_eq!(first, again, "the repeat returns the original event");
    let err = client
        .write(
            Write::apply("order", "o-1", "order_shipped", r#"{"shipped":false}"#)
                .idempotency_key("ship-1"),
        )
        .await
        .expect_err("key reused for another request");
    assert_eq!(err.code(), "idempotency_conflict", "{err}");

    // patch
    let patched = client
        .patch(
            "order",
            "o-1",
            "order_fixed",
            r#"[{"op":"replace","path":"/status","value":"fixed"},{"op":"add","path":"/total","value":10}]"#,
        )
        .await
        .expect("patch")
        .value()
        .expect("json")
        .expect("verbose");
    assert_eq!(patched["version"], 4);

    // get, select, verify
    let aggregate = client
        .get("order", "o-1")
        .await
        .expect("get")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(aggregate["version"], 4);
    assert_eq!(
        aggregate["state"],
        json!({"status": "fixed", "n": 1, "shipped": true, "total": 10})
    );
    assert!(!client.get("order", "o-missing").await.expect("get").found());
    let selection = client
        .select("order", "o-1", &["status", "total", "missing"])
        .await
        .expect("select")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(
        selection,
        json!({"status": "fixed", "total": 10, "missing": null})
    );
    assert!(!client
        .select("order", "o-missing", &["status"])
        .await
        .expect("select missing")
        .found());
    let root = client.verify("order", "o-1").await.expect("verify");
    assert_eq!(root.len(), 64);
    assert_eq!(aggregate["merkle_root"], Value::String(root));
    let err = client
        .verify("order", "o-missing")
        .await
        .expect_err("missing");
    assert_eq!(err.code(), "aggregate_not_found");

    // events: one page, then pages of two following cursors
    let page = client
        .events(&EventsQuery::new("order", "o-1"))
        .await
        .expect("events");
    let versions: Vec<_> = page
        .events()
        .expect("json")
        .iter()
        .map(|e| e["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let mut pages = client.event_pages(EventsQuery::new("order", "o-1").take(3));
    let mut seen = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next_page().await.expect("page") {
        page_count += 1;
        seen.extend(
            page.events()
                .expect("json")
                .into_iter()
                .map(|e| e["version"].clone()),
        );
    }
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(page_count, 2);
    let filtered = client
        .events(&EventsQuery::new("order", "o-1").filter(r#"event_type = "order_paid""#))
        .await
        .expect("filtered events")
        .events()
        .expect("json");
    assert_eq!(filtered.len(), 1, "{filtered:?}");

    // list and list pages
    for id in ["o-2", "o-3"] {
        client
            .create("order", id, "order_created", r#"{"status":"new"}"#)
            .await
            .expect("create more");
    }
    let page = client.list(&ListQuery::new()).await.expect("list");
    assert_eq!(page.aggregates().expect("json").len(), 3);
    assert!(!page.has_next_cursor());
    let mut pages = client.list_pages(ListQuery::new().take(2).sort("aggregate_id:desc"));
    let mut ids = Vec::new();
    while let Some(page) = pages.next_page().await.expect("page") {
        ids.extend(
            page.aggregates()
                .expect("json")
                .into_iter()
                .map(|a| a["aggregate_id"].as_str().expect("id").to_owned()),
        );
    }
    assert_eq!(ids, ["o-3", "o-2", "o-1"]);
    let filtered = client
        .list(&ListQuery::new().filter(r#"status = "fixed""#))
        .await
        .expect("filtered list")
        .aggregates()
        .expect("json");
    assert_eq!(filtered.len(), 1);
    let err = client
        .list(&ListQuery::new().filter("status = = ="))
        .await
        .expect_err("bad filter");
    assert_eq!(err.code(), "invalid_schema", "{err}");

    // archive and restore
    let archived = client
        .archive("order", "o-3", Some("done"))
        .await
        .expect("archive")
        .value()
        .expect("json")
        .expect("verbose");
    assert_eq!(archived["archived"], true);
    let err = client
        .apply("order", "o-3", "order_paid", "{}")
        .await
        .expect_err("archived");
    assert_eq!(err.code(), "aggregate_archived", "{err}");
    assert_eq!(
        client
            .list(&ListQuery::new())
            .await
            .expect("list")
            .aggregates()
            .expect("json")
            .len(),
        2
    );
    let only = client
        .list(&ListQuery::new().archived_only(true))
        .await
        .expect("archived only")
        .aggregates()
        .expect("json");
    assert_eq!(only.len(), 1);
    assert_eq!(
        client
            .list(&ListQuery::new().include_archived(true))
            .await
            .expect("all")
            .aggregates()
            .expect("json")
            .len(),
        3
    );
    let restored = client
        .restore("order", "o-3", None)
        .await
        .expect("restore")
        .value()
        .expect("json")
        .expect("verbose");
    assert!(restored.get("archived").is_none(), "{restored}");

    // snapshots
    let snapshot = client
        .create_snapshot("order", "o-1", Some("nightly"))
        .await
        .expect("snapshot")
        .value()
        .expect("json")
        .expect("snapshot json");
    assert_eq!(snapshot["version"], 4);
    assert_eq!(snapshot["comment"], "nightly");
    let snapshot_id: u64 = snapshot["snapshot_id"]
        .as_str()
        .expect("decimal id")
        .parse()
        .expect("u64");
    let listed = client
        .list_snapshots(&SnapshotQuery {
            aggregate_type: Some("order".into()),
            aggregate_id: Some("o-1".into()),
            version: None,
        })
        .await
        .expect("list snapshots")
        .items()
        .expect("json");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["snapshot_id"], snapshot["snapshot_id"]);
    let got = client
        .get_snapshot(snapshot_id)
        .await
        .expect("get snapshot")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(got, snapshot);
    assert!(!client
        .get_snapshot(1)
        .await
        .expect("missing snapshot")
        .found());

    // referrers and outbox
    assert!(client
        .list_referrers("order", "o-1")
        .await
        .expect("referrers")
        .items()
        .expect("json")
        .is_empty());
    let outbox = client.read_outbox(None, Some(5)).await.expect("outbox");
    outbox.events().expect("outbox json");

    // publish targets: an unknown plugin is refused before anything is written
    let err = client
        .write(
            Write::apply("order", "o-2", "order_paid", "{}")
                .publish_targets(vec![PublishTarget::new("nope").mode("async")]),
        )
        .await
        .expect_err("unknown plugin");
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert_eq!(
        client
            .get("order", "o-2")
            .await
            .expect("get")
            .value()
            .expect("json")
            .expect("found")["version"],
        1
    );
    // ... and so are an archive's and a restore's targets (ours); the aggregate stays active.
    let err = client
        .archive_with("order", "o-2", None, &[PublishTarget::new("nope")])
        .await
        .expect_err("unknown plugin on archive");
    assert_eq!(
        err.message(),
        "invalid schema: plugin 'nope' is not configured",
        "{err}"
    );
    let err = client
        .restore_with("order", "o-2", None, &[PublishTarget::new("nope")])
        .await
        .expect_err("unknown plugin on restore");
    assert_eq!(err.code(), "invalid_schema", "{err}");
    // With no plugin configured, an empty list (broadcast) archives and restores as usual.
    client
        .archive_with("order", "o-2", None, &[])
        .await
        .expect("archive with broadcast");
    client
        .restore_with("order", "o-2", None, &[])
        .await
        .expect("restore with broadcast");

    // schemas
    let schemas: Value =
        serde_json::from_str(&client.list_schemas().await.expect("schemas")).expect("schema json");
    assert!(schemas.is_object(), "{schemas}");
    let new_schemas = json!({"person": {
        "aggregate": "person", "snapshot_threshold": null, "locked": false, "field_locks": [],
        "hidden": false, "hidden_fields": [], "column_types": {"age": "integer"},
        "events": {"person_registered": {"fields": []}},
        "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}});
    assert_eq!(
        client
            .replace_schemas(&new_schemas.to_string())
            .await
            .expect("replace schemas"),
        1
    );
    let schemas: Value =
        serde_json::from_str(&client.list_schemas().await.expect("schemas")).expect("schema json");
    assert_eq!(schemas["person"]["column_types"]["age"], "integer");

    // tenants
    let assigned = client.tenant_assign("acme", "3").await.expect("assign");
    assert!(assigned.changed);
    assert_eq!(assigned.shard_id, "shard-0003");
    assert!(
        !client
            .tenant_assign("acme", "3")
            .await
            .expect("assign again")
            .changed
    );
    assert!(client.tenant_unassign("acme").await.expect("unassign"));
    let quota = client
        .tenant_quota_set("default", 100)
        .await
        .expect("quota");
    assert_eq!((quota.changed, quota.quota_mb), (true, Some(100)));
    assert!(client.tenant_quota_recalc("default").await.expect("recalc") > 0);
    assert!(client.tenant_quota_clear("default").await.expect("clear"));
    assert!(!client
        .tenant_quota_clear("default")
        .await
        .expect("clear again"));
    client.tenant_reload("default").await.expect("reload");
    let published = client
        .tenant_schema_publish(&SchemaPublish {
            reason: Some("test".into()),
            labels: vec!["v1".into()],
            activate: true,
            ..SchemaPublish::new("default")
        })
        .await
        .expect("publish");
    assert!(!published.version_id.is_empty());
    assert!(published.activated && !published.skipped);
    let again = client
        .tenant_schema_publish(&SchemaPublish::new("default"))
        .await
        .expect("publish again");
    assert!(again.skipped, "{again:?}");

    // argument errors never reach the server
    let err = client
        .select("order", "o-1", &[])
        .await
        .expect_err("no fields");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = client.get("", "o-1").await.expect_err("no type");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = client
        .write(Write::create("order", "o-9", "e", "{}").expected_version(0))
        .await
        .expect_err("expected version on create");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_v2() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config()).await.expect("connect");
    exercise(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_v1() {
    let server = TestServer::start().await;
    let client = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect("connect");
    exercise(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_plaintext() {
    let server = TestServer::start_with(Options {
        allow_plaintext: true,
        ..Options::default()
    })
    .await;
    let client = Client::connect(server.config().transport(Transport::Plaintext))
        .await
        .expect("connect");
    exercise(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_verbose_gives_acknowledgements() {
    // A non-verbose server sends empty JSON: not an error.
    let server = TestServer::start_with(Options {
        verbose: false,
        ..Options::default()
    })
    .await;
    let client = Client::connect(server.config()).await.expect("connect");
    let written = client
        .create("order", "o-1", "order_created", "{}")
        .await
        .expect("create");
    assert!(written.is_ack());
    assert_eq!(written.value().expect("no json"), None);

    // A non-verbose client drops the JSON a verbose server sends.
    let server = TestServer::start().await;
    let client = Client::connect(server.config().verbose(false))
        .await
        .expect("connect");
    let written = client
        .apply("order", "o-1", "order_created", "{}")
        .await
        .expect("apply");
    assert!(written.is_ack());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_is_checked_before_sending() {
    let server = TestServer::start().await;
    let v1 = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect("connect v1");
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(70_000));
    let err = v1
        .create("order", "big", "order_created", &big)
        .await
        .expect_err("too large for v1");
    assert_eq!(err.kind(), ErrorKind::RequestTooLarge, "{err}");
    assert!(err.message().starts_with("request too large ("), "{err}");
    assert!(err.message().ends_with(" > 65519 bytes)"), "{err}");
    // Nothing was sent: the session is still in step.
    assert!(!v1.get("order", "big").await.expect("get").found());

    let v2 = Client::connect(server.config()).await.expect("connect v2");
    let blob = "y".repeat(200 * 1024);
    v2.create(
        "order",
        "big",
        "order_created",
        &json!({ "blob": blob }).to_string(),
    )
    .await
    .expect("200 KB over v2");
    let got = v2
        .get("order", "big")
        .await
        .expect("get")
        .value()
        .expect("json")
        .expect("found");
    assert_eq!(
        got["state"]["blob"].as_str().map(str::len),
        Some(200 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seventeen_mib_is_too_large_for_v2_and_big_responses_fail_cleanly_on_v1() {
    let server = TestServer::start().await;
    let v2 = Client::connect(server.config()).await.expect("connect v2");
    let huge = format!(r#"{{"blob":"{}"}}"#, "z".repeat(17 * 1024 * 1024));
    let err = v2
        .create("order", "huge", "order_created", &huge)
        .await
        .expect_err("over the 16 MiB maximum");
    assert_eq!(err.kind(), ErrorKind::RequestTooLarge, "{err}");
    assert!(!v2.get("order", "huge").await.expect("still usable").found());

    let blob = "b".repeat(100 * 1024);
    v2.create(
        "order",
        "wide",
        "order_created",
        &json!({ "blob": blob }).to_string(),
    )
    .await
    .expect("100 KB state over v2");
    let v1 = Client::connect(server.config().transport(Transport::V1))
        .await
        .expect("connect v1");
    let err = v1.get("order", "wide").await.expect_err("too large for v1");
    assert_eq!(err.code(), "response_too_large", "{err}");
    assert!(!v1.get("order", "huge").await.expect("same session").found());
}

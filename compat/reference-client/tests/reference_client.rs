//! EventDBX's own Rust client (`eventdbx-client` 1.2.1 from crates.io) drives our server through
//! every operation it has, over protocol v1 (Noise, and plaintext when the server allows it).

use std::time::Duration;

use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use reference::{
    ClientConfig, CreateAggregateRequest, CreateSnapshotRequest, EventDbxClient,
    GetSnapshotRequest, ListAggregatesOptions, ListEventsOptions, ListSchemasOptions,
    ListSnapshotsOptions, PatchEventRequest, ReplaceSchemasRequest, SelectAggregateRequest,
    SetAggregateArchiveRequest, TenantQuotaRecalcRequest, TenantReloadRequest,
};
use serde_json::json;

struct Running {
    port: u16,
    token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(allow_plaintext: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::defaults(dir.path().to_path_buf());
    config.allow_plaintext = allow_plaintext;
    let server = Server::open(config).expect("server opens");
    let (token, _) = server
        .auth()
        .issue(TokenRequest {
            group: "ops".into(),
            user: "jane".into(),
            subject: None,
            actions: vec!["*.*".into()],
            resources: vec![],
            tenants: vec![],
            ttl_secs: Some(3600),
            issued_by: None,
            write_limit: None,
            keep_alive: false,
            not_before: None,
        })
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = server
            .run(listener, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        port,
        token,
        _stop: stop,
        _dir: dir,
    }
}

async fn connect(running: &Running, noise: bool) -> EventDbxClient {
    let config = ClientConfig::new("127.0.0.1", running.token.clone())
        .with_port(running.port)
        .with_tenant("default")
        .with_noise(noise)
        .with_request_timeout(Some(Duration::from_secs(10)));
    EventDbxClient::connect(config)
        .await
        .expect("the reference client connects")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_over_noise() {
    let running = start(false).await;
    let client = connect(&running, true).await;

    let schemas = json!({"order": {"aggregate": "order", "snapshot_threshold": null, "locked": false,
        "field_locks": [], "hidden": false, "hidden_fields": [], "column_types": {},
        "events": {"order_created": {"fields": []}, "order_status_updated": {"fields": []}},
        "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}});
    let replaced = client
        .replace_schemas(ReplaceSchemasRequest::new(schemas))
        .await
        .expect("replace schemas");
    assert_eq!(replaced.replaced, 1);
    let listed = client
        .list_schemas(ListSchemasOptions::default())
        .await
        .expect("list schemas");
    assert!(listed.schemas.get("order").is_some(), "{}", listed.schemas);

    let created = client
        .create_aggregate(CreateAggregateRequest::new(
            "order",
            "o-1",
            "order_created",
            json!({"status": "created", "n": 1, "address": {"street": "1 Main", "zip": "9"}}),
        ))
        .await
        .expect("create");
    assert_eq!(created.aggregate["version"], 1);
    let appended = client
        .append_event(reference::AppendEventRequest::new(
            "order",
            "o-1",
            "order_status_updated",
            json!({"status": "paid"}),
        ))
        .await
        .expect("append");
    assert_eq!(appended.event["version"], 2);
    assert_eq!(
        appended.event["metadata"]["issued_by"],
        json!({"group": "ops", "user": "jane"})
    );
    let patched = client
        .patch_event(PatchEventRequest::new(
            "order",
            "o-1",
            "order_status_updated",
            json!([{"op": "remove", "path": "/address/zip"}]),
        ))
        .await
        .expect("patch");
    assert_eq!(
        patched.event["payload"],
        json!({"address": {"street": "1 Main"}})
    );

    let got = client.get_aggregate("order", "o-1").await.expect("get");
    assert!(got.found);
    let aggregate = got.aggregate.expect("aggregate");
    assert_eq!(aggregate["state"]["status"], "paid");
    assert_eq!(aggregate["state"]["n"], 1, "state keeps JSON types");
    let selected = client
        .select_aggregate(SelectAggregateRequest::new(
            "order",
            "o-1",
            vec!["status".into(), "address.street".into()],
        ))
        .await
        .expect("select");
    assert_eq!(
        selected.selection,
        Some(json!({"status": "paid", "address.street": "1 Main"}))
    );
    assert!(
        !client
            .get_aggregate("order", "missing")
            .await
            .expect("get missing")
            .found
    );

    let page = client
        .list_aggregates(ListAggregatesOptions {
            filter: Some("aggregate_id = \"o-1\"".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.aggregates.as_array().map(Vec::len), Some(1));
    let events = client
        .list_events("order", "o-1", ListEventsOptions::default())
        .await
        .expect("events");
    assert_eq!(events.events.as_array().map(Vec::len), Some(3));
    let verified = client
        .verify_aggregate("order", "o-1")
        .await
        .expect("verify");
    assert_eq!(
        verified.merkle_root,
        patched.event["merkle_root"].as_str().expect("root")
    );

    let snapshot = client
        .create_snapshot(CreateSnapshotRequest {
            comment: Some("before archive".into()),
            ..CreateSnapshotRequest::new("order", "o-1")
        })
        .await
        .expect("snapshot");
    let snapshot_id: u64 = snapshot.snapshot["snapshot_id"]
        .as_str()
        .expect("decimal id")
        .parse()
        .expect("u64");
    let fetched = client
        .get_snapshot(GetSnapshotRequest::new(snapshot_id))
        .await
        .expect("get snapshot");
    assert!(fetched.found);
    let snapshots = client
        .list_snapshots(ListSnapshotsOptions {
            aggregate_type: Some("order".into()),
            aggregate_id: Some("o-1".into()),
            ..Default::default()
        })
        .await
        .expect("list snapshots");
    assert_eq!(snapshots.snapshots.as_array().map(Vec::len), Some(1));

    let archived = client
        .set_aggregate_archive(SetAggregateArchiveRequest {
            note: Some("done".into()),
            ..SetAggregateArchiveRequest::new("order", "o-1", true)
        })
        .await
        .expect("archive");
    assert_eq!(archived.aggregate["archived"], true);
    let err = client
        .append_event(reference::AppendEventRequest::new(
            "order",
            "o-1",
            "order_status_updated",
            json!({}),
        ))
        .await
        .expect_err("archived aggregates refuse events");
    assert!(err.to_string().contains("aggregate is archived"), "{err}");
    client
        .set_aggregate_archive(SetAggregateArchiveRequest::new("order", "o-1", false))
        .await
        .expect("restore");

    let reloaded = client
        .tenant_reload(TenantReloadRequest::new("default"))
        .await
        .expect("reload");
    assert!(reloaded.reloaded);
    let usage = client
        .tenant_quota_recalc(TenantQuotaRecalcRequest::new("default"))
        .await
        .expect("recalc");
    assert!(usage.storage_bytes > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_when_the_server_allows_it() {
    let running = start(true).await;
    let client = connect(&running, false).await;
    client
        .create_aggregate(CreateAggregateRequest::new(
            "order",
            "p-1",
            "order_created",
            json!({"plain": true}),
        ))
        .await
        .expect("create over plaintext");
    assert!(
        client
            .get_aggregate("order", "p-1")
            .await
            .expect("get")
            .found
    );
}

//! Tenants: shard placement, quotas, schema sets, publishing and reloading
//! (`docs/server.md`, "Tenants", "Quotas" and "Replacing the set").

use std::fs;
use std::path::{Path, PathBuf};

use eventdbx_core::CoreError;
use eventdbx_server::tenants::{AuditAction, PublishRequest, Tenants};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A schema map (`docs/protocol.md`, "JSON shapes").
const PERSON_SCHEMAS: &str = r#"{"person": {"aggregate": "person", "snapshot_threshold": 100, "locked": false,
  "field_locks": [], "hidden": false, "hidden_fields": ["ssn"],
  "column_types": {"email": {"type": "text", "required": true, "format": "email"},
                   "age": "integer"},
  "events": {"person_registered": {"fields": ["email", "first_name"]},
             "person_email_updated": {"fields": []}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#;

const ORDER_SCHEMAS: &str = r#"{"order": {"aggregate": "order", "snapshot_threshold": null,
  "locked": false, "field_locks": [], "events": {"order_placed": {"fields": []}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: TempDir::new().expect("temp dir"),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn meta(&self) -> PathBuf {
        self.dir.path().join("meta")
    }

    fn open(&self) -> Tenants {
        Tenants::open(&self.data(), &self.meta(), 16).expect("open tenants")
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.data().join("tenants").join(tenant)
    }
}

fn config_message(err: CoreError) -> String {
    assert_eq!(err.code(), "config", "{err}");
    err.to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).expect("read file")).expect("json file")
}

#[test]
fn default_shards_match_the_reference_examples() {
    assert_eq!(Tenants::default_shard("default", 16), "shard-0001");
    assert_eq!(Tenants::default_shard("acme", 16), "shard-0009");
    assert_eq!(Tenants::default_shard("tenant-a", 16), "shard-0003");
    assert_eq!(Tenants::default_shard("foo", 16), "shard-0007");
    // The hash is over the lower-cased id.
    assert_eq!(Tenants::default_shard("ACME", 16), "shard-0009");
    let fx = Fixture::new();
    assert_eq!(fx.open().shard_of("acme"), "shard-0009");
}

#[test]
fn assign_validates_and_normalises_shard_ids() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert_eq!(
        tenants.assign("acme", "3", false).expect("index"),
        (true, "shard-0003".to_owned())
    );
    assert_eq!(tenants.shard_of("acme"), "shard-0003");
    assert_eq!(
        tenants.assign("acme", "shard-0003", false).expect("same"),
        (false, "shard-0003".to_owned())
    );
    assert_eq!(
        tenants
            .assign("acme", "shard-15", false)
            .expect("short form"),
        (true, "shard-0015".to_owned())
    );
    assert_eq!(
        config_message(
            tenants
                .assign("acme", "shard-0099", false)
                .expect_err("too big")
        ),
        "configuration error: shard 'shard-0099' exceeds configured shard-count (16)"
    );
    assert_eq!(
        config_message(tenants.assign("acme", "16", false).expect_err("too big")),
        "configuration error: shard '16' exceeds configured shard-count (16)"
    );
    for bad in ["bogus", "", "shard-", "shard-x1", "-1", "shard--1"] {
        assert_eq!(
            config_message(tenants.assign("acme", bad, false).expect_err(bad)),
            format!("configuration error: invalid shard id '{bad}'")
        );
    }
    // Failed assignments left the last good one in place.
    assert_eq!(tenants.shard_of("acme"), "shard-0015");
    assert_eq!(
        read_json(&fx.meta().join("shards.json")),
        json!({"acme": "shard-0015"})
    );
}

#[test]
fn a_tenant_holding_data_cannot_move() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert_eq!(
        config_message(tenants.assign("acme", "2", true).expect_err("moves")),
        "configuration error: tenant 'acme' already holds data in shard 'shard-0009'"
    );
    assert_eq!(tenants.shard_of("acme"), "shard-0009");
    // Pinning it where it already is works.
    assert_eq!(
        tenants.assign("acme", "9", true).expect("pin"),
        (true, "shard-0009".to_owned())
    );
    tenants.assign("foo", "4", false).expect("assign");
    assert_eq!(
        config_message(tenants.assign("foo", "7", true).expect_err("moves")),
        "configuration error: tenant 'foo' already holds data in shard 'shard-0004'"
    );
    assert_eq!(tenants.shard_of("foo"), "shard-0004");
}

#[test]
fn unassign_returns_to_the_default_shard() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert!(!tenants.unassign("acme").expect("nothing assigned"));
    tenants.assign("acme", "2", false).expect("assign");
    assert!(tenants.unassign("acme").expect("unassign"));
    assert_eq!(tenants.shard_of("acme"), "shard-0009");
    assert!(!tenants.unassign("acme").expect("again"));
    assert_eq!(read_json(&fx.meta().join("shards.json")), json!({}));
}

#[test]
fn placement_survives_reopen() {
    let fx = Fixture::new();
    fx.open()
        .assign("tenant-a", "shard-0011", false)
        .expect("assign");
    let reopened = fx.open();
    assert_eq!(reopened.shard_of("tenant-a"), "shard-0011");
    assert_eq!(reopened.known_tenants(), ["tenant-a"]);
}

#[test]
fn quotas_set_clear_and_persist() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert_eq!(tenants.quota_mb("acme"), None);
    assert_eq!(tenants.quota_bytes("acme"), None);
    assert!(!tenants.clear_quota("acme").expect("none to clear"));
    assert!(tenants.set_quota("acme", 5).expect("set"));
    assert!(!tenants.set_quota("acme", 5).expect("same"));
    assert_eq!(tenants.quota_mb("acme"), Some(5));
    assert_eq!(tenants.quota_bytes("acme"), Some(5 * 1_048_576));
    assert!(tenants.set_quota("foo", 0).expect("zero quota"));
    assert_eq!(tenants.quota_bytes("foo"), Some(0));

    let reopened = fx.open();
    assert_eq!(reopened.quota_mb("acme"), Some(5));
    assert_eq!(reopened.quota_mb("foo"), Some(0));
    assert_eq!(reopened.known_tenants(), ["acme", "foo"]);
    assert!(reopened.set_quota("acme", 7).expect("change"));
    assert!(reopened.clear_quota("foo").expect("clear"));
    assert!(!reopened.clear_quota("foo").expect("cleared"));

    let again = fx.open();
    assert_eq!(again.quota_mb("acme"), Some(7));
    assert_eq!(again.quota_mb("foo"), None);
    assert_eq!(
        read_json(&fx.meta().join("quotas.json")),
        json!({"acme": 7})
    );
}

#[test]
fn replace_schemas_installs_a_validated_set() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert!(tenants.schemas("acme").is_empty());
    assert_eq!(
        tenants
            .replace_schemas("acme", PERSON_SCHEMAS)
            .expect("replace"),
        1
    );
    let schemas = tenants.schemas("acme");
    let person = schemas.get("person").expect("person schema");
    assert_eq!(person.hidden_fields, ["ssn"]);
    assert_eq!(person.created_at, "2025-11-27T10:00:00Z");
    // Other tenants are untouched.
    assert!(tenants.schemas("foo").is_empty());

    let stored = read_json(&fx.tenant_dir("acme").join("schemas.json"));
    assert_eq!(
        stored["person"]["column_types"]["email"],
        json!({"type": "text", "required": true, "format": "email"})
    );
    let reopened = fx.open();
    assert_eq!(*reopened.schemas("acme"), *schemas);
    assert_eq!(reopened.known_tenants(), ["acme"]);
}

#[test]
fn rejected_schema_sets_change_nothing() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");
    let before = fs::read(fx.tenant_dir("acme").join("schemas.json")).expect("file");

    let err = tenants
        .replace_schemas("acme", "{not json")
        .expect_err("bad json");
    assert_eq!(err.code(), "serialization");
    assert!(
        err.to_string().starts_with("serialization error: "),
        "{err}"
    );

    let invalid = PERSON_SCHEMAS.replace(r#""age": "integer""#, r#""age": "whole_number""#);
    let err = tenants
        .replace_schemas("acme", &invalid)
        .expect_err("bad type");
    assert_eq!(err.code(), "invalid_schema");
    assert!(err.to_string().contains("whole_number"), "{err}");

    let mismatched = ORDER_SCHEMAS.replacen(r#"{"order""#, r#"{"orders""#, 1);
    let err = tenants
        .replace_schemas("acme", &mismatched)
        .expect_err("key mismatch");
    assert_eq!(err.code(), "invalid_schema");

    assert!(tenants.schemas("acme").get("person").is_some());
    assert_eq!(
        fs::read(fx.tenant_dir("acme").join("schemas.json")).expect("file"),
        before
    );
    // A later valid set replaces the whole map.
    assert_eq!(
        tenants
            .replace_schemas("acme", ORDER_SCHEMAS)
            .expect("replace"),
        1
    );
    let schemas = tenants.schemas("acme");
    assert!(schemas.get("person").is_none());
    assert!(schemas.get("order").is_some());
}

#[test]
fn publish_versions_skips_and_forces() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");

    let first = tenants
        .publish(
            "acme",
            PublishRequest {
                reason: Some("first cut".into()),
                actor: Some("ops".into()),
                labels: vec![" prod ".into(), "  ".into(), "v1".into()],
                ..PublishRequest::default()
            },
        )
        .expect("publish");
    assert!(!first.skipped);
    assert!(!first.activated);
    assert!(first.version_id.starts_with('v'), "{}", first.version_id);
    assert!(first.version_id.ends_with('Z'), "{}", first.version_id);
    assert_eq!(first.version_id.len(), "v20260324T101530123Z".len());

    let manifest = tenants.manifest("acme");
    assert_eq!(manifest.active_version, None);
    assert_eq!(manifest.versions.len(), 1);
    let version = &manifest.versions[0];
    assert_eq!(version.id, first.version_id);
    assert_eq!(
        version.file,
        format!("schemas/versions/{}.json", first.version_id)
    );
    assert_eq!(version.author.as_deref(), Some("ops"));
    assert_eq!(version.reason.as_deref(), Some("first cut"));
    assert_eq!(version.parent, None);
    assert_eq!(version.labels, ["prod", "v1"]);
    assert!(version.checksum.starts_with("sha256:"));
    assert_eq!(version.checksum.len(), "sha256:".len() + 64);
    assert_eq!(manifest.audit_log.len(), 1);
    assert_eq!(manifest.audit_log[0].action, AuditAction::Publish);
    assert_eq!(manifest.audit_log[0].version, first.version_id);

    // The version file holds the schema set.
    let content = read_json(&fx.tenant_dir("acme").join(&version.file));
    assert_eq!(
        content,
        read_json(&fx.tenant_dir("acme").join("schemas.json"))
    );

    let again = tenants
        .publish("acme", PublishRequest::default())
        .expect("publish again");
    assert!(again.skipped);
    assert!(!again.activated);
    assert_eq!(again.version_id, first.version_id);
    assert_eq!(tenants.manifest("acme").versions.len(), 1);

    let forced = tenants
        .publish(
            "acme",
            PublishRequest {
                force: true,
                ..PublishRequest::default()
            },
        )
        .expect("forced publish");
    assert!(!forced.skipped);
    assert_ne!(forced.version_id, first.version_id);
    let manifest = tenants.manifest("acme");
    assert_eq!(manifest.versions.len(), 2);
    assert_eq!(
        manifest.versions[1].parent.as_deref(),
        Some(&*first.version_id)
    );
    assert_eq!(manifest.versions[1].checksum, manifest.versions[0].checksum);

    // A changed set is published without `force`.
    tenants
        .replace_schemas("acme", ORDER_SCHEMAS)
        .expect("replace");
    let changed = tenants
        .publish("acme", PublishRequest::default())
        .expect("publish change");
    assert!(!changed.skipped);
    let manifest = tenants.manifest("acme");
    assert_eq!(manifest.versions.len(), 3);
    assert_ne!(manifest.versions[2].checksum, manifest.versions[1].checksum);
}

#[test]
fn publish_activates_and_audits() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");
    let published = tenants
        .publish(
            "acme",
            PublishRequest {
                actor: Some("ops".into()),
                reason: Some("go live".into()),
                activate: true,
                reload: true,
                ..PublishRequest::default()
            },
        )
        .expect("publish");
    assert!(published.activated);
    assert!(!published.skipped);
    let manifest = tenants.manifest("acme");
    assert_eq!(
        manifest.active_version.as_deref(),
        Some(&*published.version_id)
    );
    let actions: Vec<_> = manifest.audit_log.iter().map(|e| e.action).collect();
    assert_eq!(actions, [AuditAction::Publish, AuditAction::Activate]);
    let activation = &manifest.audit_log[1];
    assert_eq!(activation.version, published.version_id);
    assert_eq!(activation.actor.as_deref(), Some("ops"));
    assert_eq!(activation.reason.as_deref(), Some("go live"));
    assert_eq!(activation.details, None);
    // The schema set is unchanged by activating its own version.
    assert!(tenants.schemas("acme").get("person").is_some());

    // Already active: skipped, nothing activated, nothing logged.
    let again = tenants
        .publish(
            "acme",
            PublishRequest {
                activate: true,
                ..PublishRequest::default()
            },
        )
        .expect("again");
    assert!(again.skipped);
    assert!(!again.activated);
    assert_eq!(tenants.manifest("acme").audit_log.len(), 2);
}

#[test]
fn skipped_publish_activates_the_latest_version() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");
    let first = tenants
        .publish("acme", PublishRequest::default())
        .expect("publish");
    let activated = tenants
        .publish(
            "acme",
            PublishRequest {
                activate: true,
                ..PublishRequest::default()
            },
        )
        .expect("activate");
    assert_eq!(activated.version_id, first.version_id);
    assert!(activated.skipped);
    assert!(activated.activated);
    let manifest = tenants.manifest("acme");
    assert_eq!(manifest.versions.len(), 1);
    assert_eq!(manifest.active_version.as_deref(), Some(&*first.version_id));
    assert_eq!(
        manifest.audit_log.last().map(|e| e.action),
        Some(AuditAction::Activate)
    );
}

#[test]
fn publishing_without_a_schema_file_versions_an_empty_set() {
    let fx = Fixture::new();
    let tenants = fx.open();
    let outcome = tenants
        .publish(
            "fresh",
            PublishRequest {
                activate: true,
                ..PublishRequest::default()
            },
        )
        .expect("publish");
    assert!(outcome.activated);
    let version_file = fx
        .tenant_dir("fresh")
        .join(format!("schemas/versions/{}.json", outcome.version_id));
    assert_eq!(read_json(&version_file), json!({}));
    assert_eq!(
        read_json(&fx.tenant_dir("fresh").join("schemas.json")),
        json!({})
    );
    assert!(tenants.schemas("fresh").is_empty());
    assert_eq!(tenants.known_tenants(), ["fresh"]);
}

#[test]
fn manifest_has_the_reference_shape() {
    let fx = Fixture::new();
    let tenants = fx.open();
    assert_eq!(
        serde_json::to_value(tenants.manifest("acme")).expect("serialise"),
        json!({"manifest_version": 1, "active_version": null, "versions": [], "audit_log": []})
    );
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");
    let outcome = tenants
        .publish(
            "acme",
            PublishRequest {
                activate: true,
                ..PublishRequest::default()
            },
        )
        .expect("publish");
    let id = outcome.version_id;

    let on_disk = read_json(&fx.tenant_dir("acme").join("schemas/manifest.json"));
    let in_memory = serde_json::to_value(tenants.manifest("acme")).expect("serialise");
    assert_eq!(on_disk, in_memory);
    let keys = |value: &Value| -> Vec<String> {
        value.as_object().expect("object").keys().cloned().collect()
    };
    assert_eq!(
        keys(&on_disk),
        [
            "manifest_version",
            "active_version",
            "versions",
            "audit_log"
        ]
    );
    assert_eq!(on_disk["manifest_version"], 1);
    assert_eq!(on_disk["active_version"], json!(id));
    // Absent optional fields are omitted, as in the reference.
    assert_eq!(
        keys(&on_disk["versions"][0]),
        ["id", "file", "created_at", "checksum"]
    );
    assert_eq!(
        on_disk["versions"][0]["file"],
        json!(format!("schemas/versions/{id}.json"))
    );
    assert_eq!(
        keys(&on_disk["audit_log"][0]),
        ["timestamp", "action", "version"]
    );
    assert_eq!(on_disk["audit_log"][0]["action"], "publish");
    assert_eq!(on_disk["audit_log"][1]["action"], "activate");
    let created_at = on_disk["versions"][0]["created_at"]
        .as_str()
        .expect("created_at");
    assert!(
        eventdbx_core::time::parse_unix_millis(created_at).is_some(),
        "{created_at}"
    );

    let reopened = fx.open();
    assert_eq!(reopened.manifest("acme"), tenants.manifest("acme"));
}

#[test]
fn reload_picks_up_changes_on_disk() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");

    // Another server changes the files.
    let other = fx.open();
    other
        .replace_schemas("acme", ORDER_SCHEMAS)
        .expect("replace");
    other.set_quota("acme", 9).expect("quota");
    other.assign("acme", "5", false).expect("assign");
    other.set_quota("foo", 1).expect("other tenant's quota");
    other
        .publish("acme", PublishRequest::default())
        .expect("publish");

    assert!(tenants.schemas("acme").get("person").is_some());
    assert_eq!(tenants.quota_mb("acme"), None);
    assert_eq!(tenants.shard_of("acme"), "shard-0009");
    assert!(tenants.manifest("acme").versions.is_empty());

    assert!(tenants.reload("acme").expect("reload"));
    let schemas = tenants.schemas("acme");
    assert!(schemas.get("person").is_none());
    assert!(schemas.get("order").is_some());
    assert_eq!(tenants.quota_mb("acme"), Some(9));
    assert_eq!(tenants.shard_of("acme"), "shard-0005");
    assert_eq!(tenants.manifest("acme").versions.len(), 1);
    // Only the named tenant is re-read.
    assert_eq!(tenants.quota_mb("foo"), None);

    // A removed schema file empties the set.
    fs::remove_file(fx.tenant_dir("acme").join("schemas.json")).expect("remove");
    assert!(tenants.reload("acme").expect("reload"));
    assert!(tenants.schemas("acme").is_empty());
}

#[test]
fn reload_of_a_corrupt_file_keeps_the_cached_set() {
    let fx = Fixture::new();
    let tenants = fx.open();
    tenants
        .replace_schemas("acme", PERSON_SCHEMAS)
        .expect("replace");
    fs::write(fx.tenant_dir("acme").join("schemas.json"), "{broken").expect("corrupt");
    let err = tenants.reload("acme").expect_err("corrupt file");
    assert_eq!(err.code(), "config");
    assert!(tenants.schemas("acme").get("person").is_some());
    // Opening refuses a corrupt file rather than serving without schemas.
    assert!(Tenants::open(&fx.data(), &fx.meta(), 16).is_err());
}

#[test]
fn tenant_ids_that_are_not_normalised_are_rejected() {
    let fx = Fixture::new();
    let tenants = fx.open();
    for bad in [
        "../escape",
        "..",
        "a/b",
        "a\\b",
        "",
        "Acme",
        " acme",
        "-a",
        "a.b",
    ] {
        assert_eq!(
            tenants
                .replace_schemas(bad, PERSON_SCHEMAS)
                .expect_err(bad)
                .code(),
            "config",
            "{bad}"
        );
        assert_eq!(
            tenants.assign(bad, "1", false).expect_err(bad).code(),
            "config"
        );
        assert_eq!(tenants.unassign(bad).expect_err(bad).code(), "config");
        assert_eq!(tenants.set_quota(bad, 1).expect_err(bad).code(), "config");
        assert_eq!(tenants.clear_quota(bad).expect_err(bad).code(), "config");
        assert_eq!(
            tenants
                .publish(bad, PublishRequest::default())
                .expect_err(bad)
                .code(),
            "config"
        );
        assert_eq!(tenants.reload(bad).expect_err(bad).code(), "config");
    }
    assert_eq!(
        config_message(tenants.set_quota("../escape", 1).expect_err("traversal")),
        "configuration error: tenant id must begin with an ASCII letter or digit"
    );
    assert!(!fx.dir.path().join("escape").exists());
    assert!(!fx.data().exists());
    assert!(tenants.known_tenants().is_empty());
}

#[test]
fn concurrent_writers_are_serialised() {
    let fx = Fixture::new();
    let tenants = std::sync::Arc::new(fx.open());
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let tenants = std::sync::Arc::clone(&tenants);
            std::thread::spawn(move || {
                let tenant = format!("t{i}");
                tenants.set_quota(&tenant, i).expect("quota");
                tenants
                    .assign(&tenant, &i.to_string(), false)
                    .expect("assign");
                tenants
                    .publish(
                        "shared",
                        PublishRequest {
                            force: true,
                            ..PublishRequest::default()
                        },
                    )
                    .expect("publish")
                    .version_id
            })
        })
        .collect();
    let mut ids: Vec<String> = handles
        .into_iter()
        .map(|handle| handle.join().expect("thread"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "version ids are unique");
    let reopened = fx.open();
    for i in 0..8u64 {
        assert_eq!(reopened.quota_mb(&format!("t{i}")), Some(i));
        assert_eq!(reopened.shard_of(&format!("t{i}")), format!("shard-{i:04}"));
    }
    assert_eq!(reopened.manifest("shared").versions.len(), 8);
}

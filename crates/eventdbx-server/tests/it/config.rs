//! `eventdbx_server::config`: defaults, the TOML file, discovery, secret files, `dbx init`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use eventdbx_core::schema::RestrictMode;
use eventdbx_server::config::{self, Config, ConfigError, InitOutcome};
use eventdbx_server::fs::{self as secrets, SecretError};
use eventdbx_store::Durability;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn mode_of(path: &Path) -> std::io::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/srv/app/.dbx"))
}

#[test]
fn defaults_bind_loopback_on_both_ports() {
    let config = Config::defaults(PathBuf::from("/d"));
    assert_eq!(config.socket.bind_addr, "127.0.0.1:6363");
    assert_eq!(config.socket.busy_poll_us, 50);
    assert_eq!(config.http_bind_addr(), "127.0.0.1:7070");
    assert_eq!(config.port, 7070);
    assert_eq!(config.domain, "default");
    assert_eq!(config.restrict, RestrictMode::Default);
    assert_eq!((config.list_page_size, config.page_limit), (10, 1000));
    assert!(config.verbose_responses);
    assert_eq!(
        (config.reference_default_depth, config.reference_max_depth),
        (2, 5)
    );
    assert_eq!(config.snowflake_worker_id, 0);
    assert_eq!(config.plugin_max_attempts, 10);
    assert_eq!(config.cache_threshold, 10_000);
    assert_eq!(config.snapshot_threshold, None);
    assert!(!config.allow_plaintext);
    assert!(config.accept_v1);
    assert_eq!(config.max_message_bytes, 16 * 1024 * 1024);
    assert_eq!(config.idempotency_ttl_secs, 86_400);
    assert_eq!(config.revocation_refresh_secs, 5);
    assert!(!config.tenants.multi_tenant);
    assert_eq!(config.tenants.shard_count, 16);
    assert_eq!(config.auth.issuer, "eventdbx://self");
    assert_eq!(config.auth.audience, "eventdbx-clients");
    assert_eq!(config.auth.default_ttl_secs, 3600);
    assert_eq!(config.auth.clock_skew_secs, 30);
    assert_eq!(config.storage.backend, "embedded");
    assert_eq!(config.storage.durability, Durability::Fsync);
    assert_eq!(config.plugin_queue.prune.done_ttl_secs, 86_400);
    assert_eq!(config.plugin_queue.prune.interval_secs, 300);
    assert_eq!(config.plugin_queue.prune.max_done_jobs, None);

    assert_eq!(
        config.signing_key_path(),
        Path::new("/d/secrets/token_signing.key")
    );
    assert_eq!(
        config.server_key_path(),
        Path::new("/d/secrets/server_static.key")
    );
    assert_eq!(config.auth_state_dir(), Path::new("/d/auth"));
    assert_eq!(config.tenant_meta_dir(), Path::new("/d/tenant_meta"));
    assert_eq!(config.store_path(), Path::new("/d/store/events.redb"));
}

#[test]
fn an_empty_file_is_the_defaults_in_its_directory() -> TestResult {
    let config = parse("")?;
    assert_eq!(config, Config::defaults(PathBuf::from("/srv/app/.dbx")));
    // Changing the port moves the default HTTP address with it.
    assert_eq!(parse("port = 9000")?.http_bind_addr(), "127.0.0.1:9000");
    Ok(())
}

const FULL: &str = r#"
port = 8080
data_dir = "data"
domain = "acme"
restrict = "strict"
list_page_size = 25
page_limit = 500
verbose_responses = false
reference_default_depth = 1
reference_max_depth = 3
snowflake_worker_id = 1023
plugin_max_attempts = 7
cache_threshold = 500
snapshot_threshold = 100
allow_plaintext = true
accept_v1 = false
max_message_bytes = 1048576
idempotency_ttl_secs = 600
revocation_refresh_secs = 2
server_key_file = "keys/server.key"
created_at = "2026-01-02T03:04:05Z"
updated_at = "2026-02-03T04:05:06Z"

[socket]
bind_addr = "0.0.0.0:7000"
busy_poll_us = 20

[http]
bind_addr = "0.0.0.0:8081"

[tenants]
multi_tenant = true
shard_count = 4
shard_map_path = "/var/lib/dbx/tenants"

[auth]
issuer = "eventdbx://prod"
audience = "prod-clients"
default_ttl_secs = 7200
clock_skew_secs = 10
key_id = "key-20260102030405"
signing_key_file = "keys/signing.key"

[storage]
backend = "postgres"
url = "postgres://dbx@db/events"
durability = "relaxed"

[plugin_queue.prune]
done_ttl_secs = 3600
interval_secs = 120
max_done_jobs = 5000
"#;

#[test]
fn every_key_is_read_and_round_trips() -> TestResult {
    let config = parse(FULL)?;
    assert_eq!(config.port, 8080);
    assert_eq!(config.data_dir, Path::new("/srv/app/.dbx/data"));
    assert_eq!(config.domain, "acme");
    assert_eq!(config.restrict, RestrictMode::Strict);
    assert_eq!((config.list_page_size, config.page_limit), (25, 500));
    assert!(!config.verbose_responses);
    assert_eq!(
        (config.reference_default_depth, config.reference_max_depth),
        (1, 3)
    );
    assert_eq!(config.snowflake_worker_id, 1023);
    assert_eq!(config.plugin_max_attempts, 7);
    assert_eq!(config.cache_threshold, 500);
    assert_eq!(config.snapshot_threshold, Some(100));
    assert!(config.allow_plaintext);
    assert!(!config.accept_v1);
    assert_eq!(config.max_message_bytes, 1_048_576);
    assert_eq!(config.idempotency_ttl_secs, 600);
    assert_eq!(config.revocation_refresh_secs, 2);
    assert_eq!(
        config.server_key_path(),
        Path::new("/srv/app/.dbx/keys/server.key")
    );
    assert_eq!(config.created_at.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(config.updated_at.as_deref(), Some("2026-02-03T04:05:06Z"));
    assert_eq!(config.socket.bind_addr, "0.0.0.0:7000");
    assert_eq!(config.socket.busy_poll_us, 20);
    assert_eq!(config.http_bind_addr(), "0.0.0.0:8081");
    assert!(config.tenants.multi_tenant);
    assert_eq!(config.tenants.shard_count, 4);
    assert_eq!(config.tenant_meta_dir(), Path::new("/var/lib/dbx/tenants"));
    assert_eq!(config.auth.issuer, "eventdbx://prod");
    assert_eq!(config.auth.audience, "prod-clients");
    assert_eq!(config.auth.default_ttl_secs, 7200);
    assert_eq!(config.auth.clock_skew_secs, 10);
    assert_eq!(config.auth.key_id.as_deref(), Some("key-20260102030405"));
    assert_eq!(
        config.signing_key_path(),
        Path::new("/srv/app/.dbx/keys/signing.key")
    );
    assert_eq!(config.storage.backend, "postgres");
    assert_eq!(
        config.storage.url.as_deref(),
        Some("postgres://dbx@db/events")
    );
    assert_eq!(config.storage.durability, Durability::Relaxed);
    assert_eq!(config.plugin_queue.prune.done_ttl_secs, 3600);
    assert_eq!(config.plugin_queue.prune.interval_secs, 120);
    assert_eq!(config.plugin_queue.prune.max_done_jobs, Some(5000));
    assert_eq!(
        config.store_path(),
        Path::new("/srv/app/.dbx/data/store/events.redb")
    );
    assert_eq!(
        config.auth_state_dir(),
        Path::new("/srv/app/.dbx/data/auth")
    );

    // Paths are absolute once read, so the text reads back the same from any directory.
    let text = config.to_toml()?;
    assert_eq!(
        Config::from_toml_str(&text, Path::new("/elsewhere"))?,
        config
    );
    // So do the defaults (unset optional keys are left out).
    let defaults = Config::defaults(PathBuf::from("/d"));
    assert_eq!(
        Config::from_toml_str(&defaults.to_toml()?, Path::new("/x"))?,
        defaults
    );
    Ok(())
}

#[test]
fn discovery_walks_up_from_a_nested_directory() -> TestResult {
    let root = tempfile::tempdir()?;
    let nested = root.path().join("a/b/c");
    fs::create_dir_all(&nested)?;
    assert_eq!(Config::discover(&nested), None);

    let outcome = config::init_workspace(root.path())?;
    let expected = root.path().join(".dbx/config.toml");
    assert_eq!(outcome, InitOutcome::Created(expected.clone()));
    assert_eq!(Config::discover(&nested), Some(expected.clone()));
    assert_eq!(Config::discover(root.path()), Some(expected.clone()));

    // A nearer workspace wins.
    config::init_workspace(&root.path().join("a"))?;
    assert_eq!(
        Config::discover(&nested),
        Some(root.path().join("a/.dbx/config.toml"))
    );

    // The loaded config's data directory is the .dbx directory.
    let loaded = Config::load(&expected)?;
    assert_eq!(loaded.data_dir, root.path().join(".dbx"));
    assert_eq!(
        loaded.signing_key_path(),
        root.path().join(".dbx/secrets/token_signing.key")
    );
    Ok(())
}

#[test]
fn durability_accepts_sync_fsync_and_relaxed() -> TestResult {
    for (text, expected) in [
        ("sync", Durability::Fsync),
        ("fsync", Durability::Fsync),
        ("FSync", Durability::Fsync),
        ("relaxed", Durability::Relaxed),
    ] {
        let config = parse(&format!("[storage]\ndurability = \"{text}\"\n"))?;
        assert_eq!(config.storage.durability, expected, "{text}");
    }
    let err = parse("[storage]\ndurability = \"eventually\"\n").err();
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("`storage.durability`"), "{message}");
    Ok(())
}

#[test]
fn clamps_minimums_and_ranges() -> TestResult {
    let config = parse(
        "plugin_max_attempts = 0\n\
         [auth]\ndefault_ttl_secs = 5\nclock_skew_secs = 900\n\
         [tenants]\nshard_count = 0\n\
         [plugin_queue.prune]\ninterval_secs = 1\n",
    )?;
    assert_eq!(config.auth.default_ttl_secs, 60);
    assert_eq!(config.auth.clock_skew_secs, 300);
    assert_eq!(config.tenants.shard_count, 1);
    assert_eq!(config.plugin_max_attempts, 1);
    assert_eq!(config.plugin_queue.prune.interval_secs, 60);

    assert_eq!(
        parse("[auth]\nclock_skew_secs = -5\n")?
            .auth
            .clock_skew_secs,
        0
    );
    assert_eq!(
        parse("snowflake_worker_id = 1023\n")?.snowflake_worker_id,
        1023
    );
    for text in ["snowflake_worker_id = 1024\n", "snowflake_worker_id = -1\n"] {
        let message = parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("`snowflake_worker_id`"),
            "{text}: {message}"
        );
    }
    Ok(())
}

#[test]
fn restrict_takes_a_mode_or_a_bool() -> TestResult {
    assert_eq!(parse("restrict = \"off\"")?.restrict, RestrictMode::Off);
    assert_eq!(parse("restrict = false")?.restrict, RestrictMode::Off);
    assert_eq!(parse("restrict = true")?.restrict, RestrictMode::Default);
    assert_eq!(
        parse("restrict = \"strict\"")?.restrict,
        RestrictMode::Strict
    );
    Ok(())
}

#[test]
fn key_material_in_the_config_is_refused() {
    for key in ["private_key", "public_key"] {
        let result = parse(&format!("[auth]\n{key} = \"MC4CAQAwBQYDK2VwBCIEIA==\"\n"));
        match result {
            Err(ConfigError::SecretInConfig { key: named, .. }) => {
                assert_eq!(named, format!("auth.{key}"));
            }
            other => panic!("{key}: expected SecretInConfig, got {other:?}"),
        }
    }
}

#[test]
fn errors_from_a_file_name_the_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("config.toml");
    fs::write(&path, "[auth]\nprivate_key = \"x\"\n")?;
    let message = Config::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("0600"), "{message}");

    fs::write(&path, "port = \"eighty\"\n")?;
    let message = Config::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("`port`"),
        "{message}"
    );
    Ok(())
}

#[test]
fn reference_aliases_and_ignored_keys() -> TestResult {
    assert!(parse("no_noise = true")?.allow_plaintext);
    assert!(!parse("no_noise = false")?.allow_plaintext);
    // The new key wins over its deprecated alias.
    assert!(!parse("no_noise = true\nallow_plaintext = false")?.allow_plaintext);
    assert_eq!(parse("memory_threshold = 42")?.cache_threshold, 42);
    // Ignored with a warning, never kept or written back.
    let config = parse(
        "data_encryption_key = \"c2VjcmV0LWRlaw==\"\nsome_future_key = 1\n[plugins]\nx = 1\n",
    )?;
    assert_eq!(config, Config::defaults(PathBuf::from("/srv/app/.dbx")));
    assert!(!config.to_toml()?.contains("c2VjcmV0LWRlaw=="));
    Ok(())
}

#[test]
fn write_secret_makes_a_0600_file_in_a_0700_directory() -> TestResult {
    let root = tempfile::tempdir()?;
    let path = root.path().join("data/secrets/token_signing.key");
    secrets::write_secret(&path, b"signing key bytes")?;
    assert_eq!(mode_of(&path)?, 0o600);
    assert_eq!(mode_of(&root.path().join("data/secrets"))?, 0o700);
    assert_eq!(mode_of(&root.path().join("data"))?, 0o700);
    assert_eq!(secrets::read_secret(&path)?, b"signing key bytes");

    // Replacing keeps the mode and leaves no temporary file behind.
    secrets::write_secret(&path, b"rotated")?;
    assert_eq!(secrets::read_secret(&path)?, b"rotated");
    assert_eq!(mode_of(&path)?, 0o600);
    assert_eq!(fs::read_dir(root.path().join("data/secrets"))?.count(), 1);
    Ok(())
}

#[test]
fn read_secret_refuses_a_file_others_can_read() -> TestResult {
    let root = tempfile::tempdir()?;
    let path = root.path().join("server_static.key");
    fs::write(&path, b"key")?;
    for mode in [0o644, 0o640, 0o602] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        match secrets::read_secret(&path) {
            Err(err @ SecretError::TooOpen { .. }) => {
                let message = err.to_string();
                assert!(message.contains(&path.display().to_string()), "{message}");
                assert!(message.contains(&format!("{mode:04o}")), "{message}");
            }
            other => panic!("mode {mode:o}: expected TooOpen, got {other:?}"),
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400))?;
    assert_eq!(secrets::read_secret(&path)?, b"key");
    assert!(matches!(
        secrets::read_secret(&root.path().join("missing")),
        Err(SecretError::Io { .. })
    ));
    Ok(())
}

#[test]
fn write_atomic_sets_the_mode_asked_for() -> TestResult {
    let root = tempfile::tempdir()?;
    let path = root.path().join("auth/revoked.json");
    secrets::write_atomic(&path, b"[]", 0o644)?;
    assert_eq!(mode_of(&path)?, 0o644);
    assert_eq!(fs::read(&path)?, b"[]");
    Ok(())
}

#[test]
fn init_workspace_is_idempotent() -> TestResult {
    let root = tempfile::tempdir()?;
    let first = config::init_workspace(root.path())?;
    let path = root.path().join(".dbx/config.toml");
    assert_eq!(first, InitOutcome::Created(path.clone()));
    assert_eq!(mode_of(&root.path().join(".dbx/secrets"))?, 0o700);
    // No keys or tokens: the auth module makes those.
    assert_eq!(fs::read_dir(root.path().join(".dbx/secrets"))?.count(), 0);

    let text = fs::read_to_string(&path)?;
    let loaded = Config::load(&path)?;
    let created = loaded.created_at.clone().unwrap_or_default();
    assert!(
        eventdbx_core::time::parse_unix_millis(&created).is_some(),
        "{created}"
    );
    assert_eq!(loaded.updated_at, loaded.created_at);
    assert!(text.contains("data_dir = \".\""), "{text}");
    assert!(text.contains("bind_addr = \"127.0.0.1:6363\""), "{text}");

    let second = config::init_workspace(root.path())?;
    assert_eq!(second, InitOutcome::AlreadyInitialized(path.clone()));
    assert_eq!(second.config_path(), path);
    assert_eq!(fs::read_to_string(&path)?, text);
    Ok(())
}

#[test]
fn to_toml_never_contains_secret_file_contents() -> TestResult {
    let root = tempfile::tempdir()?;
    config::init_workspace(root.path())?;
    let path = root.path().join(".dbx/config.toml");
    let mut loaded = Config::load(&path)?;
    let signing = "SIGNING-KEY-MATERIAL-7f3a9c";
    let server = "SERVER-STATIC-KEY-MATERIAL-1b2e";
    secrets::write_secret(&loaded.signing_key_path(), signing.as_bytes())?;
    secrets::write_secret(&loaded.server_key_path(), server.as_bytes())?;
    loaded.auth.key_id = Some("key-20260101000000".to_owned());
    loaded.save(&path)?;

    let text = Config::load(&path)?.to_toml()?;
    for secret in [signing, server] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(!text.contains("private_key") && !text.contains("public_key"));
    assert!(!fs::read_to_string(&path)?.contains(signing));
    Ok(())
}

#[test]
fn busy_poll_is_zero_to_disable_and_capped_at_a_millisecond() -> TestResult {
    assert_eq!(parse("[socket]\nbusy_poll_us = 0")?.socket.busy_poll_us, 0);
    assert_eq!(
        parse("[socket]\nbusy_poll_us = 250")?.socket.busy_poll_us,
        250
    );
    assert_eq!(
        parse("[socket]\nbusy_poll_us = 5000")?.socket.busy_poll_us,
        1000
    );
    assert!(parse("[socket]\nbusy_poll_us = -1").is_err());
    assert!(parse("[socket]\nbusy_poll_us = \"fast\"").is_err());
    Ok(())
}

#[test]
fn message_budget_and_timeout_have_defaults_and_minimums() -> TestResult {
    let socket = parse("")?.socket;
    assert_eq!(socket.message_budget_bytes, 64 * 1024 * 1024);
    assert_eq!(socket.message_timeout_ms, 30_000);
    let socket =
        parse("[socket]\nmessage_budget_bytes = 1048576\nmessage_timeout_ms = 500")?.socket;
    assert_eq!(
        (socket.message_budget_bytes, socket.message_timeout_ms),
        (1_048_576, 500)
    );
    let socket = parse("[socket]\nmessage_budget_bytes = 0\nmessage_timeout_ms = 0")?.socket;
    assert_eq!(
        (socket.message_budget_bytes, socket.message_timeout_ms),
        (65_536, 100)
    );
    assert!(parse("[socket]\nmessage_timeout_ms = -1").is_err());
    Ok(())
}

#[test]
fn answer_timeout_has_a_default_and_a_minimum() -> TestResult {
    assert_eq!(parse("")?.socket.answer_timeout_ms, 30_000);
    assert_eq!(
        parse("[socket]\nanswer_timeout_ms = 500")?
            .socket
            .answer_timeout_ms,
        500
    );
    assert_eq!(
        parse("[socket]\nanswer_timeout_ms = 0")?
            .socket
            .answer_timeout_ms,
        100
    );
    assert!(parse("[socket]\nanswer_timeout_ms = -1").is_err());
    Ok(())
}

/// Every dotted key below `table`, tables themselves left out.
fn dotted_keys(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => dotted_keys(&format!("{dotted}."), inner, keys),
            _ => keys.push(dotted),
        }
    }
}

#[test]
fn every_key_is_in_the_configuration_reference() -> TestResult {
    let reference = include_str!("../../../../docs/configuration.md");
    // Every optional key set, so that the written text has them all.
    let mut config = parse(FULL)?;
    config.plugin_queue.backoff_unit_ms = 5;
    let written: toml::Table = config.to_toml()?.parse()?;
    let mut keys = Vec::new();
    dotted_keys("", &written, &mut keys);
    assert!(keys.len() >= 40, "{keys:?}");
    // Read but never written: aliases and keys of the reference server.
    keys.extend(
        [
            "memory_threshold",
            "no_noise",
            "data_encryption_key",
            "auth.private_key",
            "auth.public_key",
        ]
        .map(String::from),
    );
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !reference.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not describe {missing:?}"
    );
    Ok(())
}

#[test]
fn edit_file_keeps_comments_and_unknown_keys() -> TestResult {
    let root = tempfile::tempdir()?;
    config::init_workspace(root.path())?;
    let path = root.path().join(".dbx/config.toml");
    let commented = fs::read_to_string(&path)?.replace(
        "port = 7070",
        "# health checks come here\nport = 7070 # keep in sync with the LB",
    ) + "\n# written by a newer server\nfuture_key = \"kept\"\n";
    fs::write(&path, &commented)?;

    let edited = Config::edit_file(
        &path,
        &[
            ("port", config::ConfigValue::Integer(9090)),
            (
                "socket.bind_addr",
                config::ConfigValue::Text("0.0.0.0:7000".into()),
            ),
            (
                "plugin_queue.prune.interval_secs",
                config::ConfigValue::Integer(120),
            ),
        ],
    )?;
    assert_eq!(edited.port, 9090);
    assert_eq!(edited.socket.bind_addr, "0.0.0.0:7000");
    assert_eq!(edited.plugin_queue.prune.interval_secs, 120);
    assert_eq!(Config::load(&path)?, edited);
    let text = fs::read_to_string(&path)?;
    for kept in [
        "# dbx workspace configuration",
        "# health checks come here\nport = 9090 # keep in sync with the LB\n",
        "# written by a newer server\nfuture_key = \"kept\"\n",
    ] {
        assert!(text.contains(kept), "{kept:?} lost:\n{text}");
    }

    // A value the config refuses leaves the file as it was.
    let refused = Config::edit_file(
        &path,
        &[("snowflake_worker_id", config::ConfigValue::Integer(4096))],
    );
    assert!(
        matches!(&refused, Err(ConfigError::InvalidValue { key, .. }) if key == "snowflake_worker_id"),
        "{refused:?}"
    );
    assert_eq!(fs::read_to_string(&path)?, text);
    Ok(())
}

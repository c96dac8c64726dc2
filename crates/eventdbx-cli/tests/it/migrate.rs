//! `dbx init --postgres URL` and `dbx migrate status|up` against a real scratch cluster, and
//! the list-order indexes of the schema used by PostgreSQL's plans for the list queries.

use eventdbx_store_postgres::cluster::TestCluster;
use eventdbx_store_postgres::SCHEMA_VERSION;
use serde_json::Value;

use crate::workspace::{dbx_in, text};

/// `dbx <args>` in `dir`, with `DBX_POSTGRES_URL` cleared unless given.
fn dbx(dir: &std::path::Path, args: &[&str], env_url: Option<&str>) -> std::process::Output {
    let mut command = dbx_in(dir);
    command.env_remove("DBX_POSTGRES_URL").args(args);
    if let Some(url) = env_url {
        command.env("DBX_POSTGRES_URL", url);
    }
    command.output().expect("dbx runs")
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}{}", text(&output.stdout), text(&output.stderr)))
}

#[test]
fn init_postgres_migrates_and_a_newer_schema_is_refused() {
    let cluster = TestCluster::shared();
    let url = cluster.database("cli_migrate");
    let dir = tempfile::tempdir().expect("tempdir");

    let init = dbx(dir.path(), &["init", "--postgres", &url], None);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let config = std::fs::read_to_string(dir.path().join(".dbx/config.toml")).expect("config");
    assert!(config.contains("backend = \"postgres\""), "{config}");
    assert!(config.contains(&format!("url = \"{url}\"")), "{config}");
    assert!(
        text(&init.stdout).contains("storage: PostgreSQL"),
        "{}",
        text(&init.stdout)
    );

    // init migrated the database: nothing pending.
    let status = dbx(dir.path(), &["migrate", "status"], None);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    assert!(
        out.contains(&format!("database schema version: {SCHEMA_VERSION}"))
            && out.contains(&format!("dbx schema version: {SCHEMA_VERSION}"))
            && out.contains("up to date"),
        "{out}"
    );

    // A schema newer than this dbx: status says so and fails, up refuses and changes nothing.
    cluster.sql(
        "cli_migrate",
        "INSERT INTO eventdbx_migrations (version) VALUES (999)",
    );
    let status = dbx(dir.path(), &["migrate", "status"], None);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stderr).contains("newer than this dbx knows"),
        "{}",
        text(&status.stderr)
    );
    let up = dbx(dir.path(), &["migrate", "up"], None);
    assert_eq!(up.status.code(), Some(1));
    assert!(
        text(&up.stderr).contains("version 999, newer than this dbx knows"),
        "{}",
        text(&up.stderr)
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let init = dbx(elsewhere.path(), &["init", "--postgres", &url], None);
    assert_eq!(init.status.code(), Some(1));
    assert!(
        text(&init.stderr).contains("newer than this dbx knows"),
        "{}",
        text(&init.stderr)
    );
    assert!(!elsewhere.path().join(".dbx").exists(), "nothing written");
    cluster.sql(
        "cli_migrate",
        "DELETE FROM eventdbx_migrations WHERE version = 999",
    );
}

#[test]
fn migrate_reads_an_empty_database_and_a_password_stays_out_of_the_config() {
    let cluster = TestCluster::shared();
    let url = cluster.database("cli_migrate_empty");
    // The scratch cluster trusts local connections, so any password is accepted: enough to
    // see where the URL goes.
    let secret_url = url.replace("postgres@", "postgres:s3cret@");
    let empty = cluster.database("cli_migrate_fresh");
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path(), &["init", "--postgres", &secret_url], None);
    assert!(init.status.success(), "{}", text(&init.stderr));
    assert!(
        text(&init.stderr).contains("DBX_POSTGRES_URL"),
        "{}",
        text(&init.stderr)
    );
    let config = std::fs::read_to_string(dir.path().join(".dbx/config.toml")).expect("config");
    assert!(config.contains("backend = \"postgres\""), "{config}");
    assert!(
        !config.contains("s3cret") && !config.contains("url ="),
        "{config}"
    );

    // Without the environment variable there is no URL to use.
    let status = dbx(dir.path(), &["migrate", "status"], None);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stderr).contains("DBX_POSTGRES_URL"),
        "{}",
        text(&status.stderr)
    );
    // DBX_POSTGRES_URL names the database: a fresh one has no schema, every migration pending.
    let status = dbx(dir.path(), &["migrate", "status", "--json"], Some(&empty));
    assert_eq!(status.status.code(), Some(3), "{}", text(&status.stderr));
    let report = json(&status);
    assert_eq!(report["database_version"], 0, "{report}");
    assert_eq!(
        report["pending"].as_array().map(Vec::len),
        Some(SCHEMA_VERSION as usize),
        "{report}"
    );
    assert!(
        report["pending"].as_array().is_some_and(|pending| pending
            .iter()
            .any(|m| m["description"]
                .as_str()
                .is_some_and(|d| d.contains("list orders")))),
        "{report}"
    );
    let text_status = dbx(dir.path(), &["migrate", "status"], Some(&empty));
    assert!(
        text(&text_status.stdout).contains("run `dbx migrate up`"),
        "{}",
        text(&text_status.stdout)
    );
    let up = dbx(dir.path(), &["migrate", "up", "--json"], Some(&empty));
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(
        json(&up)["applied"].as_array().map(Vec::len),
        Some(SCHEMA_VERSION as usize)
    );
    let indexes = cluster.sql(
        "cli_migrate_fresh",
        "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'aggregates_by_%'",
    );
    assert_eq!(indexes.trim(), "3", "the list-order indexes");
    let status = dbx(dir.path(), &["migrate", "status"], Some(&empty));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    let again = dbx(dir.path(), &["migrate", "up"], Some(&empty));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("nothing to apply"),
        "{}",
        text(&again.stdout)
    );

    // An unreachable database: init fails before writing anything.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let init = dbx(
        elsewhere.path(),
        &[
            "init",
            "--postgres",
            &format!("postgres://postgres@127.0.0.1:{port}/none"),
        ],
        None,
    );
    assert_eq!(init.status.code(), Some(1));
    assert!(
        text(&init.stderr).contains("cannot reach the database"),
        "{}",
        text(&init.stderr)
    );
    assert!(!elsewhere.path().join(".dbx").exists(), "nothing written");

    // An embedded workspace has no migrations to run.
    let embedded = tempfile::tempdir().expect("tempdir");
    assert!(dbx(embedded.path(), &["init"], None).status.success());
    let status = dbx(embedded.path(), &["migrate", "status"], None);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stderr).contains("backend is \"embedded\""),
        "{}",
        text(&status.stderr)
    );
}

/// The list queries of the PostgreSQL engine (`list.rs`) in the shapes it sends: one sorted
/// order after a keyset position, a batch at a time.
const ORDERED_QUERIES: &[(&str, &str)] = &[
    (
        "aggregates_by_created",
        "SELECT record FROM aggregates WHERE tenant = 'default' AND version > 0 \
         AND (created_ms, aggregate_type, aggregate_id) > (1000, 'order', 'o-1') \
         ORDER BY created_ms, aggregate_type, aggregate_id LIMIT 512",
    ),
    (
        "aggregates_by_updated",
        "SELECT record FROM aggregates WHERE tenant = 'default' AND version > 0 \
         AND (updated_ms, aggregate_type, aggregate_id) < (9000000, 'order', 'o-1') \
         ORDER BY updated_ms DESC, aggregate_type DESC, aggregate_id DESC LIMIT 512",
    ),
    (
        "aggregates_by_version",
        "SELECT record FROM aggregates WHERE tenant = 'default' AND version > 0 \
         ORDER BY version DESC, aggregate_type DESC, aggregate_id DESC LIMIT 512",
    ),
    (
        "aggregates_natural",
        "SELECT record FROM aggregates WHERE tenant = 'default' AND version > 0 \
         AND (archived, aggregate_type, aggregate_id) > (false, 'order', 'o-1') \
         ORDER BY archived, aggregate_type, aggregate_id LIMIT 512",
    ),
];

#[test]
fn the_list_orders_are_read_through_their_indexes() {
    let cluster = TestCluster::shared();
    let url = cluster.database("cli_migrate_plans");
    let dir = tempfile::tempdir().expect("tempdir");
    let up = dbx(dir.path(), &["init", "--postgres", &url], None);
    assert!(up.status.success(), "{}", text(&up.stderr));
    // Two tenants of 4,000 aggregates each, times and versions spread out.
    cluster.sql(
        "cli_migrate_plans",
        "INSERT INTO aggregates SELECT t, 'order', 'o-' || n, 1, 1 + n % 37, n % 10 = 0, \
         1000 + n * 7 % 4001, 2000 + n * 13 % 4003, repeat('x', 200) \
         FROM unnest(ARRAY['default', 'other']) t, generate_series(1, 4000) n; \
         ANALYZE aggregates",
    );
    for (index, query) in ORDERED_QUERIES {
        // A sort made too expensive to choose: the plan reads the order from an index if one
        // gives it, and sorts anyway (a Sort node) if none does. What is checked is that the
        // order has an index, not the planner's cost model on this machine.
        let plan = cluster.sql(
            "cli_migrate_plans",
            &format!("SET enable_sort = off; EXPLAIN {query}"),
        );
        assert!(
            plan.contains(index),
            "{index} not used for {query}:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{query} sorts:\n{plan}");
    }
}

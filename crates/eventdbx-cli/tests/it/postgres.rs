//! `dbx serve` on the PostgreSQL backend, end to end: two workspaces (two servers, as two hosts
//! would run them) configured with `[storage] backend = "postgres"` on one database of a scratch
//! cluster; the Rust client writes through the first and reads, verifies and appends through
//! the second: only a shared database lets the second server see the first one's writes.

use eventdbx_client::{Client, ClientConfig};
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

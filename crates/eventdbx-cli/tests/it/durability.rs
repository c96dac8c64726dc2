//! Acknowledged writes survive a SIGKILL of `dbx serve`, and relaxed
//! durability is announced in the startup log and `/health`.

use serde_json::Value;

use crate::workspace::{serve, Workspace};

/// 1,000 concurrent `apply` calls; SIGKILL right after the last
/// acknowledgement; after a restart every acknowledged event is there, versions gap-free. Then,
/// with `durability = "relaxed"`, the startup log and `/health` say so.
#[test]
fn acknowledged_writes_survive_sigkill_of_the_server() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use eventdbx_client::{Client, ClientConfig};

    const AGGREGATES: usize = 20;
    const APPLIES: usize = 1_000;
    let mut ws = Workspace::start();
    let token = std::fs::read_to_string(ws.dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();
    let config = |port: u16| {
        ClientConfig::new(token.clone(), "default")
            .port(port)
            .request_timeout(std::time::Duration::from_secs(30))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked: BTreeMap<String, u64> = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(Arc::new(
                Client::connect(config(ws.port)).await.expect("connect"),
            ));
        }
        for n in 0..AGGREGATES {
            clients[0]
                .create("account", &format!("acct-{n}"), "opened", "{}")
                .await
                .expect("create");
        }
        let mut tasks = Vec::new();
        for i in 0..APPLIES {
            let client = Arc::clone(&clients[i % clients.len()]);
            tasks.push(tokio::spawn(async move {
                let id = format!("acct-{}", i % AGGREGATES);
                let written = client
                    .apply("account", &id, "deposited", &format!("{{\"n\": {i}}}"))
                    .await
                    .expect("apply");
                let event = written.value().expect("json").expect("verbose event");
                (id, event["version"].as_u64().expect("version"))
            }));
        }
        let mut acked = BTreeMap::new();
        for task in tasks {
            let (id, version) = task.await.expect("task");
            let highest = acked.entry(id).or_insert(0);
            *highest = (*highest).max(version);
        }
        acked
    });
    ws.kill_and_restart();
    let total: u64 = runtime.block_on(async {
        let client = Client::connect(config(ws.port)).await.expect("reconnect");
        let mut total = 0;
        for (id, acked_version) in &acked {
            let found = client.get("account", id).await.expect("get");
            let aggregate: Value =
                serde_json::from_str(found.json.as_deref().expect("exists")).expect("json");
            let version = aggregate["version"].as_u64().expect("version");
            assert!(
                version >= *acked_version,
                "{id}: {version} < acked {acked_version}"
            );
            let mut query = eventdbx_client::EventsQuery::new("account", id);
            query.take = Some(1_000);
            let page = client.events(&query).await.expect("events");
            let versions: Vec<u64> = page
                .events()
                .expect("events json")
                .iter()
                .map(|e| e["version"].as_u64().expect("version"))
                .collect();
            assert_eq!(versions, (1..=version).collect::<Vec<_>>(), "{id}");
            total += version - 1;
        }
        total
    });
    assert_eq!(
        total, APPLIES as u64,
        "every acknowledged apply is stored once"
    );

    // Relaxed: the startup log and /health report it.
    drop(ws._serving);
    let config_path = ws.dir.path().join(".dbx/config.toml");
    let config_text = std::fs::read_to_string(&config_path).expect("config");
    assert!(
        config_text.contains("durability = \"fsync\""),
        "{config_text}"
    );
    let relaxed = config_text.replace("durability = \"fsync\"", "durability = \"relaxed\"");
    std::fs::write(&config_path, relaxed).expect("config");
    let (serving, _port, banner, log) = serve(ws.dir.path(), "info");
    ws._serving = serving;
    assert!(banner.contains("durability relaxed"), "banner: {banner}");
    assert!(
        log.contains("relaxed") && log.contains("durability"),
        "startup log: {log}"
    );
    let http = banner
        .split("http ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("http address in the banner")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&http).expect("connect to the HTTP port");
    std::io::Write::write_all(&mut stream, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut stream, &mut body).expect("response");
    assert!(body.contains("\"durability\":\"relaxed\""), "{body}");
}

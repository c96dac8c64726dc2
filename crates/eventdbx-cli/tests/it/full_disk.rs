//! A full disk under a running `dbx serve`: the store lives on a real, small tmpfs; durable
//! writes go on until `No space left on device`; then every write fails with that cause,
//! `/health` answers 503 `degraded` and the failure is logged once; once a filler file beside
//! the store is deleted, `/health` is `ok` again before any write, writes succeed again with no
//! restart, the recovery is logged once, and every acknowledged write is there, gapless and verified
//! (`docs/storage.md`, "When the disk fails").
//!
//! A tmpfs needs a mount, so the test re-runs this binary as a child in its own user and mount
//! namespace (`unshare -rm`: root in CI, or anyone where user namespaces are allowed); the child
//! mounts the tmpfs on the workspace's store directory and runs the server inside that
//! namespace, so nothing stays mounted whatever happens. The parent checks that the child
//! succeeded.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use eventdbx_client::{Client, ClientConfig};
use serde_json::Value;

use crate::workspace::{dbx_in, text, Serving};

/// Set in the child; its absence makes [`child_serves_on_a_full_disk`] a no-op.
const CHILD_ENV: &str = "EVENTDBX_FULL_DISK_CHILD";
const AGGREGATE_TYPE: &str = "account";
const AGGREGATES: usize = 4;
/// Bounds the writes it takes to fill what the filler left (a few hundred KiB at 8 KiB each).
const MAX_WRITES_TO_FILL: usize = 5_000;
/// Bounds the writes tried after space returns (the first one is expected to succeed).
const MAX_WRITES_TO_RECOVER: usize = 20;
/// Bounds the `/health` polls after space returns: 100 polls, 10 s at the least.
const MAX_HEALTH_POLLS: usize = 100;
const HEALTH_POLL_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

#[test]
fn writes_recover_without_restart_when_space_returns() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .args(["-rm", "--"])
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "full_disk::child_serves_on_a_full_disk",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap_or_else(|err| {
            panic!("this test needs `unshare` (util-linux) to mount a tmpfs: {err}")
        });
    println!("{}", text(&output.stdout));
    assert!(
        output.status.success(),
        "the full-disk child failed ({}); if `unshare -rm` itself failed, run as root or allow \
         unprivileged user namespaces (kernel.unprivileged_userns_clone=1)\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut filler = File::create(path).expect("create the filler file");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(28) || err.kind() == ErrorKind::StorageFull => {
                break
            }
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
}

/// `GET path` on the HTTP listener: the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the HTTP port");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// The child: a workspace whose store directory is a 4 MiB tmpfs, served by the real `dbx`.
#[test]
#[ignore = "run by the full-disk test in a mount namespace"]
fn child_serves_on_a_full_disk() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx_in(dir.path()).arg("init").output().expect("dbx init");
    assert!(init.status.success(), "{}", text(&init.stderr));
    let config_path = dir.path().join(".dbx/config.toml");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "bind_addr = \"127.0.0.1:6363\"",
            "bind_addr = \"127.0.0.1:0\"",
        )
        .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n");
    assert_eq!(config.matches("127.0.0.1:0").count(), 2, "{config}");
    std::fs::write(&config_path, config).expect("write config");
    let store_dir = dir.path().join(".dbx/store");
    std::fs::create_dir_all(&store_dir).expect("store directory");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&store_dir)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "mount a tmpfs on {}",
        store_dir.display()
    );

    let log_path = dir.path().join("serve.log");
    let mut child = dbx_in(dir.path())
        .env("EVENTDBX_LOG", "info")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(File::create(&log_path).expect("log file"))
        .spawn()
        .expect("dbx serve");
    let stdout = child.stdout.take().expect("stdout");
    let _serving = Serving(child);
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("serve prints its addresses");
    let address_after = |label: &str, end: char| {
        banner
            .split(label)
            .nth(1)
            .and_then(|rest| rest.split(end).next())
            .unwrap_or_else(|| panic!("{label}address in the banner: {banner}"))
            .to_owned()
    };
    let port: u16 = address_after("control ", ' ')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("control port");
    let http = address_after("http ", ';');
    let token = std::fs::read_to_string(dir.path().join(".dbx/cli.token"))
        .expect("cli.token")
        .trim()
        .to_owned();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::connect(ClientConfig::new(token, "default").port(port))
            .await
            .expect("connect");
        let ids: Vec<String> = (0..AGGREGATES).map(|n| format!("acct-{n}")).collect();
        let pad = "x".repeat(8 * 1024);
        let payload = |n: usize| format!("{{\"n\": {n}, \"pad\": \"{pad}\"}}");
        let mut acked: BTreeMap<&str, u64> = BTreeMap::new();
        for id in &ids {
            client
                .create(AGGREGATE_TYPE, id, "opened", &payload(0))
                .await
                .expect("create before the disk fills");
            acked.insert(id, 1);
        }
        let (status, _) = http_get(&http, "/health");
        assert_eq!(status, 200);
        fill(&store_dir.join("filler"));

        // Durable writes until the disk is full; every acknowledged one is remembered.
        let mut failure = None;
        for turn in 1..=MAX_WRITES_TO_FILL {
            let id = ids[turn % ids.len()].as_str();
            match client
                .apply(AGGREGATE_TYPE, id, "deposited", &payload(turn))
                .await
            {
                Ok(_) => *acked.get_mut(id).expect("known id") += 1,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let failure = failure.expect("the disk fills up");
        assert_eq!(failure.code(), "storage", "{failure}");
        assert!(
            failure.message().contains("No space left on device"),
            "the write is told the cause: {failure}"
        );
        // Later writes fail with the cause too, never with redb's "close and re-open".
        for id in &ids {
            let err = client
                .apply(AGGREGATE_TYPE, id, "deposited", &payload(0))
                .await
                .expect_err("no space yet");
            assert!(
                err.message().contains("No space left on device")
                    && !err.message().contains("re-open"),
                "a write while the disk is full: {err}"
            );
        }
        let (status, body) = http_get(&http, "/health");
        assert_eq!(status, 503, "{body}");
        let health: Value = serde_json::from_str(&body).expect("health JSON");
        assert_eq!(health["status"], "degraded", "{body}");
        assert!(
            health["storage_error"]
                .as_str()
                .is_some_and(|cause| cause.contains("No space left on device")),
            "{body}"
        );
        let (_, metrics) = http_get(&http, "/metrics");
        assert!(
            metrics.contains("\neventdbx_storage_degraded 1\n"),
            "{metrics}"
        );

        std::fs::remove_file(store_dir.join("filler")).expect("free the space");
        let freed = Instant::now();
        // With no write at all, `/health` finds out by itself (its probe runs at most every
        // 250 ms), so a load balancer that stopped routing to the server routes to it again.
        // Polled a bounded number of times; the pause only paces the polls.
        let mut healthy_after = None;
        for attempt in 1..=MAX_HEALTH_POLLS {
            if http_get(&http, "/health").0 == 200 {
                healthy_after = Some(attempt);
                break;
            }
            std::thread::sleep(HEALTH_POLL_PAUSE);
        }
        let polls = healthy_after.expect("/health is ok again with no write");
        println!(
            "/health ok again {:?} after space returned, at poll {polls}",
            freed.elapsed()
        );
        let healthy = Instant::now();
        let mut recovered_after = None;
        for attempt in 1..=MAX_WRITES_TO_RECOVER {
            let id = ids[0].as_str();
            if client
                .apply(AGGREGATE_TYPE, id, "deposited", &payload(attempt))
                .await
                .is_ok()
            {
                *acked.get_mut(id).expect("known id") += 1;
                recovered_after = Some(attempt);
                break;
            }
        }
        let attempts = recovered_after.expect("writes succeed again once space returns");
        println!(
            "the first write after /health turned ok took {:?} (attempt {attempts})",
            healthy.elapsed()
        );
        assert_eq!(attempts, 1, "the first write after space returns succeeds");
        let (status, body) = http_get(&http, "/health");
        assert_eq!(status, 200, "{body}");
        let health: Value = serde_json::from_str(&body).expect("health JSON");
        assert_eq!(health["status"], "ok", "{body}");
        assert!(health.get("storage_error").is_none(), "{body}");
        let (_, metrics) = http_get(&http, "/metrics");
        assert!(
            metrics.contains("\neventdbx_storage_degraded 0\n"),
            "{metrics}"
        );
        for id in &ids[1..] {
            client
                .apply(AGGREGATE_TYPE, id, "deposited", &payload(0))
                .await
                .expect("a write after recovery");
            *acked.get_mut(id.as_str()).expect("known id") += 1;
        }

        for id in &ids {
            let found = client.get(AGGREGATE_TYPE, id).await.expect("get");
            let aggregate: Value =
                serde_json::from_str(found.json.as_deref().expect("exists")).expect("json");
            assert_eq!(
                aggregate["version"].as_u64(),
                Some(acked[id.as_str()]),
                "{id}: every acknowledged write is there, and no failed one"
            );
            let mut query = eventdbx_client::EventsQuery::new(AGGREGATE_TYPE, id);
            query.take = Some(10_000);
            let page = client.events(&query).await.expect("events");
            let versions: Vec<u64> = page
                .events()
                .expect("events json")
                .iter()
                .map(|e| e["version"].as_u64().expect("version"))
                .collect();
            assert_eq!(
                versions,
                (1..=acked[id.as_str()]).collect::<Vec<_>>(),
                "{id}"
            );
            let root = client.verify(AGGREGATE_TYPE, id).await.expect("verify");
            assert_eq!(
                Some(root.as_str()),
                aggregate["merkle_root"].as_str(),
                "{id}"
            );
        }
    });

    // The failure and the recovery are each logged once, not once per failed write.
    let log = std::fs::read_to_string(&log_path).expect("server log");
    let failing: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("storage failing"))
        .collect();
    assert_eq!(failing.len(), 1, "{log}");
    assert!(failing[0].contains("No space left on device"), "{log}");
    assert!(failing[0].contains("ERROR"), "{log}");
    let recovered = log
        .lines()
        .filter(|l| l.contains("storage recovered"))
        .count();
    assert_eq!(recovered, 1, "{log}");
}

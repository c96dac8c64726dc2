//! Relaxed durability is announced in the startup log and `/health`. That acknowledged writes
//! survive a SIGKILL of the server under fsync durability is the chaos test's (`chaos.rs`).

use crate::workspace::{serve, Workspace};

/// With `durability = "relaxed"`, the banner, the startup log and `/health` say so.
#[test]
fn relaxed_durability_is_announced_in_the_log_and_health() {
    let mut ws = Workspace::start();
    // Stop the fsync server before rewriting its configuration.
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

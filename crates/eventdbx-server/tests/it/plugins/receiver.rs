//! A real HTTP (or HTTPS, with a test certificate authority) receiver on `127.0.0.1:0` for the
//! plugin tests, the plugin definitions and publish targets they write, and a scrape of the
//! server's `/metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{TestServer, WriteOpts, PATIENCE};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
    pub at: Instant,
}

/// A tiny HTTP/1.1 receiver answering every request with the current status.
pub struct Receiver {
    pub port: u16,
    /// `http` or `https`.
    scheme: &'static str,
    pub status: Arc<AtomicU16>,
    pub log: Arc<Mutex<Vec<Received>>>,
    hold: Arc<Hold>,
}

/// While set, the receiver records requests but keeps their answers back.
#[derive(Default)]
struct Hold {
    on: Mutex<bool>,
    released: Condvar,
}

impl Hold {
    fn wait_released(&self) {
        let mut on = self.on.lock().expect("hold");
        while *on {
            on = self.released.wait(on).expect("hold");
        }
    }
}

/// A certificate authority made for one test, and the receiver certificate it signs.
pub struct TestCa {
    /// The authority's certificate, PEM: what a plugin's `ca_file` holds.
    pub pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A fresh authority named `name` and a certificate for `127.0.0.1` signed by it.
    pub fn new(name: &str) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca certificate");
        let key = rcgen::KeyPair::generate().expect("receiver key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("receiver params")
            .signed_by(&key, &ca)
            .expect("receiver certificate");
        // ring, as the server uses (deprecated by rustls only for lacking post-quantum suites).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        TestCa {
            pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

/// A connection to the receiver, plain or TLS.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::listen(None)
    }

    /// A receiver behind TLS, with a certificate signed by `ca`.
    pub fn start_https(ca: &TestCa) -> Receiver {
        Receiver::listen(Some(Arc::clone(&ca.server)))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let status = Arc::new(AtomicU16::new(200));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (status2, log2) = (Arc::clone(&status), Arc::clone(&log));
        let hold = Arc::new(Hold::default());
        let hold2 = Arc::clone(&hold);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                // A TLS handshake the client aborts (it does not trust the certificate) shows
                // as a failed read below: the connection is dropped, nothing is recorded.
                let mut stream: Box<dyn Conn> = match &tls {
                    Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                        Ok(session) => Box::new(rustls::StreamOwned::new(session, stream)),
                        Err(_) => continue,
                    },
                    None => Box::new(stream),
                };
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    let Ok(n) = stream.read(&mut buf) else {
                        break (None, Vec::new());
                    };
                    if n == 0 {
                        break (None, Vec::new());
                    }
                    data.extend_from_slice(&buf[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        break (Some(head), data[end + 4..end + 4 + length].to_vec());
                    }
                };
                let Some(head) = head else { continue };
                let mut lines = head.lines();
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("")
                    .to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let code = status2.load(Ordering::SeqCst);
                log2.lock().expect("log").push(Received {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    status: code,
                    at: Instant::now(),
                });
                hold2.wait_released();
                let text = if code == 200 {
                    "ok"
                } else {
                    "receiver says no"
                };
                // A redirect points at a path of its own, which a client must not follow.
                let location = if (300..400).contains(&code) {
                    "location: /hook/elsewhere\r\n"
                } else {
                    ""
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\n{location}content-length: {}\r\nconnection: \
                     close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.flush();
            }
        });
        Receiver {
            port,
            scheme,
            status,
            log,
            hold,
        }
    }

    /// From now on, requests are recorded but not answered until [`Receiver::release`].
    pub fn hold(&self) {
        *self.hold.on.lock().expect("hold") = true;
    }

    /// Answers the request held back, and the ones after it as they come.
    pub fn release(&self) {
        *self.hold.on.lock().expect("hold") = false;
        self.hold.released.notify_all();
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/hook/{name}", self.scheme, self.port)
    }

    /// Successful deliveries to `/hook/<name>`.
    pub fn delivered(&self, name: &str) -> Vec<Received> {
        let path = format!("/hook/{name}");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path && r.status == 200)
            .cloned()
            .collect()
    }

    /// Waits for a successful delivery to `/hook/<name>` of the event (or change) `event_id`;
    /// returns every such delivery.
    pub fn wait_event(&self, name: &str, event_id: &str) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got: Vec<Received> = self
                .delivered(name)
                .into_iter()
                .filter(|r| {
                    r.body["event"]["metadata"]["event_id"].as_str() == Some(event_id)
                        || r.body["event_id"].as_str() == Some(event_id)
                })
                .collect();
            if !got.is_empty() {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: event {event_id} never delivered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn attempts(&self, name: &str) -> Vec<Received> {
        let path = format!("/hook/{name}");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `/hook/<name>` has `n` successful deliveries.
    pub fn wait_for(&self, name: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.delivered(name);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {n} deliveries",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn http_plugin(rx: &Receiver, name: &str, mode: &str, emit: bool) -> Value {
    json!({"enabled": true, "emit_events": emit, "name": name, "payload_mode": mode,
           "config": {"type": "http", "endpoint": rx.endpoint(name), "headers": {}}})
}

pub fn write_plugins(data_dir: &std::path::Path, defs: &[Value]) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let path = data_dir.join("plugins.json");
    let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Array(defs.to_vec())).expect("json"),
    )
    .expect("write plugins.json");
    // The server reloads the file when its modification time changes; a rewrite within the
    // file system's timestamp granularity would go unnoticed, so move the time on.
    if let Some(before) = before {
        let after = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("plugins.json written");
        if after <= before {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(before + Duration::from_secs(1)))
                .expect("move the modification time on");
        }
    }
}

pub fn targets<'a>(list: &[(&'a str, Option<&'a str>, Option<&'a str>)]) -> WriteOpts<'a> {
    WriteOpts {
        targets: Some(list.to_vec()),
        ..WriteOpts::default()
    }
}

pub fn event_id_of(reply: &Value) -> String {
    reply["metadata"]["event_id"]
        .as_str()
        .expect("event id")
        .to_owned()
}

/// `GET /metrics` from the server's HTTP listener, run for this one request.
pub fn scrape_metrics(server: &TestServer) -> String {
    http_exchange(server, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
}

/// Sends `request` to the server's HTTP listener, run for this one exchange, and reads the
/// answer to the end (the listener closes the connection after one answer).
pub fn http_exchange(server: &TestServer, request: &[u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let serving = server.server().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serving
                .serve_http(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve http");
        });
    });
    let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
    stream.write_all(request).expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let _ = stop.send(());
    thread.join().expect("http thread");
    response
}

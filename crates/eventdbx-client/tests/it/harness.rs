//! An in-process `dbx` server on 127.0.0.1 and a small TCP proxy that can misbehave on cue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdbx_client::{ClientConfig, Fingerprint, KnownV2Hosts};
use eventdbx_proto::hello::{Hello, HelloResponse, MAX_HELLO_BYTES};
use eventdbx_proto::message::StreamMessageReader;
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// Server options the tests vary.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub allow_plaintext: bool,
    pub verbose: bool,
    pub accept_v1: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_plaintext: false,
            verbose: true,
            accept_v1: true,
        }
    }
}

/// A running server with a root token for the default tenant.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub token: String,
    pub fingerprint: Fingerprint,
    options: Options,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Bound to the port for the whole test but never listening: while the server is down,
    /// connections are refused and no other socket can take the port before the restart.
    _port_hold: TcpSocket,
}

/// A listener on 127.0.0.1:`port` (0: any) that shares its port with the hold.
fn listen_on(port: u16) -> TcpListener {
    let socket = shared_port_socket();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind");
    socket.listen(1024).expect("listen")
}

fn shared_port_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
}

fn config(dir: &std::path::Path, options: Options) -> Config {
    let mut config =
        Config::from_toml_str("[storage]\ndurability = \"relaxed\"\n", dir).expect("config text");
    config.allow_plaintext = options.allow_plaintext;
    config.verbose_responses = options.verbose;
    config.accept_v1 = options.accept_v1;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::open(config(dir.path(), options)).expect("open server");
        let (token, _) = server
            .auth()
            .issue(TokenRequest {
                group: "ops".into(),
                user: "jane".into(),
                actions: vec!["*".into()],
                ttl_secs: Some(0),
                ..TokenRequest::default()
            })
            .expect("issue token");
        let fingerprint = server.fingerprint();
        let listener = listen_on(0);
        let port = listener.local_addr().expect("addr").port();
        let hold = shared_port_socket();
        hold.bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("hold the port");
        let mut this = TestServer {
            dir,
            port,
            token,
            fingerprint,
            options,
            stop: None,
            task: None,
            _port_hold: hold,
        };
        this.serve(server, listener);
        this
    }

    fn serve(&mut self, server: Server, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
                .expect("server run");
        }));
    }

    /// Stops the server (closing every connection) and waits until its store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// Starts the server again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        // `run` returned only once nothing of the stopped server held the store: it opens now.
        let server = Server::open(config(self.dir.path(), self.options))
            .unwrap_or_else(|err| panic!("reopen server: {err:?}"));
        let listener = listen_on(self.port);
        self.serve(server, listener);
    }

    /// A client configuration for this server (default transport: v2), remembering v2 servers in
    /// [`TestServer::known_v2_hosts`] rather than in the user's state directory.
    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(self.token.clone(), "default")
            .port(self.port)
            .known_v2_hosts(KnownV2Hosts::File(self.known_v2_hosts()))
            // Generous: a loaded machine must not turn a slow answer into a failed test.
            .connect_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(60))
    }
}

impl TestServer {
    /// The known-hosts file of this test's clients.
    pub fn known_v2_hosts(&self) -> std::path::PathBuf {
        self.dir.path().join("known_v2_hosts")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What the proxy does to the next chunk of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Drop the connection instead of forwarding the client's next bytes.
    DropNextRequest,
    /// Drop the connection instead of forwarding the server's next bytes.
    DropNextResponse,
    /// Hold the server's next bytes this long.
    DelayNextResponse(Duration),
    /// Hold the server's next bytes until [`Proxy::release`]; [`Proxy::forwarded`] then says
    /// when they have been written to the client.
    HoldNextResponse,
}

/// A TCP proxy in front of a server.
pub struct Proxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    /// Every byte relayed, both directions.
    pub captured: Arc<Mutex<Vec<u8>>>,
    fault: Arc<Mutex<Fault>>,
    reject_v2: Arc<AtomicBool>,
    held: Arc<Held>,
    task: JoinHandle<()>,
}

/// The hand-over of a held answer: the test releases it, the relay reports it forwarded.
#[derive(Default)]
struct Held {
    release: Notify,
    forwarded: Notify,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Forwards to `upstream`. With `reject_v2`, answers a v2 hello itself as EventDBX does
    /// (`unsupported control protocol version 2`), so the proxy looks like a v1-only server.
    pub async fn start(upstream: u16, reject_v2: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let fault = Arc::new(Mutex::new(Fault::None));
        let captured = Arc::new(Mutex::new(Vec::new()));
        let reject = Arc::new(AtomicBool::new(reject_v2));
        let shared_reject = Arc::clone(&reject);
        let (count, shared_fault) = (Arc::clone(&connections), Arc::clone(&fault));
        let shared_capture = Arc::clone(&captured);
        let held = Arc::new(Held::default());
        let shared_held = Arc::clone(&held);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let fault = Arc::clone(&shared_fault);
                let capture = Arc::clone(&shared_capture);
                let reject_v2 = shared_reject.load(Ordering::SeqCst);
                let held = Arc::clone(&shared_held);
                tokio::spawn(async move {
                    let _ = relay(socket, upstream, fault, capture, held, reject_v2).await;
                });
            }
        });
        Proxy {
            port,
            connections,
            captured,
            fault,
            reject_v2: reject,
            held,
            task,
        }
    }

    pub fn arm(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    /// From now on, answer v2 hellos as a v1-only server would.
    pub fn reject_v2(&self, reject: bool) {
        self.reject_v2.store(reject, Ordering::SeqCst);
    }

    /// Lets an answer held by [`Fault::HoldNextResponse`] go on to the client.
    pub fn release(&self) {
        self.held.release.notify_one();
    }

    /// Resolves once a released answer has been written to the client.
    pub async fn forwarded(&self) {
        self.held.forwarded.notified().await;
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn take_fault(fault: &Mutex<Fault>, wanted: fn(Fault) -> bool) -> Option<Fault> {
    let mut fault = fault.lock().expect("fault lock");
    if wanted(*fault) {
        Some(std::mem::replace(&mut *fault, Fault::None))
    } else {
        None
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: u16,
    fault: Arc<Mutex<Fault>>,
    capture: Arc<Mutex<Vec<u8>>>,
    held: Arc<Held>,
    reject_v2: bool,
) -> std::io::Result<()> {
    let record = |bytes: &[u8]| capture.lock().expect("capture").extend_from_slice(bytes);
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], upstream))).await?;
    server.set_nodelay(true)?;
    if reject_v2 {
        let mut reader = StreamMessageReader::new(MAX_HELLO_BYTES);
        while reader.bytes_needed() > 0 {
            let mut buf = vec![0u8; reader.bytes_needed()];
            client.read_exact(&mut buf).await?;
            reader.feed(&buf).map_err(std::io::Error::other)?;
        }
        let hello = reader.into_message().expect("complete hello");
        let version = Hello::decode(&hello)
            .map_err(std::io::Error::other)?
            .protocol_version;
        if version != 1 {
            let refusal = HelloResponse::rejected(
                format!("unsupported control protocol version {version}"),
                false,
            );
            record(&hello);
            record(&refusal.encode());
            client.write_all(&refusal.encode()).await?;
            return Ok(());
        }
        record(&hello);
        server.write_all(&hello).await?;
    }
    let (mut to_server, mut to_client) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            read = client.read(&mut to_server) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                if take_fault(&fault, |f| f == Fault::DropNextRequest).is_some() {
                    return Ok(());
                }
                record(&to_server[..n]);
                server.write_all(&to_server[..n]).await?;
            }
            read = server.read(&mut to_client) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                let taken = take_fault(&fault, |f| {
                    matches!(
                        f,
                        Fault::DropNextResponse
                            | Fault::DelayNextResponse(_)
                            | Fault::HoldNextResponse
                    )
                });
                match taken {
                    Some(Fault::DropNextResponse) => return Ok(()),
                    Some(Fault::DelayNextResponse(delay)) => tokio::time::sleep(delay).await,
                    Some(Fault::HoldNextResponse) => held.release.notified().await,
                    _ => {}
                }
                record(&to_client[..n]);
                client.write_all(&to_client[..n]).await?;
                if taken == Some(Fault::HoldNextResponse) {
                    held.forwarded.notify_one();
                }
            }
        }
    }
}

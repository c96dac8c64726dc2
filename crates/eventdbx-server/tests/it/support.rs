//! A real server on `127.0.0.1:0` and a small blocking client built only from `eventdbx-proto`.
//!
//! The client speaks exactly the bytes of `01-wire-protocol.md`: a raw hello, the v1
//! (`Noise_NNpsk0`) or v2 (`Noise_XXpsk3`) handshake, then framed `ControlRequest`s. It records
//! every byte it sends and receives so tests can inspect the wire.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use eventdbx_proto::frame;
use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::noise::v2::{self, Fingerprint};
use eventdbx_proto::noise::{v1, Session};
use eventdbx_proto::schema::control_capnp::control_request;
use eventdbx_proto::schema::control_capnp::control_response::payload::Which;
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;
use eventdbx_store::Durability;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// Every action of the common set-up token `T` (`04-acceptance.md`), plus the schema actions.
pub const ALL_ACTIONS: [&str; 7] = [
    "aggregate.create",
    "aggregate.append",
    "aggregate.archive",
    "aggregate.read",
    "tenant.manage",
    "schema.read",
    "schema.write",
];

/// How long a test waits for the server before calling it hung.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A server running in a background thread on its own multi-thread runtime.
pub struct TestServer {
    /// The control address.
    pub addr: SocketAddr,
    server: Server,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on a fresh data directory; `adjust` edits the default config first
    /// (durability starts `relaxed`: these tests are not about fsync).
    pub fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = TempDir::new().expect("temp dir");
        let mut config = Config::defaults(dir.path().join("data"));
        config.storage.durability = Durability::Relaxed;
        adjust(&mut config);
        let server = Server::open(config).expect("open server");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serving
                    .run(listener, async {
                        let _ = stop.await;
                    })
                    .await
                    .expect("server run");
            });
        });
        TestServer {
            addr,
            server,
            dir,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The opened server (token authority, fingerprint, config).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory holding everything.
    #[allow(dead_code)]
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The v2 fingerprint clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.server.fingerprint()
    }

    /// A token for group `ops`, user `jane`, resources `*`.
    pub fn token(&self, actions: &[&str], tenants: &[&str]) -> String {
        self.token_for(actions, &["*"], tenants)
    }

    /// A token with explicit resources.
    pub fn token_for(&self, actions: &[&str], resources: &[&str], tenants: &[&str]) -> String {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        self.server
            .auth()
            .issue(TokenRequest {
                group: "ops".into(),
                user: "jane".into(),
                actions: strings(actions),
                resources: strings(resources),
                tenants: strings(tenants),
                ttl_secs: Some(3600),
                ..TokenRequest::default()
            })
            .expect("issue token")
            .0
    }

    /// The common set-up token `T` (every action, every tenant).
    pub fn admin_token(&self) -> String {
        self.token(&ALL_ACTIONS, &[])
    }

    /// A v2 session for `tenant` with the admin token, pinned to this server's key.
    pub fn v2(&self, tenant: &str) -> Client {
        connect_v2(
            self.addr,
            &self.admin_token(),
            tenant,
            Some(self.fingerprint()),
        )
        .expect("v2 session")
    }

    /// A v1 (Noise) session for `tenant` with the admin token.
    pub fn v1(&self, tenant: &str) -> Client {
        connect_v1(self.addr, &self.admin_token(), tenant, false).expect("v1 session")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP stream that records both directions.
pub struct Wire {
    stream: TcpStream,
    /// Every byte written.
    pub sent: Vec<u8>,
    /// Every byte read.
    pub received: Vec<u8>,
}

impl Wire {
    /// Connects with timeouts and `TCP_NODELAY`.
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Wire {
            stream,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Writes all of `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sent.extend_from_slice(bytes);
        self.stream.write_all(bytes)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.stream.read_exact(buf)?;
        self.received.extend_from_slice(buf);
        Ok(())
    }

    /// Reads one raw stream message (a hello response or a CLI response).
    pub fn read_stream_message(&mut self) -> Result<Vec<u8>, String> {
        let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
        while reader.bytes_needed() > 0 {
            let mut buf = vec![0u8; reader.bytes_needed()];
            self.read_exact(&mut buf)
                .map_err(|err| format!("connection closed before a reply: {err}"))?;
            reader.feed(&buf).map_err(|err| err.to_string())?;
        }
        reader.into_message().ok_or_else(|| "incomplete".into())
    }

    /// Reads one frame's payload.
    pub fn read_frame(&mut self, limit: usize) -> Result<Vec<u8>, String> {
        let mut header = [0u8; frame::HEADER_LEN];
        self.read_exact(&mut header)
            .map_err(|err| format!("connection closed: {err}"))?;
        let len = frame::payload_len(header, limit).map_err(|err| err.to_string())?;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)
            .map_err(|err| format!("connection closed mid-frame: {err}"))?;
        Ok(payload)
    }

    /// True when the peer closed the connection (EOF or reset) without sending anything more.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Sends `hello` bytes and reads the raw reply message (or why there was none).
pub fn raw_exchange(addr: SocketAddr, hello: &[u8]) -> Result<(Wire, Vec<u8>), String> {
    let mut wire = Wire::connect(addr);
    wire.write(hello).map_err(|err| err.to_string())?;
    let reply = wire.read_stream_message()?;
    Ok((wire, reply))
}

/// Sends a hello and decodes the hello response.
pub fn hello_exchange(addr: SocketAddr, hello: &Hello) -> (Wire, Vec<u8>, HelloResponse) {
    let bytes = hello.encode();
    let (wire, reply) = raw_exchange(addr, &bytes).expect("hello response");
    let response = HelloResponse::decode(&reply).expect("decode hello response");
    (wire, reply, response)
}

/// A v1 hello.
pub fn v1_hello(token: &str, tenant: &str, no_noise: bool) -> Hello {
    Hello {
        protocol_version: 1,
        token: token.into(),
        tenant_id: tenant.into(),
        no_noise,
    }
}

/// The transport after the handshake.
enum Transport {
    Plain,
    V1(Session),
    V2(v2::ChunkedSession),
}

/// A control error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code.
    pub code: String,
    /// Display text.
    pub message: String,
}

impl ApiError {
    /// `(code, message)` for assertions.
    pub fn pair(&self) -> (&str, &str) {
        (&self.code, &self.message)
    }
}

/// A reply: its JSON view, or the error.
pub type Reply = Result<Value, ApiError>;

/// A connected control session.
pub struct Client {
    /// The socket, with everything sent and received so far.
    pub wire: Wire,
    /// The hello response.
    pub hello: HelloResponse,
    /// The per-request token the typed helpers send.
    pub token: String,
    transport: Transport,
    next_id: u64,
}

/// Connects with protocol v1: Noise unless `no_noise`; the error is the hello's rejection message
/// or why the handshake failed.
pub fn connect_v1(
    addr: SocketAddr,
    token: &str,
    tenant: &str,
    no_noise: bool,
) -> Result<Client, String> {
    let token = token.trim();
    let (mut wire, _, hello) = hello_exchange(addr, &v1_hello(token, tenant, no_noise));
    if !hello.accepted {
        return Err(hello.message);
    }
    if no_noise && !hello.no_noise {
        return Err("server refused the plaintext control channel".into());
    }
    let transport = if hello.no_noise {
        Transport::Plain
    } else {
        let mut initiator = v1::Initiator::new(token).map_err(|e| e.to_string())?;
        let msg1 = initiator.write_message1().map_err(|e| e.to_string())?;
        let framed = frame::encode(&msg1, frame::V1_MAX_NOISE_FRAME).map_err(|e| e.to_string())?;
        wire.write(&framed).map_err(|e| e.to_string())?;
        let msg2 = wire
            .read_frame(frame::V1_MAX_NOISE_FRAME)
            .map_err(|e| format!("handshake failed: {e}"))?;
        Transport::V1(
            initiator
                .read_message2(&msg2)
                .map_err(|e| format!("handshake failed: {e}"))?,
        )
    };
    Ok(Client {
        wire,
        hello,
        token: token.to_owned(),
        transport,
        next_id: 1,
    })
}

/// Connects with protocol v2, optionally pinning the server key.
pub fn connect_v2(
    addr: SocketAddr,
    token: &str,
    tenant: &str,
    pin: Option<Fingerprint>,
) -> Result<Client, String> {
    let hello_bytes = Hello {
        protocol_version: v2::PROTOCOL_VERSION,
        token: String::new(),
        tenant_id: tenant.into(),
        no_noise: false,
    }
    .encode();
    let (mut wire, response_bytes) = raw_exchange(addr, &hello_bytes)?;
    let hello = HelloResponse::decode(&response_bytes).map_err(|e| e.to_string())?;
    if !hello.accepted {
        return Err(hello.message);
    }
    let prologue = v2::prologue(&hello_bytes, &response_bytes);
    let step = |e: eventdbx_proto::ProtoError| format!("handshake failed: {e}");
    let mut initiator =
        v2::Initiator::new(token, pin, v2::DEFAULT_MAX_MESSAGE, &prologue).map_err(step)?;
    let msg1 = initiator.write_message1().map_err(step)?;
    wire.write(&frame::encode(&msg1, v2::FRAME_LIMIT).map_err(step)?)
        .map_err(|e| e.to_string())?;
    let msg2 = wire
        .read_frame(v2::FRAME_LIMIT)
        .map_err(|e| format!("handshake failed: {e}"))?;
    initiator.read_message2(&msg2).map_err(step)?;
    let (msg3, awaiting) = initiator.write_message3().map_err(step)?;
    wire.write(&frame::encode(&msg3, v2::FRAME_LIMIT).map_err(step)?)
        .map_err(|e| e.to_string())?;
    let verdict = wire
        .read_frame(v2::FRAME_LIMIT)
        .map_err(|e| format!("handshake failed: {e}"))?;
    let session = awaiting.read_verdict(&verdict).map_err(step)?;
    Ok(Client {
        wire,
        hello,
        token: token.trim().to_owned(),
        transport: Transport::V2(session),
        next_id: 1,
    })
}

/// A publish target: `(plugin, mode, priority)`.
pub type Target<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// Options of a write (`appendEvent`, `patchEvent`, `createAggregate`).
#[derive(Default, Clone)]
pub struct WriteOpts<'a> {
    pub note: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub expected_version: Option<u64>,
    pub idempotency_key: Option<&'a str>,
    pub targets: Option<Vec<Target<'a>>>,
}

/// Options of `listAggregates`.
#[derive(Default, Clone)]
pub struct ListOpts<'a> {
    pub take: Option<u64>,
    pub cursor: Option<&'a str>,
    pub filter: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub include_archived: bool,
    pub archived_only: bool,
}

#[derive(Clone, Copy)]
enum WriteKind {
    Create,
    Append,
    Patch,
}

macro_rules! fill_write {
    ($w:expr, $token:expr, $t:expr, $i:expr, $e:expr, $opts:expr) => {{
        let mut w = $w;
        let opts: &WriteOpts<'_> = $opts;
        w.set_token($token);
        w.set_aggregate_type($t);
        w.set_aggregate_id($i);
        w.set_event_type($e);
        if let Some(note) = opts.note {
            w.set_note(note);
            w.set_has_note(true);
        }
        if let Some(metadata) = opts.metadata {
            w.set_metadata_json(metadata);
            w.set_has_metadata(true);
        }
        if let Some(version) = opts.expected_version {
            w.set_expected_version(version);
            w.set_has_expected_version(true);
        }
        if let Some(key) = opts.idempotency_key {
            w.set_idempotency_key(key);
        }
        if let Some(targets) = &opts.targets {
            w.set_has_publish_targets(true);
            let mut list = w.reborrow().init_publish_targets(targets.len() as u32);
            for (n, (plugin, mode, priority)) in targets.iter().enumerate() {
                let mut target = list.reborrow().get(n as u32);
                target.set_plugin(*plugin);
                if let Some(mode) = mode {
                    target.set_mode(*mode);
                    target.set_has_mode(true);
                }
                if let Some(priority) = priority {
                    target.set_priority(*priority);
                    target.set_has_priority(true);
                }
            }
        }
        w
    }};
}

impl Client {
    /// The protocol version of this session.
    pub fn is_v2(&self) -> bool {
        matches!(self.transport, Transport::V2(_))
    }

    /// Encrypts (or not) and writes one logical message.
    pub fn send_message(&mut self, message: &[u8]) -> Result<(), String> {
        let bytes = self.seal(message)?;
        self.wire.write(&bytes).map_err(|e| e.to_string())
    }

    /// One logical message as it goes on the wire: framed, and encrypted unless plaintext.
    pub fn seal(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(match &mut self.transport {
            Transport::Plain => {
                frame::encode(message, frame::V1_MAX_PLAINTEXT_FRAME).map_err(|e| e.to_string())?
            }
            Transport::V1(session) => {
                let sealed = session.sealer.seal(message).map_err(|e| e.to_string())?;
                frame::encode(&sealed, frame::V1_MAX_NOISE_FRAME).map_err(|e| e.to_string())?
            }
            Transport::V2(session) => session
                .sealer
                .seal_message(message)
                .map_err(|e| e.to_string())?,
        })
    }

    /// Reads and decrypts one logical message.
    pub fn recv_message(&mut self) -> Result<Vec<u8>, String> {
        match &mut self.transport {
            Transport::Plain => self.wire.read_frame(frame::V1_MAX_PLAINTEXT_FRAME),
            Transport::V1(session) => {
                let payload = self.wire.read_frame(frame::V1_MAX_NOISE_FRAME)?;
                session.opener.open(&payload).map_err(|e| e.to_string())
            }
            Transport::V2(session) => loop {
                let payload = self.wire.read_frame(v2::FRAME_LIMIT)?;
                if let Some(message) = session
                    .opener
                    .open_frame(&payload)
                    .map_err(|e| e.to_string())?
                {
                    return Ok(message);
                }
            },
        }
    }

    /// Sends a request built by `build` with a fresh id; returns the id.
    pub fn send(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<u64, String> {
        let (id, message) = self.encode(build)?;
        self.send_message(&message)?;
        Ok(id)
    }

    /// Sends a request like [`Client::send`], its wire bytes cut into `pieces` writes with
    /// `pause` between two; returns the id.
    pub fn send_in_pieces(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
        pieces: usize,
        pause: Duration,
    ) -> Result<u64, String> {
        let (id, message) = self.encode(build)?;
        let bytes = self.seal(&message)?;
        let size = bytes.len().div_ceil(pieces.max(1));
        for (n, piece) in bytes.chunks(size).enumerate() {
            if n > 0 {
                std::thread::sleep(pause);
            }
            self.wire.write(piece).map_err(|e| e.to_string())?;
        }
        Ok(id)
    }

    /// A request with a fresh id: `(id, unframed bytes)`.
    fn encode(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<(u64, Vec<u8>), String> {
        let id = self.next_id;
        self.next_id += 1;
        let message = message::encode_request(|mut request| {
            request.set_id(id);
            build(request.init_payload());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok((id, message))
    }

    /// Reads one response: `(id, raw bytes)`.
    pub fn recv(&mut self) -> Result<(u64, Vec<u8>), String> {
        let bytes = self.recv_message()?;
        let decoded = message::decode_response(&bytes).map_err(|e| e.to_string())?;
        let id = decoded.get().map_err(|e| e.to_string())?.get_id();
        Ok((id, bytes))
    }

    /// One request, one response; the response id must equal the request id.
    pub fn try_call(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Result<Vec<u8>, String> {
        let id = self.send(build)?;
        let (got, bytes) = self.recv()?;
        if got != id {
            return Err(format!("response id {got} does not match request id {id}"));
        }
        Ok(bytes)
    }

    /// [`Client::try_call`], panicking on transport failures.
    pub fn call(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Vec<u8> {
        self.try_call(build).expect("request answered")
    }

    /// [`Client::call`] decoded to its JSON view.
    pub fn request(
        &mut self,
        build: impl for<'a> FnOnce(control_request::payload::Builder<'a>),
    ) -> Reply {
        decode(&self.call(build))
    }

    fn write(
        &mut self,
        kind: WriteKind,
        t: &str,
        i: &str,
        event_type: &str,
        body: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| match kind {
            WriteKind::Create => {
                let mut w = fill_write!(p.init_create_aggregate(), &token, t, i, event_type, opts);
                w.set_payload_json(body);
            }
            WriteKind::Append => {
                let mut w = fill_write!(p.init_append_event(), &token, t, i, event_type, opts);
                w.set_payload_json(body);
            }
            WriteKind::Patch => {
                let mut w = fill_write!(p.init_patch_event(), &token, t, i, event_type, opts);
                w.set_patch_json(body);
            }
        })
    }

    /// `createAggregate`.
    pub fn create(&mut self, t: &str, i: &str, event_type: &str, payload: &str) -> Reply {
        self.create_with(t, i, event_type, payload, &WriteOpts::default())
    }

    /// `createAggregate` with options.
    pub fn create_with(
        &mut self,
        t: &str,
        i: &str,
        event_type: &str,
        payload: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        self.write(WriteKind::Create, t, i, event_type, payload, opts)
    }

    /// `appendEvent`.
    pub fn apply(&mut self, t: &str, i: &str, event_type: &str, payload: &str) -> Reply {
        self.apply_with(t, i, event_type, payload, &WriteOpts::default())
    }

    /// `appendEvent` with options.
    pub fn apply_with(
        &mut self,
        t: &str,
        i: &str,
        event_type: &str,
        payload: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        self.write(WriteKind::Append, t, i, event_type, payload, opts)
    }

    /// `patchEvent`.
    pub fn patch(&mut self, t: &str, i: &str, event_type: &str, patch: &str) -> Reply {
        self.write(
            WriteKind::Patch,
            t,
            i,
            event_type,
            patch,
            &WriteOpts::default(),
        )
    }

    /// `getAggregate` → `{found, aggregate}`.
    pub fn get(&mut self, t: &str, i: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_get_aggregate();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
        })
    }

    /// `selectAggregate` → `{found, selection}`.
    pub fn select(&mut self, t: &str, i: &str, fields: &[&str]) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_select_aggregate();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            let mut list = r.init_fields(fields.len() as u32);
            for (n, field) in fields.iter().enumerate() {
                list.set(n as u32, *field);
            }
        })
    }

    /// `listAggregates` → `{aggregates, next_cursor}`.
    pub fn list(&mut self, opts: &ListOpts<'_>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_aggregates();
            r.set_token(token.as_str());
            if let Some(take) = opts.take {
                r.set_take(take);
                r.set_has_take(true);
            }
            if let Some(cursor) = opts.cursor {
                r.set_cursor(cursor);
                r.set_has_cursor(true);
            }
            if let Some(filter) = opts.filter {
                r.set_filter(filter);
                r.set_has_filter(true);
            }
            if let Some(sort) = opts.sort {
                r.set_sort(sort);
                r.set_has_sort(true);
            }
            r.set_include_archived(opts.include_archived);
            r.set_archived_only(opts.archived_only);
        })
    }

    /// `listEvents` → `{events, next_cursor}`.
    pub fn events(
        &mut self,
        t: &str,
        i: &str,
        take: Option<u64>,
        cursor: Option<&str>,
        filter: Option<&str>,
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_events();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            if let Some(take) = take {
                r.set_take(take);
                r.set_has_take(true);
            }
            if let Some(cursor) = cursor {
                r.set_cursor(cursor);
                r.set_has_cursor(true);
            }
            if let Some(filter) = filter {
                r.set_filter(filter);
                r.set_has_filter(true);
            }
        })
    }

    /// `verifyAggregate` → the root string (authorised by the hello token).
    pub fn verify(&mut self, t: &str, i: &str) -> Reply {
        self.request(|p| {
            let mut r = p.init_verify_aggregate();
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
        })
    }

    /// `setAggregateArchive` → the aggregate.
    pub fn set_archived(&mut self, t: &str, i: &str, archived: bool, note: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_set_aggregate_archive();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            r.set_archived(archived);
            if let Some(note) = note {
                r.set_note(note);
                r.set_has_note(true);
            }
        })
    }

    /// `setAggregateArchive` with publish targets (ours, @6/@7).
    pub fn set_archived_with(
        &mut self,
        t: &str,
        i: &str,
        archived: bool,
        targets: &[Target<'_>],
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_set_aggregate_archive();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            r.set_archived(archived);
            r.set_has_publish_targets(true);
            let mut list = r.init_publish_targets(targets.len() as u32);
            for (n, (plugin, mode, priority)) in targets.iter().enumerate() {
                let mut target = list.reborrow().get(n as u32);
                target.set_plugin(*plugin);
                if let Some(mode) = mode {
                    target.set_mode(*mode);
                    target.set_has_mode(true);
                }
                if let Some(priority) = priority {
                    target.set_priority(*priority);
                    target.set_has_priority(true);
                }
            }
        })
    }

    /// `admin` (ours, @24) with a token of this session's choosing.
    pub fn admin_as(&mut self, token: &str, action: &str, args: Value) -> Reply {
        let args = args.to_string();
        self.request(|p| {
            let mut r = p.init_admin();
            r.set_token(token);
            r.set_action(action);
            r.set_args_json(args.as_str());
        })
    }

    /// `admin` with the session's token.
    pub fn admin(&mut self, action: &str, args: Value) -> Reply {
        let token = self.token.clone();
        self.admin_as(&token, action, args)
    }

    /// `createSnapshot` → the snapshot.
    pub fn create_snapshot(&mut self, t: &str, i: &str, comment: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_create_snapshot();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            if let Some(comment) = comment {
                r.set_comment(comment);
                r.set_has_comment(true);
            }
        })
    }

    /// `listSnapshots` → the array.
    pub fn list_snapshots(&mut self, t: Option<&str>, i: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_snapshots();
            r.set_token(token.as_str());
            if let Some(t) = t {
                r.set_aggregate_type(t);
                r.set_has_aggregate_type(true);
            }
            if let Some(i) = i {
                r.set_aggregate_id(i);
                r.set_has_aggregate_id(true);
            }
        })
    }

    /// `getSnapshot` → `{found, snapshot}`.
    pub fn get_snapshot(&mut self, id: u64) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_get_snapshot();
            r.set_token(token.as_str());
            r.set_snapshot_id(id);
        })
    }

    /// `readOutbox` → `{events, next_after_event_id}`.
    pub fn outbox(&mut self, after: Option<u64>, take: Option<u64>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_read_outbox();
            r.set_token(token.as_str());
            if let Some(after) = after {
                r.set_after_event_id(after);
                r.set_has_after_event_id(true);
            }
            if let Some(take) = take {
                r.set_take(take);
                r.set_has_take(true);
            }
        })
    }

    /// `listSchemas` → the schema map.
    pub fn list_schemas(&mut self) -> Reply {
        let token = self.token.clone();
        self.request(|p| p.init_list_schemas().set_token(token.as_str()))
    }

    /// `replaceSchemas` → the count.
    pub fn replace_schemas(&mut self, schemas_json: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_replace_schemas();
            r.set_token(token.as_str());
            r.set_schemas_json(schemas_json);
        })
    }

    /// `tenantAssign` → `{changed, shard_id}`.
    pub fn tenant_assign(&mut self, tenant: &str, shard: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_assign();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_shard_id(shard);
        })
    }

    /// `tenantUnassign` → `{changed}`.
    pub fn tenant_unassign(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_unassign();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantQuotaSet` → `{changed, quota_mb, has_quota}`.
    pub fn quota_set(&mut self, tenant: &str, mb: u64) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_set();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_max_storage_mb(mb);
        })
    }

    /// `tenantQuotaClear` → `{changed}`.
    pub fn quota_clear(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_clear();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantQuotaRecalc` → `{storage_bytes}`.
    pub fn quota_recalc(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_recalc();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantReload` → `{reloaded}`.
    pub fn tenant_reload(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_reload();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantList` (ours) → the array of tenants.
    pub fn tenant_list(&mut self) -> Reply {
        let token = self.token.clone();
        self.request(|p| p.init_tenant_list().set_token(token.as_str()))
    }

    /// `tenantSchemaHistory` (ours) → the manifest.
    pub fn schema_history(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_history();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantSchemaActivate` (ours) → `{version_id, activated, action}`.
    pub fn schema_activate(&mut self, tenant: &str, version: &str, reason: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_activate();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_version_id(version);
            if let Some(reason) = reason {
                r.set_reason(reason);
                r.set_has_reason(true);
            }
        })
    }

    /// `tenantSchemaPublish` → `{version_id, activated, skipped}`.
    pub fn schema_publish(
        &mut self,
        tenant: &str,
        reason: Option<&str>,
        activate: bool,
        force: bool,
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_publish();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            if let Some(reason) = reason {
                r.set_reason(reason);
                r.set_has_reason(true);
            }
            r.set_activate(activate);
            r.set_force(force);
        })
    }
}

fn text(field: capnp::Result<capnp::text::Reader<'_>>) -> String {
    field
        .expect("text field")
        .to_str()
        .expect("utf-8 text")
        .to_owned()
}

fn parse(field: capnp::Result<capnp::text::Reader<'_>>) -> Value {
    let raw = text(field);
    if raw.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&raw).unwrap_or_else(|err| panic!("reply JSON {raw:?}: {err}"))
}

fn cursor(has: bool, field: capnp::Result<capnp::text::Reader<'_>>) -> Value {
    if has {
        Value::String(text(field))
    } else {
        Value::Null
    }
}

/// The JSON view of a `ControlResponse`: JSON text fields parsed, flags folded in.
pub fn decode(bytes: &[u8]) -> Reply {
    let decoded = message::decode_response(bytes).expect("decode response");
    let response = decoded.get().expect("response root");
    let which = response
        .get_payload()
        .which()
        .expect("known response member");
    Ok(match which {
        Which::Error(e) => {
            let e = e.expect("error");
            return Err(ApiError {
                code: text(e.get_code()),
                message: text(e.get_message()),
            });
        }
        Which::ListAggregates(r) => {
            let r = r.expect("member");
            json!({"aggregates": parse(r.get_aggregates_json()),
                   "next_cursor": cursor(r.get_has_next_cursor(), r.get_next_cursor())})
        }
        Which::GetAggregate(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "aggregate": parse(r.get_aggregate_json())})
        }
        Which::ListEvents(r) => {
            let r = r.expect("member");
            json!({"events": parse(r.get_events_json()),
                   "next_cursor": cursor(r.get_has_next_cursor(), r.get_next_cursor())})
        }
        Which::AppendEvent(r) => parse(r.expect("member").get_event_json()),
        Which::VerifyAggregate(r) => Value::String(text(r.expect("member").get_merkle_root())),
        Which::SelectAggregate(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "selection": parse(r.get_selection_json())})
        }
        Which::CreateAggregate(r) => parse(r.expect("member").get_aggregate_json()),
        Which::SetAggregateArchive(r) => parse(r.expect("member").get_aggregate_json()),
        Which::ListSchemas(r) => parse(r.expect("member").get_schemas_json()),
        Which::ReplaceSchemas(r) => json!(r.expect("member").get_replaced()),
        Which::TenantAssign(r) => {
            let r = r.expect("member");
            json!({"changed": r.get_changed(), "shard_id": text(r.get_shard_id())})
        }
        Which::TenantUnassign(r) => json!({"changed": r.expect("member").get_changed()}),
        Which::TenantQuotaSet(r) => {
            let r = r.expect("member");
            json!({"changed": r.get_changed(), "quota_mb": r.get_quota_mb(),
                   "has_quota": r.get_has_quota()})
        }
        Which::TenantQuotaClear(r) => json!({"changed": r.expect("member").get_changed()}),
        Which::TenantQuotaRecalc(r) => {
            json!({"storage_bytes": r.expect("member").get_storage_bytes()})
        }
        Which::TenantReload(r) => json!({"reloaded": r.expect("member").get_reloaded()}),
        Which::TenantSchemaPublish(r) => {
            let r = r.expect("member");
            json!({"version_id": text(r.get_version_id()), "activated": r.get_activated(),
                   "skipped": r.get_skipped()})
        }
        Which::CreateSnapshot(r) => parse(r.expect("member").get_snapshot_json()),
        Which::ListSnapshots(r) => parse(r.expect("member").get_snapshots_json()),
        Which::GetSnapshot(r) => {
            let r = r.expect("member");
            json!({"found": r.get_found(), "snapshot": parse(r.get_snapshot_json())})
        }
        Which::ListReferrers(r) => parse(r.expect("member").get_referrers_json()),
        Which::Admin(r) => parse(r.expect("member").get_result_json()),
        Which::ReadOutbox(r) => {
            let r = r.expect("member");
            let next = if r.get_has_next_after_event_id() {
                json!(r.get_next_after_event_id())
            } else {
                Value::Null
            };
            json!({"events": parse(r.get_events_json()), "next_after_event_id": next})
        }
        Which::TenantList(r) => parse(r.expect("member").get_tenants_json()),
        Which::TenantSchemaHistory(r) => parse(r.expect("member").get_manifest_json()),
        Which::TenantSchemaActivate(r) => {
            let r = r.expect("member");
            json!({"version_id": text(r.get_version_id()), "activated": r.get_activated(),
                   "action": text(r.get_action())})
        }
    })
}

/// The error of a reply that must fail.
#[track_caller]
pub fn err(reply: Reply) -> ApiError {
    match reply {
        Ok(value) => panic!("expected an error, got {value}"),
        Err(err) => err,
    }
}

/// The value of a reply that must succeed.
#[track_caller]
pub fn ok(reply: Reply) -> Value {
    match reply {
        Ok(value) => value,
        Err(err) => panic!("expected success, got {}: {}", err.code, err.message),
    }
}

/// The `order` schema of the common set-up (events `order_created`, `order_status_updated`).
pub const ORDER_SCHEMA: &str = r#"{"order": {"aggregate": "order", "snapshot_threshold": null,
  "locked": false, "field_locks": [], "hidden": false, "hidden_fields": [], "column_types": {},
  "events": {"order_created": {"fields": []}, "order_status_updated": {"fields": []}},
  "created_at": "2025-11-27T10:00:00Z", "updated_at": "2025-11-27T10:00:00Z"}}"#;

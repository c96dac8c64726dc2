//! A connection flood (`docs/server.md`, "Connection limits"): hundreds of connections send
//! random bytes, oversize length headers, or a hello and a Noise message one byte at a time and
//! then stop midway, while a real client keeps connecting and getting answers. Every attacking
//! connection is closed by the server (its deadline, an eviction or a refusal), each is counted,
//! and a fresh client works afterwards.
//!
//! The attackers connect from other loopback addresses (127.0.0.2–5) than the client
//! (127.0.0.1): the pending budget is per source address, and what is tested is that one
//! address's flood never locks out another's client.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdbx_proto::frame;
use eventdbx_proto::hello::Hello;
use eventdbx_proto::noise::v2;
use socket2::{Domain, Socket, Type};

use crate::support::*;

/// Attacking connections of each kind.
const EACH: usize = 40;
/// Attacking source addresses: 127.0.0.2 and up.
const SOURCES: u8 = 4;

/// A small deterministic generator: the "random" bytes are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// What one attacking connection does before it falls silent.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// 1 KiB of random bytes instead of a hello.
    RandomBytes,
    /// A stream-message header announcing more segments than a hello may have.
    OversizeHello,
    /// A valid v2 hello, then a frame header announcing 4 GiB.
    OversizeFrame,
    /// Half a v2 hello, one byte at a time.
    SlowHello,
    /// A valid v2 hello, then half of Noise msg1, one byte at a time.
    SlowNoise,
}

const ATTACKS: [Attack; 5] = [
    Attack::RandomBytes,
    Attack::OversizeHello,
    Attack::OversizeFrame,
    Attack::SlowHello,
    Attack::SlowNoise,
];

fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source address");
    socket.connect(&server.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn v2_hello() -> Vec<u8> {
    Hello {
        protocol_version: v2::PROTOCOL_VERSION,
        token: String::new(),
        tenant_id: "default".into(),
        no_noise: false,
    }
    .encode()
}

/// Reads the hello response (a raw stream message) off `stream`.
fn hello_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut reader =
        eventdbx_proto::message::StreamMessageReader::new(eventdbx_proto::hello::MAX_HELLO_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream.read_exact(&mut buf).expect("hello response");
        reader.feed(&buf).expect("valid response");
    }
    reader.into_message().expect("whole response")
}

/// Writes `bytes` one at a time, pausing between two: a peer on a very slow link.
fn trickle(stream: &mut TcpStream, bytes: &[u8]) {
    for byte in bytes {
        stream.write_all(&[*byte]).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts one attack; the connection is left open, silent.
fn attack(kind: Attack, stream: &mut TcpStream, random: &mut XorShift) {
    match kind {
        Attack::RandomBytes => stream.write_all(&random.bytes(1024)).expect("write"),
        Attack::OversizeHello => stream.write_all(&[0xff; 8]).expect("write"),
        Attack::OversizeFrame => {
            stream.write_all(&v2_hello()).expect("write");
            hello_response(stream);
            stream.write_all(&[0xff; frame::HEADER_LEN]).expect("write");
        }
        Attack::SlowHello => {
            let hello = v2_hello();
            trickle(stream, &hello[..hello.len() / 2]);
        }
        Attack::SlowNoise => {
            let hello = v2_hello();
            stream.write_all(&hello).expect("write");
            let response = hello_response(stream);
            let prologue = v2::prologue(&hello, &response);
            let mut initiator = v2::Initiator::new(
                "eyJ.a-token.nobody-issued",
                None,
                v2::DEFAULT_MAX_MESSAGE,
                &prologue,
            )
            .expect("initiator");
            let msg1 = initiator.write_message1().expect("msg1");
            let framed = frame::encode(&msg1, v2::FRAME_LIMIT).expect("frame");
            trickle(stream, &framed[..framed.len() / 2]);
        }
    }
}

/// Whether the server closed `stream` (whatever it sent before), within the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_connection_flood_never_keeps_a_client_out_and_every_attacker_is_closed() {
    let server = TestServer::start(|_| {});
    let addr = server.addr;
    let flooding = Arc::new(AtomicBool::new(true));
    // One thread per source address, each running every kind of attack.
    let attackers: Vec<_> = (0..SOURCES)
        .map(|n| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + n);
            std::thread::spawn(move || {
                let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ u64::from(n));
                let mut open = Vec::new();
                for i in 0..EACH * ATTACKS.len() / usize::from(SOURCES) {
                    let kind = ATTACKS[i % ATTACKS.len()];
                    let mut stream = connect_from(source, addr);
                    attack(kind, &mut stream, &mut random);
                    open.push((kind, stream));
                }
                for (kind, stream) in &mut open {
                    assert!(
                        closed_by_server(stream),
                        "{kind:?} from {source}: not closed"
                    );
                }
                open.len()
            })
        })
        .collect();

    // Meanwhile a real client keeps connecting and is answered every time.
    let client = {
        let flooding = Arc::clone(&flooding);
        let token = server.admin_token();
        let fingerprint = server.fingerprint();
        std::thread::spawn(move || {
            let mut sessions = 0u64;
            while flooding.load(Ordering::SeqCst) || sessions == 0 {
                let mut session = connect_v2(addr, &token, "default", Some(fingerprint))
                    .expect("the client connects during the flood");
                ok(session.list(&ListOpts::default()));
                sessions += 1;
            }
            sessions
        })
    };
    let attacked: usize = attackers
        .into_iter()
        .map(|thread| thread.join().expect("attacker"))
        .sum();
    flooding.store(false, Ordering::SeqCst);
    let sessions = client.join().expect("client");
    assert_eq!(attacked, EACH * ATTACKS.len());

    // A fresh client works once the flood is over.
    let mut fresh = server.v2("default");
    ok(fresh.list(&ListOpts::default()));
    drop(fresh);

    // Stopped, so that every connection task has ended and counted itself.
    let stopped = server.server().clone();
    drop(server);
    let metrics = stopped.metrics();
    assert_eq!(metrics.connections_open.load(Ordering::SeqCst), 0);
    // Every attacking connection ended before its session, and counts; no client session does.
    assert_eq!(
        metrics.handshake_failures.load(Ordering::SeqCst),
        attacked as u64
    );
    assert_eq!(
        metrics.connections_accepted.load(Ordering::SeqCst),
        attacked as u64 + sessions + 1
    );
    assert_eq!(metrics.sessions_refused.load(Ordering::SeqCst), 0);
    assert_eq!(metrics.protocol_errors.load(Ordering::SeqCst), 0);
}

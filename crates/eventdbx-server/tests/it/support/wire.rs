//! A recorded TCP stream and the raw hello exchange.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use eventdbx_proto::frame;
use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{StreamMessageReader, MAX_MESSAGE_BYTES};

use super::IO_TIMEOUT;

/// A TCP stream that records both directions.
pub struct Wire {
    stream: TcpStream,
    /// Every byte written.
    pub sent: Vec<u8>,
    /// Every byte read.
    pub received: Vec<u8>,
}

thread_local! {
    /// The receive buffer of the sockets this thread opens, when fixed ([`with_receive_buffer`]).
    static RECEIVE_BUFFER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `connect` with every socket it opens given a fixed receive buffer of `bytes` (the kernel
/// then never grows it as data arrives): how much a peer that reads nothing holds no longer
/// depends on the machine's `tcp_rmem` (up to 32 MiB on some).
pub fn with_receive_buffer<R>(bytes: usize, connect: impl FnOnce() -> R) -> R {
    let outer = RECEIVE_BUFFER.replace(Some(bytes));
    let connected = connect();
    RECEIVE_BUFFER.set(outer);
    connected
}

fn open(addr: SocketAddr) -> TcpStream {
    let Some(bytes) = RECEIVE_BUFFER.get() else {
        return TcpStream::connect(addr).expect("connect");
    };
    // Before the connection: the window scale is agreed in its handshake.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_recv_buffer_size(bytes).expect("receive buffer");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

impl Wire {
    /// Connects with timeouts and `TCP_NODELAY`.
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = open(addr);
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Wire {
            stream,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Waits until the peer has sent something more, reading none of it.
    pub fn wait_readable(&self) -> std::io::Result<()> {
        let mut buf = [0u8; 1];
        match self.stream.peek(&mut buf)? {
            0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
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

    /// Reads (without recording) until the peer closes the connection (EOF or reset); `None`
    /// when a read waited [`IO_TIMEOUT`] with the connection still open, else the bytes read.
    pub fn drain_until_closed(&mut self) -> Option<usize> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(read),
                Ok(n) => read += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) if waited_out(&err) => return None,
                Err(_) => return Some(read),
            }
        }
    }

    /// True when the peer closed the connection (EOF or reset) without sending anything more.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !waited_out(&err),
        }
    }
}

/// Whether a read failed only because [`IO_TIMEOUT`] passed with the connection still open.
fn waited_out(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
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

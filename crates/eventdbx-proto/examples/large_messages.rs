//! Sends large v2 requests to a running server, to watch its memory (`scripts/memory-rss.sh`).
//!
//! ```text
//! large_messages <host:port> <token> sequential <requests> <bytes>
//! large_messages <host:port> <token> concurrent <clients>x<requests> <bytes>
//! large_messages <host:port> <token> stall <sessions> <bytes> <hold-seconds>
//! ```
//!
//! Each request is a `getAggregate` whose aggregate id makes it about `<bytes>` long: a real
//! request, answered with an error once the server has it whole. `stall` opens the sessions, sends
//! each one all but the last MiB of its message, prints `stalled`, holds them for the given time
//! and leaves (a session the server closed in the meantime just ends).

use std::error::Error;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::{frame, noise::v2};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn read_stream_message(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream.read_exact(&mut buf)?;
        reader.feed(&buf)?;
    }
    Ok(reader.into_message().ok_or("incomplete message")?)
}

fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; frame::payload_len(header, v2::FRAME_LIMIT)?];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

struct Session {
    stream: TcpStream,
    noise: v2::ChunkedSession,
}

impl Session {
    fn open(addr: &str, token: &str) -> Result<Session> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let hello = Hello {
            protocol_version: v2::PROTOCOL_VERSION,
            token: String::new(),
            tenant_id: "default".into(),
            no_noise: false,
        }
        .encode();
        stream.write_all(&hello)?;
        let response = read_stream_message(&mut stream)?;
        let decoded = HelloResponse::decode(&response)?;
        if !decoded.accepted {
            return Err(decoded.message.into());
        }
        let prologue = v2::prologue(&hello, &response);
        let mut initiator = v2::Initiator::new(token, None, v2::DEFAULT_MAX_MESSAGE, &prologue)?;
        stream.write_all(&frame::encode(
            &initiator.write_message1()?,
            v2::FRAME_LIMIT,
        )?)?;
        initiator.read_message2(&read_frame(&mut stream)?)?;
        let (msg3, awaiting) = initiator.write_message3()?;
        stream.write_all(&frame::encode(&msg3, v2::FRAME_LIMIT)?)?;
        let noise = awaiting.read_verdict(&read_frame(&mut stream)?)?;
        Ok(Session { stream, noise })
    }

    fn sealed_request(&mut self, id: u64, token: &str, bytes: usize) -> Result<Vec<u8>> {
        let aggregate_id = "x".repeat(bytes.saturating_sub(1024));
        let request = message::encode_request(|mut request| {
            request.set_id(id);
            let mut get = request.init_payload().init_get_aggregate();
            get.set_token(token);
            get.set_aggregate_type("order");
            get.set_aggregate_id(aggregate_id.as_str());
            Ok(())
        })?;
        Ok(self.noise.sealer.seal_message(&request)?)
    }

    fn call(&mut self, id: u64, token: &str, bytes: usize) -> Result<()> {
        let sealed = self.sealed_request(id, token, bytes)?;
        self.stream.write_all(&sealed)?;
        loop {
            let payload = read_frame(&mut self.stream)?;
            if self.noise.opener.open_frame(&payload)?.is_some() {
                return Ok(());
            }
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, mode, count, bytes, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: large_messages <host:port> <token> <mode> <count> <bytes> [hold]".into(),
        );
    };
    let bytes: usize = bytes.parse()?;
    match mode.as_str() {
        "sequential" => {
            let mut session = Session::open(addr, token)?;
            for id in 0..count.parse::<u64>()? {
                session.call(id, token, bytes)?;
            }
        }
        "concurrent" => {
            let (clients, requests) = count.split_once('x').ok_or("count: <clients>x<requests>")?;
            let requests: u64 = requests.parse()?;
            let threads: Vec<_> = (0..clients.parse::<usize>()?)
                .map(|_| {
                    let (addr, token) = (addr.clone(), token.clone());
                    std::thread::spawn(move || -> Result<()> {
                        let mut session = Session::open(&addr, &token)?;
                        for id in 0..requests {
                            session.call(id, &token, bytes)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for thread in threads {
                thread.join().map_err(|_| "client thread panicked")??;
            }
        }
        "stall" => {
            let hold = Duration::from_secs(rest.first().ok_or("stall needs a hold time")?.parse()?);
            let sessions = count.parse::<usize>()?;
            let threads: Vec<_> = (0..sessions)
                .map(|_| {
                    let (addr, token) = (addr.clone(), token.clone());
                    std::thread::spawn(move || -> Result<Session> {
                        let mut session = Session::open(&addr, &token)?;
                        let sealed = session.sealed_request(1, &token, bytes)?;
                        // A server that stops reading (its budget spent) or closes the session
                        // ends the write early; the session is held all the same.
                        let _ = session
                            .stream
                            .write_all(&sealed[..sealed.len() - (1 << 20)]);
                        Ok(session)
                    })
                })
                .collect();
            // Writes that the server holds back block; give them the hold time, not longer.
            std::thread::sleep(Duration::from_millis(500));
            println!("stalled");
            std::io::stdout().flush()?;
            std::thread::sleep(hold);
            drop(threads);
            std::process::exit(0);
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(())
}

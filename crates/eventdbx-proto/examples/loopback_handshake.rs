//! A loopback demonstration of the protocol crate over real TCP on 127.0.0.1.
//!
//! 1. Protocol v2: v2 hello, Noise XXpsk3 with a token-derived PSK and a pinned server key, then
//!    a 1 MiB `createAggregate` request and a 1 MiB response, each split into chunks.
//! 2. Protocol v1 (EventDBX's own): v1 hello with the token, Noise NNpsk0, then a
//!    `verifyAggregate` request answered with an `aggregate_not_found` error.
//!
//! The "server" here is a few lines of test scaffolding around the sans-IO state machines; the
//! real server is a separate crate.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::message::{self, StreamMessageReader, MAX_MESSAGE_BYTES};
use eventdbx_proto::negotiate::{self, ServerPath};
use eventdbx_proto::noise::{v1, v2};
use eventdbx_proto::schema::control_capnp::{control_request, control_response};
use eventdbx_proto::{frame, ProtoError};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const TOKEN: &str = "demo-token-that-would-be-a-signed-jwt";

fn read_stream_message(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut reader = StreamMessageReader::new(MAX_MESSAGE_BYTES);
    while reader.bytes_needed() > 0 {
        let mut buf = vec![0u8; reader.bytes_needed()];
        stream.read_exact(&mut buf)?;
        reader.feed(&buf)?;
    }
    Ok(reader.into_message().ok_or("incomplete message")?)
}

fn read_frame(stream: &mut TcpStream, limit: usize) -> Result<Vec<u8>> {
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let mut payload = vec![0u8; frame::payload_len(header, limit)?];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

fn read_v2_message(stream: &mut TcpStream, session: &mut v2::ChunkedSession) -> Result<Vec<u8>> {
    loop {
        let payload = read_frame(stream, v2::FRAME_LIMIT)?;
        if let Some(message) = session.opener.open_frame(&payload)? {
            return Ok(message);
        }
    }
}

/// Scaffolding server: accepts one connection and serves one request on the hello's version.
fn serve_one(listener: TcpListener, key: v2::StaticKeypair) -> Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let hello_bytes = read_stream_message(&mut stream)?;
    let hello = Hello::decode(&hello_bytes)?;
    let path = negotiate::server_path(hello.protocol_version, true).map_err(|m| m.to_string())?;
    let response = HelloResponse::ok(false).encode();
    stream.write_all(&response)?;
    match path {
        ServerPath::V2 => {
            let prologue = v2::prologue(&hello_bytes, &response);
            let mut responder = v2::Responder::new(&key, v2::DEFAULT_MAX_MESSAGE, &prologue)?;
            let id = responder.read_message1(&read_frame(&mut stream, v2::FRAME_LIMIT)?)?;
            // A real server looks the id up in its token registry.
            let psk = (id == v2::TokenId::of(TOKEN)?)
                .then(|| v2::psk(TOKEN))
                .transpose()?;
            let msg2 = responder.write_message2(psk.as_ref())?;
            stream.write_all(&frame::encode(&msg2, v2::FRAME_LIMIT)?)?;
            let pending = responder.read_message3(&read_frame(&mut stream, v2::FRAME_LIMIT)?)?;
            let (verdict, mut session) = pending.accept()?;
            stream.write_all(&verdict)?;
            let request = read_v2_message(&mut stream, &mut session)?;
            let decoded = message::decode_request(&request)?;
            let request = decoded.get()?;
            let control_request::payload::CreateAggregate(create) =
                request.get_payload().which()?
            else {
                return Err("expected createAggregate".into());
            };
            let payload_len = create?.get_payload_json()?.len();
            let reply = message::encode_response(|mut response| {
                response.set_id(request.get_id());
                let aggregate = format!(
                    "{{\"echoed_bytes\":{payload_len},\"pad\":\"{}\"}}",
                    "y".repeat(payload_len)
                );
                response
                    .init_payload()
                    .init_create_aggregate()
                    .set_aggregate_json(aggregate.as_str());
                Ok(())
            })?;
            stream.write_all(&session.sealer.seal_message(&reply)?)?;
        }
        ServerPath::V1 => {
            let mut responder = v1::Responder::new(&hello.token)?;
            responder.read_message1(&read_frame(&mut stream, frame::V1_MAX_NOISE_FRAME)?)?;
            let (msg2, mut session) = responder.write_message2()?;
            stream.write_all(&frame::encode(&msg2, frame::V1_MAX_NOISE_FRAME)?)?;
            let request = session
                .opener
                .open(&read_frame(&mut stream, frame::V1_MAX_NOISE_FRAME)?)?;
            let id = message::decode_request(&request)?.get()?.get_id();
            let reply = message::encode_response(|mut response| {
                response.set_id(id);
                let mut error = response.init_payload().init_error();
                error.set_code("aggregate_not_found");
                error.set_message("aggregate not found");
                Ok(())
            })?;
            let sealed = session.sealer.seal(&reply)?;
            stream.write_all(&frame::encode(&sealed, frame::V1_MAX_NOISE_FRAME)?)?;
        }
    }
    Ok(())
}

fn demo_v2(key: &v2::StaticKeypair) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_key = key.clone();
    let server = thread::spawn(move || serve_one(listener, server_key));
    let started = Instant::now();
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
    let response_bytes = read_stream_message(&mut stream)?;
    let response = HelloResponse::decode(&response_bytes)?;
    if !response.accepted {
        return Err(response.message.into());
    }
    let prologue = v2::prologue(&hello, &response_bytes);
    let mut initiator = v2::Initiator::new(
        TOKEN,
        Some(key.fingerprint()),
        v2::DEFAULT_MAX_MESSAGE,
        &prologue,
    )?;
    stream.write_all(&frame::encode(
        &initiator.write_message1()?,
        v2::FRAME_LIMIT,
    )?)?;
    let fingerprint = initiator.read_message2(&read_frame(&mut stream, v2::FRAME_LIMIT)?)?;
    let (msg3, awaiting) = initiator.write_message3()?;
    stream.write_all(&frame::encode(&msg3, v2::FRAME_LIMIT)?)?;
    let mut session = awaiting.read_verdict(&read_frame(&mut stream, v2::FRAME_LIMIT)?)?;
    println!(
        "v2: handshake done, server key {fingerprint} (pinned) in {:?}",
        started.elapsed()
    );

    let payload = format!("{{\"blob\":\"{}\"}}", "x".repeat(1024 * 1024));
    let request = message::encode_request(|mut request| {
        request.set_id(1);
        let mut create = request.init_payload().init_create_aggregate();
        create.set_token(TOKEN);
        create.set_aggregate_type("order");
        create.set_aggregate_id("o-1");
        create.set_event_type("order_created");
        create.set_payload_json(payload.as_str());
        Ok(())
    })?;
    let sealed = session.sealer.seal_message(&request)?;
    stream.write_all(&sealed)?;
    let reply = read_v2_message(&mut stream, &mut session)?;
    let decoded = message::decode_response(&reply)?;
    let response = decoded.get()?;
    let control_response::payload::CreateAggregate(created) = response.get_payload().which()?
    else {
        return Err("expected a createAggregate response".into());
    };
    println!(
        "v2: sent a {}-byte request in {} chunks, got response id {} of {} bytes",
        request.len(),
        request.len().div_ceil(frame::NOISE_MAX_PLAINTEXT - 5),
        response.get_id(),
        created?.get_aggregate_json()?.len()
    );
    server.join().map_err(|_| "server thread panicked")??;
    Ok(())
}

fn demo_v1() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || serve_one(listener, v2::StaticKeypair::generate()?));
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.write_all(
        &Hello {
            protocol_version: 1,
            token: TOKEN.into(),
            tenant_id: "default".into(),
            no_noise: false,
        }
        .encode(),
    )?;
    let response = HelloResponse::decode(&read_stream_message(&mut stream)?)?;
    println!(
        "v1: hello answered accepted={} message={:?}",
        response.accepted, response.message
    );
    let mut initiator = v1::Initiator::new(TOKEN)?;
    stream.write_all(&frame::encode(
        &initiator.write_message1()?,
        frame::V1_MAX_NOISE_FRAME,
    )?)?;
    let mut session =
        initiator.read_message2(&read_frame(&mut stream, frame::V1_MAX_NOISE_FRAME)?)?;
    let request = message::encode_request(|mut request| {
        request.set_id(7);
        let mut verify = request.init_payload().init_verify_aggregate();
        verify.set_aggregate_type("order");
        verify.set_aggregate_id("o-1");
        Ok(())
    })?;
    let too_large = session.sealer.seal(&vec![0u8; 65_520]);
    assert!(matches!(too_large, Err(ProtoError::RequestTooLarge { .. })));
    stream.write_all(&frame::encode(
        &session.sealer.seal(&request)?,
        frame::V1_MAX_NOISE_FRAME,
    )?)?;
    let reply = session
        .opener
        .open(&read_frame(&mut stream, frame::V1_MAX_NOISE_FRAME)?)?;
    let decoded = message::decode_response(&reply)?;
    let response = decoded.get()?;
    if let control_response::payload::Error(error) = response.get_payload().which()? {
        let error = error?;
        println!(
            "v1: request id {} answered with error {}: {}",
            response.get_id(),
            error.get_code()?.to_str()?,
            error.get_message()?.to_str()?
        );
    }
    server.join().map_err(|_| "server thread panicked")??;
    Ok(())
}

fn main() -> Result<()> {
    let key = v2::StaticKeypair::generate()?;
    demo_v2(&key)?;
    demo_v1()?;
    println!("ok");
    Ok(())
}

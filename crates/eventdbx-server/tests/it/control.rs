//! Handshake, transport and negotiation against a real server.

use std::collections::HashMap;

use eventdbx_proto::frame;
use eventdbx_proto::hello::{Hello, HelloResponse, CLI_REJECTION_MESSAGE};
use eventdbx_proto::message;
use eventdbx_proto::noise::v2::StaticKeypair;
use eventdbx_proto::schema::control_capnp::{cli_request, cli_response};
use eventdbx_server::auth::TokenRequest;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::*;

fn rejection(server: &TestServer, hello: &Hello) -> HelloResponse {
    let (mut wire, _, response) = hello_exchange(server.addr, hello);
    assert!(!response.accepted, "{response:?}");
    assert!(wire.closed_by_peer(), "the server closes after a rejection");
    response
}

/// The 56-byte v1 hello of `docs/protocol.md`, "Hello", the hello our client puts on the wire.
const SPEC_HELLO: &str = "0000000006000000000000000100020001000000000000000500000022000000\
                          0500000042000000746f6b000000000064656661756c7400";

#[test]
fn hello_bytes_match_the_spec_and_are_accepted_by_the_server() {
    let hello = v1_hello("tok", "default", false).encode();
    assert_eq!(hex::encode(&hello), SPEC_HELLO);
    let plain = v1_hello("tok", "default", true).encode();
    assert_eq!(hex::encode(&plain[16..24]), "0100010000000000");

    // The server reads exactly those bytes: `tok` is not a valid token, so it says so.
    let server = TestServer::start(|_| {});
    let raw = hex::decode(SPEC_HELLO).expect("hex");
    let (mut wire, reply) = raw_exchange(server.addr, &raw).expect("reply");
    let response = HelloResponse::decode(&reply).expect("decode");
    assert_eq!(
        (response.accepted, response.message.as_str()),
        (false, "invalid control token")
    );
    assert!(wire.closed_by_peer());

    // A real token in the same layout opens a session.
    let token = server.admin_token();
    let mut client = connect_v1(server.addr, &token, "default", false).expect("session");
    assert_eq!(client.hello.message, "ok");
    assert!(!client.hello.no_noise);
    assert!(client
        .hello
        .capabilities
        .contains(&"expected_version".to_owned()));
    let get = ok(client.get("order", "o-1"));
    assert_eq!(get["found"], false);
}

#[test]
fn tokens_are_trimmed_on_v1_and_v2() {
    let server = TestServer::start(|_| {});
    let padded = format!("  {}\n", server.admin_token());
    // v1: the hello carries the padded token; the PSK derives from the trimmed one.
    let hello = v1_hello(&padded, "default", false);
    let (mut wire, _, response) = hello_exchange(server.addr, &hello);
    assert!(response.accepted, "{}", response.message);
    let mut initiator =
        eventdbx_proto::noise::v1::Initiator::new(padded.trim()).expect("initiator");
    let msg1 = initiator.write_message1().expect("msg1");
    wire.write(&frame::encode(&msg1, frame::V1_MAX_NOISE_FRAME).expect("frame"))
        .expect("write");
    let msg2 = wire.read_frame(frame::V1_MAX_NOISE_FRAME).expect("msg2");
    assert_eq!(msg2.len(), 48);
    initiator.read_message2(&msg2).expect("handshake");

    // v2: the initiator trims as well.
    let mut client =
        connect_v2(server.addr, &padded, "default", Some(server.fingerprint())).expect("v2");
    assert_eq!(ok(client.get("order", "o-1"))["found"], false);
}

#[test]
fn a_token_signed_by_another_key_is_rejected_v1_and_fails_the_v2_handshake() {
    let server = TestServer::start(|_| {});
    let other = TestServer::start(|_| {});
    let foreign = other.admin_token();
    let response = rejection(&server, &v1_hello(&foreign, "default", false));
    assert_eq!(response.message, "invalid control token");
    assert_eq!(
        connect_v1(server.addr, &foreign, "default", false).err(),
        Some("invalid control token".into())
    );
    let v2 = connect_v2(server.addr, &foreign, "default", Some(server.fingerprint()));
    let message = v2.err().expect("v2 must fail");
    assert!(message.starts_with("handshake failed"), "{message}");
    // Nothing was processed: the store is still empty.
    let mut client = server.v2("default");
    assert_eq!(
        ok(client.list(&ListOpts::default()))["aggregates"],
        Value::Array(vec![])
    );
}

#[test]
fn a_missing_token_is_rejected_even_with_a_null_pointer() {
    let server = TestServer::start(|_| {});
    let response = rejection(&server, &v1_hello("", "default", false));
    assert_eq!(response.message, "missing control token");
    let response = rejection(&server, &v1_hello("   ", "default", false));
    assert_eq!(response.message, "missing control token");

    // A hello whose token pointer is null: never treated as a CLI request.
    let mut builder = capnp::message::Builder::new_default();
    {
        let mut hello = builder
            .init_root::<eventdbx_proto::schema::control_capnp::control_hello::Builder<'_>>();
        hello.set_protocol_version(1);
        hello.set_tenant_id("default");
    }
    let bytes = capnp::serialize::write_message_to_words(&builder);
    assert_eq!(&bytes[24..32], &[0u8; 8], "pointer 0 is null");
    let (mut wire, reply) = raw_exchange(server.addr, &bytes).expect("reply");
    let response = HelloResponse::decode(&reply).expect("a hello response");
    assert_eq!(
        (response.accepted, response.message.as_str()),
        (false, "missing control token")
    );
    assert!(wire.closed_by_peer());
}

#[test]
fn unsupported_versions_are_rejected() {
    let server = TestServer::start(|_| {});
    let token = server.admin_token();
    for version in [0u16, 3, 513] {
        let hello = Hello {
            protocol_version: version,
            ..v1_hello(&token, "default", false)
        };
        let response = rejection(&server, &hello);
        assert_eq!(
            response.message,
            format!("unsupported control protocol version {version}")
        );
    }
}

#[test]
fn tenant_rejections_have_the_spec_messages() {
    let server = TestServer::start(|_| {});
    let acme = server.token(&ALL_ACTIONS, &["acme"]);
    let response = rejection(&server, &v1_hello(&acme, "other", false));
    assert_eq!(
        response.message,
        "token does not grant access to tenant 'other'"
    );
    // v2: the hello is accepted (no token yet); the verdict refuses the tenant.
    let v2 = connect_v2(server.addr, &acme, "other", Some(server.fingerprint()));
    let message = v2.err().expect("refused");
    assert!(
        message.contains("token does not grant access to tenant 'other'"),
        "{message}"
    );
    // The granted tenant works, in any case.
    connect_v1(server.addr, &acme, "ACME", false).expect("acme session");

    let admin = server.admin_token();
    let response = rejection(&server, &v1_hello(&admin, "a b", false));
    assert_eq!(
        response.message,
        "failed to initialise tenant 'a b': configuration error: tenant id may only contain \
         letters, numbers, '-' or '_'"
    );
    let v2 = connect_v2(server.addr, &admin, "a b", None).err();
    assert_eq!(
        v2.as_deref(),
        Some(
            "failed to initialise tenant 'a b': configuration error: tenant id may only \
             contain letters, numbers, '-' or '_'"
        )
    );
}

#[test]
fn multi_tenant_mode_requires_a_tenant() {
    let server = TestServer::start(|config| config.tenants.multi_tenant = true);
    let token = server.admin_token();
    let response = rejection(&server, &v1_hello(&token, "", false));
    assert_eq!(
        response.message,
        "tenantId is required when multi-tenant mode is enabled"
    );
    assert_eq!(
        connect_v2(server.addr, &token, "", None).err().as_deref(),
        Some("tenantId is required when multi-tenant mode is enabled")
    );
    connect_v1(server.addr, &token, "acme", false).expect("named tenant");
}

#[test]
fn plaintext_is_refused_by_default_and_the_server_expects_noise() {
    let server = TestServer::start(|_| {});
    let token = server.admin_token();
    let (mut wire, _, response) = hello_exchange(server.addr, &v1_hello(&token, "default", true));
    assert!(response.accepted);
    assert!(!response.no_noise, "plaintext must not be granted");
    // A client that carried on in plaintext gets nothing: the frame is not a Noise msg1.
    let request = message::encode_request(|mut r| {
        r.set_id(1);
        let mut v = r.init_payload().init_verify_aggregate();
        v.set_aggregate_type("order");
        v.set_aggregate_id("o-1");
        Ok(())
    })
    .expect("encode");
    wire.write(&frame::encode(&request, frame::V1_MAX_PLAINTEXT_FRAME).expect("frame"))
        .expect("write");
    assert!(wire.closed_by_peer());
    assert_eq!(
        connect_v1(server.addr, &token, "default", true).err(),
        Some("server refused the plaintext control channel".into())
    );
}

#[test]
fn plaintext_when_allowed_carries_raw_capnp() {
    let server = TestServer::start(|config| config.allow_plaintext = true);
    let mut client =
        connect_v1(server.addr, &server.admin_token(), "default", true).expect("plaintext");
    assert!(client.hello.no_noise);
    let before = client.wire.sent.len();
    let reply = ok(client.tenant_reload("default"));
    assert_eq!(reply["reloaded"], true);
    // The request went out as a frame holding the Cap'n Proto message itself.
    let sent = &client.wire.sent[before..];
    let len = u32::from_be_bytes(sent[..4].try_into().expect("header")) as usize;
    assert_eq!(len + 4, sent.len());
    assert!(message::decode_request(&sent[4..]).is_ok());
    // Without noNoise the same server still runs Noise.
    let noise = connect_v1(server.addr, &server.admin_token(), "default", false).expect("noise");
    assert!(!noise.hello.no_noise);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_v2_token_never_crosses_the_wire() {
    let server = TestServer::start(|_| {});
    let token = server.admin_token();
    let mut client =
        connect_v2(server.addr, &token, "default", Some(server.fingerprint())).expect("v2");
    ok(client.create("order", "o-1", "order_created", r#"{"status":"created"}"#));
    assert_eq!(ok(client.get("order", "o-1"))["found"], true);
    let hello = Hello::decode(&client.wire.sent).expect("hello first");
    assert_eq!(hello.token, "");
    assert_eq!(hello.protocol_version, 2);
    let digest = Sha256::digest(token.as_bytes());
    let mut secrets: Vec<&[u8]> = vec![token.as_bytes(), digest.as_slice()];
    secrets.extend(token.split('.').map(str::as_bytes));
    for (direction, bytes) in [
        ("sent", &client.wire.sent),
        ("received", &client.wire.received),
    ] {
        assert!(
            bytes.len() > 500,
            "{direction}: the capture holds the session"
        );
        for secret in &secrets {
            assert!(!contains(bytes, secret), "{direction} bytes leak the token");
        }
    }
    // The v1 capture, by contrast, holds the token in clear (proves the search works).
    let v1 = connect_v1(server.addr, &token, "default", false).expect("v1");
    assert!(contains(&v1.wire.sent, token.as_bytes()));
}

#[test]
fn accept_v1_false_rejects_v1_hellos() {
    let server = TestServer::start(|config| config.accept_v1 = false);
    let token = server.admin_token();
    let response = rejection(&server, &v1_hello(&token, "default", false));
    assert_eq!(
        response.message,
        "protocol version 1 is disabled on this server"
    );
    let mut client = server.v2("default");
    ok(client.create("order", "o-1", "order_created", "{}"));
}

#[test]
fn pinning_another_key_fails_closed() {
    let server = TestServer::start(|_| {});
    let wrong = StaticKeypair::generate().expect("key").fingerprint();
    let token = server.admin_token();
    let message = connect_v2(server.addr, &token, "default", Some(wrong))
        .err()
        .expect("mismatch");
    assert!(message.contains("server key mismatch"), "{message}");
    let mut client = connect_v2(server.addr, &token, "default", None).expect("unpinned");
    ok(client.list(&ListOpts::default()));
}

#[test]
fn a_cli_request_is_refused_and_runs_nothing() {
    let server = TestServer::start(|_| {});
    let tokens_before = server.server().auth().list().len();
    let mut builder = capnp::message::Builder::new_default();
    {
        let request = builder.init_root::<cli_request::Builder<'_>>();
        let mut args = request.init_args(3);
        args.set(0, "token");
        args.set(1, "bootstrap");
        args.set(2, "--stdout");
    }
    let bytes = capnp::serialize::write_message_to_words(&builder);
    let (mut wire, reply) = raw_exchange(server.addr, &bytes).expect("a CLI response");
    let decoded = message::decode(&reply).expect("decode");
    let response = decoded
        .get_root::<cli_response::Reader<'_>>()
        .expect("root");
    assert_eq!(response.get_exit_code(), -1);
    assert_eq!(
        response.get_stdout().expect("stdout").to_str().ok(),
        Some("")
    );
    assert_eq!(
        response.get_stderr().expect("stderr").to_str().ok(),
        Some(CLI_REJECTION_MESSAGE)
    );
    assert!(wire.closed_by_peer());
    assert_eq!(server.server().auth().list().len(), tokens_before);
}

#[test]
fn an_oversized_v1_response_is_an_error_and_the_session_goes_on() {
    let server = TestServer::start(|_| {});
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(100 * 1024));
    let mut writer = server.v2("default");
    ok(writer.create("order", "big", "order_created", &big));
    let mut v1 = server.v1("default");
    let error = err(v1.get("order", "big"));
    assert_eq!(error.code, "response_too_large");
    assert!(
        error.message.starts_with("response too large: ")
            && error
                .message
                .ends_with("bytes exceeds the 65519-byte limit"),
        "{}",
        error.message
    );
    ok(v1.create("order", "small", "order_created", "{}"));
    assert_eq!(ok(v1.get("order", "small"))["found"], true);
    // Over v2 the same aggregate comes back whole.
    let state = &ok(writer.get("order", "big"))["aggregate"]["state"];
    assert_eq!(state["blob"].as_str().map(str::len), Some(100 * 1024));
}

#[test]
fn error_replies_keep_the_session() {
    let server = TestServer::start(|_| {});
    for mut client in [server.v1("default"), server.v2("default")] {
        assert_eq!(ok(client.get("order", "missing"))["found"], false);
        let token = std::mem::replace(&mut client.token, "invalid-token".into());
        let error = err(client.apply("order", "o-1", "order_created", "{}"));
        assert_eq!(
            error.pair(),
            ("invalid_token", "token not found or inactive")
        );
        client.token = token;
        ok(client.list(&ListOpts::default()));
    }
}

#[test]
fn an_unknown_union_member_is_a_serialization_error_with_the_id() {
    let server = TestServer::start(|_| {});
    for mut client in [server.v1("default"), server.v2("default")] {
        let mut request = message::encode_request(|mut r| {
            r.set_id(99);
            let mut v = r.init_payload().init_verify_aggregate();
            v.set_aggregate_type("order");
            v.set_aggregate_id("o-1");
            Ok(())
        })
        .expect("encode");
        // Root struct right after the root pointer: id at bytes 16..24, the tag at 24..26.
        assert_eq!(&request[8..12], &[0, 0, 0, 0]);
        assert_eq!(&request[24..26], &[4, 0]);
        request[24..26].copy_from_slice(&40u16.to_le_bytes());
        client.send_message(&request).expect("send");
        let (id, bytes) = client.recv().expect("reply");
        assert_eq!(id, 99);
        let error = err(decode(&bytes));
        assert_eq!(error.code, "serialization");
        assert!(
            error.message.starts_with("serialization error:"),
            "{}",
            error.message
        );
        assert_eq!(ok(client.get("order", "o-1"))["found"], false);
    }
}

#[test]
fn v2_pipelines_many_requests_on_one_connection() {
    let server = TestServer::start(|_| {});
    let mut client = server.v2("default");
    let count = 200;
    let mut pending = HashMap::new();
    for n in 0..count {
        let id = client
            .send(|p| {
                let mut w = p.init_create_aggregate();
                w.set_token(server.admin_token().as_str());
                w.set_aggregate_type("order");
                w.set_aggregate_id(format!("o-{n}").as_str());
                w.set_event_type("order_created");
                w.set_payload_json(format!(r#"{{"n":{n}}}"#).as_str());
            })
            .expect("send");
        pending.insert(id, n);
    }
    for _ in 0..count {
        let (id, bytes) = client.recv().expect("reply");
        let n = pending.remove(&id).expect("an id that was asked, once");
        let aggregate = ok(decode(&bytes));
        assert_eq!(aggregate["aggregate_id"], format!("o-{n}"));
    }
    let token = client.token.clone();
    for n in 0..count {
        let id = client
            .send(|p| {
                let mut r = p.init_get_aggregate();
                r.set_token(token.as_str());
                r.set_aggregate_type("order");
                r.set_aggregate_id(format!("o-{n}").as_str());
            })
            .expect("send");
        pending.insert(id, n);
    }
    for _ in 0..count {
        let (id, bytes) = client.recv().expect("reply");
        let n = pending.remove(&id).expect("an id that was asked, once");
        let reply = ok(decode(&bytes));
        assert_eq!(reply["aggregate"]["state"]["n"], n);
    }
    assert!(pending.is_empty());
}

#[test]
fn garbage_and_oversize_frames_close_only_that_connection() {
    let server = TestServer::start(|config| config.allow_plaintext = true);
    let mut bystander = server.v2("default");
    ok(bystander.create("order", "o-1", "order_created", r#"{"n":1}"#));

    // v1 Noise: a frame that does not decrypt.
    let mut v1 = server.v1("default");
    v1.wire
        .write(&frame::encode(&[0xab; 64], frame::V1_MAX_NOISE_FRAME).expect("frame"))
        .expect("write");
    v1.closing_notice();
    // v1 Noise: a frame header over the limit.
    let mut v1 = server.v1("default");
    v1.wire
        .write(&(frame::V1_MAX_NOISE_FRAME as u32 + 1).to_be_bytes())
        .expect("write");
    v1.closing_notice();
    // Plaintext: bytes that are no Cap'n Proto message.
    let mut plain =
        connect_v1(server.addr, &server.admin_token(), "default", true).expect("plaintext");
    plain
        .wire
        .write(&frame::encode(&[0xff; 24], frame::V1_MAX_PLAINTEXT_FRAME).expect("frame"))
        .expect("write");
    plain.closing_notice();
    // Plaintext: an oversize frame.
    let mut plain =
        connect_v1(server.addr, &server.admin_token(), "default", true).expect("plaintext");
    plain.wire.write(&70_000u32.to_be_bytes()).expect("write");
    plain.closing_notice();
    // v2: a frame that does not decrypt.
    let mut v2 = server.v2("default");
    v2.wire
        .write(&frame::encode(&[0x11; 80], frame::NOISE_MAX_MESSAGE).expect("frame"))
        .expect("write");
    v2.closing_notice();
    // v2 and v1 Noise: a message that decrypts but is no Cap'n Proto message.
    for mut session in [server.v2("default"), server.v1("default")] {
        session
            .send_message(&[0xff; 24])
            .expect("send sealed garbage");
        let said = session.closing_notice();
        assert!(
            said.ends_with("message does not decode"),
            "v2: {}: {said}",
            session.is_v2()
        );
    }
    // A raw hello of garbage: closed without a reply.
    let result = raw_exchange(server.addr, &[0xff; 64]);
    assert!(result.is_err(), "no reply to garbage");

    // The other session still works and nothing changed.
    let reply = ok(bystander.list(&ListOpts::default()));
    assert_eq!(reply["aggregates"].as_array().map(Vec::len), Some(1));
    assert_eq!(ok(bystander.get("order", "o-1"))["aggregate"]["version"], 1);
}

#[test]
fn verify_is_authorised_with_the_session_token() {
    let server = TestServer::start(|_| {});
    let mut admin = server.v2("default");
    ok(admin.create("order", "o-1", "order_created", "{}"));
    let root = ok(admin.verify("order", "o-1"));
    assert_eq!(root.as_str().map(str::len), Some(64));
    // A session opened with a token lacking aggregate.read; the per-request token is irrelevant.
    let (writer, _) = server
        .server()
        .auth()
        .issue(TokenRequest {
            group: "ops".into(),
            user: "jane".into(),
            actions: vec!["aggregate.append".into()],
            ..TokenRequest::default()
        })
        .expect("token");
    for mut client in [
        connect_v1(server.addr, &writer, "default", false).expect("v1"),
        connect_v2(server.addr, &writer, "default", None).expect("v2"),
    ] {
        client.token = server.admin_token();
        assert_eq!(err(client.verify("order", "o-1")).code, "unauthorized");
    }
}

/// A token issued by another process on the same data directory (what `dbx token generate`
/// does while the server runs) opens a v2 session at once, not after the next token refresh.
#[test]
fn a_token_issued_by_another_process_opens_v2_at_once() {
    let server = TestServer::start(|config| config.revocation_refresh_secs = 3600);
    let mut config = eventdbx_server::config::Config::defaults(server.data_dir());
    config.storage.durability = eventdbx_store::Durability::Relaxed;
    let cli = eventdbx_server::auth::Authority::open(eventdbx_server::authority_config(&config))
        .expect("a second authority on the same files");
    let (token, _) = cli
        .issue(eventdbx_server::auth::TokenRequest {
            group: "ops".into(),
            user: "jane".into(),
            actions: vec!["aggregate.read".into()],
            ..Default::default()
        })
        .expect("token");
    connect_v2(server.addr, &token, "default", None).expect("the new token is known at once");
    // A token nobody issued still fails the handshake.
    assert!(connect_v2(server.addr, "eyJ0eXAiOiJKV1QifQ.e30.c2ln", "default", None).is_err());
}

//! The v2 handshake and session, server side, against an attacker who holds a valid token and
//! plays the client with `snow` directly: the payloads of msg1 and msg3 and the chunk plaintexts
//! are the attacker's, sealed properly so that the responder's parsers behind the decryption
//! are reached; raw records are handed over undecrypted.
//!
//! Input: records (`fuzz/src/records.rs`): msg1, msg3, then one per transport frame. Asserts: no
//! panic; a message the session reassembles is within its maximum; an accepted msg3 carried the
//! token; what a whole message decodes to re-encodes to an equal request.
#![no_main]

use eventdbx_fuzz::identity::{self, SERVER_EPHEMERAL, SERVER_STATIC, TOKEN, V2_MAX_MESSAGE};
use eventdbx_fuzz::records::Records;
use eventdbx_proto::control;
use eventdbx_proto::noise::v2::{self, Responder, StaticKeypair};
use libfuzzer_sys::fuzz_target;

/// A Noise message of up to 64 KiB.
fn buffer() -> Vec<u8> {
    vec![0; 65_535]
}

fuzz_target!(|input: &[u8]| {
    let mut records = Records::new(input);
    let Some(mut attacker) = identity::v2_attacker() else {
        return;
    };
    let server_key = StaticKeypair::from_private(SERVER_STATIC);
    let prologue = identity::v2_prologue();
    let Ok(mut responder) =
        Responder::with_fixed_ephemeral(&server_key, V2_MAX_MESSAGE, &prologue, SERVER_EPHEMERAL)
    else {
        return;
    };

    // msg1: `-> e` with the token id.
    let Some(msg1) = records.next() else { return };
    let mut out = buffer();
    let bytes = if msg1.is_raw() {
        msg1.bytes.to_vec()
    } else {
        let Ok(n) = attacker.write_message(msg1.bytes, &mut out) else {
            return;
        };
        out[..n].to_vec()
    };
    if responder.read_message1(&bytes).is_err() {
        return;
    }
    let Ok(psk) = v2::psk(TOKEN) else { return };
    let Ok(msg2) = responder.write_message2(Some(&psk)) else {
        return;
    };
    // A raw msg1 the responder took leaves the attacker's state behind: it cannot follow, so
    // whatever comes next is raw bytes only.
    let mut in_step = !msg1.is_raw() && attacker.read_message(&msg2, &mut out).is_ok();

    // msg3: `-> s, se, psk` with the token.
    let Some(msg3) = records.next() else { return };
    let bytes = if msg3.is_raw() || !in_step {
        in_step = false;
        msg3.bytes.to_vec()
    } else {
        let Ok(n) = attacker.write_message(msg3.bytes, &mut out) else {
            return;
        };
        out[..n].to_vec()
    };
    let Ok(pending) = responder.read_message3(&bytes) else {
        return;
    };
    // The token id hashes the trimmed token, so whitespace around it may come through; the
    // server trims before it verifies.
    assert_eq!(
        pending.token().trim(),
        TOKEN,
        "msg3 accepted a token other than the one proved"
    );
    let Ok((_verdict, mut session)) = pending.accept() else {
        return;
    };
    let mut transport = match (in_step, attacker.into_transport_mode()) {
        (true, Ok(transport)) => Some(transport),
        _ => None,
    };

    // The session: each record one frame's payload.
    for record in records {
        let payload = match (&mut transport, record.is_raw()) {
            (Some(transport), false) => {
                let Ok(n) = transport.write_message(record.bytes, &mut out) else {
                    return;
                };
                out[..n].to_vec()
            }
            _ => record.bytes.to_vec(),
        };
        match session.opener.open_frame(&payload) {
            Ok(Some(message)) => {
                assert!(message.len() <= V2_MAX_MESSAGE);
                if let Ok((id, Ok(request))) = control::decode_request(&message) {
                    let again = request.encode(id).expect("a decoded request re-encodes");
                    let (id_again, decoded) =
                        control::decode_request(&again).expect("a re-encoded request decodes");
                    assert_eq!(id_again, id);
                    assert_eq!(decoded.ok(), Some(request));
                }
            }
            Ok(None) => {}
            // The session is out of step after any error: the server drops the connection.
            Err(_) => return,
        }
    }
});

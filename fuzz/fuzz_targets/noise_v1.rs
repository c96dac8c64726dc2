//! The v1 handshake and session, server side, against an attacker who holds the token and plays
//! the client with `snow` directly (so that it can seal a non-empty msg1 payload, which no
//! honest v1 client sends); raw records are handed over undecrypted.
//!
//! Input: records (`fuzz/src/records.rs`): msg1, then one per transport frame. Asserts: no
//! panic; each opened message is at most one Noise plaintext; a message that decodes as a
//! request re-encodes to an equal one. The v1 responder draws its own ephemeral key (it has no
//! fixed-key constructor), so msg2 differs from run to run; the attacker follows it.
#![no_main]

use eventdbx_fuzz::identity::{self, TOKEN};
use eventdbx_fuzz::records::Records;
use eventdbx_proto::control;
use eventdbx_proto::frame::NOISE_MAX_PLAINTEXT;
use eventdbx_proto::noise::v1::Responder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut records = Records::new(input);
    let Some(mut attacker) = identity::v1_attacker() else {
        return;
    };
    let Ok(mut responder) = Responder::new(TOKEN) else {
        return;
    };
    let mut out = vec![0u8; 65_535];

    let Some(msg1) = records.next() else { return };
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
    assert!(
        msg1.is_raw() || msg1.bytes.is_empty(),
        "msg1 with a payload accepted"
    );
    let Ok((msg2, mut session)) = responder.write_message2() else {
        return;
    };
    let in_step = !msg1.is_raw() && attacker.read_message(&msg2, &mut out).is_ok();
    let mut transport = match (in_step, attacker.into_transport_mode()) {
        (true, Ok(transport)) => Some(transport),
        _ => None,
    };

    for record in records {
        let ciphertext = match (&mut transport, record.is_raw()) {
            (Some(transport), false) => {
                let Ok(n) = transport.write_message(record.bytes, &mut out) else {
                    return;
                };
                out[..n].to_vec()
            }
            _ => record.bytes.to_vec(),
        };
        let Ok(message) = session.opener.open(&ciphertext) else {
            return;
        };
        assert!(message.len() <= NOISE_MAX_PLAINTEXT);
        if let Ok((id, Ok(request))) = control::decode_request(&message) {
            let again = request.encode(id).expect("a decoded request re-encodes");
            let (_, decoded) = control::decode_request(&again).expect("re-encoded request decodes");
            assert_eq!(decoded.ok(), Some(request));
        }
    }
});

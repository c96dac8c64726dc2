//! The fixed identities of the Noise targets: one token, fixed keys on both sides (so that a
//! seed replays the same handshake every run), and the attacker's side built with `snow`
//! directly, so that it can seal payloads no honest client would send.

use eventdbx_proto::hello::{Hello, HelloResponse};
use eventdbx_proto::noise::{v1, v2};
use snow::{Builder, HandshakeState};

/// The bearer token the attacker knows (a stolen or its own): the fuzz targets explore what a
/// peer with a valid token can do, which is more than what one without can.
pub const TOKEN: &str = "fuzz-token";

/// The server's static private key (v2).
pub const SERVER_STATIC: [u8; 32] = [0x11; 32];
/// The server's ephemeral private key (v2; v1's responder always draws its own).
pub const SERVER_EPHEMERAL: [u8; 32] = [0x22; 32];
/// The attacker's static private key (v2).
pub const CLIENT_STATIC: [u8; 32] = [0x33; 32];
/// The attacker's ephemeral private key.
pub const CLIENT_EPHEMERAL: [u8; 32] = [0x44; 32];

/// The largest logical message the fuzzed v2 responder accepts: small, so that announcing more
/// is reachable, and large enough for several chunks.
pub const V2_MAX_MESSAGE: usize = 256 * 1024;

/// The v2 prologue both sides bind: a v2 hello and its acceptance.
pub fn v2_prologue() -> Vec<u8> {
    let hello = Hello {
        protocol_version: v2::PROTOCOL_VERSION,
        ..Hello::default()
    };
    v2::prologue(&hello.encode(), &HelloResponse::ok(false).encode())
}

/// The v2 payloads an honest client sends: msg1 (`version || token id`) and msg3
/// (`version || max message || token length || token`, padded).
pub fn v2_honest_payloads() -> (Vec<u8>, Vec<u8>) {
    let mut msg1 = vec![1];
    if let Ok(id) = v2::TokenId::of(TOKEN) {
        msg1.extend_from_slice(&id.0);
    }
    let mut msg3 = vec![1];
    msg3.extend_from_slice(&(V2_MAX_MESSAGE as u32).to_be_bytes());
    msg3.extend_from_slice(&(TOKEN.len() as u16).to_be_bytes());
    msg3.extend_from_slice(TOKEN.as_bytes());
    msg3.resize(1 + 4 + 2 + 256, 0);
    (msg1, msg3)
}

/// The attacker's v2 initiator (`Noise_XXpsk3`), keyed like an honest client with [`TOKEN`].
pub fn v2_attacker() -> Option<HandshakeState> {
    let psk = v2::psk(TOKEN).ok()?;
    let prologue = v2_prologue();
    Builder::new(v2::PATTERN.parse().ok()?)
        .local_private_key(&CLIENT_STATIC)
        .and_then(|b| b.psk(3, &psk))
        .and_then(|b| b.prologue(&prologue))
        .ok()?
        .fixed_ephemeral_key_for_testing_only(&CLIENT_EPHEMERAL)
        .build_initiator()
        .ok()
}

/// The attacker's v1 initiator (`Noise_NNpsk0`, empty prologue), keyed with [`TOKEN`].
pub fn v1_attacker() -> Option<HandshakeState> {
    let psk = v1::psk(TOKEN).ok()?;
    Builder::new(v1::PATTERN.parse().ok()?)
        .psk(0, &psk)
        .ok()?
        .fixed_ephemeral_key_for_testing_only(&CLIENT_EPHEMERAL)
        .build_initiator()
        .ok()
}

//! Tokens (`docs/tokens.md`): issue, verify (every failure), authorise, revoke, refresh,
//! bootstrap, the v2 registry and the files behind them.

mod files;
mod grants;
mod legacy;
mod revocation;
mod shared;
mod tokens;

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use eventdbx_proto::noise::v2::{self, TokenId};
use eventdbx_server::auth::{
    AuthConfig, AuthError, Authority, Claims, KeyOverrides, Limits, TokenRequest,
};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;

fn open(dir: &Path) -> Authority {
    Authority::open_with(AuthConfig::defaults(dir), KeyOverrides::default()).expect("open")
}

fn request(actions: &[&str]) -> TokenRequest {
    TokenRequest {
        group: "ops".into(),
        user: "jane".into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
        ..TokenRequest::default()
    }
}

fn claims_with(actions: &[&str], resources: &[&str], tenants: &[&str]) -> Claims {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Claims {
        iss: "eventdbx://self".into(),
        aud: "eventdbx-clients".into(),
        sub: "ops:jane".into(),
        jti: "j".into(),
        iat: NOW,
        exp: None,
        nbf: None,
        group: "ops".into(),
        user: "jane".into(),
        actions: strings(actions),
        resources: strings(resources),
        issued_by: "cli".into(),
        limits: Limits::default(),
        tenants: strings(tenants),
    }
}

fn assert_error(result: Result<Claims, AuthError>, expected: AuthError, code: &str, message: &str) {
    let err = result.expect_err("verify should fail");
    assert_eq!(err, expected);
    assert_eq!(err.code(), code);
    assert_eq!(err.to_string(), message);
}

fn segment(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

fn sign_raw(header: &str, payload: &str, key: &SigningKey) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

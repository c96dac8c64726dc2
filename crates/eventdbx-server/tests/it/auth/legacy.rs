//! A token issued by the server before its JWTs were encoded by `jsonwebtoken`
//! (`fixtures/legacy_token.jwt`, signed with the test seed below, whose public key is
//! `fixtures/legacy_token.pub`) still verifies, to the same claims, under the same rules.

use super::*;

const LEGACY_TOKEN: &str = include_str!("fixtures/legacy_token.jwt");
const LEGACY_PUBLIC_KEY: &str = include_str!("fixtures/legacy_token.pub");
/// The seed the fixture was signed with: a test key, never a real one.
const LEGACY_SEED: [u8; 32] = [0x42; 32];
const LEGACY_KEY_ID: &str = "key-20261206120000";

fn legacy_authority(dir: &Path) -> Authority {
    Authority::open_with(
        AuthConfig::defaults(dir),
        KeyOverrides {
            private_key: Some(STANDARD.encode(LEGACY_SEED)),
            public_key: Some(LEGACY_PUBLIC_KEY.trim().to_owned()),
            key_id: Some(LEGACY_KEY_ID.to_owned()),
        },
    )
    .expect("the fixture's public key belongs to the seed")
}

#[test]
fn a_token_issued_before_the_switch_still_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = legacy_authority(dir.path());
    let token = LEGACY_TOKEN.trim();

    let header = segment(token, 0);
    assert_eq!(
        header,
        serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": LEGACY_KEY_ID})
    );
    let claims = authority
        .verify_at(token, NOW)
        .expect("legacy token verifies");
    assert_eq!(
        claims,
        Claims {
            iss: "eventdbx://self".into(),
            aud: "eventdbx-clients".into(),
            sub: "ops:jane".into(),
            jti: "ab9b72a7-1025-4763-aeae-d70ea8153dcd".into(),
            iat: NOW,
            exp: Some(NOW + 3600),
            nbf: Some(NOW - 10),
            group: "ops".into(),
            user: "jane".into(),
            actions: vec!["aggregate.read".into(), "aggregate.append".into()],
            resources: vec!["aggregate:order:*".into()],
            issued_by: "cli".into(),
            limits: Limits {
                write_events: Some(5),
                keep_alive: true,
            },
            tenants: vec!["acme".into(), "beta".into()],
        }
    );

    // The same rules still apply to it: expiry with the 30 s skew, a future nbf and iat, revocation.
    assert!(authority.verify_at(token, NOW + 3600 + 30).is_ok());
    assert_eq!(
        authority.verify_at(token, NOW + 3600 + 31),
        Err(AuthError::TokenExpired)
    );
    assert_eq!(
        authority.verify_at(token, NOW - 41),
        Err(AuthError::Unauthorized)
    );

    // Another key does not accept it, and neither does a changed signature.
    let other_dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        open(other_dir.path()).verify_at(token, NOW),
        Err(AuthError::InvalidToken)
    );
    let mut forged = token.to_owned();
    let last = forged.pop().expect("non-empty token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        authority.verify_at(&forged, NOW),
        Err(AuthError::InvalidToken)
    );

    authority.revoke(token, None).expect("revoke");
    assert_eq!(
        authority.verify_at(token, NOW),
        Err(AuthError::InvalidToken)
    );
}

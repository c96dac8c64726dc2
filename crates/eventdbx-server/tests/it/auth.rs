//! Tokens: issue, verify (every §10.3 failure), authorise, revoke, refresh, bootstrap, the v2
//! registry and the files behind them.

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

#[test]
fn defaults_follow_the_spec() {
    let config = AuthConfig::defaults(Path::new("/data"));
    assert_eq!(config.issuer, "eventdbx://self");
    assert_eq!(config.audience, "eventdbx-clients");
    assert_eq!(config.default_ttl_secs, 3600);
    assert_eq!(config.clock_skew_secs, 30);
    assert_eq!(config.key_id, None);
    assert_eq!(
        config.signing_key_file,
        Path::new("/data/secrets/token_signing.key")
    );
    assert_eq!(config.state_dir, Path::new("/data/auth"));
}

#[test]
fn issue_and_verify_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (token, claims) = authority
        .issue(TokenRequest {
            tenants: vec![" Acme ".into()],
            write_limit: Some(5),
            keep_alive: true,
            ..request(&["aggregate.read", "aggregate.append"])
        })
        .expect("issue");
    assert_eq!(authority.verify(&token).expect("verify"), claims);
    assert_eq!(
        authority.verify(&format!("  {token}\n")).expect("trimmed"),
        claims
    );

    assert_eq!(claims.iss, "eventdbx://self");
    assert_eq!(claims.aud, "eventdbx-clients");
    assert_eq!(claims.sub, "ops:jane");
    assert_eq!(claims.resources, ["*"]);
    assert_eq!(claims.tenants, ["acme"]);
    assert_eq!(claims.issued_by, "cli");
    assert_eq!(claims.exp, Some(claims.iat + 3600));
    assert_eq!(claims.nbf, None);
    assert!(claims.can_write());
    let jti = claims.jti.as_bytes();
    assert_eq!(jti.len(), 36);
    assert_eq!(jti[14], b'4');

    let header = segment(&token, 0);
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], authority.key_id());
    let key_id = authority.key_id();
    assert!(key_id.starts_with("key-") && key_id.len() == 18, "{key_id}");
    assert!(key_id[4..].bytes().all(|b| b.is_ascii_digit()));

    let payload = segment(&token, 1);
    assert!(payload.get("nbf").is_none(), "absent nbf is omitted");
    assert_eq!(payload["limits"]["write_events"], 5);
    assert_eq!(payload["limits"]["keep_alive"], true);
    for name in [
        "iss",
        "aud",
        "sub",
        "jti",
        "iat",
        "exp",
        "group",
        "user",
        "actions",
        "resources",
        "issued_by",
        "tenants",
    ] {
        assert!(payload.get(name).is_some(), "claim {name}");
    }
    assert_eq!(token.split('.').count(), 3);
    assert!(!token.contains('='));

    // The ledger holds the record and never the token.
    let records = authority.list();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].jti, claims.jti);
    assert_eq!(records[0].subject, "ops:jane");
    assert!(!records[0].revoked);
    let ledger = std::fs::read_to_string(dir.path().join("auth/ledger.json")).expect("ledger");
    assert!(ledger.contains(&claims.jti));
    assert!(!ledger.contains(&token));
    assert!(!ledger.contains(token.split('.').nth(2).expect("signature")));
}

#[test]
fn issue_rules_for_ttl_subject_and_actions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let err = authority.issue(request(&[])).expect_err("no actions");
    assert_eq!(err.code(), "invalid_schema");
    assert_eq!(
        err,
        AuthError::Invalid("token actions must contain at least one entry".into())
    );
    assert!(err
        .to_string()
        .contains("token actions must contain at least one entry"));

    let (_, no_exp) = authority
        .issue_at(
            TokenRequest {
                ttl_secs: Some(0),
                ..request(&["*"])
            },
            NOW,
        )
        .expect("ttl 0");
    assert_eq!(no_exp.exp, None);
    let (_, short) = authority
        .issue_at(
            TokenRequest {
                ttl_secs: Some(5),
                ..request(&["*"])
            },
            NOW,
        )
        .expect("ttl 5");
    assert_eq!(short.exp, Some(NOW + 60), "a TTL is at least 60 s");
    let (_, custom) = authority
        .issue_at(
            TokenRequest {
                ttl_secs: Some(600),
                subject: Some("svc".into()),
                issued_by: Some("admin".into()),
                not_before: Some(NOW + 5),
                resources: vec!["aggregate:order:*".into()],
                ..request(&["*"])
            },
            NOW,
        )
        .expect("ttl 600");
    assert_eq!(custom.exp, Some(NOW + 600));
    assert_eq!(custom.sub, "svc");
    assert_eq!(custom.issued_by, "admin");
    assert_eq!(custom.nbf, Some(NOW + 5));
    assert_eq!(custom.resources, ["aggregate:order:*"]);

    let (_, anonymous) = authority
        .issue(TokenRequest {
            group: String::new(),
            user: String::new(),
            ..request(&["aggregate.read"])
        })
        .expect("anonymous");
    assert_eq!(anonymous.sub, ":");
    assert!(!anonymous.can_write());
}

#[test]
fn verify_failures_have_their_codes_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (token, _) = authority.issue_at(request(&["*"]), NOW).expect("issue");
    assert!(authority.verify_at(&token, NOW).is_ok());

    let invalid = |t: &str| {
        assert_error(
            authority.verify_at(t, NOW),
            AuthError::InvalidToken,
            "invalid_token",
            "token not found or inactive",
        )
    };

    // Signed by another key.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = open(other_dir.path());
    let (forged, _) = other.issue_at(request(&["*"]), NOW).expect("issue");
    invalid(&forged);

    // Malformed.
    for bad in [
        "",
        "   ",
        "invalid-token",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "..",
        "€.€.€",
    ] {
        invalid(bad);
    }
    invalid(&format!("{token}.extra"));
    invalid(&format!("{token}x"));
    invalid(&token.replace('.', ".."));

    // A tampered payload keeps the old signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = segment(&token, 1);
    payload["actions"] = serde_json::json!(["tenant.manage"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    invalid(&tampered);

    // Right key, wrong algorithm (or none), or an unsigned token.
    let payload_json =
        String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("utf8");
    let key = SigningKey::from_bytes(&[9u8; 32]);
    let shared = Authority::open_with(
        AuthConfig::defaults(tempfile::tempdir().expect("tempdir").path()),
        KeyOverrides {
            private_key: Some(STANDARD.encode([9u8; 32])),
            ..KeyOverrides::default()
        },
    )
    .expect("open with key");
    let good = sign_raw(r#"{"typ":"JWT","alg":"EdDSA"}"#, &payload_json, &key);
    assert!(shared.verify_at(&good, NOW).is_ok(), "hand-signed EdDSA");
    for header in [
        r#"{"typ":"JWT","alg":"HS256"}"#,
        r#"{"typ":"JWT","alg":"none"}"#,
        r#"{"typ":"JWT","alg":"eddsa"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        assert_eq!(
            shared.verify_at(&sign_raw(header, &payload_json, &key), NOW),
            Err(AuthError::InvalidToken),
            "{header}"
        );
    }
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        parts[1]
    );
    assert_eq!(
        shared.verify_at(&unsigned, NOW),
        Err(AuthError::InvalidToken)
    );
    // Correctly signed but not claims.
    let not_claims = sign_raw(r#"{"typ":"JWT","alg":"EdDSA"}"#, r#"{"iss":1}"#, &key);
    assert_eq!(
        shared.verify_at(&not_claims, NOW),
        Err(AuthError::InvalidToken)
    );

    // Issuer and audience: same key, another configuration.
    let seed = STANDARD.encode([3u8; 32]);
    let with_key = |dir: &Path, issuer: &str, audience: &str| {
        let mut config = AuthConfig::defaults(dir);
        config.issuer = issuer.into();
        config.audience = audience.into();
        Authority::open_with(
            config,
            KeyOverrides {
                private_key: Some(seed.clone()),
                ..KeyOverrides::default()
            },
        )
        .expect("open")
    };
    let issuing_dir = tempfile::tempdir().expect("tempdir");
    let issuing = with_key(issuing_dir.path(), "eventdbx://self", "eventdbx-clients");
    let (shared_token, _) = issuing.issue_at(request(&["*"]), NOW).expect("issue");
    for (issuer, audience) in [
        ("eventdbx://other", "eventdbx-clients"),
        ("eventdbx://self", "other-clients"),
    ] {
        let verifying_dir = tempfile::tempdir().expect("tempdir");
        let verifying = with_key(verifying_dir.path(), issuer, audience);
        assert_error(
            verifying.verify_at(&shared_token, NOW),
            AuthError::Unauthorized,
            "unauthorized",
            "unauthorized",
        );
    }
    let verifying_dir = tempfile::tempdir().expect("tempdir");
    let same = with_key(verifying_dir.path(), "eventdbx://self", "eventdbx-clients");
    assert!(
        same.verify_at(&shared_token, NOW).is_ok(),
        "a correctly signed token need not be in the ledger"
    );

    // Expiry with the 30 s skew.
    let (short, claims) = authority
        .issue_at(
            TokenRequest {
                ttl_secs: Some(60),
                ..request(&["*"])
            },
            NOW,
        )
        .expect("issue");
    let exp = claims.exp.expect("exp");
    assert!(
        authority.verify_at(&short, exp + 20).is_ok(),
        "20 s late is within skew"
    );
    assert!(authority.verify_at(&short, exp + 30).is_ok());
    assert_error(
        authority.verify_at(&short, exp + 31),
        AuthError::TokenExpired,
        "token_expired",
        "token has expired",
    );
    assert_error(
        authority.verify_at(&short, exp + 40),
        AuthError::TokenExpired,
        "token_expired",
        "token has expired",
    );
    // Expiry is checked on every call, also for a cached token.
    assert!(authority.verify_at(&short, NOW).is_ok());

    // nbf in the future.
    let (later, _) = authority
        .issue_at(
            TokenRequest {
                not_before: Some(NOW + 600),
                ..request(&["*"])
            },
            NOW,
        )
        .expect("issue");
    assert_error(
        authority.verify_at(&later, NOW),
        AuthError::Unauthorized,
        "unauthorized",
        "unauthorized",
    );
    assert!(authority.verify_at(&later, NOW + 600).is_ok());

    // iat more than the skew in the future.
    let (future, _) = authority
        .issue_at(request(&["*"]), NOW + 100)
        .expect("issue");
    assert_error(
        authority.verify_at(&future, NOW),
        AuthError::Unauthorized,
        "unauthorized",
        "unauthorized",
    );
    assert!(authority.verify_at(&future, NOW + 70).is_ok());

    // Revoked.
    authority.revoke(&token, None).expect("revoke");
    assert_error(
        authority.verify_at(&token, NOW),
        AuthError::InvalidToken,
        "invalid_token",
        "token not found or inactive",
    );
}

#[test]
fn skew_is_configurable_and_clamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = AuthConfig::defaults(dir.path());
    config.clock_skew_secs = 10_000;
    config.default_ttl_secs = 1;
    let authority = Authority::open_with(config, KeyOverrides::default()).expect("open");
    let (token, claims) = authority.issue_at(request(&["*"]), NOW).expect("issue");
    assert_eq!(claims.exp, Some(NOW + 60), "default TTL is at least 60 s");
    assert!(authority.verify_at(&token, NOW + 60 + 300).is_ok());
    assert_eq!(
        authority.verify_at(&token, NOW + 60 + 301),
        Err(AuthError::TokenExpired)
    );
}

#[test]
fn glob_patterns_authorise_actions_and_resources() {
    let all = claims_with(&["*"], &["*"], &[]);
    assert!(all
        .authorize("tenant.manage", Some("aggregate:order:1"))
        .is_ok());
    let all_dotted = claims_with(&["*.*"], &[], &[]);
    assert!(all_dotted.allows_action("aggregate.read"));
    assert!(all_dotted.allows_action("anything"));
    assert!(
        all_dotted.allows_resource("aggregate:x:y"),
        "empty resources allow all"
    );

    let aggregates = claims_with(&["aggregate.*"], &["aggregate:order:*"], &[]);
    assert!(aggregates.authorize("aggregate.append", None).is_ok());
    assert!(aggregates
        .authorize("aggregate.read", Some("aggregate:order:o-1"))
        .is_ok());
    assert_eq!(
        aggregates.authorize("schema.read", None),
        Err(AuthError::Unauthorized)
    );
    assert_eq!(
        aggregates.authorize("aggregate.read", Some("aggregate:person:p-1")),
        Err(AuthError::Unauthorized)
    );
    assert_eq!(
        aggregates
            .authorize("aggregate.read", Some("aggregate:orders:o-1"))
            .map_err(|e| e.code()),
        Err("unauthorized")
    );

    let single = claims_with(&["schema.????"], &["aggregate:order:o-?"], &[]);
    assert!(single.allows_action("schema.read"));
    assert!(!single.allows_action("schema.write"));
    assert!(single.allows_resource("aggregate:order:o-1"));
    assert!(!single.allows_resource("aggregate:order:o-10"));

    let exact = claims_with(&["aggregate.read"], &["aggregate:order:o-1"], &[]);
    assert!(exact.allows_action("aggregate.read"));
    assert!(!exact.allows_action("aggregate.readx"));
    assert!(!exact.allows_action("Aggregate.read"));
    assert!(!exact.allows_resource("aggregate:order:o-10"));

    let none = claims_with(&[], &[], &[]);
    assert_eq!(
        none.authorize("aggregate.read", None),
        Err(AuthError::Unauthorized)
    );
}

#[test]
fn tenants_are_normalised_and_compared_case_insensitively() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (token, claims) = authority
        .issue(TokenRequest {
            tenants: vec![" Beta ".into(), "acme".into(), "ACME".into(), "".into()],
            ..request(&["*"])
        })
        .expect("issue");
    assert_eq!(claims.tenants, ["acme", "beta"]);
    let verified = authority.verify(&token).expect("verify");
    assert!(verified.allows_tenant("acme"));
    assert!(verified.allows_tenant("BETA"));
    assert!(!verified.allows_tenant("gamma"));
    assert_eq!(
        verified.authorize_tenant("gamma"),
        Err(AuthError::Unauthorized)
    );
    assert!(claims_with(&["*"], &[], &[]).allows_tenant("anything"));
    assert!(claims_with(&["*"], &[], &["Acme"]).allows_tenant("ACME"));
}

#[test]
fn revoke_takes_effect_immediately() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (by_token, _) = authority.issue(request(&["*"])).expect("issue");
    let (by_jti, jti_claims) = authority.issue(request(&["*"])).expect("issue");
    let (kept, _) = authority.issue(request(&["*"])).expect("issue");
    for token in [&by_token, &by_jti, &kept] {
        authority.verify(token).expect("cached before revoking");
    }

    let record = authority
        .revoke(&by_token, Some("leaked"))
        .expect("revoke by token");
    assert!(record.revoked);
    assert!(record.revoked_at.is_some());
    assert_eq!(record.revoke_reason.as_deref(), Some("leaked"));
    let record = authority
        .revoke(&jti_claims.jti, None)
        .expect("revoke by jti");
    assert_eq!(record.jti, jti_claims.jti);

    assert_eq!(authority.verify(&by_token), Err(AuthError::InvalidToken));
    assert_eq!(authority.verify(&by_jti), Err(AuthError::InvalidToken));
    assert!(authority.verify(&kept).is_ok());

    // Revoking again returns the record unchanged.
    let again = authority.revoke(&by_token, Some("other")).expect("again");
    assert_eq!(again.revoke_reason.as_deref(), Some("leaked"));

    assert_eq!(
        authority.revoke("00000000-0000-4000-8000-000000000000", None),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(authority.revoke("", None), Err(AuthError::InvalidToken));
    assert_eq!(
        authority.revoke("not.a.token", None),
        Err(AuthError::InvalidToken)
    );

    let revocations: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("auth/revocations.json")).expect("revocations"),
    )
    .expect("json");
    let entries = revocations.as_array().expect("array");
    assert_eq!(entries.len(), 2);
    for field in ["jti", "revoked_at", "reason", "expires_at"] {
        assert!(entries[0].get(field).is_some(), "{field}");
    }
    let revoked: Vec<_> = authority.list().into_iter().filter(|r| r.revoked).collect();
    assert_eq!(revoked.len(), 2);
}

#[test]
fn revoking_an_unlisted_signed_token_records_it() {
    let seed = STANDARD.encode([5u8; 32]);
    let overrides = KeyOverrides {
        private_key: Some(seed),
        ..KeyOverrides::default()
    };
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = Authority::open_with(AuthConfig::defaults(a_dir.path()), overrides.clone())
        .expect("open a");
    let b = Authority::open_with(AuthConfig::defaults(b_dir.path()), overrides).expect("open b");
    let (token, claims) = a.issue(request(&["*"])).expect("issue");
    assert!(b.verify(&token).is_ok());
    let record = b.revoke(&token, None).expect("revoke");
    assert_eq!(record.jti, claims.jti);
    assert_eq!(b.verify(&token), Err(AuthError::InvalidToken));
    assert_eq!(b.list().len(), 1);
}

#[test]
fn refresh_revokes_and_reissues_with_the_same_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (old, old_claims) = authority
        .issue_at(
            TokenRequest {
                ttl_secs: Some(900),
                tenants: vec!["acme".into()],
                resources: vec!["aggregate:order:*".into()],
                write_limit: Some(3),
                ..request(&["aggregate.read"])
            },
            NOW,
        )
        .expect("issue");
    let (new, new_claims) = authority
        .refresh_at(&old, None, NOW + 100)
        .expect("refresh");
    assert_ne!(new, old);
    assert_ne!(new_claims.jti, old_claims.jti);
    assert_eq!(new_claims.iat, NOW + 100);
    assert_eq!(new_claims.exp, Some(NOW + 100 + 900), "original TTL");
    let comparable = |c: &Claims| {
        let mut c = c.clone();
        c.jti.clear();
        c.iat = 0;
        c.exp = None;
        c
    };
    assert_eq!(comparable(&new_claims), comparable(&old_claims));
    assert_eq!(
        authority.verify_at(&old, NOW + 100),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        authority.verify_at(&new, NOW + 100).expect("verify"),
        new_claims
    );
    let old_record = authority
        .list()
        .into_iter()
        .find(|r| r.jti == old_claims.jti)
        .expect("old record");
    assert!(old_record.revoked);
    assert_eq!(old_record.revoke_reason.as_deref(), Some("refreshed"));

    let (_, custom) = authority
        .refresh_at(&new, Some(120), NOW + 200)
        .expect("refresh with ttl");
    assert_eq!(custom.exp, Some(NOW + 200 + 120));
    assert_eq!(
        authority.refresh_at(&old, None, NOW + 300),
        Err(AuthError::InvalidToken),
        "a revoked token cannot be refreshed"
    );
    let (forever, _) = authority
        .issue(TokenRequest {
            ttl_secs: Some(0),
            ..request(&["*"])
        })
        .expect("issue");
    let (_, refreshed) = authority.refresh(&forever, None).expect("refresh");
    assert_eq!(refreshed.exp, None);
}

#[test]
fn bootstrap_token_claims() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let token = authority.bootstrap(7200).expect("bootstrap");
    let claims = authority.verify(&token).expect("verify");
    assert_eq!(claims.sub, "cli:bootstrap");
    assert_eq!(claims.group, "cli");
    assert_eq!(claims.user, "root");
    assert_eq!(claims.issued_by, "cli-bootstrap");
    assert_eq!(claims.actions, ["*.*"]);
    assert_eq!(claims.resources, ["*"]);
    assert!(claims.tenants.is_empty());
    assert_eq!(claims.exp, Some(claims.iat + 7200));
    assert!(claims
        .authorize("tenant.manage", Some("aggregate:a:b"))
        .is_ok());
    assert!(claims.can_write());
    let records = authority.list();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].subject, "cli:bootstrap");
}

#[test]
fn registry_maps_token_ids_to_psks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (token, _) = authority.issue(request(&["*"])).expect("issue");
    let id = TokenId::of(&token).expect("id");
    assert_eq!(authority.psk_for(&id), Some(v2::psk(&token).expect("psk")));
    let unknown = TokenId::of("some other token").expect("id");
    assert_eq!(authority.psk_for(&unknown), None);

    let registry = std::fs::read_to_string(dir.path().join("auth/registry.json")).expect("read");
    assert!(registry.contains(&id.to_string()));
    assert!(!registry.contains(&token));

    authority.revoke(&token, None).expect("revoke");
    assert_eq!(authority.psk_for(&id), None);
    let registry = std::fs::read_to_string(dir.path().join("auth/registry.json")).expect("read");
    assert!(!registry.contains(&id.to_string()));
}

#[cfg(unix)]
#[test]
fn secret_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (token, _) = authority.issue(request(&["*"])).expect("issue");
    authority.revoke(&token, None).expect("revoke");
    drop(authority);
    let key = dir.path().join("secrets/token_signing.key");
    assert_eq!(mode(&dir.path().join("secrets")), 0o700);
    for file in [
        key.clone(),
        dir.path().join("secrets/token_signing.kid"),
        dir.path().join("auth/ledger.json"),
        dir.path().join("auth/revocations.json"),
        dir.path().join("auth/registry.json"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("auth"))
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files are left");

    // The key file is base64 PKCS#8 and re-opens to the same key.
    let text = std::fs::read_to_string(&key).expect("key");
    assert_eq!(STANDARD.decode(text.trim()).expect("base64").len(), 48);

    for (path, bad_mode) in [(key.clone(), 0o644), (key.clone(), 0o640)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad_mode)).expect("chmod");
        let err = Authority::open_with(AuthConfig::defaults(dir.path()), KeyOverrides::default())
            .expect_err("must refuse a readable key");
        assert_eq!(err.code(), "config");
        assert!(err.to_string().contains("token_signing.key"), "{err}");
        assert!(err.to_string().contains("group or others"), "{err}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let registry = dir.path().join("auth/registry.json");
    std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    let err = Authority::open_with(AuthConfig::defaults(dir.path()), KeyOverrides::default())
        .expect_err("must refuse a readable registry");
    assert_eq!(err.code(), "config");
    std::fs::set_permissions(&registry, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(
        Authority::open_with(AuthConfig::defaults(dir.path()), KeyOverrides::default()).is_ok()
    );
}

#[test]
fn reopening_reloads_key_ledger_revocations_and_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let key_id = authority.key_id().to_owned();
    let (kept, kept_claims) = authority.issue(request(&["*"])).expect("issue");
    let (revoked, _) = authority.issue(request(&["*"])).expect("issue");
    authority.revoke(&revoked, Some("gone")).expect("revoke");
    let records = authority.list();
    drop(authority);

    let reopened = open(dir.path());
    assert_eq!(reopened.key_id(), key_id);
    assert_eq!(reopened.verify(&kept).expect("verify"), kept_claims);
    assert_eq!(reopened.verify(&revoked), Err(AuthError::InvalidToken));
    assert_eq!(reopened.list(), records);
    assert_eq!(
        reopened.psk_for(&TokenId::of(&kept).expect("id")),
        Some(v2::psk(&kept).expect("psk"))
    );
    assert_eq!(reopened.psk_for(&TokenId::of(&revoked).expect("id")), None);
}

#[test]
fn reload_picks_up_what_another_process_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = open(dir.path());
    let cli = open(dir.path());
    let (token, _) = cli.issue(request(&["*"])).expect("issue");
    assert!(
        server.verify(&token).is_ok(),
        "same key, not in the server's ledger yet"
    );
    assert_eq!(server.psk_for(&TokenId::of(&token).expect("id")), None);
    server.reload().expect("reload");
    assert!(server.psk_for(&TokenId::of(&token).expect("id")).is_some());

    cli.revoke(&token, None).expect("revoke");
    assert!(server.verify(&token).is_ok(), "not reloaded yet");
    server.reload().expect("reload");
    assert_eq!(server.verify(&token), Err(AuthError::InvalidToken));

    // A write by the server keeps the CLI's records.
    let (_, _) = server.issue(request(&["*"])).expect("issue");
    assert_eq!(open(dir.path()).list().len(), 2);
}

#[test]
fn key_and_key_id_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::from_bytes(&[11u8; 32]);
    let mut pkcs8 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    pkcs8.extend_from_slice(key.as_bytes());
    let authority = Authority::open_with(
        AuthConfig::defaults(dir.path()),
        KeyOverrides {
            private_key: Some(STANDARD.encode(&pkcs8)),
            public_key: Some(STANDARD.encode(key.verifying_key().to_bytes())),
            key_id: Some("key-fixed".into()),
        },
    )
    .expect("open");
    assert_eq!(authority.key_id(), "key-fixed");
    assert_eq!(authority.verifying_key(), key.verifying_key());
    assert!(
        !dir.path().join("secrets/token_signing.key").exists(),
        "an overridden key is never written"
    );
    let (token, _) = authority.issue(request(&["*"])).expect("issue");
    assert_eq!(segment(&token, 0)["kid"], "key-fixed");

    let mut config = AuthConfig::defaults(dir.path());
    config.key_id = Some("key-config".into());
    let configured = Authority::open_with(config, KeyOverrides::default()).expect("open");
    assert_eq!(configured.key_id(), "key-config");

    let mismatch = Authority::open_with(
        AuthConfig::defaults(dir.path()),
        KeyOverrides {
            private_key: Some(STANDARD.encode([1u8; 32])),
            public_key: Some(STANDARD.encode(key.verifying_key().to_bytes())),
            key_id: None,
        },
    )
    .expect_err("public key mismatch");
    assert_eq!(mismatch.code(), "config");
    let garbage = Authority::open_with(
        AuthConfig::defaults(dir.path()),
        KeyOverrides {
            private_key: Some("definitely not a key".into()),
            ..KeyOverrides::default()
        },
    )
    .expect_err("bad key");
    assert_eq!(garbage.code(), "config");
}

#[test]
fn concurrent_verify_and_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = Arc::new(open(dir.path()));
    let tokens: Vec<String> = (0..8)
        .map(|_| authority.issue(request(&["*"])).expect("issue").0)
        .collect();
    let tokens = Arc::new(tokens);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let authority = Arc::clone(&authority);
            let tokens = Arc::clone(&tokens);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for token in tokens.iter().skip(1) {
                        authority.verify(token).expect("verify");
                    }
                    let _ = authority.verify(&tokens[0]);
                }
            })
        })
        .collect();
    authority.revoke(&tokens[0], None).expect("revoke");
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(authority.verify(&tokens[0]), Err(AuthError::InvalidToken));
}

/// One authority for every proptest case: opening one writes and syncs files.
fn shared() -> &'static Authority {
    static SHARED: std::sync::OnceLock<(tempfile::TempDir, Authority)> = std::sync::OnceLock::new();
    let (_, authority) = SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = open(dir.path());
        (dir, authority)
    });
    authority
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics_on_random_input(input in ".{0,300}") {
        let authority = shared();
        prop_assert_eq!(authority.verify(&input), Err(AuthError::InvalidToken));
    }

    #[test]
    fn verify_rejects_mutated_tokens(
        position in 0usize..10_000,
        replacement in proptest::sample::select(b"abcXYZ019-_.=+/ ".to_vec()),
        segments in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5),
    ) {
        let authority = shared();
        static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let token = TOKEN.get_or_init(|| authority.issue(request(&["*"])).expect("issue").0);
        let mut bytes = token.clone().into_bytes();
        let index = position % bytes.len();
        let changed = bytes[index] != replacement;
        bytes[index] = replacement;
        let mutated = String::from_utf8(bytes).expect("ascii");
        let result = authority.verify(&mutated);
        if changed && mutated.trim() != token.as_str() {
            prop_assert_eq!(result, Err(AuthError::InvalidToken));
        }
        let joined = segments.join(".");
        prop_assert_eq!(authority.verify(&joined), Err(AuthError::InvalidToken));
    }
}

//! Issuing and verifying tokens: the defaults, the issue rules, every verify failure with its
//! code and message, and the clock skew.

use super::*;

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

//! Revoking, refreshing and bootstrap tokens, and verify racing revoke.

use super::*;

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

#[test]
fn a_revoked_token_gets_the_revoked_verdict_on_v2() {
    use crate::support::{connect_v2, TestServer, ALL_ACTIONS};
    let server = TestServer::start(|_| {});
    let token = server.token(&ALL_ACTIONS, &[]);
    server.server().auth().revoke(&token, None).expect("revoke");
    let Err(refused) = connect_v2(server.addr, &token, "default", Some(server.fingerprint()))
    else {
        panic!("a revoked token is refused");
    };
    assert!(refused.contains("token has been revoked"), "{refused}");
    // Any other bad token is still refused without a word about it.
    let unknown = format!("{token}x");
    let Err(closed) = connect_v2(server.addr, &unknown, "default", Some(server.fingerprint()))
    else {
        panic!("an unknown token is refused");
    };
    assert!(!closed.contains("revoked"), "{closed}");
}

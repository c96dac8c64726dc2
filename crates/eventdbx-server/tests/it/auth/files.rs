//! The files behind the authority: the v2 registry, owner-only secrets, reopening and reloading
//! what another process wrote, and key overrides.

use super::*;

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
fn a_revoked_tokens_psk_stays_for_its_handshake_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = open(dir.path());
    let (kept, _) = authority.issue(request(&["*"])).expect("issue");
    let (revoked, _) = authority.issue(request(&["*"])).expect("issue");
    let id = TokenId::of(&revoked).expect("id");
    authority.revoke(&revoked, None).expect("revoke");
    let psk = Some(v2::psk(&revoked).expect("psk"));
    assert_eq!(authority.handshake_psk(&id), psk);
    assert!(authority.is_revoked(&revoked));
    assert!(!authority.is_revoked(&kept));
    assert!(!authority.is_revoked("not a token"));
    // It survives a restart, in its own secret file, not in the live registry.
    drop(authority);
    let reopened = open(dir.path());
    assert_eq!(reopened.handshake_psk(&id), psk);
    assert_eq!(reopened.psk_for(&id), None);
    assert!(reopened.is_revoked(&revoked));
    assert_eq!(
        reopened.handshake_psk(&TokenId::of(&kept).expect("id")),
        Some(v2::psk(&kept).expect("psk"))
    );
    assert_eq!(
        reopened.handshake_psk(&TokenId::of("unknown").expect("id")),
        None
    );
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

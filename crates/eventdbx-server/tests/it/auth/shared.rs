//! Authorities sharing control documents (`docs/storage.md`, "Several servers"), as the servers
//! of one PostgreSQL database do, here on in-memory documents: each signs with its own key and
//! accepts the others'; issues and revocations made by one are in force on the other once it is
//! told the document changed; issues racing on the shared ledger all persist.

use std::sync::Arc;

use eventdbx_proto::noise::v2::TokenId;
use eventdbx_server::auth::{AuthConfig, AuthError, Authority, KeyOverrides};
use eventdbx_store::documents::{ControlDocuments, MemoryDocuments};

use super::request;

fn open_shared(dir: &std::path::Path, documents: &Arc<MemoryDocuments>) -> Authority {
    let documents: Arc<dyn ControlDocuments> = Arc::clone(documents) as Arc<dyn ControlDocuments>;
    Authority::open_shared(
        AuthConfig::defaults(dir),
        KeyOverrides::default(),
        documents,
    )
    .expect("open shared")
}

/// Tells `authority` that every document changed, as the server's poll would.
fn sync(authority: &Authority, documents: &MemoryDocuments) {
    for name in documents.revisions().expect("revisions").keys() {
        authority.document_changed(name).expect("reload");
    }
}

#[test]
fn each_authority_accepts_the_others_tokens_and_revocations() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let documents = Arc::new(MemoryDocuments::default());
    let a = open_shared(a_dir.path(), &documents);
    let b = open_shared(b_dir.path(), &documents);
    assert_ne!(
        a.verifying_key(),
        b.verifying_key(),
        "each keeps its own key"
    );
    // A's key was published before B opened; B's reaches A when A reloads the key set.
    let (from_a, _) = a.issue(request(&["aggregate.read"])).expect("issue on a");
    assert_eq!(b.verify(&from_a).expect("a's token on b").user, "jane");
    let id = TokenId::of(&from_a).expect("token id");
    assert!(
        b.psk_for(&id).is_none(),
        "b has not reloaded the registry yet"
    );
    sync(&b, &documents);
    assert!(b.psk_for(&id).is_some(), "a's registry entry reached b");

    let (from_b, _) = b.issue(request(&["aggregate.read"])).expect("issue on b");
    assert_eq!(a.verify(&from_b), Err(AuthError::InvalidToken));
    sync(&a, &documents);
    a.verify(&from_b).expect("b's token on a once a reloaded");

    a.revoke(&from_a, Some("leaked")).expect("revoke on a");
    b.verify(&from_a).expect("not yet reloaded");
    sync(&b, &documents);
    assert_eq!(b.verify(&from_a), Err(AuthError::InvalidToken));
    assert!(b.psk_for(&id).is_none());
    assert!(
        b.handshake_psk(&id).is_some(),
        "kept for the revoked verdict"
    );
}

#[test]
fn issues_racing_on_the_shared_ledger_all_persist() {
    const EACH: usize = 20;
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let documents = Arc::new(MemoryDocuments::default());
    let a = open_shared(a_dir.path(), &documents);
    let b = open_shared(b_dir.path(), &documents);
    // Four issuers, two per authority: a write prepared from a ledger another one changed
    // meanwhile loses its compare-and-swap and must keep the winner's tokens when it retries.
    let jtis: Vec<String> = std::thread::scope(|scope| {
        let issuers: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|authority| {
                scope.spawn(move || {
                    (0..EACH)
                        .map(|_| {
                            authority
                                .issue(request(&["aggregate.read"]))
                                .expect("issue")
                                .1
                                .jti
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        issuers
            .into_iter()
            .flat_map(|issuer| issuer.join().expect("issuer"))
            .collect()
    });
    let fresh = open_shared(tempfile::tempdir().expect("dir").path(), &documents);
    let ledger: Vec<String> = fresh.list().into_iter().map(|record| record.jti).collect();
    for jti in &jtis {
        assert!(ledger.contains(jti), "{jti} missing from {ledger:?}");
    }
    assert_eq!(ledger.len(), 4 * EACH);
}

#[test]
fn tokens_of_the_files_come_along_to_the_shared_state() {
    let dir = tempfile::tempdir().expect("dir");
    let alone = super::open(dir.path());
    let (token, claims) = alone.issue(request(&["aggregate.read"])).expect("issue");
    drop(alone);
    let documents = Arc::new(MemoryDocuments::default());
    let shared = open_shared(dir.path(), &documents);
    assert!(shared.list().iter().any(|record| record.jti == claims.jti));
    let id = TokenId::of(&token).expect("token id");
    assert!(
        shared.psk_for(&id).is_some(),
        "its v2 registry entry came along"
    );
    let other = open_shared(tempfile::tempdir().expect("dir").path(), &documents);
    other.verify(&token).expect("verifies on another server");
    assert!(other.psk_for(&id).is_some());
}

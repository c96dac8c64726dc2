//! Authorities sharing control documents (`docs/storage.md`, "Several servers"), as the servers
//! of one PostgreSQL database do, here on in-memory documents: each signs with its own key and
//! accepts the others'; issues and revocations made by one are in force on the other once it is
//! told the document changed; an issue overtaken by another server's keeps both tokens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use eventdbx_proto::noise::v2::TokenId;
use eventdbx_server::auth::{AuthConfig, AuthError, Authority, KeyOverrides};
use eventdbx_store::documents::{ControlDocument, ControlDocuments, Expected, MemoryDocuments};

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

/// Documents that run a hook (once) just before a write, as if another server wrote then.
#[derive(Default)]
struct Overtaken {
    inner: MemoryDocuments,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Overtaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Overtaken")
    }
}

impl ControlDocuments for Overtaken {
    fn read(&self, name: &str) -> eventdbx_store::Result<Option<ControlDocument>> {
        self.inner.read(name)
    }

    fn write(
        &self,
        name: &str,
        body: &[u8],
        expected: Expected,
    ) -> eventdbx_store::Result<Option<u64>> {
        let hook = self.hook.lock().expect("hook").take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.write(name, body, expected)
    }

    fn revisions(&self) -> eventdbx_store::Result<BTreeMap<String, u64>> {
        self.inner.revisions()
    }
}

#[test]
fn an_issue_overtaken_by_another_servers_keeps_both_tokens() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let documents = Arc::new(Overtaken::default());
    let shared: Arc<dyn ControlDocuments> = Arc::clone(&documents) as Arc<dyn ControlDocuments>;
    let open = |dir: &std::path::Path| {
        Arc::new(
            Authority::open_shared(
                AuthConfig::defaults(dir),
                KeyOverrides::default(),
                Arc::clone(&shared),
            )
            .expect("open shared"),
        )
    };
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    // A issues between B's read of the ledger and B's write of it.
    let first = Arc::new(Mutex::new(None));
    {
        let (a, first) = (Arc::clone(&a), Arc::clone(&first));
        *documents.hook.lock().expect("hook") = Some(Box::new(move || {
            let (_, claims) = a.issue(request(&["aggregate.read"])).expect("a");
            *first.lock().expect("first") = Some(claims.jti);
        }));
    }
    let (_, second) = b.issue(request(&["aggregate.read"])).expect("b");
    let first = first.lock().expect("first").clone().expect("a issued");
    let fresh = open(tempfile::tempdir().expect("dir").path());
    let ledger: Vec<String> = fresh.list().into_iter().map(|record| record.jti).collect();
    assert!(ledger.contains(&first), "{first} missing from {ledger:?}");
    assert!(
        ledger.contains(&second.jti),
        "{} missing from {ledger:?}",
        second.jti
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

//! What a token allows: glob patterns over actions and resources, tenants compared without
//! case, and verify never accepting random or mutated input.

use super::*;

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

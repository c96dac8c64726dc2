//! `dbx token …` on a workspace without a running server.

use crate::workspace::dbx_in;

/// A TTL under the minimum is raised (docs/tokens.md, "Issuing"), and `dbx` says so instead of
/// handing out a token that lives longer than asked without a word.
#[test]
fn token_generate_says_when_it_raises_a_ttl_to_the_minimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx_in(dir.path()).arg("init").output().expect("dbx init");
    assert!(init.status.success(), "{}", text(&init.stderr));

    let output = dbx_in(dir.path())
        .args([
            "token", "generate", "--group", "ops", "--user", "u", "--action", "*.*", "--ttl", "1",
            "--json",
        ])
        .output()
        .expect("dbx token generate");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let issued: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let claims = &issued["claims"];
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, 60, "{claims}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("ttl 1s") && stderr.contains("60 s"),
        "no word of the raised ttl: {stderr:?}"
    );

    // At or over the minimum, and 0 (no expiry): nothing to say.
    for ttl in ["60", "0"] {
        let output = dbx_in(dir.path())
            .args([
                "token", "generate", "--group", "ops", "--user", "u", "--action", "*.*", "--ttl",
                ttl,
            ])
            .output()
            .expect("dbx token generate");
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            !text(&output.stderr).contains("ttl"),
            "ttl {ttl}: {}",
            text(&output.stderr)
        );
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

//! The committed generated code must be what `capnpc` makes of the committed schema.
//!
//! The crate ships the generated Rust code so that building it (and `pip install` of the Python
//! package) needs no Cap'n Proto compiler. This test catches a schema edited without regenerating,
//! and a hand-edited generated file. `scripts/regen-capnp.sh` runs the ignored
//! `regenerate_committed_code` test to rewrite the committed files.

use std::path::{Path, PathBuf};

/// The generated files, relative to `src/schema/`.
const GENERATED: [&str; 3] = ["control_capnp.rs", "schema_capnp.rs", "plugin_capnp.rs"];

/// Runs `capnpc` on the committed schema (`control`, `schema` and `plugin`), writing every file of
/// [`GENERATED`] into `out_dir`, or returns `None` when no `capnp` binary is on `PATH`.
///
/// The schema paths are relative on purpose: `capnp` records them in the generated code, so
/// absolute paths would make the output depend on where the repository is checked out. Cargo runs
/// integration tests with the package root as working directory.
fn generate(out_dir: &Path) -> Option<()> {
    if std::process::Command::new("capnp")
        .arg("--version")
        .output()
        .is_err()
    {
        return None;
    }
    capnpc::CompilerCommand::new()
        .src_prefix("schema")
        .file("schema/control.capnp")
        .file("schema/schema.capnp")
        .file("schema/plugin.capnp")
        .default_parent_module(vec!["schema".into()])
        .output_path(out_dir)
        .run()
        .expect("capnpc failed on the committed schema");
    Some(())
}

/// The generated code with its `// capnp binary version: x.y.z` header line removed.
///
/// That line names the local `capnp` binary, not anything the schema decides: a developer whose
/// distribution ships another Cap'n Proto release must not see this test fail for it.
fn without_compiler_version(code: &str) -> String {
    code.lines()
        .filter(|line| !line.starts_with("// capnp binary version:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn committed_dir() -> PathBuf {
    crate::manifest_dir().join("src/schema")
}

#[test]
fn committed_code_matches_schema() {
    let tmp = tempfile::tempdir().expect("temp dir");
    if generate(tmp.path()).is_none() {
        eprintln!("capnp is not on PATH: skipped comparing the generated code with the schema");
        return;
    }
    for name in GENERATED {
        let fresh = std::fs::read_to_string(tmp.path().join(name)).expect("capnpc output");
        let committed =
            std::fs::read_to_string(committed_dir().join(name)).expect("committed file");
        assert!(
            without_compiler_version(&fresh) == without_compiler_version(&committed),
            "src/schema/{name} is out of date with schema/*.capnp: run scripts/regen-capnp.sh"
        );
    }
}

/// Rewrites the committed generated code; run through `scripts/regen-capnp.sh`.
#[test]
#[ignore = "writes into src/schema; run by scripts/regen-capnp.sh"]
fn regenerate_committed_code() {
    generate(&committed_dir()).expect("capnp must be on PATH to regenerate the schema code");
}

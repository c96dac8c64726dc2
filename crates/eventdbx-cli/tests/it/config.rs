//! `dbx config`: printing the configuration, and editing it in place without losing what the
//! user wrote in the file.

use std::path::Path;
use std::process::Output;

use crate::workspace::dbx_in;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn dbx(dir: &Path, args: &[&str]) -> Output {
    dbx_in(dir).args(args).output().expect("dbx runs")
}

#[test]
fn config_flags_edit_the_file_and_keep_its_comments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = dbx(dir.path(), &["init"]);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let path = dir.path().join(".dbx/config.toml");
    let commented = std::fs::read_to_string(&path)
        .expect("config")
        .replace(
            "port = 7070\n",
            "# the load balancer checks /health here\nport = 7070 # keep in sync with the LB\n",
        )
        .replace("[socket]\n", "# clients connect here\n[socket]\n");
    std::fs::write(&path, &commented).expect("write config");

    let edit = dbx(
        dir.path(),
        &[
            "config",
            "--port",
            "9090",
            "--bind-addr",
            "127.0.0.1:7001",
            "--page-limit",
            "250",
            "--no-noise",
        ],
    );
    assert!(edit.status.success(), "{}", text(&edit.stderr));
    // The printed configuration is the edited one.
    let printed = text(&edit.stdout);
    for line in [
        "port = 9090\n",
        "bind_addr = \"127.0.0.1:7001\"\n",
        "page_limit = 250\n",
        "allow_plaintext = true\n",
    ] {
        assert!(printed.contains(line), "{line:?} not in\n{printed}");
    }

    let edited = std::fs::read_to_string(&path).expect("config");
    for kept in [
        "# dbx workspace configuration",
        "# the load balancer checks /health here\nport = 9090 # keep in sync with the LB\n",
        "# clients connect here\n[socket]\nbind_addr = \"127.0.0.1:7001\"\n",
        "page_limit = 250\n",
        "allow_plaintext = true\n",
        // Relative paths stay relative: the workspace can still be moved.
        "data_dir = \".\"\n",
    ] {
        assert!(edited.contains(kept), "{kept:?} lost:\n{edited}");
    }
    // Only the edited lines changed (and updated_at, which may or may not show a new second).
    let changed = commented
        .lines()
        .zip(edited.lines())
        .filter(|(before, after)| before != after && !after.starts_with("updated_at = "))
        .count();
    assert_eq!(changed, 4, "{edited}");
    assert_eq!(commented.lines().count(), edited.lines().count());

    // A value the server would refuse is refused, and the file is left alone.
    let refused = dbx(dir.path(), &["config", "--restrict", "loose"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("`restrict`"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read_to_string(&path).expect("config"), edited);
}

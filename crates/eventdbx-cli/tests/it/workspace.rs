//! A fresh `dbx init` workspace with the real `dbx serve` running on ephemeral ports, and the
//! real `dbx` binary run against it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub struct Serving(pub Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh `dbx init` workspace with `dbx serve` running on ephemeral ports.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub _serving: Serving,
}

pub fn dbx_in(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbx"));
    command
        .current_dir(dir)
        .env_remove("EVENTDBX_CONFIG")
        .env_remove("EVENTDBX_TOKEN")
        .env("EVENTDBX_LOG", "warn");
    command
}

impl Workspace {
    pub fn start() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let init = dbx_in(dir.path()).arg("init").output().expect("dbx init");
        assert!(init.status.success(), "{}", text(&init.stderr));
        let config_path = dir.path().join(".dbx/config.toml");
        let config = std::fs::read_to_string(&config_path)
            .expect("config")
            .replace(
                "bind_addr = \"127.0.0.1:6363\"",
                "bind_addr = \"127.0.0.1:0\"",
            )
            .replace("[http]\n", "[http]\nbind_addr = \"127.0.0.1:0\"\n");
        assert_eq!(config.matches("127.0.0.1:0").count(), 2, "{config}");
        std::fs::write(&config_path, config).expect("write config");

        let (serving, port, _, _) = serve(dir.path(), "warn");
        Workspace {
            dir,
            port,
            _serving: serving,
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same workspace.
    pub fn kill_and_restart(&mut self) {
        self._serving.0.kill().expect("SIGKILL dbx serve");
        self._serving.0.wait().expect("reap dbx serve");
        let (serving, port, _, _) = serve(self.dir.path(), "warn");
        self._serving = serving;
        self.port = port;
    }

    /// `dbx <args> --port <port>`: the config's bind address is :0, so the port is passed.
    pub fn dbx(&self, args: &[&str]) -> Output {
        dbx_in(self.dir.path())
            .args(args)
            .arg("--port")
            .arg(self.port.to_string())
            .output()
            .expect("dbx runs")
    }

    /// Runs with `--json`, expects success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.dbx(&with_json);
        assert!(
            output.status.success(),
            "dbx {args:?} failed: {}{}",
            text(&output.stderr),
            text(&output.stdout)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("dbx {args:?}: {err}: {}", text(&output.stdout)))
    }

    /// Runs, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.dbx(args);
        assert!(
            !output.status.success(),
            "dbx {args:?} should fail: {}",
            text(&output.stdout)
        );
        text(&output.stderr)
    }
}

/// Starts `dbx serve` in `dir` with `EVENTDBX_LOG=log`; returns it, its control port, its
/// banner (stdout) and, when `log` is `info`, its startup log (stderr) up to "server opened".
pub fn serve(dir: &Path, log: &str) -> (Serving, u16, String, String) {
    let mut child = dbx_in(dir)
        .env("EVENTDBX_LOG", log)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(if log == "info" {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("dbx serve");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take();
    let serving = Serving(child);
    let mut banner = String::new();
    BufReader::new(stdout)
        .read_line(&mut banner)
        .expect("serve prints its addresses");
    let control = banner
        .split("control ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("control address in the banner: {banner}"));
    let port = control
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("control port in {control}"));
    let mut log_lines = String::new();
    if let Some(stderr) = stderr {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        // The startup lines are written before the banner.
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            log_lines.push_str(&line);
            if line.contains("server opened") {
                break;
            }
            line.clear();
        }
    }
    (serving, port, banner, log_lines)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

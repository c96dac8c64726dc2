//! A scratch PostgreSQL cluster for tests (feature `test-cluster`): one per test process,
//! created on first use with Debian's `initdb` in a temporary directory and served on a free
//! loopback port, with one database per test ([`TestCluster::database`]).
//!
//! Run as root, the cluster belongs to the `postgres` user (initdb refuses root). It is stopped
//! and its directory removed when the test process ends, however it ends: a small guardian shell
//! started with the cluster waits for end-of-file on a pipe whose only writer is the test
//! process, so the kernel closing that pipe at exit (a panic, SIGKILL, a nextest timeout) is what
//! stops it. A cluster left behind anyway (the guardian killed with the process group) is
//! stopped and removed by the next test process that starts one: directory names carry the
//! owner's pid. A test that cannot start PostgreSQL panics, so it fails instead of skipping.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Name prefix of the cluster directories in the temporary directory.
const PREFIX: &str = "eventdbx-pg-";

/// The guardian: initdb, start, say `ready`, wait for the pipe to close, stop, remove.
const GUARDIAN: &str = r#"
bin="$1"; dir="$2"; port="$3"
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$dir" || exit 1; fi
as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale C \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1; }
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "-p $port -k $dir \
  -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
  -c max_connections=300 -c shared_buffers=32MB -c deadlock_timeout=100ms \
  -c shared_preload_libraries=pg_stat_statements" start >/dev/null 2>&1 \
  || { cat "$dir/server.log" >&2; rm -rf "$dir"; exit 1; }
echo ready
cat >/dev/null
as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
rm -rf "$dir"
"#;

/// A running scratch cluster.
#[derive(Debug)]
pub struct TestCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The guardian and the write end of its pipe: held until the process exits.
    _guardian: Mutex<(Child, ChildStdin)>,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

impl TestCluster {
    /// The process's cluster, started on first use. Panics (failing the test) when PostgreSQL
    /// cannot be started, with the reason.
    pub fn shared() -> &'static TestCluster {
        CLUSTER.get_or_init(|| match TestCluster::start() {
            Ok(cluster) => cluster,
            Err(reason) => panic!("cannot start a PostgreSQL cluster for the tests: {reason}"),
        })
    }

    /// A cluster of the caller's own (stopped and removed when the process ends), for a test
    /// that stops and starts the server ([`TestCluster::stop`], [`TestCluster::restart`]).
    pub fn private() -> TestCluster {
        TestCluster::start()
            .unwrap_or_else(|reason| panic!("cannot start a PostgreSQL cluster: {reason}"))
    }

    /// Stops the server (fast shutdown: sessions are ended), as a database outage.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Starts the server again after [`TestCluster::stop`], on the same port.
    pub fn restart(&self) {
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=32MB -c deadlock_timeout=100ms \
             -c shared_preload_libraries=pg_stat_statements",
            self.port,
            self.dir.display()
        );
        let log = log.display().to_string();
        self.pg_ctl(&["-w", "-t", "60", "-l", &log, "-o", &options, "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            Command::new(pg_ctl)
        };
        let output = command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run pg_ctl: {err}"));
        if !output.status.success() {
            panic!(
                "pg_ctl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn start() -> Result<TestCluster, String> {
        let bin = bindir().ok_or(
            "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on \
             PATH); scripts/setup.sh installs it",
        )?;
        reap_abandoned(&bin);
        let mut last_error = String::new();
        // A port found free can be taken before the server binds it: try another then.
        for attempt in 0..3 {
            let port = free_port()?;
            let dir = std::env::temp_dir().join(format!(
                "{PREFIX}{}-{}-{attempt}",
                std::process::id(),
                crate::now_nanos()
            ));
            std::fs::create_dir(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
            match spawn_guardian(&bin, &dir, port) {
                Ok(guardian) => {
                    return Ok(TestCluster {
                        bin,
                        dir,
                        port,
                        _guardian: Mutex::new(guardian),
                    })
                }
                Err(err) => last_error = err,
            }
        }
        Err(last_error)
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` (created if missing; the name is used as it is, so keep it
    /// to lower-case letters, digits and `_`).
    pub fn database(&self, name: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .unwrap_or_else(|err| panic!("cannot run psql: {err}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && !stderr.contains("already exists") {
            panic!("cannot create database {name}: {stderr}");
        }
        self.url(name)
    }

    /// `psql` on database `name` as the superuser: quiet, unaligned tuples only, stopping at
    /// the first error.
    fn psql(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-U", "postgres", "-d", name, "-p"])
            .arg(self.port.to_string());
        command
    }

    /// Runs `sql` in database `name` with `psql` (stops at the first error); its output.
    pub fn sql(&self, name: &str, sql: &str) -> String {
        let output = self
            .psql(name)
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap_or_else(|err| panic!("cannot run psql: {err}"));
        if !output.status.success() {
            panic!(
                "psql failed on {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `script` in database `name` with `psql` reading it as a file: one session, each
    /// statement its own transaction unless the script says otherwise (stops at the first
    /// error); its output.
    pub fn script(&self, name: &str, script: &str) -> String {
        self.session(name, script).0
    }

    /// Like [`TestCluster::script`], with what the session printed apart from results: its
    /// output and its notices (the plans `auto_explain` shows at `log_level = notice`, say).
    pub fn session(&self, name: &str, script: &str) -> (String, String) {
        use std::io::Write;
        let mut child = self
            .psql(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run psql: {err}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .unwrap_or_else(|err| panic!("cannot feed psql: {err}"));
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|err| panic!("psql did not finish: {err}"));
        if !output.status.success() {
            panic!(
                "psql failed on {script:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The URL of database `name`, as the superuser `postgres` (trust authentication).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// The newest installed PostgreSQL's binaries.
fn bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").exists()))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|err| err.to_string())?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| err.to_string())
}

fn spawn_guardian(bin: &Path, dir: &Path, port: u16) -> Result<(Child, ChildStdin), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(GUARDIAN)
        .arg("sh")
        .arg(bin)
        .arg(dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run sh: {err}"))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|err| err.to_string())?;
    if line.trim() == "ready" {
        return Ok((child, stdin));
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    Err(format!("the cluster did not start: {}", stderr.trim()))
}

/// Stops and removes the clusters of test processes that no longer exist.
fn reap_abandoned(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        let pg_ctl = bin.join("pg_ctl");
        let data = dir.join("data");
        let mut stop = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            Command::new(pg_ctl)
        };
        let _ = stop
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

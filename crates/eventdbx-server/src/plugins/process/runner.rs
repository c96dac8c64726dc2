//! The `process` plugin kind: one long-lived child per plugin, fed `PluginEnvelope` messages on
//! its stdin, answering each event with an ack (or an error) on its stdout (`docs/plugins.md`,
//! "Process plugins"; the envelope codec is [`eventdbx_proto::plugin`]).
//!
//! [`ProcessPlugin::deliver`] hands one event to the child and waits for its answer. It starts the
//! child lazily (and sends it [`PluginInit`] first), and replaces a child that died, hung past the
//! timeout or wrote something unreadable, after an exponential restart delay
//! ([`INITIAL_RESTART_DELAY`] doubling to [`MAX_RESTART_DELAY`], reset after a success). It never
//! retries the event itself: every failure is an `Err` for the job queue, which owns retries, so a
//! delivery cut by a dying child is retried, never lost (at-least-once).
//!
//! The child's stderr is logged line by line (each line cut at [`MAX_STDERR_LINE_BYTES`]) at
//! target [`TRACING_TARGET`]. The configured environment may hold secrets, so its values are never
//! logged nor printed by `Debug`.
//!
//! The binary comes from the local plugin registry, see [`resolve_binary`] and
//! `docs/plugins.md` ("Process plugins").

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use eventdbx_proto::plugin::{
    encode_envelope, EnvelopeDecoder, PluginEnvelope, PluginEvent, PluginInit, MAX_ACK_BYTES,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The tracing target of everything this module logs, the children's stderr included.
pub const TRACING_TARGET: &str = "eventdbx.plugin.process";

/// Delay before the first restart after a failure.
pub const INITIAL_RESTART_DELAY: Duration = Duration::from_millis(100);

/// The restart delay doubles per consecutive failure up to this.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);

/// Longest stderr line logged; the rest of the line is dropped (and the record says so).
pub const MAX_STDERR_LINE_BYTES: usize = 4096;

/// How long [`ProcessPlugin::shutdown`] lets a child exit after closing its stdin before killing it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for an exit status once a child has closed its stdout, for the error message.
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(200);

/// The target of this build, `<os>-<arch>` as Rust names them (`linux-x86_64`, `macos-aarch64`):
/// the registry directory a binary is looked up in and the `target` of [`PluginInit`].
pub fn current_target() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// How to run a process plugin: its `process` config plus the resolved binary.
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The plugin package name in the registry (the config's `name`).
    pub name: String,
    /// The package version (the config's `version`); sent in [`PluginInit`].
    pub version: String,
    pub args: Vec<String>,
    /// Added to the server's environment. Values may be secrets: never logged.
    pub env: BTreeMap<String, String>,
    /// The child's working directory; the server's when `None`.
    pub working_dir: Option<PathBuf>,
    /// The executable, normally from [`resolve_binary`].
    pub binary: PathBuf,
}

impl fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("args", &self.args)
            // Keys only: values are credentials as often as not.
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("working_dir", &self.working_dir)
            .field("binary", &self.binary)
            .finish()
    }
}

/// Finds the executable of plugin `name` at `version` for [`current_target`] in the local plugin
/// registry rooted at `plugins_dir`:
///
/// ```text
/// <plugins_dir>/<name>/<version>/<os>-<arch>/<name>      (<name>.exe on Windows)
/// ```
///
/// `name` and `version` must each be one plain path component (no separator, not `.` or `..`),
/// so a definition cannot point outside the registry. The file must exist, be a regular file (a
/// symlink to one is fine) and, on Unix, be executable by someone.
pub fn resolve_binary(plugins_dir: &Path, name: &str, version: &str) -> Result<PathBuf, String> {
    check_component("name", name)?;
    check_component("version", version)?;
    let target = current_target();
    let path = plugins_dir
        .join(name)
        .join(version)
        .join(&target)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let metadata = std::fs::metadata(&path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            format!(
                "process plugin '{name}' version '{version}' is not installed for {target}: \
                 expected an executable at {}",
                path.display()
            )
        } else {
            format!(
                "process plugin '{name}' version '{version}': cannot read {}: {err}",
                path.display()
            )
        }
    })?;
    if !metadata.is_file() {
        return Err(format!(
            "process plugin '{name}' version '{version}': {} is not a regular file",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "process plugin '{name}' version '{version}': {} is not executable \
                 (chmod +x it)",
                path.display()
            ));
        }
    }
    Ok(path)
}

fn check_component(what: &str, value: &str) -> Result<(), String> {
    let plain = !value.is_empty()
        && value != "."
        && value != ".."
        && !value.contains(['/', '\\', '\0'])
        && value.trim() == value;
    if plain {
        Ok(())
    } else {
        Err(format!(
            "process plugin {what} '{}' is not a plain directory name \
             (no path separators, not '.' or '..', no surrounding spaces)",
            value.escape_debug()
        ))
    }
}

/// Why a delivery failed, which decides what happens to the child.
enum Failure {
    /// The child answered an error envelope: it is healthy and stays.
    Rejected(String),
    /// The child is gone or out of step: it is replaced, after the restart delay.
    Child(String),
}

/// One running child and its pipes.
struct RunningChild {
    child: Child,
    pid: Option<u32>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    decoder: EnvelopeDecoder,
    /// Envelopes read from stdout and not yet looked at.
    answers: VecDeque<PluginEnvelope>,
    stderr_task: Option<JoinHandle<()>>,
    /// A delivery is in progress. Still set at the start of the next one means the previous
    /// future was dropped half-way (its caller timed out or was cancelled): the pipes may hold
    /// half a message, so the child is replaced.
    busy: bool,
}

/// The runner of one `process` plugin: owns its (at most one) child.
///
/// Dropping it kills the child (`kill_on_drop`); [`shutdown`](Self::shutdown) lets it exit first.
pub struct ProcessPlugin {
    plugin_name: String,
    spec: ProcessSpec,
    child: Option<RunningChild>,
    /// The delay the next failure imposes before a restart.
    next_delay: Duration,
    /// Set by a failure: no child is started before this instant.
    restart_not_before: Option<Instant>,
}

impl fmt::Debug for ProcessPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPlugin")
            .field("plugin_name", &self.plugin_name)
            .field("spec", &self.spec)
            .field("child_id", &self.child_id())
            .field("next_delay", &self.next_delay)
            .finish_non_exhaustive()
    }
}

impl ProcessPlugin {
    /// A runner for the plugin whose routing identifier is `plugin_name` (sent as
    /// `PluginInit.pluginName`). Nothing starts until the first [`deliver`](Self::deliver).
    pub fn new(plugin_name: &str, spec: ProcessSpec) -> Self {
        ProcessPlugin {
            plugin_name: plugin_name.to_owned(),
            spec,
            child: None,
            next_delay: INITIAL_RESTART_DELAY,
            restart_not_before: None,
        }
    }

    /// The running child's process id, if a child is running.
    pub fn child_id(&self) -> Option<u32> {
        self.child.as_ref().and_then(|running| running.pid)
    }

    /// Delivers `event` and waits for the child's answer with the same sequence.
    ///
    /// Starts the child first when there is none (after the restart delay if the last child
    /// failed; that wait is not part of `timeout`), sending [`PluginInit`] before anything else.
    /// `Ok` once the child acks. `Err` with a message when the child answers an error envelope (the
    /// child stays), or when the answer does not come within `timeout`, a write fails, the child
    /// dies or writes something unreadable (the child is dropped and the next call starts a new
    /// one). The event is never sent twice by this call: retries are the caller's.
    pub async fn deliver(&mut self, event: &PluginEvent, timeout: Duration) -> Result<(), String> {
        self.replace_unusable_child();
        if self.child.is_none() {
            if let Some(not_before) = self.restart_not_before {
                tokio::time::sleep_until(not_before).await;
            }
        }
        let sequence = event.sequence;
        let outcome = match tokio::time::timeout(timeout, self.exchange(event)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Child(format!(
                "process plugin '{}' did not answer event {sequence} within {timeout:?}",
                self.plugin_name
            ))),
        };
        match outcome {
            Ok(()) => {
                self.healthy();
                Ok(())
            }
            Err(Failure::Rejected(message)) => {
                self.healthy();
                Err(format!(
                    "process plugin '{}' failed event {sequence}: {message}",
                    self.plugin_name
                ))
            }
            Err(Failure::Child(message)) => {
                self.failed(&message);
                Err(message)
            }
        }
    }

    /// Stops the child: closes its stdin (a plugin exits at end of input), waits up to
    /// [`SHUTDOWN_GRACE`], then kills it. The next `deliver` would start a new one.
    pub async fn shutdown(&mut self) {
        let Some(running) = self.child.take() else {
            return;
        };
        let RunningChild {
            mut child,
            pid,
            stdin,
            stderr_task,
            ..
        } = running;
        drop(stdin);
        match tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await {
            Ok(Ok(status)) => {
                tracing::debug!(target: TRACING_TARGET, plugin = %self.plugin_name, pid, %status, "process plugin stopped");
            }
            Ok(Err(err)) => {
                tracing::warn!(target: TRACING_TARGET, plugin = %self.plugin_name, pid, error = %err, "waiting for the process plugin failed; killing it");
                kill(&mut child).await;
            }
            Err(_) => {
                tracing::warn!(target: TRACING_TARGET, plugin = %self.plugin_name, pid, "process plugin did not exit within {SHUTDOWN_GRACE:?} of closing its stdin; killing it");
                kill(&mut child).await;
            }
        }
        if let Some(task) = stderr_task {
            finish_stderr(task).await;
        }
    }

    /// Drops a child that exited while idle, or that a dropped delivery left out of step; either
    /// counts as a failure for the restart delay.
    fn replace_unusable_child(&mut self) {
        let Some(running) = self.child.as_mut() else {
            return;
        };
        let reason = if running.busy {
            "a delivery was interrupted half-way".to_owned()
        } else {
            match running.child.try_wait() {
                Ok(Some(status)) => format!("it exited while idle ({status})"),
                Ok(None) => return,
                Err(err) => format!("its status cannot be read: {err}"),
            }
        };
        self.failed(&format!(
            "process plugin '{}' is restarted: {reason}",
            self.plugin_name
        ));
    }

    /// A success (or a well-formed error answer): the restart delay starts over.
    fn healthy(&mut self) {
        self.next_delay = INITIAL_RESTART_DELAY;
        self.restart_not_before = None;
    }

    /// The child failed: drop it (killing it) and push the next start back.
    fn failed(&mut self, message: &str) {
        let pid = self.child_id();
        if let Some(mut running) = self.child.take() {
            // `kill_on_drop` would do it too; starting the kill now frees the pipes sooner, and
            // tokio reaps the exit status in the background.
            let _ = running.child.start_kill();
            if let Some(task) = running.stderr_task.take() {
                // The task ends by itself when the pipe closes; it must not outlive a grandchild
                // that kept the pipe open, though.
                tokio::spawn(finish_stderr(task));
            }
        }
        let delay = self.next_delay;
        self.restart_not_before = Some(Instant::now() + delay);
        self.next_delay = (delay * 2).min(MAX_RESTART_DELAY);
        tracing::warn!(
            target: TRACING_TARGET,
            plugin = %self.plugin_name,
            pid,
            restart_in = ?delay,
            "{message}"
        );
    }

    /// Sends the event (starting the child first if needed) and reads answers until one carries
    /// its sequence.
    async fn exchange(&mut self, event: &PluginEvent) -> Result<(), Failure> {
        if self.child.is_none() {
            self.child = Some(self.start().await?);
        }
        let name = self.plugin_name.as_str();
        let Some(running) = self.child.as_mut() else {
            return Err(Failure::Child(format!(
                "process plugin '{name}' has no child"
            )));
        };
        running.busy = true;
        let sequence = event.sequence;
        let bytes = encode_envelope(&PluginEnvelope::Event(event.clone()));
        if let Err(err) = write_all(&mut running.stdin, &bytes).await {
            let status = exit_status(&mut running.child).await;
            return Err(Failure::Child(format!(
                "process plugin '{name}': writing event {sequence} failed: {err}{status}"
            )));
        }
        loop {
            match running.next_answer(name, sequence).await? {
                PluginEnvelope::Ack { sequence: acked } if acked == sequence => break,
                PluginEnvelope::Error {
                    sequence: failed,
                    message,
                } if failed == sequence => {
                    running.busy = false;
                    return Err(Failure::Rejected(message));
                }
                PluginEnvelope::Ack { sequence: other }
                | PluginEnvelope::Error {
                    sequence: other, ..
                } => {
                    tracing::debug!(target: TRACING_TARGET, plugin = %name, pid = running.pid, sequence = other, expected = sequence, "skipped an answer for another event");
                }
                PluginEnvelope::Init(_) | PluginEnvelope::Event(_) => {
                    tracing::warn!(target: TRACING_TARGET, plugin = %name, pid = running.pid, "process plugin wrote an init or event envelope on stdout; ignored");
                }
            }
        }
        running.busy = false;
        Ok(())
    }

    /// Starts a child and sends it the init envelope.
    async fn start(&self) -> Result<RunningChild, Failure> {
        let name = self.plugin_name.as_str();
        let spec = &self.spec;
        let mut command = Command::new(&spec.binary);
        command
            .args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &spec.working_dir {
            command.current_dir(dir);
        }
        let mut child = command.spawn().map_err(|err| {
            Failure::Child(format!(
                "process plugin '{name}': cannot start {}: {err}",
                spec.binary.display()
            ))
        })?;
        let pid = child.id();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Failure::Child(format!(
                "process plugin '{name}': the child's pipes are missing"
            )));
        };
        let stderr_task = tokio::spawn(log_stderr(name.to_owned(), pid, stderr));
        tracing::info!(target: TRACING_TARGET, plugin = %name, pid, binary = %spec.binary.display(), "process plugin started");
        let init = encode_envelope(&PluginEnvelope::Init(PluginInit {
            plugin_name: name.to_owned(),
            version: spec.version.clone(),
            target: current_target(),
        }));
        if let Err(err) = write_all(&mut stdin, &init).await {
            let status = exit_status(&mut child).await;
            return Err(Failure::Child(format!(
                "process plugin '{name}': sending init failed: {err}{status}"
            )));
        }
        Ok(RunningChild {
            child,
            pid,
            stdin,
            stdout,
            decoder: EnvelopeDecoder::new(MAX_ACK_BYTES),
            answers: VecDeque::new(),
            stderr_task: Some(stderr_task),
            busy: false,
        })
    }
}

impl RunningChild {
    /// The next envelope from the child's stdout.
    async fn next_answer(&mut self, name: &str, sequence: u64) -> Result<PluginEnvelope, Failure> {
        let mut buffer = [0u8; 8192];
        loop {
            if let Some(answer) = self.answers.pop_front() {
                return Ok(answer);
            }
            let read = match self.stdout.read(&mut buffer).await {
                Ok(0) => {
                    let status = exit_status(&mut self.child).await;
                    return Err(Failure::Child(format!(
                        "process plugin '{name}' closed its stdout before answering event \
                         {sequence}{status}"
                    )));
                }
                Ok(read) => read,
                Err(err) => {
                    return Err(Failure::Child(format!(
                        "process plugin '{name}': reading its stdout failed: {err}"
                    )))
                }
            };
            let envelopes = self.decoder.feed(&buffer[..read]).map_err(|err| {
                Failure::Child(format!(
                    "process plugin '{name}' wrote an unreadable message on stdout: {err}"
                ))
            })?;
            self.answers.extend(envelopes);
        }
    }
}

async fn write_all(stdin: &mut ChildStdin, bytes: &[u8]) -> std::io::Result<()> {
    stdin.write_all(bytes).await?;
    stdin.flush().await
}

/// `" (exit status: …)"` when the child has exited or exits within [`EXIT_STATUS_WAIT`], else
/// nothing: an error message's tail.
async fn exit_status(child: &mut Child) -> String {
    match tokio::time::timeout(EXIT_STATUS_WAIT, child.wait()).await {
        Ok(Ok(status)) => format!(" ({})", describe(status)),
        _ => String::new(),
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => status.to_string(),
    }
}

async fn kill(child: &mut Child) {
    if let Err(err) = child.kill().await {
        tracing::warn!(target: TRACING_TARGET, error = %err, "killing a process plugin failed");
    }
}

/// Waits briefly for a stderr task to log what is left, then stops it.
async fn finish_stderr(mut task: JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_millis(500), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// Logs the child's stderr, one record per line.
async fn log_stderr(plugin: String, pid: Option<u32>, stderr: ChildStderr) {
    read_lines(stderr, MAX_STDERR_LINE_BYTES, |line, truncated| {
        tracing::info!(target: TRACING_TARGET, plugin = %plugin, pid, truncated, "stderr: {line}");
    })
    .await;
}

/// Calls `emit` with each line of `input` (without its `\n` or `\r\n`, invalid UTF-8 replaced),
/// cut at `max_bytes` (`truncated` then true), until end of input or a read error. Memory stays
/// bounded by `max_bytes` whatever the input.
async fn read_lines<R, F>(input: R, max_bytes: usize, mut emit: F)
where
    R: AsyncRead + Unpin,
    F: FnMut(&str, bool),
{
    let mut reader = BufReader::new(input);
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    // A read error ends the log like the end of input does: there is nobody to report it to.
    while let Ok(available) = reader.fill_buf().await {
        if available.is_empty() {
            break;
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = max_bytes.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = newline.map_or(available.len(), |at| at + 1);
        reader.consume(consumed);
        if newline.is_some() {
            emit_line(&mut line, truncated, &mut emit);
            truncated = false;
        }
    }
    if !line.is_empty() || truncated {
        emit_line(&mut line, truncated, &mut emit);
    }
}

fn emit_line<F: FnMut(&str, bool)>(line: &mut Vec<u8>, truncated: bool, emit: &mut F) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    emit(&String::from_utf8_lossy(line), truncated);
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        read_lines(input, max, |line, truncated| {
            out.push((line.to_owned(), truncated));
        })
        .await;
        out
    }

    #[tokio::test]
    async fn stderr_lines_are_split_and_cut() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nlast without newline", 100).await,
            [
                ("one".to_owned(), false),
                ("two".to_owned(), false),
                (String::new(), false),
                ("last without newline".to_owned(), false)
            ]
        );
        assert_eq!(
            lines(b"abcdefgh\nxy\n", 4).await,
            [("abcd".to_owned(), true), ("xy".to_owned(), false)]
        );
        let long = vec![b'z'; 100_000];
        let cut = lines(&long, MAX_STDERR_LINE_BYTES).await;
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].0.len(), MAX_STDERR_LINE_BYTES);
        assert!(cut[0].1);
        assert_eq!(
            lines(b"\xff ok\n", 10).await,
            [("\u{fffd} ok".to_owned(), false)]
        );
    }

    #[test]
    fn the_target_is_os_dash_arch() {
        let target = current_target();
        assert!(target.starts_with(std::env::consts::OS), "{target}");
        assert!(target.ends_with(std::env::consts::ARCH), "{target}");
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(target, "linux-x86_64");
    }

    #[test]
    fn names_that_leave_the_registry_are_refused() {
        let dir = Path::new("/nonexistent-registry");
        for (name, version) in [
            ("../etc", "1"),
            ("a/b", "1"),
            ("", "1"),
            ("p", ".."),
            ("p", "."),
            ("p", " 1"),
        ] {
            let err = resolve_binary(dir, name, version).expect_err("refused");
            assert!(
                err.contains("not a plain directory name"),
                "{name:?} {version:?}: {err}"
            );
        }
    }

    #[test]
    fn debug_never_shows_env_values() {
        let spec = ProcessSpec {
            name: "p".into(),
            version: "1".into(),
            args: vec![],
            env: BTreeMap::from([("API_KEY".to_owned(), "s3cr3t-value".to_owned())]),
            working_dir: None,
            binary: PathBuf::from("/bin/p"),
        };
        let shown = format!("{spec:?} {:?}", ProcessPlugin::new("p", spec.clone()));
        assert!(shown.contains("API_KEY"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn the_restart_delay_doubles_to_its_cap_and_resets() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut plugin = ProcessPlugin::new(
                "p",
                ProcessSpec {
                    name: "p".into(),
                    version: "1".into(),
                    args: vec![],
                    env: BTreeMap::new(),
                    working_dir: None,
                    binary: PathBuf::from("/nonexistent"),
                },
            );
            let mut delays = Vec::new();
            for _ in 0..9 {
                delays.push(plugin.next_delay);
                plugin.failed("test failure");
            }
            let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
            assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
            plugin.healthy();
            assert_eq!(plugin.next_delay, INITIAL_RESTART_DELAY);
            assert!(plugin.restart_not_before.is_none());
        });
    }
}

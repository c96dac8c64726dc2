//! `dbx`: argument parsing only; the work is done by `eventdbx-server` and `eventdbx-client`.
//!
//! Commands that act on the data directory itself (`init`, `serve`, `start`/`stop`/`status`,
//! `token`, `key`, `config`) are here. Commands that read or write aggregates, schemas and
//! tenants (`aggregate`, `events`, `snapshots`, `schema`, `tenant`) go through the authenticated
//! control protocol with the client crate: `remote/` and `schema.rs`.

/// `println!` for command output: when stdout is gone (`dbx … | head`) the process ends
/// quietly with the status a shell shows for SIGPIPE, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&err);
        }
    }};
}

/// Ends the process after a failed write to stdout (see `out!`).
fn stdout_failed(err: &std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to stdout: {err}");
    std::process::exit(1)
}

/// glibc's malloc keeps most of the memory of large messages after they are answered (it raises
/// its mmap threshold and rarely trims its heaps). jemalloc with its background thread returns
/// freed pages to the system after a few idle seconds, so the server's RSS goes back to its
/// baseline after a burst (docs/server.md, "Messages in flight"). mimalloc was tried and kept
/// the memory of an idle server: it purges only when the thread that freed it allocates again.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod init;
mod migrate;
mod plugin;
mod progress;
mod remote;
mod schema;
mod store;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use eventdbx_server::auth::{TokenRequest, MIN_TTL_SECS};
use eventdbx_server::config::{init_workspace, Config, ConfigValue};
use eventdbx_server::fs::{write_atomic, write_secret, STATE_FILE_MODE};
use eventdbx_server::{open_authority, read_server_key, Server};
use rustix::process::{Pid, Signal};

#[derive(Parser)]
#[command(
    name = "dbx",
    version,
    about = "EventDBX-compatible event store server"
)]
struct Cli {
    /// Path of config.toml (default: .dbx/config.toml found upwards from the current directory).
    #[arg(long, global = true, env = "EVENTDBX_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create ./.dbx (config, keys, a bootstrap token in cli.token). Idempotent.
    Init {
        /// Bootstrap token lifetime: seconds, or a number with s, m, h, d or w (10m, 24h, 10d,
        /// 2w); 0 = no expiry.
        #[arg(long, default_value = "86400", value_parser = parse_ttl)]
        ttl: u64,
        /// Store in PostgreSQL at this URL (`[storage] backend = "postgres"`); the database is
        /// checked and migrated now. A URL with a password is not written to config.toml: give
        /// it to `dbx serve` and `dbx migrate` in DBX_POSTGRES_URL.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
    /// The PostgreSQL schema: `status` (versions and pending migrations), `up` (apply them).
    #[command(subcommand)]
    Migrate(migrate::MigrateAction),
    /// Run the server in the foreground until Ctrl-C or SIGTERM (`serve start|stop|status|
    /// restart|destroy` manage a background server and the workspace).
    Serve {
        #[command(subcommand)]
        action: Option<ServeAction>,
    },
    /// Run the server in the background (writes eventdbx.pid in the data directory).
    Start,
    /// Stop the background server (SIGTERM, then SIGKILL after 5 s).
    Stop,
    /// Whether the background server is running.
    Status,
    /// Issue, list and revoke tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The v2 server key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the configuration (never secrets); with flags, change those keys in the file first,
    /// keeping its comments.
    Config(ConfigArgs),
    /// Create, write, read, verify and archive aggregates (through the running server).
    Aggregate(remote::AggregateArgs),
    /// The events of an aggregate (through the running server).
    Events(remote::EventsArgs),
    /// List, create and read snapshots (through the running server).
    Snapshots(remote::SnapshotsArgs),
    /// Validate schema.dbx (offline); show, apply and publish schemas (through the server).
    Schema(schema::SchemaArgs),
    /// Tenant placement, reloads and quotas (through the running server).
    Tenant(remote::TenantArgs),
    /// Plugin definitions: list, add, config, enable, disable, remove, test, replay (root/admin
    /// token).
    Plugin(plugin::PluginArgs),
    /// The plugin delivery queue: list, retry, clear, clear-done (root/admin token).
    Queue(plugin::QueueArgs),
    /// The store's file, offline: `check` (read-only integrity check and verify of every
    /// aggregate) and `recover` (the last good state of a damaged file; the damaged file is
    /// kept). See docs/storage.md, "Damaged files and recovery".
    Store(store::StoreArgs),
}

#[derive(Subcommand)]
enum ServeAction {
    /// Start the server in the background (or in the foreground with --foreground).
    Start {
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the background server (SIGTERM, then SIGKILL after 5 s).
    Stop,
    /// Whether the background server is running.
    Status,
    /// Stop the background server if it runs, then start it again.
    Restart,
    /// Remove the `.dbx` directory (config, keys, tokens, and the data when it lives inside);
    /// a data directory outside `.dbx` is kept. Asks to type `destroy` unless --yes.
    Destroy {
        #[arg(long)]
        yes: bool,
    },
}

/// `dbx config` flags: each sets one key of the config file (`docs/configuration.md`).
#[derive(Args)]
struct ConfigArgs {
    /// `port`: the HTTP health/metrics port.
    #[arg(long)]
    port: Option<u16>,
    /// `data_dir` (a relative path is taken from the current directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `cache_threshold`.
    #[arg(long)]
    cache_threshold: Option<u64>,
    /// `list_page_size`: page size of a list without `take`.
    #[arg(long)]
    list_page_size: Option<u64>,
    /// `page_limit`: the largest page.
    #[arg(long)]
    page_limit: Option<u64>,
    /// `snowflake_worker_id` (0-1023).
    #[arg(long)]
    snowflake_worker_id: Option<u16>,
    /// `[socket] bind_addr`: the control-protocol address.
    #[arg(long)]
    bind_addr: Option<String>,
    /// `restrict`: off, default or strict.
    #[arg(long)]
    restrict: Option<String>,
    /// Refuse plaintext sessions (`allow_plaintext = false`).
    #[arg(long, conflicts_with = "no_noise")]
    noise: bool,
    /// Allow plaintext sessions (`allow_plaintext = true`).
    #[arg(long)]
    no_noise: bool,
}

impl ConfigArgs {
    /// The keys to set, in the file's words.
    fn edits(self) -> Result<Vec<(&'static str, ConfigValue)>> {
        let int = |n: u64| i64::try_from(n).map(ConfigValue::Integer);
        let mut edits = Vec::new();
        if let Some(port) = self.port {
            edits.push(("port", ConfigValue::Integer(port.into())));
        }
        if let Some(dir) = self.data_dir {
            let dir = std::path::absolute(&dir)?;
            let dir = dir
                .to_str()
                .with_context(|| format!("{} is not UTF-8", dir.display()))?;
            edits.push(("data_dir", ConfigValue::Text(dir.to_owned())));
        }
        for (key, value) in [
            ("cache_threshold", self.cache_threshold),
            ("list_page_size", self.list_page_size),
            ("page_limit", self.page_limit),
        ] {
            if let Some(value) = value {
                edits.push((
                    key,
                    int(value).with_context(|| format!("--{key} is too large"))?,
                ));
            }
        }
        if let Some(id) = self.snowflake_worker_id {
            edits.push(("snowflake_worker_id", ConfigValue::Integer(id.into())));
        }
        if let Some(addr) = self.bind_addr {
            edits.push(("socket.bind_addr", ConfigValue::Text(addr)));
        }
        if let Some(mode) = self.restrict {
            edits.push(("restrict", ConfigValue::Text(mode)));
        }
        if self.noise || self.no_noise {
            edits.push(("allow_plaintext", ConfigValue::Bool(self.no_noise)));
        }
        Ok(edits)
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a bootstrap token (all actions, all tenants).
    Bootstrap {
        /// Print it instead of writing cli.token.
        #[arg(long)]
        stdout: bool,
        /// Lifetime: seconds, or 10m, 24h, 10d, 2w.
        #[arg(long, default_value = "7200", value_parser = parse_ttl)]
        ttl: u64,
    },
    /// Issue a token.
    Generate(GenerateArgs),
    /// List issued tokens (never the token strings).
    List,
    /// Revoke a token by token string or jti.
    Revoke {
        /// The token or its jti.
        token: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Revoke a token and issue one with the same claims.
    Refresh {
        /// The token to refresh.
        #[arg(long)]
        token: String,
        /// New lifetime: seconds, or 10m, 24h, 10d, 2w.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
    },
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    group: String,
    #[arg(long)]
    user: String,
    /// Action patterns (repeatable), e.g. aggregate.read, aggregate.*, *.*.
    #[arg(long = "action", required = true)]
    actions: Vec<String>,
    /// Resource patterns (repeatable); default all.
    #[arg(long = "resource")]
    resources: Vec<String>,
    /// Tenants (repeatable); default all.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    #[arg(long)]
    subject: Option<String>,
    /// Lifetime: seconds, or 10m, 24h, 10d, 2w (0 = no expiry).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<u64>,
    #[arg(long)]
    issued_by: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print the fingerprint clients pin (`server_key=`).
    Fingerprint,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVENTDBX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { ttl, postgres } => init::init(ttl, postgres, cli.json),
        Command::Migrate(action) => {
            migrate::migrate(&load_config(cli.config.as_deref())?, action, cli.json)
        }
        Command::Serve { action: None }
        | Command::Serve {
            action: Some(ServeAction::Start { foreground: true }),
        } => serve(&load_config(cli.config.as_deref())?),
        Command::Serve {
            action: Some(ServeAction::Start { foreground: false }),
        } => start(cli.config.as_deref()),
        Command::Serve {
            action: Some(ServeAction::Stop),
        } => stop(&load_config(cli.config.as_deref())?),
        Command::Serve {
            action: Some(ServeAction::Status),
        } => status(&load_config(cli.config.as_deref())?, cli.json),
        Command::Serve {
            action: Some(ServeAction::Restart),
        } => {
            stop(&load_config(cli.config.as_deref())?)?;
            start(cli.config.as_deref())
        }
        Command::Serve {
            action: Some(ServeAction::Destroy { yes }),
        } => destroy(cli.config.as_deref(), yes, cli.json),
        Command::Start => start(cli.config.as_deref()),
        Command::Stop => stop(&load_config(cli.config.as_deref())?),
        Command::Status => status(&load_config(cli.config.as_deref())?, cli.json),
        Command::Token(command) => token(&load_config(cli.config.as_deref())?, command, cli.json),
        Command::Key(KeyCommand::Fingerprint) => {
            let config = load_config(cli.config.as_deref())?;
            let key = match read_server_key(&config)? {
                Some(key) => key,
                // First use: create it the way the server would.
                None => Server::open(config.clone())?.fingerprint_key(),
            };
            out!("{}", key.fingerprint());
            Ok(())
        }
        Command::Config(args) => {
            use std::io::Write as _;
            let edits = args.edits()?;
            let config = if edits.is_empty() {
                load_config(cli.config.as_deref())?
            } else {
                let path = config_path(cli.config.as_deref())?;
                Config::edit_file(&path, &edits)
                    .with_context(|| format!("editing {}", path.display()))?
            };
            if let Err(err) = write!(std::io::stdout().lock(), "{}", config.to_toml()?) {
                stdout_failed(&err);
            }
            Ok(())
        }
        Command::Aggregate(args) => remote::aggregate(args, cli.config.as_deref(), cli.json),
        Command::Events(args) => remote::events(args, cli.config.as_deref(), cli.json),
        Command::Snapshots(args) => remote::snapshots(args, cli.config.as_deref(), cli.json),
        Command::Schema(args) => schema::schema(args, cli.config.as_deref(), cli.json),
        Command::Tenant(args) => remote::tenant(args, cli.config.as_deref(), cli.json),
        Command::Plugin(args) => plugin::plugin(args, cli.config.as_deref(), cli.json),
        Command::Queue(args) => plugin::queue(args, cli.config.as_deref(), cli.json),
        Command::Store(args) => store::store(args, cli.config.as_deref(), cli.json),
    }
}

/// `--config`, else `.dbx/config.toml` found upwards; `EVENTDBX_AUTO_INIT` creates one here.
fn config_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let cwd = std::env::current_dir()?;
    match Config::discover(&cwd) {
        Some(path) => Ok(path),
        None if auto_init() => Ok(init_workspace(&cwd)?.config_path().to_path_buf()),
        None => bail!(
            "no .dbx/config.toml in {} or above. Run `dbx init` to create a workspace",
            cwd.display()
        ),
    }
}

/// The config of [`config_path`].
fn load_config(explicit: Option<&Path>) -> Result<Config> {
    let path = config_path(explicit)?;
    Config::load(&path).with_context(|| format!("loading {}", path.display()))
}

fn auto_init() -> bool {
    std::env::var("EVENTDBX_AUTO_INIT")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn serve(config: &Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::open(config.clone())?;
        let control = tokio::net::TcpListener::bind(&config.socket.bind_addr)
            .await
            .with_context(|| format!("binding control port {}", config.socket.bind_addr))?;
        let http_addr = config.http_bind_addr();
        let http = tokio::net::TcpListener::bind(&http_addr)
            .await
            .with_context(|| format!("binding HTTP port {http_addr}"))?;
        // Installed before the banner: whoever waits for it may send SIGTERM at once, and must
        // get a clean shutdown rather than the default action of the signal.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        out!(
            "dbx listening: control {} (protocol v2{}), http {}; durability {}; server key {}",
            control.local_addr()?,
            if config.accept_v1 { " and v1" } else { "" },
            http.local_addr()?,
            config.storage.durability.as_str(),
            server.fingerprint()
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let http_task = {
            let server = server.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let _ = server
                    .serve_http(http, async move {
                        let _ = stopped.changed().await;
                    })
                    .await;
            })
        };
        let signals = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop.send(true);
        };
        server.run(control, signals).await?;
        let _ = http_task.await;
        anyhow::Ok(())
    })
}

/// A token lifetime: plain seconds, or a whole number followed by `s`, `m`, `h`, `d` or `w`.
fn parse_ttl(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_lowercase()),
        _ => (text, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => {
            return Err(format!(
                "invalid ttl '{raw}': use seconds or 10m, 24h, 10d, 2w"
            ))
        }
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("invalid ttl '{raw}': use seconds or 10m, 24h, 10d, 2w"))?;
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("ttl '{raw}' is too large"))
}

/// `dbx serve destroy`: removes the workspace's `.dbx` directory once the server is stopped.
fn destroy(explicit: Option<&Path>, yes: bool, json: bool) -> Result<()> {
    let config_path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let cwd = std::env::current_dir()?;
            Config::discover(&cwd).with_context(|| {
                format!(
                    "no .dbx/config.toml in {} or above; nothing to destroy",
                    cwd.display()
                )
            })?
        }
    };
    let config =
        Config::load(&config_path).with_context(|| format!("loading {}", config_path.display()))?;
    let workspace = config_path
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|name| name == ".dbx"))
        .with_context(|| {
            format!(
                "{} is not inside a .dbx directory; destroy removes only .dbx workspaces",
                config_path.display()
            )
        })?
        .to_path_buf();
    if let Some(pid) = running_pid(&config) {
        bail!("the server is running (pid {pid}); stop it first with `dbx serve stop`");
    }
    if !yes {
        eprint!(
            "This removes {} (config, keys, tokens{}). Type `destroy` to confirm: ",
            workspace.display(),
            if config.data_dir.starts_with(&workspace) {
                ", data"
            } else {
                ""
            }
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "destroy" {
            bail!("not confirmed; nothing removed");
        }
    }
    std::fs::remove_dir_all(&workspace)
        .with_context(|| format!("removing {}", workspace.display()))?;
    let kept = (!config.data_dir.starts_with(&workspace)).then_some(&config.data_dir);
    if json {
        out!(
            "{}",
            serde_json::json!({"removed": workspace, "data_dir_kept": kept})
        );
    } else {
        out!("removed {}", workspace.display());
        if let Some(data_dir) = kept {
            out!("kept the data directory {}", data_dir.display());
        }
    }
    Ok(())
}

fn pid_file(config: &Config) -> PathBuf {
    config.data_dir.join("eventdbx.pid")
}

fn running_pid(config: &Config) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(config))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn start(explicit: Option<&Path>) -> Result<()> {
    let config = load_config(explicit)?;
    if let Some(pid) = running_pid(&config) {
        bail!("already running (pid {pid})");
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.data_dir.join("eventdbx.log"))?;
    let config_path = match explicit {
        Some(path) => path.to_path_buf(),
        None => Config::discover(&std::env::current_dir()?).context("no .dbx/config.toml found")?,
    };
    let child = Process::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config_path)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the server")?;
    write_atomic(
        &pid_file(&config),
        child.id().to_string().as_bytes(),
        STATE_FILE_MODE,
    )?;
    // Wait until the control port answers, or the child dies.
    let waiting = progress::Spinner::start("starting the server".to_owned());
    for _ in 0..100 {
        if std::net::TcpStream::connect(&config.socket.bind_addr).is_ok() {
            waiting.finish();
            out!("started (pid {})", child.id());
            return Ok(());
        }
        if running_pid(&config).is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    waiting.give_up();
    bail!(
        "the server did not come up; see {}",
        config.data_dir.join("eventdbx.log").display()
    )
}

fn stop(config: &Config) -> Result<()> {
    let Some(pid) = running_pid(config) else {
        out!("not running");
        return Ok(());
    };
    signal(pid, Signal::TERM)?;
    let waiting = progress::Spinner::start(format!("stopping the server (pid {pid})"));
    for _ in 0..50 {
        if running_pid(config).is_none() {
            waiting.finish();
            let _ = std::fs::remove_file(pid_file(config));
            out!("stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    waiting.give_up();
    signal(pid, Signal::KILL)?;
    let _ = std::fs::remove_file(pid_file(config));
    out!("killed (did not stop within 5 s)");
    Ok(())
}

/// Sends `signal` to the server process; one that is already gone is not an error.
fn signal(pid: u32, signal: Signal) -> Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("{pid} is not a process id"))?;
    match rustix::process::kill_process(target, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(err) => Err(anyhow::Error::new(std::io::Error::from(err))
            .context(format!("signalling the server (pid {pid})"))),
    }
}

fn status(config: &Config, json: bool) -> Result<()> {
    let pid = running_pid(config);
    if json {
        out!(
            "{}",
            serde_json::json!({ "running": pid.is_some(), "pid": pid })
        );
    } else {
        match pid {
            Some(pid) => out!("running (pid {pid})"),
            None => out!("not running"),
        }
    }
    if pid.is_none() {
        std::process::exit(3);
    }
    Ok(())
}

fn token(config: &Config, command: TokenCommand, json: bool) -> Result<()> {
    // On a shared database the tokens are the database's, which every server reads.
    let auth = open_authority(config)?;
    match command {
        TokenCommand::Bootstrap { stdout, ttl } => {
            note_raised_ttl(Some(ttl));
            let token = auth.bootstrap(ttl)?;
            if stdout {
                out!("{token}");
            } else {
                let path = config.data_dir.join("cli.token");
                write_secret(&path, token.as_bytes())?;
                out!("bootstrap token written to {} (mode 0600)", path.display());
            }
        }
        TokenCommand::Generate(args) => {
            note_raised_ttl(args.ttl);
            let (token, claims) = auth.issue(TokenRequest {
                group: args.group,
                user: args.user,
                subject: args.subject,
                actions: args.actions,
                resources: args.resources,
                tenants: args.tenants,
                ttl_secs: args.ttl,
                issued_by: args.issued_by,
                write_limit: None,
                keep_alive: false,
                not_before: None,
            })?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "token": token, "claims": claims })
                );
            } else {
                out!("{token}");
            }
        }
        TokenCommand::List => {
            let records = auth.list();
            if json {
                out!("{}", serde_json::to_string(&records)?);
            } else {
                for r in records {
                    let state = if r.revoked { "revoked" } else { "active" };
                    out!(
                        "{} {state} subject={} {}:{} actions={:?} tenants={:?}",
                        r.jti,
                        r.subject,
                        r.group,
                        r.user,
                        r.actions,
                        r.tenants
                    );
                }
            }
        }
        TokenCommand::Revoke { token, reason } => {
            let record = auth.revoke(&token, reason.as_deref())?;
            out!("revoked {}", record.jti);
        }
        TokenCommand::Refresh { token, ttl } => {
            note_raised_ttl(ttl);
            let (token, _) = auth.refresh(&token, ttl)?;
            out!("{token}");
        }
    }
    Ok(())
}

/// Says on stderr when a requested TTL is under the minimum: the authority raises it
/// (docs/tokens.md, "Issuing"), so the token outlives what was asked for.
fn note_raised_ttl(ttl: Option<u64>) {
    if let Some(ttl @ 1..MIN_TTL_SECS) = ttl {
        eprintln!(
            "note: ttl {ttl}s is under the minimum; the token is issued for {MIN_TTL_SECS} s"
        );
    }
}

//! Sequential round trips on one connection: requests per second and CPU per request.
//!
//! Against a running server when `EVENTDBX_TOKEN` (and `EVENTDBX_PORT`, …) are set; otherwise
//! against a relaxed-durability server started in this process on its own threads. The client
//! runs on a current-thread runtime on the main thread, so that thread's CPU time is the
//! client's CPU per request (its reader and writer tasks included).
//!
//! ```text
//! cargo run --release -p eventdbx-client --example roundtrips [requests] [v1|v2|plaintext] [get|apply] [async|blocking]
//! ```
//!
//! `EVENTDBX_BUSY_POLL_US` sets the client's poll budget (`0`: no polling).
//! `EVENTDBX_PAUSE_US` (blocking client only) sleeps that long before each request, as a caller
//! that does other work between requests; the pauses' own CPU, measured first alone, is taken
//! out of the figure. It shows what a request costs a caller whose thread has slept: on a
//! virtual machine noticeably more than back to back, whatever the client does.

use std::time::{Duration, Instant};

use eventdbx_client::{Client, ClientConfig, Transport};
use eventdbx_server::auth::TokenRequest;
use eventdbx_server::config::Config;
use eventdbx_server::Server;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What the calling thread has spent so far (Linux; `None` elsewhere). The client runs on a
/// current-thread runtime, so this is the client's CPU, its connection tasks included.
#[derive(Debug, Clone, Copy)]
struct ThreadCpu {
    /// Time on a CPU, to the nanosecond (`schedstat`).
    on_cpu: Duration,
    /// User and system time in clock ticks (`stat`): only their ratio is used, to split
    /// `on_cpu`, since a tick is 10 ms.
    user_ticks: u64,
    system_ticks: u64,
    /// Times the thread went to sleep (`voluntary_ctxt_switches`): a sequential caller that
    /// blocks for each answer sleeps once per request, and each sleep is a context switch out
    /// and back in, charged to the caller's system time.
    sleeps: u64,
}

impl ThreadCpu {
    fn now() -> Option<ThreadCpu> {
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
        let sleeps = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        Some(ThreadCpu {
            on_cpu: Duration::from_nanos(nanos),
            user_ticks: fields.get(11)?.parse().ok()?,
            system_ticks: fields.get(12)?.parse().ok()?,
            sleeps,
        })
    }

    /// What the thread spent since `before`.
    fn since(self, before: ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            on_cpu: self.on_cpu.saturating_sub(before.on_cpu),
            user_ticks: self.user_ticks.saturating_sub(before.user_ticks),
            system_ticks: self.system_ticks.saturating_sub(before.system_ticks),
            sleeps: self.sleeps.saturating_sub(before.sleeps),
        }
    }
}

fn in_process_server(
    plaintext: bool,
) -> Result<(ClientConfig, tempfile::TempDir, tokio::runtime::Runtime)> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::from_toml_str("[storage]\ndurability = \"relaxed\"\n", dir.path())?;
    config.allow_plaintext = plaintext;
    let server = Server::open(config)?;
    let (token, _) = server.auth().issue(TokenRequest {
        group: "bench".into(),
        user: "bench".into(),
        actions: vec!["*".into()],
        ttl_secs: Some(0),
        ..TokenRequest::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    runtime.spawn(async move {
        let _ = server.run(listener, std::future::pending::<()>()).await;
    });
    Ok((ClientConfig::new(token, "default").port(port), dir, runtime))
}

fn report(requests: u32, what: &str, elapsed: Duration, cpu: Option<ThreadCpu>) {
    println!(
        "{requests} sequential {what}: {:.0} requests/s, {:.1} us per round trip",
        f64::from(requests) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / f64::from(requests)
    );
    if let Some(cpu) = cpu {
        let per_request = cpu.on_cpu.as_secs_f64() * 1e6 / f64::from(requests);
        let ticks = cpu.user_ticks + cpu.system_ticks;
        // Where the time went: the kernel's share (syscalls, the sleep and wake-up per
        // answer) against the client's own code (encoding, the cipher, the runtime).
        let split = if ticks == 0 {
            String::new()
        } else {
            let system = per_request * cpu.system_ticks as f64 / ticks as f64;
            format!(
                "user {:.1} us, system {system:.1} us; ",
                per_request - system
            )
        };
        println!(
            "client CPU: {per_request:.1} us per request ({split}{:.2} sleeps per request)",
            cpu.sleeps as f64 / f64::from(requests)
        );
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let requests: u32 = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let transport = match args.next().as_deref() {
        Some("v1") => Transport::V1,
        Some("plaintext") => Transport::Plaintext,
        _ => Transport::V2,
    };
    let apply = args.next().as_deref() == Some("apply");
    let blocking = args.next().as_deref() == Some("blocking");
    let external = std::env::var("EVENTDBX_TOKEN").is_ok();
    let (config, _server) = if external {
        (ClientConfig::from_env()?, None)
    } else {
        let (config, dir, runtime) = in_process_server(transport == Transport::Plaintext)?;
        (config, Some((dir, runtime)))
    };
    let mut config = config.transport(transport);
    // The client's own poll for its answers (`ClientConfig::busy_poll`; 0 turns it off), to
    // measure what it costs and saves.
    if let Ok(micros) = std::env::var("EVENTDBX_BUSY_POLL_US") {
        config = config.busy_poll(Duration::from_micros(micros.parse()?));
    }
    let what = if apply { "applies" } else { "gets" };
    if blocking {
        // The blocking client, as a synchronous caller (the Python SDK's sync methods) uses it.
        let client = eventdbx_client::blocking::Client::connect(config)?;
        let _ = client.create("bench", "b-1", "created", r#"{"n":1}"#);
        let call = |client: &eventdbx_client::blocking::Client| {
            if apply {
                client
                    .apply("bench", "b-1", "ticked", r#"{"n":2}"#)
                    .map(|_| ())
            } else {
                client.get("bench", "b-1").map(|_| ())
            }
        };
        for _ in 0..1000 {
            call(&client)?;
        }
        let pause = match std::env::var("EVENTDBX_PAUSE_US") {
            Ok(micros) => Duration::from_micros(micros.parse()?),
            Err(_) => Duration::ZERO,
        };
        let pauses = (!pause.is_zero()).then(|| {
            let before = ThreadCpu::now();
            let started = Instant::now();
            for _ in 0..requests {
                std::thread::sleep(pause);
            }
            let elapsed = started.elapsed();
            ThreadCpu::now()
                .zip(before)
                .map(|(after, before)| (after.since(before), elapsed))
        });
        let cpu_before = ThreadCpu::now();
        let started = Instant::now();
        for _ in 0..requests {
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            call(&client)?;
        }
        let mut elapsed = started.elapsed();
        let mut cpu = ThreadCpu::now()
            .zip(cpu_before)
            .map(|(after, before)| after.since(before));
        let mut what = format!("{what} (blocking client) over {:?}", client.protocol());
        if let Some((alone, paused)) = pauses.flatten() {
            elapsed = elapsed.saturating_sub(paused);
            println!(
                "a pause of {pause:?} alone: {:.1} us of CPU",
                alone.on_cpu.as_secs_f64() * 1e6 / f64::from(requests)
            );
            cpu = cpu.map(|cpu| cpu.since(alone));
            what = format!("{what}, each after a pause of {pause:?} (its time and CPU taken out)");
        }
        report(requests, &what, elapsed, cpu);
        client.close();
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect(config).await?;
        client
            .create("bench", "b-1", "created", r#"{"n":1}"#)
            .await
            .or_else(|err| {
                if err.code() == "aggregate_exists" {
                    Ok(Default::default())
                } else {
                    Err(err)
                }
            })?;
        for _ in 0..1000 {
            if apply {
                client.apply("bench", "b-1", "ticked", r#"{"n":2}"#).await?;
            } else {
                client.get("bench", "b-1").await?;
            }
        }
        let cpu_before = ThreadCpu::now();
        let started = Instant::now();
        for _ in 0..requests {
            if apply {
                client.apply("bench", "b-1", "ticked", r#"{"n":2}"#).await?;
            } else {
                client.get("bench", "b-1").await?;
            }
        }
        let elapsed = started.elapsed();
        let cpu = ThreadCpu::now()
            .zip(cpu_before)
            .map(|(after, before)| after.since(before));
        let what = format!("{what} over {:?}", client.protocol().await);
        report(requests, &what, elapsed, cpu);
        client.close().await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
}

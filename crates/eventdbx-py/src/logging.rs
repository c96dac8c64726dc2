//! The bridge from Rust's `tracing` events to Python's `logging`, under the logger `eventdbx`.
//!
//! A `tracing` event of target `eventdbx_client::connection` becomes a record of the logger
//! `eventdbx.client.connection` (any other crate: `eventdbx.deps.<crate>...`; the server's
//! plugin targets such as `eventdbx.plugin.log` keep their names), so
//! `logging.getLogger("eventdbx")` sees everything the client and the embedded server say.
//! Python decides what is shown: a record below the logger's effective level is dropped there.
//!
//! Only the `eventdbx_*` crates are forwarded at debug level and above (the server's per-request
//! trace events never take the GIL); other crates only from `warn`. The events themselves never
//! carry tokens: the client and server log reasons, addresses and error codes, not credentials.

use std::fmt::Write as _;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Installs the bridge as this extension's global `tracing` subscriber. The extension has its
/// own copy of `tracing`, so nothing else competes for it; a second call is a no-op.
pub(crate) fn install() {
    let targets = Targets::new()
        .with_target("eventdbx_client", LevelFilter::DEBUG)
        .with_target("eventdbx_server", LevelFilter::DEBUG)
        .with_target("eventdbx_store", LevelFilter::DEBUG)
        .with_target("eventdbx_proto", LevelFilter::DEBUG)
        // The server's plugin output (`eventdbx.plugin.log`, `eventdbx.plugin.process`).
        .with_target("eventdbx.", LevelFilter::DEBUG)
        .with_default(LevelFilter::WARN);
    let subscriber = tracing_subscriber::registry()
        .with(PythonLogging)
        .with(targets);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The `tracing` layer that hands each event to Python's `logging`.
#[derive(Debug)]
struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut message = Message::default();
        event.record(&mut message);
        let level = python_level(*metadata.level());
        let name = logger_name(metadata.target());
        // Never during interpreter shutdown (the server's threads may outlive it).
        Python::try_attach(|py| {
            if let Err(err) = emit(py, &name, level, &message.text) {
                // A failing handler must not take down the thread that logged.
                err.print(py);
            }
        });
    }
}

fn emit(py: Python<'_>, name: &str, level: u8, text: &str) -> PyResult<()> {
    let logger = py.import("logging")?.getattr("getLogger")?.call1((name,))?;
    if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
        logger.call_method1("log", (level, text))?;
    }
    Ok(())
}

/// `logging`'s numeric level for a `tracing` level (`TRACE` is 5, below `DEBUG`).
fn python_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// `eventdbx_client::connection` → `eventdbx.client.connection`; `snow::x` →
/// `eventdbx.deps.snow.x`; a target already under `eventdbx.` (the server's plugin output,
/// `eventdbx.plugin.log`) keeps its name.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    if dotted.starts_with("eventdbx.") {
        return dotted;
    }
    match dotted.strip_prefix("eventdbx_") {
        Some(rest) => format!("eventdbx.{rest}"),
        None => format!("eventdbx.deps.{dotted}"),
    }
}

/// The event's message followed by its other fields as `key=value`.
#[derive(Debug, Default)]
struct Message {
    text: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.text);
            let _ = write!(self.text, "{value:?}");
            self.text.push_str(&fields);
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

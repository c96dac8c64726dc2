//! `eventdbx-echo-plugin`: a reference and test `process` plugin.
//!
//! Reads `PluginEnvelope` messages from stdin (`docs/plugins.md`, "Process plugins"). For each
//! event it appends one JSON line with every field (and the plugin name, version and target from
//! the init, how many inits this process received, its pid, arguments and working directory) to the
//! file named by `EVENTDBX_ECHO_PLUGIN_OUT`, flushed per line, then answers on stdout: an ack with
//! the event's sequence, or an error envelope when the sequence equals
//! `EVENTDBX_ECHO_PLUGIN_FAIL_SEQ`. Exits 0 at the end of stdin.
//!
//! For tests of the runner, also:
//! - `EVENTDBX_ECHO_PLUGIN_HANG_SEQ`: record that event but never answer it (keep reading);
//! - `EVENTDBX_ECHO_PLUGIN_EXIT_CODE`: exit with this code at once, before reading anything.
//!
//! Each event is also reported on stderr as `echo plugin: event <sequence> (<answer>)`.
//!
//! It depends on the protocol crate and std only, as a third-party plugin would.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::process::ExitCode;

use eventdbx_proto::plugin::{
    encode_envelope, EnvelopeDecoder, PluginEnvelope, PluginEvent, PluginInit, MAX_EVENT_BYTES,
};

fn main() -> ExitCode {
    if let Some(code) = env_number("EVENTDBX_ECHO_PLUGIN_EXIT_CODE") {
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("echo plugin: {message}");
            ExitCode::from(2)
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn run() -> Result<(), String> {
    let fail_sequence = env_number("EVENTDBX_ECHO_PLUGIN_FAIL_SEQ");
    let hang_sequence = env_number("EVENTDBX_ECHO_PLUGIN_HANG_SEQ");
    let mut out: Option<File> = match std::env::var_os("EVENTDBX_ECHO_PLUGIN_OUT") {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|err| format!("cannot open {}: {err}", path.to_string_lossy()))?,
        ),
        None => None,
    };
    let mut init: Option<PluginInit> = None;
    let mut inits: u64 = 0;
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut decoder = EnvelopeDecoder::new(MAX_EVENT_BYTES);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(format!("reading stdin failed: {err}")),
        };
        let envelopes = decoder
            .feed(&buffer[..read])
            .map_err(|err| format!("unreadable envelope on stdin: {err}"))?;
        for envelope in envelopes {
            match envelope {
                PluginEnvelope::Init(received) => {
                    init = Some(received);
                    inits += 1;
                }
                PluginEnvelope::Event(event) => {
                    let answer = if Some(event.sequence) == hang_sequence {
                        None
                    } else if Some(event.sequence) == fail_sequence {
                        Some(PluginEnvelope::Error {
                            sequence: event.sequence,
                            message: format!(
                                "echo plugin: configured to fail sequence {}",
                                event.sequence
                            ),
                        })
                    } else {
                        Some(PluginEnvelope::Ack {
                            sequence: event.sequence,
                        })
                    };
                    let answer_name = match &answer {
                        Some(PluginEnvelope::Ack { .. }) => "ack",
                        Some(_) => "error",
                        None => "none",
                    };
                    if let Some(file) = out.as_mut() {
                        let line = event_line(init.as_ref(), inits, &event, answer_name);
                        file.write_all(line.as_bytes())
                            .and_then(|()| file.flush())
                            .map_err(|err| format!("writing the echo file failed: {err}"))?;
                    }
                    eprintln!("echo plugin: event {} ({answer_name})", event.sequence);
                    if let Some(answer) = answer {
                        stdout
                            .write_all(&encode_envelope(&answer))
                            .and_then(|()| stdout.flush())
                            .map_err(|err| format!("writing stdout failed: {err}"))?;
                    }
                }
                PluginEnvelope::Ack { .. } | PluginEnvelope::Error { .. } => {
                    eprintln!("echo plugin: ignored an ack/error envelope on stdin");
                }
            }
        }
    }
    if decoder.is_at_boundary() {
        Ok(())
    } else {
        Err("stdin ended inside an envelope".into())
    }
}

/// One JSON object (and its newline) with the init's fields, the pid, the answer and every
/// field of the event. Hand-written: this binary depends on std and the protocol crate only.
fn event_line(init: Option<&PluginInit>, inits: u64, event: &PluginEvent, answer: &str) -> String {
    let fallback = PluginInit::default();
    let init = init.unwrap_or(&fallback);
    let entries: Vec<String> = event
        .state_entries
        .iter()
        .map(|(key, value)| format!("[{},{}]", json_string(key), json_string(value)))
        .collect();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|arg| json_string(&arg))
        .collect();
    let cwd = std::env::current_dir()
        .map(|dir| dir.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fields = [
        ("plugin", json_string(&init.plugin_name)),
        ("version", json_string(&init.version)),
        ("target", json_string(&init.target)),
        ("inits", inits.to_string()),
        ("pid", std::process::id().to_string()),
        ("args", format!("[{}]", args.join(","))),
        ("cwd", json_string(&cwd)),
        ("answer", json_string(answer)),
        ("sequence", event.sequence.to_string()),
        ("aggregate_type", json_string(&event.aggregate_type)),
        ("aggregate_id", json_string(&event.aggregate_id)),
        ("event_type", json_string(&event.event_type)),
        ("event_version", event.event_version.to_string()),
        ("event_id", json_string(&event.event_id)),
        (
            "created_at_epoch_micros",
            event.created_at_epoch_micros.to_string(),
        ),
        ("payload_json", json_string(&event.payload_json)),
        ("metadata_json", json_string(&event.metadata_json)),
        ("hash", json_string(&event.hash)),
        ("merkle_root", json_string(&event.merkle_root)),
        ("state_version", event.state_version.to_string()),
        ("state_archived", event.state_archived.to_string()),
        ("state_merkle_root", json_string(&event.state_merkle_root)),
        ("state_entries", format!("[{}]", entries.join(","))),
        ("schema_json", json_string(&event.schema_json)),
        ("extensions_json", json_string(&event.extensions_json)),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}\n", body.join(","))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

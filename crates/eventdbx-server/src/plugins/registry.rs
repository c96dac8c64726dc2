//! Plugin definitions (`docs/plugins.md`, "Definitions and the registry"):
//! `<data_dir>/plugins.json`, a JSON array, read once at start and again only when the file changes
//! (or an admin request changes it); writes never read it. Servers sharing a database keep the
//! array in the `plugins.json` control document instead (`docs/storage.md`, "Several servers").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eventdbx_core::plugin::{PayloadMode, RoutablePlugin};
use eventdbx_core::CoreError;
use eventdbx_store::documents::{ControlDocuments, Expected};
use serde::{Deserialize, Serialize};

/// The control document of the definitions on a shared database.
pub const PLUGINS_DOCUMENT: &str = "plugins.json";

/// One plugin definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginDef {
    /// Disabled plugins are not loaded (and count as not configured for routing).
    pub enabled: bool,
    /// `false`: never receives broadcasts and cannot be named as a target.
    #[serde(default = "yes")]
    pub emit_events: bool,
    /// Routing identifier; the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default payload mode.
    #[serde(default)]
    pub payload_mode: PayloadMode,
    /// Kind-specific settings, tagged by `type`.
    pub config: KindConfig,
}

fn yes() -> bool {
    true
}

/// The kind of a plugin and its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KindConfig {
    /// `POST` of the JSON body to an endpoint.
    Http {
        /// `host:port/path`, `http://host:port/path` or `https://host:port/path`.
        endpoint: String,
        /// Extra request headers (values are never logged).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Add `https://` rather than `http://` to an endpoint without a scheme.
        #[serde(default)]
        https: bool,
        /// A PEM file of the certificate authorities trusted for an `https` endpoint, instead of
        /// the system's (a private CA).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<String>,
    },
    /// One JSON line per job on a kept-alive connection.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A line on the `eventdbx.plugin.log` tracing target.
    Log {
        /// `trace`, `debug`, `info` (default), `warn`, `error`.
        #[serde(default = "info")]
        level: String,
        /// `{aggregate}`, `{id}` and `{event}` are substituted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
        /// `summary` (default) or `full`.
        #[serde(default = "summary")]
        detail: String,
    },
    /// A child process fed Cap'n Proto envelopes on stdin.
    Process {
        /// Binary name in the local plugin registry.
        name: String,
        /// Binary version.
        version: String,
        /// Arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        working_dir: Option<String>,
    },
}

fn info() -> String {
    "info".into()
}

fn summary() -> String {
    "summary".into()
}

impl KindConfig {
    /// `http`, `tcp`, `log` or `process`.
    pub fn kind(&self) -> &'static str {
        match self {
            KindConfig::Http { .. } => "http",
            KindConfig::Tcp { .. } => "tcp",
            KindConfig::Log { .. } => "log",
            KindConfig::Process { .. } => "process",
        }
    }
}

impl PluginDef {
    /// The routing identifier: the name, or the kind.
    pub fn id(&self) -> String {
        self.name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map_or_else(|| self.config.kind().to_owned(), str::to_owned)
    }

    /// The queue label: `"<kind> (<name>)"`, or `"<kind>"` without a name.
    pub fn label(&self) -> String {
        match self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            Some(name) => format!("{} ({name})", self.config.kind()),
            None => self.config.kind().to_owned(),
        }
    }

    /// Checks the settings; the messages are `config` errors.
    pub fn validate(&self) -> Result<(), CoreError> {
        match &self.config {
            KindConfig::Http {
                endpoint,
                https,
                ca_file,
                ..
            } => {
                super::endpoint::HttpTarget::parse(endpoint, *https)?;
                if ca_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
                    return Err(CoreError::Config(
                        "http plugin ca_file cannot be empty".into(),
                    ));
                }
            }
            KindConfig::Tcp { host, port } => {
                if host.trim().is_empty() || *port == 0 {
                    return Err(CoreError::Config(
                        "tcp plugin needs a host and a non-zero port".into(),
                    ));
                }
            }
            KindConfig::Log { level, detail, .. } => {
                if !["trace", "debug", "info", "warn", "error"]
                    .contains(&level.to_ascii_lowercase().as_str())
                {
                    return Err(CoreError::Config(format!("invalid log level '{level}'")));
                }
                if !["summary", "full"].contains(&detail.to_ascii_lowercase().as_str()) {
                    return Err(CoreError::Config(format!("invalid log detail '{detail}'")));
                }
            }
            KindConfig::Process { name, version, .. } => {
                if name.trim().is_empty() || version.trim().is_empty() {
                    return Err(CoreError::Config(
                        "process plugin needs a name and a version".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Routing's view.
    pub fn routable(&self) -> RoutablePlugin {
        RoutablePlugin {
            id: self.id(),
            enabled: self.enabled,
            emit_events: self.emit_events,
            mode: self.payload_mode,
        }
    }
}

/// The plugins file of a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins.json")
}

/// Reads the definitions (a missing file is an empty list) and the file's modification time.
pub fn load(path: &Path) -> Result<(Vec<PluginDef>, Option<SystemTime>), CoreError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(err) => return Err(CoreError::Io(format!("{}: {err}", path.display()))),
    };
    Ok((parse(&text, &path.display().to_string())?, modified))
}

/// The definitions in a stored text (blank: none); `origin` names the file or document.
fn parse(text: &str, origin: &str) -> Result<Vec<PluginDef>, CoreError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|err| CoreError::Config(format!("{origin}: {err}")))
}

/// The definitions in the shared document (absent: none) and its revision.
pub fn load_shared(
    documents: &dyn ControlDocuments,
) -> Result<(Vec<PluginDef>, Option<u64>), CoreError> {
    let read = documents
        .read(PLUGINS_DOCUMENT)
        .map_err(|err| CoreError::Io(format!("cannot read {PLUGINS_DOCUMENT}: {err}")))?;
    let Some(read) = read else {
        return Ok((Vec::new(), None));
    };
    let text = String::from_utf8_lossy(&read.body);
    Ok((parse(&text, PLUGINS_DOCUMENT)?, Some(read.revision)))
}

/// Stores the definitions in the shared document if it still has `revision` (`None`: absent);
/// the new revision, or `None` when another server changed it first.
pub fn save_shared(
    documents: &dyn ControlDocuments,
    defs: &[PluginDef],
    revision: Option<u64>,
) -> Result<Option<u64>, CoreError> {
    let text = serde_json::to_string_pretty(defs)
        .map_err(|err| CoreError::Serialization(err.to_string()))?;
    let expected = revision.map_or(Expected::Absent, Expected::Revision);
    documents
        .write(PLUGINS_DOCUMENT, (text + "\n").as_bytes(), expected)
        .map_err(|err| CoreError::Io(format!("cannot write {PLUGINS_DOCUMENT}: {err}")))
}

/// Writes the definitions atomically (temporary file, fsync, rename, directory fsync) with mode
/// 0600: http headers and process environments may carry credentials.
pub fn save(path: &Path, defs: &[PluginDef]) -> Result<(), CoreError> {
    let text = serde_json::to_string_pretty(defs)
        .map_err(|err| CoreError::Serialization(err.to_string()))?;
    crate::fs::write_atomic(path, (text + "\n").as_bytes(), PLUGINS_FILE_MODE)
        .map_err(|err| CoreError::Io(format!("{}: {err}", path.display())))
}

/// `plugins.json` is readable by its owner only.
pub const PLUGINS_FILE_MODE: u32 = 0o600;

#[cfg(test)]
mod file_mode_tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn saved_definitions_are_owner_only_and_load_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("plugins.json");
        let defs: Vec<PluginDef> = serde_json::from_str(
            r#"[{"enabled": true, "name": "hook", "config": {"type": "http",
                 "endpoint": "127.0.0.1:9/x", "headers": {"Authorization": "Bearer s3cret"}}}]"#,
        )
        .expect("definitions");
        save(&path, &defs).expect("save");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let (loaded, _) = load(&path).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id(), "hook");
    }
}

//! The servers this client has seen speak protocol v2, remembered per `host:port` in a file the
//! user can read, like SSH's `known_hosts`.
//!
//! A server that once answered a v2 hello and later answers "unsupported control protocol
//! version 2" is more likely a man in the middle than a downgraded server, and v1 sends the
//! token in clear; so the client refuses the v1 fallback for any `host:port` in this file
//! (`docs/protocol.md`, "Negotiation"). One line per server: `host:port fingerprint`, the
//! fingerprint being the last static key the server presented. Lines starting with `#` are
//! comments. The file is rewritten through a temporary file and a rename, so a reader never sees
//! half of it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use eventdbx_proto::noise::v2::Fingerprint;

/// The variable that overrides the file's location; empty, `off` or `none` disables it.
pub const ENV_VAR: &str = "EVENTDBX_KNOWN_V2_HOSTS";

const HEADER: &str = "# Servers seen speaking EventDBX protocol v2 (host:port fingerprint). \
                      The client refuses to fall back to protocol v1 for them; delete a line \
                      only if that server really stopped speaking v2.\n";

/// Where the client remembers servers that spoke v2.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KnownV2Hosts {
    /// `$EVENTDBX_KNOWN_V2_HOSTS` when set (empty, `off` or `none` disable it), else
    /// `$XDG_STATE_HOME/eventdbx/known_v2_hosts`, else
    /// `~/.local/state/eventdbx/known_v2_hosts`; nothing when no home is known.
    #[default]
    Default,
    /// This file.
    File(PathBuf),
    /// Remember nothing: every first contact may fall back to v1 (when allowed).
    Disabled,
}

/// Whether a setting's text turns the memory off: empty, `off` or `none` (any case).
fn turns_off(text: &str) -> bool {
    let text = text.trim();
    text.is_empty() || text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none")
}

impl KnownV2Hosts {
    /// A setting given as text (an SDK argument, a configuration value), read as the
    /// environment variable is: empty, `off` or `none` remember nothing; anything else is the
    /// file.
    pub fn from_setting(text: &str) -> Self {
        if turns_off(text) {
            KnownV2Hosts::Disabled
        } else {
            KnownV2Hosts::File(PathBuf::from(text))
        }
    }

    /// The file to use, if any.
    pub fn path(&self) -> Option<PathBuf> {
        self.path_with(|name| std::env::var_os(name).map(PathBuf::from))
    }

    fn path_with(&self, lookup: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
        match self {
            KnownV2Hosts::Disabled => None,
            KnownV2Hosts::File(path) => Some(path.clone()),
            KnownV2Hosts::Default => {
                if let Some(chosen) = lookup(ENV_VAR) {
                    return (!turns_off(&chosen.to_string_lossy())).then(|| chosen.clone());
                }
                let state = lookup("XDG_STATE_HOME")
                    .filter(|dir| dir.is_absolute())
                    .or_else(|| lookup("HOME").map(|home| home.join(".local").join("state")))?;
                Some(state.join("eventdbx").join("known_v2_hosts"))
            }
        }
    }
}

/// The key of a server in the file: `host:port`, with an IPv6 host in brackets.
pub(crate) fn server_address(host: &str, port: u16) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The fingerprint recorded for `address`, if the file names it. A missing file names nothing.
pub(crate) fn recorded(path: &Path, address: &str) -> std::io::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let fingerprint = entries(&text)
        .find(|(server, _)| *server == address)
        .map(|(_, fingerprint)| fingerprint.to_owned());
    Ok(fingerprint)
}

/// Records that `address` spoke v2 with this key; leaves the file alone when it already says so.
pub(crate) fn remember(
    path: &Path,
    address: &str,
    fingerprint: Fingerprint,
) -> std::io::Result<()> {
    let fingerprint = fingerprint.to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    if entries(&text).any(|entry| entry == (address, fingerprint.as_str())) {
        return Ok(());
    }
    let mut updated = String::from(HEADER);
    for (server, seen) in entries(&text).filter(|(server, _)| *server != address) {
        updated.push_str(&format!("{server} {seen}\n"));
    }
    updated.push_str(&format!("{address} {fingerprint}\n"));
    replace_file(path, updated.as_bytes())
}

fn entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            )
        })
}

/// Writes `bytes` to a sibling temporary file, syncs it and renames it over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    // Unique per process and write, so concurrent writers never share a temporary file.
    name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = path.with_file_name(name);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_location_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| PathBuf::from(value))
            }
        };
        let default = KnownV2Hosts::Default;
        assert_eq!(
            default.path_with(env(&[("HOME", "/home/u")])),
            Some(PathBuf::from(
                "/home/u/.local/state/eventdbx/known_v2_hosts"
            ))
        );
        assert_eq!(
            default.path_with(env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/s")])),
            Some(PathBuf::from("/s/eventdbx/known_v2_hosts"))
        );
        assert_eq!(
            default.path_with(env(&[("HOME", "/home/u"), (ENV_VAR, "/k")])),
            Some(PathBuf::from("/k"))
        );
        assert_eq!(
            default.path_with(env(&[("HOME", "/h"), (ENV_VAR, "off")])),
            None
        );
        assert_eq!(default.path_with(env(&[])), None);
        assert_eq!(
            KnownV2Hosts::Disabled.path_with(env(&[("HOME", "/h")])),
            None
        );
    }

    #[test]
    fn a_setting_turns_the_memory_off_as_the_variable_does() {
        for off in ["", "  ", "off", "OFF", "none", "None"] {
            assert_eq!(
                KnownV2Hosts::from_setting(off),
                KnownV2Hosts::Disabled,
                "{off:?}"
            );
        }
        assert_eq!(
            KnownV2Hosts::from_setting("/k/hosts"),
            KnownV2Hosts::File(PathBuf::from("/k/hosts"))
        );
    }

    #[test]
    fn remembers_one_line_per_server_and_replaces_a_changed_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("known_v2_hosts");
        assert_eq!(recorded(&path, "a:1").expect("missing file"), None);
        remember(&path, "a:1", Fingerprint([1; 32])).expect("write");
        remember(&path, "b:2", Fingerprint([2; 32])).expect("write");
        remember(&path, "a:1", Fingerprint([3; 32])).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                format!("b:2 {}", Fingerprint([2; 32])),
                format!("a:1 {}", Fingerprint([3; 32]))
            ]
        );
        assert_eq!(
            recorded(&path, "a:1").expect("read"),
            Some(Fingerprint([3; 32]).to_string())
        );
        let leftovers = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(server_address("::1", 6363), "[::1]:6363");
        assert_eq!(server_address(" Example.COM ", 1), "example.com:1");
    }
}

//! Changing keys of an existing config file with `toml_edit`, so that everything the user
//! wrote around them (comments, order, blank lines, keys this server does not know) stays.

use std::path::Path;

use toml_edit::{DocumentMut, Item, Table, Value};

use super::paths::absolute;
use super::{load, Config, ConfigError};

/// A value [`Config::edit_file`] writes at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigValue {
    /// A TOML integer.
    Integer(i64),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML string.
    Text(String),
}

impl From<&ConfigValue> for Value {
    fn from(value: &ConfigValue) -> Value {
        match value {
            ConfigValue::Integer(n) => Value::from(*n),
            ConfigValue::Bool(flag) => Value::from(*flag),
            ConfigValue::Text(text) => Value::from(text.as_str()),
        }
    }
}

impl Config {
    /// Sets each dotted key (`port`, `socket.bind_addr`, `plugin_queue.prune.interval_secs`)
    /// in the config file at `path`, and `updated_at`, leaving the rest of the file as it was,
    /// comments included; a comment at the end of a changed line stays too. The edited text
    /// is loaded before it is written, so a value the config refuses leaves the file
    /// untouched and comes back as the error. Returns the config as the edited file gives it.
    pub fn edit_file(path: &Path, edits: &[(&str, ConfigValue)]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let path = absolute(path);
        let origin = path.display().to_string();
        let mut document: DocumentMut =
            text.parse()
                .map_err(|err: toml_edit::TomlError| ConfigError::Parse {
                    origin: origin.clone(),
                    message: err.message().to_owned(),
                })?;
        let now = ConfigValue::Text(eventdbx_core::time::now_rfc3339());
        for (key, value) in edits.iter().chain([("updated_at", now)].iter()) {
            set(document.as_table_mut(), key, value).map_err(|message| {
                ConfigError::InvalidValue {
                    origin: origin.clone(),
                    key: (*key).to_owned(),
                    message,
                }
            })?;
        }
        let edited = document.to_string();
        let base_dir = path.parent().unwrap_or(Path::new("/"));
        let config = load::parse(&edited, base_dir, &origin)?;
        crate::fs::write_atomic(&path, edited.as_bytes(), crate::fs::STATE_FILE_MODE).map_err(
            |source| ConfigError::Io {
                path: path.clone(),
                source,
            },
        )?;
        Ok(config)
    }
}

/// Sets the dotted `key` under `root`, creating the tables on the way; an existing value keeps
/// its decoration (the spaces and the comment around it).
fn set(root: &mut Table, key: &str, value: &ConfigValue) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts
        .pop()
        .filter(|leaf| !leaf.is_empty())
        .ok_or("empty key")?;
    let mut table = root;
    for part in parts {
        let item = table.entry(part).or_insert_with(|| {
            let mut section = Table::new();
            // `[plugin_queue.prune]` alone, without an empty `[plugin_queue]` above it.
            section.set_implicit(true);
            Item::Table(section)
        });
        table = item
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table in the file"))?;
    }
    let mut new = Value::from(value);
    match table.get_mut(leaf).and_then(Item::as_value_mut) {
        Some(old) => {
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
        None => {
            table.insert(leaf, Item::Value(new));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(text: &str, key: &str, value: ConfigValue) -> String {
        let mut document: DocumentMut = text.parse().expect("toml");
        set(document.as_table_mut(), key, &value).expect("set");
        document.to_string()
    }

    #[test]
    fn a_changed_value_keeps_its_comment() {
        let text = "# top\nport = 7070 # the HTTP port\n\n[socket]\nbind_addr = \"x\"\n";
        assert_eq!(
            edited(text, "port", ConfigValue::Integer(9000)),
            "# top\nport = 9000 # the HTTP port\n\n[socket]\nbind_addr = \"x\"\n"
        );
    }

    #[test]
    fn missing_tables_are_created_without_empty_parents() {
        let text = "port = 1\n";
        assert_eq!(
            edited(
                text,
                "plugin_queue.prune.interval_secs",
                ConfigValue::Integer(120)
            ),
            "port = 1\n\n[plugin_queue.prune]\ninterval_secs = 120\n"
        );
    }

    #[test]
    fn a_key_under_a_value_is_refused() {
        let mut document: DocumentMut = "port = 1\n".parse().expect("toml");
        let err = set(document.as_table_mut(), "port.x", &ConfigValue::Bool(true));
        assert_eq!(err, Err("`port` is not a table in the file".to_owned()));
    }
}

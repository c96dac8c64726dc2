//! A [`Config`] written back as TOML that [`Config::from_toml_str`] reads to an equal value.

use std::path::Path;

use eventdbx_core::plugin::RetryPolicy;
use eventdbx_core::schema::RestrictMode;
use toml::Value;

use super::Config;

impl Config {
    /// Writes the config as TOML that [`Config::from_toml_str`] reads back to an equal value.
    /// Unset optional keys are left out. The config holds no key material, so neither does
    /// the text: secrets stay in their files, named only by path.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            out.push_str(key);
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        };
        line("port", self.port.to_string());
        line("data_dir", quote_path(&self.data_dir));
        line("domain", quote(&self.domain));
        line("restrict", quote(restrict_name(self.restrict)));
        line("list_page_size", self.list_page_size.to_string());
        line("page_limit", self.page_limit.to_string());
        line("verbose_responses", self.verbose_responses.to_string());
        line(
            "reference_default_depth",
            self.reference_default_depth.to_string(),
        );
        line("reference_max_depth", self.reference_max_depth.to_string());
        line("snowflake_worker_id", self.snowflake_worker_id.to_string());
        line("plugin_max_attempts", self.plugin_max_attempts.to_string());
        line("cache_threshold", self.cache_threshold.to_string());
        if let Some(threshold) = self.snapshot_threshold {
            line("snapshot_threshold", threshold.to_string());
        }
        line("allow_plaintext", self.allow_plaintext.to_string());
        line("accept_v1", self.accept_v1.to_string());
        line("max_message_bytes", self.max_message_bytes.to_string());
        line(
            "idempotency_ttl_secs",
            self.idempotency_ttl_secs.to_string(),
        );
        line(
            "revocation_refresh_secs",
            self.revocation_refresh_secs.to_string(),
        );
        if let Some(path) = &self.server_key_file {
            line("server_key_file", quote_path(path));
        }
        if let Some(at) = &self.created_at {
            line("created_at", quote(at));
        }
        if let Some(at) = &self.updated_at {
            line("updated_at", quote(at));
        }

        let mut section = |name: &str, entries: Vec<(&str, String)>| {
            out.push_str("\n[");
            out.push_str(name);
            out.push_str("]\n");
            for (key, value) in entries {
                out.push_str(key);
                out.push_str(" = ");
                out.push_str(&value);
                out.push('\n');
            }
        };
        section(
            "socket",
            vec![
                ("bind_addr", quote(&self.socket.bind_addr)),
                ("busy_poll_us", self.socket.busy_poll_us.to_string()),
            ],
        );
        section(
            "http",
            self.http
                .bind_addr
                .iter()
                .map(|addr| ("bind_addr", quote(addr)))
                .collect(),
        );
        let mut tenants = vec![
            ("multi_tenant", self.tenants.multi_tenant.to_string()),
            ("shard_count", self.tenants.shard_count.to_string()),
        ];
        if let Some(path) = &self.tenants.shard_map_path {
            tenants.push(("shard_map_path", quote_path(path)));
        }
        section("tenants", tenants);
        let mut auth = vec![
            ("issuer", quote(&self.auth.issuer)),
            ("audience", quote(&self.auth.audience)),
            ("default_ttl_secs", self.auth.default_ttl_secs.to_string()),
            ("clock_skew_secs", self.auth.clock_skew_secs.to_string()),
        ];
        if let Some(kid) = &self.auth.key_id {
            auth.push(("key_id", quote(kid)));
        }
        if let Some(path) = &self.auth.signing_key_file {
            auth.push(("signing_key_file", quote_path(path)));
        }
        section("auth", auth);
        let mut storage = vec![("backend", quote(&self.storage.backend))];
        if let Some(url) = &self.storage.url {
            storage.push(("url", quote(url)));
        }
        storage.push(("durability", quote(self.storage.durability.as_str())));
        section("storage", storage);
        let prune = &self.plugin_queue.prune;
        let mut prune_entries = vec![
            ("done_ttl_secs", prune.done_ttl_secs.to_string()),
            ("interval_secs", prune.interval_secs.to_string()),
        ];
        if let Some(max) = prune.max_done_jobs {
            prune_entries.push(("max_done_jobs", max.to_string()));
        }
        if self.plugin_queue.backoff_unit_ms != RetryPolicy::default().backoff_unit_ms {
            section(
                "plugin_queue",
                vec![(
                    "backoff_unit_ms",
                    self.plugin_queue.backoff_unit_ms.to_string(),
                )],
            );
        }
        section("plugin_queue.prune", prune_entries);
        out
    }
}

fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn restrict_name(mode: RestrictMode) -> &'static str {
    match mode {
        RestrictMode::Off => "off",
        RestrictMode::Default => "default",
        RestrictMode::Strict => "strict",
    }
}

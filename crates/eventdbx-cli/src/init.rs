//! `dbx init [--postgres URL]`: a workspace (config, keys, a bootstrap token in cli.token),
//! idempotent; with `--postgres`, one that stores in PostgreSQL (`docs/storage.md`,
//! "PostgreSQL engine"), the database checked and migrated before `dbx serve` first runs.

use anyhow::{bail, Context as _, Result};
use eventdbx_server::config::{
    init_workspace_with, postgres_url_has_password, Config, InitOutcome, InitStorage,
};
use eventdbx_server::fs::write_secret;
use eventdbx_server::Server;

pub fn init(ttl: u64, postgres: Option<String>, json: bool) -> Result<()> {
    let storage = match postgres {
        Some(url) => {
            // Checked before anything is written: a wrong URL or a database newer than this
            // dbx leaves no workspace behind to be re-initialised by hand.
            let status = eventdbx_store_postgres::migration_status(&url)
                .context("checking the PostgreSQL database")?;
            if status.newer() {
                bail!(
                    "the database schema is version {}, newer than this dbx knows ({}): \
                     upgrade dbx",
                    status.database,
                    status.known
                );
            }
            InitStorage::Postgres(url)
        }
        None => InitStorage::Embedded,
    };
    let outcome = init_workspace_with(&std::env::current_dir()?, &storage)?;
    let mut config = Config::load(outcome.config_path())?;
    let mut url_left_out = false;
    if let InitStorage::Postgres(url) = &storage {
        if matches!(outcome, InitOutcome::AlreadyInitialized(_))
            && config.storage.backend != "postgres"
        {
            bail!(
                "{} exists with [storage] backend = {:?}; it was left as it is (edit [storage] \
                 to move it to PostgreSQL)",
                outcome.config_path().display(),
                config.storage.backend
            );
        }
        // The server below opens the database with the URL given here even when the file
        // leaves it out (a password); the environment still wins, as it does for the server.
        if config.storage.url.is_none() {
            url_left_out = postgres_url_has_password(url);
            config.storage.url = Some(url.clone());
        }
    }
    // Creates the store, the signing key and the v2 key, exactly as the server will use them.
    let server = Server::open(config.clone())?;
    let token_file = config.data_dir.join("cli.token");
    let created = matches!(outcome, InitOutcome::Created(_));
    if created || !token_file.exists() {
        let token = server.auth().bootstrap(ttl)?;
        write_secret(&token_file, token.as_bytes())?;
    }
    if json {
        out!(
            "{}",
            serde_json::json!({
                "initialized": created,
                "config": outcome.config_path(),
                "token_file": token_file,
                "server_key_fingerprint": server.fingerprint().to_string(),
            })
        );
    } else {
        let verb = if created {
            "initialized"
        } else {
            "already initialized"
        };
        out!("{verb}: {}", outcome.config_path().display());
        out!("bootstrap token: {} (mode 0600)", token_file.display());
        out!("server key fingerprint: {}", server.fingerprint());
        if config.storage.backend == "postgres" {
            out!("storage: PostgreSQL (schema migrated; see `dbx migrate status`)");
        }
    }
    if url_left_out {
        eprintln!(
            "note: the URL carries a password, so config.toml has no [storage] url; set \
             DBX_POSTGRES_URL to it for `dbx serve` and `dbx migrate`"
        );
    }
    Ok(())
}

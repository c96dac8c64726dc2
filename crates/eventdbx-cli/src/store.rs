//! `dbx store check` and `dbx store recover`: the embedded store's file, offline (the server
//! must be stopped; a running one holds the file and the command says so). What each does and
//! what a recovery keeps: `docs/storage.md`, "Damaged files and recovery".

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use eventdbx_store::redb_store::{check, recover, CheckReport};

/// Exit status of `check` for a damaged file, and of `recover` for one it could not recover
/// (1 stays "the command itself failed").
const DAMAGED: i32 = 2;

#[derive(Args)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Read-only: the engine's integrity check of every page, then verify of every aggregate
    /// of every tenant. Exit status 0 when intact, 2 when damaged.
    Check(FileArg),
    /// Put the last good state back: when the latest commit is damaged and the one before it
    /// is intact (every page checksummed, every aggregate verified), a new file with that
    /// commit replaces the damaged one, which is kept beside it as
    /// `<file>.damaged-<unix seconds>`. The writes of the lost commit are not recovered (after
    /// a clean close, that commit holds only the engine's bookkeeping). Damage to pages both
    /// commits share cannot be undone: it is reported and nothing is changed (exit status 2).
    Recover(FileArg),
}

#[derive(Args)]
struct FileArg {
    /// The database file (default: the configured store, `<data_dir>/store/events.redb`).
    #[arg(long)]
    file: Option<PathBuf>,
}

pub(crate) fn store(args: StoreArgs, config: Option<&Path>, json: bool) -> Result<()> {
    match args.command {
        StoreCommand::Check(file) => {
            let path = store_file(file, config)?;
            let report = check(&path).with_context(|| format!("checking {}", path.display()))?;
            print_check(&report, json);
            if !report.is_clean() {
                std::process::exit(DAMAGED);
            }
        }
        StoreCommand::Recover(file) => {
            let path = store_file(file, config)?;
            let report =
                recover(&path).with_context(|| format!("recovering {}", path.display()))?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({
                        "file": report.check.file,
                        "nothing_to_do": report.nothing_to_do,
                        "rolled_back": report.rolled_back,
                        "damaged_file": report.damaged_file,
                        "recovered": report.damaged_file.is_some(),
                        "check": check_json(&report.check),
                    })
                );
            } else if report.nothing_to_do {
                out!("{}: no damage found; nothing changed", report.check.file);
            } else if let Some(aside) = &report.damaged_file {
                out!(
                    "{}: recovered the commit before the damaged one ({} aggregates, {} events, \
                     all verified); the writes of the damaged commit are lost (after a clean \
                     close, only the engine's own bookkeeping)",
                    report.check.file,
                    report.check.aggregates,
                    report.check.events
                );
                out!("the damaged file is kept as {}", aside.display());
            } else {
                out!("{}: cannot recover; nothing changed", report.check.file);
                print_check(&report.check, false);
            }
            if !report.nothing_to_do && report.damaged_file.is_none() {
                std::process::exit(DAMAGED);
            }
        }
    }
    Ok(())
}

/// The `--file`, else the configured store (which needs the config).
fn store_file(file: FileArg, config: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = file.file {
        return Ok(path);
    }
    let config = crate::load_config(config)?;
    if let Some(pid) = crate::running_pid(&config) {
        bail!("the server is running (pid {pid}); stop it first with `dbx stop`");
    }
    let path = config.store_path();
    if !path.exists() {
        bail!("{} does not exist (no store yet)", path.display());
    }
    Ok(path)
}

fn check_json(report: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "file": report.file,
        "clean": report.is_clean(),
        "refused": report.refused,
        "unreadable": report.unreadable,
        "tenants": report.tenants,
        "aggregates": report.aggregates,
        "events": report.events,
        "damaged": report.damaged.iter().map(|d| serde_json::json!({
            "tenant": d.tenant,
            "aggregate_type": d.aggregate_type,
            "aggregate_id": d.aggregate_id,
            "error": d.error,
        })).collect::<Vec<_>>(),
    })
}

fn print_check(report: &CheckReport, json: bool) {
    if json {
        out!("{}", check_json(report));
        return;
    }
    if let Some(why) = &report.refused {
        out!(
            "{}: DAMAGED, the engine refuses to open it: {why}",
            report.file
        );
        out!("try `dbx store recover` (the commit before the damaged one)");
        return;
    }
    if let Some(why) = &report.unreadable {
        out!("{}: DAMAGED, its tables cannot be read: {why}", report.file);
        return;
    }
    for damage in &report.damaged {
        out!(
            "damaged: {}/{}:{}: {}",
            damage.tenant,
            damage.aggregate_type,
            damage.aggregate_id,
            damage.error
        );
    }
    let verdict = if report.damaged.is_empty() {
        "ok"
    } else {
        "DAMAGED"
    };
    out!(
        "{}: {verdict}: every page passed the integrity check; {} tenants, {} aggregates \
         verified ({} damaged), {} events",
        report.file,
        report.tenants,
        report.aggregates,
        report.damaged.len(),
        report.events
    );
}

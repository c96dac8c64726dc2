//! `dbx snapshots …`: list, create and read snapshots.

use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use eventdbx_client::SnapshotQuery;

use super::{failed, print_json_text, print_written, ConnectArgs};

/// `dbx snapshots …`
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotsCommand {
    /// List snapshots, optionally of one type or one aggregate.
    List {
        aggregate_type: Option<String>,
        aggregate_id: Option<String>,
        /// Only snapshots at this version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Snapshot an aggregate's current state.
    Create {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Print one snapshot.
    Get { snapshot_id: u64 },
}

pub fn snapshots(args: SnapshotsArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    match args.command {
        SnapshotsCommand::List {
            aggregate_type,
            aggregate_id,
            version,
        } => {
            let query = SnapshotQuery {
                aggregate_type,
                aggregate_id,
                version,
            };
            let list = client
                .list_snapshots(&query)
                .map_err(failed("list snapshots"))?;
            print_json_text(&list.json, json);
        }
        SnapshotsCommand::Create {
            aggregate_type,
            aggregate_id,
            comment,
        } => {
            let written = client
                .create_snapshot(&aggregate_type, &aggregate_id, comment.as_deref())
                .map_err(failed(&format!("snapshot {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        SnapshotsCommand::Get { snapshot_id } => {
            let found = client
                .get_snapshot(snapshot_id)
                .map_err(failed(&format!("get snapshot {snapshot_id}")))?;
            match found.json {
                Some(text) => print_json_text(&text, json),
                None => bail!("snapshot {snapshot_id} not found"),
            }
        }
    }
    Ok(())
}

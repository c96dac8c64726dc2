//! `dbx aggregate …`: create, apply, patch, get (at a version), select, list, verify, archive,
//! restore, references.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use eventdbx_client::blocking::Client;
use eventdbx_client::{EventsQuery, ListQuery, Write};
use serde_json::{json, Map, Value};

use super::{failed, print_json_text, print_page, print_value, print_written, ConnectArgs};

/// `dbx aggregate …`
#[derive(Args, Debug)]
pub struct AggregateArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: AggregateCommand,
}

#[derive(Args, Debug)]
struct EventBody {
    /// Payload as a JSON object.
    #[arg(long, conflicts_with = "fields")]
    payload: Option<String>,
    /// A payload field `key=value` (repeatable; values are strings).
    #[arg(long = "field", value_name = "KEY=VALUE")]
    fields: Vec<String>,
    /// Metadata as a JSON object (e.g. {"@actor":"jane"}).
    #[arg(long)]
    metadata: Option<String>,
    /// A note stored with the event.
    #[arg(long)]
    note: Option<String>,
}

impl EventBody {
    fn payload_json(&self) -> Result<String> {
        if let Some(payload) = &self.payload {
            let value: Value =
                serde_json::from_str(payload).context("--payload is not valid JSON")?;
            return Ok(value.to_string());
        }
        let mut object = Map::new();
        for field in &self.fields {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("--field '{field}' is not KEY=VALUE"))?;
            if key.is_empty() {
                bail!("--field '{field}' has an empty key");
            }
            object.insert(key.to_owned(), Value::String(value.to_owned()));
        }
        Ok(Value::Object(object).to_string())
    }

    fn decorate(&self, mut write: Write) -> Result<Write> {
        if let Some(metadata) = &self.metadata {
            let value: Value =
                serde_json::from_str(metadata).context("--metadata is not valid JSON")?;
            write = write.metadata_json(value.to_string());
        }
        if let Some(note) = &self.note {
            write = write.note(note.clone());
        }
        Ok(write)
    }
}

#[derive(Subcommand, Debug)]
enum AggregateCommand {
    /// Create an aggregate with its first event.
    Create {
        aggregate_type: String,
        aggregate_id: String,
        /// Event type of the first event.
        #[arg(long)]
        event: String,
        #[command(flatten)]
        body: EventBody,
    },
    /// Append an event (creates a missing aggregate).
    Apply {
        aggregate_type: String,
        aggregate_id: String,
        event: String,
        #[command(flatten)]
        body: EventBody,
        /// The version the aggregate must be at.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Apply RFC 6902 operations to the aggregate's state.
    Patch {
        aggregate_type: String,
        aggregate_id: String,
        event: String,
        /// The operations, a JSON array.
        #[arg(long)]
        patch: String,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// A note stored with the event.
        #[arg(long)]
        note: Option<String>,
        /// The version the aggregate must be at.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Print an aggregate.
    Get {
        aggregate_type: String,
        aggregate_id: String,
        /// Also print every event: `{"aggregate": …, "events": […]}`.
        #[arg(long)]
        include_events: bool,
        /// The aggregate as it was after event N (rebuilt from its first N events).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print some fields of an aggregate's state.
    Select {
        aggregate_type: String,
        aggregate_id: String,
        /// Field paths (dot-separated).
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// List aggregates.
    List {
        /// Filter, e.g. `status = "open" AND total > 10`.
        #[arg(long)]
        filter: Option<String>,
        /// Sort, e.g. `created_at:desc`.
        #[arg(long)]
        sort: Option<String>,
        /// Page size.
        #[arg(long)]
        take: Option<u64>,
        /// Resume after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Include archived aggregates.
        #[arg(long, conflicts_with = "archived_only")]
        include_archived: bool,
        /// Archived aggregates only.
        #[arg(long)]
        archived_only: bool,
        /// Follow cursors to the last page.
        #[arg(long)]
        all: bool,
    },
    /// Recompute the Merkle root from the stored events.
    Verify {
        aggregate_type: String,
        aggregate_id: String,
    },
    /// Archive an aggregate.
    Archive {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Restore an archived aggregate.
    Restore {
        aggregate_type: String,
        aggregate_id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// The aggregates that reference this one.
    Referrers {
        aggregate_type: String,
        aggregate_id: String,
    },
}

pub fn aggregate(args: AggregateArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    match args.command {
        AggregateCommand::Create {
            aggregate_type,
            aggregate_id,
            event,
            body,
        } => {
            let write = Write::create(&aggregate_type, &aggregate_id, event, body.payload_json()?);
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("create {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Apply {
            aggregate_type,
            aggregate_id,
            event,
            body,
            expected_version,
        } => {
            let mut write =
                Write::apply(&aggregate_type, &aggregate_id, event, body.payload_json()?);
            if let Some(version) = expected_version {
                write = write.expected_version(version);
            }
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("apply to {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Patch {
            aggregate_type,
            aggregate_id,
            event,
            patch,
            metadata,
            note,
            expected_version,
        } => {
            let operations: Value =
                serde_json::from_str(&patch).context("--patch is not valid JSON")?;
            let body = EventBody {
                payload: None,
                fields: Vec::new(),
                metadata,
                note,
            };
            let mut write = Write::patch(
                &aggregate_type,
                &aggregate_id,
                event,
                operations.to_string(),
            );
            if let Some(version) = expected_version {
                write = write.expected_version(version);
            }
            let written = client
                .write(body.decorate(write)?)
                .map_err(failed(&format!("patch {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Get {
            aggregate_type,
            aggregate_id,
            include_events,
            version,
        } => {
            let what = format!("{aggregate_type}/{aggregate_id}");
            let found = client
                .get(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!("get {what}")))?;
            let Some(text) = found.json else {
                bail!("aggregate {what} not found");
            };
            if let Some(version) = version {
                let (aggregate, events) =
                    aggregate_at(&client, &aggregate_type, &aggregate_id, version, &text)?;
                if include_events {
                    print_value(&json!({"aggregate": aggregate, "events": events}), json);
                } else {
                    print_value(&aggregate, json);
                }
            } else if include_events {
                let aggregate: Value =
                    serde_json::from_str(&text).context("the server sent invalid JSON")?;
                let events = client
                    .iter_events(EventsQuery::new(&aggregate_type, &aggregate_id))
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(failed(&format!("events of {what}")))?;
                print_value(&json!({"aggregate": aggregate, "events": events}), json);
            } else {
                print_json_text(&text, json);
            }
        }
        AggregateCommand::Select {
            aggregate_type,
            aggregate_id,
            fields,
        } => {
            let what = format!("{aggregate_type}/{aggregate_id}");
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            let found = client
                .select(&aggregate_type, &aggregate_id, &fields)
                .map_err(failed(&format!("select from {what}")))?;
            match found.json {
                Some(text) => print_json_text(&text, json),
                None => bail!("aggregate {what} not found"),
            }
        }
        AggregateCommand::List {
            filter,
            sort,
            take,
            cursor,
            include_archived,
            archived_only,
            all,
        } => {
            let mut query = ListQuery::new();
            query.filter = filter;
            query.sort = sort;
            query.take = take;
            query.cursor = cursor;
            if include_archived {
                query.include_archived = Some(true);
            }
            if archived_only {
                query.archived_only = Some(true);
            }
            let (items, next_cursor) = if all {
                let items = client
                    .iter_list(query)
                    .collect::<Result<Vec<Value>, _>>()
                    .map_err(failed("list aggregates"))?;
                (items, None)
            } else {
                let page = client.list(&query).map_err(failed("list aggregates"))?;
                let items = page.aggregates().map_err(failed("list aggregates"))?;
                (items, page.next_cursor)
            };
            print_page("aggregates", items, next_cursor, json);
        }
        AggregateCommand::Verify {
            aggregate_type,
            aggregate_id,
        } => {
            let root = client
                .verify(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!("verify {aggregate_type}/{aggregate_id}")))?;
            if json {
                print_value(
                    &json!({
                        "aggregate_type": aggregate_type,
                        "aggregate_id": aggregate_id,
                        "merkle_root": root,
                        "valid": true,
                    }),
                    true,
                );
            } else {
                out!("{aggregate_type}/{aggregate_id}: verified, merkle root {root}");
            }
        }
        AggregateCommand::Archive {
            aggregate_type,
            aggregate_id,
            note,
        } => {
            let written = client
                .archive(&aggregate_type, &aggregate_id, note.as_deref())
                .map_err(failed(&format!("archive {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Restore {
            aggregate_type,
            aggregate_id,
            note,
        } => {
            let written = client
                .restore(&aggregate_type, &aggregate_id, note.as_deref())
                .map_err(failed(&format!("restore {aggregate_type}/{aggregate_id}")))?;
            print_written(&written, json);
        }
        AggregateCommand::Referrers {
            aggregate_type,
            aggregate_id,
        } => {
            let list = client
                .list_referrers(&aggregate_type, &aggregate_id)
                .map_err(failed(&format!(
                    "referrers of {aggregate_type}/{aggregate_id}"
                )))?;
            print_json_text(&list.json, json);
        }
    }
    Ok(())
}

/// The aggregate after its first `version` events, rebuilt by folding them as the server does
/// (`current` is the aggregate now, to check the version exists), with those events.
fn aggregate_at(
    client: &Client,
    aggregate_type: &str,
    aggregate_id: &str,
    version: u64,
    current: &str,
) -> Result<(Value, Vec<Value>)> {
    let what = format!("{aggregate_type}/{aggregate_id}");
    let current: Value = serde_json::from_str(current).context("the server sent invalid JSON")?;
    let latest = current["version"].as_u64().unwrap_or(0);
    if version == 0 || version > latest {
        bail!("{what} has versions 1 to {latest}; there is no version {version}");
    }
    let mut events = Vec::new();
    for event in client.iter_events(EventsQuery::new(aggregate_type, aggregate_id)) {
        let event = event.map_err(failed(&format!("events of {what}")))?;
        if event["version"].as_u64().is_some_and(|v| v > version) {
            break;
        }
        events.push(event);
    }
    let typed: Vec<eventdbx_core::merkle::Event> = events
        .iter()
        .map(|e| serde_json::from_value(e.clone()))
        .collect::<Result<_, _>>()
        .context("the server sent an event this CLI cannot read")?;
    let aggregate =
        eventdbx_core::aggregate::Aggregate::from_events(aggregate_type, aggregate_id, &typed);
    Ok((aggregate.to_json(&[]), events))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn fields_are_strings_and_payload_must_be_json() {
        let body = EventBody {
            payload: None,
            fields: vec!["name=Jane".into(), "age=42".into(), "eq=a=b".into()],
            metadata: None,
            note: None,
        };
        let payload: Value = serde_json::from_str(&body.payload_json().expect("ok")).expect("json");
        assert_eq!(payload, json!({"name": "Jane", "age": "42", "eq": "a=b"}));
        let bad = EventBody {
            fields: vec!["novalue".into()],
            ..body
        };
        assert!(bad.payload_json().is_err());
        let bad = EventBody {
            payload: Some("{nope".into()),
            fields: Vec::new(),
            metadata: None,
            note: None,
        };
        assert!(bad.payload_json().is_err());
    }
}

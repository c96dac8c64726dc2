//! `dbx events …`: the events of one aggregate, one event by id, or the global event feed.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use eventdbx_client::blocking::Client;
use eventdbx_client::EventsQuery;
use serde_json::Value;

use super::{failed, print_page, print_value, ConnectArgs};

/// `dbx events [<type> [<id>]] | --event <id>`
#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Only events of this aggregate type (without an id: from the global event feed).
    aggregate_type: Option<String>,
    /// Only events of this aggregate (paged with cursors).
    aggregate_id: Option<String>,
    /// One event by its id (from the global event feed of active aggregates).
    #[arg(long = "event", conflicts_with_all = ["aggregate_type", "aggregate_id"])]
    event_id: Option<u64>,
    /// Resume after this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Page size.
    #[arg(long)]
    take: Option<u64>,
    /// Filter on event fields.
    #[arg(long)]
    filter: Option<String>,
    /// Follow cursors to the last page.
    #[arg(long)]
    all: bool,
}

pub fn events(args: EventsArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    if let Some(event_id) = args.event_id {
        let page = client
            .read_outbox(Some(event_id.saturating_sub(1)), Some(1))
            .map_err(failed(&format!("event {event_id}")))?;
        let event = page
            .events()
            .map_err(failed(&format!("event {event_id}")))?
            .into_iter()
            .find(|e| event_id_of(e) == Some(event_id));
        match event {
            Some(event) => print_value(&event, json),
            None => bail!("event {event_id} not found (or its aggregate is archived)"),
        }
        return Ok(());
    }
    let (Some(aggregate_type), Some(aggregate_id)) = (&args.aggregate_type, &args.aggregate_id)
    else {
        return feed_events(&client, &args, json);
    };
    let mut query = EventsQuery::new(aggregate_type, aggregate_id);
    query.cursor = args.cursor;
    query.take = args.take;
    query.filter = args.filter;
    let what = format!("events of {aggregate_type}/{aggregate_id}");
    let (items, next_cursor) = if args.all {
        let items = client
            .iter_events(query)
            .collect::<Result<Vec<Value>, _>>()
            .map_err(failed(&what))?;
        (items, None)
    } else {
        let page = client.events(&query).map_err(failed(&what))?;
        (page.events().map_err(failed(&what))?, page.next_cursor)
    };
    print_page("events", items, next_cursor, json);
    Ok(())
}

/// An event's id: `metadata.event_id`, a decimal string.
fn event_id_of(event: &Value) -> Option<u64> {
    event["metadata"]["event_id"].as_str()?.parse().ok()
}

/// `dbx events [<type>]`: the global feed of active events in id order, optionally of one type.
/// `--cursor` is an event id to start after; `--take` bounds the events printed.
fn feed_events(client: &Client, args: &EventsArgs, json: bool) -> Result<()> {
    if args.filter.is_some() {
        bail!("--filter needs an aggregate type and id");
    }
    let mut after = match &args.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .with_context(|| format!("--cursor must be an event id here, not '{cursor}'"))?,
        ),
        None => None,
    };
    let limit = args.take.map_or(usize::MAX, |take| {
        usize::try_from(take).unwrap_or(usize::MAX)
    });
    let mut items = Vec::new();
    let mut next_cursor = None;
    loop {
        let page = client
            .read_outbox(after, Some(100))
            .map_err(failed("read the event feed"))?;
        let events = page.events().map_err(failed("read the event feed"))?;
        for event in events {
            if args
                .aggregate_type
                .as_deref()
                .is_some_and(|t| event["aggregate_type"] != t)
            {
                continue;
            }
            if items.len() == limit {
                break;
            }
            next_cursor = event_id_of(&event).map(|id| id.to_string());
            items.push(event);
        }
        match page.next_after_event_id {
            Some(next) if items.len() < limit && Some(next) != after => after = Some(next),
            _ => break,
        }
    }
    if !args.all && items.len() == limit {
        print_page("events", items, next_cursor, json);
    } else {
        print_page("events", items, None, json);
    }
    Ok(())
}

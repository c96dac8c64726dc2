//! `dbx events …`: the events of one aggregate, one event by id, the global event feed, or
//! (`--follow`) the events as they commit, through a subscription (`docs/subscriptions.md`).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use eventdbx_client::blocking::Client;
use eventdbx_client::{EventsQuery, SubscribeOptions, SubscriptionStart};
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
    /// Print events as they commit, in position order, until interrupted (`--take`: stop after
    /// that many); resumes by itself after a lost connection.
    #[arg(long, conflicts_with_all = ["event_id", "cursor", "all", "filter", "aggregate_id"])]
    follow: bool,
    /// With --follow: `start`, `end` (the default: only new events) or a position to start
    /// after.
    #[arg(long = "from", requires = "follow")]
    from: Option<String>,
    /// With --follow: only events of this aggregate type (as the positional type).
    #[arg(
        long = "aggregate-type",
        requires = "follow",
        conflicts_with = "aggregate_type"
    )]
    type_filter: Option<String>,
}

pub fn events(args: EventsArgs, config: Option<&Path>, json: bool) -> Result<()> {
    let client = args.connect.connect(config)?;
    if args.follow {
        return follow(&client, &args, json);
    }
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

/// `dbx events --follow`: one line per event as it commits; with `--json` the event JSON with
/// its `position` added.
fn follow(client: &Client, args: &EventsArgs, json: bool) -> Result<()> {
    let start = match args.from.as_deref().unwrap_or("end") {
        "start" => SubscriptionStart::Beginning,
        "end" => SubscriptionStart::End,
        position => SubscriptionStart::After(position.parse::<u64>().with_context(|| {
            format!("--from must be start, end or a position, not '{position}'")
        })?),
    };
    let mut options = SubscribeOptions::new().start(start);
    options.aggregate_type = args.type_filter.clone().or(args.aggregate_type.clone());
    let limit = args.take.map_or(usize::MAX, |take| {
        usize::try_from(take).unwrap_or(usize::MAX)
    });
    for event in client.subscribe(options).take(limit) {
        let event = event.map_err(failed("follow the events"))?;
        if json {
            let mut line = event.event;
            if let Value::Object(fields) = &mut line {
                fields.insert("position".to_owned(), Value::from(event.position));
            }
            out!("{line}");
        } else {
            out!(
                "{}\t{}/{} v{}\t{}\t{}",
                event.position,
                event.aggregate_type,
                event.aggregate_id,
                event.version,
                event.event_type,
                event.payload
            );
        }
    }
    Ok(())
}

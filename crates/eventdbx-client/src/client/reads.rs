//! Reads: aggregates, events, referrers, the outbox and snapshots, and the page iterators.

use eventdbx_proto::control::{
    GetAggregateRequest, GetSnapshotRequest, ListAggregatesRequest, ListEventsRequest,
    ListReferrersRequest, ListSnapshotsRequest, ReadOutboxRequest, Reply, Request,
    SelectAggregateRequest, VerifyAggregateRequest,
};

use super::{require_aggregate, unexpected, Client, Safety, EVENTS_FILTER};
use crate::error::{Error, Result};
use crate::types::{
    page_positions, AggregatesPage, EventsPage, EventsQuery, Found, JsonList, ListQuery,
    OutboxPage, SnapshotQuery,
};

impl Client {
    /// One aggregate's current state.
    pub async fn get(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Found> {
        require_aggregate(aggregate_type, aggregate_id)?;
        let request = Request::GetAggregate(GetAggregateRequest {
            token: self.token(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            ..GetAggregateRequest::default()
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::GetAggregate(r) => Ok(Found {
                json: r.aggregate_json,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Selected fields of one aggregate (`payload.<path>`, `metadata.<key>` or a state path).
    pub async fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        fields: &[&str],
    ) -> Result<Found> {
        require_aggregate(aggregate_type, aggregate_id)?;
        if fields.is_empty() {
            return Err(Error::argument("fields must contain at least one entry"));
        }
        if u32::try_from(fields.len()).is_err() {
            return Err(Error::argument("too many fields"));
        }
        let request = Request::SelectAggregate(SelectAggregateRequest {
            token: self.token(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            fields: fields.iter().map(|field| (*field).to_owned()).collect(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::SelectAggregate(r) => Ok(Found {
                json: r.selection_json,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// One page of aggregates.
    pub async fn list(&self, query: &ListQuery) -> Result<AggregatesPage> {
        let request = Request::ListAggregates(ListAggregatesRequest {
            token: self.token(),
            cursor: query.cursor.clone(),
            take: query.take,
            filter: query.filter.clone(),
            sort: query
                .sort
                .as_deref()
                .map(str::trim)
                .filter(|sort| !sort.is_empty())
                .map(str::to_owned),
            include_archived: query.include_archived.unwrap_or(false),
            archived_only: query.archived_only.unwrap_or(false),
            ..ListAggregatesRequest::default()
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ListAggregates(r) => Ok(AggregatesPage {
                aggregates_json: r.aggregates_json,
                next_cursor: r.next_cursor.filter(|c| !c.is_empty()),
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Pages of aggregates that follow the cursors; the filter, sort and archive flags are
    /// repeated on every page.
    pub fn list_pages(&self, query: ListQuery) -> AggregatePages {
        AggregatePages {
            client: self.clone(),
            query,
            done: false,
        }
    }

    /// One page of an aggregate's events, in version order.
    pub async fn events(&self, query: &EventsQuery) -> Result<EventsPage> {
        require_aggregate(&query.aggregate_type, &query.aggregate_id)?;
        if query.filter.is_some() {
            if let Some(connection) = self.live().await {
                if !connection.has_capability(EVENTS_FILTER) {
                    tracing::warn!(
                        target: super::LOG_TARGET,
                        "the server ignores filter expressions for events"
                    );
                }
            }
        }
        let request = Request::ListEvents(ListEventsRequest {
            token: self.token(),
            aggregate_type: query.aggregate_type.clone(),
            aggregate_id: query.aggregate_id.clone(),
            cursor: query.cursor.clone(),
            take: query.take,
            filter: query.filter.clone(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ListEvents(r) => Ok(EventsPage {
                events_json: r.events_json,
                next_cursor: r.next_cursor.filter(|c| !c.is_empty()),
                positions: page_positions(r.positions),
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Pages of events that follow the cursors.
    pub fn event_pages(&self, query: EventsQuery) -> EventPages {
        EventPages {
            client: self.clone(),
            query,
            done: false,
        }
    }

    /// Recomputes an aggregate's Merkle root from its stored events (64 hex characters).
    pub async fn verify(&self, aggregate_type: &str, aggregate_id: &str) -> Result<String> {
        require_aggregate(aggregate_type, aggregate_id)?;
        let request = Request::VerifyAggregate(VerifyAggregateRequest {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::VerifyAggregate(r) => Ok(r.merkle_root),
            other => unexpected(&other),
        })
        .await
    }

    /// The aggregates that reference this one: `[{aggregate_type, aggregate_id, path}]`.
    pub async fn list_referrers(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<JsonList> {
        require_aggregate(aggregate_type, aggregate_id)?;
        let request = Request::ListReferrers(ListReferrersRequest {
            token: self.token(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ListReferrers(r) => Ok(JsonList {
                json: r.referrers_json,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// Events of the tenant's outbox after `after_event_id`, in event id order.
    pub async fn read_outbox(
        &self,
        after_event_id: Option<u64>,
        take: Option<u64>,
    ) -> Result<OutboxPage> {
        let request = Request::ReadOutbox(ReadOutboxRequest {
            token: self.token(),
            after_event_id,
            take,
        });
        let page = self
            .call(Safety::Repeatable, request, |reply| match reply {
                Reply::ReadOutbox(r) => Ok(OutboxPage {
                    events_json: r.events_json,
                    next_after_event_id: r.next_after_event_id,
                    positions: page_positions(r.positions),
                }),
                other => unexpected(&other),
            })
            .await;
        match page {
            // EventDBX 3.19 does not know the request and answers `serialization`.
            Err(err) if err.code() == "serialization" => Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!("server does not support readOutbox ({})", err.message()),
            )),
            other => other,
        }
    }

    /// Snapshots, optionally filtered (not paged).
    pub async fn list_snapshots(&self, query: &SnapshotQuery) -> Result<JsonList> {
        let present = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let request = Request::ListSnapshots(ListSnapshotsRequest {
            token: self.token(),
            aggregate_type: present(&query.aggregate_type),
            aggregate_id: present(&query.aggregate_id),
            version: query.version,
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::ListSnapshots(r) => Ok(JsonList {
                json: r.snapshots_json,
            }),
            other => unexpected(&other),
        })
        .await
    }

    /// One snapshot by id (the decimal `snapshot_id` of its JSON).
    pub async fn get_snapshot(&self, snapshot_id: u64) -> Result<Found> {
        let request = Request::GetSnapshot(GetSnapshotRequest {
            token: self.token(),
            snapshot_id,
        });
        self.call(Safety::Repeatable, request, |reply| match reply {
            Reply::GetSnapshot(r) => Ok(Found {
                json: r.snapshot_json,
            }),
            other => unexpected(&other),
        })
        .await
    }
}

/// Pages of aggregates (see [`Client::list_pages`]).
#[derive(Debug)]
pub struct AggregatePages {
    client: Client,
    query: ListQuery,
    done: bool,
}

impl AggregatePages {
    /// The next page, or `None` after the last one. After an error the same page can be asked
    /// for again.
    pub async fn next_page(&mut self) -> Result<Option<AggregatesPage>> {
        if self.done {
            return Ok(None);
        }
        let page = self.client.list(&self.query).await?;
        match &page.next_cursor {
            Some(cursor) => self.query.cursor = Some(cursor.clone()),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

/// Pages of events (see [`Client::event_pages`]).
#[derive(Debug)]
pub struct EventPages {
    client: Client,
    query: EventsQuery,
    done: bool,
}

impl EventPages {
    /// The next page, or `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<EventsPage>> {
        if self.done {
            return Ok(None);
        }
        let page = self.client.events(&self.query).await?;
        match &page.next_cursor {
            Some(cursor) => self.query.cursor = Some(cursor.clone()),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

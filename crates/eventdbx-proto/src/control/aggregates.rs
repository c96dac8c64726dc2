//! Aggregate reads: `listAggregates`, `getAggregate`, `selectAggregate`, `verifyAggregate` and
//! `listReferrers`.

use super::{fill_texts, list_len, optional_text, text, texts};
use crate::schema::control_capnp::{
    get_aggregate_request, get_aggregate_response, list_aggregates_request,
    list_aggregates_response, list_referrers_request, list_referrers_response,
    select_aggregate_request, select_aggregate_response, verify_aggregate_request,
    verify_aggregate_response,
};
use crate::Result;

/// `listAggregates`: one page of aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListAggregatesRequest {
    pub token: String,
    pub cursor: Option<String>,
    pub take: Option<u64>,
    pub filter: Option<String>,
    pub sort: Option<String>,
    pub include_archived: bool,
    pub archived_only: bool,
    /// Ours: also return each aggregate with its references resolved.
    pub resolve: bool,
    pub resolve_depth: Option<u32>,
}

impl ListAggregatesRequest {
    pub fn encode(&self, mut r: list_aggregates_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        if let Some(cursor) = &self.cursor {
            r.set_cursor(cursor.as_str());
            r.set_has_cursor(true);
        }
        if let Some(take) = self.take {
            r.set_take(take);
            r.set_has_take(true);
        }
        if let Some(filter) = &self.filter {
            r.set_filter(filter.as_str());
            r.set_has_filter(true);
        }
        if let Some(sort) = &self.sort {
            r.set_sort(sort.as_str());
            r.set_has_sort(true);
        }
        r.set_include_archived(self.include_archived);
        r.set_archived_only(self.archived_only);
        r.set_resolve(self.resolve);
        if let Some(depth) = self.resolve_depth {
            r.set_resolve_depth(depth);
            r.set_has_resolve_depth(true);
        }
        Ok(())
    }

    pub fn decode(r: list_aggregates_request::Reader<'_>) -> Result<Self> {
        Ok(ListAggregatesRequest {
            token: text(r.get_token())?,
            cursor: optional_text(r.get_has_cursor(), r.get_cursor())?,
            take: r.get_has_take().then(|| r.get_take()),
            filter: optional_text(r.get_has_filter(), r.get_filter())?,
            sort: optional_text(r.get_has_sort(), r.get_sort())?,
            include_archived: r.get_include_archived(),
            archived_only: r.get_archived_only(),
            resolve: r.get_resolve(),
            resolve_depth: r.get_has_resolve_depth().then(|| r.get_resolve_depth()),
        })
    }
}

/// The `listAggregates` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListAggregatesResponse {
    /// A JSON array of aggregates.
    pub aggregates_json: String,
    /// Sent as an empty text with the flag off when there is no next page.
    pub next_cursor: Option<String>,
    pub resolved_json: Option<String>,
}

impl ListAggregatesResponse {
    pub fn encode(&self, mut r: list_aggregates_response::Builder<'_>) {
        r.set_aggregates_json(self.aggregates_json.as_str());
        r.set_next_cursor(self.next_cursor.as_deref().unwrap_or(""));
        r.set_has_next_cursor(self.next_cursor.is_some());
        if let Some(resolved) = &self.resolved_json {
            r.set_resolved_json(resolved.as_str());
            r.set_has_resolved_json(true);
        }
    }

    pub fn decode(r: list_aggregates_response::Reader<'_>) -> Result<Self> {
        Ok(ListAggregatesResponse {
            aggregates_json: text(r.get_aggregates_json())?,
            next_cursor: optional_text(r.get_has_next_cursor(), r.get_next_cursor())?,
            resolved_json: optional_text(r.get_has_resolved_json(), r.get_resolved_json())?,
        })
    }
}

/// `getAggregate`: one aggregate's current state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetAggregateRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub resolve: bool,
    pub resolve_depth: Option<u32>,
}

impl GetAggregateRequest {
    pub fn encode(&self, mut r: get_aggregate_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        r.set_resolve(self.resolve);
        if let Some(depth) = self.resolve_depth {
            r.set_resolve_depth(depth);
            r.set_has_resolve_depth(true);
        }
        Ok(())
    }

    pub fn decode(r: get_aggregate_request::Reader<'_>) -> Result<Self> {
        Ok(GetAggregateRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            resolve: r.get_resolve(),
            resolve_depth: r.get_has_resolve_depth().then(|| r.get_resolve_depth()),
        })
    }
}

/// The `getAggregate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetAggregateResponse {
    /// `None` when not found (sent as `found = false` and an empty text).
    pub aggregate_json: Option<String>,
    pub resolved_json: Option<String>,
}

impl GetAggregateResponse {
    pub fn encode(&self, mut r: get_aggregate_response::Builder<'_>) {
        r.set_found(self.aggregate_json.is_some());
        r.set_aggregate_json(self.aggregate_json.as_deref().unwrap_or(""));
        if let Some(resolved) = &self.resolved_json {
            r.set_resolved_json(resolved.as_str());
            r.set_has_resolved_json(true);
        }
    }

    pub fn decode(r: get_aggregate_response::Reader<'_>) -> Result<Self> {
        Ok(GetAggregateResponse {
            aggregate_json: optional_text(r.get_found(), r.get_aggregate_json())?,
            resolved_json: optional_text(r.get_has_resolved_json(), r.get_resolved_json())?,
        })
    }
}

/// `selectAggregate`: selected fields of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectAggregateRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Always sent as a list, even an empty one.
    pub fields: Vec<String>,
}

impl SelectAggregateRequest {
    pub fn encode(&self, mut r: select_aggregate_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        let count = list_len(self.fields.len(), "fields")?;
        fill_texts(r.init_fields(count), &self.fields);
        Ok(())
    }

    pub fn decode(r: select_aggregate_request::Reader<'_>) -> Result<Self> {
        Ok(SelectAggregateRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            fields: texts(r.get_fields())?,
        })
    }
}

/// The `selectAggregate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectAggregateResponse {
    /// `None` when not found (sent as `found = false` and an empty text).
    pub selection_json: Option<String>,
}

impl SelectAggregateResponse {
    pub fn encode(&self, mut r: select_aggregate_response::Builder<'_>) {
        r.set_found(self.selection_json.is_some());
        r.set_selection_json(self.selection_json.as_deref().unwrap_or(""));
    }

    pub fn decode(r: select_aggregate_response::Reader<'_>) -> Result<Self> {
        Ok(SelectAggregateResponse {
            selection_json: optional_text(r.get_found(), r.get_selection_json())?,
        })
    }
}

/// `verifyAggregate`: recompute an aggregate's Merkle root. The reference has no token here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyAggregateRequest {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl VerifyAggregateRequest {
    pub fn encode(&self, mut r: verify_aggregate_request::Builder<'_>) -> Result<()> {
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        Ok(())
    }

    pub fn decode(r: verify_aggregate_request::Reader<'_>) -> Result<Self> {
        Ok(VerifyAggregateRequest {
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
        })
    }
}

/// The `verifyAggregate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyAggregateResponse {
    /// 64 hex characters.
    pub merkle_root: String,
}

impl VerifyAggregateResponse {
    pub fn encode(&self, mut r: verify_aggregate_response::Builder<'_>) {
        r.set_merkle_root(self.merkle_root.as_str());
    }

    pub fn decode(r: verify_aggregate_response::Reader<'_>) -> Result<Self> {
        Ok(VerifyAggregateResponse {
            merkle_root: text(r.get_merkle_root())?,
        })
    }
}

/// `listReferrers`: the aggregates that reference one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReferrersRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl ListReferrersRequest {
    pub fn encode(&self, mut r: list_referrers_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        Ok(())
    }

    pub fn decode(r: list_referrers_request::Reader<'_>) -> Result<Self> {
        Ok(ListReferrersRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
        })
    }
}

/// The `listReferrers` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListReferrersResponse {
    /// A JSON array of `{aggregate_type, aggregate_id, path}`.
    pub referrers_json: String,
}

impl ListReferrersResponse {
    pub fn encode(&self, mut r: list_referrers_response::Builder<'_>) {
        r.set_referrers_json(self.referrers_json.as_str());
    }

    pub fn decode(r: list_referrers_response::Reader<'_>) -> Result<Self> {
        Ok(ListReferrersResponse {
            referrers_json: text(r.get_referrers_json())?,
        })
    }
}

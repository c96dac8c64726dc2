//! Aggregate reads: `listAggregates`, `getAggregate`, `selectAggregate`, `verifyAggregate`,
//! `listReferrers`.

use std::collections::BTreeSet;

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::names::{
    normalize_extension_key, validate_aggregate_id, validate_aggregate_type,
};
use eventdbx_core::query::cursor::{AggregateCursor, PagePlan};
use eventdbx_core::query::filter::Filter;
use eventdbx_core::query::sort::SortSpec;
use eventdbx_core::query::Scope;
use eventdbx_core::CoreError;
use eventdbx_proto::control::{
    GetAggregateRequest, GetAggregateResponse, ListAggregatesRequest, ListAggregatesResponse,
    ListReferrersRequest, ListReferrersResponse, SelectAggregateRequest, SelectAggregateResponse,
    VerifyAggregateRequest, VerifyAggregateResponse,
};
use eventdbx_store::ListQuery;
use serde_json::{Map, Value};

use super::resolve::{resolve_depth, Resolver};
use super::{fit_prefix, page_size, resource, Apply, Context, Reply};
use crate::error::RequestError;

const READ: &str = "aggregate.read";

/// `listAggregates`.
impl Apply for ListAggregatesRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.authorize(&self.token, READ, None)?;
        let config = &ctx.state.config;
        let take = page_size(self.take, config.list_page_size, config.page_limit)?;
        let schemas = ctx.schemas();
        // A first path segment that names an aggregate type qualifies a filter field (the
        // README's `person.archived`): the tenant's types and its schemas' types count.
        let mut known: BTreeSet<String> = schemas.iter().map(|(name, _)| name.clone()).collect();
        known.extend(ctx.state.store.aggregate_types(ctx.tenant)?);
        let known_types: Vec<String> = known.iter().cloned().collect();
        let filter = match self.filter.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() => Some(Filter::parse(text)?),
            _ => None,
        };
        let sort = self.sort.as_deref().map(SortSpec::parse).transpose()?;
        let scope = if self.archived_only {
            Scope::ArchivedOnly
        } else if self.include_archived
            || filter.as_ref().is_some_and(|f| f.mentions_archived(&known))
        {
            Scope::ActiveAndArchived
        } else {
            Scope::Active
        };
        if take == 0 {
            return Ok(Reply::ListAggregates(ListAggregatesResponse {
                aggregates_json: "[]".into(),
                next_cursor: None,
                resolved_json: self.resolve.then(|| "[]".to_owned()),
            }));
        }
        let cursor = match self.cursor.as_deref() {
            Some(text) => AggregateCursor::parse(text)?,
            None => None,
        };
        let store = &ctx.state.store;
        let shorthand_target: Option<Aggregate> = match &cursor {
            Some(AggregateCursor::Shorthand {
                aggregate_type,
                aggregate_id,
            }) => store
                .get(ctx.tenant, aggregate_type, aggregate_id)?
                .and_then(|a| ctx.visible(&schemas, a)),
            _ => None,
        };
        let plan = PagePlan::new(sort.as_ref(), cursor.as_ref(), scope, |_, _| {
            shorthand_target.as_ref().map(Aggregate::view)
        })?;
        let query = ListQuery {
            plan,
            scope,
            filter,
            known_types,
            take,
        };
        let visible = |aggregate: Aggregate| {
            if !claims.allows_resource(&resource(
                &aggregate.aggregate_type,
                &aggregate.aggregate_id,
            )) {
                return None;
            }
            ctx.visible(&schemas, aggregate)
        };
        let page = store.list(ctx.tenant, &query, &visible)?;
        let items: Vec<(String, &Aggregate)> = page
            .items
            .iter()
            .map(|a| (a.to_json(&[]).to_string(), a))
            .collect();
        let trees: Option<Vec<String>> = if self.resolve {
            let resolver = Resolver {
                ctx,
                claims: &claims,
                schemas: &schemas,
                depth: resolve_depth(ctx, self.resolve_depth),
            };
            Some(
                page.items
                    .iter()
                    .map(|a| resolver.tree(a).map(|tree| tree.to_string()))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            None
        };
        let build = |prefix: &[(String, &Aggregate)], cursor: bool| {
            let next_cursor = if cursor {
                prefix
                    .last()
                    .map(|(_, a)| page.order.cursor_after(&a.view()).to_string())
            } else {
                None
            };
            Reply::ListAggregates(ListAggregatesResponse {
                aggregates_json: json_array(prefix.iter().map(|(json, _)| json.as_str())),
                next_cursor,
                resolved_json: trees
                    .as_ref()
                    .map(|trees| json_array(trees[..prefix.len()].iter())),
            })
        };
        // A full page always carries a cursor; a page cut to fit carries the cursor of the last
        // item sent, so nothing is ever skipped.
        let sent = fit_prefix(&items, ctx.response_limit, |prefix| build(prefix, true))?;
        Ok(build(&items[..sent], page.full || sent < items.len()))
    }
}

/// `[a,b,...]` from already-encoded JSON values.
pub(crate) fn json_array<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.as_ref());
    }
    out.push(']');
    out
}

/// `getAggregate`.
impl Apply for GetAggregateRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.authorize(
            &self.token,
            READ,
            Some(&resource(&self.aggregate_type, &self.aggregate_id)),
        )?;
        let schemas = ctx.schemas();
        let found = ctx.visible_aggregate(&schemas, &self.aggregate_type, &self.aggregate_id)?;
        Ok(match found {
            Some(aggregate) => {
                let json = aggregate.to_json(&[]).to_string();
                let resolved = if self.resolve {
                    Resolver {
                        ctx,
                        claims: &claims,
                        schemas: &schemas,
                        depth: resolve_depth(ctx, self.resolve_depth),
                    }
                    .tree(&aggregate)?
                    .to_string()
                } else {
                    format!("{{\"aggregate\":{json}}}")
                };
                Reply::GetAggregate(GetAggregateResponse {
                    resolved_json: Some(resolved),
                    aggregate_json: Some(json),
                })
            }
            None => Reply::GetAggregate(GetAggregateResponse {
                aggregate_json: None,
                resolved_json: None,
            }),
        })
    }
}

/// `selectAggregate`.
impl Apply for SelectAggregateRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(
            &self.token,
            READ,
            Some(&resource(&self.aggregate_type, &self.aggregate_id)),
        )?;
        let schemas = ctx.schemas();
        let Some(aggregate) =
            ctx.visible_aggregate(&schemas, &self.aggregate_type, &self.aggregate_id)?
        else {
            return Ok(Reply::SelectAggregate(SelectAggregateResponse {
                selection_json: None,
            }));
        };
        let mut selection = Map::new();
        for field in self
            .fields
            .iter()
            .map(|f| f.trim())
            .filter(|f| !f.is_empty())
        {
            let value = select(&aggregate, field).cloned().unwrap_or(Value::Null);
            selection.insert(field.to_owned(), value);
        }
        Ok(Reply::SelectAggregate(SelectAggregateResponse {
            selection_json: Some(Value::Object(selection).to_string()),
        }))
    }
}

/// Resolves a selection path (`docs/server.md`, "Get, select, events, outbox"): `payload.<path>` in
/// the state, `metadata.<key>` in the merged extensions (key normalised), anything else a state
/// path.
fn select<'a>(aggregate: &'a Aggregate, path: &str) -> Option<&'a Value> {
    if let Some(key) = path.strip_prefix("metadata.") {
        return aggregate.extensions.get(&normalize_extension_key(key));
    }
    let path = path.strip_prefix("payload.").unwrap_or(path);
    let mut segments = path.split('.');
    let mut value = aggregate.state.get(segments.next()?)?;
    for segment in segments {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// `verifyAggregate`: authorised with the session's hello token (the request has none).
impl Apply for VerifyAggregateRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(
            ctx.hello_token,
            READ,
            Some(&resource(&self.aggregate_type, &self.aggregate_id)),
        )?;
        if ctx.hidden_type(&ctx.schemas(), &self.aggregate_type) {
            return Err(CoreError::AggregateNotFound.into());
        }
        let merkle_root =
            ctx.state
                .store
                .verify(ctx.tenant, &self.aggregate_type, &self.aggregate_id)?;
        Ok(Reply::VerifyAggregate(VerifyAggregateResponse {
            merkle_root,
        }))
    }
}

/// `listReferrers`.
impl Apply for ListReferrersRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        let claims = ctx.authorize(
            &self.token,
            READ,
            Some(&resource(&self.aggregate_type, &self.aggregate_id)),
        )?;
        validate_aggregate_type(&self.aggregate_type)?;
        validate_aggregate_id(&self.aggregate_id)?;
        let schemas = ctx.schemas();
        if ctx
            .visible_aggregate(&schemas, &self.aggregate_type, &self.aggregate_id)?
            .is_none()
        {
            return Err(CoreError::AggregateNotFound.into());
        }
        // Only referrers the token may read and whose type is not hidden are named.
        let referrers: Vec<Value> = ctx
            .state
            .store
            .referrers(ctx.tenant, &self.aggregate_type, &self.aggregate_id)?
            .into_iter()
            .filter(|r| {
                !ctx.hidden_type(&schemas, &r.aggregate_type)
                    && claims
                        .authorize(READ, Some(&resource(&r.aggregate_type, &r.aggregate_id)))
                        .is_ok()
            })
            .map(|r| {
                serde_json::json!({
                    "aggregate_type": r.aggregate_type,
                    "aggregate_id": r.aggregate_id,
                    "path": r.path,
                })
            })
            .collect();
        Ok(Reply::ListReferrers(ListReferrersResponse {
            referrers_json: Value::Array(referrers).to_string(),
        }))
    }
}

//! Reference resolution on `getAggregate` and `listAggregates` (`docs/server.md`, "References";
//! the shape is in `docs/protocol.md`, "JSON shapes").
//!
//! Every lookup stays in the session's tenant. A target the token may not read is `forbidden`
//! (checked first, so resolution reveals nothing about it); a target already on the path from
//! the root is a `cycle`; a reference below the last allowed level is `depth_exceeded`; a
//! missing or hidden target is `not_found`; otherwise it is `ok` and carries its own tree.

use eventdbx_core::aggregate::Aggregate;
use eventdbx_core::schema::reference::state_references;
use eventdbx_core::schema::SchemaMap;
use serde_json::{json, Map, Value};

use super::{resource, Context};
use crate::auth::Claims;
use crate::error::RequestError;

/// The hard cap on the resolution depth, whatever the configuration says.
const HARD_MAX_DEPTH: u32 = 5;

/// The depth a request resolves to: its own, else `reference_default_depth`, capped by
/// `reference_max_depth` and by [`HARD_MAX_DEPTH`].
pub(crate) fn resolve_depth(ctx: &Context<'_>, requested: Option<u32>) -> u32 {
    let config = &ctx.state.config;
    requested
        .unwrap_or(config.reference_default_depth)
        .min(config.reference_max_depth)
        .min(HARD_MAX_DEPTH)
}

/// Builds resolved trees for one request.
pub(crate) struct Resolver<'a, 'c> {
    pub ctx: &'a Context<'c>,
    pub claims: &'a Claims,
    pub schemas: &'a SchemaMap,
    pub depth: u32,
}

impl Resolver<'_, '_> {
    /// The resolved tree of an aggregate the caller may already see (hidden fields removed).
    pub fn tree(&self, aggregate: &Aggregate) -> Result<Value, RequestError> {
        let mut chain = vec![(
            aggregate.aggregate_type.clone(),
            aggregate.aggregate_id.clone(),
        )];
        self.level(aggregate, self.depth, &mut chain)
    }

    fn level(
        &self,
        aggregate: &Aggregate,
        depth: u32,
        chain: &mut Vec<(String, String)>,
    ) -> Result<Value, RequestError> {
        let mut out = Map::new();
        out.insert("aggregate".into(), aggregate.to_json(&[]));
        let Some(schema) = self.schemas.get(&aggregate.aggregate_type) else {
            return Ok(Value::Object(out));
        };
        let links = state_references(
            schema,
            &aggregate.aggregate_type,
            self.ctx.tenant,
            &aggregate.state,
        );
        let mut references = Vec::with_capacity(links.len());
        for link in links {
            let (t, i) = (link.target_type.as_str(), link.target_id.as_str());
            let mut entry = Map::new();
            entry.insert("path".into(), Value::from(link.path.as_str()));
            entry.insert(
                "reference".into(),
                json!({"aggregate_type": t, "aggregate_id": i}),
            );
            let in_chain = chain.iter().any(|(ct, ci)| ct == t && ci == i);
            let status = if self
                .claims
                .authorize("aggregate.read", Some(&resource(t, i)))
                .is_err()
            {
                "forbidden"
            } else if in_chain {
                "cycle"
            } else if depth == 0 {
                "depth_exceeded"
            } else {
                match self.ctx.visible_aggregate(self.schemas, t, i)? {
                    None => "not_found",
                    Some(target) => {
                        chain.push((t.to_owned(), i.to_owned()));
                        let resolved = self.level(&target, depth - 1, chain);
                        chain.pop();
                        entry.insert("resolved".into(), resolved?);
                        "ok"
                    }
                }
            };
            entry.insert("status".into(), Value::from(status));
            references.push(Value::Object(entry));
        }
        if !references.is_empty() {
            out.insert("references".into(), Value::Array(references));
        }
        Ok(Value::Object(out))
    }
}

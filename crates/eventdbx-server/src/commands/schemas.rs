//! `listSchemas` and `replaceSchemas` (`docs/server.md`, "Replacing the set"), on the session's
//! tenant.

use eventdbx_proto::control::{
    ListSchemasRequest, ListSchemasResponse, ReplaceSchemasRequest, ReplaceSchemasResponse,
};

use super::{Apply, Context, Reply};
use crate::error::RequestError;

/// `listSchemas`.
impl Apply for ListSchemasRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(&self.token, "schema.read", None)?;
        Ok(Reply::ListSchemas(ListSchemasResponse {
            schemas_json: ctx.schemas().to_json(),
        }))
    }
}

/// `replaceSchemas`: the whole set is validated before it replaces anything.
impl Apply for ReplaceSchemasRequest {
    fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(&self.token, "schema.write", None)?;
        let replaced = ctx
            .state
            .tenants
            .replace_schemas(ctx.tenant, &self.schemas_json)?;
        Ok(Reply::ReplaceSchemas(ReplaceSchemasResponse { replaced }))
    }
}

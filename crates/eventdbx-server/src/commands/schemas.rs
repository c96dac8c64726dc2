//! `listSchemas` and `replaceSchemas` (§6.3), on the session's tenant.

use eventdbx_proto::schema::schema_capnp::{list_schemas_request, replace_schemas_request};

use super::{text, Context, Reply};
use crate::error::RequestError;

/// `listSchemas`.
pub(crate) struct ListSchemas {
    token: String,
}

impl ListSchemas {
    pub fn parse(r: list_schemas_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(ListSchemas {
            token: text(r.get_token())?,
        })
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(&self.token, "schema.read", None)?;
        Ok(Reply::ListSchemas {
            schemas_json: ctx.schemas().to_json(),
        })
    }
}

/// `replaceSchemas`: the whole set is validated before it replaces anything.
pub(crate) struct ReplaceSchemas {
    token: String,
    schemas_json: String,
}

impl ReplaceSchemas {
    pub fn parse(r: replace_schemas_request::Reader<'_>) -> Result<Self, RequestError> {
        Ok(ReplaceSchemas {
            token: text(r.get_token())?,
            schemas_json: text(r.get_schemas_json())?,
        })
    }

    pub fn apply(self, ctx: &Context<'_>) -> Result<Reply, RequestError> {
        ctx.authorize(&self.token, "schema.write", None)?;
        let replaced = ctx
            .state
            .tenants
            .replace_schemas(ctx.tenant, &self.schemas_json)?;
        Ok(Reply::ReplaceSchemas { replaced })
    }
}

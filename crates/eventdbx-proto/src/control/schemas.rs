//! Schemas: `listSchemas` and `replaceSchemas`.

use super::text;
use crate::schema::schema_capnp::{
    list_schemas_request, list_schemas_response, replace_schemas_request, replace_schemas_response,
};
use crate::Result;

/// `listSchemas`: the tenant's schema map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSchemasRequest {
    pub token: String,
}

impl ListSchemasRequest {
    pub fn encode(&self, mut r: list_schemas_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        Ok(())
    }

    pub fn decode(r: list_schemas_request::Reader<'_>) -> Result<Self> {
        Ok(ListSchemasRequest {
            token: text(r.get_token())?,
        })
    }
}

/// The `listSchemas` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListSchemasResponse {
    /// A JSON object keyed by aggregate type.
    pub schemas_json: String,
}

impl ListSchemasResponse {
    pub fn encode(&self, mut r: list_schemas_response::Builder<'_>) {
        r.set_schemas_json(self.schemas_json.as_str());
    }

    pub fn decode(r: list_schemas_response::Reader<'_>) -> Result<Self> {
        Ok(ListSchemasResponse {
            schemas_json: text(r.get_schemas_json())?,
        })
    }
}

/// `replaceSchemas`: replace the tenant's whole schema map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplaceSchemasRequest {
    pub token: String,
    pub schemas_json: String,
}

impl ReplaceSchemasRequest {
    pub fn encode(&self, mut r: replace_schemas_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_schemas_json(self.schemas_json.as_str());
        Ok(())
    }

    pub fn decode(r: replace_schemas_request::Reader<'_>) -> Result<Self> {
        Ok(ReplaceSchemasRequest {
            token: text(r.get_token())?,
            schemas_json: text(r.get_schemas_json())?,
        })
    }
}

/// The `replaceSchemas` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplaceSchemasResponse {
    /// The number of schemas in the new set.
    pub replaced: u32,
}

impl ReplaceSchemasResponse {
    pub fn encode(&self, mut r: replace_schemas_response::Builder<'_>) {
        r.set_replaced(self.replaced);
    }

    pub fn decode(r: replace_schemas_response::Reader<'_>) -> Result<Self> {
        Ok(ReplaceSchemasResponse {
            replaced: r.get_replaced(),
        })
    }
}

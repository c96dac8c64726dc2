//! Ours: `admin`, plugin and queue administration.

use super::text;
use crate::schema::control_capnp::{admin_request, admin_response};
use crate::Result;

/// `admin`: `action` names the operation (`plugin.list`, `queue.retry`, …), `args_json` is a
/// JSON object of its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminRequest {
    pub token: String,
    pub action: String,
    pub args_json: String,
}

impl AdminRequest {
    pub fn encode(&self, mut r: admin_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_action(self.action.as_str());
        r.set_args_json(self.args_json.as_str());
        Ok(())
    }

    pub fn decode(r: admin_request::Reader<'_>) -> Result<Self> {
        Ok(AdminRequest {
            token: text(r.get_token())?,
            action: text(r.get_action())?,
            args_json: text(r.get_args_json())?,
        })
    }
}

/// The `admin` reply: the operation's JSON result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminResponse {
    pub result_json: String,
}

impl AdminResponse {
    pub fn encode(&self, mut r: admin_response::Builder<'_>) {
        r.set_result_json(self.result_json.as_str());
    }

    pub fn decode(r: admin_response::Reader<'_>) -> Result<Self> {
        Ok(AdminResponse {
            result_json: text(r.get_result_json())?,
        })
    }
}

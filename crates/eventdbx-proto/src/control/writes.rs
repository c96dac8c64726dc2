//! Writes: `createAggregate`, `appendEvent` and `patchEvent` (one layout, [`WriteRequest`]) and
//! `setAggregateArchive`.

use super::{list_len, optional_text, text};
use crate::message::refuse_textless_elements;
use crate::schema::control_capnp::{
    append_event_request, append_event_response, create_aggregate_request,
    create_aggregate_response, patch_event_request, publish_target, set_aggregate_archive_request,
    set_aggregate_archive_response,
};
use crate::Result;

/// A plugin a write or an archive is published to (`docs/plugins.md`, "Routing").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishTarget {
    pub plugin: String,
    /// `None` = the plugin's configured payload mode.
    pub mode: Option<String>,
    /// `None` = normal priority.
    pub priority: Option<String>,
}

impl PublishTarget {
    fn encode(&self, mut r: publish_target::Builder<'_>) {
        r.set_plugin(self.plugin.as_str());
        if let Some(mode) = &self.mode {
            r.set_mode(mode.as_str());
            r.set_has_mode(true);
        }
        if let Some(priority) = &self.priority {
            r.set_priority(priority.as_str());
            r.set_has_priority(true);
        }
    }

    fn decode(r: publish_target::Reader<'_>) -> Result<Self> {
        Ok(PublishTarget {
            plugin: text(r.get_plugin())?,
            mode: optional_text(r.get_has_mode(), r.get_mode())?,
            priority: optional_text(r.get_has_priority(), r.get_priority())?,
        })
    }
}

/// Copies targets into a freshly initialised list.
fn fill_targets(
    mut list: capnp::struct_list::Builder<'_, publish_target::Owned>,
    targets: &[PublishTarget],
) {
    for (index, target) in (0..list.len()).zip(targets) {
        target.encode(list.reborrow().get(index));
    }
}

/// Reads the targets when their flag is set: `None` means "not sent" (broadcast).
fn decode_targets(
    has: bool,
    list: capnp::Result<capnp::struct_list::Reader<'_, publish_target::Owned>>,
) -> Result<Option<Vec<PublishTarget>>> {
    if !has {
        return Ok(None);
    }
    let list = list?;
    let first = list.iter().next().map(|target| target.has_plugin());
    refuse_textless_elements(list.len(), first, "publish targets")?;
    list.iter()
        .map(PublishTarget::decode)
        .collect::<Result<_>>()
        .map(Some)
}

/// `createAggregate`, `appendEvent` or `patchEvent`: the three share one layout, and the member
/// of [`Request`](super::Request) says which write it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// `payloadJson`, or `patchJson` for a patch.
    pub body_json: String,
    pub note: Option<String>,
    pub metadata_json: Option<String>,
    /// `Some(empty)` is sent (and means broadcast, as `None` does).
    pub publish_targets: Option<Vec<PublishTarget>>,
    /// Ours; ignored by `createAggregate`.
    pub expected_version: Option<u64>,
    /// Ours; it has no flag on the wire, so an empty key reads as `None`.
    pub idempotency_key: Option<String>,
}

macro_rules! encode_write {
    ($write:expr, $r:ident, $set_body:ident) => {{
        let write: &WriteRequest = $write;
        $r.set_token(write.token.as_str());
        $r.set_aggregate_type(write.aggregate_type.as_str());
        $r.set_aggregate_id(write.aggregate_id.as_str());
        $r.set_event_type(write.event_type.as_str());
        $r.$set_body(write.body_json.as_str());
        if let Some(note) = &write.note {
            $r.set_note(note.as_str());
            $r.set_has_note(true);
        }
        if let Some(metadata) = &write.metadata_json {
            $r.set_metadata_json(metadata.as_str());
            $r.set_has_metadata(true);
        }
        if let Some(version) = write.expected_version {
            $r.set_expected_version(version);
            $r.set_has_expected_version(true);
        }
        if let Some(key) = &write.idempotency_key {
            $r.set_idempotency_key(key.as_str());
        }
        if let Some(targets) = &write.publish_targets {
            $r.set_has_publish_targets(true);
            let count = list_len(targets.len(), "publish targets")?;
            fill_targets($r.reborrow().init_publish_targets(count), targets);
        }
        Ok(())
    }};
}

macro_rules! decode_write {
    ($r:expr, $get_body:ident) => {{
        let r = $r;
        Ok(WriteRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            event_type: text(r.get_event_type())?,
            body_json: text(r.$get_body())?,
            note: optional_text(r.get_has_note(), r.get_note())?,
            metadata_json: optional_text(r.get_has_metadata(), r.get_metadata_json())?,
            publish_targets: decode_targets(r.get_has_publish_targets(), r.get_publish_targets())?,
            expected_version: r
                .get_has_expected_version()
                .then(|| r.get_expected_version()),
            idempotency_key: Some(text(r.get_idempotency_key())?).filter(|key| !key.is_empty()),
        })
    }};
}

impl WriteRequest {
    pub fn encode_append(&self, mut r: append_event_request::Builder<'_>) -> Result<()> {
        encode_write!(self, r, set_payload_json)
    }

    pub fn encode_patch(&self, mut r: patch_event_request::Builder<'_>) -> Result<()> {
        encode_write!(self, r, set_patch_json)
    }

    pub fn encode_create(&self, mut r: create_aggregate_request::Builder<'_>) -> Result<()> {
        encode_write!(self, r, set_payload_json)
    }

    pub fn decode_append(r: append_event_request::Reader<'_>) -> Result<Self> {
        decode_write!(r, get_payload_json)
    }

    pub fn decode_patch(r: patch_event_request::Reader<'_>) -> Result<Self> {
        decode_write!(r, get_patch_json)
    }

    pub fn decode_create(r: create_aggregate_request::Reader<'_>) -> Result<Self> {
        decode_write!(r, get_payload_json)
    }
}

/// The `appendEvent` reply, also the reply to `patchEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendEventResponse {
    /// The stored event (empty unless the server sends verbose responses).
    pub event_json: String,
}

impl AppendEventResponse {
    pub fn encode(&self, mut r: append_event_response::Builder<'_>) {
        r.set_event_json(self.event_json.as_str());
    }

    pub fn decode(r: append_event_response::Reader<'_>) -> Result<Self> {
        Ok(AppendEventResponse {
            event_json: text(r.get_event_json())?,
        })
    }
}

/// The `createAggregate` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateAggregateResponse {
    /// The created aggregate (empty unless the server sends verbose responses).
    pub aggregate_json: String,
}

impl CreateAggregateResponse {
    pub fn encode(&self, mut r: create_aggregate_response::Builder<'_>) {
        r.set_aggregate_json(self.aggregate_json.as_str());
    }

    pub fn decode(r: create_aggregate_response::Reader<'_>) -> Result<Self> {
        Ok(CreateAggregateResponse {
            aggregate_json: text(r.get_aggregate_json())?,
        })
    }
}

/// `setAggregateArchive`: archive or restore an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetAggregateArchiveRequest {
    pub token: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub archived: bool,
    pub note: Option<String>,
    /// Ours; as for writes.
    pub publish_targets: Option<Vec<PublishTarget>>,
}

impl SetAggregateArchiveRequest {
    pub fn encode(&self, mut r: set_aggregate_archive_request::Builder<'_>) -> Result<()> {
        r.set_token(self.token.as_str());
        r.set_aggregate_type(self.aggregate_type.as_str());
        r.set_aggregate_id(self.aggregate_id.as_str());
        r.set_archived(self.archived);
        if let Some(note) = &self.note {
            r.set_note(note.as_str());
            r.set_has_note(true);
        }
        if let Some(targets) = &self.publish_targets {
            r.set_has_publish_targets(true);
            let count = list_len(targets.len(), "publish targets")?;
            fill_targets(r.reborrow().init_publish_targets(count), targets);
        }
        Ok(())
    }

    pub fn decode(r: set_aggregate_archive_request::Reader<'_>) -> Result<Self> {
        Ok(SetAggregateArchiveRequest {
            token: text(r.get_token())?,
            aggregate_type: text(r.get_aggregate_type())?,
            aggregate_id: text(r.get_aggregate_id())?,
            archived: r.get_archived(),
            note: optional_text(r.get_has_note(), r.get_note())?,
            publish_targets: decode_targets(r.get_has_publish_targets(), r.get_publish_targets())?,
        })
    }
}

/// The `setAggregateArchive` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetAggregateArchiveResponse {
    /// The aggregate after the change (empty unless the server sends verbose responses).
    pub aggregate_json: String,
}

impl SetAggregateArchiveResponse {
    pub fn encode(&self, mut r: set_aggregate_archive_response::Builder<'_>) {
        r.set_aggregate_json(self.aggregate_json.as_str());
    }

    pub fn decode(r: set_aggregate_archive_response::Reader<'_>) -> Result<Self> {
        Ok(SetAggregateArchiveResponse {
            aggregate_json: text(r.get_aggregate_json())?,
        })
    }
}

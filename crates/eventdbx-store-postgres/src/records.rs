//! The stored forms (`eventdbx_store::record`, shared with the embedded engine, so stored byte
//! counts agree between engines) and what an `aggregates` row keeps of a record besides its JSON
//! text: the columns the list orders and filters read.

pub(crate) use eventdbx_store::record::{AggregateRecord, IdempotencyRecord, SnapshotRecord};
use eventdbx_store::Result;

use crate::json_error;

/// What an `aggregates` row stores of a record.
#[derive(Debug, Clone)]
pub(crate) struct RecordColumns {
    pub(crate) version: i64,
    pub(crate) archived: bool,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
    pub(crate) text: String,
}

/// The record's columns besides the key and revision: version, archived, created and updated
/// sort values (epoch ms + 1, 0 when absent) and the JSON text.
pub(crate) fn columns(record: &AggregateRecord) -> Result<RecordColumns> {
    Ok(RecordColumns {
        version: crate::signed(record.version),
        archived: record.archived,
        created_ms: crate::signed(record.created_sort_value()),
        updated_ms: crate::signed(record.updated_sort_value()),
        text: serde_json::to_string(record).map_err(json_error)?,
    })
}

/// Decodes a stored JSON text.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(json_error)
}

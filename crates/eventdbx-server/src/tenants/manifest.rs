//! The schema-version manifest of one tenant (`docs/server.md`, "Schema versions"): published
//! versions of the tenant's schema set, which one is active, and the audit log of publish and
//! activate actions.
//!
//! Stored at `<data_dir>/tenants/<tenant>/schemas/manifest.json`:
//!
//! ```json
//! {"manifest_version": 1, "active_version": "v20260324T101530123Z",
//!  "versions": [{"id": "v20260324T101530123Z",
//!                "file": "schemas/versions/v20260324T101530123Z.json",
//!                "created_at": "2026-03-24T10:15:30.123000000Z", "author": "ops",
//!                "reason": "first", "checksum": "sha256:…", "labels": ["prod"]}],
//!  "audit_log": [{"timestamp": "2026-03-24T10:15:30.123000000Z", "actor": "ops",
//!                 "action": "publish", "version": "v20260324T101530123Z", "reason": "first"},
//!                {"timestamp": "…", "actor": "ops", "action": "activate",
//!                 "version": "v20260324T101530123Z", "reason": "first"}]}
//! ```

use serde::{Deserialize, Serialize};

/// The manifest format this server writes.
pub const MANIFEST_VERSION: u32 = 1;

/// A tenant's published schema versions and their audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of the manifest; always [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// The version installed as the tenant's schema set by the last activation (`null` before
    /// any).
    #[serde(default)]
    pub active_version: Option<String>,
    /// Published versions, oldest first; the last one is the latest.
    #[serde(default)]
    pub versions: Vec<SchemaVersion>,
    /// Every publish and activate action, oldest first.
    #[serde(default)]
    pub audit_log: Vec<AuditEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            active_version: None,
            versions: Vec::new(),
            audit_log: Vec::new(),
        }
    }
}

impl Manifest {
    /// The latest published version, if any.
    pub fn latest(&self) -> Option<&SchemaVersion> {
        self.versions.last()
    }

    /// Whether a version with this id was published.
    pub fn contains(&self, id: &str) -> bool {
        self.versions.iter().any(|version| version.id == id)
    }
}

/// One published version of a tenant's schema set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// `v` + UTC publish time as `%Y%m%dT%H%M%S%3fZ`, with `-01`… on collision.
    pub id: String,
    /// The version's content relative to the tenant directory: `schemas/versions/<id>.json`.
    pub file: String,
    /// RFC 3339 publish time.
    pub created_at: String,
    /// Who published it (the request's `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Why it was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The latest version when this one was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `sha256:<hex>` of the content (pretty-printed JSON).
    pub checksum: String,
    /// Trimmed, non-empty labels given at publish time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    /// A version was published.
    Publish,
    /// A version became the active schema set.
    Activate,
    /// An earlier version was re-activated (written by tools; never by `tenantSchemaPublish`).
    Rollback,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 time of the action.
    pub timestamp: String,
    /// Who acted (the request's `actor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The action.
    pub action: AuditAction,
    /// The version acted on.
    pub version: String,
    /// Why (the request's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extra detail, e.g. `requested version already active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

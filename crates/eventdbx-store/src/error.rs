//! The store's error ([`StoreError`], one stable wire code per kind, `docs/errors.md`) and what
//! `/health` reports of the engine ([`StorageHealth`]).

use std::borrow::Cow;
use std::sync::Arc;

use eventdbx_core::CoreError;

/// A storage failure, or a domain rule the write broke.
///
/// `Clone` because one group commit answers every writer in it with the same result; the
/// engine's error is therefore shared behind an `Arc` (and [`std::error::Error::source`] hands
/// out the engine's error itself, so callers can downcast it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// A domain rule (not found, archived, exists, version conflict, quota, validation, ...).
    Domain(CoreError),
    /// The engine failed (I/O, corruption, a closed database). The text says what the store
    /// was doing and repeats the engine's message, since the server sends only the text.
    Storage {
        /// What the store was doing.
        context: Cow<'static, str>,
        /// The engine's error, when one caused this.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The engine could not be reached and certainly did nothing: the connection was lost or
    /// refused before the request's commit was sent, the database is shutting down or starting,
    /// or no connection could be had. The same request can be sent again as it is (a client's
    /// retry is safe even for a write). A failure that may have happened after a commit was sent
    /// is never this: its outcome is unknown, and it is [`StoreError::Storage`], saying so
    /// (`docs/errors.md`, `unavailable`).
    Unavailable {
        /// What the store was doing.
        context: Cow<'static, str>,
        /// The engine's error, when one caused this.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The store's file is damaged: a page that fails its checksum, a structure the engine
    /// cannot read, or an engine panic on it. Refused, never served; once seen, every later
    /// request of the same store is refused too (`docs/storage.md`, "Damaged files and
    /// recovery").
    Damaged {
        /// The database file.
        file: String,
        /// What was found.
        detail: String,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Domain(err) => err.fmt(f),
            StoreError::Storage { context, source } => match source {
                Some(source) if context.is_empty() => write!(f, "storage error: {source}"),
                Some(source) => write!(f, "storage error: {context}: {source}"),
                None => write!(f, "storage error: {context}"),
            },
            StoreError::Unavailable { context, source } => match source {
                Some(source) => write!(f, "unavailable: {context}: {source}"),
                None => write!(f, "unavailable: {context}"),
            },
            StoreError::Damaged { file, detail } => write!(
                f,
                "the store file {file} is damaged ({detail}); `dbx store check` reports the \
                 damage and `dbx store recover` restores the last good state (docs/storage.md, \
                 \"Damaged files and recovery\")"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent, as the domain error's own text is this error's text.
            StoreError::Domain(err) => err.source(),
            StoreError::Storage { source, .. } | StoreError::Unavailable { source, .. } => source
                .as_deref()
                .map(|err| err as &(dyn std::error::Error + 'static)),
            StoreError::Damaged { .. } => None,
        }
    }
}

impl From<CoreError> for StoreError {
    fn from(err: CoreError) -> Self {
        StoreError::Domain(err)
    }
}

impl StoreError {
    /// The stable wire code (`storage` for engine failures, `unavailable` for an engine that
    /// could not be reached and did nothing, `integrity_violation` for a damaged file).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Domain(err) => err.code(),
            StoreError::Storage { .. } => "storage",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Damaged { .. } => "integrity_violation",
        }
    }

    /// Whether this is [`StoreError::Damaged`]: the file needs `dbx store check` / `recover`.
    pub fn is_damaged(&self) -> bool {
        matches!(self, StoreError::Damaged { .. })
    }

    /// An engine failure caused by `source` while the store was doing `context`.
    pub fn storage(
        context: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Storage {
            context: context.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// The engine could not be reached while the store was doing `context`, and did nothing
    /// ([`StoreError::Unavailable`]).
    pub fn unavailable(
        context: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// Whether this is [`StoreError::Unavailable`]: nothing was done, the request can be sent
    /// again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// An engine failure with no underlying error (a closed store, a broken invariant).
    pub fn engine(context: impl Into<Cow<'static, str>>) -> Self {
        StoreError::Storage {
            context: context.into(),
            source: None,
        }
    }
}

/// Whether the engine can write: what `/health` reports (`docs/storage.md`, "When the disk
/// fails").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StorageHealth {
    /// Writes commit.
    #[default]
    Ok,
    /// Writes fail since an I/O error (a full disk, a failing device); the engine retries at
    /// each write and is `Ok` again after the first commit that succeeds. Also a store fenced
    /// for a damaged file, which stays degraded until it is recovered.
    Degraded {
        /// The latest error's text.
        cause: String,
    },
}

impl StorageHealth {
    /// `ok` or `degraded`, as `/health` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            StorageHealth::Ok => "ok",
            StorageHealth::Degraded { .. } => "degraded",
        }
    }
}

//! The fence between the engine and a damaged file: every call into redb made by the open path
//! and by the [`crate::EventStore`] methods runs inside [`EngineGuard::run`], which turns a panic
//! of the engine (redb trusts the bytes of a page it has not checksummed, and asserts on them)
//! and a corruption error into [`StoreError::Damaged`], and marks the store so every later
//! request is refused the same way instead of being served from a file known to be damaged.
//! `docs/storage.md`, "Damaged files and recovery", says why and what the operator does next.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, Once};

use crate::{Result, StoreError};

thread_local! {
    /// Whether this thread is inside [`catch_engine_panic`]: its panics are reported as errors,
    /// so the hook keeps them off stderr (a caught panic is not a crash).
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
    /// The message and location of the last engine panic on this thread, for the error text.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs, once per process, a panic hook that records engine panics instead of printing them
/// and hands every other panic to the hook that was there before.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_ENGINE.with(Cell::get) {
                let place = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let text = format!("{}{place}", payload_text(info.payload()));
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with no message".to_owned()
    }
}

/// Runs `f`, returning the panic's message and location if it panicked.
pub(crate) fn catch_engine_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_hook();
    let outer = IN_ENGINE.with(|inside| inside.replace(true));
    // Unwind safety: after a panic the engine is never used again for anything but dropping
    // (the guard refuses every later call), so no broken invariant can be observed.
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    IN_ENGINE.with(|inside| inside.set(outer));
    result.map_err(|payload| {
        LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()))
    })
}

/// Whether `err` says the engine found the file inconsistent (a checksum, a page type, a
/// structure), as opposed to an I/O failure or a domain rule.
pub(crate) fn is_corruption(err: &StoreError) -> bool {
    let StoreError::Storage {
        source: Some(source),
        ..
    } = err
    else {
        return false;
    };
    let source: &(dyn std::error::Error + 'static) = source.as_ref();
    if let Some(err) = source.downcast_ref::<redb::Error>() {
        return matches!(err, redb::Error::Corrupted(_) | redb::Error::RepairAborted);
    }
    if let Some(err) = source.downcast_ref::<redb::DatabaseError>() {
        return matches!(
            err,
            redb::DatabaseError::RepairAborted
                | redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
        );
    }
    if let Some(err) = source.downcast_ref::<redb::StorageError>() {
        return matches!(err, redb::StorageError::Corrupted(_));
    }
    false
}

/// One store's fence: its file name and, once damage was seen, what it was.
#[derive(Debug)]
pub(crate) struct EngineGuard {
    file: String,
    damage: Mutex<Option<String>>,
}

impl EngineGuard {
    pub(crate) fn new(file: String) -> Self {
        EngineGuard {
            file,
            damage: Mutex::new(None),
        }
    }

    /// The refusal for this store's file.
    pub(crate) fn damaged(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Damaged {
            file: self.file.clone(),
            detail: detail.into(),
        }
    }

    /// What damage was seen so far, if any.
    pub(crate) fn damage(&self) -> Option<String> {
        self.damage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn mark(&self, detail: &str) {
        let mut damage = self
            .damage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        damage.get_or_insert_with(|| detail.to_owned());
    }

    /// Runs one engine call: refused at once when the store was found damaged before; a panic
    /// or a corruption error becomes [`StoreError::Damaged`] and marks the store.
    pub(crate) fn run<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(seen) = self.damage() {
            return Err(self.damaged(format!("refused since an earlier request found: {seen}")));
        }
        match catch_engine_panic(f) {
            Ok(result) => self.checked(result),
            Err(panic) => {
                let detail = format!("the engine panicked reading it: {panic}");
                self.mark(&detail);
                Err(self.damaged(detail))
            }
        }
    }

    /// The outcome of an engine call made elsewhere (a write answered by its round's leader):
    /// a corruption error becomes [`StoreError::Damaged`] and marks the store, as in
    /// [`EngineGuard::run`].
    pub(crate) fn checked<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(err) if is_corruption(&err) => {
                let detail = err.to_string();
                self.mark(&detail);
                Err(self.damaged(detail))
            }
            result => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_damaged_error_and_refuses_every_later_call() {
        let guard = EngineGuard::new("events.redb".into());
        let err = guard
            .run::<()>(|| panic!("Invalid page type byte"))
            .expect_err("a panic is an error");
        assert!(err.is_damaged());
        let text = err.to_string();
        assert!(text.contains("events.redb"), "{text}");
        assert!(text.contains("Invalid page type byte"), "{text}");
        assert!(text.contains("dbx store recover"), "{text}");
        let later = guard.run(|| Ok(1)).expect_err("refused after damage");
        assert!(later.is_damaged());
        assert!(later.to_string().contains("Invalid page type byte"));
    }

    #[test]
    fn a_corruption_error_marks_the_store_and_other_errors_do_not() {
        let guard = EngineGuard::new("f".into());
        let io = StoreError::storage("writing", std::io::Error::other("disk full"));
        assert!(!guard.run::<()>(|| Err(io)).expect_err("io").is_damaged());
        assert_eq!(guard.run(|| Ok(2)).expect("still serving"), 2);
        let corrupt = StoreError::storage("", redb::Error::Corrupted("checksum mismatch".into()));
        assert!(guard
            .run::<()>(|| Err(corrupt))
            .expect_err("c")
            .is_damaged());
        assert!(guard.run(|| Ok(3)).expect_err("refused").is_damaged());
    }
}

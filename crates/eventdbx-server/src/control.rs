//! The control documents a server shares with the other servers of its database
//! (`docs/storage.md`, "Several servers"): every `[storage] sync_interval_ms` one query reads
//! the revision of every document, and each document that changed since the last poll is
//! reloaded by its owner (the token authority, the tenants, the plugin registry). A change made
//! through any server is so in force on every other within one interval (plus the reload).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventdbx_store::documents::ControlDocuments;
use tokio_util::task::TaskTracker;

use crate::auth::Authority;
use crate::plugins::Plugins;
use crate::tenants::Tenants;

/// What one server polls, and the revisions it has in force.
#[derive(Debug)]
pub(crate) struct DocumentPoll {
    documents: Arc<dyn ControlDocuments>,
    auth: Arc<Authority>,
    tenants: Arc<Tenants>,
    plugins: Arc<Plugins>,
    /// The revision of every document as last reloaded.
    seen: BTreeMap<String, u64>,
}

impl DocumentPoll {
    /// A poll that takes `seen` (read before the owners loaded the documents) as in force.
    pub(crate) fn new(
        documents: Arc<dyn ControlDocuments>,
        seen: BTreeMap<String, u64>,
        auth: Arc<Authority>,
        tenants: Arc<Tenants>,
        plugins: Arc<Plugins>,
    ) -> Self {
        DocumentPoll {
            documents,
            auth,
            tenants,
            plugins,
            seen,
        }
    }

    /// Reads the revisions and reloads every document that changed; returns their names. A
    /// document whose reload fails stays unseen, so the next poll tries again.
    pub(crate) fn poll(&mut self) -> Vec<String> {
        let revisions = match self.documents.revisions() {
            Ok(revisions) => revisions,
            Err(err) => {
                tracing::warn!(error = %err, "cannot poll the shared control documents");
                return Vec::new();
            }
        };
        let mut reloaded = Vec::new();
        for (name, revision) in revisions {
            if self.seen.get(&name) == Some(&revision) {
                continue;
            }
            match self.reload(&name) {
                Ok(()) => {
                    self.seen.insert(name.clone(), revision);
                    reloaded.push(name);
                }
                Err(err) => {
                    tracing::warn!(document = %name, error = %err, "shared control document not reloaded");
                }
            }
        }
        reloaded
    }

    fn reload(&self, name: &str) -> Result<(), String> {
        self.auth
            .document_changed(name)
            .map_err(|e| e.to_string())?;
        self.tenants
            .document_changed(name)
            .map_err(|e| e.to_string())?;
        self.plugins
            .document_changed(name)
            .map_err(|e| e.to_string())
    }
}

/// Polls every `every` until the returned task is aborted. Each poll runs as a blocking call of
/// `tasks`, which an abort cannot cut short: the server waits for it there.
pub(crate) fn spawn(
    mut poll: DocumentPoll,
    every: Duration,
    tasks: TaskTracker,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // The store answers on its own runtime; the poll blocks this thread meanwhile.
            let polled = tasks
                .spawn_blocking(move || {
                    let reloaded = poll.poll();
                    (poll, reloaded)
                })
                .await;
            let Ok((returned, reloaded)) = polled else {
                return;
            };
            poll = returned;
            if !reloaded.is_empty() {
                tracing::debug!(documents = ?reloaded, "shared control documents reloaded");
            }
        }
    })
}

//! Plugins (`docs/plugins.md`): the registry cached in memory, routing of a write's publish
//! targets, and one long-lived delivery worker per enabled plugin draining the durable queue
//! the store fills in each write's commit.
//!
//! Workers never poll: a write wakes the workers of its routes through a [`Notify`]; a worker
//! whose head job waits for its backoff sleeps until then (or until woken). The plugins file is
//! checked for changes once a second (a `stat`, never a read unless it changed) and on every
//! admin request; writes only read the in-memory copy. On a shared database the definitions are
//! a control document instead, reloaded when the server's poll of the documents sees it change
//! ([`Plugins::document_changed`]).

pub mod endpoint;
pub mod kinds;
pub mod process;
pub mod registry;
pub mod webhook;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventdbx_core::plugin::{
    resolve_targets, JobStatus, PublishTarget, RetryPolicy, RoutablePlugin, PROCESSING_DEADLINE_MS,
};
use eventdbx_core::schema::AggregateSchema;
use eventdbx_core::CoreError;
use eventdbx_store::documents::ControlDocuments;
use eventdbx_store::{Claim, JobQueue, JobRoute};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use kinds::Sink;
use registry::PluginDef;

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Jobs delivered.
    pub delivered: AtomicU64,
    /// Failed attempts that will be retried.
    pub retried: AtomicU64,
    /// Jobs dead-lettered.
    pub dead: AtomicU64,
}

#[derive(Debug)]
struct Worker {
    def: PluginDef,
    stop: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Loaded {
    defs: Arc<Vec<PluginDef>>,
    routable: Arc<Vec<RoutablePlugin>>,
    modified: Option<SystemTime>,
    /// The shared document's revision (`None`: absent, or the file is used).
    revision: Option<u64>,
}

/// The plugin registry and its workers.
#[derive(Debug)]
pub struct Plugins {
    path: PathBuf,
    /// The shared definitions, on a shared database.
    documents: Option<Arc<dyn ControlDocuments>>,
    plugins_dir: PathBuf,
    policy: RetryPolicy,
    /// How long a claimed job stays this server's before another may deliver it.
    lease_ms: u64,
    loaded: RwLock<Loaded>,
    /// One per plugin id, kept across worker restarts so no wake-up is lost.
    notifies: Mutex<HashMap<String, Arc<Notify>>>,
    workers: Mutex<HashMap<String, Worker>>,
    running: Mutex<Option<(tokio::runtime::Handle, Arc<dyn JobQueue>)>>,
    /// Every task that holds the queue (workers, watcher, pruner) and every blocking call they
    /// make, so shutdown can wait until none of them holds the store any more.
    tasks: TaskTracker,
    /// How to cut the async tasks short at shutdown (finished ones are dropped as new start).
    aborts: Mutex<Vec<AbortHandle>>,
    /// Delivery counters.
    pub metrics: Arc<PluginMetrics>,
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Plugins {
    /// Loads `<data_dir>/plugins.json` (absent = no plugins).
    pub fn open(data_dir: &Path, policy: RetryPolicy) -> Result<Self, CoreError> {
        Self::open_in(data_dir, policy, None)
    }

    /// [`Plugins::open`] for a server sharing its database with others: the definitions are
    /// the shared control document's (`docs/storage.md`, "Several servers"); process plugin
    /// binaries stay in `<data_dir>/plugins`.
    pub fn open_shared(
        data_dir: &Path,
        policy: RetryPolicy,
        documents: Arc<dyn ControlDocuments>,
    ) -> Result<Self, CoreError> {
        Self::open_in(data_dir, policy, Some(documents))
    }

    fn open_in(
        data_dir: &Path,
        policy: RetryPolicy,
        documents: Option<Arc<dyn ControlDocuments>>,
    ) -> Result<Self, CoreError> {
        let path = registry::path(data_dir);
        let (defs, modified, revision) = match &documents {
            Some(documents) => {
                let (defs, revision) = registry::load_shared(documents.as_ref())?;
                (defs, None, revision)
            }
            None => {
                let (defs, modified) = registry::load(&path)?;
                (defs, modified, None)
            }
        };
        Ok(Plugins {
            path,
            documents,
            plugins_dir: data_dir.join("plugins"),
            policy,
            lease_ms: PROCESSING_DEADLINE_MS,
            loaded: RwLock::new(Loaded {
                routable: Arc::new(defs.iter().map(PluginDef::routable).collect()),
                defs: Arc::new(defs),
                modified,
                revision,
            }),
            notifies: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            running: Mutex::new(None),
            tasks: TaskTracker::new(),
            aborts: Mutex::new(Vec::new()),
            metrics: Arc::new(PluginMetrics::default()),
        })
    }

    /// The definitions in force.
    pub fn defs(&self) -> Arc<Vec<PluginDef>> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|p| p.into_inner()).defs)
    }

    /// Sets the lease of a claimed job (`[plugin_queue] lease_ms`; at least 1 ms).
    pub fn with_lease(mut self, lease_ms: u64) -> Self {
        self.lease_ms = lease_ms.max(1);
        self
    }

    /// The retry rules.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Routes a write's publish targets (`None` or empty: broadcast); errors are the spec's
    /// `invalid_schema` messages, raised before anything is written.
    pub fn routes(
        &self,
        targets: Option<&[PublishTarget]>,
        schema: Option<&AggregateSchema>,
    ) -> Result<Vec<JobRoute>, CoreError> {
        let routable = Arc::clone(
            &self
                .loaded
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .routable,
        );
        let routes = resolve_targets(targets, &routable)?;
        let schema = schema.and_then(|s| serde_json::to_value(s).ok());
        Ok(routes
            .into_iter()
            .map(|r| JobRoute {
                plugin: r.plugin,
                mode: r.mode,
                priority: r.priority,
                schema: if r.mode.has_schema() {
                    schema.clone()
                } else {
                    None
                },
            })
            .collect())
    }

    fn notify(&self, plugin: &str) -> Arc<Notify> {
        Arc::clone(
            lock(&self.notifies)
                .entry(plugin.to_owned())
                .or_insert_with(|| Arc::new(Notify::new())),
        )
    }

    /// Wakes the workers of `plugins` (after a commit queued jobs for them).
    pub fn wake<'a>(&self, plugins: impl IntoIterator<Item = &'a str>) {
        for plugin in plugins {
            self.notify(plugin).notify_one();
        }
    }

    /// Re-reads the plugins file when its modification time changed (the shared document when
    /// its revision did); returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, CoreError> {
        if let Some(documents) = &self.documents {
            let (defs, revision) = registry::load_shared(documents.as_ref())?;
            if revision
                == self
                    .loaded
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .revision
            {
                return Ok(false);
            }
            self.install(defs, None, revision);
            return Ok(true);
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified
            == self
                .loaded
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .modified
        {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Re-reads the plugins file (or the shared document) and restarts the workers whose
    /// definition changed.
    pub fn reload(&self) -> Result<(), CoreError> {
        if let Some(documents) = &self.documents {
            let (defs, revision) = registry::load_shared(documents.as_ref())?;
            self.install(defs, None, revision);
            return Ok(());
        }
        let (defs, modified) = registry::load(&self.path)?;
        self.install(defs, modified, None);
        Ok(())
    }

    /// Reloads the definitions when the control document `name` is theirs (another server
    /// changed it); other documents are ignored.
    pub fn document_changed(&self, name: &str) -> Result<(), CoreError> {
        if self.documents.is_some() && name == registry::PLUGINS_DOCUMENT {
            self.reload_if_changed()?;
        }
        Ok(())
    }

    /// Saves `defs` to the plugins file and puts them in force.
    ///
    /// On a shared database the definitions are saved only if no other server changed them
    /// since they were loaded; otherwise nothing is saved, the other server's definitions are
    /// put in force, and the change is refused (`io`): made again, it applies to them.
    pub fn replace(&self, defs: Vec<PluginDef>) -> Result<(), CoreError> {
        for def in &defs {
            def.validate()?;
        }
        if let Some(documents) = &self.documents {
            let loaded = self
                .loaded
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .revision;
            let Some(revision) = registry::save_shared(documents.as_ref(), &defs, loaded)? else {
                self.reload()?;
                return Err(CoreError::Io(
                    "the plugin definitions were changed through another server meanwhile; \
                     nothing was changed (retry)"
                        .into(),
                ));
            };
            self.install(defs, None, Some(revision));
            return Ok(());
        }
        registry::save(&self.path, &defs)?;
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        self.install(defs, modified, None);
        Ok(())
    }

    fn install(&self, defs: Vec<PluginDef>, modified: Option<SystemTime>, revision: Option<u64>) {
        {
            let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            loaded.routable = Arc::new(defs.iter().map(PluginDef::routable).collect());
            loaded.defs = Arc::new(defs);
            loaded.modified = modified;
            loaded.revision = revision;
        }
        self.sync_workers();
    }

    /// Starts one worker per enabled plugin, after putting jobs left `processing` by a previous
    /// run back to pending; also the file watcher and the pruner of done jobs. Call inside the
    /// runtime; [`Plugins::shutdown`] ends them all.
    pub fn start(self: &Arc<Self>, store: Arc<dyn JobQueue>, prune: crate::config::PruneConfig) {
        match store.recover_jobs(now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                jobs = n,
                "plugin jobs interrupted by the last stop requeued"
            ),
            Err(err) => tracing::warn!(error = %err, "could not requeue interrupted plugin jobs"),
        }
        *lock(&self.running) = Some((tokio::runtime::Handle::current(), Arc::clone(&store)));
        self.sync_workers();
        // On a shared database the server's poll of the control documents reloads them.
        let watcher = self.documents.is_none().then(|| {
            let plugins = Arc::clone(self);
            self.tasks.spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs(1));
                loop {
                    ticks.tick().await;
                    if let Err(err) = plugins.reload_if_changed() {
                        tracing::warn!(error = %err, "plugins file not reloaded");
                    }
                }
            })
        });
        let tasks = self.tasks.clone();
        let pruner = self.tasks.spawn(async move {
            let every = Duration::from_secs(prune.interval_secs.max(1));
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let store = Arc::clone(&store);
                let (ttl, max) = (prune.done_ttl_secs, prune.max_done_jobs);
                let pruned = tasks
                    .spawn_blocking(move || {
                        store.prune_jobs(now_ms().saturating_sub(ttl.saturating_mul(1000)), max)
                    })
                    .await;
                match pruned {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(jobs = n, "done plugin jobs pruned"),
                    Ok(Err(err)) => tracing::warn!(error = %err, "plugin queue prune failed"),
                    _ => {}
                }
            }
        });
        if let Some(watcher) = watcher {
            self.track(watcher.abort_handle());
        }
        self.track(pruner.abort_handle());
    }

    fn track(&self, task: AbortHandle) {
        let mut aborts = lock(&self.aborts);
        aborts.retain(|task| !task.is_finished());
        aborts.push(task);
    }

    /// Stops every worker, the watcher and the pruner (at shutdown) and waits until none of
    /// them, nor any blocking call of theirs, still runs: after this nothing here holds the
    /// store. A delivery cut short leaves its job `processing`; the next start requeues it.
    pub async fn shutdown(&self) {
        {
            let mut running = lock(&self.running);
            *running = None;
            lock(&self.workers).clear();
            for task in lock(&self.aborts).drain(..) {
                task.abort();
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Makes the running workers match the enabled definitions.
    fn sync_workers(&self) {
        // Held throughout, so a shutdown either sees the workers started here or makes this
        // start none.
        let running = lock(&self.running);
        let Some((handle, store)) = running.as_ref() else {
            return;
        };
        let defs = self.defs();
        let mut workers = lock(&self.workers);
        let wanted: HashMap<String, &PluginDef> = defs
            .iter()
            .filter(|d| d.enabled)
            .map(|d| (d.id(), d))
            .collect();
        let stale: Vec<String> = workers
            .iter()
            .filter(|(id, w)| wanted.get(*id).is_none_or(|d| **d != w.def))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(worker) = workers.remove(&id) {
                worker.stop.store(true, Ordering::Release);
                self.notify(&id).notify_one();
            }
        }
        for (id, def) in wanted {
            if workers.contains_key(&id) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let context = WorkerContext {
                def: def.clone(),
                store: Arc::clone(store),
                notify: self.notify(&id),
                stop: Arc::clone(&stop),
                policy: self.policy,
                lease_ms: self.lease_ms,
                metrics: Arc::clone(&self.metrics),
                plugins_dir: self.plugins_dir.clone(),
                tasks: self.tasks.clone(),
            };
            let task = self.tasks.spawn_on(context.run(), handle);
            self.track(task.abort_handle());
            workers.insert(
                id,
                Worker {
                    def: def.clone(),
                    stop,
                },
            );
        }
    }

    /// Delivers a synthetic job to a plugin once, outside the queue (`dbx plugin test`).
    pub async fn test(&self, def: &PluginDef) -> Result<(), String> {
        let mut sink = Sink::new(def, &self.plugins_dir).map_err(|e| e.to_string())?;
        let now = now_ms();
        let job = eventdbx_core::plugin::PluginJob {
            id: 0,
            plugin: def.id(),
            tenant: "default".into(),
            mode: def.payload_mode,
            priority: eventdbx_core::plugin::Priority::Normal,
            status: JobStatus::Processing,
            attempts: 1,
            next_retry_at_ms: now,
            deadline_ms: None,
            last_error: None,
            created_at_ms: now,
            updated_at_ms: now,
            event_id: 0,
            action: eventdbx_core::plugin::JobAction::Event,
            event: None,
            aggregate_type: "plugin_test".into(),
            aggregate_id: "test".into(),
            aggregate: serde_json::json!({"aggregate_type": "plugin_test",
                "aggregate_id": "test", "version": 0, "state": {}}),
            schema: None,
        };
        sink.deliver(&job).await
    }
}

struct WorkerContext {
    def: PluginDef,
    store: Arc<dyn JobQueue>,
    notify: Arc<Notify>,
    stop: Arc<AtomicBool>,
    policy: RetryPolicy,
    lease_ms: u64,
    metrics: Arc<PluginMetrics>,
    plugins_dir: PathBuf,
    tasks: TaskTracker,
}

impl WorkerContext {
    async fn run(self) {
        let id = self.def.id();
        // A sink that cannot be built (say, a process binary not installed yet) fails each job
        // with the reason, so jobs follow the retry schedule and the sink is tried again.
        let mut sink: Option<Sink> = None;
        tracing::debug!(plugin = %id, label = %self.def.label(), "plugin worker started");
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let claim = {
                let (store, id, policy) = (Arc::clone(&self.store), id.clone(), self.policy);
                let lease_ms = self.lease_ms;
                self.tasks
                    .spawn_blocking(move || store.claim_job(&id, now_ms(), lease_ms, policy))
                    .await
            };
            let wait_until = match claim {
                Ok(Ok(Claim::Job(job))) => {
                    let mut not_ready = None;
                    if sink.is_none() {
                        match Sink::new(&self.def, &self.plugins_dir) {
                            Ok(built) => sink = Some(built),
                            Err(err) => {
                                tracing::warn!(plugin = %id, error = %err, "plugin cannot deliver");
                                not_ready = Some(err.to_string());
                            }
                        }
                    }
                    let result = match (sink.as_mut(), not_ready) {
                        (Some(sink), _) => sink.deliver(&job).await,
                        (None, reason) => Err(reason.unwrap_or_else(|| "plugin not ready".into())),
                    };
                    let (store, policy) = (Arc::clone(&self.store), self.policy);
                    let job_id = job.id;
                    let recorded = self
                        .tasks
                        .spawn_blocking(move || match result {
                            Ok(()) => store
                                .complete_job(job_id, now_ms())
                                .map(|()| JobStatus::Done),
                            Err(error) => store.fail_job(job_id, &error, now_ms(), policy),
                        })
                        .await;
                    match recorded {
                        Ok(Ok(JobStatus::Done)) => {
                            self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(JobStatus::Dead)) => {
                            self.metrics.dead.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(plugin = %id, job = job_id, event_id = job.event_id,
                                "plugin job dead-lettered");
                        }
                        Ok(Ok(_)) => {
                            self.metrics.retried.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(plugin = %id, error = %err, "plugin job not recorded");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(_) => return,
                    }
                    if self.stop.load(Ordering::Acquire) {
                        // A successor may be waiting for this job's lease.
                        self.notify.notify_one();
                    }
                    continue;
                }
                Ok(Ok(Claim::WaitUntil(at) | Claim::Busy(at))) => Some(at),
                Ok(Ok(Claim::Empty)) => None,
                Ok(Err(err)) => {
                    tracing::warn!(plugin = %id, error = %err, "plugin queue claim failed");
                    Some(now_ms() + 1000)
                }
                Err(_) => return,
            };
            match wait_until {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}

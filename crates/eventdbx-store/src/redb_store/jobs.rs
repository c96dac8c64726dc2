//! The durable plugin queue (`docs/plugins.md`, "Delivery") in the same database as the events, so
//! a write's jobs commit with it.
//!
//! Tables: [`JOBS`] holds every job record by id; [`JOB_QUEUE`] orders the pending and
//! processing jobs of each plugin by (priority rank, id); [`JOB_DONE`] orders delivered jobs by
//! completion time for pruning; [`JOB_DEAD`] lists dead-lettered jobs. Ids come from the
//! [`JOB_SEQ`] counter in the meta table, incremented inside the commit, so they increase in
//! commit order.

use std::sync::{Arc, Mutex};

use eventdbx_core::plugin::{JobStatus, PluginJob, RetryPolicy};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::tables::{json_error, storage, Tables};
use super::RedbStore;
use crate::{Claim, JobCounts, JobFilter, JobQueue, Result, StoreError};

/// job id → job record (JSON).
pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("plugin_jobs");
/// (plugin, priority rank, job id) → 1 while processing, else 0: pending and processing jobs in
/// delivery order.
pub(crate) const JOB_QUEUE: TableDefinition<(&str, u8, u64), u8> =
    TableDefinition::new("plugin_job_queue");
/// (done at ms, job id) → (): delivered jobs, oldest first.
pub(crate) const JOB_DONE: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("plugin_job_done");
/// job id → (): dead-lettered jobs.
pub(crate) const JOB_DEAD: TableDefinition<u64, ()> = TableDefinition::new("plugin_job_dead");
/// The meta key of the last job id.
const JOB_SEQ: &str = "job_seq";

pub(crate) type QueueKey = (&'static str, u8, u64);

/// Queues `jobs` (their ids are assigned here) in the current transaction.
pub(crate) fn queue_jobs(tables: &mut Tables<'_>, jobs: &[PluginJob]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut seq = tables
        .meta()?
        .get(JOB_SEQ)
        .map_err(storage)?
        .map_or(0, |v| v.value());
    for job in jobs {
        seq += 1;
        let mut job = job.clone();
        job.id = seq;
        put_job(tables, &job)?;
        tables
            .job_queue()?
            .insert((job.plugin.as_str(), job.priority.rank(), seq), 0)
            .map_err(storage)?;
    }
    tables.meta()?.insert(JOB_SEQ, seq).map_err(storage)?;
    Ok(())
}

fn put_job(tables: &mut Tables<'_>, job: &PluginJob) -> Result<()> {
    let bytes = serde_json::to_vec(job).map_err(json_error)?;
    tables
        .jobs()?
        .insert(job.id, bytes.as_slice())
        .map_err(storage)?;
    Ok(())
}

fn set_processing(tables: &mut Tables<'_>, job: &PluginJob, processing: bool) -> Result<()> {
    tables
        .job_queue()?
        .insert(
            (job.plugin.as_str(), job.priority.rank(), job.id),
            u8::from(processing),
        )
        .map_err(storage)?;
    Ok(())
}

fn get_job(tables: &mut Tables<'_>, id: u64) -> Result<Option<PluginJob>> {
    match tables.jobs()?.get(id).map_err(storage)? {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(json_error),
        None => Ok(None),
    }
}

/// Records a failed attempt of a processing job; see [`JobQueue::fail_job`].
fn fail(
    tables: &mut Tables<'_>,
    mut job: PluginJob,
    error: &str,
    now_ms: u64,
    policy: RetryPolicy,
) -> Result<JobStatus> {
    job.last_error = Some(error.to_owned());
    job.deadline_ms = None;
    job.updated_at_ms = now_ms;
    if policy.exhausted(job.attempts) {
        job.status = JobStatus::Dead;
        tables
            .job_queue()?
            .remove((job.plugin.as_str(), job.priority.rank(), job.id))
            .map_err(storage)?;
        tables.job_dead()?.insert(job.id, ()).map_err(storage)?;
    } else {
        job.status = JobStatus::Pending;
        job.next_retry_at_ms = now_ms + policy.backoff_ms(job.attempts, job.id);
        set_processing(tables, &job, false)?;
    }
    put_job(tables, &job)?;
    Ok(job.status)
}

fn matches(job: &PluginJob, filter: &JobFilter) -> bool {
    filter
        .plugin
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case(&job.plugin))
        && filter.event_id.is_none_or(|id| id == job.event_id)
}

impl RedbStore {
    /// Runs `body` inside a group commit and returns what it produced.
    fn queue_commit<T: Send + 'static>(
        &self,
        body: impl for<'t> Fn(&mut Tables<'t>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let out: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&out);
        self.commit(
            0,
            Box::new(move |tables| {
                let value = body(tables)?;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                Ok(())
            }),
        )?;
        let value = out.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| StoreError::engine("the queue commit produced nothing"))
    }
}

impl JobQueue for RedbStore {
    fn claim_job(
        &self,
        plugin: &str,
        now_ms: u64,
        lease_ms: u64,
        policy: RetryPolicy,
    ) -> Result<Claim> {
        let plugin = plugin.to_owned();
        self.queue_commit(move |tables| loop {
            let head = {
                let queue = tables.job_queue()?;
                let low = (plugin.as_str(), 0u8, 0u64);
                let high = (plugin.as_str(), u8::MAX, u64::MAX);
                let mut range = queue.range(low..=high).map_err(storage)?;
                // Bound before the block ends: the row borrows `queue`, which the block owns.
                let head = match range.next() {
                    Some(item) => Some(item.map_err(storage)?.0.value().2),
                    None => None,
                };
                head
            };
            let Some(id) = head else {
                return Ok(Claim::Empty);
            };
            let Some(mut job) = get_job(tables, id)? else {
                // An index entry without a record: drop it and look again.
                let rank_entries: Vec<u8> = (0..=2).collect();
                for rank in rank_entries {
                    tables
                        .job_queue()?
                        .remove((plugin.as_str(), rank, id))
                        .map_err(storage)?;
                }
                continue;
            };
            match job.status {
                JobStatus::Processing => {
                    let deadline = job.deadline_ms.unwrap_or(0);
                    if deadline > now_ms {
                        return Ok(Claim::Busy(deadline));
                    }
                    fail(
                        tables,
                        job,
                        "delivery did not finish before its deadline",
                        now_ms,
                        policy,
                    )?;
                }
                JobStatus::Pending if job.next_retry_at_ms > now_ms => {
                    return Ok(Claim::WaitUntil(job.next_retry_at_ms));
                }
                JobStatus::Pending => {
                    job.status = JobStatus::Processing;
                    job.attempts += 1;
                    job.deadline_ms = Some(now_ms + lease_ms);
                    job.updated_at_ms = now_ms;
                    put_job(tables, &job)?;
                    set_processing(tables, &job, true)?;
                    return Ok(Claim::Job(Box::new(job)));
                }
                JobStatus::Done | JobStatus::Dead => {
                    tables
                        .job_queue()?
                        .remove((plugin.as_str(), job.priority.rank(), id))
                        .map_err(storage)?;
                }
            }
        })
    }

    fn complete_job(&self, job_id: u64, now_ms: u64) -> Result<()> {
        self.queue_commit(move |tables| {
            let Some(mut job) = get_job(tables, job_id)? else {
                return Ok(());
            };
            if job.status == JobStatus::Done {
                return Ok(());
            }
            tables
                .job_queue()?
                .remove((job.plugin.as_str(), job.priority.rank(), job.id))
                .map_err(storage)?;
            tables.job_dead()?.remove(job.id).map_err(storage)?;
            job.status = JobStatus::Done;
            job.deadline_ms = None;
            job.updated_at_ms = now_ms;
            put_job(tables, &job)?;
            tables
                .job_done()?
                .insert((now_ms, job.id), ())
                .map_err(storage)?;
            Ok(())
        })
    }

    fn fail_job(
        &self,
        job_id: u64,
        error: &str,
        now_ms: u64,
        policy: RetryPolicy,
    ) -> Result<JobStatus> {
        let error = error.to_owned();
        // An unknown job is reported after the commit: a job fails only before it changes
        // anything, and only with a domain error (see `commit`).
        self.queue_commit(move |tables| {
            let Some(job) = get_job(tables, job_id)? else {
                return Ok(None);
            };
            if job.status != JobStatus::Processing {
                return Ok(Some(job.status));
            }
            fail(tables, job, &error, now_ms, policy).map(Some)
        })?
        .ok_or_else(|| StoreError::engine(format!("plugin job {job_id} not found")))
    }

    fn recover_jobs(&self, now_ms: u64) -> Result<u64> {
        self.queue_commit(move |tables| {
            let ids: Vec<u64> = {
                let queue = tables.job_queue()?;
                let mut ids = Vec::new();
                for item in queue.iter().map_err(storage)? {
                    ids.push(item.map_err(storage)?.0.value().2);
                }
                ids
            };
            let mut recovered = 0;
            for id in ids {
                if let Some(mut job) = get_job(tables, id)? {
                    if job.status == JobStatus::Processing {
                        job.status = JobStatus::Pending;
                        job.deadline_ms = None;
                        job.next_retry_at_ms = now_ms;
                        job.updated_at_ms = now_ms;
                        job.last_error =
                            Some("interrupted: the server stopped during delivery".into());
                        put_job(tables, &job)?;
                        set_processing(tables, &job, false)?;
                        recovered += 1;
                    }
                }
            }
            Ok(recovered)
        })
    }

    fn retry_jobs(&self, filter: &JobFilter, now_ms: u64) -> Result<Vec<String>> {
        let filter = filter.clone();
        self.queue_commit(move |tables| {
            // (done-at key, id): done jobs only when asked for (a replay).
            let mut ids: Vec<(Option<u64>, u64)> = Vec::new();
            if filter.statuses.is_empty() || filter.statuses.contains(&JobStatus::Dead) {
                let dead = tables.job_dead()?;
                for item in dead.iter().map_err(storage)? {
                    ids.push((None, item.map_err(storage)?.0.value()));
                }
            }
            if filter.statuses.contains(&JobStatus::Done) {
                let done = tables.job_done()?;
                for item in done.iter().map_err(storage)? {
                    let (at, id) = item.map_err(storage)?.0.value();
                    ids.push((Some(at), id));
                }
            }
            ids.sort_by_key(|(_, id)| *id);
            let mut plugins = Vec::new();
            for (done_at, id) in ids {
                let Some(mut job) = get_job(tables, id)? else {
                    continue;
                };
                if !matches(&job, &filter) {
                    continue;
                }
                if filter.limit > 0 && plugins.len() >= filter.limit {
                    break;
                }
                match done_at {
                    Some(at) => {
                        tables.job_done()?.remove((at, id)).map_err(storage)?;
                    }
                    None => {
                        tables.job_dead()?.remove(id).map_err(storage)?;
                    }
                }
                job.status = JobStatus::Pending;
                job.attempts = 0;
                job.next_retry_at_ms = now_ms;
                job.deadline_ms = None;
                job.updated_at_ms = now_ms;
                put_job(tables, &job)?;
                tables
                    .job_queue()?
                    .insert((job.plugin.as_str(), job.priority.rank(), id), 0)
                    .map_err(storage)?;
                plugins.push(job.plugin);
            }
            Ok(plugins)
        })
    }

    fn clear_jobs(&self, filter: &JobFilter) -> Result<u64> {
        let filter = filter.clone();
        self.queue_commit(move |tables| {
            let mut removed = 0;
            if filter.statuses.contains(&JobStatus::Dead) {
                let ids: Vec<u64> = {
                    let dead = tables.job_dead()?;
                    let mut ids = Vec::new();
                    for item in dead.iter().map_err(storage)? {
                        ids.push(item.map_err(storage)?.0.value());
                    }
                    ids
                };
                for id in ids {
                    let Some(job) = get_job(tables, id)? else {
                        continue;
                    };
                    if matches(&job, &filter) {
                        tables.job_dead()?.remove(id).map_err(storage)?;
                        tables.jobs()?.remove(id).map_err(storage)?;
                        removed += 1;
                    }
                }
            }
            if filter.statuses.contains(&JobStatus::Done) {
                let keys: Vec<(u64, u64)> = {
                    let done = tables.job_done()?;
                    let mut keys = Vec::new();
                    for item in done.iter().map_err(storage)? {
                        keys.push(item.map_err(storage)?.0.value());
                    }
                    keys
                };
                for (at, id) in keys {
                    let Some(job) = get_job(tables, id)? else {
                        tables.job_done()?.remove((at, id)).map_err(storage)?;
                        continue;
                    };
                    if matches(&job, &filter) {
                        tables.job_done()?.remove((at, id)).map_err(storage)?;
                        tables.jobs()?.remove(id).map_err(storage)?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
    }

    fn prune_jobs(&self, done_before_ms: u64, max_done: Option<u64>) -> Result<u64> {
        self.queue_commit(move |tables| {
            let keys: Vec<(u64, u64)> = {
                let done = tables.job_done()?;
                let mut keys = Vec::new();
                for item in done.iter().map_err(storage)? {
                    keys.push(item.map_err(storage)?.0.value());
                }
                keys
            };
            let total = keys.len() as u64;
            let over = max_done.map_or(0, |max| total.saturating_sub(max));
            let mut removed = 0u64;
            for (n, (at, id)) in keys.into_iter().enumerate() {
                if at >= done_before_ms && (n as u64) >= over {
                    break;
                }
                tables.job_done()?.remove((at, id)).map_err(storage)?;
                tables.jobs()?.remove(id).map_err(storage)?;
                removed += 1;
            }
            Ok(removed)
        })
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<PluginJob>> {
        let read = self.read()?;
        let jobs = read.open_table(JOBS).map_err(storage)?;
        let mut out = Vec::new();
        for item in jobs.iter().map_err(storage)? {
            let (_, bytes) = item.map_err(storage)?;
            let job: PluginJob = serde_json::from_slice(bytes.value()).map_err(json_error)?;
            if (filter.statuses.is_empty() || filter.statuses.contains(&job.status))
                && matches(&job, filter)
            {
                out.push(job);
                if filter.limit > 0 && out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn job_counts(&self) -> Result<JobCounts> {
        let read = self.read()?;
        let queue = read.open_table(JOB_QUEUE).map_err(storage)?;
        let mut counts = JobCounts {
            done: read
                .open_table(JOB_DONE)
                .map_err(storage)?
                .len()
                .map_err(storage)?,
            dead: read
                .open_table(JOB_DEAD)
                .map_err(storage)?
                .len()
                .map_err(storage)?,
            ..JobCounts::default()
        };
        for item in queue.iter().map_err(storage)? {
            if item.map_err(storage)?.1.value() == 1 {
                counts.processing += 1;
            } else {
                counts.pending += 1;
            }
        }
        Ok(counts)
    }
}

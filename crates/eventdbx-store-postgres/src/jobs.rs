//! The durable plugin outbox (`docs/plugins.md`, "Delivery") in the same database as the
//! events: a write inserts its jobs in its own transaction. Jobs are rows of `plugin_jobs`: the
//! JSON record plus the columns the queue reads (plugin, priority rank, status, completion time).
//! A claim locks the head of a plugin's queue with `FOR UPDATE SKIP LOCKED`, so servers sharing
//! the database never claim one job twice, and leases (deadlines) make a job whose server died
//! deliverable again. Ids come from a sequence, so they increase in the order jobs are queued.

use deadpool_postgres::Transaction;
use eventdbx_core::plugin::{JobStatus, PluginJob, RetryPolicy};
use eventdbx_store::{Claim, JobCounts, JobFilter, JobQueue, Result, StoreError};

use crate::records::decode;
use crate::{col, db, json_error, pool_error, signed, unsigned, Cached, PostgresStore};

fn status_text(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending => "pending",
        JobStatus::Processing => "processing",
        JobStatus::Done => "done",
        JobStatus::Dead => "dead",
    }
}

/// Queues `jobs` in the current transaction, numbering them from the sequence.
pub(crate) async fn queue_jobs(txn: &Transaction<'_>, jobs: &[PluginJob]) -> Result<()> {
    for job in jobs {
        let row = txn
            .query_one_cached("SELECT nextval('plugin_job_ids')", &[])
            .await
            .map_err(db)?;
        let mut job = job.clone();
        job.id = unsigned(col(&row, 0)?);
        let body = serde_json::to_string(&job).map_err(json_error)?;
        txn.execute_cached(
            "INSERT INTO plugin_jobs (id, plugin, rank, status, done_at_ms, event_id, body) \
             VALUES ($1, $2, $3, 'pending', NULL, $4, $5)",
            &[
                &signed(job.id),
                &job.plugin,
                &i32::from(job.priority.rank()),
                &signed(job.event_id),
                &body,
            ],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Stores a job's new state (status and record; `done_at_ms` for a delivered one).
async fn put_job(txn: &Transaction<'_>, job: &PluginJob, done_at_ms: Option<u64>) -> Result<()> {
    let body = serde_json::to_string(job).map_err(json_error)?;
    txn.execute_cached(
        "UPDATE plugin_jobs SET status = $2, done_at_ms = $3, body = $4 WHERE id = $1",
        &[
            &signed(job.id),
            &status_text(job.status),
            &done_at_ms.map(signed),
            &body,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// A job, locked for the transaction.
async fn lock_job(txn: &Transaction<'_>, id: u64) -> Result<Option<PluginJob>> {
    let row = txn
        .query_opt_cached(
            "SELECT body FROM plugin_jobs WHERE id = $1 FOR UPDATE",
            &[&signed(id)],
        )
        .await
        .map_err(db)?;
    row.map(|row| decode(col(&row, 0)?)).transpose()
}

/// Records a failed attempt of a processing job; see [`JobQueue::fail_job`].
async fn fail(
    txn: &Transaction<'_>,
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
    } else {
        job.status = JobStatus::Pending;
        job.next_retry_at_ms = now_ms + policy.backoff_ms(job.attempts, job.id);
    }
    put_job(txn, &job, None).await?;
    Ok(job.status)
}

fn matches(job: &PluginJob, filter: &JobFilter) -> bool {
    filter
        .plugin
        .as_deref()
        .is_none_or(|p| p.eq_ignore_ascii_case(&job.plugin))
        && filter.event_id.is_none_or(|id| id == job.event_id)
}

/// The jobs in `statuses`, by id, locked for the transaction.
async fn lock_jobs(txn: &Transaction<'_>, statuses: &[&str]) -> Result<Vec<PluginJob>> {
    let statuses: Vec<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
    let rows = txn
        .query_cached(
            "SELECT body FROM plugin_jobs WHERE status = ANY($1) ORDER BY id FOR UPDATE",
            &[&statuses],
        )
        .await
        .map_err(db)?;
    rows.iter().map(|row| decode(col(row, 0)?)).collect()
}

impl PostgresStore {
    /// Runs `body` in one transaction on the engine's runtime and returns what it produced.
    fn in_transaction<T, F>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(
                &'t Transaction<'t>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T>> + Send + 't>,
            > + Send
            + 'static,
    {
        self.writable()?;
        let pool = self.pool();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let txn = client.transaction().await.map_err(db)?;
            let out = body(&txn).await?;
            txn.commit().await.map_err(crate::commit_error)?;
            Ok(out)
        })
    }
}

impl JobQueue for PostgresStore {
    fn claim_job(
        &self,
        plugin: &str,
        now_ms: u64,
        lease_ms: u64,
        policy: RetryPolicy,
    ) -> Result<Claim> {
        let plugin = plugin.to_owned();
        self.in_transaction(move |txn| {
            Box::pin(async move {
                loop {
                    let row = txn
                        .query_opt_cached(
                            "SELECT body FROM plugin_jobs WHERE plugin = $1 \
                             AND status IN ('pending', 'processing') \
                             ORDER BY rank, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                            &[&plugin],
                        )
                        .await
                        .map_err(db)?;
                    let Some(row) = row else {
                        return Ok(Claim::Empty);
                    };
                    let mut job: PluginJob = decode(col(&row, 0)?)?;
                    match job.status {
                        JobStatus::Processing => {
                            let deadline = job.deadline_ms.unwrap_or(0);
                            if deadline > now_ms {
                                return Ok(Claim::Busy(deadline));
                            }
                            let error = "delivery did not finish before its deadline";
                            fail(txn, job, error, now_ms, policy).await?;
                        }
                        JobStatus::Pending if job.next_retry_at_ms > now_ms => {
                            return Ok(Claim::WaitUntil(job.next_retry_at_ms));
                        }
                        _ => {
                            job.status = JobStatus::Processing;
                            job.attempts += 1;
                            job.deadline_ms = Some(now_ms + lease_ms);
                            job.updated_at_ms = now_ms;
                            put_job(txn, &job, None).await?;
                            return Ok(Claim::Job(Box::new(job)));
                        }
                    }
                }
            })
        })
    }

    fn complete_job(&self, job_id: u64, now_ms: u64) -> Result<()> {
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let Some(mut job) = lock_job(txn, job_id).await? else {
                    return Ok(());
                };
                if job.status == JobStatus::Done {
                    return Ok(());
                }
                job.status = JobStatus::Done;
                job.deadline_ms = None;
                job.updated_at_ms = now_ms;
                put_job(txn, &job, Some(now_ms)).await
            })
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
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let Some(job) = lock_job(txn, job_id).await? else {
                    return Ok(None);
                };
                if job.status != JobStatus::Processing {
                    return Ok(Some(job.status));
                }
                fail(txn, job, &error, now_ms, policy).await.map(Some)
            })
        })?
        .ok_or_else(|| StoreError::engine(format!("plugin job {job_id} not found")))
    }

    fn recover_jobs(&self, now_ms: u64) -> Result<u64> {
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let mut recovered = 0;
                for mut job in lock_jobs(txn, &["processing"]).await? {
                    // Other servers share this queue: a job whose lease runs is being delivered
                    // by one of them, not interrupted by this server's restart.
                    if job.deadline_ms.is_some_and(|deadline| deadline > now_ms) {
                        continue;
                    }
                    job.status = JobStatus::Pending;
                    job.deadline_ms = None;
                    job.next_retry_at_ms = now_ms;
                    job.updated_at_ms = now_ms;
                    job.last_error = Some("interrupted: the server stopped during delivery".into());
                    put_job(txn, &job, None).await?;
                    recovered += 1;
                }
                Ok(recovered)
            })
        })
    }

    fn retry_jobs(&self, filter: &JobFilter, now_ms: u64) -> Result<Vec<String>> {
        let filter = filter.clone();
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let mut statuses = Vec::new();
                if filter.statuses.is_empty() || filter.statuses.contains(&JobStatus::Dead) {
                    statuses.push("dead");
                }
                if filter.statuses.contains(&JobStatus::Done) {
                    statuses.push("done");
                }
                let mut plugins = Vec::new();
                for mut job in lock_jobs(txn, &statuses).await? {
                    if !matches(&job, &filter) {
                        continue;
                    }
                    if filter.limit > 0 && plugins.len() >= filter.limit {
                        break;
                    }
                    job.status = JobStatus::Pending;
                    job.attempts = 0;
                    job.next_retry_at_ms = now_ms;
                    job.deadline_ms = None;
                    job.updated_at_ms = now_ms;
                    put_job(txn, &job, None).await?;
                    plugins.push(job.plugin);
                }
                Ok(plugins)
            })
        })
    }

    fn clear_jobs(&self, filter: &JobFilter) -> Result<u64> {
        let filter = filter.clone();
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let mut statuses = Vec::new();
                if filter.statuses.contains(&JobStatus::Dead) {
                    statuses.push("dead");
                }
                if filter.statuses.contains(&JobStatus::Done) {
                    statuses.push("done");
                }
                let mut removed = 0;
                for job in lock_jobs(txn, &statuses).await? {
                    if matches(&job, &filter) {
                        txn.execute_cached(
                            "DELETE FROM plugin_jobs WHERE id = $1",
                            &[&signed(job.id)],
                        )
                        .await
                        .map_err(db)?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
        })
    }

    fn prune_jobs(&self, done_before_ms: u64, max_done: Option<u64>) -> Result<u64> {
        self.in_transaction(move |txn| {
            Box::pin(async move {
                let rows = txn
                    .query_cached(
                        "SELECT id, done_at_ms FROM plugin_jobs WHERE status = 'done' \
                         ORDER BY done_at_ms, id FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(db)?;
                let total = rows.len() as u64;
                let over = max_done.map_or(0, |max| total.saturating_sub(max));
                let mut removed = 0u64;
                for (n, row) in rows.iter().enumerate() {
                    let id: i64 = col(row, 0)?;
                    let at = unsigned(col::<Option<i64>>(row, 1)?.unwrap_or(0));
                    if at >= done_before_ms && (n as u64) >= over {
                        break;
                    }
                    txn.execute_cached("DELETE FROM plugin_jobs WHERE id = $1", &[&id])
                        .await
                        .map_err(db)?;
                    removed += 1;
                }
                Ok(removed)
            })
        })
    }

    fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<PluginJob>> {
        let pool = self.pool();
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| status_text(*s).to_owned())
            .collect();
        let rows = self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query_cached(
                    "SELECT body FROM plugin_jobs \
                     WHERE cardinality($1::text[]) = 0 OR status = ANY($1) ORDER BY id",
                    &[&statuses],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| col::<String>(row, 0))
                .collect::<Result<Vec<_>>>()
        })?;
        let mut out = Vec::new();
        for body in rows {
            let job: PluginJob = decode(&body)?;
            if matches(&job, filter) {
                out.push(job);
                if filter.limit > 0 && out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn job_counts(&self) -> Result<JobCounts> {
        let pool = self.pool();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query_cached(
                    "SELECT status, count(*) FROM plugin_jobs GROUP BY status",
                    &[],
                )
                .await
                .map_err(db)?;
            let mut counts = JobCounts::default();
            for row in &rows {
                let status: String = col(row, 0)?;
                let n = unsigned(col(row, 1)?);
                match status.as_str() {
                    "pending" => counts.pending = n,
                    "processing" => counts.processing = n,
                    "done" => counts.done = n,
                    _ => counts.dead = n,
                }
            }
            Ok(counts)
        })
    }
}

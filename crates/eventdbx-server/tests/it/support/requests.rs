//! Typed requests of a session: writes, reads, lists, snapshots, schemas, tenants and admin.

use serde_json::Value;

use super::reply::{decode, ok, Reply};
use super::session::Client;

/// A publish target: `(plugin, mode, priority)`.
pub type Target<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// Options of a write (`appendEvent`, `patchEvent`, `createAggregate`).
#[derive(Default, Clone)]
pub struct WriteOpts<'a> {
    pub note: Option<&'a str>,
    pub metadata: Option<&'a str>,
    pub expected_version: Option<u64>,
    pub idempotency_key: Option<&'a str>,
    pub targets: Option<Vec<Target<'a>>>,
}

/// Options of `listAggregates`.
#[derive(Default, Clone)]
pub struct ListOpts<'a> {
    pub take: Option<u64>,
    pub cursor: Option<&'a str>,
    pub filter: Option<&'a str>,
    pub sort: Option<&'a str>,
    pub include_archived: bool,
    pub archived_only: bool,
}

#[derive(Clone, Copy)]
enum WriteKind {
    Create,
    Append,
    Patch,
}

macro_rules! fill_write {
    ($w:expr, $token:expr, $t:expr, $i:expr, $e:expr, $opts:expr) => {{
        let mut w = $w;
        let opts: &WriteOpts<'_> = $opts;
        w.set_token($token);
        w.set_aggregate_type($t);
        w.set_aggregate_id($i);
        w.set_event_type($e);
        if let Some(note) = opts.note {
            w.set_note(note);
            w.set_has_note(true);
        }
        if let Some(metadata) = opts.metadata {
            w.set_metadata_json(metadata);
            w.set_has_metadata(true);
        }
        if let Some(version) = opts.expected_version {
            w.set_expected_version(version);
            w.set_has_expected_version(true);
        }
        if let Some(key) = opts.idempotency_key {
            w.set_idempotency_key(key);
        }
        if let Some(targets) = &opts.targets {
            w.set_has_publish_targets(true);
            let mut list = w.reborrow().init_publish_targets(targets.len() as u32);
            for (n, (plugin, mode, priority)) in targets.iter().enumerate() {
                let mut target = list.reborrow().get(n as u32);
                target.set_plugin(*plugin);
                if let Some(mode) = mode {
                    target.set_mode(*mode);
                    target.set_has_mode(true);
                }
                if let Some(priority) = priority {
                    target.set_priority(*priority);
                    target.set_has_priority(true);
                }
            }
        }
        w
    }};
}

impl Client {
    fn write(
        &mut self,
        kind: WriteKind,
        t: &str,
        i: &str,
        event_type: &str,
        body: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        self.try_write(kind, t, i, event_type, body, opts)
            .expect("request answered")
    }

    /// A write whose transport may fail (the server going away mid-conversation).
    fn try_write(
        &mut self,
        kind: WriteKind,
        t: &str,
        i: &str,
        event_type: &str,
        body: &str,
        opts: &WriteOpts<'_>,
    ) -> Result<Reply, String> {
        let token = self.token.clone();
        let bytes = self.try_call(|p| match kind {
            WriteKind::Create => {
                let mut w = fill_write!(p.init_create_aggregate(), &token, t, i, event_type, opts);
                w.set_payload_json(body);
            }
            WriteKind::Append => {
                let mut w = fill_write!(p.init_append_event(), &token, t, i, event_type, opts);
                w.set_payload_json(body);
            }
            WriteKind::Patch => {
                let mut w = fill_write!(p.init_patch_event(), &token, t, i, event_type, opts);
                w.set_patch_json(body);
            }
        })?;
        Ok(decode(&bytes))
    }

    /// `appendEvent` with options; `Err` when the transport failed (no answer came).
    pub fn try_apply_with(
        &mut self,
        t: &str,
        i: &str,
        event_type: &str,
        payload: &str,
        opts: &WriteOpts<'_>,
    ) -> Result<Reply, String> {
        self.try_write(WriteKind::Append, t, i, event_type, payload, opts)
    }

    /// `createAggregate`.
    pub fn create(&mut self, t: &str, i: &str, event_type: &str, payload: &str) -> Reply {
        self.create_with(t, i, event_type, payload, &WriteOpts::default())
    }

    /// `createAggregate` with options.
    pub fn create_with(
        &mut self,
        t: &str,
        i: &str,
        event_type: &str,
        payload: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        self.write(WriteKind::Create, t, i, event_type, payload, opts)
    }

    /// `appendEvent`.
    pub fn apply(&mut self, t: &str, i: &str, event_type: &str, payload: &str) -> Reply {
        self.apply_with(t, i, event_type, payload, &WriteOpts::default())
    }

    /// `appendEvent` with options.
    pub fn apply_with(
        &mut self,
        t: &str,
        i: &str,
        event_type: &str,
        payload: &str,
        opts: &WriteOpts<'_>,
    ) -> Reply {
        self.write(WriteKind::Append, t, i, event_type, payload, opts)
    }

    /// `patchEvent`.
    pub fn patch(&mut self, t: &str, i: &str, event_type: &str, patch: &str) -> Reply {
        self.write(
            WriteKind::Patch,
            t,
            i,
            event_type,
            patch,
            &WriteOpts::default(),
        )
    }

    /// `getAggregate` → `{found, aggregate}`.
    pub fn get(&mut self, t: &str, i: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_get_aggregate();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
        })
    }

    /// `selectAggregate` → `{found, selection}`.
    pub fn select(&mut self, t: &str, i: &str, fields: &[&str]) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_select_aggregate();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            let mut list = r.init_fields(fields.len() as u32);
            for (n, field) in fields.iter().enumerate() {
                list.set(n as u32, *field);
            }
        })
    }

    /// Creates `order` aggregates `o-0` … `o-<count - 1>`, each with a 200 KiB payload (an
    /// event's payload is at most 256 KiB). A page of 60 is a 12 MiB answer, far more than the
    /// socket buffers between the server and a peer that reads nothing hold (a few MiB on
    /// loopback): writing it to such a peer cannot finish.
    pub fn create_large_orders(&mut self, count: usize) {
        let blob = "x".repeat(200 * 1024);
        for n in 0..count {
            let id = format!("o-{n}");
            ok(self.create("order", &id, "created", &format!(r#"{{"blob":"{blob}"}}"#)));
        }
    }

    /// Sends `listAggregates` for `take` aggregates and reads nothing; returns its id.
    pub fn send_list(&mut self, take: u64) -> Result<u64, String> {
        let token = self.token.clone();
        self.send(|p| {
            let mut list = p.init_list_aggregates();
            list.set_token(token.as_str());
            list.set_take(take);
            list.set_has_take(true);
        })
    }

    /// `listAggregates` → `{aggregates, next_cursor}`.
    pub fn list(&mut self, opts: &ListOpts<'_>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_aggregates();
            r.set_token(token.as_str());
            if let Some(take) = opts.take {
                r.set_take(take);
                r.set_has_take(true);
            }
            if let Some(cursor) = opts.cursor {
                r.set_cursor(cursor);
                r.set_has_cursor(true);
            }
            if let Some(filter) = opts.filter {
                r.set_filter(filter);
                r.set_has_filter(true);
            }
            if let Some(sort) = opts.sort {
                r.set_sort(sort);
                r.set_has_sort(true);
            }
            r.set_include_archived(opts.include_archived);
            r.set_archived_only(opts.archived_only);
        })
    }

    /// `listEvents` → `{events, next_cursor}`.
    pub fn events(
        &mut self,
        t: &str,
        i: &str,
        take: Option<u64>,
        cursor: Option<&str>,
        filter: Option<&str>,
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_events();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            if let Some(take) = take {
                r.set_take(take);
                r.set_has_take(true);
            }
            if let Some(cursor) = cursor {
                r.set_cursor(cursor);
                r.set_has_cursor(true);
            }
            if let Some(filter) = filter {
                r.set_filter(filter);
                r.set_has_filter(true);
            }
        })
    }

    /// `verifyAggregate` → the root string (authorised by the hello token).
    pub fn verify(&mut self, t: &str, i: &str) -> Reply {
        self.request(|p| {
            let mut r = p.init_verify_aggregate();
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
        })
    }

    /// `setAggregateArchive` → the aggregate.
    pub fn set_archived(&mut self, t: &str, i: &str, archived: bool, note: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_set_aggregate_archive();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            r.set_archived(archived);
            if let Some(note) = note {
                r.set_note(note);
                r.set_has_note(true);
            }
        })
    }

    /// `setAggregateArchive` with publish targets (ours, @6/@7).
    pub fn set_archived_with(
        &mut self,
        t: &str,
        i: &str,
        archived: bool,
        targets: &[Target<'_>],
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_set_aggregate_archive();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            r.set_archived(archived);
            r.set_has_publish_targets(true);
            let mut list = r.init_publish_targets(targets.len() as u32);
            for (n, (plugin, mode, priority)) in targets.iter().enumerate() {
                let mut target = list.reborrow().get(n as u32);
                target.set_plugin(*plugin);
                if let Some(mode) = mode {
                    target.set_mode(*mode);
                    target.set_has_mode(true);
                }
                if let Some(priority) = priority {
                    target.set_priority(*priority);
                    target.set_has_priority(true);
                }
            }
        })
    }

    /// `admin` (ours, @24) with a token of this session's choosing.
    pub fn admin_as(&mut self, token: &str, action: &str, args: Value) -> Reply {
        let args = args.to_string();
        self.request(|p| {
            let mut r = p.init_admin();
            r.set_token(token);
            r.set_action(action);
            r.set_args_json(args.as_str());
        })
    }

    /// `admin` with the session's token.
    pub fn admin(&mut self, action: &str, args: Value) -> Reply {
        let token = self.token.clone();
        self.admin_as(&token, action, args)
    }

    /// `createSnapshot` → the snapshot.
    pub fn create_snapshot(&mut self, t: &str, i: &str, comment: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_create_snapshot();
            r.set_token(token.as_str());
            r.set_aggregate_type(t);
            r.set_aggregate_id(i);
            if let Some(comment) = comment {
                r.set_comment(comment);
                r.set_has_comment(true);
            }
        })
    }

    /// `listSnapshots` → the array.
    pub fn list_snapshots(&mut self, t: Option<&str>, i: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_list_snapshots();
            r.set_token(token.as_str());
            if let Some(t) = t {
                r.set_aggregate_type(t);
                r.set_has_aggregate_type(true);
            }
            if let Some(i) = i {
                r.set_aggregate_id(i);
                r.set_has_aggregate_id(true);
            }
        })
    }

    /// `getSnapshot` → `{found, snapshot}`.
    pub fn get_snapshot(&mut self, id: u64) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_get_snapshot();
            r.set_token(token.as_str());
            r.set_snapshot_id(id);
        })
    }

    /// `readOutbox` → `{events, next_after_event_id}`.
    pub fn outbox(&mut self, after: Option<u64>, take: Option<u64>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_read_outbox();
            r.set_token(token.as_str());
            if let Some(after) = after {
                r.set_after_event_id(after);
                r.set_has_after_event_id(true);
            }
            if let Some(take) = take {
                r.set_take(take);
                r.set_has_take(true);
            }
        })
    }

    /// `listSchemas` → the schema map.
    pub fn list_schemas(&mut self) -> Reply {
        let token = self.token.clone();
        self.request(|p| p.init_list_schemas().set_token(token.as_str()))
    }

    /// `replaceSchemas` → the count.
    pub fn replace_schemas(&mut self, schemas_json: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_replace_schemas();
            r.set_token(token.as_str());
            r.set_schemas_json(schemas_json);
        })
    }

    /// `tenantAssign` → `{changed, shard_id}`.
    pub fn tenant_assign(&mut self, tenant: &str, shard: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_assign();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_shard_id(shard);
        })
    }

    /// `tenantUnassign` → `{changed}`.
    pub fn tenant_unassign(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_unassign();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantQuotaSet` → `{changed, quota_mb, has_quota}`.
    pub fn quota_set(&mut self, tenant: &str, mb: u64) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_set();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_max_storage_mb(mb);
        })
    }

    /// `tenantQuotaClear` → `{changed}`.
    pub fn quota_clear(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_clear();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantQuotaRecalc` → `{storage_bytes}`.
    pub fn quota_recalc(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_quota_recalc();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantReload` → `{reloaded}`.
    pub fn tenant_reload(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_reload();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantList` (ours) → the array of tenants.
    pub fn tenant_list(&mut self) -> Reply {
        let token = self.token.clone();
        self.request(|p| p.init_tenant_list().set_token(token.as_str()))
    }

    /// `tenantSchemaHistory` (ours) → the manifest.
    pub fn schema_history(&mut self, tenant: &str) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_history();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
        })
    }

    /// `tenantSchemaActivate` (ours) → `{version_id, activated, action}`.
    pub fn schema_activate(&mut self, tenant: &str, version: &str, reason: Option<&str>) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_activate();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            r.set_version_id(version);
            if let Some(reason) = reason {
                r.set_reason(reason);
                r.set_has_reason(true);
            }
        })
    }

    /// `tenantSchemaPublish` → `{version_id, activated, skipped}`.
    pub fn schema_publish(
        &mut self,
        tenant: &str,
        reason: Option<&str>,
        activate: bool,
        force: bool,
    ) -> Reply {
        let token = self.token.clone();
        self.request(|p| {
            let mut r = p.init_tenant_schema_publish();
            r.set_token(token.as_str());
            r.set_tenant_id(tenant);
            if let Some(reason) = reason {
                r.set_reason(reason);
                r.set_has_reason(true);
            }
            r.set_activate(activate);
            r.set_force(force);
        })
    }
}

//! Orgs (tenants): create, change, disable and enable, and deboard.

use std::collections::HashMap;

use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::{Module, Op, Principal};
use super::error::{Result, StoreError};
use super::model::{NewOrg, Org, OrgPatch, OrgRef, Page, SUPER_GLOBAL, fmt_ms};
use super::sql::{RowExt, Sql};
use super::{AuditRow, Lines, Store, check_lookup, check_name, check_text, insert_id};

const COLUMNS: &str = "id, name, description, eps_limit, enabled, builtin, retention_days, created_at, updated_at";

/// Days an org's events are kept unless it says otherwise.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;
/// The longest retention an org may have (100 years).
pub const MAX_RETENTION_DAYS: i64 = 36_500;

fn org(row: &AnyRow, ip_ranges: Vec<String>) -> Result<Org> {
    Ok(Org {
        id: row.int("id")?,
        name: row.text("name")?,
        description: row.text("description")?,
        eps_limit: row.opt_int("eps_limit")?,
        enabled: row.int("enabled")? != 0,
        builtin: row.int("builtin")? != 0,
        ip_ranges,
        retention_days: row.int("retention_days")?,
        created_at: fmt_ms(row.int("created_at")?),
        updated_at: fmt_ms(row.int("updated_at")?),
    })
}

fn check_ranges(ranges: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        super::text::check_cidr(r)?;
        let net: parsers::Network =
            r.parse().map_err(|e| StoreError::invalid("ip_ranges", format!("{r:?} is not a CIDR range: {e}")))?;
        let canonical = net.to_string();
        if !out.contains(&canonical) {
            out.push(canonical);
        }
    }
    Ok(out)
}

fn check_limit(limit: Option<i64>) -> Result<()> {
    match limit {
        Some(l) if l < 0 => Err(StoreError::invalid("eps_limit", "must not be negative")),
        _ => Ok(()),
    }
}

fn check_retention(days: Option<i64>) -> Result<()> {
    match days {
        Some(d) if !(1..=MAX_RETENTION_DAYS).contains(&d) => {
            Err(StoreError::invalid("retention_days", format!("must be 1 to {MAX_RETENTION_DAYS}")))
        }
        _ => Ok(()),
    }
}

fn org_json(o: &Org) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

impl Store {
    async fn load_org(&self, conn: &mut AnyConnection, id: i64) -> Result<Option<Org>> {
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM orgs WHERE id = "));
        q.bind(id);
        let Some(row) = q.build().fetch_optional(&mut *conn).await? else { return Ok(None) };
        let mut q = Sql::new("SELECT cidr FROM org_ip_ranges WHERE org_id = ");
        q.bind(id).push(" ORDER BY cidr");
        let ranges = q.build().fetch_all(&mut *conn).await?.iter().map(|r| r.text("cidr")).collect::<Result<_>>()?;
        org(&row, ranges).map(Some)
    }

    /// The id of the org `r` names, if `who` sees it; `NotFound` otherwise
    /// (the same answer whether it is missing or out of sight).
    pub(crate) async fn resolve_org(&self, conn: &mut AnyConnection, who: &Principal, r: &OrgRef) -> Result<i64> {
        let mut q = Sql::new("SELECT id FROM orgs WHERE ");
        match r {
            OrgRef::Id(id) => q.push("id = ").bind(*id),
            OrgRef::Name(name) => {
                check_lookup("org", name)?;
                q.push("name_key = ").bind(name.to_lowercase())
            }
        };
        let id = q.build().fetch_optional(&mut *conn).await?.map(|r| r.int("id")).transpose()?;
        id.filter(|id| who.sees_org(*id)).ok_or(StoreError::NotFound("organization"))
    }

    /// Appends ` AND <col> = <id>` for the org a query parameter names (an
    /// id or a name); `NotFound` when `who` does not see it.
    pub(crate) async fn push_org_filter(&self, q: &mut Sql, col: &str, who: &Principal, org: &str) -> Result<()> {
        let r = OrgRef::parse(org);
        let mut conn = self.pool().acquire().await?;
        let id = self.resolve_org(&mut conn, who, &r).await?;
        q.push(&format!(" AND {col} = ")).bind(id);
        Ok(())
    }

    /// Orgs `who` sees, by name.
    pub async fn list_orgs(&self, who: &Principal) -> Result<Page<Org>> {
        who.require(Module::Orgs, Op::Read)?;
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM orgs WHERE 1 = 1"));
        who.org_filter(&mut q, "id");
        q.push(" ORDER BY name_key");
        let rows = q.build().fetch_all(self.pool()).await?;
        let mut q = Sql::new("SELECT org_id, cidr FROM org_ip_ranges WHERE 1 = 1");
        who.org_filter(&mut q, "org_id");
        q.push(" ORDER BY cidr");
        let mut ranges: HashMap<i64, Vec<String>> = HashMap::new();
        for r in q.build().fetch_all(self.pool()).await? {
            ranges.entry(r.int("org_id")?).or_default().push(r.text("cidr")?);
        }
        let items = rows
            .iter()
            .map(|r| org(r, ranges.remove(&r.int("id")?).unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next_cursor: None })
    }

    /// One org, if `who` sees it.
    pub async fn get_org(&self, who: &Principal, r: &OrgRef) -> Result<Org> {
        who.require(Module::Orgs, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let id = self.resolve_org(&mut conn, who, r).await?;
        self.load_org(&mut conn, id).await?.ok_or(StoreError::NotFound("organization"))
    }

    /// Fails unless enabled orgs' limits, with `org` at `limit` and
    /// `enabled`, stay within the licence.
    async fn check_licence(&self, conn: &mut AnyConnection, org: i64, limit: Option<i64>, enabled: bool) -> Result<()> {
        let mut q = Sql::new(
            "SELECT CAST(COALESCE(SUM(eps_limit), 0) AS BIGINT) AS total FROM orgs WHERE enabled = 1 AND id <> ",
        );
        q.bind(org);
        let others = q.build().fetch_one(&mut *conn).await?.int("total")?;
        let total = others.saturating_add(if enabled { limit.unwrap_or(0) } else { 0 });
        let licensed = i64::try_from(self.config().licence_eps).unwrap_or(i64::MAX);
        if total > licensed {
            return Err(StoreError::refused(
                "eps_limit",
                format!("enabled orgs' EPS limits would add up to {total}, more than the {licensed} licensed"),
            ));
        }
        Ok(())
    }

    async fn set_ranges(&self, conn: &mut AnyConnection, org: i64, ranges: &[String]) -> Result<()> {
        // The collector assigns longest prefix first; the same range in two
        // orgs would make the choice arbitrary.
        for cidr in ranges {
            let mut q = Sql::new("SELECT o.name FROM org_ip_ranges r JOIN orgs o ON o.id = r.org_id WHERE r.cidr = ");
            q.bind(cidr.clone()).push(" AND r.org_id <> ").bind(org);
            if let Some(row) = q.build().fetch_optional(&mut *conn).await? {
                return Err(StoreError::Conflict(format!("{cidr} already belongs to {}", row.text("name")?)));
            }
        }
        let mut q = Sql::new("DELETE FROM org_ip_ranges WHERE org_id = ");
        q.bind(org);
        q.build().execute(&mut *conn).await?;
        for cidr in ranges {
            let mut q = Sql::new("INSERT INTO org_ip_ranges (org_id, cidr) VALUES (");
            q.bind(org).push(", ").bind(cidr.clone()).push(")");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Creates an org (Super/Global users who see every org).
    pub async fn create_org(&self, who: &Principal, new: NewOrg) -> Result<Org> {
        who.require(Module::Orgs, Op::Create)?;
        who.require_unscoped_super("create organizations")?;
        let key = check_name("name", &new.name, 128)?;
        check_text("description", &new.description, 256, Lines::Multi)?;
        check_limit(new.eps_limit)?;
        check_retention(new.retention_days)?;
        let ranges = check_ranges(&new.ip_ranges)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        self.check_licence(w.conn(), 0, new.eps_limit, true).await?;
        let mut q = Sql::new(
            "INSERT INTO orgs (name, name_key, description, eps_limit, enabled, builtin, retention_days, created_at, \
             updated_at) VALUES (",
        );
        q.bind(new.name.clone()).push(", ").bind(key).push(", ").bind(new.description).push(", ");
        q.bind(new.eps_limit).push(", 1, 0, ").bind(new.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS));
        q.push(", ").bind(now).push(", ").bind(now).push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("an organization named {:?} already exists", new.name)).await?;
        self.set_ranges(w.conn(), id, &ranges).await?;
        let created = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        w.finish(now, who, AuditRow::new(Some(id), "create", "org", Some(id), None, Some(org_json(&created)))).await?;
        self.orgs_changed().await;
        Ok(created)
    }

    /// Changes an org's name, description, EPS limit or IP ranges.
    pub async fn update_org(&self, who: &Principal, r: &OrgRef, patch: OrgPatch) -> Result<Org> {
        who.require(Module::Orgs, Op::Update)?;
        let key = patch.name.as_deref().map(|n| check_name("name", n, 128)).transpose()?;
        if let Some(d) = &patch.description {
            check_text("description", d, 256, Lines::Multi)?;
        }
        if let Some(l) = patch.eps_limit {
            check_limit(l)?;
        }
        check_retention(patch.retention_days)?;
        let ranges = patch.ip_ranges.as_deref().map(check_ranges).transpose()?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let id = self.resolve_org(w.conn(), who, r).await?;
        if !who.is_super() {
            return Err(StoreError::forbidden("only Super/Global users may change organizations"));
        }
        let before = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        if before.builtin && (key.is_some() || ranges.is_some()) {
            return Err(StoreError::Conflict(format!(
                "{} is built in: its name and IP ranges cannot change",
                before.name
            )));
        }
        let limit = patch.eps_limit.unwrap_or(before.eps_limit);
        self.check_licence(w.conn(), id, limit, before.enabled).await?;
        let mut q = Sql::new("UPDATE orgs SET updated_at = ");
        q.bind(now);
        if let (Some(name), Some(key)) = (&patch.name, key) {
            q.push(", name = ").bind(name.clone()).push(", name_key = ").bind(key);
        }
        if let Some(d) = patch.description {
            q.push(", description = ").bind(d);
        }
        if let Some(days) = patch.retention_days {
            q.push(", retention_days = ").bind(days);
        }
        q.push(", eps_limit = ").bind(limit).push(" WHERE id = ").bind(id);
        match q.build().execute(w.conn()).await {
            Err(e) if StoreError::is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "an organization named {:?} already exists",
                    patch.name.unwrap_or_default()
                )));
            }
            r => r?,
        };
        if let Some(ranges) = &ranges {
            self.set_ranges(w.conn(), id, ranges).await?;
        }
        let after = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        w.finish(
            now,
            who,
            AuditRow::new(Some(id), "update", "org", Some(id), Some(org_json(&before)), Some(org_json(&after))),
        )
        .await?;
        self.orgs_changed().await;
        Ok(after)
    }

    /// Disables or enables an org; enabling checks its EPS limit against
    /// the licence again.
    pub async fn set_org_enabled(&self, who: &Principal, r: &OrgRef, enabled: bool) -> Result<Org> {
        who.require(Module::Orgs, Op::Update)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let id = self.resolve_org(w.conn(), who, r).await?;
        if !who.is_super() {
            return Err(StoreError::forbidden("only Super/Global users may disable or enable organizations"));
        }
        let before = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        if before.builtin {
            return Err(StoreError::Conflict(format!("{} is built in and is always enabled", before.name)));
        }
        if before.enabled == enabled {
            return Ok(before);
        }
        if enabled {
            self.check_licence(w.conn(), id, before.eps_limit, true).await?;
        }
        let mut q = Sql::new("UPDATE orgs SET enabled = ");
        q.bind(i64::from(enabled)).push(", updated_at = ").bind(now).push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        let after = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        w.finish(
            now,
            who,
            AuditRow::new(
                Some(id),
                if enabled { "enable" } else { "disable" },
                "org",
                Some(id),
                Some(org_json(&before)),
                Some(org_json(&after)),
            ),
        )
        .await?;
        self.orgs_changed().await;
        Ok(after)
    }

    /// Deboards an org: deletes it with all its records, comments, users,
    /// teams, roles, tokens and audit entries, irreversibly, and leaves one
    /// provider-level audit entry saying so. `confirm` must be true.
    /// With `events` (the events directory), the org's stored events are
    /// deleted too, before the change commits, and counted in the summary
    /// the audit log keeps.
    pub async fn deboard_org(
        &self,
        who: &Principal,
        r: &OrgRef,
        confirm: bool,
        events: Option<&std::path::Path>,
    ) -> Result<serde_json::Value> {
        who.require(Module::Orgs, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let id = self.resolve_org(w.conn(), who, r).await?;
        who.require_unscoped_super("deboard organizations")?;
        let before = self.load_org(w.conn(), id).await?.ok_or(StoreError::NotFound("organization"))?;
        if before.builtin || id == SUPER_GLOBAL {
            return Err(StoreError::Conflict(format!("{} is built in and cannot be deboarded", before.name)));
        }
        if !confirm {
            return Err(StoreError::BadRequest(format!(
                "deboarding deletes every record, user and audit entry of {:?} irreversibly; \
                 repeat with confirm=true to proceed",
                before.name
            )));
        }
        let mut counts = serde_json::Map::new();
        for (table, col) in [
            ("records", "org_id"),
            ("users", "org_id"),
            ("teams", "org_id"),
            ("audit", "org_id"),
            ("connectors", "org_id"),
            ("policies", "org_id"),
            ("deliveries", "org_id"),
        ] {
            let mut q = Sql::new(&format!("SELECT COUNT(*) AS n FROM {table} WHERE {col} = "));
            q.bind(id);
            counts.insert(table.to_owned(), q.build().fetch_one(w.conn()).await?.int("n")?.into());
        }
        // Comments and team members go with their records, users and teams;
        // the audit trail of the org's own objects goes with it.
        let mut q = Sql::new("DELETE FROM audit WHERE org_id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        // Deliveries, then the policies that queue them, then the
        // configurations they send through (policies refer to those).
        for table in ["deliveries", "policies", "connectors", "records", "tokens", "users", "teams", "roles"] {
            let mut q = Sql::new(&match table {
                "tokens" => "DELETE FROM tokens WHERE user_id IN (SELECT id FROM users WHERE org_id = ".to_owned(),
                _ => format!("DELETE FROM {table} WHERE org_id = "),
            });
            q.bind(id);
            if table == "tokens" {
                q.push(")");
            }
            q.build().execute(w.conn()).await?;
        }
        let mut q = Sql::new("DELETE FROM orgs WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        if let Some(root) = events {
            let org = u32::try_from(id).map_err(|_| StoreError::Corrupt(format!("org id {id}")))?;
            let removed =
                worker::retention::remove_org(root, org).map_err(|e| StoreError::EventFiles(e.to_string()))?;
            counts.insert("event_days".into(), removed.days.into());
            counts.insert("event_files".into(), removed.files.into());
            counts.insert("event_bytes".into(), removed.bytes.into());
        }
        let summary = serde_json::json!({ "org": before.name, "id": id, "deleted": counts });
        w.finish(
            now,
            who,
            AuditRow::new(None, "deboard", "org", Some(id), Some(org_json(&before)), Some(summary.clone())),
        )
        .await?;
        self.orgs_changed().await;
        Ok(summary)
    }
}

impl Store {
    /// Each org's id and retention in days, for the retention pass.
    pub async fn retention_policy(&self) -> Result<Vec<(u32, u32)>> {
        let rows = Sql::new("SELECT id, retention_days FROM orgs ORDER BY id").build().fetch_all(self.pool()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let (id, days) = (r.int("id")?, r.int("retention_days")?);
            if let (Ok(id), Ok(days)) = (u32::try_from(id), u32::try_from(days)) {
                out.push((id, days));
            }
        }
        Ok(out)
    }

    /// Tells the org publisher the orgs changed, and waits (at most a
    /// second) until it has applied the change to the pipeline, so an org
    /// created through the API routes the very next event.
    async fn orgs_changed(&self) {
        let mut version = 0;
        self.orgs.changed.send_modify(|v| {
            *v += 1;
            version = *v;
        });
        if !self.orgs.publisher.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut applied = self.orgs.applied.subscribe();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), applied.wait_for(|a| *a >= version)).await;
    }

    /// The org table as entry nodes need it (SPEC §4), numbered `version`.
    pub async fn org_snapshot(&self, version: u64) -> Result<parsers::OrgSnapshot> {
        let orgs = self.list_orgs(&Principal::cli()).await?.items;
        Ok(parsers::OrgSnapshot {
            version,
            orgs: orgs
                .into_iter()
                .map(|o| parsers::OrgEntry {
                    id: parsers::OrgId(u32::try_from(o.id).unwrap_or(u32::MAX)),
                    name: o.name,
                    ranges: o.ip_ranges,
                    enabled: o.enabled,
                    eps_limit: o.eps_limit.map(|l| u64::try_from(l).unwrap_or(0)),
                })
                .collect(),
        })
    }

    /// A cheap fingerprint of the org tables: it changes whenever another
    /// process (the admin CLI) changes an org, so the publisher can poll.
    pub async fn orgs_fingerprint(&self) -> Result<(i64, i64, i64)> {
        let row = Sql::new(
            "SELECT COUNT(*) AS n, COALESCE(MAX(updated_at), 0) AS t, \
             (SELECT COUNT(*) FROM org_ip_ranges) AS r FROM orgs",
        )
        .build()
        .fetch_one(self.pool())
        .await?;
        Ok((row.int("n")?, row.int("t")?, row.int("r")?))
    }

    /// Org changes made through this store, as a version counter.
    pub fn org_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.orgs.changed.subscribe()
    }

    /// Called by the org publisher: from now on org changes wait for it.
    pub fn attach_org_publisher(&self) {
        self.orgs.publisher.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Called by the org publisher once changes up to `version` are applied.
    pub fn orgs_applied(&self, version: u64) {
        self.orgs.applied.send_if_modified(|a| {
            let newer = version > *a;
            if newer {
                *a = version;
            }
            newer
        });
    }
}

/// The org-change signals between the store and the org publisher.
pub(crate) struct OrgSignals {
    changed: tokio::sync::watch::Sender<u64>,
    applied: tokio::sync::watch::Sender<u64>,
    publisher: std::sync::atomic::AtomicBool,
}

impl Default for OrgSignals {
    fn default() -> OrgSignals {
        OrgSignals {
            changed: tokio::sync::watch::Sender::new(0),
            applied: tokio::sync::watch::Sender::new(0),
            publisher: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

//! Incidents and alerts (one table, one code path): lists with filters,
//! keyset pagination and facet counts, single records with their history,
//! hand-made records (Self records included), updates and comments.

use std::collections::BTreeMap;

use rules::Severity;
use serde::Deserialize;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::{Module, Op, Principal};
use super::error::{Result, StoreError};
use super::model::{
    Comment, Kind, NewComment, NewRecord, OrgRef, Page, Record, RecordPatch, SUPER_GLOBAL, Status, UserRef, fmt_ms,
};
use super::sql::{RowExt, Sql};
use super::{AuditRow, Lines, Store, check_name, check_text, rfc3339_ms};

/// Largest page a list hands out.
pub const MAX_LIMIT: i64 = 1000;

/// Most event ids a record keeps.
pub const MAX_EVENT_IDS: usize = 100;

/// `GET /incidents` and `GET /alerts` filters; comma-separated lists
/// match any of their values.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Statuses, e.g. `open,investigating`.
    #[serde(default)]
    pub status: Option<String>,
    /// Severities, e.g. `high,critical`.
    #[serde(default)]
    pub severity: Option<String>,
    /// A rule id.
    #[serde(default)]
    pub rule: Option<String>,
    /// An org, by id or name.
    #[serde(default)]
    pub org: Option<String>,
    /// Records seen at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
    /// Records first seen before this RFC 3339 time.
    #[serde(default)]
    pub until: Option<String>,
    /// Text in the title (case-insensitive).
    #[serde(default)]
    pub q: Option<String>,
    /// An assignee's user id.
    #[serde(default)]
    pub assignee: Option<i64>,
    /// `last_seen`, `first_seen`, `created_at`, `severity`, `count` or
    /// `id`; a leading `-` sorts descending. Default `-last_seen`.
    #[serde(default)]
    pub sort: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Counts by facet under the same filters as the list.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Counts {
    /// All matching records.
    pub total: i64,
    /// By status.
    pub by_status: BTreeMap<&'static str, i64>,
    /// By severity.
    pub by_severity: BTreeMap<&'static str, i64>,
    /// By org name (`self` for Self records).
    pub by_org: BTreeMap<String, i64>,
}

const SELECT: &str = "SELECT r.id, r.org_id, o.name AS org_name, r.source_ref, r.rule_id, r.title, r.description, \
     r.severity, r.status, r.assignee_id, a.name AS assignee_name, r.hit_count, r.first_seen, r.last_seen, \
     r.created_by, c.name AS creator_name, r.created_at, r.updated_at, r.event_ids, r.tags \
     FROM records r LEFT JOIN orgs o ON o.id = r.org_id LEFT JOIN users a ON a.id = r.assignee_id \
     LEFT JOIN users c ON c.id = r.created_by WHERE r.kind = ";

fn severity_name(rank: i64) -> Result<&'static str> {
    usize::try_from(rank)
        .ok()
        .and_then(|r| Severity::ALL.get(r))
        .map(|s| s.as_str())
        .ok_or_else(|| StoreError::Corrupt(format!("severity {rank}")))
}

fn status_name(n: i64) -> Result<&'static str> {
    usize::try_from(n)
        .ok()
        .and_then(|n| Status::ALL.get(n))
        .map(|s| s.as_str())
        .ok_or_else(|| StoreError::Corrupt(format!("status {n}")))
}

pub(crate) fn parse_severity(field: &'static str, s: &str) -> Result<i64> {
    Severity::parse(s)
        .map(|s| i64::from(s.rank()))
        .ok_or_else(|| StoreError::invalid(field, format!("{s:?} is not one of info, low, medium, high, critical")))
}

fn parse_status(field: &'static str, s: &str) -> Result<i64> {
    Status::parse(s)
        .map(|s| s as i64)
        .ok_or_else(|| StoreError::invalid(field, format!("{s:?} is not one of open, investigating, resolved, closed")))
}

fn parse_time(field: &'static str, s: &str) -> Result<i64> {
    rfc3339_ms(s).ok_or_else(|| StoreError::invalid(field, format!("{s:?} is not an RFC 3339 time")))
}

fn record(kind: Kind, row: &AnyRow) -> Result<Record> {
    let user = |id: &str, name: &str| -> Result<Option<UserRef>> {
        Ok(match (row.opt_int(id)?, row.opt_text(name)?) {
            (Some(id), Some(name)) => Some(UserRef { id, name }),
            _ => None,
        })
    };
    let org_id = row.opt_int("org_id")?;
    Ok(Record {
        id: row.int("id")?,
        kind: kind.as_str(),
        org: row.opt_text("org_name")?,
        org_id,
        is_self: org_id.is_none(),
        title: row.text("title")?,
        description: row.text("description")?,
        severity: severity_name(row.int("severity")?)?,
        status: status_name(row.int("status")?)?,
        assignee: user("assignee_id", "assignee_name")?,
        rule: row.opt_text("rule_id")?,
        tags: serde_json::from_str(&row.text("tags")?).unwrap_or_default(),
        source_ref: row.opt_text("source_ref")?,
        count: row.int("hit_count")?,
        first_seen: fmt_ms(row.int("first_seen")?),
        last_seen: fmt_ms(row.int("last_seen")?),
        created_by: user("created_by", "creator_name")?,
        created_at: fmt_ms(row.int("created_at")?),
        updated_at: fmt_ms(row.int("updated_at")?),
        event_ids: None,
        owners: None,
        history: None,
    })
}

fn event_ids(row: &AnyRow) -> Result<Vec<u64>> {
    serde_json::from_str(&row.text("event_ids")?).map_err(|e| StoreError::Corrupt(format!("event_ids: {e}")))
}

fn record_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("history");
    }
    v
}

/// The sort column, its direction and the cursor value of a record.
struct Sort {
    column: &'static str,
    desc: bool,
}

impl Sort {
    fn parse(s: Option<&str>) -> Result<Sort> {
        let s = s.unwrap_or("-last_seen");
        let (desc, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let column = match name {
            "last_seen" => "last_seen",
            "first_seen" => "first_seen",
            "created_at" => "created_at",
            "severity" => "severity",
            "count" => "hit_count",
            "id" => "id",
            _ => {
                return Err(StoreError::invalid(
                    "sort",
                    format!(
                        "{s:?}: sort by last_seen, first_seen, created_at, severity, count or id (- for descending)"
                    ),
                ));
            }
        };
        Ok(Sort { column, desc })
    }
}

impl Store {
    /// Appends the list filters shared by lists and counts.
    async fn filters(&self, who: &Principal, kind: Kind, query: &ListQuery, q: &mut Sql) -> Result<()> {
        q.bind(kind.as_str().to_owned());
        who.record_filter(q, "r.org_id");
        if let Some(list) = &query.status {
            let v = list.split(',').map(|s| parse_status("status", s.trim())).collect::<Result<Vec<_>>>()?;
            q.push(" AND r.status IN ").bind_list(&v);
        }
        if let Some(list) = &query.severity {
            let v = list.split(',').map(|s| parse_severity("severity", s.trim())).collect::<Result<Vec<_>>>()?;
            q.push(" AND r.severity IN ").bind_list(&v);
        }
        if let Some(rule) = &query.rule {
            check_text("rule", rule, 256, Lines::Single)?;
            q.push(" AND r.rule_id = ").bind(rule.clone());
        }
        if let Some(org) = &query.org {
            self.push_org_filter(q, "r.org_id", who, org).await?;
        }
        if let Some(t) = &query.since {
            q.push(" AND r.last_seen >= ").bind(parse_time("since", t)?);
        }
        if let Some(t) = &query.until {
            q.push(" AND r.first_seen < ").bind(parse_time("until", t)?);
        }
        if let Some(text) = &query.q {
            check_text("q", text, 256, Lines::Single)?;
            let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            q.push(" AND lower(r.title) LIKE ").bind(format!("%{escaped}%")).push(" ESCAPE '\\'");
        }
        if let Some(a) = query.assignee {
            q.push(" AND r.assignee_id = ").bind(a);
        }
        Ok(())
    }

    /// A page of incidents or alerts `who` sees.
    pub async fn list_records(&self, who: &Principal, kind: Kind, query: ListQuery) -> Result<Page<Record>> {
        who.require(kind.module(), Op::Read)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let sort = Sort::parse(query.sort.as_deref())?;
        let mut q = Sql::new(SELECT);
        self.filters(who, kind, &query, &mut q).await?;
        let (col, cmp, dir) = (sort.column, if sort.desc { "<" } else { ">" }, if sort.desc { "DESC" } else { "ASC" });
        if let Some(cursor) = &query.cursor {
            let bad = || StoreError::invalid("cursor", "not a cursor from this list");
            let (v, id) = cursor.split_once(':').ok_or_else(bad)?;
            let (v, id): (i64, i64) = (v.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?);
            if col == "id" {
                q.push(&format!(" AND r.id {cmp} ")).bind(id);
            } else {
                q.push(&format!(" AND (r.{col} {cmp} ")).bind(v);
                q.push(&format!(" OR (r.{col} = ")).bind(v).push(&format!(" AND r.id {cmp} ")).bind(id).push("))");
            }
        }
        q.push(&format!(" ORDER BY r.{col} {dir}, r.id {dir} LIMIT ")).bind(limit + 1);
        let rows = q.build().fetch_all(self.pool()).await?;
        let mut next_cursor = None;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        for (i, row) in rows.iter().enumerate() {
            if i as i64 == limit {
                let last = &rows[i - 1];
                next_cursor = Some(format!("{}:{}", last.int(col)?, last.int("id")?));
                break;
            }
            items.push(record(kind, row)?);
        }
        Ok(Page { items, next_cursor })
    }

    /// Facet counts of the records a list with the same filters would show.
    pub async fn count_records(&self, who: &Principal, kind: Kind, query: ListQuery) -> Result<Counts> {
        who.require(kind.module(), Op::Read)?;
        let mut q = Sql::new(
            "SELECT r.status, r.severity, o.name AS org_name, COUNT(*) AS n FROM records r \
             LEFT JOIN orgs o ON o.id = r.org_id WHERE r.kind = ",
        );
        self.filters(who, kind, &query, &mut q).await?;
        q.push(" GROUP BY r.status, r.severity, o.name");
        let mut counts =
            Counts { total: 0, by_status: BTreeMap::new(), by_severity: BTreeMap::new(), by_org: BTreeMap::new() };
        for row in q.build().fetch_all(self.pool()).await? {
            let n = row.int("n")?;
            counts.total += n;
            *counts.by_status.entry(status_name(row.int("status")?)?).or_default() += n;
            *counts.by_severity.entry(severity_name(row.int("severity")?)?).or_default() += n;
            *counts.by_org.entry(row.opt_text("org_name")?.unwrap_or_else(|| "self".into())).or_default() += n;
        }
        Ok(counts)
    }

    pub(crate) async fn load_record(
        &self,
        conn: &mut AnyConnection,
        who: &Principal,
        kind: Kind,
        id: i64,
    ) -> Result<Record> {
        let mut q = Sql::new(SELECT);
        q.bind(kind.as_str().to_owned());
        who.record_filter(&mut q, "r.org_id");
        q.push(" AND r.id = ").bind(id);
        let row = q.build().fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound(kind.noun()))?;
        let mut r = record(kind, &row)?;
        r.event_ids = Some(event_ids(&row)?);
        let mut q = Sql::new("SELECT team_id FROM record_owners WHERE record_id = ");
        q.bind(id);
        if let Some(org) = r.org_id {
            q.push(" UNION SELECT id AS team_id FROM teams WHERE org_id = ").bind(org);
        }
        let mut owners =
            q.build().fetch_all(&mut *conn).await?.iter().map(|r| r.int("team_id")).collect::<Result<Vec<_>>>()?;
        owners.sort_unstable();
        r.owners = Some(owners);
        Ok(r)
    }

    /// One record with its event ids, owners and history.
    pub async fn get_record(&self, who: &Principal, kind: Kind, id: i64) -> Result<Record> {
        who.require(kind.module(), Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut r = self.load_record(&mut conn, who, kind, id).await?;
        drop(conn);
        r.history = Some(self.history(kind.as_str(), id).await?);
        Ok(r)
    }

    /// Fails unless `user` could see a record of `org`.
    async fn check_assignee(&self, conn: &mut AnyConnection, org: Option<i64>, user: i64) -> Result<()> {
        let mut q = Sql::new("SELECT org_id, scoped FROM users WHERE id = ");
        q.bind(user);
        let bad = || StoreError::refused("assignee", format!("user {user} cannot see this record"));
        let row = q.build().fetch_optional(&mut *conn).await?.ok_or_else(bad)?;
        let scope =
            if row.int("scoped")? != 0 { Some(super::people::scope_of(self.pool(), user).await?) } else { None };
        let assignee = Principal {
            user_id: Some(user),
            name: String::new(),
            org_id: row.int("org_id")?,
            scope,
            ..Principal::cli()
        };
        if assignee.sees_record(org) { Ok(()) } else { Err(bad()) }
    }

    /// The tenant a record may be given: an org `who` sees, never
    /// Super/Global (which is virtual).
    async fn tenant(&self, conn: &mut AnyConnection, who: &Principal, r: &OrgRef) -> Result<i64> {
        let id = self.resolve_org(conn, who, r).await?;
        if id == SUPER_GLOBAL {
            return Err(StoreError::refused("org", "Super/Global holds no records; leave org out for a Self record"));
        }
        Ok(id)
    }

    /// Creates a record by hand. Org users' records are their org's; a
    /// Super user who names no org creates a Self record.
    pub async fn create_record(&self, who: &Principal, kind: Kind, new: NewRecord) -> Result<Record> {
        who.require(kind.module(), Op::Create)?;
        check_name("title", &new.title, 512)?;
        check_text("description", &new.description, 10_000, Lines::Multi)?;
        let severity = parse_severity("severity", &new.severity)?;
        if new.event_ids.len() > MAX_EVENT_IDS {
            return Err(StoreError::invalid("event_ids", format!("at most {MAX_EVENT_IDS} event ids")));
        }
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = match (&new.org, who.is_super()) {
            (Some(r), _) => Some(self.tenant(w.conn(), who, r).await?),
            (None, true) => None,
            (None, false) => Some(who.org_id),
        };
        if let Some(a) = new.assignee {
            self.check_assignee(w.conn(), org, a).await?;
        }
        let ids = serde_json::to_string(&new.event_ids).unwrap_or_else(|_| "[]".into());
        let mut q = Sql::new(
            "INSERT INTO records (kind, org_id, title, description, severity, status, assignee_id, hit_count, \
             first_seen, last_seen, event_ids, created_by, created_at, updated_at) VALUES (",
        );
        q.bind(kind.as_str().to_owned()).push(", ").bind(org).push(", ").bind(new.title).push(", ");
        q.bind(new.description).push(", ").bind(severity).push(", 0, ").bind(new.assignee).push(", 1, ");
        q.bind(now).push(", ").bind(now).push(", ").bind(ids).push(", ").bind(who.user_id).push(", ");
        q.bind(now).push(", ").bind(now).push(") RETURNING id");
        let id = q.build().fetch_one(w.conn()).await?.int("id")?;
        if let (Some(user), true) = (who.user_id, self.config().creator_teams_own) {
            for team in self.teams_of(w.conn(), user).await? {
                let mut q = Sql::new("INSERT INTO record_owners (record_id, team_id) VALUES (");
                q.bind(id).push(", ").bind(team).push(")");
                q.build().execute(w.conn()).await?;
            }
        }
        let created = self.load_record(w.conn(), &Principal::cli(), kind, id).await?;
        let queued = self.notify_record_change(w.conn(), None, &created, now).await?;
        w.finish(now, who, AuditRow::new(org, "create", kind.as_str(), Some(id), None, Some(record_json(&created))))
            .await?;
        if queued > 0 {
            self.wake_dispatcher();
        }
        Ok(created)
    }

    /// Changes status, severity, assignee, title or description, or sets
    /// the tenant of a Self record (once).
    pub async fn update_record(&self, who: &Principal, kind: Kind, id: i64, patch: RecordPatch) -> Result<Record> {
        who.require(kind.module(), Op::Update)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.load_record(w.conn(), who, kind, id).await?;
        let mut org = before.org_id;
        let mut q = Sql::new("UPDATE records SET updated_at = ");
        q.bind(now);
        if let Some(r) = &patch.org {
            let target = self.tenant(w.conn(), who, r).await?;
            match before.org_id {
                Some(current) if current != target => {
                    return Err(StoreError::Conflict(format!(
                        "this {} belongs to {}; a record's tenant never changes once set",
                        kind.noun(),
                        before.org.clone().unwrap_or_default()
                    )));
                }
                Some(_) => {}
                None => {
                    org = Some(target);
                    q.push(", org_id = ").bind(target);
                }
            }
        }
        if let Some(s) = &patch.status {
            q.push(", status = ").bind(parse_status("status", s)?);
        }
        if let Some(s) = &patch.severity {
            q.push(", severity = ").bind(parse_severity("severity", s)?);
        }
        if let Some(t) = &patch.title {
            check_name("title", t, 512)?;
            q.push(", title = ").bind(t.clone());
        }
        if let Some(d) = &patch.description {
            check_text("description", d, 10_000, Lines::Multi)?;
            q.push(", description = ").bind(d.clone());
        }
        if let Some(a) = patch.assignee {
            if let Some(user) = a {
                self.check_assignee(w.conn(), org, user).await?;
            }
            q.push(", assignee_id = ").bind(a);
        } else if org != before.org_id
            && let Some(a) = &before.assignee
            && self.check_assignee(w.conn(), org, a.id).await.is_err()
        {
            q.push(", assignee_id = NULL");
        }
        q.push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        let after = self.load_record(w.conn(), &Principal::cli(), kind, id).await?;
        let queued = self.notify_record_change(w.conn(), Some(&before), &after, now).await?;
        w.finish(
            now,
            who,
            AuditRow::new(
                after.org_id,
                if org != before.org_id { "set_tenant" } else { "update" },
                kind.as_str(),
                Some(id),
                Some(record_json(&before)),
                Some(record_json(&after)),
            ),
        )
        .await?;
        if queued > 0 {
            self.wake_dispatcher();
        }
        Ok(after)
    }

    /// Deletes a record and its comments.
    pub async fn delete_record(&self, who: &Principal, kind: Kind, id: i64) -> Result<()> {
        who.require(kind.module(), Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.load_record(w.conn(), who, kind, id).await?;
        let mut q = Sql::new("DELETE FROM records WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        w.finish(
            now,
            who,
            AuditRow::new(before.org_id, "delete", kind.as_str(), Some(id), Some(record_json(&before)), None),
        )
        .await
    }

    /// A record's comments, oldest first.
    pub async fn list_comments(&self, who: &Principal, kind: Kind, id: i64) -> Result<Page<Comment>> {
        who.require(kind.module(), Op::Read)?;
        who.require(Module::Comments, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        self.load_record(&mut conn, who, kind, id).await?;
        let mut q = Sql::new(
            "SELECT c.id, c.record_id, c.author_id, u.name AS author, c.body, c.created_at FROM comments c \
             LEFT JOIN users u ON u.id = c.author_id WHERE c.record_id = ",
        );
        q.bind(id).push(" ORDER BY c.id LIMIT 10000");
        let items = q
            .build()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(Comment {
                    id: r.int("id")?,
                    record_id: r.int("record_id")?,
                    author: match (r.opt_int("author_id")?, r.opt_text("author")?) {
                        (Some(id), Some(name)) => Some(UserRef { id, name }),
                        _ => None,
                    },
                    body: r.text("body")?,
                    created_at: fmt_ms(r.int("created_at")?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, next_cursor: None })
    }

    /// Adds a comment to a record.
    pub async fn add_comment(&self, who: &Principal, kind: Kind, id: i64, new: NewComment) -> Result<Comment> {
        who.require(Module::Comments, Op::Create)?;
        if new.body.trim().is_empty() {
            return Err(StoreError::invalid("body", "must not be empty"));
        }
        check_text("body", &new.body, 10_000, Lines::Multi)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let rec = self.load_record(w.conn(), who, kind, id).await?;
        let mut q = Sql::new("INSERT INTO comments (record_id, author_id, author_name, body, created_at) VALUES (");
        q.bind(id).push(", ").bind(who.user_id).push(", ").bind(who.name.clone()).push(", ");
        q.bind(new.body.clone()).push(", ").bind(now).push(") RETURNING id");
        let cid = q.build().fetch_one(w.conn()).await?.int("id")?;
        let comment = Comment {
            id: cid,
            record_id: id,
            author: who.user_id.map(|uid| UserRef { id: uid, name: who.name.clone() }),
            body: new.body,
            created_at: fmt_ms(now),
        };
        w.finish(
            now,
            who,
            AuditRow::new(
                rec.org_id,
                "comment",
                kind.as_str(),
                Some(id),
                None,
                Some(serde_json::to_value(&comment).unwrap_or_default()),
            ),
        )
        .await?;
        Ok(comment)
    }
}

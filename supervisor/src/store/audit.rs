//! The audit log: one row per change, written in the change's transaction;
//! read back filtered by the reader's org visibility.

use serde::Deserialize;
use serde_json::Value;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::{Module, Op, Principal};
use super::error::Result;
use super::model::{AuditEntry, Page, fmt_ms};
use super::sql::{RowExt, Sql};
use super::{Store, StoreError};

/// A change to record.
pub(crate) struct AuditRow<'a> {
    pub org_id: Option<i64>,
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl<'a> AuditRow<'a> {
    /// A change to `object_type` `object_id` of `org_id`.
    pub(crate) fn new(
        org_id: Option<i64>,
        action: &'a str,
        object_type: &'a str,
        object_id: Option<i64>,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditRow<'a> {
        AuditRow { org_id, action, object_type, object_id, before, after }
    }

    /// An update of `object_type` `object_id`, with both states as JSON.
    pub(crate) fn update(
        org_id: Option<i64>,
        object_type: &'a str,
        object_id: i64,
        before: &impl serde::Serialize,
        after: &impl serde::Serialize,
    ) -> AuditRow<'a> {
        let (before, after) =
            (serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(after).unwrap_or_default());
        AuditRow::new(org_id, "update", object_type, Some(object_id), Some(before), Some(after))
    }

    pub(crate) async fn write(self, conn: &mut AnyConnection, at: i64, actor: &Principal) -> Result<()> {
        AuditRow::write_many(conn, at, actor, vec![self], 1).await
    }

    /// Writes rows with multi-row inserts of `per_statement` rows.
    pub(crate) async fn write_many(
        conn: &mut AnyConnection,
        at: i64,
        actor: &Principal,
        rows: Vec<AuditRow<'_>>,
        per_statement: usize,
    ) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut q = Sql::new(
                "INSERT INTO audit (at, actor_id, actor, org_id, action, object_type, object_id, before_json, \
                 after_json) VALUES ",
            );
            for (i, row) in rows.by_ref().take(per_statement.max(1)).enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind(at).push(", ").bind(actor.user_id).push(", ").bind(actor.name.clone()).push(", ");
                q.bind(row.org_id).push(", ").bind(row.action.to_owned()).push(", ");
                q.bind(row.object_type.to_owned()).push(", ").bind(row.object_id).push(", ");
                q.bind(row.before.map(|v| v.to_string())).push(", ").bind(row.after.map(|v| v.to_string())).push(")");
            }
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

pub(crate) fn entry(row: &AnyRow) -> Result<AuditEntry> {
    let json = |col: &str| -> Result<Option<Value>> {
        row.opt_text(col)?
            .map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("audit {col}: {e}"))))
            .transpose()
    };
    Ok(AuditEntry {
        id: row.int("id")?,
        at: fmt_ms(row.int("at")?),
        actor: row.text("actor")?,
        actor_id: row.opt_int("actor_id")?,
        org_id: row.opt_int("org_id")?,
        action: row.text("action")?,
        object_type: row.text("object_type")?,
        object_id: row.opt_int("object_id")?,
        before: json("before_json")?,
        after: json("after_json")?,
    })
}

/// `GET /audit` filters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this object type.
    #[serde(default)]
    pub object_type: Option<String>,
    /// Only this object id.
    #[serde(default)]
    pub object_id: Option<i64>,
    /// Page size (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

const COLUMNS: &str = "id, at, actor_id, actor, org_id, action, object_type, object_id, before_json, after_json";

impl Store {
    /// The audit log, newest first, of the orgs the caller sees
    /// (provider-level entries only for Super/Global users).
    pub async fn list_audit(&self, who: &Principal, query: AuditQuery) -> Result<Page<AuditEntry>> {
        who.require(Module::Orgs, Op::Read)?;
        let limit = query.limit.unwrap_or(100);
        if !(1..=super::MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid("limit", format!("must be between 1 and {}", super::MAX_LIMIT)));
        }
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM audit WHERE 1 = 1"));
        if who.is_super() {
            if let Some(scope) = &who.scope {
                q.push(" AND (org_id IS NULL OR org_id IN ").bind_list(scope).push(")");
            }
        } else {
            q.push(" AND org_id = ").bind(who.org_id);
        }
        if !who.administers_nodes() {
            // Nodes are shown only to those who administer them.
            q.push(" AND object_type <> 'node'");
        }
        if let Some(t) = query.object_type {
            super::check_text("object_type", &t, 64, super::Lines::Single)?;
            q.push(" AND object_type = ").bind(t);
        }
        if let Some(id) = query.object_id {
            q.push(" AND object_id = ").bind(id);
        }
        if let Some(c) = query.cursor {
            let before: i64 = c.parse().map_err(|_| StoreError::invalid("cursor", "not a cursor from this list"))?;
            q.push(" AND id < ").bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ").bind(limit + 1);
        let rows = q.build().fetch_all(self.pool()).await?;
        let mut items = rows.iter().map(entry).collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// A record's audit trail, oldest first.
    pub(crate) async fn history(&self, object_type: &str, id: i64) -> Result<Vec<AuditEntry>> {
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM audit WHERE object_type = "));
        q.bind(object_type.to_owned()).push(" AND object_id = ").bind(id).push(" ORDER BY id LIMIT 1000");
        q.build().fetch_all(self.pool()).await?.iter().map(entry).collect()
    }
}

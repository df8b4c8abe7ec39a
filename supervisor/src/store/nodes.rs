//! The cluster's node registry (SPEC §1, issue 12): every collector, worker
//! and supervisor the supervisor has heard from or an operator has
//! registered ahead of time, with its state, the reason for it, when it
//! last sent a heartbeat, and each collector's guaranteed EPS, which the
//! allocator plans over.
//!
//! States and what moves a node between them:
//! - a heartbeat makes an unknown, unregistered or alert node **active**,
//!   or **alert** when it reports problems (the reason lists them);
//! - [`Store::sweep_nodes`] makes an active node that has been silent too
//!   long **alert**;
//! - an operator puts a node in **maintenance** and takes it out again;
//!   in maintenance a node keeps its state whatever it reports or misses;
//! - an operator who sets a guarantee for a node never heard from
//!   registers it: **unregistered** until its first heartbeat;
//! - the inventory pass ([`Store::sweep_devices`]) makes an active
//!   collector all of whose log sources went silent together **alert**,
//!   and its heartbeats keep it so (the silence is one of its problems)
//!   until one of those sources reports again.
//!
//! Every change of state is kept in `node_transitions` (the last
//! [`TRANSITIONS_KEPT`] per node). Operators' changes are audited like
//! other administration; heartbeats and sweeps are not (the transitions
//! are their record).
//!
//! Heartbeats come from the network: a node's name is checked like any
//! other name, while its version, addresses and problems are cut to size
//! with control characters escaped rather than refused, so a stray byte
//! never loses a node's report.

use std::collections::BTreeMap;

use parsers::{NodeHeartbeat, NodeId, NodeRole};
use serde::Serialize;
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::Principal;
use super::error::{Result, StoreError};
use super::model::fmt_ms;
use super::sql::{Backend, RowExt, Sql};
use super::text::escape_controls;
use super::{AuditRow, Store, check_lookup, check_name, insert_id};

/// State changes kept per node; older ones are deleted.
pub const TRANSITIONS_KEPT: i64 = 100;
/// State changes [`NodeInfo`] shows, newest first.
pub const RECENT_TRANSITIONS: i64 = 10;
/// Longest node name, in characters.
pub const MAX_NODE_NAME: usize = 128;

const MAX_VERSION: usize = 64;
const MAX_ADDRESSES: usize = 32;
const MAX_ADDRESS: usize = 256;
const MAX_PROBLEMS: usize = 32;
const MAX_REASON: usize = 1024;

const COLUMNS: &str = "id, name, role, version, addresses, state, state_reason, state_since_ms, last_seen_ms, \
                       guaranteed_eps, maintenance, sources_silent, user_key, bound_org, slot";

/// Where a node stands (SPEC §1: Unregistered, Active, Maintenance, Alert).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Registered by an operator, never heard from.
    Unregistered,
    /// Sending heartbeats and reporting no problems.
    Active,
    /// Taken out of service by an operator: neither heartbeats nor their
    /// absence change its state.
    Maintenance,
    /// Reporting problems, or silent for too long.
    Alert,
}

impl NodeState {
    /// Every state.
    pub const ALL: [NodeState; 4] =
        [NodeState::Unregistered, NodeState::Active, NodeState::Maintenance, NodeState::Alert];

    /// `unregistered`, `active`, `maintenance` or `alert`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Unregistered => "unregistered",
            NodeState::Active => "active",
            NodeState::Maintenance => "maintenance",
            NodeState::Alert => "alert",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<NodeState> {
        NodeState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeTransition {
    /// The node.
    pub node: NodeId,
    /// Its state before.
    pub from: NodeState,
    /// Its state after.
    pub to: NodeState,
    /// Why (the problems it reported, how long it was silent, who acted).
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
    /// When, milliseconds since the epoch (the store's clock).
    #[serde(skip)]
    pub at_ms: i64,
}

/// A node as the registry knows it (`GET /api/v1/nodes`, `vigil node list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Its name, unique in the cluster.
    pub name: NodeId,
    /// Its role, as it last reported it (`collector` for a node registered
    /// by an operator and not heard from yet).
    pub role: NodeRole,
    /// The vigil version it last reported (empty until it reports).
    pub version: String,
    /// The addresses it serves, as it last reported them.
    pub addresses: Vec<String>,
    /// Its state.
    pub state: NodeState,
    /// Why it is in that state.
    pub state_reason: String,
    /// Since when, RFC 3339.
    pub state_since: String,
    /// Since when, milliseconds since the epoch.
    #[serde(skip)]
    pub state_since_ms: i64,
    /// When its last heartbeat arrived, RFC 3339 (the store's clock).
    pub last_seen: Option<String>,
    /// The same, milliseconds since the epoch.
    #[serde(skip)]
    pub last_seen_ms: Option<i64>,
    /// Its guaranteed EPS, if it has one.
    pub guaranteed_eps: Option<u64>,
    /// Whether an operator has put it in maintenance.
    pub maintenance: bool,
    /// Set when all the log sources this collector hears went silent
    /// together (the collector is the likely cause): what the inventory
    /// found. Cleared when one of them reports again.
    pub log_sources_silent: Option<String>,
    /// Whether it was added with credentials of its own (`vigil node add`).
    pub enrolled: bool,
    /// The org a collector is bound to (its only org), by id.
    pub org_id: Option<i64>,
    /// A collector's event-id slot, given at enrolment.
    pub slot: Option<u16>,
    /// Its latest state changes, newest first (at most
    /// [`RECENT_TRANSITIONS`]).
    pub transitions: Vec<NodeTransition>,
}

/// Network text made storable: control characters escaped, cut to `max`
/// characters.
fn clean(value: &str, max: usize) -> String {
    let mut s = value.to_owned();
    escape_controls(&mut s);
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s,
    }
}

fn state_of(row: &AnyRow, col: &str) -> Result<NodeState> {
    let text = row.text(col)?;
    NodeState::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{col}: unknown node state {text:?}")))
}

fn transition(row: &AnyRow, node: &NodeId) -> Result<NodeTransition> {
    let at_ms = row.int("at_ms")?;
    Ok(NodeTransition {
        node: node.clone(),
        from: state_of(row, "from_state")?,
        to: state_of(row, "to_state")?,
        reason: row.text("reason")?,
        at: fmt_ms(at_ms),
        at_ms,
    })
}

fn node(row: &AnyRow, transitions: Vec<NodeTransition>) -> Result<NodeInfo> {
    let role = row.text("role")?;
    let addresses = row.text("addresses")?;
    let state_since_ms = row.int("state_since_ms")?;
    let last_seen_ms = row.opt_int("last_seen_ms")?;
    Ok(NodeInfo {
        name: NodeId::new(&row.text("name")?),
        role: NodeRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role: unknown node role {role:?}")))?,
        version: row.text("version")?,
        addresses: serde_json::from_str(&addresses).map_err(|e| StoreError::Corrupt(format!("addresses: {e}")))?,
        state: state_of(row, "state")?,
        state_reason: row.text("state_reason")?,
        state_since: fmt_ms(state_since_ms),
        state_since_ms,
        last_seen: last_seen_ms.map(fmt_ms),
        last_seen_ms,
        guaranteed_eps: row
            .opt_int("guaranteed_eps")?
            .map(|g| u64::try_from(g).map_err(|_| StoreError::Corrupt(format!("guaranteed_eps: {g}"))))
            .transpose()?,
        maintenance: row.int("maintenance")? != 0,
        log_sources_silent: row.opt_text("sources_silent")?,
        enrolled: row.opt_text("user_key")?.is_some(),
        org_id: row.opt_int("bound_org")?,
        slot: row.opt_int("slot")?.and_then(|s| u16::try_from(s).ok()),
        transitions,
    })
}

/// A node to enrol (`vigil node add`, `POST /nodes`).
#[derive(Clone, Debug)]
pub struct NewNode {
    /// Its name: letters, digits, `-` and `_` (a NATS subject token).
    pub name: String,
    /// Collector or worker.
    pub role: NodeRole,
    /// A collector's org: every event it sends is that org's, and the
    /// server lets it publish no other.
    pub org: Option<super::OrgRef>,
}

/// What an enrolment grants, handed to whoever issues the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolment {
    /// The node's name.
    pub name: String,
    /// Its role.
    pub role: NodeRole,
    /// The org it is bound to.
    pub org_id: Option<u32>,
    /// Its event-id slot (collectors).
    pub slot: Option<u16>,
}

/// What the audit log keeps of a node.
fn node_json(n: &NodeInfo) -> serde_json::Value {
    json!({
        "name": n.name, "role": n.role, "state": n.state, "state_reason": n.state_reason,
        "guaranteed_eps": n.guaranteed_eps, "maintenance": n.maintenance,
        "enrolled": n.enrolled, "org_id": n.org_id, "slot": n.slot,
    })
}

/// An enrolled node's name becomes a NATS subject token and a KV key part.
fn check_enrol_name(name: &str) -> Result<()> {
    check_name("node", name, MAX_NODE_NAME)?;
    if !cluster::valid_node_name(name) {
        return Err(StoreError::invalid("name", "1-64 letters, digits, '-' or '_' (it becomes a NATS subject token)"));
    }
    Ok(())
}

/// Refuses anyone who does not administer nodes, with the answer a
/// missing node gets.
fn require_admin(who: &Principal) -> Result<()> {
    if who.administers_nodes() { Ok(()) } else { Err(StoreError::NotFound("node")) }
}

impl Store {
    /// ` FOR UPDATE` where the database needs it to serialize writers of
    /// one row (SQLite's writers already take turns).
    fn for_update(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// The node named `name`, with its latest transitions, and its row id.
    async fn load_node(&self, conn: &mut AnyConnection, name: &str, lock: bool) -> Result<Option<(i64, NodeInfo)>> {
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM nodes WHERE name = "));
        q.bind(name.to_owned());
        if lock {
            q.push(self.for_update());
        }
        let Some(row) = q.build().fetch_optional(&mut *conn).await? else { return Ok(None) };
        let id = row.int("id")?;
        let mut q = Sql::new("SELECT from_state, to_state, reason, at_ms FROM node_transitions WHERE node_id = ");
        q.bind(id).push(" ORDER BY id DESC LIMIT ").bind(RECENT_TRANSITIONS);
        let id_of = NodeId::new(name);
        let transitions =
            q.build().fetch_all(&mut *conn).await?.iter().map(|r| transition(r, &id_of)).collect::<Result<_>>()?;
        Ok(Some((id, node(&row, transitions)?)))
    }

    /// Takes a node's heartbeat: registers the node if it is new, notes
    /// when it was seen (by the store's clock, not the node's), its role,
    /// version and addresses, and moves it to `active`, or to `alert` when
    /// it reports problems (the reason is the problems joined by `; `). A
    /// node in maintenance keeps its state. Only a bad node name is an
    /// error.
    pub async fn node_heartbeat(&self, hb: &NodeHeartbeat) -> Result<()> {
        let name = hb.node.as_str();
        check_name("node", name, MAX_NODE_NAME)?;
        let version = clean(&hb.version, MAX_VERSION);
        let addresses: Vec<String> = hb.addresses.iter().take(MAX_ADDRESSES).map(|a| clean(a, MAX_ADDRESS)).collect();
        let addresses = serde_json::to_string(&addresses).unwrap_or_else(|_| "[]".to_owned());
        let now = self.now_ms();
        let mut w = self.write().await?;
        let mut q = Sql::new(
            "INSERT INTO nodes (name, role, version, addresses, state, state_reason, state_since_ms, maintenance, \
             created_ms) VALUES (",
        );
        q.bind(name.to_owned()).push(", ").bind(hb.role.as_str().to_owned()).push(", ");
        q.bind(version.clone()).push(", ").bind(addresses.clone()).push(", ");
        q.bind(NodeState::Unregistered.as_str().to_owned()).push(", '', ").bind(now).push(", 0, ").bind(now);
        q.push(") ON CONFLICT (name) DO NOTHING");
        q.build().execute(w.conn()).await?;
        let (id, before) = self.load_node(w.conn(), name, true).await?.ok_or(StoreError::NotFound("node"))?;
        let reported = (!hb.problems.is_empty()).then(|| {
            let joined = clean(
                &hb.problems.iter().take(MAX_PROBLEMS).map(|p| p.trim()).collect::<Vec<_>>().join("; "),
                MAX_REASON,
            );
            if joined.trim_matches([' ', ';']).is_empty() {
                "a problem without a description".to_owned()
            } else {
                joined
            }
        });
        // Its log sources all silent is a problem it cannot see itself.
        let problems = match (reported, before.log_sources_silent.as_deref()) {
            (Some(p), Some(silent)) => Some(clean(&format!("{p}; {silent}"), MAX_REASON)),
            (None, Some(silent)) => Some(silent.to_owned()),
            (p, None) => p,
        };
        let mut q = Sql::new("UPDATE nodes SET role = ");
        q.bind(hb.role.as_str().to_owned()).push(", version = ").bind(version).push(", addresses = ").bind(addresses);
        q.push(", last_seen_ms = ").bind(now);
        if let Some(reason) = problems.as_ref().filter(|_| !before.maintenance && before.state == NodeState::Alert) {
            // Still unwell: the reason follows what it reports now, and
            // the state keeps its start.
            q.push(", state_reason = ").bind(reason.clone());
        }
        q.push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        if !before.maintenance {
            match problems {
                Some(reason) if before.state != NodeState::Alert => {
                    change_state(w.conn(), id, before.state, NodeState::Alert, &reason, now).await?
                }
                None if before.state != NodeState::Active => {
                    change_state(w.conn(), id, before.state, NodeState::Active, "heartbeat", now).await?
                }
                _ => {}
            }
        }
        w.commit().await
    }

    /// Moves every active node not heard from for more than
    /// `missed_after_ms` (by the store's clock) to `alert`, with the reason
    /// "missed heartbeats for N s"; returns those changes. Nodes in
    /// maintenance, unregistered or already in alert are left alone.
    pub async fn sweep_nodes(&self, missed_after_ms: i64) -> Result<Vec<NodeTransition>> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(missed_after_ms.max(0));
        let mut w = self.write().await?;
        // A node made active by an operator without a heartbeat counts
        // from then.
        let mut q = Sql::new(
            "SELECT id, name, COALESCE(last_seen_ms, state_since_ms) AS seen FROM nodes \
             WHERE state = 'active' AND maintenance = 0 AND COALESCE(last_seen_ms, state_since_ms) < ",
        );
        q.bind(cutoff).push(" ORDER BY name").push(self.for_update());
        let rows = q.build().fetch_all(w.conn()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, name, seen) = (row.int("id")?, row.text("name")?, row.int("seen")?);
            let reason = format!("missed heartbeats for {} s", now.saturating_sub(seen) / 1000);
            change_state(w.conn(), id, NodeState::Active, NodeState::Alert, &reason, now).await?;
            out.push(NodeTransition {
                node: NodeId::new(&name),
                from: NodeState::Active,
                to: NodeState::Alert,
                reason,
                at: fmt_ms(now),
                at_ms: now,
            });
        }
        w.commit().await?;
        Ok(out)
    }

    /// Sets (or with `None` removes) a node's guaranteed EPS as the local
    /// administrator; see [`Store::set_node_guarantee_as`].
    pub async fn set_node_guarantee(&self, name: &str, eps: Option<u64>) -> Result<NodeInfo> {
        self.set_node_guarantee_as(&Principal::cli(), name, eps).await
    }

    /// Sets (or with `None` removes) a node's guaranteed EPS. A node not
    /// in the registry is registered, as an `unregistered` collector, which
    /// is how an operator prepares for a node before it first reports.
    /// Refused when the guarantees of all nodes would add up to more than
    /// the licensed EPS (lowering one is always allowed), and for a node
    /// that reports itself as a worker or supervisor (only collectors have
    /// guarantees). Audited; `NotFound` for anyone who does not administer
    /// nodes.
    pub async fn set_node_guarantee_as(&self, who: &Principal, name: &str, eps: Option<u64>) -> Result<NodeInfo> {
        require_admin(who)?;
        check_name("node", name, MAX_NODE_NAME)?;
        let value = eps
            .map(|e| {
                i64::try_from(e)
                    .map_err(|_| StoreError::invalid("guaranteed_eps", format!("must be at most {}", i64::MAX)))
            })
            .transpose()?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.load_node(w.conn(), name, true).await?;
        if let Some((_, b)) = &before
            && eps.is_some()
            && b.role != NodeRole::Collector
        {
            return Err(StoreError::refused(
                "guaranteed_eps",
                format!("{name} is a {}: only collectors have a guaranteed EPS", b.role),
            ));
        }
        let mut q =
            Sql::new("SELECT CAST(COALESCE(SUM(guaranteed_eps), 0) AS BIGINT) AS total FROM nodes WHERE name <> ");
        q.bind(name.to_owned());
        let others = q.build().fetch_one(w.conn()).await?.int("total")?;
        let total = others.saturating_add(value.unwrap_or(0));
        let licensed = i64::try_from(self.config().licence_eps).unwrap_or(i64::MAX);
        let old = before.as_ref().and_then(|(_, b)| b.guaranteed_eps).unwrap_or(0);
        if total > licensed && eps.unwrap_or(0) > old {
            return Err(StoreError::refused(
                "guaranteed_eps",
                format!("the nodes' guaranteed EPS would add up to {total}, more than the {licensed} licensed"),
            ));
        }
        let id = match &before {
            Some((id, _)) => {
                let mut q = Sql::new("UPDATE nodes SET guaranteed_eps = ");
                q.bind(value).push(" WHERE id = ").bind(*id);
                q.build().execute(w.conn()).await?;
                *id
            }
            None => {
                let mut q = Sql::new(
                    "INSERT INTO nodes (name, role, state, state_reason, state_since_ms, guaranteed_eps, \
                     maintenance, created_ms) VALUES (",
                );
                q.bind(name.to_owned()).push(", ").bind(NodeRole::Collector.as_str().to_owned()).push(", ");
                q.bind(NodeState::Unregistered.as_str().to_owned()).push(", ");
                q.bind(format!("registered by {}; no heartbeat yet", who.name)).push(", ").bind(now).push(", ");
                q.bind(value).push(", 0, ").bind(now).push(") RETURNING id");
                insert_id(w.conn(), q, || format!("node {name} was registered at the same time; try again")).await?
            }
        };
        let (_, after) = self.load_node(w.conn(), name, false).await?.ok_or(StoreError::NotFound("node"))?;
        let row = AuditRow::new(
            None,
            if before.is_some() { "update" } else { "create" },
            "node",
            Some(id),
            before.as_ref().map(|(_, b)| node_json(b)),
            Some(node_json(&after)),
        );
        w.finish(now, who, row).await?;
        Ok(after)
    }

    /// Puts a node in maintenance or takes it out, as the local
    /// administrator; see [`Store::set_node_maintenance_as`].
    pub async fn set_node_maintenance(&self, name: &str, on: bool) -> Result<NodeInfo> {
        self.set_node_maintenance_as(&Principal::cli(), name, on).await
    }

    /// Puts a node in maintenance (`on`), where neither its heartbeats nor
    /// their absence change its state, or takes it out: back to `active`
    /// (the next sweep flags it if it is silent), or to `unregistered` if
    /// it has never sent a heartbeat. Audited; `NotFound` for a node not in
    /// the registry, and for anyone who does not administer nodes.
    pub async fn set_node_maintenance_as(&self, who: &Principal, name: &str, on: bool) -> Result<NodeInfo> {
        require_admin(who)?;
        check_lookup("node", name)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let (id, before) = self.load_node(w.conn(), name, true).await?.ok_or(StoreError::NotFound("node"))?;
        if before.maintenance == on {
            return Ok(before);
        }
        let (to, reason) = match (on, before.last_seen_ms) {
            (true, _) => (NodeState::Maintenance, format!("maintenance started by {}", who.name)),
            (false, Some(_)) => (NodeState::Active, "maintenance ended".to_owned()),
            (false, None) => (NodeState::Unregistered, "maintenance ended; no heartbeat yet".to_owned()),
        };
        let mut q = Sql::new("UPDATE nodes SET maintenance = ");
        q.bind(i64::from(on)).push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        change_state(w.conn(), id, before.state, to, &reason, now).await?;
        let (_, after) = self.load_node(w.conn(), name, false).await?.ok_or(StoreError::NotFound("node"))?;
        let row = AuditRow::new(
            None,
            if on { "maintenance_on" } else { "maintenance_off" },
            "node",
            Some(id),
            Some(node_json(&before)),
            Some(node_json(&after)),
        );
        w.finish(now, who, row).await?;
        Ok(after)
    }

    /// Enrols a node: registers it (or takes over a registered node that
    /// has no credentials yet) as `unregistered` until it first connects,
    /// with its role, a collector's org binding and a free event-id slot,
    /// and calls `issue` inside the transaction to make its credentials;
    /// `issue` returns the new user key and whatever it made. Refused for a
    /// node enrolled already (remove it first: its old key must be
    /// revoked), for a supervisor, and for an org on a worker. Audited;
    /// `NotFound` for anyone who does not administer nodes.
    pub async fn enrol_node_as<T>(
        &self,
        who: &Principal,
        new: NewNode,
        issue: impl FnOnce(&Enrolment) -> std::result::Result<(String, T), String>,
    ) -> Result<(NodeInfo, T)> {
        require_admin(who)?;
        let name = new.name.as_str();
        check_name("node", name, MAX_NODE_NAME)?;
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || name.len() > 64 {
            return Err(StoreError::invalid(
                "name",
                "1-64 letters, digits, '-' or '_' (it becomes a NATS subject token)",
            ));
        }
        if new.role == NodeRole::Supervisor {
            return Err(StoreError::invalid("role", "collector or worker (the supervisor uses the key directory)"));
        }
        if new.org.is_some() && new.role != NodeRole::Collector {
            return Err(StoreError::invalid("org", "only a collector is bound to an org"));
        }
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org_id = match &new.org {
            Some(r) => Some(self.resolve_org(w.conn(), who, r).await?),
            None => None,
        };
        let before = self.load_node(w.conn(), name, true).await?;
        if before.as_ref().is_some_and(|(_, b)| b.enrolled) {
            return Err(StoreError::refused(
                "name",
                format!("node {name} is enrolled already: `vigil node remove {name}` revokes its credentials first"),
            ));
        }
        let slot = match new.role {
            NodeRole::Collector => {
                let taken: Vec<i64> = Sql::new("SELECT slot FROM nodes WHERE slot IS NOT NULL")
                    .build()
                    .fetch_all(w.conn())
                    .await?
                    .iter()
                    .map(|r| r.int("slot"))
                    .collect::<Result<_>>()?;
                let free = (1..=parsers::EventIds::MAX_SLOT).find(|s| !taken.contains(&i64::from(*s)));
                Some(free.ok_or_else(|| {
                    StoreError::refused("name", format!("all {} event-id slots are taken", parsers::EventIds::MAX_SLOT))
                })?)
            }
            _ => None,
        };
        let grant = Enrolment {
            name: name.to_owned(),
            role: new.role,
            org_id: org_id.and_then(|o| u32::try_from(o).ok()),
            slot,
        };
        let (user_key, made) = issue(&grant).map_err(|e| StoreError::invalid("credentials", e))?;
        let reason = format!("enrolled by {}; not connected yet", who.name);
        let id = match &before {
            Some((id, b)) => {
                let mut q = Sql::new("UPDATE nodes SET role = ");
                q.bind(new.role.as_str().to_owned()).push(", user_key = ").bind(user_key);
                q.push(", bound_org = ").bind(org_id).push(", slot = ").bind(slot.map(i64::from));
                q.push(" WHERE id = ").bind(*id);
                q.build().execute(w.conn()).await?;
                if b.last_seen_ms.is_none() && !b.maintenance {
                    let mut q = Sql::new("UPDATE nodes SET state_reason = ");
                    q.bind(reason).push(" WHERE id = ").bind(*id);
                    q.build().execute(w.conn()).await?;
                }
                *id
            }
            None => {
                let mut q = Sql::new(
                    "INSERT INTO nodes (name, role, state, state_reason, state_since_ms, maintenance, created_ms, \
                     user_key, bound_org, slot) VALUES (",
                );
                q.bind(name.to_owned()).push(", ").bind(new.role.as_str().to_owned()).push(", ");
                q.bind(NodeState::Unregistered.as_str().to_owned()).push(", ").bind(reason).push(", ");
                q.bind(now).push(", 0, ").bind(now).push(", ").bind(user_key).push(", ").bind(org_id);
                q.push(", ").bind(slot.map(i64::from)).push(") RETURNING id");
                insert_id(w.conn(), q, || format!("node {name} was registered at the same time; try again")).await?
            }
        };
        let (_, after) = self.load_node(w.conn(), name, false).await?.ok_or(StoreError::NotFound("node"))?;
        let row = AuditRow::new(
            None,
            "enrol",
            "node",
            Some(id),
            before.as_ref().map(|(_, b)| node_json(b)),
            Some(node_json(&after)),
        );
        w.finish(now, who, row).await?;
        Ok((after, made))
    }

    /// Lets this store enrol nodes: their credentials are signed with
    /// `keys` (the supervisor's `vigil cluster init` directory). Set once.
    pub fn set_cluster_keys(&self, keys: std::sync::Arc<cluster::auth::ClusterKeys>) {
        let _ = self.node_keys.set(keys);
    }

    /// Enrols a node ([`Store::enrol_node_as`]) with credentials signed by
    /// the cluster's keys, issued now by the store's clock, and gives a
    /// collector its guaranteed EPS. Refused when the store has no keys.
    pub async fn add_node_as(
        &self,
        who: &Principal,
        new: NewNode,
        guaranteed_eps: Option<u64>,
    ) -> Result<(NodeInfo, cluster::auth::Creds)> {
        require_admin(who)?;
        check_enrol_name(&new.name)?;
        let keys = self.node_keys.get().cloned().ok_or_else(|| {
            StoreError::refused(
                "name",
                "no cluster keys here: enrol nodes where the keys of `vigil cluster init` are \
                 (`vigil node add --keys DIR`, or a supervisor started with --keys DIR)",
            )
        })?;
        if guaranteed_eps.is_some() && new.role != NodeRole::Collector {
            return Err(StoreError::invalid("guaranteed_eps", "only collectors have a guaranteed EPS"));
        }
        let iat = self.now_ms().div_euclid(1000);
        // The guarantee first (checked against the licence), so a refused
        // one leaves no credentials issued; a node enrolled already is
        // refused before its guarantee changes.
        if let Some(eps) = guaranteed_eps {
            if self.get_node(&new.name).await.is_ok_and(|n| n.enrolled) {
                return Err(StoreError::refused(
                    "name",
                    format!("node {} is enrolled already: `vigil node remove` revokes its credentials first", new.name),
                ));
            }
            self.set_node_guarantee_as(who, &new.name, Some(eps)).await?;
        }
        self.enrol_node_as(who, new, |e| {
            let grant = cluster::auth::Grant { node: e.name.clone(), role: e.role, org: e.org_id, slot: e.slot };
            let creds = keys.node_creds(&grant, iat).map_err(|e| e.to_string())?;
            Ok((creds.user_key.clone(), creds))
        })
        .await
    }

    /// Removes a node from the registry. An enrolled node's user key is
    /// revoked for good (the supervisor pushes the revocation to NATS,
    /// which disconnects it and refuses it from then on). Audited;
    /// `NotFound` for a node not in the registry and for anyone who does
    /// not administer nodes.
    pub async fn remove_node_as(&self, who: &Principal, name: &str) -> Result<NodeInfo> {
        require_admin(who)?;
        check_lookup("node", name)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let (id, before) = self.load_node(w.conn(), name, true).await?.ok_or(StoreError::NotFound("node"))?;
        let mut q = Sql::new("SELECT user_key FROM nodes WHERE id = ");
        q.bind(id);
        if let Some(key) = q.build().fetch_one(w.conn()).await?.opt_text("user_key")? {
            let mut q = Sql::new("INSERT INTO node_revocations (user_key, node, revoked_ms) VALUES (");
            q.bind(key).push(", ").bind(name.to_owned()).push(", ").bind(now).push(") ON CONFLICT DO NOTHING");
            q.build().execute(w.conn()).await?;
        }
        let mut q = Sql::new("DELETE FROM node_transitions WHERE node_id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        let mut q = Sql::new("DELETE FROM nodes WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        let row = AuditRow::new(None, "remove", "node", Some(id), Some(node_json(&before)), None);
        w.finish(now, who, row).await?;
        Ok(before)
    }

    /// Every revoked user key with when it was revoked, seconds since the
    /// epoch: the account JWT's revocations.
    pub async fn node_revocations(&self) -> Result<BTreeMap<String, i64>> {
        let rows = Sql::new("SELECT user_key, revoked_ms FROM node_revocations").build().fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.text("user_key")?, r.int("revoked_ms")?.div_euclid(1000) + 1))).collect()
    }

    /// The org each enrolled, bound collector may send events for.
    pub async fn node_bindings(&self) -> Result<BTreeMap<String, u32>> {
        let rows = Sql::new("SELECT name, bound_org FROM nodes WHERE bound_org IS NOT NULL")
            .build()
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let org = r.int("bound_org")?;
                Ok((r.text("name")?, u32::try_from(org).map_err(|_| StoreError::Corrupt(format!("bound_org {org}")))?))
            })
            .collect()
    }

    /// One node of the registry.
    pub async fn get_node(&self, name: &str) -> Result<NodeInfo> {
        check_lookup("node", name)?;
        let mut conn = self.pool().acquire().await?;
        Ok(self.load_node(&mut conn, name, false).await?.ok_or(StoreError::NotFound("node"))?.1)
    }

    /// Every node of the registry by name, each with its latest
    /// transitions. The registry's own view: who may see it is the
    /// caller's decision ([`Principal::administers_nodes`]).
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(
            "SELECT t.node_id, t.from_state, t.to_state, t.reason, t.at_ms FROM (SELECT id, node_id, from_state, \
             to_state, reason, at_ms, ROW_NUMBER() OVER (PARTITION BY node_id ORDER BY id DESC) AS n \
             FROM node_transitions) t WHERE t.n <= ",
        );
        q.bind(RECENT_TRANSITIONS).push(" ORDER BY t.node_id, t.id DESC");
        let mut transitions: BTreeMap<i64, Vec<AnyRow>> = BTreeMap::new();
        for row in q.build().fetch_all(&mut *conn).await? {
            transitions.entry(row.int("node_id")?).or_default().push(row);
        }
        let rows =
            Sql::new(&format!("SELECT {COLUMNS} FROM nodes ORDER BY name")).build().fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| {
                let name = NodeId::new(&row.text("name")?);
                let recent = transitions.remove(&row.int("id")?).unwrap_or_default();
                node(row, recent.iter().map(|t| transition(t, &name)).collect::<Result<_>>()?)
            })
            .collect()
    }

    /// Every collector in the registry, whatever its state, with its
    /// guaranteed EPS (0 when it has none): what the EPS allocator plans
    /// over.
    pub async fn node_guarantees(&self) -> Result<BTreeMap<NodeId, u64>> {
        let mut q = Sql::new("SELECT name, guaranteed_eps FROM nodes WHERE role = ");
        q.bind(NodeRole::Collector.as_str().to_owned());
        let mut out = BTreeMap::new();
        for row in q.build().fetch_all(self.pool()).await? {
            let eps = row.opt_int("guaranteed_eps")?.unwrap_or(0);
            let eps = u64::try_from(eps).map_err(|_| StoreError::Corrupt(format!("guaranteed_eps: {eps}")))?;
            out.insert(NodeId::new(&row.text("name")?), eps);
        }
        Ok(out)
    }
}

/// Moves node `node_id` from `from` to `to` for `reason` at `at`, and
/// records the change (dropping the node's oldest changes beyond
/// [`TRANSITIONS_KEPT`]).
pub(super) async fn change_state(
    conn: &mut AnyConnection,
    node_id: i64,
    from: NodeState,
    to: NodeState,
    reason: &str,
    at: i64,
) -> Result<()> {
    let mut q = Sql::new("UPDATE nodes SET state = ");
    q.bind(to.as_str().to_owned()).push(", state_reason = ").bind(reason.to_owned());
    q.push(", state_since_ms = ").bind(at).push(" WHERE id = ").bind(node_id);
    q.build().execute(&mut *conn).await?;
    if from == to {
        return Ok(());
    }
    let mut q = Sql::new("INSERT INTO node_transitions (node_id, from_state, to_state, reason, at_ms) VALUES (");
    q.bind(node_id).push(", ").bind(from.as_str().to_owned()).push(", ").bind(to.as_str().to_owned());
    q.push(", ").bind(reason.to_owned()).push(", ").bind(at).push(")");
    q.build().execute(&mut *conn).await?;
    // With TRANSITIONS_KEPT or fewer rows the subquery is NULL and
    // nothing is deleted.
    let mut q = Sql::new("DELETE FROM node_transitions WHERE node_id = ");
    q.bind(node_id).push(" AND id <= (SELECT id FROM node_transitions WHERE node_id = ").bind(node_id);
    q.push(" ORDER BY id DESC LIMIT 1 OFFSET ").bind(TRANSITIONS_KEPT).push(")");
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Notes in the registry that all the log sources collector `name` hears
/// went silent together (`why`; the incident raised for it is `record`),
/// and makes the node alert if it is active: its heartbeats keep it alert
/// until [`clear_sources_silent`]. A collector not in the registry (the
/// one of `vigil run`) is left alone.
pub(super) async fn mark_sources_silent(
    conn: &mut AnyConnection,
    name: &str,
    why: &str,
    record: i64,
    now: i64,
) -> Result<()> {
    let mut q = Sql::new("SELECT id, state, maintenance FROM nodes WHERE name = ");
    q.bind(name.to_owned());
    let Some(row) = q.build().fetch_optional(&mut *conn).await? else { return Ok(()) };
    let id = row.int("id")?;
    let mut q = Sql::new("UPDATE nodes SET sources_silent = ");
    q.bind(why.to_owned()).push(", sources_silent_record_id = ").bind(record).push(" WHERE id = ").bind(id);
    q.build().execute(&mut *conn).await?;
    if row.int("maintenance")? == 0 && state_of(&row, "state")? == NodeState::Active {
        change_state(conn, id, NodeState::Active, NodeState::Alert, why, now).await?;
    }
    Ok(())
}

/// The log sources whose silence incident `record` was are back: the
/// collector noted for it is no longer blamed (its next heartbeat makes it
/// active again if it reports no problem).
pub(super) async fn clear_sources_silent(conn: &mut AnyConnection, record: i64) -> Result<()> {
    let mut q = Sql::new(
        "UPDATE nodes SET sources_silent = NULL, sources_silent_record_id = NULL WHERE sources_silent_record_id = ",
    );
    q.bind(record);
    q.build().execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in NodeState::ALL {
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(json!(s.as_str())));
        }
        assert_eq!(NodeState::parse("Active"), None);
    }

    #[test]
    fn network_text_is_escaped_and_cut() {
        assert_eq!(clean("disk\u{0}full", 100), "disk\\u{0}full");
        assert_eq!(clean("ééééé", 3), "ééé");
        assert_eq!(clean("short", 10), "short");
    }
}

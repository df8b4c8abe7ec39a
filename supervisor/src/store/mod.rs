//! The record store (SPEC §4 and §6): orgs, users, teams, roles, tokens,
//! incidents, alerts, comments, the audit log, the device inventory and
//! the cluster's node registry, behind one code path for SQLite (the embedded default, a file
//! in the data directory) and PostgreSQL (`postgres://…`).
//!
//! Every operation takes the [`Principal`] it acts for and enforces the
//! tenant rules itself, so the HTTP API and the admin CLI cannot disagree:
//! an org's users see only their org, Super/Global users see every org or
//! their scope, and objects out of sight are "not found", never "forbidden".
//! Every change writes an audit entry in the same transaction. The node
//! registry's heartbeat, sweep and listing serve the cluster itself and act
//! for no one; its operator changes take a principal like the rest.

mod audit;
pub use audit::AuditQuery;
pub mod auth;
pub mod connectors;
pub mod devices;
mod error;
mod events;
pub mod ingest;
mod migrate;
pub mod model;
mod nodes;
mod orgs;
mod people;
mod records;
mod sql;
mod text;

use std::path::Path;
use std::sync::Arc;

use collector::Clock;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

pub use auth::{Module, Op, Perms, Principal};
pub use connectors::{
    ActionRequest, Attempt, ConnectorInfo, ConnectorPatch, ConnectorSettings, ConnectorsConfig, Delivery,
    DeliveryQuery, DeliveryState, NameRef, NewConnector, NewPolicy, Outbox, PageQuery, Policy, PolicyPatch, Trigger,
};
pub use devices::{Device, DevicePatch, DeviceQuery, DeviceSettings, DeviceSummary, SummaryQuery};
pub use error::{Result, StoreError};
pub use ingest::{IncidentUpdate, Ingest, IngestConfig, IngestStats, LatencySummary};
pub use model::*;
pub use nodes::{
    Enrolment, MAX_NODE_NAME, NewNode, NodeInfo, NodeState, NodeTransition, RECENT_TRANSITIONS, TRANSITIONS_KEPT,
};
pub use orgs::{DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS};
pub use records::{ListQuery, MAX_EVENT_IDS, MAX_LIMIT};
pub use sql::Backend;
pub use text::is_cidr as text_is_cidr;
pub use text::{CIDR_PATTERN, MULTI_LINE_PATTERN, NAME_PATTERN, NOT_BLANK_PATTERN, SINGLE_LINE_PATTERN, rfc3339_ms};
pub(crate) use text::{Lines, check_lookup, check_name, check_text};

use audit::AuditRow;
use sql::{RowExt, Sql};

/// Settings the store enforces.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The licensed EPS: enabled orgs' EPS limits may not add up to more.
    pub licence_eps: u64,
    /// Records created by hand are owned by the creator's teams as well as
    /// the tenant's (SPEC §6); `false` keeps ownership to tenant teams.
    pub creator_teams_own: bool,
    /// The device inventory and the licence's device limit.
    pub devices: DeviceSettings,
    /// Connectors: the sealing key, the egress guard, retries.
    pub connectors: ConnectorSettings,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            licence_eps: crate::licence::UNLICENSED_EPS,
            creator_teams_own: true,
            devices: DeviceSettings::default(),
            connectors: ConnectorSettings::default(),
        }
    }
}

/// The record store: a connection pool plus the rules above it.
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Arc<dyn Clock>,
    config: StoreConfig,
    /// SQLite has one writer at a time; taking turns in-process avoids
    /// `SQLITE_BUSY` when a read transaction would upgrade.
    write_lock: tokio::sync::Mutex<()>,
    /// Org changes, for the publisher that applies them to the pipeline.
    orgs: orgs::OrgSignals,
    /// The delivery outbox's wake-up and counters.
    outbox: Outbox,
    /// Policies' compiled templates.
    templates: connectors::TemplateCache,
    /// Connectors built for the dispatcher.
    built: connectors::ConnectorCache,
    /// The cluster's keys, when this store may enrol nodes (`vigil node
    /// add`, `POST /nodes`).
    node_keys: std::sync::OnceLock<Arc<cluster::auth::ClusterKeys>>,
}

/// A write transaction (holding the SQLite writer's turn).
pub(crate) struct Write<'a> {
    pub(crate) tx: sqlx::Transaction<'static, Any>,
    _turn: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl Write<'_> {
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub(crate) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Writes the change's audit row and commits both.
    pub(crate) async fn finish(mut self, at: i64, who: &Principal, row: AuditRow<'_>) -> Result<()> {
        row.write(self.conn(), at, who).await?;
        self.commit().await
    }
}

/// Runs an `INSERT … RETURNING id`; a unique-constraint violation becomes
/// a [`StoreError::Conflict`] with `conflict()`'s message.
pub(crate) async fn insert_id(conn: &mut AnyConnection, q: Sql, conflict: impl FnOnce() -> String) -> Result<i64> {
    match q.build().fetch_one(conn).await {
        Ok(row) => row.int("id"),
        Err(e) if StoreError::is_unique_violation(&e) => Err(StoreError::Conflict(conflict())),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Opens the SQLite store `vigil.db` in `dir` (created if missing).
    pub async fn open_data_dir(dir: &Path, clock: Arc<dyn Clock>, config: StoreConfig) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::BadRequest(format!("cannot create data directory {}: {e}", dir.display())))?;
        // The URL's path is percent-decoded: escape what would end it early.
        let path = dir.join("vigil.db").display().to_string();
        let path = path.replace('%', "%25").replace('?', "%3F").replace('#', "%23");
        Store::open(&format!("sqlite://{path}?mode=rwc"), clock, config).await
    }

    /// Opens the store at `url` (`sqlite://PATH?mode=rwc` or
    /// `postgres://…`), applying any pending migrations.
    pub async fn open(url: &str, clock: Arc<dyn Clock>, config: StoreConfig) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadRequest(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB"
            )));
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(sqlx::raw_sql(
                            // 64 MiB of page cache per connection: with the
                            // default 2 MiB a million-incident store spills
                            // the cache mid-transaction on every batch.
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
                        ))
                        .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        let store = Store {
            pool,
            backend,
            clock,
            config,
            write_lock: tokio::sync::Mutex::new(()),
            orgs: orgs::OrgSignals::default(),
            outbox: Outbox::default(),
            templates: connectors::TemplateCache::default(),
            built: connectors::ConnectorCache::default(),
            node_keys: std::sync::OnceLock::new(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // One migrator at a time across processes.
            conn.execute("SELECT pg_advisory_lock(7419)").await?;
        }
        let now = self.now_ms();
        let result = migrate::run(&mut conn, self.backend, now, async |c| seed(c, now).await).await;
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(7419)").await?;
        }
        result.map(drop)
    }

    /// Which database is behind the store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The settings it enforces.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The store's clock, milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().unix_nanos().div_euclid(1_000_000) as i64
    }

    /// Rows per multi-row statement. sqlx looks every SQLite parameter up
    /// by name, a linear scan inside SQLite, so a statement's binding cost
    /// grows with the square of its parameters: small statements there;
    /// PostgreSQL pays a round trip per statement instead: large ones.
    pub(crate) fn rows_per_statement(&self) -> usize {
        match self.backend {
            Backend::Sqlite => 16,
            Backend::Postgres => 256,
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) async fn write(&self) -> Result<Write<'_>> {
        let turn = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        let tx = match self.backend {
            // Take the database's write lock up front, so a transaction that
            // reads first never fails to upgrade when another process (the
            // admin CLI) wrote in between; busy_timeout makes it wait.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Write { tx, _turn: turn })
    }

    /// Resolves a bearer secret to the user it acts as.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal> {
        let mut q = Sql::new(
            "SELECT u.id, u.name, u.org_id, u.enabled, u.scoped, r.perms, t.expires_at \
             FROM tokens t JOIN users u ON u.id = t.user_id JOIN roles r ON r.id = u.role_id WHERE t.hash = ",
        );
        q.bind(auth::hash_secret(secret));
        let row = q.build().fetch_optional(&self.pool).await?.ok_or(StoreError::Unauthorized("unknown token"))?;
        if row.opt_int("expires_at")?.is_some_and(|at| at <= self.now_ms()) {
            return Err(StoreError::Unauthorized("token expired"));
        }
        if row.int("enabled")? == 0 {
            return Err(StoreError::Unauthorized("user disabled"));
        }
        let user_id = row.int("id")?;
        let scope = if row.int("scoped")? != 0 { Some(people::scope_of(&self.pool, user_id).await?) } else { None };
        Ok(Principal {
            user_id: Some(user_id),
            name: row.text("name")?,
            org_id: row.int("org_id")?,
            scope,
            perms: Perms::from_bits(row.int("perms")?),
        })
    }

    /// On a store without users, creates `admin` in Super/Global with the
    /// admin role and a token, and returns the token's secret (`token` if
    /// given, else a new random one) to be shown once. Returns `None` when
    /// the store already has users.
    pub async fn bootstrap_admin(&self, token: Option<&str>) -> Result<Option<String>> {
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?;
        if users > 0 {
            return Ok(None);
        }
        if let Some(t) = token
            && (t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(StoreError::invalid("VIGIL_ADMIN_TOKEN", "must be at least 16 characters without spaces"));
        }
        let cli = Principal::cli();
        let user = self
            .create_user(
                &cli,
                NewUser {
                    name: "admin".into(),
                    org: OrgRef::Id(SUPER_GLOBAL),
                    role: RoleRef::Name("admin".into()),
                    scope: None,
                },
            )
            .await?;
        let new = NewToken { name: Some("bootstrap".into()), user_id: Some(user.id), expires_in_days: None };
        let created = self.create_token_with_secret(&cli, new, token.map(str::to_owned)).await?;
        Ok(Some(created.token_secret))
    }
}

/// Built-in orgs and roles. The orgs are inserted first into an empty
/// table, in id order, so their row ids are `parsers::BUILTIN_ORGS`'s on
/// every store; a store where that fails is refused.
async fn seed(conn: &mut AnyConnection, now: i64) -> Result<()> {
    for (id, name) in parsers::BUILTIN_ORGS {
        let mut q = Sql::new(
            "INSERT INTO orgs (name, name_key, description, enabled, builtin, created_at, updated_at) VALUES (",
        );
        let description = if name == "Super/Global" {
            "The provider's users; they see every org or a chosen subset"
        } else {
            "The provider's own network, and events no other org claims"
        };
        q.bind(name.to_owned()).push(", ").bind(name.to_lowercase()).push(", ").bind(description.to_owned());
        q.push(", 1, 1, ").bind(now).push(", ").bind(now).push(") RETURNING id");
        let got = q.build().fetch_one(&mut *conn).await?.int("id")?;
        if got != i64::from(id.0) {
            return Err(StoreError::BadRequest(format!(
                "the store gave built-in org {name} id {got}, not {id}: it must be created empty"
            )));
        }
    }
    for (name, perms) in [("admin", Perms::all()), ("analyst", Perms::analyst()), ("viewer", Perms::read_all())] {
        let mut q =
            Sql::new("INSERT INTO roles (org_id, name, name_key, perms, builtin, created_at, updated_at) VALUES (");
        q.bind(SUPER_GLOBAL).push(", ").bind(name.to_owned()).push(", ").bind(name.to_owned()).push(", ");
        q.bind(perms.bits()).push(", 1, ").bind(now).push(", ").bind(now).push(")");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_org_ids_are_store_org_ids() {
        assert_eq!(SUPER_LOCAL, i64::from(parsers::OrgId::SUPER_LOCAL.0));
        assert_eq!(SUPER_GLOBAL, i64::from(parsers::OrgId::SUPER_GLOBAL.0));
    }
}

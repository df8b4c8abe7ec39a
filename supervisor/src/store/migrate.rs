//! Versioned schema migrations. Each migration is applied once, in its own
//! transaction, and recorded in `schema_migrations`; the SQL is shared by
//! both back-ends except for the identity column, spelled `@ID`.

use sqlx::AnyConnection;

use super::error::{Result, StoreError};
use super::sql::{Backend, Sql};

/// One schema step.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// Every migration, oldest first. Never edit a released one: add another.
pub(crate) const MIGRATIONS: &[Migration] =
    &[TENANTS, NODES, EVENTS_MODULE, RETENTION, DEVICES, SILENT_COLLECTORS, CONNECTORS, DIGESTS, ENROLMENT];

const TENANTS: Migration = Migration {
    version: 1,
    name: "tenants, people, records, audit",
    statements: &[
        "CREATE TABLE orgs (
            id @ID,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            eps_limit BIGINT,
            enabled BIGINT NOT NULL DEFAULT 1,
            builtin BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE TABLE org_ip_ranges (
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            cidr TEXT NOT NULL,
            PRIMARY KEY (org_id, cidr))",
        "CREATE TABLE roles (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL,
            perms BIGINT NOT NULL,
            builtin BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (org_id, name_key))",
        "CREATE TABLE users (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            role_id BIGINT NOT NULL REFERENCES roles(id),
            enabled BIGINT NOT NULL DEFAULT 1,
            scoped BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE INDEX users_org ON users (org_id, id)",
        "CREATE TABLE user_scopes (
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            PRIMARY KEY (user_id, org_id))",
        "CREATE TABLE teams (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (org_id, name_key))",
        "CREATE TABLE team_members (
            team_id BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            PRIMARY KEY (team_id, user_id))",
        "CREATE INDEX team_members_user ON team_members (user_id)",
        "CREATE TABLE tokens (
            id @ID,
            user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            hint TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT)",
        "CREATE INDEX tokens_user ON tokens (user_id)",
        "CREATE TABLE records (
            id @ID,
            kind TEXT NOT NULL,
            org_id BIGINT REFERENCES orgs(id) ON DELETE CASCADE,
            source_ref TEXT UNIQUE,
            rule_id TEXT,
            title TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            severity BIGINT NOT NULL,
            status BIGINT NOT NULL DEFAULT 0,
            assignee_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
            hit_count BIGINT NOT NULL DEFAULT 1,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            event_ids TEXT NOT NULL DEFAULT '[]',
            created_by BIGINT REFERENCES users(id) ON DELETE SET NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE INDEX records_org_seen ON records (kind, org_id, last_seen, id)",
        "CREATE INDEX records_seen ON records (kind, last_seen, id)",
        "CREATE TABLE record_owners (
            record_id BIGINT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            team_id BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
            PRIMARY KEY (record_id, team_id))",
        "CREATE TABLE comments (
            id @ID,
            record_id BIGINT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            author_id BIGINT REFERENCES users(id) ON DELETE SET NULL,
            author_name TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at BIGINT NOT NULL)",
        "CREATE INDEX comments_record ON comments (record_id, id)",
        "CREATE TABLE audit (
            id @ID,
            at BIGINT NOT NULL,
            actor_id BIGINT,
            actor TEXT NOT NULL,
            org_id BIGINT,
            action TEXT NOT NULL,
            object_type TEXT NOT NULL,
            object_id BIGINT,
            before_json TEXT,
            after_json TEXT)",
        "CREATE INDEX audit_object ON audit (object_type, object_id, id)",
        "CREATE INDEX audit_org ON audit (org_id, id)",
    ],
};

/// The cluster's node registry. `addresses` is a JSON array of strings;
/// `state` is unregistered, active, maintenance or alert; `maintenance` is
/// the operator's flag, which holds the state at maintenance while set.
const NODES: Migration = Migration {
    version: 2,
    name: "node registry",
    statements: &[
        "CREATE TABLE nodes (
            id @ID,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            version TEXT NOT NULL DEFAULT '',
            addresses TEXT NOT NULL DEFAULT '[]',
            state TEXT NOT NULL,
            state_reason TEXT NOT NULL DEFAULT '',
            state_since_ms BIGINT NOT NULL,
            last_seen_ms BIGINT,
            guaranteed_eps BIGINT,
            maintenance BIGINT NOT NULL DEFAULT 0,
            created_ms BIGINT NOT NULL)",
        "CREATE TABLE node_transitions (
            id @ID,
            node_id BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL,
            at_ms BIGINT NOT NULL)",
        "CREATE INDEX node_transitions_node ON node_transitions (node_id, id)",
    ],
};

/// The `events` permission module (bits 28–31: create, read, update,
/// delete) for stores made before it existed: the built-in admin gets all
/// of it, analyst and viewer read. Custom roles get it when edited.
const EVENTS_MODULE: Migration = Migration {
    version: 3,
    name: "events permission",
    statements: &[
        "UPDATE roles SET perms = perms | 4026531840 WHERE builtin = 1 AND name = 'admin'",
        "UPDATE roles SET perms = perms | 536870912 WHERE builtin = 1 AND name IN ('analyst', 'viewer')",
    ],
};

/// How long each org's events are kept (days; the daily retention pass
/// deletes older date directories).
const RETENTION: Migration = Migration {
    version: 4,
    name: "org retention",
    statements: &["ALTER TABLE orgs ADD COLUMN retention_days BIGINT NOT NULL DEFAULT 90"],
};

/// The device inventory (issue #18): one row per org and identity, its
/// traffic per UTC day, and the `devices` permission module (bits 32–35)
/// for the built-in roles of stores made before it existed.
const DEVICES: Migration = Migration {
    version: 5,
    name: "device inventory",
    statements: &[
        "CREATE TABLE devices (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            identity TEXT NOT NULL,
            name TEXT,
            family TEXT NOT NULL DEFAULT '',
            product TEXT NOT NULL DEFAULT '',
            formats TEXT NOT NULL DEFAULT '[]',
            hosts TEXT NOT NULL DEFAULT '[]',
            collector TEXT NOT NULL DEFAULT '',
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            events BIGINT NOT NULL DEFAULT 0,
            bytes BIGINT NOT NULL DEFAULT 0,
            eps_milli BIGINT NOT NULL DEFAULT 0,
            expected_interval_secs BIGINT,
            usual_gap_ms BIGINT,
            active_periods BIGINT NOT NULL DEFAULT 0,
            silent_since BIGINT,
            silent_record_id BIGINT,
            retired BIGINT NOT NULL DEFAULT 0,
            within_limit BIGINT NOT NULL DEFAULT 1,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (org_id, identity))",
        "CREATE INDEX devices_seen ON devices (last_seen)",
        "CREATE INDEX devices_first ON devices (first_seen, id)",
        "CREATE TABLE device_days (
            device_id BIGINT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            day BIGINT NOT NULL,
            events BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            PRIMARY KEY (device_id, day))",
        "CREATE INDEX device_days_day ON device_days (day)",
        "UPDATE roles SET perms = perms | 64424509440 WHERE builtin = 1 AND name = 'admin'",
        "UPDATE roles SET perms = perms | 8589934592 WHERE builtin = 1 AND name IN ('analyst', 'viewer')",
    ],
};

/// A collector all of whose log sources went silent together: what the
/// node registry says of it, and the incident raised, until one reports.
const SILENT_COLLECTORS: Migration = Migration {
    version: 6,
    name: "silent collectors",
    statements: &[
        "ALTER TABLE nodes ADD COLUMN sources_silent TEXT",
        "ALTER TABLE nodes ADD COLUMN sources_silent_record_id BIGINT",
    ],
};

/// Connectors and notifications (issue #14): named connector
/// configurations (secrets sealed, never in clear), the orgs a shared one is
/// granted to, notification policies, the delivery outbox with every
/// attempt, incident tags for policy conditions, and the `connectors`
/// permission module (bits 36–39, execute bit 57) for built-in roles.
const CONNECTORS: Migration = Migration {
    version: 7,
    name: "connectors and notifications",
    statements: &[
        "ALTER TABLE records ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
        "CREATE TABLE connectors (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            config TEXT NOT NULL,
            sealed TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            is_default BIGINT NOT NULL DEFAULT 0,
            enabled BIGINT NOT NULL DEFAULT 1,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE INDEX connectors_org ON connectors (org_id, id)",
        "CREATE TABLE connector_grants (
            connector_id BIGINT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            PRIMARY KEY (connector_id, org_id))",
        "CREATE TABLE policies (
            id @ID,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            name_key TEXT NOT NULL UNIQUE,
            connector_id BIGINT NOT NULL REFERENCES connectors(id),
            triggers TEXT NOT NULL,
            min_severity BIGINT NOT NULL DEFAULT 0,
            rule_id TEXT,
            tag TEXT,
            min_count BIGINT,
            title_template TEXT NOT NULL,
            body_template TEXT NOT NULL,
            throttle_ms BIGINT NOT NULL DEFAULT 0,
            enabled BIGINT NOT NULL DEFAULT 1,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
        "CREATE INDEX policies_connector ON policies (connector_id)",
        "CREATE TABLE deliveries (
            id @ID,
            uid TEXT NOT NULL UNIQUE,
            org_id BIGINT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
            policy_id BIGINT REFERENCES policies(id) ON DELETE SET NULL,
            connector_id BIGINT NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
            record_id BIGINT,
            event TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            next_at BIGINT NOT NULL,
            last_status BIGINT,
            last_error TEXT,
            created_by TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            done_at BIGINT)",
        "CREATE INDEX deliveries_due ON deliveries (state, next_at)",
        "CREATE INDEX deliveries_org ON deliveries (org_id, id)",
        "CREATE INDEX deliveries_throttle ON deliveries (policy_id, record_id, created_at)",
        "CREATE TABLE delivery_attempts (
            id @ID,
            delivery_id BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
            at BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            status BIGINT,
            error TEXT,
            duration_ms BIGINT NOT NULL)",
        "CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id)",
        "UPDATE roles SET perms = perms | 144116218868006912 WHERE builtin = 1 AND name = 'admin'",
        "UPDATE roles SET perms = perms | 144115325514809344 WHERE builtin = 1 AND name = 'analyst'",
        "UPDATE roles SET perms = perms | 137438953472 WHERE builtin = 1 AND name = 'viewer'",
    ],
};

/// Digests (issue #14): a policy may gather its notifications for a window
/// into one. A migration of its own, so stores created by the first
/// connectors release (version 7 without the column) gain it.
const DIGESTS: Migration = Migration {
    version: 8,
    name: "notification digests",
    statements: &["ALTER TABLE policies ADD COLUMN digest_ms BIGINT NOT NULL DEFAULT 0"],
};

/// Node enrolment (issue #16): a node added with `vigil node add` has its
/// own NATS user key, a collector its org binding and event-id slot; a
/// removed node's key stays revoked.
const ENROLMENT: Migration = Migration {
    version: 9,
    name: "node enrolment",
    statements: &[
        "ALTER TABLE nodes ADD COLUMN user_key TEXT",
        "ALTER TABLE nodes ADD COLUMN bound_org BIGINT",
        "ALTER TABLE nodes ADD COLUMN slot BIGINT",
        "CREATE UNIQUE INDEX nodes_slot ON nodes (slot)",
        "CREATE TABLE node_revocations (
            user_key TEXT PRIMARY KEY,
            node TEXT NOT NULL,
            revoked_ms BIGINT NOT NULL)",
    ],
};

fn render(backend: Backend, statement: &str) -> String {
    let id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    statement.replace("@ID", id)
}

/// Applies the migrations `conn` has not seen; returns how many. Built-in
/// rows are seeded by `seed` in the same transaction as migration 1.
pub(crate) async fn run(
    conn: &mut AnyConnection,
    backend: Backend,
    now_ms: i64,
    seed: impl AsyncFnOnce(&mut AnyConnection) -> Result<()>,
) -> Result<usize> {
    use sqlx::{Connection, Executor};
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *conn).await?;
    if let Some(newest) = applied.iter().max()
        && *newest > MIGRATIONS.last().map_or(0, |m| m.version)
    {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {newest}, newer than this vigil knows; upgrade vigil"
        )));
    }
    let mut seed = Some(seed);
    let mut count = 0;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let fail = |source| StoreError::Migration { version: m.version, name: m.name, source };
        let mut tx = match backend {
            // Another process (the admin CLI) may be migrating the same
            // file: take the write lock first, then look again.
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?,
            Backend::Postgres => conn.begin().await.map_err(fail)?,
        };
        let mut again = Sql::new("SELECT version FROM schema_migrations WHERE version = ");
        again.bind(m.version);
        if again.build().fetch_optional(&mut *tx).await.map_err(fail)?.is_some() {
            continue;
        }
        for statement in m.statements {
            tx.execute(sqlx::AssertSqlSafe(render(backend, statement))).await.map_err(fail)?;
        }
        let mut q = Sql::new("INSERT INTO schema_migrations (version, name, applied_at) VALUES (");
        q.bind(m.version).push(", ").bind(m.name.to_owned()).push(", ").bind(now_ms).push(")");
        q.build().execute(&mut *tx).await.map_err(fail)?;
        if m.version == 1
            && let Some(seed) = seed.take()
        {
            seed(&mut tx).await?;
        }
        tx.commit().await.map_err(fail)?;
        count += 1;
    }
    Ok(count)
}

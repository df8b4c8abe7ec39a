//! Connector configurations, notification policies and the delivery
//! outbox (issue #14).
//!
//! A configuration belongs to one org, or to Super/Global and is then
//! *shared*: usable by the orgs it is granted to. Its secrets (endpoint
//! URLs with tokens, HMAC keys, SMTP passwords) are sealed with a key kept
//! outside the database and never leave the store in clear except to the
//! dispatcher. Org users see and use their org's configurations and the
//! shared ones granted to it, exactly like records: anything else is "not
//! found".
//!
//! Policies turn incident changes into deliveries. The delivery row is
//! written in the same transaction as the change that triggered it (the
//! transactional outbox), so a committed change always has its
//! notification queued and a rolled-back one never does; the dispatcher
//! (`crate::notify`) sends what is due and records every attempt here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use connectors::{Config, ConnectorError, Kind, SecretBox, Secrets, Template};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::{Module, Op, Principal};
use super::error::{Result, StoreError};
use super::model::{OrgRef, Page, SUPER_GLOBAL, fmt_ms, present};
use super::records::{MAX_LIMIT, parse_severity};
use super::sql::{RowExt, Sql};
use super::{AuditRow, Store, check_lookup, check_name, insert_id};

/// Connector settings the store and the dispatcher share (`[connectors]`).
#[derive(Clone, Debug)]
pub struct ConnectorSettings {
    /// The key secrets are sealed with; without one, configurations that
    /// hold secrets cannot be created or used.
    pub key: Option<Arc<SecretBox>>,
    /// Allow targets on loopback, private, link-local and metadata
    /// addresses (and plain http).
    pub allow_private_targets: bool,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; each further one doubles, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Deliveries sent at once.
    pub concurrency: usize,
}

impl Default for ConnectorSettings {
    fn default() -> ConnectorSettings {
        ConnectorSettings {
            key: None,
            allow_private_targets: false,
            max_attempts: 8,
            retry_base_ms: 5_000,
            retry_max_ms: 15 * 60_000,
            concurrency: 16,
        }
    }
}

/// `[connectors]` in the configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorsConfig {
    /// Allow targets on loopback, private, link-local and cloud-metadata
    /// addresses, and plain http (off: a tenant's configuration cannot
    /// reach the SIEM's own network).
    pub allow_private_targets: bool,
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, seconds (doubling, with jitter).
    pub retry_base_secs: f64,
    /// Longest retry delay, seconds.
    pub retry_max_secs: f64,
    /// Deliveries sent at once.
    pub concurrency: usize,
}

impl Default for ConnectorsConfig {
    fn default() -> ConnectorsConfig {
        let d = ConnectorSettings::default();
        ConnectorsConfig {
            allow_private_targets: d.allow_private_targets,
            max_attempts: d.max_attempts,
            retry_base_secs: d.retry_base_ms as f64 / 1000.0,
            retry_max_secs: d.retry_max_ms as f64 / 1000.0,
            concurrency: d.concurrency,
        }
    }
}

impl ConnectorsConfig {
    /// The settings, with the sealing key from `VIGIL_CONNECTOR_KEY` or
    /// `data_dir/connectors.key` (created 0600 when missing).
    pub fn settings(&self, data_dir: &std::path::Path) -> Result<ConnectorSettings> {
        let ms = |field: &'static str, secs: f64| {
            if secs.is_finite() && (0.001..=86_400.0).contains(&secs) {
                Ok((secs * 1000.0) as u64)
            } else {
                Err(StoreError::invalid(field, "must be between 0.001 and 86400 seconds"))
            }
        };
        if !(1..=100).contains(&self.max_attempts) {
            return Err(StoreError::invalid("max_attempts", "must be between 1 and 100"));
        }
        if !(1..=1024).contains(&self.concurrency) {
            return Err(StoreError::invalid("concurrency", "must be between 1 and 1024"));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::BadRequest(format!("cannot create {}: {e}", data_dir.display())))?;
        let key = SecretBox::load_or_create(data_dir).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        Ok(ConnectorSettings {
            key: Some(Arc::new(key)),
            allow_private_targets: self.allow_private_targets,
            max_attempts: self.max_attempts,
            retry_base_ms: ms("retry_base_secs", self.retry_base_secs)?,
            retry_max_ms: ms("retry_max_secs", self.retry_max_secs)?,
            concurrency: self.concurrency,
        })
    }
}

/// A connector configuration or policy named by id or by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NameRef {
    /// Its id.
    Id(i64),
    /// Its name (case-insensitive).
    Name(String),
}

impl NameRef {
    /// From a command-line argument: digits are an id.
    pub fn parse(s: &str) -> NameRef {
        s.parse::<i64>().map(NameRef::Id).unwrap_or_else(|_| NameRef::Name(s.to_owned()))
    }

    fn push_where(&self, q: &mut Sql, table: &str) -> Result<()> {
        match self {
            NameRef::Id(id) => q.push(&format!(" AND {table}.id = ")).bind(*id),
            NameRef::Name(name) => {
                check_lookup("name", name)?;
                q.push(&format!(" AND {table}.name_key = ")).bind(name.to_lowercase())
            }
        };
        Ok(())
    }
}

/// A connector configuration as the API shows it: never a secret.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorInfo {
    /// Its id.
    pub id: i64,
    /// The owning org (Super/Global: shared).
    pub org_id: i64,
    /// The owning org's name.
    pub org: String,
    /// Its name (unique).
    pub name: String,
    /// webhook, slack, teams, email or syslog.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Where it sends, masked: scheme, host and port only.
    pub target: String,
    /// Whether a secret (HMAC key, password) is set; it is never shown.
    pub secret_set: bool,
    /// The non-secret settings.
    pub config: Config,
    /// The org's default configuration for manual actions.
    pub default: bool,
    /// Disabled configurations send nothing.
    pub enabled: bool,
    /// Owned by Super/Global and usable by the orgs in `orgs`.
    pub shared: bool,
    /// For shared configurations: the orgs granted use of it that the
    /// caller sees.
    pub orgs: Vec<i64>,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

/// `POST /connectors`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnector {
    /// A unique name.
    pub name: String,
    /// The owning org (default: the caller's; Super/Global: shared).
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
    /// The connector type.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The endpoint URL (webhook, Slack, Teams) or SMTP URL (email): a
    /// secret, sealed at rest.
    #[serde(default, deserialize_with = "present")]
    pub url: Option<String>,
    /// HMAC key (webhook) or SMTP password (email): sealed at rest.
    #[serde(default, deserialize_with = "present")]
    pub secret: Option<String>,
    /// Extra request headers (webhook).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Recipients (email).
    #[serde(default)]
    pub to: Vec<String>,
    /// Sender (email).
    #[serde(default, deserialize_with = "present")]
    pub from: Option<String>,
    /// `tcp://`, `udp://` or `tls://HOST:PORT` (syslog).
    #[serde(default, deserialize_with = "present")]
    pub target: Option<String>,
    /// A PEM CA bundle on the server (Super/Global administrators only).
    #[serde(default, deserialize_with = "present")]
    pub ca_file: Option<String>,
    /// Skip TLS certificate verification (dangerous).
    #[serde(default)]
    pub skip_tls_verify: bool,
    /// Per-attempt timeout, milliseconds.
    #[serde(default, deserialize_with = "present")]
    pub timeout_ms: Option<u64>,
    /// The org's default configuration for manual actions.
    #[serde(default)]
    pub default: bool,
    /// Shared configurations: the orgs that may use it.
    #[serde(default)]
    pub orgs: Vec<OrgRef>,
}

impl NewConnector {
    fn parts(&self) -> (Config, Secrets) {
        let config = Config {
            headers: self.headers.clone(),
            to: self.to.clone(),
            from: self.from.clone(),
            target: self.target.clone(),
            ca_file: self.ca_file.clone(),
            skip_tls_verify: self.skip_tls_verify,
            timeout_ms: self.timeout_ms,
        };
        (config, Secrets { url: self.url.clone(), secret: self.secret.clone() })
    }
}

/// `PATCH /connectors/{id}`: what is given changes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorPatch {
    /// Enable or disable it.
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
    /// Make it (or stop it being) the org's default.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<bool>,
    /// A new endpoint or SMTP URL.
    #[serde(default, deserialize_with = "present")]
    pub url: Option<String>,
    /// A new secret; `""` removes it.
    #[serde(default, deserialize_with = "present")]
    pub secret: Option<String>,
    /// New request headers (replacing the old).
    #[serde(default, deserialize_with = "present")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// New recipients.
    #[serde(default, deserialize_with = "present")]
    pub to: Option<Vec<String>>,
    /// A new syslog target.
    #[serde(default, deserialize_with = "present")]
    pub target: Option<String>,
    /// A new per-attempt timeout.
    #[serde(default, deserialize_with = "present")]
    pub timeout_ms: Option<u64>,
    /// Shared configurations: the orgs that may use it (replacing the old).
    #[serde(default, deserialize_with = "present")]
    pub orgs: Option<Vec<OrgRef>>,
}

/// What sets a policy off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// An incident was created.
    Created,
    /// Its hit count grew (past `min_count`, when set).
    Updated,
    /// An analyst changed its status.
    Status,
    /// An analyst changed its severity.
    Severity,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: [Trigger; 4] = [Trigger::Created, Trigger::Updated, Trigger::Status, Trigger::Severity];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Created => "created",
            Trigger::Updated => "updated",
            Trigger::Status => "status",
            Trigger::Severity => "severity",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Result<Trigger> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| StoreError::invalid("on", format!("{s:?} is not one of created, updated, status, severity")))
    }
}

/// A notification policy.
#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    /// Its id.
    pub id: i64,
    /// The org whose incidents it watches (Super/Global: every org).
    pub org_id: i64,
    /// That org's name.
    pub org: String,
    /// Its name (unique).
    pub name: String,
    /// The configuration it sends with.
    pub connector_id: i64,
    /// That configuration's name.
    pub connector: String,
    /// What sets it off.
    pub on: Vec<Trigger>,
    /// Incidents below this severity are ignored.
    pub min_severity: &'static str,
    /// Only incidents of this rule (`*` at the end: a prefix).
    pub rule: Option<String>,
    /// Only incidents with this tag (case-insensitive).
    pub tag: Option<String>,
    /// `updated` fires when the hit count reaches this.
    pub min_count: Option<i64>,
    /// The title template.
    pub title_template: String,
    /// The body template.
    pub body_template: String,
    /// At most one notification per incident in this many seconds (0: no
    /// limit).
    pub throttle_secs: i64,
    /// Incidents are gathered for this many seconds and sent as one digest
    /// (0: each on its own).
    pub digest_secs: i64,
    /// Disabled policies notify nobody.
    pub enabled: bool,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

/// `POST /policies`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    /// A unique name.
    pub name: String,
    /// The org whose incidents it watches (default: the caller's;
    /// Super/Global: every org).
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
    /// The configuration to send with.
    pub connector: NameRef,
    /// What sets it off (at least one).
    pub on: Vec<Trigger>,
    /// Lowest severity that notifies (default: info, everything).
    #[serde(default, deserialize_with = "present")]
    pub min_severity: Option<String>,
    /// Only incidents of this rule (`*` at the end: a prefix).
    #[serde(default, deserialize_with = "present")]
    pub rule: Option<String>,
    /// Only incidents with this tag.
    #[serde(default, deserialize_with = "present")]
    pub tag: Option<String>,
    /// `updated` fires when the hit count reaches this.
    #[serde(default, deserialize_with = "present")]
    pub min_count: Option<i64>,
    /// The title template (default: [`Template::DEFAULT_TITLE`]).
    #[serde(default, deserialize_with = "present")]
    pub title_template: Option<String>,
    /// The body template (default: [`Template::DEFAULT_BODY`]).
    #[serde(default, deserialize_with = "present")]
    pub body_template: Option<String>,
    /// At most one notification per incident in this many seconds.
    #[serde(default, deserialize_with = "present")]
    pub throttle_secs: Option<i64>,
    /// Gather incidents for this many seconds into one digest.
    #[serde(default, deserialize_with = "present")]
    pub digest_secs: Option<i64>,
}

/// `PATCH /policies/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    /// Enable or disable it.
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
    /// New triggers.
    #[serde(default, deserialize_with = "present")]
    pub on: Option<Vec<Trigger>>,
    /// A new lowest severity.
    #[serde(default, deserialize_with = "present")]
    pub min_severity: Option<String>,
    /// A new title template.
    #[serde(default, deserialize_with = "present")]
    pub title_template: Option<String>,
    /// A new body template.
    #[serde(default, deserialize_with = "present")]
    pub body_template: Option<String>,
    /// A new throttle window.
    #[serde(default, deserialize_with = "present")]
    pub throttle_secs: Option<i64>,
    /// A new digest window (0: no digest).
    #[serde(default, deserialize_with = "present")]
    pub digest_secs: Option<i64>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Accepted by the receiver.
    Delivered,
    /// Refused for good (a 4xx, a bad configuration).
    Failed,
    /// Out of attempts (dead-lettered).
    Dead,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 4] =
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed, DeliveryState::Dead];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| {
            StoreError::invalid("state", format!("{s:?} is not one of pending, delivered, failed, dead"))
        })
    }
}

/// One notification on its way, with its attempts.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// Its row id.
    pub id: i64,
    /// The stable delivery id receivers see (`X-Vigil-Delivery`).
    pub delivery_id: String,
    /// The incident's org.
    pub org_id: i64,
    /// That org's name.
    pub org: String,
    /// The policy that queued it (`null`: a manual action).
    pub policy_id: Option<i64>,
    /// The configuration it goes through.
    pub connector_id: i64,
    /// That configuration's name.
    pub connector: String,
    /// The incident.
    pub incident_id: Option<i64>,
    /// created, updated, status, severity or manual.
    pub event: String,
    /// The rendered title.
    pub title: String,
    /// pending, delivered, failed or dead.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// The last attempt's status code.
    pub last_status: Option<i64>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Who queued it: a policy or a user.
    pub created_by: String,
    /// When it was queued.
    pub created_at: String,
    /// When it was delivered, failed or dead-lettered.
    pub done_at: Option<String>,
    /// Every attempt, oldest first (single-delivery responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<Attempt>>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// When it started.
    pub at: String,
    /// delivered, retry or failed.
    pub outcome: String,
    /// The receiver's status code (HTTP; SMTP reply code).
    pub status: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

/// A page of a list ordered by id: `GET /connectors`, `GET /policies`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–1000 (default 100).
    #[serde(default)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Appends ` AND col > cursor ORDER BY col LIMIT n+1`; returns n.
    fn push(&self, q: &mut Sql, col: &str) -> Result<i64> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        if let Some(cursor) = &self.cursor {
            let id: i64 = cursor.parse().map_err(|_| StoreError::invalid("cursor", "not a cursor from this list"))?;
            q.push(&format!(" AND {col} > ")).bind(id);
        }
        q.push(&format!(" ORDER BY {col} LIMIT ")).bind(limit + 1);
        Ok(limit)
    }
}

/// The page of `items` (fetched with one extra to tell whether more
/// follow) and the cursor to the next.
fn page_of<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(|i| id(i).to_string()) } else { None };
    Page { items, next_cursor }
}

/// `GET /deliveries` filters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// An org, by id or name.
    #[serde(default)]
    pub org: Option<String>,
    /// pending, delivered, failed or dead.
    #[serde(default)]
    pub state: Option<String>,
    /// An incident id.
    #[serde(default)]
    pub incident: Option<i64>,
    /// A policy id.
    #[serde(default)]
    pub policy: Option<i64>,
    /// Page size, 1–1000 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `POST /incidents/{id}/actions`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// The configuration to run (default: the org's default one).
    #[serde(default, deserialize_with = "present")]
    pub connector: Option<NameRef>,
    /// A title template instead of the default.
    #[serde(default, deserialize_with = "present")]
    pub title_template: Option<String>,
    /// A body template instead of the default.
    #[serde(default, deserialize_with = "present")]
    pub body_template: Option<String>,
}

/// What a queued delivery carries: rendered when queued, so a retry after
/// a restart sends what the change said.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub event: String,
    pub title: String,
    pub body: String,
    pub org: String,
    pub severity: String,
    pub rule: String,
    pub incident: serde_json::Value,
    pub at_ms: i64,
}

/// A delivery the dispatcher has claimed.
#[derive(Debug)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// The stable delivery id.
    pub uid: String,
    /// Attempts before this one.
    pub attempts: i64,
    pub(crate) payload: Payload,
    /// The configuration: id, type, settings, sealed secrets, enabled.
    pub(crate) connector_id: i64,
    pub(crate) kind: String,
    pub(crate) config: String,
    pub(crate) sealed: String,
    pub(crate) enabled: bool,
}

/// A configuration ready to run: what the dispatcher and the test
/// endpoint build a connector from.
pub struct Runnable {
    /// Its id.
    pub id: i64,
    /// Its org.
    pub org_id: i64,
    /// Its type.
    pub kind: Kind,
    /// Its settings.
    pub config: Config,
    /// Its secrets, opened.
    pub secrets: Secrets,
}

impl std::fmt::Debug for Runnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runnable").field("id", &self.id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// The part of an incident change policies look at.
pub(crate) struct Change<'a> {
    pub record_id: i64,
    pub org_id: i64,
    pub org: &'a str,
    pub created: bool,
    pub count_before: i64,
    pub count_after: i64,
    pub status_changed: bool,
    pub severity_changed: bool,
    pub severity: i64,
    pub rule: &'a str,
    pub tags: &'a [String],
    /// The incident as templates and receivers see it.
    pub incident: serde_json::Value,
}

/// An enabled policy, its templates compiled.
pub(crate) struct ActivePolicy {
    id: i64,
    org_id: i64,
    connector_id: i64,
    name: String,
    on: Vec<Trigger>,
    min_severity: i64,
    rule: Option<String>,
    tag: Option<String>,
    min_count: Option<i64>,
    throttle_ms: i64,
    digest_ms: i64,
    template: Arc<Template>,
}

impl ActivePolicy {
    /// The trigger of `c` this policy fires on, if any.
    fn fires(&self, c: &Change<'_>) -> Option<Trigger> {
        if self.org_id != SUPER_GLOBAL && self.org_id != c.org_id {
            return None;
        }
        if c.severity < self.min_severity {
            return None;
        }
        if let Some(rule) = &self.rule {
            let hit = match rule.strip_suffix('*') {
                Some(prefix) => c.rule.starts_with(prefix),
                None => c.rule == rule,
            };
            if !hit {
                return None;
            }
        }
        if let Some(tag) = &self.tag
            && !c.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
        {
            return None;
        }
        self.on.iter().copied().find(|t| match t {
            Trigger::Created => c.created,
            Trigger::Updated => {
                !c.created
                    && c.count_after > c.count_before
                    && self.min_count.is_none_or(|m| c.count_before < m && c.count_after >= m)
            }
            Trigger::Status => c.status_changed,
            Trigger::Severity => c.severity_changed,
        })
    }
}

/// Compiled templates by policy id and change time, so a batch does not
/// compile them again.
#[derive(Default)]
pub(crate) struct TemplateCache(Mutex<HashMap<(i64, i64), Arc<Template>>>);

const CONNECTOR_COLUMNS: &str = "c.id, c.org_id, o.name AS org_name, c.name, c.kind, c.config, c.sealed, c.target, \
     c.is_default, c.enabled, c.created_at, c.updated_at";

const POLICY_COLUMNS: &str = "p.id, p.org_id, o.name AS org_name, p.name, p.connector_id, c.name AS connector_name, \
     p.triggers, p.min_severity, p.rule_id, p.tag, p.min_count, p.title_template, p.body_template, p.throttle_ms, \
     p.digest_ms, p.enabled, p.created_at, p.updated_at";

const DELIVERY_COLUMNS: &str = "d.id, d.uid, d.org_id, o.name AS org_name, d.policy_id, d.connector_id, \
     c.name AS connector_name, d.record_id, d.event, d.payload, d.state, d.attempts, d.next_at, d.last_status, \
     d.last_error, d.created_by, d.created_at, d.done_at";

fn invalid(e: ConnectorError) -> StoreError {
    match e {
        ConnectorError::Invalid { field, message } => StoreError::invalid(field, message),
        ConnectorError::Template { part, message } => StoreError::invalid(
            if part == "title" { "title_template" } else { "body_template" },
            format!("template {part}: {message}"),
        ),
        other => StoreError::BadRequest(other.to_string()),
    }
}

fn kind_of(s: &str) -> Result<Kind> {
    Kind::parse(s).map_err(|_| StoreError::Corrupt(format!("connector type {s:?}")))
}

/// A fresh delivery id: 128 random bits, hex.
fn new_uid() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Appends the visibility of connector `c` (alias) for `who`: their org's
/// configurations and the shared ones granted to it; Super/Global users
/// see their scope's and the shared ones.
fn connector_filter(who: &Principal, q: &mut Sql) {
    if who.is_super() {
        who.org_filter(q, "c.org_id");
    } else {
        q.push(" AND (c.org_id = ").bind(who.org_id);
        q.push(" OR (c.org_id = ").bind(SUPER_GLOBAL);
        q.push(" AND EXISTS (SELECT 1 FROM connector_grants g WHERE g.connector_id = c.id AND g.org_id = ");
        q.bind(who.org_id).push(")))");
    }
}

impl Store {
    fn key(&self) -> Result<&SecretBox> {
        self.config.connectors.key.as_deref().ok_or_else(|| {
            StoreError::BadRequest(format!(
                "no connector key: set {} or let vigil create {} in the data directory",
                SecretBox::ENV,
                SecretBox::FILE
            ))
        })
    }

    fn connector_settings(&self) -> connectors::Settings {
        connectors::Settings { allow_private_targets: self.config.connectors.allow_private_targets }
    }

    async fn grants(&self, conn: &mut AnyConnection, who: &Principal, id: i64) -> Result<Vec<i64>> {
        let mut q = Sql::new("SELECT org_id FROM connector_grants g WHERE connector_id = ");
        q.bind(id);
        who.org_filter(&mut q, "g.org_id");
        q.push(" ORDER BY org_id");
        q.build().fetch_all(conn).await?.iter().map(|r| r.int("org_id")).collect()
    }

    async fn connector_info(&self, conn: &mut AnyConnection, who: &Principal, r: &AnyRow) -> Result<ConnectorInfo> {
        let id = r.int("id")?;
        let org_id = r.int("org_id")?;
        let config: Config = serde_json::from_str(&r.text("config")?)
            .map_err(|e| StoreError::Corrupt(format!("connector {id} config: {e}")))?;
        let sealed = r.text("sealed")?;
        // Whether a secret is set is worth showing; opening needs the key,
        // so a store without it still lists what it has.
        let secret_set = self.key().ok().and_then(|k| k.open(&sealed).ok()).is_some_and(|s| s.secret.is_some());
        Ok(ConnectorInfo {
            id,
            org_id,
            org: r.text("org_name")?,
            name: r.text("name")?,
            kind: kind_of(&r.text("kind")?)?,
            target: r.text("target")?,
            secret_set,
            config,
            default: r.int("is_default")? != 0,
            enabled: r.int("enabled")? != 0,
            shared: org_id == SUPER_GLOBAL,
            orgs: if org_id == SUPER_GLOBAL { self.grants(conn, who, id).await? } else { Vec::new() },
            created_at: fmt_ms(r.int("created_at")?),
            updated_at: fmt_ms(r.int("updated_at")?),
        })
    }

    /// The row of connector `r` as `who` sees it.
    async fn connector_row(&self, conn: &mut AnyConnection, who: &Principal, r: &NameRef) -> Result<AnyRow> {
        let mut q = Sql::new(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors c JOIN orgs o ON o.id = c.org_id WHERE 1 = 1"
        ));
        r.push_where(&mut q, "c")?;
        connector_filter(who, &mut q);
        q.build().fetch_optional(conn).await?.ok_or(StoreError::NotFound("connector"))
    }

    /// `who` may change connector rows of `org` only when it is their own
    /// org, or they are a Super/Global user who sees it.
    fn require_owner(who: &Principal, org: i64) -> Result<()> {
        if who.is_super() || who.org_id == org { Ok(()) } else { Err(StoreError::NotFound("connector")) }
    }

    async fn resolve_grants(&self, conn: &mut AnyConnection, who: &Principal, orgs: &[OrgRef]) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(orgs.len());
        for r in orgs {
            let id = self.resolve_org(conn, who, r).await?;
            if id == SUPER_GLOBAL {
                return Err(StoreError::invalid("orgs", "Super/Global uses its own configurations without a grant"));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    async fn write_grants(&self, conn: &mut AnyConnection, id: i64, orgs: &[i64]) -> Result<()> {
        let mut q = Sql::new("DELETE FROM connector_grants WHERE connector_id = ");
        q.bind(id);
        q.build().execute(&mut *conn).await?;
        for org in orgs {
            let mut q = Sql::new("INSERT INTO connector_grants (connector_id, org_id) VALUES (");
            q.bind(id).push(", ").bind(*org).push(")");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn clear_default(&self, conn: &mut AnyConnection, org: i64, except: i64) -> Result<()> {
        let mut q = Sql::new("UPDATE connectors SET is_default = 0 WHERE org_id = ");
        q.bind(org).push(" AND id <> ").bind(except);
        q.build().execute(conn).await?;
        Ok(())
    }

    /// Checks what only a provider administrator may set: a CA file is a
    /// path on the server, so naming one reveals whether files exist.
    fn check_server_paths(who: &Principal, config: &Config) -> Result<()> {
        if config.ca_file.is_some() && !who.is_unscoped_super() {
            return Err(StoreError::forbidden("only Super/Global users who see every org may set ca_file"));
        }
        Ok(())
    }

    /// Creates a connector configuration; its secrets are sealed.
    pub async fn create_connector(&self, who: &Principal, new: NewConnector) -> Result<ConnectorInfo> {
        who.require(Module::Connectors, Op::Create)?;
        let key = check_name("name", &new.name, 128)?;
        let (config, secrets) = new.parts();
        // Before anything reads the file.
        Self::check_server_paths(who, &config)?;
        connectors::validate(new.kind, &config, &secrets).map_err(invalid)?;
        let sealed = self.key()?.seal(&secrets).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        let target = match new.kind {
            Kind::Syslog => config.target.clone().unwrap_or_default(),
            _ => secrets.masked_url().unwrap_or_default(),
        };
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = match &new.org {
            Some(r) => self.resolve_org(w.conn(), who, r).await?,
            None => who.org_id,
        };
        Self::require_owner(who, org)?;
        if org != SUPER_GLOBAL && !new.orgs.is_empty() {
            return Err(StoreError::invalid("orgs", "only shared (Super/Global) configurations are granted to orgs"));
        }
        let grants = self.resolve_grants(w.conn(), who, &new.orgs).await?;
        let config_json = serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut q = Sql::new(
            "INSERT INTO connectors (org_id, name, name_key, kind, config, sealed, target, is_default, enabled, \
             created_at, updated_at) VALUES (",
        );
        q.bind(org).push(", ").bind(new.name.clone()).push(", ").bind(key).push(", ");
        q.bind(new.kind.as_str().to_owned()).push(", ").bind(config_json).push(", ").bind(sealed).push(", ");
        q.bind(target).push(", ").bind(i64::from(new.default)).push(", 1, ").bind(now).push(", ").bind(now);
        q.push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("a connector named {:?} exists", new.name)).await?;
        if new.default {
            self.clear_default(w.conn(), org, id).await?;
        }
        self.write_grants(w.conn(), id, &grants).await?;
        let row = self.connector_row(w.conn(), &Principal::cli(), &NameRef::Id(id)).await?;
        let info = self.connector_info(w.conn(), who, &row).await?;
        let after = serde_json::to_value(&info).unwrap_or_default();
        w.finish(now, who, AuditRow::new(Some(org), "create", "connector", Some(id), None, Some(after))).await?;
        Ok(info)
    }

    /// A page of the configurations `who` sees, by id.
    pub async fn list_connectors(&self, who: &Principal, page: PageQuery) -> Result<Page<ConnectorInfo>> {
        who.require(Module::Connectors, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(&format!(
            "SELECT {CONNECTOR_COLUMNS} FROM connectors c JOIN orgs o ON o.id = c.org_id WHERE 1 = 1"
        ));
        connector_filter(who, &mut q);
        let limit = page.push(&mut q, "c.id")?;
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            items.push(self.connector_info(&mut conn, who, r).await?);
        }
        Ok(page_of(items, limit, |c| c.id))
    }

    /// One configuration `who` sees.
    pub async fn get_connector(&self, who: &Principal, r: &NameRef) -> Result<ConnectorInfo> {
        who.require(Module::Connectors, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let row = self.connector_row(&mut conn, who, r).await?;
        self.connector_info(&mut conn, who, &row).await
    }

    /// Changes a configuration; secrets given are sealed again.
    pub async fn update_connector(&self, who: &Principal, r: &NameRef, patch: ConnectorPatch) -> Result<ConnectorInfo> {
        who.require(Module::Connectors, Op::Update)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let row = self.connector_row(w.conn(), who, r).await?;
        let id = row.int("id")?;
        let org = row.int("org_id")?;
        Self::require_owner(who, org)?;
        let before = self.connector_info(w.conn(), who, &row).await?;
        let kind = before.kind;
        let mut config = before.config.clone();
        let mut secrets = self.key()?.open(&row.text("sealed")?).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if let Some(url) = &patch.url {
            secrets.url = Some(url.clone());
        }
        if let Some(secret) = &patch.secret {
            secrets.secret = (!secret.is_empty()).then(|| secret.clone());
        }
        if let Some(h) = &patch.headers {
            config.headers = h.clone();
        }
        if let Some(to) = &patch.to {
            config.to = to.clone();
        }
        if let Some(t) = &patch.target {
            config.target = Some(t.clone());
        }
        if let Some(t) = patch.timeout_ms {
            config.timeout_ms = Some(t);
        }
        connectors::validate(kind, &config, &secrets).map_err(invalid)?;
        if patch.orgs.is_some() && org != SUPER_GLOBAL {
            return Err(StoreError::invalid("orgs", "only shared (Super/Global) configurations are granted to orgs"));
        }
        let sealed = self.key()?.seal(&secrets).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        let target = match kind {
            Kind::Syslog => config.target.clone().unwrap_or_default(),
            _ => secrets.masked_url().unwrap_or_default(),
        };
        let config_json = serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut q = Sql::new("UPDATE connectors SET updated_at = ");
        q.bind(now).push(", config = ").bind(config_json).push(", sealed = ").bind(sealed);
        q.push(", target = ").bind(target);
        if let Some(e) = patch.enabled {
            q.push(", enabled = ").bind(i64::from(e));
        }
        if let Some(d) = patch.default {
            q.push(", is_default = ").bind(i64::from(d));
        }
        q.push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        if patch.default == Some(true) {
            self.clear_default(w.conn(), org, id).await?;
        }
        if let Some(orgs) = &patch.orgs {
            let mut grants = self.resolve_grants(w.conn(), who, orgs).await?;
            // A scoped administrator replaces only the grants it sees.
            if who.scope.is_some() {
                let mut q = Sql::new("SELECT org_id FROM connector_grants WHERE connector_id = ");
                q.bind(id);
                for r in q.build().fetch_all(w.conn()).await? {
                    let o = r.int("org_id")?;
                    if !who.sees_org(o) && !grants.contains(&o) {
                        grants.push(o);
                    }
                }
            }
            self.write_grants(w.conn(), id, &grants).await?;
        }
        let row = self.connector_row(w.conn(), &Principal::cli(), &NameRef::Id(id)).await?;
        let after = self.connector_info(w.conn(), who, &row).await?;
        w.finish(now, who, AuditRow::update(Some(org), "connector", id, &before, &after)).await?;
        Ok(after)
    }

    /// Deletes a configuration and its pending deliveries; refused while a
    /// policy uses it.
    pub async fn delete_connector(&self, who: &Principal, r: &NameRef) -> Result<()> {
        who.require(Module::Connectors, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let row = self.connector_row(w.conn(), who, r).await?;
        let id = row.int("id")?;
        let org = row.int("org_id")?;
        Self::require_owner(who, org)?;
        let mut q = Sql::new("SELECT name FROM policies WHERE connector_id = ");
        q.bind(id).push(" ORDER BY id LIMIT 1");
        if let Some(p) = q.build().fetch_optional(w.conn()).await? {
            return Err(StoreError::Conflict(format!(
                "policy {:?} sends with this configuration; remove or change it first",
                p.text("name")?
            )));
        }
        let before = self.connector_info(w.conn(), who, &row).await?;
        let mut q = Sql::new("DELETE FROM connectors WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        let before = serde_json::to_value(&before).unwrap_or_default();
        w.finish(now, who, AuditRow::new(Some(org), "delete", "connector", Some(id), Some(before), None)).await
    }

    /// A configuration `who` may execute, its secrets opened: for the
    /// health check. Audited as an execution.
    pub async fn connector_for_test(&self, who: &Principal, r: &NameRef) -> Result<Runnable> {
        who.require(Module::Connectors, Op::Execute)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let row = self.connector_row(w.conn(), who, r).await?;
        let runnable = self.runnable(&row)?;
        let audit = AuditRow::new(Some(runnable.org_id), "test", "connector", Some(runnable.id), None, None);
        w.finish(now, who, audit).await?;
        Ok(runnable)
    }

    fn runnable(&self, row: &AnyRow) -> Result<Runnable> {
        let id = row.int("id")?;
        Ok(Runnable {
            id,
            org_id: row.int("org_id")?,
            kind: kind_of(&row.text("kind")?)?,
            config: serde_json::from_str(&row.text("config")?)
                .map_err(|e| StoreError::Corrupt(format!("connector {id} config: {e}")))?,
            secrets: self.key()?.open(&row.text("sealed")?).map_err(|e| StoreError::BadRequest(e.to_string()))?,
        })
    }

    /// Builds the connector of `r` (for its health check).
    pub fn build_connector(&self, r: &Runnable) -> Result<Box<dyn connectors::Connector>> {
        connectors::build(r.kind, &r.config, &r.secrets, self.connector_settings()).map_err(invalid)
    }

    // ---- policies ----

    fn policy(r: &AnyRow) -> Result<Policy> {
        let id = r.int("id")?;
        let on: Vec<Trigger> = serde_json::from_str(&r.text("triggers")?)
            .map_err(|e| StoreError::Corrupt(format!("policy {id} triggers: {e}")))?;
        let sev = usize::try_from(r.int("min_severity")?).ok().and_then(|i| rules::Severity::ALL.get(i));
        Ok(Policy {
            id,
            org_id: r.int("org_id")?,
            org: r.text("org_name")?,
            name: r.text("name")?,
            connector_id: r.int("connector_id")?,
            connector: r.text("connector_name")?,
            on,
            min_severity: sev.map_or("info", |s| s.as_str()),
            rule: r.opt_text("rule_id")?,
            tag: r.opt_text("tag")?,
            min_count: r.opt_int("min_count")?,
            title_template: r.text("title_template")?,
            body_template: r.text("body_template")?,
            throttle_secs: r.int("throttle_ms")? / 1000,
            digest_secs: r.int("digest_ms")? / 1000,
            enabled: r.int("enabled")? != 0,
            created_at: fmt_ms(r.int("created_at")?),
            updated_at: fmt_ms(r.int("updated_at")?),
        })
    }

    async fn policy_row(&self, conn: &mut AnyConnection, who: &Principal, r: &NameRef) -> Result<AnyRow> {
        let mut q = Sql::new(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies p JOIN orgs o ON o.id = p.org_id \
             JOIN connectors c ON c.id = p.connector_id WHERE 1 = 1"
        ));
        r.push_where(&mut q, "p")?;
        who.org_filter(&mut q, "p.org_id");
        q.build().fetch_optional(conn).await?.ok_or(StoreError::NotFound("policy"))
    }

    fn check_triggers(on: &[Trigger]) -> Result<String> {
        if on.is_empty() {
            return Err(StoreError::invalid("on", "name at least one of created, updated, status, severity"));
        }
        let mut on = on.to_vec();
        on.dedup();
        serde_json::to_string(&on).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    fn check_throttle(secs: Option<i64>) -> Result<i64> {
        match secs {
            None => Ok(0),
            Some(s) if (0..=30 * 86_400).contains(&s) => Ok(s * 1000),
            Some(_) => Err(StoreError::invalid("throttle_secs", "must be between 0 and 2592000 (30 days)")),
        }
    }

    fn check_digest(secs: Option<i64>) -> Result<i64> {
        match secs {
            None => Ok(0),
            Some(s) if (0..=86_400).contains(&s) => Ok(s * 1000),
            Some(_) => Err(StoreError::invalid("digest_secs", "must be between 0 and 86400 (a day)")),
        }
    }

    /// Creates a notification policy; its templates are compiled now, so a
    /// mistake is reported here and not when an incident comes.
    pub async fn create_policy(&self, who: &Principal, new: NewPolicy) -> Result<Policy> {
        who.require(Module::Connectors, Op::Create)?;
        let key = check_name("name", &new.name, 128)?;
        let triggers = Self::check_triggers(&new.on)?;
        let min_severity = match &new.min_severity {
            Some(s) => parse_severity("min_severity", s)?,
            None => 0,
        };
        for (field, v) in [("rule", &new.rule), ("tag", &new.tag)] {
            if let Some(v) = v {
                check_name(field, v, 256)?;
            }
        }
        if new.min_count.is_some_and(|c| c < 1) {
            return Err(StoreError::invalid("min_count", "must be at least 1"));
        }
        let throttle_ms = Self::check_throttle(new.throttle_secs)?;
        let digest_ms = Self::check_digest(new.digest_secs)?;
        let title = new.title_template.clone().unwrap_or_else(|| Template::DEFAULT_TITLE.to_owned());
        let body = new.body_template.clone().unwrap_or_else(|| Template::DEFAULT_BODY.to_owned());
        Template::compile(&title, &body).map_err(invalid)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = match &new.org {
            Some(r) => self.resolve_org(w.conn(), who, r).await?,
            None => who.org_id,
        };
        if !who.is_super() && org != who.org_id {
            return Err(StoreError::NotFound("organization"));
        }
        let connector = self.usable_connector(w.conn(), who, &new.connector, org).await?;
        let mut q = Sql::new(
            "INSERT INTO policies (org_id, name, name_key, connector_id, triggers, min_severity, rule_id, tag, \
             min_count, title_template, body_template, throttle_ms, digest_ms, enabled, created_at, updated_at) \
             VALUES (",
        );
        q.bind(org).push(", ").bind(new.name.clone()).push(", ").bind(key).push(", ").bind(connector);
        q.push(", ").bind(triggers).push(", ").bind(min_severity).push(", ").bind(new.rule.clone());
        q.push(", ").bind(new.tag.clone()).push(", ").bind(new.min_count).push(", ").bind(title);
        q.push(", ").bind(body).push(", ").bind(throttle_ms).push(", ").bind(digest_ms);
        q.push(", 1, ").bind(now).push(", ").bind(now);
        q.push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("a policy named {:?} exists", new.name)).await?;
        let policy = Self::policy(&self.policy_row(w.conn(), &Principal::cli(), &NameRef::Id(id)).await?)?;
        let after = serde_json::to_value(&policy).unwrap_or_default();
        w.finish(now, who, AuditRow::new(Some(org), "create", "policy", Some(id), None, Some(after))).await?;
        Ok(policy)
    }

    /// The id of configuration `r` if `who` sees it and it may send for
    /// `org`'s incidents: the org's own, or a shared one granted to it (a
    /// Super/Global policy uses shared ones).
    async fn usable_connector(&self, conn: &mut AnyConnection, who: &Principal, r: &NameRef, org: i64) -> Result<i64> {
        let row = self.connector_row(conn, who, r).await?;
        let (id, owner) = (row.int("id")?, row.int("org_id")?);
        if owner == org {
            return Ok(id);
        }
        if owner == SUPER_GLOBAL {
            let mut q = Sql::new("SELECT 1 AS one FROM connector_grants WHERE connector_id = ");
            q.bind(id).push(" AND org_id = ").bind(org);
            if q.build().fetch_optional(&mut *conn).await?.is_some() {
                return Ok(id);
            }
        }
        Err(StoreError::refused("connector", "this configuration is not one the org may use"))
    }

    /// A page of the policies `who` sees, by id.
    pub async fn list_policies(&self, who: &Principal, page: PageQuery) -> Result<Page<Policy>> {
        who.require(Module::Connectors, Op::Read)?;
        let mut q = Sql::new(&format!(
            "SELECT {POLICY_COLUMNS} FROM policies p JOIN orgs o ON o.id = p.org_id \
             JOIN connectors c ON c.id = p.connector_id WHERE 1 = 1"
        ));
        who.org_filter(&mut q, "p.org_id");
        let limit = page.push(&mut q, "p.id")?;
        let rows = q.build().fetch_all(self.pool()).await?;
        let items = rows.iter().map(Self::policy).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, limit, |p| p.id))
    }

    /// One policy `who` sees.
    pub async fn get_policy(&self, who: &Principal, r: &NameRef) -> Result<Policy> {
        who.require(Module::Connectors, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        Self::policy(&self.policy_row(&mut conn, who, r).await?)
    }

    /// Changes a policy.
    pub async fn update_policy(&self, who: &Principal, r: &NameRef, patch: PolicyPatch) -> Result<Policy> {
        who.require(Module::Connectors, Op::Update)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = Self::policy(&self.policy_row(w.conn(), who, r).await?)?;
        let title = patch.title_template.clone().unwrap_or_else(|| before.title_template.clone());
        let body = patch.body_template.clone().unwrap_or_else(|| before.body_template.clone());
        Template::compile(&title, &body).map_err(invalid)?;
        let mut q = Sql::new("UPDATE policies SET updated_at = ");
        q.bind(now).push(", title_template = ").bind(title).push(", body_template = ").bind(body);
        if let Some(e) = patch.enabled {
            q.push(", enabled = ").bind(i64::from(e));
        }
        if let Some(on) = &patch.on {
            q.push(", triggers = ").bind(Self::check_triggers(on)?);
        }
        if let Some(s) = &patch.min_severity {
            q.push(", min_severity = ").bind(parse_severity("min_severity", s)?);
        }
        if patch.throttle_secs.is_some() {
            q.push(", throttle_ms = ").bind(Self::check_throttle(patch.throttle_secs)?);
        }
        if patch.digest_secs.is_some() {
            q.push(", digest_ms = ").bind(Self::check_digest(patch.digest_secs)?);
        }
        q.push(" WHERE id = ").bind(before.id);
        q.build().execute(w.conn()).await?;
        let after = Self::policy(&self.policy_row(w.conn(), &Principal::cli(), &NameRef::Id(before.id)).await?)?;
        w.finish(now, who, AuditRow::update(Some(before.org_id), "policy", before.id, &before, &after)).await?;
        Ok(after)
    }

    /// Deletes a policy (its past deliveries stay, without it).
    pub async fn delete_policy(&self, who: &Principal, r: &NameRef) -> Result<()> {
        who.require(Module::Connectors, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = Self::policy(&self.policy_row(w.conn(), who, r).await?)?;
        let mut q = Sql::new("DELETE FROM policies WHERE id = ");
        q.bind(before.id);
        q.build().execute(w.conn()).await?;
        let snapshot = serde_json::to_value(&before).unwrap_or_default();
        w.finish(
            now,
            who,
            AuditRow::new(Some(before.org_id), "delete", "policy", Some(before.id), Some(snapshot), None),
        )
        .await
    }

    // ---- the outbox ----

    /// The enabled policies, templates compiled (cached by change time).
    pub(crate) async fn active_policies(&self, conn: &mut AnyConnection) -> Result<Vec<ActivePolicy>> {
        let q = Sql::new(
            "SELECT id, org_id, connector_id, name, triggers, min_severity, rule_id, tag, min_count, \
             title_template, body_template, throttle_ms, digest_ms, updated_at FROM policies WHERE enabled = 1 \
             ORDER BY id",
        );
        let rows = q.build().fetch_all(conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut cache = self.templates.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() > 4 * rows.len() + 64 {
            cache.clear();
        }
        for r in &rows {
            let id = r.int("id")?;
            let key = (id, r.int("updated_at")?);
            let template = match cache.get(&key) {
                Some(t) => t.clone(),
                None => match Template::compile(&r.text("title_template")?, &r.text("body_template")?) {
                    Ok(t) => {
                        let t = Arc::new(t);
                        cache.insert(key, t.clone());
                        t
                    }
                    // Checked when saved; a store edited by hand is reported, not fatal.
                    Err(e) => {
                        eprintln!("vigil: policy {id} is skipped: {e}");
                        continue;
                    }
                },
            };
            out.push(ActivePolicy {
                id,
                org_id: r.int("org_id")?,
                connector_id: r.int("connector_id")?,
                name: r.text("name")?,
                on: serde_json::from_str(&r.text("triggers")?).unwrap_or_default(),
                min_severity: r.int("min_severity")?,
                rule: r.opt_text("rule_id")?,
                tag: r.opt_text("tag")?,
                min_count: r.opt_int("min_count")?,
                throttle_ms: r.int("throttle_ms")?,
                digest_ms: r.int("digest_ms")?,
                template,
            });
        }
        Ok(out)
    }

    /// Queues the deliveries `change` sets off, in the caller's
    /// transaction: digests at once, single deliveries into `out`, which
    /// the caller writes with `insert_deliveries` before it commits (one
    /// statement for many incidents). Returns how many were queued.
    pub(crate) async fn enqueue(
        &self,
        conn: &mut AnyConnection,
        policies: &[ActivePolicy],
        change: &Change<'_>,
        now: i64,
        out: &mut Vec<Queued>,
    ) -> Result<usize> {
        let mut queued = 0;
        for p in policies {
            let Some(trigger) = p.fires(change) else { continue };
            if p.throttle_ms > 0 {
                let mut q = Sql::new("SELECT 1 AS one FROM deliveries WHERE policy_id = ");
                q.bind(p.id).push(" AND record_id = ").bind(change.record_id);
                q.push(" AND created_at > ").bind(now - p.throttle_ms).push(" LIMIT 1");
                if q.build().fetch_optional(&mut *conn).await?.is_some() {
                    self.outbox.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
            }
            if p.digest_ms > 0 {
                self.add_to_digest(conn, p, change, trigger, now).await?;
                queued += 1;
                continue;
            }
            let (title, body) = match p.template.render(&change.incident, change.org, trigger.as_str()) {
                Ok(rendered) => rendered,
                Err(e) => {
                    (format!("{} (template failed)", change.incident["title"].as_str().unwrap_or("")), e.to_string())
                }
            };
            let payload = Payload {
                event: trigger.as_str().to_owned(),
                title,
                body,
                org: change.org.to_owned(),
                severity: change.incident["severity"].as_str().unwrap_or("").to_owned(),
                rule: change.rule.to_owned(),
                incident: change.incident.clone(),
                at_ms: now,
            };
            let new = NewDelivery {
                org: change.org_id,
                policy: Some(p.id),
                connector: p.connector_id,
                record: Some(change.record_id),
                due: now,
            };
            out.push(Queued::new(new, &payload, &p.name)?);
            queued += 1;
        }
        Ok(queued)
    }

    /// Adds an incident to the policy's open digest for its org (the one
    /// not yet due and never attempted), or opens one due when the window
    /// ends. An incident already in it is replaced by its newer state.
    async fn add_to_digest(
        &self,
        conn: &mut AnyConnection,
        p: &ActivePolicy,
        change: &Change<'_>,
        trigger: Trigger,
        now: i64,
    ) -> Result<()> {
        let line = match p.template.render(&change.incident, change.org, trigger.as_str()) {
            Ok((title, _)) => title,
            Err(_) => change.incident["title"].as_str().unwrap_or("").to_owned(),
        };
        let entry = serde_json::json!({ "event": trigger.as_str(), "line": line, "incident": change.incident });
        // Open: pending, never claimed (a claim moves next_at off the
        // window's end), and not yet due.
        let mut q = Sql::new("SELECT id, payload, next_at FROM deliveries WHERE policy_id = ");
        q.bind(p.id).push(" AND org_id = ").bind(change.org_id);
        q.push(" AND event = 'digest' AND state = 'pending' AND attempts = 0 AND next_at > ").bind(now);
        q.push(" AND next_at = created_at + ").bind(p.digest_ms).push(" ORDER BY id DESC LIMIT 1");
        if let Some(row) = q.build().fetch_optional(&mut *conn).await? {
            let mut payload: Payload = serde_json::from_str(&row.text("payload")?)
                .map_err(|e| StoreError::Corrupt(format!("delivery payload: {e}")))?;
            let id = change.incident["id"].clone();
            let entries = payload.incident["incidents"].as_array_mut();
            if let Some(entries) = entries.filter(|e| e.len() < MAX_DIGEST) {
                entries.retain(|e| e["incident"]["id"] != id);
                entries.push(entry.clone());
                digest_text(&mut payload, change);
                let text = serde_json::to_string(&payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut q = Sql::new("UPDATE deliveries SET payload = ");
                q.bind(text).push(", updated_at = ").bind(now).push(" WHERE id = ").bind(row.int("id")?);
                q.push(" AND attempts = 0 AND next_at = ").bind(row.int("next_at")?);
                if q.build().execute(&mut *conn).await?.rows_affected() == 1 {
                    return Ok(());
                }
            }
        }
        let mut payload = Payload {
            event: "digest".into(),
            title: String::new(),
            body: String::new(),
            org: change.org.to_owned(),
            severity: String::new(),
            rule: String::new(),
            incident: serde_json::json!({ "incidents": [entry] }),
            at_ms: now,
        };
        digest_text(&mut payload, change);
        let new = NewDelivery {
            org: change.org_id,
            policy: Some(p.id),
            connector: p.connector_id,
            record: None,
            due: now + p.digest_ms,
        };
        self.insert_delivery(conn, new, &payload, &p.name, now).await?;
        Ok(())
    }

    /// Writes queued deliveries, many rows per statement.
    pub(crate) async fn insert_deliveries(
        &self,
        conn: &mut AnyConnection,
        queued: Vec<Queued>,
        now: i64,
    ) -> Result<()> {
        let per = self.rows_per_statement();
        let mut rows = queued.into_iter().peekable();
        while rows.peek().is_some() {
            let mut q = Sql::new(INSERT_DELIVERY);
            let mut n = 0;
            for r in rows.by_ref().take(per) {
                if n > 0 {
                    q.push(", ");
                }
                r.push_row(&mut q, now)?;
                n += 1;
            }
            q.build().execute(&mut *conn).await?;
            self.outbox.queued.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes one delivery; returns its id.
    async fn insert_delivery(
        &self,
        conn: &mut AnyConnection,
        new: NewDelivery,
        payload: &Payload,
        by: &str,
        now: i64,
    ) -> Result<i64> {
        let mut q = Sql::new(INSERT_DELIVERY);
        Queued::new(new, payload, by)?.push_row(&mut q, now)?;
        q.push(" RETURNING id");
        let id = q.build().fetch_one(conn).await?.int("id")?;
        self.outbox.queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(id)
    }

    /// Queues what policies say of an incident created or changed by hand
    /// (`before`: `None` when created), in the caller's transaction.
    pub(crate) async fn notify_record_change(
        &self,
        conn: &mut AnyConnection,
        before: Option<&super::Record>,
        after: &super::Record,
        now: i64,
    ) -> Result<usize> {
        let Some(org_id) = after.org_id.filter(|_| after.kind == super::Kind::Incident.as_str()) else { return Ok(0) };
        let policies = self.active_policies(conn).await?;
        if policies.is_empty() {
            return Ok(0);
        }
        let rank = |s: &str| rules::Severity::parse(s).map_or(0, |s| i64::from(s.rank()));
        let change = Change {
            record_id: after.id,
            org_id,
            org: after.org.as_deref().unwrap_or(""),
            // A Self record given its tenant is new to that org.
            created: before.is_none_or(|b| b.org_id.is_none()),
            count_before: before.map_or(0, |b| b.count),
            count_after: after.count,
            status_changed: before.is_some_and(|b| b.status != after.status),
            severity_changed: before.is_some_and(|b| b.severity != after.severity),
            severity: rank(after.severity),
            rule: after.rule.as_deref().unwrap_or(""),
            tags: &after.tags,
            incident: incident_json(after),
        };
        let mut out = Vec::new();
        let queued = self.enqueue(conn, &policies, &change, now, &mut out).await?;
        self.insert_deliveries(conn, out, now).await?;
        Ok(queued)
    }

    /// Wakes the dispatcher: something was queued.
    pub(crate) fn wake_dispatcher(&self) {
        self.outbox.wake.notify_one();
    }

    /// What the dispatcher waits on.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Runs configuration `r` (default: the org's default one) on incident
    /// `id` by hand: queued like a policy's delivery, so it is retried and
    /// recorded the same way. Audited.
    pub async fn run_action(&self, who: &Principal, id: i64, req: ActionRequest) -> Result<Delivery> {
        who.require(Module::Connectors, Op::Execute)?;
        let title = req.title_template.clone().unwrap_or_else(|| Template::DEFAULT_TITLE.to_owned());
        let body = req.body_template.clone().unwrap_or_else(|| Template::DEFAULT_BODY.to_owned());
        let template = Template::compile(&title, &body).map_err(invalid)?;
        let record = self.get_record(who, super::Kind::Incident, id).await?;
        let Some(org) = record.org_id else {
            return Err(StoreError::refused("id", "a Self incident has no org to notify; set its tenant first"));
        };
        let now = self.now_ms();
        let mut w = self.write().await?;
        let connector = match &req.connector {
            Some(r) => self.usable_connector(w.conn(), who, r, org).await?,
            None => {
                let mut q = Sql::new("SELECT id FROM connectors WHERE is_default = 1 AND enabled = 1 AND org_id = ");
                q.bind(org).push(" ORDER BY id LIMIT 1");
                let row = q.build().fetch_optional(w.conn()).await?;
                row.ok_or_else(|| StoreError::refused("connector", "the org has no default configuration; name one"))?
                    .int("id")?
            }
        };
        let incident = incident_json(&record);
        let org_name = record.org.clone().unwrap_or_default();
        let (title, body) = template
            .render(&incident, &org_name, "manual")
            .map_err(|e| StoreError::invalid("body_template", e.to_string()))?;
        let payload = Payload {
            event: "manual".into(),
            title,
            body,
            org: org_name,
            severity: record.severity.to_owned(),
            rule: record.rule.clone().unwrap_or_default(),
            incident,
            at_ms: now,
        };
        let new = NewDelivery { org, policy: None, connector, record: Some(id), due: now };
        let delivery = self.insert_delivery(w.conn(), new, &payload, &who.name, now).await?;
        let after = serde_json::json!({ "delivery": delivery, "connector": connector });
        w.finish(now, who, AuditRow::new(Some(org), "execute", "incident", Some(id), None, Some(after))).await?;
        self.wake_dispatcher();
        self.get_delivery(who, delivery).await
    }

    fn delivery(r: &AnyRow) -> Result<Delivery> {
        let state = DeliveryState::parse(&r.text("state")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let payload: Payload = serde_json::from_str(&r.text("payload")?)
            .map_err(|e| StoreError::Corrupt(format!("delivery payload: {e}")))?;
        Ok(Delivery {
            id: r.int("id")?,
            delivery_id: r.text("uid")?,
            org_id: r.int("org_id")?,
            org: r.text("org_name")?,
            policy_id: r.opt_int("policy_id")?,
            connector_id: r.int("connector_id")?,
            connector: r.text("connector_name")?,
            incident_id: r.opt_int("record_id")?,
            event: r.text("event")?,
            title: payload.title,
            state,
            attempts: r.int("attempts")?,
            next_attempt_at: (state == DeliveryState::Pending).then(|| r.int("next_at").map(fmt_ms)).transpose()?,
            last_status: r.opt_int("last_status")?,
            last_error: r.opt_text("last_error")?,
            created_by: r.text("created_by")?,
            created_at: fmt_ms(r.int("created_at")?),
            done_at: r.opt_int("done_at")?.map(fmt_ms),
            attempt_log: None,
        })
    }

    /// Deliveries `who` sees: of their orgs' incidents, through
    /// configurations they see; newest first.
    pub async fn list_deliveries(&self, who: &Principal, query: DeliveryQuery) -> Result<Page<Delivery>> {
        who.require(Module::Connectors, Op::Read)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let mut q = Sql::new(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN orgs o ON o.id = d.org_id \
             JOIN connectors c ON c.id = d.connector_id WHERE 1 = 1"
        ));
        who.record_filter(&mut q, "d.org_id");
        connector_filter(who, &mut q);
        if let Some(org) = &query.org {
            self.push_org_filter(&mut q, "d.org_id", who, org).await?;
        }
        if let Some(s) = &query.state {
            q.push(" AND d.state = ").bind(DeliveryState::parse(s)?.as_str().to_owned());
        }
        if let Some(i) = query.incident {
            q.push(" AND d.record_id = ").bind(i);
        }
        if let Some(p) = query.policy {
            q.push(" AND d.policy_id = ").bind(p);
        }
        if let Some(cursor) = &query.cursor {
            let id: i64 = cursor.parse().map_err(|_| StoreError::invalid("cursor", "not a cursor from this list"))?;
            q.push(" AND d.id < ").bind(id);
        }
        q.push(" ORDER BY d.id DESC LIMIT ").bind(limit + 1);
        let rows = q.build().fetch_all(self.pool()).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
            items.push(Self::delivery(r)?);
        }
        let next_cursor = (rows.len() as i64 > limit).then(|| items.last().map(|d| d.id.to_string())).flatten();
        Ok(Page { items, next_cursor })
    }

    /// One delivery `who` sees, with every attempt.
    pub async fn get_delivery(&self, who: &Principal, id: i64) -> Result<Delivery> {
        who.require(Module::Connectors, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN orgs o ON o.id = d.org_id \
             JOIN connectors c ON c.id = d.connector_id WHERE d.id = "
        ));
        q.bind(id);
        who.record_filter(&mut q, "d.org_id");
        connector_filter(who, &mut q);
        let row = q.build().fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound("delivery"))?;
        let mut d = Self::delivery(&row)?;
        let mut q =
            Sql::new("SELECT at, outcome, status, error, duration_ms FROM delivery_attempts WHERE delivery_id = ");
        q.bind(id).push(" ORDER BY id");
        let mut log = Vec::new();
        for r in q.build().fetch_all(&mut *conn).await? {
            log.push(Attempt {
                at: fmt_ms(r.int("at")?),
                outcome: r.text("outcome")?,
                status: r.opt_int("status")?,
                error: r.opt_text("error")?,
                duration_ms: r.int("duration_ms")?,
            });
        }
        d.attempt_log = Some(log);
        Ok(d)
    }

    /// When the earliest pending delivery is due (ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        let row = Sql::new("SELECT MIN(next_at) AS due FROM deliveries WHERE state = 'pending'")
            .build()
            .fetch_one(self.pool())
            .await?;
        row.opt_int("due")
    }

    /// Claims up to `limit` due deliveries for `lease_ms`: each is pushed
    /// past the lease, so another dispatcher (or this one after a crash)
    /// takes it again only if no outcome was recorded by then.
    pub async fn claim_due(&self, limit: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        let now = self.now_ms();
        let mut w = self.write().await?;
        // One statement: the due rows, oldest first, leased. A row another
        // claimer leased meanwhile no longer has `next_at <= now`.
        let mut q = Sql::new("UPDATE deliveries SET next_at = ");
        q.bind(now + lease_ms).push(" WHERE state = 'pending' AND next_at <= ").bind(now);
        q.push(" AND id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_at <= ").bind(now);
        q.push(" ORDER BY next_at, id LIMIT ").bind(limit).push(") RETURNING id");
        let mut claimed = Vec::new();
        for r in q.build().fetch_all(w.conn()).await? {
            claimed.push(r.int("id")?);
        }
        if claimed.is_empty() {
            w.commit().await?;
            return Ok(Vec::new());
        }
        claimed.sort_unstable();
        let mut out = Vec::with_capacity(claimed.len());
        for chunk in claimed.chunks(200) {
            let mut q = Sql::new(
                "SELECT d.id, d.uid, d.attempts, d.payload, d.connector_id, c.kind, c.config, c.sealed, c.enabled \
                 FROM deliveries d JOIN connectors c ON c.id = d.connector_id WHERE d.id IN ",
            );
            q.bind_list(chunk);
            q.push(" ORDER BY d.id");
            for r in q.build().fetch_all(w.conn()).await? {
                out.push(Claimed {
                    id: r.int("id")?,
                    uid: r.text("uid")?,
                    attempts: r.int("attempts")?,
                    payload: serde_json::from_str(&r.text("payload")?)
                        .map_err(|e| StoreError::Corrupt(format!("delivery payload: {e}")))?,
                    connector_id: r.int("connector_id")?,
                    kind: r.text("kind")?,
                    config: r.text("config")?,
                    sealed: r.text("sealed")?,
                    enabled: r.int("enabled")? != 0,
                });
            }
        }
        w.commit().await?;
        Ok(out)
    }

    /// Gives back claimed deliveries that were not attempted (the
    /// dispatcher is stopping): due again now rather than after the lease.
    pub async fn release_claims(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let mut w = self.write().await?;
        for chunk in ids.chunks(200) {
            let mut q = Sql::new("UPDATE deliveries SET next_at = ");
            q.bind(now).push(" WHERE state = 'pending' AND next_at > ").bind(now).push(" AND id IN ");
            q.bind_list(chunk);
            q.build().execute(w.conn()).await?;
        }
        w.commit().await
    }

    /// The connector a claimed delivery goes through, or why it cannot go.
    /// Built once per configuration version and shared (so HTTPS targets
    /// keep their TLS session cache): a changed configuration or secret
    /// builds a new one.
    pub(crate) fn claimed_connector(&self, c: &Claimed) -> std::result::Result<Arc<dyn connectors::Connector>, String> {
        if !c.enabled {
            return Err("the connector configuration is disabled".into());
        }
        let version = (c.kind.clone(), c.config.clone(), c.sealed.clone());
        let cache = self.built.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((v, built)) = cache.get(&c.connector_id)
            && *v == version
        {
            return Ok(built.clone());
        }
        drop(cache);
        let kind = Kind::parse(&c.kind).map_err(|e| e.to_string())?;
        let config: Config = serde_json::from_str(&c.config).map_err(|e| format!("configuration: {e}"))?;
        let secrets = self.key().map_err(|e| e.to_string())?.open(&c.sealed).map_err(|e| e.to_string())?;
        let built: Arc<dyn connectors::Connector> = Arc::from(
            connectors::build(kind, &config, &secrets, self.connector_settings()).map_err(|e| e.to_string())?,
        );
        let mut cache = self.built.0.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_BUILT {
            cache.clear();
        }
        cache.insert(c.connector_id, (version, built.clone()));
        Ok(built)
    }

    /// Records attempts and what follows from each: delivered, failed,
    /// retried at its `retry_at`, or dead-lettered when attempts ran out.
    /// One transaction for the whole batch (the dispatcher gathers the
    /// attempts that finished while the previous batch was written);
    /// returns each one's new state, in order.
    pub async fn record_attempts(&self, batch: &[FinishedAttempt]) -> Result<Vec<DeliveryState>> {
        let now = self.now_ms();
        let max_attempts = i64::from(self.config.connectors.max_attempts);
        let mut states = Vec::with_capacity(batch.len());
        let mut w = self.write().await?;
        for chunk in batch.chunks(100) {
            let mut q = Sql::new(
                "INSERT INTO delivery_attempts (delivery_id, at, outcome, status, error, duration_ms) VALUES ",
            );
            for (i, a) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(").bind(a.delivery_id).push(", ").bind(a.started_ms);
                q.push(", ").bind(a.outcome.as_str().to_owned()).push(", ").bind(a.outcome.status().map(i64::from));
                q.push(", ").bind(a.error()).push(", ").bind(a.duration_ms).push(")");
            }
            q.build().execute(w.conn()).await?;
        }
        for a in batch {
            let attempts = a.attempts_before + 1;
            let state = match &a.outcome {
                connectors::Outcome::Delivered { .. } => DeliveryState::Delivered,
                connectors::Outcome::Failed { .. } => DeliveryState::Failed,
                connectors::Outcome::Retry { .. } if attempts >= max_attempts => DeliveryState::Dead,
                connectors::Outcome::Retry { .. } => DeliveryState::Pending,
            };
            let mut q = Sql::new("UPDATE deliveries SET attempts = ");
            q.bind(attempts).push(", state = ").bind(state.as_str().to_owned());
            q.push(", next_at = ").bind(if state == DeliveryState::Pending { a.retry_at } else { now });
            q.push(", last_status = ").bind(a.outcome.status().map(i64::from)).push(", last_error = ").bind(a.error());
            q.push(", updated_at = ").bind(now);
            if state != DeliveryState::Pending {
                q.push(", done_at = ").bind(now);
            }
            q.push(" WHERE id = ").bind(a.delivery_id);
            q.build().execute(w.conn()).await?;
            states.push(state);
        }
        w.commit().await?;
        Ok(states)
    }
}

/// Connector configurations the dispatcher keeps built, at most.
const MAX_BUILT: usize = 1_024;

/// Built connectors by configuration id, with the version (type, settings,
/// sealed secrets) they were built from.
#[derive(Default)]
pub(crate) struct ConnectorCache(Mutex<HashMap<i64, Built>>);

/// A connector and what it was built from: type, settings, sealed secrets.
type Built = ((String, String, String), Arc<dyn connectors::Connector>);

/// One finished attempt, to record.
pub struct FinishedAttempt {
    /// The delivery's row id.
    pub delivery_id: i64,
    /// Attempts before this one.
    pub attempts_before: i64,
    /// When it started (ms).
    pub started_ms: i64,
    /// What came of it.
    pub outcome: connectors::Outcome,
    /// How long it took.
    pub duration_ms: i64,
    /// When to try again, should it be retried.
    pub retry_at: i64,
}

impl FinishedAttempt {
    fn error(&self) -> Option<String> {
        self.outcome.error().map(|e| e.chars().take(1000).collect())
    }
}

/// Most incidents one digest lists; more open another.
const MAX_DIGEST: usize = 500;

/// The start of an insert into the outbox; rows follow.
const INSERT_DELIVERY: &str = "INSERT INTO deliveries (uid, org_id, policy_id, connector_id, record_id, event, \
     payload, state, attempts, next_at, created_by, created_at, updated_at) VALUES ";

/// A delivery queued in a transaction, not yet written.
pub(crate) struct Queued {
    new: NewDelivery,
    event: String,
    /// The payload, as JSON.
    payload: String,
    /// The policy or user that queued it.
    by: String,
}

impl Queued {
    fn new(new: NewDelivery, payload: &Payload, by: &str) -> Result<Queued> {
        let text = serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Queued { new, event: payload.event.clone(), payload: text, by: by.to_owned() })
    }

    /// Appends its `(…)` row, pending with a fresh delivery id.
    fn push_row(self, q: &mut Sql, now: i64) -> Result<()> {
        let new = self.new;
        q.push("(").bind(new_uid()?).push(", ").bind(new.org).push(", ").bind(new.policy);
        q.push(", ").bind(new.connector).push(", ").bind(new.record).push(", ").bind(self.event);
        q.push(", ").bind(self.payload).push(", 'pending', 0, ").bind(new.due).push(", ").bind(self.by);
        q.push(", ").bind(now).push(", ").bind(now).push(")");
        Ok(())
    }
}

/// Where a queued delivery goes and when.
struct NewDelivery {
    org: i64,
    policy: Option<i64>,
    connector: i64,
    /// The incident (`None`: a digest of several).
    record: Option<i64>,
    /// When its first attempt is due.
    due: i64,
}

/// A digest's title, body and severity from its entries: the count, the
/// highest severity, one line per incident (its rendered title).
fn digest_text(payload: &mut Payload, change: &Change<'_>) {
    let entries = payload.incident["incidents"].as_array().cloned().unwrap_or_default();
    let rank = |e: &serde_json::Value| {
        rules::Severity::parse(e["incident"]["severity"].as_str().unwrap_or("")).map_or(0, |s| s.rank())
    };
    let top = entries.iter().max_by_key(|e| rank(e));
    payload.severity = top.and_then(|e| e["incident"]["severity"].as_str()).unwrap_or("").to_owned();
    let n = entries.len();
    payload.title = format!("{n} incident{} in {}", if n == 1 { "" } else { "s" }, change.org);
    payload.body = entries
        .iter()
        .map(|e| format!("- {} ({})", e["line"].as_str().unwrap_or(""), e["event"].as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n");
}

/// An incident as templates and receivers see it.
pub(crate) fn incident_json(r: &super::Record) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "title": r.title,
        "description": r.description,
        "severity": r.severity,
        "status": r.status,
        "rule": r.rule.clone().unwrap_or_default(),
        "count": r.count,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "org": r.org.clone().unwrap_or_default(),
        "org_id": r.org_id,
        "tags": r.tags.clone(),
    })
}

/// The outbox's wake-up and counters.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Notified when a delivery is queued in this process.
    pub wake: tokio::sync::Notify,
    /// Deliveries queued.
    pub queued: std::sync::atomic::AtomicU64,
    /// Notifications a policy's throttle held back.
    pub throttled: std::sync::atomic::AtomicU64,
}

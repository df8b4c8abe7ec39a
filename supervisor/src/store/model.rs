//! What the store reads and writes, as the API and the CLI show it: output
//! objects (`Serialize`) and the requests that create or change them
//! (`Deserialize`, unknown fields refused).

use serde::{Deserialize, Deserializer, Serialize};

use super::auth::Perms;

/// Built-in org for the provider's own network, and the default for events
/// no other org claims; `parsers::OrgId::SUPER_LOCAL` (one table for the
/// pipeline and the store: an event's org id is its org's row id).
pub const SUPER_LOCAL: i64 = parsers::OrgId::SUPER_LOCAL.0 as i64;
/// Built-in org every provider-side user belongs to; its users see every
/// org or a chosen subset (SPEC §4). Virtual: it holds no events or records.
pub const SUPER_GLOBAL: i64 = parsers::OrgId::SUPER_GLOBAL.0 as i64;

/// Milliseconds since the Unix epoch as RFC 3339 (UTC).
pub fn fmt_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

/// An org given by id or by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OrgRef {
    /// Its id.
    Id(i64),
    /// Its name (case-insensitive).
    Name(String),
}

impl OrgRef {
    /// An org as text names it: digits are an id, anything else a name.
    pub fn parse(text: &str) -> OrgRef {
        text.parse::<i64>().map(OrgRef::Id).unwrap_or_else(|_| OrgRef::Name(text.to_owned()))
    }
}

impl std::fmt::Display for OrgRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrgRef::Id(id) => write!(f, "#{id}"),
            OrgRef::Name(name) => f.write_str(name),
        }
    }
}

/// For an optional field that must not be `null`: absent is `None`, a
/// value is `Some`, and `null` is refused like any other wrong type. Only
/// the fields whose value may be "none" (`eps_limit`, `assignee`, `scope`)
/// take `null`; everywhere else it would be a second, undocumented way of
/// leaving a field out.
pub(crate) fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
pub(crate) fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An organization (tenant).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Org {
    /// Its id.
    pub id: i64,
    /// 1–128 characters, unique (case-insensitive).
    pub name: String,
    /// At most 256 characters.
    pub description: String,
    /// Its EPS limit, if it has one.
    pub eps_limit: Option<i64>,
    /// Disabled orgs' events are not accepted.
    pub enabled: bool,
    /// Super/Global and Super/Local.
    pub builtin: bool,
    /// Reporter IP ranges whose events belong to this org.
    pub ip_ranges: Vec<String>,
    /// Days its events are kept.
    pub retention_days: i64,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

/// `POST /orgs`, `vigil org create`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// The name.
    pub name: String,
    /// The description.
    #[serde(default)]
    pub description: String,
    /// The EPS limit.
    #[serde(default)]
    pub eps_limit: Option<i64>,
    /// Reporter IP ranges (CIDR).
    #[serde(default)]
    pub ip_ranges: Vec<String>,
    /// Days its events are kept (default 90).
    #[serde(default, deserialize_with = "present")]
    pub retention_days: Option<i64>,
}

/// `PATCH /orgs/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPatch {
    /// A new name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// A new description.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    /// A new limit, or `null` to remove it.
    #[serde(default, deserialize_with = "nullable")]
    pub eps_limit: Option<Option<i64>>,
    /// Replaces the IP ranges.
    #[serde(default, deserialize_with = "present")]
    pub ip_ranges: Option<Vec<String>>,
    /// Days its events are kept.
    #[serde(default, deserialize_with = "present")]
    pub retention_days: Option<i64>,
}

/// A role: a named set of per-module permissions.
#[derive(Clone, Debug, Serialize)]
pub struct Role {
    /// Its id.
    pub id: i64,
    /// The org whose users may hold it (Super/Global for the built-ins,
    /// which every org may use).
    pub org_id: i64,
    /// Its name.
    pub name: String,
    /// admin, analyst and viewer are built in and cannot change.
    pub builtin: bool,
    /// Module → allowed operations.
    pub permissions: Perms,
}

/// `POST /roles`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// Its name.
    pub name: String,
    /// Its org (default: the caller's).
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
    /// Module → operations.
    pub permissions: Perms,
}

/// `PATCH /roles/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    /// A new name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// New permissions.
    #[serde(default, deserialize_with = "present")]
    pub permissions: Option<Perms>,
}

/// A user: belongs to one org and acts through one role.
#[derive(Clone, Debug, Serialize)]
pub struct User {
    /// Its id.
    pub id: i64,
    /// Unique (case-insensitive) across the store.
    pub name: String,
    /// Its org's id.
    pub org_id: i64,
    /// Its org's name.
    pub org: String,
    /// Its role's id.
    pub role_id: i64,
    /// Its role's name.
    pub role: String,
    /// Disabled users' tokens are refused.
    pub enabled: bool,
    /// For Super/Global users: the orgs they see, or `null` for all.
    pub scope: Option<Vec<i64>>,
    /// The teams it is a member of.
    pub teams: Vec<i64>,
    /// When it was created.
    pub created_at: String,
}

/// `POST /users`, `vigil user create`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Its name.
    pub name: String,
    /// Its org.
    pub org: OrgRef,
    /// Its role, by id or name.
    pub role: RoleRef,
    /// For Super/Global users: the orgs they may see (absent: all).
    #[serde(default)]
    pub scope: Option<Vec<OrgRef>>,
}

/// `PATCH /users/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new role.
    #[serde(default, deserialize_with = "present")]
    pub role: Option<RoleRef>,
    /// Enable or disable.
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
    /// A new scope, or `null` for all orgs (Super/Global users only).
    #[serde(default, deserialize_with = "nullable")]
    pub scope: Option<Option<Vec<OrgRef>>>,
}

/// A role given by id or by name.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RoleRef {
    /// Its id.
    Id(i64),
    /// Its name: a built-in (admin, analyst, viewer) or one of the org's.
    Name(String),
}

/// A team: a group of users of one org that owns records.
#[derive(Clone, Debug, Serialize)]
pub struct Team {
    /// Its id.
    pub id: i64,
    /// Its org.
    pub org_id: i64,
    /// Its name, unique within the org.
    pub name: String,
    /// Member user ids.
    pub members: Vec<i64>,
    /// When it was created.
    pub created_at: String,
}

/// `POST /teams`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// Its name.
    pub name: String,
    /// Its org (default: the caller's).
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
    /// Member user ids (users of the same org).
    #[serde(default)]
    pub members: Vec<i64>,
}

/// `PATCH /teams/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    /// A new name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// Replaces the members.
    #[serde(default, deserialize_with = "present")]
    pub members: Option<Vec<i64>>,
}

/// An API token's metadata (the secret itself is shown once, at creation).
#[derive(Clone, Debug, Serialize)]
pub struct Token {
    /// Its id.
    pub id: i64,
    /// The user it acts as.
    pub user_id: i64,
    /// A label.
    pub name: String,
    /// The first characters of the secret, to tell tokens apart.
    pub hint: String,
    /// When it was created.
    pub created_at: String,
    /// When it stops working, if ever.
    pub expires_at: Option<String>,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Debug, Serialize)]
pub struct NewTokenSecret {
    /// Its metadata.
    #[serde(flatten)]
    pub token: Token,
    /// The bearer secret.
    pub token_secret: String,
}

/// `POST /tokens`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// The user to act as (default: the caller).
    #[serde(default, deserialize_with = "present")]
    pub user_id: Option<i64>,
    /// Lifetime in days (default: no expiry).
    #[serde(default, deserialize_with = "present")]
    pub expires_in_days: Option<i64>,
}

/// Incident and alert statuses (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// New.
    Open,
    /// Someone is on it.
    Investigating,
    /// Dealt with.
    Resolved,
    /// Done.
    Closed,
}

impl Status {
    /// Every status, in workflow order.
    pub const ALL: [Status; 4] = [Status::Open, Status::Investigating, Status::Resolved, Status::Closed];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        ["open", "investigating", "resolved", "closed"][self as usize]
    }

    /// The status with this name.
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Alerts and incidents share one table and one code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An incident.
    Incident,
    /// An alert.
    Alert,
}

impl Kind {
    /// The value of the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Incident => "incident",
            Kind::Alert => "alert",
        }
    }

    /// The permission module that governs this kind.
    pub fn module(self) -> super::auth::Module {
        match self {
            Kind::Incident => super::auth::Module::Incidents,
            Kind::Alert => super::auth::Module::Alerts,
        }
    }

    /// The word used in messages.
    pub fn noun(self) -> &'static str {
        self.as_str()
    }
}

/// A user named in a record.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UserRef {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// An incident or an alert.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// Its id.
    pub id: i64,
    /// `incident` or `alert`.
    pub kind: &'static str,
    /// The tenant's name; `null` for a Self record.
    pub org: Option<String>,
    /// The tenant's id; `null` for a Self record.
    pub org_id: Option<i64>,
    /// Created by a Super user without a tenant; its tenant may be set once.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Its title.
    pub title: String,
    /// Free text.
    pub description: String,
    /// info, low, medium, high or critical.
    pub severity: &'static str,
    /// open, investigating, resolved or closed.
    pub status: &'static str,
    /// Who is on it.
    pub assignee: Option<UserRef>,
    /// The rule that raised it (pipeline records).
    pub rule: Option<String>,
    /// The rule's tags (ATT&CK techniques and the like).
    pub tags: Vec<String>,
    /// The pipeline's idempotency key: rule, org, incident key, window start.
    pub source_ref: Option<String>,
    /// Rule hits merged into it.
    pub count: i64,
    /// First hit (or creation).
    pub first_seen: String,
    /// Latest hit (or creation).
    pub last_seen: String,
    /// Who created it by hand (`null` for the pipeline).
    pub created_by: Option<UserRef>,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The contributing event ids (in single-record responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_ids: Option<Vec<u64>>,
    /// The teams that own it (in single-record responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<i64>>,
    /// Its audit trail, oldest first (in single-record responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<AuditEntry>>,
}

/// `POST /incidents`, `POST /alerts`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Its title.
    pub title: String,
    /// Its severity.
    pub severity: String,
    /// Its tenant; a Super user may leave it out to create a Self record,
    /// an org user's records are always their org's.
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// An assignee.
    #[serde(default)]
    pub assignee: Option<i64>,
    /// Contributing event ids.
    #[serde(default)]
    pub event_ids: Vec<u64>,
}

/// `PATCH /incidents/{id}`, `PATCH /alerts/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPatch {
    /// A new status.
    #[serde(default, deserialize_with = "present")]
    pub status: Option<String>,
    /// A new severity.
    #[serde(default, deserialize_with = "present")]
    pub severity: Option<String>,
    /// A new assignee, or `null` to unassign.
    #[serde(default, deserialize_with = "nullable")]
    pub assignee: Option<Option<i64>>,
    /// A new title.
    #[serde(default, deserialize_with = "present")]
    pub title: Option<String>,
    /// A new description.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    /// The tenant of a Self record (once).
    #[serde(default, deserialize_with = "present")]
    pub org: Option<OrgRef>,
}

/// A comment on a record.
#[derive(Clone, Debug, Serialize)]
pub struct Comment {
    /// Its id.
    pub id: i64,
    /// The record.
    pub record_id: i64,
    /// Its author.
    pub author: Option<UserRef>,
    /// Its text.
    pub body: String,
    /// When it was written.
    pub created_at: String,
}

/// `POST /incidents/{id}/comments`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1–10,000 characters.
    pub body: String,
}

/// One change, as the audit log keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// Its id.
    pub id: i64,
    /// When.
    pub at: String,
    /// Who (a user's name, `cli`, or `pipeline`).
    pub actor: String,
    /// The acting user's id.
    pub actor_id: Option<i64>,
    /// The org the change concerns (`null`: provider-level).
    pub org_id: Option<i64>,
    /// create, update, delete, comment, deboard, …
    pub action: String,
    /// org, user, team, role, token, incident, alert.
    pub object_type: String,
    /// The object's id.
    pub object_id: Option<i64>,
    /// The object before the change.
    pub before: Option<serde_json::Value>,
    /// The object after the change.
    pub after: Option<serde_json::Value>,
}

/// A page of a list.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/me`.
#[derive(Clone, Debug, Serialize)]
pub struct Me {
    /// The user.
    pub user: User,
    /// The role's permissions.
    pub permissions: Perms,
    /// True for Super/Global users.
    pub super_user: bool,
}

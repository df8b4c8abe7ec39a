//! Who is asking and what they may do: per-module permissions, the
//! principal a bearer token resolves to, and the org visibility rule of
//! SPEC §4 as one SQL clause every list shares.

use std::collections::BTreeMap;

use ring::rand::SecureRandom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Result, StoreError};
use super::model::SUPER_GLOBAL;
use super::sql::Sql;

/// The modules permissions are granted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// Incidents.
    Incidents,
    /// Alerts.
    Alerts,
    /// Comments on incidents and alerts.
    Comments,
    /// Orgs (and the audit log).
    Orgs,
    /// Users, teams, roles and other users' tokens.
    Users,
    /// Correlation rules.
    Rules,
    /// The licence.
    Licence,
    /// Stored events (search, histograms, an incident's events).
    Events,
    /// The device inventory (reporting devices, their limit and silence).
    Devices,
    /// Connector configurations, notification policies and their
    /// deliveries; `execute` runs a configuration's action by hand.
    Connectors,
}

impl Module {
    /// Every module.
    pub const ALL: [Module; 10] = [
        Module::Incidents,
        Module::Alerts,
        Module::Comments,
        Module::Orgs,
        Module::Users,
        Module::Rules,
        Module::Licence,
        Module::Events,
        Module::Devices,
        Module::Connectors,
    ];

    /// Its name in role documents.
    pub fn as_str(self) -> &'static str {
        ["incidents", "alerts", "comments", "orgs", "users", "rules", "licence", "events", "devices", "connectors"]
            [self as usize]
    }

    /// The operations that apply to it: create, read, update and delete
    /// everywhere, and execute on connectors.
    pub fn ops(self) -> &'static [Op] {
        match self {
            Module::Connectors => &Op::ALL,
            _ => &Op::CRUD,
        }
    }
}

/// Operations on a module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create.
    Create,
    /// Read.
    Read,
    /// Update.
    Update,
    /// Delete.
    Delete,
    /// Run an action (connectors only).
    Execute,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 5] = [Op::Create, Op::Read, Op::Update, Op::Delete, Op::Execute];

    /// The operations every module has; their bits are laid out four per
    /// module, in module order, so stored roles keep their meaning as
    /// modules are added.
    pub const CRUD: [Op; 4] = [Op::Create, Op::Read, Op::Update, Op::Delete];

    /// Its name in role documents.
    pub fn as_str(self) -> &'static str {
        ["create", "read", "update", "delete", "execute"][self as usize]
    }
}

/// Where `execute` bits start: one per module from here, clear of the
/// four-per-module grid for up to twelve modules.
const EXECUTE_BASE: usize = 48;

/// A set of (module, operation) grants, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms(pub(crate) i64);

impl Perms {
    /// Nothing allowed.
    pub const NONE: Perms = Perms(0);

    /// Everything allowed (the built-in admin role).
    pub fn all() -> Perms {
        Module::ALL.into_iter().fold(Perms::NONE, |p, m| p.with(m, m.ops()))
    }

    fn bit(module: Module, op: Op) -> i64 {
        match op {
            Op::Execute => 1 << (EXECUTE_BASE + module as usize),
            _ => 1 << (module as usize * Op::CRUD.len() + op as usize),
        }
    }

    /// These perms plus `op` on `module`.
    pub fn with(self, module: Module, ops: &[Op]) -> Perms {
        Perms(ops.iter().fold(self.0, |acc, op| acc | Perms::bit(module, *op)))
    }

    /// Read on every module (the built-in viewer role).
    pub fn read_all() -> Perms {
        Module::ALL.into_iter().fold(Perms::NONE, |p, m| p.with(m, &[Op::Read]))
    }

    /// The built-in analyst role: works incidents, alerts and comments,
    /// runs connector actions on them, reads everything else.
    pub fn analyst() -> Perms {
        Perms::read_all()
            .with(Module::Connectors, &[Op::Execute])
            .with(Module::Incidents, &[Op::Create, Op::Update])
            .with(Module::Alerts, &[Op::Create, Op::Update])
            .with(Module::Comments, &[Op::Create, Op::Update, Op::Delete])
    }

    /// Whether `op` on `module` is granted.
    pub fn allows(self, module: Module, op: Op) -> bool {
        self.0 & Perms::bit(module, op) != 0
    }

    /// Whether every grant of `self` is also in `other` (no escalation).
    pub fn is_subset_of(self, other: Perms) -> bool {
        self.0 & !other.0 == 0
    }

    /// The stored form.
    pub fn bits(self) -> i64 {
        self.0
    }

    /// From the stored form (unknown bits dropped).
    pub fn from_bits(bits: i64) -> Perms {
        Perms(bits & Perms::all().0)
    }
}

impl Serialize for Perms {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, Vec<&str>> = Module::ALL
            .into_iter()
            .map(|m| (m.as_str(), m.ops().iter().filter(|op| self.allows(m, **op)).map(|op| op.as_str()).collect()))
            .collect();
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Perms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Perms, D::Error> {
        use serde::de::Error;
        let map = BTreeMap::<String, Vec<String>>::deserialize(d)?;
        let mut perms = Perms::NONE;
        for (module, ops) in map {
            let m = Module::ALL.into_iter().find(|m| m.as_str() == module).ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown module `{module}`; modules are incidents, alerts, comments, orgs, users, rules, licence, events, devices, connectors"
                ))
            })?;
            for op in ops {
                let o = m.ops().iter().copied().find(|o| o.as_str() == op).ok_or_else(|| {
                    let known: Vec<&str> = m.ops().iter().map(|o| o.as_str()).collect();
                    D::Error::custom(format!(
                        "unknown operation `{op}` on {module}; its operations are {}",
                        known.join(", ")
                    ))
                })?;
                perms = perms.with(m, &[o]);
            }
        }
        Ok(perms)
    }
}

/// The caller of a store operation: a user resolved from a bearer token,
/// or the local administrator at the CLI.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user's id (`None` for the CLI).
    pub user_id: Option<i64>,
    /// The name written to the audit log.
    pub name: String,
    /// The user's org.
    pub org_id: i64,
    /// For Super/Global users: the orgs they see (`None`: all).
    pub scope: Option<Vec<i64>>,
    /// The role's grants.
    pub perms: Perms,
}

impl Principal {
    /// The local administrator: whoever can open the database file or
    /// connect to the database acts with every permission.
    pub fn cli() -> Principal {
        Principal { user_id: None, name: "cli".into(), org_id: SUPER_GLOBAL, scope: None, perms: Perms::all() }
    }

    /// The pipeline, as the audit log names it.
    pub(crate) fn pipeline() -> Principal {
        Principal { name: "pipeline".into(), ..Principal::cli() }
    }

    /// A Super/Global user.
    pub fn is_super(&self) -> bool {
        self.org_id == SUPER_GLOBAL
    }

    /// A Super/Global user who sees every org.
    pub fn is_unscoped_super(&self) -> bool {
        self.is_super() && self.scope.is_none()
    }

    /// Whether this principal administers the cluster's nodes: a
    /// Super/Global user who sees every org and whose role may update the
    /// licence (node guarantees are shares of it). Nodes serve every org
    /// and may be named after one, so anyone else is never shown that
    /// they exist: org users, scoped Super/Global users, and Super/Global
    /// analysts and viewers alike.
    pub fn administers_nodes(&self) -> bool {
        self.is_unscoped_super() && self.perms.allows(Module::Licence, Op::Update)
    }

    /// Whether this principal sees `org`'s data.
    pub fn sees_org(&self, org: i64) -> bool {
        if self.is_super() {
            org == SUPER_GLOBAL || self.scope.as_ref().is_none_or(|s| s.contains(&org))
        } else {
            org == self.org_id
        }
    }

    /// Whether this principal sees a record whose tenant is `org`
    /// (`None`: a Self record, which only Super/Global users see).
    pub fn sees_record(&self, org: Option<i64>) -> bool {
        match org {
            Some(org) => org != SUPER_GLOBAL && self.sees_org(org),
            None => self.is_super(),
        }
    }

    /// `Forbidden` unless the role grants `op` on `module`.
    pub fn require(&self, module: Module, op: Op) -> Result<()> {
        if self.perms.allows(module, op) {
            Ok(())
        } else {
            Err(StoreError::forbidden(format!("your role does not allow {} on {}", op.as_str(), module.as_str())))
        }
    }

    /// `Forbidden` unless this is a Super/Global user who sees every org.
    pub fn require_unscoped_super(&self, what: &str) -> Result<()> {
        if self.is_unscoped_super() {
            Ok(())
        } else {
            Err(StoreError::forbidden(format!("only Super/Global users who see every org may {what}")))
        }
    }

    /// Appends ` AND <visibility of column col>` for records (`col` may be
    /// NULL for Self records).
    pub(crate) fn record_filter(&self, q: &mut Sql, col: &str) {
        if self.is_super() {
            match &self.scope {
                None => q.push(""),
                Some(scope) => q.push(&format!(" AND ({col} IS NULL OR {col} IN ")).bind_list(scope).push(")"),
            };
        } else {
            q.push(&format!(" AND {col} = ")).bind(self.org_id);
        }
    }

    /// Appends ` AND <visibility of column col>` for org-owned objects
    /// (orgs, users, teams, roles).
    pub(crate) fn org_filter(&self, q: &mut Sql, col: &str) {
        if self.is_super() {
            if let Some(scope) = &self.scope {
                let mut ids = scope.clone();
                ids.push(SUPER_GLOBAL);
                q.push(&format!(" AND {col} IN ")).bind_list(&ids);
            }
        } else {
            q.push(&format!(" AND {col} = ")).bind(self.org_id);
        }
    }
}

/// A new bearer secret: `vgl_` and 43 characters of URL-safe base64 over
/// 32 random bytes.
pub(crate) fn new_secret() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Corrupt("the system random source failed".into()))?;
    Ok(format!("vgl_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// What the store keeps of a secret: its SHA-256, hex.
pub(crate) fn hash_secret(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_round_trip_through_json() {
        let p = Perms::analyst();
        let json = serde_json::to_value(p).unwrap_or_default();
        assert_eq!(json["incidents"], serde_json::json!(["create", "read", "update"]));
        let back: Perms = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(back, p);
        assert!(Perms::read_all().is_subset_of(Perms::analyst()));
        assert!(!Perms::all().is_subset_of(Perms::analyst()));
        assert!(serde_json::from_str::<Perms>(r#"{"incidnets": ["read"]}"#).is_err());
        assert!(serde_json::from_str::<Perms>(r#"{"incidents": ["reed"]}"#).is_err());
    }

    #[test]
    fn the_events_module_has_the_bits_migration_3_grants() {
        assert_eq!(Perms::NONE.with(Module::Events, &Op::CRUD).bits(), 4_026_531_840);
        assert_eq!(Perms::NONE.with(Module::Events, &[Op::Read]).bits(), 536_870_912);
        assert!(Perms::read_all().allows(Module::Events, Op::Read));
    }

    #[test]
    fn the_devices_module_has_the_bits_migration_5_grants() {
        assert_eq!(Perms::NONE.with(Module::Devices, &Op::CRUD).bits(), 64_424_509_440);
        assert_eq!(Perms::NONE.with(Module::Devices, &[Op::Read]).bits(), 8_589_934_592);
        assert!(Perms::read_all().allows(Module::Devices, Op::Read));
        assert!(Perms::all().allows(Module::Devices, Op::Update));
    }

    #[test]
    fn the_connectors_module_has_the_bits_migration_7_grants() {
        assert_eq!(Perms::NONE.with(Module::Connectors, &Op::ALL).bits(), 144_116_218_868_006_912);
        assert_eq!(Perms::NONE.with(Module::Connectors, &[Op::Read, Op::Execute]).bits(), 144_115_325_514_809_344);
        assert_eq!(Perms::NONE.with(Module::Connectors, &[Op::Read]).bits(), 137_438_953_472);
        assert!(Perms::all().allows(Module::Connectors, Op::Execute));
        assert!(Perms::analyst().allows(Module::Connectors, Op::Execute));
        assert!(!Perms::read_all().allows(Module::Connectors, Op::Execute));
        // Execute is not an operation of other modules, in either direction.
        assert!(!Perms::all().allows(Module::Incidents, Op::Execute));
        assert!(serde_json::from_str::<Perms>(r#"{"incidents": ["execute"]}"#).is_err());
        let json = serde_json::to_value(Perms::analyst()).unwrap_or_default();
        assert_eq!(json["connectors"], serde_json::json!(["read", "execute"]));
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret().unwrap_or_default(), new_secret().unwrap_or_default());
        assert_ne!(a, b);
        assert_eq!(a.len(), 47);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }

    #[test]
    fn visibility() {
        let org_user = Principal { user_id: Some(5), name: "a".into(), org_id: 7, scope: None, perms: Perms::all() };
        assert!(org_user.sees_record(Some(7)));
        assert!(!org_user.sees_record(Some(8)));
        assert!(!org_user.sees_record(None));
        let scoped = Principal { org_id: SUPER_GLOBAL, scope: Some(vec![7]), ..org_user.clone() };
        assert!(scoped.sees_record(Some(7)) && !scoped.sees_record(Some(8)) && scoped.sees_record(None));
        assert!(Principal::cli().sees_record(Some(8)));
    }
}

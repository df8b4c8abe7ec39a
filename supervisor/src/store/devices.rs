//! The device inventory (issue #18): every device that reports, per org,
//! merged from the entry nodes' [`DeviceReport`]s (one transaction per
//! report, never a write per event); the licence's device limit (active
//! devices, first seen first, are within it); silent log sources, each
//! raising one `log-source-silent` incident per outage that is resolved,
//! audited, when the device reports again; and the list, detail, update
//! and per-family summary the API and the CLI show, under the same tenant
//! rules as records.

use std::collections::{BTreeMap, HashMap};

use parsers::{DeviceLimits, DeviceReport, DeviceSeen, OrgId, Severity};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use super::auth::{Module, Op, Principal};
use super::error::{Result, StoreError};
use super::model::{Page, SUPER_GLOBAL, SUPER_LOCAL, fmt_ms, nullable, present};
use super::nodes;
use super::records::MAX_LIMIT;
use super::sql::{RowExt, Sql};
use super::{AuditRow, Store, check_lookup, check_name};

/// The rule id of silent-source incidents.
pub const SILENT_RULE: &str = "log-source-silent";
/// The rule id of the licence's device-limit incident.
pub const LIMIT_RULE: &str = "device-limit";

const DAY_MS: i64 = 86_400_000;
/// Host names kept per device.
const MAX_HOSTS: usize = 8;
/// Days of per-day traffic kept.
const DAYS_KEPT: i64 = 400;
/// Expected reporting intervals an administrator may set, seconds.
const INTERVAL_RANGE: std::ops::RangeInclusive<i64> = 60..=30 * 86_400;

/// How the store runs the inventory (from `[devices]` and the licence).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSettings {
    /// The licence's device limit (`None`: unlimited).
    pub limit: Option<u64>,
    /// Events of devices beyond the limit are dropped (policy enforce).
    pub enforce: bool,
    /// A device is active while seen within this many days.
    pub active_days: u32,
    /// Silence shorter than this never counts, ms.
    pub silent_floor_ms: i64,
    /// Silent after this many times the usual gap.
    pub silent_factor: f64,
    /// Report periods with events before the usual gap is trusted.
    pub learn_periods: u32,
    /// Devices per org at most; new ones past it are counted, not kept.
    pub max_per_org: u64,
}

impl Default for DeviceSettings {
    fn default() -> DeviceSettings {
        DeviceSettings {
            limit: None,
            enforce: false,
            active_days: 30,
            silent_floor_ms: 600_000,
            silent_factor: 4.0,
            learn_periods: 3,
            max_per_org: 20_000,
        }
    }
}

impl DeviceSettings {
    /// The settings of `[devices]` under a licence allowing `limit` devices.
    pub fn new(config: &collector::devices::DeviceConfig, limit: Option<u64>) -> DeviceSettings {
        DeviceSettings {
            limit,
            enforce: config.limit_policy == collector::devices::LimitPolicy::Enforce,
            active_days: config.active_days,
            silent_floor_ms: i64::try_from(config.silent_floor_secs.saturating_mul(1_000)).unwrap_or(i64::MAX),
            silent_factor: config.silent_factor,
            learn_periods: config.learn_periods,
            max_per_org: config.max_per_org as u64,
        }
    }

    fn active_since(&self, now: i64) -> i64 {
        now - i64::from(self.active_days) * DAY_MS
    }

    /// How long `d` may be quiet before it is silent, ms (`None`: not yet
    /// known: no interval set and too little history).
    fn silent_after(&self, expected_secs: Option<i64>, usual_gap_ms: Option<i64>, periods: i64) -> Option<i64> {
        if let Some(secs) = expected_secs {
            return Some(secs.saturating_mul(1_000));
        }
        if periods < i64::from(self.learn_periods) {
            return None;
        }
        let learned = (usual_gap_ms.unwrap_or(0) as f64 * self.silent_factor) as i64;
        Some(learned.max(self.silent_floor_ms))
    }
}

/// A device as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Device {
    /// Its id.
    pub id: i64,
    /// Its org's id.
    pub org_id: i64,
    /// Its org's name.
    pub org: String,
    /// The address that sends its logs, or the host name a relay forwards for.
    pub identity: String,
    /// A name an administrator gave it.
    pub name: Option<String>,
    /// The device family whose patterns match most of its events (`openssh`,
    /// `fortigate`, …); empty when none does.
    pub family: String,
    /// `cef:<vendor>/<product>` (or `leef:…`) when its events name one, else the family.
    pub product: String,
    /// Formats seen.
    pub formats: Vec<String>,
    /// HOSTNAME values seen (a few).
    pub hosts: Vec<String>,
    /// The entry node that heard from it last.
    pub collector: String,
    /// First event received.
    pub first_seen: String,
    /// Last event received.
    pub last_seen: String,
    /// Events received in all.
    pub events: i64,
    /// Bytes received in all.
    pub bytes: i64,
    /// Events per second over the last report period it was heard in.
    pub eps: f64,
    /// The reporting interval an administrator expects (seconds), if set.
    pub expected_interval_secs: Option<i64>,
    /// Its usual gap between events as learned from its history, seconds.
    pub learned_interval_secs: Option<i64>,
    /// Quiet this long, it is silent (seconds); `null` until known.
    pub silent_after_secs: Option<i64>,
    /// It stopped reporting (a `log-source-silent` incident is open).
    pub silent: bool,
    /// Since when.
    pub silent_since: Option<String>,
    /// The incident of the current silence.
    pub silent_incident_id: Option<i64>,
    /// An administrator retired it: not watched, not counted.
    pub retired: bool,
    /// Seen within the active window and not retired: it counts towards
    /// the licence's device limit.
    pub active: bool,
    /// Within the licence's device limit (active devices, first seen first).
    pub within_limit: bool,
    /// Events and bytes per UTC day, newest first (single-device answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<DeviceDay>>,
}

/// One device's traffic on one UTC day.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeviceDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Events.
    pub events: i64,
    /// Bytes.
    pub bytes: i64,
}

/// `GET /devices` filters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// An org, by id or name.
    #[serde(default)]
    pub org: Option<String>,
    /// A device family (`openssh`, …).
    #[serde(default)]
    pub family: Option<String>,
    /// Only silent (`true`) or only reporting (`false`) devices.
    #[serde(default)]
    pub silent: Option<bool>,
    /// Only retired (`true`) or only watched (`false`) devices.
    #[serde(default)]
    pub retired: Option<bool>,
    /// Only devices within (`true`) or beyond (`false`) the licence's limit.
    #[serde(default)]
    pub within_limit: Option<bool>,
    /// Text in the identity, name or host names (case-insensitive).
    #[serde(default)]
    pub q: Option<String>,
    /// Page size, 1–1000 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `PATCH /devices/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// A name (1–128 characters), or `null` to clear it.
    #[serde(default, deserialize_with = "nullable")]
    pub name: Option<Option<String>>,
    /// The expected reporting interval in seconds (60–2592000), or `null`
    /// to learn it from the device's history.
    #[serde(default, deserialize_with = "nullable")]
    pub expected_interval_secs: Option<Option<i64>>,
    /// Retire it (no longer watched or counted) or bring it back.
    #[serde(default, deserialize_with = "present")]
    pub retired: Option<bool>,
}

/// `GET /devices/summary` filters.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// An org, by id or name.
    #[serde(default)]
    pub org: Option<String>,
    /// Days counted back from today (UTC), 1–400 (default 7).
    #[serde(default)]
    pub days: Option<i64>,
}

/// Traffic of one device family in one org over the summary's days.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FamilySummary {
    /// The org's id.
    pub org_id: i64,
    /// The org's name.
    pub org: String,
    /// The device family (empty: devices no family recognises).
    pub family: String,
    /// Devices of this family that reported in those days.
    pub devices: i64,
    /// Events in those days.
    pub events: i64,
    /// Bytes in those days.
    pub bytes: i64,
    /// Events per day on average.
    pub events_per_day: f64,
    /// Bytes per day on average.
    pub bytes_per_day: f64,
    /// Bytes per event.
    pub bytes_per_event: f64,
}

/// `GET /devices/summary`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceSummary {
    /// The days counted.
    pub days: i64,
    /// One row per org and family, by org then family.
    pub items: Vec<FamilySummary>,
}

/// What merging one report did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Devices updated or created.
    pub merged: u64,
    /// Devices created.
    pub created: u64,
    /// New devices not kept: their org is at `max_per_org` (or the node's
    /// own overflow, as it reported it).
    pub overflow: u64,
    /// Silent devices that reported again (their incidents resolved).
    pub returned: u64,
}

/// What an inventory pass found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepOutcome {
    /// Devices found silent in this pass.
    pub newly_silent: u64,
    /// Of those, devices whose whole collector went silent (one incident for all).
    pub grouped: u64,
    /// Incidents raised.
    pub incidents: u64,
    /// Silent devices now.
    pub silent: u64,
    /// Active devices now.
    pub active: u64,
    /// Active devices beyond the licence's limit.
    pub beyond: u64,
    /// The limit's standings for the entry nodes (`version` 0: the caller numbers it).
    pub limits: DeviceLimits,
}

const COLUMNS: &str = "d.id, d.org_id, o.name AS org_name, d.identity, d.name, d.family, d.product, d.formats, \
     d.hosts, d.collector, d.first_seen, d.last_seen, d.events, d.bytes, d.eps_milli, d.expected_interval_secs, \
     d.usual_gap_ms, d.active_periods, d.silent_since, d.silent_record_id, d.retired, d.within_limit";

fn json_list(row: &AnyRow, col: &str) -> Result<Vec<String>> {
    serde_json::from_str(&row.text(col)?).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// Adds `more` to `list` (no repeats, at most `max`).
fn merge_list(list: &mut Vec<String>, more: &[String], max: usize) {
    for m in more {
        if list.len() >= max {
            break;
        }
        if !list.contains(m) {
            list.push(m.clone());
        }
    }
}

/// `%` and `_` taken literally in a LIKE pattern (escape `\`).
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The existing row of a device, as merging needs it.
struct Known {
    last_seen: i64,
    usual_gap_ms: Option<i64>,
    silent_record_id: Option<i64>,
    silent: bool,
    hosts: Vec<String>,
    formats: Vec<String>,
    family: String,
    product: String,
}

impl Store {
    fn device(&self, row: &AnyRow) -> Result<Device> {
        let settings = &self.config().devices;
        let now = self.now_ms();
        let last_seen = row.int("last_seen")?;
        let retired = row.int("retired")? != 0;
        let expected = row.opt_int("expected_interval_secs")?;
        let usual = row.opt_int("usual_gap_ms")?;
        let silent_since = row.opt_int("silent_since")?;
        Ok(Device {
            id: row.int("id")?,
            org_id: row.int("org_id")?,
            org: row.text("org_name")?,
            identity: row.text("identity")?,
            name: row.opt_text("name")?,
            family: row.text("family")?,
            product: row.text("product")?,
            formats: json_list(row, "formats")?,
            hosts: json_list(row, "hosts")?,
            collector: row.text("collector")?,
            first_seen: fmt_ms(row.int("first_seen")?),
            last_seen: fmt_ms(last_seen),
            events: row.int("events")?,
            bytes: row.int("bytes")?,
            eps: row.int("eps_milli")? as f64 / 1_000.0,
            expected_interval_secs: expected,
            learned_interval_secs: usual.map(|ms| (ms + 500) / 1_000),
            silent_after_secs: settings
                .silent_after(expected, usual, row.int("active_periods")?)
                .map(|ms| (ms + 500) / 1_000),
            silent: silent_since.is_some(),
            silent_since: silent_since.map(fmt_ms),
            silent_incident_id: row.opt_int("silent_record_id")?,
            retired,
            active: !retired && last_seen >= settings.active_since(now),
            within_limit: row.int("within_limit")? != 0,
            days: None,
        })
    }

    /// Merges an entry node's report into the inventory in one
    /// transaction: new devices are created (up to `max_per_org` per org),
    /// known ones get their counters, host names, formats, family, usual
    /// gap and per-day traffic; a silent device that reported again is
    /// silent no longer and its incident is resolved (audited).
    pub async fn merge_devices(&self, report: &DeviceReport) -> Result<MergeStats> {
        let mut stats = MergeStats { overflow: report.overflow.iter().map(|(_, n)| *n).sum(), ..MergeStats::default() };
        if report.devices.is_empty() {
            return Ok(stats);
        }
        let now = self.now_ms();
        let settings = self.config().devices.clone();
        let mut w = self.write().await?;
        // Devices of orgs that exist (an org deboarded meanwhile loses its
        // report), grouped by org.
        let mut by_org: BTreeMap<i64, Vec<&DeviceSeen>> = BTreeMap::new();
        for d in &report.devices {
            by_org.entry(i64::from(d.org.0)).or_default().push(d);
        }
        let ids: Vec<i64> = by_org.keys().copied().collect();
        let mut known_orgs = Vec::new();
        let mut sizes: HashMap<i64, u64> = HashMap::new();
        for chunk in ids.chunks(200) {
            let mut q = Sql::new("SELECT id FROM orgs WHERE id IN ");
            q.bind_list(chunk);
            for r in q.build().fetch_all(w.conn()).await? {
                known_orgs.push(r.int("id")?);
            }
            let mut q = Sql::new("SELECT org_id, COUNT(*) AS n FROM devices WHERE org_id IN ");
            q.bind_list(chunk).push(" GROUP BY org_id");
            for r in q.build().fetch_all(w.conn()).await? {
                sizes.insert(r.int("org_id")?, u64::try_from(r.int("n")?).unwrap_or(0));
            }
        }
        by_org.retain(|org, _| *org != SUPER_GLOBAL && known_orgs.contains(org));
        let mut rows: Vec<(&DeviceSeen, Known, bool)> = Vec::new();
        for (org, devices) in &by_org {
            let mut known: HashMap<String, Known> = HashMap::new();
            for chunk in devices.chunks(200) {
                let mut q = Sql::new(
                    "SELECT identity, last_seen, usual_gap_ms, silent_since, silent_record_id, hosts, formats, \
                     family, product FROM devices WHERE org_id = ",
                );
                q.bind(*org).push(" AND identity IN (");
                for (i, d) in chunk.iter().enumerate() {
                    if i > 0 {
                        q.push(", ");
                    }
                    q.bind(d.identity.clone());
                }
                q.push(")");
                for r in q.build().fetch_all(w.conn()).await? {
                    known.insert(
                        r.text("identity")?,
                        Known {
                            last_seen: r.int("last_seen")?,
                            usual_gap_ms: r.opt_int("usual_gap_ms")?,
                            silent: r.opt_int("silent_since")?.is_some(),
                            silent_record_id: r.opt_int("silent_record_id")?,
                            hosts: json_list(&r, "hosts")?,
                            formats: json_list(&r, "formats")?,
                            family: r.text("family")?,
                            product: r.text("product")?,
                        },
                    );
                }
            }
            let size = sizes.entry(*org).or_default();
            for d in devices {
                match known.remove(&d.identity) {
                    Some(k) => rows.push((d, k, false)),
                    None if *size >= settings.max_per_org => stats.overflow += 1,
                    None => {
                        *size += 1;
                        let k = Known {
                            last_seen: d.first_ms,
                            usual_gap_ms: None,
                            silent: false,
                            silent_record_id: None,
                            hosts: Vec::new(),
                            formats: Vec::new(),
                            family: String::new(),
                            product: String::new(),
                        };
                        rows.push((d, k, true));
                    }
                }
            }
        }
        let period_ms = report.period_ms.max(1);
        let mut saved: Vec<(i64, &DeviceSeen)> = Vec::with_capacity(rows.len());
        let mut returned: Vec<(i64, Option<i64>)> = Vec::new();
        for chunk in rows.chunks(self.rows_per_statement()) {
            let mut q = Sql::new(
                "INSERT INTO devices AS d (org_id, identity, family, product, formats, hosts, collector, first_seen, \
                 last_seen, events, bytes, eps_milli, usual_gap_ms, active_periods, created_at, updated_at) VALUES ",
            );
            let mut silent_refs = HashMap::new();
            for (i, (d, k, _)) in chunk.iter().enumerate() {
                // The longest quiet stretch of this period, counting the one
                // since the device's last event before it.
                let across = if d.first_ms > k.last_seen { d.first_ms - k.last_seen } else { 0 };
                let gap = d.max_gap_ms.max(across);
                let usual = match (k.usual_gap_ms, gap) {
                    (None, 0) => None,
                    (None, g) => Some(g),
                    (Some(u), g) => Some((u * 3 + g) / 4),
                };
                let (mut hosts, mut formats) = (k.hosts.clone(), k.formats.clone());
                merge_list(&mut hosts, &d.hosts, MAX_HOSTS);
                merge_list(&mut formats, &d.formats, 5);
                let family = d.family.clone().unwrap_or_else(|| k.family.clone());
                let product = d.product.clone().unwrap_or_else(|| k.product.clone());
                let eps_milli =
                    i64::try_from(d.events.saturating_mul(1_000_000) / period_ms.unsigned_abs()).unwrap_or(i64::MAX);
                if i > 0 {
                    q.push(", ");
                }
                q.push("(").bind(i64::from(d.org.0)).push(", ").bind(d.identity.clone()).push(", ");
                q.bind(family).push(", ").bind(product).push(", ");
                q.bind(serde_json::to_string(&formats).unwrap_or_else(|_| "[]".into())).push(", ");
                q.bind(serde_json::to_string(&hosts).unwrap_or_else(|_| "[]".into())).push(", ");
                q.bind(report.node.as_str().to_owned()).push(", ").bind(d.first_ms).push(", ").bind(d.last_ms);
                q.push(", ").bind(i64::try_from(d.events).unwrap_or(i64::MAX)).push(", ");
                q.bind(i64::try_from(d.bytes).unwrap_or(i64::MAX)).push(", ").bind(eps_milli).push(", ");
                q.bind(usual).push(", 1, ").bind(now).push(", ").bind(now).push(")");
                if k.silent {
                    silent_refs.insert((i64::from(d.org.0), d.identity.clone()), k.silent_record_id);
                }
            }
            q.push(
                " ON CONFLICT (org_id, identity) DO UPDATE SET family = excluded.family, \
                 product = excluded.product, formats = excluded.formats, hosts = excluded.hosts, \
                 collector = excluded.collector, \
                 first_seen = CASE WHEN excluded.first_seen < d.first_seen THEN excluded.first_seen ELSE d.first_seen END, \
                 last_seen = CASE WHEN excluded.last_seen > d.last_seen THEN excluded.last_seen ELSE d.last_seen END, \
                 events = d.events + excluded.events, bytes = d.bytes + excluded.bytes, \
                 eps_milli = excluded.eps_milli, usual_gap_ms = excluded.usual_gap_ms, \
                 active_periods = d.active_periods + 1, updated_at = excluded.updated_at \
                 RETURNING id, org_id, identity",
            );
            let by_key: HashMap<(i64, &str), &DeviceSeen> =
                chunk.iter().map(|(d, _, _)| ((i64::from(d.org.0), d.identity.as_str()), *d)).collect();
            for r in q.build().fetch_all(w.conn()).await? {
                let (id, org, identity) = (r.int("id")?, r.int("org_id")?, r.text("identity")?);
                if let Some(d) = by_key.get(&(org, identity.as_str())) {
                    saved.push((id, d));
                }
                if let Some(record) = silent_refs.remove(&(org, identity)) {
                    returned.push((id, record));
                }
            }
            stats.created += chunk.iter().filter(|(_, _, new)| *new).count() as u64;
        }
        stats.merged = saved.len() as u64;
        for chunk in saved.chunks(self.rows_per_statement()) {
            let mut q = Sql::new("INSERT INTO device_days AS x (device_id, day, events, bytes) VALUES ");
            for (i, (id, d)) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.push("(").bind(*id).push(", ").bind(d.last_ms.div_euclid(DAY_MS)).push(", ");
                q.bind(i64::try_from(d.events).unwrap_or(i64::MAX)).push(", ");
                q.bind(i64::try_from(d.bytes).unwrap_or(i64::MAX)).push(")");
            }
            q.push(
                " ON CONFLICT (device_id, day) DO UPDATE SET events = x.events + excluded.events, \
                 bytes = x.bytes + excluded.bytes",
            );
            q.build().execute(w.conn()).await?;
        }
        for (device, record) in &returned {
            stats.returned += 1;
            let mut q = Sql::new("UPDATE devices SET silent_since = NULL, silent_record_id = NULL WHERE id = ");
            q.bind(*device);
            q.build().execute(w.conn()).await?;
            if let Some(record) = record {
                // A collector's grouped incident ends when one of its devices
                // is back (the collector is); devices still quiet are
                // watched again each on its own.
                let mut q = Sql::new(
                    "UPDATE devices SET silent_since = NULL, silent_record_id = NULL WHERE silent_record_id = ",
                );
                q.bind(*record);
                q.build().execute(w.conn()).await?;
                resolve(w.conn(), now, *record, "the log source reported again").await?;
                nodes::clear_sources_silent(w.conn(), *record).await?;
            }
        }
        w.commit().await?;
        Ok(stats)
    }

    /// One inventory pass at the store's clock, in one transaction: finds
    /// devices silent past their interval, decides which active devices
    /// are within the licence's limit, and drops per-day traffic older
    /// than 400 days.
    pub async fn sweep_devices(&self) -> Result<SweepOutcome> {
        let now = self.now_ms();
        let settings = self.config().devices.clone();
        let mut out = SweepOutcome::default();
        let mut w = self.write().await?;
        let newest = Sql::new("SELECT COALESCE(MAX(id), 0) AS id FROM records").build().fetch_one(w.conn()).await?;
        let newest = newest.int("id")?;
        sweep_silence(w.conn(), now, &settings, &mut out).await?;
        sweep_limit(w.conn(), now, &settings, &mut out).await?;
        let mut q = Sql::new("DELETE FROM device_days WHERE day < ");
        q.bind(now.div_euclid(DAY_MS) - DAYS_KEPT);
        q.build().execute(w.conn()).await?;
        // The incidents the sweep raised reach people like any other.
        let mut queued = 0;
        if out.incidents > 0 {
            let mut q = Sql::new("SELECT id FROM records WHERE kind = 'incident' AND id > ");
            q.bind(newest).push(" ORDER BY id");
            for r in q.build().fetch_all(w.conn()).await? {
                let record = self.load_record(w.conn(), &Principal::cli(), super::Kind::Incident, r.int("id")?).await?;
                queued += self.notify_record_change(w.conn(), None, &record, now).await?;
            }
        }
        w.commit().await?;
        if queued > 0 {
            self.wake_dispatcher();
        }
        Ok(out)
    }

    /// A page of the devices `who` sees, by id.
    pub async fn list_devices(&self, who: &Principal, query: DeviceQuery) -> Result<Page<Device>> {
        who.require(Module::Devices, Op::Read)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(StoreError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM devices d JOIN orgs o ON o.id = d.org_id WHERE 1 = 1"));
        who.record_filter(&mut q, "d.org_id");
        if let Some(org) = &query.org {
            self.push_org_filter(&mut q, "d.org_id", who, org).await?;
        }
        if let Some(family) = &query.family {
            check_lookup("family", family)?;
            q.push(" AND d.family = ").bind(family.clone());
        }
        if let Some(silent) = query.silent {
            q.push(if silent { " AND d.silent_since IS NOT NULL" } else { " AND d.silent_since IS NULL" });
        }
        if let Some(retired) = query.retired {
            q.push(" AND d.retired = ").bind(i64::from(retired));
        }
        if let Some(within) = query.within_limit {
            q.push(" AND d.within_limit = ").bind(i64::from(within));
        }
        if let Some(text) = &query.q {
            check_lookup("q", text)?;
            let p = like_pattern(text);
            q.push(" AND (LOWER(d.identity) LIKE ").bind(p.clone()).push(" ESCAPE '\\'");
            q.push(" OR LOWER(COALESCE(d.name, '')) LIKE ").bind(p.clone()).push(" ESCAPE '\\'");
            q.push(" OR LOWER(d.hosts) LIKE ").bind(p).push(" ESCAPE '\\')");
        }
        if let Some(cursor) = &query.cursor {
            let id: i64 = cursor.parse().map_err(|_| StoreError::invalid("cursor", "not a cursor from this list"))?;
            q.push(" AND d.id > ").bind(id);
        }
        q.push(" ORDER BY d.id LIMIT ").bind(limit + 1);
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
            items.push(self.device(r)?);
        }
        let next_cursor = (rows.len() as i64 > limit).then(|| items.last().map(|d| d.id.to_string())).flatten();
        Ok(Page { items, next_cursor })
    }

    /// One device `who` sees, with its traffic per day (newest first, at
    /// most 90 days).
    pub async fn get_device(&self, who: &Principal, id: i64) -> Result<Device> {
        who.require(Module::Devices, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut d = self.load_device(&mut conn, who, id).await?;
        let mut q = Sql::new("SELECT day, events, bytes FROM device_days WHERE device_id = ");
        q.bind(id).push(" ORDER BY day DESC LIMIT 90");
        let mut days = Vec::new();
        for r in q.build().fetch_all(&mut *conn).await? {
            let date = fmt_ms(r.int("day")? * DAY_MS);
            days.push(DeviceDay {
                date: date.get(..10).unwrap_or(&date).to_owned(),
                events: r.int("events")?,
                bytes: r.int("bytes")?,
            });
        }
        d.days = Some(days);
        Ok(d)
    }

    async fn load_device(&self, conn: &mut AnyConnection, who: &Principal, id: i64) -> Result<Device> {
        let mut q = Sql::new(&format!("SELECT {COLUMNS} FROM devices d JOIN orgs o ON o.id = d.org_id WHERE d.id = "));
        q.bind(id);
        who.record_filter(&mut q, "d.org_id");
        let row = q.build().fetch_optional(&mut *conn).await?.ok_or(StoreError::NotFound("device"))?;
        self.device(&row)
    }

    /// Names a device, sets its expected interval, retires it or brings it
    /// back (audited). Retiring a silent device resolves its incident.
    pub async fn update_device(&self, who: &Principal, id: i64, patch: DevicePatch) -> Result<Device> {
        who.require(Module::Devices, Op::Read)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.load_device(w.conn(), who, id).await?;
        who.require(Module::Devices, Op::Update)?;
        let mut q = Sql::new("UPDATE devices SET updated_at = ");
        q.bind(now);
        let mut changed_before = serde_json::Map::new();
        let mut changed_after = serde_json::Map::new();
        if let Some(name) = &patch.name {
            let name = match name {
                Some(n) => Some(check_name("name", n, 128)?),
                None => None,
            };
            changed_before.insert("name".into(), before.name.clone().into());
            changed_after.insert("name".into(), name.clone().into());
            q.push(", name = ").bind(name);
        }
        if let Some(interval) = patch.expected_interval_secs {
            if let Some(secs) = interval
                && !INTERVAL_RANGE.contains(&secs)
            {
                return Err(StoreError::invalid(
                    "expected_interval_secs",
                    format!("must be between {} and {} seconds", INTERVAL_RANGE.start(), INTERVAL_RANGE.end()),
                ));
            }
            changed_before.insert("expected_interval_secs".into(), before.expected_interval_secs.into());
            changed_after.insert("expected_interval_secs".into(), interval.into());
            q.push(", expected_interval_secs = ").bind(interval);
        }
        let mut resolve_silence = None;
        if let Some(retired) = patch.retired {
            changed_before.insert("retired".into(), before.retired.into());
            changed_after.insert("retired".into(), retired.into());
            q.push(", retired = ").bind(i64::from(retired));
            if retired && before.silent {
                q.push(", silent_since = NULL, silent_record_id = NULL");
                resolve_silence = before.silent_incident_id;
            }
        }
        q.push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        // A collector's grouped incident stays open while other devices
        // of it are still silent under it.
        if let Some(record) = resolve_silence {
            let mut q = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE silent_record_id = ");
            q.bind(record);
            if q.build().fetch_one(w.conn()).await?.int("n")? == 0 {
                resolve(w.conn(), now, record, "the device was retired").await?;
                nodes::clear_sources_silent(w.conn(), record).await?;
            }
        }
        let row = AuditRow::new(
            Some(before.org_id),
            "update",
            "device",
            Some(id),
            Some(changed_before.into()),
            Some(changed_after.into()),
        );
        w.finish(now, who, row).await?;
        self.get_device(who, id).await
    }

    /// Events and bytes per device family and org over the last `days`.
    pub async fn device_summary(&self, who: &Principal, query: SummaryQuery) -> Result<DeviceSummary> {
        who.require(Module::Devices, Op::Read)?;
        let days = query.days.unwrap_or(7);
        if !(1..=DAYS_KEPT).contains(&days) {
            return Err(StoreError::invalid("days", format!("must be between 1 and {DAYS_KEPT}")));
        }
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(
            "SELECT d.org_id, o.name AS org_name, d.family, COUNT(DISTINCT d.id) AS devices, \
             CAST(SUM(x.events) AS BIGINT) AS events, CAST(SUM(x.bytes) AS BIGINT) AS bytes FROM device_days x \
             JOIN devices d ON d.id = x.device_id JOIN orgs o ON o.id = d.org_id WHERE x.day > ",
        );
        q.bind(self.now_ms().div_euclid(DAY_MS) - days);
        who.record_filter(&mut q, "d.org_id");
        if let Some(org) = &query.org {
            self.push_org_filter(&mut q, "d.org_id", who, org).await?;
        }
        q.push(" GROUP BY d.org_id, o.name, d.family ORDER BY d.org_id, d.family");
        let mut items = Vec::new();
        for r in q.build().fetch_all(&mut *conn).await? {
            let (events, bytes) = (r.int("events")?, r.int("bytes")?);
            items.push(FamilySummary {
                org_id: r.int("org_id")?,
                org: r.text("org_name")?,
                family: r.text("family")?,
                devices: r.int("devices")?,
                events,
                bytes,
                events_per_day: events as f64 / days as f64,
                bytes_per_day: bytes as f64 / days as f64,
                bytes_per_event: if events > 0 { bytes as f64 / events as f64 } else { 0.0 },
            });
        }
        Ok(DeviceSummary { days, items })
    }
}

/// A device gone quiet, as the silence pass words its incident.
struct Quiet {
    id: i64,
    org: i64,
    label: String,
    family: String,
    collector: String,
    last_seen: i64,
    after_ms: i64,
}

/// Devices silent past their interval raise one incident each, or one for
/// all of a collector's devices when they went quiet together (none of its
/// active devices reported within the floor, and two or more fell silent).
async fn sweep_silence(
    conn: &mut AnyConnection,
    now: i64,
    settings: &DeviceSettings,
    out: &mut SweepOutcome,
) -> Result<()> {
    let active_since = settings.active_since(now);
    let quiet_for = settings.silent_floor_ms.min(*INTERVAL_RANGE.start() * 1_000);
    let mut q = Sql::new(
        "SELECT d.id, d.org_id, d.identity, d.name, d.family, d.collector, d.last_seen, \
         d.expected_interval_secs, d.usual_gap_ms, d.active_periods FROM devices d \
         WHERE d.retired = 0 AND d.silent_since IS NULL AND d.last_seen < ",
    );
    q.bind(now - quiet_for).push(" AND d.last_seen >= ").bind(active_since).push(" ORDER BY d.id");
    let mut quiet: Vec<Quiet> = Vec::new();
    for r in q.build().fetch_all(&mut *conn).await? {
        let last_seen = r.int("last_seen")?;
        let after = settings.silent_after(
            r.opt_int("expected_interval_secs")?,
            r.opt_int("usual_gap_ms")?,
            r.int("active_periods")?,
        );
        let Some(after_ms) = after.filter(|after| now - last_seen > *after) else { continue };
        let identity = r.text("identity")?;
        let label = match r.opt_text("name")? {
            Some(name) => format!("{name} ({identity})"),
            None => identity,
        };
        quiet.push(Quiet {
            id: r.int("id")?,
            org: r.int("org_id")?,
            label,
            family: r.text("family")?,
            collector: r.text("collector")?,
            last_seen,
            after_ms,
        });
    }
    out.newly_silent = quiet.len() as u64;
    let mut per_collector: BTreeMap<&str, Vec<&Quiet>> = BTreeMap::new();
    for d in &quiet {
        per_collector.entry(d.collector.as_str()).or_default().push(d);
    }
    let mut grouped: Vec<&str> = Vec::new();
    for (collector, devices) in &per_collector {
        if devices.len() < 2 {
            continue;
        }
        let mut q = Sql::new("SELECT MAX(last_seen) AS newest FROM devices WHERE retired = 0 AND collector = ");
        q.bind((*collector).to_owned()).push(" AND last_seen >= ").bind(active_since);
        let newest = q.build().fetch_one(&mut *conn).await?.opt_int("newest")?.unwrap_or(0);
        if now - newest > settings.silent_floor_ms {
            grouped.push(collector);
        }
    }
    for collector in &grouped {
        let devices = &per_collector[collector];
        let newest = devices.iter().map(|d| d.last_seen).max().unwrap_or(now);
        let mut orgs: BTreeMap<i64, u64> = BTreeMap::new();
        for d in devices {
            *orgs.entry(d.org).or_default() += 1;
        }
        let mut q = Sql::new("SELECT state, state_reason, last_seen_ms FROM nodes WHERE name = ");
        q.bind((*collector).to_owned());
        let registry = match q.build().fetch_optional(&mut *conn).await? {
            Some(r) => format!(
                "The node registry has {collector} {} ({}), last heartbeat {}.",
                r.text("state")?,
                r.text("state_reason")?,
                r.opt_int("last_seen_ms")?.map_or_else(|| "never".to_owned(), fmt_ms)
            ),
            None => format!("{collector} is not in the node registry (it is the collector of `vigil run`)."),
        };
        let incident = SystemIncident {
            org: SUPER_LOCAL,
            rule: SILENT_RULE,
            source_ref: format!("{SILENT_RULE}:collector:{collector}:{newest}"),
            title: format!(
                "All {} log sources of collector {collector} are silent: the collector is the likely cause",
                devices.len()
            ),
            description: format!(
                "No device heard by {collector} has reported since {} (devices per org id: {}). {registry} \
                 The devices' own incidents are held back while this one is open.",
                fmt_ms(newest),
                orgs.iter().map(|(o, n)| format!("{o}: {n}")).collect::<Vec<_>>().join(", ")
            ),
            severity: Severity::High,
            count: devices.len() as i64,
            first_seen: newest,
        };
        // Raised before for this outage (`None`): silent, nothing new to say.
        let record = incident.insert(&mut *conn, now).await?;
        out.incidents += u64::from(record.is_some());
        if let Some(id) = record {
            let why = format!(
                "all {} log sources it hears went silent together (none since {}; incident {id})",
                devices.len(),
                fmt_ms(newest)
            );
            nodes::mark_sources_silent(&mut *conn, collector, &why, id, now).await?;
        }
        for d in devices {
            mark_silent(&mut *conn, d.id, now, record).await?;
        }
        out.grouped += devices.len() as u64;
    }
    for d in quiet.iter().filter(|d| !grouped.contains(&d.collector.as_str())) {
        let family = if d.family.is_empty() { String::new() } else { format!(" ({})", d.family) };
        let incident = SystemIncident {
            org: d.org,
            rule: SILENT_RULE,
            source_ref: format!("{SILENT_RULE}:{}:{}", d.id, d.last_seen),
            title: format!("Log source silent: {}", d.label),
            description: format!(
                "{}{family} has sent nothing since {} (quiet for more than {} s is silence for it). \
                 Last heard by {}. The incident is resolved when it reports again.",
                d.label,
                fmt_ms(d.last_seen),
                d.after_ms / 1_000,
                d.collector
            ),
            severity: Severity::Medium,
            count: 1,
            first_seen: d.last_seen,
        };
        let record = incident.insert(&mut *conn, now).await?;
        out.incidents += u64::from(record.is_some());
        mark_silent(&mut *conn, d.id, now, record).await?;
    }
    let q = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE silent_since IS NOT NULL AND retired = 0");
    out.silent = u64::try_from(q.build().fetch_one(&mut *conn).await?.int("n")?).unwrap_or(0);
    Ok(())
}

/// Ranks the active devices first seen first against the licence's limit,
/// marks each within or beyond it, and raises, updates or resolves the
/// provider's one device-limit incident.
async fn sweep_limit(
    conn: &mut AnyConnection,
    now: i64,
    settings: &DeviceSettings,
    out: &mut SweepOutcome,
) -> Result<()> {
    let active_since = settings.active_since(now);
    let mut q = Sql::new("SELECT COUNT(*) AS n FROM devices WHERE retired = 0 AND last_seen >= ");
    q.bind(active_since);
    out.active = u64::try_from(q.build().fetch_one(&mut *conn).await?.int("n")?).unwrap_or(0);
    let mut within = Vec::new();
    match settings.limit {
        Some(limit) => {
            let mut q =
                Sql::new("SELECT id, org_id, identity, first_seen FROM devices WHERE retired = 0 AND last_seen >= ");
            q.bind(active_since).push(" ORDER BY first_seen, id LIMIT ").bind(i64::try_from(limit).unwrap_or(i64::MAX));
            let mut cutoff = None;
            for r in q.build().fetch_all(&mut *conn).await? {
                let org = u32::try_from(r.int("org_id")?).map_err(|_| StoreError::Corrupt("org id".into()))?;
                within.push((OrgId(org), r.text("identity")?));
                cutoff = Some((r.int("first_seen")?, r.int("id")?));
            }
            let (first, id) = cutoff.unwrap_or((i64::MIN, i64::MIN));
            // Active and at or before the cutoff (first seen, id): within.
            for set in [1_i64, 0] {
                let mut q =
                    Sql::new(&format!("UPDATE devices SET within_limit = {set} WHERE within_limit = {} AND ", 1 - set));
                if set == 0 {
                    q.push("NOT ");
                }
                q.push("(retired = 0 AND last_seen >= ").bind(active_since).push(" AND (first_seen < ").bind(first);
                q.push(" OR (first_seen = ").bind(first).push(" AND id <= ").bind(id).push(")))");
                q.build().execute(&mut *conn).await?;
            }
            out.beyond = out.active.saturating_sub(limit);
        }
        None => {
            let q = Sql::new("UPDATE devices SET within_limit = 1 WHERE within_limit = 0");
            q.build().execute(&mut *conn).await?;
        }
    }
    out.limits = DeviceLimits {
        version: 0,
        limit: settings.limit,
        enforce: settings.enforce,
        within,
        active: out.active,
        parts: 0,
    };
    let mut q = Sql::new("SELECT id FROM records WHERE kind = 'incident' AND rule_id = ");
    q.bind(LIMIT_RULE.to_owned()).push(" AND status IN (0, 1) ORDER BY id DESC LIMIT 1");
    let open = q.build().fetch_optional(&mut *conn).await?.map(|r| r.int("id")).transpose()?;
    let Some(limit) = settings.limit.filter(|_| out.beyond > 0) else {
        if let Some(id) = open {
            resolve(conn, now, id, "active devices are within the licence's limit again").await?;
        }
        return Ok(());
    };
    let policy = if settings.enforce {
        "policy enforce: their events are dropped and counted (reason device_limit)"
    } else {
        "policy alert: their events are accepted and counted"
    };
    let beyond = out.beyond;
    let incident = SystemIncident {
        org: SUPER_LOCAL,
        rule: LIMIT_RULE,
        source_ref: format!("{LIMIT_RULE}:{now}"),
        title: format!("Device limit exceeded: {} active devices, the licence allows {limit}", out.active),
        description: format!(
            "{beyond} devices first seen after the limit was reached are beyond it ({policy}). \
             GET /api/v1/devices?within_limit=false lists them; retire devices no longer in use or \
             extend the licence."
        ),
        severity: Severity::High,
        count: i64::try_from(beyond).unwrap_or(i64::MAX),
        first_seen: now,
    };
    match open {
        // One incident while the limit is exceeded, kept up to date.
        Some(id) => {
            let mut q = Sql::new("UPDATE records SET title = ");
            q.bind(incident.title).push(", description = ").bind(incident.description);
            q.push(", hit_count = ").bind(incident.count).push(", last_seen = ").bind(now);
            q.push(", updated_at = ").bind(now).push(" WHERE id = ").bind(id);
            q.build().execute(&mut *conn).await?;
        }
        None => out.incidents += u64::from(incident.insert(conn, now).await?.is_some()),
    }
    Ok(())
}

/// An incident the inventory raises for the pipeline (no rule hit behind it).
struct SystemIncident {
    org: i64,
    rule: &'static str,
    source_ref: String,
    title: String,
    description: String,
    severity: Severity,
    count: i64,
    first_seen: i64,
}

impl SystemIncident {
    /// Inserts it with its audit row unless one with its `source_ref`
    /// exists; returns its id when it was created.
    async fn insert(self, conn: &mut AnyConnection, now: i64) -> Result<Option<i64>> {
        let mut q = Sql::new(
            "INSERT INTO records (kind, org_id, source_ref, rule_id, title, description, severity, status, \
             hit_count, first_seen, last_seen, event_ids, created_at, updated_at) VALUES ('incident', ",
        );
        q.bind(self.org).push(", ").bind(self.source_ref).push(", ").bind(self.rule.to_owned()).push(", ");
        q.bind(self.title.clone()).push(", ").bind(self.description).push(", ");
        q.bind(i64::from(self.severity.rank())).push(", 0, ").bind(self.count).push(", ");
        q.bind(self.first_seen).push(", ").bind(now).push(", '[]', ").bind(now).push(", ").bind(now);
        q.push(") ON CONFLICT (source_ref) DO NOTHING RETURNING id");
        let Some(id) = q.build().fetch_optional(&mut *conn).await?.map(|r| r.int("id")).transpose()? else {
            return Ok(None);
        };
        let after = serde_json::json!({ "rule": self.rule, "title": self.title });
        AuditRow::new(Some(self.org), "create", "incident", Some(id), None, Some(after))
            .write(conn, now, &Principal::pipeline())
            .await?;
        Ok(Some(id))
    }
}

async fn mark_silent(conn: &mut AnyConnection, device: i64, now: i64, record: Option<i64>) -> Result<()> {
    let mut q = Sql::new("UPDATE devices SET silent_since = ");
    q.bind(now).push(", silent_record_id = ").bind(record).push(" WHERE id = ").bind(device);
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Resolves incident `id` if it is still open or under investigation,
/// auditing why.
async fn resolve(conn: &mut AnyConnection, now: i64, id: i64, why: &str) -> Result<()> {
    let mut q = Sql::new("SELECT org_id, status FROM records WHERE status IN (0, 1) AND id = ");
    q.bind(id);
    let Some(row) = q.build().fetch_optional(&mut *conn).await? else { return Ok(()) };
    let (org, status) = (row.opt_int("org_id")?, row.int("status")?);
    let mut q = Sql::new("UPDATE records SET status = 2, updated_at = ");
    q.bind(now).push(" WHERE id = ").bind(id);
    q.build().execute(&mut *conn).await?;
    let before = if status == 0 { "open" } else { "investigating" };
    AuditRow::new(
        org,
        "update",
        "incident",
        Some(id),
        Some(serde_json::json!({ "status": before })),
        Some(serde_json::json!({ "status": "resolved", "reason": why })),
    )
    .write(conn, now, &Principal::pipeline())
    .await
}

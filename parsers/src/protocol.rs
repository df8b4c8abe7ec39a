//! The types the roles exchange (SPEC §1, §3, §4), in the lowest crate so
//! every role and every transport (in-process channels in `vigil run`,
//! NATS JetStream in a cluster) shares one definition, with serde in both
//! directions: node names, budgets and interval reports of the EPS loop,
//! the org table the supervisor publishes, incident updates and their
//! severities, the
//! built-in org ids, event ids that carry their node, and the [`Clock`]
//! every waiting or windowing component takes (implemented here for
//! virtual time; the wall clock lives with the roles, as this crate reads
//! none).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::event::{OrgId, Str};
use crate::time::EventTime;

/// The built-in orgs (SPEC §4) with their fixed ids: one table for the
/// pipeline, the record store and the wire.
pub const BUILTIN_ORGS: [(OrgId, &str); 2] =
    [(OrgId::SUPER_LOCAL, "Super/Local"), (OrgId::SUPER_GLOBAL, "Super/Global")];

/// A source of "now" that can also wait.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> EventTime;

    /// Blocks until `deadline` (or returns at once if it has passed).
    fn sleep_until(&self, deadline: EventTime);
}

/// A clock that moves only when told to: `sleep_until` blocks until another
/// thread advances the clock past the deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<(Mutex<EventTime>, Condvar)>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: EventTime) -> ManualClock {
        ManualClock { inner: Arc::new((Mutex::new(start), Condvar::new())) }
    }

    /// Moves the clock to `t` (never backwards) and wakes sleepers.
    pub fn set(&self, t: EventTime) {
        let (lock, cvar) = &*self.inner;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if t > *now {
            *now = t;
        }
        cvar.notify_all();
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        let now = self.now();
        self.set(now.add_secs(secs));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EventTime {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(&self, deadline: EventTime) {
        let (lock, cvar) = &*self.inner;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while now.unix_nanos() < deadline.unix_nanos() {
            now = cvar.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Name of an entry node (a collector, or a worker/supervisor that receives
/// syslog directly).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub Str);

impl NodeId {
    /// A node id from its name.
    pub fn new(name: &str) -> NodeId {
        NodeId(Str::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One org's admission rule on this node for one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgBudget {
    /// The organization.
    pub org: OrgId,
    /// A disabled org's events are dropped at entry and not counted as EPS.
    pub enabled: bool,
    /// At most this many of its events; `None` when the org has no limit.
    pub events: Option<u64>,
}

/// What a node may accept in one interval, as sent by the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Interval number (start time / T).
    pub interval: u64,
    /// Events the node may accept: (allocated + burst EPS) × T.
    pub node_events: u64,
    /// Per-org rules; orgs not listed are enabled and unlimited.
    pub orgs: Vec<OrgBudget>,
}

impl Budget {
    /// A budget with no org rules.
    pub fn node_only(interval: u64, node_events: u64) -> Budget {
        Budget { interval, node_events, orgs: Vec::new() }
    }
}

/// One org's counters for one interval.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrgCounts {
    /// The organization.
    pub org: OrgId,
    /// Events received (accepted or dropped); excludes a disabled org's.
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Dropped over the org's budget.
    pub dropped_org: u64,
    /// Dropped over the node's budget.
    pub dropped_node: u64,
    /// Dropped because the org is disabled.
    pub rejected_disabled: u64,
}

/// What a node reports at the end of an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// The reporting node.
    pub node: NodeId,
    /// The interval the counts are for.
    pub interval: u64,
    /// Events received (accepted or not), the node's incoming EPS × T.
    pub received: u64,
    /// Events accepted.
    pub accepted: u64,
    /// Per-org counters, by org id.
    pub orgs: Vec<OrgCounts>,
}

/// One device's traffic on one node over one report period (issue #18):
/// counters the intake aggregates, sent as a batch, never per event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSeen {
    /// The device's org.
    pub org: OrgId,
    /// Its identity, normalized: the reporter address, or the relayed
    /// HOSTNAME when a relay forwards for it.
    pub identity: String,
    /// HOSTNAME values seen (a few at most).
    pub hosts: Vec<String>,
    /// The device family whose pattern matched most of its events
    /// (`openssh`, `fortigate`, …), if any did.
    pub family: Option<String>,
    /// The product: `cef:<vendor>/<product>` (or `leef:`) when the events
    /// name one, else the family.
    pub product: Option<String>,
    /// Formats seen (`rfc3164`, `rfc5424`, `cef`, `leef`, `raw`).
    pub formats: Vec<String>,
    /// Receive time of its first event in the period, ms since the epoch.
    pub first_ms: i64,
    /// Receive time of its last event in the period.
    pub last_ms: i64,
    /// Events received in the period (accepted or dropped by the device limit).
    pub events: u64,
    /// Bytes of those events (their raw lines).
    pub bytes: u64,
    /// Longest gap between two of its events within the period, ms.
    pub max_gap_ms: i64,
}

/// What an entry node reports about the devices it heard from, every
/// `devices.report_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// The reporting node.
    pub node: NodeId,
    /// End of the period, ms since the epoch (the node's clock).
    pub at_ms: i64,
    /// Length of the period, ms (for the current EPS).
    pub period_ms: i64,
    /// Devices heard from in the period.
    pub devices: Vec<DeviceSeen>,
    /// New devices not tracked because their org reached the per-org
    /// ceiling, per org, in the period.
    pub overflow: Vec<(OrgId, u64)>,
}

impl DeviceReport {
    /// Splits the report for sending into reports of about `max_bytes`
    /// encoded at most (one when it fits), each with some of the devices,
    /// the same period, and the overflow in the first. The supervisor
    /// merges each on its own; together they count as the whole.
    pub fn split(mut self, max_bytes: usize) -> Vec<DeviceReport> {
        // A device's encoded size at most: its text, every byte escaped,
        // and its numbers and field names.
        let size = |d: &DeviceSeen| {
            let text = d.identity.len()
                + d.hosts.iter().map(|h| h.len() + 3).sum::<usize>()
                + d.family.as_ref().map_or(0, String::len)
                + d.product.as_ref().map_or(0, String::len)
                + d.formats.iter().map(|f| f.len() + 3).sum::<usize>();
            2 * text + 256
        };
        let overhead = 256 + self.node.as_str().len() + self.overflow.len() * 32;
        if self.devices.iter().map(size).sum::<usize>() + overhead <= max_bytes {
            return vec![self];
        }
        let mut out: Vec<DeviceReport> = Vec::new();
        let mut room = 0;
        for device in std::mem::take(&mut self.devices) {
            let need = size(&device);
            match out.last_mut() {
                Some(part) if need <= room => {
                    room -= need;
                    part.devices.push(device);
                }
                _ => {
                    let overflow = if out.is_empty() { std::mem::take(&mut self.overflow) } else { Vec::new() };
                    room = max_bytes.saturating_sub(overhead + need);
                    out.push(DeviceReport { devices: vec![device], overflow, ..self.clone() });
                }
            }
        }
        out
    }
}

/// What the licence's device limit allows, as the supervisor publishes it
/// to entry nodes: which devices are within the limit (first seen first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// Increases with every change.
    pub version: u64,
    /// The licence's device limit (`None`: unlimited).
    pub limit: Option<u64>,
    /// Drop events of devices beyond the limit (policy `enforce`); else
    /// accept and count them (policy `alert`).
    pub enforce: bool,
    /// Active devices within the limit, as `(org, identity)` (empty in a
    /// header whose `parts` carry them).
    pub within: Vec<(OrgId, String)>,
    /// Active devices in all (within the limit or not).
    pub active: u64,
    /// How many [`DeviceLimitsPart`]s carry `within` when the standings
    /// are too large for one message (0: `within` is here).
    #[serde(default)]
    pub parts: u32,
}

/// Device standings and reports larger than this, encoded, are sent in
/// parts of about this size: a NATS message is at most 1 MiB unless the
/// server is told otherwise.
pub const MESSAGE_PART_BYTES: usize = 256 * 1024;

/// Some of the `within` of standings too large for one message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimitsPart {
    /// The standings' version.
    pub version: u64,
    /// Which part, from 0.
    pub part: u32,
    /// Its devices within the limit, in the standings' order.
    pub within: Vec<(OrgId, String)>,
}

/// Parts that do not make up a header's standings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("standings {version}: {problem}")]
pub struct PartsError {
    /// The header's version.
    pub version: u64,
    /// What does not fit.
    pub problem: String,
}

impl DeviceLimits {
    /// Splits the standings for sending: whole (no parts) when they fit
    /// in `max_bytes` encoded, else a header without `within` and the
    /// parts that carry it, each about `max_bytes` at most.
    pub fn split(mut self, max_bytes: usize) -> (DeviceLimits, Vec<DeviceLimitsPart>) {
        // An entry's encoded size at most: `[org,"identity"],` with every
        // identity byte escaped.
        let size = |(_, identity): &(OrgId, String)| 2 * identity.len() + 16;
        if self.within.iter().map(size).sum::<usize>() + 256 <= max_bytes {
            self.parts = 0;
            return (self, Vec::new());
        }
        let mut parts: Vec<DeviceLimitsPart> = Vec::new();
        let mut room = 0;
        for entry in std::mem::take(&mut self.within) {
            let need = size(&entry);
            match parts.last_mut() {
                Some(part) if need <= room || part.within.is_empty() => {
                    room = room.saturating_sub(need);
                    part.within.push(entry);
                }
                _ => {
                    let part = u32::try_from(parts.len()).unwrap_or(u32::MAX);
                    room = max_bytes.saturating_sub(128 + need);
                    parts.push(DeviceLimitsPart { version: self.version, part, within: vec![entry] });
                }
            }
        }
        self.parts = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        (self, parts)
    }

    /// The standings of header `self` with its `parts` (all of them, any
    /// order) put back.
    pub fn assemble(mut self, mut parts: Vec<DeviceLimitsPart>) -> Result<DeviceLimits, PartsError> {
        let fail = |problem: String| PartsError { version: self.version, problem };
        if parts.len() != self.parts as usize {
            return Err(fail(format!("{} parts of {}", parts.len(), self.parts)));
        }
        parts.sort_by_key(|p| p.part);
        for (i, part) in parts.iter().enumerate() {
            if part.version != self.version || part.part as usize != i {
                return Err(fail(format!("part {} of standings {} in their place {i}", part.part, part.version)));
            }
        }
        self.within = parts.into_iter().flat_map(|p| p.within).collect();
        self.parts = 0;
        Ok(self)
    }
}

/// Incident severity, as rules set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The lower-case names, lowest first.
    pub const NAMES: [&'static str; 5] = ["info", "low", "medium", "high", "critical"];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        Severity::NAMES[self as usize]
    }

    /// Every severity, lowest first; `ALL[s.rank()] == s`.
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    /// 0 (info) to 4 (critical): the order analysts sort by.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The severity with a lower-case name, if it is one.
    pub fn parse(name: &str) -> Option<Severity> {
        Some(match name {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One incident as the correlation engine reports it. Reporting the same
/// incident again (same rule, org, key and window start) updates it: hit
/// counts and last-seen only grow, first-seen only shrinks, event ids are
/// merged up to 100, so replays and duplicates change nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    /// The rule's id.
    pub rule: String,
    /// The owning org.
    pub org_id: i64,
    /// The incident key, rendered (e.g. `src_ip=10.0.0.1`).
    pub key: String,
    /// Start of the rule's deduplication window (ms since the epoch).
    pub window_start_ms: i64,
    /// The title.
    pub title: String,
    /// What the rule says of itself (description, author, tags, reference
    /// links): the record's description when the incident is created.
    #[serde(default)]
    pub description: String,
    /// The rule's tags (ATT&CK techniques and the like): kept on the
    /// record when the incident is created, for notification policies.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The rule's severity.
    pub severity: Severity,
    /// Hits merged so far (cumulative, not a delta).
    pub count: u64,
    /// First hit (ms since the epoch).
    pub first_seen_ms: i64,
    /// Latest hit (ms since the epoch).
    pub last_seen_ms: i64,
    /// Contributing event ids.
    pub event_ids: Vec<u64>,
    /// When the pipeline received the newest event of the first hit (ms
    /// since the epoch), if known: the writer measures event→incident
    /// latency from it when it creates the incident.
    pub received_at_ms: Option<i64>,
}

impl IncidentUpdate {
    /// The idempotency key: rule, org, incident key and window start.
    pub fn source_ref(&self) -> String {
        format!("{}|{}|{}|{}", self.rule, self.org_id, self.key, self.window_start_ms)
    }
}

/// The detections transport (worker → supervisor). Updates are idempotent
/// upserts (same rule, org, key and window start), so a transport that
/// delivers one twice changes nothing.
pub trait DetectionSink: Send + 'static {
    /// Delivers updates, waiting while the transport is full.
    fn deliver(&mut self, updates: Vec<IncidentUpdate>);
}

/// One org as the supervisor publishes it to entry nodes: what org
/// assignment and the gate need, nothing more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgEntry {
    /// The org's id.
    pub id: OrgId,
    /// The org's name (stamped on its events).
    pub name: String,
    /// Its IP ranges in CIDR notation.
    pub ranges: Vec<String>,
    /// A disabled org's events are dropped at entry.
    pub enabled: bool,
    /// EPS limit, if any.
    pub eps_limit: Option<u64>,
}

/// The org table the supervisor publishes: every org (built-in ones
/// included), numbered so a node can tell a newer table from an older one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSnapshot {
    /// Increases with every change.
    pub version: u64,
    /// The orgs.
    pub orgs: Vec<OrgEntry>,
}

impl OrgSnapshot {
    /// The gate's per-org rules for an interval of `interval_secs`.
    pub fn org_budgets(&self, interval_secs: u64) -> Vec<OrgBudget> {
        self.orgs
            .iter()
            .map(|o| OrgBudget {
                org: o.id,
                enabled: o.enabled,
                events: o.eps_limit.map(|l| l.saturating_mul(interval_secs)),
            })
            .collect()
    }
}

/// The role a cluster node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Receives syslog, parses, assigns orgs, applies its EPS budget.
    Collector,
    /// Stores events and runs correlation for the partitions it owns.
    Worker,
    /// Record store, API, EPS allocation, node registry.
    Supervisor,
}

impl NodeRole {
    /// `collector`, `worker` or `supervisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Collector => "collector",
            NodeRole::Worker => "worker",
            NodeRole::Supervisor => "supervisor",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<NodeRole> {
        match name {
            "collector" => Some(NodeRole::Collector),
            "worker" => Some(NodeRole::Worker),
            "supervisor" => Some(NodeRole::Supervisor),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's periodic sign of life (node → supervisor), every few seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    /// The node's name.
    pub node: NodeId,
    /// Its role.
    pub role: NodeRole,
    /// vigil version it runs.
    pub version: String,
    /// Addresses it serves (syslog listeners, metrics), as URLs.
    pub addresses: Vec<String>,
    /// Why the node considers itself unhealthy (storage failing, NATS
    /// unreachable, queue saturated); empty when healthy.
    pub problems: Vec<String>,
    /// When it was sent, by the node's clock (Unix milliseconds).
    pub sent_ms: i64,
}

/// Event ids: unique across the nodes of a cluster and across restarts.
///
/// Layout of the 64 bits: the node's slot (12 bits, handed out by the
/// supervisor when the node registers; 0 in `vigil run`), then a 52-bit
/// sequence that starts at the node's start time in seconds × 2^20 and
/// counts up by one per event. Ids of one node are in arrival order. A
/// restarted node starts above every id it gave before unless it averaged
/// more than 2^20 (1,048,576) events per second over its previous run.
#[derive(Clone, Debug)]
pub struct EventIds {
    next: u64,
    end: u64,
}

impl EventIds {
    /// Bits of the node slot.
    pub const SLOT_BITS: u32 = 12;
    /// Bits of the per-node sequence.
    pub const SEQ_BITS: u32 = 64 - EventIds::SLOT_BITS;
    /// Largest node slot.
    pub const MAX_SLOT: u16 = (1 << EventIds::SLOT_BITS) - 1;

    /// Ids for node `slot` (masked to 12 bits) started at `now`.
    pub fn new(slot: u16, now: EventTime) -> EventIds {
        let slot = u64::from(slot & EventIds::MAX_SLOT) << EventIds::SEQ_BITS;
        let secs = u64::try_from(now.unix_secs()).unwrap_or(0) & 0xFFFF_FFFF;
        EventIds { next: slot | (secs << 20), end: slot | ((1 << EventIds::SEQ_BITS) - 1) }
    }

    /// The next id. After 2^52 ids the sequence stays at its last value
    /// rather than step into another node's slot.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next;
        if self.next < self.end {
            self.next += 1;
        }
        id
    }

    /// The first of `n` consecutive ids (one call per batch).
    pub fn next_run(&mut self, n: u64) -> u64 {
        let first = self.next;
        self.next = self.next.saturating_add(n).min(self.end);
        first
    }

    /// The node slot an id was given by.
    pub fn slot_of(id: u64) -> u16 {
        u16::try_from(id >> EventIds::SEQ_BITS).unwrap_or(EventIds::MAX_SLOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_too_large_for_a_message_is_sent_as_several_that_add_up_to_it() {
        let device = |i: u32| DeviceSeen {
            org: OrgId(2 + i % 3),
            identity: format!("host-{i}.example.net"),
            hosts: vec![format!("HOST-{i}")],
            family: Some("openssh".into()),
            product: Some("openssh".into()),
            formats: vec!["rfc3164".into()],
            first_ms: 1,
            last_ms: 2,
            events: u64::from(i),
            bytes: 100,
            max_gap_ms: 0,
        };
        let report = DeviceReport {
            node: NodeId::new("edge-1"),
            at_ms: 30_000,
            period_ms: 30_000,
            devices: (0..20_000).map(device).collect(),
            overflow: vec![(OrgId(2), 7)],
        };
        let parts = report.clone().split(MESSAGE_PART_BYTES);
        assert!(parts.len() > 4, "{} parts", parts.len());
        for p in &parts {
            assert!(serde_json::to_vec(p).unwrap().len() <= MESSAGE_PART_BYTES);
            assert_eq!((&p.node, p.at_ms, p.period_ms), (&report.node, 30_000, 30_000));
        }
        assert_eq!(parts[0].overflow, report.overflow);
        assert!(parts[1..].iter().all(|p| p.overflow.is_empty()), "the overflow counted once");
        let devices: Vec<DeviceSeen> = parts.into_iter().flat_map(|p| p.devices).collect();
        assert_eq!(devices, report.devices);
        let small = DeviceReport { devices: vec![device(1)], ..report };
        assert_eq!(small.clone().split(MESSAGE_PART_BYTES), vec![small]);
    }

    #[test]
    fn standings_too_large_for_a_message_travel_in_parts_and_come_back_whole() {
        let within: Vec<(OrgId, String)> =
            (0..60_000u32).map(|i| (OrgId(2 + i % 7), format!("host-{i}.example.net"))).collect();
        let limits = DeviceLimits { version: 9, limit: Some(70_000), enforce: true, within, active: 61_000, parts: 0 };
        let (header, parts) = limits.clone().split(MESSAGE_PART_BYTES);
        assert!(header.within.is_empty() && header.parts as usize == parts.len() && parts.len() > 4);
        for p in &parts {
            let bytes = serde_json::to_vec(p).unwrap().len();
            assert!(bytes <= MESSAGE_PART_BYTES, "part {} is {bytes} bytes", p.part);
        }
        assert!(serde_json::to_vec(&header).unwrap().len() < 1_024);
        let mut shuffled = parts.clone();
        shuffled.reverse();
        assert_eq!(header.clone().assemble(shuffled).unwrap(), limits);
        // Missing, foreign or doubled parts do not make standings.
        assert!(header.clone().assemble(parts[1..].to_vec()).is_err());
        let mut foreign = parts.clone();
        foreign[0].version = 8;
        assert!(header.clone().assemble(foreign).unwrap_err().to_string().contains("part 0 of standings 8"));
        let mut doubled = parts.clone();
        doubled[1] = doubled[0].clone();
        assert!(header.assemble(doubled).is_err());
        // Small standings go whole.
        let small = DeviceLimits { within: vec![(OrgId(2), "fw-1".into())], ..limits };
        let (whole, none) = small.clone().split(MESSAGE_PART_BYTES);
        assert_eq!((whole, none.len()), (small, 0));
    }

    #[test]
    fn the_builtin_org_ids_are_one_table() {
        assert_eq!(BUILTIN_ORGS, [(OrgId(1), "Super/Local"), (OrgId(2), "Super/Global")]);
        assert_ne!(OrgId::SUPER_LOCAL, OrgId::SUPER_GLOBAL);
    }

    #[test]
    fn protocol_types_round_trip_through_json() {
        let budget = Budget {
            interval: 9,
            node_events: 90_000,
            orgs: vec![OrgBudget { org: OrgId(7), enabled: false, events: Some(1_800) }],
        };
        let report = IntervalReport {
            node: NodeId::new("edge-1"),
            interval: 8,
            received: 10,
            accepted: 9,
            orgs: vec![OrgCounts {
                org: OrgId(7),
                received: 10,
                accepted: 9,
                dropped_org: 1,
                dropped_node: 0,
                rejected_disabled: 0,
            }],
        };
        let snapshot = OrgSnapshot {
            version: 3,
            orgs: vec![OrgEntry {
                id: OrgId(7),
                name: "Acme".into(),
                ranges: vec!["10.1.0.0/16".into()],
                enabled: true,
                eps_limit: Some(10),
            }],
        };
        fn again<T: Serialize + for<'a> Deserialize<'a>>(v: &T) -> T {
            serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
        }
        assert_eq!(again(&budget), budget);
        assert_eq!(again(&report), report);
        assert_eq!(again(&snapshot), snapshot);
        assert_eq!(serde_json::to_string(&report.node).unwrap(), "\"edge-1\"");
        for s in Severity::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(again(&s), s);
        }
        assert_eq!(snapshot.org_budgets(180)[0].events, Some(1_800));
    }

    #[test]
    fn event_ids_carry_their_node_and_rise_across_restarts() {
        let t = EventTime::from_unix(1_800_000_000, 0, 0);
        let mut a = EventIds::new(1, t);
        let mut b = EventIds::new(2, t);
        let (a1, a2, b1) = (a.next_id(), a.next_id(), b.next_id());
        assert_eq!(a2, a1 + 1);
        assert_ne!(a1, b1);
        assert_eq!((EventIds::slot_of(a1), EventIds::slot_of(b1)), (1, 2));
        // A restart a second later starts above a run that took < 2^20 ids.
        let mut again = EventIds::new(1, t.add_secs(1));
        assert!(again.next_id() > a1 + 1_000_000);
        // The last slot never overflows into the next node's.
        let mut last = EventIds { next: u64::MAX - 1, end: u64::MAX };
        assert_eq!((last.next_id(), last.next_id(), last.next_id()), (u64::MAX - 1, u64::MAX, u64::MAX));
    }

    #[test]
    fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new(EventTime::from_unix(1000, 0, 0));
        let sleeper = clock.clone();
        let handle = std::thread::spawn(move || {
            sleeper.sleep_until(EventTime::from_unix(1180, 0, 0));
            sleeper.now()
        });
        clock.advance(100);
        clock.advance(100);
        assert_eq!(handle.join().unwrap().unix_secs(), 1200);
    }
}

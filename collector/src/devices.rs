//! The device inventory's collector side (issue #18): which devices report
//! to this node, counted in the intake as events pass and sent up as one
//! [`DeviceReport`] per period, never as a write per event; and the
//! licence's device limit, applied to each event from the standing of its
//! device (within the limit or beyond it), which the supervisor decides
//! and publishes as [`DeviceLimits`].
//!
//! A device is an org plus its identity as this node sees it: the
//! reporter address, or the HOSTNAME when a relay forwards for it (the
//! sender is one of `devices.relays`, or org assignment matched the
//! HOSTNAME because the sender matched no org). Identities are normalized
//! (lowercase, no trailing dot, IPv6 and IPv4-mapped addresses in their
//! canonical form), so one device has one identity whatever its spelling.
//!
//! Memory is bounded: at most `devices.max_per_org` devices per org (new
//! ones past it are counted as overflow, their events still flow), and
//! devices silent for a day are forgotten here (the store keeps them).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use hashbrown::{HashMap, HashSet, HashTable};
use parsers::{DeviceLimits, DeviceReport, DeviceSeen, Event, Format, Network, NodeId, OrgId, Str};
use serde::Deserialize;

/// `[devices]`: the device inventory and the licence's device limit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Keep the inventory (off: no device is counted and the limit is not applied).
    pub enabled: bool,
    /// Senders that relay for others (CIDR): their events' device is the
    /// syslog HOSTNAME, not the sender.
    pub relays: Vec<String>,
    /// Devices tracked per org at most; more are counted as overflow.
    pub max_per_org: usize,
    /// Seconds between device reports (collectors) and inventory passes
    /// (supervisor: merge, limit, silence).
    pub report_secs: f64,
    /// `alert` (events of devices beyond the licence's limit are accepted,
    /// counted and the provider alerted) or `enforce` (they are dropped).
    pub limit_policy: LimitPolicy,
    /// A device counts towards the limit while seen within this many days.
    pub active_days: u32,
    /// Silence shorter than this never raises an incident (seconds).
    pub silent_floor_secs: u64,
    /// A device is silent after this many times its usual gap between events.
    pub silent_factor: f64,
    /// Report periods with events a device needs before its usual gap is
    /// trusted (a device with an expected interval set needs none).
    pub learn_periods: u32,
}

impl Default for DeviceConfig {
    fn default() -> DeviceConfig {
        DeviceConfig {
            enabled: true,
            relays: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_per_org: 20_000,
            report_secs: 30.0,
            limit_policy: LimitPolicy::Alert,
            active_days: 30,
            silent_floor_secs: 600,
            silent_factor: 4.0,
            learn_periods: 3,
        }
    }
}

/// What happens to events of devices beyond the licence's device limit.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitPolicy {
    /// Accepted, counted, and the provider's administrators alerted.
    #[default]
    Alert,
    /// Dropped and counted with reason `device_limit`.
    Enforce,
}

impl DeviceConfig {
    /// Checks the values, returning the relay networks.
    pub fn validate(&self) -> Result<Vec<Network>, String> {
        if self.max_per_org == 0 {
            return Err("devices.max_per_org must be positive".into());
        }
        if !(1.0..=3_600.0).contains(&self.report_secs) {
            return Err("devices.report_secs must be 1-3600".into());
        }
        if self.active_days == 0 || self.active_days > 3_650 {
            return Err("devices.active_days must be 1-3650".into());
        }
        if !(1.0..=1_000.0).contains(&self.silent_factor) {
            return Err("devices.silent_factor must be 1-1000".into());
        }
        self.relays
            .iter()
            .map(|r| r.parse::<Network>().map_err(|_| format!("devices.relays: {r:?} is not an address or a network")))
            .collect()
    }
}

/// A device's identity: an address, or a host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// An address (reporters, and relayed HOSTNAMEs that are addresses).
    Ip(IpAddr),
    /// A relayed host name, normalized.
    Host(Str),
}

impl Identity {
    /// The identity an already-normalized text names (as the store keeps it).
    pub fn parse(text: &str) -> Identity {
        match text.parse::<IpAddr>() {
            Ok(ip) => Identity::Ip(ip.to_canonical()),
            Err(_) => Identity::Host(text.into()),
        }
    }

    fn as_ref(&self) -> IdentRef<'_> {
        match self {
            Identity::Ip(ip) => IdentRef::Ip(*ip),
            Identity::Host(h) => IdentRef::Host(h.as_str()),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Ip(ip) => write!(f, "{ip}"),
            Identity::Host(h) => f.write_str(h),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdentRef<'a> {
    Ip(IpAddr),
    Host(&'a str),
}

impl IdentRef<'_> {
    fn hash_into<H: Hasher>(self, state: &mut H) {
        match self {
            IdentRef::Ip(ip) => {
                state.write_u8(0);
                ip.hash(state);
            }
            IdentRef::Host(h) => {
                state.write_u8(1);
                h.hash(state);
            }
        }
    }
}

/// An org and a device identity: the inventory's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKey {
    /// The org.
    pub org: OrgId,
    /// The identity.
    pub identity: Identity,
}

impl Hash for DeviceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.org.hash(state);
        self.identity.as_ref().hash_into(state);
    }
}

/// A borrowed key, to look devices up without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRef<'a> {
    org: OrgId,
    identity: IdentRef<'a>,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.org.hash(state);
        self.identity.hash_into(state);
    }
}

impl KeyRef<'_> {
    fn is(&self, key: &DeviceKey) -> bool {
        self.org == key.org && self.identity == key.identity.as_ref()
    }

    fn to_owned(self) -> DeviceKey {
        DeviceKey {
            org: self.org,
            identity: match self.identity {
                IdentRef::Ip(ip) => Identity::Ip(ip),
                IdentRef::Host(h) => Identity::Host(h.into()),
            },
        }
    }
}

/// Longest host name taken as an identity (DNS names are at most 253).
const MAX_HOST: usize = 255;

/// Writes the normalized form of a relayed HOSTNAME into `buf` and returns
/// it, or `None` when it cannot name a device (empty, `-`, too long, or
/// holding spaces or control characters): then the sender is the device.
fn normalize_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<IdentRef<'b>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host == "-" || host.len() > MAX_HOST {
        return None;
    }
    // Only what may be an address is parsed as one.
    let first = host.as_bytes()[0];
    if (first.is_ascii_hexdigit() || first == b':')
        && let Ok(ip) = host.parse::<IpAddr>()
    {
        return Some(IdentRef::Ip(ip.to_canonical()));
    }
    // `[v6]` as some relays write it.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Some(IdentRef::Ip(ip.to_canonical()));
    }
    let bytes = host.as_bytes();
    if bytes.iter().any(|b| *b <= b' ' || *b == 0x7f) {
        return None;
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    // Lowercasing ASCII bytes keeps the text valid UTF-8.
    std::str::from_utf8(out).ok().map(IdentRef::Host)
}

/// A device's standing against the licence's device limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Counts within the limit (or there is no limit).
    Within,
    /// First seen after the limit was reached.
    Beyond,
}

/// Family slots kept per device: the family seen most is reported.
const FAMILY_SLOTS: usize = 4;
/// Host names kept per device.
const HOST_SLOTS: usize = 4;
/// A device silent this long is forgotten by the node (the store keeps it).
const FORGET_AFTER_MS: i64 = 86_400_000;

/// A device's state. What every event touches comes first (`repr(C)`
/// keeps the order), so with the key it spans two cache lines; host names
/// and the product are looked at only when an event may add to them.
#[derive(Debug)]
#[repr(C)]
struct Device {
    standing: Standing,
    formats: u8,
    /// (family index + 1, events); 0 = free slot.
    families: [(u16, u32); FAMILY_SLOTS],
    first_ms: i64,
    last_ms: i64,
    events: u64,
    bytes: u64,
    max_gap_ms: i64,
    /// The last HOSTNAME compared with `hosts` (inline up to 24 bytes).
    last_host: Str,
    first_ever_ms: i64,
    hosts: Vec<Str>,
    product: Option<Str>,
}

impl Device {
    fn new(now_ms: i64, standing: Standing) -> Device {
        Device {
            standing,
            formats: 0,
            families: [(0, 0); FAMILY_SLOTS],
            first_ms: now_ms,
            last_ms: now_ms,
            events: 0,
            bytes: 0,
            max_gap_ms: 0,
            last_host: Str::default(),
            first_ever_ms: now_ms,
            hosts: Vec::new(),
            product: None,
        }
    }

    fn count(&mut self, event: &Event, family: Option<usize>, now_ms: i64) {
        if self.events == 0 {
            self.first_ms = now_ms;
        } else {
            self.max_gap_ms = self.max_gap_ms.max(now_ms - self.last_ms);
        }
        self.last_ms = now_ms;
        self.events += 1;
        self.bytes += event.raw.len() as u64;
        self.formats |= 1 << event.format as u8;
        if let Some(f) = family.and_then(|f| u16::try_from(f + 1).ok()) {
            match self.families.iter_mut().find(|(slot, _)| *slot == f || *slot == 0) {
                Some(slot) => *slot = (f, slot.1.saturating_add(1)),
                // All slots taken by other families: the rarest gives way.
                None => {
                    if let Some(min) = self.families.iter_mut().min_by_key(|(_, n)| *n) {
                        *min = (f, 1);
                    }
                }
            }
        }
        if matches!(event.format, Format::Cef | Format::Leef)
            && self.product.is_none()
            && let (Some(vendor), Some(product)) = (&event.vendor, &event.product)
        {
            let mut p = Str::from(if event.format == Format::Cef { "cef:" } else { "leef:" });
            p.push_str(vendor);
            p.push('/');
            p.push_str(product);
            self.product = Some(p);
        }
        if let Some(h) = event.host.as_deref()
            && self.last_host != h
        {
            self.last_host = h.into();
            if self.hosts.len() < HOST_SLOTS && !h.is_empty() && h != "-" && !self.hosts.iter().any(|k| k == h) {
                self.hosts.push(h.into());
            }
        }
    }
}

/// Per-org counters the metrics show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrgDeviceCounts {
    /// Devices tracked now.
    pub tracked: u64,
    /// New devices not tracked because the org reached `max_per_org`.
    pub overflow: u64,
    /// Events accepted from devices beyond the licence's limit (policy alert).
    pub beyond_accepted: u64,
    /// Events dropped because their device is beyond the limit (policy enforce).
    pub dropped: u64,
}

/// The licence's limit as this node applies it.
#[derive(Debug, Default)]
struct Limits {
    version: u64,
    limit: Option<u64>,
    enforce: bool,
    within: HashSet<DeviceKey>,
}

/// The inventory of one node: devices heard from, their counters since the
/// last report, and their standing against the licence's device limit.
///
/// Devices live in a slab, found through a table of slab indexes (4 bytes
/// a bucket, so the part every lookup touches stays small) hashed with
/// SipHash under a random key, as event-derived keys must be; a run of
/// events from the device of the one before skips the lookup.
pub struct DeviceTracker {
    node: NodeId,
    relays: Vec<Network>,
    max_per_org: usize,
    families: Vec<Str>,
    devices: Vec<(DeviceKey, Device)>,
    index: HashTable<u32>,
    hasher: RandomState,
    /// The slab index of the last event's device.
    last: Option<u32>,
    /// The sender, org and slab index of the last event's device when it
    /// sent its own logs (no relay): the same sender and org is the same
    /// device, known without building its key.
    last_direct: Option<(IpAddr, OrgId, u32)>,
    orgs: HashMap<OrgId, OrgDeviceCounts>,
    /// Overflow since the last report, per org.
    overflow: HashMap<OrgId, u64>,
    limits: Limits,
    /// Devices taken as within the limit since the supervisor last said
    /// which are (it has not seen them yet).
    provisional: u64,
    last_report_ms: i64,
}

impl DeviceTracker {
    /// A tracker for node `node`; `families` names the device families by
    /// their index ([`parsers::DeviceParsers::family_names`]).
    pub fn new(node: NodeId, relays: Vec<Network>, max_per_org: usize, families: Vec<Str>, now_ms: i64) -> Self {
        DeviceTracker {
            node,
            relays,
            max_per_org: max_per_org.max(1),
            families,
            devices: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            last: None,
            last_direct: None,
            orgs: HashMap::new(),
            overflow: HashMap::new(),
            limits: Limits::default(),
            provisional: 0,
            last_report_ms: now_ms,
        }
    }

    /// Whether `peer` relays for other devices.
    pub fn is_relay(&self, peer: IpAddr) -> bool {
        self.relays.iter().any(|n| n.contains(peer))
    }

    /// Counts `event` (already assigned to `org`, from `peer`, classified
    /// as `family`) against its device, received at `now_ms`; `by_host`
    /// says org assignment matched its HOSTNAME. Returns its device's
    /// standing against the licence's device limit.
    pub fn observe(
        &mut self,
        org: OrgId,
        peer: IpAddr,
        by_host: bool,
        event: &Event,
        family: Option<usize>,
        now_ms: i64,
    ) -> Standing {
        // A device sending its own logs in a run (one connection's batch):
        // the sender alone says it is the last device again.
        if !by_host
            && let Some((p, o, i)) = self.last_direct
            && p == peer
            && o == org
            && let Some((_, d)) = self.devices.get_mut(i as usize)
        {
            d.count(event, family, now_ms);
            return d.standing;
        }
        self.last_direct = None;
        let relay = by_host || self.is_relay(peer);
        let mut buf = [0u8; MAX_HOST];
        let relayed = relay.then(|| event.host.as_deref().and_then(|h| normalize_host(h, &mut buf))).flatten();
        let identity = relayed.unwrap_or(IdentRef::Ip(peer.to_canonical()));
        let key = KeyRef { org, identity };
        let last = self.last.and_then(|i| self.devices.get(i as usize)).is_some_and(|(k, _)| key.is(k));
        let found = if last {
            self.last
        } else {
            let devices = &self.devices;
            self.index.find(self.hasher.hash_one(key), |&i| key.is(&devices[i as usize].0)).copied()
        };
        if let Some(i) = found
            && let Some((_, d)) = self.devices.get_mut(i as usize)
        {
            self.last = Some(i);
            if !relay {
                self.last_direct = Some((peer, org, i));
            }
            d.count(event, family, now_ms);
            return d.standing;
        }
        let counts = self.orgs.entry(org).or_default();
        if counts.tracked >= self.max_per_org as u64 {
            counts.overflow += 1;
            *self.overflow.entry(org).or_default() += 1;
            // The org's ceiling guards memory against spoofed names; it is
            // not the licence, and it must not get around it either: an
            // untracked device is beyond the limit once the limit is full.
            return if self.room_left() || self.limits.within.contains(&key.to_owned()) {
                Standing::Within
            } else {
                Standing::Beyond
            };
        }
        counts.tracked += 1;
        let owned = key.to_owned();
        let standing = self.standing_of_new(&owned);
        let mut device = Device::new(now_ms, standing);
        device.count(event, family, now_ms);
        let Ok(i) = u32::try_from(self.devices.len()) else { return standing };
        let hash = self.hasher.hash_one(&owned);
        self.devices.push((owned, device));
        let (devices, hasher) = (&self.devices, &self.hasher);
        self.index.insert_unique(hash, i, |&j| hasher.hash_one(&devices[j as usize].0));
        self.last = Some(i);
        self.last_direct = (!relay).then_some((peer, org, i));
        standing
    }

    fn find(&self, key: &DeviceKey) -> Option<usize> {
        let devices = &self.devices;
        self.index.find(self.hasher.hash_one(key), |&i| devices[i as usize].0 == *key).map(|&i| i as usize)
    }

    /// Rebuilds the index after the slab changed order.
    fn reindex(&mut self) {
        let (devices, hasher) = (&self.devices, &self.hasher);
        self.index.clear();
        for (i, (key, _)) in devices.iter().enumerate() {
            let hash = hasher.hash_one(key);
            self.index.insert_unique(hash, i as u32, |&j| hasher.hash_one(&devices[j as usize].0));
        }
        self.last = None;
        self.last_direct = None;
    }

    /// Whether the limit leaves room for a device the supervisor has not
    /// ranked yet (always, without a limit).
    fn room_left(&self) -> bool {
        self.limits.limit.is_none_or(|l| (self.limits.within.len() as u64).saturating_add(self.provisional) < l)
    }

    /// The standing of a device tracked from now on: within the limit if
    /// the supervisor says so or there is room left (taken provisionally).
    fn standing_of_new(&mut self, key: &DeviceKey) -> Standing {
        if self.limits.within.contains(key) || self.limits.limit.is_none() {
            Standing::Within
        } else if self.room_left() {
            self.provisional += 1;
            Standing::Within
        } else {
            Standing::Beyond
        }
    }

    /// Counts an event of a device beyond the limit: dropped (`dropped`)
    /// or accepted.
    pub fn count_beyond(&mut self, org: OrgId, dropped: bool) {
        let c = self.orgs.entry(org).or_default();
        if dropped {
            c.dropped += 1;
        } else {
            c.beyond_accepted += 1;
        }
    }

    /// The licence's device limit as last received (`None`: unlimited or
    /// not received yet).
    pub fn limit(&self) -> Option<u64> {
        self.limits.limit
    }

    /// Whether events of devices beyond the limit are dropped.
    pub fn enforcing(&self) -> bool {
        self.limits.enforce
    }

    /// Installs the supervisor's view of the limit; an older or equal
    /// version is ignored. Devices it does not know yet (first seen here
    /// since) fill what room is left, oldest first.
    pub fn apply_limits(&mut self, limits: &DeviceLimits) {
        if limits.version != 0 && limits.version <= self.limits.version {
            return;
        }
        self.limits = Limits {
            version: limits.version,
            limit: limits.limit,
            enforce: limits.enforce,
            within: limits
                .within
                .iter()
                .map(|(org, identity)| DeviceKey { org: *org, identity: Identity::parse(identity) })
                .collect(),
        };
        self.provisional = 0;
        let mut unknown: Vec<(i64, DeviceKey)> = Vec::new();
        for (key, device) in &mut self.devices {
            if self.limits.within.contains(key) || self.limits.limit.is_none() {
                device.standing = Standing::Within;
            } else {
                unknown.push((device.first_ever_ms, key.clone()));
            }
        }
        unknown.sort_by(|a, b| {
            (a.0, a.1.org).cmp(&(b.0, b.1.org)).then_with(|| a.1.identity.to_string().cmp(&b.1.identity.to_string()))
        });
        for (_, key) in unknown {
            let standing = self.standing_of_new(&key);
            if let Some(i) = self.find(&key) {
                self.devices[i].1.standing = standing;
            }
        }
    }

    /// The report of the period since the last one (ending at `now_ms`):
    /// every device heard from, and the overflow. Devices silent for a day
    /// are forgotten.
    pub fn report(&mut self, now_ms: i64) -> DeviceReport {
        let mut seen = Vec::new();
        let families = &self.families;
        let before = self.devices.len();
        self.devices.retain_mut(|(key, d)| {
            if d.events > 0 {
                let family = d
                    .families
                    .iter()
                    .filter(|(f, _)| *f > 0)
                    .max_by_key(|(_, n)| *n)
                    .and_then(|(f, _)| families.get(usize::from(*f) - 1))
                    .map(|f| f.to_string());
                seen.push(DeviceSeen {
                    org: key.org,
                    identity: key.identity.to_string(),
                    hosts: d.hosts.iter().map(|h| h.to_string()).collect(),
                    product: d.product.as_ref().map(|p| p.to_string()).or_else(|| family.clone()),
                    family,
                    formats: [Format::Rfc5424, Format::Rfc3164, Format::Cef, Format::Leef, Format::Raw]
                        .into_iter()
                        .filter(|f| d.formats & (1 << *f as u8) != 0)
                        .map(|f| f.as_str().to_owned())
                        .collect(),
                    first_ms: d.first_ms,
                    last_ms: d.last_ms,
                    events: d.events,
                    bytes: d.bytes,
                    max_gap_ms: d.max_gap_ms,
                });
                d.events = 0;
                d.bytes = 0;
                d.max_gap_ms = 0;
                d.families = [(0, 0); FAMILY_SLOTS];
                d.formats = 0;
                true
            } else {
                now_ms - d.last_ms < FORGET_AFTER_MS
            }
        });
        // Forgotten devices free their org's room.
        if self.devices.len() != before {
            self.reindex();
            for c in self.orgs.values_mut() {
                c.tracked = 0;
            }
            for (key, _) in &self.devices {
                self.orgs.entry(key.org).or_default().tracked += 1;
            }
        }
        seen.sort_by(|a, b| (a.org, &a.identity).cmp(&(b.org, &b.identity)));
        let mut overflow: Vec<(OrgId, u64)> = self.overflow.drain().collect();
        overflow.sort_unstable();
        let period_ms = (now_ms - self.last_report_ms).max(1);
        self.last_report_ms = now_ms;
        DeviceReport { node: self.node.clone(), at_ms: now_ms, period_ms, devices: seen, overflow }
    }

    /// Per-org counters.
    pub fn counts(&self) -> Vec<(OrgId, OrgDeviceCounts)> {
        let mut v: Vec<_> = self.orgs.iter().map(|(o, c)| (*o, *c)).collect();
        v.sort_unstable_by_key(|(o, _)| *o);
        v
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use parsers::{EventTime, Parser};

    fn event(line: &str) -> Event {
        Parser::new().parse(Bytes::from(line.to_owned()), EventTime::from_unix(1_000, 0, 0))
    }

    fn tracker(max: usize) -> DeviceTracker {
        DeviceTracker::new(
            NodeId::new("c1"),
            vec!["127.0.0.0/8".parse().unwrap()],
            max,
            vec!["openssh".into(), "cef-leef".into()],
            0,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn relayed_hosts_are_devices_of_their_own_and_their_spellings_are_one() {
        let mut t = tracker(100);
        let org = OrgId(5);
        for host in ["Web-01", "web-01.", "WEB-01", "db-02", "10.0.0.9"] {
            t.observe(org, ip("127.0.0.1"), false, &event(&format!("<13>Nov 22 10:15:42 {host} app: hi")), None, 10);
        }
        // RFC 5424 names IPv6 hosts unambiguously.
        for host in ["::ffff:10.0.0.9", "[2001:DB8::1]", "2001:db8::1"] {
            let line = format!("<13>1 2026-11-22T10:15:42Z {host} app - - - hi");
            t.observe(org, ip("127.0.0.1"), false, &event(&line), None, 10);
        }
        // A sender that is not a relay is its own device, whatever it names.
        t.observe(org, ip("192.0.2.7"), false, &event("<13>Nov 22 10:15:42 spoofed app: hi"), None, 10);
        t.observe(org, ip("::ffff:192.0.2.7"), false, &event("<13>Nov 22 10:15:42 other app: hi"), None, 10);
        // A relay line without a usable HOSTNAME counts for the relay.
        t.observe(org, ip("127.0.0.1"), false, &event("no header at all"), None, 10);
        let r = t.report(20);
        let ids: Vec<&str> = r.devices.iter().map(|d| d.identity.as_str()).collect();
        assert_eq!(ids, ["10.0.0.9", "127.0.0.1", "192.0.2.7", "2001:db8::1", "db-02", "web-01"]);
        let web = r.devices.iter().find(|d| d.identity == "web-01").unwrap();
        assert_eq!((web.events, web.hosts.len()), (3, 3));
        assert_eq!(r.devices.iter().find(|d| d.identity == "2001:db8::1").map(|d| d.events), Some(2));
        assert_eq!(r.devices.iter().find(|d| d.identity == "10.0.0.9").map(|d| d.events), Some(2));
    }

    #[test]
    fn bad_settings_are_refused_with_the_setting_named() {
        let bad = |c: DeviceConfig| c.validate().unwrap_err();
        assert!(bad(DeviceConfig { report_secs: 0.0, ..DeviceConfig::default() }).contains("devices.report_secs"));
        assert!(bad(DeviceConfig { max_per_org: 0, ..DeviceConfig::default() }).contains("devices.max_per_org"));
        assert!(
            bad(DeviceConfig { relays: vec!["10.0.0.0/33".into()], ..DeviceConfig::default() })
                .contains("devices.relays")
        );
        let e = toml::from_str::<DeviceConfig>("limit_policy = \"drop\"").unwrap_err().to_string();
        assert!(e.contains("alert") && e.contains("enforce"), "{e}");
        assert_eq!(DeviceConfig::default().validate().unwrap().len(), 2);
    }

    #[test]
    fn devices_are_found_again_between_others() {
        let mut t = tracker(100);
        for round in 0..3 {
            for i in 0..50 {
                t.observe(
                    OrgId(5),
                    ip("127.0.0.1"),
                    false,
                    &event(&format!("<13>Nov 22 10:15:42 h{i} a: x")),
                    None,
                    round,
                );
                t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, round);
            }
        }
        assert_eq!(t.len(), 100);
        assert!(t.report(5).devices.iter().all(|d| d.events == 3));
    }

    #[test]
    fn the_per_org_ceiling_counts_overflow_and_keeps_events_flowing() {
        let mut t = tracker(2);
        for i in 0..5 {
            let s = t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, 1);
            assert_eq!(s, Standing::Within);
        }
        t.observe(OrgId(6), ip("192.0.2.1"), false, &event("<13>x"), None, 1);
        // Past the ceiling under a full licence: beyond it, tracked or not.
        t.apply_limits(&DeviceLimits { version: 1, limit: Some(3), enforce: true, within: vec![], active: 3 });
        assert_eq!(t.observe(OrgId(5), ip("192.0.2.99"), false, &event("<13>x"), None, 1), Standing::Beyond);
        let r = t.report(2);
        assert_eq!(r.devices.len(), 3);
        assert_eq!(r.overflow, vec![(OrgId(5), 4)]);
        assert_eq!(t.counts()[0].1, OrgDeviceCounts { tracked: 2, overflow: 4, ..Default::default() });
        assert!(t.report(3).overflow.is_empty(), "overflow is reported once");
    }

    #[test]
    fn devices_first_seen_after_the_limit_are_beyond_it_until_room_is_made() {
        let mut t = tracker(100);
        t.apply_limits(&DeviceLimits { version: 1, limit: Some(3), enforce: true, within: vec![], active: 0 });
        let standing: Vec<Standing> = (1..=5)
            .map(|i| t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, i))
            .collect();
        use Standing::*;
        assert_eq!(standing, [Within, Within, Within, Beyond, Beyond]);
        // The supervisor agrees on the first three; then device 1 is retired.
        let within = |ids: &[u8]| ids.iter().map(|i| (OrgId(5), format!("192.0.2.{i}"))).collect();
        t.apply_limits(&DeviceLimits { version: 2, limit: Some(3), enforce: true, within: within(&[2, 3]), active: 4 });
        let now: Vec<Standing> = (1..=5)
            .map(|i| t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, 10))
            .collect();
        // Room for one of those it does not know: the first seen, device 1.
        assert_eq!(now, [Within, Within, Within, Beyond, Beyond]);
        // An older table changes nothing.
        t.apply_limits(&DeviceLimits { version: 1, limit: None, enforce: false, within: vec![], active: 0 });
        assert!(t.enforcing());
    }

    #[test]
    fn the_report_names_the_family_seen_most_the_cef_product_and_the_gaps() {
        let mut t = tracker(100);
        let cef = event("<13>Nov 22 10:15:42 fw CEF:0|Acme|Wall|1.0|100|blocked|5|src=10.0.0.1");
        t.observe(OrgId(5), ip("192.0.2.1"), false, &cef, Some(1), 1_000);
        t.observe(OrgId(5), ip("192.0.2.1"), false, &cef, Some(1), 4_000);
        t.observe(OrgId(5), ip("192.0.2.1"), false, &event("<13>Nov 22 10:15:42 fw sshd[1]: x"), Some(0), 5_000);
        let r = t.report(6_000);
        let d = &r.devices[0];
        assert_eq!(d.family.as_deref(), Some("cef-leef"));
        assert_eq!(d.product.as_deref(), Some("cef:Acme/Wall"));
        assert_eq!((d.first_ms, d.last_ms, d.max_gap_ms, d.events), (1_000, 5_000, 3_000, 3));
        assert_eq!(d.formats, ["rfc3164", "cef"]);
        assert_eq!(r.period_ms, 6_000);
        assert!(t.report(7_000).devices.is_empty(), "a quiet device is not reported");
        assert_eq!(t.len(), 1);
        t.report(7_000 + FORGET_AFTER_MS);
        assert!(t.is_empty(), "a device silent for a day is forgotten here");
    }
}

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

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};
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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// An org and a device identity: the inventory's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    /// The org.
    pub org: OrgId,
    /// The identity.
    pub identity: Identity,
}

/// A borrowed key, to look devices up without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRef<'a> {
    org: OrgId,
    identity: IdentRef<'a>,
}

impl DeviceKey {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef { org: self.org, identity: self.identity.as_ref() }
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

mod index;

use index::Index;

/// Longest host name taken as an identity (DNS names are at most 253).
const MAX_HOST: usize = 255;

/// The identity a relayed HOSTNAME names, a host name's normalized form
/// appended to `names`; `None` when it cannot name a device (empty, `-`,
/// too long, or holding spaces or control characters): then the sender
/// is the device.
fn normalize_host(host: &str, names: &mut String) -> Option<Ident> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host == "-" || host.len() > MAX_HOST {
        return None;
    }
    // Only what may be an address is parsed as one.
    let first = host.as_bytes()[0];
    if (first.is_ascii_hexdigit() || first == b':')
        && let Ok(ip) = host.parse::<IpAddr>()
    {
        return Some(Ident::Ip(ip.to_canonical()));
    }
    // `[v6]` as some relays write it.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Some(Ident::Ip(ip.to_canonical()));
    }
    if host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let start = names.len();
    names.push_str(host);
    names[start..].make_ascii_lowercase();
    Some(Ident::Host(start, names.len()))
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
/// Identity bytes a device's hot line holds: an address, or a host name
/// up to this long (a longer one is compared with the key in the cold part).
const INLINE: usize = 16;
/// The bit of [`Hot::formats`] saying the CEF/LEEF product is known.
const PRODUCT_KNOWN: u8 = 0x80;

/// How a device's identity is held in its hot line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    V4,
    V6,
    /// A host name of at most [`INLINE`] bytes, all inline.
    Host,
    /// A longer host name: its first [`INLINE`] bytes inline.
    LongHost,
}

/// An identity as a hot line holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inline {
    kind: Kind,
    len: u8,
    bytes: [u8; INLINE],
}

impl Inline {
    fn of(identity: IdentRef<'_>) -> Inline {
        let mut bytes = [0u8; INLINE];
        let (kind, len) = match identity {
            IdentRef::Ip(IpAddr::V4(ip)) => {
                bytes[..4].copy_from_slice(&ip.octets());
                (Kind::V4, 4)
            }
            IdentRef::Ip(IpAddr::V6(ip)) => {
                bytes = ip.octets();
                (Kind::V6, 16)
            }
            IdentRef::Host(h) => {
                let n = h.len().min(INLINE);
                bytes[..n].copy_from_slice(&h.as_bytes()[..n]);
                // Names are at most MAX_HOST (255) bytes.
                let kind = if h.len() <= INLINE { Kind::Host } else { Kind::LongHost };
                (kind, u8::try_from(h.len()).unwrap_or(u8::MAX))
            }
        };
        Inline { kind, len, bytes }
    }
}

/// What every event of a device reads or writes, in one cache line: its
/// org and identity (inline, so a lookup is decided here but for long
/// host names), its standing and the period's counters. The rest, which
/// an event touches only when it may add to it, is in [`Cold`].
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Hot {
    org: OrgId,
    kind: Kind,
    len: u8,
    standing: Standing,
    /// Formats seen in the period (bit per [`Format`]) and [`PRODUCT_KNOWN`].
    formats: u8,
    ident: [u8; INLINE],
    bytes: u64,
    events: u64,
    last_ms: i64,
    /// The first family counted in the period: (family index + 1, events);
    /// others are counted in [`Cold::families`].
    family: (u16, u32),
    max_gap_ms: u32,
    /// A fingerprint of the last HOSTNAME compared with the host names
    /// kept (0: none yet).
    host_tag: u32,
}

const _: () = assert!(std::mem::size_of::<Hot>() == 64);

/// What a device's events rarely touch.
#[derive(Debug)]
struct Cold {
    /// The key's hash, as the index files it.
    hash: u64,
    key: DeviceKey,
    first_ms: i64,
    first_ever_ms: i64,
    /// Families other than [`Hot::family`]: (family index + 1, events); 0 = free.
    families: [(u16, u32); FAMILY_SLOTS - 1],
    hosts: Vec<Str>,
    product: Option<Str>,
}

/// A HOSTNAME's fingerprint, never 0.
fn host_tag(hasher: &DefaultHashBuilder, host: &str) -> u32 {
    (hasher.hash_one(host.as_bytes()) >> 32) as u32 | 1
}

impl Hot {
    fn new(key: KeyRef<'_>, standing: Standing) -> Hot {
        let Inline { kind, len, bytes } = Inline::of(key.identity);
        Hot {
            org: key.org,
            kind,
            len,
            standing,
            formats: 0,
            ident: bytes,
            bytes: 0,
            events: 0,
            last_ms: 0,
            family: (0, 0),
            max_gap_ms: 0,
            host_tag: 0,
        }
    }

    /// Whether this line may be `key`'s: certainly (`Some(true)`), not
    /// (`Some(false)`), or the cold key must tell (a long host name).
    fn matches(&self, org: OrgId, inline: &Inline) -> Option<bool> {
        if self.org != org || self.kind != inline.kind || self.len != inline.len || self.ident != inline.bytes {
            return Some(false);
        }
        (self.kind != Kind::LongHost).then_some(true)
    }

    /// Counts `events` (a run of this device's, with their `origins`),
    /// received at `now_ms`; `cold` is read only when an event may add to it.
    fn count(&mut self, cold: &mut Cold, events: &[Event], origins: &[Origin], now_ms: i64) {
        if events.is_empty() {
            return;
        }
        if self.events == 0 {
            cold.first_ms = now_ms;
        } else {
            let gap = (now_ms - self.last_ms).clamp(0, i64::from(u32::MAX));
            self.max_gap_ms = self.max_gap_ms.max(u32::try_from(gap).unwrap_or(u32::MAX));
        }
        self.last_ms = now_ms;
        self.events += events.len() as u64;
        // Families come in runs too: counted a run at a time.
        let mut family: (Option<usize>, u32) = (None, 0);
        // The events themselves are read only for what is new: a product,
        // a host name.
        for (event, origin) in events.iter().zip(origins) {
            self.bytes += u64::from(origin.len);
            self.formats |= 1 << origin.format as u8;
            if origin.family == family.0 {
                family.1 += 1;
            } else {
                self.count_family(cold, family.0, family.1);
                family = (origin.family, 1);
            }
            if matches!(origin.format, Format::Cef | Format::Leef)
                && self.formats & PRODUCT_KNOWN == 0
                && cold.product_of(event)
            {
                self.formats |= PRODUCT_KNOWN;
            }
            if origin.host_tag != 0 && origin.host_tag != self.host_tag {
                self.host_tag = origin.host_tag;
                if let Some(h) = event.host.as_deref() {
                    cold.host_named(h);
                }
            }
        }
        self.count_family(cold, family.0, family.1);
    }

    /// Counts `n` events of `family`: in the hot slot when it is that
    /// family's (or free), else in a cold one; when all four slots hold
    /// other families, the rarest gives way (the hot one first on a tie).
    fn count_family(&mut self, cold: &mut Cold, family: Option<usize>, n: u32) {
        let Some(f) = family.and_then(|f| u16::try_from(f + 1).ok()) else { return };
        if self.family.0 == f || self.family.0 == 0 {
            self.family = (f, self.family.1.saturating_add(n));
            return;
        }
        if let Some(slot) = cold.families.iter_mut().find(|(slot, _)| *slot == f || *slot == 0) {
            *slot = (f, slot.1.saturating_add(n));
            return;
        }
        match cold.families.iter_mut().min_by_key(|(_, n)| *n) {
            Some(min) if min.1 < self.family.1 => *min = (f, n),
            _ => self.family = (f, n),
        }
    }

    /// Starts a new report period.
    fn reset(&mut self, cold: &mut Cold) {
        self.events = 0;
        self.bytes = 0;
        self.max_gap_ms = 0;
        self.family = (0, 0);
        self.formats &= PRODUCT_KNOWN;
        cold.families = [(0, 0); FAMILY_SLOTS - 1];
    }
}

impl Cold {
    fn new(hash: u64, key: DeviceKey, now_ms: i64) -> Cold {
        Cold {
            hash,
            key,
            first_ms: now_ms,
            first_ever_ms: now_ms,
            families: [(0, 0); FAMILY_SLOTS - 1],
            hosts: Vec::new(),
            product: None,
        }
    }

    /// Takes the CEF/LEEF product from `event`; whether it had one.
    fn product_of(&mut self, event: &Event) -> bool {
        let (Some(vendor), Some(product)) = (&event.vendor, &event.product) else { return false };
        let mut p = Str::from(if event.format == Format::Cef { "cef:" } else { "leef:" });
        p.push_str(vendor);
        p.push('/');
        p.push_str(product);
        self.product = Some(p);
        true
    }

    fn host_named(&mut self, h: &str) {
        if self.hosts.len() < HOST_SLOTS && !h.is_empty() && h != "-" && !self.hosts.iter().any(|k| k == h) {
            self.hosts.push(h.into());
        }
    }
}

/// Where an event comes from, as the inventory needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The org it was assigned to.
    pub org: OrgId,
    /// Its sender.
    pub peer: IpAddr,
    /// Whether org assignment matched its HOSTNAME (the sender relays for it).
    pub by_host: bool,
    /// Its device family (index), if a device parser recognised it.
    pub family: Option<usize>,
    /// Its length, format and HOSTNAME's fingerprint (0: none), read while
    /// the event is at hand (see [`DeviceTracker::origin`]).
    len: u32,
    format: Format,
    host_tag: u32,
}

/// Runs of events looked up together, stage by stage (see [`DeviceTracker`]).
const CHUNK: usize = 32;

/// An identity while a chunk is looked up: an address, or a host name at
/// a range of the chunk's names.
#[derive(Clone, Copy, Debug)]
enum Ident {
    Ip(IpAddr),
    Host(usize, usize),
}

impl Ident {
    fn as_ref(self, names: &str) -> IdentRef<'_> {
        match self {
            Ident::Ip(ip) => IdentRef::Ip(ip),
            Ident::Host(start, end) => IdentRef::Host(names.get(start..end).unwrap_or_default()),
        }
    }
}

/// How a run's device is found.
#[derive(Clone, Copy, Debug)]
enum Lookup {
    /// At this slab number (the last event's device).
    Slab(u32),
    /// Through the index by this hash; the slab number its slot names.
    Hash(u64, Option<u32>),
}

/// A run of events of one device, in a chunk being looked up: the first
/// event's place in the batch and the run's length.
#[derive(Clone, Copy, Debug)]
struct Pending {
    org: OrgId,
    peer: IpAddr,
    /// The sender is one of the relays.
    relayer: bool,
    /// The identity is the relayed HOSTNAME's (when it names a device).
    relay: bool,
    ident: Ident,
    /// The identity as a hot line holds it.
    inline: Inline,
    lookup: Lookup,
    start: usize,
    len: usize,
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
/// Devices live in a slab, found through an open-addressing index of slab
/// numbers hashed under a per-tracker random seed (foldhash), so senders
/// cannot choose names that collide. Each device is a 64-byte hot line
/// (identity inline, standing, the period's counters) and a cold part
/// (key, host names, product, other families) an event touches only when
/// it may add to it.
/// A batch is looked up in chunks, each in stages: identities and hashes,
/// then the index slots read ahead, then the slots probed and the devices
/// read ahead, then each event counted. The reads of a stage do not depend
/// on one another, so their cache misses overlap; an event from the device
/// of the one before skips the lookup.
pub struct DeviceTracker {
    node: NodeId,
    relays: Vec<Network>,
    max_per_org: usize,
    families: Vec<Str>,
    /// The slab: each device's hot line and cold part, at the same number.
    hot: Vec<Hot>,
    cold: Vec<Cold>,
    index: Index,
    hasher: DefaultHashBuilder,
    /// The slab number of the last event's device.
    last: Option<u32>,
    /// A chunk's lookups and relayed host names (kept for their room).
    pending: Vec<Pending>,
    names: String,
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
            hot: Vec::new(),
            cold: Vec::new(),
            index: Index::new(),
            hasher: DefaultHashBuilder::default(),
            last: None,
            pending: Vec::new(),
            names: String::new(),
            orgs: HashMap::new(),
            overflow: HashMap::new(),
            limits: Limits::default(),
            provisional: 0,
            last_report_ms: now_ms,
        }
    }

    /// Where `event` comes from, as [`DeviceTracker::observe_batch`] takes
    /// it: assigned to `org`, sent by `peer` (`by_host`: org assignment
    /// matched its HOSTNAME), classified as `family`. The intake calls this
    /// right after parsing, so what the inventory needs of the event is
    /// read while the event is still in the core's cache.
    pub fn origin(&self, event: &Event, org: OrgId, peer: IpAddr, by_host: bool, family: Option<usize>) -> Origin {
        Origin {
            org,
            peer,
            by_host,
            family,
            len: u32::try_from(event.raw.len()).unwrap_or(u32::MAX),
            format: event.format,
            host_tag: event.host.as_deref().map_or(0, |h| host_tag(&self.hasher, h)),
        }
    }

    /// Whether `peer` relays for other devices.
    pub fn is_relay(&self, peer: IpAddr) -> bool {
        self.relays.iter().any(|n| n.contains(peer))
    }

    /// Counts `event` (already assigned to `org`, from `peer`, classified
    /// as `family`) against its device, received at `now_ms`; `by_host`
    /// says org assignment matched its HOSTNAME. Returns its device's
    /// standing against the licence's device limit. (The intake counts
    /// whole batches: [`DeviceTracker::observe_batch`].)
    pub fn observe(
        &mut self,
        org: OrgId,
        peer: IpAddr,
        by_host: bool,
        event: &Event,
        family: Option<usize>,
        now_ms: i64,
    ) -> Standing {
        let mut standing = Vec::with_capacity(1);
        let origin = self.origin(event, org, peer, by_host, family);
        self.observe_batch(std::slice::from_ref(event), &[origin], now_ms, &mut standing);
        standing.first().copied().unwrap_or(Standing::Within)
    }

    /// Counts each of `events` (from `origins`, one each) against its
    /// device, received at `now_ms`, and appends to `standings` their
    /// devices' standings against the licence's device limit, in order.
    pub fn observe_batch(&mut self, events: &[Event], origins: &[Origin], now_ms: i64, standings: &mut Vec<Standing>) {
        let events = &events[..events.len().min(origins.len())];
        let mut pending = std::mem::take(&mut self.pending);
        let mut names = std::mem::take(&mut self.names);
        let mut k = 0;
        while k < events.len() {
            // Up to CHUNK runs of events of one device each.
            pending.clear();
            names.clear();
            while k < events.len() && pending.len() < CHUNK {
                let p = self.pend(&events[k], &origins[k], k, pending.last_mut(), &mut names);
                pending.extend(p);
                k += 1;
            }
            // Reads ahead, each loop's reads independent of one another:
            // the index slots, then (the slots probed) the devices named.
            let mut ahead = 0u64;
            for p in &pending {
                if let Lookup::Hash(hash, _) = p.lookup {
                    ahead ^= u64::from(self.index.touch(hash));
                }
            }
            for p in &mut pending {
                if let Lookup::Hash(hash, candidate) = &mut p.lookup {
                    *candidate = self.index.candidate(*hash);
                }
            }
            for p in &pending {
                if let Lookup::Hash(_, Some(at)) = p.lookup
                    && let Some(hot) = self.hot.get(at as usize)
                {
                    ahead ^= hot.events;
                    // A long host name is compared with the cold key too.
                    if hot.kind == Kind::LongHost
                        && let Some(cold) = self.cold.get(at as usize)
                    {
                        ahead ^= cold.hash;
                    }
                }
            }
            std::hint::black_box(ahead);
            for p in &pending {
                let key = KeyRef { org: p.org, identity: p.ident.as_ref(&names) };
                let run = p.start..p.start + p.len;
                let found = match p.lookup {
                    Lookup::Slab(at) => Some(at),
                    Lookup::Hash(hash, candidate) => candidate
                        .filter(|&at| self.is(at, key, &p.inline))
                        .or_else(|| self.find_ref(hash, key, &p.inline)),
                };
                let slot = found.and_then(|at| self.hot.get_mut(at as usize).zip(self.cold.get_mut(at as usize)));
                let standing = match slot {
                    Some((hot, cold)) => {
                        hot.count(cold, &events[run.clone()], &origins[run], now_ms);
                        self.last = found;
                        hot.standing
                    }
                    None => self.add(key, &events[run.clone()], &origins[run], now_ms),
                };
                standings.extend(std::iter::repeat_n(standing, p.len));
            }
        }
        self.pending = pending;
        self.names = names;
    }

    /// Event `k`'s identity, and how to find its device: as part of the run
    /// before it (`before`, lengthened, and then `None` is returned), as the
    /// last event's, or by hash. Relayed host names are kept in `names`.
    fn pend(
        &self,
        event: &Event,
        origin: &Origin,
        k: usize,
        before: Option<&mut Pending>,
        names: &mut String,
    ) -> Option<Pending> {
        let org = origin.org;
        // Whether the sender is a relay: as for the run before when it is
        // the same sender.
        let relayer = match &before {
            Some(b) if b.peer == origin.peer => {
                // The same sender sending its own logs again: the same device.
                if !b.relay && !origin.by_host && b.org == org {
                    if let Some(b) = before {
                        b.len += 1;
                    }
                    return None;
                }
                b.relayer
            }
            _ => self.is_relay(origin.peer),
        };
        let relay = origin.by_host || relayer;
        let mark = names.len();
        let ident = relay.then(|| event.host.as_deref().and_then(|h| normalize_host(h, names))).flatten();
        let ident = ident.unwrap_or(Ident::Ip(origin.peer.to_canonical()));
        let first = match before {
            Some(b) if b.org == org && b.ident.as_ref(names) == ident.as_ref(names) => {
                b.len += 1;
                names.truncate(mark);
                return None;
            }
            Some(_) => false,
            None => true,
        };
        let key = KeyRef { org, identity: ident.as_ref(names) };
        let inline = Inline::of(key.identity);
        // A chunk's first run may go on the last chunk's (or batch's).
        let last = self.last.filter(|&at| first && self.is(at, key, &inline));
        let lookup = match last {
            Some(at) => Lookup::Slab(at),
            None => Lookup::Hash(self.hash_inline(key, &inline), None),
        };
        Some(Pending { org, peer: origin.peer, relayer, relay, ident, inline, lookup, start: k, len: 1 })
    }

    /// A device first heard from now, with a run of its `events`: tracked
    /// unless its org is at its ceiling. Returns its standing.
    fn add(&mut self, key: KeyRef<'_>, events: &[Event], origins: &[Origin], now_ms: i64) -> Standing {
        let counts = self.orgs.entry(key.org).or_default();
        if counts.tracked >= self.max_per_org as u64 {
            counts.overflow += events.len() as u64;
            *self.overflow.entry(key.org).or_default() += events.len() as u64;
            // The org's ceiling guards memory against spoofed names; it is
            // not the licence, and it must not get around it either: an
            // untracked device is beyond the limit once the limit is full.
            let within = self.room_left() || self.limits.within.contains(&key.to_owned());
            return if within { Standing::Within } else { Standing::Beyond };
        }
        counts.tracked += 1;
        let owned = key.to_owned();
        let standing = self.standing_of_new(&owned);
        let Ok(at) = u32::try_from(self.hot.len()) else { return standing };
        let hash = self.hash_key(key);
        let (mut hot, mut cold) = (Hot::new(key, standing), Cold::new(hash, owned, now_ms));
        hot.count(&mut cold, events, origins, now_ms);
        self.hot.push(hot);
        self.cold.push(cold);
        let cold = &self.cold;
        self.index.insert(hash, at, |a| cold.get(a as usize).map_or(0, |c| c.hash));
        self.last = Some(at);
        standing
    }

    /// The hash the index files `key` under.
    fn hash_key(&self, key: KeyRef<'_>) -> u64 {
        self.hash_inline(key, &Inline::of(key.identity))
    }

    /// The hash of `key`, whose identity a hot line holds as `inline`: the
    /// inline form in three words, and a long host name in full.
    fn hash_inline(&self, key: KeyRef<'_>, inline: &Inline) -> u64 {
        let mut h = self.hasher.build_hasher();
        let (a, b) = inline.bytes.split_at(8);
        let word = |w: &[u8]| w.try_into().map_or(0, u64::from_ne_bytes);
        h.write_u64(u64::from(key.org.0) | u64::from(inline.kind as u8) << 32 | u64::from(inline.len) << 40);
        h.write_u64(word(a));
        h.write_u64(word(b));
        if let (Kind::LongHost, IdentRef::Host(name)) = (inline.kind, key.identity) {
            h.write(name.as_bytes());
        }
        h.finish()
    }

    /// Whether slab number `at` is `key`'s device (`inline`: the key's
    /// identity as a hot line holds it).
    fn is(&self, at: u32, key: KeyRef<'_>, inline: &Inline) -> bool {
        match self.hot.get(at as usize).map(|h| h.matches(key.org, inline)) {
            Some(Some(decided)) => decided,
            Some(None) => self.cold.get(at as usize).is_some_and(|c| key.is(&c.key)),
            None => false,
        }
    }

    fn find_ref(&self, hash: u64, key: KeyRef<'_>, inline: &Inline) -> Option<u32> {
        self.index.find(hash, |at| self.is(at, key, inline))
    }

    fn find(&self, key: &DeviceKey) -> Option<usize> {
        let key = key.as_ref();
        let inline = Inline::of(key.identity);
        self.find_ref(self.hash_inline(key, &inline), key, &inline).map(|at| at as usize)
    }

    /// Rebuilds the index after the slab changed order.
    fn reindex(&mut self) {
        let cold = &self.cold;
        self.index.clear(cold.len());
        for (at, c) in cold.iter().enumerate() {
            self.index.insert(c.hash, at as u32, |a| cold.get(a as usize).map_or(0, |c| c.hash));
        }
        self.last = None;
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

    /// Devices the supervisor last said are within the limit.
    pub fn within(&self) -> u64 {
        self.limits.within.len() as u64
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
        for (hot, Cold { key, first_ever_ms, .. }) in self.hot.iter_mut().zip(&self.cold) {
            if self.limits.within.contains(key) || self.limits.limit.is_none() {
                hot.standing = Standing::Within;
            } else {
                unknown.push((*first_ever_ms, key.clone()));
            }
        }
        unknown.sort_by(|a, b| {
            (a.0, a.1.org).cmp(&(b.0, b.1.org)).then_with(|| a.1.identity.to_string().cmp(&b.1.identity.to_string()))
        });
        for (_, key) in unknown {
            let standing = self.standing_of_new(&key);
            if let Some(hot) = self.find(&key).and_then(|i| self.hot.get_mut(i)) {
                hot.standing = standing;
            }
        }
    }

    /// The report of the period since the last one (ending at `now_ms`):
    /// every device heard from, and the overflow. Devices silent for a day
    /// are forgotten.
    pub fn report(&mut self, now_ms: i64) -> DeviceReport {
        let mut seen = Vec::new();
        let families = &self.families;
        let before = self.hot.len();
        let mut keep = Vec::with_capacity(before);
        for (d, c) in self.hot.iter_mut().zip(self.cold.iter_mut()) {
            if d.events == 0 {
                keep.push(now_ms - d.last_ms < FORGET_AFTER_MS);
                continue;
            }
            // The family seen most (the last of equals, hot slot first).
            let family = std::iter::once(&d.family)
                .chain(&c.families)
                .filter(|(f, _)| *f > 0)
                .max_by_key(|(_, n)| *n)
                .and_then(|(f, _)| families.get(usize::from(*f) - 1))
                .map(|f| f.to_string());
            seen.push(DeviceSeen {
                org: c.key.org,
                identity: c.key.identity.to_string(),
                hosts: c.hosts.iter().map(|h| h.to_string()).collect(),
                product: c.product.as_ref().map(|p| p.to_string()).or_else(|| family.clone()),
                family,
                formats: [Format::Rfc5424, Format::Rfc3164, Format::Cef, Format::Leef, Format::Raw]
                    .into_iter()
                    .filter(|f| d.formats & (1 << *f as u8) != 0)
                    .map(|f| f.as_str().to_owned())
                    .collect(),
                first_ms: c.first_ms,
                last_ms: d.last_ms,
                events: d.events,
                bytes: d.bytes,
                max_gap_ms: i64::from(d.max_gap_ms),
            });
            d.reset(c);
            keep.push(true);
        }
        // Forgotten devices free their org's room.
        if keep.contains(&false) {
            let mut k = keep.iter();
            self.hot.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            self.cold.retain(|_| k.next().copied().unwrap_or(true));
            self.reindex();
            for c in self.orgs.values_mut() {
                c.tracked = 0;
            }
            for Cold { key, .. } in &self.cold {
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
        self.hot.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.hot.is_empty()
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
        for host in ["::ffff:10.0.0.9", "[2001:DB8::1]", "2001:db8::1"] {
            let line = format!("<13>1 2026-11-22T10:15:42Z {host} app - - - hi");
            t.observe(org, ip("127.0.0.1"), false, &event(&line), None, 10);
        }
        // An RFC 3164 IPv6 HOSTNAME that starts like a year is a host.
        t.observe(org, ip("127.0.0.1"), false, &event("<13>Nov 22 10:15:42 2001:DB8:0::1 app: hi"), None, 10);
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
        assert_eq!(r.devices.iter().find(|d| d.identity == "2001:db8::1").map(|d| d.events), Some(3));
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
        t.apply_limits(&DeviceLimits {
            version: 1,
            limit: Some(3),
            enforce: true,
            within: vec![],
            active: 3,
            parts: 0,
        });
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
        t.apply_limits(&DeviceLimits {
            version: 1,
            limit: Some(3),
            enforce: true,
            within: vec![],
            active: 0,
            parts: 0,
        });
        let standing: Vec<Standing> = (1..=5)
            .map(|i| t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, i))
            .collect();
        use Standing::*;
        assert_eq!(standing, [Within, Within, Within, Beyond, Beyond]);
        // The supervisor agrees on the first three; then device 1 is retired.
        let within = |ids: &[u8]| ids.iter().map(|i| (OrgId(5), format!("192.0.2.{i}"))).collect();
        t.apply_limits(&DeviceLimits {
            version: 2,
            limit: Some(3),
            enforce: true,
            within: within(&[2, 3]),
            active: 4,
            parts: 0,
        });
        let now: Vec<Standing> = (1..=5)
            .map(|i| t.observe(OrgId(5), ip(&format!("192.0.2.{i}")), false, &event("<13>x"), None, 10))
            .collect();
        // Room for one of those it does not know: the first seen, device 1.
        assert_eq!(now, [Within, Within, Within, Beyond, Beyond]);
        // An older table changes nothing.
        t.apply_limits(&DeviceLimits { version: 1, limit: None, enforce: false, within: vec![], active: 0, parts: 0 });
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

    proptest::proptest! {
        /// Counting a batch at once (runs, chunks, lookups read ahead) and
        /// counting its events one at a time give the same inventory, the
        /// same standings and the same overflow.
        #[test]
        fn a_batch_counts_as_its_events_one_at_a_time(
            sent in proptest::collection::vec((0u8..6, 0u8..7, 0u8..2, 0usize..3, proptest::bool::weighted(0.2)), 1..300),
            split in 1usize..80,
            limit in 0u64..6,
        ) {
            let hosts = ["fw-1", "FW-1.", "db-2", "10.0.0.9", "-", "Mail-Relay.Example.ORG", "mail-relay.example.org."];
            let tags = tracker(1);
            let lines: Vec<(Origin, Event)> = sent
                .iter()
                .map(|&(peer, host, org, family, by_host)| {
                    // Senders 0 and 1 are relays (127.0.0.x).
                    let peer = if peer < 2 { ip(&format!("127.0.0.{peer}")) } else { ip(&format!("192.0.2.{peer}")) };
                    let line = format!("<13>Nov 22 10:15:42 {} app: hi", hosts[usize::from(host)]);
                    let family = family.checked_sub(1);
                    let event = event(&line);
                    let origin = tags.origin(&event, OrgId(5 + u32::from(org)), peer, by_host, family);
                    (origin, event)
                })
                .collect();
            let limits = DeviceLimits { version: 1, limit: Some(limit), enforce: true, within: vec![], active: 0, parts: 0 };
            let (mut one, mut batched) = (tracker(4), tracker(4));
            one.apply_limits(&limits);
            batched.apply_limits(&limits);
            let singly: Vec<Standing> =
                lines.iter().map(|(o, e)| one.observe(o.org, o.peer, o.by_host, e, o.family, 7)).collect();
            let mut together = Vec::new();
            for part in lines.chunks(split) {
                let (origins, events): (Vec<Origin>, Vec<Event>) = part.iter().cloned().unzip();
                batched.observe_batch(&events, &origins, 7, &mut together);
            }
            proptest::prop_assert_eq!(singly, together);
            proptest::prop_assert_eq!(one.counts(), batched.counts());
            proptest::prop_assert_eq!(one.report(8), batched.report(8));
        }
    }
}

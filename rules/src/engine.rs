//! The streaming engine: rules evaluated per org on event time.
//!
//! # How an event flows
//!
//! 1. **Arrival** ([`Engine::process`]). The event goes to its org's
//!    partition (and, when the set has cross-org rules, to the cross-org
//!    partition). An event older than the partition's watermark is *late*:
//!    it is counted and not evaluated. Otherwise the index picks the patterns
//!    that can match its `event_type` or `format`, their filters run (they
//!    are stateless), and each passing pattern gets a small *record*: time,
//!    event id, group key and aggregate inputs. Records wait in the
//!    partition's reorder buffer.
//! 2. **Release.** The watermark is the newest event time seen minus the
//!    allowed lateness. Records at or before it leave the buffer in
//!    (time, arrival) order, interleaved with due timers, so everything
//!    stateful sees one deterministic event-time order whatever order
//!    events arrived in within the lateness.
//! 3. **Patterns.** A record updates its sliding window; when the
//!    thresholds hold, the pattern *matches* and the window starts afresh.
//! 4. **Conditions** combine matches with the same join key: and, or, and
//!    not, followed by, not followed by. NOT FOLLOWED BY arms a timer that
//!    fires when the watermark passes the end of its window.
//! 5. **Incidents.** A rule hit opens an incident, or, within the rule's
//!    suppression window for the same key, increments the open one. Each
//!    hit runs the rule's actions and is fed back as an event
//!    `incident.<rule id>` for nested rules.
//!
//! State is bounded: windows and joins expire with event time (swept
//! periodically), count windows keep at most `threshold` entries, other
//! windows at most `max_window_events`, and pending NOT FOLLOWED BY starts at
//! most `max_pending` per key.
//!
//! All of that state — buffers, windows, joins, timers, open incidents, watch
//! lists and the counters — can be written out with [`Engine::checkpoint`]
//! and read back with [`Engine::restore`] (see `checkpoint.rs`): the restored
//! engine continues exactly as the original would have. Nothing the engine
//! decides may therefore depend on process-local state such as hash-table
//! iteration order or allocation capacities.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parsers::{Event, EventTime, OrgId, Str};
use regex::SetMatches;

use crate::compile::{
    Action, Agg, Condition, Output, Pattern, Piece, Rule, RuleSet, Scope, Severity, WindowKind, format_slot,
};
use crate::field::{Field, Value};
use crate::filter::Env;
use crate::key::{Key, Part};
use crate::reorder::{Extracted, Ids, ListCheck, Record, Reorder};
use crate::table::Table;
use crate::window::{General, Ring, Val, Values, Window};

mod checkpoint;
pub use checkpoint::CheckpointError;

/// The name of the org that owns unassigned events and cross-org incidents.
pub const SUPER_LOCAL: &str = "Super/Local";

/// Engine limits and timing.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How far behind the newest event of its org an event may arrive and
    /// still be evaluated in order. Incidents wait this long too.
    pub lateness: Duration,
    /// How far an event's time may be ahead of its receive time. An event
    /// stamped further ahead is correlated at its receive time plus this
    /// (and counted), so no source's clock can move its org's watermark
    /// past what has been received: a future-stamped line cannot make
    /// other sources' events late. `None` trusts event times as stamped,
    /// for replaying files whose receive time is not a real one
    /// (`vigil rules test`).
    pub max_ahead: Option<Duration>,
    /// How far an event's time may be behind its receive time. An event
    /// stamped further behind (a device clock that runs slow, local time
    /// read as UTC, a relay that held it) is correlated at its receive
    /// time minus this (and counted). The clock moves every org's
    /// watermark to `now - lateness` so that quiet orgs' windows close; an
    /// event kept at a stamp further behind than the lateness would be late
    /// on arrival, and a source whose clock is slow would be invisible to
    /// every rule. Below the lateness, with room for events to take their
    /// time through the pipeline: [`EngineConfig::for_lateness`] uses half
    /// of it, and the engine never takes more than that half. `None`
    /// trusts event times as stamped (`vigil rules test`).
    pub max_behind: Option<Duration>,
    /// Bytes the reorder buffers may hold across orgs. Past it, the org
    /// whose event arrives releases its oldest records early: its
    /// watermark moves up to them, so under memory pressure the allowed
    /// lateness shrinks instead of memory growing (counted as early
    /// releases; events then behind the watermark are counted late).
    pub max_buffer_bytes: usize,
    /// Window keys (rule, pattern, group) held across orgs at most. Past
    /// it, the org holding the most keys loses its stalest: of a few
    /// sampled keys, the one whose newest event is oldest (counted as
    /// evicted keys). Keys come from the events (source addresses, user
    /// names), so without a ceiling a flood of distinct sources would grow
    /// state without bound.
    pub max_window_keys: usize,
    /// An org whose newest event is this far behind the newest of all orgs
    /// no longer holds back the cross-org watermark.
    pub idle_after: Duration,
    /// Contributing event ids kept per incident.
    pub max_event_ids: usize,
    /// How deep incidents feed incidents (`incident.<id>` events).
    pub max_depth: u8,
    /// Events kept per key by windows with aggregates other than count.
    pub max_window_events: usize,
    /// NOT FOLLOWED BY starts waiting per key.
    pub max_pending: usize,
    /// How often (in event time) expired state is swept.
    pub sweep_every: Duration,
    /// Run the cross-org rules. Off in a cluster's org partitions: the
    /// cross-org partition's owner runs them over every org's events.
    pub cross_org: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            lateness: Duration::from_secs(10),
            max_ahead: Some(Duration::ZERO),
            max_behind: Some(Duration::from_secs(5)),
            max_buffer_bytes: 256 << 20,
            max_window_keys: 500_000,
            idle_after: Duration::from_secs(300),
            max_event_ids: 100,
            max_depth: 4,
            max_window_events: 10_000,
            max_pending: 64,
            sweep_every: Duration::from_secs(60),
            cross_org: true,
        }
    }
}

impl EngineConfig {
    /// The defaults with `lateness`, and stamps trusted down to half of it
    /// behind their receive time ([`EngineConfig::max_behind`]).
    pub fn for_lateness(lateness: Duration) -> EngineConfig {
        EngineConfig { lateness, max_behind: Some(lateness / 2), ..EngineConfig::default() }
    }

    /// Event times as stamped, neither ahead of nor behind their receive
    /// time corrected: for replaying a file, whose receive times are not
    /// real ones.
    pub fn trusting_stamps(self) -> EngineConfig {
        EngineConfig { max_ahead: None, max_behind: None, ..self }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 4).min(i64::MAX / 4)
}

fn time_of(t: EventTime) -> i64 {
    let n = t.unix_nanos();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN / 2 } else { i64::MAX / 2 }).clamp(i64::MIN / 2, i64::MAX / 2)
}

/// An incident as the engine last saw it. The same `id` is reported again
/// each time the incident is incremented.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    /// Unique within the engine, in order of opening.
    pub id: u64,
    /// The rule's id.
    pub rule: Str,
    /// The owning org.
    pub org_id: OrgId,
    /// The owning org's name.
    pub org: Str,
    /// The rule's severity.
    pub severity: Severity,
    /// The incident key: group-by or join field → value.
    pub key: Vec<(String, String)>,
    /// Rule hits merged into this incident.
    pub count: u64,
    /// Time of the first hit.
    pub first_seen: EventTime,
    /// Time of the latest hit.
    pub last_seen: EventTime,
    /// The rule's title with placeholders filled in at the first hit.
    pub title: String,
    /// The first contributing event ids, capped.
    pub event_ids: Vec<u64>,
}

impl Incident {
    /// One JSON object, fields in a fixed order (byte-identical for the
    /// same incident).
    pub fn to_json(&self) -> String {
        let key: serde_json::Map<String, serde_json::Value> =
            self.key.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let fields: [(&str, serde_json::Value); 11] = [
            ("id", self.id.into()),
            ("rule", self.rule.as_str().into()),
            ("org", self.org.as_str().into()),
            ("org_id", self.org_id.0.into()),
            ("severity", self.severity.as_str().into()),
            ("key", serde_json::Value::Object(key)),
            ("count", self.count.into()),
            ("first_seen", self.first_seen.to_rfc3339().into()),
            ("last_seen", self.last_seen.to_rfc3339().into()),
            ("title", self.title.as_str().into()),
            ("event_ids", self.event_ids.clone().into()),
        ];
        let mut out = String::from("{");
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(*name).to_string());
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }
}

/// Counters and the size of the engine's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events given to [`Engine::process`].
    pub events: u64,
    /// Events older than their partition's watermark (not evaluated).
    pub late_events: u64,
    /// Events stamped ahead of their receive time by more than
    /// `max_ahead`, correlated at their receive time.
    pub future_events: u64,
    /// Events stamped behind their receive time by more than
    /// `max_behind`, correlated at their receive time minus it.
    pub behind_events: u64,
    /// Records released before the allowed lateness had passed, because
    /// the reorder buffers reached `max_buffer_bytes`.
    pub early_releases: u64,
    /// Bytes held by the reorder buffers (part of `state_bytes`).
    pub buffer_bytes: usize,
    /// Window keys dropped at the `max_window_keys` ceiling.
    pub evicted_keys: u64,
    /// Rule hits.
    pub hits: u64,
    /// Incidents opened.
    pub incidents: u64,
    /// Hits not fed back because of the depth limit.
    pub depth_limited: u64,
    /// Window entries pushed out early by `max_window_events`.
    pub window_overflows: u64,
    /// NOT FOLLOWED BY starts dropped by `max_pending`.
    pub pending_overflows: u64,
    /// Records waiting in reorder buffers.
    pub buffered: usize,
    /// Active window keys (rule, pattern, group).
    pub window_keys: usize,
    /// Active join keys of multi-pattern rules.
    pub join_keys: usize,
    /// Armed NOT FOLLOWED BY timers.
    pub timers: usize,
    /// Incidents within their suppression window.
    pub open_incidents: usize,
    /// Watch-list entries.
    pub watch_entries: usize,
    /// Estimated bytes of all of the above.
    pub state_bytes: usize,
    /// Per org: (org id, name, late events, active keys, state bytes), by id;
    /// the cross-org partition is reported under Super/Local's id with the
    /// name `cross-org`.
    pub orgs: Vec<(OrgId, Str, u64, usize, usize)>,
}

/// A pattern match: the input of a rule's condition.
#[derive(Clone, Debug)]
struct Match {
    time: i64,
    ids: Vec<u64>,
    key: Key,
    outputs: Vec<Str>,
}

/// The join state of a multi-pattern rule for one key.
#[derive(Debug)]
enum Join {
    /// AND: the latest match of each pattern.
    All(Vec<Option<Match>>),
    /// AND NOT: the time of the latest match of the excluded pattern.
    Excluded(i64),
    /// FOLLOWED BY: per stage, the partial sequence with the latest start
    /// that has matched patterns `0..=stage` (start time, matches).
    Sequence(Vec<Option<(i64, Vec<Match>)>>),
    /// NOT FOLLOWED BY: starts waiting for their window to close.
    Pending(VecDeque<Match>),
}

#[derive(Debug)]
struct Open {
    id: u64,
    first: i64,
    last: i64,
    count: u64,
    ids: Vec<u64>,
    title: String,
}

type WinKey = (u32, u16, Key);
type RuleKey = (u32, Key);

/// One org's evaluation (or the cross-org one).
#[derive(Debug)]
struct Partition {
    org_id: OrgId,
    name: Str,
    cross: bool,
    max_time: i64,
    watermark: i64,
    clock: i64,
    buffer: Reorder,
    immediate: VecDeque<Record>,
    windows: Table<WinKey, Window>,
    joins: HashMap<RuleKey, Join>,
    timers: BTreeMap<(i64, u64), RuleKey>,
    incidents: HashMap<RuleKey, Open>,
    lists: HashMap<(u32, Part), i64>,
    next_sweep: i64,
    late: u64,
}

impl Partition {
    fn new(org_id: OrgId, name: Str, cross: bool) -> Partition {
        Partition {
            org_id,
            name,
            cross,
            max_time: i64::MIN,
            watermark: i64::MIN,
            clock: i64::MIN,
            buffer: Reorder::default(),
            immediate: VecDeque::new(),
            windows: Table::new(),
            joins: HashMap::new(),
            timers: BTreeMap::new(),
            incidents: HashMap::new(),
            lists: HashMap::new(),
            next_sweep: i64::MIN,
            late: 0,
        }
    }

    /// The time this partition's next record or timer is due at: see
    /// [`Shared::due`].
    fn due(&self) -> i64 {
        let record = self.buffer.next_time().unwrap_or(i64::MAX);
        let timer = self.timers.first_key_value().map_or(i64::MAX, |((d, _), _)| d.saturating_add(1));
        record.min(timer)
    }

    fn keys(&self) -> usize {
        self.windows.len() + self.joins.len() + self.incidents.len() + self.lists.len() + self.timers.len()
    }

    fn state_bytes(&self) -> usize {
        fn table<K, V>(map: &HashMap<K, V>) -> usize {
            // hashbrown: one control byte per bucket, buckets ≈ capacity × 8/7.
            map.capacity() * 8 / 7 * (size_of::<(K, V)>() + 1)
        }
        let windows: usize = self.windows.iter().map(|((_, _, k), w)| k.heap_bytes() + w.heap_bytes()).sum();
        let window_table = self.windows.table_bytes();
        let joins: usize = self
            .joins
            .iter()
            .map(|((_, k), j)| {
                k.heap_bytes()
                    + match j {
                        Join::All(m) => {
                            m.len() * size_of::<Option<Match>>() + m.iter().flatten().map(match_bytes).sum::<usize>()
                        }
                        Join::Excluded(_) => 0,
                        Join::Sequence(stages) => stages
                            .iter()
                            .flatten()
                            .map(|(_, ms)| {
                                ms.capacity() * size_of::<Match>() + ms.iter().map(match_bytes).sum::<usize>()
                            })
                            .sum(),
                        Join::Pending(q) => {
                            q.capacity() * size_of::<Match>() + q.iter().map(match_bytes).sum::<usize>()
                        }
                    }
            })
            .sum();
        let incidents: usize =
            self.incidents.iter().map(|((_, k), o)| k.heap_bytes() + o.ids.capacity() * 8 + o.title.capacity()).sum();
        let lists: usize = self.lists.keys().map(|(_, p)| p.heap_bytes()).sum();
        let timers = self.timers.len() * (size_of::<((i64, u64), RuleKey)>() + 16);
        let buffer = self.buffer.bytes() + self.immediate.capacity() * size_of::<Record>();
        window_table
            + windows
            + table(&self.joins)
            + joins
            + table(&self.incidents)
            + incidents
            + table(&self.lists)
            + lists
            + timers
            + buffer
    }
}

fn match_bytes(m: &Match) -> usize {
    m.ids.capacity() * 8 + m.key.heap_bytes() + m.outputs.capacity() * size_of::<Str>()
}

/// Whether `rule` runs in the partition of org `name` (or the cross-org one).
fn applies(rule: &Rule, cross: bool, name: &str) -> bool {
    match &rule.scope {
        Scope::PerOrg => !cross,
        Scope::Org(org) => !cross && org == name,
        Scope::CrossOrg => cross,
    }
}

/// A fed-back incident event on its way to the cross-org partition.
struct Feed {
    event: Event,
    ids: Ids,
    depth: u8,
}

/// The engine's bookkeeping besides the partitions.
struct Shared {
    /// Regex-set results for the event being evaluated.
    cache: Vec<Option<SetMatches>>,
    /// Incident events on their way to the cross-org partition.
    feeds: Vec<Feed>,
    counters: Stats,
    /// Arrival order of records and timers.
    seq: u64,
    next_incident: u64,
    /// Bytes held by every partition's reorder buffer.
    buffer_bytes: usize,
    /// Records of the event being matched.
    matched: Vec<Record>,
    /// Records of the entry being released.
    released: Vec<Record>,
    /// Window keys across partitions.
    window_keys: usize,
    /// Sampling for evictions (deterministic, so replay evicts alike).
    rng: u64,
    /// The partition evictions take from, while it holds the most.
    victim: Option<OrgId>,
    /// No record waits, and no timer is due, before this time: the earliest
    /// buffered record's time, or a timer's deadline plus one, or earlier
    /// (arrivals lower it; only [`Engine::advance`] raises it, as it visits
    /// every partition). Not checkpointed: a restored engine starts from
    /// `i64::MIN`, which only asks for one early visit. See [`Engine::due`].
    due: i64,
}

/// Everything a partition's processing reads or writes besides the partition.
struct Sink<'a> {
    rules: &'a RuleSet,
    config: &'a Limits,
    shared: &'a mut Shared,
    out: &'a mut Vec<Incident>,
    has_cross: bool,
}

/// The configuration in nanoseconds.
#[derive(Clone, Debug)]
struct Limits {
    lateness: i64,
    max_ahead: Option<i64>,
    max_behind: Option<i64>,
    max_buffer_bytes: usize,
    max_window_keys: usize,
    idle_after: i64,
    max_event_ids: usize,
    max_depth: u8,
    max_window_events: usize,
    max_pending: usize,
    sweep_every: i64,
}

/// Evaluates a [`RuleSet`] over a stream of events.
///
/// Single-threaded: a worker shards orgs over several engines if it needs
/// more than one core. The clock is whatever the caller passes to
/// [`Engine::advance`]; without calls to it, time is event time only.
pub struct Engine {
    rules: Arc<RuleSet>,
    limits: Limits,
    /// Org ids come from the collector's configuration, not from events.
    orgs: hashbrown::HashMap<OrgId, Partition>,
    cross: Option<Partition>,
    shared: Shared,
    global_max: i64,
    since_cross_update: u32,
}

impl Engine {
    /// An engine for `rules`.
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Engine {
        let has_cross = config.cross_org && rules.rules.iter().any(|r| r.scope == Scope::CrossOrg);
        let limits = Limits {
            lateness: nanos(config.lateness),
            max_ahead: config.max_ahead.map(nanos),
            max_behind: config.max_behind.map(|b| nanos(b.min(config.lateness / 2))),
            max_buffer_bytes: config.max_buffer_bytes,
            max_window_keys: config.max_window_keys.max(1),
            idle_after: nanos(config.idle_after),
            max_event_ids: config.max_event_ids.max(1),
            max_depth: config.max_depth,
            max_window_events: config.max_window_events.max(1),
            max_pending: config.max_pending.max(1),
            sweep_every: nanos(config.sweep_every).max(1),
        };
        Engine {
            cross: has_cross.then(|| Partition::new(OrgId::SUPER_LOCAL, Str::from("cross-org"), true)),
            rules,
            limits,
            orgs: hashbrown::HashMap::new(),
            shared: Shared {
                cache: Vec::new(),
                feeds: Vec::new(),
                counters: Stats::default(),
                seq: 0,
                next_incident: 1,
                buffer_bytes: 0,
                matched: Vec::new(),
                released: Vec::new(),
                window_keys: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
                victim: None,
                due: i64::MAX,
            },
            global_max: i64::MIN,
            since_cross_update: 0,
        }
    }

    /// Evaluates one event. `id` identifies it in incidents' `event_ids`.
    /// Incidents opened or incremented are appended to `out`.
    pub fn process(&mut self, id: u64, event: &Event, out: &mut Vec<Incident>) {
        self.shared.counters.events += 1;
        let mut time = time_of(event.time);
        if let Some(ahead) = self.limits.max_ahead {
            let bound = time_of(event.received_at).saturating_add(ahead);
            if time > bound {
                self.shared.counters.future_events += 1;
                time = bound;
            }
        }
        if let Some(behind) = self.limits.max_behind {
            let bound = time_of(event.received_at).saturating_sub(behind);
            if time < bound {
                self.shared.counters.behind_events += 1;
                time = bound;
            }
        }
        let org_id = event.org_id.unwrap_or(OrgId::SUPER_LOCAL);
        self.global_max = self.global_max.max(time);
        let has_cross = self.cross.is_some();
        let part = self.orgs.entry(org_id).or_insert_with(|| Partition::new(org_id, org_name(event, org_id), false));
        let mut sink = Sink { rules: &self.rules, config: &self.limits, shared: &mut self.shared, out, has_cross };
        arrive(part, event, time, Ids::One(id), 0, &mut sink);
        if let Some(cross) = &mut self.cross {
            deliver_feeds(&mut sink, cross);
            arrive(cross, event, time, Ids::One(id), 0, &mut sink);
            // The minimum over orgs costs one pass over them: with many orgs,
            // take it every 1024 events (a later watermark only delays).
            self.since_cross_update += 1;
            if self.orgs.len() <= 64 || self.since_cross_update >= 1024 {
                self.since_cross_update = 0;
                let wm = cross_watermark(&self.orgs, self.global_max, self.limits.idle_after);
                advance_to(cross, wm, &mut sink);
            }
        }
        self.shared.feeds.clear();
        self.enforce_key_ceiling();
    }

    /// Evicts window keys while there are more than `max_window_keys`,
    /// from the partition that holds the most.
    fn enforce_key_ceiling(&mut self) {
        while self.shared.window_keys > self.limits.max_window_keys {
            let fair = self.shared.window_keys / (self.orgs.len() + 1).max(1);
            let victim = match self.shared.victim {
                Some(id) if self.orgs.get(&id).is_some_and(|p| p.windows.len() > fair) => id,
                _ => match self.orgs.values().max_by_key(|p| (p.windows.len(), p.org_id)) {
                    Some(p) if p.windows.len() > 0 => p.org_id,
                    _ => break,
                },
            };
            self.shared.victim = Some(victim);
            let Some(part) = self.orgs.get_mut(&victim) else { break };
            if !part.windows.evict_sampled(&mut self.shared.rng, 8) {
                break;
            }
            self.shared.window_keys -= 1;
            self.shared.counters.evicted_keys += 1;
        }
    }

    /// Moves time forward to `now` (a clock reading): every org's watermark
    /// advances to at least `now - lateness`, so quiet orgs' windows close
    /// and their NOT FOLLOWED BY timers fire.
    pub fn advance(&mut self, now: EventTime, out: &mut Vec<Incident>) {
        let now = time_of(now);
        let floor = now.saturating_sub(self.limits.lateness);
        self.advance_all(floor, out);
    }

    /// End of input: releases every buffered record and fires every timer,
    /// as if the watermark had passed all time. Later events are late.
    pub fn flush(&mut self, out: &mut Vec<Incident>) {
        self.advance_all(i64::MAX, out);
    }

    fn advance_all(&mut self, floor: i64, out: &mut Vec<Incident>) {
        let mut ids: Vec<OrgId> = self.orgs.keys().copied().collect();
        ids.sort_unstable();
        let has_cross = self.cross.is_some();
        let mut sink = Sink { rules: &self.rules, config: &self.limits, shared: &mut self.shared, out, has_cross };
        for id in ids {
            if let Some(part) = self.orgs.get_mut(&id) {
                advance_to(part, floor, &mut sink);
            }
            if let Some(cross) = &mut self.cross {
                deliver_feeds(&mut sink, cross);
            }
        }
        if let Some(cross) = &mut self.cross {
            let wm = cross_watermark(&self.orgs, self.global_max, self.limits.idle_after).max(floor);
            advance_to(cross, wm, &mut sink);
        }
        self.shared.feeds.clear();
        self.shared.due = self.orgs.values().chain(self.cross.as_ref()).map(Partition::due).min().unwrap_or(i64::MAX);
        self.enforce_key_ceiling();
    }

    /// The earliest clock reading at which [`Engine::advance`] may release a
    /// waiting record or fire a timer (it may also release nothing then:
    /// orgs' own events release most records first), or `None` when nothing
    /// waits. A caller that advances at this time, rather than on a fixed
    /// tick, releases a quiet org's incidents as soon as the allowed
    /// lateness has passed.
    pub fn due(&self) -> Option<EventTime> {
        (self.shared.due != i64::MAX).then(|| {
            let at = self.shared.due.saturating_add(self.limits.lateness);
            EventTime::from_unix_nanos(i128::from(at))
        })
    }

    /// Counters and state size.
    pub fn stats(&self) -> Stats {
        let mut stats = self.shared.counters.clone();
        let mut parts: Vec<&Partition> = self.orgs.values().chain(self.cross.as_ref()).collect();
        parts.sort_by_key(|p| (p.cross, p.org_id));
        stats.late_events = parts.iter().map(|p| p.late).sum();
        for p in parts {
            let bytes = p.state_bytes();
            stats.buffered += p.buffer.len() + p.immediate.len();
            stats.window_keys += p.windows.len();
            stats.join_keys += p.joins.len();
            stats.timers += p.timers.len();
            stats.open_incidents += p.incidents.len();
            stats.watch_entries += p.lists.len();
            stats.state_bytes += bytes;
            stats.buffer_bytes += p.buffer.bytes();
            stats.orgs.push((p.org_id, p.name.clone(), p.late, p.keys(), bytes));
        }
        stats.state_bytes += self.orgs.capacity() * (size_of::<(OrgId, Partition)>() + 1);
        stats
    }
}

fn org_name(event: &Event, org_id: OrgId) -> Str {
    match &event.org {
        Some(name) => name.clone(),
        None if org_id == OrgId::SUPER_LOCAL => Str::from(SUPER_LOCAL),
        None => Str::from(format!("org-{}", org_id.0)),
    }
}

/// The cross-org watermark: the lowest watermark of the orgs still sending.
/// Every org event and every incident an org feeds is at or after its org's
/// watermark, hence not late here.
fn cross_watermark(orgs: &hashbrown::HashMap<OrgId, Partition>, global_max: i64, idle_after: i64) -> i64 {
    let active_since = global_max.saturating_sub(idle_after);
    orgs.values().filter(|p| p.max_time >= active_since).map(|p| p.watermark).min().unwrap_or(i64::MIN)
}

fn deliver_feeds(sink: &mut Sink<'_>, cross: &mut Partition) {
    while !sink.shared.feeds.is_empty() {
        let feeds = std::mem::take(&mut sink.shared.feeds);
        for feed in feeds {
            let time = time_of(feed.event.time);
            arrive(cross, &feed.event, time, feed.ids, feed.depth, sink);
        }
    }
}

/// Step 1: late check, filters, records into the buffer, then release.
fn arrive(part: &mut Partition, event: &Event, time: i64, ids: Ids, depth: u8, sink: &mut Sink<'_>) {
    if time < part.watermark {
        part.late += 1;
        return;
    }
    let mut matched = std::mem::take(&mut sink.shared.matched);
    matching_records(event, time, &ids, depth, sink, part.cross, &part.name, &mut matched);
    let grew = part.buffer.push(&matched);
    // One event's records share its time.
    if let Some(first) = matched.first() {
        sink.shared.due = sink.shared.due.min(first.time);
    }
    matched.clear();
    sink.shared.matched = matched;
    sink.shared.buffer_bytes += grew;
    part.max_time = part.max_time.max(time);
    // The cross-org partition's watermark follows the orgs' (see
    // `cross_watermark`), so incidents fed from an org are never late there.
    if !part.cross {
        let wm = part.max_time.saturating_sub(sink.config.lateness);
        advance_to(part, wm, sink);
    }
    // Past the memory ceiling, this org releases its oldest records now.
    while sink.shared.buffer_bytes > sink.config.max_buffer_bytes {
        let Some(oldest) = part.buffer.next_time() else { break };
        let before = part.buffer.len();
        advance_to(part, oldest, sink);
        sink.shared.counters.early_releases += before.saturating_sub(part.buffer.len()) as u64;
    }
}

/// What `pattern` takes from `event`, or `None` if a field it needs is absent.
fn extract(pattern: &Pattern, event: &Event) -> Option<Extracted> {
    let aggregate = pattern.kind != WindowKind::None;
    let group = if aggregate { key_of(&pattern.group_by, event)? } else { Key::Unit };
    // When the group is the key, the key is taken from the window if it fires.
    let key = if pattern.key_is_group { Key::Unit } else { key_of(&pattern.key_fields, event)? };
    let vals: Box<[Val]> = if pattern.kind == WindowKind::General {
        let mut vals = Vec::with_capacity(pattern.aggs.len());
        for agg in &pattern.aggs {
            vals.push(match agg {
                Agg::Count => Val::None,
                Agg::Distinct(f) => Val::Part(Part::of(f.get(event)?)),
                Agg::Sum(f) | Agg::Avg(f) | Agg::Min(f) | Agg::Max(f) => {
                    let n = f.get(event)?.as_f64().filter(|n| n.is_finite())?;
                    Val::Num(n)
                }
            });
        }
        vals.into_boxed_slice()
    } else {
        Box::new([])
    };
    let distinct = match (pattern.kind, pattern.aggs.first()) {
        (WindowKind::Distinct { .. }, Some(Agg::Distinct(f))) => Some(Part::of(f.get(event)?)),
        _ => None,
    };
    let outputs = if aggregate {
        Vec::new()
    } else {
        pattern
            .outputs
            .iter()
            .map(|o| match o {
                Output::Field(f) => f.get(event).map_or_else(|| Str::from("-"), |v| render(v)),
                Output::Agg(_) => Str::from("-"),
            })
            .collect()
    };
    let weight = pattern
        .weight
        .as_ref()
        .and_then(|f| f.get(event)?.as_f64())
        .filter(|w| w.is_finite())
        .map_or(1, |w| w.clamp(1.0, 1_000_000.0) as u32);
    Some(Extracted { weight, distinct, group, key, vals, outputs })
}

fn render(value: Value<'_>) -> Str {
    use std::fmt::Write;
    let mut s = Str::default();
    let _ = write!(s, "{value}");
    s
}

fn key_of(fields: &[Field], event: &Event) -> Option<Key> {
    Some(match fields {
        [] => Key::Unit,
        [f] => Key::One(Part::of(f.get(event)?)),
        many => {
            Key::Many(many.iter().map(|f| f.get(event).map(Part::of)).collect::<Option<Vec<_>>>()?.into_boxed_slice())
        }
    })
}

/// Step 2: releases records and timers up to `watermark`, in time order.
fn advance_to(part: &mut Partition, watermark: i64, sink: &mut Sink<'_>) {
    if watermark > part.watermark {
        part.watermark = watermark;
    }
    let wm = part.watermark;
    loop {
        if let Some(record) = part.immediate.pop_front() {
            handle(part, record, sink);
            continue;
        }
        let next_record = part.buffer.next_time().filter(|t| *t <= wm);
        let next_timer = part.timers.first_key_value().map(|((d, _), _)| *d).filter(|d| *d < wm);
        match (next_record, next_timer) {
            (Some(t), Some(d)) if d < t => fire_timer(part, sink),
            (None, Some(_)) => fire_timer(part, sink),
            (Some(_), _) => {
                // One event's records, each followed by the incident events
                // its hits feed back, as if they had been released one by one.
                let mut released = std::mem::take(&mut sink.shared.released);
                let before = part.buffer.bytes();
                part.buffer.pop(&mut released);
                sink.shared.buffer_bytes =
                    sink.shared.buffer_bytes.saturating_sub(before.saturating_sub(part.buffer.bytes()));
                for record in released.drain(..) {
                    handle(part, record, sink);
                    while let Some(fed) = part.immediate.pop_front() {
                        handle(part, fed, sink);
                    }
                }
                sink.shared.released = released;
            }
            (None, None) => break,
        }
    }
    // Everything up to the watermark is done: that is the partition's time.
    part.clock = part.clock.max(wm);
    if part.clock >= part.next_sweep && part.clock != i64::MIN {
        sweep(part, sink);
        part.next_sweep = part.clock.saturating_add(sink.config.sweep_every);
    }
}

/// Step 3: a record meets its window.
fn handle(part: &mut Partition, record: Record, sink: &mut Sink<'_>) {
    part.clock = part.clock.max(record.time);
    let rules = sink.rules;
    let rule = &rules.rules[record.rule as usize];
    let pattern = &rule.patterns[record.pattern as usize];
    if let Some(check) = &record.lists {
        let lists = &part.lists;
        let now = record.time;
        if !check.passes(|list, value| lists.get(&(list, value.clone())).is_some_and(|expires| *expires >= now)) {
            return;
        }
    }
    let extracted = record.body;
    let matched = match pattern.kind {
        WindowKind::None => {
            Some(Match { time: record.time, ids: record.ids.to_vec(), key: extracted.key, outputs: extracted.outputs })
        }
        kind => {
            let limits = sink.config;
            let limit = record.time.saturating_sub(pattern.window);
            let update = |window: &mut Window, overflows: &mut u64| match window {
                Window::Count(ring) => {
                    ring.evict_before(limit);
                    let threshold = match kind {
                        WindowKind::Count { threshold } => threshold,
                        _ => 1,
                    };
                    ring.push_weighted(record.time, record.ids.first(), extracted.weight, threshold);
                }
                Window::Distinct(values) => {
                    values.evict_before(limit);
                    if let Some(value) = extracted.distinct {
                        values.push(value, record.time, record.ids.first());
                    }
                }
                Window::General(g) => {
                    g.evict_before(limit);
                    if g.push(
                        record.time,
                        record.ids.first(),
                        extracted.weight,
                        extracted.vals,
                        limits.max_window_events,
                    ) {
                        *overflows += 1;
                    }
                }
            };
            let holds = |window: &Window| window.holds(&pattern.having, &pattern.aggs);
            let wkey = (record.rule, record.pattern, extracted.group);
            let overflows = &mut sink.shared.counters.window_overflows;
            // A window that reaches its thresholds matches and starts afresh.
            let keys_before = part.windows.len();
            let slot = part.windows.get_or_insert_with(wkey, || match kind {
                WindowKind::Count { .. } => Window::Count(Ring::new()),
                WindowKind::Distinct { .. } => Window::Distinct(Values::default()),
                _ => Window::General(Box::new(General::new(&pattern.aggs))),
            });
            if part.windows.len() > keys_before {
                sink.shared.window_keys += 1;
            }
            update(part.windows.value_mut(slot), overflows);
            // Eviction takes the window with the oldest newest event.
            let newest = part.windows.value(slot).newest().unwrap_or(i64::MIN);
            part.windows.set_age(slot, newest);
            let fired = if holds(part.windows.value(slot)) { part.windows.remove(slot) } else { None };
            if fired.is_some() {
                sink.shared.window_keys -= 1;
            }
            fired.map(|((_, _, group), window)| Match {
                time: record.time,
                ids: window.ids(limits.max_event_ids),
                key: if pattern.key_is_group { group } else { extracted.key },
                outputs: pattern
                    .outputs
                    .iter()
                    .map(|o| match o {
                        Output::Agg(slot) => render(Value::Num(window.value(*slot, &pattern.aggs))),
                        Output::Field(_) => Str::from("-"),
                    })
                    .collect(),
            })
        }
    };
    if let Some(m) = matched {
        on_match(part, record.rule, usize::from(record.pattern), m, record.depth, sink);
    }
}

/// Step 4: a pattern match meets the rule's condition.
fn on_match(part: &mut Partition, r: u32, p: usize, m: Match, depth: u8, sink: &mut Sink<'_>) {
    let rule = &sink.rules.rules[r as usize];
    let n = rule.patterns.len();
    let within = rule.within;
    let time = m.time;
    match rule.condition {
        Condition::Single | Condition::Or => {
            let mut outputs = vec![Vec::new(); n];
            outputs[p] = m.outputs;
            hit(part, r, time, m.key, m.ids, outputs, depth, sink);
        }
        Condition::And => {
            let jkey = (r, m.key.clone());
            let join = part.joins.entry(jkey).or_insert_with(|| Join::All(vec![None; n]));
            let Join::All(latest) = join else { return };
            latest[p] = Some(m);
            for slot in latest.iter_mut() {
                if slot.as_ref().is_some_and(|x| x.time < time.saturating_sub(within)) {
                    *slot = None;
                }
            }
            if latest.iter().all(Option::is_some) {
                let matches: Vec<Match> = latest.iter_mut().filter_map(Option::take).collect();
                part.joins.remove(&(r, matches[p].key.clone()));
                fire_matches(part, r, time, matches, depth, sink);
            }
        }
        Condition::AndNot => {
            let jkey = (r, m.key.clone());
            if p == 1 {
                part.joins.insert(jkey, Join::Excluded(time));
                return;
            }
            let excluded =
                matches!(part.joins.get(&jkey), Some(Join::Excluded(t)) if *t >= time.saturating_sub(within));
            if !excluded {
                let mut outputs = vec![Vec::new(); n];
                outputs[0] = m.outputs;
                hit(part, r, time, m.key, m.ids, outputs, depth, sink);
            }
        }
        Condition::Sequence => {
            let jkey = (r, m.key.clone());
            if p > 0 && !part.joins.contains_key(&jkey) {
                return;
            }
            let join = part.joins.entry(jkey.clone()).or_insert_with(|| Join::Sequence(vec![None; n]));
            let Join::Sequence(stages) = join else { return };
            let advanced = if p == 0 {
                Some((time, vec![m]))
            } else {
                match &stages[p - 1] {
                    Some((start, matches)) if time.saturating_sub(*start) <= within => {
                        let mut matches = matches.clone();
                        matches.push(m);
                        Some((*start, matches))
                    }
                    _ => None,
                }
            };
            let Some((start, matches)) = advanced else { return };
            if p + 1 == n {
                part.joins.remove(&jkey);
                fire_matches(part, r, time, matches, depth, sink);
            } else if stages[p].as_ref().is_none_or(|(s, _)| *s <= start) {
                stages[p] = Some((start, matches));
            }
        }
        Condition::NotFollowedBy => {
            let jkey = (r, m.key.clone());
            if p == 1 {
                // Every waiting start is within its window (due timers fire
                // before later records), so the follower cancels them all.
                part.joins.remove(&jkey);
                return;
            }
            let join = part.joins.entry(jkey.clone()).or_insert_with(|| Join::Pending(VecDeque::new()));
            let Join::Pending(pending) = join else { return };
            if pending.len() >= sink.config.max_pending {
                sink.shared.counters.pending_overflows += 1;
                return;
            }
            pending.push_back(m);
            sink.shared.seq += 1;
            let deadline = time.saturating_add(within);
            sink.shared.due = sink.shared.due.min(deadline.saturating_add(1));
            part.timers.insert((deadline, sink.shared.seq), jkey);
        }
    }
}

/// A hit made of one match per pattern (AND, FOLLOWED BY).
fn fire_matches(part: &mut Partition, r: u32, time: i64, matches: Vec<Match>, depth: u8, sink: &mut Sink<'_>) {
    let key = matches.last().map_or(Key::Unit, |m| m.key.clone());
    let mut ids = Vec::new();
    let mut outputs = Vec::with_capacity(matches.len());
    for m in matches {
        ids.extend(m.ids);
        outputs.push(m.outputs);
    }
    hit(part, r, time, key, ids, outputs, depth, sink);
}

/// NOT FOLLOWED BY: the earliest timer's window closed without a follower.
fn fire_timer(part: &mut Partition, sink: &mut Sink<'_>) {
    let Some(((deadline, _), jkey)) = part.timers.pop_first() else { return };
    part.clock = part.clock.max(deadline);
    let r = jkey.0;
    let within = sink.rules.rules[r as usize].within;
    let Some(Join::Pending(pending)) = part.joins.get_mut(&jkey) else { return };
    let mut due = Vec::new();
    while pending.front().is_some_and(|m| m.time.saturating_add(within) <= deadline) {
        due.extend(pending.pop_front());
    }
    if pending.is_empty() {
        part.joins.remove(&jkey);
    }
    let n = sink.rules.rules[r as usize].patterns.len();
    for m in due {
        let mut outputs = vec![Vec::new(); n];
        outputs[0] = m.outputs;
        hit(part, r, deadline, m.key, m.ids, outputs, 0, sink);
    }
}

/// Step 5: a rule hit becomes a new or incremented incident, runs the
/// rule's actions and is fed back for nested rules.
#[allow(clippy::too_many_arguments)]
fn hit(
    part: &mut Partition,
    r: u32,
    time: i64,
    key: Key,
    ids: Vec<u64>,
    outputs: Vec<Vec<Str>>,
    depth: u8,
    sink: &mut Sink<'_>,
) {
    let rule = &sink.rules.rules[r as usize];
    let limits = sink.config;
    sink.shared.counters.hits += 1;
    let (owner_id, owner_name) =
        if part.cross { (OrgId::SUPER_LOCAL, Str::from(SUPER_LOCAL)) } else { (part.org_id, part.name.clone()) };
    let rkey = (r, key);
    let suppressed = |open: &Open| rule.suppress > 0 && time.saturating_sub(open.last) <= rule.suppress;
    let open = match part.incidents.entry(rkey.clone()) {
        Entry::Occupied(entry) if suppressed(entry.get()) => {
            let open = entry.into_mut();
            open.count += 1;
            open.last = open.last.max(time);
            for id in &ids {
                if open.ids.len() < limits.max_event_ids && !open.ids.contains(id) {
                    open.ids.push(*id);
                }
            }
            open
        }
        entry => {
            sink.shared.counters.incidents += 1;
            let id = sink.shared.next_incident;
            sink.shared.next_incident += 1;
            let mut first_ids: Vec<u64> = Vec::new();
            for i in &ids {
                if first_ids.len() < limits.max_event_ids && !first_ids.contains(i) {
                    first_ids.push(*i);
                }
            }
            let title = render_title(rule, &owner_name, &rkey.1, &outputs);
            let open = Open { id, first: time, last: time, count: 1, ids: first_ids, title };
            match entry {
                Entry::Occupied(mut entry) => {
                    entry.insert(open);
                    entry.into_mut()
                }
                Entry::Vacant(entry) => entry.insert(open),
            }
        }
    };
    let incident = Incident {
        id: open.id,
        rule: rule.id.clone(),
        org_id: owner_id,
        org: owner_name.clone(),
        severity: rule.severity,
        key: rule.key_names.iter().cloned().zip(rkey.1.parts().iter().map(ToString::to_string)).collect(),
        count: open.count,
        first_seen: EventTime::from_unix_nanos(i128::from(open.first)),
        last_seen: EventTime::from_unix_nanos(i128::from(open.last)),
        title: open.title.clone(),
        event_ids: open.ids.clone(),
    };
    for action in &rule.actions {
        match action {
            Action::WatchlistAdd { list, key, ttl } => {
                if let Some(value) = rkey.1.parts().get(*key) {
                    let list = u32::try_from(*list).unwrap_or(u32::MAX);
                    let normalized = match value {
                        Part::Text(t) => Part::normalized(Value::Text(t)),
                        other => other.clone(),
                    };
                    let expires = time.saturating_add(*ttl);
                    let entry = part.lists.entry((list, normalized)).or_insert(expires);
                    *entry = (*entry).max(expires);
                }
            }
        }
    }
    // Feed the hit back as an event for nested rules.
    if depth >= limits.max_depth {
        sink.shared.counters.depth_limited += 1;
    } else {
        let event = incident_event(rule, &incident, &rkey.1);
        let ids: Ids = Ids::Many(Arc::from(incident.event_ids.as_slice()));
        feed_here(part, &event, time, &ids, depth + 1, sink);
        if !part.cross && sink.has_cross {
            sink.shared.feeds.push(Feed { event, ids, depth: depth + 1 });
        }
    }
    if rule.generate {
        sink.out.push(incident);
    }
}

/// A rule hit as an event: `event_type = incident.<rule id>`, the key
/// fields set, the title as message, the rest in `ext`.
fn incident_event(rule: &Rule, incident: &Incident, key: &Key) -> Event {
    let mut event = Event::empty(Bytes::new(), incident.last_seen);
    event.org_id = Some(incident.org_id);
    event.org = Some(incident.org.clone());
    event.event_type = Some(Str::from(format!("incident.{}", rule.id)));
    event.message = Some(Str::from(incident.title.as_str()));
    for (name, part) in rule.key_names.iter().zip(key.parts()) {
        if let Some(field) = Field::parse(name) {
            field.set(&mut event, &part.to_string());
        }
    }
    event.ext.push("rule", &rule.id);
    event.ext.push("severity", rule.severity.as_str());
    event.ext.push("count", &incident.count.to_string());
    event.ext.push("incident_id", &incident.id.to_string());
    event
}

/// Runs a fed-back event through this partition's patterns now: its time is
/// the partition's current time, so it joins the stream in order.
fn feed_here(part: &mut Partition, event: &Event, time: i64, ids: &Ids, depth: u8, sink: &mut Sink<'_>) {
    let mut matched = std::mem::take(&mut sink.shared.matched);
    matching_records(event, time, ids, depth, sink, part.cross, &part.name, &mut matched);
    part.immediate.extend(matched.drain(..));
    sink.shared.matched = matched;
}

/// Runs the filters of every pattern the index offers for `event` and the
/// partition (`cross`, org `name`) runs, and adds a record for each match
/// to `out`.
#[allow(clippy::too_many_arguments)]
fn matching_records(
    event: &Event,
    time: i64,
    ids: &Ids,
    depth: u8,
    sink: &mut Sink<'_>,
    cross: bool,
    name: &str,
    out: &mut Vec<Record>,
) {
    let rules = sink.rules;
    let index = &rules.index;
    let event_type = event.event_type.as_deref();
    let typed = event_type.and_then(|t| index.by_type.get(t));
    let prefixed = index
        .by_prefix
        .iter()
        .filter(|(p, _)| event_type.is_some_and(|t| t.starts_with(p.as_str())))
        .flat_map(|(_, refs)| refs.iter());
    let candidates = typed
        .into_iter()
        .flatten()
        .chain(prefixed)
        .chain(index.by_format[format_slot(event.format)].iter())
        .chain(index.rest.iter());
    // Regex-set results are kept for this event's filters only.
    let cache = &mut sink.shared.cache;
    Env { sets: &rules.regex_sets, cache: &mut *cache, lists: None }.reset();
    for &(r, p) in candidates {
        let rule = &rules.rules[r as usize];
        if !applies(rule, cross, name) {
            continue;
        }
        let pattern = &rule.patterns[p as usize];
        let lists = if pattern.list_tests.is_empty() {
            let mut env = Env { sets: &rules.regex_sets, cache: &mut *cache, lists: None };
            if !pattern.filter.eval(event, &mut env) {
                continue;
            }
            None
        } else {
            match list_check(pattern, event, &rules.regex_sets, cache) {
                Some(check) => check,
                None => continue,
            }
        };
        let Some(body) = extract(pattern, event) else { continue };
        sink.shared.seq += 1;
        out.push(Record { time, seq: sink.shared.seq, rule: r, pattern: p, depth, ids: ids.clone(), body, lists });
    }
}

/// Evaluates a filter that tests watch lists for every outcome of its
/// list tests. `None`: it fails whatever the lists hold; `Some(None)`: it
/// passes whatever they hold; otherwise the check to make at release.
fn list_check(
    pattern: &Pattern,
    event: &Event,
    sets: &[(Field, regex::RegexSet)],
    cache: &mut Vec<Option<SetMatches>>,
) -> Option<Option<ListCheck>> {
    let slots: Vec<(u32, Option<Part>)> = pattern
        .list_tests
        .iter()
        .map(|(field, list)| (u32::try_from(*list).unwrap_or(u32::MAX), field.get(event).map(Part::normalized)))
        .collect();
    let outcomes = 1u32 << slots.len();
    let mut mask = 0u64;
    for outcome in 0..outcomes {
        let member = |list: usize, value: Part| {
            slots
                .iter()
                .enumerate()
                .any(|(i, (l, part))| outcome >> i & 1 == 1 && *l as usize == list && part.as_ref() == Some(&value))
        };
        let mut env = Env { sets, cache: &mut *cache, lists: Some(&member) };
        if pattern.filter.eval(event, &mut env) {
            mask |= 1 << outcome;
        }
    }
    let all = if outcomes == 64 { u64::MAX } else { (1u64 << outcomes) - 1 };
    match mask {
        0 => None,
        m if m == all => Some(None),
        _ => Some(Some(ListCheck { mask, slots })),
    }
}

fn render_title(rule: &Rule, org: &str, key: &Key, outputs: &[Vec<Str>]) -> String {
    let mut title = String::new();
    for piece in &rule.title {
        match piece {
            Piece::Text(t) => title.push_str(t),
            Piece::Org => title.push_str(org),
            Piece::Rule => title.push_str(&rule.id),
            Piece::Severity => title.push_str(rule.severity.as_str()),
            Piece::Key(i) => match key.parts().get(*i) {
                Some(part) => title.push_str(&part.to_string()),
                None => title.push('-'),
            },
            Piece::Output { pattern, slot } => match outputs.get(*pattern).and_then(|o| o.get(*slot)) {
                Some(value) => title.push_str(value),
                None => title.push('-'),
            },
        }
    }
    title
}

/// Drops state that can no longer influence a result: windows whose newest
/// event left the window, joins past `within`, incidents past their
/// suppression window and expired watch-list entries.
fn sweep(part: &mut Partition, sink: &mut Sink<'_>) {
    let rules = &sink.rules.rules;
    let clock = part.clock;
    let keys_before = part.windows.len();
    part.windows.retain(|(r, p, _), window| {
        let span = rules[*r as usize].patterns[usize::from(*p)].window;
        window.newest().is_some_and(|t| t >= clock.saturating_sub(span))
    });
    sink.shared.window_keys -= keys_before - part.windows.len();
    part.joins.retain(|(r, _), join| {
        let horizon = clock.saturating_sub(rules[*r as usize].within);
        match join {
            Join::All(latest) => latest.iter().flatten().any(|m| m.time >= horizon),
            Join::Excluded(t) => *t >= horizon,
            Join::Sequence(stages) => stages.iter().flatten().any(|(start, _)| *start >= horizon),
            Join::Pending(pending) => !pending.is_empty(),
        }
    });
    part.incidents.retain(|(r, _), open| clock.saturating_sub(open.last) <= rules[*r as usize].suppress);
    part.lists.retain(|_, expires| *expires >= clock);
    // After a burst, give the memory back.
    shrink(&mut part.joins);
    shrink(&mut part.incidents);
    shrink(&mut part.lists);
    if part.immediate.capacity() > 1024 && part.immediate.len() < part.immediate.capacity() / 4 {
        part.immediate.shrink_to(part.immediate.len() * 2);
    }
}

fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The per-key state budget (≤ 200 bytes per threshold key) rests on
    /// these sizes; a field added carelessly shows up here first.
    #[test]
    fn state_types_stay_small() {
        assert_eq!(size_of::<Key>(), 24);
        assert_eq!(size_of::<WinKey>(), 32);
        assert_eq!(size_of::<Window>(), 32);
    }
}

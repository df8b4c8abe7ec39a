//! From received messages to admitted events: parse each message, let the
//! device parsers classify it, assign its org, and admit it through the
//! EPS gate. Runs on plain threads (it is CPU work), one batch at a time.
//!
//! Events stamped ahead of their receive time are counted per org and
//! announced per source with a clock-skew system event (see [`crate::skew`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;
use parsers::device::{AuditJoin, AuditJoinStats};
use parsers::{DeviceParsers, Event, EventIds, EventTime, OrgId, Parser, Str};

use crate::devices::{DeviceTracker, Origin, Standing};
use crate::gate::{Admission, Gate};
use crate::listen::RawBatch;
use crate::orgs::OrgTable;
use crate::skew::{self, SkewConfig, SkewWatch};

/// The `event_type` of clock-skew system events.
pub const CLOCK_SKEW_EVENT: &str = "vigil.clock_skew";

/// How long the records of one audit event are awaited after the first:
/// auditd writes them together, a relay may split them across batches.
pub const AUDIT_JOIN_WINDOW_MS: i64 = 2_000;

/// Audit events joined at once at most (the oldest is completed early).
pub const AUDIT_JOIN_MAX_PENDING: usize = 10_000;

/// Turns raw batches into admitted events.
pub struct Intake {
    parser: Parser,
    classifier: Option<DeviceParsers>,
    devices: Option<Mutex<DeviceTracker>>,
    orgs: ArcSwap<OrgTable>,
    gate: Arc<Gate>,
    collector: Str,
    skew_config: SkewConfig,
    skew: Mutex<SkewWatch>,
    ids: Mutex<EventIds>,
    /// Joins audit records into audit events (with the device parsers).
    audit: Option<Mutex<AuditJoin>>,
}

impl Intake {
    /// An intake for the collector named `collector`.
    pub fn new(
        parser: Parser,
        devices: Option<DeviceParsers>,
        orgs: OrgTable,
        gate: Arc<Gate>,
        collector: &str,
    ) -> Intake {
        let audit = devices.as_ref().map(|_| Mutex::new(AuditJoin::new(AUDIT_JOIN_WINDOW_MS, AUDIT_JOIN_MAX_PENDING)));
        Intake {
            audit,
            parser,
            classifier: devices,
            devices: None,
            orgs: ArcSwap::from_pointee(orgs),
            gate,
            collector: collector.into(),
            skew_config: SkewConfig::default(),
            skew: Mutex::new(SkewWatch::default()),
            ids: Mutex::new(EventIds::new(0, EventTime::from_unix(0, 0, 0))),
        }
    }

    /// Sets where this collector's event ids come from (its node slot and
    /// start time); the default is slot 0 started at the epoch.
    pub fn with_event_ids(self, ids: EventIds) -> Intake {
        *self.ids.lock().unwrap_or_else(PoisonError::into_inner) = ids;
        self
    }

    /// Keeps a device inventory in `tracker` (and applies the licence's
    /// device limit it holds).
    pub fn with_devices(mut self, tracker: DeviceTracker) -> Intake {
        self.devices = Some(Mutex::new(tracker));
        self
    }

    /// The device inventory, if kept.
    pub fn devices(&self) -> Option<std::sync::MutexGuard<'_, DeviceTracker>> {
        self.devices.as_ref().map(|d| d.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets how clock skew is detected and announced.
    pub fn with_skew(mut self, config: SkewConfig) -> Intake {
        self.skew_config = config;
        self
    }

    /// Replaces the org table (orgs created, changed or deleted).
    pub fn set_orgs(&self, orgs: OrgTable) {
        self.orgs.store(Arc::new(orgs));
    }

    /// The gate events pass through.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Accepted events stamped ahead of their receive time by more than
    /// the skew tolerance, per org.
    pub fn skewed_events(&self) -> HashMap<OrgId, u64> {
        self.skew.lock().unwrap_or_else(PoisonError::into_inner).counts.clone()
    }

    /// Parses, assigns and admits `batch`, appending the accepted events
    /// to `out` in arrival order (then any clock-skew system events), each
    /// with its event id; returns what the gate decided, summed.
    ///
    /// Audit records admitted are also joined into audit events
    /// (`audit.event`, see [`AuditJoin`]); those completed by this batch or
    /// whose window ended by its receive time follow. An empty batch only
    /// completes what is due (the collector sends one now and then while
    /// records are held).
    pub fn process(&self, batch: RawBatch, out: &mut Vec<Event>) -> Admission {
        let start = out.len();
        let now_ms = batch.received_at.unix_millis();
        let total = self.process_unnumbered(batch, out);
        if let Some(audit) = &self.audit {
            let mut join = audit.lock().unwrap_or_else(PoisonError::into_inner);
            let mut joined = Vec::new();
            // Events that are not audit records pass by at the first check.
            for e in &out[start..] {
                join.observe(e, now_ms, &mut joined);
            }
            join.expire(now_ms, &mut joined);
            out.append(&mut joined);
        }
        self.number(&mut out[start..]);
        total
    }

    /// The input has ended: appends the audit events still being joined.
    pub fn finish(&self, out: &mut Vec<Event>) {
        let start = out.len();
        if let Some(audit) = &self.audit {
            audit.lock().unwrap_or_else(PoisonError::into_inner).drain(out);
        }
        self.number(&mut out[start..]);
    }

    /// Audit events being joined, and what the joining has done (`None`
    /// without device parsers).
    pub fn audit_join(&self) -> Option<(usize, AuditJoinStats)> {
        let join = self.audit.as_ref()?.lock().unwrap_or_else(PoisonError::into_inner);
        Some((join.pending(), join.stats()))
    }

    fn number(&self, fresh: &mut [Event]) {
        if !fresh.is_empty() {
            let first = self.ids.lock().unwrap_or_else(PoisonError::into_inner).next_run(fresh.len() as u64);
            for (e, id) in fresh.iter_mut().zip(first..) {
                e.id = id;
            }
        }
    }

    fn process_unnumbered(&self, batch: RawBatch, out: &mut Vec<Event>) -> Admission {
        let orgs = self.orgs.load();
        let received_at = batch.received_at;
        let received_ms = received_at.unix_millis();
        let mut devices = self.devices();
        let n = batch.items.len();
        let mut events: Vec<Event> = Vec::with_capacity(n);
        let mut origins = Vec::with_capacity(if devices.is_some() { n } else { 0 });
        for item in batch.items {
            let mut event = self.parser.parse(item.frame.data, received_at);
            event.truncated = item.frame.truncated;
            let family = self.classifier.as_ref().and_then(|d| d.classify_as(&mut event));
            let (route, by_host) = orgs.assign_how(item.peer, event.host.as_deref());
            event.org_id = Some(route.id);
            event.org = Some(route.name.clone());
            event.reporter_ip = Some(item.peer);
            event.collector = Some(self.collector.clone());
            if let Some(devices) = devices.as_deref() {
                origins.push(devices.origin(&event, route.id, item.peer, by_host, family));
            }
            events.push(event);
        }
        // The inventory counts the batch as a whole (its lookups overlap).
        if let Some(devices) = devices.as_deref_mut() {
            let mut standings = Vec::with_capacity(n);
            devices.observe_batch(&events, &origins, received_ms, &mut standings);
            Self::apply_limit(devices, &mut events, &origins, &standings);
        }
        drop(devices);
        self.admit(events, received_at, out)
    }

    /// Applies the licence's device limit: events of devices beyond it
    /// (by `standings`, one per event) are counted, and dropped under
    /// policy enforce.
    fn apply_limit(devices: &mut DeviceTracker, events: &mut Vec<Event>, origins: &[Origin], standings: &[Standing]) {
        if !standings.contains(&Standing::Beyond) {
            return;
        }
        let drop = devices.enforcing();
        for (origin, _) in origins.iter().zip(standings).filter(|(_, s)| **s == Standing::Beyond) {
            devices.count_beyond(origin.org, drop);
        }
        if drop {
            let mut standing = standings.iter();
            events.retain(|_| standing.next() != Some(&Standing::Beyond));
        }
    }

    /// Admits `events` through the gate, one run of an org's events at a
    /// time (the gate takes the first `accepted` of each), appending those
    /// accepted to `out` in order, then a clock-skew system event for each
    /// source among them ahead of its receive time and not announced
    /// within the period.
    fn admit(&self, events: Vec<Event>, received_at: EventTime, out: &mut Vec<Event>) -> Admission {
        let mut total = Admission::default();
        let mut announce: Vec<(OrgId, Str, IpAddr, std::time::Duration)> = Vec::new();
        // Runs of one org's events: (org, length).
        let mut runs: Vec<(OrgId, usize)> = Vec::new();
        for org in events.iter().map(|e| e.org_id.unwrap_or(OrgId::SUPER_LOCAL)) {
            match runs.last_mut() {
                Some((o, n)) if *o == org => *n += 1,
                _ => runs.push((org, 1)),
            }
        }
        // Each run's length and how many of it the gate accepted.
        let mut taken: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
        let mut start = 0;
        for (org, len) in runs {
            let a = self.gate.admit(org, len as u64);
            total.accepted += a.accepted;
            total.dropped_org += a.dropped_org;
            total.dropped_node += a.dropped_node;
            total.rejected_disabled += a.rejected_disabled;
            let accepted = usize::try_from(a.accepted).unwrap_or(usize::MAX).min(len);
            for e in &events[start..start + accepted] {
                if let Some(ahead) = skew::ahead(e.time, received_at, &self.skew_config)
                    && let Some(source) = e.reporter_ip
                {
                    announce.push((org, e.org.clone().unwrap_or_default(), source, ahead));
                }
            }
            taken.push((len, accepted));
            start += len;
        }
        let mut events = events.into_iter();
        for (len, accepted) in taken {
            out.extend(events.by_ref().take(accepted));
            events.by_ref().take(len - accepted).for_each(drop);
        }
        if !announce.is_empty() {
            self.announce(announce, received_at, out);
        }
        total
    }

    /// Counts the skewed events and appends a system event for each source
    /// not announced within the period.
    fn announce(
        &self,
        skewed: Vec<(OrgId, Str, IpAddr, std::time::Duration)>,
        received_at: EventTime,
        out: &mut Vec<Event>,
    ) {
        let mut watch = self.skew.lock().unwrap_or_else(PoisonError::into_inner);
        for (org, name, source, ahead) in skewed {
            *watch.counts.entry(org).or_default() += 1;
            if !watch.announce(source, received_at, &self.skew_config) {
                continue;
            }
            let line = skew::line(&self.collector, source, ahead, received_at);
            let mut event = self.parser.parse(Bytes::from(line), received_at);
            event.event_type = Some(Str::from(CLOCK_SKEW_EVENT));
            event.org_id = Some(org);
            event.org = Some(name);
            event.reporter_ip = Some(source);
            event.src_ip = Some(source);
            event.collector = Some(self.collector.clone());
            out.push(event);
        }
    }
}

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
use parsers::{DeviceParsers, Event, EventIds, EventTime, OrgId, Parser, Str};

use crate::devices::{DeviceTracker, Standing};
use crate::gate::{Admission, Gate};
use crate::listen::RawBatch;
use crate::orgs::OrgTable;
use crate::skew::{self, SkewConfig, SkewWatch};

/// The `event_type` of clock-skew system events.
pub const CLOCK_SKEW_EVENT: &str = "vigil.clock_skew";

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
}

/// A skewed event of the run being admitted: its place in the run.
struct Skewed {
    at: usize,
    source: IpAddr,
    ahead: std::time::Duration,
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
        Intake {
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
    pub fn process(&self, batch: RawBatch, out: &mut Vec<Event>) -> Admission {
        let start = out.len();
        let total = self.process_unnumbered(batch, out);
        let fresh = &mut out[start..];
        if !fresh.is_empty() {
            let first = self.ids.lock().unwrap_or_else(PoisonError::into_inner).next_run(fresh.len() as u64);
            for (e, id) in fresh.iter_mut().zip(first..) {
                e.id = id;
            }
        }
        total
    }

    fn process_unnumbered(&self, batch: RawBatch, out: &mut Vec<Event>) -> Admission {
        let orgs = self.orgs.load();
        let mut total = Admission::default();
        let mut run: Vec<Event> = Vec::new();
        let mut run_org: Option<OrgId> = None;
        let mut skewed: Vec<Skewed> = Vec::new();
        let mut announce: Vec<(OrgId, Str, Skewed)> = Vec::new();
        let received_at = batch.received_at;
        let received_ms = received_at.unix_millis();
        let mut devices = self.devices();
        for item in batch.items {
            let mut event = self.parser.parse(item.frame.data, received_at);
            event.truncated = item.frame.truncated;
            let family = self.classifier.as_ref().and_then(|d| d.classify_as(&mut event));
            let (route, by_host) = orgs.assign_how(item.peer, event.host.as_deref());
            if let Some(devices) = devices.as_deref_mut()
                && devices.observe(route.id, item.peer, by_host, &event, family, received_ms) == Standing::Beyond
            {
                let drop = devices.enforcing();
                devices.count_beyond(route.id, drop);
                if drop {
                    continue;
                }
            }
            event.org_id = Some(route.id);
            event.org = Some(route.name.clone());
            event.reporter_ip = Some(item.peer);
            event.collector = Some(self.collector.clone());
            if run_org.is_some_and(|o| o != route.id) {
                self.admit(&mut run, run_org, &mut skewed, &mut announce, out, &mut total);
            }
            if let Some(ahead) = skew::ahead(event.time, received_at, &self.skew_config) {
                skewed.push(Skewed { at: run.len(), source: item.peer, ahead });
            }
            run_org = Some(route.id);
            run.push(event);
        }
        self.admit(&mut run, run_org, &mut skewed, &mut announce, out, &mut total);
        if !announce.is_empty() {
            self.announce(announce, received_at, out);
        }
        total
    }

    /// Admits a run of one org's events: the gate takes the first
    /// `accepted` of them. Skewed events among those are counted and
    /// noted for announcement.
    fn admit(
        &self,
        run: &mut Vec<Event>,
        org: Option<OrgId>,
        skewed: &mut Vec<Skewed>,
        announce: &mut Vec<(OrgId, Str, Skewed)>,
        out: &mut Vec<Event>,
        total: &mut Admission,
    ) {
        let Some(org) = org else { return };
        if run.is_empty() {
            return;
        }
        let a = self.gate.admit(org, run.len() as u64);
        total.accepted += a.accepted;
        total.dropped_org += a.dropped_org;
        total.dropped_node += a.dropped_node;
        total.rejected_disabled += a.rejected_disabled;
        let accepted = usize::try_from(a.accepted).unwrap_or(usize::MAX);
        if !skewed.is_empty() {
            let name = run.first().and_then(|e| e.org.clone()).unwrap_or_default();
            announce.extend(skewed.drain(..).filter(|s| s.at < accepted).map(|s| (org, name.clone(), s)));
        }
        out.extend(run.drain(..).take(accepted));
    }

    /// Counts the skewed events and appends a system event for each source
    /// not announced within the period.
    fn announce(&self, skewed: Vec<(OrgId, Str, Skewed)>, received_at: EventTime, out: &mut Vec<Event>) {
        let mut watch = self.skew.lock().unwrap_or_else(PoisonError::into_inner);
        for (org, name, s) in skewed {
            *watch.counts.entry(org).or_default() += 1;
            if !watch.announce(s.source, received_at, &self.skew_config) {
                continue;
            }
            let line = skew::line(&self.collector, s.source, s.ahead, received_at);
            let mut event = self.parser.parse(Bytes::from(line), received_at);
            event.event_type = Some(Str::from(CLOCK_SKEW_EVENT));
            event.org_id = Some(org);
            event.org = Some(name);
            event.reporter_ip = Some(s.source);
            event.src_ip = Some(s.source);
            event.collector = Some(self.collector.clone());
            out.push(event);
        }
    }
}

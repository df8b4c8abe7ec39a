//! From received messages to admitted events: parse each message, let the
//! device parsers classify it, assign its org, and admit it through the
//! EPS gate. Runs on plain threads (it is CPU work), one batch at a time.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parsers::{DeviceParsers, Event, OrgId, Parser, Str};

use crate::gate::{Admission, Gate};
use crate::listen::RawBatch;
use crate::orgs::OrgTable;

/// Turns raw batches into admitted events.
pub struct Intake {
    parser: Parser,
    devices: Option<DeviceParsers>,
    orgs: ArcSwap<OrgTable>,
    gate: Arc<Gate>,
    collector: Str,
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
        Intake { parser, devices, orgs: ArcSwap::from_pointee(orgs), gate, collector: collector.into() }
    }

    /// Replaces the org table (orgs created, changed or deleted).
    pub fn set_orgs(&self, orgs: OrgTable) {
        self.orgs.store(Arc::new(orgs));
    }

    /// The gate events pass through.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Parses, assigns and admits `batch`, appending the accepted events
    /// to `out` in arrival order; returns what the gate decided, summed.
    pub fn process(&self, batch: RawBatch, out: &mut Vec<Event>) -> Admission {
        let orgs = self.orgs.load();
        let mut total = Admission::default();
        let mut run: Vec<Event> = Vec::new();
        let mut run_org: Option<OrgId> = None;
        for item in batch.items {
            let mut event = self.parser.parse(item.frame.data, batch.received_at);
            event.truncated = item.frame.truncated;
            if let Some(d) = &self.devices {
                d.classify(&mut event);
            }
            let route = orgs.assign(item.peer, event.host.as_deref());
            event.org_id = Some(route.id);
            event.org = Some(route.name.clone());
            event.reporter_ip = Some(item.peer);
            event.collector = Some(self.collector.clone());
            if run_org.is_some_and(|o| o != route.id) {
                self.admit(&mut run, run_org, out, &mut total);
            }
            run_org = Some(route.id);
            run.push(event);
        }
        self.admit(&mut run, run_org, out, &mut total);
        total
    }

    /// Admits a run of one org's events: the gate takes the first
    /// `accepted` of them.
    fn admit(&self, run: &mut Vec<Event>, org: Option<OrgId>, out: &mut Vec<Event>, total: &mut Admission) {
        let Some(org) = org else { return };
        if run.is_empty() {
            return;
        }
        let a = self.gate.admit(org, run.len() as u64);
        total.accepted += a.accepted;
        total.dropped_org += a.dropped_org;
        total.dropped_node += a.dropped_node;
        total.rejected_disabled += a.rejected_disabled;
        out.extend(run.drain(..).take(usize::try_from(a.accepted).unwrap_or(usize::MAX)));
    }
}

//! The intake: parse, classify, assign the org, admit through the gate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use collector::gate::{Budget, Gate, NodeId, OrgBudget};
use collector::intake::Intake;
use collector::listen::{RawBatch, Received, Transport};
use collector::orgs::{OrgRoute, OrgTable};
use parsers::framing::Frame;
use parsers::{DeviceParsers, EventTime, OrgId, Parser};

fn batch(lines: &[(&str, &str)]) -> RawBatch {
    RawBatch {
        transport: Transport::Tcp,
        received_at: EventTime::from_unix(1_795_000_000, 0, 0),
        items: lines
            .iter()
            .map(|(peer, line)| Received {
                peer: peer.parse::<IpAddr>().unwrap(),
                frame: Frame { data: Bytes::copy_from_slice(line.as_bytes()), truncated: false },
            })
            .collect(),
    }
}

fn intake(budget: Budget) -> Intake {
    let orgs = OrgTable::new(
        vec![
            OrgRoute { id: OrgId(3), name: "Acme".into(), ranges: vec!["10.1.0.0/16".parse().unwrap()] },
            OrgRoute { id: OrgId(4), name: "Globex".into(), ranges: vec!["10.2.0.0/16".parse().unwrap()] },
        ],
        None,
    )
    .unwrap();
    let gate = Arc::new(Gate::new(NodeId::new("node-1"), budget));
    Intake::new(Parser::new(), Some(DeviceParsers::builtin().unwrap()), orgs, gate, "node-1")
}

const SSH: &str = "<38>Nov 22 10:15:42 web-03 sshd[2311]: Failed password for root from 203.0.113.45 port 51234 ssh2";

#[test]
fn events_are_parsed_classified_and_tagged_with_their_org() {
    let intake = intake(Budget::node_only(0, 1_000));
    let mut out = Vec::new();
    let a = intake.process(
        batch(&[("10.1.0.7", SSH), ("10.2.0.7", SSH), ("192.0.2.1", SSH), ("127.0.0.1", "garbage")]),
        &mut out,
    );
    assert_eq!(a.accepted, 4);
    let orgs: Vec<_> = out.iter().map(|e| e.org.as_deref().unwrap()).collect();
    assert_eq!(orgs, ["Acme", "Globex", "Super/Local", "Super/Local"]);
    assert_eq!(out[0].event_type.as_deref(), Some("ssh.auth.failure"));
    assert_eq!(out[0].reporter_ip, Some("10.1.0.7".parse().unwrap()));
    assert_eq!(out[0].collector.as_deref(), Some("node-1"));
    assert!(out[3].parse_error.is_some(), "unparseable lines are raw events, not lost");
}

#[test]
fn the_gate_drops_over_budget_and_disabled_orgs() {
    let budget = Budget {
        interval: 0,
        node_events: 1_000,
        orgs: vec![
            OrgBudget { org: OrgId(3), enabled: true, events: Some(2) },
            OrgBudget { org: OrgId(4), enabled: false, events: None },
        ],
    };
    let intake = intake(budget);
    let mut out = Vec::new();
    let lines: Vec<(&str, &str)> = (0..5)
        .map(|_| ("10.1.0.7", SSH))
        .chain((0..3).map(|_| ("10.2.0.7", SSH)))
        .chain([("192.0.2.1", SSH)])
        .collect();
    let a = intake.process(batch(&lines), &mut out);
    assert_eq!((a.accepted, a.dropped_org, a.rejected_disabled), (3, 3, 3));
    let orgs: Vec<_> = out.iter().map(|e| e.org.as_deref().unwrap()).collect();
    assert_eq!(orgs, ["Acme", "Acme", "Super/Local"]);
}

#[test]
fn future_stamped_events_are_counted_per_org_and_announced_once_per_source() {
    let intake = intake(Budget::node_only(0, 1_000));
    let mut out = Vec::new();
    // Received at 1_795_000_000 (2026-11-18T11:06:40Z); stamped 290 s later.
    let ahead = "<13>1 2026-11-18T11:11:30Z 10.1.0.9 app - - - x";
    let on_time = "<13>1 2026-11-18T11:06:40Z 10.1.0.9 app - - - y";
    intake.process(batch(&[("10.1.0.9", ahead), ("10.1.0.9", ahead), ("10.2.0.7", on_time)]), &mut out);
    assert_eq!(out.len(), 4, "three events and one system event");
    let system = &out[3];
    assert_eq!(system.event_type.as_deref(), Some("vigil.clock_skew"));
    assert_eq!(system.org.as_deref(), Some("Acme"));
    assert_eq!(system.reporter_ip, Some("10.1.0.9".parse().unwrap()));
    assert_eq!(system.app.as_deref(), Some("vigil"));
    let message = system.message.as_deref().unwrap();
    assert!(message.contains("10.1.0.9") && message.contains("290 s ahead"), "{message}");
    assert_eq!(intake.skewed_events().get(&OrgId(3)), Some(&2));
    assert_eq!(intake.skewed_events().get(&OrgId(4)), None);
    // The same source again within the period: counted, not announced.
    out.clear();
    intake.process(batch(&[("10.1.0.9", ahead)]), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(intake.skewed_events().get(&OrgId(3)), Some(&3));
}

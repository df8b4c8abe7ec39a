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

/// One kernel audit event as auditd writes it (six records, one serial),
/// with its command line hex-encoded.
const CHMOD_EVENT: [&str; 6] = [
    "type=SYSCALL msg=audit(1795000000.120:7311): arch=c000003e syscall=90 success=yes exit=0 a0=55d0 a1=1ed a2=0 a3=0 items=1 ppid=2211 pid=2305 auid=1000 uid=0 gid=0 euid=0 comm=\"chmod\" exe=\"/usr/bin/chmod\" key=\"perm_mod\"",
    "type=EXECVE msg=audit(1795000000.120:7311): argc=3 a0=\"chmod\" a1=\"+x\" a2=2F746D702F6D7920746F6F6C",
    "type=CWD msg=audit(1795000000.120:7311): cwd=\"/root\"",
    "type=PATH msg=audit(1795000000.120:7311): item=0 name=2F746D702F6D7920746F6F6C inode=4211 mode=0100644 ouid=0",
    "type=PROCTITLE msg=audit(1795000000.120:7311): proctitle=63686D6F64002B78002F746D702F6D7920746F6F6C",
    "type=EOE msg=audit(1795000000.120:7311): ",
];

/// Audit records of one event are joined into one `audit.event` as well
/// (each record stays an event); single-record events (the beats module's
/// real lines, from `../shared`) give nothing more; an event without its
/// EOE is completed when its window ends, by an empty batch.
#[test]
fn audit_records_are_joined_by_serial() {
    let intake = intake(Budget::node_only(0, 1_000));
    let mut out = Vec::new();
    let (first, rest) = CHMOD_EVENT.split_at(2);
    let lines: Vec<(&str, &str)> = first.iter().map(|l| ("10.1.0.9", *l)).collect();
    intake.process(batch(&lines), &mut out);
    assert_eq!(out.len(), 2, "records pass at once");
    // The rest in a later batch (a relay split them).
    let lines: Vec<(&str, &str)> = rest.iter().map(|l| ("10.1.0.9", *l)).collect();
    intake.process(batch(&lines), &mut out);
    assert_eq!(out.len(), 7, "six records and the joined event");
    let joined = &out[6];
    assert_eq!(joined.event_type.as_deref(), Some("audit.event"));
    assert_eq!(joined.org.as_deref(), Some("Acme"));
    for (k, v) in [
        ("serial", "7311"),
        ("types", "SYSCALL,EXECVE,CWD,PATH,PROCTITLE"),
        ("syscall.exe", "/usr/bin/chmod"),
        ("syscall.key", "perm_mod"),
        ("execve.a2", "/tmp/my tool"),
        ("path.name", "/tmp/my tool"),
        ("proctitle.proctitle", "chmod +x /tmp/my tool"),
    ] {
        assert_eq!(joined.ext.get(k), Some(v), "{k}");
    }
    assert_eq!(joined.outcome.as_deref(), Some("success"));
    let ids: std::collections::HashSet<u64> = out.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 7, "the joined event has an id of its own");

    // Real single-record events: nothing joined, nothing lost.
    let shared = std::env::var_os("VIGIL_TESTDATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"),
        std::path::PathBuf::from,
    );
    if !shared.is_dir() {
        eprintln!("skipped: ../shared not present (the beats audit lines)");
        return;
    }
    let text = std::fs::read_to_string(shared.join("logs/beats-modules/auditd/useradd.log")).unwrap();
    let real: Vec<(&str, &str)> = text.lines().map(|l| ("10.1.0.9", l)).collect();
    let mut more = Vec::new();
    intake.process(batch(&real), &mut more);
    intake.finish(&mut more);
    assert_eq!(more.len(), real.len());
    assert!(more.iter().all(|e| e.event_type.as_deref() != Some("audit.event")));

    // No EOE: completed by the first batch at or past the window's end.
    let mut out = Vec::new();
    let owned: Vec<String> = CHMOD_EVENT[..5].iter().map(|l| l.replace("7311", "7312")).collect();
    let no_eoe: Vec<(&str, &str)> = owned.iter().map(|l| ("10.2.0.9", l.as_str())).collect();
    intake.process(batch(&no_eoe), &mut out);
    assert_eq!(out.len(), 5);
    let mut tick = batch(&[]);
    tick.received_at = EventTime::from_unix(1_795_000_001, 0, 0);
    intake.process(tick, &mut out);
    assert_eq!(out.len(), 5, "the window has not ended");
    let mut tick = batch(&[]);
    tick.received_at = EventTime::from_unix(1_795_000_002, 0, 0);
    intake.process(tick, &mut out);
    assert_eq!(out.len(), 6);
    assert_eq!((out[5].org.as_deref(), out[5].ext.get("serial")), (Some("Globex"), Some("7312")));
    assert_eq!(intake.audit_join().map(|(pending, s)| (pending, s.joined)), Some((0, 2)));
}

//! The built-in pack on real log lines, parsed by the real parsers: the
//! loghub OpenSSH sample and the firewall samples from `../shared/testdata`
//! (read at test time; their licences do not allow copying them here), and
//! streams written in the exact line formats of sshd, usermod, netfilter,
//! Cisco ASA and CEF, including late and out-of-order delivery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{finals, org_id};
use parsers::{DeviceParsers, Event, EventTime, InputFormat, ParserConfig};
use rules::{Engine, EngineConfig, Incident};

fn shared(path: &str) -> Option<String> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/logs").join(path);
    // Test data of known, small size.
    #[allow(clippy::disallowed_methods)]
    let bytes = std::fs::read(&full);
    match bytes {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).replace('\r', "")),
        Err(_) => {
            eprintln!("skipped: ../shared not present ({})", full.display());
            None
        }
    }
}

/// Parses lines like a collector (UTC, year 2024) into events of `org`.
fn parse(lines: &[String], org: &str) -> Vec<Event> {
    let parser = ParserConfig { format: InputFormat::Auto, timezone: Some("UTC".into()), year: Some(2024) }
        .validate_and_build()
        .unwrap();
    let devices = DeviceParsers::load(None).unwrap();
    let now = EventTime::from_unix(1_735_000_000, 0, 0);
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut event = parser.parse(Bytes::from(line.clone()), now);
            devices.classify(&mut event);
            event.org = Some(org.into());
            event.org_id = Some(org_id(org));
            event
        })
        .collect()
}

fn run_pack(events: &[Event], lateness_secs: u64) -> (Vec<Incident>, rules::Stats) {
    // Replayed files: every line has the same made-up receive time.
    let config =
        EngineConfig { lateness: Duration::from_secs(lateness_secs), ..EngineConfig::default() }.trusting_stamps();
    let mut engine = Engine::new(Arc::new(rules::builtin()), config);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        engine.process(i as u64 + 1, e, &mut out);
    }
    engine.flush(&mut out);
    (finals(out), engine.stats())
}

fn by_rule(incidents: &[Incident], rule: &str) -> Vec<(String, u64)> {
    incidents.iter().filter(|i| i.rule == rule).map(|i| (i.key[0].1.clone(), i.count)).collect()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

#[test]
fn loghub_openssh_sample() {
    let Some(text) = shared("loghub/OpenSSH_2k.log") else { return };
    let (incidents, stats) = run_pack(&parse(&lines(&text), "acme"), 60);
    assert_eq!(stats.late_events, 0);
    // Cross-checked by replaying the "Failed ..." lines (weighted by
    // "message repeated N times") through a plain sliding count.
    assert_eq!(
        by_rule(&incidents, "ssh-brute-force"),
        vec![
            ("5.36.59.76".into(), 1),
            ("112.95.230.3".into(), 5),
            ("123.235.32.19".into(), 1),
            ("5.188.10.180".into(), 3),
            ("106.5.5.195".into(), 1),
            ("185.190.58.151".into(), 2),
            ("103.99.0.122".into(), 6),
            ("187.141.143.180".into(), 16),
            ("60.2.12.12".into(), 1),
            ("119.4.203.64".into(), 1),
            ("183.62.140.253".into(), 57),
            ("103.99.0.122".into(), 3),
        ]
    );
    assert_eq!(
        by_rule(&incidents, "ssh-password-spray"),
        vec![
            ("103.99.0.122".into(), 2),
            ("187.141.143.180".into(), 3),
            ("183.62.140.253".into(), 1),
            ("103.99.0.122".into(), 1),
        ]
    );
    // The one accepted login (fztu from 119.137.62.142) is not from an attacker.
    assert_eq!(incidents.len(), 16);
    assert!(incidents.iter().all(|i| i.org == "acme"));
    let first = &incidents[0];
    assert_eq!(first.title, "SSH brute force from 5.36.59.76 against acme");
    assert_eq!(first.first_seen.to_rfc3339(), "2024-12-10T07:13:56Z");
}

#[test]
fn loghub_openssh_delivered_out_of_order_or_late() {
    let Some(text) = shared("loghub/OpenSSH_2k.log") else { return };
    let events = parse(&lines(&text), "acme");
    let (expected, _) = run_pack(&events, 60);
    // Each line delayed by a pseudo-random 0–50 s: out of order, within the
    // 60 s of lateness.
    let mut delayed: Vec<(i128, usize, &Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.time.unix_nanos() + (i as i128 * 7919 % 50) * 1_000_000_000, i, e))
        .collect();
    delayed.sort_by_key(|(arrival, i, _)| (*arrival, *i));
    let moved = delayed.iter().enumerate().filter(|(pos, (_, i, _))| pos != i).count();
    assert!(moved > 1000, "{moved}");
    let shuffled: Vec<Event> = delayed.into_iter().map(|(_, _, e)| e.clone()).collect();
    let (got, stats) = run_pack(&shuffled, 60);
    assert_eq!(stats.late_events, 0);
    let strip = |v: &[Incident]| {
        v.iter().map(|i| (i.rule.clone(), i.key.clone(), i.count, i.first_seen, i.last_seen)).collect::<Vec<_>>()
    };
    assert_eq!(strip(&expected), strip(&got));
    // With no lateness allowed the same delivery loses events, and says so.
    let (_, stats) = run_pack(&shuffled, 0);
    assert!(stats.late_events > 500, "{}", stats.late_events);
}

fn sshd(time: &str, message: &str) -> String {
    format!("Nov 22 {time} bastion sshd[4242]: {message}")
}

#[test]
fn brute_force_followed_by_a_login_from_the_same_address() {
    let mut log: Vec<String> = (0..6)
        .map(|i| {
            sshd(
                &format!("10:00:{:02}", i * 3),
                &format!("Failed password for root from 203.0.113.5 port {} ssh2", 40000 + i),
            )
        })
        .collect();
    // The companion lines of each attempt do not count again.
    log.push(sshd("10:00:16", "Invalid user admin from 203.0.113.5 port 40010"));
    log.push(sshd(
        "10:00:17",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5",
    ));
    log.push(sshd("10:03:00", "Accepted password for deploy from 198.51.100.1 port 50000 ssh2"));
    log.push(sshd("10:04:00", "Accepted password for root from 203.0.113.5 port 50001 ssh2"));
    let (incidents, _) = run_pack(&parse(&log, "acme"), 10);
    let rules: Vec<&str> = incidents.iter().map(|i| i.rule.as_str()).collect();
    assert_eq!(rules, vec!["ssh-brute-force", "ssh-brute-force-success", "ssh-login-from-brute-forcer"]);
    let success = &incidents[1];
    assert_eq!(success.severity, rules::Severity::Critical);
    assert_eq!(success.title, "Successful SSH login as root on bastion from brute-forcing 203.0.113.5");
    assert_eq!(success.event_ids, vec![1, 2, 3, 4, 5, 10]);

    // The login six minutes after the attack is past the 300 s window, but
    // the address is still on the 24 h watch list.
    let mut late_login = log.clone();
    late_login.truncate(8);
    late_login.push(sshd("10:06:30", "Accepted password for root from 203.0.113.5 port 50001 ssh2"));
    let (incidents, _) = run_pack(&parse(&late_login, "acme"), 10);
    let rules: Vec<&str> = incidents.iter().map(|i| i.rule.as_str()).collect();
    assert_eq!(rules, vec!["ssh-brute-force", "ssh-login-from-brute-forcer"]);
}

#[test]
fn password_spray_needs_ten_accounts() {
    let log = |users: usize| -> Vec<String> {
        (0..users)
            .map(|i| {
                sshd(
                    &format!("10:0{}:{:02}", i / 6, (i % 6) * 10),
                    &format!("Failed password for invalid user user{i} from 192.0.2.77 port 4000{i} ssh2"),
                )
            })
            .collect()
    };
    let (incidents, _) = run_pack(&parse(&log(10), "acme"), 10);
    let spray: Vec<&Incident> = incidents.iter().filter(|i| i.rule == "ssh-password-spray").collect();
    assert_eq!(spray.len(), 1);
    assert_eq!(spray[0].title, "SSH password spray from 192.0.2.77: 10 accounts tried");
    let (incidents, _) = run_pack(&parse(&log(9), "acme"), 10);
    assert!(incidents.iter().all(|i| i.rule != "ssh-password-spray"));
}

fn ufw_block(time: &str, src: &str, port: u16) -> String {
    format!(
        "Mar  3 {time} web1 kernel: [1234567.890123] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} DST=192.0.2.10 LEN=44 TOS=0x00 PREC=0x00 TTL=243 ID=54321 PROTO=TCP SPT=51234 DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0"
    )
}

#[test]
fn port_scan_on_netfilter_lines() {
    let scan: Vec<String> =
        (0..25).map(|i| ufw_block(&format!("10:12:{:02}", i * 2), "203.0.113.7", 1000 + i)).collect();
    let (incidents, _) = run_pack(&parse(&scan, "acme"), 10);
    assert_eq!(by_rule(&incidents, "port-scan"), vec![("203.0.113.7".into(), 1)]);
    assert_eq!(incidents[0].title, "Port scan from 203.0.113.7: 20 ports in 60s");
    // The same 25 probes over 5 minutes are not a scan by this rule, nor is
    // one port probed 25 times.
    let slow: Vec<String> = (0..25)
        .map(|i| ufw_block(&format!("10:{:02}:{:02}", 12 + i * 12 / 60, i * 12 % 60), "203.0.113.7", 1000 + i))
        .collect();
    assert!(run_pack(&parse(&slow, "acme"), 10).0.is_empty());
    let same: Vec<String> = (0..25).map(|i| ufw_block(&format!("10:12:{:02}", i * 2), "203.0.113.7", 22)).collect();
    assert!(run_pack(&parse(&same, "acme"), 10).0.is_empty());
}

#[test]
fn real_firewall_and_system_logs_raise_nothing() {
    for path in ["firewall/beats-cisco-asa_sample.log", "firewall/beats-fortinet-firewall.log", "loghub/Linux_2k.log"] {
        let Some(text) = shared(path) else { return };
        let (incidents, _) = run_pack(&parse(&lines(&text), "acme"), 3600);
        assert!(incidents.is_empty(), "{path}: {incidents:?}");
    }
    let fixture = include_str!("../../parsers/tests/fixtures/logs/beats-system-auth_test.log");
    assert!(run_pack(&parse(&lines(fixture), "acme"), 3600).0.is_empty());
}

#[test]
fn firewall_denies_and_ssh_failures_from_one_address() {
    let deny = |sec: usize| {
        format!(
            "Apr 15 2024 09:36:{sec:02}: %ASA-4-106023: Deny tcp src outside:198.51.100.7/{} dst inside:10.0.0.132/22 by access-group \"acl_out\" [0x71761f18, 0x0]",
            50000 + sec
        )
    };
    let fail = |sec: usize| {
        format!(
            "Apr 15 09:38:{sec:02} bastion sshd[77]: Failed password for root from 198.51.100.7 port {} ssh2",
            60000 + sec
        )
    };
    let mut log: Vec<String> = (0..10).map(deny).collect();
    log.extend((0..3).map(fail));
    let (incidents, _) = run_pack(&parse(&log, "acme"), 10);
    assert_eq!(by_rule(&incidents, "blocked-source-ssh-failures"), vec![("198.51.100.7".into(), 1)]);
    // Nine denies are not enough.
    let mut log: Vec<String> = (0..9).map(deny).collect();
    log.extend((0..3).map(fail));
    assert!(run_pack(&parse(&log, "acme"), 10).0.is_empty());
}

#[test]
fn privileged_group_membership_without_approval() {
    let add = "Nov 22 10:00:00 web-01 usermod[31337]: add 'mallory' to group 'sudo'";
    let unprivileged = "Nov 22 10:00:05 web-01 usermod[31338]: add 'mallory' to group 'video'";
    // Approval from a change system: CEF with suser and act (rt = 10:20 UTC).
    let approval =
        "CEF:0|Acme|ChangeDesk|3.2|CHG-approve|Change approved|3|suser=mallory act=approved rt=1732270800000";
    let other = "CEF:0|Acme|ChangeDesk|3.2|CHG-approve|Change approved|3|suser=trent act=approved rt=1732270800000";
    let tick = "Nov 22 12:00:00 web-01 cron[1]: (root) CMD (true)";
    let run = |log: &[&str]| {
        let lines: Vec<String> = log.iter().map(|s| (*s).to_owned()).collect();
        run_pack(&parse(&lines, "acme"), 10).0
    };
    let incidents = run(&[add, unprivileged, other, tick]);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].rule, "privileged-group-add-unapproved");
    assert_eq!(incidents[0].title, "mallory added to privileged group sudo on web-01 without approval");
    assert_eq!(incidents[0].first_seen.to_rfc3339(), "2024-11-22T11:00:00Z");
    assert!(run(&[add, approval, tick]).is_empty());
}

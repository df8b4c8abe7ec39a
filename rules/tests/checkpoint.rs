//! Checkpoint and restore: an engine restored from a checkpoint taken at
//! any point of a stream continues exactly as the original (issue 12, rule
//! state moves with the partition), and restore refuses anything else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use parsers::{Event, EventTime};
use proptest::prelude::*;
use rules::{CheckpointError, Compiler, Engine, EngineConfig, Incident, RuleSet, Stats};

/// Rules beside the built-in pack: every window kind and aggregate, every
/// condition, suppression on and off, nesting and every scope.
const EXTRA: &str = r#"
- id: big-transfer
  patterns:
    t:
      filter: {event_type: net.flow}
      group_by: [src_ip]
      window: 2m
      having: [sum(ext.bytes) > 4000, avg(ext.bytes) >= 300, max(ext.bytes) >= 900, min(ext.bytes) < 200]
  title: "{src_ip} sent {sum(ext.bytes)} bytes (avg {avg(ext.bytes)}, max {max(ext.bytes)}, min {min(ext.bytes)})"
  suppress: 3m
- id: users-and-volume
  patterns:
    f:
      filter: {event_type: ssh.auth.failure}
      group_by: [src_ip]
      weight: ext.repeat
      window: 90s
      having: [count_distinct(user) >= 3, count >= 6]
  title: "{src_ip}: {f.count_distinct(user)} users, {f.count} tries"
  suppress: 0
- id: wide-port-sweep
  patterns:
    p:
      filter: {event_type: net.flow}
      group_by: [src_ip]
      window: 10m
      having: count_distinct(dst_port) >= 70
- id: any-two-users
  patterns:
    a: {filter: {event_type: ssh.auth.failure}, group_by: [user], window: 2m, having: count >= 2}
    b: {filter: {event_type: ssh.auth.success}}
  condition: a and b
  within: 1m
  join: [user]
- id: admin-or-rdp
  patterns:
    a: {filter: {event_type: ssh.auth.failure, user: admin}}
    b: {filter: {event_type: network.connection.denied, dst_port: 3389}}
  condition: a or b
  suppress: 20s
- id: success-without-vpn
  patterns:
    ok: {filter: {event_type: ssh.auth.success}}
    vpn: {filter: {event_type: vpn.connected}}
  condition: ok and not vpn
  within: 1m
  join: [user]
  suppress: 0
- id: deny-fail-login
  patterns:
    scan: {filter: {event_type: network.connection.denied}, group_by: [src_ip], window: 1m, having: count >= 2}
    fail: {filter: {event_type: ssh.auth.failure}}
    ok: {filter: {event_type: ssh.auth.success}}
  condition: scan followed by fail followed by ok
  within: 5m
  join: [src_ip]
  title: "{src_ip}: denied, failed, then in as {ok.user}"
- id: vpn-without-mfa
  patterns:
    vpn: {filter: {event_type: vpn.connected}}
    mfa: {filter: {event_type: mfa.ok}}
  condition: vpn not followed by mfa
  within: 30s
  join: [user]
  title: "{user} on VPN from {vpn.src_ip} without MFA"
  suppress: 2m
- id: repeat-brute-force
  patterns:
    x: {filter: {event_type: incident.ssh-brute-force}, group_by: [src_ip], window: 10m, having: count >= 2}
  suppress: 0
- id: acme-logins
  scope: {org: acme}
  patterns:
    l: {filter: {event_type: ssh.auth.success}, group_by: [user], window: 5m, having: count >= 2}
- id: cross-org-spray
  scope: cross-org
  patterns:
    f: {filter: {event_type: ssh.auth.failure}, group_by: [user], window: 2m, having: count_distinct(src_ip) >= 4}
  suppress: 1m
- id: cross-org-brute-force
  scope: cross-org
  patterns:
    i: {filter: {event_type: incident.ssh-brute-force}, group_by: [src_ip], window: 30m, having: count >= 2}
- id: cross-org-nested
  scope: cross-org
  patterns:
    c: {filter: {event_type: incident.cross-org-brute-force}}
    v: {filter: {event_type: vpn.connected}}
  condition: c followed by v
  within: 10m
  join: [src_ip]
"#;

fn pack() -> Arc<RuleSet> {
    Arc::new(rules::builtin())
}

fn full_set() -> Arc<RuleSet> {
    set_with(EXTRA)
}

/// The built-in pack and `extra`.
fn set_with(extra: &str) -> Arc<RuleSet> {
    let mut compiler = Compiler::new();
    for (name, text) in rules::PACK {
        compiler.add_source(name, text);
    }
    compiler.add_source("extra.yaml", extra);
    match compiler.finish() {
        Ok((set, _)) => Arc::new(set),
        Err(diags) => panic!("{}", diags.iter().map(|d| format!("{d}\n")).collect::<String>()),
    }
}

/// One step of a stream: an event (with its id) or a clock reading.
#[derive(Clone, Debug)]
enum Step {
    Event(u64, Box<Event>),
    Advance(EventTime),
}

/// A cheap deterministic sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` events over three orgs and a few sources, most in time order, many
/// up to 8 s out of order (reorder heap), a few late (behind the
/// watermark) or stamped ahead of their receive time, with clock readings
/// in between and quiet gaps that let NOT FOLLOWED BY windows close.
fn stream(n: usize, seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut events: Vec<(f64, u64, Event)> = Vec::new();
    let mut time = 0.0;
    for i in 0..n {
        time += 0.3 + rng.next(5) as f64 * 0.1;
        if rng.next(300) == 0 {
            time += 90.0;
        }
        let org = ["acme", "globex", "initech"][rng.next(3) as usize];
        if rng.next(150) == 0 {
            // A port scan: 25 ports from one address in 10 s.
            for p in 0..25 {
                let port = (1000 + p).to_string();
                let fields = [
                    ("org", org),
                    ("event_type", "network.connection.denied"),
                    ("src_ip", "192.0.2.66"),
                    ("dst_port", port.as_str()),
                ];
                let t = time + f64::from(p) * 0.4;
                events.push((t + 0.5, 100_000 + i as u64 * 100 + p as u64, ev(t, &fields)));
            }
        }
        let ip = format!("203.0.113.{}", rng.next(6));
        let users =
            ["root", "admin", "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"];
        let user = users[rng.next(12) as usize];
        let port = (20 + rng.next(90)).to_string();
        let bytes = (rng.next(12) * 100).to_string();
        let mut fields: Vec<(&str, &str)> = vec![("org", org)];
        match rng.next(20) {
            0..=6 => fields.extend([("event_type", "ssh.auth.failure"), ("src_ip", &ip), ("user", user)]),
            7 => fields.extend([
                ("event_type", "ssh.auth.failure"),
                ("src_ip", &ip),
                ("user", user),
                ("ext.repeat", "3"),
            ]),
            8 | 9 => {
                fields.extend([("event_type", "ssh.auth.success"), ("src_ip", &ip), ("user", user), ("host", "h1")])
            }
            10 | 11 => {
                fields.extend([("event_type", "network.connection.denied"), ("src_ip", &ip), ("dst_port", &port)])
            }
            12 => fields.extend([("event_type", "network.connection.denied"), ("src_ip", &ip), ("dst_port", "3389")]),
            13 | 14 => {
                let ip = ["203.0.113.1", "203.0.113.2"][rng.next(2) as usize];
                fields.extend([("event_type", "net.flow"), ("src_ip", ip), ("dst_port", &port), ("ext.bytes", &bytes)])
            }
            15 => fields.extend([("event_type", "vpn.connected"), ("src_ip", &ip), ("user", user)]),
            16 => fields.extend([("event_type", "mfa.ok"), ("user", user)]),
            17 => fields.extend([
                ("event_type", "account.group.member_added"),
                ("user", user),
                ("ext.group", "sudo"),
                ("host", "h2"),
            ]),
            18 => fields.extend([("action", "approved"), ("user", user)]),
            _ => fields.extend([("event_type", "ssh.auth.failure"), ("src_ip", "198.51.100.7"), ("user", user)]),
        }
        let mut event = ev(time, &fields);
        // Receive time: usually a little after the stamp.
        let mut received = time + rng.next(80) as f64 * 0.1;
        // When the engine takes it: at once, or held up after it was
        // received, so that it arrives behind the watermark (late).
        let mut taken = received;
        if rng.next(50) == 0 {
            taken += 30.0;
        }
        if rng.next(97) == 0 {
            received -= 40.0; // stamped ahead of its receive time
            taken = received;
        }
        event.received_at = at(received);
        events.push((taken, i as u64 + 1, event));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut steps = Vec::new();
    let mut last = f64::MIN;
    for (received, id, event) in events {
        if received - last > 20.0 && last > f64::MIN {
            steps.push(Step::Advance(at(last + 15.0)));
        }
        last = last.max(received);
        steps.push(Step::Event(id, Box::new(event)));
        if rng.next(25) == 0 {
            steps.push(Step::Advance(at(received)));
        }
    }
    steps
}

fn at(secs: f64) -> EventTime {
    let whole = secs.floor();
    EventTime::from_unix(T0 + whole as i64, ((secs - whole) * 1e9).round() as u32, 0)
}

fn step(engine: &mut Engine, step: &Step, out: &mut Vec<Incident>) {
    match step {
        Step::Event(id, event) => engine.process(*id, event, out),
        Step::Advance(now) => engine.advance(*now, out),
    }
}

/// Stats without the memory estimate, which counts hash-table and vector
/// capacities (a restored engine's are tighter); every counter and size in
/// keys, records and entries is compared.
fn behaviour(mut stats: Stats) -> Stats {
    stats.state_bytes = 0;
    for org in &mut stats.orgs {
        org.4 = 0;
    }
    stats
}

/// What a split point had in flight, to show the test covers it.
#[derive(Default, Debug)]
struct Coverage {
    buffered: bool,
    windows: bool,
    joins: bool,
    timers: bool,
    open: bool,
    watch: bool,
}

/// Runs `steps` once for reference; then at every `every`-th step
/// checkpoints the running engine, restores a fresh one from the bytes,
/// and runs both to the end (and flush): the incidents each reports after
/// the split, and their stats, must be identical.
fn check_splits(rules: &Arc<RuleSet>, config: &EngineConfig, steps: &[Step], every: usize) -> (Vec<Incident>, Stats) {
    let mut reference = Engine::new(Arc::clone(rules), config.clone());
    // Updates reported by each step (the last entry: by the flush).
    let mut per_step: Vec<Vec<Incident>> = Vec::new();
    for s in steps {
        let mut out = Vec::new();
        step(&mut reference, s, &mut out);
        per_step.push(out);
    }
    let mut out = Vec::new();
    reference.flush(&mut out);
    per_step.push(out);
    let all: Vec<Incident> = per_step.iter().flatten().cloned().collect();
    let final_stats = reference.stats();

    let mut original = Engine::new(Arc::clone(rules), config.clone());
    let mut coverage = Coverage::default();
    let mut bytes = Vec::new();
    for (k, s) in steps.iter().enumerate() {
        if k % every == every / 2 {
            bytes.clear();
            original.checkpoint(&mut bytes);
            let mut restored = Engine::restore(Arc::clone(rules), config.clone(), &bytes)
                .unwrap_or_else(|e| panic!("restore at step {k}: {e}"));
            assert_eq!(behaviour(restored.stats()), behaviour(original.stats()), "stats right after restore at {k}");
            let mut again = Vec::new();
            restored.checkpoint(&mut again);
            assert!(again == bytes, "a restored engine checkpoints to the same bytes (step {k})");
            let st = original.stats();
            coverage.buffered |= st.buffered > 0;
            coverage.windows |= st.window_keys > 0;
            coverage.joins |= st.join_keys > 0;
            coverage.timers |= st.timers > 0;
            coverage.open |= st.open_incidents > 0;
            coverage.watch |= st.watch_entries > 0;
            // Continue the restored engine to the end; the original goes on
            // in the outer loop, and its updates are `per_step`.
            for (j, rest) in steps[k..].iter().enumerate() {
                let mut got = Vec::new();
                step(&mut restored, rest, &mut got);
                assert_eq!(got, per_step[k + j], "incidents after the split at {k}, step {}", k + j);
            }
            let mut got = Vec::new();
            restored.flush(&mut got);
            assert_eq!(&got, per_step.last().unwrap(), "incidents of the final flush, split at {k}");
            assert_eq!(behaviour(restored.stats()), behaviour(final_stats.clone()), "final stats, split at {k}");
        }
        let mut out = Vec::new();
        step(&mut original, s, &mut out);
        assert_eq!(out, per_step[k], "the original is deterministic");
    }
    assert!(
        coverage.buffered && coverage.windows && coverage.joins && coverage.timers && coverage.open && coverage.watch,
        "some split points must hold each kind of state: {coverage:?}"
    );
    (all, final_stats)
}

fn rules_hit(incidents: &[Incident]) -> BTreeSet<String> {
    incidents.iter().map(|i| i.rule.to_string()).collect()
}

#[test]
fn the_builtin_pack_continues_identically_after_a_restore() {
    let rules = pack();
    let steps = stream(1200, 0x9e37_79b9_7f4a_7c15);
    let (incidents, stats) = check_splits(&rules, &config(10), &steps, 29);
    let hit = rules_hit(&incidents);
    for rule in [
        "ssh-brute-force",
        "ssh-password-spray",
        "port-scan",
        "privileged-group-add-unapproved",
        "ssh-brute-force-success",
    ] {
        assert!(hit.contains(rule), "{rule} never fired: {hit:?}");
    }
    assert!(stats.late_events > 0 && stats.future_events > 0 && stats.behind_events > 0, "{stats:?}");
}

#[test]
fn every_window_condition_and_scope_continues_identically_after_a_restore() {
    let rules = full_set();
    let steps = stream(1500, 0x2545_f491_4f6c_dd1d);
    let (incidents, stats) = check_splits(&rules, &config(10), &steps, 31);
    let hit = rules_hit(&incidents);
    let all: BTreeSet<String> = rules.rules().into_iter().map(|r| r.id).collect();
    let silent: Vec<&String> = all.difference(&hit).collect();
    // The 10-minute, 70-port sweep is there for its state (a general window
    // with a large distinct count), not to fire.
    assert_eq!(silent, vec!["wide-port-sweep"], "rules that never fired");
    assert!(incidents.iter().any(|i| i.count > 1), "suppression merged hits");
    assert!(incidents.iter().any(|i| i.org.as_str() == "Super/Local"), "cross-org incidents");
    assert!(stats.depth_limited == 0 && stats.hits > stats.incidents, "{stats:?}");
}

#[test]
fn limits_bookkeeping_continues_identically_after_a_restore() {
    // Small ceilings: early releases from the buffer ceiling, key evictions
    // (sampled by a generator whose state moves with the checkpoint), capped
    // windows and pending starts.
    let rules = full_set();
    let config = EngineConfig {
        max_buffer_bytes: 150_000,
        max_window_keys: 120,
        max_window_events: 2,
        max_pending: 1,
        max_event_ids: 3,
        max_depth: 1,
        sweep_every: std::time::Duration::from_secs(7),
        ..config(10)
    };
    let steps = stream(1200, 0x1234_5678_9abc_def1);
    let (_, stats) = check_splits(&rules, &config, &steps, 23);
    assert!(stats.early_releases > 0, "{stats:?}");
    assert!(stats.evicted_keys > 0, "{stats:?}");
    assert!(stats.window_overflows > 0, "{stats:?}");
    assert!(stats.pending_overflows > 0, "{stats:?}");
    assert!(stats.depth_limited > 0, "{stats:?}");
}

#[test]
fn a_fresh_engine_and_a_flushed_one_round_trip() {
    let rules = full_set();
    let mut engine = Engine::new(Arc::clone(&rules), config(10));
    let mut bytes = Vec::new();
    engine.checkpoint(&mut bytes);
    let restored = Engine::restore(Arc::clone(&rules), config(10), &bytes).unwrap();
    assert_eq!(restored.stats(), engine.stats());
    let mut out = Vec::new();
    for s in stream(300, 7) {
        step(&mut engine, &s, &mut out);
    }
    engine.flush(&mut out);
    // After a flush every event is late; the restored engine agrees.
    let mut bytes = b"prefix is kept".to_vec();
    engine.checkpoint(&mut bytes);
    assert!(bytes.starts_with(b"prefix is kept"), "checkpoint appends");
    let mut restored = Engine::restore(Arc::clone(&rules), config(10), &bytes[14..]).unwrap();
    let late = failures("acme", "10.0.0.1", 0.0, 1.0, 5);
    for (i, e) in late.iter().enumerate() {
        restored.process(9000 + i as u64, e, &mut out);
        engine.process(9000 + i as u64, e, &mut out);
    }
    assert_eq!(behaviour(restored.stats()), behaviour(engine.stats()));
}

fn loaded_checkpoint() -> (Arc<RuleSet>, Vec<u8>) {
    let rules = full_set();
    let mut engine = Engine::new(Arc::clone(&rules), config(10));
    let mut out = Vec::new();
    for s in stream(400, 99) {
        step(&mut engine, &s, &mut out);
    }
    assert!(engine.stats().buffered > 0 && engine.stats().window_keys > 0);
    let mut bytes = Vec::new();
    engine.checkpoint(&mut bytes);
    (rules, bytes)
}

#[test]
fn restore_refuses_another_rule_set() {
    let (rules, bytes) = loaded_checkpoint();
    let other = pack();
    match Engine::restore(Arc::clone(&other), config(10), &bytes) {
        Err(CheckpointError::RuleSet { expected, found }) => {
            assert_eq!((expected, found), (other.fingerprint(), rules.fingerprint()));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // One threshold changed is another rule set too.
    let changed = set_with(&EXTRA.replace("count >= 6", "count >= 7"));
    assert!(matches!(Engine::restore(changed, config(10), &bytes), Err(CheckpointError::RuleSet { .. })));
    // The same rules compiled again (another process would) are accepted.
    assert!(Engine::restore(full_set(), config(10), &bytes).is_ok());
    let message = Engine::restore(other, config(10), &bytes).err().unwrap().to_string();
    assert!(message.contains("different rule set"), "{message}");
}

#[test]
fn restore_refuses_other_versions_and_damaged_bytes() {
    let (rules, bytes) = loaded_checkpoint();
    let restore = |b: &[u8]| Engine::restore(Arc::clone(&rules), config(10), b).map(|_| ());
    assert_eq!(restore(&[]), Err(CheckpointError::Truncated { needed: 34, got: 0 }));
    assert_eq!(restore(b"{\"json\": true}"), Err(CheckpointError::NotACheckpoint));
    let mut v1 = bytes.clone();
    v1[8] = 1;
    assert_eq!(restore(&v1), Err(CheckpointError::Version { found: 1, supported: 2 }));
    assert!(restore(&v1).unwrap_err().to_string().contains("version 1"));
    // Every truncation is refused.
    for cut in 0..bytes.len() {
        let got = restore(&bytes[..cut]);
        assert!(matches!(got, Err(CheckpointError::Truncated { .. })), "cut at {cut}: {got:?}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(restore(&longer), Err(CheckpointError::Corrupt { .. })));
    // Every single-bit flip of the state is caught.
    for at in (34..bytes.len()).step_by(7) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << (at % 8);
        assert_eq!(restore(&flipped), Err(CheckpointError::Checksum), "flip at {at}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic {
            // Past the magic, so the header checks are reached.
            let mut with = b"VIGILCKP\x02\x00".to_vec();
            with.extend_from_slice(&bytes);
            bytes = with;
        }
        let rules = pack();
        prop_assert!(Engine::restore(rules, config(10), &bytes).is_err());
    }

    #[test]
    fn damaged_checkpoints_are_refused(cut in 0usize..100_000, at in 0usize..100_000, xor in 1u8..=255) {
        let (rules, bytes) = cached_checkpoint();
        let restore = |b: &[u8]| Engine::restore(Arc::clone(&rules), config(10), b);
        let cut = cut % bytes.len();
        prop_assert!(restore(&bytes[..cut]).is_err());
        let mut damaged = bytes.to_vec();
        damaged[at % bytes.len()] ^= xor;
        prop_assert!(restore(&damaged).is_err());
    }
}

fn cached_checkpoint() -> (Arc<RuleSet>, Arc<Vec<u8>>) {
    static CACHE: std::sync::OnceLock<(Arc<RuleSet>, Arc<Vec<u8>>)> = std::sync::OnceLock::new();
    let (rules, bytes) = CACHE.get_or_init(|| {
        let (rules, bytes) = loaded_checkpoint();
        (rules, Arc::new(bytes))
    });
    (Arc::clone(rules), Arc::clone(bytes))
}

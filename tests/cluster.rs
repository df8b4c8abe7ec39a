//! The cluster end to end: real nats-server, `vigil supervisor --nats`, two
//! collectors and two workers on loopback (issue 12's properties).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{
    CLUSTER_CONFIG, Nats, collector, config_file, metric, metric_lines, send, stored_counts, stored_ids, supervisor,
    wait, wait_explained, worker,
};
use common::run::ssh_attack;

const TOKEN: &str = "cluster-test-admin-token-0123456789";

/// Incidents newer than `after` (an incident id) in a listing that name
/// `attacker`: a shared PostgreSQL keeps earlier runs' incidents, whose
/// attacker may be the same.
fn mine(listing: &serde_json::Value, attacker: &str, after: u64) -> usize {
    listing["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| i["id"].as_u64().is_some_and(|id| id > after) && i.to_string().contains(attacker))
            .count()
    })
}

/// The newest incident id the supervisor has (0: none).
fn newest_incident(sup: &common::cluster::Supervisor) -> u64 {
    let (_, listing) = sup.get("/incidents?limit=1");
    listing["items"][0]["id"].as_u64().unwrap_or(0)
}

/// Brute force of five failures whose partition owner is killed (-9) after
/// the third: exactly one incident, the rule state restored from the
/// owner's checkpoint; every accepted event stored exactly once across
/// both workers' files; the killed worker, restarted, drops what it wrote
/// without committing.
#[test]
fn a_brute_force_survives_its_owner_being_killed_with_the_rule_state_from_a_checkpoint() {
    brute_force_across_a_kill("cluster-kill-checkpoint", true);
}

/// The same with no checkpoint yet: the new owner rebuilds the windows by
/// replaying what the stream holds.
#[test]
fn a_brute_force_survives_its_owner_being_killed_with_the_rule_state_replayed() {
    brute_force_across_a_kill("cluster-kill-replay", false);
}

fn brute_force_across_a_kill(tag: &str, checkpoint: bool) {
    let dir = common::temp_dir(tag);
    let Some(nats) = Nats::start(&dir) else { return };
    let every = if checkpoint { "0.5" } else { "3600" };
    let config =
        config_file(&dir, &CLUSTER_CONFIG.replace("checkpoint_secs = 0.5", &format!("checkpoint_secs = {every}")));
    // The checkpoint run keeps its records in PostgreSQL when one is
    // given (VIGIL_TEST_PG, as in CI), the replay run in SQLite.
    let pg = std::env::var("VIGIL_TEST_PG").ok().filter(|u| checkpoint && !u.is_empty());
    let sup = supervisor(&dir, &nats.url(), &config, pg.as_deref(), TOKEN);
    let mut workers =
        [worker("w1", &nats.url(), &config, &dir.join("w1")), worker("w2", &nats.url(), &config, &dir.join("w2"))];
    let a = collector("edge-a", &nats.url(), &config);
    let b = collector("edge-b", &nats.url(), &config);
    // Four org partitions and the cross-org one over two workers: three
    // and two, once both are up.
    wait("partitions shared", Duration::from_secs(60), || {
        let owned: Vec<u64> = workers.iter().map(|w| metric(&w.metrics_url, "vigil_partitions_owned", &[])).collect();
        owned.iter().sum::<u64>() == 5 && owned.iter().all(|&n| n >= 2)
    });

    // Super/Local (org 1) is partition 1 of 4.
    let owner = workers
        .iter()
        .position(|w| common::cluster::metrics(&w.metrics_url).contains("partition=\"1\""))
        .expect("an owner of partition 1");
    // A unique attacker, so a shared PostgreSQL's older incidents do not count.
    let attacker = format!("198.19.{}.{}", std::process::id() % 250, u8::from(checkpoint) + 1);
    let after = newest_incident(&sup);
    send(&dir, &a.tcp, "first.log", ssh_attack("web-01", &attacker, 5)[..3].to_vec());
    wait("three events acknowledged", Duration::from_secs(30), || {
        metric(&a.metrics_url, "vigil_events_acknowledged_total", &[]) == 3
    });
    wait("three events stored by the owner", Duration::from_secs(30), || {
        metric(&workers[owner].metrics_url, "vigil_events_stored_total", &[]) >= 3
    });
    if checkpoint {
        wait("the owner checkpointed partition 1", Duration::from_secs(30), || {
            metric(&workers[owner].metrics_url, "vigil_checkpoints_total", &[]) >= 1
        });
    }
    workers[owner].role.kill();
    let survivor = 1 - owner;
    // Stamped now, as a device would: the failures go on after the kill.
    send(&dir, &b.tcp, "second.log", ssh_attack("web-01", &attacker, 5)[3..].to_vec());
    wait("the survivor took partition 1", Duration::from_secs(30), || {
        common::cluster::metrics(&workers[survivor].metrics_url).contains("partition=\"1\"")
    });
    wait_explained(
        "one brute-force incident",
        Duration::from_secs(60),
        || mine(&sup.get("/incidents?rule=ssh-brute-force&limit=500").1, &attacker, after) >= 1,
        || {
            let survivor = &workers[survivor].metrics_url;
            let edges = [&a.metrics_url, &b.metrics_url].map(|u| metric_lines(u, &["vigil_events_"]));
            format!(
                "survivor:\n{}\ncollectors:\n{}\n{}\nsupervisor:\n{}",
                metric_lines(
                    survivor,
                    &["vigil_events_stored", "vigil_rule_late", "vigil_partitions_", "vigil_detection"]
                ),
                edges[0],
                edges[1],
                metric_lines(&sup.metrics_url, &["vigil_incident"]),
            )
        },
    );
    // The events that waited in the stream for the new owner are not late
    // (its rule clock stays with the backlog, not the wall clock).
    let late = metric(&workers[survivor].metrics_url, "vigil_rule_late_events", &["partition=\"1\""]);
    assert_eq!(late, 0, "late events after the takeover");
    let restored = metric(&workers[survivor].metrics_url, "vigil_partitions_restored_total", &[]);
    assert_eq!(restored >= 1, checkpoint, "rule state restored from a checkpoint: {restored}");
    std::thread::sleep(Duration::from_secs(2));
    let (_, incidents) = sup.get("/incidents?rule=ssh-brute-force&limit=500");
    assert_eq!(mine(&incidents, &attacker, after), 1, "exactly one incident: {incidents}");

    // Stored exactly once: restart the killed worker (it removes what it
    // wrote without committing), then count ids across both.
    wait("the survivor committed all five", Duration::from_secs(30), || {
        metric(&workers[survivor].metrics_url, "vigil_events_stored_total", &[]) >= 2
    });
    let name = if owner == 0 { "w1" } else { "w2" };
    let data = workers[owner].data.clone();
    workers[owner] = worker(name, &nats.url(), &config, &data);
    std::thread::sleep(Duration::from_secs(1));
    let mut ids = stored_ids(&dir.join("w1"));
    ids.extend(stored_ids(&dir.join("w2")));
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event stored twice: {ids:?}");
    assert_eq!(ids.len(), 5, "every accepted event stored: {ids:?}");
}

/// The EPS loop across nodes: collector A receives five times B's rate;
/// after an interval A's budget is the larger, and the budgets stay within
/// the licence (the unlicensed 500 EPS plus the burst the pool grants).
/// Org changes reach every collector at once (pushed through the control
/// bucket's watch).
#[test]
fn budgets_follow_demand_across_collectors_and_org_changes_reach_them_at_once() {
    let dir = common::temp_dir("cluster-eps");
    let Some(nats) = Nats::start(&dir) else { return };
    let config = config_file(&dir, CLUSTER_CONFIG);
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let _w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let a = collector("edge-a", &nats.url(), &config);
    let b = collector("edge-b", &nats.url(), &config);
    let lines: Vec<String> = (0..100).map(|i| format!("<14>1 - web-01 app - - - line {i}")).collect();
    common::run::write_lines(&dir.join("load.log"), lines.into_iter());
    let load = |to: &str, rate: u64| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["send", "--to", to, "--quiet", "--loop", "--duration", "10", "--rate", &rate.to_string()])
            .arg(dir.join("load.log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut la, mut lb) = (load(&a.tcp, 250), load(&b.tcp, 50));
    // Two full intervals of 3 s: one reported, one planned from it.
    std::thread::sleep(Duration::from_secs(8));
    let (ea, eb) =
        (metric(&a.metrics_url, "vigil_allocation_eps", &[]), metric(&b.metrics_url, "vigil_allocation_eps", &[]));
    assert!(ea > eb, "A (5x the rate) has the larger budget: {ea} vs {eb}");
    assert!(ea + eb <= 1_000, "within the licence plus burst: {ea} + {eb}");
    let _ = la.wait();
    let _ = lb.wait();

    // An org created through the API is on both collectors within a second.
    let before = metric(&a.metrics_url, "vigil_orgs", &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let created = agent
        .post(format!("{}/orgs", sup.api))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({"name": "Acme", "ip_ranges": ["10.9.0.0/16"]}))
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // Pushed (KV watch), not polled: milliseconds on a quiet machine. The
    // bound is loose because the test machines are shared (no timed
    // assertions); the time taken is printed.
    let pushed = std::time::Instant::now();
    wait("the new org on both collectors", Duration::from_secs(5), || {
        metric(&a.metrics_url, "vigil_orgs", &[]) == before + 1
            && metric(&b.metrics_url, "vigil_orgs", &[]) == before + 1
    });
    eprintln!("org on both collectors {} ms after the API answered", pushed.elapsed().as_millis());

    // The registry lists every node for the provider's administrator.
    let (status, nodes) = sup.get("/nodes");
    assert_eq!(status, 200, "{nodes}");
    let names: BTreeSet<String> =
        nodes["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    for n in ["edge-a", "edge-b", "w1"] {
        assert!(names.contains(n), "{n} registered: {nodes}");
    }
}

/// Supervisor restart (kill -9): events keep flowing and being stored; the
/// detections wait in JetStream and become exactly one incident when it is
/// back. The record store is PostgreSQL when `VIGIL_TEST_PG` is set.
#[test]
fn detections_wait_for_a_restarted_supervisor_and_become_one_incident() {
    let dir = common::temp_dir("cluster-sup-restart");
    let Some(nats) = Nats::start(&dir) else { return };
    let config = config_file(&dir, CLUSTER_CONFIG);
    let pg = std::env::var("VIGIL_TEST_PG").ok().filter(|u| !u.is_empty());
    let mut sup = supervisor(&dir, &nats.url(), &config, pg.as_deref(), TOKEN);
    let w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let c = collector("edge-a", &nats.url(), &config);
    wait("w1 owns every partition (4 orgs' and the cross-org one)", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    let after = newest_incident(&sup);
    sup.role.kill();
    // A unique attacker, so a shared PostgreSQL's older incidents do not count.
    let attacker = format!("198.18.{}.{}", std::process::id() % 250, 1 + std::process::id() % 200);
    send(&dir, &c.tcp, "attack.log", ssh_attack("web-01", &attacker, 5));
    wait("events stored while the supervisor is down", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_events_stored_total", &[]) >= 5
    });
    wait("the detection published", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_detection_batches_total", &[]) >= 1
    });
    sup = supervisor(&dir, &nats.url(), &config, pg.as_deref(), TOKEN);
    let count = |sup: &common::cluster::Supervisor| {
        mine(&sup.get("/incidents?rule=ssh-brute-force&limit=500").1, &attacker, after)
    };
    wait("the incident after the restart", Duration::from_secs(60), || count(&sup) >= 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&sup), 1, "exactly one incident");
    assert!(sup.role.terminate(), "the supervisor stops cleanly");
}

/// nats-server killed and restarted under load: nothing accepted is lost
/// or stored twice; collectors push back on the TCP sender meanwhile and
/// every role resumes by itself.
#[test]
fn a_nats_restart_under_load_loses_nothing_accepted_and_stores_nothing_twice() {
    let dir = common::temp_dir("cluster-nats-restart");
    let Some(mut nats) = Nats::start(&dir) else { return };
    let config = config_file(&dir, CLUSTER_CONFIG);
    let _sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    // The whole licence guaranteed: the interval whose report the outage
    // swallows falls back to the guarantee (SPEC §3), not to nothing.
    let out = common::vigil_with_input(
        &["node", "set", "edge-a", "--guaranteed-eps", "500", "--data-dir", dir.join("supervisor").to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let c = collector("edge-a", &nats.url(), &config);
    wait("w1 owns every partition (4 orgs' and the cross-org one)", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    wait("edge-a has its guarantee", Duration::from_secs(30), || {
        metric(&c.metrics_url, "vigil_allocation_eps", &[]) >= 500
    });
    let lines: Vec<String> = (0..100).map(|i| format!("<14>1 - web-01 app - - - line {i}")).collect();
    common::run::write_lines(&dir.join("load.log"), lines.into_iter());
    let mut sender = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["send", "--to", &c.tcp, "--quiet", "--loop", "--limit", "1500", "--rate", "300"])
        .arg(dir.join("load.log"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The worker loses its leases while nats-server is away (the outage
    // is longer than the TTL): it removes what it wrote past its last
    // commits before it takes those partitions again, so at no moment are
    // two copies of an event on disk. A watcher looks all along.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, data) = (watching.clone(), dir.join("w1"));
        std::thread::spawn(move || {
            let mut doubled = None;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let (rows, distinct) = stored_counts(&data);
                if rows != distinct {
                    doubled.get_or_insert((rows, distinct));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            doubled
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    nats.kill();
    std::thread::sleep(Duration::from_secs(3));
    nats.start_again();
    assert!(sender.wait().unwrap().success(), "the sender finished (pushed back, not refused)");
    let accepted = || metric(&c.metrics_url, "vigil_events_accepted_total", &[]);
    // The collector may still be reading what the sender wrote: wait for
    // all of it (a moment when acknowledged equals accepted mid-stream is
    // not the end).
    wait("every line accepted and acknowledged", Duration::from_secs(60), || {
        let a = accepted();
        a == 1500 && metric(&c.metrics_url, "vigil_events_acknowledged_total", &[]) == a
    });
    let m = common::cluster::metrics(&c.metrics_url);
    let dropped: Vec<&str> =
        m.lines().filter(|l| l.starts_with("vigil_events_") || l.starts_with("vigil_allocation")).collect();
    assert_eq!(accepted(), 1500, "TCP lost nothing: every line was accepted: {dropped:#?}");
    let stored = || stored_counts(&dir.join("w1"));
    wait_explained(
        "every accepted event stored",
        Duration::from_secs(60),
        || stored() == (1500, 1500),
        || format!("stored (rows, distinct ids): {:?}\n{}", stored(), common::cluster::metrics(&w.metrics_url)),
    );
    std::thread::sleep(Duration::from_secs(2));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let doubled = watcher.join().unwrap();
    assert_eq!(doubled, None, "two copies of events on disk at once (rows, distinct ids)");
    assert_eq!(stored(), (1500, 1500), "each accepted event stored exactly once");
}

/// Cross-org rules in a cluster: one source failing logins in two orgs
/// (whose partitions two different workers may own) is one Super/Local
/// incident, raised by the owner of the cross-org partition, which stores
/// nothing; each org's own events are stored once, in its partition.
#[test]
fn a_cross_org_rule_sees_every_orgs_events() {
    let dir = common::temp_dir("cluster-cross-org");
    let Some(nats) = Nats::start(&dir) else { return };
    let rule = dir.join("spread.yml");
    std::fs::write(
        &rule,
        "id: ssh-spread\nname: One source failing SSH logins in several orgs\nseverity: high\nscope: cross-org\n\
         patterns:\n  spread:\n    filter:\n      event_type: ssh.auth.failure\n    group_by: [src_ip]\n    \
         window: 5m\n    having: count_distinct(org) >= 2\ntitle: \"SSH failures from {src_ip} in several orgs\"\n",
    )
    .unwrap();
    let text = CLUSTER_CONFIG
        .replacen("[cluster]\n", "[cluster]\ncross_org = true\n", 1)
        .replace("[rules]\n", &format!("[rules]\npaths = [{:?}]\n", rule.display().to_string()));
    let config = config_file(&dir, &text);
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let workers =
        [worker("w1", &nats.url(), &config, &dir.join("w1")), worker("w2", &nats.url(), &config, &dir.join("w2"))];
    let c = collector("edge-a", &nats.url(), &config);
    wait("partitions shared", Duration::from_secs(60), || {
        workers.iter().map(|w| metric(&w.metrics_url, "vigil_partitions_owned", &[])).sum::<u64>() == 5
    });
    sup.create_orgs(&[("Acme", "10.1.0.0/16"), ("Globex", "10.2.0.0/16")]);
    wait("both orgs on the collector", Duration::from_secs(5), || metric(&c.metrics_url, "vigil_orgs", &[]) >= 4);
    let mut lines = ssh_attack("10.1.0.5", "203.0.113.66", 2);
    lines.extend(ssh_attack("10.2.0.9", "203.0.113.66", 2));
    send(&dir, &c.tcp, "spread.log", lines);
    wait("the cross-org incident", Duration::from_secs(60), || {
        sup.get("/incidents?rule=ssh-spread").1["items"].as_array().is_some_and(|i| !i.is_empty())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, incidents) = sup.get("/incidents?rule=ssh-spread");
    let items = incidents["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one cross-org incident: {incidents}");
    assert_eq!(items[0]["org"], "Super/Local", "{incidents}");
    let mut ids = stored_ids(&dir.join("w1"));
    ids.extend(stored_ids(&dir.join("w2")));
    assert_eq!(ids.len(), 4, "each event stored once, from its org's partition: {ids:?}");
}

/// Bounded everywhere: with the only worker frozen, the event stream (1 MB
/// here) fills, JetStream refuses more, and the collector holds the TCP
/// sender back instead of buffering; thawed, everything is stored once.
#[test]
fn a_stalled_worker_holds_the_sender_back_and_memory_stays_bounded() {
    let dir = common::temp_dir("cluster-backpressure");
    let Some(nats) = Nats::start(&dir) else { return };
    let config = config_file(&dir, &CLUSTER_CONFIG.replacen("[cluster]\n", "[cluster]\nstream_max_mb = 1\n", 1));
    let _sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let out = common::vigil_with_input(
        &["node", "set", "edge-a", "--guaranteed-eps", "500", "--data-dir", dir.join("supervisor").to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let c = collector("edge-a", &nats.url(), &config);
    wait("w1 owns every partition", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    let pid = w.role.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let lines: Vec<String> =
        (0..100).map(|i| format!("<14>1 - web-01 app - - - line {i} {}", "x".repeat(2_000))).collect();
    common::run::write_lines(&dir.join("big.log"), lines.into_iter());
    // 1,400 lines of ~2 KB: ~900 KB a second for ~3 s against a 1 MB stream.
    let mut sender = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["send", "--to", &c.tcp, "--quiet", "--loop", "--limit", "1400", "--rate", "450"])
        .arg(dir.join("big.log"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let held = sender.try_wait().unwrap().is_none();
    let unacked = metric(&c.metrics_url, "vigil_events_unacknowledged", &[]);
    let _ = std::process::Command::new("kill").args(["-CONT", &pid]).status();
    assert!(held, "the sender is held back while the stream is full");
    assert!(unacked <= 64 * 1_400, "unacknowledged events bounded by the window: {unacked}");
    assert!(sender.wait().unwrap().success());
    wait("every event stored", Duration::from_secs(60), || stored_ids(&dir.join("w1")).len() >= 1_400);
    std::thread::sleep(Duration::from_secs(1));
    let ids = stored_ids(&dir.join("w1"));
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (1_400, 1_400), "each accepted event stored exactly once");
    assert_eq!(metric(&c.metrics_url, "vigil_events_accepted_total", &[]), 1_400);
}

/// Issue 13 in the cluster layout: two workers write under one shared
/// root, the supervisor's search reads it. An attack's incident leads to
/// its events, SQL finds every org's events exactly once, and the workers'
/// compactor merges their committed files without changing any answer.
#[test]
fn the_supervisor_searches_the_workers_shared_root_before_and_after_compaction() {
    let dir = common::temp_dir("cluster-search");
    let Some(nats) = Nats::start(&dir) else { return };
    let shared = dir.join("shared");
    let text =
        CLUSTER_CONFIG.replace("[storage]\n", "[storage]\ncompact_after_secs = 1\ncompact_every_secs = 1\n").replace(
            "[orgs]\n",
            &format!("[search]\nevents_dir = {:?}\n[orgs]\n", shared.join("events").display().to_string()),
        );
    let config = config_file(&dir, &text);
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let workers = [worker("w1", &nats.url(), &config, &shared), worker("w2", &nats.url(), &config, &shared)];
    let c = collector("edge-a", &nats.url(), &config);
    wait("partitions shared", Duration::from_secs(60), || {
        workers.iter().map(|w| metric(&w.metrics_url, "vigil_partitions_owned", &[])).sum::<u64>() == 5
    });
    sup.create_orgs(&[("Acme", "10.1.0.0/16"), ("Globex", "10.2.0.0/16")]);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    wait("both orgs on the collector", Duration::from_secs(5), || metric(&c.metrics_url, "vigil_orgs", &[]) >= 4);
    // One failure of the attack and one Globex line at a time, apart: many
    // small files per org for the compactor. Stamped when sent, as a
    // device would (the allowed lateness is 1 s).
    for i in 0..5 {
        let attack = ssh_attack("10.1.0.5", "203.0.113.77", 5).swap_remove(i);
        let noise = ssh_attack("10.2.0.9", "192.0.2.10", 5).swap_remove(i);
        send(&dir, &c.tcp, &format!("part{i}.log"), vec![attack, noise]);
        std::thread::sleep(Duration::from_millis(400));
    }
    // Globex's five failures are an incident of their own; Acme's is ours.
    let acme_incident = || {
        let (_, incidents) = sup.get("/incidents?rule=ssh-brute-force");
        incidents["items"].as_array()?.iter().find(|i| i.to_string().contains("203.0.113.77"))?["id"].as_u64()
    };
    wait_explained(
        "the brute-force incident",
        Duration::from_secs(60),
        || acme_incident().is_some(),
        || {
            let w: Vec<String> = workers
                .iter()
                .map(|w| metric_lines(&w.metrics_url, &["vigil_events_stored", "vigil_rule_late", "vigil_partitions_"]))
                .collect();
            format!(
                "incidents: {}\nworkers:\n{}\ncollector:\n{}",
                sup.get("/incidents").1,
                w.join("\n"),
                metric_lines(&c.metrics_url, &["vigil_events_"])
            )
        },
    );
    let incident = acme_incident().unwrap();
    let search = |sql: &str| -> serde_json::Value {
        let mut resp = agent
            .post(format!("{}/search", sup.api))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .send_json(serde_json::json!({"sql": sql}))
            .unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.body_mut().read_json().unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };
    let per_org = "SELECT org, count(*) AS n, count(DISTINCT event_id) AS d FROM events \
                   WHERE event_type = 'ssh.auth.failure' GROUP BY org ORDER BY org";
    let expected = serde_json::json!([["Acme", 5, 5], ["Globex", 5, 5]]);
    wait("every event searchable", Duration::from_secs(30), || search(per_org)["rows"] == expected);
    let drill = |what: &str| {
        let (status, events) = sup.get(&format!("/incidents/{incident}/events"));
        assert_eq!(status, 200, "{events}");
        let items = events["items"].as_array().unwrap();
        assert_eq!(items.len(), 5, "{what}: the incident's five events: {events}");
        assert!(items.iter().all(|e| e["src_ip"] == "203.0.113.77"), "{events}");
    };
    drill("before compaction");

    wait_explained(
        "the workers compacted their committed files",
        Duration::from_secs(60),
        || workers.iter().map(|w| metric(&w.metrics_url, "vigil_compacted_files_total", &[])).sum::<u64>() >= 4,
        || workers.iter().map(|w| metric_lines(&w.metrics_url, &["vigil_compact"])).collect::<Vec<_>>().join("\n"),
    );
    let merged = common::run::parquet_files(&shared)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("compact-")))
        .count();
    assert!(merged >= 1, "merged files under the shared root");
    let answer = search(per_org);
    assert_eq!(answer["rows"], expected, "the same answer after compaction: {answer}");
    assert!(answer["stats"]["files"].as_u64().unwrap() >= 1, "{answer}");
    drill("after compaction");
    let errors: u64 = workers.iter().map(|w| metric(&w.metrics_url, "vigil_compaction_errors_total", &[])).sum();
    assert_eq!(errors, 0);
}

/// The device inventory across the cluster: each collector reports the
/// devices it hears (here through the loopback relay, so each HOSTNAME is
/// a device), the supervisor merges them with the collector that heard
/// them and the org they belong to.
#[test]
fn devices_heard_by_two_collectors_reach_the_supervisors_inventory() {
    let dir = common::temp_dir("cluster-devices");
    let Some(nats) = Nats::start(&dir) else { return };
    let config = config_file(&dir, &format!("{CLUSTER_CONFIG}[devices]\nreport_secs = 1.0\n"));
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    sup.create_orgs(&[("Acme", "10.9.0.0/16")]);
    let _w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let a = collector("edge-a", &nats.url(), &config);
    let b = collector("edge-b", &nats.url(), &config);
    wait("the org on edge-a", Duration::from_secs(10), || metric(&a.metrics_url, "vigil_orgs", &[]) >= 3);
    let line = |host: &str| {
        format!("<38>Dec  2 10:15:42 {host} sshd[1]: Accepted password for bob from 192.0.2.9 port 4000 ssh2")
    };
    send(&dir, &a.tcp, "a.log", vec![line("10.9.0.7"), line("10.9.0.7"), line("web-01")]);
    send(&dir, &b.tcp, "b.log", vec![line("DB-02.")]);
    let devices = || sup.get("/devices?limit=100").1["items"].as_array().cloned().unwrap_or_default();
    wait_explained("three devices", Duration::from_secs(30), || devices().len() == 3, || format!("{:?}", devices()));
    let all = devices();
    let find = |id: &str| all.iter().find(|d| d["identity"] == id).unwrap_or_else(|| panic!("{id}: {all:?}")).clone();
    let acme = find("10.9.0.7");
    assert_eq!(
        (acme["org"].as_str(), acme["collector"].as_str(), acme["events"].as_i64()),
        (Some("Acme"), Some("edge-a"), Some(2))
    );
    assert_eq!(
        (find("web-01")["org"].as_str(), find("web-01")["collector"].as_str()),
        (Some("Super/Local"), Some("edge-a"))
    );
    assert_eq!(find("db-02")["collector"], "edge-b");
    assert_eq!(find("db-02")["family"], "openssh");
    assert!(metric(&sup.metrics_url, "vigil_device_reports_total", &[]) >= 2);
}

/// A collector hearing thousands of devices, under a licence that limits
/// devices: its period's device report is larger than a NATS message, and
/// so are the standings the supervisor sends back. Both go in parts and
/// arrive whole.
#[test]
fn thousands_of_devices_report_and_get_their_standings_in_parts() {
    const DEVICES: usize = 8_000;
    let dir = common::temp_dir("cluster-many-devices");
    let body = "customer = \"Acme Corp\"\nlicensed_eps = 50000\ndevice_limit = 10000\nissued = \"2026-11-01\"\nexpires = \"2036-10-31\"\n";
    let Some(licence) = common::signed_licence(&dir, body) else { return };
    let Some(nats) = Nats::start(&dir) else { return };
    let config = config_file(
        &dir,
        &format!("license = {:?}\n{CLUSTER_CONFIG}[devices]\nreport_secs = 1.0\n", licence.display().to_string()),
    );
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let _w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let edge = collector("edge-a", &nats.url(), &config);
    wait("the licence's limit on edge-a", Duration::from_secs(20), || {
        metric(&edge.metrics_url, "vigil_device_limit_applied", &[]) == 10_000
    });
    // From loopback, a relay: each HOSTNAME is a device of its own.
    let lines = (0..DEVICES)
        .map(|i| {
            format!("<38>Dec  2 10:15:42 dev-{i:05} sshd[1]: Accepted password for bob from 192.0.2.9 port 4000 ssh2")
        })
        .collect();
    send(&dir, &edge.tcp, "many.log", lines);
    wait_explained(
        "every device in the supervisor's inventory",
        Duration::from_secs(60),
        || metric(&sup.metrics_url, "vigil_devices_active", &[]) == DEVICES as u64,
        || format!("active {}", metric(&sup.metrics_url, "vigil_devices_active", &[])),
    );
    assert!(metric(&sup.metrics_url, "vigil_device_reports_total", &[]) >= 2, "the report came in parts");
    assert_eq!(metric(&sup.metrics_url, "vigil_device_reports_bad_total", &[]), 0);
    wait_explained(
        "the standings of every device back on edge-a",
        Duration::from_secs(30),
        || metric(&edge.metrics_url, "vigil_device_limit_within", &[]) == DEVICES as u64,
        || format!("within {}", metric(&edge.metrics_url, "vigil_device_limit_within", &[])),
    );
}

/// A CA, and certificates it signed for the server (127.0.0.1) and for
/// one client, as PEM files in `dir`: (ca, server cert, server key,
/// client cert, client key).
fn pki(dir: &std::path::Path) -> [std::path::PathBuf; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, "vigil cluster test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["edge-a".into()]);
    let files = ["ca.pem", "server.pem", "server.key", "client.pem", "client.key"].map(|n| dir.join(n));
    for (path, text) in files.iter().zip([ca_cert.pem(), server_cert, server_key, client_cert, client_key]) {
        std::fs::write(path, text).unwrap();
    }
    files
}

/// What a role printed before it exited by itself within 30 s.
fn exits_with(args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_NATS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not give up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// NATS with TLS only and client certificates required: the roles with
/// the CA and their certificates carry a brute force to its incident; a
/// node without a certificate, or without the CA, or talking plain text,
/// is refused and says why.
#[test]
fn a_tls_only_nats_carries_the_cluster_and_refuses_the_rest() {
    let dir = common::temp_dir("cluster-tls");
    let [ca, server_cert, server_key, client_cert, client_key] = pki(&dir);
    let tls = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n",
        server_cert.display(),
        server_key.display(),
        ca.display()
    );
    let Some(nats) = Nats::start_with(&dir, &tls) else { return };
    let secured = CLUSTER_CONFIG.replacen(
        "[cluster]\n",
        &format!(
            "[cluster]\nnats_ca_file = \"{}\"\nnats_cert_file = \"{}\"\nnats_key_file = \"{}\"\n",
            ca.display(),
            client_cert.display(),
            client_key.display()
        ),
        1,
    );
    let config = config_file(&dir, &secured);
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let c = collector("edge-a", &nats.url(), &config);
    wait("w1 owns every partition", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    let attacker = format!("198.18.{}.{}", 200 + std::process::id() % 50, 1 + std::process::id() % 200);
    send(&dir, &c.tcp, "attack.log", ssh_attack("web-01", &attacker, 5));
    wait("the incident, over TLS", Duration::from_secs(60), || {
        mine(&sup.get("/incidents?rule=ssh-brute-force&limit=500").1, &attacker, 0) == 1
    });

    // Refused: no client certificate; no CA (the server's is not public);
    // plain text; a key file that is not there.
    let write = |name: &str, text: String| config_file(&dir.join(name), &text);
    for d in ["no-cert", "no-ca", "plain", "missing"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let ca_line = format!("nats_ca_file = \"{}\"\n", ca.display());
    let cases = [
        (
            write("no-cert", CLUSTER_CONFIG.replacen("[cluster]\n", &format!("[cluster]\n{ca_line}"), 1)),
            "cannot connect",
        ),
        (
            write(
                "no-ca",
                CLUSTER_CONFIG.replacen(
                    "[cluster]\n",
                    &format!(
                        "[cluster]\nnats_cert_file = \"{}\"\nnats_key_file = \"{}\"\n",
                        client_cert.display(),
                        client_key.display()
                    ),
                    1,
                ),
            ),
            "cannot connect",
        ),
        (write("plain", CLUSTER_CONFIG.to_owned()), "cannot connect"),
        (
            write(
                "missing",
                secured.replace(&client_key.display().to_string(), &dir.join("gone.key").display().to_string()),
            ),
            "cannot read cluster.nats_key_file",
        ),
    ];
    for (config, says) in &cases {
        let args = ["collector", "--nats", &nats.url(), "--node", "edge-x", "--syslog-addr", "127.0.0.1:0", "--config"];
        let mut args: Vec<&str> = args.to_vec();
        args.push(config.to_str().unwrap());
        let err = exits_with(&args);
        eprintln!("refused as expected: {}", err.trim());
        assert!(err.contains(says), "{config:?}: {err}");
    }
}

/// Runs `vigil` with `args` to completion; its exit status and what it
/// printed (stdout then stderr).
fn vigil_cmd(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_NATS")
        .env_remove("VIGIL_DATABASE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A raw NATS client holding `creds` (as an attacker with a node's
/// credentials would), over TLS with `ca`, and the server errors it is told.
async fn raw_client(
    url: &str,
    creds: &std::path::Path,
    ca: &std::path::Path,
    inbox: &str,
) -> Result<(async_nats::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>), String> {
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = said.clone();
    let options = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .map_err(|e| e.to_string())?
        .require_tls(true)
        .add_root_certificates(ca.to_owned())
        .custom_inbox_prefix(inbox)
        .max_reconnects(Some(3))
        .event_callback(move |e| {
            let sink = sink.clone();
            async move {
                if let async_nats::Event::ServerError(err) = e {
                    sink.lock().unwrap().push(err.to_string());
                }
            }
        });
    let client = options.connect(url).await.map_err(|e| e.to_string())?;
    Ok((client, said))
}

/// One encoded batch of `n` SSH failures from `attacker`, claimed for `org`.
fn forged_batch(org: u32, attacker: &str, n: usize) -> bytes::Bytes {
    let parser = parsers::Parser::new();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let now = parsers::EventTime::from_unix_nanos(i128::try_from(since.as_nanos()).unwrap());
    let mut ids = parsers::EventIds::new(60, now);
    let events: Vec<parsers::Event> = ssh_attack("forged-host", attacker, n)
        .into_iter()
        .map(|line| {
            let mut e = parser.parse(bytes::Bytes::from(line), now);
            e.id = ids.next_id();
            e.org_id = Some(parsers::OrgId(org));
            e
        })
        .collect();
    let mut out = Vec::new();
    parsers::wire::encode_batch(&events, &mut out);
    bytes::Bytes::from(out)
}

/// Issue #16 end to end, against a nats-server running the configuration
/// `vigil cluster init` wrote (TLS only, operator JWTs, per-role
/// permissions): enrolled nodes carry a brute force to its incident in the
/// collector's bound org; a collector's credentials cannot publish another
/// org's events, budgets or detections, nor read the event stream, another
/// node's budget or the checkpoints (the server refuses each, and nothing
/// reaches the other org); a batch outside the sender's binding that a
/// misconfigured permission let through is refused by the worker and
/// counted; a removed node is disconnected and refused; credentials signed
/// by another key and a connection without TLS are refused.
#[test]
fn an_enrolled_cluster_holds_each_node_to_its_role_and_org() {
    let dir = common::temp_dir("cluster-enrolled");
    let keys = dir.join("keys");
    let (ok, said) = vigil_cmd(&["cluster", "init", "--dir", keys.to_str().unwrap(), "--listen", "127.0.0.1:-1"]);
    assert!(ok, "{said}");
    let ca = keys.join("tls/ca.pem");
    std::fs::create_dir_all(dir.join("nats")).unwrap();
    std::fs::copy(keys.join("auth.conf"), dir.join("nats/auth.conf")).unwrap();
    let server = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}\ninclude \"auth.conf\"\n",
        keys.join("tls/server.pem").display(),
        keys.join("tls/server.key").display()
    );
    let Some(nats) = Nats::start_with(&dir, &server) else { return };
    let url = nats.url();
    let base = CLUSTER_CONFIG.replacen("[cluster]\n", &format!("[cluster]\nnats_ca_file = \"{}\"\n", ca.display()), 1);
    std::fs::create_dir_all(dir.join("sup")).unwrap();
    let sup_config = config_file(
        &dir.join("sup"),
        &base.replacen("[cluster]\n", &format!("[cluster]\nkeys_dir = \"{}\"\n", keys.display()), 1),
    );
    let config = config_file(&dir, &base);
    let sup = supervisor(&dir, &url, &sup_config, None, TOKEN);
    sup.create_orgs(&[("Acme", "10.61.0.0/16"), ("Initech", "10.62.0.0/16")]);
    let org_id = |name: &str| -> u32 {
        let (_, orgs) = sup.get("/orgs");
        let found = orgs["items"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap().clone();
        u32::try_from(found["id"].as_u64().unwrap()).unwrap()
    };
    let (acme, initech) = (org_id("Acme"), org_id("Initech"));
    let data = dir.join("supervisor");
    let add = |name: &str, role: &str, org: Option<&str>| -> std::path::PathBuf {
        let out = dir.join(format!("{name}.creds"));
        let mut args = vec!["node", "add", name, "--role", role, "--keys", keys.to_str().unwrap()];
        args.extend(["--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        if let Some(o) = org {
            args.extend(["--org", o]);
        }
        let (ok, said) = vigil_cmd(&args);
        assert!(ok, "{said}");
        out
    };
    let edge_creds = add("edge-a", "collector", Some("Acme"));
    let worker_creds = add("w1", "worker", None);
    let (_, nodes) = sup.get("/nodes");
    let edge = nodes["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "edge-a").unwrap().clone();
    assert_eq!((edge["state"].as_str(), edge["enrolled"].as_bool()), (Some("unregistered"), Some(true)), "{edge}");
    assert_eq!(edge["org_id"].as_u64(), Some(u64::from(acme)));

    let w = common::cluster::worker_with(
        "w1",
        &url,
        &config,
        &dir.join("w1"),
        &["--creds", worker_creds.to_str().unwrap()],
    );
    let c = common::cluster::collector_with("edge-a", &url, &config, &["--creds", edge_creds.to_str().unwrap()]);
    wait("w1 owns every partition", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    // The sender (127.0.0.1) is in neither org's range: the binding makes
    // its events Acme's.
    let attacker = format!("198.18.{}.{}", 100 + std::process::id() % 50, 1 + std::process::id() % 200);
    send(&dir, &c.tcp, "attack.log", ssh_attack("web-01", &attacker, 5));
    wait("the incident in the bound org", Duration::from_secs(60), || {
        let (_, listing) = sup.get("/incidents?rule=ssh-brute-force&limit=500");
        listing["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i.to_string().contains(&attacker) && i["org"] == "Acme"))
    });

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let partitions = 4u16;
    let p_of = |org: u32| u16::try_from(org % u32::from(partitions)).unwrap();
    runtime.block_on(async {
        let (client, said) = raw_client(&url, &edge_creds, &ca, "_INBOX_edge-a").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let forged_attacker = "198.51.100.77";
        // Each attempt, and what the server must say about it.
        let attempts: Vec<(&str, String)> = vec![
            ("an Initech batch", format!("vigil.events.{}.{initech}.edge-a", p_of(initech))),
            ("a batch as another node", format!("vigil.events.{}.{acme}.edge-b", p_of(acme))),
            ("a budget", "$KV.vigil_control.budget.edge-a".to_owned()),
            ("the org table", "$KV.vigil_control.orgs".to_owned()),
            ("a detection", "vigil.detections.edge-a".to_owned()),
            ("a consumer of the event stream", "$JS.API.CONSUMER.CREATE.VIGIL_EVENTS".to_owned()),
            ("another node's budget", "$JS.API.DIRECT.GET.KV_vigil_control.$KV.vigil_control.budget.edge-b".to_owned()),
            ("a checkpoint", "$JS.API.STREAM.INFO.OBJ_vigil_checkpoints".to_owned()),
            ("a lease", "$KV.vigil_leases.p0".to_owned()),
        ];
        for (what, subject) in &attempts {
            let payload = forged_batch(initech, forged_attacker, 6);
            let _ = client.publish(subject.clone(), payload).await;
            client.flush().await.unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let seen =
                    said.lock().unwrap().iter().any(|s| s.contains("ermissions") && s.contains(subject.as_str()));
                if seen {
                    eprintln!("refused by the server as expected: {what} on {subject}");
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} on {subject} was not refused: {:?}",
                    said.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Reading the event stream.
        let _sub = client.subscribe("vigil.events.>").await.unwrap();
        client.flush().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !said
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.contains("ermissions") && s.contains("Subscription to \"vigil.events.>\""))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "subscribing to the stream was not refused: {:?}",
                said.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("refused by the server as expected: subscribing to vigil.events.>");
        // Its own org's subject with another org's events: the server lets
        // it through (the subject is its own); the worker refuses it.
        let own = format!("vigil.events.{}.{acme}.edge-a", p_of(acme));
        js.publish(own, forged_batch(initech, forged_attacker, 6)).await.unwrap().await.unwrap();
        drop(js);
        drop(client);
    });
    wait("the worker refuses the mislabelled batch", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_batches_refused_total", &["reason=\"org_mismatch\""]) == 1
    });

    // A misconfigured permission: edge-a's name and binding, but allowed
    // every subject. The worker still refuses a batch outside the binding.
    let cluster_keys = cluster::auth::ClusterKeys::load(&keys).unwrap();
    let grant = cluster::auth::Grant {
        node: "edge-a".into(),
        role: parsers::NodeRole::Collector,
        org: Some(acme),
        slot: Some(1),
    };
    let wide =
        cluster::auth::Permissions { publish: vec![">".into()], subscribe: vec![">".into()], unrestricted: false };
    let wide_creds = dir.join("wide.creds");
    cluster_keys.node_creds_with(&grant, &wide, 1).unwrap().write(&wide_creds).unwrap();
    runtime.block_on(async {
        let (client, _) = raw_client(&url, &wide_creds, &ca, "_INBOX_wide").await.unwrap();
        let js = async_nats::jetstream::new(client);
        let subject = format!("vigil.events.{}.{initech}.edge-a", p_of(initech));
        js.publish(subject, forged_batch(initech, "198.51.100.78", 6)).await.unwrap().await.unwrap();
    });
    wait("the worker refuses the batch outside the binding", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_batches_refused_total", &["reason=\"binding\""]) == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, listing) = sup.get("/incidents?limit=500");
    assert!(!listing.to_string().contains("198.51.100.7"), "a forged batch raised an incident: {listing}");
    let initech_dir = dir.join("w1").join("events").join(format!("org={initech}"));
    assert!(!initech_dir.exists(), "Initech has stored events: {}", initech_dir.display());

    // Credentials signed by another cluster's key.
    let other = cluster::auth::ClusterKeys::generate();
    let forged = dir.join("forged.creds");
    other
        .node_creds(&cluster::auth::Grant { node: "edge-a".into(), ..grant.clone() }, 1)
        .unwrap()
        .write(&forged)
        .unwrap();
    let refused = runtime.block_on(raw_client(&url, &forged, &ca, "_INBOX_edge-a")).err().unwrap_or_default();
    assert!(refused.contains("authorization violation"), "{refused}");
    eprintln!("refused as expected: credentials of another key: {refused}");
    // Plain TCP: the server asks for TLS and refuses a client that
    // talks plain text instead.
    {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("nats://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        let info = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(info.contains("\"tls_required\":true"), "{info}");
        let _ = stream.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
        let n = stream.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!answer.starts_with("PONG"), "plain text was served: {answer}");
        eprintln!("refused as expected: plain TCP: {:?}", answer.trim());
    }
    // No CA: the server's certificate is not trusted.
    let plain = runtime.block_on(async {
        async_nats::ConnectOptions::with_credentials_file(&edge_creds)
            .await
            .unwrap()
            .max_reconnects(Some(1))
            .connect(&url)
            .await
            .err()
    });
    let plain = plain.map(|e| e.to_string()).unwrap_or_default();
    assert!(!plain.is_empty(), "a connection without the CA was accepted");
    eprintln!("refused as expected: without the cluster's CA: {plain}");

    // Removal: the running collector is disconnected, and its credentials
    // no longer connect.
    let (ok, said) = vigil_cmd(&["node", "remove", "edge-a", "--data-dir", data.to_str().unwrap()]);
    assert!(ok && said.contains("revoked"), "{said}");
    wait("the revocation is pushed", Duration::from_secs(30), || {
        metric(&sup.metrics_url, "vigil_revocation_pushes_total", &[]) >= 2
    });
    let revoked = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match runtime.block_on(raw_client(&url, &edge_creds, &ca, "_INBOX_edge-a")) {
                Err(e) => break e,
                Ok(_) => assert!(std::time::Instant::now() < deadline, "revoked credentials still connect"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(revoked.contains("authorization violation"), "{revoked}");
    eprintln!("refused as expected: a removed node: {revoked}");
    let err = exits_with(&[
        "collector",
        "--nats",
        &url,
        "--creds",
        edge_creds.to_str().unwrap(),
        "--syslog-addr",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(err.contains("authorization violation"), "{err}");
    drop(c);
}

/// A remote site's collector with a disk spool: while NATS is away it
/// keeps taking syslog and writes the batches to disk (counted); when NATS
/// is back it sends them, in order and with their message ids, and the
/// brute force among them is one incident; the spool ends empty.
#[test]
fn a_collector_spools_to_disk_while_nats_is_away() {
    let dir = common::temp_dir("cluster-spool");
    let Some(mut nats) = Nats::start(&dir) else { return };
    let spool = dir.join("spool");
    let config = config_file(
        &dir,
        &CLUSTER_CONFIG.replacen("[cluster]\n", &format!("[cluster]\nspool_dir = \"{}\"\n", spool.display()), 1),
    );
    let sup = supervisor(&dir, &nats.url(), &config, None, TOKEN);
    let w = worker("w1", &nats.url(), &config, &dir.join("w1"));
    let c = collector("edge-a", &nats.url(), &config);
    wait("w1 owns every partition", Duration::from_secs(30), || {
        metric(&w.metrics_url, "vigil_partitions_owned", &[]) == 5
    });
    let before = newest_incident(&sup);
    nats.kill();
    // Once the collector has seen the link go, its batches go to disk.
    let mut n = 0;
    wait("a batch in the spool", Duration::from_secs(30), || {
        n += 1;
        send(&dir, &c.tcp, &format!("probe-{n}.log"), vec![format!("<13>Dec  3 10:00:00 probe vigil spool probe {n}")]);
        std::thread::sleep(Duration::from_millis(100));
        metric(&c.metrics_url, "vigil_spool_batches_total", &["op=\"written\""]) >= 1
    });
    let attacker = format!("198.18.{}.{}", 150 + std::process::id() % 50, 1 + std::process::id() % 200);
    send(&dir, &c.tcp, "attack.log", ssh_attack("web-01", &attacker, 5));
    wait("the attack in the spool", Duration::from_secs(30), || metric(&c.metrics_url, "vigil_spool_events", &[]) >= 5);
    assert!(std::fs::read_dir(&spool).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".log")));
    nats.start_again();
    wait("the incident from the spooled events", Duration::from_secs(90), || {
        mine(&sup.get("/incidents?rule=ssh-brute-force&limit=500").1, &attacker, before) == 1
    });
    wait("the spool drained", Duration::from_secs(30), || {
        metric(&c.metrics_url, "vigil_spool_events", &[]) == 0 && metric(&c.metrics_url, "vigil_spool_bytes", &[]) == 0
    });
    let written = metric(&c.metrics_url, "vigil_spool_batches_total", &["op=\"written\""]);
    let sent = metric(&c.metrics_url, "vigil_spool_batches_total", &["op=\"sent\""]);
    assert_eq!(written, sent, "every spooled batch sent once");
}

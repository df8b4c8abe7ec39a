//! The pipeline's incident upsert: idempotent by source reference, never
//! blocking the caller, bounded, and safe against orgs that are gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backends, open};
use supervisor::store::{
    IncidentUpdate, Ingest, IngestConfig, Kind, ListQuery, NewOrg, Principal, StoreConfig, StoreError,
};

fn update(org: i64, key: u32, count: u64, last: i64, ids: Vec<u64>) -> IncidentUpdate {
    IncidentUpdate {
        rule: "ssh-brute-force".into(),
        org_id: org,
        key: format!("src_ip=192.0.2.{key}"),
        window_start_ms: 1_700_000_000_000,
        title: format!("SSH brute force from 192.0.2.{key}"),
        description: String::new(),
        tags: Vec::new(),
        severity: rules::Severity::High,
        count,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: last,
        event_ids: ids,
        received_at_ms: None,
    }
}

async fn org(store: &supervisor::store::Store, name: &str) -> i64 {
    store.create_org(&Principal::cli(), NewOrg { name: name.into(), ..NewOrg::default() }).await.unwrap().id
}

#[tokio::test]
async fn the_same_incident_again_updates_it() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let acme = org(&store, "Acme").await;
        let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
        let described = |mut u: IncidentUpdate, text: &str| {
            u.description = text.into();
            u
        };
        let first = update(acme, 1, 5, 1_700_000_010_000, (0..60).collect());
        ingest.try_submit(described(first, "Five failures.\nAuthor: Jane Doe\u{0}")).unwrap();
        ingest.flush().await.unwrap();
        // A later report (whose description changes nothing), a stale
        // duplicate, and an exact replay.
        let later = update(acme, 1, 9, 1_700_000_050_000, (50..120).collect());
        ingest.try_submit(described(later, "another text")).unwrap();
        ingest.try_submit(update(acme, 1, 7, 1_700_000_020_000, vec![1])).unwrap();
        ingest.flush().await.unwrap();
        ingest.try_submit(update(acme, 1, 9, 1_700_000_050_000, (50..120).collect())).unwrap();
        ingest.flush().await.unwrap();
        let cli = Principal::cli();
        let list = store.list_records(&cli, Kind::Incident, ListQuery::default()).await.unwrap();
        assert_eq!(list.items.len(), 1, "{}: one incident per source reference", db.name);
        let one = store.get_record(&cli, Kind::Incident, list.items[0].id).await.unwrap();
        assert_eq!(one.count, 9, "{}: counts only grow", db.name);
        assert_eq!(one.description, "Five failures.\nAuthor: Jane Doe", "{}: the rule's, from the creation", db.name);
        assert_eq!(one.last_seen, "2023-11-14T22:14:10Z");
        assert_eq!(
            one.event_ids.as_deref().unwrap(),
            (0..100).collect::<Vec<u64>>(),
            "{}: merged, capped at 100",
            db.name
        );
        assert_eq!(one.history.as_ref().unwrap().len(), 1, "creation is audited once");
        assert_eq!(ingest.stats().created.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

#[tokio::test]
async fn a_burst_of_ten_thousand_updates_is_taken_without_waiting() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let orgs = [org(&store, "A").await, org(&store, "B").await];
        let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
        // try_submit never awaits: the writer cannot even run until this
        // loop yields, so all 10,000 sit in the queue at once.
        for i in 0..10_000u32 {
            let key = i % 1_000;
            let org = orgs[(key % 2) as usize];
            ingest
                .try_submit(update(
                    org,
                    key,
                    u64::from(i / 1_000) + 1,
                    1_700_000_000_000 + i64::from(i),
                    vec![u64::from(i)],
                ))
                .unwrap();
        }
        assert_eq!(ingest.depth(), 10_000);
        ingest.flush().await.unwrap();
        let cli = Principal::cli();
        let counts = store.count_records(&cli, Kind::Incident, ListQuery::default()).await.unwrap();
        assert_eq!(counts.total, 1_000, "{}", db.name);
        let q = ListQuery { sort: Some("count".into()), limit: Some(1), ..ListQuery::default() };
        let lowest = store.list_records(&cli, Kind::Incident, q).await.unwrap();
        assert_eq!(lowest.items[0].count, 10, "{}: every key saw its 10th report", db.name);
    }
}

#[tokio::test]
async fn a_full_queue_refuses_instead_of_blocking() {
    let db = backends().await.remove(0);
    let store = open(&db, StoreConfig::default()).await;
    let acme = org(&store, "Acme").await;
    let (ingest, _task) = Ingest::start(store.clone(), IngestConfig { queue: 4, max_batch: 2 });
    for i in 0..4 {
        ingest.try_submit(update(acme, i, 1, 1_700_000_000_000, vec![])).unwrap();
    }
    assert!(matches!(ingest.try_submit(update(acme, 9, 1, 1_700_000_000_000, vec![])), Err(StoreError::QueueFull(4))));
    // The blocking flavour waits for room instead, and nothing is lost.
    ingest.submit(update(acme, 9, 1, 1_700_000_000_000, vec![])).await.unwrap();
    ingest.flush().await.unwrap();
    let counts = store.count_records(&Principal::cli(), Kind::Incident, ListQuery::default()).await.unwrap();
    assert_eq!(counts.total, 5);
    assert_eq!(ingest.stats().refused.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn updates_for_unknown_orgs_are_dropped_not_retried_forever() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let acme = org(&store, "Acme").await;
        let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
        ingest.try_submit(update(9_999, 1, 1, 1_700_000_000_000, vec![])).unwrap();
        ingest.try_submit(update(supervisor::store::SUPER_GLOBAL, 2, 1, 1_700_000_000_000, vec![])).unwrap();
        ingest.try_submit(update(acme, 3, 1, 1_700_000_000_000, vec![])).unwrap();
        ingest.flush().await.unwrap();
        let stats = ingest.stats();
        assert_eq!(stats.orphaned.load(std::sync::atomic::Ordering::Relaxed), 2, "{}", db.name);
        assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
        let counts = store.count_records(&Principal::cli(), Kind::Incident, ListQuery::default()).await.unwrap();
        assert_eq!(counts.total, 1);
    }
}

#[tokio::test]
async fn created_incidents_record_their_event_to_incident_latency() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let acme = org(&store, "Acme").await;
        let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
        assert_eq!(ingest.stats().latency().count, 0);
        // Received 250 s ago (the store's clock is the system clock here).
        let received = store.now_ms() - 250_000;
        let first = IncidentUpdate { received_at_ms: Some(received), ..update(acme, 1, 5, 1_700_000_010_000, vec![1]) };
        ingest.try_submit(first.clone()).unwrap();
        ingest.try_submit(update(acme, 2, 5, 1_700_000_010_000, vec![2])).unwrap();
        ingest.flush().await.unwrap();
        // Reporting an existing incident again is not a new detection.
        ingest.try_submit(IncidentUpdate { count: 6, ..first }).unwrap();
        ingest.flush().await.unwrap();
        let l = ingest.stats().latency();
        assert_eq!(l.count, 1, "{}: one created incident with a known receive time", db.name);
        assert!((250_000..310_000).contains(&l.p50_ms), "{}: {l:?}", db.name);
        assert_eq!(l.p50_ms, l.max_ms);
    }
}

/// Issue 11 (text fields accept NUL): incident keys and titles quote log
/// lines, and PostgreSQL refuses NUL in text, so one such line made every
/// batch holding it fail and the writer retry it forever. Control
/// characters are now written as escapes and the incident is kept.
#[tokio::test]
async fn a_nul_in_a_pipeline_incident_is_escaped_not_retried_forever() {
    for db in backends().await {
        let store = open(&db, StoreConfig::default()).await;
        let acme = org(&store, "Acme").await;
        let (ingest, _task) = Ingest::start(store.clone(), IngestConfig::default());
        let mut nul = update(acme, 7, 1, 1_700_000_000_000, vec![1]);
        nul.key = "user=ro\u{0}ot".into();
        nul.title = "SSH brute force against ro\u{0}ot\u{1b}[2J".into();
        ingest.try_submit(nul).unwrap();
        ingest.try_submit(update(acme, 8, 1, 1_700_000_000_000, vec![2])).unwrap();
        let flushed = tokio::time::timeout(std::time::Duration::from_secs(20), ingest.flush()).await;
        assert!(matches!(flushed, Ok(Ok(()))), "{}: the batch was not written", db.name);
        let cli = Principal::cli();
        let q = ListQuery { sort: Some("id".into()), ..ListQuery::default() };
        let records = store.list_records(&cli, Kind::Incident, q).await.unwrap().items;
        assert_eq!(records.len(), 2, "{}", db.name);
        // One batch, written in no particular order: find it by its key.
        let escaped = records.iter().find(|r| r.source_ref.as_deref().is_some_and(|r| r.contains("|user=ro\\u{0}ot|")));
        let escaped = escaped.unwrap_or_else(|| panic!("{}: {records:?}", db.name));
        assert_eq!(escaped.title, "SSH brute force against ro\\u{0}ot\\u{1b}[2J", "{}", db.name);
        assert_eq!(ingest.stats().errors.load(std::sync::atomic::Ordering::Relaxed), 0, "{}", db.name);
    }
}

//! Searches over real Parquet files written by the worker's writer:
//! tenancy by construction, read-only SQL, filters and pages, histograms,
//! an incident's events, pruning, and every limit hit on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};
use search::{Cursor, EventFilter, SearchConfig, SearchError, Searcher, SqlQuery, TimeRange};
use serde_json::Value;
use worker::{EventWriter, EventWriterConfig};

const DAY: i64 = 86_400_000_000_000;
/// 2026-11-22T00:00:00Z.
const NOV22: i64 = 1_795_305_600 * 1_000_000_000;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-search-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn event(line: &str, org: u32) -> Event {
    let now = EventTime::from_unix(1_795_400_000, 0, 0);
    let mut e = Parser::new().parse(Bytes::copy_from_slice(line.as_bytes()), now);
    DeviceParsers::builtin().unwrap().classify(&mut e);
    e.org_id = Some(OrgId(org));
    e.org = Some(format!("org-{org}").into());
    e
}

/// An sshd failure at `secs` after 2026-11-22T00:00:00Z from `ip`.
fn failure(secs: i64, ip: &str, user: &str) -> String {
    let t = jiff::Timestamp::from_nanosecond(i128::from(NOV22 + secs * 1_000_000_000)).unwrap();
    format!("<38>1 {t} web-03 sshd 2311 - - Failed password for {user} from {ip} port 51234 ssh2")
}

/// Org 2: 300 failures on Nov 22 (from 203.0.113.45 every 10th, else
/// 198.51.100.x) and 50 on Nov 21; org 3: 200 on Nov 22 from 192.0.2.9.
/// Ids: org 2 from 1, org 3 from 10,001.
fn store(tag: &str) -> PathBuf {
    let dir = temp(tag);
    let mut w =
        EventWriter::open(EventWriterConfig::new(&dir, "node-1"), EventTime::from_unix(1_795_400_000, 0, 0)).unwrap();
    for i in 0..300 {
        let ip = if i % 10 == 0 { "203.0.113.45".to_owned() } else { format!("198.51.100.{}", i % 200) };
        w.append(i as u64 + 1, &event(&failure(i * 60, &ip, "root"), 2)).unwrap();
        // Several files per day, as flushes make them.
        if i % 100 == 99 {
            w.flush().unwrap();
        }
    }
    for i in 0..50 {
        w.append(1_000 + i as u64, &event(&failure(i * 60 - 86_400, "198.51.100.7", "admin"), 2)).unwrap();
    }
    for i in 0..200 {
        w.append(10_001 + i as u64, &event(&failure(i * 30, "192.0.2.9", "oracle"), 3)).unwrap();
    }
    w.flush().unwrap();
    dir
}

fn searcher(dir: &std::path::Path) -> Searcher {
    Searcher::new(SearchConfig::new(dir.join("events"))).unwrap()
}

fn nov22() -> TimeRange {
    TimeRange::new(NOV22, NOV22 + DAY)
}

async fn sql(s: &Searcher, orgs: &[u32], text: &str) -> Result<search::Answer, SearchError> {
    s.sql(orgs, &SqlQuery { sql: text.to_owned(), range: nov22(), limit: 1_000 }).await
}

async fn count(s: &Searcher, orgs: &[u32], text: &str) -> i64 {
    let answer = sql(s, orgs, text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
    answer.rows.first().and_then(|r| r.first()).and_then(Value::as_i64).unwrap_or_else(|| panic!("{text}: {answer:?}"))
}

#[tokio::test]
async fn a_query_sees_the_callers_orgs_and_nothing_else() {
    let dir = store("scope");
    let s = searcher(&dir);
    assert_eq!(count(&s, &[2], "SELECT count(*) FROM events").await, 300);
    assert_eq!(count(&s, &[3], "SELECT count(*) FROM events").await, 200);
    assert_eq!(count(&s, &[2, 3], "SELECT count(*) FROM events").await, 500);
    // However it asks for org 3, a query of org 2 gets none of its events.
    for attempt in [
        "SELECT count(*) FROM events WHERE org_id = 3",
        "SELECT count(*) FROM (SELECT * FROM events UNION ALL SELECT * FROM events WHERE org_id = 3) x WHERE org_id = 3",
        "SELECT (SELECT count(*) FROM events WHERE org = 'org-3')",
        "SELECT count(*) FROM datafusion.public.events WHERE src_ip = '192.0.2.9'",
        "WITH o AS (SELECT * FROM events WHERE user = 'oracle') SELECT count(*) FROM o",
    ] {
        assert_eq!(count(&s, &[2], attempt).await, 0, "{attempt}");
    }
    // Nothing reads files or tables by name.
    let org3 = dir.join("events/org=3");
    for attempt in [
        format!("SELECT * FROM '{}/'", org3.display()),
        format!("SELECT * FROM read_parquet('{}')", org3.display()),
        "SELECT * FROM generate_series(1, 10)".to_owned(),
        "SELECT * FROM information_schema.tables".to_owned(),
        "SELECT * FROM events_raw".to_owned(),
    ] {
        let err = sql(&s, &[2], &attempt).await.expect_err(&attempt);
        assert!(matches!(err, SearchError::Query(_)), "{attempt}: {err:?}");
    }
    // An empty scope is an empty table, not an error.
    assert_eq!(count(&s, &[], "SELECT count(*) FROM events").await, 0);
    assert_eq!(count(&s, &[9], "SELECT count(*) FROM events").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn only_one_select_runs() {
    let dir = store("readonly");
    let s = searcher(&dir);
    for bad in [
        format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}/events/org=3/'", dir.display()),
        "COPY (SELECT * FROM events) TO '/tmp/out.parquet'".to_owned(),
        "SET datafusion.execution.target_partitions = 1".to_owned(),
        "SELECT 1; SELECT 2".to_owned(),
        "DROP TABLE events".to_owned(),
        "INSERT INTO events SELECT * FROM events".to_owned(),
        "CREATE VIEW v AS SELECT * FROM events".to_owned(),
        "SELECT * INTO t FROM events".to_owned(),
        "EXPLAIN SELECT * FROM events".to_owned(),
    ] {
        let err = sql(&s, &[2], &bad).await.expect_err(&bad);
        assert!(matches!(err, SearchError::Refused(_)), "{bad}: {err:?}");
        assert!(err.to_string().contains("SELECT"), "says what is allowed: {err}");
    }
    let err = sql(&s, &[2], "SELEC * FROM events").await.unwrap_err();
    assert!(matches!(err, SearchError::Query(_)) && err.to_string().contains("syntax"), "{err}");
    let err = sql(&s, &[2], "SELECT nope FROM events").await.unwrap_err();
    assert!(matches!(err, SearchError::Query(_)) && err.to_string().contains("nope"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_analysts_functions_work() {
    let dir = store("functions");
    let s = searcher(&dir);
    assert_eq!(count(&s, &[2], "SELECT count(*) FROM events WHERE cidr_match(src_ip, '203.0.113.0/24')").await, 30);
    assert_eq!(count(&s, &[2], "SELECT count(*) FROM events WHERE cidr_match(src_ip, '198.51.100.0/24')").await, 270);
    assert_eq!(count(&s, &[2], "SELECT count(*) FROM events WHERE regexp_like(message, 'for r[o]+t ')").await, 300);
    assert_eq!(count(&s, &[2], "SELECT count(*) FROM events WHERE message ~ '^Failed'").await, 300);
    let hours =
        sql(&s, &[2], "SELECT date_bin(INTERVAL '1 hour', time) AS h, count(*) AS n FROM events GROUP BY h ORDER BY h")
            .await
            .unwrap();
    assert_eq!(hours.rows.len(), 5, "300 minutes: five hours");
    assert_eq!(hours.rows[0], [Value::from("2026-11-22T00:00:00.000000000Z"), Value::from(60)]);
    let err = sql(&s, &[2], "SELECT count(*) FROM events WHERE cidr_match(src_ip, 'not-a-net')").await.unwrap_err();
    assert!(matches!(err, SearchError::Query(_)) && err.to_string().contains("not-a-net"), "{err}");
    // Columns and types come back with the rows.
    let a = sql(&s, &[2], "SELECT event_id, time, src_ip, raw FROM events ORDER BY event_id LIMIT 1").await.unwrap();
    let names: Vec<&str> = a.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["event_id", "time", "src_ip", "raw"]);
    assert_eq!(a.rows[0][0], Value::from(1));
    assert_eq!(a.rows[0][2], Value::from("203.0.113.45"));
    assert!(a.rows[0][3].as_str().unwrap().contains("Failed password for root"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_date_layout_and_row_group_statistics_prune() {
    let dir = store("prune");
    let s = searcher(&dir);
    let a = sql(&s, &[2], "SELECT count(*) FROM events").await.unwrap();
    assert_eq!((a.stats.partitions, a.stats.partitions_pruned), (1, 1), "Nov 21 not read: {:?}", a.stats);
    assert_eq!(a.stats.files, 3, "one file per flush of Nov 22: {:?}", a.stats);
    // An hour of Nov 22: the files of other hours are skipped by their
    // statistics on `time`.
    let hour = TimeRange::new(NOV22 + 4 * 3_600_000_000_000, NOV22 + 5 * 3_600_000_000_000);
    let q = SqlQuery { sql: "SELECT count(*) FROM events".into(), range: hour, limit: 10 };
    let a = s.sql(&[2], &q).await.unwrap();
    assert_eq!(a.rows[0][0], Value::from(60));
    // Hour 4 is in the third file only.
    assert_eq!(a.stats.files_pruned + a.stats.row_groups_pruned, 2, "{:?}", a.stats);
    assert!(a.stats.rows_scanned <= 100, "{:?}", a.stats);
    // Nov 22 whole (read without the time filter) and the part of Nov 21
    // from 00:30 (through it): 300 + 20.
    let across = TimeRange::new(NOV22 - DAY + 30 * 60_000_000_000, NOV22 + DAY);
    let q = SqlQuery { sql: "SELECT count(*), count(DISTINCT event_id) FROM events".into(), range: across, limit: 10 };
    let a = s.sql(&[2], &q).await.unwrap();
    assert_eq!(a.rows[0], [Value::from(320), Value::from(320)], "{:?}", a.stats);
    let both = TimeRange::new(NOV22 - DAY, NOV22 + DAY);
    let a = s.sql(&[2], &SqlQuery { range: both, ..q }).await.unwrap();
    assert_eq!(a.rows[0], [Value::from(350), Value::from(350)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pages_go_newest_first_and_every_event_comes_once() {
    let dir = store("pages");
    let s = searcher(&dir);
    let filter = EventFilter { src_ip: Some("198.51.100.0/24".into()), ..EventFilter::default() };
    let mut cursor: Option<Cursor> = None;
    let mut seen = Vec::new();
    loop {
        let page = s.events(&[2, 3], nov22(), &filter, 100, cursor).await.unwrap();
        seen.extend(
            page.items.iter().map(|e| (e["time"].as_str().unwrap().to_owned(), e["event_id"].as_u64().unwrap())),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 270);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    sorted.dedup();
    assert_eq!(sorted.len(), 270, "each once");

    let one = |f: EventFilter| {
        let s = s.clone();
        async move { s.events(&[2, 3], nov22(), &f, 1_000, None).await.unwrap().items.len() }
    };
    assert_eq!(one(EventFilter { src_ip: Some("203.0.113.45".into()), ..Default::default() }).await, 30);
    assert_eq!(one(EventFilter { user: Some("oracle".into()), ..Default::default() }).await, 200);
    assert_eq!(one(EventFilter { text: Some("FOR ORACLE".into()), ..Default::default() }).await, 200);
    assert_eq!(one(EventFilter { text: Some("100%".into()), ..Default::default() }).await, 0, "% is literal");
    assert_eq!(one(EventFilter { event_type: Some("ssh.auth.failure".into()), ..Default::default() }).await, 500);
    assert_eq!(one(EventFilter { host: Some("web-04".into()), ..Default::default() }).await, 0);
    let bad = EventFilter { src_ip: Some("300.1.1.1".into()), ..Default::default() };
    assert!(matches!(s.events(&[2], nov22(), &bad, 10, None).await, Err(SearchError::Invalid(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn histograms_count_every_bucket_and_an_incidents_events_come_by_id() {
    let dir = store("histogram");
    let s = searcher(&dir);
    let h = s.histogram(&[2], nov22(), &EventFilter::default(), 3_600).await.unwrap();
    assert_eq!(h.buckets.len(), 24);
    assert_eq!(h.buckets[0].time, "2026-11-22T00:00:00.000000000Z");
    let counts: Vec<u64> = h.buckets.iter().map(|b| b.count).collect();
    assert_eq!(&counts[..6], [60, 60, 60, 60, 60, 0]);
    assert_eq!(counts.iter().sum::<u64>(), 300);
    // 86,400 one-second buckets are more than a histogram has: the
    // narrowest width that fits is used, and said.
    let fine = s.histogram(&[2], nov22(), &EventFilter::default(), 1).await.unwrap();
    assert_eq!((fine.interval_secs, fine.buckets.len()), (9, 9_600));
    assert_eq!(fine.buckets.iter().map(|b| b.count).sum::<u64>(), 300);

    let page = s.by_ids(&[2], nov22(), &[5, 1, 3, 10_001, 999_999]).await.unwrap();
    let ids: Vec<u64> = page.items.iter().map(|e| e["event_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 3, 5], "oldest first; org 3's id and an unknown one are not there");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn every_limit_is_a_clear_error() {
    let dir = store("limits");
    // Rows: cut at the limit, and said so.
    let s = searcher(&dir);
    let q = SqlQuery { sql: "SELECT event_id FROM events".into(), range: nov22(), limit: 7 };
    let a = s.sql(&[2], &q).await.unwrap();
    assert_eq!((a.rows.len(), a.truncated), (7, true));
    let q = SqlQuery { limit: 300, ..q };
    assert!(!s.sql(&[2], &q).await.unwrap().truncated);
    assert!(matches!(s.sql(&[2], &SqlQuery { limit: 0, ..q.clone() }).await, Err(SearchError::Invalid(_))));
    assert!(matches!(s.sql(&[2], &SqlQuery { limit: 10_001, ..q.clone() }).await, Err(SearchError::Invalid(_))));

    // Memory: a query that must hold every raw line, under a small pool.
    let small =
        Searcher::new(SearchConfig { memory_limit: 64 << 10, ..SearchConfig::new(dir.join("events")) }).unwrap();
    let err = small
        .sql(
            &[2, 3],
            &SqlQuery { sql: "SELECT array_agg(raw ORDER BY message) FROM events".into(), range: nov22(), limit: 1 },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SearchError::Memory { .. }), "{err:?}");
    assert!(err.to_string().contains("MiB"), "{err}");

    // Time, and the cap on searches at once: a join of every event with
    // every other (and again) runs far past a short limit.
    let slow = Searcher::new(SearchConfig {
        time_limit: Duration::from_millis(1_500),
        concurrency: 1,
        ..SearchConfig::new(dir.join("events"))
    })
    .unwrap();
    let heavy = SqlQuery {
        sql: "SELECT count(*) FROM events a, events b, events c, events d \
              WHERE length(a.message) + length(b.message) > length(c.message) + length(d.message)"
            .into(),
        range: nov22(),
        limit: 1,
    };
    let running = {
        let (slow, heavy) = (slow.clone(), heavy.clone());
        tokio::spawn(async move { slow.sql(&[2, 3], &heavy).await })
    };
    while slow.counters().running.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = slow.sql(&[2], &SqlQuery { sql: "SELECT 1".into(), range: nov22(), limit: 1 }).await.unwrap_err();
    assert!(matches!(busy, SearchError::Busy { running: 1 }), "{busy:?}");
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err, SearchError::TimedOut { .. }), "{err:?}");
    // The query really stops (not only its caller's wait), and its slot
    // is free again.
    let stopped = std::time::Instant::now();
    while slow.counters().running.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(stopped.elapsed() < Duration::from_secs(20), "the timed-out query still runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(slow.sql(&[2], &SqlQuery { sql: "SELECT 1".into(), range: nov22(), limit: 1 }).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_compaction_changes_what_is_read_not_what_is_found() {
    let dir = store("compaction");
    let s = searcher(&dir);
    let before = sql(&s, &[2], "SELECT count(*), count(DISTINCT event_id) FROM events").await.unwrap();
    assert_eq!(before.rows[0], [Value::from(300), Value::from(300)]);
    assert_eq!(before.stats.files, 3);
    let day = dir.join("events/org=2/date=2026-11-22");
    for e in std::fs::read_dir(&day).unwrap() {
        let f = std::fs::File::options().write(true).open(e.unwrap().path()).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(7_200)).unwrap();
    }
    let compactor =
        worker::compact::Compactor::new(worker::compact::CompactConfig::new(dir.join("events"), "node-1")).unwrap();
    let r = compactor.run(std::time::SystemTime::now()).unwrap();
    assert_eq!((r.outputs, r.inputs), (1, 3));
    // In the grace period the inputs are still there, and not counted.
    let after = sql(&s, &[2], "SELECT count(*), count(DISTINCT event_id) FROM events").await.unwrap();
    assert_eq!(after.rows, before.rows);
    assert_eq!(after.stats.files, 1);
    compactor.run(std::time::SystemTime::now() + Duration::from_secs(3_600)).unwrap();
    let done = sql(&s, &[2], "SELECT count(*), count(DISTINCT event_id) FROM events").await.unwrap();
    assert_eq!((done.rows.clone(), done.stats.files), (before.rows, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

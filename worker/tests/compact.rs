//! Compaction on real files: small files merged into one sorted by time,
//! readers seeing the inputs or the merged file and never both or
//! neither — also when the compactor is killed at any step — and the
//! files it must not touch left alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow_array::{Array, TimestampNanosecondArray, UInt64Array};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parsers::{Event, EventTime, OrgId, Parser};
use worker::compact::{CompactConfig, Compactor, visible_files};
use worker::{EventWriter, EventWriterConfig};

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-compact-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn event(secs: i64) -> Event {
    let t = jiff::Timestamp::from_second(1_795_305_600 + secs).unwrap();
    let line = format!("<38>1 {t} web-01 sshd 1 - - Failed password for root from 10.0.0.{} port 1 ssh2", secs % 250);
    let mut e = Parser::new().parse(Bytes::from(line), EventTime::from_unix(1_795_400_000, 0, 0));
    e.org_id = Some(OrgId(2));
    e
}

/// Ten flushes of 30 events of org 2, times interleaved across files (so
/// the merge has to sort); ids 1..=300.
fn write(dir: &Path, node: &str) -> PathBuf {
    write_flushes(dir, node, 0..10)
}

/// Flushes `flushes` of [`write`] by node `node`.
fn write_flushes(dir: &Path, node: &str, flushes: std::ops::Range<u64>) -> PathBuf {
    let mut w =
        EventWriter::open(EventWriterConfig::new(dir, node), EventTime::from_unix(1_795_400_000, 0, 0)).unwrap();
    for f in flushes {
        for i in 0..30u64 {
            let id = f * 30 + i + 1;
            w.append(id, &event(((i * 10 + f) * 7 % 3000) as i64)).unwrap();
        }
        w.flush().unwrap();
    }
    dir.join("events/org=2/date=2026-11-22")
}

fn age(dir: &Path, by: Duration) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }
}

/// (ids, times) of every row in the files readers see.
fn read(dir: &Path) -> (Vec<u64>, Vec<i64>) {
    let (mut ids, mut times) = (Vec::new(), Vec::new());
    for path in visible_files(dir).unwrap() {
        for batch in ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let id = batch.column_by_name("id").unwrap().as_any().downcast_ref::<UInt64Array>().unwrap().clone();
            let t = batch.column_by_name("time").unwrap();
            let t = t.as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
            ids.extend(id.values().iter().copied());
            times.extend((0..t.len()).map(|i| t.value(i)));
        }
    }
    (ids, times)
}

fn exactly_once(dir: &Path, what: &str) {
    let (ids, _) = read(dir);
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 300, "{what}: every row once, not {}", ids.len());
    assert_eq!(unique, (1..=300).collect(), "{what}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    n.sort();
    n
}

fn config(root: &Path, node: &str) -> CompactConfig {
    CompactConfig {
        min_age: Duration::from_secs(3_600),
        grace: Duration::from_secs(300),
        ..CompactConfig::new(root.join("events"), node)
    }
}

#[test]
fn small_files_become_one_sorted_file_and_the_inputs_go_after_the_grace() {
    let root = temp("merge");
    let day = write(&root, "node-1");
    assert_eq!(visible_files(&day).unwrap().len(), 10);
    let c = Compactor::new(config(&root, "node-1")).unwrap();
    // Too young: nothing happens.
    assert_eq!(c.run(SystemTime::now()).unwrap().outputs, 0);
    age(&day, Duration::from_secs(7_200));
    let r = c.run(SystemTime::now()).unwrap();
    assert_eq!((r.outputs, r.inputs, r.rows, r.deleted), (1, 10, 300, 0), "{r:?}");
    let visible = visible_files(&day).unwrap();
    assert_eq!(visible.len(), 1, "{visible:?}");
    assert!(visible[0].file_name().unwrap().to_str().unwrap().starts_with("compact-node-1-"));
    exactly_once(&day, "after the switch");
    let (_, times) = read(&day);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
    assert_eq!(names(&day).len(), 12, "inputs kept through the grace: {:?}", names(&day));
    // A second pass within the grace changes nothing.
    assert_eq!(c.run(SystemTime::now()).unwrap(), Default::default());
    // After it, the inputs and the list of them go.
    let r = c.run(SystemTime::now() + Duration::from_secs(600)).unwrap();
    assert_eq!(r.deleted, 10);
    assert_eq!(names(&day).len(), 1, "{:?}", names(&day));
    exactly_once(&day, "after the grace");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn killed_at_any_step_nothing_is_lost_or_doubled() {
    // Each crash state is made from a real compaction's files.
    for step in ["writing", "listed", "switched", "deleting"] {
        let root = temp(&format!("kill-{step}"));
        let day = write(&root, "node-1");
        age(&day, Duration::from_secs(7_200));
        let c = Compactor::new(config(&root, "node-1")).unwrap();
        c.run(SystemTime::now()).unwrap();
        let merged = visible_files(&day).unwrap().remove(0);
        let tmp = day.join(format!(".{}.tmp", merged.file_name().unwrap().to_str().unwrap()));
        let sidecar = merged.with_extension("inputs");
        match step {
            // Killed before the list of inputs: only the temporary file.
            "writing" => {
                std::fs::rename(&merged, &tmp).unwrap();
                std::fs::remove_file(&sidecar).unwrap();
            }
            // Killed between the list and the switch.
            "listed" => std::fs::rename(&merged, &tmp).unwrap(),
            "switched" => {}
            // Killed while deleting the inputs.
            "deleting" => {
                let inputs = std::fs::read_to_string(&sidecar).unwrap();
                for name in inputs.lines().take(4) {
                    std::fs::remove_file(day.join(name)).unwrap();
                }
            }
            _ => unreachable!(),
        }
        exactly_once(&day, &format!("killed while {step}"));
        // The restarted compactor cleans up and finishes.
        let c = Compactor::new(config(&root, "node-1")).unwrap();
        c.recover().unwrap();
        exactly_once(&day, &format!("recovered after {step}"));
        age(&day, Duration::from_secs(7_200));
        c.run(SystemTime::now()).unwrap();
        c.run(SystemTime::now() + Duration::from_secs(600)).unwrap();
        exactly_once(&day, &format!("compacted after {step}"));
        assert_eq!(names(&day).len(), 1, "{step}: {:?}", names(&day));
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn other_nodes_and_stream_positioned_files_are_left_alone() {
    let root = temp("alone");
    let day = write(&root, "node-1");
    // A cluster worker's file carries its stream position: committed
    // through the commit record, not compacted here.
    let first = visible_files(&day).unwrap().remove(0);
    let name = first.file_name().unwrap().to_str().unwrap().replace(".parquet", "-s42.parquet");
    std::fs::rename(&first, day.join(&name)).unwrap();
    age(&day, Duration::from_secs(7_200));
    let r = Compactor::new(config(&root, "node-2")).unwrap().run(SystemTime::now()).unwrap();
    assert_eq!(r.outputs, 0, "another node's files");
    let r = Compactor::new(config(&root, "node-1")).unwrap().run(SystemTime::now()).unwrap();
    assert_eq!((r.outputs, r.inputs), (1, 9));
    assert!(names(&day).contains(&name));
    exactly_once(&day, "positioned file kept");
    let _ = std::fs::remove_dir_all(&root);
}

/// A cluster worker's files (`part-<node>-p<partition>-f<fence>-…-s<position>`)
/// are merged once their commit record covers them and not before: what
/// is not committed yet may still be removed by a takeover.
#[test]
fn a_cluster_workers_files_are_merged_only_once_committed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let root = temp("committed");
    let day = write(&root, "w1-p1-f3");
    // Positions 10, 20, … 100 in write order.
    for (k, path) in visible_files(&day).unwrap().into_iter().enumerate() {
        let name =
            path.file_name().unwrap().to_str().unwrap().replace(".parquet", &format!("-s{}.parquet", (k + 1) * 10));
        std::fs::rename(&path, day.join(name)).unwrap();
    }
    age(&day, Duration::from_secs(7_200));
    let committed_through = Arc::new(AtomicU64::new(50));
    let committed = {
        let through = committed_through.clone();
        move |name: &str| {
            let position =
                name.strip_suffix(".parquet").and_then(|n| n.rsplit_once("-s")).and_then(|(_, p)| p.parse().ok());
            Some(position.is_some_and(|p: u64| p <= through.load(Ordering::Relaxed)))
        }
    };
    let c = Compactor::new(CompactConfig {
        eligible: worker::compact::Eligible::Committed(Arc::new(committed)),
        ..config(&root, "w1")
    })
    .unwrap();
    let r = c.run(SystemTime::now()).unwrap();
    assert_eq!((r.outputs, r.inputs), (1, 5), "only the five committed files: {r:?}");
    exactly_once(&day, "half committed");
    let visible = visible_files(&day).unwrap();
    assert_eq!(visible.len(), 6, "the merged file and the five uncommitted: {visible:?}");
    // The rest is committed later: merged on the next pass.
    committed_through.store(100, Ordering::Relaxed);
    let r = c.run(SystemTime::now()).unwrap();
    assert_eq!((r.outputs, r.inputs), (1, 5), "{r:?}");
    exactly_once(&day, "all committed");
    assert_eq!(visible_files(&day).unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&root);
}

/// `vigil run`'s worker shards write as `<node>` and `<node>-s<i>`: the
/// node's one compactor merges them all, whatever the shard count was when
/// they were written; another node's files stay.
#[test]
fn the_nodes_compactor_merges_its_shards_files() {
    let root = temp("shards");
    let day = write_flushes(&root, "vigil", 0..4);
    write_flushes(&root, "vigil-s1", 4..7);
    write_flushes(&root, "vigil-s12", 7..10);
    write_flushes(&root, "vigil-sx", 0..1);
    age(&day, Duration::from_secs(7_200));
    let r = Compactor::new(config(&root, "vigil")).unwrap().run(SystemTime::now()).unwrap();
    assert_eq!((r.inputs, r.rows), (10, 300), "{r:?}");
    let left = names(&day);
    assert!(left.iter().any(|n| n.starts_with("part-vigil-sx-")), "another node's file left: {left:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Two nodes on one shared root where one name starts the other (`w1`,
/// `w1-a`): each recovers and finishes only its own merges, so neither
/// removes the other's list of inputs before its switch (which would show
/// the inputs and the merged file both).
#[test]
fn a_node_whose_name_starts_anothers_leaves_its_merges_alone() {
    let root = temp("prefix");
    let day = write(&root, "w1-a");
    age(&day, Duration::from_secs(7_200));
    let theirs = Compactor::new(config(&root, "w1-a")).unwrap();
    theirs.run(SystemTime::now()).unwrap();
    // Their merge killed between the list of inputs and the switch.
    let merged = visible_files(&day).unwrap().remove(0);
    let tmp = day.join(format!(".{}.tmp", merged.file_name().unwrap().to_str().unwrap()));
    std::fs::rename(&merged, &tmp).unwrap();
    let before = names(&day);
    let mine = Compactor::new(config(&root, "w1")).unwrap();
    assert_eq!(mine.recover().unwrap(), 0, "w1 removed w1-a's leftovers");
    let r = mine.run(SystemTime::now() + Duration::from_secs(600)).unwrap();
    assert_eq!(r, Default::default(), "w1 touched w1-a's files");
    assert_eq!(names(&day), before);
    exactly_once(&day, "another node's merge in progress");
    let _ = std::fs::remove_dir_all(&root);
}

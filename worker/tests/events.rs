//! Events written as Parquet and read back: partitions, every row once,
//! columns intact, zstd, rolling by size, nothing half-written left.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{files, read};

use std::fs::File;
use std::path::PathBuf;

use arrow_array::{Array, BinaryArray, StringArray, UInt64Array};
use bytes::Bytes;
use parquet::file::reader::FileReader;
use parsers::{DeviceParsers, Event, EventTime, OrgId, Parser};
use worker::{EventWriter, EventWriterConfig};

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-worker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn event(line: &str, org: u32) -> Event {
    let now = EventTime::from_unix(1_795_000_000, 0, 0);
    let mut e = Parser::new().parse(Bytes::copy_from_slice(line.as_bytes()), now);
    DeviceParsers::builtin().unwrap().classify(&mut e);
    e.org_id = Some(OrgId(org));
    e.org = Some(format!("org-{org}").into());
    e.reporter_ip = Some("10.1.0.7".parse().unwrap());
    e
}

const SSH: &str =
    "<38>2026-11-22T10:15:42Z web-03 sshd[2311]: Failed password for root from 203.0.113.45 port 51234 ssh2";
const OTHER_DAY: &str = "<38>1 2026-11-21T23:59:59Z web-03 app - - [origin ip=\"10.0.0.1\"] yesterday";

#[test]
fn events_land_in_org_and_date_partitions_with_every_column() {
    let dir = temp("partitions");
    let mut w =
        EventWriter::open(EventWriterConfig::new(&dir, "node/1"), EventTime::from_unix(1_795_000_000, 0, 0)).unwrap();
    let mut id = 0;
    for org in [3, 4] {
        for _ in 0..5 {
            id += 1;
            w.append(id, &event(SSH, org)).unwrap();
        }
    }
    id += 1;
    w.append(id, &event(OTHER_DAY, 3)).unwrap();
    assert_eq!(w.buffered(), 11);
    let report = w.flush().unwrap();
    assert_eq!((report.files, report.events), (3, 11));
    assert_eq!(w.buffered(), 0);
    assert_eq!(w.flush().unwrap().files, 0, "nothing buffered, nothing written");
    let all = files(&dir);
    let rel: Vec<String> =
        all.iter().map(|p| p.strip_prefix(&dir).unwrap().parent().unwrap().display().to_string()).collect();
    assert_eq!(rel, ["events/org=3/date=2026-11-21", "events/org=3/date=2026-11-22", "events/org=4/date=2026-11-22"]);
    assert!(all.iter().all(|p| p.extension().is_some_and(|e| e == "parquet")), "no temporary files left: {all:?}");
    assert!(all[0].file_name().unwrap().to_str().unwrap().starts_with("part-node_1-"));

    let batches = read(&all[1]);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 5);
    let col = |name: &str| b.column_by_name(name).unwrap().clone();
    let event_type = col("event_type");
    let event_type = event_type.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(event_type.value(0), "ssh.auth.failure");
    let ids = col("id");
    let ids = ids.as_any().downcast_ref::<UInt64Array>().unwrap();
    assert_eq!(ids.values().to_vec(), vec![1, 2, 3, 4, 5]);
    let src = col("src_ip");
    assert_eq!(src.as_any().downcast_ref::<StringArray>().unwrap().value(0), "203.0.113.45");
    let raw = col("raw");
    assert_eq!(raw.as_any().downcast_ref::<BinaryArray>().unwrap().value(0), SSH.as_bytes());
    let org = col("org");
    assert_eq!(org.as_any().downcast_ref::<StringArray>().unwrap().value(0), "org-3");
    let sd = read(&all[0]);
    let sd = sd[0].column_by_name("sd").unwrap().clone();
    assert_eq!(sd.as_any().downcast_ref::<StringArray>().unwrap().value(0), r#"{"origin":{"ip":"10.0.0.1"}}"#);
    assert!(col("user").is_valid(0));
    assert!(col("dst_port").is_null(0));

    // zstd on every column chunk.
    let reader = parquet::file::reader::SerializedFileReader::new(File::open(&all[1]).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    assert!(rg.columns().iter().all(|c| matches!(c.compression(), parquet::basic::Compression::ZSTD(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_partition_is_written_at_once_and_ids_are_kept_in_order() {
    let dir = temp("roll");
    let config = EventWriterConfig { roll_rows: 10, ..EventWriterConfig::new(&dir, "n") };
    let mut w = EventWriter::open(config, EventTime::from_unix(1_795_000_000, 0, 0)).unwrap();
    let mut written = 0;
    for id in 1..=25 {
        written += w.append(id, &event(SSH, 3)).unwrap().events;
    }
    assert_eq!(written, 20, "two files of 10 rolled on size");
    assert_eq!(w.buffered(), 5);
    w.flush().unwrap();
    let all = files(&dir);
    assert_eq!(all.len(), 3);
    let mut ids = Vec::new();
    for f in &all {
        for b in read(f) {
            let c = b.column_by_name("id").unwrap().clone();
            ids.extend(c.as_any().downcast_ref::<UInt64Array>().unwrap().values().iter().copied());
        }
    }
    assert_eq!(ids, (1..=25).collect::<Vec<u64>>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_write_keeps_the_events_for_the_next_flush() {
    let dir = temp("fail");
    let mut w =
        EventWriter::open(EventWriterConfig::new(&dir, "n"), EventTime::from_unix(1_795_000_000, 0, 0)).unwrap();
    // A plain file where the org's partition directory must go.
    std::fs::write(dir.join("events/org=3"), b"in the way").unwrap();
    w.append(1, &event(SSH, 3)).unwrap();
    w.append(2, &event(SSH, 4)).unwrap();
    assert!(w.flush().is_err());
    assert!(w.buffered() >= 1, "nothing is dropped by a failed write");
    std::fs::remove_file(dir.join("events/org=3")).unwrap();
    w.flush().unwrap();
    assert_eq!(w.buffered(), 0);
    let rows: usize = files(&dir).iter().flat_map(|f| read(f)).map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2, "each event written exactly once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_buffers_byte_estimate_is_close_to_the_columns_it_seals() {
    // The worker seals on this estimate to bound its memory; it must not
    // be far below what the columns really take.
    let mut buffer = worker::EventBuffer::new(1 << 20);
    let ufw = "<4>Nov 22 10:00:00 10.0.1.7 kernel: [12.000001] [UFW BLOCK] IN=eth0 OUT= MAC=00:16:3e:5a:11:02:00:16:3e:9c:44:01:08:00 SRC=198.51.100.4 DST=10.0.1.7 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=4 DF PROTO=TCP SPT=4000 DPT=22 WINDOW=29200 RES=0x00 SYN URGP=0";
    let events: Vec<Event> = [SSH, OTHER_DAY, ufw].iter().map(|l| event(l, 1)).collect();
    for i in 0..30_000u64 {
        let mut e = events[(i % 3) as usize].clone();
        e.org_id = Some(OrgId(1 + (i % 10) as u32));
        buffer.append(i, &e).unwrap();
    }
    let estimate = buffer.buffered_bytes();
    let actual: usize = buffer.seal().unwrap().iter().map(worker::Sealed::bytes).sum();
    assert!(estimate * 10 >= actual * 8 && estimate <= actual * 2, "estimate {estimate}, columns {actual}");
}

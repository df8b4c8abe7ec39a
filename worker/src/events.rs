//! Accepted events → Arrow → Parquet (zstd), partitioned by org and event
//! date. Events are buffered per partition; [`EventWriter::flush`] (on the
//! flush interval, and at shutdown) writes each buffered partition as one
//! file, and a partition that reaches the row limit is written at once, so
//! files are rolled by time and by size. What `flush` has returned is on
//! disk: the file is synced before it is renamed into place and the
//! directory after.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use hashbrown::HashMap;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use parsers::{Event, EventTime, Str};

/// What can go wrong writing events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Building the Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.to_owned(), source }
}

/// Writer settings.
#[derive(Clone, Debug)]
pub struct EventWriterConfig {
    /// The data directory; files go under `DIR/events/`.
    pub dir: PathBuf,
    /// This node's name, part of every file name.
    pub node: String,
    /// A partition with this many buffered events is written at once.
    pub roll_rows: usize,
    /// zstd level.
    pub zstd_level: i32,
}

impl EventWriterConfig {
    /// Defaults for `dir` and `node`.
    pub fn new(dir: impl Into<PathBuf>, node: &str) -> EventWriterConfig {
        EventWriterConfig { dir: dir.into(), node: node.to_owned(), roll_rows: 256 * 1024, zstd_level: 3 }
    }
}

/// Columns whose values repeat enough for dictionary encoding.
const DICTIONARY_COLUMNS: &[&str] = &[
    "org",
    "collector",
    "reporter_ip",
    "format",
    "host",
    "app",
    "msgid",
    "vendor",
    "product",
    "product_version",
    "signature_id",
    "name",
    "cef_severity",
    "event_type",
    "user",
    "action",
    "outcome",
    "parse_error",
];

/// What a flush wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Files written.
    pub files: usize,
    /// Events written.
    pub events: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// The Arrow schema of stored events: the event model of SPEC §2 plus the
/// event id. Times are UTC nanoseconds; `time_offset_s` keeps the offset
/// the source wrote; `sd` and `ext` are JSON objects as in `vigil parse`.
pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("time", ts(), false),
        Field::new("time_offset_s", DataType::Int32, false),
        Field::new("received_at", ts(), false),
        Field::new("org_id", DataType::UInt32, true),
        text("org"),
        text("collector"),
        text("reporter_ip"),
        Field::new("format", DataType::Utf8, false),
        Field::new("facility", DataType::UInt8, true),
        Field::new("severity", DataType::UInt8, true),
        text("host"),
        text("app"),
        text("procid"),
        text("msgid"),
        text("sd"),
        text("message"),
        text("vendor"),
        text("product"),
        text("product_version"),
        text("signature_id"),
        text("name"),
        text("cef_severity"),
        text("ext"),
        text("event_type"),
        text("src_ip"),
        Field::new("src_port", DataType::UInt16, true),
        text("dst_ip"),
        Field::new("dst_port", DataType::UInt16, true),
        text("user"),
        text("action"),
        text("outcome"),
        text("parse_error"),
        Field::new("truncated", DataType::Boolean, false),
        Field::new("raw", DataType::Binary, false),
    ]))
}

fn nanos(t: EventTime) -> i64 {
    i64::try_from(t.unix_nanos()).unwrap_or(if t.unix_nanos() < 0 { i64::MIN } else { i64::MAX })
}

fn text_column(rows: &[(u64, Event)], get: impl Fn(&Event) -> Option<&str>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    for (_, e) in rows {
        b.append_option(get(e));
    }
    Arc::new(b.finish())
}

fn opt(s: &Option<Str>) -> Option<&str> {
    s.as_deref()
}

/// One record batch of `rows`, in the column order of [`schema`].
fn to_batch(rows: &[(u64, Event)]) -> Result<RecordBatch, WorkerError> {
    let n = rows.len();
    let mut id = UInt64Builder::with_capacity(n);
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut offset = Int32Builder::with_capacity(n);
    let mut received = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut org_id = UInt32Builder::with_capacity(n);
    let mut facility = UInt8Builder::with_capacity(n);
    let mut severity = UInt8Builder::with_capacity(n);
    let mut src_port = UInt16Builder::with_capacity(n);
    let mut dst_port = UInt16Builder::with_capacity(n);
    let mut truncated = BooleanBuilder::with_capacity(n);
    let mut raw = BinaryBuilder::with_capacity(n, rows.iter().map(|(_, e)| e.raw.len()).sum());
    for (i, e) in rows {
        id.append_value(*i);
        time.append_value(nanos(e.time));
        offset.append_value(e.time.offset_secs());
        received.append_value(nanos(e.received_at));
        org_id.append_option(e.org_id.map(|o| o.0));
        facility.append_option(e.facility);
        severity.append_option(e.severity);
        src_port.append_option(e.src_port);
        dst_port.append_option(e.dst_port);
        truncated.append_value(e.truncated);
        raw.append_value(&e.raw);
    }
    let reporter: Vec<Option<String>> = rows.iter().map(|(_, e)| e.reporter_ip.map(|ip| ip.to_string())).collect();
    let src_ip: Vec<Option<String>> = rows.iter().map(|(_, e)| e.src_ip.map(|ip| ip.to_string())).collect();
    let dst_ip: Vec<Option<String>> = rows.iter().map(|(_, e)| e.dst_ip.map(|ip| ip.to_string())).collect();
    let sd: Vec<Option<String>> = rows.iter().map(|(_, e)| (!e.sd.is_empty()).then(|| e.sd.to_json())).collect();
    let ext: Vec<Option<String>> = rows.iter().map(|(_, e)| (!e.ext.is_empty()).then(|| e.ext.to_json())).collect();
    let owned = |v: &[Option<String>]| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(v.len(), v.len() * 16);
        for s in v {
            b.append_option(s.as_deref());
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(time.finish()),
        Arc::new(offset.finish()),
        Arc::new(received.finish()),
        Arc::new(org_id.finish()),
        text_column(rows, |e| opt(&e.org)),
        text_column(rows, |e| opt(&e.collector)),
        owned(&reporter),
        text_column(rows, |e| Some(e.format.as_str())),
        Arc::new(facility.finish()),
        Arc::new(severity.finish()),
        text_column(rows, |e| opt(&e.host)),
        text_column(rows, |e| opt(&e.app)),
        text_column(rows, |e| opt(&e.procid)),
        text_column(rows, |e| opt(&e.msgid)),
        owned(&sd),
        text_column(rows, |e| opt(&e.message)),
        text_column(rows, |e| opt(&e.vendor)),
        text_column(rows, |e| opt(&e.product)),
        text_column(rows, |e| opt(&e.product_version)),
        text_column(rows, |e| opt(&e.signature_id)),
        text_column(rows, |e| opt(&e.name)),
        text_column(rows, |e| opt(&e.cef_severity)),
        owned(&ext),
        text_column(rows, |e| opt(&e.event_type)),
        owned(&src_ip),
        Arc::new(src_port.finish()),
        owned(&dst_ip),
        Arc::new(dst_port.finish()),
        text_column(rows, |e| opt(&e.user)),
        text_column(rows, |e| opt(&e.action)),
        text_column(rows, |e| opt(&e.outcome)),
        text_column(rows, |e| opt(&e.parse_error)),
        Arc::new(truncated.finish()),
        Arc::new(raw.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Org id and UTC day of an event: its partition.
type PartitionKey = (u32, i64);

/// `YYYY-MM-DD` of a UTC day number.
fn day_name(day: i64) -> String {
    jiff::Timestamp::from_second(day.saturating_mul(86_400))
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_else(|_| "out-of-range".to_owned())
}

/// Keeps file names to letters, digits, `-` and `_`.
fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Buffers events per partition and writes them as Parquet files.
pub struct EventWriter {
    config: EventWriterConfig,
    node: String,
    started_ms: i64,
    seq: u64,
    buffers: HashMap<PartitionKey, Vec<(u64, Event)>>,
    buffered: usize,
    props: WriterProperties,
}

impl EventWriter {
    /// A writer under `config.dir/events`, created if missing.
    pub fn open(config: EventWriterConfig, now: EventTime) -> Result<EventWriter, WorkerError> {
        let root = config.dir.join("events");
        fs::create_dir_all(&root).map_err(io(&root))?;
        let level = ZstdLevel::try_new(config.zstd_level)?;
        // Dictionaries only where values repeat (orgs, hosts, apps, types);
        // building one for raw lines and messages costs more than it saves.
        let mut props =
            WriterProperties::builder().set_compression(Compression::ZSTD(level)).set_dictionary_enabled(false);
        for column in DICTIONARY_COLUMNS {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), true);
        }
        let props = props.build();
        Ok(EventWriter {
            node: file_safe(&config.node),
            config,
            started_ms: i64::try_from(now.unix_nanos() / 1_000_000).unwrap_or(0),
            seq: 0,
            buffers: HashMap::new(),
            buffered: 0,
            props,
        })
    }

    /// Events buffered and not yet on disk.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Buffers one accepted event under its id. A partition that reaches
    /// the row limit is written now.
    pub fn append(&mut self, id: u64, event: Event) -> Result<FlushReport, WorkerError> {
        let key = (event.org_id.map_or(1, |o| o.0), event.time.unix_secs().div_euclid(86_400));
        let rows = self.buffers.entry(key).or_default();
        rows.push((id, event));
        self.buffered += 1;
        if rows.len() >= self.config.roll_rows {
            return self.write_partition(key);
        }
        Ok(FlushReport::default())
    }

    /// Writes every buffered partition; when this returns, they are on disk.
    pub fn flush(&mut self) -> Result<FlushReport, WorkerError> {
        let mut keys: Vec<PartitionKey> = self.buffers.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let mut total = FlushReport::default();
        for key in keys {
            let r = self.write_partition(key)?;
            total.files += r.files;
            total.events += r.events;
            total.bytes += r.bytes;
        }
        self.buffers.retain(|_, v| !v.is_empty());
        Ok(total)
    }

    fn write_partition(&mut self, key: PartitionKey) -> Result<FlushReport, WorkerError> {
        let Some(rows) = self.buffers.get(&key) else { return Ok(FlushReport::default()) };
        if rows.is_empty() {
            return Ok(FlushReport::default());
        }
        let dir =
            self.config.dir.join("events").join(format!("org={}", key.0)).join(format!("date={}", day_name(key.1)));
        self.seq += 1;
        let name = format!("part-{}-{}-{:06}.parquet", self.node, self.started_ms, self.seq);
        // The rows stay buffered until their file is in place: a failed
        // write loses nothing and is tried again on the next flush.
        let bytes = write_file(&dir, &name, rows, &self.props)?;
        let written = self.buffers.get_mut(&key).map(std::mem::take).unwrap_or_default().len();
        self.buffered -= written;
        Ok(FlushReport { files: 1, events: written, bytes })
    }
}

/// Writes `rows` as `dir/name` (via a hidden temporary file), synced.
fn write_file(dir: &Path, name: &str, rows: &[(u64, Event)], props: &WriterProperties) -> Result<u64, WorkerError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let batch = to_batch(rows)?;
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props.clone()))?;
    writer.write(&batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io(&tmp))?;
    let bytes = file.metadata().map_err(io(&tmp))?.len();
    drop(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_414), "2025-11-22");
        assert_eq!(day_name(-1), "1969-12-31");
        assert_eq!(file_safe("node 1/x"), "node_1_x");
    }
}

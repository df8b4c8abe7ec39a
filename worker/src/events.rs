//! Accepted events → Arrow → Parquet (zstd), partitioned by org and event
//! date. Events are buffered per partition; [`EventWriter::flush`] (on the
//! flush interval, and at shutdown) writes each buffered partition as one
//! file, and a partition that reaches the row limit is written at once, so
//! files are rolled by time and by size. What `flush` has returned is on
//! disk: the file is synced before it is renamed into place and the
//! directory after.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int32Builder, StringBuilder, TimestampNanosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
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
    /// The thread writing Parquet files stopped.
    #[error("the Parquet writer thread stopped")]
    WriterFailed,
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The cluster transport (NATS JetStream) failed.
    #[error("cluster: {0}")]
    Cluster(String),
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
        EventWriterConfig { dir: dir.into(), node: node.to_owned(), roll_rows: 256 * 1024, zstd_level: 1 }
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

/// Rows a partition's builders are presized for, at most.
const PRESIZE_ROWS: usize = 4096;

/// Text (`Utf8`) columns in the schema; [`Columns::push`] fills them in
/// schema order.
const TEXT_COLUMNS: usize = 24;

/// One partition's rows as Arrow column builders, filled as events arrive
/// (events are not kept: appending copies their fields into the columns).
struct Columns {
    rows: usize,
    raw_bytes: usize,
    /// Highest source position (stream sequence) of a row in it.
    position: u64,
    id: UInt64Builder,
    time: TimestampNanosecondBuilder,
    offset: Int32Builder,
    received: TimestampNanosecondBuilder,
    org_id: UInt32Builder,
    facility: UInt8Builder,
    severity: UInt8Builder,
    src_port: UInt16Builder,
    dst_port: UInt16Builder,
    truncated: BooleanBuilder,
    raw: BinaryBuilder,
    text: [StringBuilder; TEXT_COLUMNS],
}

impl Columns {
    fn new() -> Columns {
        Columns::with_capacity(1024, 1024 * 160, &[])
    }

    /// Builders with room for `rows` rows, `raw_bytes` of raw lines and
    /// `text_bytes[i]` bytes of text column `i`.
    fn with_capacity(rows: usize, raw_bytes: usize, text_bytes: &[usize]) -> Columns {
        let ts = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        Columns {
            rows: 0,
            position: 0,
            raw_bytes: 0,
            id: UInt64Builder::with_capacity(rows),
            time: ts(),
            offset: Int32Builder::with_capacity(rows),
            received: ts(),
            org_id: UInt32Builder::with_capacity(rows),
            facility: UInt8Builder::with_capacity(rows),
            severity: UInt8Builder::with_capacity(rows),
            src_port: UInt16Builder::with_capacity(rows),
            dst_port: UInt16Builder::with_capacity(rows),
            truncated: BooleanBuilder::with_capacity(rows),
            raw: BinaryBuilder::with_capacity(rows, raw_bytes),
            text: std::array::from_fn(|i| {
                StringBuilder::with_capacity(rows, text_bytes.get(i).copied().unwrap_or(rows * 8))
            }),
        }
    }

    fn push(&mut self, id: u64, e: &Event, scratch: &mut Vec<u8>) {
        self.rows += 1;
        self.raw_bytes += e.raw.len();
        self.id.append_value(id);
        self.time.append_value(nanos(e.time));
        self.offset.append_value(e.time.offset_secs());
        self.received.append_value(nanos(e.received_at));
        self.org_id.append_option(e.org_id.map(|o| o.0));
        self.facility.append_option(e.facility);
        self.severity.append_option(e.severity);
        self.src_port.append_option(e.src_port);
        self.dst_port.append_option(e.dst_port);
        self.truncated.append_value(e.truncated);
        self.raw.append_value(&e.raw);
        let [
            org,
            collector,
            reporter_ip,
            format,
            host,
            app,
            procid,
            msgid,
            sd,
            message,
            vendor,
            product,
            product_version,
            signature_id,
            name,
            cef_severity,
            ext,
            event_type,
            src_ip,
            dst_ip,
            user,
            action,
            outcome,
            parse_error,
        ] = &mut self.text;
        let opt = |b: &mut StringBuilder, v: &Option<Str>| b.append_option(v.as_deref());
        let json = |b: &mut StringBuilder, scratch: &mut Vec<u8>, empty: bool, write: &dyn Fn(&mut Vec<u8>)| {
            if empty {
                b.append_null();
            } else {
                scratch.clear();
                write(scratch);
                b.append_value(String::from_utf8_lossy(scratch));
            }
        };
        let ip = |b: &mut StringBuilder, v: Option<IpAddr>| match v {
            Some(IpAddr::V4(ip)) => b.append_value(ipv4_text(ip.octets(), &mut [0; 15])),
            Some(ip) => {
                let _ = write!(b, "{ip}");
                b.append_value("");
            }
            None => b.append_null(),
        };
        opt(org, &e.org);
        opt(collector, &e.collector);
        ip(reporter_ip, e.reporter_ip);
        format.append_value(e.format.as_str());
        opt(host, &e.host);
        opt(app, &e.app);
        opt(procid, &e.procid);
        opt(msgid, &e.msgid);
        json(sd, scratch, e.sd.is_empty(), &|out| e.sd.write_json(out));
        opt(message, &e.message);
        opt(vendor, &e.vendor);
        opt(product, &e.product);
        opt(product_version, &e.product_version);
        opt(signature_id, &e.signature_id);
        opt(name, &e.name);
        opt(cef_severity, &e.cef_severity);
        json(ext, scratch, e.ext.is_empty(), &|out| e.ext.write_json(out));
        opt(event_type, &e.event_type);
        ip(src_ip, e.src_ip);
        ip(dst_ip, e.dst_ip);
        opt(user, &e.user);
        opt(action, &e.action);
        opt(outcome, &e.outcome);
        opt(parse_error, &e.parse_error);
    }

    /// The rows as one record batch in the column order of [`schema`]
    /// (its `Utf8` columns taken from the text builders in order); the
    /// builders start again presized like this batch, up to a limit.
    fn finish(&mut self) -> Result<RecordBatch, WorkerError> {
        let text: Vec<StringArray> = self.text.iter_mut().map(|b| b.finish()).collect();
        let text_bytes: Vec<usize> = text.iter().map(|a| a.value_data().len()).collect();
        let mut text = text.into_iter();
        let schema = schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            columns.push(match field.name().as_str() {
                "id" => Arc::new(self.id.finish()),
                "time" => Arc::new(self.time.finish()),
                "time_offset_s" => Arc::new(self.offset.finish()),
                "received_at" => Arc::new(self.received.finish()),
                "org_id" => Arc::new(self.org_id.finish()),
                "facility" => Arc::new(self.facility.finish()),
                "severity" => Arc::new(self.severity.finish()),
                "src_port" => Arc::new(self.src_port.finish()),
                "dst_port" => Arc::new(self.dst_port.finish()),
                "truncated" => Arc::new(self.truncated.finish()),
                "raw" => Arc::new(self.raw.finish()),
                other => match text.next() {
                    Some(a) => Arc::new(a),
                    None => return Err(ArrowError::SchemaError(format!("no builder for column {other}")).into()),
                },
            });
        }
        // Start again at this batch's sizes (a partition's next interval is
        // usually like this one), but no larger than a few thousand rows:
        // room reserved for a whole interval of a busy org would double
        // the worker's memory while the sealed batch waits for the disk.
        let (old_rows, rows) = (self.rows.max(1), self.rows.min(PRESIZE_ROWS));
        let scale = |bytes: usize| bytes / old_rows * rows;
        let text_bytes: Vec<usize> = text_bytes.into_iter().map(scale).collect();
        let raw_bytes = scale(self.raw_bytes);
        *self = Columns::with_capacity(rows, raw_bytes, &text_bytes);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// An IPv4 address in dotted decimal, as `Display` writes it, in `buf`.
/// By hand: three address columns per event went through the formatting
/// machinery, a sixth of building the columns (`cargo bench -p
/// vigil-worker --bench storage`).
fn ipv4_text(octets: [u8; 4], buf: &mut [u8; 15]) -> &str {
    let mut n = 0;
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// How event files are written: zstd at `level`, dictionaries only where
/// values repeat (orgs, hosts, apps, types); building one for raw lines and
/// messages costs more than it saves.
pub(crate) fn writer_properties(level: i32) -> Result<WriterProperties, WorkerError> {
    let level = ZstdLevel::try_new(level)?;
    let mut props = WriterProperties::builder().set_compression(Compression::ZSTD(level)).set_dictionary_enabled(false);
    for column in DICTIONARY_COLUMNS {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), true);
    }
    Ok(props.build())
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
pub(crate) fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// One partition's rows, sealed: ready to be written as one file.
pub struct Sealed {
    key: PartitionKey,
    batch: RecordBatch,
    /// Highest source position of its rows (0: the source has none).
    position: u64,
}

impl Sealed {
    /// Events in it.
    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Memory its columns hold.
    pub fn bytes(&self) -> usize {
        self.batch.get_array_memory_size()
    }

    /// Highest source position (stream sequence) of its rows; 0 when the
    /// source has no positions (`vigil run`).
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// Buffers accepted events per partition, as Arrow columns.
pub struct EventBuffer {
    roll_rows: usize,
    parts: HashMap<PartitionKey, Columns>,
    buffered: usize,
    /// Estimated bytes of the buffered rows.
    buffered_bytes: usize,
    scratch: Vec<u8>,
    /// Source position of the events being appended.
    position: u64,
}

/// Column bytes an event takes besides twice its raw line (the raw line and
/// the message, most of it again), roughly: two dozen offsets, the short
/// fields and the builders' spare room (measured on sshd, firewall and
/// RFC 5424 lines: within 10 % of the sealed columns).
const ROW_OVERHEAD: usize = 360;

impl EventBuffer {
    /// A buffer that seals a partition when it holds `roll_rows` events.
    pub fn new(roll_rows: usize) -> EventBuffer {
        EventBuffer {
            roll_rows: roll_rows.max(1),
            parts: HashMap::new(),
            buffered: 0,
            buffered_bytes: 0,
            scratch: Vec::new(),
            position: 0,
        }
    }

    /// Events buffered.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Estimated bytes of the buffered events' columns.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The source position (stream sequence) of the events appended next;
    /// every sealed partition tells the highest among its rows.
    pub fn set_position(&mut self, position: u64) {
        self.position = position;
    }

    /// Adds one accepted event under its id; a partition that reaches the
    /// row limit is sealed and returned.
    pub fn append(&mut self, id: u64, event: &Event) -> Result<Option<Sealed>, WorkerError> {
        let key = (event.org_id.map_or(1, |o| o.0), event.time.unix_secs().div_euclid(86_400));
        let part = self.parts.entry(key).or_insert_with(Columns::new);
        part.push(id, event, &mut self.scratch);
        part.position = part.position.max(self.position);
        self.buffered += 1;
        self.buffered_bytes += ROW_OVERHEAD + 2 * event.raw.len();
        if part.rows >= self.roll_rows {
            return Ok(Some(seal_part(key, part, &mut self.buffered, &mut self.buffered_bytes)?));
        }
        Ok(None)
    }

    /// Seals every partition that holds events, in partition order.
    pub fn seal(&mut self) -> Result<Vec<Sealed>, WorkerError> {
        self.seal_where(|_| true)
    }

    /// Seals the partitions whose turn `turn` is of `turns` (each
    /// partition has one, by its org and day), in partition order. Sealing
    /// one turn at a time, a flush interval cut in `turns` slices seals
    /// every partition once, and the files are encoded a slice at a time
    /// instead of all at once.
    pub fn seal_turn(&mut self, turn: u32, turns: u32) -> Result<Vec<Sealed>, WorkerError> {
        let turns = u64::from(turns.max(1));
        // Org ids are handed out in sequence: consecutive orgs, turns in a
        // row; the day moves every org's turn on by one at midnight.
        self.seal_where(|(org, day)| u64::from(org).wrapping_add(day as u64) % turns == u64::from(turn))
    }

    /// Seals the partitions holding events that `take` picks; those it
    /// picks holding none give their memory back (idle for a whole turn).
    fn seal_where(&mut self, take: impl Fn(PartitionKey) -> bool) -> Result<Vec<Sealed>, WorkerError> {
        let mut keys: Vec<PartitionKey> =
            self.parts.iter().filter(|(k, c)| c.rows > 0 && take(**k)).map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(part) = self.parts.get_mut(&key) {
                out.push(seal_part(key, part, &mut self.buffered, &mut self.buffered_bytes)?);
            }
        }
        self.parts.retain(|k, _| !take(*k) || out.iter().any(|s| s.key == *k));
        Ok(out)
    }
}

/// Seals partition `key`'s rows, taking them off the buffer's counts.
fn seal_part(
    key: PartitionKey,
    part: &mut Columns,
    buffered: &mut usize,
    buffered_bytes: &mut usize,
) -> Result<Sealed, WorkerError> {
    *buffered -= part.rows;
    *buffered_bytes = buffered_bytes.saturating_sub(part.rows * ROW_OVERHEAD + 2 * part.raw_bytes);
    let position = std::mem::take(&mut part.position);
    Ok(Sealed { key, batch: part.finish()?, position })
}

/// Writes sealed partitions as Parquet files.
pub struct FileWriter {
    dir: PathBuf,
    node: String,
    started_ms: i64,
    seq: std::sync::atomic::AtomicU64,
    props: WriterProperties,
}

impl FileWriter {
    /// A writer under `config.dir/events`, created if missing.
    pub fn open(config: &EventWriterConfig, now: EventTime) -> Result<FileWriter, WorkerError> {
        let root = config.dir.join("events");
        fs::create_dir_all(&root).map_err(io(&root))?;
        let props = writer_properties(config.zstd_level)?;
        Ok(FileWriter {
            dir: root,
            node: file_safe(&config.node),
            started_ms: i64::try_from(now.unix_nanos() / 1_000_000).unwrap_or(0),
            seq: std::sync::atomic::AtomicU64::new(0),
            props,
        })
    }

    /// Writes one sealed partition as `org=<id>/date=<day>/part-<node>-<start>-<seq>.parquet`
    /// (via a hidden temporary file), synced: when this returns, it is on disk.
    /// Several threads may write at once (each file has its own sequence
    /// number): most of a write is waiting for fsync, and the filesystem
    /// commits concurrent syncs together.
    pub fn write(&self, sealed: &Sealed) -> Result<FlushReport, WorkerError> {
        let (org, day) = sealed.key;
        let dir = self.dir.join(format!("org={org}")).join(format!("date={}", day_name(day)));
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // A partition of a stream carries the highest stream sequence of
        // its rows in the name: after a crash, the owner's commit record
        // tells whether the file was committed (`crate::cluster`).
        let name = match sealed.position {
            0 => format!("part-{}-{}-{seq:06}.parquet", self.node, self.started_ms),
            p => format!("part-{}-{}-{seq:06}-s{p}.parquet", self.node, self.started_ms),
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let path = dir.join(&name);
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut writer = ArrowWriter::try_new(file, sealed.batch.schema(), Some(self.props.clone()))?;
        writer.write(&sealed.batch)?;
        let file = writer.into_inner()?;
        file.sync_all().map_err(io(&tmp))?;
        let bytes = file.metadata().map_err(io(&tmp))?.len();
        drop(file);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok(FlushReport { files: 1, events: sealed.rows(), bytes })
    }
}

/// An [`EventBuffer`] and a [`FileWriter`] on one thread: buffers events
/// per partition and writes them as Parquet files.
pub struct EventWriter {
    buffer: EventBuffer,
    files: FileWriter,
    /// Sealed partitions whose write failed, tried again first.
    unwritten: VecDeque<Sealed>,
}

impl EventWriter {
    /// A writer under `config.dir/events`, created if missing.
    pub fn open(config: EventWriterConfig, now: EventTime) -> Result<EventWriter, WorkerError> {
        Ok(EventWriter {
            files: FileWriter::open(&config, now)?,
            buffer: EventBuffer::new(config.roll_rows),
            unwritten: VecDeque::new(),
        })
    }

    /// Its parts, for a caller that writes on another thread: the buffer,
    /// the file writer, and partitions sealed but not yet written.
    pub fn into_parts(self) -> (EventBuffer, FileWriter, VecDeque<Sealed>) {
        (self.buffer, self.files, self.unwritten)
    }

    /// Events buffered and not yet on disk.
    pub fn buffered(&self) -> usize {
        self.buffer.buffered() + self.unwritten.iter().map(Sealed::rows).sum::<usize>()
    }

    /// Buffers one accepted event under its id. A partition that reaches
    /// the row limit is written now.
    pub fn append(&mut self, id: u64, event: &Event) -> Result<FlushReport, WorkerError> {
        if let Some(sealed) = self.buffer.append(id, event)? {
            self.unwritten.push_back(sealed);
            return self.write_unwritten();
        }
        Ok(FlushReport::default())
    }

    /// Writes every buffered partition; when this returns, they are on disk.
    pub fn flush(&mut self) -> Result<FlushReport, WorkerError> {
        let sealed = self.buffer.seal()?;
        self.unwritten.extend(sealed);
        self.write_unwritten()
    }

    /// Writes the sealed partitions; one that fails stays for the next
    /// attempt, so a failed write loses nothing.
    fn write_unwritten(&mut self) -> Result<FlushReport, WorkerError> {
        let mut total = FlushReport::default();
        while let Some(sealed) = self.unwritten.front() {
            let r = self.files.write(sealed)?;
            self.unwritten.pop_front();
            total.files += r.files;
            total.events += r.events;
            total.bytes += r.bytes;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 109, 199, 200, 250, 255];
        for a in octets {
            for b in octets {
                for (c, d) in octets.iter().zip(octets.iter().rev()) {
                    let ip = std::net::Ipv4Addr::new(a, b, *c, *d);
                    assert_eq!(ipv4_text(ip.octets(), &mut [0; 15]), ip.to_string());
                }
            }
        }
    }

    /// The order `Columns::push` destructures its text builders in.
    const TEXT: [&str; 24] = [
        "org",
        "collector",
        "reporter_ip",
        "format",
        "host",
        "app",
        "procid",
        "msgid",
        "sd",
        "message",
        "vendor",
        "product",
        "product_version",
        "signature_id",
        "name",
        "cef_severity",
        "ext",
        "event_type",
        "src_ip",
        "dst_ip",
        "user",
        "action",
        "outcome",
        "parse_error",
    ];

    #[test]
    fn text_columns_are_where_the_schema_has_them() {
        let schema = schema();
        let strings: Vec<&str> =
            schema.fields().iter().filter(|f| f.data_type() == &DataType::Utf8).map(|f| f.name().as_str()).collect();
        assert_eq!(strings, TEXT);
        assert_eq!(TEXT.len(), TEXT_COLUMNS);
    }

    /// Sealed a turn at a time, every partition is sealed once in a round
    /// of turns, consecutive orgs in consecutive turns, and the buffer's
    /// counts follow.
    #[test]
    fn turns_seal_each_partition_once_in_a_round() {
        let parser = parsers::Parser::new();
        let at = EventTime::from_unix(1_800_000_000, 0, 0);
        let mut buffer = EventBuffer::new(1 << 20);
        for org in 1..=8u32 {
            buffer.set_position(u64::from(org) * 10);
            for _ in 0..3 {
                let mut e = parser.parse(bytes::Bytes::from_static(b"<13>Nov 22 10:00:00 h app: hi"), at);
                e.org_id = Some(parsers::OrgId(org));
                buffer.append(u64::from(org), &e).unwrap();
            }
        }
        let mut bytes = buffer.buffered_bytes();
        let mut sealed_orgs = Vec::new();
        for turn in 0..4 {
            let sealed = buffer.seal_turn(turn, 4).unwrap();
            let orgs: Vec<u32> = sealed.iter().map(|s| s.key.0).collect();
            assert_eq!(orgs.len(), 2, "turn {turn}: {orgs:?}");
            assert!(sealed.iter().all(|s| (u64::from(s.key.0) + s.key.1 as u64) % 4 == u64::from(turn)));
            assert!(sealed.iter().all(|s| s.rows() == 3 && s.position() == u64::from(s.key.0) * 10));
            sealed_orgs.extend(orgs);
            assert_eq!(buffer.buffered(), (8 - sealed_orgs.len()) * 3);
            assert!(buffer.buffered_bytes() < bytes);
            bytes = buffer.buffered_bytes();
        }
        sealed_orgs.sort_unstable();
        assert_eq!(sealed_orgs, (1..=8).collect::<Vec<_>>());
        assert_eq!(buffer.buffered_bytes(), 0);
        // A turn with nothing buffered seals nothing.
        assert!(buffer.seal_turn(0, 4).unwrap().is_empty());
    }

    #[test]
    fn day_names() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_414), "2025-11-22");
        assert_eq!(day_name(-1), "1969-12-31");
        assert_eq!(file_safe("node 1/x"), "node_1_x");
    }
}

//! `vigil parse`: a log file (or stdin) → one JSON event per line.
//!
//! The file goes through the same framer, parser and device parsers as a
//! collector's stream, so what `vigil parse` prints is what the pipeline
//! stores. Lines are cut into batches that worker threads parse and
//! serialize; a writer puts the results back in input order. At most a
//! fixed number of batches is in flight, so memory stays bounded whatever
//! the file size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use crossbeam_channel::bounded;
use parsers::framing::{Frame, Framer, FramingMode};
use parsers::{DeviceParsers, Event, EventTime, Format, InputFormat, Parser, ParserConfig};

const READ_CHUNK: usize = 1024 * 1024;
const BATCH_LINES: usize = 2048;

#[derive(Args)]
pub struct ParseArgs {
    /// Grammar to apply: auto detects per line.
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: InputFormat,
    #[command(flatten)]
    parsing: ParsingArgs,
    /// Skip device parsers (no event_type or normalized fields).
    #[arg(long)]
    no_devices: bool,
    /// Longest line kept; longer lines are truncated and flagged.
    #[arg(long, value_name = "BYTES", default_value_t = NonZeroUsize::new(parsers::framing::DEFAULT_MAX_FRAME_LEN).unwrap_or(NonZeroUsize::MIN))]
    max_line: NonZeroUsize,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Print a per-format summary to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Input file; "-" or nothing reads stdin.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// How lines are turned into events: shared by every command that reads logs.
#[derive(Args)]
pub struct ParsingArgs {
    /// Zone of timestamps written without one (RFC 3164): UTC, +05:00 or an IANA name.
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Year of timestamps written without one (default: inferred so that no
    /// event is more than a day after --now).
    #[arg(long, value_name = "YYYY")]
    year: Option<i32>,
    /// Receive time to assume, RFC 3339 (default: the current time).
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    /// Extra device pattern files (*.toml) loaded after the built-in ones.
    #[arg(long, value_name = "DIR")]
    patterns: Option<PathBuf>,
}

impl ParsingArgs {
    /// The parser for `format` and the receive time ("now") to give it.
    pub fn parser(&self, format: InputFormat) -> Result<(Parser, EventTime)> {
        let parser = ParserConfig { format, timezone: self.tz.clone(), year: self.year }
            .validate_and_build()
            .context("invalid parser options")?;
        let now = match &self.now {
            Some(text) => text.parse::<EventTime>().context("invalid --now")?,
            None => wall_clock()?,
        };
        Ok((parser, now))
    }

    /// The built-in device parsers plus any from `--patterns`.
    pub fn devices(&self) -> Result<DeviceParsers> {
        DeviceParsers::load(self.patterns.as_deref()).context("cannot load device patterns")
    }
}

fn parse_format(s: &str) -> Result<InputFormat, String> {
    s.parse()
}

#[derive(Default)]
struct Stats {
    by_format: [u64; 5],
    classified: u64,
    truncated: u64,
}

impl Stats {
    fn add(&mut self, event: &Event) {
        let idx = match event.format {
            Format::Rfc5424 => 0,
            Format::Rfc3164 => 1,
            Format::Cef => 2,
            Format::Leef => 3,
            Format::Raw => 4,
        };
        self.by_format[idx] += 1;
        self.classified += u64::from(event.event_type.is_some());
        self.truncated += u64::from(event.truncated);
    }

    fn merge(&mut self, other: &Stats) {
        for (a, b) in self.by_format.iter_mut().zip(other.by_format) {
            *a += b;
        }
        self.classified += other.classified;
        self.truncated += other.truncated;
    }
}

/// Everything a worker needs to turn frames into JSON lines.
struct Pipeline {
    parser: Parser,
    devices: Option<DeviceParsers>,
    now: EventTime,
}

impl Pipeline {
    fn process(&self, frames: Vec<Frame>) -> (Vec<u8>, Stats) {
        let mut out = Vec::with_capacity(frames.len() * 512);
        let mut stats = Stats::default();
        for frame in frames {
            let mut event = self.parser.parse(frame.data, self.now);
            event.truncated = frame.truncated;
            if let Some(d) = &self.devices {
                d.classify(&mut event);
            }
            stats.add(&event);
            // Writing JSON for our own event type into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &event);
            out.push(b'\n');
        }
        (out, stats)
    }
}

pub fn run(args: ParseArgs) -> Result<()> {
    let (parser, now) = args.parsing.parser(args.format)?;
    let devices = if args.no_devices { None } else { Some(args.parsing.devices()?) };
    let input: Box<dyn Read + Send> = match &args.file {
        None => Box::new(io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(io::stdin()),
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
    };
    let threads = args
        .threads
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    let pipeline = Pipeline { parser, devices, now };
    let stats = match run_pipeline(&pipeline, input, args.max_line, threads) {
        Ok(stats) => stats,
        // `vigil parse big.log | head` is normal use, not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => bail!("cannot parse input: {e}"),
    };
    if args.stats {
        let [r5424, r3164, cef, leef, raw] = stats.by_format;
        let total: u64 = stats.by_format.iter().sum();
        eprintln!(
            "{total} lines: rfc5424 {r5424}, rfc3164 {r3164}, cef {cef}, leef {leef}, raw {raw}; classified {}, truncated {}",
            stats.classified, stats.truncated
        );
    }
    Ok(())
}

/// Reads and frames on this thread, parses on `threads` workers, writes in
/// order on a writer thread.
fn run_pipeline(
    pipeline: &Pipeline,
    mut input: Box<dyn Read + Send>,
    max_line: NonZeroUsize,
    threads: usize,
) -> io::Result<Stats> {
    let in_flight = threads * 3;
    let (work_tx, work_rx) = bounded::<(u64, Vec<Frame>)>(in_flight);
    let (done_tx, done_rx) = bounded::<(u64, Vec<u8>, Stats)>(in_flight);
    // One permit per batch between reading it and writing it out: bounds
    // the reorder buffer even if one batch is slow.
    let (permit_tx, permit_rx) = bounded::<()>(in_flight);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (seq, frames) in work_rx {
                    let (json, stats) = pipeline.process(frames);
                    if done_tx.send((seq, json, stats)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        let writer = scope.spawn(move || -> io::Result<Stats> {
            let mut out = BufWriter::with_capacity(1024 * 1024, io::stdout().lock());
            let mut total = Stats::default();
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for (seq, json, stats) in done_rx {
                pending.insert(seq, (json, stats));
                while let Some((json, stats)) = pending.remove(&next) {
                    out.write_all(&json)?;
                    total.merge(&stats);
                    next += 1;
                    let _ = permit_rx.recv();
                }
            }
            out.flush()?;
            Ok(total)
        });
        let read_result = read_batches(&mut input, max_line, |seq, frames| {
            permit_tx.send(()).is_ok() && work_tx.send((seq, frames)).is_ok()
        });
        drop(work_tx);
        let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("writer thread panicked")));
        read_result.and(written)
    })
}

/// Frames `input` into batches and hands each to `send` with its sequence
/// number; stops early when `send` returns false (the writer is gone).
pub(crate) fn read_batches(
    input: &mut dyn Read,
    max_line: NonZeroUsize,
    mut send: impl FnMut(u64, Vec<Frame>) -> bool,
) -> io::Result<()> {
    let mut framer = Framer::new(FramingMode::NewlineDelimited, max_line);
    let mut batch = Vec::with_capacity(BATCH_LINES);
    let mut seq = 0u64;
    loop {
        let buf = framer.buffer_mut();
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let n = loop {
            match input.read(&mut buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            break;
        }
        while let Some(frame) = framer.next_frame().map_err(io::Error::other)? {
            batch.push(frame);
            if batch.len() == BATCH_LINES {
                if !send(seq, std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES))) {
                    return Ok(());
                }
                seq += 1;
            }
        }
    }
    batch.extend(framer.finish());
    if !batch.is_empty() {
        send(seq, batch);
    }
    Ok(())
}

fn wall_clock() -> Result<EventTime> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(EventTime::from_unix(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), since.subsec_nanos(), 0))
}

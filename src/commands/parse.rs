//! `vigil parse`: a log file (or stdin) → one JSON event per line.
//!
//! The file goes through the same framer, parser and device parsers as a
//! collector's TCP stream, so what `vigil parse` prints is what the pipeline
//! stores.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use parsers::framing::{Framer, FramingMode};
use parsers::{DeviceParsers, Event, EventTime, Format, InputFormat, ParserConfig};

const READ_CHUNK: usize = 1024 * 1024;

#[derive(Args)]
pub struct ParseArgs {
    /// Grammar to apply: auto detects per line.
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: InputFormat,
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
    /// Skip device parsers (no event_type or normalized fields).
    #[arg(long)]
    no_devices: bool,
    /// Longest line kept; longer lines are truncated and flagged.
    #[arg(long, value_name = "BYTES", default_value_t = NonZeroUsize::new(parsers::framing::DEFAULT_MAX_FRAME_LEN).unwrap_or(NonZeroUsize::MIN))]
    max_line: NonZeroUsize,
    /// Print a per-format summary to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Input file; "-" or nothing reads stdin.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
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
}

pub fn run(args: ParseArgs) -> Result<()> {
    let parser = ParserConfig { format: args.format, timezone: args.tz.clone(), year: args.year }
        .validate_and_build()
        .context("invalid parser options")?;
    let devices = if args.no_devices {
        None
    } else {
        Some(DeviceParsers::load(args.patterns.as_deref()).context("cannot load device patterns")?)
    };
    let now = match &args.now {
        Some(text) => text.parse::<EventTime>().context("invalid --now")?,
        None => wall_clock()?,
    };
    let mut input: Box<dyn Read> = match &args.file {
        None => Box::new(io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(io::stdin().lock()),
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout);
    let mut framer = Framer::new(FramingMode::NewlineDelimited, args.max_line);
    let mut stats = Stats::default();
    let mut emit = |frame: parsers::framing::Frame, out: &mut BufWriter<_>| -> io::Result<()> {
        let mut event = parser.parse(frame.data, now);
        event.truncated = frame.truncated;
        if let Some(d) = &devices {
            d.classify(&mut event);
        }
        stats.add(&event);
        serde_json::to_writer(&mut *out, &event).map_err(io::Error::other)?;
        out.write_all(b"\n")
    };
    let result = (|| -> io::Result<()> {
        loop {
            let buf = framer.buffer_mut();
            let start = buf.len();
            buf.resize(start + READ_CHUNK, 0);
            let n = input.read(&mut buf[start..]);
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    buf.truncate(start);
                    continue;
                }
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            };
            buf.truncate(start + n);
            if n == 0 {
                break;
            }
            while let Some(frame) = framer.next_frame().map_err(io::Error::other)? {
                emit(frame, &mut out)?;
            }
        }
        if let Some(frame) = framer.finish() {
            emit(frame, &mut out)?;
        }
        out.flush()
    })();
    match result {
        Ok(()) => {}
        // `vigil parse big.log | head` is normal use, not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => bail!("cannot parse input: {e}"),
    }
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

fn wall_clock() -> Result<EventTime> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(EventTime::from_unix(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), since.subsec_nanos(), 0))
}

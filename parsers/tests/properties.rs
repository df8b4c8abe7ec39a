//! Property tests: generate → format → parse → equal for RFC 5424, RFC 3164
//! and CEF; and no input bytes make any parser, the device families or the
//! framer panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroUsize;

use bytes::Bytes;
use parsers::framing::{Framer, FramingMode};
use parsers::{DeviceParsers, EventTime, Format, InputFormat, ParserConfig};
use proptest::prelude::*;

fn now() -> EventTime {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn parse(line: &[u8], format: InputFormat) -> parsers::Event {
    let p = ParserConfig { format, ..Default::default() }.validate_and_build().unwrap();
    p.parse(Bytes::copy_from_slice(line), now())
}

// ---------------------------------------------------------------- RFC 5424

/// PRINTUSASCII token (no space), never the NILVALUE "-".
fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~]{{1,{max}}}")).unwrap().prop_filter("not nil", |s| s != "-")
}

/// SD-NAME: printable ASCII except `=`, `]`, `"`, space.
fn sd_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[!#-<>-\\\\^-~]{1,32}").unwrap()
}

#[derive(Debug, Clone)]
struct Msg5424 {
    pri: u8,
    version: u16,
    time: Option<(i64, u32, i32)>,
    host: Option<String>,
    app: Option<String>,
    procid: Option<String>,
    msgid: Option<String>,
    sd: Vec<(String, Vec<(String, String)>)>,
    msg: String,
}

fn msg5424() -> impl Strategy<Value = Msg5424> {
    let time = proptest::option::of((
        0i64..4_102_444_800,                        // 1970..2100
        (0u32..1_000_000).prop_map(|us| us * 1000), // RFC 5424 allows microseconds
        (-(23 * 60 + 59)..=(23 * 60 + 59)).prop_map(|m: i32| m * 60),
    ));
    let sd =
        proptest::collection::btree_map(sd_name(), proptest::collection::vec((sd_name(), any::<String>()), 0..4), 0..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        0u8..=191,
        1u16..=999,
        time,
        proptest::option::of(token(255)),
        proptest::option::of(token(48)),
        proptest::option::of(token(128)),
        proptest::option::of(token(32)),
        sd,
        any::<String>().prop_filter("no leading BOM", |m| !m.starts_with('\u{feff}')),
    )
        .prop_map(|(pri, version, time, host, app, procid, msgid, sd, msg)| Msg5424 {
            pri,
            version,
            time,
            host,
            app,
            procid,
            msgid,
            sd,
            msg,
        })
}

fn format5424(m: &Msg5424) -> String {
    let nil = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".to_owned());
    let time = match m.time {
        None => "-".to_owned(),
        // Whole microseconds render with at most six fraction digits.
        Some((s, n, off)) => EventTime::from_unix(s, n, off).to_rfc3339(),
    };
    let mut sd = String::new();
    for (id, params) in &m.sd {
        sd.push('[');
        sd.push_str(id);
        for (k, v) in params {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]");
            sd.push_str(&format!(" {k}=\"{escaped}\""));
        }
        sd.push(']');
    }
    if sd.is_empty() {
        sd.push('-');
    }
    let mut line = format!(
        "<{}>{} {} {} {} {} {} {}",
        m.pri,
        m.version,
        time,
        nil(&m.host),
        nil(&m.app),
        nil(&m.procid),
        nil(&m.msgid),
        sd
    );
    if !m.msg.is_empty() {
        line.push(' ');
        line.push_str(&m.msg);
    }
    line
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rfc5424_round_trip(m in msg5424()) {
        let line = format5424(&m);
        let e = parse(line.as_bytes(), InputFormat::Auto);
        prop_assert_eq!(e.format, Format::Rfc5424, "{:?} -> {:?}", line, e.parse_error);
        prop_assert_eq!(e.facility, Some(m.pri >> 3));
        prop_assert_eq!(e.severity, Some(m.pri & 7));
        match m.time {
            Some((s, n, off)) => {
                prop_assert_eq!(e.time.unix_secs(), s);
                prop_assert_eq!(e.time.subsec_nanos(), n);
                prop_assert_eq!(e.time.offset_secs(), off);
            }
            None => prop_assert_eq!(e.time, e.received_at),
        }
        prop_assert_eq!(e.host.as_deref(), m.host.as_deref());
        prop_assert_eq!(e.app.as_deref(), m.app.as_deref());
        prop_assert_eq!(e.procid.as_deref(), m.procid.as_deref());
        prop_assert_eq!(e.msgid.as_deref(), m.msgid.as_deref());
        let sd: Vec<(String, Vec<(String, String)>)> = e
            .sd
            .elements()
            .map(|el| (el.id.to_string(), el.params().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
            .collect();
        prop_assert_eq!(sd, m.sd.clone());
        prop_assert_eq!(e.message.as_deref().unwrap_or(""), m.msg.as_str());
        prop_assert_eq!(&e.raw[..], line.as_bytes());
    }
}

// ---------------------------------------------------------------- RFC 3164

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rfc3164_round_trip(
        pri in proptest::option::of(0u8..=191),
        month in 1u8..=12,
        day in 1u8..=28,
        (hour, minute, second) in (0u8..24, 0u8..60, 0u8..60),
        host in "[a-z][a-z0-9.-]{0,30}",
        tag in proptest::option::of("[a-z][a-z0-9_/-]{0,31}"),
        pid in proptest::option::of(1u32..100_000),
        msg in "[ -~]{0,80}",
    ) {
        let mut line = String::new();
        if let Some(p) = pri {
            line.push_str(&format!("<{p}>"));
        }
        line.push_str(&format!("{} {:>2} {:02}:{:02}:{:02} {host}", MONTHS[usize::from(month) - 1], day, hour, minute, second));
        if let Some(t) = &tag {
            line.push(' ');
            line.push_str(t);
            if let Some(p) = pid {
                line.push_str(&format!("[{p}]"));
            }
            line.push(':');
        }
        // With no tag the first message word must not look like one.
        let msg = if tag.is_none() { format!("- {msg}") } else { msg };
        if !msg.is_empty() {
            line.push(' ');
            line.push_str(&msg);
        }
        let p = ParserConfig { year: Some(2024), ..Default::default() }.validate_and_build().unwrap();
        let e = p.parse(Bytes::copy_from_slice(line.as_bytes()), now());
        prop_assert_eq!(e.format, Format::Rfc3164, "{:?} -> {:?}", line, e.parse_error);
        prop_assert_eq!(e.facility, pri.map(|p| p >> 3));
        let c = e.time.civil();
        prop_assert_eq!((c.year, c.month, c.day, c.hour, c.minute, c.second), (2024, month, day, hour, minute, second));
        prop_assert_eq!(e.host.as_deref(), Some(host.as_str()));
        prop_assert_eq!(e.app.as_deref(), tag.as_deref());
        prop_assert_eq!(e.procid.map(|p| p.to_string()), tag.as_ref().and(pid).map(|p| p.to_string()));
        prop_assert_eq!(e.message.as_deref().unwrap_or(""), msg.as_str());
    }
}

// --------------------------------------------------------------------- CEF

fn cef_header_field() -> impl Strategy<Value = String> {
    // Any text without line breaks; `|` and `\` get escaped.
    "[^\r\n]{0,24}"
}

fn cef_value() -> impl Strategy<Value = String> {
    // Trailing whitespace is layout (trimmed by decision), so values end in
    // a non-space character or are empty.
    "([^\t\r\n ]([^\t]{0,30}[^\t\r\n ])?)?"
}

fn escape_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('=', "\\=").replace('\n', "\\n").replace('\r', "\\r")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cef_round_trip(
        version in 0u32..30,
        header in proptest::collection::vec(cef_header_field(), 6),
        ext in proptest::collection::btree_map("[A-Za-z][A-Za-z0-9_]{0,15}", cef_value(), 0..14),
        syslog in any::<bool>(),
    ) {
        let fields: Vec<String> = header.iter().map(|h| escape_header(h)).collect();
        let pairs: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", escape_value(v))).collect();
        let payload = format!("CEF:{version}|{}|{}", fields.join("|"), pairs.join(" "));
        let line = if syslog { format!("<134>Nov 22 10:00:00 fw1 {payload}") } else { payload.clone() };
        let e = parse(line.as_bytes(), InputFormat::Auto);
        prop_assert_eq!(e.format, Format::Cef, "{:?} -> {:?}", line, e.parse_error);
        let got = [&e.vendor, &e.product, &e.product_version, &e.signature_id, &e.name, &e.cef_severity];
        for (g, want) in got.iter().zip(&header) {
            prop_assert_eq!(g.as_deref(), Some(want.as_str()));
        }
        let got_ext: Vec<(String, String)> = e.ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let want_ext: Vec<(String, String)> = ext.into_iter().collect();
        prop_assert_eq!(got_ext, want_ext);
        prop_assert_eq!(e.message.as_deref(), Some(payload.as_str()));
        if syslog {
            prop_assert_eq!(e.host.as_deref(), Some("fw1"));
        }
    }
}

// ------------------------------------------------------------ no panics

fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(&b""[..]),
        Just(&b"<13>"[..]),
        Just(&b"<165>1 "[..]),
        Just(&b"<13>Oct 11 22:14:15 "[..]),
        Just(&b"CEF:0|"[..]),
        Just(&b"LEEF:2.0|"[..]),
        Just(&b"date=2020-04-23 time=12:17:48 "[..]),
        Just(&b"%ASA-6-302013: "[..]),
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        "[|=\\\\\\[\\]\" a-z0-9:<>-]{0,120}".prop_map(String::into_bytes),
    ];
    (prefix, body).prop_map(|(p, b)| [p, &b[..]].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn no_input_panics_any_parser(data in interesting_bytes()) {
        let devices = DeviceParsers::builtin().unwrap();
        for format in [InputFormat::Auto, InputFormat::Rfc5424, InputFormat::Rfc3164, InputFormat::Cef, InputFormat::Leef] {
            let mut e = parse(&data, format);
            prop_assert_eq!(&e.raw[..], &data[..]);
            prop_assert_eq!(e.format == Format::Raw, e.parse_error.is_some());
            devices.classify(&mut e);
            let _ = e.to_json();
        }
    }

    #[test]
    fn framer_never_panics_and_stays_bounded(
        data in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'<'), b'0'..=b'9'], 0..600),
        max in 1usize..64,
        chunk in 1usize..40,
        mode in prop_oneof![Just(FramingMode::Auto), Just(FramingMode::OctetCounting), Just(FramingMode::NewlineDelimited)],
    ) {
        let mut framer = Framer::new(mode, NonZeroUsize::new(max).unwrap());
        let mut out = 0;
        'feed: for piece in data.chunks(chunk) {
            framer.push(piece);
            loop {
                match framer.next_frame() {
                    Ok(Some(f)) => {
                        prop_assert!(f.data.len() <= max);
                        out += f.data.len();
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            prop_assert!(framer.buffered() <= max + chunk + 12);
        }
        if let Some(f) = framer.finish() {
            prop_assert!(f.data.len() <= max);
            out += f.data.len();
        }
        prop_assert!(out <= data.len());
    }

    #[test]
    fn rfc3339_round_trip(secs in -2_000_000_000i64..4_000_000_000, nanos in 0u32..1_000_000_000, off in -1439i32..=1439) {
        let t = EventTime::from_unix(secs, nanos, off * 60);
        let back: EventTime = t.to_rfc3339().parse().unwrap();
        prop_assert_eq!(back, t);
    }
}

/// Lines split at every possible read boundary give the same frames.
#[test]
fn framing_is_independent_of_read_boundaries() {
    let input = b"<13>a\n17 <13>octet\ncounted<14>b\r\nc\n\n5 <1>x";
    let reference = frames(input, input.len());
    for chunk in 1..input.len() {
        assert_eq!(frames(input, chunk), reference, "chunk {chunk}");
    }
}

fn frames(input: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut f = Framer::new(FramingMode::Auto, NonZeroUsize::new(1024).unwrap());
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        f.push(piece);
        while let Some(frame) = f.next_frame().unwrap() {
            out.push(frame.data.to_vec());
        }
    }
    out.extend(f.finish().map(|fr| fr.data.to_vec()));
    out
}

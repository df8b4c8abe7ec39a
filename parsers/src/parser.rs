//! Line → event: format detection, the borrowed [`View`], and its one-time
//! conversion into an owned [`Event`].
//!
//! Detection (for [`InputFormat::Auto`]), per line:
//! 1. `<PRI>` followed by `VERSION SP` → RFC 5424; any other `<PRI>` → RFC
//!    3164. A line that looks like RFC 5424 but breaks its grammar is `raw`
//!    with the RFC 5424 error, not re-read as RFC 3164, which would invent a
//!    hostname out of the version digits.
//! 2. `CEF:` / `LEEF:` at the start → bare payload.
//! 3. No PRI: RFC 5424 layout (`1 2020-…`), else RFC 3164 with a timestamp.
//! 4. Otherwise a `CEF:`/`LEEF:` payload after some text that is not a
//!    syslog header (`Syslogdate Sysloghost CEF:0|…`).
//! 5. Otherwise `raw`.
//!
//! A syslog MSG that starts with `CEF:`/`LEEF:` is decoded as that payload;
//! if the payload is broken the line is `raw` with the payload's error,
//! because a line that claims to be CEF and is not is worth an operator's
//! attention. `raw` events keep the whole line as `message`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::cef::{self, CefView};
use crate::error::Error;
use crate::event::{Event, Format, Pairs, Str, StructuredData, lossy_str};
use crate::grammar::SyntaxError;
use crate::leef::{self, LeefView};
use crate::syslog::rfc3164::starts_payload;
use crate::syslog::timestamp::device_time;
use crate::syslog::{SdView, SyslogHeader, pri, rfc3164, rfc5424, sd};
use crate::time::{EventTime, SourceZone};

/// Which grammar to apply to each line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Detect per line (see the module docs).
    #[default]
    Auto,
    /// RFC 5424 only; payloads in MSG are not decoded.
    Rfc5424,
    /// RFC 3164 only; payloads in MSG are not decoded.
    Rfc3164,
    /// A CEF payload, with or without a syslog header before it.
    Cef,
    /// A LEEF payload, with or without a syslog header before it.
    Leef,
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<InputFormat, String> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "rfc5424" => Ok(InputFormat::Rfc5424),
            "rfc3164" => Ok(InputFormat::Rfc3164),
            "cef" => Ok(InputFormat::Cef),
            "leef" => Ok(InputFormat::Leef),
            other => Err(format!("unknown format {other:?}: expected auto, rfc5424, rfc3164, cef or leef")),
        }
    }
}

/// User-facing parser settings (config file / CLI).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParserConfig {
    /// Grammar selection; `auto` by default.
    #[serde(default)]
    pub format: InputFormat,
    /// Zone of timestamps written without one (RFC 3164); UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Year of timestamps written without one; inferred by default.
    #[serde(default)]
    pub year: Option<i32>,
}

impl ParserConfig {
    /// Checks the settings and builds the runtime [`Parser`].
    pub fn validate_and_build(&self) -> Result<Parser, Error> {
        let zone = match &self.timezone {
            Some(name) => SourceZone::parse(name)?,
            None => SourceZone::utc(),
        };
        if let Some(year) = self.year
            && !(1970..=9999).contains(&year)
        {
            return Err(Error::InvalidYear { year });
        }
        Ok(Parser { format: self.format, zone, year: self.year })
    }
}

/// A line parsed in place: everything borrows from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View<'a> {
    /// What the line was understood as (`Raw` when `error` is set).
    pub format: Format,
    /// Syslog header fields (all absent for bare CEF/LEEF and raw lines).
    pub header: SyslogHeader<'a>,
    /// MSG; for CEF/LEEF the payload from `CEF:`/`LEEF:` on.
    pub message: &'a [u8],
    /// The decoded payload, if any.
    pub payload: Payload<'a>,
    /// Why the line is raw.
    pub error: Option<SyntaxError>,
}

/// A structured payload inside (or instead of) a syslog message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Plain text.
    None,
    /// CEF header and extensions.
    Cef(CefView<'a>),
    /// LEEF header and attributes.
    Leef(LeefView<'a>),
}

impl<'a> View<'a> {
    fn raw(line: &'a [u8], error: SyntaxError) -> View<'a> {
        View {
            format: Format::Raw,
            header: SyslogHeader::default(),
            message: line,
            payload: Payload::None,
            error: Some(error),
        }
    }

    fn syslog(format: Format, header: SyslogHeader<'a>, message: &'a [u8]) -> View<'a> {
        View { format, header, message, payload: Payload::None, error: None }
    }
}

/// Parses lines into views and events. Cheap to share between threads.
#[derive(Clone, Debug, Default)]
pub struct Parser {
    format: InputFormat,
    zone: SourceZone,
    year: Option<i32>,
}

impl Parser {
    /// The default parser: auto-detection, UTC, inferred years.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The source zone used for timestamps without one.
    pub fn zone(&self) -> &SourceZone {
        &self.zone
    }

    /// Parses `line` in place. Never fails: an unparseable line is a view
    /// with `format = Raw` and an error.
    pub fn parse_view<'a>(&self, line: &'a [u8]) -> View<'a> {
        let l = trim_start(line);
        match self.format {
            InputFormat::Auto => auto(line, l),
            InputFormat::Rfc5424 => match rfc5424::parse(l) {
                Ok((h, msg)) => View::syslog(Format::Rfc5424, h, msg),
                Err(e) => View::raw(line, e),
            },
            InputFormat::Rfc3164 => match rfc3164::parse(l) {
                Ok((h, msg)) => View::syslog(Format::Rfc3164, h, msg),
                Err(e) => View::raw(line, e),
            },
            InputFormat::Cef | InputFormat::Leef => forced_payload(line, l, self.format),
        }
    }

    /// Parses a line into an event, placing zone-less timestamps in this
    /// parser's zone. `received_at` is the event time when the line has none
    /// and the reference for year inference.
    pub fn parse(&self, line: Bytes, received_at: EventTime) -> Event {
        self.parse_in_zone(line, received_at, &self.zone)
    }

    /// Like [`Parser::parse`] with a per-source zone (SPEC §2: the zone of an
    /// RFC 3164 source comes from its configuration).
    pub fn parse_in_zone(&self, line: Bytes, received_at: EventTime, zone: &SourceZone) -> Event {
        let view = self.parse_view(&line);
        self.to_event(&view, &line, received_at, zone)
    }

    /// Converts a view of `line` into an owned event (`raw` shares `line`).
    /// `view` must have been parsed from `line`.
    pub fn to_event(&self, view: &View<'_>, line: &Bytes, received_at: EventTime, zone: &SourceZone) -> Event {
        if let Some(error) = &view.error {
            return Event::raw(line.clone(), received_at, error.to_string());
        }
        let mut event = Event::empty(line.clone(), received_at);
        event.format = view.format;
        let h = &view.header;
        if let Some(p) = h.pri {
            event.facility = Some(p.facility());
            event.severity = Some(p.severity());
        }
        if let Some(spec) = &h.time {
            match spec.resolve(zone, self.year, received_at) {
                Some(t) => event.time = t,
                None => {
                    let why = format!("{}: the timestamp's date does not exist", view.format);
                    return Event::raw(line.clone(), received_at, why);
                }
            }
        }
        let line_text = LineText::new(line);
        let text = |part: Option<&[u8]>| part.map(|p| line_text.str(p));
        event.host = text(h.host);
        event.app = text(h.app);
        event.procid = text(h.procid);
        event.msgid = text(h.msgid);
        event.sd = line_text.structured_data(&h.sd);
        if !view.message.is_empty() {
            event.message = Some(line_text.str(view.message));
        }
        match &view.payload {
            Payload::None => {}
            Payload::Cef(cef) => {
                event.vendor = Some(line_text.cow(cef::unescape_header(cef.vendor)));
                event.product = Some(line_text.cow(cef::unescape_header(cef.product)));
                event.product_version = Some(line_text.cow(cef::unescape_header(cef.product_version)));
                event.signature_id = Some(line_text.cow(cef::unescape_header(cef.signature_id)));
                event.name = Some(line_text.cow(cef::unescape_header(cef.name)));
                event.cef_severity = Some(line_text.cow(cef::unescape_header(cef.severity)));
                let (mut rt, mut dtz) = (None, None);
                let watch = cef.extensions().inspect(|&(k, v)| match k {
                    b"rt" => rt = Some(v),
                    b"dtz" => dtz = Some(v),
                    _ => {}
                });
                event.ext = line_text.pairs(cef.extension_text(), watch, cef::unescape_value);
                // `rt` without a zone is in the device's zone (`dtz`) when given.
                let device_zone = dtz.and_then(|z| std::str::from_utf8(z).ok()).and_then(|z| SourceZone::parse(z).ok());
                if let Some(t) = rt.and_then(|rt| device_time(rt, device_zone.as_ref().unwrap_or(zone))) {
                    event.time = t;
                }
            }
            Payload::Leef(leef) => {
                event.vendor = Some(line_text.str(leef.vendor));
                event.product = Some(line_text.str(leef.product));
                event.product_version = Some(line_text.str(leef.product_version));
                event.signature_id = Some(line_text.str(leef.event_id));
                event.ext = line_text.pairs(leef.attribute_text(), leef.attributes(), Cow::Borrowed);
                if let Some(t) = event.ext_get("devTime").and_then(|t| device_time(t.as_bytes(), zone)) {
                    event.time = t;
                }
            }
        }
        event
    }
}

/// Turns slices of one line into [`Str`]s, validating the line's UTF-8
/// once: when the whole line is valid, a slice only needs its char
/// boundaries checked, not its bytes (per-field validation was a quarter of
/// the CEF conversion cost).
struct LineText<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> LineText<'a> {
    fn new(bytes: &'a [u8]) -> LineText<'a> {
        LineText { bytes, text: std::str::from_utf8(bytes).ok() }
    }

    /// `part` must be a slice of the line; anything else is copied lossily.
    #[inline]
    fn str(&self, part: &[u8]) -> Str {
        match self.slice(part) {
            Some(s) => Str::from(s),
            None => lossy_str(part),
        }
    }

    /// Pairs from `region` (a slice of the line holding them all): the
    /// region is copied once and pairs point into the copy; only values
    /// that `unescape` changes are stored separately.
    fn pairs<'p>(
        &self,
        region: &'p [u8],
        iter: impl Iterator<Item = (&'p [u8], &'p [u8])>,
        unescape: impl Fn(&'p [u8]) -> Cow<'p, [u8]>,
    ) -> Pairs {
        let Some(source) = self.slice(region) else {
            // Not valid UTF-8: copy pair by pair, lossily.
            let mut pairs = Pairs::new();
            for (k, v) in iter {
                self.push(&mut pairs, k, unescape(v));
            }
            return pairs;
        };
        let base = region.as_ptr() as usize;
        let range = |part: &[u8]| {
            let start = (part.as_ptr() as usize).wrapping_sub(base);
            start..start + part.len()
        };
        let mut pairs = Pairs::with_source(source, 16);
        // Most regions hold no escape at all: one scan spares a check per value.
        let escapes = memchr::memchr(b'\\', region).is_some();
        for (k, v) in iter {
            if !escapes {
                pairs.push_within(range(k), range(v));
                continue;
            }
            match unescape(v) {
                Cow::Borrowed(b) => pairs.push_within(range(k), range(b)),
                Cow::Owned(o) => pairs.push_within_key(range(k), &String::from_utf8_lossy(&o)),
            }
        }
        pairs
    }

    /// Structured data from its validated section: the section is copied
    /// once; ids and parameters point into the copy.
    fn structured_data(&self, view: &SdView<'_>) -> StructuredData {
        if view.is_empty() {
            return StructuredData::new();
        }
        let Some(source) = self.slice(view.text()) else {
            let mut sd = StructuredData::new();
            for e in view.elements() {
                let params: Vec<(String, String)> = e
                    .params()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(&sd::unescape(v)).into_owned(),
                        )
                    })
                    .collect();
                sd.push(&String::from_utf8_lossy(e.id), params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            return sd;
        };
        let base = view.text().as_ptr() as usize;
        let range = |part: &[u8]| {
            let start = (part.as_ptr() as usize).wrapping_sub(base);
            start..start + part.len()
        };
        let escapes = memchr::memchr(b'\\', view.text()).is_some();
        let mut sd = StructuredData::with_source(source);
        for e in view.elements() {
            sd.open_within(range(e.id));
            let params = sd.params_mut();
            for (k, v) in e.params() {
                match escapes.then(|| sd::unescape(v)) {
                    Some(Cow::Owned(o)) => params.push_within_key(range(k), &String::from_utf8_lossy(&o)),
                    _ => params.push_within(range(k), range(v)),
                }
            }
            sd.close();
        }
        sd
    }

    /// Appends a pair to `pairs` without building intermediate strings.
    #[inline]
    fn push(&self, pairs: &mut Pairs, key: &[u8], value: Cow<'_, [u8]>) {
        let key = self.slice(key).map_or_else(|| String::from_utf8_lossy(key), Cow::Borrowed);
        match value {
            Cow::Borrowed(v) => match self.slice(v) {
                Some(v) => pairs.push(&key, v),
                None => pairs.push(&key, &String::from_utf8_lossy(v)),
            },
            Cow::Owned(v) => pairs.push(&key, &String::from_utf8_lossy(&v)),
        }
    }

    /// `part` as text when the line is valid UTF-8 and `part` lies in it.
    #[inline]
    fn slice(&self, part: &[u8]) -> Option<&'a str> {
        let text = self.text?;
        let start = (part.as_ptr() as usize).wrapping_sub(self.bytes.as_ptr() as usize);
        start.checked_add(part.len()).and_then(|end| text.get(start..end))
    }

    /// A [`Str`] from possibly unescaped bytes (an owned buffer is reused).
    #[inline]
    fn cow(&self, value: Cow<'_, [u8]>) -> Str {
        match value {
            Cow::Borrowed(b) => self.str(b),
            Cow::Owned(v) => match String::from_utf8(v) {
                Ok(s) => Str::from(s),
                Err(e) => Str::from(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            },
        }
    }
}

fn trim_start(line: &[u8]) -> &[u8] {
    let n = line.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &line[n..]
}

fn auto<'a>(line: &'a [u8], l: &'a [u8]) -> View<'a> {
    if l.first() == Some(&b'<') {
        return match pri(l) {
            Err(e) => View::raw(line, SyntaxError::from_nom(Format::Rfc3164, line, e)),
            Ok((after, _)) if rfc5424::looks_like_version(after) => match rfc5424::parse(l) {
                Ok((h, msg)) => with_payload(line, Format::Rfc5424, h, msg),
                Err(e) => View::raw(line, e),
            },
            Ok(_) => match rfc3164::parse(l) {
                Ok((h, msg)) => with_payload(line, Format::Rfc3164, h, msg),
                Err(e) => View::raw(line, e),
            },
        };
    }
    if starts_payload(l) {
        return bare_payload(line, l);
    }
    if rfc5424::looks_like_version(l)
        && let Ok((h, msg)) = rfc5424::parse_without_pri(l)
    {
        return with_payload(line, Format::Rfc5424, h, msg);
    }
    match rfc3164::parse(l) {
        Ok((h, msg)) => with_payload(line, Format::Rfc3164, h, msg),
        Err(_) => match find_payload(l) {
            Some(p) => bare_payload(line, p),
            None => View::raw(
                line,
                SyntaxError {
                    format: Format::Raw,
                    offset: line.len() - l.len(),
                    expected: "a syslog header (<PRI> or a timestamp), \"CEF:\" or \"LEEF:\"",
                },
            ),
        },
    }
}

/// A syslog view, with its MSG decoded when it holds a CEF/LEEF payload.
fn with_payload<'a>(line: &'a [u8], format: Format, header: SyslogHeader<'a>, msg: &'a [u8]) -> View<'a> {
    if !starts_payload(msg) {
        return View::syslog(format, header, msg);
    }
    match decode_payload(line, msg) {
        Ok((format, payload)) => View { format, header, message: msg, payload, error: None },
        Err(e) => View::raw(line, e),
    }
}

fn bare_payload<'a>(line: &'a [u8], payload: &'a [u8]) -> View<'a> {
    match decode_payload(line, payload) {
        Ok((format, p)) => View { format, header: SyslogHeader::default(), message: payload, payload: p, error: None },
        Err(e) => View::raw(line, e),
    }
}

fn decode_payload<'a>(line: &[u8], payload: &'a [u8]) -> Result<(Format, Payload<'a>), SyntaxError> {
    if payload.starts_with(b"CEF:") {
        cef::parse(line, payload).map(|v| (Format::Cef, Payload::Cef(v)))
    } else {
        leef::parse(line, payload).map(|v| (Format::Leef, Payload::Leef(v)))
    }
}

/// `CEF:`/`LEEF:` after free text: at a word start, within the first 1 KiB.
fn find_payload(l: &[u8]) -> Option<&[u8]> {
    let head = &l[..l.len().min(1024)];
    [&b"CEF:"[..], &b"LEEF:"[..]]
        .iter()
        .filter_map(|needle| memchr::memmem::find_iter(head, needle).find(|&p| p == 0 || head[p - 1] == b' '))
        .min()
        .map(|p| &l[p..])
}

fn forced_payload<'a>(line: &'a [u8], l: &'a [u8], format: InputFormat) -> View<'a> {
    let (needle, fmt, expected): (&[u8], Format, &'static str) = if format == InputFormat::Cef {
        (b"CEF:", Format::Cef, "a \"CEF:\" payload")
    } else {
        (b"LEEF:", Format::Leef, "a \"LEEF:\" payload")
    };
    let view = auto(line, l);
    if view.format == fmt || view.error.is_some_and(|e| e.format == fmt) {
        return view;
    }
    match memchr::memmem::find(l, needle) {
        Some(p) => bare_payload(line, &l[p..]),
        None => View::raw(line, SyntaxError { format: fmt, offset: line.len() - l.len(), expected }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> EventTime {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    fn parse(line: &str) -> Event {
        Parser::new().parse(Bytes::copy_from_slice(line.as_bytes()), now())
    }

    #[test]
    fn detects_each_format() {
        assert_eq!(parse("<34>1 2003-10-11T22:14:15.003Z host su - ID47 - msg").format, Format::Rfc5424);
        assert_eq!(parse("<34>Oct 11 22:14:15 host su: msg").format, Format::Rfc3164);
        assert_eq!(parse("Oct 11 22:14:15 host su: msg").format, Format::Rfc3164);
        assert_eq!(parse("CEF:0|a|b|c|d|e|5|x=y").format, Format::Cef);
        assert_eq!(parse("<13>Oct 11 22:14:15 host CEF:0|a|b|c|d|e|5|x=y").format, Format::Cef);
        assert_eq!(parse("LEEF:1.0|a|b|c|d|x=y").format, Format::Leef);
        assert_eq!(parse("Syslogdate Sysloghost CEF:0|a|b|c|d|e|5|x=y").format, Format::Cef);
        let raw = parse("complete and utter gobbledegook");
        assert_eq!(raw.format, Format::Raw);
        assert_eq!(raw.message.as_deref(), Some("complete and utter gobbledegook"));
        assert!(raw.parse_error.unwrap().contains("syslog header"));
    }

    #[test]
    fn rfc3164_year_and_zone() {
        let e = parse("<34>Oct 11 22:14:15 host su: msg");
        assert_eq!(e.time.to_rfc3339(), "2026-10-11T22:14:15Z");
        let e = parse("<34>Dec 31 23:00:00 host su: msg");
        assert_eq!(e.time.to_rfc3339(), "2025-12-31T23:00:00Z");
        let p = ParserConfig { timezone: Some("America/New_York".into()), year: Some(2019), ..Default::default() }
            .validate_and_build()
            .unwrap();
        let e = p.parse(Bytes::from_static(b"<13>Jan 30 02:08:03 host app: Test"), now());
        assert_eq!(e.time.to_rfc3339(), "2019-01-30T02:08:03-05:00");
    }

    #[test]
    fn cef_fields_and_device_time() {
        let e = parse("CEF:0|Vendor|Prod\\|uct|1.0|100|Name|Very-High|src=10.0.0.1 rt=1543270652000 msg=a\\=b");
        assert_eq!(e.vendor.as_deref(), Some("Vendor"));
        assert_eq!(e.product.as_deref(), Some("Prod|uct"));
        assert_eq!(e.cef_severity.as_deref(), Some("Very-High"));
        assert_eq!(e.ext_get("msg"), Some("a=b"));
        assert_eq!(e.time.to_rfc3339(), "2018-11-26T22:17:32Z");
        assert!(e.message.unwrap().starts_with("CEF:0|"));
    }

    #[test]
    fn broken_payload_inside_syslog_is_raw() {
        let e = parse("<13>Oct 11 22:14:15 host CEF:0|only|three");
        assert_eq!(e.format, Format::Raw);
        assert!(e.parse_error.unwrap().starts_with("cef:"));
    }

    #[test]
    fn forced_formats() {
        let p = ParserConfig { format: InputFormat::Rfc3164, ..Default::default() }.validate_and_build().unwrap();
        let e = p.parse(Bytes::from_static(b"<13>Oct 11 22:14:15 host CEF:0|a|b|c|d|e|5|x=y"), now());
        assert_eq!(e.format, Format::Rfc3164);
        let p = ParserConfig { format: InputFormat::Cef, ..Default::default() }.validate_and_build().unwrap();
        let e = p.parse(Bytes::from_static(b"<13>Oct 11 22:14:15 host su: no cef here"), now());
        assert_eq!(e.format, Format::Raw);
        assert!(e.parse_error.unwrap().contains("CEF:"));
        let p = ParserConfig { format: InputFormat::Rfc5424, ..Default::default() }.validate_and_build().unwrap();
        assert_eq!(p.parse(Bytes::from_static(b"<13>Oct 11 22:14:15 host su: x"), now()).format, Format::Raw);
    }

    #[test]
    fn invalid_date_with_fixed_year_is_raw() {
        let p = ParserConfig { year: Some(2019), ..Default::default() }.validate_and_build().unwrap();
        let e = p.parse(Bytes::from_static(b"<134>Feb 29 14:07:19 myhostname sshd: msg"), now());
        assert_eq!(e.format, Format::Raw);
    }
}

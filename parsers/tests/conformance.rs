//! Conformance: every public vector file in `../shared/testdata/{syslog,cef,leef}`
//! runs here as a suite and reports its pass rate.
//!
//! Public parsers disagree on edge cases, so a case can end three ways:
//! pass; differ from upstream on purpose (a *deviation*, which must name a
//! decision test in `tests/decisions.rs` that pins our behaviour and says
//! why); or exercise an upstream option vigil does not have (not
//! applicable). Anything else fails the suite, and so does a recorded
//! deviation that starts passing, so this file stays an exact account.
//!
//! Permissively licensed vector files are read from `tests/fixtures/vectors`
//! (copied with their notice); the GPL and Elastic-licensed ones only from
//! `../shared/testdata`, and those suites say "skipped" without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use parsers::framing::{Framer, FramingMode};
use parsers::{Event, EventTime, Format, InputFormat, Parser, Payload};
use serde_json::Value;
use support::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("vectors").join(name)).unwrap()
}

fn dev(decision: &'static str, applies: fn(&Row) -> bool) -> Deviation {
    Deviation { decision, applies }
}

fn is_raw(e: &Event) -> Outcome {
    if e.format == Format::Raw { Outcome::Pass } else { Outcome::Fail(format!("accepted as {}", e.format)) }
}

/// Settles the cases where upstream rejects (the event must be raw) or
/// asserts nothing (not crashing is the test); otherwise the event must be
/// accepted and the caller compares fields.
fn accepted(row: &Row, e: &Event) -> Result<(), Outcome> {
    match row.valid() {
        Some(false) => Err(is_raw(e)),
        None => Err(Outcome::Pass),
        Some(true) => not_raw(e),
    }
}

fn not_raw(e: &Event) -> Result<(), Outcome> {
    match &e.parse_error {
        Some(err) => Err(Outcome::Fail(format!("rejected: {err}"))),
        None => Ok(()),
    }
}

fn expected_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The message as upstream expects it: `message`, or `message_hex` decoded
/// lossily (vigil keeps raw bytes in `raw` and shows MSG as UTF-8).
fn expected_message(x: &Value) -> Option<Value> {
    match x.get("message_hex").and_then(Value::as_str) {
        Some(h) => Some(Value::String(String::from_utf8_lossy(&hex(h)).into_owned())),
        None => x.get("message").cloned(),
    }
}

fn syslog_fields(d: &mut Diff, x: &Value, e: &Event) {
    d.number("facility", x.get("facility"), e.facility);
    d.number("severity", x.get("severity"), e.severity);
    d.text("hostname", x.get("hostname"), e.host.as_deref());
    d.text("appname", x.get("appname"), e.app.as_deref());
    d.text("procid", x.get("procid"), e.procid.as_deref());
    d.text("msgid", x.get("msgid"), e.msgid.as_deref());
    d.text("message", expected_message(x).as_ref(), e.message.as_deref());
}

// ------------------------------------------------------------------ syslog

const NOW: &str = "2026-11-22T12:00:00Z";

#[test]
fn go_syslog_rfc5424() {
    let rows = rows(&fixture("go-syslog_rfc5424.jsonl"));
    let deviations = [
        dev("rfc5424_bom_is_not_message_content", |r| {
            expected_str(r.expected(), "message").is_some_and(|m| m.starts_with('\u{feff}'))
        }),
        dev("rfc5424_field_lengths_are_not_capped_at_rfc_limits", |r| {
            r.v["description"].as_str().is_some_and(|d| {
                d.contains("appname too long")
                    || d.contains("procid too long")
                    || d.contains("msgid too long")
                    || d.contains("too long structured data")
            })
        }),
        dev("rfc5424_sd_backslash_before_other_chars_is_literal", |r| {
            r.v["description"].as_str().is_some_and(|d| d.contains("can not contain backslash"))
                && r.input().windows(2).any(|w| w == b"\\n")
        }),
    ];
    run_suite("go-syslog_rfc5424", &rows, &deviations, |row| {
        if row.option("compliant_msg").is_some() {
            return Outcome::NotApplicable("rejecting non-UTF-8 MSG after a BOM: vigil keeps the bytes");
        }
        let e = parse(&row.input(), InputFormat::Rfc5424, None, None, NOW);
        match row.valid() {
            Some(false) => is_raw(&e),
            None => Outcome::Pass,
            Some(true) => {
                if let Err(o) = not_raw(&e) {
                    return o;
                }
                let x = row.expected();
                let mut d = Diff::default();
                syslog_fields(&mut d, x, &e);
                d.sd(x.get("structured_data"), &e);
                match x.get("timestamp").and_then(Value::as_str) {
                    Some(ts) => d.time("timestamp", ts, e.time),
                    None if e.time != e.received_at => d.problems.push("timestamp: expected none".into()),
                    None => {}
                }
                d.into()
            }
        }
    });
}

/// Civil fields `MM-DD HH:MM:SS` at the event's own offset.
fn civil_month_day_time(t: EventTime) -> String {
    let c = t.civil();
    format!("{:02}-{:02}T{:02}:{:02}:{:02}", c.month, c.day, c.hour, c.minute, c.second)
}

#[test]
fn go_syslog_rfc3164() {
    let rows = rows(&fixture("go-syslog_rfc3164.jsonl"));
    let deviations = [dev("rfc3164_source_zone_is_the_zone_of_the_wall_clock", |r| r.option("timezone").is_some())];
    run_suite("go-syslog_rfc3164", &rows, &deviations, |row| {
        let zone = row.option("timezone").or_else(|| row.option("locale_timezone")).and_then(Value::as_str);
        let year = row.option("year").and_then(Value::as_i64).map(|y| y as i32);
        let e = parse(&row.input(), InputFormat::Rfc3164, zone, year, NOW);
        if row.valid() != Some(true) {
            return Outcome::Pass;
        }
        if let Err(o) = not_raw(&e) {
            return o;
        }
        let mut d = Diff::default();
        syslog_fields(&mut d, row.expected(), &e);
        let parsed = row.v["timestamp_parsed"].as_str().unwrap();
        if let Some(rest) = parsed.strip_prefix("0000-") {
            // Upstream leaves the year at 0 (and LMT offsets for it); compare
            // the wall clock only.
            if civil_month_day_time(e.time) != rest[..14] {
                d.problems.push(format!("timestamp: expected wall clock {rest}, got {}", e.time));
            }
        } else {
            d.time("timestamp", parsed, e.time);
        }
        d.into()
    });
}

#[test]
fn syslog_loose_messages() {
    let rows = rows(&fixture("syslog-loose_messages.jsonl"));
    let deviations = [
        dev("rfc3164_sd_in_a_bsd_message_stays_in_the_message", |r| [3, 23, 24].contains(&r.line)),
        dev("rfc5424_sd_syntax_errors_reject_the_header", |r| [8, 15, 16].contains(&r.line)),
        dev("rfc3164_exactly_one_space_after_the_tag_is_removed", |r| r.line == 9),
        dev("rfc3164_a_bare_word_after_the_hostname_is_message_text", |r| [11, 44].contains(&r.line)),
        dev("trailing_whitespace_is_message_data", |r| r.line == 21),
        dev("rfc3164_token_before_colon_after_timestamp_is_the_tag", |r| r.line == 40),
    ];
    run_suite("syslog-loose_messages", &rows, &deviations, |row| {
        let format = match row.option("variant").and_then(Value::as_str) {
            Some("rfc3164") => InputFormat::Rfc3164,
            Some("rfc5424") => InputFormat::Rfc5424,
            _ => InputFormat::Auto,
        };
        let zone = row.option("tz").and_then(Value::as_str);
        let year = row.option("year").and_then(Value::as_i64).map(|y| y as i32);
        // The year rule of upstream's helper (December 2019, else 2020) is
        // what inference gives on 1 December 2020.
        let e = parse(&row.input(), format, zone, year, "2020-12-01T00:00:00Z");
        let exact = row.option("exact").and_then(Value::as_bool) == Some(true);
        match row.valid() {
            Some(false) if exact => return is_raw(&e),
            Some(false) | None => return Outcome::Pass,
            Some(true) => {}
        }
        let x = row.expected();
        let mut d = Diff::default();
        syslog_fields(&mut d, x, &e);
        d.sd(x.get("structured_data"), &e);
        let resolved = x.get("timestamp_resolved").and_then(Value::as_str);
        let written = x.get("timestamp").and_then(Value::as_str);
        match (resolved, written) {
            (Some(r), _) if r.len() == 19 || x.get("timestamp_resolved_zone").is_some() => {
                let c = e.time.civil();
                let got =
                    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
                if got != r[..19] {
                    d.problems.push(format!("timestamp: expected local {r}, got {}", e.time));
                }
            }
            (Some(r), _) => d.time("timestamp", r, e.time),
            (None, Some(w)) if w.parse::<EventTime>().is_ok() => d.time("timestamp", w, e.time),
            _ => {}
        }
        d.into()
    });
}

#[test]
fn syslog_loose_structured_data() {
    let rows = rows(&fixture("syslog-loose_structured_data.jsonl"));
    let deviations = [
        dev("rfc5424_sd_syntax_errors_reject_the_header", |r| [3, 5, 6].contains(&r.line)),
        dev("rfc5424_sd_backslash_before_other_chars_is_literal", |r| r.line == 8),
    ];
    run_suite("syslog-loose_structured_data", &rows, &deviations, |row| {
        let mut line = b"<13>1 - - - - - ".to_vec();
        line.extend_from_slice(&row.input());
        line.extend_from_slice(b" msg");
        let e = parse(&line, InputFormat::Rfc5424, None, None, NOW);
        match row.valid() {
            Some(false) => is_raw(&e),
            _ => {
                if let Err(o) = not_raw(&e) {
                    return o;
                }
                let mut d = Diff::default();
                d.sd(Some(row.expected()), &e);
                d.into()
            }
        }
    });
}

#[test]
fn rsyslog_parser_tests() {
    let rows = rows(&fixture("rsyslog_parser_tests.jsonl"));
    let deviations = [
        dev("rfc3164_a_bare_word_after_the_hostname_is_message_text", |r| {
            [5, 11, 12, 21, 26, 29, 30].contains(&r.line)
        }),
        dev("rfc5424_sd_syntax_errors_reject_the_header", |r| [18, 19].contains(&r.line)),
        dev("rfc3164_without_pri_a_timestamp_is_required", |r| r.line == 35),
        dev("rfc3164_hostname_may_contain_any_printable_character", |r| r.line == 62),
        dev("rfc3164_year_after_the_clock_is_part_of_the_timestamp", |r| r.line == 20),
    ];
    run_suite("rsyslog_parser_tests", &rows, &deviations, |row| {
        let opts = row.v.get("options").and_then(Value::as_object);
        let mut format = InputFormat::Auto;
        let mut strip_first_space = true;
        if let Some(opts) = opts {
            for (k, v) in opts {
                match (k.as_str(), v.as_str()) {
                    ("parser", Some("rsyslog.rfc5424")) => format = InputFormat::Rfc5424,
                    ("permit.AtSignsInHostname" | "permit.slashesinhostname", Some("on")) => {}
                    // vigil always drops one space after the tag, which is
                    // exactly what this option does.
                    ("remove.msgFirstSpace", Some("on")) => strip_first_space = false,
                    _ => return Outcome::NotApplicable("rsyslog parser option without a vigil equivalent"),
                }
            }
        }
        let input = row.input();
        let e = parse(&input, format, None, None, "2026-11-22T12:00:00Z");
        if row.valid() != Some(true) {
            return Outcome::Pass;
        }
        if let Err(o) = not_raw(&e) {
            return o;
        }
        let x = row.expected();
        let mut d = Diff::default();
        // rsyslog substitutes PRI 13 when a line has none; vigil leaves
        // facility and severity absent (SPEC §2: "when present").
        if input.trim_ascii_start().starts_with(b"<") {
            d.number("facility", x.get("facility"), e.facility);
            d.number("severity", x.get("severity"), e.severity);
        }
        d.text("hostname", x.get("hostname"), e.host.as_deref());
        d.text("appname", x.get("appname"), e.app.as_deref());
        d.text("procid", x.get("procid_from_tag"), e.procid.as_deref());
        // rsyslog's %msg% keeps the space that follows a BSD tag.
        let strip = strip_first_space && e.format == Format::Rfc3164;
        let msg = x
            .get("message")
            .and_then(Value::as_str)
            .map(|m| Value::String(if strip { m.strip_prefix(' ').unwrap_or(m) } else { m }.to_owned()));
        d.text("message", msg.as_ref(), e.message.as_deref());
        let c = e.time.civil();
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let month = MONTHS[usize::from(c.month) - 1];
        if let Some(ts) = x.get("timestamp_rsyslog").and_then(Value::as_str) {
            let got = format!("{month} {:>2} {:02}:{:02}:{:02}", c.day, c.hour, c.minute, c.second);
            if got != ts {
                d.problems.push(format!("timestamp: expected {ts}, got {got}"));
            }
        }
        if let Some(ts) = x.get("timestamp_rsyslog_buggyday").and_then(Value::as_str) {
            let got = format!("{month} {:02} {:02}:{:02}:{:02}", c.day, c.hour, c.minute, c.second);
            if got != ts {
                d.problems.push(format!("timestamp: expected {ts}, got {got}"));
            }
        }
        if let Some(ts) = x.get("timestamp_rfc3339_first19").and_then(Value::as_str) {
            let got =
                format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
            if got != ts {
                d.problems.push(format!("timestamp: expected {ts}, got {got}"));
            }
        }
        d.into()
    });
}

#[test]
fn syslog_ng_msgparse() {
    let Some(text) = read_shared("syslog/syslog-ng_msgparse.jsonl") else { return };
    let rows = rows(&text);
    let deviations = [
        dev("rfc3164_year_is_never_more_than_a_day_ahead", |r| [34, 68].contains(&r.line)),
        dev("rfc5424_field_lengths_are_not_capped_at_rfc_limits", |r| [51, 52, 54, 55, 56].contains(&r.line)),
        dev("rfc3164_a_bare_word_after_the_hostname_is_message_text", |r| [62, 63, 64].contains(&r.line)),
        dev("rfc3164_a_single_word_after_the_timestamp_is_the_hostname", |r| r.line == 66),
        dev("rfc3164_without_pri_a_timestamp_is_required", |r| r.line == 69),
    ];
    run_suite("syslog-ng_msgparse", &rows, &deviations, |row| {
        let flags: Vec<&str> = row
            .option("parse_flags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let supported = ["LP_EXPECT_HOSTNAME", "LP_SYSLOG_PROTOCOL", "LP_PIGGYBACK_ERRORS", "LP_CHECK_HOSTNAME"];
        if row.option("bad_hostname_re").is_some() || flags.iter().any(|f| !supported.contains(f)) {
            return Outcome::NotApplicable("syslog-ng parse flag without a vigil equivalent");
        }
        let syslog_protocol = flags.contains(&"LP_SYSLOG_PROTOCOL");
        if !flags.contains(&"LP_EXPECT_HOSTNAME") && !syslog_protocol {
            return Outcome::NotApplicable("parsing BSD lines without a HOSTNAME (vigil always expects one)");
        }
        let input = row.input();
        // syslog-ng ran these with TZ=MET-1METDST and "now" 2019-02-08 09:37:49.123 +01:00.
        let e = parse(&input, InputFormat::Auto, Some("CET"), None, "2019-02-08T08:37:49.123Z");
        if let Err(o) = accepted(row, &e) {
            return o;
        }
        let x = row.expected();
        let mut d = Diff::default();
        syslog_fields(&mut d, x, &e);
        if let Some(Value::Object(pairs)) = x.get("sd_pairs") {
            for (key, value) in pairs {
                let Some(path) = key.strip_prefix(".SDATA.") else { continue };
                let found = e.sd.elements().find_map(|el| {
                    let id = format!("{}.", el.id);
                    path.strip_prefix(&id).and_then(|p| el.param(p).map(str::to_owned))
                });
                if found.as_deref() != value.as_str() {
                    d.problems.push(format!("{key}: expected {value}, got {found:?}"));
                }
            }
        }
        let reception_time =
            x.get("timestamp_note").and_then(Value::as_str).is_some_and(|n| n.contains("reception time"));
        match x.get("timestamp_resolved").and_then(Value::as_str) {
            // The receive time is an instant; its printed offset is the
            // receiving host's zone, which a parser test does not fix.
            Some(ts) if reception_time => {
                if ts.parse::<EventTime>().unwrap().unix_nanos() != e.time.unix_nanos() {
                    d.problems.push(format!("timestamp: expected the receive time {ts}, got {}", e.time));
                }
            }
            Some(ts) => d.time("timestamp", ts, e.time),
            None => {
                if let Some(usec) = x.get("timestamp_usec").and_then(Value::as_u64)
                    && u64::from(e.time.subsec_nanos() / 1000) != usec
                {
                    d.problems.push(format!("timestamp usec: expected {usec}, got {}", e.time.subsec_nanos() / 1000));
                }
                if let Some(off) = x.get("timestamp_gmtoff").and_then(Value::as_i64)
                    && i64::from(e.time.offset_secs()) != off
                {
                    d.problems.push(format!("timestamp offset: expected {off}, got {}", e.time.offset_secs()));
                }
                if x.get("timestamp_usec").is_none() && e.time.unix_nanos() != e.received_at.unix_nanos() {
                    d.problems.push(format!("timestamp: expected the receive time, got {}", e.time));
                }
            }
        }
        d.into()
    });
}

// --------------------------------------------------------------------- CEF

fn cef_view_version(input: &[u8]) -> Option<u32> {
    match Parser::new().parse_view(input).payload {
        Payload::Cef(v) => Some(v.version),
        _ => None,
    }
}

/// Compares CEF header fields and extensions. `complete`: the extension
/// object lists every pair (else only the listed keys are checked).
fn cef_fields(
    d: &mut Diff,
    x: &Value,
    e: &Event,
    input: &[u8],
    complete: bool,
    key_of: impl Fn(&str) -> Option<String>,
) {
    if let Some(v) = x.get("version").and_then(Value::as_u64)
        && cef_view_version(input).map(u64::from) != Some(v)
    {
        d.problems.push(format!("version: expected {v}"));
    }
    d.text("device_vendor", x.get("device_vendor"), e.vendor.as_deref());
    d.text("device_product", x.get("device_product"), e.product.as_deref());
    d.text("device_version", x.get("device_version"), e.product_version.as_deref());
    d.text("signature_id", x.get("signature_id"), e.signature_id.as_deref());
    d.text("name", x.get("name"), e.name.as_deref());
    d.text("severity", x.get("severity"), e.cef_severity.as_deref());
    let Some(Value::Object(ext)) = x.get("extensions") else { return };
    if complete {
        d.pairs("extensions", x.get("extensions"), &e.ext);
        return;
    }
    for (k, v) in ext {
        let Some(ours) = key_of(k) else { continue };
        d.text(&format!("ext.{k}"), Some(v), e.ext_get(&ours));
    }
}

fn same_key(e: &Event) -> impl Fn(&str) -> Option<String> + '_ {
    |k| e.ext_get(k).map(|_| k.to_owned()).or_else(|| Some(k.to_owned()))
}

#[test]
fn logstash_codec_cef() {
    let rows = rows(&fixture("logstash-codec-cef_decode.jsonl"));
    let deviations =
        [dev("cef_unescaped_newline_is_data", |r| r.line == 5), dev("encoding_never_rejects_a_line", |r| r.line == 34)];
    run_suite("logstash-codec-cef_decode", &rows, &deviations, |row| {
        let input = row.input();
        if let Some(Value::Array(events)) = row.v.get("expected_events") {
            // The codec's delimiter option is framing: run the framer.
            let mut framer = Framer::new(FramingMode::NewlineDelimited, std::num::NonZeroUsize::new(65536).unwrap());
            framer.push(&input);
            let mut frames = Vec::new();
            while let Some(f) = framer.next_frame().unwrap() {
                frames.push(f);
            }
            frames.extend(framer.finish());
            if frames.len() != events.len() {
                return Outcome::Fail(format!("expected {} events, got {}", events.len(), frames.len()));
            }
            let mut d = Diff::default();
            for (frame, x) in frames.iter().zip(events) {
                let e = Parser::new().parse(frame.data.clone(), NOW.parse().unwrap());
                cef_fields(&mut d, x, &e, &frame.data, false, same_key(&e));
            }
            return d.into();
        }
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        if let Err(o) = accepted(row, &e) {
            return o;
        }
        let mut d = Diff::default();
        let complete = row.v["expected_complete"].as_bool() == Some(true);
        cef_fields(&mut d, row.expected(), &e, &input, complete, same_key(&e));
        if let Some(rt) = row.v.get("rt_utc").and_then(Value::as_str) {
            let want: EventTime = rt.parse().unwrap();
            if want.unix_nanos() != e.time.unix_nanos() {
                d.problems.push(format!("rt: expected {rt}, got {}", e.time));
            }
        }
        d.into()
    });
}

#[test]
fn vrl_parse_cef() {
    let rows = rows(&fixture("vrl-parse_cef.jsonl"));
    let deviations = [
        dev("cef_double_quotes_are_data", |r| [4, 15].contains(&r.line)),
        dev("cef_carriage_return_escape_is_cr", |r| r.line == 10),
        dev("cef_an_equals_sign_without_a_key_is_value_text", |r| r.line == 20),
    ];
    run_suite("vrl-parse_cef", &rows, &deviations, |row| {
        if row.option("translate_custom_fields").and_then(Value::as_bool) == Some(true) {
            return Outcome::NotApplicable("custom field label translation (cs1Label) is a rule-level concern");
        }
        let input = row.input();
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        if let Err(o) = accepted(row, &e) {
            return o;
        }
        let mut d = Diff::default();
        cef_fields(&mut d, row.expected(), &e, &input, true, same_key(&e));
        d.into()
    });
}

#[test]
fn beats_decode_cef_unit() {
    let Some(text) = read_shared("cef/beats-decode_cef_unit.jsonl") else { return };
    let rows = rows(&text);
    let deviations = [
        dev("cef_empty_values_are_kept", |r| r.line == 6),
        dev("cef_unknown_extension_escapes_are_kept", |r| r.line == 8),
        dev("cef_an_equals_sign_without_a_key_is_value_text", |r| [11, 13, 14, 19, 21].contains(&r.line)),
        dev("cef_trailing_spaces_of_values_are_trimmed", |r| r.line == 16),
    ];
    run_suite("beats-decode_cef_unit", &rows, &deviations, |row| {
        if row.v.get("options").is_some_and(|o| !o.is_null()) {
            return Outcome::NotApplicable("Beats decoding option (full names, empty-value removal)");
        }
        let input = row.input();
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        let x = row.expected();
        match row.valid() {
            None => return Outcome::Pass,
            // Beats flags an error but still returns fields; vigil either
            // rejects the line (then it must be raw) or keeps every pair.
            Some(false) => {
                if e.format == Format::Raw {
                    return Outcome::Pass;
                }
                let mut d = Diff::default();
                cef_fields(&mut d, x, &e, &input, true, same_key(&e));
                return if d.ok() { Outcome::Pass } else { Outcome::Fail(d.problems.join("; ")) };
            }
            Some(true) => {}
        }
        if let Err(o) = not_raw(&e) {
            return o;
        }
        if x.is_null() {
            return Outcome::Pass;
        }
        let mut d = Diff::default();
        cef_fields(&mut d, x, &e, &input, true, same_key(&e));
        d.into()
    });
}

/// CEF short keys and the full names Beats writes for them.
const CEF_FULL_NAMES: &[(&str, &str)] = &[
    ("act", "deviceAction"),
    ("app", "applicationProtocol"),
    ("cat", "deviceEventCategory"),
    ("cnt", "baseEventCount"),
    ("cn1", "deviceCustomNumber1"),
    ("cn1Label", "deviceCustomNumber1Label"),
    ("cn2", "deviceCustomNumber2"),
    ("cn2Label", "deviceCustomNumber2Label"),
    ("cn3", "deviceCustomNumber3"),
    ("cn3Label", "deviceCustomNumber3Label"),
    ("cs1", "deviceCustomString1"),
    ("cs1Label", "deviceCustomString1Label"),
    ("cs2", "deviceCustomString2"),
    ("cs2Label", "deviceCustomString2Label"),
    ("cs3", "deviceCustomString3"),
    ("cs3Label", "deviceCustomString3Label"),
    ("cs4", "deviceCustomString4"),
    ("cs4Label", "deviceCustomString4Label"),
    ("cs5", "deviceCustomString5"),
    ("cs5Label", "deviceCustomString5Label"),
    ("cs6", "deviceCustomString6"),
    ("cs6Label", "deviceCustomString6Label"),
    ("dhost", "destinationHostName"),
    ("dlat", "destinationGeoLatitude"),
    ("dlong", "destinationGeoLongitude"),
    ("dmac", "destinationMacAddress"),
    ("dpt", "destinationPort"),
    ("dst", "destinationAddress"),
    ("duser", "destinationUserName"),
    ("dvc", "deviceAddress"),
    ("dvchost", "deviceHostName"),
    ("fname", "filename"),
    ("fsize", "fileSize"),
    ("in", "bytesIn"),
    ("msg", "message"),
    ("out", "bytesOut"),
    ("proto", "transportProtocol"),
    ("request", "requestUrl"),
    ("shost", "sourceHostName"),
    ("smac", "sourceMacAddress"),
    ("spt", "sourcePort"),
    ("src", "sourceAddress"),
    ("suid", "sourceUserId"),
    ("suser", "sourceUserName"),
];

#[test]
fn beats_decode_cef_samples() {
    let (Some(log), Some(expected)) =
        (read_shared("cef/beats-decode_cef_samples.log"), read_shared("cef/beats-decode_cef_samples_expected.jsonl"))
    else {
        return;
    };
    let lines: Vec<&str> = log.lines().collect();
    let mut rows = rows(&expected);
    for (row, line) in rows.iter_mut().zip(&lines) {
        if row.v.get("input").is_none() {
            row.v["input"] = Value::String((*line).to_owned());
        }
    }
    run_suite("beats-decode_cef_samples", &rows, &[], |row| {
        let input = row.input();
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        if let Err(o) = not_raw(&e) {
            return o;
        }
        let mut d = Diff::default();
        // Beats renames keys to full names (and capitalises some); compare
        // every key whose short name is known or which we kept as written.
        cef_fields(&mut d, row.expected(), &e, &input, false, |full| {
            if e.ext_get(full).is_some() {
                return Some(full.to_owned());
            }
            CEF_FULL_NAMES.iter().find(|(_, f)| f.eq_ignore_ascii_case(full)).map(|(s, _)| (*s).to_owned())
        });
        d.into()
    });
}

// -------------------------------------------------------------------- LEEF

fn leef_fields(d: &mut Diff, x: &Value, e: &Event, input: &[u8], complete: bool) {
    if let Some(v) = x.get("version").and_then(Value::as_str) {
        let got = match Parser::new().parse_view(input).payload {
            Payload::Leef(l) => String::from_utf8_lossy(l.version).into_owned(),
            _ => String::new(),
        };
        if got != v {
            d.problems.push(format!("version: expected {v}, got {got}"));
        }
    }
    d.text("vendor", x.get("vendor"), e.vendor.as_deref());
    d.text("product", x.get("product"), e.product.as_deref());
    d.text("product_version", x.get("product_version"), e.product_version.as_deref());
    if complete {
        d.pairs("attributes", x.get("attributes"), &e.ext);
    } else if let Some(Value::Object(attrs)) = x.get("attributes") {
        for (k, v) in attrs {
            d.text(&format!("ext.{k}"), Some(v), e.ext_get(k));
        }
    }
}

#[test]
fn tenzir_leef() {
    let rows = rows(&fixture("tenzir_leef.jsonl"));
    let deviations = [dev("leef_trailing_delimiter_is_ignored", |r| r.line == 5)];
    run_suite("tenzir_leef", &rows, &deviations, |row| {
        let input = row.input();
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        if let Err(o) = accepted(row, &e) {
            return o;
        }
        let x = row.expected();
        let mut d = Diff::default();
        match (x.get("syslog"), x.get("leef")) {
            (Some(s), Some(l)) => {
                syslog_fields(&mut d, s, &e);
                leef_fields(&mut d, l, &e, &input, true);
            }
            _ => leef_fields(&mut d, x, &e, &input, true),
        }
        d.into()
    });
}

#[test]
fn rsyslog_mmleefparse() {
    let rows = rows(&fixture("rsyslog-mmleefparse.jsonl"));
    run_suite("rsyslog-mmleefparse", &rows, &[], |row| {
        let input = row.input();
        let e = parse(&input, InputFormat::Auto, None, None, NOW);
        if let Err(o) = not_raw(&e) {
            return o;
        }
        let mut d = Diff::default();
        leef_fields(&mut d, row.expected(), &e, &input, false);
        d.into()
    });
}

/// The files this suite covers: a new vector file must get a suite.
#[test]
fn every_vector_file_has_a_suite() {
    let Some(dir) = shared_testdata() else {
        say("skipped: ../shared not present (vector file inventory)");
        return;
    };
    let covered = [
        "syslog/go-syslog_rfc5424.jsonl",
        "syslog/go-syslog_rfc3164.jsonl",
        "syslog/syslog-loose_messages.jsonl",
        "syslog/syslog-loose_structured_data.jsonl",
        "syslog/rsyslog_parser_tests.jsonl",
        "syslog/syslog-ng_msgparse.jsonl",
        "cef/logstash-codec-cef_decode.jsonl",
        "cef/vrl-parse_cef.jsonl",
        "cef/beats-decode_cef_unit.jsonl",
        "cef/beats-decode_cef_samples_expected.jsonl",
        "leef/tenzir_leef.jsonl",
        "leef/rsyslog-mmleefparse.jsonl",
    ];
    for sub in ["syslog", "cef", "leef"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let name = format!("{sub}/{}", entry.unwrap().file_name().to_string_lossy());
            if name.ends_with(".jsonl") {
                assert!(covered.contains(&name.as_str()), "{name} has no conformance suite");
            }
        }
    }
}

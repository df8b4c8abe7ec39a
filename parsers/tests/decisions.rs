//! Decisions where public parsers disagree, one test each. The first doc
//! line is the reason; the conformance suite names these tests when it
//! records a case where vigil differs from an upstream vector on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use parsers::{Event, Format, InputFormat, ParserConfig};

fn parse_as(line: &[u8], format: InputFormat) -> Event {
    let p = ParserConfig { format, ..Default::default() }.validate_and_build().unwrap();
    p.parse(Bytes::copy_from_slice(line), "2026-11-22T12:00:00Z".parse().unwrap())
}

fn parse(line: &str) -> Event {
    parse_as(line.as_bytes(), InputFormat::Auto)
}

fn ext(e: &Event, key: &str) -> Option<String> {
    e.ext_get(key).map(str::to_owned)
}

// ----------------------------------------------------------------- RFC 5424

/// RFC 5424 §6.4: the BOM marks MSG as UTF-8; it is not part of the text (go-syslog keeps it).
#[test]
fn rfc5424_bom_is_not_message_content() {
    assert_eq!(parse("<1>1 - - - - - - \u{feff}κόσμε").message.as_deref(), Some("κόσμε"));
}

/// Real senders exceed APP-NAME 48 / PROCID 128 / MSGID 32 / SD-NAME 32; rejecting or cutting them loses data (go-syslog rejects, syslog-ng truncates).
#[test]
fn rfc5424_field_lengths_are_not_capped_at_rfc_limits() {
    let app = "a".repeat(49);
    let e = parse(&format!("<1>1 - host {app} - - -"));
    assert_eq!(e.format, Format::Rfc5424);
    assert_eq!(e.app.as_deref(), Some(app.as_str()));
    let id = "s".repeat(40);
    assert_eq!(parse(&format!("<1>1 - - - - - [{id} k=\"v\"]")).sd.elements().next().unwrap().id, id.as_str());
    // The cap that remains (255) keeps one field from being the whole line.
    assert_eq!(parse(&format!("<1>1 - {} - - - -", "h".repeat(256))).format, Format::Raw);
}

/// RFC 5424 §6.3.3: a backslash before anything but `"` `\` `]` is an ordinary character (go-syslog rejects, syslog-loose reads \n as LF).
#[test]
fn rfc5424_sd_backslash_before_other_chars_is_literal() {
    let e = parse(r#"<1>1 - - - - - [m v="a\nb" w="q\"\\\]"]"#);
    assert_eq!(e.sd.get("m", "v"), Some("a\\nb"));
    assert_eq!(e.sd.get("m", "w"), Some("q\"\\]"));
}

/// Broken STRUCTURED-DATA makes the header untrustworthy: the line is raw with the reason, not half-parsed (syslog-loose drops the element).
#[test]
fn rfc5424_sd_syntax_errors_reject_the_header() {
    for line in [
        "<13>1 2019-02-13T19:48:34+00:00 host root 8449 - [incorrect x] qwerty",
        "<13>1 2019-02-13T19:48:34+00:00 host root 8449 - [id k= \"v\"] qwerty",
        "<13>1 - - - - - [a x=\"p]\"] msg",
    ] {
        let e = parse(line);
        assert_eq!(e.format, Format::Raw, "{line}");
        assert!(e.parse_error.unwrap().contains("rfc5424"), "{line}");
    }
}

/// RFC 5424 §6.3: SD-ELEMENTs follow each other without spaces; the first space ends STRUCTURED-DATA and starts MSG.
#[test]
fn rfc5424_sd_elements_are_adjacent() {
    let e = parse(r#"<132>1 2006-10-29T01:59:59.156+01:00 host app - - [a i="3"] [b j="1"] text"#);
    assert_eq!(e.sd.len(), 1);
    assert_eq!(e.message.as_deref(), Some(r#"[b j="1"] text"#));
}

// ----------------------------------------------------------------- RFC 3164

/// SPEC §2: an RFC 3164 stamp is wall-clock time of the source's zone (go-syslog's WithTimezone converts a UTC reading instead).
#[test]
fn rfc3164_source_zone_is_the_zone_of_the_wall_clock() {
    let p = ParserConfig { timezone: Some("EST".into()), year: Some(1987), ..Default::default() }
        .validate_and_build()
        .unwrap();
    let e = p.parse(Bytes::from_static(b"<13>Jan 30 02:08:03 host app: Test"), "2026-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(e.time.to_rfc3339(), "1987-01-30T02:08:03-05:00");
}

/// A TAG needs its colon or [pid]; otherwise "Use the BFG!" would lose "Use" to the tag (rsyslog and syslog-ng take bare words as tags).
#[test]
fn rfc3164_a_bare_word_after_the_hostname_is_message_text() {
    let e = parse("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!");
    assert_eq!(e.host.as_deref(), Some("10.0.0.99"));
    assert_eq!(e.app, None);
    assert_eq!(e.message.as_deref(), Some("Use the BFG!"));
}

/// RFC 3164 has no STRUCTURED-DATA; text in brackets after a BSD tag is message (syslog-loose extracts it).
#[test]
fn rfc3164_sd_in_a_bsd_message_stays_in_the_message() {
    let e = parse(r#"<46>Jan  5 15:33:03 host rsyslogd: [origin software="rsyslogd"] start"#);
    assert!(e.sd.is_empty());
    assert_eq!(e.message.as_deref(), Some(r#"[origin software="rsyslogd"] start"#));
}

/// A single token ending in ':' right after the timestamp is a TAG (haproxy, zscaler-nss); syslog-loose calls it the hostname.
#[test]
fn rfc3164_token_before_colon_after_timestamp_is_the_tag() {
    let e = parse("<34>Oct 11 22:14:15 mymachine: a message");
    assert_eq!(e.host, None);
    assert_eq!(e.app.as_deref(), Some("mymachine"));
}

/// Without PRI a line needs a timestamp to be syslog; otherwise it is raw rather than a guessed host and tag (rsyslog, syslog-ng default PRI 13).
#[test]
fn rfc3164_without_pri_a_timestamp_is_required() {
    let e = parse("This is a message!");
    assert_eq!(e.format, Format::Raw);
    assert_eq!(e.message.as_deref(), Some("This is a message!"));
    assert_eq!(parse("Dec 10 06:55:46 LabSZ sshd[24200]: hi").format, Format::Rfc3164);
}

/// Hostnames with '/' or '@' appear in relayed logs; rejecting them would move the name into the tag (rsyslog's default does).
#[test]
fn rfc3164_hostname_may_contain_any_printable_character() {
    let e = parse("<167>Mar  6 16:57:54 hostname1/hostname2 test: msgnum:0");
    assert_eq!(e.host.as_deref(), Some("hostname1/hostname2"));
    assert_eq!(e.app.as_deref(), Some("test"));
}

/// The space after "tag:" is the separator; further spaces are message text (rsyslog keeps the first, syslog-loose strips all).
#[test]
fn rfc3164_exactly_one_space_after_the_tag_is_removed() {
    assert_eq!(parse("<13>Oct 11 22:14:15 host app:  two").message.as_deref(), Some(" two"));
    assert_eq!(parse("<13>Oct 11 22:14:15 host app:none").message.as_deref(), Some("none"));
}

/// SPEC §2: the inferred year never puts an event more than a day after its receipt (syslog-ng allows months ahead).
#[test]
fn rfc3164_year_is_never_more_than_a_day_ahead() {
    let p = ParserConfig::default().validate_and_build().unwrap();
    let e = p.parse(Bytes::from_static(b"<190>NOV 22 00:00:33 host app: x"), "2019-02-08T08:37:49Z".parse().unwrap());
    assert_eq!(e.time.to_rfc3339(), "2018-11-22T00:00:33Z");
}

/// Four digits after the clock are the year (syslog-ng); rsyslog makes them the hostname, which no real host is called.
#[test]
fn rfc3164_year_after_the_clock_is_part_of_the_timestamp() {
    let e = parse("<190>Apr 15 21:28:13 2007 linksys app: msg");
    assert_eq!(e.time.to_rfc3339(), "2007-04-15T21:28:13Z");
    assert_eq!(e.host.as_deref(), Some("linksys"));
}

/// RFC 3164 §4.1.2: the field after TIMESTAMP is HOSTNAME, even when it is the last word (syslog-ng's LP_EXPECT_HOSTNAME reads a program).
#[test]
fn rfc3164_a_single_word_after_the_timestamp_is_the_hostname() {
    let e = parse("<0>Jan 10 01:00:00 prg0");
    assert_eq!(e.host.as_deref(), Some("prg0"));
    assert_eq!(e.app, None);
}

/// Trailing spaces and line breaks inside a frame are data: nothing accepted is altered (syslog-loose trims them).
#[test]
fn trailing_whitespace_is_message_data() {
    let e = parse("<13>1 2019-02-13T19:48:34+00:00 host root 8449 - - i am foobar\n  ");
    assert_eq!(e.message.as_deref(), Some("i am foobar\n  "));
}

/// Bytes are never a reason to reject a line: invalid UTF-8 is kept in `raw` and shown lossily (Logstash rejects Shift_JIS CEF).
#[test]
fn encoding_never_rejects_a_line() {
    let e = parse_as(b"CEF:0|v|p|1|1|n|5|target=aa\x82\xa0bb msg=x", InputFormat::Auto);
    assert_eq!(e.format, Format::Cef);
    assert_eq!(ext(&e, "target").as_deref(), Some("aa\u{fffd}\u{fffd}bb"));
    assert_eq!(&e.raw[..], b"CEF:0|v|p|1|1|n|5|target=aa\x82\xa0bb msg=x");
}

// ---------------------------------------------------------------------- CEF

/// Frames are cut before parsing; an LF inside an octet-counted frame is data, not a second event (Logstash rejects the frame).
#[test]
fn cef_unescaped_newline_is_data() {
    let e = parse("CEF:0|v|p|1|1|n|5|msg=line one\nline two");
    assert_eq!(e.format, Format::Cef);
    assert_eq!(ext(&e, "msg").as_deref(), Some("line one\nline two"));
}

/// CEF defines no quoting: quotes are data and stripping them would alter values (VRL strips them).
#[test]
fn cef_double_quotes_are_data() {
    let e = parse(r#"CEF:1|"Security"|p|1|1|n|5|src="10.0.0.1""#);
    assert_eq!(e.vendor.as_deref(), Some("\"Security\""));
    assert_eq!(ext(&e, "src").as_deref(), Some("\"10.0.0.1\""));
}

/// The CEF guide maps \r to carriage return (Logstash agrees; VRL turns it into LF).
#[test]
fn cef_carriage_return_escape_is_cr() {
    assert_eq!(ext(&parse(r"CEF:0|v|p|1|1|n|5|msg=a\rb"), "msg").as_deref(), Some("a\rb"));
}

/// An '=' not preceded by a key-shaped word is value text, so no pair is dropped (Logstash; Beats and strict VRL drop or reject).
#[test]
fn cef_an_equals_sign_without_a_key_is_value_text() {
    let e = parse(r"CEF:0|v|p|1|1|n|5|moo=this =has = equals\= id==old act=Accept =0.0.0.0");
    assert_eq!(ext(&e, "moo").as_deref(), Some("this =has = equals="));
    assert_eq!(ext(&e, "id").as_deref(), Some("=old"));
    assert_eq!(ext(&e, "act").as_deref(), Some("Accept =0.0.0.0"));
}

/// Unknown escapes in extension values keep their backslash, so `\|` survives as written (Logstash; Beats rejects the pair).
#[test]
fn cef_unknown_extension_escapes_are_kept() {
    assert_eq!(ext(&parse(r"CEF:0|v|p|1|1|n|5|moo=this\|pipe"), "moo").as_deref(), Some(r"this\|pipe"));
}

/// `key=` is an empty value, kept as such (Logstash, VRL; Beats errors when the key is typed).
#[test]
fn cef_empty_values_are_kept() {
    let e = parse("CEF:0|v|p|1|1|n|5|src=1.2.3.4 dst= spt=1232");
    assert_eq!(ext(&e, "dst").as_deref(), Some(""));
    assert_eq!(ext(&e, "spt").as_deref(), Some("1232"));
}

/// Padding before the next key is layout, not data: values are right-trimmed (Logstash, VRL; Beats keeps all but one space).
#[test]
fn cef_trailing_spaces_of_values_are_trimmed() {
    let e = parse("CEF:0|v|p|1|1|n|5|msg=padded    src=1.2.3.4 ");
    assert_eq!(ext(&e, "msg").as_deref(), Some("padded"));
    assert_eq!(ext(&e, "src").as_deref(), Some("1.2.3.4"));
}

// --------------------------------------------------------------------- LEEF

/// A delimiter after the last attribute ends the list; rejecting the line would lose it (Tenzir rejects).
#[test]
fn leef_trailing_delimiter_is_ignored() {
    let e = parse("LEEF:1.0|Tenzir|Tenzir|4.12|42|key=yikes\t");
    assert_eq!(e.format, Format::Leef);
    assert_eq!(ext(&e, "key").as_deref(), Some("yikes"));
}

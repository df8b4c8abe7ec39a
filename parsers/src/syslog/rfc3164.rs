//! BSD syslog (RFC 3164 §4.1) as devices actually send it:
//! `[<PRI>] TIMESTAMP [HOSTNAME] [TAG[\[PID\]]:] MSG`.
//!
//! RFC 3164 describes observed practice rather than a grammar, and senders
//! vary. The rules below decide each ambiguity once; the conformance suite
//! names the vectors they settle.
//!
//! - PRI is optional (files written by syslog daemons have none); without
//!   PRI a line needs a recognisable timestamp (or to start with a Cisco
//!   `%FAC-SEV-MNEMONIC:`) to count as syslog.
//! - Timestamps: `Mmm dd hh:mm:ss` (any day padding, optional year before
//!   the clock, optional fraction), RFC 3339 with or without offset, and
//!   FortiGate's `date=… time=…` header. Cisco extras are accepted around
//!   it: a `91: ` sequence number, a `*`/`.` sync marker, a `:` after the
//!   stamp and a zone name (`EDT:`) that overrides the source zone. A
//!   four-digit year right after the clock belongs to the timestamp.
//! - After a timestamp the first token is the HOSTNAME (RFC 3164 §4.1.2)
//!   unless it is shaped like a TAG (ends in `:` or carries `[pid]`, or is a
//!   Cisco `%FAC-SEV-MNEMONIC`): then the host is absent. An IPv6 address is
//!   a host even though it contains colons, and `host: %ASA…` is a host.
//! - A TAG must end in `:` or carry `[pid]`; a bare word is message text
//!   (otherwise "Use the BFG!" would lose "Use" to the tag).
//! - One space after the TAG's colon is removed; the rest is MSG.
//! - A CEF or LEEF payload may start wherever a HOSTNAME or TAG could.
//! - AIX relays write `Message forwarded from HOST:` before the TAG.

use std::net::Ipv6Addr;

use super::timestamp::{bsd_timestamp, fortigate_timestamp, rfc3339_lenient, zone_abbreviation};
use super::{SyslogHeader, TimeSpec, pri};
use crate::event::Format;
use crate::grammar::{SyntaxError, skip_blanks, some_digits};

const MAX_TOKEN: usize = 255;

/// Parses a BSD syslog line into its header and MSG.
pub(crate) fn parse(line: &[u8]) -> Result<(SyslogHeader<'_>, &[u8]), SyntaxError> {
    let mut header = SyslogHeader::default();
    let mut i = line;
    if i.first() == Some(&b'<') {
        let (rest, p) = pri(i).map_err(|e| SyntaxError::from_nom(Format::Rfc3164, line, e))?;
        header.pri = Some(p);
        i = rest;
    }
    i = skip_blanks(i);

    if let Some(spec) = fortigate_timestamp(i) {
        // The whole key=value text is the message; the device parser reads it.
        header.time = Some(spec);
        return Ok((header, i));
    }

    let (after_time, time) = timestamp(i);
    if time.is_none() && header.pri.is_none() && !is_cisco_mnemonic(i) {
        return Err(SyntaxError::new(Format::Rfc3164, line, i, "PRI or a timestamp"));
    }
    header.time = time;
    i = skip_blanks(after_time);

    if time.is_some()
        && let Some(r) = i.strip_prefix(b"Message forwarded from ")
    {
        // AIX syslogd relaying: "Message forwarded from HOST: tag[pid]: msg".
        let (token, rest) = split_token(r);
        if let Some(host) = token.strip_suffix(b":").filter(|h| !h.is_empty()) {
            header.host = Some(host);
            i = skip_blanks(rest);
        }
    } else if time.is_some() {
        // "Oct 11 22:14:15 : msg", "Aug 15 2012 23:30:09 : %ASA-6-302016 …"
        if let Some(r) = i.strip_prefix(b":")
            && matches!(r.first(), None | Some(b' '))
        {
            i = skip_blanks(r);
        } else if !starts_payload(i) {
            let (token, rest) = split_token(i);
            if let Some(host) = hostname(token, rest) {
                header.host = Some(host);
                i = skip_blanks(rest);
                // "INT-FW01 : %ASA-6-106100: …"
                if let Some(r) = i.strip_prefix(b":")
                    && matches!(r.first(), None | Some(b' '))
                {
                    i = skip_blanks(r);
                }
            }
        }
    }

    if !starts_payload(i)
        && let Some((app, procid, rest)) = tag(i)
    {
        header.app = Some(app);
        header.procid = procid;
        i = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    Ok((header, i))
}

/// `%FACILITY-SEVERITY-MNEMONIC:` (`%ASA-6-302013:`, `%ASA-session-5-106100:`):
/// a Cisco message, which is syslog content even without PRI or timestamp
/// (as devices store it and as `no logging timestamp` sends it).
fn is_cisco_mnemonic(i: &[u8]) -> bool {
    let Some(rest) = i.strip_prefix(b"%") else { return false };
    let n = rest.iter().take(64).take_while(|c| is_tag_char(**c)).count();
    let token = &rest[..n];
    rest.get(n) == Some(&b':') && token.windows(3).any(|w| w[0] == b'-' && w[1].is_ascii_digit() && w[2] == b'-')
}

/// Whether a CEF or LEEF payload starts here.
pub(crate) fn starts_payload(i: &[u8]) -> bool {
    i.starts_with(b"CEF:") || i.starts_with(b"LEEF:")
}

/// The timestamp with Cisco's decorations, or `(input, None)`.
fn timestamp(input: &[u8]) -> (&[u8], Option<TimeSpec>) {
    let mut i = input;
    // Cisco IOS sequence number: "91: *Oct 07 03:10:04: …"
    if let Some((_, _, r)) = some_digits(i, 10)
        && let Some(r) = r.strip_prefix(b": ")
    {
        i = r;
    }
    if let Some(r) = i.strip_prefix(b"*").or_else(|| i.strip_prefix(b"."))
        && (bsd_timestamp(r).is_some() || rfc3339_lenient(r).is_some())
    {
        i = r;
    }
    let Some((mut rest, mut spec)) = bsd_timestamp(i).or_else(|| rfc3339_lenient(i)) else {
        return (input, None);
    };
    rest = rest.strip_prefix(b":").unwrap_or(rest);
    // A zone name after the clock, e.g. "09:34:34 EDT: %ASA…"
    if let Some(r) = rest.strip_prefix(b" ") {
        let (token, after) = split_token(r);
        let name = token.strip_suffix(b":").unwrap_or(token);
        if let (Some(offset), TimeSpec::Local { civil, year_known, .. }) = (zone_abbreviation(name), spec) {
            spec = TimeSpec::Local { civil, year_known, offset: Some(offset) };
            rest = after;
        }
    }
    (rest, Some(spec))
}

/// Splits at the first space (or tab): `(token, rest starting at the space)`.
fn split_token(i: &[u8]) -> (&[u8], &[u8]) {
    let n = memchr::memchr2(b' ', b'\t', i).unwrap_or(i.len());
    (&i[..n], &i[n..])
}

/// The HOSTNAME, if `token` is one (see the module rules).
fn hostname<'a>(token: &'a [u8], rest: &[u8]) -> Option<&'a [u8]> {
    if token.is_empty() || token.len() > MAX_TOKEN || token[0] == b'%' {
        return None;
    }
    if token.contains(&b'[') {
        return None;
    }
    let has_colon = token.contains(&b':');
    if has_colon && std::str::from_utf8(token).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok()) {
        return Some(token);
    }
    if let Some(name) = token.strip_suffix(b":") {
        // "<IP>: %ASA-4-106023: …": a host followed by a Cisco tag.
        let next = skip_blanks(rest);
        let name_has_colon = name.contains(&b':');
        return (next.first() == Some(&b'%') && !name.is_empty() && !name_has_colon).then_some(name);
    }
    // Colons inside that are not an IPv6 address: a `tag:message` written
    // without a space.
    (!has_colon).then_some(token)
}

/// `(tag, pid, rest after the tag)`.
type Tag<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// `TAG[PID]:`, `TAG:` or `TAG[PID]`, or a Cisco `%FAC-SEV-MNEMONIC` with or
/// without colon. Returns `(tag, pid, rest after the colon)`.
fn tag(i: &[u8]) -> Option<Tag<'_>> {
    let n = i.iter().take(MAX_TOKEN + 1).take_while(|c| is_tag_char(**c)).count();
    if n == 0 || n > MAX_TOKEN || !matches!(i.get(n), None | Some(b' ' | b'\t' | b':' | b'[')) {
        return None;
    }
    let (name, r) = i.split_at(n);
    match r.first() {
        Some(b'[') => {
            let close = r.iter().take(130).position(|c| *c == b']')?;
            let pid = &r[1..close];
            if pid.contains(&b' ') {
                return None;
            }
            let pid = (!pid.is_empty()).then_some(pid);
            let after = &r[close + 1..];
            match after.strip_prefix(b":") {
                Some(rest) => Some((name, pid, rest)),
                None if matches!(after.first(), None | Some(b' ' | b'\t')) => Some((name, pid, after)),
                None => None,
            }
        }
        Some(b':') => Some((name, None, &r[1..])),
        _ if name[0] == b'%' && name.len() > 1 => Some((name, None, r)),
        _ => None,
    }
}

/// Characters of a TAG: RFC 3164 says alphanumeric; programs also use
/// `-_./()%@#+~` and non-ASCII names. Quotes, braces and the like mean the
/// token is message text (`{"user": …}`), not a program name.
fn is_tag_char(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, b'-' | b'_' | b'.' | b'/' | b'(' | b')' | b'%' | b'@' | b'#' | b'+' | b'~')
        || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> (Option<String>, Option<String>, Option<String>, String) {
        let (h, msg) = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        (s(h.host), s(h.app), s(h.procid), String::from_utf8_lossy(msg).into_owned())
    }

    fn f(
        host: Option<&str>,
        app: Option<&str>,
        pid: Option<&str>,
        msg: &str,
    ) -> (Option<String>, Option<String>, Option<String>, String) {
        (host.map(Into::into), app.map(Into::into), pid.map(Into::into), msg.into())
    }

    #[test]
    fn classic_and_variants() {
        assert_eq!(
            fields("<34>Oct 11 22:14:15 mymachine su: 'su root' failed"),
            f(Some("mymachine"), Some("su"), None, "'su root' failed")
        );
        assert_eq!(
            fields("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!"),
            f(Some("10.0.0.99"), None, None, "Use the BFG!")
        );
        assert_eq!(
            fields("<133>Jan 13 16:33:35 haproxy[73411]: Proxy started."),
            f(None, Some("haproxy"), Some("73411"), "Proxy started.")
        );
        assert_eq!(
            fields("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186"),
            f(Some("LabSZ"), Some("sshd"), Some("24200"), "Invalid user webmaster from 173.234.31.186")
        );
        assert_eq!(
            fields("Apr 15 2013 09:36:50: %ASA-4-106023: Deny tcp src dmz:10.1.2.30/63016"),
            f(None, Some("%ASA-4-106023"), None, "Deny tcp src dmz:10.1.2.30/63016")
        );
        assert_eq!(
            fields("Apr 24 2013 16:00:28 INT-FW01 : %ASA-6-106100: access-list inside denied"),
            f(Some("INT-FW01"), Some("%ASA-6-106100"), None, "access-list inside denied")
        );
        assert_eq!(
            fields("Dec 11 2018 08:01:24 <IP>: %ASA-4-106023: Deny udp"),
            f(Some("<IP>"), Some("%ASA-4-106023"), None, "Deny udp")
        );
        assert_eq!(
            fields("Aug 15 2012 23:30:09 : %ASA-6-302016 Teardown UDP connection 40"),
            f(None, Some("%ASA-6-302016"), None, "Teardown UDP connection 40")
        );
        assert_eq!(fields("<0>Jan 10 01:00:00 0002:: prg0: msgtxt"), f(Some("0002::"), Some("prg0"), None, "msgtxt"));
        assert_eq!(fields("<27>xapi: [error|xen3] died"), f(None, Some("xapi"), None, "[error|xen3] died"));
        assert_eq!(fields("<189>some message"), f(None, None, None, "some message"));
        assert_eq!(
            fields("<0>91: *Oct 07 03:10:04: mydevice.com %CRYPTO-4-RECVD_PKT_INV_SPI: decaps"),
            f(Some("mydevice.com"), Some("%CRYPTO-4-RECVD_PKT_INV_SPI"), None, "decaps")
        );
        assert_eq!(
            fields("<14>Sep 17 13:45:35 fw.local LEEF:1.0|PAN|OS|1|allow|cat=T"),
            f(Some("fw.local"), None, None, "LEEF:1.0|PAN|OS|1|allow|cat=T")
        );
        assert_eq!(
            fields("Jun 02 16:34:55 zscaler-nss: LEEF:1.0|Zscaler|NSS-FW|5.5|Drop|a=b"),
            f(None, Some("zscaler-nss"), None, "LEEF:1.0|Zscaler|NSS-FW|5.5|Drop|a=b")
        );
    }

    #[test]
    fn fortigate_header_is_the_timestamp_and_the_message() {
        let line = "<188>date=2020-04-23 time=12:17:48 devname=\"fw\" tz=\"-0500\" srcip=1.2.3.4";
        let (h, msg) = parse(line.as_bytes()).unwrap();
        assert!(matches!(h.time, Some(TimeSpec::Absolute(_))));
        assert_eq!(msg, &line.as_bytes()[5..]);
    }

    #[test]
    fn zone_abbreviation_overrides() {
        let (h, msg) = parse(b"Apr 15 2014 09:34:34 EDT: %ASA-session-5-106100: access-list").unwrap();
        assert!(matches!(h.time, Some(TimeSpec::Local { offset: Some(-14400), .. })));
        assert_eq!(h.app, Some(&b"%ASA-session-5-106100"[..]));
        assert_eq!(msg, b"access-list");
    }

    #[test]
    fn bare_cisco_message_is_syslog() {
        assert_eq!(fields("%ASA-2-106006: Deny inbound UDP"), f(None, Some("%ASA-2-106006"), None, "Deny inbound UDP"));
        assert!(parse(b"%not cisco: x").is_err());
    }

    #[test]
    fn not_syslog_without_pri_and_timestamp() {
        assert!(parse(b"complete and utter gobbledegook").is_err());
        assert!(parse(b"<192>Oct 11 22:14:15 x").is_err());
    }
}

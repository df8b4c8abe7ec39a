//! Linux audit records (auditd's log, or audisp through syslog) for
//! families with an `[audit]` table:
//!
//! ```text
//! type=EXECVE msg=audit(1669615313.901:5538): argc=3 a0="sh" a1="-c" a2=6563686F...
//! type=USER_CMD msg=audit(…): pid=4151 uid=497 msg='cwd="/" cmd=2F7573… res=success'
//! ```
//!
//! Every `key=value` pair goes to `ext` under its key (the inner `msg='…'`
//! of user-space records too). auditd writes values that may hold spaces
//! or control characters as unquoted hex; those of the fields that carry
//! such text (`exe`, `comm`, `cmd`, `name`, `proctitle`, an EXECVE's
//! arguments, …) are decoded, NULs (between a command's arguments) becoming
//! spaces. Each record is one event; records of one audit event share
//! `ext.serial`.

use super::kv::{self, KvSyntax};
use crate::{Event, EventTime};

/// Fields auditd hex-encodes when their text needs it.
const HEX_FIELDS: [&str; 12] =
    ["exe", "comm", "cmd", "name", "proctitle", "cwd", "data", "path", "key", "acct", "old", "new"];

/// The header of a record: its type, time and serial, and the rest.
#[derive(Debug, PartialEq)]
pub(crate) struct Header<'a> {
    pub kind: &'a str,
    pub time: EventTime,
    pub serial: &'a str,
    pub body: &'a str,
}

/// Reads `type=T msg=audit(SECS.MILLIS:SERIAL): ` at the start of `line`.
pub(crate) fn header(line: &str) -> Option<Header<'_>> {
    let rest = line.strip_prefix("type=")?;
    let (kind, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("msg=audit(")?;
    let (stamp, rest) = rest.split_once("):")?;
    let (time, serial) = stamp.split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    let secs: i64 = secs.parse().ok()?;
    let millis: u32 = millis.parse().ok().filter(|m| *m < 1_000 && millis.len() == 3)?;
    if kind.is_empty() || serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Header { kind, time: EventTime::from_unix(secs, millis * 1_000_000, 0), serial, body: rest.trim_start() })
}

/// An unquoted hex value decoded, when it is hex and decodes to text.
pub(crate) fn decode_hex(value: &str) -> Option<String> {
    let b = value.as_bytes();
    if b.len() < 2 || !b.len().is_multiple_of(2) || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes: Option<Vec<u8>> = b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect();
    let text = String::from_utf8(bytes?).ok()?;
    let text = text.trim_end_matches('\0').replace('\0', " ");
    (!text.chars().any(|c| c.is_control() && c != '\t' && c != '\n' && c != '\r')).then_some(text)
}

/// Writes the pairs of a record's body, split with `syntax` (space
/// separated, `"` quoted), to `event`.
pub(crate) fn write(event: &mut Event, h: &Header<'_>, syntax: &KvSyntax) {
    event.ext.push("type", h.kind);
    event.ext.push("serial", h.serial);
    // A user-space record's own pairs are quoted as msg='…'.
    let (outer, inner) = match h.body.split_once(" msg='").or_else(|| h.body.strip_prefix("msg='").map(|i| ("", i))) {
        Some((outer, inner)) => (outer, inner.strip_suffix('\'').unwrap_or(inner)),
        None => (h.body, ""),
    };
    let execve = h.kind == "EXECVE";
    for text in [outer, inner] {
        for ((ks, ke), (vs, ve)) in kv::pairs(syntax, text.as_bytes()) {
            let (Some(key), Some(value)) = (text.get(ks..ke), text.get(vs..ve)) else { continue };
            let quoted = vs > 0 && text.as_bytes().get(vs - 1) == Some(&b'"');
            let hex_field = HEX_FIELDS.contains(&key)
                || (execve && key.len() > 1 && key.starts_with('a') && key[1..].bytes().all(|b| b.is_ascii_digit()));
            let decoded = (!quoted && hex_field).then(|| decode_hex(value)).flatten();
            let value = decoded.as_deref().unwrap_or(value);
            match key {
                "acct" if event.user.is_none() => event.user = Some(value.into()),
                "addr" => {
                    if let Ok(ip) = value.parse() {
                        event.src_ip = Some(ip);
                    }
                }
                "res" | "success" => {
                    let outcome = match value {
                        "success" | "yes" | "1" => Some("success"),
                        "failed" | "no" | "0" => Some("failure"),
                        _ => None,
                    };
                    if let Some(o) = outcome {
                        event.outcome = Some(o.into());
                    }
                }
                _ => {}
            }
            event.ext.push(key, value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_hex_values() {
        let h = header("type=EXECVE msg=audit(1669615313.901:5538): argc=3 a0=\"sh\"").unwrap();
        assert_eq!((h.kind, h.serial, h.body), ("EXECVE", "5538", "argc=3 a0=\"sh\""));
        assert_eq!(h.time.unix_millis(), 1_669_615_313_901);
        for bad in ["", "type=X", "type=X msg=audit(1.2:3): a", "type=X msg=audit(1.200:x): a", "msg=audit(1.200:3): a"]
        {
            assert_eq!(header(bad), None, "{bad}");
        }
        assert_eq!(decode_hex("6563686F205C22").as_deref(), Some("echo \\\""));
        assert_eq!(decode_hex("2F62696E2F7368002D6300").as_deref(), Some("/bin/sh -c"));
        for no in ["", "A", "ZZ", "1281", "7f564b2672a0"] {
            assert_eq!(decode_hex(no), None, "{no}");
        }
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(line in ".{0,160}", body in "[ -~é]{0,120}") {
            let _ = header(&line);
            let _ = decode_hex(&line);
            let text = format!("type=USER_CMD msg=audit(1.001:2): {body}");
            if let Some(h) = header(&text) {
                let mut e = Event::empty(bytes::Bytes::new(), EventTime::from_unix(0, 0, 0));
                write(&mut e, &h, &KvSyntax { separator: b" ".as_slice().into(), quote: Some(b'"') });
            }
        }
    }
}

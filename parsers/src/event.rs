//! The event model of SPEC §2: one accepted log line becomes one [`Event`].
//!
//! Events are owned and cheap to move between threads. String fields are
//! [`Str`] (UTF-8 over `bytes::Bytes`): when a field is a plain slice of the
//! received line it shares the line's buffer instead of copying it, so turning
//! a parsed view into an event costs reference counts, not allocations.
//! Unescaped or lossily decoded values own their bytes.
//!
//! The JSON form (used by `vigil parse` and the API) uses the SPEC field names,
//! omits absent fields, prints times in RFC 3339, and prints `raw` as lossy
//! UTF-8 (the stored `raw` stays byte-exact).

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::time::EventTime;

/// An immutable UTF-8 string that can share the buffer it was parsed from.
pub type Str = bytestring::ByteString;

/// Identifier of an organization (tenant). The built-in orgs have fixed ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub u32);

impl OrgId {
    /// Super/Global: virtual, its users see every org (SPEC §4).
    pub const SUPER_GLOBAL: OrgId = OrgId(0);
    /// Super/Local: the provider's own network, and the default org of an
    /// event that no collector or IP range assigns elsewhere (SPEC §4).
    pub const SUPER_LOCAL: OrgId = OrgId(1);
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a line was understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// RFC 5424 syslog.
    Rfc5424,
    /// BSD syslog (RFC 3164) and its real-world variants.
    Rfc3164,
    /// ArcSight Common Event Format, bare or inside syslog.
    Cef,
    /// IBM QRadar Log Event Extended Format 1.0/2.0, bare or inside syslog.
    Leef,
    /// Nothing understood the line; see `parse_error`.
    Raw,
}

impl Format {
    /// The SPEC name: `rfc5424`, `rfc3164`, `cef`, `leef`, `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
            Format::Cef => "cef",
            Format::Leef => "leef",
            Format::Raw => "raw",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One RFC 5424 structured-data element: `[id param="value" ...]`.
/// Values are unescaped; parameter order is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdElement {
    /// The SD-ID, e.g. `origin` or `exampleSDID@32473`.
    pub id: Str,
    /// Parameters in the order written; a name may repeat.
    pub params: Vec<(Str, Str)>,
}

/// One log line as the pipeline sees it (SPEC §2).
///
/// Every field but `time`, `received_at`, `format` and `raw` is optional;
/// absent fields are `None` (or empty for `sd` and `ext`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Event time: from the message, else `received_at`.
    pub time: EventTime,
    /// When the collector received the line.
    pub received_at: EventTime,
    /// Organization id, set by the collector (SPEC §4).
    pub org_id: Option<OrgId>,
    /// Organization name, set by the collector.
    pub org: Option<Str>,
    /// The collector (entry node) that received the line.
    pub collector: Option<Str>,
    /// Address the packet or connection came from.
    pub reporter_ip: Option<IpAddr>,
    /// How the line was understood.
    pub format: Format,
    /// Syslog facility 0–23.
    pub facility: Option<u8>,
    /// Syslog severity 0–7.
    pub severity: Option<u8>,
    /// Syslog HOSTNAME.
    pub host: Option<Str>,
    /// Syslog APP-NAME (RFC 5424) or TAG (RFC 3164).
    pub app: Option<Str>,
    /// Syslog PROCID (the `[pid]` of an RFC 3164 tag).
    pub procid: Option<Str>,
    /// Syslog MSGID.
    pub msgid: Option<Str>,
    /// RFC 5424 structured data.
    pub sd: Vec<SdElement>,
    /// The free-text message; for CEF/LEEF the whole payload; for `raw` the
    /// whole line (so text filters still see it).
    pub message: Option<Str>,
    /// CEF Device Vendor / LEEF Vendor.
    pub vendor: Option<Str>,
    /// CEF Device Product / LEEF Product.
    pub product: Option<Str>,
    /// CEF Device Version / LEEF Version.
    pub product_version: Option<Str>,
    /// CEF Signature ID / LEEF EventID.
    pub signature_id: Option<Str>,
    /// CEF Name.
    pub name: Option<Str>,
    /// CEF Severity as written (`10`, `Very-High`).
    pub cef_severity: Option<Str>,
    /// CEF extensions / LEEF attributes (unescaped), and the key=value pairs
    /// that device parsers extract, in order; a key may repeat.
    pub ext: Vec<(Str, Str)>,
    /// Normalized type from a device parser, e.g. `ssh.auth.failure`.
    pub event_type: Option<Str>,
    /// Normalized source address.
    pub src_ip: Option<IpAddr>,
    /// Normalized source port.
    pub src_port: Option<u16>,
    /// Normalized destination address.
    pub dst_ip: Option<IpAddr>,
    /// Normalized destination port.
    pub dst_port: Option<u16>,
    /// Normalized user name.
    pub user: Option<Str>,
    /// Normalized action (e.g. `login`, `deny`).
    pub action: Option<Str>,
    /// Normalized outcome: `success`, `failure` or `unknown`.
    pub outcome: Option<Str>,
    /// Why the line is `raw`.
    pub parse_error: Option<Str>,
    /// The line was longer than the framer's maximum and was cut there.
    pub truncated: bool,
    /// The line exactly as received (without its frame delimiter).
    pub raw: Bytes,
}

impl Event {
    /// An event for a line nothing understood: `format = raw`, the reason in
    /// `parse_error`, the whole line (lossy) as `message`, time = receive time.
    pub fn raw(line: Bytes, received_at: EventTime, reason: impl Into<Str>) -> Event {
        let message = lossy_str(&line, &line);
        Event {
            format: Format::Raw,
            parse_error: Some(reason.into()),
            message: (!message.is_empty()).then_some(message),
            ..Event::empty(line, received_at)
        }
    }

    /// An event with only the mandatory fields set (format `raw`, no error);
    /// parsers fill in the rest.
    pub fn empty(raw: Bytes, received_at: EventTime) -> Event {
        Event {
            time: received_at,
            received_at,
            org_id: None,
            org: None,
            collector: None,
            reporter_ip: None,
            format: Format::Raw,
            facility: None,
            severity: None,
            host: None,
            app: None,
            procid: None,
            msgid: None,
            sd: Vec::new(),
            message: None,
            vendor: None,
            product: None,
            product_version: None,
            signature_id: None,
            name: None,
            cef_severity: None,
            ext: Vec::new(),
            event_type: None,
            src_ip: None,
            src_port: None,
            dst_ip: None,
            dst_port: None,
            user: None,
            action: None,
            outcome: None,
            parse_error: None,
            truncated: false,
            raw,
        }
    }

    /// The first value of extension `key`, if any.
    pub fn ext_get(&self, key: &str) -> Option<&Str> {
        self.ext.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Serializes the event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing our own types to a String cannot fail: every map key
        // is a string and no value has a failing Serialize impl.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Converts `part` (a subslice of `whole`) into a [`Str`]: zero-copy when it is
/// valid UTF-8, otherwise a lossy copy with U+FFFD replacements.
pub(crate) fn lossy_str(whole: &Bytes, part: &[u8]) -> Str {
    let (start, end) = (whole.as_ptr() as usize, whole.as_ptr() as usize + whole.len());
    let p = part.as_ptr() as usize;
    // `slice_ref` shares the buffer but requires `part` to lie inside it;
    // check instead of trusting callers, so no input can make this panic.
    let shared = (part.is_empty() || (p >= start && p + part.len() <= end)).then(|| whole.slice_ref(part));
    match shared.map(Str::try_from) {
        Some(Ok(s)) => s,
        _ => Str::from(String::from_utf8_lossy(part).into_owned()),
    }
}

struct Rfc3339(EventTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = String::with_capacity(35);
        self.0.write_rfc3339(&mut buf);
        serializer.serialize_str(&buf)
    }
}

/// Ordered key/value pairs as a JSON object; a repeated key becomes an array
/// of its values so nothing is lost.
struct PairsAsObject<'a>(&'a [(Str, Str)]);

impl PairsAsObject<'_> {
    fn has_duplicates(&self) -> bool {
        let pairs = self.0;
        if pairs.len() <= 24 {
            pairs.iter().enumerate().any(|(i, (k, _))| pairs[..i].iter().any(|(other, _)| other == k))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(pairs.len());
            !pairs.iter().all(|(k, _)| seen.insert(k.as_ref() as &str))
        }
    }
}

impl Serialize for PairsAsObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        if !self.has_duplicates() {
            for (k, v) in self.0 {
                map.serialize_entry(k as &str, v as &str)?;
            }
            return map.end();
        }
        for (i, (k, _)) in self.0.iter().enumerate() {
            if self.0[..i].iter().any(|(other, _)| other == k) {
                continue;
            }
            let values: Vec<&str> =
                self.0[i..].iter().filter(|(other, _)| other == k).map(|(_, v)| v as &str).collect();
            if values.len() == 1 {
                map.serialize_entry(k as &str, values[0])?;
            } else {
                map.serialize_entry(k as &str, &values)?;
            }
        }
        map.end()
    }
}

struct SdAsObject<'a>(&'a [SdElement]);

impl Serialize for SdAsObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for element in self.0 {
            map.serialize_entry(&element.id as &str, &PairsAsObject(&element.params))?;
        }
        map.end()
    }
}

struct LossyBytes<'a>(&'a [u8]);

impl Serialize for LossyBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&String::from_utf8_lossy(self.0))
    }
}

/// Serializes a list of strings; used by tests and tools that print field
/// lists.
pub struct StrList<'a>(pub &'a [Str]);

impl Serialize for StrList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for s in self.0 {
            seq.serialize_element(s as &str)?;
        }
        seq.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("time", &Rfc3339(self.time))?;
        map.serialize_entry("received_at", &Rfc3339(self.received_at))?;
        if let Some(v) = self.org_id {
            map.serialize_entry("org_id", &v)?;
        }
        opt_str(&mut map, "org", &self.org)?;
        opt_str(&mut map, "collector", &self.collector)?;
        if let Some(ip) = self.reporter_ip {
            map.serialize_entry("reporter_ip", &ip)?;
        }
        map.serialize_entry("format", self.format.as_str())?;
        if let Some(v) = self.facility {
            map.serialize_entry("facility", &v)?;
        }
        if let Some(v) = self.severity {
            map.serialize_entry("severity", &v)?;
        }
        opt_str(&mut map, "host", &self.host)?;
        opt_str(&mut map, "app", &self.app)?;
        opt_str(&mut map, "procid", &self.procid)?;
        opt_str(&mut map, "msgid", &self.msgid)?;
        if !self.sd.is_empty() {
            map.serialize_entry("sd", &SdAsObject(&self.sd))?;
        }
        opt_str(&mut map, "message", &self.message)?;
        opt_str(&mut map, "vendor", &self.vendor)?;
        opt_str(&mut map, "product", &self.product)?;
        opt_str(&mut map, "product_version", &self.product_version)?;
        opt_str(&mut map, "signature_id", &self.signature_id)?;
        opt_str(&mut map, "name", &self.name)?;
        opt_str(&mut map, "cef_severity", &self.cef_severity)?;
        if !self.ext.is_empty() {
            map.serialize_entry("ext", &PairsAsObject(&self.ext))?;
        }
        opt_str(&mut map, "event_type", &self.event_type)?;
        if let Some(ip) = self.src_ip {
            map.serialize_entry("src_ip", &ip)?;
        }
        if let Some(p) = self.src_port {
            map.serialize_entry("src_port", &p)?;
        }
        if let Some(ip) = self.dst_ip {
            map.serialize_entry("dst_ip", &ip)?;
        }
        if let Some(p) = self.dst_port {
            map.serialize_entry("dst_port", &p)?;
        }
        opt_str(&mut map, "user", &self.user)?;
        opt_str(&mut map, "action", &self.action)?;
        opt_str(&mut map, "outcome", &self.outcome)?;
        opt_str(&mut map, "parse_error", &self.parse_error)?;
        if self.truncated {
            map.serialize_entry("truncated", &true)?;
        }
        map.serialize_entry("raw", &LossyBytes(&self.raw))?;
        map.end()
    }
}

fn opt_str<M: SerializeMap>(map: &mut M, key: &'static str, value: &Option<Str>) -> Result<(), M::Error> {
    match value {
        Some(v) => map.serialize_entry(key, v as &str),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_event_json_names_and_omissions() {
        let t: EventTime = "2026-11-22T10:00:00Z".parse().unwrap();
        let e = Event::raw(Bytes::from_static(b"hello \xff world"), t, "no syslog header");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["format"], "raw");
        assert_eq!(v["time"], "2026-11-22T10:00:00Z");
        assert_eq!(v["parse_error"], "no syslog header");
        assert_eq!(v["raw"], "hello \u{fffd} world");
        assert!(v.get("host").is_none());
        assert!(v.get("sd").is_none());
    }

    #[test]
    fn repeated_ext_keys_become_arrays() {
        let t = EventTime::UNIX_EPOCH;
        let mut e = Event::empty(Bytes::new(), t);
        e.ext = vec![("a".into(), "1".into()), ("b".into(), "2".into()), ("a".into(), "3".into())];
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["ext"]["a"], serde_json::json!(["1", "3"]));
        assert_eq!(v["ext"]["b"], "2");
    }

    #[test]
    fn lossy_str_shares_valid_utf8() {
        let line = Bytes::from_static(b"abc def");
        let s = lossy_str(&line, &line[4..]);
        assert_eq!(&s, "def");
        let bad = Bytes::from_static(b"ab\xc3");
        assert_eq!(&lossy_str(&bad, &bad), "ab\u{fffd}");
    }
}

//! The event model of SPEC §2: one accepted log line becomes one [`Event`].
//!
//! Events are owned and cheap to move between threads. String fields are
//! [`Str`], which keeps strings of up to 24 bytes inline: host names, tags,
//! keys, addresses and most values cost a copy, not an allocation, and no
//! shared reference counts are touched per field (measured: sharing the line
//! buffer per field was slower, as every field paid two atomic operations).
//! `raw` shares the receive buffer.
//!
//! The JSON form (used by `vigil parse` and the API) uses the SPEC field names,
//! omits absent fields, prints times in RFC 3339, and prints `raw` as lossy
//! UTF-8 (the stored `raw` stays byte-exact).

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::time::EventTime;

/// A UTF-8 string stored inline up to 24 bytes, on the heap beyond.
pub type Str = compact_str::CompactString;

/// Identifier of an organization (tenant). The built-in orgs have fixed ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub u32);

impl OrgId {
    /// Super/Global: virtual, its users see every org (SPEC §4).
    pub const SUPER_GLOBAL: OrgId = OrgId(2);
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

/// RFC 5424 structured data: elements `[id param="value" ...]` in order,
/// values unescaped, stored flat (ids and parameters share one buffer).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StructuredData {
    params: Pairs,
    /// Per element: id range in the buffer, then its parameters' index range.
    elements: Vec<[usize; 4]>,
}

/// One structured-data element, borrowed from [`StructuredData`].
#[derive(Clone, Copy, Debug)]
pub struct SdElement<'a> {
    /// The SD-ID, e.g. `origin` or `exampleSDID@32473`.
    pub id: &'a str,
    params: &'a Pairs,
    range: (usize, usize),
}

impl<'a> SdElement<'a> {
    /// Parameters in the order written; a name may repeat.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let params = self.params;
        (self.range.0..self.range.1).filter_map(move |i| params.pair(i))
    }

    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl StructuredData {
    /// No elements.
    pub fn new() -> StructuredData {
        StructuredData::default()
    }

    /// Starts from a copy of the SD section text that ids and parameters
    /// then point into (see [`Pairs::with_source`]).
    pub(crate) fn with_source(source: &str) -> StructuredData {
        StructuredData { params: Pairs::with_source(source, 8), elements: Vec::with_capacity(4) }
    }

    /// Starts an element whose id is a range of the source.
    pub(crate) fn open_within(&mut self, id: std::ops::Range<usize>) {
        let n = self.params.len();
        self.elements.push([id.start, id.end, n, n]);
    }

    /// The parameters being added belong to the last element opened.
    pub(crate) fn params_mut(&mut self) -> &mut Pairs {
        &mut self.params
    }

    /// Closes the last element opened: its parameters are those added since.
    pub(crate) fn close(&mut self) {
        let n = self.params.len();
        if let Some(last) = self.elements.last_mut() {
            last[3] = n;
        }
    }

    /// Appends an element with its parameters.
    pub fn push<'p>(&mut self, id: &str, params: impl IntoIterator<Item = (&'p str, &'p str)>) {
        let id = self.params.push_text(id);
        self.open_within(id);
        for (k, v) in params {
            self.params.push(k, v);
        }
        self.close();
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether there is no structured data.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The elements in order.
    pub fn elements(&self) -> impl ExactSizeIterator<Item = SdElement<'_>> + '_ {
        self.elements.iter().map(|&[is, ie, ps, pe]| SdElement {
            id: self.params.text_at(is..ie),
            params: &self.params,
            range: (ps, pe),
        })
    }

    /// The first value of `param` in the first element `id`.
    pub fn get(&self, id: &str, param: &str) -> Option<&str> {
        self.elements().filter(|e| e.id == id).find_map(|e| e.param(param))
    }

    /// The flat parts, for the wire codec: the parameters (whose buffer
    /// also holds the ids) and per element `[id start, id end, first
    /// parameter, end of parameters]`.
    pub(crate) fn parts(&self) -> (&Pairs, &[[usize; 4]]) {
        (&self.params, &self.elements)
    }

    /// Rebuilds structured data from [`Self::parts`], or `None` when an id
    /// range is not text of the buffer or a parameter range is reversed or
    /// past the last parameter: what comes off the wire is checked here, so
    /// no value exists whose ranges do not hold.
    pub(crate) fn from_parts(params: Pairs, elements: Vec<[usize; 4]>) -> Option<StructuredData> {
        let n = params.len();
        let valid = elements.iter().all(|&[is, ie, ps, pe]| params.text.get(is..ie).is_some() && ps <= pe && pe <= n);
        valid.then_some(StructuredData { params, elements })
    }
}

impl fmt::Debug for StructuredData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.elements().map(|e| (e.id, e.params().collect::<Vec<_>>()))).finish()
    }
}

/// Ordered key/value pairs kept in one string buffer with an index of
/// ranges: two allocations however many pairs, no per-field string objects
/// (building a string per key and value cost more than parsing them).
/// A key may repeat; [`Pairs::get`] returns the first value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    text: String,
    spans: Vec<[usize; 4]>,
}

impl Pairs {
    /// No pairs.
    pub fn new() -> Pairs {
        Pairs::default()
    }

    /// Room for `pairs` pairs of `bytes` total length.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Pairs {
        Pairs { text: String::with_capacity(bytes), spans: Vec::with_capacity(pairs) }
    }

    /// Starts from a copy of `source` that later pairs may point into with
    /// [`Pairs::push_within`]: one copy for a whole `k=v k=v` region instead
    /// of one per key and value.
    pub(crate) fn with_source(source: &str, pairs: usize) -> Pairs {
        let mut text = String::with_capacity(source.len() + 16);
        text.push_str(source);
        Pairs { text, spans: Vec::with_capacity(pairs) }
    }

    /// Appends a pair whose key and value are byte ranges of the source
    /// given to [`Pairs::with_source`]. Callers derive the ranges from that
    /// text; a range that is not (off a char boundary) reads as "" rather
    /// than failing, since every read goes through `str::get`.
    pub(crate) fn push_within(&mut self, key: std::ops::Range<usize>, value: std::ops::Range<usize>) {
        self.spans.push([key.start, key.end, value.start, value.end]);
    }

    /// Appends a pair whose key is a range of the source and whose value is
    /// new text (an unescaped value).
    pub(crate) fn push_within_key(&mut self, key: std::ops::Range<usize>, value: &str) {
        let vs = self.text.len();
        self.text.push_str(value);
        self.spans.push([key.start, key.end, vs, self.text.len()]);
    }

    /// Appends text that is not a pair (an SD-ID) and returns its range.
    pub(crate) fn push_text(&mut self, text: &str) -> std::ops::Range<usize> {
        let start = self.text.len();
        self.text.push_str(text);
        start..self.text.len()
    }

    /// The buffer text in `range` ("" for a range that is not text).
    pub(crate) fn text_at(&self, range: std::ops::Range<usize>) -> &str {
        self.text.get(range).unwrap_or_default()
    }

    /// Pair number `i`.
    pub(crate) fn pair(&self, i: usize) -> Option<(&str, &str)> {
        self.spans.get(i).map(|&[ks, ke, vs, ve]| (self.text_at(ks..ke), self.text_at(vs..ve)))
    }

    /// The flat parts, for the wire codec: the buffer and per pair `[key
    /// start, key end, value start, value end]` into it. The buffer may hold
    /// text no pair points at (the rest of a copied source).
    pub(crate) fn parts(&self) -> (&str, &[[usize; 4]]) {
        (&self.text, &self.spans)
    }

    /// Rebuilds pairs from [`Self::parts`], or `None` when a range is
    /// reversed, past the end of `text` or off a char boundary: what comes
    /// off the wire is checked here, so no value exists whose ranges do
    /// not hold.
    pub(crate) fn from_parts(text: String, spans: Vec<[usize; 4]>) -> Option<Pairs> {
        let valid = spans.iter().all(|&[ks, ke, vs, ve]| text.get(ks..ke).is_some() && text.get(vs..ve).is_some());
        valid.then_some(Pairs { text, spans })
    }

    /// Appends a pair.
    pub fn push(&mut self, key: &str, value: &str) {
        let ks = self.text.len();
        self.text.push_str(key);
        let vs = self.text.len();
        self.text.push_str(value);
        self.spans.push([ks, vs, vs, self.text.len()]);
    }

    /// Makes room for `pairs` more pairs of `bytes` more text.
    pub fn reserve(&mut self, pairs: usize, bytes: usize) {
        self.spans.reserve(pairs);
        self.text.reserve(bytes);
    }

    /// Appends a pair whose key is `prefix.key`, without building the key
    /// elsewhere first.
    pub fn push_prefixed(&mut self, prefix: &str, key: &str, value: &str) {
        let ks = self.text.len();
        self.text.push_str(prefix);
        self.text.push('.');
        self.text.push_str(key);
        let vs = self.text.len();
        self.text.push_str(value);
        self.spans.push([ks, vs, vs, self.text.len()]);
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&[ks, ke, vs, ve]| {
            (self.text.get(ks..ke).unwrap_or_default(), self.text.get(vs..ve).unwrap_or_default())
        })
    }
}

impl fmt::Debug for Pairs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Pairs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Pairs {
        let mut pairs = Pairs::new();
        for (k, v) in iter {
            pairs.push(k.as_ref(), v.as_ref());
        }
        pairs
    }
}

/// One log line as the pipeline sees it (SPEC §2).
///
/// Every field but `time`, `received_at`, `format` and `raw` is optional;
/// absent fields are `None` (or empty for `sd` and `ext`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Event id ([`crate::EventIds`]: unique across nodes), given by the
    /// collector that accepted the event; 0 before that.
    pub id: u64,
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
    pub sd: StructuredData,
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
    pub ext: Pairs,
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
        let message = lossy_str(&line);
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
            id: 0,
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
            sd: StructuredData::new(),
            message: None,
            vendor: None,
            product: None,
            product_version: None,
            signature_id: None,
            name: None,
            cef_severity: None,
            ext: Pairs::new(),
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
    pub fn ext_get(&self, key: &str) -> Option<&str> {
        self.ext.get(key)
    }

    /// Serializes the event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing our own types to a String cannot fail: every map key
        // is a string and no value has a failing Serialize impl.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Converts bytes into a [`Str`], replacing invalid UTF-8 with U+FFFD.
pub(crate) fn lossy_str(part: &[u8]) -> Str {
    Str::from_utf8_lossy(part)
}

struct Rfc3339(EventTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = String::with_capacity(35);
        self.0.write_rfc3339(&mut buf);
        serializer.serialize_str(&buf)
    }
}

/// Key-value pairs as a JSON object, a repeated key becoming an array of
/// its values so nothing is lost. The closure gives the pairs afresh, so
/// the common case (no repeated key) is written without collecting them
/// first: this runs for every stored event that has pairs.
struct PairsObject<F>(F);

impl<'a, F, I> PairsObject<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a str, &'a str)>,
{
    fn has_duplicates(&self) -> bool {
        let n = (self.0)().count();
        if n <= 24 {
            (self.0)().enumerate().any(|(i, (k, _))| (self.0)().take(i).any(|(other, _)| other == k))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(n);
            !(self.0)().all(|(k, _)| seen.insert(k))
        }
    }
}

impl<'a, F, I> Serialize for PairsObject<F>
where
    F: Fn() -> I,
    I: Iterator<Item = (&'a str, &'a str)>,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.has_duplicates() {
            let mut map = serializer.serialize_map(None)?;
            for (k, v) in (self.0)() {
                map.serialize_entry(k, v)?;
            }
            return map.end();
        }
        let pairs: Vec<(&str, &str)> = (self.0)().collect();
        let mut map = serializer.serialize_map(None)?;
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(other, _)| other == k) {
                continue;
            }
            let values: Vec<&str> = pairs[i..].iter().filter(|(other, _)| other == k).map(|(_, v)| *v).collect();
            if values.len() == 1 {
                map.serialize_entry(k, values[0])?;
            } else {
                map.serialize_entry(k, &values)?;
            }
        }
        map.end()
    }
}

struct SdAsObject<'a>(&'a StructuredData);

impl StructuredData {
    /// The JSON object the event's JSON form uses for `sd` (element id →
    /// parameters), e.g. for a columnar store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&SdAsObject(self)).unwrap_or_default()
    }

    /// [`Self::to_json`] appended to `out` (no allocation of its own).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, &SdAsObject(self));
    }
}

impl Pairs {
    /// The JSON object the event's JSON form uses for `ext` (a repeated
    /// key becomes an array of its values).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&PairsObject(|| self.iter())).unwrap_or_default()
    }

    /// [`Self::to_json`] appended to `out` (no allocation of its own).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(out, &PairsObject(|| self.iter()));
    }
}

impl Serialize for SdAsObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for element in self.0.elements() {
            map.serialize_entry(element.id, &PairsObject(|| element.params()))?;
        }
        map.end()
    }
}

struct LossyBytes<'a>(&'a [u8]);

impl Serialize for LossyBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.serialize_str(&String::from_utf8_lossy(self.0)),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.id != 0 {
            map.serialize_entry("event_id", &self.id)?;
        }
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
            map.serialize_entry("ext", &PairsObject(|| self.ext.iter()))?;
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
        e.ext = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["ext"]["a"], serde_json::json!(["1", "3"]));
        assert_eq!(v["ext"]["b"], "2");
        // Past 24 keys repeats are found another way; the same result.
        let many: Vec<(String, String)> = (0..30).map(|i| (format!("k{i}"), i.to_string())).collect();
        let mut pairs: Pairs = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        e.ext = pairs.clone();
        let mut out = Vec::new();
        e.ext.write_json(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"k0":"0","k1":"1","#), "in order: {text}");
        pairs.push("k3", "again");
        e.ext = pairs;
        let v: serde_json::Value = serde_json::from_str(&e.ext.to_json()).unwrap();
        assert_eq!(v["k3"], serde_json::json!(["3", "again"]));
        assert_eq!(v.as_object().unwrap().len(), 30);
    }

    #[test]
    fn structured_data_is_an_object_of_elements_and_repeated_params_become_arrays() {
        let e = crate::Parser::new().parse(
            Bytes::from_static(b"<13>1 2026-11-22T10:00:00Z h app - - [x@1 a=\"1\" b=\"2\" a=\"3\"][y@2 c=\"4\"] m"),
            EventTime::UNIX_EPOCH,
        );
        let mut out = Vec::new();
        e.sd.write_json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"x@1": {"a": ["1", "3"], "b": "2"}, "y@2": {"c": "4"}}));
    }

    #[test]
    fn lossy_str_replaces_invalid_utf8() {
        assert_eq!(lossy_str(b"def"), "def");
        assert_eq!(lossy_str(b"ab\xc3"), "ab\u{fffd}");
    }
}

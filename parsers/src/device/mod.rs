//! Device parsers: data-driven rules that read the message of known sources
//! and set `event_type` and the normalized fields (SPEC §2).
//!
//! A device family is one TOML file (see `parsers/patterns/` for the built-in
//! ones and `docs/device-patterns.md` for the format): which events it looks
//! at (`[[match]]` on app name, message prefix/contents, format), ordered
//! message `[[pattern]]` templates, optional key=value extraction `[kv]`,
//! and `[[when]]` adjustments. Families are tried by `priority` then name;
//! the first family that recognises an event classifies it.
//!
//! Families are data, not code: a directory of pattern files is loaded next
//! to the built-ins (a file with a built-in family's name replaces it), and
//! [`DeviceRegistry::reload`] swaps in a new set atomically while events keep
//! flowing; a set that does not compile is rejected and the old one stays.

mod access;
mod audit;
mod audit_join;
mod kv;
mod template;

pub use audit_join::{AUDIT_EVENT_TYPE, AuditJoin, AuditJoinStats};

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::error::Error;
use crate::event::{Event, Format, Str};
use kv::KvSyntax;
use template::{Kind, Segment, Template};

/// Largest pattern file read.
const MAX_PATTERN_FILE: u64 = 1024 * 1024;

/// The families shipped with vigil, by file name.
const BUILTIN: &[(&str, &str)] = &[
    ("openssh.toml", include_str!("../../patterns/openssh.toml")),
    ("pam.toml", include_str!("../../patterns/pam.toml")),
    ("sudo.toml", include_str!("../../patterns/sudo.toml")),
    ("linux-accounts.toml", include_str!("../../patterns/linux-accounts.toml")),
    ("fortigate.toml", include_str!("../../patterns/fortigate.toml")),
    ("cisco-asa.toml", include_str!("../../patterns/cisco-asa.toml")),
    ("netfilter.toml", include_str!("../../patterns/netfilter.toml")),
    ("cef-leef.toml", include_str!("../../patterns/cef-leef.toml")),
    ("web-access.toml", include_str!("../../patterns/web-access.toml")),
    ("linux-audit.toml", include_str!("../../patterns/linux-audit.toml")),
];

/// Where a template hole or a `set` entry writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    EventType,
    User,
    SrcIp,
    SrcPort,
    DstIp,
    DstPort,
    Action,
    Outcome,
    Host,
    Ext(Str),
    Discard,
}

impl Target {
    pub(crate) fn parse(name: &str) -> Result<Target, String> {
        Ok(match name {
            "event_type" => Target::EventType,
            "user" => Target::User,
            "src_ip" => Target::SrcIp,
            "src_port" => Target::SrcPort,
            "dst_ip" => Target::DstIp,
            "dst_port" => Target::DstPort,
            "action" => Target::Action,
            "outcome" => Target::Outcome,
            "host" => Target::Host,
            "_" => Target::Discard,
            other => match other.strip_prefix("ext.") {
                Some(key) if !key.is_empty() => Target::Ext(Str::from(key)),
                _ => {
                    return Err(format!(
                        "unknown field {other:?}: expected event_type, user, src_ip, src_port, dst_ip, dst_port, action, outcome, host, ext.<name> or _"
                    ));
                }
            },
        })
    }

    /// Writes `value` to the event; a value that does not fit a typed field
    /// (an IP that is a host name, a port that is not a number) is kept in
    /// `ext` under the field's name rather than dropped.
    fn write(&self, event: &mut Event, value: &str) {
        match self {
            Target::EventType => event.event_type = Some(Str::from(value)),
            Target::User => event.user = Some(Str::from(value)),
            Target::Action => event.action = Some(Str::from(value)),
            Target::Outcome => event.outcome = Some(Str::from(value)),
            Target::Host => {
                if event.host.is_none() {
                    event.host = Some(Str::from(value));
                }
            }
            Target::SrcIp => match value.parse::<IpAddr>() {
                Ok(ip) => event.src_ip = Some(ip),
                Err(_) => event.ext.push("src_ip", value),
            },
            Target::DstIp => match value.parse::<IpAddr>() {
                Ok(ip) => event.dst_ip = Some(ip),
                Err(_) => event.ext.push("dst_ip", value),
            },
            Target::SrcPort => match value.parse::<u16>() {
                Ok(p) => event.src_port = Some(p),
                Err(_) => event.ext.push("src_port", value),
            },
            Target::DstPort => match value.parse::<u16>() {
                Ok(p) => event.dst_port = Some(p),
                Err(_) => event.ext.push("dst_port", value),
            },
            Target::Ext(key) => event.ext.push(key, value),
            Target::Discard => {}
        }
    }
}

// ---------------------------------------------------------------- config

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_priority")]
    priority: i32,
    #[serde(rename = "match", default)]
    matches: Vec<MatchFile>,
    #[serde(rename = "pattern", default)]
    patterns: Vec<PatternFile>,
    #[serde(default)]
    kv: Option<KvFile>,
    #[serde(default)]
    access_log: Option<AccessFile>,
    #[serde(default)]
    audit: Option<AuditFile>,
    #[serde(default)]
    default_event_type: Option<String>,
    #[serde(rename = "when", default)]
    whens: Vec<WhenFile>,
}

fn default_priority() -> i32 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    prefix: Vec<String>,
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    formats: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    template: toml::Spanned<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    set: HashMap<String, String>,
}

/// `[access_log]`: the message is a web server access-log line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default = "default_access_type")]
    event_type: String,
}

/// `[audit]`: the message is a Linux audit record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {}

fn default_access_type() -> String {
    "web.access".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KvFile {
    #[serde(default = "default_source")]
    source: String,
    #[serde(default = "default_separator")]
    separator: String,
    #[serde(default)]
    quote: Option<char>,
    #[serde(default)]
    keep_all: bool,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    fields: HashMap<String, String>,
    #[serde(default)]
    outcome: Option<OutcomeFile>,
}

fn default_source() -> String {
    "message".to_owned()
}

fn default_separator() -> String {
    " ".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeFile {
    from: String,
    #[serde(default)]
    success: Vec<String>,
    #[serde(default)]
    failure: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenFile {
    contains: String,
    set: HashMap<String, String>,
}

// -------------------------------------------------------------- compiled

#[derive(Debug)]
struct Family {
    name: String,
    description: String,
    priority: i32,
    matches: Vec<MatchBlock>,
    patterns: Vec<Pattern>,
    /// For each first byte of a message, the patterns that can match it, in
    /// order (patterns starting with a hole are in every list).
    by_first_byte: Vec<Vec<u16>>,
    kv: Option<Kv>,
    /// The event type of access-log lines, when the family reads them.
    access_log: Option<Str>,
    /// How the family splits Linux audit records, when it reads them.
    audit: Option<KvSyntax>,
    default_event_type: Option<Str>,
    whens: Vec<When>,
}

#[derive(Debug, Default)]
struct MatchBlock {
    apps: Vec<Glob>,
    prefix: Vec<Box<[u8]>>,
    contains: Vec<Box<[u8]>>,
    formats: Vec<Format>,
}

#[derive(Debug)]
struct Pattern {
    template: Template,
    event_type: Option<Str>,
    set: Vec<(Target, Str)>,
}

#[derive(Debug)]
struct Kv {
    from_ext: bool,
    syntax: KvSyntax,
    keep_all: bool,
    event_type: Option<EventTypeTemplate>,
    fields: HashMap<Box<str>, Target>,
    outcome: Option<OutcomeMap>,
}

/// Outcome from the value of one key.
#[derive(Debug)]
struct OutcomeMap {
    from: Box<str>,
    success: Vec<Box<str>>,
    failure: Vec<Box<str>>,
}

#[derive(Debug)]
struct When {
    contains: Box<[u8]>,
    set: Vec<(Target, Str)>,
}

/// `fortigate.{type}.{subtype}`: literal parts and kv keys.
#[derive(Debug)]
struct EventTypeTemplate {
    parts: Vec<(bool, Box<str>)>,
}

impl EventTypeTemplate {
    fn compile(text: &str) -> Result<EventTypeTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed \"{{\" in event_type {text:?}"))?;
            if open > 0 {
                parts.push((false, rest[..open].into()));
            }
            parts.push((true, rest[open + 1..open + close].into()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push((false, rest.into()));
        }
        Ok(EventTypeTemplate { parts })
    }

    fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for (is_key, part) in &self.parts {
            if *is_key {
                out.push_str(&lookup(part).unwrap_or_else(|| "unknown".to_owned()).to_ascii_lowercase());
            } else {
                out.push_str(part);
            }
        }
        out
    }
}

/// A `*` glob over app names.
#[derive(Debug)]
struct Glob {
    pieces: Vec<Box<str>>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob {
            pieces: pattern.split('*').filter(|p| !p.is_empty()).map(Into::into).collect(),
            anchored_start: !pattern.starts_with('*'),
            anchored_end: !pattern.ends_with('*'),
        }
    }

    fn matches(&self, text: &str) -> bool {
        if self.pieces.is_empty() {
            return !self.anchored_start || text.is_empty();
        }
        let mut rest = text;
        for (i, piece) in self.pieces.iter().enumerate() {
            let last = i + 1 == self.pieces.len();
            if i == 0 && self.anchored_start {
                let Some(r) = rest.strip_prefix(&**piece) else { return false };
                rest = r;
                if last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if last && self.anchored_end {
                return rest.len() >= piece.len() && rest.ends_with(&**piece);
            }
            match rest.find(&**piece) {
                Some(p) => rest = &rest[p + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn compile_set(set: &HashMap<String, String>, problems: &mut Vec<String>) -> Vec<(Target, Str)> {
    let mut out: Vec<(Target, Str)> = Vec::new();
    let mut keys: Vec<&String> = set.keys().collect();
    keys.sort();
    for key in keys {
        match Target::parse(key) {
            Ok(t) => out.push((t, Str::from(set[key].as_str()))),
            Err(e) => problems.push(format!("in set: {e}")),
        }
    }
    out
}

impl Family {
    fn compile(file_name: &str, text: &str) -> Result<Family, Error> {
        let invalid = |problems: Vec<(usize, String)>| Error::InvalidPatterns { file: file_name.to_owned(), problems };
        let parsed: FamilyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            invalid(vec![(line, e.message().to_owned())])
        })?;
        let mut problems: Vec<(usize, String)> = Vec::new();
        let mut general: Vec<String> = Vec::new();
        if parsed.name.trim().is_empty() {
            general.push("name must not be empty".to_owned());
        }
        if parsed.matches.is_empty() {
            general.push("a family needs at least one [[match]] block".to_owned());
        }
        let mut matches = Vec::new();
        for m in &parsed.matches {
            let mut block = MatchBlock {
                apps: m.apps.iter().map(|a| Glob::new(a)).collect(),
                prefix: m.prefix.iter().map(|p| p.as_bytes().into()).collect(),
                contains: m.contains.iter().map(|p| p.as_bytes().into()).collect(),
                formats: Vec::new(),
            };
            for f in &m.formats {
                match f.as_str() {
                    "rfc5424" => block.formats.push(Format::Rfc5424),
                    "rfc3164" => block.formats.push(Format::Rfc3164),
                    "cef" => block.formats.push(Format::Cef),
                    "leef" => block.formats.push(Format::Leef),
                    "raw" => block.formats.push(Format::Raw),
                    other => general.push(format!(
                        "unknown format {other:?} in [[match]]: expected rfc5424, rfc3164, cef, leef or raw"
                    )),
                }
            }
            if block.apps.is_empty() && block.prefix.is_empty() && block.contains.is_empty() && block.formats.is_empty()
            {
                general.push("a [[match]] block needs apps, prefix, contains or formats".to_owned());
            }
            matches.push(block);
        }
        let mut patterns = Vec::new();
        for p in &parsed.patterns {
            let line = line_of(text, p.template.span().start);
            let mut local = Vec::new();
            let template = match Template::compile(p.template.get_ref()) {
                Ok(t) => Some(t),
                Err(e) => {
                    local.push(e);
                    None
                }
            };
            let uses_kv = template
                .as_ref()
                .is_some_and(|t| t.segments.iter().any(|s| matches!(s, Segment::Hole { kind: Kind::Kv, .. })));
            if uses_kv && parsed.kv.is_none() {
                local.push("a {:kv} hole needs a [kv] table in the family".to_owned());
            }
            let set = compile_set(&p.set, &mut local);
            problems.extend(local.into_iter().map(|m| (line, m)));
            if let Some(template) = template {
                patterns.push(Pattern { template, event_type: p.event_type.as_deref().map(Str::from), set });
            }
        }
        let kv = match &parsed.kv {
            None => None,
            Some(k) => {
                let mut fields = HashMap::new();
                for (key, target) in &k.fields {
                    match Target::parse(target) {
                        Ok(t) => {
                            fields.insert(key.as_str().into(), t);
                        }
                        Err(e) => general.push(format!("in [kv.fields] {key}: {e}")),
                    }
                }
                if k.separator.is_empty() {
                    general.push("[kv] separator must not be empty".to_owned());
                }
                let from_ext = match k.source.as_str() {
                    "message" => false,
                    "ext" => true,
                    other => {
                        general.push(format!("[kv] source {other:?}: expected message or ext"));
                        false
                    }
                };
                let quote = match k.quote {
                    Some(q) if q.is_ascii() => Some(q as u8),
                    Some(q) => {
                        general.push(format!("[kv] quote {q:?} must be an ASCII character"));
                        None
                    }
                    None => None,
                };
                let event_type = match k.event_type.as_deref().map(EventTypeTemplate::compile) {
                    Some(Ok(t)) => Some(t),
                    Some(Err(e)) => {
                        general.push(e);
                        None
                    }
                    None => None,
                };
                Some(Kv {
                    from_ext,
                    syntax: KvSyntax { separator: k.separator.as_bytes().into(), quote },
                    keep_all: k.keep_all,
                    event_type,
                    fields,
                    outcome: k.outcome.as_ref().map(|o| OutcomeMap {
                        from: o.from.as_str().into(),
                        success: o.success.iter().map(|s| s.to_ascii_lowercase().into()).collect(),
                        failure: o.failure.iter().map(|s| s.to_ascii_lowercase().into()).collect(),
                    }),
                })
            }
        };
        if parsed.patterns.is_empty()
            && kv.is_none()
            && parsed.access_log.is_none()
            && parsed.audit.is_none()
            && parsed.default_event_type.is_none()
        {
            general.push(
                "a family needs [[pattern]]s, a [kv] table, an [access_log] or [audit] table or a default_event_type"
                    .to_owned(),
            );
        }
        let mut whens = Vec::new();
        for w in &parsed.whens {
            let set = compile_set(&w.set, &mut general);
            whens.push(When { contains: w.contains.as_bytes().into(), set });
        }
        problems.extend(general.into_iter().map(|m| (0, m)));
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let mut by_first_byte = vec![Vec::new(); 256];
        for (idx, p) in patterns.iter().enumerate() {
            let idx = u16::try_from(idx).unwrap_or(u16::MAX);
            match p.template.first_byte() {
                Some(b) => by_first_byte[usize::from(b)].push(idx),
                None => by_first_byte.iter_mut().for_each(|v| v.push(idx)),
            }
        }
        Ok(Family {
            name: parsed.name,
            description: parsed.description,
            priority: parsed.priority,
            matches,
            patterns,
            by_first_byte,
            kv,
            access_log: parsed.access_log.map(|a| Str::from(a.event_type)),
            audit: parsed.audit.map(|_| KvSyntax { separator: b" ".as_slice().into(), quote: Some(b'"') }),
            default_event_type: parsed.default_event_type.map(Str::from),
            whens,
        })
    }

    fn applies_to(&self, event: &Event, app: &str, message: &[u8]) -> bool {
        self.matches.iter().any(|m| {
            // Lines without a syslog header only for blocks that name `raw`.
            (m.apps.is_empty() || m.apps.iter().any(|g| g.matches(app)))
                && (m.formats.contains(&event.format) || (m.formats.is_empty() && event.format != Format::Raw))
                && (m.prefix.is_empty() || m.prefix.iter().any(|p| message.starts_with(p)))
                && m.contains.iter().all(|c| memchr::memmem::find(message, c).is_some())
        })
    }

    /// Classifies `event` if this family recognises it.
    fn classify(&self, event: &mut Event, message: &str) -> bool {
        let text = message.trim_start();
        let bytes = text.as_bytes();
        if let Some(&first) = bytes.first() {
            for &idx in &self.by_first_byte[usize::from(first)] {
                let pattern = &self.patterns[usize::from(idx)];
                if let Some(caps) = pattern.template.matches(bytes) {
                    for (seg, start, end) in caps.iter() {
                        let Segment::Hole { target, kind } = &pattern.template.segments[seg] else { continue };
                        let Some(value) = text.get(start..end) else { continue };
                        if *kind == Kind::Kv {
                            if let Some(kv) = &self.kv {
                                kv.apply_text(event, value);
                            }
                        } else {
                            target.write(event, value);
                        }
                    }
                    for (target, value) in &pattern.set {
                        target.write(event, value);
                    }
                    if let Some(t) = &pattern.event_type {
                        event.event_type = Some(t.clone());
                    }
                    self.apply_whens(event, bytes);
                    return true;
                }
            }
        }
        if let Some(kv) = &self.kv
            && self.patterns.is_empty()
        {
            let matched = if kv.from_ext { kv.apply_ext(event) } else { kv.apply_text(event, message) };
            if matched {
                self.apply_whens(event, message.as_bytes());
                return true;
            }
        }
        if let Some(event_type) = &self.access_log
            && let Some(line) = access::parse(text)
        {
            write_access(event, &line);
            event.event_type = Some(event_type.clone());
            self.apply_whens(event, message.as_bytes());
            return true;
        }
        if let Some(syntax) = &self.audit
            && let Some(h) = audit::header(text)
        {
            // A record without a syslog header has no time but its own.
            if event.format == Format::Raw {
                event.time = h.time;
            }
            audit::write(event, &h, syntax);
            let mut kind = String::with_capacity(6 + h.kind.len());
            kind.push_str("audit.");
            kind.extend(h.kind.chars().map(|c| c.to_ascii_lowercase()));
            event.event_type = Some(kind.into());
            self.apply_whens(event, message.as_bytes());
            return true;
        }
        if let Some(t) = &self.default_event_type {
            event.event_type = Some(t.clone());
            self.apply_whens(event, message.as_bytes());
            return true;
        }
        false
    }

    fn apply_whens(&self, event: &mut Event, message: &[u8]) {
        if let Some(w) = self.whens.iter().find(|w| memchr::memmem::find(message, &w.contains).is_some()) {
            for (target, value) in &w.set {
                target.write(event, value);
            }
        }
    }
}

/// Writes an access-log line's fields: the client as `src_ip` (or
/// `ext.client` when it is a name), the user, and `ext.method`, `uri`,
/// `uri_stem`, `uri_query`, `protocol`, `status`, `bytes`, `referrer`,
/// `user_agent`, `uri_host` (absolute URIs, as proxies log them),
/// `uri_extension`, and `vhost` or `forwarded_for`; the outcome is success
/// below status 400. A raw line takes the time it logs.
fn write_access(event: &mut Event, line: &access::AccessLine<'_>) {
    // A line without a syslog header has no time but its own.
    if event.format == Format::Raw
        && let Some(t) = access::time(line.time)
    {
        event.time = t;
    }
    match line.client.parse::<std::net::IpAddr>() {
        Ok(ip) => event.src_ip = Some(ip),
        Err(_) => event.ext.push("client", line.client),
    }
    if let Some(user) = line.user {
        event.user = Some(user.into());
    }
    if let Some(prefix) = line.prefix {
        let chain = prefix.split(',').all(|p| p.trim().parse::<std::net::IpAddr>().is_ok());
        event.ext.push(if chain { "forwarded_for" } else { "vhost" }, prefix);
    }
    event.ext.push("request", line.request);
    if let (Some(method), Some(uri), Some(protocol)) = (line.method, line.uri, line.protocol) {
        event.ext.push("method", method);
        event.ext.push("uri", uri);
        let stem = match uri.split_once('?') {
            Some((stem, query)) => {
                event.ext.push("uri_stem", stem);
                event.ext.push("uri_query", query);
                stem
            }
            None => {
                event.ext.push("uri_stem", uri);
                uri
            }
        };
        // A proxy logs absolute URIs (and CONNECT host:port): their host.
        if let Some(host) = access::uri_host(method, uri) {
            event.ext.push("uri_host", host);
        }
        if let Some(extension) = access::extension(stem) {
            event.ext.push("uri_extension", extension);
        }
        event.ext.push("protocol", protocol);
    }
    event.ext.push("status", line.status);
    if let Some(bytes) = line.bytes {
        event.ext.push("bytes", bytes);
    }
    if let Some(referrer) = line.referrer {
        event.ext.push("referrer", referrer);
    }
    if let Some(agent) = line.user_agent {
        event.ext.push("user_agent", agent);
    }
    event.outcome = Some(if line.status.as_bytes()[0] < b'4' { "success" } else { "failure" }.into());
}

impl Kv {
    /// Parses `text` (a slice of the event's message) as pairs. Returns
    /// whether any pair was found.
    fn apply_text(&self, event: &mut Event, text: &str) -> bool {
        let mut found = false;
        let mut outcome_value: Option<&str> = None;
        let mut type_values: Vec<(&str, &str)> = Vec::new();
        for ((ks, ke), (vs, ve)) in kv::pairs(&self.syntax, text.as_bytes()) {
            let (Some(key), Some(value)) = (text.get(ks..ke), text.get(vs..ve)) else { continue };
            found = true;
            if let Some(target) = self.fields.get(key) {
                target.write(event, value);
            }
            if self.keep_all {
                event.ext.push(key, value);
            }
            if self.outcome.as_ref().is_some_and(|o| &*o.from == key) {
                outcome_value = Some(value);
            }
            if self.event_type.as_ref().is_some_and(|t| t.parts.iter().any(|(is_key, p)| *is_key && &**p == key)) {
                type_values.push((key, value));
            }
        }
        if found {
            self.finish(event, outcome_value, |k| {
                type_values.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
            });
        }
        found
    }

    /// Maps already-parsed extension pairs (CEF/LEEF) onto normalized fields.
    fn apply_ext(&self, event: &mut Event) -> bool {
        let ext = std::mem::take(&mut event.ext);
        let mut found = false;
        for (k, v) in ext.iter() {
            if let Some(target) = self.fields.get(k) {
                target.write(event, v);
                found = true;
            }
        }
        if found {
            let outcome_value = self.outcome.as_ref().and_then(|o| ext.get(&o.from));
            self.finish(event, outcome_value, |k| ext.get(k).map(str::to_owned));
        }
        // Values that did not fit a typed field were appended while `ext`
        // was out; keep them after the original pairs.
        let appended = std::mem::replace(&mut event.ext, ext);
        for (k, v) in appended.iter() {
            event.ext.push(k, v);
        }
        found
    }

    fn finish(&self, event: &mut Event, outcome_value: Option<&str>, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(t) = &self.event_type {
            event.event_type = Some(Str::from(t.render(lookup)));
        }
        if let (Some(map), Some(v)) = (&self.outcome, outcome_value) {
            let v = v.to_ascii_lowercase();
            if map.success.iter().any(|s| **s == *v) {
                event.outcome = Some(Str::const_new("success"));
            } else if map.failure.iter().any(|s| **s == *v) {
                event.outcome = Some(Str::const_new("failure"));
            }
        }
    }
}

// ------------------------------------------------------------ public API

/// A compiled, immutable set of device families.
#[derive(Debug)]
pub struct DeviceParsers {
    families: Vec<Family>,
    /// Some family reads lines without a syslog header (`formats = ["raw"]`).
    reads_raw: bool,
}

impl DeviceParsers {
    /// The built-in families (`parsers/patterns/*.toml`).
    pub fn builtin() -> Result<DeviceParsers, Error> {
        let sources: Vec<(String, String)> =
            BUILTIN.iter().map(|(n, t)| (format!("builtin:{n}"), (*t).to_owned())).collect();
        DeviceParsers::from_sources(&sources)
    }

    /// Compiles families from `(file name, TOML text)` pairs. Every problem
    /// of every file is reported, not just the first.
    pub fn from_sources(sources: &[(String, String)]) -> Result<DeviceParsers, Error> {
        let mut families: Vec<Family> = Vec::new();
        let mut errors = Vec::new();
        for (name, text) in sources {
            match Family::compile(name, text) {
                Ok(f) => match families.iter_mut().find(|existing| existing.name == f.name) {
                    Some(existing) => *existing = f,
                    None => families.push(f),
                },
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => {}
            1 => return Err(errors.remove(0)),
            _ => return Err(Error::Multiple { errors }),
        }
        families.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.name.cmp(&b.name)));
        let reads_raw = families.iter().any(|f| f.matches.iter().any(|m| m.formats.contains(&Format::Raw)));
        Ok(DeviceParsers { families, reads_raw })
    }

    /// The built-ins plus every `*.toml` file in `dir` (sorted by name); a
    /// file whose family has a built-in's name replaces that built-in.
    pub fn load(dir: Option<&Path>) -> Result<DeviceParsers, Error> {
        let mut sources: Vec<(String, String)> =
            BUILTIN.iter().map(|(n, t)| (format!("builtin:{n}"), (*t).to_owned())).collect();
        if let Some(dir) = dir {
            sources.extend(read_dir_sources(dir)?);
        }
        DeviceParsers::from_sources(&sources)
    }

    /// Names of the loaded families in evaluation order.
    pub fn family_names(&self) -> impl Iterator<Item = &str> {
        self.families.iter().map(|f| f.name.as_str())
    }

    /// `(name, description)` of the loaded families in evaluation order.
    pub fn families(&self) -> impl Iterator<Item = (&str, &str)> {
        self.families.iter().map(|f| (f.name.as_str(), f.description.as_str()))
    }

    /// Sets `event_type` and normalized fields when a family recognises the
    /// event. Returns whether one did. Raw events are left alone.
    pub fn classify(&self, event: &mut Event) -> bool {
        self.classify_as(event).is_some()
    }

    /// Like [`DeviceParsers::classify`], returning which family recognised
    /// the event: its place in [`DeviceParsers::family_names`].
    pub fn classify_as(&self, event: &mut Event) -> Option<usize> {
        if event.format == Format::Raw && !self.reads_raw {
            return None;
        }
        // Moved out and back rather than cloned: families write other fields
        // while reading these two, and a clone would copy the message.
        let message = event.message.take()?;
        let app = event.app.take();
        let trimmed = message.trim_start().as_bytes();
        let app_name = app.as_deref().unwrap_or_default();
        let family = self
            .families
            .iter()
            .position(|family| family.applies_to(event, app_name, trimmed) && family.classify(event, &message));
        event.message = Some(message);
        event.app = app;
        family
    }
}

fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, Error> {
    use std::io::Read;
    let io = |path: &Path, source| Error::Io { path: path.to_owned(), source };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        let mut text = String::new();
        // Bounded: a pattern file is configuration, not data.
        #[allow(clippy::disallowed_methods)]
        file.take(MAX_PATTERN_FILE).read_to_string(&mut text).map_err(|e| io(&path, e))?;
        out.push((path.display().to_string(), text));
    }
    Ok(out)
}

/// The live set of device families, swappable at runtime.
#[derive(Debug)]
pub struct DeviceRegistry {
    current: ArcSwap<DeviceParsers>,
    dir: Option<PathBuf>,
}

impl DeviceRegistry {
    /// Loads the built-ins plus the pattern files in `dir`.
    pub fn new(dir: Option<PathBuf>) -> Result<DeviceRegistry, Error> {
        let parsers = DeviceParsers::load(dir.as_deref())?;
        Ok(DeviceRegistry { current: ArcSwap::from_pointee(parsers), dir })
    }

    /// The families in effect; take one snapshot per batch.
    pub fn current(&self) -> Arc<DeviceParsers> {
        self.current.load_full()
    }

    /// Re-reads the pattern directory and swaps the new set in. On error the
    /// running set is kept and the error says what to fix.
    pub fn reload(&self) -> Result<(), Error> {
        let parsers = DeviceParsers::load(self.dir.as_deref())?;
        self.current.store(Arc::new(parsers));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::Parser;
    use crate::time::EventTime;

    fn classify(line: &str) -> Event {
        let parsers = DeviceParsers::builtin().unwrap();
        let mut e = Parser::new().parse(bytes::Bytes::copy_from_slice(line.as_bytes()), EventTime::UNIX_EPOCH);
        parsers.classify(&mut e);
        e
    }

    #[test]
    fn builtins_compile() {
        let p = DeviceParsers::builtin().unwrap();
        assert!(p.family_names().any(|n| n == "openssh"));
    }

    #[test]
    fn sshd_failed_password() {
        let e =
            classify("Feb 20 08:35:22 slave22 sshd[5774]: Failed password for root from 216.160.83.57 port 29160 ssh2");
        assert_eq!(e.event_type.as_deref(), Some("ssh.auth.failure"));
        assert_eq!(e.user.as_deref(), Some("root"));
        assert_eq!(e.src_ip, Some("216.160.83.57".parse().unwrap()));
        assert_eq!(e.src_port, Some(29160));
        assert_eq!(e.outcome.as_deref(), Some("failure"));
    }

    #[test]
    fn glob() {
        assert!(Glob::new("sshd").matches("sshd"));
        assert!(!Glob::new("sshd").matches("sshd2"));
        assert!(Glob::new("*(pam_unix)").matches("su(pam_unix)"));
        assert!(Glob::new("%ASA-*").matches("%ASA-6-302013"));
        assert!(Glob::new("a*b*c").matches("axxbyyc"));
        assert!(!Glob::new("a*b*c").matches("axxbyy"));
        assert!(Glob::new("*").matches("anything"));
    }

    #[test]
    fn compile_errors_are_all_reported_with_lines() {
        let text = "name = \"x\"\n[[match]]\napps = [\"a\"]\n[[pattern]]\ntemplate = \"{nope}\"\n[[pattern]]\ntemplate = \"{user:float}\"\n";
        let err = DeviceParsers::from_sources(&[("x.toml".into(), text.into())]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml:5:"), "{msg}");
        assert!(msg.contains("x.toml:7:"), "{msg}");
        let err = DeviceParsers::from_sources(&[("y.toml".into(), "name = \"y\"\nbogus = 1\n".into())]).unwrap_err();
        assert!(err.to_string().contains("y.toml:2:"), "{err}");
    }
}

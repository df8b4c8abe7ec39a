//! Filters: compiled once into a tree of typed tests, evaluated per event
//! without parsing anything again.
//!
//! The YAML form is a mapping whose entries must all hold:
//!
//! ```yaml
//! filter:
//!   event_type: ssh.auth.failure        # equality
//!   user: [root, admin]                  # any of a set
//!   app|startswith: ssh                  # also endswith, contains
//!   message|re: 'Failed \w+ for'         # regular expression
//!   user|startswith|i: ADM               # |i: ignore case
//!   src_ip|cidr: [10.0.0.0/8]            # address ranges
//!   dst_port|gte: 1024                   # also gt, lt, lte
//!   ext.reason|exists: true
//!   src_ip|in_list: scanners             # watch-list membership
//!   user|eq_field: ext.target_user       # equal to another field
//!   time|hour: [0, 1, 2, 3]              # a part of the event time (UTC)
//!   any: [{user: root}, {user: admin}]   # or; also all, not
//! ```
//!
//! Regular expressions (and the case-insensitive text tests, which compile to
//! regular expressions) are gathered per field across the whole rule set into
//! one [`RegexSet`], run at most once per event and field.

use std::collections::HashSet;
use std::net::IpAddr;

use parsers::{Event, Format, Network};
use regex::{Regex, RegexSet, SetMatches};

use crate::diag::{Diags, suggest};
use crate::field::{Field, FieldType, Value};
use crate::key::Part;
use crate::syntax::{Kind, Node};

/// A compiled filter.
#[derive(Debug)]
pub(crate) enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Test(Field, Test),
}

/// One test of one field.
#[derive(Debug)]
pub(crate) enum Test {
    /// Equal to one of these texts.
    Text(TextSet),
    /// Equal to one of these numbers.
    Num(Vec<f64>),
    /// Equal to one of these addresses.
    Ip(Vec<IpAddr>),
    Prefix(Vec<Box<str>>),
    Suffix(Vec<Box<str>>),
    Contains(Vec<Box<str>>),
    /// Pattern `index` of the rule set's regex set `set`.
    Regex {
        set: usize,
        index: usize,
    },
    Cidr(CidrTable),
    Compare(Op, f64),
    Exists(bool),
    /// Membership of the watch list with this number.
    InList(usize),
    /// Equal to the value of another field of the same event.
    SameAs(Field),
    /// A part of a time (seconds since the epoch), in UTC, equal to one
    /// of these numbers.
    TimePart(TimePart, Vec<u32>),
}

/// A part of a date, as the Sigma time modifiers name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimePart {
    Minute,
    Hour,
    Day,
    /// The ISO 8601 week, 1 to 53.
    Week,
    Month,
    Year,
}

impl TimePart {
    fn parse(name: &str) -> Option<TimePart> {
        Some(match name {
            "minute" => TimePart::Minute,
            "hour" => TimePart::Hour,
            "day" => TimePart::Day,
            "week" => TimePart::Week,
            "month" => TimePart::Month,
            "year" => TimePart::Year,
            _ => return None,
        })
    }

    /// The valid values of the part.
    fn range(self) -> std::ops::RangeInclusive<u32> {
        match self {
            TimePart::Minute => 0..=59,
            TimePart::Hour => 0..=23,
            TimePart::Day => 1..=31,
            TimePart::Week => 1..=53,
            TimePart::Month => 1..=12,
            TimePart::Year => 0..=9999,
        }
    }

    /// The part of `secs` (seconds since the epoch), in UTC.
    pub fn of(self, secs: i64) -> u32 {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = parsers::time::civil_from_days(days);
        match self {
            TimePart::Minute => (of_day / 60 % 60) as u32,
            TimePart::Hour => (of_day / 3600) as u32,
            TimePart::Day => u32::from(day),
            TimePart::Month => u32::from(month),
            TimePart::Year => u32::try_from(year).unwrap_or(0),
            TimePart::Week => {
                // ISO 8601: the week with the year's first Thursday is 1.
                let weekday = (days + 3).rem_euclid(7); // Monday = 0
                let thursday = days - weekday + 3;
                let (iso_year, _, _) = parsers::time::civil_from_days(thursday);
                let first = parsers::time::days_from_civil(iso_year, 1, 1);
                ((thursday - first) / 7 + 1) as u32
            }
        }
    }
}

/// A numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Gte => left >= right,
            Op::Lt => left < right,
            Op::Lte => left <= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

/// A set of exact texts: a list while small, hashed beyond.
#[derive(Debug)]
pub(crate) enum TextSet {
    Small(Vec<Box<str>>),
    Hashed(HashSet<Box<str>>),
}

impl TextSet {
    fn new(values: Vec<Box<str>>) -> TextSet {
        if values.len() <= 8 { TextSet::Small(values) } else { TextSet::Hashed(values.into_iter().collect()) }
    }

    #[inline]
    fn contains(&self, text: &str) -> bool {
        match self {
            TextSet::Small(values) => values.iter().any(|v| &**v == text),
            TextSet::Hashed(values) => values.contains(text),
        }
    }

    /// The texts, for the event-type index.
    pub fn values(&self) -> Vec<&str> {
        match self {
            TextSet::Small(values) => values.iter().map(|v| &**v).collect(),
            TextSet::Hashed(values) => {
                let mut all: Vec<&str> = values.iter().map(|v| &**v).collect();
                all.sort_unstable();
                all
            }
        }
    }
}

/// Address ranges. Small tables are scanned; larger ones are hashed by
/// prefix length, so a lookup costs one probe per distinct length.
#[derive(Debug)]
pub(crate) struct CidrTable {
    nets: Vec<Network>,
    /// Per (family, prefix length): a representative network and the set
    /// of network bits of that shape.
    by_len: Vec<(Network, HashSet<u128>)>,
}

impl CidrTable {
    fn new(nets: Vec<Network>) -> CidrTable {
        let mut by_len: Vec<(Network, HashSet<u128>)> = Vec::new();
        if nets.len() > 16 {
            for net in &nets {
                let shape = |n: &Network| (n.is_ipv4(), n.prefix());
                match by_len.iter_mut().find(|(rep, _)| shape(rep) == shape(net)) {
                    Some((_, set)) => {
                        set.insert(net.bits());
                    }
                    None => by_len.push((*net, HashSet::from([net.bits()]))),
                }
            }
            // The most numerous prefix lengths first.
            by_len.sort_by_key(|entry| std::cmp::Reverse(entry.1.len()));
        }
        CidrTable { nets, by_len }
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.by_len.is_empty() {
            self.nets.iter().any(|n| n.contains(ip))
        } else {
            self.by_len.iter().any(|(rep, set)| rep.key_of(ip).is_some_and(|bits| set.contains(&bits)))
        }
    }
}

/// The regular expressions of a rule set, gathered per field while compiling.
#[derive(Clone, Default)]
pub(crate) struct RegexTable {
    fields: Vec<(Field, Vec<String>)>,
}

impl RegexTable {
    /// Adds a pattern (already checked to compile) and returns its place.
    fn add(&mut self, field: &Field, pattern: String) -> Test {
        let set = match self.fields.iter().position(|(f, _)| f == field) {
            Some(i) => i,
            None => {
                self.fields.push((field.clone(), Vec::new()));
                self.fields.len() - 1
            }
        };
        let patterns = &mut self.fields[set].1;
        let index = match patterns.iter().position(|p| *p == pattern) {
            Some(i) => i,
            None => {
                patterns.push(pattern);
                patterns.len() - 1
            }
        };
        Test::Regex { set, index }
    }

    /// Builds one set per field.
    pub fn build(self) -> Result<Vec<(Field, RegexSet)>, String> {
        self.fields
            .into_iter()
            .map(|(field, patterns)| match RegexSet::new(&patterns) {
                Ok(set) => Ok((field, set)),
                Err(e) => Err(format!("the regular expressions on {field} do not fit in one set: {e}")),
            })
            .collect()
    }
}

/// What compiling a filter needs from the rule set around it.
pub(crate) struct FilterCx<'a, 'd> {
    pub diags: &'a mut Diags<'d>,
    pub regexes: &'a mut RegexTable,
    /// Watch-list names; a list's number is its position.
    pub lists: &'a mut Vec<String>,
    /// Field names the filter uses (for index and placeholder checks).
    pub used: Vec<Field>,
}

/// Compiles a `filter:` mapping.
pub(crate) fn compile(node: &Node, cx: &mut FilterCx<'_, '_>) -> Filter {
    let Some(entries) = node.entries() else {
        cx.diags.error(node.line, format!("a filter must be a mapping of field tests, not {}", node.type_name()));
        return Filter::All(Vec::new());
    };
    if entries.is_empty() {
        cx.diags.error(node.line, "empty filter: it would match every event; write the tests it needs");
    }
    let tests = entries.iter().map(|(key, value)| compile_entry(key, value, cx)).collect();
    Filter::All(tests)
}

fn compile_list(node: &Node, combinator: &str, cx: &mut FilterCx<'_, '_>) -> Vec<Filter> {
    match &node.kind {
        Kind::Seq(items) if !items.is_empty() => items.iter().map(|item| compile(item, cx)).collect(),
        _ => {
            cx.diags.error(node.line, format!("'{combinator}' takes a non-empty list of filters"));
            Vec::new()
        }
    }
}

const OPS: [&str; 18] = [
    "startswith",
    "endswith",
    "contains",
    "re",
    "cidr",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "in_list",
    "eq_field",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
];

fn compile_entry(key: &Node, value: &Node, cx: &mut FilterCx<'_, '_>) -> Filter {
    let Some(name) = key.as_text() else {
        cx.diags.error(key.line, format!("a filter key must be a field name, not {}", key.type_name()));
        return Filter::All(Vec::new());
    };
    match name.as_str() {
        "any" => return Filter::Any(compile_list(value, "any", cx)),
        "all" => return Filter::All(compile_list(value, "all", cx)),
        "not" => return Filter::Not(Box::new(compile(value, cx))),
        _ => {}
    }
    let mut parts = name.split('|');
    let field_name = parts.next().unwrap_or_default();
    let mut op = None;
    let mut ignore_case = false;
    for modifier in parts {
        match modifier {
            "i" => ignore_case = true,
            m if OPS.contains(&m) && op.is_none() => op = Some(m),
            m if OPS.contains(&m) => {
                cx.diags.error(key.line, format!("'{name}' has two operators; write one test per key"));
                return Filter::All(Vec::new());
            }
            m => {
                let hint = suggest(m, OPS.iter().copied().chain(["i"]))
                    .map_or_else(String::new, |s| format!(" (did you mean '{s}'?)"));
                cx.diags.error(
                    key.line,
                    format!(
                        "unknown operator '{m}' in '{name}'{hint}; operators are {} and the modifier i",
                        OPS.join(", ")
                    ),
                );
                return Filter::All(Vec::new());
            }
        }
    }
    let Some(field) = parse_field(field_name, key.line, cx.diags) else {
        return Filter::All(Vec::new());
    };
    cx.used.push(field.clone());
    match compile_test(&field, op, ignore_case, value, cx) {
        Some(test) => Filter::Test(field, test),
        None => Filter::All(Vec::new()),
    }
}

/// Resolves a field name, reporting unknown names with a suggestion.
pub(crate) fn parse_field(name: &str, line: u32, diags: &mut Diags<'_>) -> Option<Field> {
    if let Some(field) = Field::parse(name) {
        return Some(field);
    }
    let hint =
        suggest(name, Field::NAMES.iter().copied()).map_or_else(String::new, |s| format!(" (did you mean '{s}'?)"));
    diags.error(line, format!("unknown field '{name}'{hint}; fields are the event fields, ext.KEY and sd.ID.PARAM"));
    None
}

/// The scalars of a value that may be one scalar or a list of them.
fn scalars<'n>(value: &'n Node, what: &str, diags: &mut Diags<'_>) -> Option<Vec<&'n Node>> {
    let items: Vec<&Node> = match &value.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![value],
    };
    if items.is_empty() {
        diags.error(value.line, format!("{what} needs at least one value"));
        return None;
    }
    let mut ok = true;
    for item in &items {
        if item.as_text().is_none() {
            diags.error(item.line, format!("{what} takes text or numbers, not {}", item.type_name()));
            ok = false;
        }
    }
    ok.then_some(items)
}

fn texts(items: &[&Node]) -> Vec<String> {
    items.iter().filter_map(|n| n.as_text()).collect()
}

fn compile_test(
    field: &Field,
    op: Option<&str>,
    ignore_case: bool,
    value: &Node,
    cx: &mut FilterCx<'_, '_>,
) -> Option<Test> {
    let ty = field.field_type();
    let line = value.line;
    let mismatch = |cx: &mut FilterCx<'_, '_>, what: &str| {
        let kind = match ty {
            FieldType::Ip => "an IP address (use |cidr for ranges)",
            FieldType::Number => "a number (use gt, gte, lt, lte)",
            FieldType::Text | FieldType::Any => "text",
        };
        cx.diags.error(line, format!("type mismatch: {field} is {kind}; {what}"));
    };
    if ignore_case && op.is_some_and(|o| !matches!(o, "startswith" | "endswith" | "contains" | "re")) {
        cx.diags.error(line, format!("|i applies to text tests only, not to {}", op.unwrap_or_default()));
        return None;
    }
    match op {
        None => {
            if matches!(value.kind, Kind::Null) {
                cx.diags.error(
                    line,
                    format!("{field} has no value to compare; to test absence write '{field}|exists: false'"),
                );
                return None;
            }
            let items = scalars(value, &format!("{field}"), cx.diags)?;
            match ty {
                FieldType::Ip => {
                    if ignore_case {
                        mismatch(cx, "|i does not apply");
                        return None;
                    }
                    let mut ips = Vec::new();
                    for item in &items {
                        match item.as_text().unwrap_or_default().trim().parse::<IpAddr>() {
                            Ok(ip) => ips.push(ip.to_canonical()),
                            Err(_) => {
                                mismatch(cx, &format!("'{}' is not an address", item.as_text().unwrap_or_default()))
                            }
                        }
                    }
                    (ips.len() == items.len()).then_some(Test::Ip(ips))
                }
                FieldType::Number => {
                    let numbers = numbers(&items, field, cx)?;
                    Some(Test::Num(numbers))
                }
                FieldType::Text | FieldType::Any => {
                    let values = texts(&items);
                    if *field == Field::Format {
                        for (item, text) in items.iter().zip(&values) {
                            if !FORMATS.contains(&text.as_str()) {
                                cx.diags.error(
                                    item.line,
                                    format!("type mismatch: format is one of {}, not '{text}'", FORMATS.join(", ")),
                                );
                            }
                        }
                    }
                    if ignore_case {
                        let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
                        Some(cx.regexes.add(field, format!("(?i)^(?:{})$", alternatives.join("|"))))
                    } else {
                        Some(Test::Text(TextSet::new(values.into_iter().map(String::into_boxed_str).collect())))
                    }
                }
            }
        }
        Some(op @ ("startswith" | "endswith" | "contains")) => {
            if matches!(ty, FieldType::Ip | FieldType::Number) {
                mismatch(cx, &format!("'{op}' compares text"));
                return None;
            }
            let values = texts(&scalars(value, op, cx.diags)?);
            if values.iter().any(String::is_empty) {
                cx.diags.error(line, format!("'{op}' with an empty string matches everything; use exists"));
                return None;
            }
            if ignore_case || (op == "contains" && values.len() > 2) {
                let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
                let body = alternatives.join("|");
                let flags = if ignore_case { "(?i)" } else { "" };
                let pattern = match op {
                    "startswith" => format!("{flags}^(?:{body})"),
                    "endswith" => format!("{flags}(?:{body})$"),
                    _ => format!("{flags}(?:{body})"),
                };
                return Some(cx.regexes.add(field, pattern));
            }
            let values = values.into_iter().map(String::into_boxed_str).collect();
            Some(match op {
                "startswith" => Test::Prefix(values),
                "endswith" => Test::Suffix(values),
                _ => Test::Contains(values),
            })
        }
        Some("re") => {
            if matches!(ty, FieldType::Ip | FieldType::Number) {
                mismatch(cx, "'re' matches text");
                return None;
            }
            let items = scalars(value, "re", cx.diags)?;
            let mut alternatives = Vec::new();
            for item in &items {
                let text = item.as_text().unwrap_or_default();
                match Regex::new(&text) {
                    Ok(_) => alternatives.push(format!("(?:{text})")),
                    Err(e) => {
                        let detail = e.to_string().lines().last().unwrap_or("invalid").trim().to_owned();
                        cx.diags.error(item.line, format!("bad regular expression '{text}': {detail}"));
                    }
                }
            }
            if alternatives.len() != items.len() {
                return None;
            }
            let flags = if ignore_case { "(?i)" } else { "" };
            Some(cx.regexes.add(field, format!("{flags}{}", alternatives.join("|"))))
        }
        Some("cidr") => {
            if matches!(ty, FieldType::Text | FieldType::Number) {
                mismatch(cx, "'cidr' tests addresses");
                return None;
            }
            let items = scalars(value, "cidr", cx.diags)?;
            let mut nets = Vec::new();
            for item in &items {
                match item.as_text().unwrap_or_default().parse::<Network>() {
                    Ok(net) => nets.push(net),
                    Err(e) => cx.diags.error(item.line, e.to_string()),
                }
            }
            (nets.len() == items.len()).then(|| Test::Cidr(CidrTable::new(nets)))
        }
        Some(op @ ("gt" | "gte" | "lt" | "lte")) => {
            if matches!(ty, FieldType::Text | FieldType::Ip) {
                mismatch(cx, &format!("'{op}' compares numbers"));
                return None;
            }
            let limit = match value.kind {
                Kind::Int(i) => i as f64,
                Kind::Float(f) => f,
                _ => {
                    cx.diags.error(line, format!("'{op}' takes one number, not {}", value.type_name()));
                    return None;
                }
            };
            let op = match op {
                "gt" => Op::Gt,
                "gte" => Op::Gte,
                "lt" => Op::Lt,
                _ => Op::Lte,
            };
            Some(Test::Compare(op, limit))
        }
        Some("exists") => match value.kind {
            Kind::Bool(b) => Some(Test::Exists(b)),
            _ => {
                cx.diags.error(line, format!("'exists' takes true or false, not {}", value.type_name()));
                None
            }
        },
        Some("in_list") => match &value.kind {
            Kind::Str(name) if !name.trim().is_empty() => {
                let index = match cx.lists.iter().position(|l| l == name) {
                    Some(i) => i,
                    None => {
                        cx.lists.push(name.clone());
                        cx.lists.len() - 1
                    }
                };
                Some(Test::InList(index))
            }
            _ => {
                cx.diags.error(line, "'in_list' takes the name of a watch list");
                None
            }
        },
        Some("eq_field") => {
            let other = match value.as_text() {
                Some(name) if !matches!(value.kind, Kind::Seq(_) | Kind::Map(_)) => name,
                _ => {
                    cx.diags.error(line, "'eq_field' takes the name of another field");
                    return None;
                }
            };
            let other = parse_field(&other, line, cx.diags)?;
            if other == *field {
                cx.diags.error(line, format!("'{field}|eq_field: {other}' compares a field with itself"));
                return None;
            }
            cx.used.push(other.clone());
            Some(Test::SameAs(other))
        }
        Some(op) if TimePart::parse(op).is_some() => {
            let part = TimePart::parse(op)?;
            if *field != Field::Time {
                cx.diags.error(line, format!("'{op}' takes a part of the event time: write 'time|{op}'"));
                return None;
            }
            let items = scalars(value, op, cx.diags)?;
            let mut parts = Vec::new();
            for item in &items {
                match item.as_text().and_then(|t| t.trim().parse::<u32>().ok()).filter(|n| part.range().contains(n)) {
                    Some(n) => parts.push(n),
                    None => cx.diags.error(
                        item.line,
                        format!(
                            "'{op}' takes whole numbers from {} to {}, not '{}'",
                            part.range().start(),
                            part.range().end(),
                            item.as_text().unwrap_or_default()
                        ),
                    ),
                }
            }
            (parts.len() == items.len()).then_some(Test::TimePart(part, parts))
        }
        Some(other) => {
            cx.diags.error(line, format!("unknown operator '{other}'"));
            None
        }
    }
}

const FORMATS: [&str; 5] = ["rfc5424", "rfc3164", "cef", "leef", "raw"];

fn numbers(items: &[&Node], field: &Field, cx: &mut FilterCx<'_, '_>) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    for item in items {
        let n = match &item.kind {
            Kind::Int(i) => Some(*i as f64),
            Kind::Float(f) => Some(*f),
            Kind::Str(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) => out.push(n),
            None => cx.diags.error(
                item.line,
                format!("type mismatch: {field} is a number; '{}' is not", item.as_text().unwrap_or_default()),
            ),
        }
    }
    (out.len() == items.len()).then_some(out)
}

/// What evaluating a filter may consult besides the event.
pub(crate) struct Env<'a> {
    pub sets: &'a [(Field, RegexSet)],
    /// Per set: the matches for the current event, once computed.
    pub cache: &'a mut Vec<Option<SetMatches>>,
    /// Watch-list membership, when the filter is evaluated with state.
    pub lists: Option<&'a dyn Fn(usize, Part) -> bool>,
}

impl Env<'_> {
    /// Forgets the previous event's regex results.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.cache.resize(self.sets.len(), None);
    }
}

impl Filter {
    /// Whether the event passes.
    pub fn eval(&self, event: &Event, env: &mut Env<'_>) -> bool {
        match self {
            Filter::All(items) => items.iter().all(|f| f.eval(event, env)),
            Filter::Any(items) => items.iter().any(|f| f.eval(event, env)),
            Filter::Not(inner) => !inner.eval(event, env),
            Filter::Test(field, Test::SameAs(other)) => match (field.get(event), other.get(event)) {
                (Some(a), Some(b)) => same_value(a, b),
                _ => false,
            },
            Filter::Test(field, test) => {
                let value = field.get(event);
                test.eval(value, env)
            }
        }
    }

    /// The event types this filter requires, if it requires one of a fixed
    /// set (so the rule set can index it).
    pub fn required_event_types(&self) -> Option<Vec<&str>> {
        self.required_text(&Field::EventType)
    }

    /// The `event_type` prefixes this filter requires one of, if it does.
    pub fn required_event_type_prefixes(&self) -> Option<Vec<&str>> {
        match self {
            Filter::Test(Field::EventType, Test::Prefix(values)) => Some(values.iter().map(|v| &**v).collect()),
            Filter::All(items) => items.iter().find_map(Filter::required_event_type_prefixes),
            _ => None,
        }
    }

    /// The formats this filter requires, if it requires one of a fixed set.
    pub fn required_formats(&self) -> Option<Vec<Format>> {
        let names = self.required_text(&Field::Format)?;
        Some(
            names
                .into_iter()
                .filter_map(|n| match n {
                    "rfc5424" => Some(Format::Rfc5424),
                    "rfc3164" => Some(Format::Rfc3164),
                    "cef" => Some(Format::Cef),
                    "leef" => Some(Format::Leef),
                    "raw" => Some(Format::Raw),
                    _ => None,
                })
                .collect(),
        )
    }

    fn required_text(&self, wanted: &Field) -> Option<Vec<&str>> {
        match self {
            Filter::Test(field, Test::Text(set)) if field == wanted => Some(set.values()),
            Filter::All(items) => items.iter().find_map(|f| f.required_text(wanted)),
            _ => None,
        }
    }

    /// The distinct (field, watch list) pairs the filter tests, in the
    /// order they first appear.
    pub fn list_tests(&self) -> Vec<(Field, usize)> {
        fn collect(filter: &Filter, out: &mut Vec<(Field, usize)>) {
            match filter {
                Filter::All(items) | Filter::Any(items) => items.iter().for_each(|f| collect(f, out)),
                Filter::Not(inner) => collect(inner, out),
                Filter::Test(field, Test::InList(list)) => {
                    if !out.iter().any(|(f, l)| f == field && l == list) {
                        out.push((field.clone(), *list));
                    }
                }
                Filter::Test(..) => {}
            }
        }
        let mut out = Vec::new();
        collect(self, &mut out);
        out
    }
}

impl Test {
    #[inline]
    fn eval(&self, value: Option<Value<'_>>, env: &mut Env<'_>) -> bool {
        if let Test::Exists(want) = self {
            return value.is_some() == *want;
        }
        let Some(value) = value else { return false };
        match self {
            Test::Text(set) => match value {
                Value::Text(t) => set.contains(t),
                _ => false,
            },
            Test::Num(numbers) => value.as_f64().is_some_and(|n| numbers.contains(&n)),
            Test::Ip(ips) => value.as_ip().is_some_and(|ip| ips.contains(&ip.to_canonical())),
            Test::Prefix(values) => text_of(value).is_some_and(|t| values.iter().any(|v| t.starts_with(&**v))),
            Test::Suffix(values) => text_of(value).is_some_and(|t| values.iter().any(|v| t.ends_with(&**v))),
            Test::Contains(values) => text_of(value).is_some_and(|t| values.iter().any(|v| t.contains(&**v))),
            Test::Regex { set, index } => {
                let Some(text) = text_of(value) else { return false };
                let regexes = &env.sets[*set].1;
                match env.cache.get_mut(*set) {
                    Some(cached) => cached.get_or_insert_with(|| regexes.matches(text)).matched(*index),
                    // A cache not reset for this event: evaluate uncached.
                    None => regexes.matches(text).matched(*index),
                }
            }
            Test::Cidr(table) => value.as_ip().is_some_and(|ip| table.contains(ip)),
            Test::Compare(op, limit) => value.as_f64().is_some_and(|n| op.holds(n, *limit)),
            Test::InList(list) => match env.lists {
                Some(member) => member(*list, Part::normalized(value)),
                // Filters with lists are evaluated with state; without it
                // nothing is a member.
                None => false,
            },
            Test::TimePart(part, values) => value.as_f64().is_some_and(|secs| values.contains(&part.of(secs as i64))),
            // Evaluated with the event, in `Filter::eval`.
            Test::SameAs(_) => false,
            Test::Exists(_) => true,
        }
    }
}

/// Whether two fields' values are the same: texts exactly, addresses and
/// numbers by value (text read as one when the other side is one).
fn same_value(a: Value<'_>, b: Value<'_>) -> bool {
    match (a, b) {
        (Value::Text(x), Value::Text(y)) => x == y,
        (Value::Ip(x), other) | (other, Value::Ip(x)) => {
            other.as_ip().is_some_and(|y| y.to_canonical() == x.to_canonical())
        }
        (Value::Num(x), other) | (other, Value::Num(x)) => other.as_f64() == Some(x),
    }
}

fn text_of(value: Value<'_>) -> Option<&str> {
    match value {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax;
    use bytes::Bytes;
    use parsers::EventTime;

    fn build(yaml: &str) -> (Filter, Vec<(Field, RegexSet)>, Vec<crate::diag::Diagnostic>) {
        let node = syntax::parse(yaml).unwrap();
        let mut items = Vec::new();
        let mut diags = Diags::new("t.yaml", &mut items);
        let mut regexes = RegexTable::default();
        let mut lists = Vec::new();
        let mut cx = FilterCx { diags: &mut diags, regexes: &mut regexes, lists: &mut lists, used: Vec::new() };
        let filter = compile(&node, &mut cx);
        let sets = regexes.build().unwrap();
        (filter, sets, items)
    }

    fn event() -> Event {
        let mut e = Event::empty(Bytes::new(), EventTime::UNIX_EPOCH);
        e.event_type = Some("ssh.auth.failure".into());
        e.user = Some("Administrator".into());
        e.src_ip = Some("10.1.2.3".parse().unwrap());
        e.dst_port = Some(22);
        e.message = Some("Failed password for Administrator from 10.1.2.3 port 22 ssh2".into());
        e.ext.push("bytes", "1500");
        e
    }

    fn check(yaml: &str) -> bool {
        let (filter, sets, diags) = build(yaml);
        assert!(diags.is_empty(), "{diags:?}");
        let mut cache = Vec::new();
        let member = |list: usize, part: Part| list == 0 && part == Part::Ip("10.1.2.3".parse().unwrap());
        let mut env = Env { sets: &sets, cache: &mut cache, lists: Some(&member) };
        env.reset();
        filter.eval(&event(), &mut env)
    }

    #[test]
    fn field_to_field_and_time_part_tests() {
        let eval = |yaml: &str, event: &Event| {
            let (filter, sets, diags) = build(yaml);
            assert!(diags.is_empty(), "{yaml}: {diags:?}");
            let mut cache = Vec::new();
            let mut env = Env { sets: &sets, cache: &mut cache, lists: None };
            env.reset();
            filter.eval(event, &mut env)
        };
        let mut e = event();
        // 2023-11-14T22:13:20Z, a Tuesday of ISO week 46.
        e.time = EventTime::from_unix(1_700_000_000, 0, 3600);
        e.ext.push("who", "Administrator");
        e.ext.push("peer", "10.1.2.3");
        e.ext.push("port", "22");
        assert!(eval("user|eq_field: ext.who", &e));
        assert!(eval("src_ip|eq_field: ext.peer", &e), "an address equals its text");
        assert!(eval("dst_port|eq_field: ext.port", &e), "a number equals its text");
        assert!(!eval("user|eq_field: ext.peer", &e));
        assert!(!eval("user|eq_field: ext.absent", &e), "an absent field equals nothing");
        assert!(eval(
            "{time|hour: 22, time|minute: 13, time|day: 14, time|week: 46, time|month: 11, time|year: 2023}",
            &e
        ));
        assert!(!eval("time|hour: [0, 23]", &e), "UTC, not the source's offset");
        // ISO weeks at year ends: 2021-01-03 is week 53 of 2020, 2024-12-30 week 1 of 2025.
        e.time = EventTime::from_unix(1_609_632_000, 0, 0);
        assert!(eval("time|week: 53", &e));
        e.time = EventTime::from_unix(1_735_516_800, 0, 0);
        assert!(eval("time|week: 1", &e));
        for (yaml, message) in [
            ("user|eq_field: user", "compares a field with itself"),
            ("user|eq_field: [a, b]", "takes the name of another field"),
            ("user|hour: 3", "write 'time|hour'"),
            ("time|hour: 24", "from 0 to 23"),
            ("time|month|i: 3", "|i applies to text tests only"),
        ] {
            let (_, _, diags) = build(yaml);
            assert!(diags.iter().any(|d| d.message.contains(message)), "{yaml}: {diags:?}");
        }
    }

    #[test]
    fn every_operator() {
        assert!(check("event_type: ssh.auth.failure"));
        assert!(!check("event_type: [ssh.auth.success, ssh.disconnect]"));
        assert!(check("user|startswith: Admin"));
        assert!(check("user|endswith: [x, trator]"));
        assert!(check("message|contains: [nothing, more, password]"));
        assert!(check("user|startswith|i: ADMIN"));
        assert!(check("user|i: administrator"));
        assert!(!check("user: administrator"));
        assert!(check("message|re: 'from \\d+\\.\\d+'"));
        assert!(check("src_ip|cidr: 10.0.0.0/8"));
        assert!(!check("src_ip|cidr: [192.168.0.0/16, '::1']"));
        assert!(check("src_ip: 10.1.2.3"));
        assert!(check("dst_port: [22, 2222]"));
        assert!(check("dst_port|lte: 22"));
        assert!(!check("dst_port|gt: 22"));
        assert!(check("ext.bytes|gte: 1000"));
        assert!(check("ext.bytes: 1500"));
        assert!(check("outcome|exists: false"));
        assert!(!check("user|exists: false"));
        assert!(check("src_ip|in_list: bad"));
        assert!(check("any: [{user: root}, {dst_port: 22}]"));
        assert!(!check("all: [{user: root}, {dst_port: 22}]"));
        assert!(check("not: {user: root}"));
    }

    #[test]
    fn large_cidr_tables_hash_by_prefix() {
        let net = |s: &str| s.parse::<Network>().unwrap();
        let mut nets: Vec<Network> = (0..40u32).map(|i| net(&format!("{i}.0.0.0/8"))).collect();
        nets.push(net("2001:db8::/32"));
        nets.push(net("192.168.1.7"));
        let table = CidrTable::new(nets);
        assert!(!table.by_len.is_empty());
        assert!(table.contains("10.200.1.1".parse().unwrap()));
        assert!(table.contains("2001:db8::1".parse().unwrap()));
        assert!(table.contains("192.168.1.7".parse().unwrap()));
        assert!(table.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!table.contains("192.168.1.8".parse().unwrap()));
        assert!(!table.contains("200.0.0.1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_problem_and_line() {
        let messages =
            |yaml: &str| build(yaml).2.into_iter().map(|d| format!("{}: {}", d.line, d.message)).collect::<Vec<_>>();
        assert!(messages("srcip: 1.2.3.4")[0].contains("unknown field 'srcip' (did you mean 'src_ip'?)"));
        assert!(messages("user: a\nuser|startwith: a")[0].starts_with("2: unknown operator 'startwith'"));
        assert!(messages("message|re: '(unclosed'")[0].contains("bad regular expression"));
        assert!(messages("src_ip: web-01")[0].contains("type mismatch: src_ip is an IP address"));
        assert!(messages("dst_port: ssh")[0].contains("type mismatch: dst_port is a number"));
        assert!(messages("user|gt: 5")[0].contains("type mismatch: user is text"));
        assert!(messages("user|cidr: 10.0.0.0/8")[0].contains("type mismatch"));
        assert!(messages("format: syslog")[0].contains("format is one of"));
        assert!(messages("user: ~")[0].contains("exists: false"));
        assert!(messages("dst_port|gte|i: 3")[0].contains("|i applies to text tests only"));
        assert!(messages("any: []")[0].contains("non-empty list"));
        assert!(messages("{}")[0].contains("empty filter"));
        assert_eq!(messages("a: 1\nb: 2\nuser|exists: 3").len(), 3);
    }

    #[test]
    fn the_index_sees_required_types() {
        let (filter, _, _) = build("event_type: [a, b]\nuser: root");
        assert_eq!(filter.required_event_types(), Some(vec!["a", "b"]));
        let (filter, _, _) = build("any: [{event_type: a}, {user: root}]");
        assert_eq!(filter.required_event_types(), None);
        let (filter, _, _) = build("format: cef");
        assert_eq!(filter.required_formats(), Some(vec![Format::Cef]));
    }
}

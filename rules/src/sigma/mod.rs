//! Sigma detection rules (issue #15), compiled into vigil rules: a Sigma
//! document becomes the YAML tree of a vigil rule with one sub-pattern
//! whose filter is the rule's log source (from the mappings) and its
//! condition over its search identifiers, and that tree goes through the
//! same compiler as hand-written rules (types checked, regular
//! expressions gathered per field).
//!
//! A rule that cannot be compiled is never dropped silently: it is either
//! *not applicable* (no mapping for its log source) or *unsupported*,
//! with the exact reason (the field, the modifier, the construct).
//!
//! Supported: maps (and), lists (or), keyword lists and `|all`, wildcards
//! `*` `?` with `\` escapes, case-insensitive matching by default, `null`
//! and `''`, numbers; the modifiers `contains startswith endswith all
//! cased neq exists re` (with `i m s`) `cidr lt lte gt gte base64
//! base64offset utf16le utf16be utf16 wide windash`; conditions with `and
//! or not`, brackets, `1 of`/`any of`/`all of` over wildcard names and
//! `them`; correlations `event_count`, `value_count`, `value_sum`,
//! `value_avg`, `temporal` and `temporal_ordered` over the rules they
//! name. Not yet: `fieldref`, `expand`, the time-part modifiers,
//! `value_percentile`, aliases and filter documents (reported as
//! unsupported).

mod condition;

use crate::field::{Field, FieldType};
use crate::syntax::{self, Kind, Node};

use condition::Expr;

/// The built-in log-source mappings.
const BUILTIN: &str = include_str!("../../sigma/logsources.yaml");

/// Where a Sigma rule's events are among vigil's, and what its fields are
/// called there.
#[derive(Clone, Debug)]
pub struct LogSources {
    mappings: Vec<Mapping>,
}

#[derive(Clone, Debug)]
struct Mapping {
    product: Option<String>,
    category: Option<String>,
    service: Option<String>,
    /// A vigil filter selecting the log source's events.
    filter: Node,
    /// Sigma field name (as written, compared ignoring case) → vigil field.
    fields: Vec<(String, String)>,
}

impl LogSources {
    /// The mappings that ship with vigil (`rules/sigma/logsources.yaml`).
    pub fn builtin() -> LogSources {
        // Checked by a test: the built-in file always parses.
        LogSources::parse(BUILTIN).unwrap_or(LogSources { mappings: Vec::new() })
    }

    /// Mappings from their YAML: a list of `{logsource: {product,
    /// category, service}, filter: FILTER, fields: {SigmaName: field}}`.
    pub fn parse(text: &str) -> Result<LogSources, String> {
        let root = syntax::parse(text).map_err(|(line, m)| format!("line {line}: invalid YAML: {m}"))?;
        let Kind::Seq(items) = &root.kind else {
            return Err("log-source mappings are a list".into());
        };
        let mut mappings = Vec::new();
        for item in items {
            let at = |m: &str| format!("line {}: {m}", item.line);
            let source = item.get("logsource").ok_or_else(|| at("a mapping needs a logsource"))?;
            let key = |k: &str| source.get(k).and_then(Node::as_text).map(|s| s.to_ascii_lowercase());
            let filter = item.get("filter").cloned().ok_or_else(|| at("a mapping needs a filter"))?;
            let mut fields = Vec::new();
            if let Some(f) = item.get("fields") {
                for (k, v) in f.entries().ok_or_else(|| at("fields is a mapping"))? {
                    match (k.as_text(), v.as_text()) {
                        (Some(k), Some(v)) => fields.push((k, v)),
                        _ => return Err(at("a field mapping is name: field")),
                    }
                }
            }
            mappings.push(Mapping {
                product: key("product"),
                category: key("category"),
                service: key("service"),
                filter,
                fields,
            });
        }
        Ok(LogSources { mappings })
    }

    /// The mapping of exactly this log source.
    fn find(&self, product: &Option<String>, category: &Option<String>, service: &Option<String>) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.product == *product && m.category == *category && m.service == *service)
    }
}

impl Default for LogSources {
    fn default() -> LogSources {
        LogSources::builtin()
    }
}

/// Why a Sigma rule was not compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Compiled and loaded.
    Compiled,
    /// No mapping for its log source (the log source, as written).
    NotApplicable(String),
    /// It uses something vigil does not support yet, or is malformed.
    Unsupported(String),
}

/// What the import report says of one Sigma rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigmaReport {
    /// The file.
    pub file: String,
    /// Its line.
    pub line: u32,
    /// The rule's `id` (empty when it has none).
    pub id: String,
    /// Its `title`.
    pub title: String,
    /// Its log source, `product/category/service` with `-` for absent parts.
    pub logsource: String,
    /// What became of it.
    pub verdict: Verdict,
}

/// Whether a YAML document is a Sigma rule (rather than a vigil rule).
pub(crate) fn is_sigma(doc: &Node) -> bool {
    doc.get("detection").is_some()
        || doc.get("correlation").is_some()
        || doc.get("filter").is_some_and(|f| f.get("rules").is_some())
}

/// The log source of a Sigma document, for the report.
pub(crate) fn logsource_label(doc: &Node) -> String {
    let part =
        |k: &str| doc.get("logsource").and_then(|l| l.get(k)).and_then(Node::as_text).unwrap_or_else(|| "-".into());
    format!("{}/{}/{}", part("product"), part("category"), part("service"))
}

/// A Sigma detection rule translated: its vigil rule tree, its filter
/// (for correlations over it) and its log source.
pub(crate) struct Translated {
    pub rule: Node,
    pub filter: Node,
    pub source: [Option<String>; 3],
}

/// Whether a Sigma document is a correlation rule.
pub(crate) fn is_correlation(doc: &Node) -> bool {
    doc.get("correlation").is_some()
}

/// The vigil rule tree of Sigma detection document `doc`, or why there is
/// none.
pub(crate) fn translate(doc: &Node, sources: &LogSources) -> Result<Translated, Verdict> {
    let unsupported = |m: String| Verdict::Unsupported(m);
    if doc.get("correlation").is_some() {
        return Err(unsupported("a correlation rule is compiled with the rules it names".into()));
    }
    let Some(detection) = doc.get("detection") else {
        return Err(unsupported("Sigma filter documents are not supported yet".into()));
    };
    let title = doc.get("title").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no title".into()))?;
    let id = doc.get("id").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no id".into()))?;
    let logsource = doc.get("logsource").ok_or_else(|| unsupported("the rule has no logsource".into()))?;
    let key = |k: &str| logsource.get(k).and_then(Node::as_text).map(|s| s.to_ascii_lowercase());
    let Some(mapping) = sources.find(&key("product"), &key("category"), &key("service")) else {
        return Err(Verdict::NotApplicable(format!("no mapping for log source {}", logsource_label(doc))));
    };
    let entries = detection.entries().ok_or_else(|| unsupported("detection is not a mapping".into()))?;
    let mut names = Vec::new();
    let mut condition = None;
    for (k, v) in entries {
        match k.as_text().as_deref() {
            Some("condition") => condition = Some(v),
            Some("timeframe") => {
                return Err(unsupported("timeframe (a Sigma 1 aggregation): write a correlation rule".into()));
            }
            Some(name) => names.push((name.to_owned(), v)),
            None => return Err(unsupported(format!("line {}: a search identifier must be a name", k.line))),
        }
    }
    let condition = condition.ok_or_else(|| unsupported("detection has no condition".into()))?;
    let texts: Vec<String> = match &condition.kind {
        Kind::Seq(items) => items.iter().filter_map(Node::as_text).collect(),
        _ => condition.as_text().into_iter().collect(),
    };
    if texts.is_empty() {
        return Err(unsupported("the condition is not text".into()));
    }
    let plain: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut exprs = Vec::new();
    for text in &texts {
        exprs.push(condition::parse(text, &plain).map_err(|e| unsupported(format!("condition '{text}': {e}")))?);
    }
    let expr = if exprs.len() == 1 { exprs.remove(0) } else { Expr::Any(exprs) };
    let cx = Cx { mapping, logsource: logsource_label(doc) };
    let mut searches = Vec::new();
    for (name, node) in &names {
        searches.push((name.clone(), cx.search(node).map_err(|e| unsupported(format!("{name}: {e}")))?));
    }
    let filter = cx.expr(&expr, &searches, detection.line);
    let line = doc.line;
    let filter = map(line, vec![("all", seq(line, vec![mapping.filter.clone(), filter]))]);
    let rule = rule_tree(doc, &id, &title, vec![("filter", filter.clone())]);
    Ok(Translated { rule, filter, source: [key("product"), key("category"), key("service")] })
}

/// A vigil rule tree for Sigma document `doc` with one sub-pattern.
fn rule_tree(doc: &Node, id: &str, title: &str, pattern: Vec<(&str, Node)>) -> Node {
    let line = doc.line;
    rule_tree_of(doc, id, title, vec![("sigma".into(), map(line, pattern))], Vec::new())
}

/// A vigil rule tree for Sigma document `doc` with sub-patterns
/// `patterns` and further rule keys `extra` (condition, within, join).
fn rule_tree_of(doc: &Node, id: &str, title: &str, patterns: Vec<(String, Node)>, extra: Vec<(&str, Node)>) -> Node {
    let line = doc.line;
    let severity = match doc.get("level").and_then(Node::as_text).as_deref() {
        Some("informational") => "info",
        Some("low") => "low",
        Some("high") => "high",
        Some("critical") => "critical",
        _ => "medium",
    };
    let mut description = doc.get("description").and_then(Node::as_text).unwrap_or_default();
    if let Some(author) = doc.get("author").and_then(Node::as_text) {
        description = format!("{} (Sigma rule by {author})", description.trim_end());
    }
    let mut entries = vec![("id", text(line, id)), ("name", text(line, title))];
    if !description.trim().is_empty() {
        entries.push(("description", text(line, description.trim())));
    }
    entries.push(("severity", text(line, severity)));
    let patterns = patterns.into_iter().map(|(k, v)| (text(line, &k), v)).collect();
    entries.push(("patterns", Node { line, kind: Kind::Map(patterns) }));
    entries.extend(extra);
    map(line, entries)
}

/// A compiled Sigma detection rule a correlation may name.
pub(crate) struct Base {
    pub id: String,
    /// Its `name` attribute, by which correlations may also name it.
    pub name: Option<String>,
    pub filter: Node,
    pub source: [Option<String>; 3],
    /// Its log source as the report shows it.
    pub logsource: String,
}

/// The vigil rule tree of correlation `doc` over the compiled rules
/// `bases`, and the ids of the rules it uses; or why there is none.
pub(crate) fn translate_correlation(
    doc: &Node,
    bases: &[Base],
    sources: &LogSources,
) -> Result<(Node, Vec<String>), Verdict> {
    let unsupported = |m: String| Verdict::Unsupported(m);
    let line = doc.line;
    let title = doc.get("title").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no title".into()))?;
    let id = doc.get("id").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no id".into()))?;
    let c = doc.get("correlation").ok_or_else(|| unsupported("no correlation".into()))?;
    let kind = c.get("type").and_then(Node::as_text).ok_or_else(|| unsupported("correlation has no type".into()))?;
    if !matches!(
        kind.as_str(),
        "event_count" | "value_count" | "value_sum" | "value_avg" | "temporal" | "temporal_ordered"
    ) {
        return Err(unsupported(format!("correlation type '{kind}' is not supported yet")));
    }
    if c.get("aliases").is_some() {
        return Err(unsupported("correlation aliases are not supported yet".into()));
    }
    let names: Vec<String> = match c.get("rules") {
        Some(n) => list(n).into_iter().filter_map(Node::as_text).collect(),
        None => Vec::new(),
    };
    if names.is_empty() {
        return Err(unsupported("the correlation names no rules".into()));
    }
    let mut used: Vec<&Base> = Vec::new();
    for name in &names {
        let base =
            bases.iter().find(|b| b.id == *name || b.name.as_deref() == Some(name.as_str())).ok_or_else(|| {
                unsupported(format!("it names '{name}', which is not a compiled Sigma detection rule of this set"))
            })?;
        used.push(base);
    }
    let source = &used[0].source;
    if used.iter().any(|b| b.source != *source) {
        return Err(unsupported("its rules have different log sources, which needs aliases".into()));
    }
    let mapping = sources
        .find(&source[0], &source[1], &source[2])
        .ok_or_else(|| unsupported("no mapping for its rules".into()))?;
    let cx = Cx { mapping, logsource: used[0].logsource.clone() };
    let timespan = c
        .get("timespan")
        .and_then(Node::as_text)
        .ok_or_else(|| unsupported("the correlation has no timespan".into()))?;
    let mut group_by = Vec::new();
    if let Some(g) = c.get("group-by") {
        for f in list(g) {
            let name = f.as_text().ok_or_else(|| unsupported("group-by names fields".into()))?;
            group_by.push(text(line, &cx.field(&name).map_err(unsupported)?.1));
        }
    }
    if kind.starts_with("temporal") {
        // Every named rule within the timespan (in their order when
        // ordered), per group-by values.
        if used.len() < 2 {
            return Err(unsupported(format!("a {kind} correlation needs two rules or more")));
        }
        if let Some(condition) = c.get("condition")
            && condition.get("gte").and_then(Node::as_text) != Some(used.len().to_string())
        {
            return Err(unsupported(format!("a {kind} condition on fewer than all its rules is not supported yet")));
        }
        let names: Vec<String> = (1..=used.len()).map(|i| format!("rule_{i}")).collect();
        let patterns =
            names.iter().zip(&used).map(|(n, b)| (n.clone(), map(line, vec![("filter", b.filter.clone())]))).collect();
        let joiner = if kind == "temporal_ordered" { " followed by " } else { " and " };
        let mut extra = vec![("condition", text(line, &names.join(joiner))), ("within", text(line, &timespan))];
        if !group_by.is_empty() {
            extra.push(("join", seq(line, group_by)));
        }
        let rule = rule_tree_of(doc, &id, &title, patterns, extra);
        return Ok((rule, used.iter().map(|b| b.id.clone()).collect()));
    }
    let condition = c.get("condition").ok_or_else(|| unsupported("the correlation has no condition".into()))?;
    let mut comparisons = Vec::new();
    let mut field = None;
    for (k, v) in condition.entries().ok_or_else(|| unsupported("the condition is a mapping".into()))? {
        match k.as_text().as_deref() {
            Some("field") => field = v.as_text(),
            Some(op @ ("gt" | "gte" | "lt" | "lte" | "eq" | "neq")) => {
                let n = v
                    .as_text()
                    .filter(|t| t.parse::<f64>().is_ok())
                    .ok_or_else(|| unsupported(format!("condition {op} takes a number")))?;
                comparisons.push((op.to_owned(), n));
            }
            _ => return Err(unsupported(format!("unknown condition key '{}'", k.as_text().unwrap_or_default()))),
        }
    }
    let [(op, n)] = comparisons.as_slice() else {
        return Err(unsupported("a condition with a range (two comparisons) is not supported yet".into()));
    };
    let symbol = match op.as_str() {
        "gt" => ">",
        "gte" => ">=",
        "lt" => "<",
        "lte" => "<=",
        "eq" => "==",
        _ => "!=",
    };
    let field = match (kind.as_str(), field) {
        ("event_count", _) => None,
        (_, Some(f)) => Some(cx.field(&f).map_err(unsupported)?.1),
        (_, None) => return Err(unsupported(format!("a {kind} correlation needs condition.field"))),
    };
    let having = match (kind.as_str(), field) {
        ("event_count" | "value_count", _) if !matches!(op.as_str(), "gt" | "gte") => {
            return Err(unsupported(format!(
                "{kind} with {op}: vigil raises when a count rises past a threshold (gt, gte), not when it stays low"
            )));
        }
        ("event_count", _) => format!("count {symbol} {n}"),
        ("value_count", Some(f)) => format!("count_distinct({f}) {symbol} {n}"),
        ("value_sum", Some(f)) => format!("sum({f}) {symbol} {n}"),
        (_, Some(f)) => format!("avg({f}) {symbol} {n}"),
        _ => return Err(unsupported("the condition needs a field".into())),
    };
    let filter = combine(line, "any", used.iter().map(|b| b.filter.clone()).collect());
    let mut pattern = vec![("filter", filter)];
    if !group_by.is_empty() {
        pattern.push(("group_by", seq(line, group_by)));
    }
    pattern.push(("window", text(line, &timespan)));
    pattern.push(("having", text(line, &having)));
    let rule = rule_tree(doc, &id, &title, pattern);
    Ok((rule, used.iter().map(|b| b.id.clone()).collect()))
}

/// Whether correlation `doc` keeps its rules' own incidents (`generate`).
pub(crate) fn generates(doc: &Node) -> bool {
    doc.get("correlation").and_then(|c| c.get("generate")).is_some_and(|g| g.kind == Kind::Bool(true))
}

fn text(line: u32, s: &str) -> Node {
    Node { line, kind: Kind::Str(s.to_owned()) }
}

fn map(line: u32, entries: Vec<(&str, Node)>) -> Node {
    Node { line, kind: Kind::Map(entries.into_iter().map(|(k, v)| (text(line, k), v)).collect()) }
}

fn seq(line: u32, items: Vec<Node>) -> Node {
    Node { line, kind: Kind::Seq(items) }
}

/// A one-entry filter `{key: value}`.
fn test(line: u32, key: String, value: Node) -> Node {
    Node { line, kind: Kind::Map(vec![(text(line, &key), value)]) }
}

fn combine(line: u32, how: &str, mut items: Vec<Node>) -> Node {
    if items.len() == 1 {
        return items.remove(0);
    }
    map(line, vec![(how, seq(line, items))])
}

fn negate(line: u32, filter: Node) -> Node {
    map(line, vec![("not", filter)])
}

struct Cx<'a> {
    mapping: &'a Mapping,
    logsource: String,
}

/// How a text value is matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

/// One piece of a Sigma text value.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Lit(String),
    Star,
    One,
}

/// A Sigma value's pieces: `*` and `?` are wildcards unless escaped with
/// `\`; `\\` is one backslash; any other backslash is itself.
fn pieces(value: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut lit = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    lit.push(n);
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

impl Cx<'_> {
    /// A search identifier's filter.
    fn search(&self, node: &Node) -> Result<Node, String> {
        let line = node.line;
        match &node.kind {
            Kind::Map(entries) => {
                let mut all = Vec::new();
                for (k, v) in entries {
                    let key = k.as_text().ok_or("a field name must be text")?;
                    all.push(self.entry(&key, v)?);
                }
                if all.is_empty() {
                    return Err("an empty selection".into());
                }
                Ok(combine(line, "all", all))
            }
            Kind::Seq(items) if items.iter().all(|i| matches!(i.kind, Kind::Map(_))) => {
                let any = items.iter().map(|i| self.search(i)).collect::<Result<Vec<_>, _>>()?;
                if any.is_empty() {
                    return Err("an empty list".into());
                }
                Ok(combine(line, "any", any))
            }
            Kind::Seq(_) | Kind::Str(_) | Kind::Int(_) | Kind::Float(_) => self.keywords(node, false),
            _ => Err(format!("a search identifier is a mapping or a list, not {}", node.type_name())),
        }
    }

    /// Keywords: searched for in the message.
    fn keywords(&self, values: &Node, all: bool) -> Result<Node, String> {
        let field = Field::parse("message").ok_or("no message field")?;
        self.values(&field, "message", Op::Contains, false, all, values)
    }

    /// One `field|modifiers: values` entry of a selection.
    fn entry(&self, key: &str, value: &Node) -> Result<Node, String> {
        let line = value.line;
        let mut parts = key.split('|');
        let name = parts.next().unwrap_or_default();
        let modifiers: Vec<&str> = parts.collect();
        if name.is_empty() {
            // `'|all': [keywords]`
            return match modifiers.as_slice() {
                ["all"] => self.keywords(value, true),
                _ => Err(format!("'{key}': a keyword list takes only the modifier all")),
            };
        }
        let mut op = Op::Equals;
        let (mut all, mut cased, mut neq) = (false, false, false);
        let mut special: Option<&str> = None;
        let mut re_flags = String::new();
        let mut transforms: Vec<Transform> = Vec::new();
        for m in &modifiers {
            match *m {
                "contains" => op = Op::Contains,
                "startswith" => op = Op::StartsWith,
                "endswith" => op = Op::EndsWith,
                "all" => all = true,
                "cased" => cased = true,
                "neq" => neq = true,
                "re" | "cidr" | "lt" | "lte" | "gt" | "gte" | "exists" => {
                    if special.replace(m).is_some() {
                        return Err(format!("'{key}': two type modifiers"));
                    }
                }
                "i" | "m" | "s" if special == Some("re") => re_flags.push_str(m),
                "base64" => transforms.push(Transform::Base64),
                "base64offset" => transforms.push(Transform::Base64Offset),
                "utf16le" | "wide" => transforms.push(Transform::Utf16Le),
                "utf16be" => transforms.push(Transform::Utf16Be),
                "utf16" => transforms.push(Transform::Utf16),
                "windash" => transforms.push(Transform::Windash),
                "fieldref" | "expand" | "minute" | "hour" | "day" | "week" | "month" | "year" => {
                    return Err(format!("modifier '{m}' (in '{key}') is not supported yet"));
                }
                other => return Err(format!("unknown modifier '{other}' in '{key}'")),
            }
        }
        let (field, vigil) = self.field(name)?;
        let filter = match special {
            Some("exists") => match value.kind {
                Kind::Bool(b) => test(line, format!("{vigil}|exists"), Node { line, kind: Kind::Bool(b) }),
                _ => return Err(format!("'{key}' takes true or false")),
            },
            Some(op @ ("cidr" | "lt" | "lte" | "gt" | "gte")) => {
                let items = list(value);
                let tests: Vec<Node> =
                    items.into_iter().map(|v| test(line, format!("{vigil}|{op}"), v.clone())).collect();
                combine(line, if all { "all" } else { "any" }, tests)
            }
            Some("re") => {
                let mut tests = Vec::new();
                for v in list(value) {
                    let pattern = v.as_text().ok_or_else(|| format!("'{key}' takes text"))?;
                    let flags = if re_flags.is_empty() { String::new() } else { format!("(?{re_flags})") };
                    tests.push(test(line, format!("{vigil}|re"), text(line, &format!("{flags}{pattern}"))));
                }
                combine(line, if all { "all" } else { "any" }, tests)
            }
            _ if !transforms.is_empty() => {
                if transforms.contains(&Transform::Base64Offset) && op != Op::Contains {
                    return Err(format!("'{key}': base64offset finds a value inside a text; it needs contains"));
                }
                let mut tests = Vec::new();
                for v in list(value) {
                    let raw = v.as_text().ok_or_else(|| format!("'{key}' takes text"))?;
                    let variants = transformed(&raw, &transforms).map_err(|e| format!("'{key}': {e}"))?;
                    let any: Vec<Node> = variants
                        .iter()
                        .map(|t| self.text_test(&vigil, field.field_type(), op, cased, t, line))
                        .collect::<Result<_, _>>()?;
                    tests.push(combine(line, "any", any));
                }
                combine(line, if all { "all" } else { "any" }, tests)
            }
            _ => self.values(&field, &vigil, op, cased, all, value)?,
        };
        Ok(if neq { negate(line, filter) } else { filter })
    }

    /// The vigil field a Sigma field name stands for in this log source:
    /// the mapping's, or a vigil field of that very name.
    fn field(&self, name: &str) -> Result<(Field, String), String> {
        let vigil = match self.mapping.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, v)) => v.clone(),
            None if Field::parse(name).is_some() && !name.contains('.') => name.to_owned(),
            None => return Err(format!("field '{name}' has no mapping for log source {}", self.logsource)),
        };
        let field =
            Field::parse(&vigil).ok_or_else(|| format!("field '{name}' maps to '{vigil}', not a vigil field"))?;
        Ok((field, vigil))
    }

    /// Values compared as `op` (any of them, or all with `all`).
    fn values(&self, field: &Field, vigil: &str, op: Op, cased: bool, all: bool, value: &Node) -> Result<Node, String> {
        let line = value.line;
        let ty = field.field_type();
        let mut tests = Vec::new();
        for v in list(value) {
            let t = match &v.kind {
                Kind::Null => test(line, format!("{vigil}|exists"), Node { line, kind: Kind::Bool(false) }),
                Kind::Int(_) | Kind::Float(_)
                    if op == Op::Equals && matches!(ty, FieldType::Ip | FieldType::Number) =>
                {
                    test(line, vigil.to_owned(), v.clone())
                }
                Kind::Str(_) | Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                    let raw = v.as_text().unwrap_or_default();
                    self.text_test(vigil, ty, op, cased, &raw, line)?
                }
                _ => return Err(format!("'{vigil}' takes text or numbers, not {}", v.type_name())),
            };
            tests.push(t);
        }
        if tests.is_empty() {
            return Err(format!("'{vigil}' has no values"));
        }
        Ok(combine(line, if all { "all" } else { "any" }, tests))
    }

    fn text_test(&self, vigil: &str, ty: FieldType, op: Op, cased: bool, raw: &str, line: u32) -> Result<Node, String> {
        let mut p = pieces(raw);
        if raw.is_empty() {
            // `''`: empty or absent.
            return Ok(combine(
                line,
                "any",
                vec![
                    test(line, vigil.to_owned(), text(line, "")),
                    test(line, format!("{vigil}|exists"), Node { line, kind: Kind::Bool(false) }),
                ],
            ));
        }
        if matches!(op, Op::Contains | Op::EndsWith) {
            p.insert(0, Piece::Star);
        }
        if matches!(op, Op::Contains | Op::StartsWith) {
            p.push(Piece::Star);
        }
        p.dedup_by(|a, b| *a == Piece::Star && *b == Piece::Star);
        let i = if cased { "" } else { "|i" };
        let simple = match p.as_slice() {
            [Piece::Lit(s)] => Some((String::new(), s)),
            [Piece::Lit(s), Piece::Star] => Some(("|startswith".to_owned(), s)),
            [Piece::Star, Piece::Lit(s)] => Some(("|endswith".to_owned(), s)),
            [Piece::Star, Piece::Lit(s), Piece::Star] => Some(("|contains".to_owned(), s)),
            [Piece::Star] => return Ok(test(line, format!("{vigil}|exists"), Node { line, kind: Kind::Bool(true) })),
            _ => None,
        };
        if matches!(ty, FieldType::Ip | FieldType::Number) {
            // Addresses and numbers compare whole values.
            return match simple {
                Some((o, s)) if o.is_empty() => Ok(test(line, vigil.to_owned(), text(line, s))),
                _ => Err(format!("'{vigil}' is not text: wildcards and text modifiers do not apply")),
            };
        }
        if let Some((o, s)) = simple {
            return Ok(test(line, format!("{vigil}{o}{i}"), text(line, s)));
        }
        let mut re = String::from("^");
        for piece in &p {
            match piece {
                Piece::Lit(s) => re.push_str(&regex::escape(s)),
                Piece::Star => re.push_str(".*"),
                Piece::One => re.push('.'),
            }
        }
        re.push('$');
        let flags = if cased { "(?s)" } else { "(?is)" };
        Ok(test(line, format!("{vigil}|re"), text(line, &format!("{flags}{re}"))))
    }

    /// The condition as a filter over the searches' filters.
    fn expr(&self, expr: &Expr, searches: &[(String, Node)], line: u32) -> Node {
        match expr {
            Expr::Ident(name) => searches
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| map(line, vec![("any", seq(line, vec![]))]), |(_, f)| f.clone()),
            Expr::Any(items) => combine(line, "any", items.iter().map(|e| self.expr(e, searches, line)).collect()),
            Expr::All(items) => combine(line, "all", items.iter().map(|e| self.expr(e, searches, line)).collect()),
            Expr::Not(inner) => negate(line, self.expr(inner, searches, line)),
        }
    }
}

/// A transformation modifier, applied to values in the order written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transform {
    Base64,
    Base64Offset,
    Utf16Le,
    Utf16Be,
    /// Little-endian with a byte-order mark.
    Utf16,
    Windash,
}

/// The characters `windash` treats as one another.
const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// Most values a value may expand into.
const MAX_VARIANTS: usize = 1_024;

/// The values `raw` becomes under `transforms`, in order. The result
/// must be text (a rule matches text fields), and encodings do not take
/// wildcards (they would be encoded as characters).
fn transformed(raw: &str, transforms: &[Transform]) -> Result<Vec<String>, String> {
    use base64::Engine as _;
    let encodes = transforms.iter().any(|t| *t != Transform::Windash);
    // Escapes resolved once encodings apply: `\*` is a plain star.
    let start = if encodes {
        let mut literal = String::new();
        for piece in pieces(raw) {
            match piece {
                Piece::Lit(s) => literal.push_str(&s),
                Piece::Star | Piece::One => return Err("wildcards cannot be encoded".into()),
            }
        }
        literal
    } else {
        raw.to_owned()
    };
    let mut values: Vec<Vec<u8>> = vec![start.into_bytes()];
    for t in transforms {
        let text = |v: &[u8]| {
            String::from_utf8(v.to_vec()).map_err(|_| format!("{t:?} needs text, and an earlier modifier made bytes"))
        };
        let mut next = Vec::new();
        for v in &values {
            match t {
                Transform::Base64 => next.push(base64::engine::general_purpose::STANDARD.encode(v).into_bytes()),
                Transform::Base64Offset => {
                    // The value at each of the three offsets a base64 text
                    // may put it, cut to the characters it alone decides.
                    for shift in 0..3usize {
                        let mut padded = vec![b' '; shift];
                        padded.extend_from_slice(v);
                        let encoded = base64::engine::general_purpose::STANDARD.encode(&padded);
                        let from = [0, 2, 3][shift];
                        let cut = [0, 3, 2][(v.len() + shift) % 3];
                        let to = encoded.len().saturating_sub(cut);
                        if let Some(part) = encoded.get(from..to).filter(|p| !p.is_empty()) {
                            next.push(part.as_bytes().to_vec());
                        }
                    }
                }
                Transform::Utf16Le | Transform::Utf16Be | Transform::Utf16 => {
                    let s = text(v)?;
                    let mut out = if *t == Transform::Utf16 { vec![0xff, 0xfe] } else { Vec::new() };
                    for unit in s.encode_utf16() {
                        let [a, b] = if *t == Transform::Utf16Be { unit.to_be_bytes() } else { unit.to_le_bytes() };
                        out.extend([a, b]);
                    }
                    next.push(out);
                }
                Transform::Windash => {
                    let s = text(v)?;
                    let mut variants = vec![String::new()];
                    for c in s.chars() {
                        if DASHES.contains(&c) {
                            variants =
                                variants.iter().flat_map(|p| DASHES.iter().map(move |d| format!("{p}{d}"))).collect();
                        } else {
                            variants.iter_mut().for_each(|p| p.push(c));
                        }
                        if variants.len() > MAX_VARIANTS {
                            return Err(format!("windash makes more than {MAX_VARIANTS} values"));
                        }
                    }
                    next.extend(variants.into_iter().map(String::into_bytes));
                }
            }
        }
        if next.len() > MAX_VARIANTS {
            return Err(format!("the modifiers make more than {MAX_VARIANTS} values"));
        }
        values = next;
    }
    values
        .into_iter()
        .map(|v| String::from_utf8(v).map_err(|_| "the encoded value is not text (add base64 after utf16)".to_owned()))
        .map(|v| v.map(|s| if encodes { escape_wildcards(&s) } else { s }))
        .collect()
}

/// `s` with `*`, `?` and `\` escaped, so that it is matched as written.
fn escape_wildcards(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A value or list of values as a list.
fn list(value: &Node) -> Vec<&Node> {
    match &value.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![value],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_mappings_parse() {
        assert!(!LogSources::parse(BUILTIN).unwrap().mappings.is_empty());
    }

    #[test]
    fn transformation_modifiers_make_the_values_the_specification_gives() {
        use Transform::*;
        let t = |raw: &str, ts: &[Transform]| transformed(raw, ts).unwrap();
        // The specification's examples.
        assert_eq!(t("cmd", &[Utf16Le]), ["c\0m\0d\0"]);
        assert_eq!(t("cmd", &[Utf16Be]), ["\0c\0m\0d"]);
        assert_eq!(t("cmd", &[Base64]), ["Y21k"]);
        assert_eq!(t("cmd", &[Utf16, Base64]), ["//5jAG0AZAA="]);
        // base64offset: "/bin/bash" anywhere in a base64 text.
        assert_eq!(t("/bin/bash", &[Base64Offset]), ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
        assert_eq!(t("ping", &[Utf16Le, Base64Offset]), ["cABpAG4AZw", "AAaQBuAGcA", "wAGkAbgBnA"]);
        assert_eq!(t("a-b", &[Windash]).len(), 5);
        assert!(t("-c -e", &[Windash]).contains(&"\u{2013}c /e".to_owned()));
        // Base64 text may hold '/' and '+'; a '*' is escaped, not a wildcard.
        assert_eq!(escape_wildcards("a*b?c\\"), "a\\*b\\?c\\\\");
        assert!(transformed("a*", &[Base64]).unwrap_err().contains("wildcards"));
        assert!(transformed("é", &[Utf16Le]).unwrap_err().contains("not text"));
        assert_eq!(t("a-b-c-d-e", &[Windash]).len(), 625);
        assert!(transformed("a-b-c-d-e-f", &[Windash]).unwrap_err().contains("more than"));
    }

    #[test]
    fn wildcards_and_escapes() {
        use Piece::*;
        assert_eq!(pieces("a*b?c"), [Lit("a".into()), Star, Lit("b".into()), One, Lit("c".into())]);
        assert_eq!(pieces(r"a\*b\?c\\d\e"), [Lit(r"a*b?c\d\e".into())]);
        assert_eq!(pieces(r"C:\Windows\*"), [Lit(r"C:\Windows*".into())]);
        assert_eq!(pieces(r"C:\\*"), [Lit(r"C:\".into()), Star]);
    }

    proptest::proptest! {
        /// Values, conditions and transformations of any text are read or
        /// refused without a panic.
        #[test]
        fn no_text_panics(text in ".{0,80}", names in proptest::collection::vec("[a-z_*]{1,8}", 0..4)) {
            let _ = pieces(&text);
            let _ = condition::parse(&text, &names);
            for t in [Transform::Base64, Transform::Base64Offset, Transform::Utf16, Transform::Windash] {
                let _ = transformed(&text, &[t, Transform::Base64]);
            }
        }
    }
}

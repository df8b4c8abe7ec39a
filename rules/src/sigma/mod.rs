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
//! base64offset utf16le utf16be utf16 wide windash fieldref expand` and
//! the time parts `minute hour day week month year`; conditions with `and
//! or not`, brackets, `1 of`/`any of`/`all of` over wildcard names and
//! `them`; filter documents; correlations `event_count`, `value_count`,
//! `value_sum`, `value_avg`, `temporal` and `temporal_ordered` over the
//! rules (or correlations) they name, with aliases and ranges. Reported
//! unsupported: `value_percentile`, a count with an upper bound, a
//! temporal condition on fewer than all its rules.

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
    /// Values of `%name%` placeholders for the `expand` modifier.
    placeholders: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Debug)]
struct Mapping {
    product: Option<String>,
    category: Option<String>,
    service: Option<String>,
    /// The orgs this mapping is for; empty: every org without its own.
    orgs: Vec<String>,
    /// A vigil filter selecting the log source's events.
    filter: Node,
    /// Sigma field name (as written, compared ignoring case) → vigil field.
    fields: Vec<(String, String)>,
}

impl LogSources {
    /// The mappings that ship with vigil (`rules/sigma/logsources.yaml`).
    pub fn builtin() -> LogSources {
        // Checked by a test: the built-in file always parses.
        LogSources::parse(BUILTIN).unwrap_or(LogSources { mappings: Vec::new(), placeholders: Vec::new() })
    }

    /// Mappings from their YAML: a list of `{logsource: {product,
    /// category, service}, orgs: [ORG...], filter: FILTER, fields:
    /// {SigmaName: field}}`, or a mapping `{mappings: [...], placeholders:
    /// {NAME: [VALUE...]}}`.
    pub fn parse(text: &str) -> Result<LogSources, String> {
        let root = syntax::parse(text).map_err(|(line, m)| format!("line {line}: invalid YAML: {m}"))?;
        let mut placeholders = Vec::new();
        let items = match &root.kind {
            Kind::Seq(items) => items.as_slice(),
            Kind::Map(_) => {
                for (k, _) in root.entries().unwrap_or_default() {
                    let key = k.as_text().unwrap_or_default();
                    if key != "mappings" && key != "placeholders" {
                        return Err(format!("line {}: unknown key '{key}' (mappings, placeholders)", k.line));
                    }
                }
                if let Some(p) = root.get("placeholders") {
                    let entries = p.entries().ok_or_else(|| format!("line {}: placeholders is a mapping", p.line))?;
                    for (k, v) in entries {
                        let name = k.as_text().ok_or_else(|| format!("line {}: a placeholder has a name", k.line))?;
                        let values: Vec<String> = list(v).into_iter().filter_map(Node::as_text).collect();
                        if values.is_empty() || matches!(v.kind, Kind::Map(_)) {
                            return Err(format!("line {}: placeholder '{name}' takes a list of values", v.line));
                        }
                        placeholders.push((name, values));
                    }
                }
                match root.get("mappings").map(|m| &m.kind) {
                    Some(Kind::Seq(items)) => items.as_slice(),
                    None => &[],
                    Some(_) => return Err("mappings is a list".into()),
                }
            }
            _ => return Err("log-source mappings are a list".into()),
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
            let orgs: Vec<String> =
                item.get("orgs").map(list).unwrap_or_default().into_iter().filter_map(Node::as_text).collect();
            if item.get("orgs").is_some() && orgs.is_empty() {
                return Err(at("orgs is a list of org names"));
            }
            let mapping = Mapping {
                product: key("product"),
                category: key("category"),
                service: key("service"),
                orgs,
                filter,
                fields,
            };
            let same = |m: &Mapping| {
                m.product == mapping.product && m.category == mapping.category && m.service == mapping.service
            };
            if mappings.iter().any(|m: &Mapping| {
                same(m)
                    && (m.orgs.is_empty() && mapping.orgs.is_empty() || m.orgs.iter().any(|o| mapping.orgs.contains(o)))
            }) {
                return Err(at("this log source is mapped twice for the same orgs"));
            }
            mappings.push(mapping);
        }
        Ok(LogSources { mappings, placeholders })
    }

    /// The mappings of exactly this log source, each with the filter
    /// choosing its orgs' events: an org's own mapping for its orgs, the
    /// general one for every other org.
    fn find(&self, source: &[Option<String>; 3]) -> Vec<(&Mapping, Option<Node>)> {
        let all: Vec<&Mapping> = self
            .mappings
            .iter()
            .filter(|m| m.product == source[0] && m.category == source[1] && m.service == source[2])
            .collect();
        let special: Vec<Node> = all.iter().flat_map(|m| m.orgs.iter()).map(|o| text(0, o)).collect();
        all.into_iter()
            .map(|m| {
                let orgs = if m.orgs.is_empty() {
                    (!special.is_empty()).then(|| negate(0, test(0, "org".into(), seq(0, special.clone()))))
                } else {
                    Some(test(0, "org".into(), seq(0, m.orgs.iter().map(|o| text(0, o)).collect())))
                };
                (m, orgs)
            })
            .collect()
    }

    /// The vigil field Sigma field `name` of log source `source` is, the
    /// same in every org's mapping.
    fn field(&self, source: &[Option<String>; 3], label: &str, name: &str) -> Result<String, String> {
        let mut found: Option<String> = None;
        for (mapping, _) in self.find(source) {
            let cx = Cx { mapping, logsource: label.to_owned(), placeholders: &[], lists: &[] };
            let vigil = cx.field(name)?.1;
            match &found {
                Some(f) if *f != vigil => {
                    return Err(format!("field '{name}' maps to {f} for some orgs and to {vigil} for others"));
                }
                _ => found = Some(vigil),
            }
        }
        found.ok_or_else(|| format!("no mapping for log source {label}"))
    }
}

impl LogSources {
    /// `event` as a JSON object under the names Sigma rules give its
    /// fields in these mappings (and vigil's own names, `ext.*` keys as
    /// bare keys, and `@timestamp`): what a Sigma engine that reads JSON
    /// is given to compare with vigil on the same events.
    pub fn event_json(&self, event: &parsers::Event) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let mut put = |name: &str, field: &Field| {
            if out.contains_key(name) {
                return;
            }
            if let Some(v) = field.get(event) {
                let value = match v {
                    crate::field::Value::Text(t) => t.to_owned(),
                    crate::field::Value::Ip(ip) => ip.to_string(),
                    crate::field::Value::Num(n) => n.to_string(),
                };
                out.insert(name.to_owned(), serde_json::Value::String(value));
            }
        };
        for m in &self.mappings {
            for (sigma, vigil) in &m.fields {
                if let Some(field) = Field::parse(vigil) {
                    put(sigma, &field);
                }
            }
        }
        for name in Field::NAMES {
            if let Some(field) = Field::parse(name).filter(|f| *f != Field::Time) {
                put(name, &field);
            }
        }
        for (k, _) in event.ext.iter() {
            put(k, &Field::Ext(parsers::Str::from(k)));
        }
        out.insert("@timestamp".into(), serde_json::Value::String(event.time.to_rfc3339()));
        out
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

/// What a Sigma rule is compiled against: the mappings, the watch lists
/// the rule set fills (for `expand`) and the filter documents that name it.
pub(crate) struct Env<'a> {
    pub sources: &'a LogSources,
    pub lists: &'a [String],
    pub filters: &'a [&'a Node],
}

/// The log source of a document, as mapping keys.
fn source_of(doc: &Node) -> [Option<String>; 3] {
    let key =
        |k: &str| doc.get("logsource").and_then(|l| l.get(k)).and_then(Node::as_text).map(|s| s.to_ascii_lowercase());
    [key("product"), key("category"), key("service")]
}

/// Whether a YAML document is a Sigma filter document.
pub(crate) fn is_filter(doc: &Node) -> bool {
    doc.get("detection").is_none() && doc.get("correlation").is_none() && doc.get("filter").is_some()
}

/// Whether filter document `filter` applies to detection rule `doc`: it
/// names the rule (by id or name, or `any`) and its log source is the
/// rule's or a more general one.
pub(crate) fn filter_applies(filter: &Node, doc: &Node) -> bool {
    let Some(f) = filter.get("filter") else { return false };
    let id = doc.get("id").and_then(Node::as_text);
    let name = doc.get("name").and_then(Node::as_text);
    let named = match f.get("rules") {
        // `as_text` is None for a list, so this is the scalar `any`.
        Some(n) if n.as_text().is_some_and(|t| t.eq_ignore_ascii_case("any")) => true,
        Some(n) => {
            list(n).into_iter().filter_map(Node::as_text).any(|r| Some(&r) == id.as_ref() || Some(&r) == name.as_ref())
        }
        None => false,
    };
    let (mine, rule) = (source_of(filter), source_of(doc));
    named && mine.iter().zip(&rule).all(|(m, r)| m.is_none() || m == r)
}

/// The vigil rule tree of Sigma detection document `doc`, or why there is
/// none.
pub(crate) fn translate(doc: &Node, env: &Env<'_>) -> Result<Translated, Verdict> {
    let unsupported = |m: String| Verdict::Unsupported(m);
    if doc.get("correlation").is_some() {
        return Err(unsupported("a correlation rule is compiled with the rules it names".into()));
    }
    let Some(detection) = doc.get("detection") else {
        return Err(unsupported("a filter document is applied to the rules it names".into()));
    };
    let title = doc.get("title").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no title".into()))?;
    let id = doc.get("id").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no id".into()))?;
    if doc.get("logsource").is_none() {
        return Err(unsupported("the rule has no logsource".into()));
    }
    let source = source_of(doc);
    let mappings = env.sources.find(&source);
    if mappings.is_empty() {
        return Err(Verdict::NotApplicable(format!("no mapping for log source {}", logsource_label(doc))));
    }
    let mut branches = Vec::new();
    for (mapping, orgs) in &mappings {
        let cx =
            Cx { mapping, logsource: logsource_label(doc), placeholders: &env.sources.placeholders, lists: env.lists };
        let for_orgs = |e: String| {
            if mapping.orgs.is_empty() { e } else { format!("with the mapping for {}: {e}", mapping.orgs.join(", ")) }
        };
        let mut all = vec![mapping.filter.clone()];
        all.extend(orgs.clone());
        all.push(cx.detection(detection, &[]).map_err(|e| unsupported(for_orgs(e)))?);
        for f in env.filters {
            let title = f.get("title").and_then(Node::as_text).unwrap_or_default();
            let body = f.get("filter").ok_or_else(|| unsupported(format!("filter '{title}' has no filter")))?;
            all.push(
                cx.detection(body, &["rules"]).map_err(|e| unsupported(for_orgs(format!("filter '{title}': {e}"))))?,
            );
        }
        branches.push(combine(doc.line, "all", all));
    }
    let filter = combine(doc.line, "any", branches);
    let rule = rule_tree(doc, &id, &title, vec![("filter", filter.clone())]);
    Ok(Translated { rule, filter, source })
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
    let description = doc.get("description").and_then(Node::as_text).unwrap_or_default();
    let status = doc.get("status").and_then(Node::as_text).map(|s| format!(", status {s}")).unwrap_or_default();
    let level = doc.get("level").and_then(Node::as_text).unwrap_or_else(|| "medium".into());
    let description = format!("{}\nSigma rule {id}, level {level}{status}.", description.trim()).trim().to_owned();
    let mut entries = vec![("id", text(line, id)), ("name", text(line, title))];
    entries.push(("description", text(line, &description)));
    if let Some(author) = doc.get("author").and_then(Node::as_text).filter(|a| !a.trim().is_empty()) {
        entries.push(("author", text(line, author.trim())));
    }
    for key in ["tags", "references"] {
        let items: Vec<Node> = doc
            .get(key)
            .map(list)
            .unwrap_or_default()
            .into_iter()
            .filter_map(Node::as_text)
            .filter(|t| !t.trim().is_empty() && t.len() <= 1024)
            .take(64)
            .map(|t| text(line, &t))
            .collect();
        if !items.is_empty() {
            entries.push((key, seq(line, items)));
        }
    }
    entries.push(("severity", text(line, severity)));
    let patterns = patterns.into_iter().map(|(k, v)| (text(line, &k), v)).collect();
    entries.push(("patterns", Node { line, kind: Kind::Map(patterns) }));
    entries.extend(extra);
    map(line, entries)
}

/// A compiled Sigma rule a correlation may name: a detection rule, or a
/// correlation (whose incidents the chained correlation counts).
pub(crate) struct Base {
    pub id: String,
    /// Its `name` attribute, by which correlations may also name it.
    pub name: Option<String>,
    pub filter: Node,
    pub source: [Option<String>; 3],
    /// Its log source as the report shows it.
    pub logsource: String,
    /// A correlation rule (its events are its incidents).
    pub correlation: bool,
}

/// The ids or names correlation `doc` names.
pub(crate) fn correlation_names(doc: &Node) -> Vec<String> {
    doc.get("correlation")
        .and_then(|c| c.get("rules"))
        .map(list)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Node::as_text)
        .collect()
}

/// A translated correlation: its vigil rule tree, the rules it uses (id,
/// whether a correlation) and the [`Base`] by which later correlations
/// may name it.
pub(crate) struct TranslatedCorrelation {
    pub rule: Node,
    pub used: Vec<(String, bool)>,
    pub base: Base,
}

/// The vigil rule tree of correlation `doc` over the compiled rules
/// `bases`; or why there is none.
pub(crate) fn translate_correlation(
    doc: &Node,
    bases: &[Base],
    sources: &LogSources,
) -> Result<TranslatedCorrelation, Verdict> {
    let unsupported = |m: String| Verdict::Unsupported(m);
    let line = doc.line;
    let title = doc.get("title").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no title".into()))?;
    let id = doc.get("id").and_then(Node::as_text).ok_or_else(|| unsupported("the rule has no id".into()))?;
    let c = doc.get("correlation").ok_or_else(|| unsupported("no correlation".into()))?;
    let kind = c.get("type").and_then(Node::as_text).ok_or_else(|| unsupported("correlation has no type".into()))?;
    match kind.as_str() {
        "event_count" | "value_count" | "value_sum" | "value_avg" | "temporal" | "temporal_ordered" => {}
        "value_percentile" => {
            return Err(unsupported(
                "value_percentile: the specification does not say of which population the percentile is taken \
                 (the group's values, or every group's), so vigil reports it instead of guessing (docs/sigma.md)"
                    .into(),
            ));
        }
        other => return Err(unsupported(format!("unknown correlation type '{other}'"))),
    }
    let names = correlation_names(doc);
    if names.is_empty() {
        return Err(unsupported("the correlation names no rules".into()));
    }
    let mut used: Vec<(&str, &Base)> = Vec::new();
    for name in &names {
        let base = bases
            .iter()
            .find(|b| b.id == *name || b.name.as_deref() == Some(name.as_str()))
            .ok_or_else(|| unsupported(format!("it names '{name}', which is not a compiled Sigma rule of this set")))?;
        used.push((name, base));
    }
    // Aliases: per rule, the field a group-by name stands for.
    let mut aliases: Vec<(String, &Node)> = Vec::new();
    if let Some(a) = c.get("aliases") {
        for (k, v) in a.entries().ok_or_else(|| unsupported("aliases is a mapping".into()))? {
            let alias = k.as_text().ok_or_else(|| unsupported("an alias has a name".into()))?;
            if v.entries().is_none() {
                return Err(unsupported(format!("alias '{alias}' maps rule names to fields")));
            }
            aliases.push((alias, v));
        }
    }
    // The vigil field Sigma field (or alias) `name` is in each used rule.
    let resolve = |name: &str| -> Result<Vec<String>, Verdict> {
        used.iter()
            .map(|(rule, base)| {
                let field = match aliases.iter().find(|(a, _)| a == name) {
                    Some((_, map)) => map
                        .get(rule)
                        .or_else(|| map.get(&base.id))
                        .and_then(Node::as_text)
                        .ok_or_else(|| unsupported(format!("alias '{name}' gives no field for rule '{rule}'")))?,
                    None => name.to_owned(),
                };
                sources.field(&base.source, &base.logsource, &field).map_err(unsupported)
            })
            .collect()
    };
    let timespan = c
        .get("timespan")
        .and_then(Node::as_text)
        .ok_or_else(|| unsupported("the correlation has no timespan".into()))?;
    let mut group_by: Vec<Vec<String>> = Vec::new();
    if let Some(g) = c.get("group-by") {
        for f in list(g) {
            let name = f.as_text().ok_or_else(|| unsupported("group-by names fields".into()))?;
            group_by.push(resolve(&name)?);
        }
    }
    let base_filter = test(line, "event_type".into(), text(line, &format!("incident.{id}")));
    let first = used[0].1;
    let base = Base {
        id: id.clone(),
        name: doc.get("name").and_then(Node::as_text),
        filter: base_filter,
        source: first.source.clone(),
        logsource: first.logsource.clone(),
        correlation: true,
    };
    let used_ids = used.iter().map(|(_, b)| (b.id.clone(), b.correlation)).collect();
    if kind.starts_with("temporal") {
        // Every named rule within the timespan (in their order when
        // ordered), per group-by values.
        if used.len() < 2 {
            return Err(unsupported(format!("a {kind} correlation needs two rules or more")));
        }
        if let Some(condition) = c.get("condition")
            && condition.get("gte").and_then(Node::as_text) != Some(used.len().to_string())
        {
            return Err(unsupported(format!(
                "a {kind} condition on fewer than all its rules: vigil's conditions combine every pattern"
            )));
        }
        let names: Vec<String> = (1..=used.len()).map(|i| format!("rule_{i}")).collect();
        let patterns = names
            .iter()
            .zip(&used)
            .map(|(n, (_, b))| (n.clone(), map(line, vec![("filter", b.filter.clone())])))
            .collect();
        let joiner = if kind == "temporal_ordered" { " followed by " } else { " and " };
        let mut extra = vec![("condition", text(line, &names.join(joiner))), ("within", text(line, &timespan))];
        if !group_by.is_empty() {
            let joins = group_by
                .iter()
                .map(|fields| {
                    if fields.iter().all(|f| *f == fields[0]) {
                        text(line, &fields[0])
                    } else {
                        let pairs = names.iter().zip(fields).map(|(n, f)| (text(line, n), text(line, f))).collect();
                        Node { line, kind: Kind::Map(pairs) }
                    }
                })
                .collect();
            extra.push(("join", seq(line, joins)));
        }
        let rule = rule_tree_of(doc, &id, &title, patterns, extra);
        return Ok(TranslatedCorrelation { rule, used: used_ids, base });
    }
    // Counting: one pattern over every named rule's events, so a field
    // must be the same vigil field in all of them.
    let one = |fields: Vec<String>, what: &str| -> Result<String, Verdict> {
        if fields.iter().all(|f| *f == fields[0]) {
            Ok(fields[0].clone())
        } else {
            Err(unsupported(format!(
                "{what} is {} in its rules: a {kind} counts one group per event, so it must be one field",
                fields.join(" / ")
            )))
        }
    };
    let group_by: Vec<Node> =
        group_by.into_iter().map(|f| one(f, "a group-by field").map(|f| text(line, &f))).collect::<Result<_, _>>()?;
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
    if comparisons.is_empty() {
        return Err(unsupported("the condition has no comparison (gt, gte, lt, lte, eq, neq)".into()));
    }
    let field = match (kind.as_str(), field) {
        ("event_count", _) => None,
        (_, Some(f)) => Some(one(resolve(&f)?, "condition.field")?),
        (_, None) => return Err(unsupported(format!("a {kind} correlation needs condition.field"))),
    };
    let mut having = Vec::new();
    for (op, n) in &comparisons {
        let symbol = match op.as_str() {
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            "eq" => "==",
            _ => "!=",
        };
        having.push(text(
            line,
            &match (kind.as_str(), &field) {
                ("event_count" | "value_count", _) if !matches!(op.as_str(), "gt" | "gte") => {
                    return Err(unsupported(format!(
                        "{kind} with {op}: vigil raises when a count rises past a threshold (gt, gte), \
                         not when it stays low or below a ceiling"
                    )));
                }
                ("event_count", _) => format!("count {symbol} {n}"),
                ("value_count", Some(f)) => format!("count_distinct({f}) {symbol} {n}"),
                ("value_sum", Some(f)) => format!("sum({f}) {symbol} {n}"),
                (_, Some(f)) => format!("avg({f}) {symbol} {n}"),
                _ => return Err(unsupported("the condition needs a field".into())),
            },
        ));
    }
    let filter = combine(line, "any", used.iter().map(|(_, b)| b.filter.clone()).collect());
    let mut pattern = vec![("filter", filter)];
    if !group_by.is_empty() {
        pattern.push(("group_by", seq(line, group_by)));
    }
    pattern.push(("window", text(line, &timespan)));
    pattern.push(("having", if having.len() == 1 { having.remove(0) } else { seq(line, having) }));
    let rule = rule_tree(doc, &id, &title, pattern);
    Ok(TranslatedCorrelation { rule, used: used_ids, base })
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
    /// `%name%` values for `expand`.
    placeholders: &'a [(String, Vec<String>)],
    /// Watch lists some rule of the set fills (for `expand`).
    lists: &'a [String],
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
    /// The filter of a detection section (a rule's `detection`, a filter
    /// document's `filter`): its search identifiers combined by its
    /// condition. Keys in `skip` are not identifiers.
    fn detection(&self, section: &Node, skip: &[&str]) -> Result<Node, String> {
        let entries = section.entries().ok_or("detection is not a mapping")?;
        let mut names = Vec::new();
        let mut condition = None;
        for (k, v) in entries {
            match k.as_text().as_deref() {
                Some("condition") => condition = Some(v),
                Some("timeframe") => return Err("timeframe (a Sigma 1 aggregation): write a correlation rule".into()),
                Some(name) if skip.contains(&name) => {}
                Some(name) => names.push((name.to_owned(), v)),
                None => return Err(format!("line {}: a search identifier must be a name", k.line)),
            }
        }
        let condition = condition.ok_or("detection has no condition")?;
        let texts: Vec<String> = match &condition.kind {
            Kind::Seq(items) => items.iter().filter_map(Node::as_text).collect(),
            _ => condition.as_text().into_iter().collect(),
        };
        if texts.is_empty() {
            return Err("the condition is not text".into());
        }
        let plain: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
        let mut exprs = Vec::new();
        for text in &texts {
            exprs.push(condition::parse(text, &plain).map_err(|e| format!("condition '{text}': {e}"))?);
        }
        let expr = if exprs.len() == 1 { exprs.remove(0) } else { Expr::Any(exprs) };
        let mut searches = Vec::new();
        for (name, node) in &names {
            searches.push((name.clone(), self.search(node).map_err(|e| format!("{name}: {e}"))?));
        }
        Ok(self.expr(&expr, &searches, section.line))
    }

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
        let (mut all, mut cased, mut neq, mut expand) = (false, false, false, false);
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
                "re" | "cidr" | "lt" | "lte" | "gt" | "gte" | "exists" | "fieldref" | "minute" | "hour" | "day"
                | "week" | "month" | "year" => {
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
                "expand" => expand = true,
                other => return Err(format!("unknown modifier '{other}' in '{key}'")),
            }
        }
        let (field, vigil) = self.field(name)?;
        if special.is_some() && (op != Op::Equals || !transforms.is_empty() || expand) {
            return Err(format!("'{key}': {} takes no text or encoding modifier", special.unwrap_or_default()));
        }
        let expanded;
        let value = if expand {
            let (values, lists) = self.expand(value).map_err(|e| format!("'{key}': {e}"))?;
            if !lists.is_empty() && (op != Op::Equals || !transforms.is_empty() || all) {
                return Err(format!("'{key}': a placeholder naming a watch list matches whole values only"));
            }
            let mut any: Vec<Node> =
                lists.iter().map(|l| test(line, format!("{vigil}|in_list"), text(line, l))).collect();
            if values.is_empty() {
                let filter = combine(line, "any", any);
                return Ok(if neq { negate(line, filter) } else { filter });
            }
            if !any.is_empty() {
                any.push(self.values(&field, &vigil, op, cased, all, &seq(line, values))?);
                let filter = combine(line, "any", any);
                return Ok(if neq { negate(line, filter) } else { filter });
            }
            expanded = seq(line, values);
            &expanded
        } else {
            value
        };
        let filter = match special {
            Some("exists") => match value.kind {
                Kind::Bool(b) => test(line, format!("{vigil}|exists"), Node { line, kind: Kind::Bool(b) }),
                _ => return Err(format!("'{key}' takes true or false")),
            },
            Some("fieldref") => {
                let mut tests = Vec::new();
                for v in list(value) {
                    let other = v.as_text().ok_or_else(|| format!("'{key}' takes field names"))?;
                    let (_, other) = self.field(&other)?;
                    tests.push(test(line, format!("{vigil}|eq_field"), text(line, &other)));
                }
                combine(line, if all { "all" } else { "any" }, tests)
            }
            Some(part @ ("minute" | "hour" | "day" | "week" | "month" | "year")) if vigil != "time" => {
                return Err(format!("'{key}': {part} takes a part of the event time, and '{name}' is {vigil}"));
            }
            Some(
                op @ ("cidr" | "lt" | "lte" | "gt" | "gte" | "minute" | "hour" | "day" | "week" | "month" | "year"),
            ) => {
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
            // The event time, by the names Sigma rules give dates.
            None if ["@timestamp", "timestamp"].iter().any(|t| t.eq_ignore_ascii_case(name)) => "time".to_owned(),
            None => return Err(format!("field '{name}' has no mapping for log source {}", self.logsource)),
        };
        let field =
            Field::parse(&vigil).ok_or_else(|| format!("field '{name}' maps to '{vigil}', not a vigil field"))?;
        Ok((field, vigil))
    }

    /// The values of an `expand` value or list: placeholders `%name%`
    /// replaced by the mappings' values for `name`; a value that is one
    /// placeholder with no values there names the watch list `name` (if a
    /// rule of the set fills it). Returns the values and the watch lists.
    fn expand(&self, value: &Node) -> Result<(Vec<Node>, Vec<String>), String> {
        let line = value.line;
        let (mut values, mut lists) = (Vec::new(), Vec::new());
        for v in list(value) {
            let raw = v.as_text().ok_or("expand takes text")?;
            let mut variants = vec![String::new()];
            let mut rest = raw.as_str();
            while let Some(start) = rest.find('%') {
                let Some(len) = rest[start + 1..].find('%') else { break };
                let name = &rest[start + 1..start + 1 + len];
                variants.iter_mut().for_each(|p| p.push_str(&rest[..start]));
                match self.placeholders.iter().find(|(n, _)| n == name) {
                    Some((_, subs)) => {
                        variants = variants.iter().flat_map(|p| subs.iter().map(move |s| format!("{p}{s}"))).collect();
                        if variants.len() > MAX_VARIANTS {
                            return Err(format!("placeholders make more than {MAX_VARIANTS} values"));
                        }
                    }
                    None if raw == format!("%{name}%") && self.lists.iter().any(|l| l == name) => {
                        lists.push(name.to_owned());
                        variants.clear();
                    }
                    None if raw == format!("%{name}%") => {
                        return Err(format!(
                            "placeholder %{name}% cannot be resolved: the mappings give it no values and no rule fills a watch list '{name}'"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "placeholder %{name}% cannot be resolved: the mappings give it no values (a watch list stands only for a whole value)"
                        ));
                    }
                }
                rest = &rest[start + len + 2..];
            }
            values.extend(variants.into_iter().map(|p| text(line, &format!("{p}{rest}"))));
        }
        Ok((values, lists))
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
        // A leading or trailing `*` is an unanchored end: `*a*b*` is the
        // search `a.*b`, which a regex set runs far faster than `^.*a.*b.*$`.
        let open_start = p.first() == Some(&Piece::Star);
        let open_end = p.len() > 1 && p.last() == Some(&Piece::Star);
        let inner = &p[usize::from(open_start)..p.len() - usize::from(open_end)];
        let mut re = String::from(if open_start { "" } else { "^" });
        for piece in inner {
            match piece {
                Piece::Lit(s) => re.push_str(&regex::escape(s)),
                Piece::Star => re.push_str(".*"),
                Piece::One => re.push('.'),
            }
        }
        if !open_end {
            re.push('$');
        }
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

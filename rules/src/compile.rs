//! The rule compiler: YAML files → a [`RuleSet`], or every problem found
//! in them, each with file, line and message.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use parsers::Severity;
use parsers::{Format, Str};
use regex::RegexSet;

use crate::diag::{Diagnostic, Diags, suggest};
use crate::duration;
use crate::field::{Field, FieldType};
use crate::filter::{self, Filter, FilterCx, Op, RegexTable};
use crate::sigma::{self, SigmaReport, Verdict};
use crate::syntax::{self, Kind, Node};

/// Which orgs' events a rule sees (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Evaluated independently for every org (the default).
    PerOrg,
    /// Evaluated for one org only.
    Org(Str),
    /// One evaluation over all orgs; incidents belong to Super/Local.
    CrossOrg,
}

/// How the patterns of a rule combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// One pattern.
    Single,
    /// Any pattern.
    Or,
    /// All patterns within `within` of each other.
    And,
    /// Pattern 0 with no pattern 1 in the `within` before it.
    AndNot,
    /// Patterns in order, all within `within` of the first.
    Sequence,
    /// Pattern 0, then no pattern 1 within `within` after it.
    NotFollowedBy,
}

/// An aggregate over a pattern's window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Agg {
    Count,
    Distinct(Field),
    Sum(Field),
    Avg(Field),
    Min(Field),
    Max(Field),
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agg::Count => f.write_str("count"),
            Agg::Distinct(x) => write!(f, "count_distinct({x})"),
            Agg::Sum(x) => write!(f, "sum({x})"),
            Agg::Avg(x) => write!(f, "avg({x})"),
            Agg::Min(x) => write!(f, "min({x})"),
            Agg::Max(x) => write!(f, "max({x})"),
        }
    }
}

/// One threshold: `aggs[agg] op value`.
#[derive(Clone, Debug)]
pub(crate) struct Having {
    pub agg: usize,
    pub op: Op,
    pub value: f64,
}

/// What a pattern's window keeps per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// No aggregate: every passing event is a match.
    None,
    /// Only counts: the times of the last `threshold` events.
    Count { threshold: usize },
    /// Only one distinct count with a small threshold: each distinct value
    /// with its latest time.
    Distinct { threshold: usize },
    /// Anything else: every event in the window with its values.
    General,
}

/// A value a title can show from a pattern's match.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Output {
    /// A field of the (single) event.
    Field(Field),
    /// An aggregate's value when the pattern matched.
    Agg(usize),
}

/// Watch-list tests one pattern may make (each doubles the filter
/// evaluations on arrival; see [`Pattern::list_tests`]).
pub(crate) const MAX_LIST_TESTS: usize = 6;

/// A compiled sub-pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    pub name: String,
    pub filter: Filter,
    /// The filter consults watch lists, whose contents are only known when
    /// the event is released in event-time order: the (field, list) pairs
    /// it tests, at most [`MAX_LIST_TESTS`]. On arrival the filter is
    /// evaluated for every outcome of these tests; at release the lists
    /// are looked up and the precomputed answer read.
    pub list_tests: Vec<(Field, usize)>,
    pub group_by: Vec<Field>,
    /// The fields giving the rule's key, in the order of `Rule::key_names`.
    pub key_fields: Vec<Field>,
    /// An aggregating pattern whose key fields are its group_by: the key
    /// is the window's group, not extracted again per event.
    pub key_is_group: bool,
    pub window: i64,
    /// How many occurrences one event stands for (for `count`), e.g. the
    /// N of "message repeated N times"; 1 when absent.
    pub weight: Option<Field>,
    pub aggs: Vec<Agg>,
    pub having: Vec<Having>,
    pub kind: WindowKind,
    pub outputs: Vec<Output>,
}

/// A placeholder-expanded title.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Org,
    Rule,
    Severity,
    Key(usize),
    Output { pattern: usize, slot: usize },
}

/// A rule action.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Add the value of key field `key` to watch list `list` for `ttl`.
    WatchlistAdd { list: usize, key: usize, ttl: i64 },
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: Str,
    pub name: String,
    pub description: String,
    pub severity: Severity,
    pub scope: Scope,
    /// In the order the condition names them.
    pub patterns: Vec<Pattern>,
    pub condition: Condition,
    pub within: i64,
    pub key_names: Vec<String>,
    pub title: Vec<Piece>,
    pub suppress: i64,
    pub actions: Vec<Action>,
    /// Whether hits raise incidents; `false`: they only feed nested rules
    /// (a Sigma correlation's `generate: false` over a correlation).
    pub generate: bool,
    /// Who wrote the rule, its tags (e.g. ATT&CK `attack.t1110`) and
    /// reference links: shown with its incidents.
    pub author: String,
    pub tags: Vec<String>,
    pub references: Vec<String>,
    /// A stable hash of the rule's YAML (see [`node_hash`]).
    pub source_hash: u64,
}

/// Where a pattern lives: (rule, pattern).
pub(crate) type PatternRef = (u32, u16);

/// Which patterns can match an event, by its `event_type` or `format`.
/// Its keys come from rules, so a fast unkeyed hash is safe here.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub by_type: hashbrown::HashMap<Str, Vec<PatternRef>>,
    pub by_format: [Vec<PatternRef>; 5],
    /// Patterns whose filter requires an `event_type` prefix (e.g. a
    /// Sigma log source of `audit.*` events), tried when the type has it.
    pub by_prefix: Vec<(Str, Vec<PatternRef>)>,
    /// Patterns without a fixed event type or format: tried on every event.
    pub rest: Vec<PatternRef>,
}

impl Index {
    fn add(&mut self, at: PatternRef, filter: &Filter) {
        if let Some(types) = filter.required_event_types() {
            for t in types {
                self.by_type.entry(Str::from(t)).or_default().push(at);
            }
        } else if let Some(prefixes) = filter.required_event_type_prefixes() {
            for prefix in prefixes {
                match self.by_prefix.iter_mut().find(|(p, _)| p.as_str() == prefix) {
                    Some((_, refs)) => refs.push(at),
                    None => self.by_prefix.push((Str::from(prefix), vec![at])),
                }
            }
        } else if let Some(formats) = filter.required_formats() {
            for f in formats {
                self.by_format[format_slot(f)].push(at);
            }
        } else {
            self.rest.push(at);
        }
    }
}

pub(crate) fn format_slot(format: Format) -> usize {
    match format {
        Format::Rfc5424 => 0,
        Format::Rfc3164 => 1,
        Format::Cef => 2,
        Format::Leef => 3,
        Format::Raw => 4,
    }
}

/// A compiled, immutable set of rules, ready for an engine.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) regex_sets: Vec<(Field, RegexSet)>,
    pub(crate) lists: Vec<String>,
    pub(crate) index: Index,
}

/// A summary of one rule, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it detects.
    pub description: String,
    /// Its severity.
    pub severity: Severity,
    /// Its scope.
    pub scope: Scope,
}

impl RuleSet {
    /// The rules, in the order they were compiled.
    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| RuleInfo {
                id: r.id.to_string(),
                name: r.name.clone(),
                description: r.description.clone(),
                severity: r.severity,
                scope: r.scope.clone(),
            })
            .collect()
    }

    /// What an incident of rule `id` tells an analyst about the rule: its
    /// description, author, tags and reference links, as text (empty for
    /// an unknown rule).
    pub fn incident_description(&self, id: &str) -> String {
        let Some(rule) = self.rules.iter().find(|r| r.id == id) else { return String::new() };
        let mut out = rule.description.clone();
        let mut line = |label: &str, value: String| {
            if !value.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(label);
                out.push_str(&value);
            }
        };
        line("Author: ", rule.author.clone());
        line("Tags: ", rule.tags.join(", "));
        line("References: ", rule.references.join(" "));
        out
    }

    /// Rule `id`'s tags (empty for an unknown rule).
    pub fn rule_tags(&self, id: &str) -> Vec<String> {
        self.rules.iter().find(|r| r.id == id).map(|r| r.tags.clone()).unwrap_or_default()
    }

    /// The watch lists the rules use or fill.
    pub fn watch_lists(&self) -> &[String] {
        &self.lists
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A hash identifying the rules: each rule's YAML (keys, values and
    /// their order; not lines, comments or formatting) in the order they
    /// were compiled. The same in every process and build, so an engine
    /// checkpoint ([`crate::Engine::checkpoint`]) records the rule set it
    /// was made with and a restore with other rules is refused.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fnv::new();
        h.bytes(b"vigil-rules/1");
        h.u64(self.rules.len() as u64);
        for rule in &self.rules {
            h.u64(rule.source_hash);
        }
        h.finish()
    }
}

/// The built-in rule pack (`rules/packs/`), compiled.
pub fn builtin() -> RuleSet {
    let mut compiler = Compiler::new();
    for (name, text) in crate::PACK {
        compiler.add_source(name, text);
    }
    match compiler.finish() {
        Ok((set, _)) => set,
        // The pack is compiled in the crate's tests; an empty set keeps a
        // broken build from panicking at run time.
        Err(_) => RuleSet { rules: Vec::new(), regex_sets: Vec::new(), lists: Vec::new(), index: Index::default() },
    }
}

/// Compiles rule files into a [`RuleSet`], collecting every diagnostic.
#[derive(Default)]
pub struct Compiler {
    diagnostics: Vec<Diagnostic>,
    rules: Vec<(String, u32, Rule)>,
    regexes: RegexTable,
    lists: Vec<String>,
    /// Where each `incident.<id>` reference is, to check ids exist.
    references: Vec<(String, u32, String)>,
    list_adds: Vec<String>,
    list_uses: Vec<(String, u32, usize)>,
    /// Where Sigma rules' log sources are among vigil's events.
    log_sources: sigma::LogSources,
    /// What became of each Sigma rule met.
    sigma: Vec<SigmaReport>,
    /// Sigma detection rules compiled, which correlations may name.
    bases: Vec<sigma::Base>,
    /// Sigma documents waiting to be compiled together (filters and
    /// correlations need the rules they name): file, document, place in
    /// the report.
    pending: Vec<(String, Node, usize)>,
}

/// A rule as compiled (`None`: it has errors), with what it refers to
/// (rule ids, watch lists).
struct Compiled {
    rule: Option<Rule>,
    references: Vec<(u32, String)>,
    list_adds: Vec<String>,
    list_uses: Vec<(u32, usize)>,
}

/// Distinct-count thresholds up to this keep a plain list of values.
const MAX_SMALL_DISTINCT: usize = 64;

/// The largest count or distinct-count threshold: state per key stays bounded.
pub const MAX_THRESHOLD: usize = 100_000;

/// Files larger than this are refused.
const MAX_FILE_BYTES: u64 = 16 << 20;

impl Compiler {
    /// An empty compiler.
    pub fn new() -> Compiler {
        Compiler::default()
    }

    /// Compiles the rules of one text (one rule or a list of rules).
    /// `name` is used in diagnostics.
    pub fn add_source(&mut self, name: &str, text: &str) {
        let docs = match syntax::parse_documents(text) {
            Ok(docs) => docs,
            Err((line, message)) => {
                Diags::new(name, &mut self.diagnostics).error(line, format!("invalid YAML: {message}"));
                return;
            }
        };
        let mut items: Vec<&Node> = Vec::new();
        for root in &docs {
            match &root.kind {
                Kind::Seq(list) => items.extend(list.iter()),
                Kind::Map(_) => items.push(root),
                Kind::Null => {}
                _ => {
                    let message = format!("a rule file holds a rule or a list of rules, not {}", root.type_name());
                    Diags::new(name, &mut self.diagnostics).error(root.line, message);
                }
            }
        }
        if docs.iter().all(|d| d.kind == Kind::Null) {
            Diags::new(name, &mut self.diagnostics).warning(0, "no rules in this file");
            return;
        }
        for item in items {
            if sigma::is_sigma(item) {
                self.add_sigma(name, item);
                continue;
            }
            let mut out = Vec::new();
            let compiled = self.compile_tree(name, item, &mut out);
            self.diagnostics.append(&mut out);
            self.keep(name, item.line, compiled);
        }
    }

    /// Compiles one rule tree of file `name`, its diagnostics into `out`:
    /// the rule (if it compiled) and what it refers to.
    fn compile_tree(&mut self, name: &str, node: &Node, out: &mut Vec<Diagnostic>) -> Compiled {
        let mut diags = Diags::new(name, out);
        let mut cx = RuleCx {
            diags: &mut diags,
            regexes: &mut self.regexes,
            lists: &mut self.lists,
            references: Vec::new(),
            list_adds: Vec::new(),
            list_uses: Vec::new(),
        };
        let rule = compile_rule(node, &mut cx);
        let RuleCx { references, list_adds, list_uses, .. } = cx;
        Compiled { rule, references, list_adds, list_uses }
    }

    /// Adds what a rule of file `name` (at `line`) refers to, and the rule
    /// if it compiled, to the set.
    fn keep(&mut self, name: &str, line: u32, c: Compiled) {
        self.references.extend(c.references.into_iter().map(|(line, id)| (name.to_owned(), line, id)));
        self.list_adds.extend(c.list_adds);
        self.list_uses.extend(c.list_uses.into_iter().map(|(line, list)| (name.to_owned(), line, list)));
        if let Some(rule) = c.rule {
            self.rules.push((name.to_owned(), line, rule));
        }
    }

    /// Uses `sources` to map Sigma rules' log sources (default: the
    /// built-in mappings).
    pub fn set_log_sources(&mut self, sources: sigma::LogSources) {
        self.log_sources = sources;
    }

    /// What became of each Sigma rule added so far, in order (Sigma
    /// documents are compiled together, here or at [`Compiler::finish`]).
    pub fn sigma_report(&mut self) -> &[SigmaReport] {
        self.settle_sigma();
        &self.sigma
    }

    /// Takes Sigma document `doc` of file `name` into the report; it is
    /// compiled with the others by [`Compiler::settle_sigma`].
    fn add_sigma(&mut self, name: &str, doc: &Node) {
        let at = self.sigma.len();
        self.sigma.push(SigmaReport {
            file: name.to_owned(),
            line: doc.line,
            id: doc.get("id").and_then(Node::as_text).unwrap_or_default(),
            title: doc.get("title").and_then(Node::as_text).unwrap_or_default(),
            logsource: sigma::logsource_label(doc),
            verdict: Verdict::Compiled,
        });
        self.pending.push((name.to_owned(), doc.clone(), at));
    }

    /// Compiles the Sigma documents added so far: detection rules with the
    /// filter documents that name them, then correlations over the rules
    /// (and correlations) they name. A rule that cannot be compiled is
    /// reported (a warning, and in [`Compiler::sigma_report`]) and leaves
    /// nothing behind; a filter that applies to no compiled rule is
    /// reported as not applicable.
    fn settle_sigma(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let (filters, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, d, _)| sigma::is_filter(d));
        let (correlations, detections): (Vec<_>, Vec<_>) =
            rest.into_iter().partition(|(_, d, _)| sigma::is_correlation(d));
        let mut applied = vec![0usize; filters.len()];
        // The watch lists vigil rules fill (for `expand`), taken once.
        let lists = self.list_adds.clone();
        for (name, doc, at) in detections {
            let mine: Vec<usize> = (0..filters.len()).filter(|i| sigma::filter_applies(&filters[*i].1, &doc)).collect();
            let filter_docs: Vec<&Node> = mine.iter().map(|i| &filters[*i].1).collect();
            let env = sigma::Env { sources: &self.log_sources, lists: &lists, filters: &filter_docs };
            let verdict = match sigma::translate(&doc, &env) {
                Err(verdict) => verdict,
                Ok(translated) => match self.compile_sigma(&name, doc.line, &translated.rule) {
                    Ok(()) => {
                        mine.iter().for_each(|i| applied[*i] += 1);
                        self.bases.push(sigma::Base {
                            id: self.sigma[at].id.clone(),
                            name: doc.get("name").and_then(Node::as_text),
                            filter: translated.filter,
                            source: translated.source,
                            logsource: self.sigma[at].logsource.clone(),
                            correlation: false,
                        });
                        Verdict::Compiled
                    }
                    Err(verdict) => verdict,
                },
            };
            self.settle_verdict(&name, doc.line, at, verdict);
        }
        for ((name, doc, at), n) in filters.into_iter().zip(applied) {
            let verdict = if n > 0 {
                Verdict::Compiled
            } else {
                Verdict::NotApplicable("the filter names no Sigma rule of this set that compiled".into())
            };
            self.settle_verdict(&name, doc.line, at, verdict);
        }
        // Correlations in the order their rules become available: one that
        // names another waits for it (chaining).
        let mut waiting = correlations;
        loop {
            let ids: Vec<String> = waiting
                .iter()
                .flat_map(|(_, d, _)| [d.get("id"), d.get("name")])
                .flatten()
                .filter_map(Node::as_text)
                .collect();
            let (ready, blocked): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting)
                .into_iter()
                .partition(|(_, d, _)| !sigma::correlation_names(d).iter().any(|n| ids.contains(n)));
            if ready.is_empty() {
                for (name, doc, at) in blocked {
                    let why = "it names a correlation that names it back (a cycle)".to_owned();
                    self.settle_verdict(&name, doc.line, at, Verdict::Unsupported(why));
                }
                break;
            }
            for (name, doc, at) in ready {
                let verdict = match sigma::translate_correlation(&doc, &self.bases, &self.log_sources) {
                    Err(verdict) => verdict,
                    Ok(t) => match self.compile_sigma(&name, doc.line, &t.rule) {
                        Ok(()) => {
                            if !sigma::generates(&doc) {
                                // Detection rules are inlined into the
                                // correlation; correlations keep running
                                // for it, without incidents of their own.
                                let (inner, plain): (Vec<_>, Vec<_>) = t.used.into_iter().partition(|(_, c)| *c);
                                self.rules.retain(|(_, _, r)| !plain.iter().any(|(u, _)| r.id == u.as_str()));
                                for (_, _, r) in &mut self.rules {
                                    if inner.iter().any(|(u, _)| r.id == u.as_str()) {
                                        r.generate = false;
                                    }
                                }
                            }
                            self.bases.push(t.base);
                            Verdict::Compiled
                        }
                        Err(verdict) => verdict,
                    },
                };
                self.settle_verdict(&name, doc.line, at, verdict);
            }
            if blocked.is_empty() {
                break;
            }
            waiting = blocked;
        }
    }

    /// Compiles the vigil rule tree of a Sigma rule, keeping it if it
    /// compiles without errors and leaving nothing behind otherwise.
    fn compile_sigma(&mut self, name: &str, line: u32, tree: &Node) -> Result<(), Verdict> {
        let saved = self.regexes.clone();
        let mut scratch = Vec::new();
        let compiled = self.compile_tree(name, tree, &mut scratch);
        let errors: Vec<String> = scratch.iter().filter(|d| d.is_error()).map(|d| d.message.clone()).collect();
        match compiled {
            compiled @ Compiled { rule: Some(_), .. } if errors.is_empty() => {
                self.keep(name, line, compiled);
                self.diagnostics.extend(scratch);
                Ok(())
            }
            _ => {
                self.regexes = saved;
                Err(Verdict::Unsupported(if errors.is_empty() {
                    "it does not compile".into()
                } else {
                    errors.join("; ")
                }))
            }
        }
    }

    /// Records what became of Sigma rule `at` of the report, warning when
    /// it is not loaded.
    fn settle_verdict(&mut self, file: &str, line: u32, at: usize, verdict: Verdict) {
        let Some(entry) = self.sigma.get_mut(at) else { return };
        if let Verdict::NotApplicable(why) | Verdict::Unsupported(why) = &verdict {
            let title = if entry.title.is_empty() { entry.id.clone() } else { entry.title.clone() };
            Diags::new(file, &mut self.diagnostics).warning(line, format!("Sigma rule '{title}' not loaded: {why}"));
        }
        entry.verdict = verdict;
    }

    /// Compiles a file, or every `.yaml`/`.yml` file under a directory (in
    /// name order). Unreadable files become diagnostics.
    pub fn add_path(&mut self, path: &Path) {
        let mut files = Vec::new();
        collect_files(path, &mut files, &mut self.diagnostics);
        for file in files {
            let name = file.display().to_string();
            match read_limited(&file) {
                Ok(text) => self.add_source(&name, &text),
                Err(message) => Diags::new(&name, &mut self.diagnostics).error(0, message),
            }
        }
    }

    /// Every diagnostic so far.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The rule set and its warnings, or every diagnostic if any is an error.
    pub fn finish(mut self) -> Result<(RuleSet, Vec<Diagnostic>), Vec<Diagnostic>> {
        self.settle_sigma();
        let mut ids: HashMap<Str, (String, u32)> = HashMap::new();
        for (file, line, rule) in &self.rules {
            if let Some((first_file, first_line)) = ids.get(&rule.id) {
                let message = format!("duplicate rule id '{}' (first defined at {first_file}:{first_line})", rule.id);
                Diags::new(file, &mut self.diagnostics).error(*line, message);
            } else {
                ids.insert(rule.id.clone(), (file.clone(), *line));
            }
        }
        for (file, line, id) in &self.references {
            if !ids.contains_key(id.as_str()) {
                let hint = suggest(id, ids.keys().map(|k| k.as_str()))
                    .map_or_else(String::new, |s| format!(" (did you mean 'incident.{s}'?)"));
                let message = format!("'incident.{id}' names no rule in this set{hint}");
                Diags::new(file, &mut self.diagnostics).error(*line, message);
            }
        }
        for (file, line, list) in &self.list_uses {
            let name = &self.lists[*list];
            if !self.list_adds.contains(name) {
                let message = format!("no rule in this set adds to watch list '{name}', so it stays empty");
                Diags::new(file, &mut self.diagnostics).warning(*line, message);
            }
        }
        let regex_sets = match std::mem::take(&mut self.regexes).build() {
            Ok(sets) => sets,
            Err(message) => {
                Diags::new("<rule set>", &mut self.diagnostics).error(0, message);
                Vec::new()
            }
        };
        if self.diagnostics.iter().any(Diagnostic::is_error) {
            return Err(self.diagnostics);
        }
        let rules: Vec<Rule> = self.rules.into_iter().map(|(_, _, rule)| rule).collect();
        let mut index = Index::default();
        for (r, rule) in rules.iter().enumerate() {
            for (p, pattern) in rule.patterns.iter().enumerate() {
                let at = (u32::try_from(r).unwrap_or(u32::MAX), u16::try_from(p).unwrap_or(u16::MAX));
                index.add(at, &pattern.filter);
            }
        }
        Ok((RuleSet { rules, regex_sets, lists: self.lists, index }, self.diagnostics))
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    let name = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Diags::new(&name, diagnostics).error(0, format!("cannot read: {e}")),
    };
    if !meta.is_dir() {
        out.push(path.to_owned());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return Diags::new(&name, diagnostics).error(0, format!("cannot list directory: {e}")),
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let is_rule_file = child.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if child.is_dir() || is_rule_file {
            collect_files(&child, out, diagnostics);
        }
    }
}

fn read_limited(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    #[allow(clippy::disallowed_methods)] // bounded by take
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file is larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

struct RuleCx<'a, 'd> {
    diags: &'a mut Diags<'d>,
    regexes: &'a mut RegexTable,
    lists: &'a mut Vec<String>,
    references: Vec<(u32, String)>,
    list_adds: Vec<String>,
    list_uses: Vec<(u32, usize)>,
}

const RULE_KEYS: [&str; 16] = [
    "id",
    "name",
    "description",
    "author",
    "tags",
    "references",
    "generate",
    "severity",
    "scope",
    "patterns",
    "condition",
    "within",
    "join",
    "title",
    "suppress",
    "actions",
];

const PATTERN_KEYS: [&str; 5] = ["filter", "group_by", "window", "having", "weight"];

/// The default suppression window: one incident per rule and key per hour
/// of continued activity.
pub const DEFAULT_SUPPRESS: i64 = 3600 * duration::SEC;

fn text_value(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<String> {
    match &node.kind {
        Kind::Str(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => {
            diags.error(node.line, format!("{what} must be non-empty text, not {}", node.type_name()));
            None
        }
    }
}

/// A list of short texts (tags, links): at most 64, each up to 1,024 bytes.
fn text_list(node: &Node, what: &str, diags: &mut Diags<'_>) -> Vec<String> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_text() {
            Some(t) if !t.trim().is_empty() && t.len() <= 1024 && out.len() < 64 => out.push(t.trim().to_owned()),
            _ => diags.error(item.line, format!("{what} is a list of at most 64 texts of up to 1,024 bytes")),
        }
    }
    out
}

fn duration_value(node: &Node, what: &str, diags: &mut Diags<'_>) -> Option<i64> {
    let text = match &node.kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(0) => "0".to_owned(),
        Kind::Int(i) => {
            diags.error(node.line, format!("{what} needs a unit: write {i}s, {i}m or {i}h"));
            return None;
        }
        _ => {
            diags.error(node.line, format!("{what} must be a duration like 60s, not {}", node.type_name()));
            return None;
        }
    };
    match duration::parse(&text) {
        Ok(nanos) => Some(nanos),
        Err(message) => {
            diags.error(node.line, format!("{what}: {message}"));
            None
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn compile_rule(node: &Node, cx: &mut RuleCx<'_, '_>) -> Option<Rule> {
    let Some(entries) = node.entries() else {
        cx.diags.error(node.line, format!("a rule must be a mapping, not {}", node.type_name()));
        return None;
    };
    let errors_before = cx.diags.error_count();
    for (key, _) in entries {
        let name = key.as_text().unwrap_or_default();
        if !RULE_KEYS.contains(&name.as_str()) {
            let hint = suggest(&name, RULE_KEYS).map_or_else(String::new, |s| format!(" (did you mean '{s}'?)"));
            cx.diags.error(key.line, format!("unknown rule key '{name}'{hint}"));
        }
    }
    let id = match node.get("id") {
        Some(n) => text_value(n, "id", cx.diags).filter(|id| {
            let ok = valid_id(id);
            if !ok {
                cx.diags.error(n.line, format!("rule id '{id}' may only use letters, digits, '.', '_' and '-'"));
            }
            ok
        }),
        None => {
            cx.diags.error(node.line, "rule has no id");
            None
        }
    };
    let name = node.get("name").and_then(|n| text_value(n, "name", cx.diags));
    let description = node.get("description").and_then(|n| text_value(n, "description", cx.diags)).unwrap_or_default();
    let author = node.get("author").and_then(|n| text_value(n, "author", cx.diags)).unwrap_or_default();
    let tags = node.get("tags").map(|n| text_list(n, "tags", cx.diags)).unwrap_or_default();
    let references = node.get("references").map(|n| text_list(n, "references", cx.diags)).unwrap_or_default();
    let generate = match node.get("generate").map(|n| (n, &n.kind)) {
        None => true,
        Some((_, Kind::Bool(b))) => *b,
        Some((n, _)) => {
            cx.diags.error(n.line, "generate is true or false");
            true
        }
    };
    let severity = match node.get("severity") {
        None => Severity::Medium,
        Some(n) => {
            let text = n.as_text().unwrap_or_default();
            Severity::parse(&text).unwrap_or_else(|| {
                cx.diags.error(n.line, format!("severity is one of {}, not '{text}'", Severity::NAMES.join(", ")));
                Severity::Medium
            })
        }
    };
    let scope = node.get("scope").map_or(Scope::PerOrg, |n| compile_scope(n, cx.diags));
    let within = node.get("within").and_then(|n| duration_value(n, "within", cx.diags));
    let suppress =
        node.get("suppress").map_or(Some(DEFAULT_SUPPRESS), |n| duration_value(n, "suppress", cx.diags)).unwrap_or(0);

    // Patterns, by name.
    let mut defined: Vec<(String, u32, &Node)> = Vec::new();
    match node.get("patterns") {
        None => cx.diags.error(node.line, "rule has no patterns"),
        Some(p) => match p.entries() {
            Some(entries) if !entries.is_empty() => {
                for (key, value) in entries {
                    match key.as_text() {
                        Some(n) if valid_id(&n) => defined.push((n, key.line, value)),
                        _ => cx.diags.error(key.line, "a pattern name may only use letters, digits, '.', '_' and '-'"),
                    }
                }
            }
            _ => cx.diags.error(p.line, "patterns must be a mapping of pattern names to patterns"),
        },
    }
    let names: Vec<&str> = defined.iter().map(|(n, _, _)| n.as_str()).collect();

    // The condition decides the patterns' order.
    let (condition, order) = match node.get("condition") {
        Some(c) => compile_condition(c, &names, cx.diags)?,
        None if names.len() == 1 => (Condition::Single, vec![0]),
        None => {
            cx.diags.error(node.line, format!("rule has {} patterns but no condition combining them", names.len()));
            return None;
        }
    };
    for (i, (pattern, line, _)) in defined.iter().enumerate() {
        if !order.contains(&i) {
            cx.diags.error(*line, format!("pattern '{pattern}' is not used by the condition"));
        }
    }
    let temporal = !matches!(condition, Condition::Single | Condition::Or);
    let within = match (temporal, within) {
        (true, None) => {
            let line = node.get("condition").map_or(node.line, |c| c.line);
            cx.diags.error(line, "window missing: a condition over several patterns needs 'within: DURATION'");
            0
        }
        (true, Some(w)) if w <= 0 => {
            cx.diags.error(node.get("within").map_or(0, |n| n.line), "within must be longer than 0");
            0
        }
        (false, Some(_)) => {
            cx.diags.warning(node.get("within").map_or(0, |n| n.line), "within has no effect on this condition");
            0
        }
        (_, within) => within.unwrap_or(0),
    };

    let mut patterns = Vec::new();
    for &i in &order {
        let (pattern_name, line, body) = &defined[i];
        patterns.push(compile_pattern(pattern_name, *line, body, cx));
    }
    let patterns: Vec<Pattern> = patterns.into_iter().flatten().collect();
    if patterns.len() != order.len() {
        return None;
    }
    let mut patterns = patterns;
    let key_names = compile_join(node, condition, &mut patterns, cx.diags);

    let name = name.unwrap_or_else(|| id.clone().unwrap_or_default());
    let title = match node.get("title") {
        Some(t) => text_value(t, "title", cx.diags)
            .map(|text| compile_title(&text, t.line, &key_names, &mut patterns, cx.diags)),
        None => {
            let mut pieces = vec![Piece::Text(name.clone())];
            for (i, key) in key_names.iter().enumerate() {
                pieces.push(Piece::Text(format!("{} {key}=", if i == 0 { ":" } else { "," })));
                pieces.push(Piece::Key(i));
            }
            Some(pieces)
        }
    }
    .unwrap_or_default();
    for p in &mut patterns {
        p.key_is_group = p.kind != WindowKind::None && p.key_fields == p.group_by;
    }
    if matches!(condition, Condition::AndNot | Condition::NotFollowedBy)
        && title.iter().any(|p| matches!(p, Piece::Output { pattern: 1, .. }))
    {
        let line = node.get("title").map_or(node.line, |t| t.line);
        cx.diags.error(
            line,
            format!("title shows values of pattern '{}', which is absent when the rule fires", patterns[1].name),
        );
    }
    let actions = node.get("actions").map(|a| compile_actions(a, &key_names, cx)).unwrap_or_default();

    // Nested rules and watch lists, checked against the whole set later.
    for pattern in &patterns {
        if let Some(types) = pattern.filter.required_event_types() {
            for t in types {
                if let Some(rule) = t.strip_prefix("incident.") {
                    cx.references.push((node.line, rule.to_owned()));
                    if Some(rule) == id.as_deref() {
                        cx.diags
                            .warning(node.line, "the rule matches its own incidents; nesting stops at the depth limit");
                    }
                }
            }
        }
    }
    if cx.diags.error_count() > errors_before {
        return None;
    }
    Some(Rule {
        id: Str::from(id?),
        name,
        description,
        severity,
        scope,
        patterns,
        condition,
        within,
        key_names,
        title,
        suppress,
        actions,
        generate,
        author,
        tags,
        references,
        source_hash: node_hash(node),
    })
}

/// FNV-1a (64 bit): a hash that is the same in every process and build,
/// unlike std's randomly keyed one.
pub(crate) struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash of a rule's YAML tree: its keys, values and their order, not
/// its lines, comments or formatting, so moving a rule within a file or
/// re-indenting it keeps the hash while any change of meaning alters it.
fn node_hash(node: &Node) -> u64 {
    fn feed(node: &Node, h: &mut Fnv) {
        match &node.kind {
            Kind::Map(entries) => {
                h.bytes(b"m");
                h.u64(entries.len() as u64);
                for (k, v) in entries {
                    feed(k, h);
                    feed(v, h);
                }
            }
            Kind::Seq(items) => {
                h.bytes(b"s");
                h.u64(items.len() as u64);
                for item in items {
                    feed(item, h);
                }
            }
            Kind::Str(s) => {
                h.bytes(b"t");
                h.u64(s.len() as u64);
                h.bytes(s.as_bytes());
            }
            Kind::Int(i) => {
                h.bytes(b"i");
                h.bytes(&i.to_le_bytes());
            }
            Kind::Float(f) => {
                h.bytes(b"f");
                h.u64(f.to_bits());
            }
            Kind::Bool(b) => h.bytes(if *b { b"T" } else { b"F" }),
            Kind::Null => h.bytes(b"n"),
        }
    }
    let mut h = Fnv::new();
    feed(node, &mut h);
    h.finish()
}

fn compile_scope(node: &Node, diags: &mut Diags<'_>) -> Scope {
    let bad = |diags: &mut Diags<'_>| {
        diags.error(node.line, "scope is 'per-org', 'cross-org' or 'org: NAME'");
        Scope::PerOrg
    };
    if let Some(org) = node.get("org") {
        return match org.as_text() {
            Some(name) if valid_org(&name) => Scope::Org(Str::from(name.trim())),
            _ => bad(diags),
        };
    }
    match node.as_text().as_deref().map(str::trim) {
        Some("per-org") => Scope::PerOrg,
        Some("cross-org") => Scope::CrossOrg,
        Some(text) => match text.strip_prefix("org:") {
            Some(name) if valid_org(name) => Scope::Org(Str::from(name.trim())),
            _ => bad(diags),
        },
        None => bad(diags),
    }
}

fn valid_org(name: &str) -> bool {
    let n = name.trim().chars().count();
    (1..=128).contains(&n)
}

fn compile_condition(node: &Node, names: &[&str], diags: &mut Diags<'_>) -> Option<(Condition, Vec<usize>)> {
    let Some(text) = node.as_text() else {
        diags.error(node.line, format!("condition must be text like 'a followed by b', not {}", node.type_name()));
        return None;
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut operands = Vec::new();
    let mut operators = Vec::new();
    let mut i = 0;
    let mut expect_operand = true;
    while i < words.len() {
        let word = words[i];
        if expect_operand {
            operands.push((word, i));
            i += 1;
        } else {
            let rest = &words[i..];
            let (op, len) = match rest {
                ["followed", "by", ..] => (Condition::Sequence, 2),
                ["not", "followed", "by", ..] => (Condition::NotFollowedBy, 3),
                ["and", "not", ..] => (Condition::AndNot, 2),
                ["and", ..] => (Condition::And, 1),
                ["or", ..] => (Condition::Or, 1),
                _ => {
                    diags.error(
                        node.line,
                        format!(
                            "condition '{text}': expected 'and', 'or', 'and not', 'followed by' or 'not followed by' before '{word}'"
                        ),
                    );
                    return None;
                }
            };
            operators.push(op);
            i += len;
        }
        expect_operand = !expect_operand;
    }
    if operands.is_empty() || expect_operand {
        diags.error(node.line, format!("condition '{text}' is incomplete: it must end with a pattern name"));
        return None;
    }
    let mut order = Vec::new();
    let mut ok = true;
    for (word, _) in &operands {
        match names.iter().position(|n| n == word) {
            Some(p) if order.contains(&p) => {
                diags.error(node.line, format!("condition '{text}' names pattern '{word}' twice"));
                ok = false;
            }
            Some(p) => order.push(p),
            None => {
                let hint = suggest(word, names.iter().copied()).map_or_else(
                    || format!("; patterns are {}", names.join(", ")),
                    |s| format!(" (did you mean '{s}'?)"),
                );
                diags.error(node.line, format!("unknown sub-pattern '{word}' in condition{hint}"));
                ok = false;
            }
        }
    }
    let condition = match operators.first() {
        None => Condition::Single,
        Some(first) => {
            if operators.iter().any(|o| o != first) {
                diags.error(
                    node.line,
                    format!("condition '{text}' mixes operators; use one operator per rule and nest rules for more"),
                );
                return None;
            }
            if matches!(first, Condition::AndNot | Condition::NotFollowedBy) && operands.len() != 2 {
                diags
                    .error(node.line, format!("condition '{text}': 'and not' and 'not followed by' take two patterns"));
                return None;
            }
            *first
        }
    };
    ok.then_some((condition, order))
}

fn compile_pattern(name: &str, line: u32, node: &Node, cx: &mut RuleCx<'_, '_>) -> Option<Pattern> {
    let errors_before = cx.diags.error_count();
    let Some(entries) = node.entries() else {
        cx.diags.error(line, format!("pattern '{name}' must be a mapping with a filter, not {}", node.type_name()));
        return None;
    };
    for (key, _) in entries {
        let k = key.as_text().unwrap_or_default();
        if !PATTERN_KEYS.contains(&k.as_str()) {
            let hint = suggest(&k, PATTERN_KEYS).map_or_else(String::new, |s| format!(" (did you mean '{s}'?)"));
            cx.diags.error(key.line, format!("unknown pattern key '{k}'{hint}"));
        }
    }
    let filter = match node.get("filter") {
        Some(f) => {
            let mut fcx = FilterCx { diags: cx.diags, regexes: cx.regexes, lists: cx.lists, used: Vec::new() };
            filter::compile(f, &mut fcx)
        }
        None => {
            cx.diags.error(line, format!("pattern '{name}' has no filter"));
            Filter::All(Vec::new())
        }
    };
    collect_list_uses(&filter, line, &mut cx.list_uses);
    let group_by = match node.get("group_by") {
        None => Vec::new(),
        Some(g) => {
            let items: Vec<&Node> = match &g.kind {
                Kind::Seq(items) => items.iter().collect(),
                _ => vec![g],
            };
            let mut fields = Vec::new();
            for item in items {
                match item.as_text() {
                    Some(f) => {
                        if let Some(field) = filter::parse_field(&f, item.line, cx.diags) {
                            if fields.contains(&field) {
                                cx.diags.error(item.line, format!("group_by names {field} twice"));
                            }
                            fields.push(field);
                        }
                    }
                    None => cx.diags.error(item.line, "group_by takes field names"),
                }
            }
            fields
        }
    };
    let window = node.get("window").and_then(|w| duration_value(w, "window", cx.diags));
    let weight = node.get("weight").and_then(|w| match w.as_text() {
        Some(f) => {
            let field = filter::parse_field(&f, w.line, cx.diags)?;
            if matches!(field.field_type(), FieldType::Text | FieldType::Ip) {
                cx.diags.error(w.line, format!("type mismatch: weight needs a numeric field; {field} is not a number"));
                return None;
            }
            Some(field)
        }
        None => {
            cx.diags.error(w.line, "weight takes the name of a numeric field");
            None
        }
    });
    let mut aggs = Vec::new();
    let mut having = Vec::new();
    if let Some(h) = node.get("having") {
        let items: Vec<&Node> = match &h.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![h],
        };
        for item in items {
            if let Some(threshold) = compile_having(item, &mut aggs, cx.diags) {
                having.push(threshold);
            }
        }
    }
    let has_having = node.get("having").is_some();
    let window = match (has_having, window) {
        (true, None) => {
            let at = node.get("having").map_or(line, |h| h.line);
            cx.diags.error(at, format!("window missing: pattern '{name}' has 'having' but no 'window: DURATION'"));
            0
        }
        (true, Some(w)) if w <= 0 => {
            cx.diags.error(node.get("window").map_or(line, |n| n.line), "window must be longer than 0");
            0
        }
        (false, Some(_)) => {
            let at = node.get("window").map_or(line, |n| n.line);
            cx.diags.warning(at, format!("window of pattern '{name}' has no effect without 'having'"));
            0
        }
        (_, w) => w.unwrap_or(0),
    };
    let list_tests = filter.list_tests();
    if list_tests.len() > MAX_LIST_TESTS {
        cx.diags.error(
            line,
            format!(
                "pattern '{name}' tests {} different field and watch-list pairs; at most {MAX_LIST_TESTS} are supported",
                list_tests.len()
            ),
        );
    }
    if cx.diags.error_count() > errors_before {
        return None;
    }
    let mut pattern = Pattern {
        name: name.to_owned(),
        list_tests,
        filter,
        group_by,
        key_fields: Vec::new(),
        key_is_group: false,
        window,
        weight,
        aggs,
        having,
        kind: WindowKind::None,
        outputs: Vec::new(),
    };
    pattern.kind = window_kind(&pattern);
    Some(pattern)
}

fn collect_list_uses(filter: &Filter, line: u32, out: &mut Vec<(u32, usize)>) {
    match filter {
        Filter::All(items) | Filter::Any(items) => items.iter().for_each(|f| collect_list_uses(f, line, out)),
        Filter::Not(inner) => collect_list_uses(inner, line, out),
        Filter::Test(_, filter::Test::InList(list)) => out.push((line, *list)),
        Filter::Test(..) => {}
    }
}

/// Chooses the smallest window state that can answer the pattern's aggregates.
pub(crate) fn window_kind(pattern: &Pattern) -> WindowKind {
    if pattern.having.is_empty() {
        return WindowKind::None;
    }
    // Count and distinct thresholds are always >= or > (checked when compiling).
    let threshold = pattern
        .having
        .iter()
        .map(|h| if h.op == Op::Gt { h.value.floor() as usize + 1 } else { h.value.ceil().max(1.0) as usize })
        .max()
        .unwrap_or(1);
    match pattern.aggs.as_slice() {
        aggs if aggs.iter().all(|a| *a == Agg::Count) => WindowKind::Count { threshold },
        [Agg::Distinct(_)] if threshold <= MAX_SMALL_DISTINCT => WindowKind::Distinct { threshold },
        _ => WindowKind::General,
    }
}

fn parse_agg(text: &str) -> Result<Agg, String> {
    let text = text.trim();
    if text == "count" {
        return Ok(Agg::Count);
    }
    let Some((func, rest)) = text.split_once('(') else {
        return Err(format!(
            "unknown aggregate '{text}': use count, count_distinct(F), sum(F), avg(F), min(F) or max(F)"
        ));
    };
    let Some(arg) = rest.strip_suffix(')') else {
        return Err(format!("aggregate '{text}' is missing ')'"));
    };
    let func = func.trim();
    if !["count_distinct", "sum", "avg", "min", "max", "count"].contains(&func) {
        return Err(format!("unknown aggregate '{func}': use count, count_distinct, sum, avg, min or max"));
    }
    let field = Field::parse(arg.trim()).ok_or_else(|| {
        let hint = suggest(arg.trim(), Field::NAMES).map_or_else(String::new, |s| format!(" (did you mean '{s}'?)"));
        format!("unknown field '{}'{hint} in '{text}'", arg.trim())
    })?;
    let numeric = |field: Field, make: fn(Field) -> Agg| {
        if matches!(field.field_type(), FieldType::Text | FieldType::Ip) {
            Err(format!("type mismatch: {func} needs a numeric field; {field} is not a number"))
        } else {
            Ok(make(field))
        }
    };
    match func {
        "count_distinct" => Ok(Agg::Distinct(field)),
        "sum" => numeric(field, Agg::Sum),
        "avg" => numeric(field, Agg::Avg),
        "min" => numeric(field, Agg::Min),
        "max" => numeric(field, Agg::Max),
        "count" => Err(format!("'{text}': write count_distinct({arg}) to count distinct values")),
        other => Err(format!("unknown aggregate '{other}': use count, count_distinct, sum, avg, min or max")),
    }
}

fn agg_slot(aggs: &mut Vec<Agg>, agg: Agg) -> usize {
    match aggs.iter().position(|a| *a == agg) {
        Some(i) => i,
        None => {
            aggs.push(agg);
            aggs.len() - 1
        }
    }
}

fn compile_having(node: &Node, aggs: &mut Vec<Agg>, diags: &mut Diags<'_>) -> Option<Having> {
    let Some(text) = node.as_text() else {
        diags.error(node.line, format!("having takes text like 'count >= 5', not {}", node.type_name()));
        return None;
    };
    let ops = [(">=", Op::Gte), ("<=", Op::Lte), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)];
    let Some((at, symbol, op)) =
        ops.iter().filter_map(|(s, o)| text.find(s).map(|at| (at, *s, *o))).min_by_key(|(at, ..)| *at)
    else {
        diags.error(node.line, format!("having '{text}' has no comparison: write e.g. 'count >= 5'"));
        return None;
    };
    let agg = match parse_agg(&text[..at]) {
        Ok(agg) => agg,
        Err(message) => {
            diags.error(node.line, message);
            return None;
        }
    };
    let number = text[at + symbol.len()..].trim();
    let Ok(value) = number.parse::<f64>() else {
        diags.error(node.line, format!("having '{text}': '{number}' is not a number"));
        return None;
    };
    if !value.is_finite() {
        diags.error(node.line, format!("having '{text}': the threshold must be finite"));
        return None;
    }
    if matches!(agg, Agg::Count | Agg::Distinct(_)) {
        if !matches!(op, Op::Gte | Op::Gt) {
            diags.error(
                node.line,
                format!("having '{text}': {agg} can only be compared with >= or > (a window fires when it reaches a threshold)"),
            );
            return None;
        }
        if value > MAX_THRESHOLD as f64 {
            diags.error(node.line, format!("having '{text}': thresholds above {MAX_THRESHOLD} are not supported"));
            return None;
        }
    }
    Some(Having { agg: agg_slot(aggs, agg), op, value })
}

/// Resolves `join` into each pattern's key fields and returns the key names.
fn compile_join(node: &Node, condition: Condition, patterns: &mut [Pattern], diags: &mut Diags<'_>) -> Vec<String> {
    let Some(join) = node.get("join") else {
        if condition == Condition::Single || condition == Condition::Or {
            let names: Vec<String> = patterns[0].group_by.iter().map(ToString::to_string).collect();
            for p in patterns.iter_mut() {
                if p.group_by.iter().map(ToString::to_string).collect::<Vec<_>>() != names {
                    diags.error(
                        node.line,
                        format!("patterns combined with 'or' need the same group_by, or a join ('{}' differs)", p.name),
                    );
                }
                p.key_fields = p.group_by.clone();
            }
            return names;
        }
        return Vec::new();
    };
    if condition == Condition::Single {
        diags.warning(join.line, "join has no effect on a rule with one pattern; use group_by");
    }
    let items: Vec<&Node> = match &join.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![join],
    };
    let mut key_names = Vec::new();
    for item in items {
        // Either one field for every pattern, or pattern → field.
        let per_pattern: Vec<(usize, String)> = if let Some(entries) = item.entries() {
            let mut out = Vec::new();
            for (k, v) in entries {
                let (Some(p), Some(f)) = (k.as_text(), v.as_text()) else {
                    diags.error(k.line, "a join entry maps pattern names to field names");
                    continue;
                };
                match patterns.iter().position(|x| x.name == p) {
                    Some(i) => out.push((i, f)),
                    None => diags.error(k.line, format!("unknown sub-pattern '{p}' in join")),
                }
            }
            if out.len() != patterns.len() {
                diags.error(item.line, "a join entry must name a field for every pattern of the condition");
                continue;
            }
            out
        } else if let Some(f) = item.as_text() {
            (0..patterns.len()).map(|i| (i, f.clone())).collect()
        } else {
            diags.error(item.line, "join takes field names, or mappings of pattern names to field names");
            continue;
        };
        let mut name = None;
        let mut resolved = vec![None; patterns.len()];
        for (i, f) in per_pattern {
            let Some(field) = filter::parse_field(&f, item.line, diags) else { continue };
            let pattern = &patterns[i];
            if pattern.kind != WindowKind::None && !pattern.group_by.contains(&field) {
                diags.error(
                    item.line,
                    format!(
                        "join field {field} is not in the group_by of pattern '{}': an aggregate has no single value of other fields",
                        pattern.name
                    ),
                );
                continue;
            }
            name.get_or_insert_with(|| field.to_string());
            resolved[i] = Some(field);
        }
        if let Some(name) = name
            && resolved.iter().all(Option::is_some)
        {
            key_names.push(name);
            for (pattern, field) in patterns.iter_mut().zip(resolved.into_iter().flatten()) {
                pattern.key_fields.push(field);
            }
        }
    }
    key_names
}

fn compile_title(
    text: &str,
    line: u32,
    key_names: &[String],
    patterns: &mut [Pattern],
    diags: &mut Diags<'_>,
) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            diags.error(line, format!("title has an unclosed '{{' in '{text}'"));
            return pieces;
        };
        let name = rest[open + 1..open + close].trim();
        if let Some(piece) = resolve_placeholder(name, key_names, patterns, line, diags) {
            pieces.push(piece);
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    pieces
}

fn resolve_placeholder(
    name: &str,
    key_names: &[String],
    patterns: &mut [Pattern],
    line: u32,
    diags: &mut Diags<'_>,
) -> Option<Piece> {
    match name {
        "org" => return Some(Piece::Org),
        "rule" => return Some(Piece::Rule),
        "severity" => return Some(Piece::Severity),
        _ => {}
    }
    if let Some(i) = key_names.iter().position(|k| k == name) {
        return Some(Piece::Key(i));
    }
    // `pattern.value`, or `value` when there is one pattern.
    let (pattern, value) = match name.split_once('.') {
        Some((p, v)) if patterns.iter().any(|x| x.name == p) => (patterns.iter().position(|x| x.name == p), v),
        _ if patterns.len() == 1 => (Some(0), name),
        _ => (None, name),
    };
    let Some(p) = pattern else {
        diags.error(
            line,
            format!(
                "unknown placeholder {{{name}}}: use org, rule, severity, a key field ({}) or PATTERN.VALUE",
                key_names.join(", ")
            ),
        );
        return None;
    };
    let pattern = &mut patterns[p];
    let output = if let Ok(agg) = parse_agg(value) {
        if pattern.kind == WindowKind::None {
            diags.error(line, format!("placeholder {{{name}}}: pattern '{}' has no window to aggregate", pattern.name));
            return None;
        }
        let slot = agg_slot(&mut pattern.aggs, agg);
        pattern.kind = window_kind(pattern);
        Output::Agg(slot)
    } else if let Some(field) = Field::parse(value) {
        if pattern.kind != WindowKind::None {
            diags.error(
                line,
                format!(
                    "placeholder {{{name}}}: pattern '{}' aggregates many events; only its group_by fields and aggregates can be shown",
                    pattern.name
                ),
            );
            return None;
        }
        Output::Field(field)
    } else {
        diags.error(line, format!("unknown placeholder {{{name}}}"));
        return None;
    };
    let slot = match pattern.outputs.iter().position(|o| *o == output) {
        Some(i) => i,
        None => {
            pattern.outputs.push(output);
            pattern.outputs.len() - 1
        }
    };
    Some(Piece::Output { pattern: p, slot })
}

fn compile_actions(node: &Node, key_names: &[String], cx: &mut RuleCx<'_, '_>) -> Vec<Action> {
    let Kind::Seq(items) = &node.kind else {
        cx.diags.error(node.line, "actions takes a list");
        return Vec::new();
    };
    let mut actions = Vec::new();
    for item in items {
        let Some(spec) = item.get("watchlist_add") else {
            cx.diags.error(item.line, "unknown action: the supported action is watchlist_add: {list, field, ttl}");
            continue;
        };
        let list = spec.get("list").and_then(|n| text_value(n, "list", cx.diags));
        let ttl = match spec.get("ttl") {
            Some(n) => duration_value(n, "ttl", cx.diags),
            None => {
                cx.diags.error(spec.line, "watchlist_add needs a ttl: entries expire");
                None
            }
        };
        let key = match spec.get("field").and_then(|n| n.as_text()) {
            Some(f) => match key_names.iter().position(|k| *k == f) {
                Some(i) => Some(i),
                None => {
                    cx.diags.error(
                        spec.line,
                        format!("watchlist_add field '{f}' must be a key field of the rule ({})", key_names.join(", ")),
                    );
                    None
                }
            },
            None => {
                cx.diags.error(spec.line, "watchlist_add needs a field");
                None
            }
        };
        if let (Some(list), Some(ttl), Some(key)) = (list, ttl, key) {
            let index = match cx.lists.iter().position(|l| *l == list) {
                Some(i) => i,
                None => {
                    cx.lists.push(list.clone());
                    cx.lists.len() - 1
                }
            };
            cx.list_adds.push(list);
            actions.push(Action::WatchlistAdd { list: index, key, ttl });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> RuleSet {
        let mut compiler = Compiler::new();
        compiler.add_source("t.yaml", text);
        match compiler.finish() {
            Ok((set, _)) => set,
            Err(diags) => panic!("{diags:?}"),
        }
    }

    const A: &str = "id: a\npatterns:\n  p:\n    filter: {event_type: x}\n    group_by: [src_ip]\n    window: 60s\n    having: count >= 5\n";
    const B: &str = "id: b\npatterns:\n  p:\n    filter: {event_type: y}\n";

    #[test]
    fn the_fingerprint_follows_meaning_not_layout() {
        let one = set(&format!("- {}", A.replace('\n', "\n  ")));
        assert_eq!(set(A).fingerprint(), one.fingerprint(), "a list of one is the rule");
        let commented = format!("# a comment\n\n{}", A.replace("window: 60s", "window:   60s   # one minute"));
        assert_eq!(set(A).fingerprint(), set(&commented).fingerprint());
        assert_ne!(set(A).fingerprint(), set(&A.replace(">= 5", ">= 6")).fingerprint());
        let ab = |x: &str, y: &str| {
            let mut compiler = Compiler::new();
            compiler.add_source("x.yaml", x);
            compiler.add_source("y.yaml", y);
            compiler.finish().map(|(s, _)| s.fingerprint()).unwrap_or(0)
        };
        assert_ne!(ab(A, B), ab(B, A), "rule order is part of the set (state refers to rules by position)");
        assert_ne!(ab(A, B), set(A).fingerprint());
        // Pinned: checkpoints written by one build are read by the next.
        assert_eq!(set(A).fingerprint(), 0x32fd_1117_56ff_a421);
    }
}

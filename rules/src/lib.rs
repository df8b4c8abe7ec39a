//! vigil's correlation rules (SPEC §5): the YAML rule language, its
//! compiler, the streaming engine that evaluates rules per org on event
//! time, and the built-in rule pack.
//!
//! # What this crate owns
//!
//! - [`Compiler`]: rule files → a [`RuleSet`], or every problem in them as
//!   [`Diagnostic`]s with file and line (unknown fields, bad regexes, type
//!   mismatches, missing windows, unknown sub-patterns, ...).
//! - [`Engine`]: evaluates a rule set over [`parsers::Event`]s: filters
//!   compiled once and indexed by `event_type`/`format`, sliding windows
//!   with count / count distinct / sum / avg / min / max, AND, OR, AND NOT,
//!   FOLLOWED BY and NOT FOLLOWED BY with join keys, per-org watermarks with
//!   allowed lateness, watch lists with TTL, nested rules, incident
//!   deduplication, bounded state that reports its size ([`Stats`]).
//! - [`builtin`]: the pack in `rules/packs/` (SSH brute force, brute force
//!   followed by success, password spray, port scan, unapproved privileged
//!   group membership, firewall-and-SSH correlation).
//!
//! The language is documented in `docs/rules.md`.
//!
//! # What it does not own
//!
//! No sockets, files of events, threads or clocks: the worker feeds events
//! and, for quiet orgs, clock readings ([`Engine::advance`]). Incidents leave
//! as values; storing them, their status and assignees is the supervisor's
//! record store. Deciding an event's org is the collector's job: the engine
//! reads `org_id`/`org` from the event. Sigma import is not here yet.
mod compile;
mod diag;
mod duration;
mod engine;
mod field;
mod filter;
mod key;
mod syntax;
mod window;

pub use compile::{Compiler, RuleInfo, RuleSet, Scope, Severity, builtin};
pub use diag::{Diagnostic, Level};
pub use engine::{Engine, EngineConfig, Incident, SUPER_LOCAL, Stats};

/// The built-in rule pack: (file name, text).
const PACK: &[(&str, &str)] = &[
    ("packs/accounts.yaml", include_str!("../packs/accounts.yaml")),
    ("packs/network.yaml", include_str!("../packs/network.yaml")),
    ("packs/ssh.yaml", include_str!("../packs/ssh.yaml")),
];

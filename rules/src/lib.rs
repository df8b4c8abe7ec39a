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
//!   deduplication, bounded state that reports its size ([`Stats`]), and
//!   checkpoints of that state ([`Engine::checkpoint`], [`Engine::restore`],
//!   refused with a [`CheckpointError`]; tied to [`RuleSet::fingerprint`])
//!   so another worker can take a partition over where the last one stopped.
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
mod reorder;
pub mod sigma;
mod syntax;
mod table;
mod window;

pub use compile::{Compiler, RuleInfo, RuleSet, Scope, Severity, builtin};
pub use diag::{Diagnostic, Level};
pub use engine::{CheckpointError, Engine, EngineConfig, Incident, SUPER_LOCAL, Stats};

/// Parses a duration as rules write them (`500ms`, `60s`, `5m`, `1h30m`, `7d`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let nanos = duration::parse(text)?;
    Ok(std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

/// Renders a duration the way rules write them.
pub fn render_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m")] {
        if secs.is_multiple_of(unit) {
            return format!("{}{name}", secs / unit);
        }
    }
    format!("{secs}s")
}

/// The built-in pack's files, `(name, YAML)`, for callers that compile it
/// together with their own rules.
pub const PACK: &[(&str, &str)] = &[
    ("packs/accounts.yaml", include_str!("../packs/accounts.yaml")),
    ("packs/network.yaml", include_str!("../packs/network.yaml")),
    ("packs/ssh.yaml", include_str!("../packs/ssh.yaml")),
];

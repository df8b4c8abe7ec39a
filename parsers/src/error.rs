//! The crate's one error type, for configuration and API misuse.
//!
//! A log line that does not parse is *not* an error here: it becomes an
//! event with `format = "raw"` and a `parse_error` (SPEC §2). These errors are
//! for things a person must fix: a bad time zone, a bad pattern file.

use std::path::PathBuf;

/// Everything that can go wrong configuring or loading the parsers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A time zone name or offset that is neither an IANA zone nor `±HH:MM`.
    #[error("unknown time zone {zone:?}: expected UTC, an offset such as +05:00, or an IANA name such as Europe/Paris")]
    InvalidTimeZone {
        /// What was given.
        zone: String,
    },
    /// A timestamp that is not RFC 3339.
    #[error("invalid time {input:?}: expected RFC 3339, e.g. 2026-11-22T10:00:00Z")]
    InvalidTime {
        /// What was given.
        input: String,
    },
    /// A year outside the range the parsers accept.
    #[error("invalid year {year}: expected 1970..=9999")]
    InvalidYear {
        /// What was given.
        year: i32,
    },
    /// A device pattern file that does not compile. All problems of one
    /// file are reported together.
    #[error("{}", format_pattern_errors(.file, .problems))]
    InvalidPatterns {
        /// The file (or built-in name) the patterns came from.
        file: String,
        /// One entry per problem: line (1-based, 0 when unknown) and message.
        problems: Vec<(usize, String)>,
    },
    /// Several independent errors (e.g. one per broken pattern file).
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Multiple {
        /// The errors, in file order.
        errors: Vec<Error>,
    },
    /// A pattern directory or file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn format_pattern_errors(file: &str, problems: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (i, (line, message)) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if *line > 0 {
            out.push_str(&format!("{file}:{line}: {message}"));
        } else {
            out.push_str(&format!("{file}: {message}"));
        }
    }
    out
}

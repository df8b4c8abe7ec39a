//! The supervisor crate's error type.

use std::path::PathBuf;

/// What can go wrong with licences, allocation settings and scenarios.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Σ guaranteed EPS is more than the licence (SPEC §3).
    #[error("guaranteed EPS add up to {guaranteed}, more than the {licensed} licensed")]
    GuaranteesExceedLicence {
        /// Σ g.
        guaranteed: u64,
        /// L.
        licensed: u64,
    },
    /// Σ of enabled orgs' EPS limits is more than the licence (SPEC §3).
    #[error("enabled organizations' EPS limits add up to {limits}, more than the {licensed} licensed")]
    OrgLimitsExceedLicence {
        /// Σ limits.
        limits: u64,
        /// L.
        licensed: u64,
    },
    /// A licence that does not verify; the message is the one-line reason.
    #[error("{0}")]
    Licence(#[from] crate::licence::LicenceError),
    /// A scenario file with a problem at a line.
    #[error("{file}:{line}: {message}")]
    Scenario {
        /// The scenario file.
        file: String,
        /// 1-based line (0 when the problem has no single place).
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

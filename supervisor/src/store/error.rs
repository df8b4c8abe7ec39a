//! The record store's error type. Every variant maps to one HTTP status in
//! the API and to one line on the CLI.

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such object, or one the caller may not see (the two are never
    /// told apart, so existence does not leak across orgs).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller lacks the permission or the reach for this action.
    #[error("{0}")]
    Forbidden(String),
    /// The action contradicts the current state (a duplicate name, a
    /// tenant already set, a built-in object).
    #[error("{0}")]
    Conflict(String),
    /// A field's value is invalid; `field` names it.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        message: String,
    },
    /// A field's value is well-formed, but what the store holds refuses
    /// it: EPS limits over the licence, an assignee who cannot see the
    /// record, Super/Global named as a tenant. A conflict with the current
    /// state, not a malformed request; `field` names the field.
    #[error("{field}: {message}")]
    Refused {
        /// The field whose value is refused.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The request is understood but refused as asked (e.g. a deboarding
    /// without `confirm=true`).
    #[error("{0}")]
    BadRequest(String),
    /// The bearer token is missing, unknown, expired or belongs to a
    /// disabled user.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The ingest queue is full; the update was not taken.
    #[error("ingest queue full ({0} updates waiting)")]
    QueueFull(usize),
    /// The ingest writer has stopped.
    #[error("ingest writer has stopped")]
    Closed,
    /// The cluster transport (NATS JetStream) failed.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("migration {version} ({name}): {source}")]
    Migration {
        /// Its version number.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The cause.
        source: sqlx::Error,
    },
    /// Data read from the database is not what this version wrote.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Stored event files could not be removed.
    #[error("event files: {0}")]
    EventFiles(String),
}

impl StoreError {
    /// An [`StoreError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid { field, message: message.into() }
    }

    /// A [`StoreError::Refused`] for `field`.
    pub fn refused(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Refused { field, message: message.into() }
    }

    /// A [`StoreError::Forbidden`] naming the missing permission.
    pub fn forbidden(message: impl Into<String>) -> StoreError {
        StoreError::Forbidden(message.into())
    }

    /// True when the database refused because of a unique constraint.
    pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

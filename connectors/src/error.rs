//! One error type for configuration, templates, the key and I/O, so the API layer can
//! map each to a status (`Invalid`/`Template` are the caller's fault, `Key`/`Io` are
//! the server's) without string matching.

/// What went wrong outside of a delivery attempt (attempts report an [`crate::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A configuration field is wrong; `field` names it ("url", "headers", "to", ...).
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it (never contains a secret).
        message: String,
    },
    /// A template does not compile or render.
    #[error("template {part}: {message}")]
    Template {
        /// "title" or "body".
        part: &'static str,
        /// The problem, with line and offending text when known.
        message: String,
    },
    /// The connector key is missing, unusable, or does not open a sealed value.
    #[error("connector key: {0}")]
    Key(String),
    /// Anything else (files, encoding).
    #[error("{0}")]
    Io(String),
}

impl ConnectorError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Invalid { field, message: message.into() }
    }
}

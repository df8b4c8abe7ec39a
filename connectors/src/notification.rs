//! What is sent ([`Notification`]) and what one attempt achieved ([`Outcome`]). The
//! outbox keys retries on the outcome: `Retry` is transient, `Failed` will not get
//! better by trying again.

use std::time::Duration;

use serde::Serialize;

/// One message to deliver.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// Stable across retries, so receivers can de-duplicate: header `X-Vigil-Delivery`
    /// (webhook, Slack, Teams), `Message-ID <delivery_id@vigil>` and `X-Vigil-Delivery`
    /// (e-mail), CEF `externalId` (syslog).
    pub delivery_id: String,
    /// "created", "updated", "status", "severity", "manual" or "test".
    pub event: String,
    /// The rendered title.
    pub title: String,
    /// The rendered body (plain text, may be multi-line).
    pub body: String,
    /// The organisation's name.
    pub org: String,
    /// "low", "medium", "high" or "critical".
    pub severity: String,
    /// The rule id ("" for hand-made incidents).
    pub rule: String,
    /// The incident as the API shows it.
    pub incident: serde_json::Value,
    /// When the triggering change happened, ms since the epoch.
    pub at_ms: i64,
}

/// What one attempt achieved.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The target accepted it.
    Delivered {
        /// The HTTP status or SMTP reply code, when there is one.
        status: Option<u16>,
    },
    /// Transient: 5xx, 408, 425, 429, timeouts, connection errors, SMTP 4xx.
    Retry {
        /// The HTTP status or SMTP reply code, when there is one.
        status: Option<u16>,
        /// What went wrong (no secrets).
        error: String,
        /// How long the target asked us to wait (`Retry-After`), capped at one hour.
        after: Option<Duration>,
    },
    /// Permanent: other 4xx, 3xx, SMTP 5xx, egress refusal, bad configuration.
    Failed {
        /// The HTTP status or SMTP reply code, when there is one.
        status: Option<u16>,
        /// What went wrong (no secrets).
        error: String,
    },
}

impl Outcome {
    /// The HTTP status or SMTP reply code, when there is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered { status } | Outcome::Retry { status, .. } | Outcome::Failed { status, .. } => *status,
        }
    }

    /// The error text of `Retry` and `Failed`.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { error, .. } | Outcome::Failed { error, .. } => Some(error),
        }
    }

    /// "delivered", "retry" or "failed".
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        }
    }

    pub(crate) fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry { status: None, error: error.into(), after: None }
    }

    pub(crate) fn failed(error: impl Into<String>) -> Outcome {
        Outcome::Failed { status: None, error: error.into() }
    }
}

/// A field of the incident as display text ("" when missing).
pub(crate) fn field(incident: &serde_json::Value, names: &[&str]) -> String {
    names
        .iter()
        .find_map(|k| incident.get(*k).filter(|v| !v.is_null()))
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// One attempt under its timeout: what it says when it finishes (early
/// stops are its `Err`), or `timed_out()` when the time runs out first.
pub(crate) async fn within(
    timeout: std::time::Duration,
    attempt: impl std::future::Future<Output = Result<Outcome, Outcome>>,
    timed_out: impl FnOnce() -> Outcome,
) -> Outcome {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(o) | Err(o)) => o,
        Err(_) => timed_out(),
    }
}

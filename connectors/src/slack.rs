//! Slack incoming webhooks: a header block with the title, the body as mrkdwn, and a
//! context line, plus `text` as the notification fallback (what phones show).

use std::time::Duration;

use crate::http::{Client, JsonPost};
use crate::{Config, ConnectorError, Kind, Notification, Secrets, Settings};

/// Slack caps a header block at 150 characters and a section's text at 3000.
const HEADER_CHARS: usize = 150;
const SECTION_CHARS: usize = 3000;

/// A Slack connector: JSON posted to the channel's webhook URL.
pub(crate) fn new(
    config: &Config,
    secrets: &Secrets,
    settings: Settings,
    timeout: Duration,
) -> Result<JsonPost, ConnectorError> {
    let client = Client::new(secrets.url.as_deref(), config, settings, timeout)?;
    Ok(JsonPost { kind: Kind::Slack, client, payload })
}

/// The message: Slack's escaping rules for mrkdwn (`&`, `<`, `>`) apply to the body and
/// the context so incident text cannot form links or mentions.
pub(crate) fn payload(n: &Notification) -> serde_json::Value {
    let rule = if n.rule.is_empty() { "manual" } else { n.rule.as_str() };
    let context = format!("{} · {} · {} · delivery {}", n.org, n.severity, rule, n.delivery_id);
    let body = if n.body.trim().is_empty() { n.title.as_str() } else { n.body.as_str() };
    serde_json::json!({
        "text": n.title,
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": chars(&n.title, HEADER_CHARS), "emoji": false } },
            { "type": "section", "text": { "type": "mrkdwn", "text": chars(&escape(body), SECTION_CHARS) } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": escape(&context) } ] }
        ]
    })
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The first `max` characters, with an ellipsis when cut.
pub(crate) fn chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

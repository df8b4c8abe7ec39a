//! Microsoft Teams (workflow or incoming webhook): an adaptive card with the title,
//! the body and a fact set, the shape both Teams webhook flavours accept.

use std::time::Duration;

use crate::http::{Client, JsonPost};
use crate::notification::field;
use crate::{Config, ConnectorError, Kind, Notification, Secrets, Settings};

/// A Teams connector: JSON posted to the channel's webhook URL.
pub(crate) fn new(
    config: &Config,
    secrets: &Secrets,
    settings: Settings,
    timeout: Duration,
) -> Result<JsonPost, ConnectorError> {
    let client = Client::new(secrets.url.as_deref(), config, settings, timeout)?;
    Ok(JsonPost { kind: Kind::Teams, client, payload })
}

pub(crate) fn payload(n: &Notification) -> serde_json::Value {
    let rule = if n.rule.is_empty() { "manual" } else { n.rule.as_str() };
    let fact = |title: &str, value: String| serde_json::json!({ "title": title, "value": value });
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": n.title, "weight": "bolder", "size": "medium", "wrap": true },
                    { "type": "TextBlock", "text": n.body, "wrap": true },
                    { "type": "FactSet", "facts": [
                        fact("Organisation", n.org.clone()),
                        fact("Severity", n.severity.clone()),
                        fact("Rule", rule.to_owned()),
                        fact("Status", field(&n.incident, &["status"])),
                        fact("Hits", field(&n.incident, &["hit_count", "count"])),
                        fact("Delivery", n.delivery_id.clone()),
                    ]}
                ]
            }
        }]
    })
}

//! The connector types, spelled the same in the API, the store and the code.

use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// Connector types. serde: lowercase ("webhook", "slack", "teams", "email", "syslog").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A generic HTTPS POST of JSON, optionally HMAC-signed.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams workflow / incoming webhook (adaptive card).
    Teams,
    /// E-mail over SMTP.
    Email,
    /// A CEF line over syslog (UDP, TCP or TLS) to another SIEM.
    Syslog,
}

impl Kind {
    /// Every type, in display order.
    pub const ALL: [Kind; 5] = [Kind::Webhook, Kind::Slack, Kind::Teams, Kind::Email, Kind::Syslog];

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
            Kind::Teams => "teams",
            Kind::Email => "email",
            Kind::Syslog => "syslog",
        }
    }

    /// Parses a name from [`Kind::as_str`]; the error names the field "kind".
    pub fn parse(s: &str) -> Result<Kind, ConnectorError> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            ConnectorError::invalid("kind", format!("{s:?} is not one of webhook, slack, teams, email, syslog"))
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()).unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert!(Kind::parse("pager").is_err());
    }
}

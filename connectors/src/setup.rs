//! Checking and building a connector from its stored configuration. `validate` runs
//! when an admin saves (no network: errors name the field so the API can point at
//! it); `build` runs before each use and also prepares TLS, so a bad CA file shows up
//! as a configuration error rather than as a failed delivery.

use std::time::Duration;

use crate::{
    Config, Connector, ConnectorError, Kind, Secrets, Settings, email, http, slack, syslog, teams, tls, webhook,
};

/// Per-attempt timeout when none is configured.
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 100..=120_000;

/// Checks a configuration without network access (URL schemes and hosts, header syntax,
/// addresses, target syntax, ca_file readable PEM, timeout range, that required fields for
/// the kind are present and fields of other kinds are absent). The error names the field
/// ("url", "headers", "to", "from", "target", "ca_file", "timeout_ms", "secret").
pub fn validate(kind: Kind, config: &Config, secrets: &Secrets) -> Result<(), ConnectorError> {
    if let Some(ms) = config.timeout_ms
        && !TIMEOUT_RANGE.contains(&ms)
    {
        return Err(ConnectorError::invalid(
            "timeout_ms",
            format!("{ms} is outside {}..={}", TIMEOUT_RANGE.start(), TIMEOUT_RANGE.end()),
        ));
    }
    if let Some(path) = &config.ca_file {
        tls::read_ca_file(path)?;
    }
    let other = |field: &'static str, present: bool| -> Result<(), ConnectorError> {
        if present {
            return Err(ConnectorError::invalid(field, format!("is not used by {kind} connectors; leave it out")));
        }
        Ok(())
    };
    match kind {
        Kind::Webhook | Kind::Slack | Kind::Teams => {
            other("to", !config.to.is_empty())?;
            other("from", config.from.is_some())?;
            other("target", config.target.is_some())?;
            if kind != Kind::Webhook {
                other("headers", !config.headers.is_empty())?;
                other("secret", secrets.secret.is_some())?;
            }
            http::Endpoint::parse(secrets.url.as_deref())?;
            if kind == Kind::Webhook {
                webhook::check_headers(&config.headers)?;
                if secrets.secret.as_deref().is_some_and(str::is_empty) {
                    return Err(ConnectorError::invalid("secret", "is empty; leave it out for unsigned requests"));
                }
            }
        }
        Kind::Email => {
            other("headers", !config.headers.is_empty())?;
            other("target", config.target.is_some())?;
            email::check(config, secrets)?;
        }
        Kind::Syslog => {
            other("headers", !config.headers.is_empty())?;
            other("to", !config.to.is_empty())?;
            other("from", config.from.is_some())?;
            other("url", secrets.url.is_some())?;
            other("secret", secrets.secret.is_some())?;
            syslog::Target::parse(config.target.as_deref())?;
        }
    }
    Ok(())
}

/// [`validate`] + build the connector (loads the CA file, builds the TLS configuration).
/// Egress is checked at send/health time on the resolved addresses (so DNS rebinding cannot
/// bypass it) and the connection goes to the approved address.
pub fn build(
    kind: Kind,
    config: &Config,
    secrets: &Secrets,
    settings: Settings,
) -> Result<Box<dyn Connector>, ConnectorError> {
    validate(kind, config, secrets)?;
    let timeout = Duration::from_millis(config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    Ok(match kind {
        Kind::Webhook => Box::new(webhook::Webhook::new(config, secrets, settings, timeout)?),
        Kind::Slack => Box::new(slack::new(config, secrets, settings, timeout)?),
        Kind::Teams => Box::new(teams::new(config, secrets, settings, timeout)?),
        Kind::Email => Box::new(email::Email::new(config, secrets, settings, timeout)?),
        Kind::Syslog => Box::new(syslog::Syslog::new(config, settings, timeout)?),
    })
}

//! A connector's configuration, split by sensitivity: [`Config`] is stored in clear and
//! shown by the API; [`Secrets`] is sealed at rest ([`crate::SecretBox`]) and never
//! printed, so an endpoint URL that embeds a token (Slack, Teams) stays secret too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The non-secret part of a configuration: stored as JSON in clear, returned by the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Webhook only: extra request headers (token characters for names, no CR/LF in values,
    /// not Content-Length, Host, Transfer-Encoding or X-Vigil-*).
    pub headers: BTreeMap<String, String>,
    /// E-mail only: recipients (1 to 50 addresses).
    pub to: Vec<String>,
    /// E-mail only: the sender (default `vigil@<smtp host>`).
    pub from: Option<String>,
    /// Syslog only (required there): `tcp://HOST:PORT`, `udp://HOST:PORT` or `tls://HOST:PORT`.
    pub target: Option<String>,
    /// A PEM bundle of the CAs trusted for this target's TLS, instead of the public roots.
    pub ca_file: Option<String>,
    /// Accept any server certificate. Dangerous: anyone on the path can read and change
    /// the traffic (and the webhook secret's signatures, e-mail password, ...).
    pub skip_tls_verify: bool,
    /// Per-attempt timeout in milliseconds (default 10 000, allowed 100 to 120 000).
    pub timeout_ms: Option<u64>,
}

/// The secret part: sealed at rest, never returned or logged. `Debug` prints only which
/// fields are set.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Secrets {
    /// Webhook, Slack, Teams: the endpoint URL (`https://…`, or `http://` only when
    /// [`Settings::allow_private_targets`]). E-mail: the SMTP URL: `smtp://[user@]host[:587]`
    /// (STARTTLS required), `smtps://[user@]host[:465]` (implicit TLS) or
    /// `smtp+plain://host[:25]` (no TLS: local relays and tests).
    pub url: Option<String>,
    /// Webhook: the HMAC-SHA256 key; e-mail: the SMTP password (with the URL's user).
    pub secret: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Set(bool);
        impl std::fmt::Debug for Set {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(if self.0 { "<set>" } else { "<none>" })
            }
        }
        f.debug_struct("Secrets")
            .field("url", &Set(self.url.is_some()))
            .field("secret", &Set(self.secret.is_some()))
            .finish()
    }
}

impl Secrets {
    /// The URL in a form safe to show and log: `scheme://host[:port]`, plus `/…` when it had a
    /// path or query. Never the user, password, path, query or fragment (a Slack or Teams
    /// URL's path *is* the credential).
    pub fn masked_url(&self) -> Option<String> {
        self.url.as_deref().map(mask_url)
    }
}

/// See [`Secrets::masked_url`].
pub(crate) fn mask_url(raw: &str) -> String {
    let Ok(u) = url::Url::parse(raw.trim()) else {
        return "<unparsable URL>".to_owned();
    };
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = u.path();
    if !(path.is_empty() || path == "/") || u.query().is_some() {
        out.push_str("/…");
    }
    out
}

/// Operator settings (`[connectors]` in the configuration file).
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Let connectors reach loopback, private, link-local and other internal addresses
    /// (and use plain `http://`). Off by default: a tenant admin could otherwise probe
    /// or call services inside the SIEM's network (cloud metadata, admin APIs).
    pub allow_private_targets: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(u: &str) -> String {
        Secrets { url: Some(u.to_owned()), secret: None }.masked_url().unwrap()
    }

    #[test]
    fn masked_url_hides_everything_but_scheme_host_port() {
        assert_eq!(masked("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com/…");
        assert_eq!(masked("https://example.com"), "https://example.com");
        assert_eq!(masked("https://example.com/"), "https://example.com");
        assert_eq!(masked("https://example.com/?token=abc"), "https://example.com/…");
        assert_eq!(masked("https://example.com:8443/x#frag"), "https://example.com:8443/…");
        assert_eq!(masked("https://user:pw@example.com/a"), "https://example.com/…");
        assert_eq!(masked("smtp://alice@mail.example.com:587"), "smtp://mail.example.com:587");
        assert_eq!(masked("smtps://bob:hunter2@mail.example.com"), "smtps://mail.example.com");
        assert_eq!(masked("http://[::1]:8080/hook"), "http://[::1]:8080/…");
        assert_eq!(masked("not a url"), "<unparsable URL>");
        assert_eq!(Secrets::default().masked_url(), None);
    }

    #[test]
    fn debug_shows_only_presence() {
        let s = Secrets { url: Some("https://x.example/hunter2".into()), secret: Some("hunter2".into()) };
        let d = format!("{s:?}");
        assert_eq!(d, "Secrets { url: <set>, secret: <set> }");
        assert_eq!(format!("{:?}", Secrets::default()), "Secrets { url: <none>, secret: <none> }");
    }
}

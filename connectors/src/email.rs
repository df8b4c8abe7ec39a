//! E-mail over SMTP with lettre's connection-level API (tokio + rustls/ring). We open
//! the connection ourselves to the address the egress guard approved, and drive
//! EHLO / STARTTLS / AUTH / MAIL / QUIT step by step, so each failure maps to the right
//! outcome: a 4xx reply or a dropped connection retries, a 5xx reply does not.

use std::net::IpAddr;
use std::time::Duration;

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::config::mask_url;
use crate::{
    BoxFuture, Config, Connector, ConnectorError, Kind, Notification, Outcome, Secrets, Settings, egress, tls,
};

const MAX_RECIPIENTS: usize = 50;
const X_VIGIL_DELIVERY: HeaderName = HeaderName::new_from_ascii_str("X-Vigil-Delivery");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    /// smtp://: plain connect, then STARTTLS is required (never send in clear by accident).
    StartTls,
    /// smtps://: TLS from the first byte.
    Implicit,
    /// smtp+plain://: no TLS at all (local relays, tests).
    Plain,
}

/// The parts of an SMTP URL.
struct SmtpUrl {
    security: Security,
    host: String,
    port: u16,
    user: Option<String>,
}

fn parse_url(url: Option<&str>) -> Result<SmtpUrl, ConnectorError> {
    let raw = url.map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| {
        ConnectorError::invalid(
            "url",
            "is required: smtp://[user@]host[:587], smtps://[user@]host[:465] or smtp+plain://host[:25]",
        )
    })?;
    let u = url::Url::parse(raw).map_err(|e| ConnectorError::invalid("url", format!("is not a valid URL ({e})")))?;
    let (security, default_port) = match u.scheme() {
        "smtp" => (Security::StartTls, 587),
        "smtps" => (Security::Implicit, 465),
        "smtp+plain" => (Security::Plain, 25),
        other => {
            return Err(ConnectorError::invalid(
                "url",
                format!("scheme {other:?} is not supported; use smtp:// (STARTTLS), smtps:// or smtp+plain://"),
            ));
        }
    };
    if u.password().is_some() {
        return Err(ConnectorError::invalid("url", "must not contain the password; put it in secret"));
    }
    if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() || u.fragment().is_some() {
        return Err(ConnectorError::invalid("url", "must be scheme://[user@]host[:port], without path or query"));
    }
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| ConnectorError::invalid("url", "has no host"))?;
    let user = match u.username() {
        "" => None,
        enc => Some(
            percent_encoding::percent_decode_str(enc)
                .decode_utf8()
                .map_err(|_| ConnectorError::invalid("url", "the user is not valid UTF-8 once decoded"))?
                .into_owned(),
        ),
    };
    Ok(SmtpUrl { security, host: host.to_owned(), port: u.port().unwrap_or(default_port), user })
}

fn mailbox(field: &'static str, s: &str) -> Result<Mailbox, ConnectorError> {
    s.trim()
        .parse::<Mailbox>()
        .map_err(|e| ConnectorError::invalid(field, format!("{s:?} is not a valid e-mail address ({e})")))
}

/// The default sender: `vigil@<smtp host>`; `vigil@localhost` when the host is an IP
/// address (lettre does not accept address literals as domains).
fn default_from(host: &str) -> Result<Mailbox, ConnectorError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let domain = if bare.parse::<IpAddr>().is_ok() { "localhost" } else { bare };
    mailbox("from", &format!("vigil@{domain}"))
}

/// Checks the e-mail fields of a configuration (see [`crate::validate`]).
pub(crate) fn check(config: &Config, secrets: &Secrets) -> Result<(), ConnectorError> {
    parts(config, secrets).map(|_| ())
}

fn parts(config: &Config, secrets: &Secrets) -> Result<(SmtpUrl, Mailbox, Vec<Mailbox>), ConnectorError> {
    let url = parse_url(secrets.url.as_deref())?;
    if url.security == Security::Plain && (url.user.is_some() || secrets.secret.is_some()) {
        return Err(ConnectorError::invalid(
            "secret",
            "credentials are never sent over smtp+plain://; use smtp:// (STARTTLS) or smtps://",
        ));
    }
    if secrets.secret.is_some() && url.user.is_none() {
        return Err(ConnectorError::invalid("secret", "a password needs a user in the URL (smtp://user@host)"));
    }
    if config.to.is_empty() || config.to.len() > MAX_RECIPIENTS {
        return Err(ConnectorError::invalid("to", format!("needs 1 to {MAX_RECIPIENTS} recipients")));
    }
    let to = config.to.iter().map(|t| mailbox("to", t)).collect::<Result<Vec<_>, _>>()?;
    let from = match &config.from {
        Some(f) => mailbox("from", f)?,
        None => default_from(&url.host)?,
    };
    Ok((url, from, to))
}

/// An e-mail connector.
pub(crate) struct Email {
    url: SmtpUrl,
    password: Option<String>,
    from: Mailbox,
    to: Vec<Mailbox>,
    tls: Option<TlsParameters>,
    timeout: Duration,
    settings: Settings,
    masked: String,
    hello: ClientId,
}

impl Email {
    pub fn new(
        config: &Config,
        secrets: &Secrets,
        settings: Settings,
        timeout: Duration,
    ) -> Result<Email, ConnectorError> {
        let (url, from, to) = parts(config, secrets)?;
        let tls = match url.security {
            Security::Plain => None,
            Security::StartTls | Security::Implicit => Some(tls_parameters(&url.host, config)?),
        };
        Ok(Email {
            password: secrets.secret.clone(),
            from,
            to,
            tls,
            timeout,
            settings,
            masked: secrets.masked_url().unwrap_or_else(|| mask_url("")),
            hello: ClientId::Domain(crate::syslog::hostname()),
            url,
        })
    }

    /// Connects, secures and authenticates: everything before the message.
    async fn open(&self) -> Result<AsyncSmtpConnection, Outcome> {
        let addr = egress::resolve(&self.url.host, self.url.port, self.settings).await?;
        let implicit = if self.url.security == Security::Implicit { self.tls.clone() } else { None };
        let mut conn = AsyncSmtpConnection::connect_tokio1(addr, Some(self.timeout), &self.hello, implicit, None)
            .await
            .map_err(|e| self.smtp_error("connect", &e))?;
        if self.url.security == Security::StartTls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(Outcome::failed(format!(
                    "{}: the server does not offer STARTTLS (use smtps:// for implicit TLS, or smtp+plain:// for a local relay)",
                    self.masked
                )));
            }
            if let Some(tls) = self.tls.clone() {
                conn.starttls(tls, &self.hello).await.map_err(|e| self.smtp_error("STARTTLS", &e))?;
            }
        }
        if let (Some(user), Some(pw)) = (&self.url.user, &self.password) {
            let creds = Credentials::new(user.clone(), pw.clone());
            if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds).await {
                conn.abort().await;
                return Err(self.smtp_error("AUTH", &e));
            }
        }
        Ok(conn)
    }

    async fn deliver(&self, n: &Notification) -> Result<Outcome, Outcome> {
        let msg = self.message(n)?;
        let mut conn = self.open().await?;
        let resp = conn.send(msg.envelope(), &msg.formatted()).await.map_err(|e| self.smtp_error("sending", &e))?;
        let _ = conn.quit().await;
        Ok(Outcome::Delivered { status: Some(u16::from(resp.code())) })
    }

    async fn check(&self) -> Result<Outcome, Outcome> {
        let mut conn = self.open().await?;
        let resp = conn.quit().await.map_err(|e| self.smtp_error("QUIT", &e))?;
        Ok(Outcome::Delivered { status: Some(u16::from(resp.code())) })
    }

    fn message(&self, n: &Notification) -> Result<Message, Outcome> {
        let id = token(&n.delivery_id);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.title.replace(['\r', '\n'], " "))
            .message_id(Some(format!("<{id}@vigil>")))
            .raw_header(HeaderValue::new(X_VIGIL_DELIVERY, id))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.body(n.body.clone()).map_err(|e| Outcome::failed(format!("cannot build the message: {e}")))
    }

    /// Maps an SMTP error: 4xx and I/O retry; 5xx, client-side refusals (no common AUTH
    /// mechanism...) and certificate failures do not.
    fn smtp_error(&self, step: &str, e: &lettre::transport::smtp::Error) -> Outcome {
        let status = e.status().map(u16::from);
        let error = format!("{}: {step} failed: {e}", self.masked);
        // lettre reports rustls verification failures as connection errors; its text
        // ("invalid peer certificate: UnknownIssuer") is all there is to tell them apart.
        let lower = error.to_ascii_lowercase();
        let bad_cert = lower.contains("invalid peer certificate") || (e.is_tls() && lower.contains("certificate"));
        if e.is_permanent() || e.is_client() || bad_cert {
            Outcome::Failed { status, error }
        } else {
            Outcome::Retry { status, error, after: None }
        }
    }

    fn timed_out(&self) -> Outcome {
        Outcome::retry(format!("{}: timed out after {} ms", self.masked, self.timeout.as_millis()))
    }
}

/// The delivery id as it may appear in Message-ID and a header: atext characters only.
fn token(s: &str) -> String {
    let t: String =
        s.chars().take(128).map(|c| if c.is_ascii_alphanumeric() || "-._+=".contains(c) { c } else { '-' }).collect();
    if t.is_empty() { "delivery".to_owned() } else { t }
}

fn tls_parameters(host: &str, config: &Config) -> Result<TlsParameters, ConnectorError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut b = TlsParameters::builder(bare.to_owned()).dangerous_accept_invalid_certs(config.skip_tls_verify);
    b = match &config.ca_file {
        Some(path) => {
            let (pem, _) = tls::read_ca_file(path)?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
            b.certificate_store(CertificateStore::None).add_root_certificate(cert)
        }
        None => b.certificate_store(CertificateStore::WebpkiRoots),
    };
    b.build_rustls().map_err(|e| ConnectorError::Io(format!("TLS: {e}")))
}

impl Connector for Email {
    fn kind(&self) -> Kind {
        Kind::Email
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Outcome> {
        Box::pin(crate::notification::within(self.timeout, self.deliver(n), || self.timed_out()))
    }

    fn health<'a>(&'a self) -> BoxFuture<'a, Outcome> {
        Box::pin(crate::notification::within(self.timeout, self.check(), || self.timed_out()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(to: &[&str]) -> Config {
        Config { to: to.iter().map(|s| s.to_string()).collect(), ..Config::default() }
    }

    fn sec(url: &str, secret: Option<&str>) -> Secrets {
        Secrets { url: Some(url.into()), secret: secret.map(Into::into) }
    }

    fn field(r: Result<(), ConnectorError>) -> &'static str {
        match r {
            Err(ConnectorError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn urls_and_addresses() {
        let u = parse_url(Some("smtp://alice%40corp@mail.example.com")).unwrap();
        assert_eq!((u.security, u.port, u.user.as_deref()), (Security::StartTls, 587, Some("alice@corp")));
        assert_eq!(parse_url(Some("smtps://mail.example.com")).unwrap().port, 465);
        assert_eq!(parse_url(Some("smtp+plain://127.0.0.1:2525")).unwrap().port, 2525);
        check(&cfg(&["a@example.com", "Bob <b@example.com>"]), &sec("smtp://u@mail.example.com", Some("pw"))).unwrap();
        assert_eq!(field(check(&cfg(&["a@example.com"]), &sec("http://mail.example.com", None))), "url");
        assert_eq!(field(check(&cfg(&["a@example.com"]), &sec("smtp://u:pw@mail.example.com", None))), "url");
        assert_eq!(field(check(&cfg(&[]), &sec("smtp://mail.example.com", None))), "to");
        assert_eq!(field(check(&cfg(&["not an address"]), &sec("smtp://mail.example.com", None))), "to");
        let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(field(check(&cfg(&many), &sec("smtp://mail.example.com", None))), "to");
        let mut bad_from = cfg(&["a@example.com"]);
        bad_from.from = Some("nope".into());
        assert_eq!(field(check(&bad_from, &sec("smtp://mail.example.com", None))), "from");
        assert_eq!(field(check(&cfg(&["a@example.com"]), &sec("smtp://mail.example.com", Some("pw")))), "secret");
        assert_eq!(
            field(check(&cfg(&["a@example.com"]), &sec("smtp+plain://u@mail.example.com", Some("pw")))),
            "secret"
        );
        assert_eq!(default_from("127.0.0.1").unwrap().email.to_string(), "vigil@localhost");
        assert_eq!(default_from("mail.example.com").unwrap().email.to_string(), "vigil@mail.example.com");
        assert_eq!(token("a b<c>@d"), "a-b-c--d");
    }
}

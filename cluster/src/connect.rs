//! Connecting to nats-server: version and JetStream checks.

use std::fmt;
use std::time::Duration;

use async_nats::{Client, jetstream};

use crate::BoxError;

/// The oldest nats-server vigil runs on.
pub const MIN_SERVER_VERSION: ServerVersion = ServerVersion { major: 2, minor: 11, patch: 0 };

/// Why older servers are refused, for the error message.
const WHY_2_11: &str = "older servers sync the JetStream file store only every 60 s by default, \
     silently ignore consumer and stream settings vigil relies on (several filter subjects, \
     per-message TTL, pinned consumers) and miss years of JetStream fixes";

/// A nats-server version, `major.minor.patch` (a pre-release suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// Parses `2.11.0`, `v2.15.1` or `2.12.0-RC.1` (the suffix is ignored); `None` when it
    /// does not start with three dot-separated numbers.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(ServerVersion { major, minor, patch })
    }

    /// Whether vigil runs on this version ([`MIN_SERVER_VERSION`] or newer).
    pub fn is_supported(self) -> bool {
        self >= MIN_SERVER_VERSION
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or refused the client.
    #[error("cannot connect to nats-server at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// The client's error (in the message, not a `source`: its own
        /// chain would be printed twice).
        reason: BoxError,
    },
    /// A TLS file of the configuration cannot be read.
    #[error("cannot read cluster.{setting} {path}: {reason}")]
    TlsFile {
        /// The setting naming it.
        setting: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
    /// The creds file cannot be read or was not issued by vigil.
    #[error("cluster.creds_file: {0}")]
    Creds(#[from] crate::auth::AuthError),
    /// The server is older than [`MIN_SERVER_VERSION`].
    #[error("nats-server {version} at {url} is too old: vigil needs 2.11 or newer ({WHY_2_11})")]
    TooOld {
        /// The server URL.
        url: String,
        /// The version it reported.
        version: ServerVersion,
    },
    /// The version the server reported is not `major.minor.patch`.
    #[error("nats-server at {url} reports version {version:?}, which vigil cannot read")]
    UnknownVersion {
        /// The server URL.
        url: String,
        /// What it reported.
        version: String,
    },
    /// JetStream is off on the server or for the account.
    #[error(
        "JetStream is not enabled at {url} ({detail}): vigil needs it (server config `jetstream {{ store_dir: ... }}`)"
    )]
    NoJetStream {
        /// The server URL.
        url: String,
        /// What the server said.
        detail: String,
    },
}

/// A connection to nats-server with its JetStream context.
#[derive(Clone, Debug)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    url: String,
    version: ServerVersion,
}

impl Nats {
    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The URL it was connected with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server version seen at connect time.
    pub fn server_version(&self) -> ServerVersion {
        self.version
    }
}

/// Connects as `client_name` with vigil's defaults (reconnect for ever, at most 1 s apart),
/// then checks the server version and that JetStream is on.
pub async fn connect(url: &str, client_name: &str) -> Result<Nats, ConnectError> {
    connect_with(url, async_nats::ConnectOptions::new().name(client_name)).await
}

/// Connects as `client_name` to the server `config` names, with its TLS
/// settings: TLS required when any is set, the server verified against
/// `nats_ca_file` (or the public roots), this node's certificate presented
/// when one is given. A file that cannot be read is an error naming it.
/// With `creds_file` (or the supervisor's `keys_dir`) the node connects as
/// its own NATS user, with replies on its own inbox prefix.
pub async fn connect_config(config: &crate::ClusterConfig, client_name: &str) -> Result<Nats, ConnectError> {
    let creds = match (&config.creds_file, &config.keys_dir) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(dir)) => Some(dir.join(crate::auth::SUPERVISOR_CREDS)),
        (None, None) => None,
    };
    let options = options_for(config, client_name, creds.as_deref()).await?;
    connect_with(&config.nats.clone().unwrap_or_default(), options).await
}

/// A core NATS connection as the system-account user of the supervisor's
/// key directory (`system.creds`), with `config`'s TLS settings: what
/// pushes account updates (revocations) to the server. The system account
/// has no JetStream, so none is asked for.
pub async fn connect_system(config: &crate::ClusterConfig, keys_dir: &std::path::Path) -> Result<Client, ConnectError> {
    let url = config.nats.clone().unwrap_or_default();
    let creds = keys_dir.join(crate::auth::SYSTEM_CREDS);
    let options = options_for(config, "vigil supervisor (system)", Some(&creds)).await?;
    options
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .max_reconnects(None)
        .connect(url.as_str())
        .await
        .map_err(|err| ConnectError::Connect { url: parsers::redact_url(&url), reason: err.into() })
}

/// The connect options of `config`: TLS, and the creds file `creds` with
/// the node's own reply inbox prefix.
async fn options_for(
    config: &crate::ClusterConfig,
    client_name: &str,
    creds: Option<&std::path::Path>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut options = async_nats::ConnectOptions::new().name(client_name);
    if config.nats_requires_tls() {
        options = options.require_tls(true);
    }
    let readable = |setting: &'static str, path: &std::path::Path| {
        std::fs::File::open(path).map(drop).map_err(|reason| ConnectError::TlsFile {
            setting,
            path: path.display().to_string(),
            reason,
        })
    };
    if let Some(ca) = &config.nats_ca_file {
        readable("nats_ca_file", ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.nats_cert_file, &config.nats_key_file) {
        readable("nats_cert_file", cert)?;
        readable("nats_key_file", key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if let Some(path) = creds {
        let node = match crate::auth::read_grant(path) {
            Ok(g) => g.node,
            // The system user's creds carry no vigil grant.
            Err(_) if path.ends_with(crate::auth::SYSTEM_CREDS) => "vigil-system".to_owned(),
            Err(e) => return Err(e.into()),
        };
        options = options
            .credentials_file(path)
            .await
            .map_err(|reason| crate::auth::AuthError::File { path: path.display().to_string(), reason })?
            .custom_inbox_prefix(crate::auth::inbox_prefix(&node));
    }
    Ok(options)
}

/// Like [`connect`] with the caller's options (credentials, TLS). vigil's reconnect delay
/// (1 s at most) replaces the options' one.
pub async fn connect_with(url: &str, options: async_nats::ConnectOptions) -> Result<Nats, ConnectError> {
    let options = options
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .max_reconnects(None)
        // What the server refuses (a permission this node's role lacks,
        // revoked credentials) is said, not swallowed.
        .event_callback(|event| async move {
            if let async_nats::Event::ServerError(err) = event {
                eprintln!("vigil: nats-server: {err}");
            }
        });
    let client = options
        .connect(url)
        .await
        .map_err(|err| ConnectError::Connect { url: parsers::redact_url(url), reason: err.into() })?;
    let info = client.server_info();
    let version = ServerVersion::parse(&info.version)
        .ok_or_else(|| ConnectError::UnknownVersion { url: parsers::redact_url(url), version: info.version.clone() })?;
    if !version.is_supported() {
        return Err(ConnectError::TooOld { url: parsers::redact_url(url), version });
    }
    if !info.jetstream {
        return Err(ConnectError::NoJetStream {
            url: parsers::redact_url(url),
            detail: "the server has it off".to_owned(),
        });
    }
    let jetstream = jetstream::new(client.clone());
    jetstream
        .query_account()
        .await
        .map_err(|err| ConnectError::NoJetStream { url: parsers::redact_url(url), detail: err.to_string() })?;
    Ok(Nats { client, jetstream, url: parsers::redact_url(url), version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> ServerVersion {
        ServerVersion::parse(text).unwrap()
    }

    #[test]
    fn versions_parse() {
        assert_eq!(v("2.15.1"), ServerVersion { major: 2, minor: 15, patch: 1 });
        assert_eq!(v("v2.11.0"), ServerVersion { major: 2, minor: 11, patch: 0 });
        assert_eq!(v("2.12.0-RC.1"), ServerVersion { major: 2, minor: 12, patch: 0 });
        assert_eq!(ServerVersion::parse("2.11"), None);
        assert_eq!(ServerVersion::parse("2.11.0.1"), None);
        assert_eq!(ServerVersion::parse("nats"), None);
    }

    #[test]
    fn old_servers_are_refused() {
        assert!(!v("2.9.10").is_supported());
        assert!(!v("2.10.29").is_supported());
        assert!(!v("1.99.99").is_supported());
        assert!(v("2.11.0").is_supported());
        assert!(v("2.15.1").is_supported());
        assert!(v("3.0.0").is_supported());
    }

    #[test]
    fn too_old_message_names_version_url_and_reason() {
        let err = ConnectError::TooOld { url: "nats://10.0.0.5:4222".into(), version: v("2.9.10") };
        let text = err.to_string();
        assert!(
            text.starts_with("nats-server 2.9.10 at nats://10.0.0.5:4222 is too old: vigil needs 2.11 or newer ("),
            "{text}"
        );
        assert!(text.contains("60 s"), "{text}");
    }
}

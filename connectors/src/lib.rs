//! Delivery mechanics for incident notifications: the part of vigil that talks to
//! people and tools outside the SIEM (webhooks, Slack, Teams, e-mail, other SIEMs
//! over syslog/CEF).
//!
//! The record store and outbox (in `supervisor`) decide *what* to send and *when to
//! retry*; this crate only performs one attempt at a time and says what happened
//! ([`Outcome`]). Everything that could leak or misuse a secret lives here too:
//! [`SecretBox`] seals connector secrets at rest, [`Secrets`] never prints them, and
//! the egress guard ([`is_forbidden_ip`]) keeps a tenant's connector from reaching
//! the SIEM's own network unless the operator allows it.

mod bounded;
mod config;
mod egress;
mod email;
mod error;
mod http;
mod kind;
mod notification;
mod secretbox;
mod setup;
mod slack;
mod syslog;
mod teams;
mod template;
mod tls;
mod webhook;

pub use config::{Config, Secrets, Settings};
pub use egress::is_forbidden_ip;
pub use error::ConnectorError;
pub use kind::Kind;
pub use notification::{Notification, Outcome};
pub use secretbox::SecretBox;
pub use setup::{build, validate};
pub use template::Template;

/// A boxed future that can be sent between threads: what [`Connector`] methods return
/// (the trait must stay object-safe, so no `async fn`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A connector type: one file per type implements it.
pub trait Connector: Send + Sync {
    /// Which type this is.
    fn kind(&self) -> Kind;
    /// Sends one notification (one attempt; the caller retries).
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Outcome>;
    /// Checks the target is reachable and usable without notifying anyone: webhook/slack/teams:
    /// resolve + egress check + TCP connect + TLS handshake; email: connect + EHLO (+STARTTLS/AUTH
    /// when configured) + QUIT; syslog: connect (TCP/TLS) or resolve+egress check (UDP).
    fn health<'a>(&'a self) -> BoxFuture<'a, Outcome>;
}

/// The version sent in `User-Agent` and the CEF header.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

//! `vigil connector …` and `vigil policy …`: connector configurations and
//! notification policies in the record store, as the local administrator
//! (the same store calls as `/api/v1/connectors` and `/api/v1/policies`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use supervisor::store::{
    ConnectorInfo, ConnectorsConfig, NameRef, NewConnector, NewPolicy, OrgRef, PageQuery, Policy, Principal, Trigger,
};

use super::admin::StoreArgs;

/// The `[connectors]` section of a `vigil run` config file, for commands
/// that reach a target (the egress guard is the administrator's choice).
#[derive(Args, Clone, Debug)]
pub struct ConfigArg {
    /// The `vigil run` config file whose `[connectors]` section applies
    /// (allow_private_targets); default: the built-in settings.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ConfigArg {
    fn load(&self) -> Result<ConnectorsConfig> {
        let Some(path) = &self.config else { return Ok(ConnectorsConfig::default()) };
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            connectors: ConnectorsConfig,
        }
        let text = super::rules::read_text(path)?;
        // Only `[connectors]` matters here; the rest is `vigil run`'s.
        let value: toml::Value = toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let mut only = toml::Table::new();
        if let Some(c) = value.get("connectors") {
            only.insert("connectors".into(), c.clone());
        }
        let file: File = toml::Value::Table(only)
            .try_into()
            .with_context(|| format!("invalid [connectors] in {}", path.display()))?;
        Ok(file.connectors)
    }
}

/// `vigil connector`.
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum ConnectorCommand {
    /// Add a connector configuration (secrets are sealed with the key in
    /// VIGIL_CONNECTOR_KEY or DATA_DIR/connectors.key).
    Add {
        /// Its name (unique).
        name: String,
        /// The org it belongs to (name or id); `Super/Global` makes it
        /// shared (grant it with --grant).
        #[arg(long)]
        org: String,
        /// webhook, slack, teams, email or syslog.
        #[arg(long = "type")]
        kind: String,
        /// The endpoint URL (webhook, slack, teams); sealed.
        #[arg(long)]
        url: Option<String>,
        /// The environment variable holding the secret: the HMAC key
        /// (webhook) or the SMTP password (email). Never on the command line.
        #[arg(long)]
        secret_env: Option<String>,
        /// An extra request header, `Name: value` (webhook; repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// A recipient (email; repeatable).
        #[arg(long = "to")]
        to: Vec<String>,
        /// The sender (email).
        #[arg(long)]
        from: Option<String>,
        /// The SMTP URL (email): `smtp://[user@]host[:587]` (STARTTLS),
        /// `smtps://[user@]host[:465]` or `smtp+plain://host[:25]`; sealed.
        #[arg(long)]
        smtp: Option<String>,
        /// Where to forward (syslog): tcp://HOST:PORT, udp://HOST:PORT or
        /// tls://HOST:PORT.
        #[arg(long)]
        target: Option<String>,
        /// A PEM file of the CAs to trust for the target's TLS.
        #[arg(long)]
        ca_file: Option<String>,
        /// Per-attempt timeout, milliseconds (default 10000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Make it the org's default for manual actions.
        #[arg(long)]
        default: bool,
        /// For a shared configuration: an org that may use it (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List connector configurations (secrets never shown).
    List {
        /// Only this org's (name or id).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check a configuration's target is reachable (TLS, login) without
    /// notifying anyone.
    Test {
        /// Its name or id.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a configuration (refused while a policy uses it).
    Remove {
        /// Its name or id.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `vigil policy`.
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum PolicyCommand {
    /// Add a notification policy.
    Add {
        /// Its name (unique).
        name: String,
        /// The org whose incidents it watches (name or id; Super/Global:
        /// every org).
        #[arg(long)]
        org: String,
        /// The connector configuration it sends with (name or id).
        #[arg(long)]
        connector: String,
        /// What sets it off: created, updated, status or severity
        /// (repeatable, or comma-separated).
        #[arg(long = "on", required = true, value_delimiter = ',')]
        on: Vec<String>,
        /// Incidents below this severity are ignored.
        #[arg(long)]
        min_severity: Option<String>,
        /// Only incidents of this rule (`*` at the end: a prefix).
        #[arg(long)]
        rule: Option<String>,
        /// Only incidents with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// `updated` fires when the hit count reaches this.
        #[arg(long)]
        count: Option<i64>,
        /// A template file: its first line is the title template, the rest
        /// the body template (minijinja; docs/connectors.md).
        #[arg(long)]
        template: Option<PathBuf>,
        /// At most one notification per incident in this long: 90, 90s,
        /// 10m, 1h, 1d.
        #[arg(long)]
        throttle: Option<String>,
        /// Gather incidents this long and send them as one digest: 90s,
        /// 10m, 1h.
        #[arg(long)]
        digest: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List notification policies.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a policy.
    Remove {
        /// Its name or id.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn org_ref(s: &str) -> OrgRef {
    OrgRef::parse(s)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// Seconds in `90`, `90s`, `10m`, `1h`, `1d`.
fn duration_secs(text: &str) -> Result<i64> {
    let (digits, unit) = match text.chars().last() {
        Some('s') => (&text[..text.len() - 1], 1),
        Some('m') => (&text[..text.len() - 1], 60),
        Some('h') => (&text[..text.len() - 1], 3_600),
        Some('d') => (&text[..text.len() - 1], 86_400),
        _ => (text, 1),
    };
    match digits.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n.saturating_mul(unit)),
        _ => bail!("--throttle {text:?}: write seconds, or a number with s, m, h or d (10m)"),
    }
}

/// The title (first line) and body (the rest) of a template file.
fn template_file(path: &std::path::Path) -> Result<(String, String)> {
    let text = super::rules::read_text(path)?;
    let (title, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    Ok((title.trim_end_matches('\r').to_owned(), body.trim_start_matches(['\r', '\n']).to_owned()))
}

/// Runs `vigil connector …`.
pub fn connector(cmd: ConnectorCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let cli = Principal::cli();
        match cmd {
            ConnectorCommand::Add {
                name,
                org,
                kind,
                url,
                secret_env,
                headers,
                to,
                from,
                smtp,
                target,
                ca_file,
                timeout_ms,
                default,
                grants,
                store,
            } => {
                let kind = connectors::Kind::parse(&kind).map_err(|e| anyhow::anyhow!("--type: {e}"))?;
                if url.is_some() && smtp.is_some() {
                    bail!("give --url (webhook, slack, teams) or --smtp (email), not both");
                }
                let secret = match &secret_env {
                    Some(var) => Some(std::env::var(var).with_context(|| format!("--secret-env: {var} is not set"))?),
                    None => None,
                };
                let mut header_map = BTreeMap::new();
                for h in &headers {
                    let (k, v) = h.split_once(':').with_context(|| format!("--header {h:?}: write Name: value"))?;
                    header_map.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                let new = NewConnector {
                    name,
                    org: Some(org_ref(&org)),
                    kind,
                    url: url.or(smtp),
                    secret,
                    headers: header_map,
                    to,
                    from,
                    target,
                    ca_file,
                    skip_tls_verify: false,
                    timeout_ms,
                    default,
                    orgs: grants.iter().map(|g| org_ref(g)).collect(),
                };
                let s = store.open_with(&Default::default(), Some(&ConnectorsConfig::default())).await?;
                let created = s.create_connector(&cli, new).await;
                s.close().await;
                let c = created.context("adding the connector")?;
                println!("added connector {} (id {}, {} to {}) for {}", c.name, c.id, c.kind.as_str(), c.target, c.org);
            }
            ConnectorCommand::List { org, store } => {
                let s = store.open_with(&Default::default(), Some(&ConnectorsConfig::default())).await?;
                let listed = every_page(async |q| s.list_connectors(&cli, q).await).await;
                s.close().await;
                let mut items = listed.context("listing connectors")?;
                if let Some(org) = org {
                    items.retain(|c| c.org.eq_ignore_ascii_case(&org) || c.org_id.to_string() == org);
                }
                print!("{}", connector_table(&items));
            }
            ConnectorCommand::Test { name, config, store } => {
                let settings = config.load()?;
                let s = store.open_with(&Default::default(), Some(&settings)).await?;
                let result = supervisor::notify::test_connector(&s, &cli, &NameRef::parse(&name)).await;
                s.close().await;
                let r = result.context("testing the connector")?;
                match (&r.error, r.ok) {
                    (_, true) => println!("{name}: ok ({} ms)", r.duration_ms),
                    (Some(e), false) => {
                        println!("{name}: {} ({} ms): {e}", r.outcome, r.duration_ms);
                        return Ok(ExitCode::FAILURE);
                    }
                    (None, false) => {
                        println!("{name}: {} ({} ms)", r.outcome, r.duration_ms);
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            ConnectorCommand::Remove { name, store } => {
                let s = store.open_with(&Default::default(), Some(&ConnectorsConfig::default())).await?;
                let removed = s.delete_connector(&cli, &NameRef::parse(&name)).await;
                s.close().await;
                removed.context("removing the connector")?;
                println!("removed connector {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `vigil policy …`.
pub fn policy(cmd: PolicyCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let cli = Principal::cli();
        match cmd {
            PolicyCommand::Add {
                name,
                org,
                connector,
                on,
                min_severity,
                rule,
                tag,
                count,
                template,
                throttle,
                digest,
                store,
            } => {
                let on = on
                    .iter()
                    .map(|t| Trigger::parse(t.trim()).map_err(|e| anyhow::anyhow!("--on: {e}")))
                    .collect::<Result<Vec<_>>>()?;
                let (title_template, body_template) = match &template {
                    Some(path) => {
                        let (t, b) = template_file(path)?;
                        (Some(t), Some(b))
                    }
                    None => (None, None),
                };
                let new = NewPolicy {
                    name,
                    org: Some(org_ref(&org)),
                    connector: NameRef::parse(&connector),
                    on,
                    min_severity,
                    rule,
                    tag,
                    min_count: count,
                    title_template,
                    body_template,
                    throttle_secs: throttle.as_deref().map(duration_secs).transpose()?,
                    digest_secs: digest.as_deref().map(duration_secs).transpose()?,
                };
                let s = store.open().await?;
                let created = s.create_policy(&cli, new).await;
                s.close().await;
                let p = created.context("adding the policy")?;
                println!("added policy {} (id {}) for {}: {} via {}", p.name, p.id, p.org, triggers(&p), p.connector);
            }
            PolicyCommand::List { store } => {
                let s = store.open().await?;
                let listed = every_page(async |q| s.list_policies(&cli, q).await).await;
                s.close().await;
                let items = listed.context("listing policies")?;
                print!("{}", policy_table(&items));
            }
            PolicyCommand::Remove { name, store } => {
                let s = store.open().await?;
                let removed = s.delete_policy(&cli, &NameRef::parse(&name)).await;
                s.close().await;
                removed.context("removing the policy")?;
                println!("removed policy {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Every page of a list, in order.
async fn every_page<T>(
    mut fetch: impl AsyncFnMut(PageQuery) -> supervisor::store::Result<supervisor::store::Page<T>>,
) -> supervisor::store::Result<Vec<T>> {
    let mut items = Vec::new();
    let mut page = PageQuery { limit: Some(1000), cursor: None };
    loop {
        let p = fetch(page.clone()).await?;
        items.extend(p.items);
        match p.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return Ok(items),
        }
    }
}

fn triggers(p: &Policy) -> String {
    p.on.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",")
}

fn connector_table(items: &[ConnectorInfo]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{:>5} {:<24} {:<20} {:<8} {:<40} STATE", "ID", "NAME", "ORG", "TYPE", "TARGET");
    for c in items {
        let mut state = vec![if c.enabled { "enabled" } else { "disabled" }];
        if c.default {
            state.push("default");
        }
        if c.shared {
            state.push("shared");
        }
        let _ = writeln!(
            out,
            "{:>5} {:<24} {:<20} {:<8} {:<40} {}",
            c.id,
            c.name,
            c.org,
            c.kind.as_str(),
            c.target,
            state.join(",")
        );
    }
    out
}

fn policy_table(items: &[Policy]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:<24} {:<20} {:<24} {:<24} {:<9} {:>8} STATE",
        "ID", "NAME", "ORG", "CONNECTOR", "ON", "SEVERITY", "THROTTLE"
    );
    for p in items {
        let _ = writeln!(
            out,
            "{:>5} {:<24} {:<20} {:<24} {:<24} {:<9} {:>7}s {}",
            p.id,
            p.name,
            p.org,
            p.connector,
            triggers(p),
            p.min_severity,
            p.throttle_secs,
            if p.enabled { "enabled" } else { "disabled" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_durations() {
        assert_eq!(duration_secs("90").ok(), Some(90));
        assert_eq!(duration_secs("10m").ok(), Some(600));
        assert_eq!(duration_secs("1h").ok(), Some(3600));
        assert_eq!(duration_secs("2d").ok(), Some(172_800));
        assert!(duration_secs("-1").is_err());
        assert!(duration_secs("ten").is_err());
    }
}

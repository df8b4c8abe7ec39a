//! `vigil org|user|token|node`: record-store administration from the shell.
//! The commands call the same store functions as the API, acting as the
//! local administrator (whoever can open the database), and are audited as
//! `cli`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use supervisor::licence::{self, LicenceStatus};
use supervisor::store::{
    Device, DeviceQuery, DeviceSettings, NewOrg, NewToken, NewUser, NodeInfo, OrgRef, Principal, RoleRef, Store,
    StoreConfig,
};

/// Where the record store is.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Data directory holding the embedded SQLite store (`vigil.db`).
    #[arg(long, default_value = "vigil-data", env = "VIGIL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A database URL instead (postgres://USER:PASSWORD@HOST/DB or sqlite://PATH).
    #[arg(long, env = "VIGIL_DATABASE")]
    pub database: Option<String>,
    /// The licence file; its EPS bound the sum of org EPS limits and
    /// that of node guarantees (without one: the unlicensed allowance).
    #[arg(long, alias = "licence", env = "VIGIL_LICENSE")]
    pub license: Option<PathBuf>,
}

impl StoreArgs {
    /// The licence in effect.
    pub fn licence(&self) -> LicenceStatus {
        let today = licence::date_of(collector::Clock::now(&collector::SystemClock));
        LicenceStatus::load(self.license.as_deref(), &licence::trusted_keys(), today)
    }

    /// Opens the store (creating and migrating it if needed).
    pub async fn open(&self) -> Result<Store> {
        self.open_with_devices(&collector::devices::DeviceConfig::default()).await
    }

    /// Opens the store, running the device inventory as `devices` says
    /// under the licence's device limit.
    pub async fn open_with_devices(&self, devices: &collector::devices::DeviceConfig) -> Result<Store> {
        self.open_with(devices, None).await
    }

    /// Opens the store with the device inventory's settings and, when
    /// given, the connectors' (their sealing key from `VIGIL_CONNECTOR_KEY`
    /// or the data directory).
    pub async fn open_with(
        &self,
        devices: &collector::devices::DeviceConfig,
        connectors: Option<&supervisor::store::ConnectorsConfig>,
    ) -> Result<Store> {
        let licence = self.licence();
        let connectors = match connectors {
            Some(c) => c.settings(&self.data_dir).context("[connectors]")?,
            None => supervisor::store::ConnectorSettings::default(),
        };
        let config = StoreConfig {
            licence_eps: licence.licensed_eps(),
            devices: DeviceSettings::new(devices, licence.device_limit()),
            connectors,
            ..StoreConfig::default()
        };
        let clock = Arc::new(collector::SystemClock);
        match &self.database {
            Some(url) => Store::open(url, clock, config)
                .await
                .with_context(|| format!("cannot open {}", parsers::redact_url(url))),
            None => Store::open_data_dir(&self.data_dir, clock, config)
                .await
                .with_context(|| format!("cannot open the store in {}", self.data_dir.display())),
        }
    }

    /// Where the store is, for messages (passwords hidden).
    pub fn describe(&self) -> String {
        match &self.database {
            Some(url) => parsers::redact_url(url),
            None => format!("sqlite {}", self.data_dir.join("vigil.db").display()),
        }
    }
}

/// `vigil org`.
#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an org (tenant).
    Create {
        /// Its name (1-128 characters, unique).
        name: String,
        /// A description (at most 256 characters).
        #[arg(long, default_value = "")]
        description: String,
        /// Its EPS limit.
        #[arg(long)]
        eps_limit: Option<i64>,
        /// A reporter IP range (CIDR) whose events belong to it; repeatable.
        #[arg(long = "ip-range")]
        ip_ranges: Vec<String>,
        /// Days its events are kept (default 90).
        #[arg(long)]
        retention_days: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set how many days an org's events are kept (older days are deleted
    /// by the daily retention pass).
    Retention {
        /// Its name.
        name: String,
        /// Days to keep (1-36500).
        days: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List orgs.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable an org: its events are no longer accepted.
    Disable {
        /// Its name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enable an org.
    Enable {
        /// Its name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `vigil user`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// Its name (unique).
        name: String,
        /// Its org (Super/Global for provider-side users).
        #[arg(long)]
        org: String,
        /// Its role: admin, analyst, viewer, or a custom role of the org.
        #[arg(long)]
        role: String,
        /// For Super/Global users: an org they may see (repeatable; default all).
        #[arg(long = "scope")]
        scope: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `vigil token`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user; prints the secret alone on stdout.
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in days (default: no expiry).
        #[arg(long)]
        expires_in_days: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `vigil node`.
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Enrol a collector or worker: register it (unregistered until it
    /// connects) and write its NATS credentials, signed with the cluster's
    /// key. A collector added with --org may only ever send that org's
    /// events; the server enforces it.
    Add {
        /// The node's name (letters, digits, '-', '_').
        name: String,
        /// `collector` or `worker`.
        #[arg(long, value_parser = ["collector", "worker"])]
        role: String,
        /// The org (name or id) every event of this collector belongs to.
        #[arg(long)]
        org: Option<String>,
        /// The EPS this collector is always allocated.
        #[arg(long, value_name = "N")]
        guaranteed_eps: Option<u64>,
        /// The key directory of `vigil cluster init`.
        #[arg(long, value_name = "DIR", env = "VIGIL_CLUSTER_KEYS")]
        keys: PathBuf,
        /// Where to write the credentials (default NAME.creds; mode 0600).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a node from the registry and revoke its credentials: the
    /// supervisor pushes the revocation to NATS, which disconnects the node
    /// and refuses it from then on.
    Remove {
        /// The node's name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the cluster's nodes: role, state and since when, last
    /// heartbeat, guaranteed EPS, and why the node is in its state.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a node's guaranteed EPS; a node not heard from yet is
    /// registered (as an unregistered collector).
    Set {
        /// The node's name.
        name: String,
        /// The EPS it is always allocated, or `none` to remove the
        /// guarantee. All guarantees together may not exceed the licence.
        #[arg(long, value_name = "N|none", value_parser = guarantee)]
        guaranteed_eps: Guarantee,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Put a node in maintenance (its heartbeats and their absence no
    /// longer change its state) or take it out.
    Maintenance {
        /// The node's name.
        name: String,
        /// `on` or `off`.
        #[arg(value_enum)]
        switch: Switch,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A guarantee as given on the command line: EPS, or none.
#[derive(Clone, Copy, Debug)]
pub struct Guarantee(Option<u64>);

fn guarantee(text: &str) -> Result<Guarantee, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Guarantee(None));
    }
    text.parse::<u64>().map(|n| Guarantee(Some(n))).map_err(|_| format!("{text:?} is not a number of EPS or `none`"))
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Switch {
    /// Into maintenance.
    On,
    /// Out of maintenance.
    Off,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs `vigil org …`.
pub fn org(cmd: OrgCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let cli = Principal::cli();
        match cmd {
            OrgCommand::Create { name, description, eps_limit, ip_ranges, retention_days, store } => {
                let s = store.open().await?;
                let org =
                    s.create_org(&cli, NewOrg { name, description, eps_limit, ip_ranges, retention_days }).await?;
                println!("created org {} (id {})", org.name, org.id);
                s.close().await;
            }
            OrgCommand::Retention { name, days, store } => {
                let s = store.open().await?;
                let patch = supervisor::store::OrgPatch { retention_days: Some(days), ..Default::default() };
                let org = s.update_org(&cli, &OrgRef::Name(name), patch).await?;
                println!("org {} keeps its events {} days", org.name, org.retention_days);
                s.close().await;
            }
            OrgCommand::List { store } => {
                let s = store.open().await?;
                let orgs = s.list_orgs(&cli).await?;
                println!(
                    "{:>5}  {:<32} {:<8} {:>9} {:>9}  IP RANGES",
                    "ID", "NAME", "ENABLED", "EPS LIMIT", "RETENTION"
                );
                for o in orgs.items {
                    let limit = o.eps_limit.map_or_else(|| "-".to_owned(), |l| l.to_string());
                    let ranges = if o.ip_ranges.is_empty() { "-".to_owned() } else { o.ip_ranges.join(",") };
                    println!(
                        "{:>5}  {:<32} {:<8} {limit:>9} {:>8}d  {ranges}",
                        o.id,
                        o.name,
                        if o.enabled { "yes" } else { "no" },
                        o.retention_days
                    );
                }
                s.close().await;
            }
            OrgCommand::Disable { name, store } => set_enabled(&store, &name, false).await?,
            OrgCommand::Enable { name, store } => set_enabled(&store, &name, true).await?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn set_enabled(store: &StoreArgs, name: &str, enabled: bool) -> Result<()> {
    let s = store.open().await?;
    let org = s.set_org_enabled(&Principal::cli(), &OrgRef::Name(name.to_owned()), enabled).await?;
    println!("org {} is {}", org.name, if org.enabled { "enabled" } else { "disabled" });
    s.close().await;
    Ok(())
}

/// Runs `vigil user …`.
pub fn user(cmd: UserCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            UserCommand::Create { name, org, role, scope, store } => {
                let s = store.open().await?;
                let new = NewUser {
                    name,
                    org: OrgRef::Name(org),
                    role: RoleRef::Name(role),
                    scope: if scope.is_empty() { None } else { Some(scope.into_iter().map(OrgRef::Name).collect()) },
                };
                let user = s.create_user(&Principal::cli(), new).await?;
                println!("created user {} (id {}) in {} as {}", user.name, user.id, user.org, user.role);
                s.close().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `vigil token …`.
pub fn token(cmd: TokenCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            TokenCommand::Create { user, name, expires_in_days, store } => {
                let s = store.open().await?;
                let cli = Principal::cli();
                let user_id = s.user_id_by_name(&cli, &user).await.with_context(|| format!("user {user:?}"))?;
                let created = s.create_token(&cli, NewToken { name, user_id: Some(user_id), expires_in_days }).await?;
                println!("{}", created.token_secret);
                s.close().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `vigil node …`.
pub fn node(cmd: NodeCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            NodeCommand::Add { name, role, org, guaranteed_eps, keys, out, store } => {
                let keys = cluster::auth::ClusterKeys::load(&keys).context("--keys")?;
                let role = parsers::NodeRole::parse(&role).context("--role: collector or worker")?;
                let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
                let s = store.open().await?;
                s.set_cluster_keys(Arc::new(keys));
                let new = supervisor::store::NewNode { name: name.clone(), role, org: org.as_deref().map(OrgRef::parse) };
                let added = s.add_node_as(&Principal::cli(), new, guaranteed_eps).await;
                s.close().await;
                let (node, creds) = added.with_context(|| format!("node {name:?}"))?;
                creds.write(&out)?;
                let bound = node.org_id.map(|o| format!(", bound to org {o}")).unwrap_or_default();
                let slot = node.slot.map(|s| format!(", event-id slot {s}")).unwrap_or_default();
                let eps = node.guaranteed_eps.map(|e| format!(", guaranteed {e} EPS")).unwrap_or_default();
                println!("node {name} enrolled as a {}{bound}{slot}{eps}: credentials in {}", node.role, out.display());
                println!("start it with: vigil {} --nats URL --creds {}", node.role, out.display());
            }
            NodeCommand::Remove { name, store } => {
                let s = store.open().await?;
                let removed = s.remove_node_as(&Principal::cli(), &name).await;
                s.close().await;
                let node = removed.with_context(|| format!("node {name:?}"))?;
                if node.enrolled {
                    println!(
                        "node {name} removed; its credentials are revoked (the supervisor disconnects it within a second)"
                    );
                } else {
                    println!("node {name} removed from the registry");
                }
            }
            NodeCommand::List { store } => {
                let s = store.open().await?;
                let nodes = s.list_nodes().await;
                s.close().await;
                print!("{}", node_table(&nodes?));
            }
            NodeCommand::Set { name, guaranteed_eps: Guarantee(eps), store } => {
                let s = store.open().await?;
                let node = s.set_node_guarantee(&name, eps).await;
                s.close().await;
                let node = node.with_context(|| format!("node {name:?}"))?;
                match node.guaranteed_eps {
                    Some(eps) => println!("node {} ({}) is guaranteed {eps} EPS", node.name, node.state),
                    None => println!("node {} ({}) has no guaranteed EPS", node.name, node.state),
                }
            }
            NodeCommand::Maintenance { name, switch, store } => {
                let s = store.open().await?;
                let node = s.set_node_maintenance(&name, matches!(switch, Switch::On)).await;
                s.close().await;
                let node = node.with_context(|| format!("node {name:?}"))?;
                match node.maintenance {
                    true => println!("node {} is in maintenance", node.name),
                    false => println!("node {} is out of maintenance: {}", node.name, node.state),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `vigil device`.
#[derive(Subcommand)]
pub enum DeviceCommand {
    /// List the devices that report: org, identity, family, last seen,
    /// events, whether silent and whether within the licence's device limit.
    List {
        /// Only this org's devices (name or id).
        #[arg(long)]
        org: Option<String>,
        /// Only devices that stopped reporting.
        #[arg(long)]
        silent: bool,
        /// Only devices of this family (openssh, fortigate, ...).
        #[arg(long)]
        family: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Runs `vigil device`.
pub fn device(cmd: DeviceCommand) -> Result<ExitCode> {
    runtime()?.block_on(async {
        match cmd {
            DeviceCommand::List { org, silent, family, store } => {
                let s = store.open().await?;
                let mut devices = Vec::new();
                let mut query = DeviceQuery {
                    org,
                    family,
                    silent: silent.then_some(true),
                    limit: Some(1000),
                    ..DeviceQuery::default()
                };
                let listed = loop {
                    match s.list_devices(&Principal::cli(), query.clone()).await {
                        Ok(page) => {
                            devices.extend(page.items);
                            match page.next_cursor {
                                Some(c) => query.cursor = Some(c),
                                None => break Ok(()),
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                s.close().await;
                listed.context("listing devices")?;
                print!("{}", device_table(&devices));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The `vigil device list` table.
fn device_table(devices: &[Device]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6} {:<20} {:<32} {:<14} {:<24} {:>12} {:<8} LIMIT",
        "ID", "ORG", "DEVICE", "FAMILY", "LAST SEEN", "EVENTS", "STATE"
    );
    for d in devices {
        let shown = match &d.name {
            Some(name) => format!("{name} ({})", d.identity),
            None => d.identity.clone(),
        };
        let state = if d.retired {
            "retired"
        } else if d.silent {
            "silent"
        } else if d.active {
            "active"
        } else {
            "inactive"
        };
        let limit = if !d.active {
            "-"
        } else if d.within_limit {
            "within"
        } else {
            "beyond"
        };
        let family = if d.family.is_empty() { "-" } else { &d.family };
        let _ = writeln!(
            out,
            "{:>6} {:<20} {shown:<32} {family:<14} {:<24} {:>12} {state:<8} {limit}",
            d.id, d.org, d.last_seen, d.events
        );
    }
    let _ = writeln!(out, "{} devices", devices.len());
    out
}

/// The `vigil node list` table.
fn node_table(nodes: &[NodeInfo]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:<12} {:<24} {:<24} {:>14}  REASON",
        "NAME", "ROLE", "STATE", "SINCE", "LAST SEEN", "GUARANTEED EPS"
    );
    for n in nodes {
        let seen = n.last_seen.as_deref().unwrap_or("never");
        let eps = n.guaranteed_eps.map_or_else(|| "-".to_owned(), |e| e.to_string());
        let reason = if n.state_reason.is_empty() { "-" } else { &n.state_reason };
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<12} {:<24} {seen:<24} {eps:>14}  {reason}",
            n.name.as_str(),
            n.role.as_str(),
            n.state.as_str(),
            n.state_since
        );
    }
    out
}

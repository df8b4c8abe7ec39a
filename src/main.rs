//! The `vigil` binary: thin CLI dispatch. Each subcommand lives in
//! `commands/`; errors are printed with their chain and exit with status 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// jemalloc returns freed pages to the system as they decay, so the
/// resident memory of `vigil run` comes back down after a burst and stays
/// flat while idle; glibc's allocator kept gigabytes after the load was
/// gone, and mimalloc's crept up while idle (see `benches/memory.py`).
/// They decay in one second rather than jemalloc's ten
/// (`.cargo/config.toml` builds that default in): the peak under load is
/// about a tenth lower for the same CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// vigil: a multi-tenant SIEM pipeline. Collects syslog (RFC 5424/3164,
/// CEF, LEEF), stores events and correlates them into incidents.
#[derive(Parser)]
#[command(name = "vigil", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse a log file into events, one JSON object per line on stdout.
    Parse(commands::parse::ParseArgs),
    /// Licences: create signing keys, sign, verify, and simulate EPS allocation.
    #[command(alias = "licence", subcommand)]
    License(commands::license::LicenseCommand),
    /// Correlation rules: check rule files, test rules against a log file.
    #[command(subcommand)]
    Rules(commands::rules::RulesCommand),
    /// Run every role in one process: syslog in, events stored and
    /// correlated, incidents in the API. Works with no configuration.
    Run(commands::run::RunArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Replay a log file to a syslog listener at a given rate (load generator).
    Send(commands::send::SendArgs),
    /// End-to-end benchmark: sustained EPS and event→incident latency of
    /// `vigil run`, compared in the same run with syslog-ng if installed.
    Bench(commands::bench::BenchArgs),
    /// The supervisor role: record store and incident API; with --nats, the
    /// cluster's supervisor (EPS allocation across collectors, node registry,
    /// incidents from the workers).
    Supervisor(commands::supervisor::SupervisorArgs),
    /// A cluster collector: syslog in, parsed, org-tagged and admitted events
    /// out to the NATS JetStream event stream.
    Collector(commands::cluster::CollectorArgs),
    /// A cluster worker: stores and correlates the event stream partitions it owns.
    Worker(commands::cluster::WorkerArgs),
    /// Orgs (tenants) in the record store.
    #[command(subcommand)]
    Org(commands::admin::OrgCommand),
    /// Users in the record store.
    #[command(subcommand)]
    User(commands::admin::UserCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(commands::admin::TokenCommand),
    /// Cluster set-up: keys, certificates and the nats-server configuration.
    #[command(subcommand)]
    Cluster(commands::cluster_init::ClusterCommand),
    /// The cluster's nodes: enrol and remove them, list them, set
    /// guaranteed EPS, maintenance.
    #[command(subcommand)]
    Node(commands::admin::NodeCommand),
    /// The device inventory: which devices report, which went silent.
    #[command(subcommand)]
    Device(commands::admin::DeviceCommand),
    /// Connector configurations: where incidents are sent (webhook,
    /// Slack, Teams, e-mail, syslog/CEF).
    #[command(subcommand)]
    Connector(commands::connector::ConnectorCommand),
    /// Notification policies: which incident changes go to which connector.
    #[command(subcommand)]
    Policy(commands::connector::PolicyCommand),
    /// Search stored events: SQL or filters, through the API or on a data
    /// directory.
    Search(commands::search::SearchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented `vigil run` config file.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => commands::parse::run(args).map(|()| ExitCode::SUCCESS),
        Command::License(cmd) => commands::license::run(cmd),
        Command::Rules(cmd) => commands::rules::run(cmd),
        Command::Run(args) => commands::run::run(args),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", commands::run::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Send(args) => commands::send::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Supervisor(args) => commands::supervisor::run(args),
        Command::Collector(args) => commands::cluster::collector(args),
        Command::Worker(args) => commands::cluster::worker(args),
        Command::Org(cmd) => commands::admin::org(cmd),
        Command::User(cmd) => commands::admin::user(cmd),
        Command::Token(cmd) => commands::admin::token(cmd),
        Command::Cluster(cmd) => commands::cluster_init::run(cmd),
        Command::Node(cmd) => commands::admin::node(cmd),
        Command::Device(cmd) => commands::admin::device(cmd),
        Command::Connector(cmd) => commands::connector::connector(cmd),
        Command::Policy(cmd) => commands::connector::policy(cmd),
        Command::Search(args) => commands::search::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use tikv_jemalloc_ctl::{Access, AsName};

    /// The decay built in by `.cargo/config.toml` is the one in force
    /// (a build without it would keep jemalloc's ten seconds).
    #[test]
    fn freed_pages_decay_in_one_second() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            eprintln!("skipped: _RJEM_MALLOC_CONF overrides the built-in setting");
            return;
        }
        let ms: isize = b"opt.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(ms, 1000);
    }
}

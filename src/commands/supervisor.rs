//! `vigil supervisor`: the supervisor role on its own: the record store and
//! the incident API; with `--nats`, the cluster's supervisor (EPS loop over
//! every collector, node registry, detections from the workers; see
//! `commands::cluster`). On a store without users it creates `admin` and
//! prints its token once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use super::admin::StoreArgs;

/// Arguments of `vigil supervisor`.
#[derive(Args)]
pub struct SupervisorArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address for the HTTP API (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_addr: SocketAddr,
    #[command(flatten)]
    cluster: super::cluster::ClusterArgs,
}

/// Runs the API until SIGTERM or Ctrl-C.
pub fn run(args: SupervisorArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")?;
    rt.block_on(serve(args))
}

async fn serve(mut args: SupervisorArgs) -> Result<ExitCode> {
    let stop = Shutdown::listen()?;
    // A cluster supervisor's config file may name the store and the
    // licence; flags and the environment win.
    let cluster = super::cluster::supervisor_config(&args.cluster, &args.store)?;
    if let Some(config) = &cluster {
        if args.store.database.is_none() {
            args.store.database = config.database.as_ref().map(|d| d.0.clone());
        }
        if args.store.license.is_none() {
            args.store.license.clone_from(&config.license);
        }
    }
    let licence = args.store.licence();
    let devices = cluster.as_ref().map(|c| c.devices.clone()).unwrap_or_default();
    let connectors = cluster.as_ref().map(|c| c.connectors.clone()).unwrap_or_default();
    let store = Arc::new(args.store.open_with(&devices, Some(&connectors)).await?);
    let admin_token = std::env::var("VIGIL_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the API", args.api_addr))?;
    let addr = listener.local_addr().context("listener address")?;
    println!("vigil supervisor {}", env!("CARGO_PKG_VERSION"));
    println!("licence: {}", licence.describe());
    println!("store: {} ({})", args.store.describe(), store.backend().as_str());
    if let Some(token) = store.bootstrap_admin(admin_token.as_deref()).await? {
        if admin_token.is_some() {
            println!("admin: created user admin in Super/Global with the token from VIGIL_ADMIN_TOKEN");
        } else {
            println!("admin token (shown once; keep it): {token}");
        }
    }
    if let Some(config) = cluster {
        return super::cluster::run_supervisor(config, store, listener, stop).await;
    }
    println!("api: http://{addr}/api/v1 (OpenAPI: http://{addr}/api/v1/openapi.json)");
    // The API-only supervisor searches the events under its data directory.
    let search = search::SearchSettings::default().to_config(&args.store.data_dir)?;
    println!("events: {} (search)", search.root.display());
    let app = supervisor::api::router_with_search(store.clone(), Some(search::Searcher::new(search)?));
    axum::serve(listener, app).with_graceful_shutdown(stop.wait()).await.context("API server")?;
    store.close().await;
    println!("vigil supervisor: stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and Ctrl-C, listened for from the moment this is made.
///
/// Each role makes it before it prints that it is ready: a signal that
/// comes after the readiness lines then stops the role gracefully, where a
/// handler installed only when the role starts waiting would leave a window
/// in which the default action kills the process mid-write.
pub struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers now (inside the runtime).
    pub fn listen() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGTERM or Ctrl-C since [`Shutdown::listen`].
    pub async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sigterm_between_listen_and_wait_is_kept_not_fatal() {
        // Without the handler this SIGTERM would end the test process.
        let stop = Shutdown::listen().unwrap();
        let pid = std::process::id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tokio::time::timeout(std::time::Duration::from_secs(10), stop.wait())
            .await
            .expect("the SIGTERM sent before waiting was lost");
    }
}

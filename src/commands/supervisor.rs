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
        return super::cluster::run_supervisor(config, store, listener).await;
    }
    println!("api: http://{addr}/api/v1 (OpenAPI: http://{addr}/api/v1/openapi.json)");
    // The API-only supervisor searches the events under its data directory.
    let search = search::SearchSettings::default().to_config(&args.store.data_dir)?;
    println!("events: {} (search)", search.root.display());
    let app = supervisor::api::router_with_search(store.clone(), Some(search::Searcher::new(search)?));
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await.context("API server")?;
    store.close().await;
    println!("vigil supervisor: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

//! Wiring: from a [`Config`] to running listeners, and the shutdown sequence.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wsgate_config::{Config, LogFormat};

use crate::app::{self, AppState};
use crate::auth::Authenticator;
use crate::broker::{Broker, LocalBroker, NatsBroker};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::origin::AllowedOrigins;
use crate::shutdown;

/// How often secret files are checked for rotation.
const SECRET_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Installs the tracing subscriber: text or JSON lines on stderr, filtered by
/// `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The open-file limit, raised to its hard maximum first.
fn open_file_limit() -> Option<u64> {
    let nofile = rlimit::Resource::NOFILE;
    let (soft, hard) = nofile.get().ok()?;
    if soft < hard && nofile.set(hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// `limits.max_connections`, capped below the open-file limit (keeping room for
/// listeners, NATS and files).
fn connection_cap(configured: usize) -> usize {
    const RESERVED: u64 = 64;
    match open_file_limit() {
        Some(limit) if (configured as u64).saturating_add(RESERVED) > limit => {
            let capped = limit.saturating_sub(RESERVED).max(1) as usize;
            warn!(
                configured,
                capped,
                open_file_limit = limit,
                "limits.max_connections capped below the open-file limit"
            );
            capped
        }
        _ => configured,
    }
}

/// Connections a listener queues before `accept`: bursts of reconnects after a
/// drain arrive faster than one accept loop takes them (the kernel caps it at
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`.
fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the gateway until SIGTERM or Ctrl-C, then drains and returns.
///
/// # Errors
/// Startup failures: unreadable keys, an address in use, an invalid option.
pub async fn run(config: Config) -> anyhow::Result<()> {
    for warning in &config.warnings {
        warn!(%warning, "configuration");
    }
    let max_connections = connection_cap(config.limits.max_connections);
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(config.node.clone(), metrics.clone());
    let background = CancellationToken::new();
    let tracker = TaskTracker::new();
    let broker: Arc<dyn Broker> = match &config.nats_url {
        Some(url) => {
            NatsBroker::connect(
                url,
                &config,
                hub.clone(),
                metrics.clone(),
                &tracker,
                background.clone(),
            )
            .await?
        }
        None => {
            metrics.broker_connected.set(1);
            LocalBroker::new(hub.clone(), config.namespaces.clone())
        }
    };
    let auth = Arc::new(Authenticator::new(config.auth.clone()).context("auth")?);
    auth.clone()
        .spawn_reloader(SECRET_RELOAD_INTERVAL, background.clone());
    let origins = AllowedOrigins::new(&config.allowed_origins)?;

    let public_listener =
        bind(config.listen).with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let admin_listener = match config.admin_listen {
        Some(address) => {
            Some(bind(address).with_context(|| format!("admin_listen: cannot bind {address}"))?)
        }
        None => None,
    };
    let public_address = public_listener.local_addr()?;
    let admin_address = match &admin_listener {
        Some(listener) => listener.local_addr()?,
        None => public_address,
    };
    let single_node = config.nats_url.is_none();
    let node = config.node.clone();
    let state = AppState::new(
        config,
        hub,
        broker.clone(),
        auth,
        metrics,
        origins,
        max_connections,
    );

    let stop = CancellationToken::new();
    let mut public_router = app::public(state.clone());
    if admin_listener.is_none() {
        public_router = public_router.merge(app::admin(state.clone()));
    }
    let nodelay = |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    };
    let public_server = tokio::spawn(
        axum::serve(public_listener.tap_io(nodelay), public_router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let admin_server = admin_listener.map(|listener| {
        tokio::spawn(
            axum::serve(listener.tap_io(nodelay), app::admin(state.clone()))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        )
    });

    info!(%public_address, %admin_address, node, single_node, max_connections, "wsgate started");
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "wsgate listening: public={public_address} admin={admin_address}"
        );
        let _ = writeln!(
            stdout,
            "connect a WebSocket client to ws://{public_address}/ws"
        );
        let _ = stdout.flush();
    }

    tokio::select! {
        () = shutdown::signal() => info!("shutdown signal received"),
        result = public_server => {
            anyhow::bail!("public listener stopped: {result:?}");
        }
    }
    shutdown::drain(&state).await;
    broker.leave_cluster().await;
    stop.cancel();
    background.cancel();
    if let Some(server) = admin_server {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    info!("stopped");
    Ok(())
}

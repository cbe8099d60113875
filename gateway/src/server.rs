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
use crate::listener::{self, SocketLimits};
use crate::metrics::Metrics;
use crate::origin::AllowedOrigins;
use crate::shutdown;

/// How often secret files are checked for rotation.
const SECRET_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Installs the tracing subscriber: text or JSON lines on stderr, filtered by
/// `RUST_LOG` (default `info`; see [`log_filter`]).
pub fn init_tracing(format: LogFormat) {
    let directives = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Settings that are valid but open the gateway wider than a production user
/// likely means: anonymous access to every room from any web page.
fn exposure_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.allow_anonymous
        && config
            .auth
            .anonymous_rooms
            .iter()
            .any(|pattern| pattern == "**")
        && config.allowed_origins.is_empty()
    {
        warnings.push(
            "anonymous access is on for every room (auth.anonymous_rooms = [\"**\"]) and any \
             web page may connect (allowed_origins is empty): fine for a demo, not for production"
                .to_owned(),
        );
    }
    warnings
}

/// Libraries that log every frame or request at debug and trace, tokens and
/// API keys included: they stay at `info` unless `RUST_LOG` names them.
const QUIET_CRATES: [&str; 4] = ["tungstenite", "tokio_tungstenite", "hyper", "hyper_util"];

/// The filter directives for `RUST_LOG`: as given (default `info`), with
/// [`QUIET_CRATES`] held at `info` when the default level is more verbose and
/// the variable does not name them.
fn log_filter(rust_log: Option<&str>) -> String {
    let given = rust_log.map(str::trim).filter(|text| !text.is_empty());
    let mut directives = given.unwrap_or("info").to_owned();
    let default_level = directives
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.contains('='))
        .filter_map(|directive| directive.parse::<tracing::Level>().ok())
        .next_back();
    if default_level.is_some_and(|level| level > tracing::Level::INFO) {
        let named = |name: &str| {
            directives.split(',').any(|directive| {
                let target = directive.split(['=', '[']).next().unwrap_or("").trim();
                target == name || target.starts_with(&format!("{name}::"))
            })
        };
        let quiet: Vec<&str> = QUIET_CRATES
            .into_iter()
            .filter(|name| !named(name))
            .collect();
        for name in quiet {
            directives.push_str(&format!(",{name}=info"));
        }
    }
    directives
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

/// File descriptors kept out of the public listener's reach: the admin listener and its
/// sockets, NATS, key and config files, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Public sockets the gateway may hold at once: the open-file limit less
/// [`RESERVED_DESCRIPTORS`]; no bound when the limit is unknown.
fn socket_budget(open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(1)).unwrap_or(usize::MAX)
        }
        None => usize::MAX,
    }
}

/// `limits.max_connections`, capped below the open-file limit (keeping
/// [`RESERVED_DESCRIPTORS`] for listeners, NATS and files).
fn connection_cap(configured: usize, open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) if (configured as u64).saturating_add(RESERVED_DESCRIPTORS) > limit => {
            let capped = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1) as usize;
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
    for warning in exposure_warnings(&config) {
        warn!(%warning, "configuration");
    }
    let open_file_limit = open_file_limit();
    let max_connections = connection_cap(config.limits.max_connections, open_file_limit);
    let socket_limits = SocketLimits {
        handshake_timeout: config.limits.handshake_timeout,
        // As many sockets may wait for their handshake as may be connected.
        handshakes: max_connections,
        sockets: socket_budget(open_file_limit),
    };
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
            LocalBroker::with_memory_budget(
                hub.clone(),
                config.namespaces.clone(),
                config.history.memory_max_bytes,
                metrics.clone(),
            )
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
    crate::pusher::install(&state).context("pusher")?;
    let mut public_router = app::public(state.clone());
    if admin_listener.is_none() {
        public_router = public_router.merge(app::admin(state.clone()));
    }
    let nodelay = |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    };
    let public_server = tokio::spawn(listener::serve(
        public_listener,
        public_router,
        socket_limits,
        state.metrics.clone(),
        stop.clone(),
    ));
    let admin_server = admin_listener.map(|listener| {
        tokio::spawn(
            axum::serve(listener.tap_io(nodelay), app::admin(state.clone()))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        )
    });

    info!(
        %public_address,
        %admin_address,
        node,
        single_node,
        max_connections,
        socket_budget = socket_limits.sockets,
        "wsgate started"
    );
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

#[cfg(test)]
mod tests {
    use super::{connection_cap, exposure_warnings, log_filter, socket_budget};

    /// The public sockets and the connections both stay 64 descriptors below the open-file
    /// limit; without a known limit nothing is capped.
    #[test]
    fn sockets_and_connections_keep_a_reserve_below_the_open_file_limit() {
        assert_eq!(socket_budget(Some(256)), 192);
        assert_eq!(socket_budget(Some(10)), 1, "never zero");
        assert_eq!(socket_budget(None), usize::MAX);
        assert_eq!(connection_cap(10_000, Some(256)), 192);
        assert_eq!(connection_cap(100, Some(256)), 100);
        assert_eq!(connection_cap(10_000, None), 10_000);
    }

    fn config(args: &[&str], toml: &str) -> wsgate_config::Config {
        let mut argv = vec!["wsgate"];
        argv.extend_from_slice(args);
        let args = <wsgate_config::Args as clap::Parser>::try_parse_from(argv).unwrap();
        let text = format!("version = 1\n{toml}");
        wsgate_config::Config::from_args_and_toml(args, &text, std::path::Path::new("t.toml"))
            .unwrap()
    }

    /// Anonymous access to every room from any origin draws one warning; an
    /// origin list, narrower anonymous rooms or no anonymous access draw none.
    #[test]
    fn anonymous_access_everywhere_from_anywhere_is_warned_about() {
        assert_eq!(
            exposure_warnings(&config(&["--allow-anonymous"], "")).len(),
            1
        );
        assert!(exposure_warnings(&config(&[], "")).is_empty());
        assert!(
            exposure_warnings(&config(
                &["--allow-anonymous"],
                "allowed_origins = [\"https://app.example.com\"]\n"
            ))
            .is_empty()
        );
        assert!(
            exposure_warnings(&config(
                &["--allow-anonymous"],
                "[auth]\nanonymous_rooms = [\"public:*\"]\n"
            ))
            .is_empty()
        );
    }

    /// `RUST_LOG=trace` does not turn on the frame-by-frame logs of tungstenite and
    /// hyper (which would print tokens); naming them does, and quieter levels are
    /// left alone.
    #[test]
    fn verbose_levels_keep_the_transport_crates_at_info() {
        assert_eq!(log_filter(None), "info");
        assert_eq!(log_filter(Some("warn")), "warn");
        assert_eq!(
            log_filter(Some("trace")),
            "trace,tungstenite=info,tokio_tungstenite=info,hyper=info,hyper_util=info"
        );
        assert_eq!(
            log_filter(Some("debug,tungstenite=trace")),
            "debug,tungstenite=trace,tokio_tungstenite=info,hyper=info,hyper_util=info"
        );
        assert_eq!(
            log_filter(Some("wsgate=trace")),
            "wsgate=trace",
            "the default level stays info"
        );
    }
}

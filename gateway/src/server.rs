//! Wiring: from a [`Config`] to running listeners, and the shutdown sequence.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
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
/// `RUST_LOG` (default `info`; see [`log_filter`]). Text lines carry ANSI colours
/// only when stderr is a terminal: a log collector or a file gets plain text.
pub fn init_tracing(format: LogFormat) {
    let directives = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// What the gateway prints on stdout once it listens: the listening line the
/// test harness and scripts read, the demo page's address when `demo` is on, and
/// where to connect, or, when no token key is configured and anonymous access is
/// off, that every connection will be refused.
fn startup_lines(config: &Config, public: SocketAddr, admin: SocketAddr) -> Vec<String> {
    let mut lines = vec![format!("wsgate listening: public={public} admin={admin}")];
    let reachable = reachable(public);
    if config.demo {
        lines.push(format!("demo page: http://{reachable}/"));
    }
    if config.allow_anonymous || config.auth.verifies_tokens() {
        lines.push(format!("connect a WebSocket client to ws://{reachable}/ws"));
    } else {
        lines.push(
            "every WebSocket connection will be refused: no token key is configured \
             (auth.jwt_secret_file, auth.jwt_public_key_file, auth.jwks_file or --jwt-secret) \
             and allow_anonymous is false"
                .to_owned(),
        );
    }
    lines
}

/// An address a browser on this machine can open: a listener on every interface
/// (`0.0.0.0`, `[::]`) is reached through loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    address
}

/// Libraries that log every frame or request at debug and trace, tokens and
/// API keys included: they stay at `info` unless `RUST_LOG` names them.
const QUIET_CRATES: [&str; 4] = ["tungstenite", "tokio_tungstenite", "hyper", "hyper_util"];

/// async-nats logs every connection event at `info`, an unreachable server as
/// `event: client error: nats: IO error` several times a second: the gateway logs
/// outages itself, rate-limited and with the cause (`broker::nats`), so the
/// library is held at `warn` unless `RUST_LOG` names it.
const NATS_CRATE: &str = "async_nats";

/// The filter directives for `RUST_LOG`: as given (default `info`), with
/// [`QUIET_CRATES`] held at `info` when the default level is more verbose and
/// the variable does not name them, and [`NATS_CRATE`] at `warn` unless named.
fn log_filter(rust_log: Option<&str>) -> String {
    let given = rust_log.map(str::trim).filter(|text| !text.is_empty());
    let mut directives = given.unwrap_or("info").to_owned();
    let names = |directives: &str, name: &str| {
        directives.split(',').any(|directive| {
            let target = directive.split(['=', '[']).next().unwrap_or("").trim();
            target == name || target.starts_with(&format!("{name}::"))
        })
    };
    if !names(&directives, NATS_CRATE) {
        directives.push_str(&format!(",{NATS_CRATE}=warn"));
    }
    let default_level = directives
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.contains('='))
        .filter_map(|directive| directive.parse::<tracing::Level>().ok())
        .next_back();
    if default_level.is_some_and(|level| level > tracing::Level::INFO) {
        let quiet: Vec<&str> = QUIET_CRATES
            .into_iter()
            .filter(|name| !names(&directives, name))
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
    let rebalance = !single_node && config.rebalance.enabled;
    let heartbeat = config.nats.node_heartbeat;
    let pings = config.limits.heartbeat;
    let banner = startup_lines(&config, public_address, admin_address);
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
    crate::heartbeat::spawn(state.hub.clone(), pings, &tracker, background.clone());
    broker.report_load(crate::rebalance::load_report(&state, max_connections));
    if rebalance {
        crate::rebalance::spawn(state.clone(), heartbeat, &tracker, background.clone());
    }

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
        for line in &banner {
            let _ = writeln!(stdout, "{line}");
        }
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
    use super::{connection_cap, log_filter, socket_budget, startup_lines};

    fn config(args: &[&str]) -> wsgate_config::Config {
        let mut argv = vec!["wsgate", "--node", "n"];
        argv.extend_from_slice(args);
        let args = <wsgate_config::Args as clap::Parser>::try_parse_from(argv).unwrap();
        wsgate_config::Config::from_args(args).unwrap()
    }

    /// With `--demo`, startup names the demo page, at an address a browser can
    /// open; without a token key or anonymous access it says connections will be
    /// refused instead of inviting them.
    #[test]
    fn startup_names_the_demo_page_and_says_when_connections_are_refused() {
        let any = "0.0.0.0:8080".parse().unwrap();
        let admin = "0.0.0.0:9090".parse().unwrap();
        let lines = startup_lines(&config(&["--demo", "--allow-anonymous"]), any, admin);
        assert_eq!(
            lines,
            [
                "wsgate listening: public=0.0.0.0:8080 admin=0.0.0.0:9090",
                "demo page: http://127.0.0.1:8080/",
                "connect a WebSocket client to ws://127.0.0.1:8080/ws",
            ]
        );
        let lines = startup_lines(&config(&[]), any, admin);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].starts_with("every WebSocket connection will be refused"),
            "{lines:?}"
        );
        let lines = startup_lines(&config(&["--jwt-secret", "k"]), any, admin);
        assert!(
            lines[1].starts_with("connect a WebSocket client"),
            "{lines:?}"
        );
    }

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

    /// `RUST_LOG=trace` does not turn on the frame-by-frame logs of tungstenite and
    /// hyper (which would print tokens); naming them does, and quieter levels are
    /// left alone.
    #[test]
    fn verbose_levels_keep_the_transport_crates_at_info() {
        assert_eq!(log_filter(None), "info,async_nats=warn");
        assert_eq!(log_filter(Some("warn")), "warn,async_nats=warn");
        assert_eq!(
            log_filter(Some("trace")),
            "trace,async_nats=warn,tungstenite=info,tokio_tungstenite=info,hyper=info,hyper_util=info"
        );
        assert_eq!(
            log_filter(Some("debug,tungstenite=trace")),
            "debug,tungstenite=trace,async_nats=warn,tokio_tungstenite=info,hyper=info,hyper_util=info"
        );
        assert_eq!(
            log_filter(Some("wsgate=trace")),
            "wsgate=trace,async_nats=warn",
            "the default level stays info"
        );
        assert_eq!(
            log_filter(Some("info,async_nats=debug")),
            "info,async_nats=debug",
            "named, the NATS client logs as asked"
        );
    }
}

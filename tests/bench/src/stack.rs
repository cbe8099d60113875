//! The servers under test, started by the tool, each on free loopback ports: a nats-server
//! (optionally with its WebSocket listener, for the reference) and N gateways; or a peer's
//! processes (redis-server and Socket.IO nodes; nats-server and Sockudo nodes).
//!
//! Every process lives in a [`Server`] guard whose `Drop` kills (SIGKILL) and reaps it, so an
//! error, a panic or Ctrl-C never leaves one behind. Children are also put in their own process
//! group (a terminal's Ctrl-C reaches only this tool, which then kills them) and get
//! `PR_SET_PDEATHSIG`, so they die even if this tool is killed outright.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::args::Common;
use crate::proc::{self, Sample};
use crate::pusher_api::PusherApp;

/// Lines of a server's output kept for error messages.
const LOG_LINES: usize = 40;

/// A started server process, killed and reaped on drop.
pub struct Server {
    /// `nats-server`, `wsgate-1`, ...
    pub name: String,
    pub pid: u32,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts `command` with its output drained into a short log; `on_line` sees each stdout
    /// line (the gateway announces its addresses there).
    fn start(
        name: &str,
        mut command: Command,
        on_line: impl FnMut(&str) + Send + 'static,
    ) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setpgid and prctl are async-signal-safe and touch only the child.
        unsafe {
            command.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, log.clone(), on_line);
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, log.clone(), |_| {});
        }
        Ok(Self {
            name: name.to_owned(),
            pid: child.id(),
            child,
            log,
        })
    }

    /// The last lines the process printed.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|log| log.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Fails when the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); its last output:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a thread, keeping the last lines in `log`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    mut on_line: impl FnMut(&str) + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            on_line(&line);
            if let Ok(mut log) = log.lock() {
                if log.len() == LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        }
    });
}

/// A free TCP port on 127.0.0.1 (bound, read, released: another process could take it in
/// between, which the readiness wait then reports).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls until `address` accepts TCP connections.
fn wait_for_port(server: &mut Server, address: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        server.check_alive()?;
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on {address} within {timeout:?}; its last output:\n{}",
                server.name,
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory for generated configuration, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "wsgate-bench-{}-{tag}-{}",
            std::process::id(),
            crate::client::mono_ns()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The system under test: where clients connect and the processes to watch.
pub struct Stack {
    /// WebSocket URLs clients spread over.
    pub endpoints: Vec<String>,
    /// The admin addresses (`host:port`) of the started gateways, in the endpoints' order.
    pub admin: Vec<String>,
    /// Processes started for this run (empty with `--target`); dropped last-started first.
    pub servers: Vec<Server>,
    /// The HS256 secret the gateways accept, when known.
    pub jwt_secret: Option<String>,
    /// The Pusher app the stack serves (Sockudo, or wsgate with `--proto pusher`): its key is
    /// in the endpoints, its secret signs API requests.
    pub pusher_app: Option<PusherApp>,
    /// Where the Pusher HTTP API of each endpoint listens (`host:port`, in the endpoints'
    /// order): wsgate serves it on its admin listener, Sockudo on its WebSocket port. Empty
    /// when the stack serves no Pusher app.
    pub pusher_api: Vec<String>,
    /// Starts more gateways (a stack of started gateways only).
    launcher: Option<Launcher>,
    _dir: Option<TempDir>,
}

impl Stack {
    /// Reads memory and CPU of every started server.
    pub fn sample(&self) -> Vec<Sample> {
        self.servers
            .iter()
            .map(|server| proc::sample(server.pid).unwrap_or_default())
            .collect()
    }

    /// Fails when a started server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.servers.iter_mut().try_for_each(Server::check_alive)
    }

    /// Stops every server, gateways first.
    pub fn stop(mut self) {
        while let Some(server) = self.servers.pop() {
            drop(server);
        }
    }

    /// The stack a run of wsgate uses: `--target` URLs, or a nats-server (when more than one
    /// gateway or `--nats`) and the gateways, started here. `extra_config` is appended to the
    /// generated configuration file (a scenario's own sections). With `pusher`, the gateways
    /// serve that app (its secret in a file of the run's temporary directory) and the
    /// endpoints are its Pusher path, `/app/{key}`, instead of `/ws`.
    ///
    /// # Errors
    /// With `pusher` and `--target` or `--gateway-config` (the tool cannot know or add the
    /// app), or when a process does not start.
    pub fn wsgate(common: &Common, extra_config: &str, pusher: Option<PusherApp>) -> Result<Self> {
        if pusher.is_some() && !common.target.is_empty() {
            bail!("--proto pusher starts its own gateways: --target is not supported");
        }
        if pusher.is_some() && common.gateway_config.is_some() {
            bail!(
                "--proto pusher generates the gateway configuration: --gateway-config is not supported"
            );
        }
        if !common.target.is_empty() {
            return Ok(Self {
                endpoints: common.target.clone(),
                servers: Vec::new(),
                jwt_secret: common.jwt_secret.clone(),
                pusher_app: None,
                pusher_api: Vec::new(),
                admin: Vec::new(),
                launcher: None,
                _dir: None,
            });
        }
        let binary = wsgate_binary(common)?;
        let dir = TempDir::new("wsgate")?;
        let mut servers = Vec::new();
        let nats_url = if common.gateways > 1 || common.nats {
            let (server, port, _) = start_nats(common, &dir, false, common.history.is_some())?;
            servers.push(server);
            Some(format!("nats://127.0.0.1:{port}"))
        } else {
            None
        };
        let config = match &common.gateway_config {
            Some(path) => path.clone(),
            None => {
                let path = dir.0.join("wsgate.toml");
                let mut text = String::from(
                    "version = 1\n\n[limits]\nmax_connections = 19500\n\
                     publish_rate = 1000000\npublish_burst = 1000000\n\
                     command_rate = 1000000\ncommand_burst = 1000000\n\
                     max_connections_per_user = 100000\n",
                );
                if let Some(queue) = common.send_queue {
                    text.push_str(&format!("send_queue = {queue}\n"));
                }
                if let Some(size) = common.history {
                    text.push_str(&format!("\n[namespaces.default]\nhistory_size = {size}\n"));
                    if let Some(ttl) = common.history_ttl_seconds {
                        text.push_str(&format!("history_ttl_seconds = {ttl}\n"));
                    }
                }
                text.push_str(extra_config);
                if let Some(app) = &pusher {
                    let secret_file = dir.0.join("pusher-secret");
                    std::fs::write(&secret_file, &app.secret)
                        .with_context(|| format!("writing {}", secret_file.display()))?;
                    text.push_str(&pusher_config(app, &secret_file));
                }
                std::fs::write(&path, text)?;
                path
            }
        };
        let secret = common
            .jwt_secret
            .clone()
            .unwrap_or_else(|| format!("bench-secret-{}", crate::client::mono_ns()));
        let launcher = Launcher {
            binary,
            config,
            secret: secret.clone(),
            cluster: format!("bench{}", std::process::id()),
            nats_url,
            log: common.gateway_log.clone(),
            threads: node_threads(common),
            path: pusher
                .as_ref()
                .map_or_else(|| "/ws".to_owned(), PusherApp::websocket_path),
        };
        let mut stack = Self {
            endpoints: Vec::new(),
            admin: Vec::new(),
            servers,
            jwt_secret: Some(secret),
            pusher_app: pusher,
            pusher_api: Vec::new(),
            launcher: Some(launcher),
            _dir: Some(dir),
        };
        stack.add_gateways(common.gateways.max(1))?;
        Ok(stack)
    }

    /// Starts `count` more gateways on the stack's nats-server and configuration, named on
    /// from the last (`wsgate-3`, ...), and adds their endpoints; returns the new endpoints.
    ///
    /// # Errors
    /// Without a started wsgate stack, or when a gateway does not start listening.
    pub fn add_gateways(&mut self, count: usize) -> Result<Vec<String>> {
        let launcher = self
            .launcher
            .as_ref()
            .ok_or_else(|| anyhow!("only a stack of started gateways can grow"))?;
        let mut added = Vec::new();
        for _ in 0..count {
            let index = self.endpoints.len() + 1;
            let (server, public, admin) = launcher.start(index)?;
            let endpoint = format!("ws://{public}{}", launcher.path);
            self.endpoints.push(endpoint.clone());
            if self.pusher_app.is_some() {
                self.pusher_api.push(admin.clone());
            }
            self.admin.push(admin);
            self.servers.push(server);
            added.push(endpoint);
        }
        Ok(added)
    }

    /// The reference: one nats-server with its WebSocket listener.
    pub fn nats_reference(common: &Common) -> Result<Self> {
        let dir = TempDir::new("nats")?;
        let (server, _, ws_port) = start_nats(common, &dir, true, false)?;
        Ok(Self {
            endpoints: vec![format!("ws://127.0.0.1:{ws_port}")],
            servers: vec![server],
            jwt_secret: None,
            pusher_app: None,
            pusher_api: Vec::new(),
            admin: Vec::new(),
            launcher: None,
            _dir: Some(dir),
        })
    }
}

/// The threads each started gateway or Sockudo node runs: `--node-threads`, or the machine's
/// CPUs shared among `--gateways` nodes (at least 1); `None` leaves each node its default.
pub fn node_threads(common: &Common) -> Option<usize> {
    match common.node_threads {
        Some(0) => None,
        Some(threads) => Some(threads),
        None => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some((cpus / common.gateways.max(1)).max(1))
        }
    }
}

/// Gives a node started by `command` `threads` worker threads, in the variable the gateway
/// reads and in tokio's own (Sockudo's runtime, and gateways older than `worker_threads`).
fn set_threads(command: &mut Command, threads: Option<usize>) {
    if let Some(threads) = threads {
        command
            .env("WSGATE_WORKER_THREADS", threads.to_string())
            .env("TOKIO_WORKER_THREADS", threads.to_string());
    }
}

/// What starts one more gateway of a stack: the same binary, configuration, secret, cluster
/// and nats-server as the others.
struct Launcher {
    binary: PathBuf,
    config: PathBuf,
    secret: String,
    cluster: String,
    nats_url: Option<String>,
    log: String,
    /// Worker threads of each gateway (see [`node_threads`]).
    threads: Option<usize>,
    /// The WebSocket path clients connect to: `/ws`, or a Pusher app's `/app/{key}?...`.
    path: String,
}

impl Launcher {
    /// Starts gateway `index` (`wsgate-<index>`, node `gw<index>`) and waits until it says
    /// where it listens: `(server, public address, admin address)`.
    fn start(&self, index: usize) -> Result<(Server, String, String)> {
        let name = format!("wsgate-{index}");
        let mut command = Command::new(&self.binary);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--node")
            .arg(format!("gw{index}"))
            .arg("--cluster")
            .arg(&self.cluster)
            .arg("--allow-anonymous")
            .arg("--jwt-secret")
            .arg(&self.secret)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.log);
        if let Some(url) = &self.nats_url {
            command.arg("--nats-url").arg(url);
        }
        set_threads(&mut command, self.threads);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut server = Server::start(&name, command, move |line| {
            if let Some(rest) = line.strip_prefix("wsgate listening: public=") {
                let mut words = rest.split_whitespace();
                let public = words.next().unwrap_or_default().to_owned();
                let admin = words
                    .next()
                    .and_then(|word| word.strip_prefix("admin="))
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((public, admin));
            }
        })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (public, admin) = loop {
            if let Ok(addresses) = rx.recv_timeout(Duration::from_millis(50)) {
                break addresses;
            }
            server.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{name} did not start listening; its last output:\n{}",
                    server.log_tail()
                );
            }
        };
        Ok((server, public, admin))
    }
}

/// Where the Socket.IO peer lives: `--socketio-dir`, else this source tree's
/// `tests/bench/socketio`.
pub fn socketio_dir(common: &Common) -> PathBuf {
    common
        .socketio_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("socketio"))
}

/// Why the Socket.IO peer cannot run, if it cannot.
pub fn socketio_missing(common: &Common) -> Option<String> {
    let dir = socketio_dir(common);
    if !available(&common.node_bin) {
        Some(format!(
            "{} not found (install Node.js)",
            common.node_bin.display()
        ))
    } else if !available(&common.redis_server_bin) {
        Some(format!(
            "{} not found (tests/bench/install-peers socketio)",
            common.redis_server_bin.display()
        ))
    } else if !dir.join("node_modules/socket.io").is_dir()
        || !dir.join("node_modules/@socket.io/redis-adapter").is_dir()
    {
        Some(format!(
            "socket.io and @socket.io/redis-adapter not installed in {} \
             (tests/bench/install-peers socketio)",
            dir.display()
        ))
    } else {
        None
    }
}

impl Stack {
    /// The Socket.IO peer: a redis-server and `--gateways` Node.js processes running
    /// `server.js` with @socket.io/redis-adapter.
    pub fn socketio(common: &Common) -> Result<Self> {
        if let Some(why) = socketio_missing(common) {
            bail!("{why}");
        }
        let dir = TempDir::new("socketio")?;
        let redis_port = free_port()?;
        let mut command = Command::new(&common.redis_server_bin);
        command
            .arg("--port")
            .arg(redis_port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .current_dir(&dir.0);
        let mut redis = Server::start("redis-server", command, |_| {})?;
        wait_for_port(
            &mut redis,
            SocketAddr::from(([127, 0, 0, 1], redis_port)),
            Duration::from_secs(10),
        )?;
        let mut servers = vec![redis];
        let mut endpoints = Vec::new();
        let script = socketio_dir(common).join("server.js");
        for index in 1..=common.gateways.max(1) {
            let port = free_port()?;
            let mut command = Command::new(&common.node_bin);
            command
                .arg(&script)
                .env("PORT", port.to_string())
                .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"));
            let mut node = Server::start(&format!("socketio-{index}"), command, |_| {})?;
            wait_for_port(
                &mut node,
                SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(20),
            )?;
            endpoints.push(format!(
                "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
            ));
            servers.push(node);
        }
        Ok(Self {
            endpoints,
            servers,
            jwt_secret: None,
            pusher_app: None,
            pusher_api: Vec::new(),
            admin: Vec::new(),
            launcher: None,
            _dir: Some(dir),
        })
    }
}

/// The Sockudo binary: `--sockudo-bin`, else `sockudo` in PATH, else in `$CARGO_HOME/bin`
/// (`~/.cargo/bin`, where `cargo install` puts it).
pub fn sockudo_binary(common: &Common) -> Option<PathBuf> {
    if let Some(path) = &common.sockudo_bin {
        return available(path).then(|| path.clone());
    }
    let name = Path::new("sockudo");
    if available(name) {
        return Some(name.to_path_buf());
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    Some(cargo_home.join("bin/sockudo")).filter(|path| path.is_file())
}

/// Why the Sockudo peer cannot run, if it cannot.
pub fn sockudo_missing(common: &Common) -> Option<String> {
    if sockudo_binary(common).is_none() {
        Some(match &common.sockudo_bin {
            Some(path) => format!("--sockudo-bin {}: not found", path.display()),
            None => "not installed: no sockudo in PATH or ~/.cargo/bin \
                     (tests/bench/install-peers sockudo)"
                .to_owned(),
        })
    } else if !available(&common.nats_server_bin) {
        Some(format!(
            "{} not found (Sockudo's nodes share a nats-server; install nats-server)",
            common.nats_server_bin.display()
        ))
    } else {
        None
    }
}

/// The configuration of Sockudo node `node` (JSON, Sockudo's legacy format, which every
/// version reads): `app` in the memory app manager, the NATS adapter on `nats_url`, and the
/// limits that would throttle a benchmark (connection and API rate limits, metrics on a fixed
/// port, webhook queue on Redis, idempotency keys, which need Redis when clustered) off. Delivery itself keeps Sockudo's defaults (a 1,000-message
/// buffer per connection, disconnecting a connection whose buffer is full).
fn sockudo_config(node: usize, port: u16, nats_url: &str, app: &PusherApp) -> serde_json::Value {
    serde_json::json!({
        "debug": false,
        "host": "127.0.0.1",
        "port": port,
        "mode": "production",
        "instance": {"process_id": format!("bench-sockudo-{node}")},
        "adapter": {
            "driver": "nats",
            "nats": {"servers": [nats_url]},
        },
        "app_manager": {
            "driver": "memory",
            "array": {"apps": [{
                "id": app.id,
                "key": app.key,
                "secret": app.secret,
                "enabled": true,
            }]},
        },
        "cache": {"driver": "memory"},
        // Idempotency keys (none are sent) need a shared cache when clustered.
        "idempotency": {"enabled": false},
        "queue": {"driver": "none"},
        "metrics": {"enabled": false},
        "rate_limiter": {"enabled": false},
    })
}

impl Stack {
    /// The Sockudo peer: a nats-server and `--gateways` Sockudo nodes on its NATS adapter,
    /// serving one generated app.
    pub fn sockudo(common: &Common) -> Result<Self> {
        if let Some(why) = sockudo_missing(common) {
            bail!("{why}");
        }
        let binary = sockudo_binary(common).ok_or_else(|| anyhow!("sockudo not found"))?;
        let dir = TempDir::new("sockudo")?;
        let (nats, nats_port, _) = start_nats(common, &dir, false, false)?;
        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        let app = PusherApp::generate();
        let mut servers = vec![nats];
        let mut endpoints = Vec::new();
        let mut pusher_api = Vec::new();
        for index in 1..=common.gateways.max(1) {
            let port = free_port()?;
            let path = dir.0.join(format!("sockudo-{index}.json"));
            let config = sockudo_config(index, port, &nats_url, &app);
            std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
                .with_context(|| format!("writing {}", path.display()))?;
            // Sockudo also reads `config/config.{toml,json}` in its working directory and
            // dozens of environment variables (PORT, HOST, REDIS_URL, ...): run it in the
            // temporary directory with only the environment it needs.
            let mut command = Command::new(&binary);
            command
                .arg("--config")
                .arg(&path)
                .current_dir(&dir.0)
                .env_clear()
                .env("RUST_LOG", &common.gateway_log)
                .env("LOG_COLORS_ENABLED", "false");
            if let Some(paths) = std::env::var_os("PATH") {
                command.env("PATH", paths);
            }
            set_threads(&mut command, node_threads(common));
            let mut node = Server::start(&format!("sockudo-{index}"), command, |_| {})?;
            wait_for_port(
                &mut node,
                SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(30),
            )?;
            endpoints.push(format!("ws://127.0.0.1:{port}{}", app.websocket_path()));
            pusher_api.push(format!("127.0.0.1:{port}"));
            servers.push(node);
        }
        Ok(Self {
            endpoints,
            servers,
            jwt_secret: None,
            pusher_app: Some(app),
            pusher_api,
            admin: Vec::new(),
            launcher: None,
            _dir: Some(dir),
        })
    }
}

/// The `[pusher]` section serving `app` (appended to a generated gateway configuration), its
/// secret read from `secret_file`. The strings are written as JSON strings, which are valid
/// TOML basic strings.
fn pusher_config(app: &PusherApp, secret_file: &Path) -> String {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "\n[pusher]\n[[pusher.apps]]\nid = {}\nkey = {}\nsecret_file = {}\n",
        quote(&app.id),
        quote(&app.key),
        quote(&secret_file.display().to_string())
    )
}

/// Whether `program` can be run (a path that exists, or a name found in PATH).
pub fn available(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Starts a nats-server on free ports, with its WebSocket listener and JetStream when asked;
/// returns it, its client port and its WebSocket port.
fn start_nats(
    common: &Common,
    dir: &TempDir,
    websocket: bool,
    jetstream: bool,
) -> Result<(Server, u16, u16)> {
    if !available(&common.nats_server_bin) {
        bail!(
            "{} not found: install nats-server or pass --nats-server-bin",
            common.nats_server_bin.display()
        );
    }
    let port = free_port()?;
    let ws_port = free_port()?;
    let mut config = format!("listen: \"127.0.0.1:{port}\"\nmax_connections: 100000\n");
    if jetstream {
        let store = dir.0.join("jetstream");
        config.push_str(&format!(
            "jetstream {{\n  store_dir: {:?}\n}}\n",
            store.display().to_string()
        ));
    }
    if websocket {
        config.push_str(&format!(
            "websocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n}}\n"
        ));
    }
    let path = dir.0.join("nats.conf");
    std::fs::write(&path, config)?;
    let mut command = Command::new(&common.nats_server_bin);
    command.arg("-c").arg(&path);
    let mut server = Server::start("nats-server", command, |_| {})?;
    wait_for_port(
        &mut server,
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )?;
    if websocket {
        wait_for_port(
            &mut server,
            SocketAddr::from(([127, 0, 0, 1], ws_port)),
            Duration::from_secs(10),
        )?;
    }
    Ok((server, port, ws_port))
}

/// The gateway binary: `--wsgate-bin`, else `wsgate` beside this binary (the same target
/// directory), else `target/release/wsgate`.
fn wsgate_binary(common: &Common) -> Result<PathBuf> {
    if let Some(path) = &common.wsgate_bin {
        if available(path) {
            return Ok(path.clone());
        }
        bail!("--wsgate-bin {}: not found", path.display());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("wsgate")));
    if let Some(path) = beside.filter(|path| path.is_file()) {
        return Ok(path);
    }
    let release = PathBuf::from("target/release/wsgate");
    if release.is_file() {
        return Ok(release);
    }
    Err(anyhow!(
        "no wsgate binary: build it (cargo build --release -p wsgate) or pass --wsgate-bin"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Sockudo node's configuration puts it on the shared nats-server, serves the run's app,
    /// and turns off what would throttle or collide between nodes.
    #[test]
    fn sockudo_nodes_share_nats_and_serve_the_app() {
        let app = PusherApp::generate();
        let config = sockudo_config(2, 4321, "nats://127.0.0.1:4222", &app);
        assert_eq!(config["port"], 4321);
        assert_eq!(config["host"], "127.0.0.1");
        assert_eq!(config["adapter"]["driver"], "nats");
        assert_eq!(
            config["adapter"]["nats"]["servers"][0],
            "nats://127.0.0.1:4222"
        );
        let served = &config["app_manager"]["array"]["apps"][0];
        assert_eq!(served["key"], app.key.as_str());
        assert_eq!(served["secret"], app.secret.as_str());
        assert_eq!(config["rate_limiter"]["enabled"], false);
        assert_eq!(config["metrics"]["enabled"], false);
        assert_eq!(config["instance"]["process_id"], "bench-sockudo-2");
    }

    /// The `[pusher]` section a `--proto pusher` run appends serves the run's app by id, key
    /// and secret file, quoted for TOML.
    #[test]
    fn pusher_sections_name_the_app_and_its_secret_file() {
        let app = PusherApp::generate();
        let section = pusher_config(&app, Path::new("/tmp/run \"1\"/pusher-secret"));
        assert_eq!(
            section,
            format!(
                "\n[pusher]\n[[pusher.apps]]\nid = \"wsgate-bench\"\nkey = \"{}\"\n\
                 secret_file = \"/tmp/run \\\"1\\\"/pusher-secret\"\n",
                app.key
            )
        );
    }
}

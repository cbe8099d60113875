//! A real `wsgate` process on free loopback ports.
//!
//! [`GatewayOptions`] is the builder (node, cluster, NATS URL, auth, extra config keys,
//! extra flags); [`Gateway::start`] writes the TOML file, starts the binary, reads stdout
//! until `wsgate listening: public=<addr> admin=<addr>`, then polls `/readyz` until 200.
//! The process is stopped (SIGTERM, then SIGKILL) when the [`Gateway`] drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::http::{self, Request, Response};
use crate::nats::NatsServer;
use crate::process::{ChildGuard, Stream, TempDir};
use crate::wait::eventually;

/// How long a gateway gets to print its listening line, and then to become ready.
pub const STARTUP: Duration = Duration::from_secs(20);

/// The HS256 secret the suites use unless they say otherwise.
pub const TEST_JWT_SECRET: &str = "wsgate-tests-hs256-secret-0123456789abcdef";

/// The backend API key the suites use unless they say otherwise.
pub const TEST_API_KEY: &str = "wsgate-tests-api-key-1";

/// The prefix of the one stdout line the harness waits for.
const LISTENING: &str = "wsgate listening: ";

/// The `wsgate` executable: `$WSGATE_BIN`, else `$CARGO_TARGET_DIR/debug/wsgate`, else
/// `<workspace>/target/debug/wsgate`.
///
/// # Panics
/// When the binary does not exist.
pub fn wsgate_binary() -> PathBuf {
    let path = if let Some(bin) = std::env::var_os("WSGATE_BIN") {
        PathBuf::from(bin)
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
                manifest.parent().unwrap_or(manifest).join("target")
            });
        let target = if target.is_relative() {
            workspace_root().join(target)
        } else {
            target
        };
        target.join("debug").join("wsgate")
    };
    assert!(
        path.is_file(),
        "no wsgate binary at {}: build it first: cargo build -p wsgate",
        path.display()
    );
    path
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// How to start one gateway. `GatewayOptions::new()` carries short test timings; every
/// setter returns the builder.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    node: String,
    cluster: String,
    nats_url: Option<String>,
    anonymous: bool,
    jwt_secret: Option<String>,
    api_keys: Vec<String>,
    separate_admin: bool,
    /// Section (`""` for the top level, `"limits"`, `"namespaces.chat"`) → key → value.
    config: BTreeMap<String, BTreeMap<String, Value>>,
    raw_toml: String,
    /// The file's `version`.
    version: u32,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` (soft and hard) of the process, when set.
    open_file_limit: Option<u64>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayOptions {
    /// Node `gw-0`, cluster `test`, no NATS (in-process broker), no auth configured, and
    /// short timings: server pings every 2 s (30 s to answer, so a test that pauses
    /// reading is not cut off), 1 s to authenticate, drains spread over 500 ms with a
    /// 5 s deadline, NATS pings every 500 ms, node heartbeats every 300 ms and
    /// scatter-gather requests answered within 1 s.
    pub fn new() -> Self {
        Self {
            node: String::from("gw-0"),
            cluster: String::from("test"),
            nats_url: None,
            anonymous: false,
            jwt_secret: None,
            api_keys: Vec::new(),
            separate_admin: true,
            config: BTreeMap::new(),
            raw_toml: String::new(),
            version: 1,
            flags: Vec::new(),
            env: Vec::new(),
            open_file_limit: None,
        }
        .set("limits.heartbeat_ms", 2000)
        .set("limits.heartbeat_timeout_ms", 30_000)
        .set("auth.auth_timeout_ms", 1000)
        .set("drain.reconnect_spread_ms", 500)
        .set("drain.seconds", 5)
        .set("nats.ping_interval_ms", 500)
        .set("nats.node_heartbeat_ms", 300)
        .set("nats.request_timeout_ms", 1000)
    }

    /// `--node`.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// `--cluster`.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// `--nats-url` of `server`.
    pub fn nats(self, server: &NatsServer) -> Self {
        self.nats_url(server.url())
    }

    /// `--nats-url`.
    pub fn nats_url(mut self, url: impl Into<String>) -> Self {
        self.nats_url = Some(url.into());
        self
    }

    /// `--allow-anonymous`.
    pub fn anonymous(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// `--jwt-secret VALUE` (HS256).
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// `--jwt-secret` with [`TEST_JWT_SECRET`].
    pub fn test_jwt_secret(self) -> Self {
        self.jwt_secret(TEST_JWT_SECRET)
    }

    /// `--jwt-public-key-file PATH` (RS256/ES256).
    pub fn jwt_public_key_file(self, path: impl AsRef<Path>) -> Self {
        self.arg("--jwt-public-key-file", path.as_ref().display().to_string())
    }

    /// Adds a key to `--api-keys`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// `--api-keys` with [`TEST_API_KEY`].
    pub fn test_api_key(self) -> Self {
        self.api_key(TEST_API_KEY)
    }

    /// No `--admin-listen`: the admin endpoints are served on the public address.
    pub fn single_listener(mut self) -> Self {
        self.separate_admin = false;
        self
    }

    /// A config file key by its dotted path: `"require_origin"`, `"limits.send_queue"`,
    /// `"namespaces.chat.history_size"`. The last dot separates the key from its table.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        self.config
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), value.into());
        self
    }

    /// Removes a key set by [`Self::new`] or [`Self::set`].
    pub fn unset(mut self, path: &str) -> Self {
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        if let Some(table) = self.config.get_mut(section) {
            table.remove(key);
        }
        self
    }

    /// TOML text appended verbatim after the generated tables.
    pub fn raw_toml(mut self, text: &str) -> Self {
        self.raw_toml.push_str(text);
        self.raw_toml.push('\n');
        self
    }

    /// The config file's `version` (1 unless set: a newer one turns unknown keys into
    /// warnings).
    pub fn file_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// An extra flag without a value (`--demo`).
    pub fn flag(mut self, flag: &str) -> Self {
        self.flags.push(flag.to_owned());
        self
    }

    /// An extra flag with a value (`--send-queue 4`).
    pub fn arg(mut self, flag: &str, value: impl ToString) -> Self {
        self.flags.push(flag.to_owned());
        self.flags.push(value.to_string());
        self
    }

    /// An environment variable for the process (all inherited `WSGATE_*` are removed).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the process with an open-file limit of `limit` descriptors, soft and hard, so
    /// the gateway cannot raise it: for tests of what happens when descriptors run short.
    pub fn open_file_limit(mut self, limit: u64) -> Self {
        self.open_file_limit = Some(limit);
        self
    }

    /// The node name.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    /// The config file as the gateway will read it, `version` first.
    pub fn toml(&self) -> String {
        let mut out = format!("version = {}\n", self.version);
        if let Some(top) = self.config.get("") {
            for (key, value) in top {
                out.push_str(&format!("{key} = {}\n", toml_value(value)));
            }
        }
        for (section, table) in &self.config {
            if section.is_empty() || table.is_empty() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (key, value) in table {
                out.push_str(&format!("{key} = {}\n", toml_value(value)));
            }
        }
        if !self.raw_toml.is_empty() {
            out.push('\n');
            out.push_str(&self.raw_toml);
        }
        out
    }

    fn command(&self, config_path: &Path) -> Command {
        let mut command = Command::new(wsgate_binary());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WSGATE_") {
                command.env_remove(name);
            }
        }
        command.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.args(["--listen", "127.0.0.1:0"]);
        if self.separate_admin {
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        command.args(["--node", &self.node, "--cluster", &self.cluster]);
        if let Some(url) = &self.nats_url {
            command.args(["--nats-url", url]);
        }
        command.arg("--config").arg(config_path);
        if self.anonymous {
            command.arg("--allow-anonymous");
        }
        if let Some(secret) = &self.jwt_secret {
            command.args(["--jwt-secret", secret]);
        }
        if !self.api_keys.is_empty() {
            command.args(["--api-keys", &self.api_keys.join(",")]);
        }
        command.args(&self.flags);
        if let Some(limit) = self.open_file_limit {
            use std::os::unix::process::CommandExt as _;
            let limit = limit as libc::rlim_t;
            // SAFETY: runs in the forked child before exec; `setrlimit` is async-signal-safe
            // and the closure neither allocates nor takes locks.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        command
    }

    /// Runs the gateway with these options expecting it to exit by itself (invalid
    /// configuration), and returns how it ended.
    ///
    /// # Errors
    /// When it cannot start, or still runs after `timeout` (it is then killed).
    pub async fn run_to_exit(&self, timeout: Duration) -> Result<Exited> {
        let dir = TempDir::new("gateway")?;
        let config_path = dir.path().join("wsgate.toml");
        std::fs::write(&config_path, self.toml())?;
        let mut process = ChildGuard::spawn(
            format!("wsgate:{}", self.node),
            self.command(&config_path),
            STOP_GRACE,
        )?;
        let status = process.wait_exit(timeout).await?;
        // Both pipes close when the process exits; give the drain threads a moment.
        let logs = process.logs().clone();
        eventually(Duration::from_secs(5), "output pipes closed", || {
            let closed = logs.is_closed();
            async move { Ok(closed.then_some(())) }
        })
        .await?;
        Ok(Exited {
            status,
            stdout: logs.lines(Stream::Stdout),
            stderr: logs.lines(Stream::Stderr),
        })
    }
}

/// How a process that was expected to exit ended.
#[derive(Debug, Clone)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Time between SIGTERM and SIGKILL when a gateway guard drops.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn toml_value(value: &Value) -> String {
    match value {
        Value::Null => String::from("\"\""),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // A JSON string literal is a valid TOML basic string.
        Value::String(_) => value.to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", Value::from(k.as_str()), toml_value(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// A running gateway; stopped and reaped on drop.
#[derive(Debug)]
pub struct Gateway {
    options: GatewayOptions,
    public: SocketAddr,
    admin: SocketAddr,
    process: ChildGuard,
    _dir: TempDir,
}

impl Gateway {
    /// Starts a gateway and waits until it is listening and `/readyz` answers 200.
    ///
    /// # Errors
    /// When it exits early or is not ready in time; the message holds its output.
    ///
    /// # Panics
    /// When the binary has not been built.
    pub async fn start(options: GatewayOptions) -> Result<Self> {
        let mut gateway = Self::spawn(options).await?;
        let admin = gateway.admin;
        let ready = eventually(STARTUP, "gateway /readyz answers 200", || async move {
            Ok((http::get(admin, "/readyz").await?.status == 200).then_some(()))
        })
        .await;
        if let Err(error) = ready {
            gateway.process.kill();
            return Err(error.context(format!("gateway output:\n{}", gateway.logs_tail(60))));
        }
        Ok(gateway)
    }

    /// Starts a gateway and waits only for its listening line (not for `/readyz`): for
    /// tests of a gateway that cannot be ready (NATS down at start).
    ///
    /// # Errors
    /// When it exits before listening or does not print the line in time.
    pub async fn spawn(options: GatewayOptions) -> Result<Self> {
        let dir = TempDir::new("gateway")?;
        let config_path = dir.path().join("wsgate.toml");
        std::fs::write(&config_path, options.toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut process = ChildGuard::spawn(
            format!("wsgate:{}", options.node),
            options.command(&config_path),
            STOP_GRACE,
        )?;
        let deadline = Instant::now() + STARTUP;
        let line = loop {
            let logs = process.logs().clone();
            if let Some(line) = logs
                .lines(Stream::Stdout)
                .into_iter()
                .find(|l| l.starts_with(LISTENING))
            {
                break line;
            }
            if let Some(status) = process.try_status()? {
                // Let the drain threads collect the last words.
                let _ = eventually(Duration::from_secs(2), "pipes closed", || {
                    let closed = logs.is_closed();
                    async move { Ok(closed.then_some(())) }
                })
                .await;
                bail!(
                    "wsgate exited ({status}) before listening; config:\n{}\nstderr:\n{}",
                    options.toml(),
                    logs.tail_of(Stream::Stderr, 40)
                );
            }
            if Instant::now() >= deadline {
                process.kill();
                bail!(
                    "wsgate printed no `{LISTENING}` line within {STARTUP:?}; stderr:\n{}",
                    logs.tail_of(Stream::Stderr, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (public, admin) = parse_listening(&line)?;
        Ok(Self {
            options,
            public,
            admin,
            process,
            _dir: dir,
        })
    }

    /// The options it was started with.
    pub fn options(&self) -> &GatewayOptions {
        &self.options
    }

    /// The node name.
    pub fn node(&self) -> &str {
        &self.options.node
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.options.cluster
    }

    /// The public listener.
    pub fn public(&self) -> SocketAddr {
        self.public
    }

    /// The admin listener (equal to [`Self::public`] with one listener).
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `ws://<public>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// `ws://<public>/ws?token=<token>`.
    pub fn ws_url_with_token(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.public)
    }

    /// The first configured API key.
    ///
    /// # Panics
    /// When none was configured.
    pub fn api_key(&self) -> &str {
        self.options
            .api_keys
            .first()
            .expect("the gateway was started without an API key")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal (ignored once the process has been reaped).
    ///
    /// # Errors
    /// When `kill(2)` fails.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.process.signal(signal)
    }

    /// SIGKILL and reap: a crashed replica.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits for the process to exit.
    ///
    /// # Errors
    /// When it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    /// The last `lines` lines of stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        self.process.logs().tail_of(Stream::Stderr, lines)
    }

    /// The last `lines` lines of stdout and stderr, interleaved.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.process.logs().tail(lines)
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.logs().lines(Stream::Stdout)
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.process.logs().lines(Stream::Stderr)
    }

    /// `GET /readyz`'s status.
    ///
    /// # Errors
    /// When the admin listener does not answer.
    pub async fn readyz(&self) -> Result<u16> {
        Ok(http::get(self.admin, "/readyz").await?.status)
    }

    /// Polls `GET /readyz` until it answers `status`.
    ///
    /// # Errors
    /// When it does not within `within`.
    pub async fn await_readyz(&self, status: u16, within: Duration) -> Result<()> {
        eventually(within, &format!("readyz {status}"), || async {
            Ok((self.readyz().await? == status).then_some(()))
        })
        .await
    }

    /// `GET /healthz`'s status.
    ///
    /// # Errors
    /// When the admin listener does not answer.
    pub async fn healthz(&self) -> Result<u16> {
        Ok(http::get(self.admin, "/healthz").await?.status)
    }

    /// `GET /metrics`, which must answer 200.
    ///
    /// # Errors
    /// When it does not.
    pub async fn metrics(&self) -> Result<String> {
        let response = http::get(self.admin, "/metrics").await?;
        if response.status != 200 {
            bail!("/metrics answered {}", response.status);
        }
        Ok(response.text())
    }

    /// `POST <path>` on the admin listener with a JSON body and, when given, a key.
    ///
    /// # Errors
    /// When the listener does not answer.
    pub async fn api_post(&self, path: &str, key: Option<&str>, body: &Value) -> Result<Response> {
        let mut request = Request::post(path).json(body);
        if let Some(key) = key {
            request = request.bearer(key);
        }
        request.send(self.admin).await
    }

    /// `GET <path>` on the admin listener with, when given, a key.
    ///
    /// # Errors
    /// When the listener does not answer.
    pub async fn api_get(&self, path: &str, key: Option<&str>) -> Result<Response> {
        let mut request = Request::get(path);
        if let Some(key) = key {
            request = request.bearer(key);
        }
        request.send(self.admin).await
    }

    /// `POST <path>` with the configured key, expecting 200 and a JSON body.
    ///
    /// # Errors
    /// Any other status or body.
    pub async fn api(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self.api_post(path, Some(self.api_key()), body).await?;
        if response.status != 200 {
            bail!(
                "POST {path} {body} answered {}: {}",
                response.status,
                response.text()
            );
        }
        response.json()
    }

    /// `GET /api/v1/stats` with the configured key, expecting 200.
    ///
    /// # Errors
    /// Any other status or body.
    pub async fn stats(&self) -> Result<Value> {
        let response = self.api_get("/api/v1/stats", Some(self.api_key())).await?;
        if response.status != 200 {
            bail!(
                "GET /api/v1/stats answered {}: {}",
                response.status,
                response.text()
            );
        }
        response.json()
    }
}

/// `wsgate listening: public=<ip:port> admin=<ip:port>`.
fn parse_listening(line: &str) -> Result<(SocketAddr, SocketAddr)> {
    let rest = line
        .strip_prefix(LISTENING)
        .context("not a listening line")?;
    let mut public = None;
    let mut admin = None;
    for field in rest.split_whitespace() {
        if let Some(addr) = field.strip_prefix("public=") {
            public = Some(
                addr.parse()
                    .with_context(|| format!("public address in {line:?}"))?,
            );
        } else if let Some(addr) = field.strip_prefix("admin=") {
            admin = Some(
                addr.parse()
                    .with_context(|| format!("admin address in {line:?}"))?,
            );
        }
    }
    match (public, admin) {
        (Some(public), Some(admin)) => Ok((public, admin)),
        _ => bail!("malformed listening line {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_both_addresses() {
        let (public, admin) =
            parse_listening("wsgate listening: public=127.0.0.1:4000 admin=127.0.0.1:4001")
                .unwrap();
        assert_eq!(public.port(), 4000);
        assert_eq!(admin.port(), 4001);
        assert!(parse_listening("wsgate listening: public=127.0.0.1:4000").is_err());
    }

    #[test]
    fn the_config_file_starts_with_its_version_and_groups_tables() {
        let toml = GatewayOptions::new()
            .set("require_origin", true)
            .set("limits.send_queue", 4)
            .set("namespaces.chat.history_size", 10)
            .set("allowed_origins", serde_json::json!(["https://a.example"]))
            .toml();
        assert!(toml.starts_with("version = 1\n"), "{toml}");
        assert!(toml.contains("require_origin = true\n"), "{toml}");
        assert!(
            toml.contains("allowed_origins = [\"https://a.example\"]\n"),
            "{toml}"
        );
        assert!(
            toml.contains("[namespaces.chat]\nhistory_size = 10\n"),
            "{toml}"
        );
        let top_level_end = toml.find("\n[").unwrap();
        assert!(toml[..top_level_end].contains("require_origin"), "{toml}");
    }
}

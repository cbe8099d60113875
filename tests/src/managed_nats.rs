//! The operator's managed NATS, run on loopback: three (or N) real `nats-server`
//! processes whose `nats-server.conf` files are rendered by the operator's own builder
//! (`wsgate_operator::resources::nats`), with per-server parameters (names, loopback
//! ports, store directories) instead of the StatefulSet's, and the credentials the
//! operator generates.
//!
//! Each server's files are laid out as in a pod: `<server>/config/nats-server.conf`
//! includes `../nats-routes/routes.conf` (in a pod: the Secret's `routes.conf`). The
//! gateways' `.creds` file is written once, as the Secret projects it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use wsgate_operator::resources::nats::{
    ConfValue, NatsCredentials, ServerConf, nats_server_conf, route_conf,
};

use crate::http;
use crate::nats::nats_server_binary;
use crate::process::{ChildGuard, TempDir, free_port};
use crate::wait::{eventually, within};

/// How long a server gets to answer `/healthz`.
const STARTUP: Duration = Duration::from_secs(30);

/// One server of the cluster: its rendered file and, while it runs, its process.
#[derive(Debug)]
struct Server {
    name: String,
    conf_path: PathBuf,
    client_port: u16,
    monitor_port: u16,
    process: Option<ChildGuard>,
}

/// A NATS JetStream cluster rendered by the operator's builder, stopped on drop.
#[derive(Debug)]
pub struct ManagedNatsCluster {
    credentials: NatsCredentials,
    creds_path: PathBuf,
    servers: Vec<Server>,
    _dir: TempDir,
}

impl ManagedNatsCluster {
    /// Renders the files of `count` servers through the operator's builder and writes
    /// them; nothing is started yet (see [`Self::check_configs`] and [`Self::start`]).
    ///
    /// # Errors
    /// When the credentials cannot be made or a file cannot be written.
    pub fn render(count: usize) -> Result<Self> {
        let credentials = NatsCredentials::generate().context("generating credentials")?;
        let dir = TempDir::new("managed-nats")?;
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("127.0.0.1:{cluster}"))
            .collect();
        let route_file = route_conf(&routes, &credentials);
        let mut servers = Vec::new();
        for (i, (client_port, cluster_port, monitor_port)) in ports.into_iter().enumerate() {
            let name = format!("nats-{i}");
            let root = dir.path().join(&name);
            let config_dir = root.join("config");
            let routes_dir = root.join("nats-routes");
            std::fs::create_dir_all(&config_dir)?;
            std::fs::create_dir_all(&routes_dir)?;
            std::fs::write(routes_dir.join("routes.conf"), &route_file)?;
            let server = ServerConf {
                server_name: ConfValue::Literal(name.clone()),
                host: "127.0.0.1".to_owned(),
                client_port,
                cluster_port,
                monitor_port,
                cluster_name: "managed-test".to_owned(),
                route_include: "../nats-routes/routes.conf".to_owned(),
                store_dir: path_text(&root.join("jetstream"))?,
                pid_file: path_text(&root.join("nats.pid"))?,
                lame_duck_duration_seconds: 30,
            };
            let conf_path = config_dir.join("nats-server.conf");
            std::fs::write(&conf_path, nats_server_conf(&server, &credentials))?;
            servers.push(Server {
                name,
                conf_path,
                client_port,
                monitor_port,
                process: None,
            });
        }
        let creds_path = dir.path().join("wsgate.creds");
        std::fs::write(&creds_path, &credentials.user_creds)?;
        Ok(Self {
            credentials,
            creds_path,
            servers,
            _dir: dir,
        })
    }

    /// Runs `nats-server -t` on every rendered file; returns each one's output.
    ///
    /// # Errors
    /// When nats-server refuses a file.
    pub fn check_configs(&self) -> Result<Vec<String>> {
        let mut outputs = Vec::new();
        for server in &self.servers {
            let output = Command::new(nats_server_binary())
                .arg("-t")
                .arg("-c")
                .arg(&server.conf_path)
                .output()
                .context("running nats-server -t")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            ensure!(
                output.status.success(),
                "nats-server -t refused {}: {text}",
                server.conf_path.display()
            );
            outputs.push(text);
        }
        Ok(outputs)
    }

    /// Starts every server (all at once, as the StatefulSet's `Parallel` policy does)
    /// and waits until each reports JetStream healthy.
    ///
    /// # Errors
    /// When a server exits or is not healthy in time.
    pub async fn start(&mut self) -> Result<()> {
        for i in 0..self.servers.len() {
            self.launch(i)?;
        }
        for i in 0..self.servers.len() {
            self.await_healthy(i).await?;
        }
        Ok(())
    }

    fn launch(&mut self, i: usize) -> Result<()> {
        let server = &mut self.servers[i];
        let mut command = Command::new(nats_server_binary());
        command.arg("-c").arg(&server.conf_path);
        server.process = Some(ChildGuard::spawn(
            server.name.clone(),
            command,
            Duration::from_secs(5),
        )?);
        Ok(())
    }

    /// Waits until server `i` answers `/healthz`: JetStream up and in contact with a
    /// meta leader (stricter than the StatefulSet's probes, so a test starts on a
    /// cluster that can create streams at once).
    async fn await_healthy(&mut self, i: usize) -> Result<()> {
        let monitor = self.monitor_addr(i);
        let server = &mut self.servers[i];
        let name = server.name.clone();
        let process = server.process.as_mut().context("server not started")?;
        let exited = process.try_status()?;
        if let Some(status) = exited {
            bail!("{name} exited: {status}\n{}", process.logs().tail(30));
        }
        let healthy = eventually(STARTUP, "nats-server JetStream healthy", || async move {
            let response = http::get(monitor, "/healthz").await?;
            Ok((response.status == 200).then_some(()))
        })
        .await;
        if let Err(error) = healthy {
            let tail = self.servers[i]
                .process
                .as_ref()
                .map(|p| p.logs().tail(40))
                .unwrap_or_default();
            return Err(error.context(format!("{name} output:\n{tail}")));
        }
        Ok(())
    }

    /// SIGKILL server `i`: an abrupt outage of one pod.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.servers[i].process.take() {
            process.kill();
        }
    }

    /// Starts server `i` again from the same file and store.
    ///
    /// # Errors
    /// When it does not become healthy.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.launch(i)?;
        self.await_healthy(i).await
    }

    /// The gateways' `nats_url`: every server, as the operator lists the pods.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(|server| format!("nats://127.0.0.1:{}", server.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The gateways' `.creds` file.
    pub fn creds_path(&self) -> &Path {
        &self.creds_path
    }

    /// The generated credentials.
    pub fn credentials(&self) -> &NatsCredentials {
        &self.credentials
    }

    /// The client port of server `i`.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.servers[i].client_port))
    }

    /// The monitoring endpoint of server `i`.
    pub fn monitor_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.servers[i].monitor_port))
    }

    /// The server names, in order.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// The names of the client connections server `i` holds (`/connz`).
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer with JSON.
    pub async fn connection_names(&self, i: usize) -> Result<Vec<String>> {
        let response = http::get(self.monitor_addr(i), "/connz?limit=10000").await?;
        ensure!(
            response.status == 200,
            "/connz answered {}",
            response.status
        );
        let connz: Value = serde_json::from_slice(&response.body).context("parsing /connz")?;
        Ok(connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The JetStream streams of the gateways' account as server `i` reports them
    /// (`/jsz?acc=<account>&streams=true`): each stream's `config` and `cluster`.
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer with JSON.
    pub async fn streams(&self, i: usize) -> Result<Vec<Value>> {
        let path = format!(
            "/jsz?acc={}&streams=true&config=true",
            self.credentials.account
        );
        let response = http::get(self.monitor_addr(i), &path).await?;
        ensure!(response.status == 200, "/jsz answered {}", response.status);
        let jsz: Value = serde_json::from_slice(&response.body).context("parsing /jsz")?;
        Ok(jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| {
                account["stream_detail"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Connects to server `i` as a client without credentials and returns the first
    /// line the server answers the `CONNECT` with (an `-ERR` when refused).
    ///
    /// # Errors
    /// When the server cannot be reached or says nothing in time.
    pub async fn anonymous_connect_reply(&self, i: usize) -> Result<String> {
        let stream = TcpStream::connect(self.client_addr(i)).await?;
        let mut stream = BufReader::new(stream);
        let mut info = String::new();
        within(Duration::from_secs(5), "INFO", async {
            stream.read_line(&mut info).await?;
            Ok(())
        })
        .await?;
        ensure!(info.starts_with("INFO "), "expected INFO, got {info:?}");
        stream
            .get_mut()
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n")
            .await?;
        let mut reply = String::new();
        within(Duration::from_secs(5), "reply to CONNECT", async {
            stream.read_line(&mut reply).await?;
            Ok(())
        })
        .await?;
        Ok(reply.trim_end().to_owned())
    }
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

//! [`Nginx`]: Debian's nginx as a child process in front of gateways, standing in for the
//! cluster's ingress: WebSocket upgrade headers, and a retry on another upstream on
//! connection errors, timeouts, 502 and 503 (`proxy_next_upstream`). It runs on a free
//! loopback port with a generated configuration in a temporary directory, and is stopped
//! on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::find_on_path;
use crate::{ChildGuard, TempDir, eventually, free_port};

/// The nginx binary: `$WSGATE_NGINX`, `nginx` on `PATH`, or Debian's `/usr/sbin/nginx`;
/// when none is there and the tests run as root on Debian, `apt-get install -y nginx` once.
pub fn nginx_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WSGATE_NGINX") {
        return Some(PathBuf::from(path));
    }
    let find = || {
        find_on_path("nginx").or_else(|| {
            let debian = PathBuf::from("/usr/sbin/nginx");
            debian.exists().then_some(debian)
        })
    };
    if let Some(found) = find() {
        return Some(found);
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && find_on_path("apt-get").is_some() {
        INSTALL.call_once(|| {
            eprintln!("nginx is missing: apt-get install -y nginx");
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "nginx"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        });
    }
    find()
}

/// A running nginx reverse proxy.
pub struct Nginx {
    port: u16,
    dir: TempDir,
    process: ChildGuard,
}

/// What nginx logged about the requests it answered.
#[derive(Debug, Default, Clone)]
pub struct AccessLog {
    /// Requests answered, by nginx's final status.
    pub requests: usize,
    /// Requests nginx answered with a 5xx.
    pub server_errors: usize,
    /// Upstream attempts that failed with a 5xx or an error and were retried elsewhere.
    pub retried: usize,
}

impl Nginx {
    /// Starts nginx proxying to `upstreams`.
    ///
    /// # Errors
    /// nginx is missing or does not come up.
    pub async fn start(upstreams: &[SocketAddr]) -> Result<Self> {
        let binary = nginx_binary().context("nginx is not installed (apt-get install nginx)")?;
        let dir = TempDir::new("nginx")?;
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join("tmp").join(sub))?;
        }
        let port = free_port();
        std::fs::write(dir.path().join("nginx.conf"), config(&dir, port, upstreams))?;
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"));
        let mut process =
            ChildGuard::spawn(format!("nginx:{port}"), command, Duration::from_secs(3))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = eventually(Duration::from_secs(10), "nginx listens", || {
            let exited = process.try_status();
            async move {
                if let Ok(Some(status)) = exited {
                    bail!("nginx exited: {status}");
                }
                Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()))
            }
        })
        .await;
        if let Err(error) = up {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            return Err(error.context(format!(
                "nginx did not start; output:\n{}\nerror.log:\n{log}",
                process.logs().tail(20)
            )));
        }
        Ok(Self { port, dir, process })
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Rewrites the upstream list and reloads (SIGHUP): new connections go to `upstreams`,
    /// established ones stay where they are.
    ///
    /// # Errors
    /// The configuration cannot be written or the signal not sent.
    pub fn set_upstreams(&mut self, upstreams: &[SocketAddr]) -> Result<()> {
        std::fs::write(
            self.dir.path().join("nginx.conf"),
            config(&self.dir, self.port, upstreams),
        )?;
        self.process.signal(libc::SIGHUP)
    }

    /// Reads the access log so far.
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn access_log(&self) -> Result<AccessLog> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log"))?;
        let mut log = AccessLog::default();
        for line in text.lines() {
            let mut fields = line.splitn(2, ' ');
            let status: u16 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let upstream = fields.next().unwrap_or("");
            log.requests += 1;
            if status >= 500 {
                log.server_errors += 1;
            }
            // `$upstream_status` lists every attempt: "503, 101" or "502, 101".
            let attempts: Vec<&str> = upstream.split([',', ':']).map(str::trim).collect();
            log.retried += attempts
                .iter()
                .take(attempts.len().saturating_sub(1))
                .filter(|s| s.starts_with('5') || s.starts_with('-'))
                .count();
        }
        Ok(log)
    }

    /// nginx's error log.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn config(dir: &TempDir, port: u16, upstreams: &[SocketAddr]) -> String {
    let root = dir.path().display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;\n"
    } else {
        ""
    };
    let servers: String = upstreams
        .iter()
        .map(|addr| format!("    server {addr} max_fails=0;\n"))
        .collect();
    format!(
        r#"{user}daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{
  worker_connections 8192;
}}
http {{
  log_format ws '$status $upstream_status';
  access_log {root}/access.log ws;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    '' close;
  }}
  upstream gateways {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
  }}
}}
"#
    )
}

//! `nats-server.conf` of a managed NATS server, rendered from typed
//! parameters.
//!
//! Everything that differs between servers (name, addresses, ports, store
//! directory) is a parameter of [`ServerConf`], so the same renderer serves
//! the StatefulSet (one file for every pod, the name from the pod through an
//! environment variable) and the cross-process test (three servers on
//! loopback, each with its own literal name, ports and directory). Secrets
//! are never in the file: clients authenticate with JWTs signed by the
//! operator the file names (public keys only), and the routes' password is
//! in a second file, [`route_conf`], that the main file includes from the
//! mounted Secret (nats-server sends a route's password only from its URL,
//! so the URLs are secret too).

use std::fmt::Write;

use super::credentials::{NatsCredentials, ROUTE_USER};

/// A value in `nats-server.conf`: written literally, or the name of an
/// environment variable nats-server resolves when it reads the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfValue {
    /// A string, quoted in the file.
    Literal(String),
    /// `$NAME`: resolved from the server's environment.
    Env(String),
}

impl ConfValue {
    fn render(&self) -> String {
        match self {
            ConfValue::Literal(text) => quote(text),
            ConfValue::Env(name) => format!("${name}"),
        }
    }
}

/// A double-quoted string of the NATS config format (JSON escapes).
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Everything one server's `nats-server.conf` depends on.
#[derive(Clone, Debug)]
pub struct ServerConf {
    /// Unique per server (JetStream places replicas by it).
    pub server_name: ConfValue,
    /// Interface every listener binds.
    pub host: String,
    /// Port of client connections.
    pub client_port: u16,
    /// Port of routes between the servers.
    pub cluster_port: u16,
    /// Port of the monitoring endpoint (`/healthz`, `/jsz`).
    pub monitor_port: u16,
    /// Name of the NATS cluster (the same on every server).
    pub cluster_name: String,
    /// Path of the [`route_conf`] file, relative to this file's directory
    /// (nats-server resolves `include` that way).
    pub route_include: String,
    /// Directory of the JetStream file store.
    pub store_dir: String,
    /// Where the server writes its pid, for `nats-server --signal ldm=`.
    pub pid_file: String,
    /// How long lame-duck mode spreads client disconnects, in seconds: at
    /// least 30 (nats-server refuses less), and ending before the pod's
    /// termination grace period does. A third of it is the grace period
    /// before the first client is moved.
    pub lame_duck_duration_seconds: u64,
}

/// The `nats-server.conf` of one server: operator-mode authentication
/// trusting `credentials`' operator, JetStream on `store_dir`, routes to
/// every server with a password, monitoring, a pid file and lame duck.
pub fn nats_server_conf(server: &ServerConf, credentials: &NatsCredentials) -> String {
    let ServerConf {
        server_name,
        host,
        client_port,
        cluster_port,
        monitor_port,
        cluster_name,
        route_include,
        store_dir,
        pid_file,
        lame_duck_duration_seconds,
    } = server;
    let mut conf = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        conf,
        "# Rendered by wsgate-operator: edit the WsCluster, not this file.\n\
         server_name: {server_name}\n\
         listen: {listen}\n\
         http: {http}\n\
         pid_file: {pid_file}\n\
         lame_duck_duration: \"{lame_duck_duration_seconds}s\"\n\
         lame_duck_grace_period: \"{grace}s\"\n\
         \n\
         # Clients need a user JWT signed by this operator's account: there is\n\
         # no anonymous access.\n\
         operator: {operator}\n\
         system_account: {system_account}\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n  \
           {system_account}: {system_account_jwt}\n  \
           {account}: {account_jwt}\n\
         }}\n\
         \n\
         jetstream {{\n  \
           store_dir: {store_dir}\n\
         }}\n\
         \n\
         cluster {{\n  \
           name: {cluster_name}\n  \
           listen: {cluster_listen}\n  \
           # Route authorization and the routes, from the Secret.\n  \
           include {route_include}\n\
         }}",
        server_name = server_name.render(),
        listen = quote(&format!("{host}:{client_port}")),
        http = quote(&format!("{host}:{monitor_port}")),
        pid_file = quote(pid_file),
        grace = (lame_duck_duration_seconds / 3).max(1),
        operator = quote(&credentials.operator_jwt),
        system_account = quote(&credentials.system_account),
        system_account_jwt = quote(&credentials.system_account_jwt),
        account = quote(&credentials.account),
        account_jwt = quote(&credentials.account_jwt),
        store_dir = quote(store_dir),
        cluster_name = quote(cluster_name),
        cluster_listen = quote(&format!("{host}:{cluster_port}")),
        route_include = quote(route_include),
    );
    conf
}

/// The secret part of the `cluster` block: the password routes must
/// present, and a route to every server (`host:port` of its cluster port,
/// itself included: a server ignores the route to itself) with that
/// password in the URL.
pub fn route_conf(routes: &[String], credentials: &NatsCredentials) -> String {
    let password = &credentials.route_password;
    let urls = routes
        .iter()
        .map(|route| quote(&format!("nats://{ROUTE_USER}:{password}@{route}")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "authorization {{\n  user: {user}\n  password: {password}\n}}\nroutes: [{urls}]\n",
        user = quote(ROUTE_USER),
        password = quote(password),
    )
}

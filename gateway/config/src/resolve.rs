//! Resolution: each key's value taken from the layers flag > `WSGATE_*` environment variable >
//! file > default, checked, and typed into a [`Config`]. The sections' rules are in
//! `resolve/section.rs`; this file holds the layers and the top level.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::{ConfigError, Origin};
use crate::file::{FileConfig, ParsedFile};
use crate::key::default_of;
use crate::namespace::{DEMO_NAMESPACE, demo_section};
use crate::{Args, Result, key, validate};

mod pusher;
mod section;

use section::{
    FlagAuth, FlagLimits, resolve_auth, resolve_drain, resolve_history, resolve_limits,
    resolve_namespaces, resolve_nats, resolve_rebalance,
};

/// Reads and parses a configuration file.
pub(crate) fn read_file(path: &Path) -> Result<(PathBuf, ParsedFile)> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    Ok((path.to_owned(), FileConfig::parse(&text, path)?))
}

/// A value and the layer it came from, so a failed check names the right source.
struct Sourced<T> {
    /// The dotted key.
    key: String,
    /// The value.
    value: T,
    /// Its layer.
    origin: Origin,
}

impl<T> Sourced<T> {
    /// The value, if `check` finds no problem with it.
    fn check(self, check: impl FnOnce(&T) -> Result<(), String>) -> Result<T> {
        match check(&self.value) {
            Ok(()) => Ok(self.value),
            Err(problem) => Err(ConfigError::invalid(self.key, self.origin, problem)),
        }
    }

    /// The value, if it lies in the range of its key's [`Kind::Count`](crate::Kind::Count): the
    /// same range, and the same words, as the file's type check, whichever layer set it.
    fn within_bounds(self) -> Result<T>
    where
        T: Copy,
        u64: TryFrom<T>,
    {
        let kind = key::find(&self.key).map(|known| known.kind);
        self.check(|value| match kind {
            Some(kind) => kind.check_count(u64::try_from(*value).unwrap_or(u64::MAX)),
            None => Ok(()),
        })
    }

    /// The value converted by `convert`, or an error naming the key and layer.
    fn map<U>(self, convert: impl FnOnce(T) -> Result<U, String>) -> Result<U> {
        let Sourced { key, value, origin } = self;
        convert(value).map_err(|problem| ConfigError::invalid(key, origin, problem))
    }
}

/// What resolution needs to know about the layers to name the one that set a value: which
/// flags came from their environment variable, the file and its keys' lines.
struct Layers {
    /// The ids of the flags clap took from their environment variable (see
    /// [`Args::from_env`]).
    from_env: BTreeSet<String>,
    /// The file's path, for messages.
    file: Option<PathBuf>,
    /// The line of each dotted key in the file.
    lines: BTreeMap<String, usize>,
}

impl Layers {
    /// The origin of the value of `key` taken from the file: the file and the key's line.
    fn file_origin(&self, key: &str) -> Origin {
        match &self.file {
            Some(file) => Origin::File {
                file: file.clone(),
                line: self.lines.get(key).copied(),
            },
            None => Origin::Default,
        }
    }

    /// The origin of a value of `key` given on the command line: its flag or, when clap took
    /// it from there, its environment variable.
    fn flag_origin(&self, key: &str) -> Origin {
        match key::find(key) {
            Some(key::Key {
                flag: Some(flag),
                env,
                ..
            }) => {
                let id = flag.trim_start_matches('-').replace('-', "_");
                match env {
                    Some(env) if self.from_env.contains(&id) => Origin::Env(env),
                    _ => Origin::Flag(flag),
                }
            }
            _ => Origin::Default,
        }
    }

    /// Picks the first layer that sets `key`: flag (or its env), file, default.
    fn pick<T>(
        &self,
        key: impl Into<String>,
        flag: Option<T>,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> Sourced<T> {
        let key = key.into();
        let (value, origin) = match (flag, file) {
            (Some(value), _) => (value, self.flag_origin(&key)),
            (None, Some(value)) => (value, self.file_origin(&key)),
            (None, None) => (default(), Origin::Default),
        };
        Sourced { key, value, origin }
    }

    /// A key only the file sets.
    fn file_only<T>(
        &self,
        key: impl Into<String>,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> Sourced<T> {
        self.pick(key, None, file, default)
    }

    /// Converts a file value before it meets the flag's value of another type (an address
    /// string, a path string), naming the key and the file when it does not convert.
    fn convert<T, U>(
        &self,
        key: &str,
        file: Option<T>,
        convert: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<Option<U>> {
        file.map(|value| {
            convert(value)
                .map_err(|problem| ConfigError::invalid(key, self.file_origin(key), problem))
        })
        .transpose()
    }

    /// A path key only the file sets: non-empty when present.
    fn file_path(&self, key: &str, file: Option<String>) -> Result<Option<PathBuf>> {
        self.convert(key, file, non_empty_path)
    }

    /// A duration in milliseconds, within its key's bounds (at least 1 ms).
    fn millis(&self, key: &str, file: Option<u64>, default: Duration) -> Result<Duration> {
        let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.file_only(key, file, || default)
            .within_bounds()
            .map(Duration::from_millis)
    }
}

/// A path given as text, which must not be empty.
fn non_empty_path(text: String) -> std::result::Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// An address the listeners can bind.
fn socket_addr(text: String) -> std::result::Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address like 0.0.0.0:8080 or [::]:8080 (IP and port)")
    })
}

/// Resolves every key from the flags and the parsed file.
///
/// Both inputs are destructured field by field, so a key added to [`Args`] or [`FileConfig`]
/// but not resolved here fails to compile.
pub(crate) fn resolve(args: Args, file: Option<(PathBuf, ParsedFile)>) -> Result<Config> {
    let Args {
        config: _,
        check_config: _,
        listen,
        admin_listen,
        cluster,
        node,
        nats_url,
        allow_anonymous,
        allowed_origins,
        demo,
        echo_endpoint,
        log_format,
        worker_threads,
        jwt_secret,
        jwt_public_key_file,
        api_keys,
        max_connections,
        max_message_bytes,
        send_queue,
        drain_seconds,
        from_env,
    } = args;
    let (path, parsed) = match file {
        Some((path, parsed)) => (Some(path), parsed),
        None => (
            None,
            ParsedFile {
                config: FileConfig::default(),
                warnings: Vec::new(),
                lines: BTreeMap::new(),
            },
        ),
    };
    let ParsedFile {
        config: file,
        mut warnings,
        lines,
    } = parsed;
    let FileConfig {
        version: _,
        listen: file_listen,
        admin_listen: file_admin_listen,
        cluster: file_cluster,
        node: file_node,
        nats_url: file_nats_url,
        allow_anonymous: file_allow_anonymous,
        allowed_origins: file_allowed_origins,
        require_origin: file_require_origin,
        demo: file_demo,
        echo_endpoint: file_echo_endpoint,
        log_format: file_log_format,
        worker_threads: file_worker_threads,
        nats: file_nats,
        auth: file_auth,
        limits: file_limits,
        drain: file_drain,
        history: file_history,
        rebalance: file_rebalance,
        namespaces: file_namespaces,
        pusher: file_pusher,
    } = file;
    let layers = Layers {
        from_env,
        file: path.clone(),
        lines,
    };

    // Never fails: a test reads every default of the key table.
    let default_listen = key::default_value("listen").ok_or_else(|| {
        ConfigError::invalid("listen", Origin::Default, "has no default in the key table")
    })?;
    let listen = layers
        .pick(
            "listen",
            listen,
            layers.convert("listen", file_listen, socket_addr)?,
            || default_listen,
        )
        .value;
    let admin_listen = layers
        .pick(
            "admin_listen",
            admin_listen.map(Some),
            layers
                .convert("admin_listen", file_admin_listen, socket_addr)?
                .map(Some),
            || None,
        )
        .value
        // The same fixed address twice means one listener; port 0 asks for a fresh port each.
        .filter(|admin| *admin != listen || admin.port() == 0);
    let cluster = layers
        .pick("cluster", cluster, file_cluster, || default_of("cluster"))
        .check(|name| validate::subject_token(name))?;
    let node = layers
        .pick("node", node, file_node, || {
            validate::node_name_from_host(&validate::host_name())
        })
        .check(|name| validate::subject_token(name))?;
    let nats_url = layers
        .pick(
            "nats_url",
            nats_url.map(Some),
            file_nats_url.map(Some),
            || None,
        )
        .map(|urls| match urls {
            // An empty value (e.g. `WSGATE_NATS_URL=`) asks for the in-process broker.
            Some(urls) if urls.trim().is_empty() => Ok(None),
            Some(urls) => validate::nats_urls(&urls).map(Some),
            None => Ok(None),
        })?;
    let allow_anonymous = layers
        .pick(
            "allow_anonymous",
            allow_anonymous,
            file_allow_anonymous,
            || default_of("allow_anonymous"),
        )
        .value;
    let allowed_origins: Vec<String> = layers
        .pick(
            "allowed_origins",
            allowed_origins,
            file_allowed_origins,
            || default_of("allowed_origins"),
        )
        .map(|origins| {
            origins
                .iter()
                .map(|origin| origin.trim())
                .filter(|origin| !origin.is_empty())
                .map(validate::origin)
                .collect()
        })?;
    let require_origin = layers
        .file_only("require_origin", file_require_origin, || {
            default_of("require_origin")
        })
        .value;
    let demo = layers
        .pick("demo", demo, file_demo, || default_of("demo"))
        .value;
    let echo_endpoint = layers
        .pick("echo_endpoint", echo_endpoint, file_echo_endpoint, || {
            default_of("echo_endpoint")
        })
        .value;
    let log_format = layers
        .pick("log_format", log_format, file_log_format, || {
            default_of("log_format")
        })
        .value;

    let worker_threads = layers
        .pick(
            "worker_threads",
            worker_threads.map(Some),
            file_worker_threads.map(Some),
            || None,
        )
        .check(|threads| match threads {
            Some(threads) => key::find("worker_threads")
                .map_or(Ok(()), |known| known.kind.check_count(*threads as u64)),
            None => Ok(()),
        })?;

    let nats = resolve_nats(&layers, file_nats.unwrap_or_default())?;
    let auth = resolve_auth(
        &layers,
        FlagAuth {
            jwt_secret,
            jwt_public_key_file,
            api_keys,
        },
        file_auth.unwrap_or_default(),
    )?;
    let limits = resolve_limits(
        &layers,
        FlagLimits {
            max_connections,
            max_message_bytes,
            send_queue,
        },
        file_limits.unwrap_or_default(),
    )?;
    let drain = resolve_drain(&layers, drain_seconds, file_drain.unwrap_or_default())?;
    let history = resolve_history(&layers, file_history.unwrap_or_default())?;
    let rebalance = resolve_rebalance(&layers, file_rebalance.unwrap_or_default())?;
    let mut namespace_sections = file_namespaces.unwrap_or_default();
    if demo && nats_url.is_none() {
        // Here, not in the gateway, so that `--check-config` and the gateway agree.
        namespace_sections
            .entry(DEMO_NAMESPACE.to_owned())
            .or_insert_with(demo_section);
    }
    let namespaces = resolve_namespaces(&layers, namespace_sections)?;
    let pusher = file_pusher
        .map(|section| pusher::resolve_pusher(&layers, section))
        .transpose()?;

    if !allow_anonymous && !auth.verifies_tokens() {
        warnings.push(
            "no token key is configured (auth.jwt_secret_file, auth.jwt_public_key_file, auth.jwks_file) and allow_anonymous is false: every WebSocket connection will be refused"
                .to_owned(),
        );
    }
    if allow_anonymous
        && auth.anonymous_rooms.iter().any(|pattern| pattern == "**")
        && allowed_origins.is_empty()
    {
        warnings.push(
            "anonymous access is on for every room (auth.anonymous_rooms = [\"**\"]) and any web page may connect (allowed_origins is empty): fine for a demo, not for production"
                .to_owned(),
        );
    }
    if drain.reconnect_spread > drain.deadline {
        warnings.push(format!(
            "drain.reconnect_spread_ms ({} ms) is longer than drain.seconds ({} s): clients told to reconnect late are closed with 1001 first",
            drain.reconnect_spread.as_millis(),
            drain.deadline.as_secs()
        ));
    }

    Ok(Config {
        listen,
        admin_listen,
        cluster,
        node,
        nats_url,
        allow_anonymous,
        allowed_origins,
        require_origin,
        demo,
        echo_endpoint,
        log_format,
        worker_threads,
        nats,
        auth,
        limits,
        drain,
        history,
        rebalance,
        namespaces,
        pusher,
        file: path,
        warnings,
    })
}

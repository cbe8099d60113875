//! The gateway's command line: one flag per overridable key, each with its `WSGATE_*`
//! environment variable.
//!
//! Every field is an `Option`, so [`Config::load`](crate::Config::load) can tell "not given"
//! from "given the default value" and let the file decide in the first case. clap merges flag
//! and environment variable (the flag wins), which gives the first two layers of the precedence
//! flag > env > file > default.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;

use crate::{KEYS, LogFormat, Secret};

/// The gateway's flags and environment variables; see `docs/config.md` for each key.
///
/// The help text carries no defaults: [`Args::command_with_defaults`] appends each flag's
/// default from [`KEYS`], where every default is written once.
///
/// Boolean flags take an optional value (`--demo`, `--demo=false`) so that an environment
/// variable such as `WSGATE_DEMO=false` can switch off what the file switched on.
#[derive(clap::Parser, Debug, Clone, Default, PartialEq)]
#[command(
    name = "wsgate",
    version,
    about = "A Kubernetes-native WebSocket gateway",
    long_about = "A Kubernetes-native WebSocket gateway.\n\nPrecedence: flag > WSGATE_* environment variable > --config file > default. The keys are described in docs/config.md.",
    after_help = "Logging: RUST_LOG sets the log filter (default info; e.g. RUST_LOG=debug or RUST_LOG=wsgate=debug,info); log_format chooses text or json lines on stderr."
)]
pub struct Args {
    /// TOML configuration file; flags and environment variables override its keys.
    #[arg(
        long,
        help_heading = "Configuration file",
        env = "WSGATE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Validate FILE (with the defaults, ignoring other flags) and exit: prints "ok: FILE" and
    /// exits 0, or prints the error and exits 2.
    #[arg(long, help_heading = "Configuration file", value_name = "FILE")]
    pub check_config: Option<PathBuf>,

    /// Public listener (/ws, /client/, the demo page).
    #[arg(
        long,
        help_heading = "Listeners",
        env = "WSGATE_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: Option<SocketAddr>,

    /// Admin listener (backend API, /healthz, /readyz, /metrics); unset: served on --listen.
    #[arg(
        long,
        help_heading = "Listeners",
        env = "WSGATE_ADMIN_LISTEN",
        value_name = "ADDR"
    )]
    pub admin_listen: Option<SocketAddr>,

    /// Cluster name, one NATS subject token; isolates clusters sharing a NATS.
    #[arg(
        long,
        help_heading = "Cluster",
        env = "WSGATE_CLUSTER",
        value_name = "NAME"
    )]
    pub cluster: Option<String>,

    /// Node name, one NATS subject token; in Kubernetes the pod name.
    #[arg(
        long,
        help_heading = "Cluster",
        env = "WSGATE_NODE",
        value_name = "NAME"
    )]
    pub node: Option<String>,

    /// Comma-separated NATS URLs; unset: single node with an in-process broker.
    #[arg(
        long,
        help_heading = "Cluster",
        env = "WSGATE_NATS_URL",
        value_name = "URLS"
    )]
    pub nats_url: Option<String>,

    /// Accept connections without a token.
    #[arg(
        long, help_heading = "Access",
        env = "WSGATE_ALLOW_ANONYMOUS",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub allow_anonymous: Option<bool>,

    /// Comma-separated Origin allow-list: scheme://host or scheme://*.domain entries, each with
    /// an optional :port; empty: any origin.
    #[arg(
        long,
        help_heading = "Access",
        env = "WSGATE_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,

    /// Serve the demo page at /.
    #[arg(
        long, help_heading = "Pages and logs",
        env = "WSGATE_DEMO",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub demo: Option<bool>,

    /// Testing only: a plain echo WebSocket at /echo, no auth or origin check.
    #[arg(
        long, help_heading = "Pages and logs",
        env = "WSGATE_ECHO_ENDPOINT",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub echo_endpoint: Option<bool>,

    /// Log line format.
    #[arg(
        long,
        help_heading = "Pages and logs",
        env = "WSGATE_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    /// Threads that run the connections; default: one per CPU the process may use.
    #[arg(
        long,
        help_heading = "Limits and shutdown",
        env = "WSGATE_WORKER_THREADS",
        value_name = "N"
    )]
    pub worker_threads: Option<usize>,

    /// HS256 key itself, for development; in production use auth.jwt_secret_file.
    #[arg(
        long, help_heading = "Access",
        env = "WSGATE_JWT_SECRET",
        value_name = "KEY",
        hide_env_values = true,
        value_parser = Secret::parse_value,
    )]
    pub jwt_secret: Option<Secret>,

    /// RS256/ES256 public key file (PEM).
    #[arg(
        long,
        help_heading = "Access",
        env = "WSGATE_JWT_PUBLIC_KEY_FILE",
        value_name = "FILE"
    )]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Comma-separated backend API keys, for development; in production use
    /// auth.api_keys_file.
    #[arg(
        long, help_heading = "Access",
        env = "WSGATE_API_KEYS",
        value_name = "KEYS",
        hide_env_values = true,
        value_parser = Secret::parse_list,
    )]
    pub api_keys: Option<Secret>,

    /// Connections per gateway; over it: 503; capped below the open-file limit.
    #[arg(
        long,
        help_heading = "Limits and shutdown",
        env = "WSGATE_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub max_connections: Option<usize>,

    /// Largest client message in bytes, 1 KiB to 64 MiB.
    #[arg(
        long,
        help_heading = "Limits and shutdown",
        env = "WSGATE_MAX_MESSAGE_BYTES",
        value_name = "BYTES"
    )]
    pub max_message_bytes: Option<usize>,

    /// Outgoing frames queued per connection; full: close 1013.
    #[arg(
        long,
        help_heading = "Limits and shutdown",
        env = "WSGATE_SEND_QUEUE",
        value_name = "N"
    )]
    pub send_queue: Option<usize>,

    /// Hard deadline of a drain in seconds, then close 1001.
    #[arg(
        long,
        help_heading = "Limits and shutdown",
        env = "WSGATE_DRAIN_SECONDS",
        value_name = "SECONDS"
    )]
    pub drain_seconds: Option<u64>,

    /// The ids of the flags (`send_queue`) whose value clap took from their environment
    /// variable rather than the command line, so an error names the layer that set the value.
    /// Filled by [`Args::try_parse_command_line`]; empty means "all from the command line".
    #[arg(skip)]
    pub from_env: BTreeSet<String>,
}

impl Args {
    /// The command line as clap sees it, with each flag's help ending in the default of its key
    /// from [`KEYS`] (keys that are unset by default show none), so `--help` cannot drift from
    /// the key table.
    pub fn command_with_defaults() -> clap::Command {
        <Args as clap::CommandFactory>::command().mut_args(|arg| {
            let default = arg.get_long().and_then(|long| {
                KEYS.iter()
                    .find(|key| key.flag.and_then(|flag| flag.strip_prefix("--")) == Some(long))
                    .map(|key| key.default)
                    .filter(|default| *default != "unset")
            });
            match (default, arg.get_help()) {
                (Some(default), Some(help)) => {
                    let help = format!("{help} [default: {default}]");
                    arg.help(help)
                }
                _ => arg,
            }
        })
    }

    /// Parses the process's command line and `WSGATE_*` variables with
    /// [`Args::command_with_defaults`].
    ///
    /// # Errors
    ///
    /// As [`clap::Parser::try_parse`]: an unknown flag or a bad value, and also `--help` and
    /// `--version` (whose error kind says so).
    pub fn try_parse_command_line() -> Result<Args, clap::Error> {
        Self::try_parse_command_line_from(std::env::args_os())
    }

    /// As [`Args::try_parse_command_line`], with the given command line (the environment is
    /// still the process's).
    ///
    /// # Errors
    ///
    /// As [`Args::try_parse_command_line`].
    pub fn try_parse_command_line_from<I, T>(line: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let line: Vec<std::ffi::OsString> = line.into_iter().map(Into::into).collect();
        let mut command = Self::command_with_defaults();
        if checks_config(&line) {
            // `--check-config` checks the file alone: no `WSGATE_*` variable is read, so that
            // a CI check does not depend on the CI machine's environment (docs/config.md).
            command = command.mut_args(|arg| arg.env(None::<&str>));
        }
        let matches = command.try_get_matches_from(&line)?;
        let mut args = <Args as clap::FromArgMatches>::from_arg_matches(&matches)?;
        args.from_env = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(args)
    }

    /// The one line a command-line error is reported as (`invalid configuration: ...`), for
    /// the process's own command line; see [`Args::error_line_for`].
    pub fn error_line(error: &clap::Error) -> String {
        let line: Vec<std::ffi::OsString> = std::env::args_os().collect();
        Self::error_line_for(error, &line)
    }

    /// The one line a command-line error is reported as, given the command `line`: clap's
    /// first line, naming the environment variable instead of the flag when the bad value came
    /// from the variable (the flag is not on `line`), so the error names the layer that set it.
    pub fn error_line_for(error: &clap::Error, line: &[std::ffi::OsString]) -> String {
        let text = error.to_string();
        let mut first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        if let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) {
            // `--max-connections <N>`: the flag and its value name.
            let flag = invalid.split(' ').next().unwrap_or(invalid);
            let on_line = line.iter().any(|arg| {
                arg.to_str()
                    .is_some_and(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
            });
            let env = Self::command_with_defaults()
                .get_arguments()
                .find(|arg| {
                    arg.get_long()
                        .is_some_and(|long| flag == format!("--{long}"))
                })
                .and_then(|arg| {
                    arg.get_env()
                        .and_then(|env| env.to_str().map(str::to_owned))
                });
            if let (false, Some(env)) = (on_line, env) {
                first = first.replace(&format!("'{invalid}'"), &env);
            }
        }
        format!("invalid configuration: {first}")
    }
}

/// Whether the command `line` asks for `--check-config`.
fn checks_config(line: &[std::ffi::OsString]) -> bool {
    line.iter().any(|arg| {
        arg.to_str()
            .is_some_and(|arg| arg == "--check-config" || arg.starts_with("--check-config="))
    })
}

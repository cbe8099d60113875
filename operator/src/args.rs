//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::resources::Settings;
use crate::{Error, Result, telemetry};

/// Kubernetes operator for wsgate: reconciles `WsCluster` resources into
/// gateway fleets.
#[derive(Parser, Debug)]
#[command(
    name = "wsgate-operator",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// What to do; without one, run the controller.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Controller options, when no subcommand is given (`run` is the
    /// default).
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the WsCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print, as multi-document YAML, what the controller would apply for
    /// the WsCluster in FILE (like `helm template`).
    Render {
        /// A WsCluster manifest (YAML); `-` reads standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Namespace to assume when the manifest names none.
        #[arg(short = 'n', long, value_name = "NAMESPACE", default_value = "default")]
        namespace: String,
        /// Gateway image for a WsCluster that names none.
        #[arg(
            long,
            env = "WSGATE_OPERATOR_GATEWAY_IMAGE",
            value_name = "IMAGE",
            default_value = DEFAULT_GATEWAY_IMAGE
        )]
        gateway_image: Option<String>,
    },
    /// Print, as JSON, the API permissions the operator uses (the table the
    /// chart's RBAC is tested against).
    #[command(hide = true)]
    Rbac,
    /// Print what `/metrics` serves before the first reconcile: every
    /// metric the operator exports, at its initial value (the chart's tests
    /// check the dashboard and the alerts against it; the controller itself
    /// needs a cluster).
    #[command(hide = true)]
    Metrics,
}

/// The gateway image of a WsCluster that names none, shown as the default in
/// `--help` (a test keeps it equal to [`Settings::default`]'s).
pub const DEFAULT_GATEWAY_IMAGE: &str =
    concat!("ghcr.io/wsgate/wsgate:", env!("CARGO_PKG_VERSION"));

/// Options of the controller.
///
/// Each flag's environment variable is `WSGATE_OPERATOR_` and the flag's name
/// (`--pod-name`, `WSGATE_OPERATOR_POD_NAME`); the flags' earlier names stay as
/// aliases.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the operator's HTTP server: `/metrics`, `/healthz`,
    /// `/readyz`.
    #[arg(
        long,
        env = "WSGATE_OPERATOR_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// Apply the operator's own CRD at startup (Helm never upgrades a
    /// chart's `crds/`). Needs RBAC on customresourcedefinitions.
    #[arg(long, env = "WSGATE_OPERATOR_APPLY_CRD")]
    pub apply_crd: bool,

    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "WSGATE_OPERATOR_LEADER_ELECTION")]
    pub leader_election: bool,

    /// The operator's own namespace: where its leader-election Lease lives.
    #[arg(
        long = "namespace",
        alias = "lease-namespace",
        env = "WSGATE_OPERATOR_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "default"
    )]
    pub lease_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "WSGATE_OPERATOR_LEASE_NAME",
        value_name = "NAME",
        default_value = "wsgate-operator"
    )]
    pub lease_name: String,

    /// This replica's identity in the election: its pod name (default: the
    /// host name).
    #[arg(
        long = "pod-name",
        alias = "identity",
        env = "WSGATE_OPERATOR_POD_NAME",
        value_name = "POD"
    )]
    pub identity: Option<String>,

    /// Gateway image for WsClusters that name none.
    #[arg(
        long,
        env = "WSGATE_OPERATOR_GATEWAY_IMAGE",
        value_name = "IMAGE",
        default_value = DEFAULT_GATEWAY_IMAGE
    )]
    pub gateway_image: Option<String>,

    /// How often the gateways' stats are read (status and autoscaling), in
    /// seconds.
    #[arg(
        long = "stats-interval",
        alias = "stats-interval-seconds",
        env = "WSGATE_OPERATOR_STATS_INTERVAL",
        value_name = "SECONDS",
        default_value_t = 15
    )]
    pub stats_interval_seconds: u64,

    /// Log line format.
    #[arg(
        long,
        env = "WSGATE_OPERATOR_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: telemetry::LogFormat,

    /// Namespaces to watch, comma-separated; empty: every namespace. With a
    /// list, the operator watches and writes only there, so it needs a Role
    /// in each of them instead of a ClusterRole (the chart's
    /// `watchNamespaces`).
    #[arg(
        long,
        env = "WSGATE_OPERATOR_WATCH_NAMESPACES",
        value_name = "NAMESPACES",
        value_delimiter = ',',
        num_args = 0..
    )]
    pub watch_namespaces: Vec<String>,
}

impl RunArgs {
    /// The builders' settings these options select.
    pub fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            default_image: self.gateway_image.clone().unwrap_or(defaults.default_image),
            operator_namespace: self.lease_namespace.clone(),
        }
    }

    /// The namespaces to watch: `None` for every namespace, else the listed
    /// ones, each once, blanks dropped.
    pub fn watched_namespaces(&self) -> Option<Vec<String>> {
        let mut namespaces: Vec<String> = self
            .watch_namespaces
            .iter()
            .map(|namespace| namespace.trim().to_owned())
            .filter(|namespace| !namespace.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        (!namespaces.is_empty()).then_some(namespaces)
    }

    /// The stats interval as a duration (at least one second).
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_seconds.max(1))
    }
}

impl Args {
    /// Runs the chosen command and turns its outcome into an exit status.
    pub async fn run(self) -> ExitCode {
        let Self { command, run } = self;
        let outcome = match command.unwrap_or(Command::Run(run)) {
            Command::Run(run) => crate::runtime::main(run).await,
            Command::Crd => print_crd(),
            Command::Rbac => print_rbac(),
            Command::Metrics => print_metrics(),
            Command::Render {
                file,
                namespace,
                gateway_image,
            } => {
                let mut settings = Settings::default();
                if let Some(default_image) = gateway_image {
                    settings.default_image = default_image;
                }
                print_render(&file, &namespace, &settings)
            }
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("wsgate-operator: {error}");
                ExitCode::FAILURE
            }
        }
    }
}

fn print_crd() -> anyhow::Result<()> {
    print!("{}", wsgate_crds::crd_yaml()?);
    Ok(())
}

fn print_rbac() -> anyhow::Result<()> {
    use std::io::Write;
    // A closed pipe (`| head`) is an error to report, not a panic.
    writeln!(std::io::stdout().lock(), "{}", crate::rbac::rules_json()?)?;
    Ok(())
}

fn print_metrics() -> anyhow::Result<()> {
    use std::io::Write;
    write!(
        std::io::stdout().lock(),
        "{}",
        crate::metrics::Metrics::default().encode()
    )?;
    Ok(())
}

fn print_render(
    file: &std::path::Path,
    namespace: &str,
    settings: &Settings,
) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|error| Error::Input {
            path: file.display().to_string(),
            message: error.to_string(),
        })?
    };
    let out =
        crate::render::render(&text, namespace, settings).map_err(|source| Error::Render {
            path: file.display().to_string(),
            source: Box::new(source),
        })?;
    print!("{out}");
    Ok(())
}

/// What `render` prints for the WsCluster manifests in `text`; see
/// [`crate::render::render`].
///
/// # Errors
///
/// [`Error::Render`] naming every problem, when a document would be refused.
pub fn render(text: &str, namespace: &str, settings: &Settings) -> Result<String> {
    crate::render::render(text, namespace, settings).map_err(|source| Error::Render {
        path: "-".to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Options work before and after `run`, and without a subcommand.
    #[test]
    fn run_options_parse_with_and_without_the_subcommand() {
        let args = Args::try_parse_from([
            "wsgate-operator",
            "run",
            "--leader-election",
            "--stats-interval",
            "5",
        ])
        .unwrap();
        let Some(Command::Run(run)) = args.command else {
            panic!("not run")
        };
        assert!(run.leader_election);
        assert_eq!(run.stats_interval(), Duration::from_secs(5));
        let args = Args::try_parse_from(["wsgate-operator", "--apply-crd"]).unwrap();
        assert!(args.command.is_none());
        assert!(args.run.apply_crd);
        assert_eq!(
            args.run.settings(),
            Settings {
                operator_namespace: "default".into(),
                ..Settings::default()
            },
            "the operator's namespace is the Lease's (WSGATE_OPERATOR_NAMESPACE)"
        );
    }

    /// `render -f` takes a file and an optional gateway image.
    #[test]
    fn render_parses_file_and_image() {
        let args = Args::try_parse_from([
            "wsgate-operator",
            "render",
            "-f",
            "x.yaml",
            "--gateway-image",
            "r/g:1",
        ])
        .unwrap();
        let Some(Command::Render {
            file,
            gateway_image,
            namespace,
        }) = args.command
        else {
            panic!("not render")
        };
        assert_eq!(file, PathBuf::from("x.yaml"));
        assert_eq!(gateway_image.as_deref(), Some("r/g:1"));
        assert_eq!(namespace, "default");
    }

    /// `--watch-namespaces` (or its env) takes a comma-separated list;
    /// without it, or with only blanks, every namespace is watched.
    #[test]
    fn watch_namespaces_are_a_list_and_empty_means_every_namespace() {
        let args = Args::try_parse_from([
            "wsgate-operator",
            "--watch-namespaces",
            "team-b,team-a, ,team-a",
        ])
        .unwrap();
        assert_eq!(
            args.run.watched_namespaces(),
            Some(vec!["team-a".to_owned(), "team-b".to_owned()])
        );
        let args = Args::try_parse_from(["wsgate-operator"]).unwrap();
        assert_eq!(args.run.watched_namespaces(), None);
        let args = Args::try_parse_from(["wsgate-operator", "--watch-namespaces", ""]).unwrap();
        assert_eq!(args.run.watched_namespaces(), None);
    }

    /// `--help` is readable: every value has a meaningful name, every
    /// environment variable is `WSGATE_OPERATOR_` and its flag's name, and
    /// defaults are shown (the default image is the builders' own).
    #[test]
    fn help_names_values_and_envs_after_their_flags_with_defaults() {
        use clap::CommandFactory;
        assert_eq!(DEFAULT_GATEWAY_IMAGE, Settings::default().default_image);
        let command = Args::command();
        let run = command
            .find_subcommand("run")
            .expect("the run subcommand exists");
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let env = arg.get_env().and_then(|env| env.to_str());
            let expected = format!("WSGATE_OPERATOR_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env, Some(expected.as_str()), "--{long}");
            if arg.get_action().takes_values() {
                let names: Vec<String> = arg
                    .get_value_names()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                // clap's own value name is the field's name in capitals (LEASE_NAMESPACE).
                let field = arg.get_id().as_str().to_uppercase();
                assert!(
                    !names.is_empty() && names.iter().all(|name| *name != field),
                    "--{long} has no meaningful value name: {names:?}"
                );
            }
        }
        let mut run = run.clone();
        let help = run.render_long_help().to_string();
        for shown in [
            "[default: 0.0.0.0:8080]",
            "[default: wsgate-operator]",
            "[default: 15]",
            "[env: WSGATE_OPERATOR_POD_NAME=]",
            &format!("[default: {DEFAULT_GATEWAY_IMAGE}]"),
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
        let args = Args::try_parse_from([
            "wsgate-operator",
            "--lease-namespace",
            "ops",
            "--identity",
            "pod-0",
            "--stats-interval-seconds",
            "3",
        ])
        .unwrap();
        assert_eq!(
            (
                args.run.lease_namespace.as_str(),
                args.run.identity.as_deref(),
                args.run.stats_interval_seconds
            ),
            ("ops", Some("pod-0"), 3),
            "the earlier flag names still work"
        );
    }

    /// A manifest that is not a WsCluster is a clear input error.
    #[test]
    fn render_refuses_what_is_not_a_wscluster() {
        let error = render(
            "kind: ConfigMap\nmetadata: {name: x}\n",
            "default",
            &Settings::default(),
        )
        .unwrap_err();
        assert!(matches!(error, Error::Render { .. }), "{error}");
    }
}

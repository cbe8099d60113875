//! Tests of the whole crate against docs/config.md: defaults, precedence, strictness, errors,
//! and the agreement of [`KEYS`] with the flags, the file model and `docs/config.md`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;

/// The file name used in messages by the tests that parse text.
const FILE: &str = "/etc/wsgate/wsgate.toml";

/// `docs/config.md`, where the example and the key table live.
const DOCS: &str = include_str!("../../../docs/config.md");

/// The fenced TOML block of the "Example" section of `docs/config.md`, verbatim.
fn docs_example() -> &'static str {
    let section = DOCS
        .split_once("\n## Example\n")
        .map_or("", |(_, section)| section);
    let block = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map_or("", |(block, _)| block);
    assert!(
        block.starts_with("version = 1\n"),
        "docs/config.md has no ```toml block under ## Example"
    );
    block
}

/// Args with a fixed node name, so tests do not depend on the host name.
fn args() -> Args {
    Args {
        node: Some("test-node".to_owned()),
        ..Args::default()
    }
}

/// Resolves `text` as the file under `args`.
fn load(args: Args, text: &str) -> Result<Config> {
    Config::from_args_and_toml(args, text, Path::new(FILE))
}

/// The error of resolving `text` with no flags, as its one line.
fn error_of(text: &str) -> String {
    match load(Args::default(), text) {
        Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// Parses a command line the way the gateway binary does.
fn parse(line: &[&str]) -> Args {
    let mut argv = vec!["wsgate"];
    argv.extend_from_slice(line);
    match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(error) => panic!("{line:?}: {error}"),
    }
}

/// A file with every key set (to non-default values), for round trips and coverage checks.
fn full_file() -> FileConfig {
    FileConfig {
        version: CONFIG_VERSION,
        listen: Some("0.0.0.0:8081".into()),
        admin_listen: Some("0.0.0.0:9091".into()),
        cluster: Some("prod".into()),
        node: Some("node-1".into()),
        nats_url: Some("nats://a:4222,nats://b:4222".into()),
        allow_anonymous: Some(true),
        allowed_origins: Some(vec!["https://app.example.com".into()]),
        require_origin: Some(true),
        demo: Some(true),
        echo_endpoint: Some(true),
        log_format: Some(LogFormat::Json),
        worker_threads: Some(3),
        nats: Some(NatsSection {
            credentials_file: Some("/n/creds".into()),
            tls_ca_file: Some("/n/ca.pem".into()),
            tls_cert_file: Some("/n/cert.pem".into()),
            tls_key_file: Some("/n/key.pem".into()),
            ping_interval_ms: Some(1000),
            node_heartbeat_ms: Some(500),
            request_timeout_ms: Some(750),
        }),
        auth: Some(AuthSection {
            jwt_secret_file: Some("/a/secret".into()),
            jwt_public_key_file: Some("/a/key.pem".into()),
            jwks_file: Some("/a/jwks.json".into()),
            audience: Some("chat".into()),
            issuer: Some("https://issuer".into()),
            leeway_seconds: Some(5),
            require_exp: Some(false),
            user_rooms: Some(vec!["chat:*".into()]),
            anonymous_rooms: Some(vec!["public:**".into()]),
            api_keys_file: Some("/a/api-keys".into()),
            api_keys_files: Some(vec!["/a/backend-keys".into()]),
            auth_timeout_ms: Some(3000),
        }),
        limits: Some(LimitsSection {
            max_connections: Some(20),
            max_connections_per_user: Some(3),
            max_page_size: Some(10),
            max_rooms_per_connection: Some(7),
            max_message_bytes: Some(4096),
            max_http_body_bytes: Some(8192),
            send_queue: Some(16),
            publish_rate: Some(2.5),
            publish_burst: Some(4),
            command_rate: Some(12.5),
            command_burst: Some(30),
            max_errors_per_minute: Some(9),
            heartbeat_ms: Some(1000),
            heartbeat_timeout_ms: Some(3000),
            handshake_timeout_ms: Some(2500),
            max_connections_per_ip: Some(8),
            trusted_proxies: Some(vec!["10.0.0.0/8".into(), "::1".into()]),
        }),
        drain: Some(DrainSection {
            seconds: Some(12),
            reconnect_spread_ms: Some(2000),
        }),
        history: Some(HistorySection {
            storage: Some(Storage::Memory),
            replicas: Some(3),
            memory_max_bytes: Some(1 << 20),
        }),
        rebalance: Some(RebalanceSection {
            enabled: Some(false),
            tolerance: Some(0.5),
            spread_ms: Some(1000),
            max_per_second: Some(10),
            min_age_ms: Some(30_000),
            include_unrecoverable: Some(true),
        }),
        namespaces: Some(
            [
                (
                    "default".to_owned(),
                    NamespaceSection {
                        history_size: Some(10),
                        history_ttl_seconds: Some(60),
                        history_max_bytes: Some(1 << 20),
                        history_max_msgs: Some(5000),
                        recovery_max: Some(50),
                        presence: Some(true),
                        join_leave: Some(true),
                        client_publish: Some(false),
                    },
                ),
                (
                    "chat".to_owned(),
                    NamespaceSection {
                        history_size: Some(100),
                        ..NamespaceSection::default()
                    },
                ),
            ]
            .into(),
        ),
        pusher: Some(PusherSection {
            apps: Some(vec![PusherAppSection {
                id: Some("1001".into()),
                key: Some("app-key".into()),
                secret_file: Some("/p/1001".into()),
                max_connections: Some(50),
                enable_client_messages: Some(false),
                max_client_events_per_second: Some(5),
                max_presence_members: Some(20),
                max_event_bytes: Some(2048),
            }]),
        }),
    }
}

/// Every dotted leaf key of a TOML table, with namespace names replaced by `<ns>`.
fn leaf_keys(table: &toml::Table, prefix: &[String], keys: &mut BTreeSet<String>) {
    for (name, value) in table {
        let mut path = prefix.to_vec();
        let segment = if prefix.len() == 1 && prefix[0] == "namespaces" {
            NAMESPACE_SEGMENT.to_owned()
        } else {
            name.clone()
        };
        path.push(segment);
        match value {
            toml::Value::Table(inner) => leaf_keys(inner, &path, keys),
            // An array of tables (`[[pusher.apps]]`): its elements' keys, as `apps[]`.
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                path.pop();
                path.push(format!("{name}{ARRAY_SEGMENT}"));
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        leaf_keys(inner, &path, keys);
                    }
                }
            }
            _ => {
                keys.insert(path.join("."));
            }
        }
    }
}

/// The keys of [`KEYS`] as a set.
fn key_names() -> BTreeSet<String> {
    KEYS.iter().map(|key| key.key.to_owned()).collect()
}

// ---------------------------------------------------------------- defaults and the example

/// A file with only `version` yields every default of docs/config.md.
#[test]
fn an_empty_file_gives_every_documented_default() -> Result<()> {
    let config = load(args(), "version = 1")?;
    assert_eq!(
        config.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().ok().unwrap()
    );
    assert_eq!(config.admin_listen, None);
    assert_eq!(config.cluster, "default");
    assert_eq!(config.nats_url, None);
    assert!(!config.allow_anonymous);
    assert!(config.allowed_origins.is_empty());
    assert!(!config.require_origin);
    assert!(!config.demo);
    assert!(!config.echo_endpoint);
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.worker_threads, None, "one per usable CPU");

    let nats = &config.nats;
    assert_eq!(nats.credentials_file, None);
    assert_eq!(nats.tls_ca_file, None);
    assert_eq!(nats.tls_cert_file, None);
    assert_eq!(nats.tls_key_file, None);
    assert_eq!(nats.ping_interval, Duration::from_millis(5000));
    assert_eq!(nats.node_heartbeat, Duration::from_millis(2000));
    assert_eq!(nats.request_timeout, Duration::from_millis(2000));

    let auth = &config.auth;
    assert_eq!(auth.jwt_secret, None);
    assert_eq!(auth.jwt_public_key_file, None);
    assert_eq!(auth.jwks_file, None);
    assert_eq!(auth.audience, None);
    assert_eq!(auth.issuer, None);
    assert_eq!(auth.leeway, Duration::from_secs(30));
    assert!(auth.require_exp);
    assert!(auth.user_rooms.is_empty());
    assert_eq!(auth.anonymous_rooms, vec!["**".to_owned()]);
    assert_eq!(auth.api_keys, None);
    assert!(auth.api_keys_files.is_empty());
    assert_eq!(auth.auth_timeout, Duration::from_millis(5000));

    let limits = &config.limits;
    assert_eq!(limits.max_connections, 10_000);
    assert_eq!(limits.max_connections_per_user, 100);
    assert_eq!(limits.max_page_size, 1000);
    assert_eq!(limits.max_rooms_per_connection, 100);
    assert_eq!(limits.max_message_bytes, 65_536);
    assert_eq!(limits.max_http_body_bytes, 1_048_576);
    assert_eq!(limits.send_queue, 256);
    assert_eq!(limits.publish_rate, 50.0);
    assert_eq!(limits.publish_burst, 100);
    assert_eq!(limits.command_rate, 100.0);
    assert_eq!(limits.command_burst, 200);
    assert_eq!(limits.max_errors_per_minute, 60);
    assert_eq!(limits.heartbeat, Duration::from_millis(25_000));
    assert_eq!(limits.heartbeat_timeout, Duration::from_millis(60_000));
    assert_eq!(limits.handshake_timeout, Duration::from_millis(10_000));
    assert_eq!(limits.max_connections_per_ip, 0);
    assert!(limits.trusted_proxies.is_empty());

    assert_eq!(config.drain.deadline, Duration::from_secs(30));
    assert_eq!(config.drain.reconnect_spread, Duration::from_millis(10_000));
    assert_eq!(config.history.storage, Storage::File);
    assert_eq!(config.history.replicas, 1);
    assert_eq!(config.history.memory_max_bytes, 268_435_456);
    let rebalance = &config.rebalance;
    assert!(rebalance.enabled);
    assert_eq!(rebalance.tolerance, 0.2);
    assert_eq!(rebalance.spread, Duration::from_millis(5000));
    assert_eq!(rebalance.max_per_second, 50);
    assert_eq!(rebalance.min_age, Duration::from_millis(120_000));
    assert!(!rebalance.include_unrecoverable);

    let namespace = &config.namespaces.default;
    assert_eq!(namespace.history_size, 0);
    assert_eq!(namespace.history_ttl, Duration::ZERO);
    assert_eq!(namespace.history_max_bytes, 268_435_456);
    assert_eq!(namespace.history_max_msgs, 1_000_000);
    assert_eq!(namespace.recovery_max, 1000);
    assert!(!namespace.presence);
    assert!(!namespace.join_leave);
    assert!(namespace.client_publish);
    assert!(config.namespaces.named.is_empty());
    assert_eq!(config.file, Some(PathBuf::from(FILE)));
    Ok(())
}

/// The `[rebalance]` keys are read from the file as written.
#[test]
fn rebalance_keys_are_read_from_the_file() -> Result<()> {
    let text = "version = 1\n[rebalance]\nenabled = false\ntolerance = 0.5\nspread_ms = 0\nmax_per_second = 7\nmin_age_ms = 1500\ninclude_unrecoverable = true\n";
    let rebalance = load(args(), text)?.rebalance;
    assert_eq!(
        rebalance,
        Rebalance {
            enabled: false,
            tolerance: 0.5,
            spread: Duration::ZERO,
            max_per_second: 7,
            min_age: Duration::from_millis(1500),
            include_unrecoverable: true,
        }
    );
    Ok(())
}

/// Setting any key to the default [`KEYS`] documents changes nothing: the table's defaults are
/// the code's.
#[test]
fn keys_table_defaults_are_the_code_defaults() -> Result<()> {
    let defaults = load(args(), "version = 1")?;
    for key in KEYS {
        if matches!(key.default, "unset" | "host name") || key.key == "version" {
            continue;
        }
        if key.key.contains(ARRAY_SEGMENT) {
            // An app needs its id, key and secret_file: `pusher_apps_take_the_documented_defaults`.
            continue;
        }
        let value = match key.default.parse::<toml::Value>() {
            Ok(value) if !matches!(value, toml::Value::Datetime(_)) => value,
            _ => toml::Value::String(key.default.to_owned()),
        };
        let dotted = key.key.replace(NAMESPACE_SEGMENT, DEFAULT_NAMESPACE);
        let (table, name) = dotted.rsplit_once('.').unwrap_or(("", &dotted));
        let header = if table.is_empty() {
            String::new()
        } else {
            format!("[{table}]\n")
        };
        let text = format!("version = 1\n{header}{name} = {value}\n");
        let config = load(args(), &text)?;
        assert_eq!(config, defaults, "{}: {text}", key.key);
    }
    Ok(())
}

/// Every default written in [`KEYS`] is a value of the key's kind, so the `Default` impls that
/// read them (through `key::default_of`) get the documented value, not a fallback.
#[test]
fn every_default_reads_as_its_kind() {
    for key in KEYS {
        match key.default_toml() {
            Some(value) => {
                if let Err(problem) = key.kind.check(&value) {
                    panic!("{}: default {:?} {problem}", key.key, key.default);
                }
            }
            None => assert!(matches!(key.default, "unset" | "host name"), "{}", key.key),
        }
    }
    assert_eq!(
        key::default_value::<SocketAddr>("listen"),
        "127.0.0.1:8080".parse().ok()
    );
}

/// The example of docs/config.md parses and means what it says.
#[test]
fn the_docs_example_parses() -> Result<()> {
    let config = load(args(), docs_example())?;
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(
        config.admin_listen.map(|addr| addr.to_string()).as_deref(),
        Some("0.0.0.0:9090")
    );
    assert_eq!(config.cluster, "prod_chat");
    assert_eq!(config.nats_url.as_deref(), Some("nats://nats:4222"));
    assert_eq!(
        config.allowed_origins,
        vec!["https://app.example.com".to_owned()]
    );
    assert_eq!(
        config.auth.jwt_secret,
        Some(Secret::File("/etc/wsgate/auth/jwt-secret".into()))
    );
    assert_eq!(
        config.auth.api_keys,
        Some(Secret::File("/etc/wsgate/auth/api-keys".into()))
    );
    assert_eq!(config.limits.max_connections, 15_000);
    let chat = config.namespaces.for_room("chat:lobby");
    assert_eq!(chat.history_size, 100);
    assert_eq!(chat.history_ttl, Duration::from_secs(300));
    assert!(chat.presence && chat.join_leave && chat.client_publish);
    assert_eq!(chat.recovery_max, 1000);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    Ok(())
}

// ---------------------------------------------------------------- precedence

/// A flag beats the file, the file beats the default.
#[test]
fn flags_override_the_file_which_overrides_defaults() -> Result<()> {
    let file =
        "version = 1\ncluster = \"from_file\"\n[limits]\nsend_queue = 5\nmax_connections = 9\n";
    let mut flags = parse(&["--send-queue", "7", "--node", "n1"]);
    flags.config = None;
    let config = load(flags, file)?;
    assert_eq!(config.limits.send_queue, 7, "flag over file");
    assert_eq!(config.limits.max_connections, 9, "file over default");
    assert_eq!(config.cluster, "from_file");
    assert_eq!(config.limits.max_message_bytes, 65_536, "default");
    Ok(())
}

/// An environment variable (which clap puts in the same `Args` field as the flag) beats the
/// file; built directly here so the test leaves the process environment alone.
#[test]
fn environment_overrides_the_file() -> Result<()> {
    let file = "version = 1\ndemo = true\nlog_format = \"json\"\n[drain]\nseconds = 5\n";
    let from_env = Args {
        demo: Some(false),
        drain_seconds: Some(60),
        ..args()
    };
    let config = load(from_env, file)?;
    assert!(
        !config.demo,
        "WSGATE_DEMO=false switches off what the file switched on"
    );
    assert_eq!(config.drain.deadline, Duration::from_secs(60));
    assert_eq!(
        config.log_format,
        LogFormat::Json,
        "the file decides what env leaves unset"
    );
    Ok(())
}

/// `--jwt-secret` (a value) wins over `auth.jwt_secret_file`; `--api-keys` likewise.
#[test]
fn secret_flags_win_over_secret_files() -> Result<()> {
    let file = "version = 1\n[auth]\njwt_secret_file = \"/s/jwt\"\napi_keys_file = \"/s/keys\"\n";
    let flags = parse(&[
        "--node",
        "n",
        "--jwt-secret",
        "dev-secret",
        "--api-keys",
        "k1, k2",
    ]);
    let config = load(flags, file)?;
    assert_eq!(
        config.auth.jwt_secret,
        Some(Secret::Value("dev-secret".into()))
    );
    assert_eq!(config.auth.api_keys, Some(Secret::Value("k1\nk2".into())));

    let config = load(args(), file)?;
    assert_eq!(config.auth.jwt_secret, Some(Secret::File("/s/jwt".into())));
    assert_eq!(config.auth.api_keys, Some(Secret::File("/s/keys".into())));
    Ok(())
}

/// Every flag parses into its field, and boolean flags take an optional value.
#[test]
fn flags_parse_into_typed_fields() {
    let args = parse(&[
        "--config",
        "/c.toml",
        "--listen",
        "0.0.0.0:1",
        "--admin-listen",
        "[::]:2",
        "--cluster",
        "c",
        "--node",
        "n",
        "--nats-url",
        "nats://x:4222",
        "--allow-anonymous",
        "--allowed-origins",
        "https://a.com,https://*.b.com",
        "--demo=false",
        "--echo-endpoint",
        "yes",
        "--log-format",
        "json",
        "--worker-threads",
        "4",
        "--jwt-secret",
        "s",
        "--jwt-public-key-file",
        "/k.pem",
        "--api-keys",
        "a,b",
        "--max-connections",
        "5",
        "--max-message-bytes",
        "2048",
        "--send-queue",
        "3",
        "--drain-seconds",
        "4",
    ]);
    assert_eq!(
        args,
        Args {
            config: Some("/c.toml".into()),
            check_config: None,
            listen: "0.0.0.0:1".parse().ok(),
            admin_listen: "[::]:2".parse().ok(),
            cluster: Some("c".into()),
            node: Some("n".into()),
            nats_url: Some("nats://x:4222".into()),
            allow_anonymous: Some(true),
            allowed_origins: Some(vec!["https://a.com".into(), "https://*.b.com".into()]),
            demo: Some(false),
            echo_endpoint: Some(true),
            log_format: Some(LogFormat::Json),
            worker_threads: Some(4),
            jwt_secret: Some(Secret::Value("s".into())),
            jwt_public_key_file: Some("/k.pem".into()),
            api_keys: Some(Secret::Value("a\nb".into())),
            max_connections: Some(5),
            max_message_bytes: Some(2048),
            send_queue: Some(3),
            drain_seconds: Some(4),
            from_env: BTreeSet::new(),
        }
    );
    assert_eq!(
        parse(&["--check-config", "/f.toml"]).check_config,
        Some("/f.toml".into())
    );
    assert!(Args::try_parse_from(["wsgate", "--demo=maybe"]).is_err());
    assert!(Args::try_parse_from(["wsgate", "--jwt-secret="]).is_err());
}

/// `Debug` of flags never shows a secret value.
#[test]
fn debug_output_of_args_and_config_hides_secrets() -> Result<()> {
    let flags = parse(&[
        "--node",
        "n",
        "--jwt-secret",
        "hunter2",
        "--api-keys",
        "sesame",
    ]);
    assert!(!format!("{flags:?}").contains("hunter2"));
    let config = Config::from_args(flags)?;
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("sesame"),
        "{debug}"
    );
    Ok(())
}

// ---------------------------------------------------------------- versions and unknown keys

/// In a version 1 file an unknown key, at any depth, is an error naming the key and the file.
#[test]
fn unknown_keys_in_a_known_version_name_key_and_file() {
    for (text, key, line) in [
        ("version = 1\nlisten_addr = \"x\"", "listen_addr", 2),
        (
            "version = 1\n[limits]\nsend_queu = 1",
            "limits.send_queu",
            3,
        ),
        (
            "version = 1\n[namespaces.chat]\nhistory = 1",
            "namespaces.chat.history",
            3,
        ),
        ("version = 1\n[limit]\nsend_queue = 1", "limit", 2),
        (
            "version = 1\n\n[auth]\njwt_secret = \"inline\"",
            "auth.jwt_secret",
            4,
        ),
        (
            "version = 1\n[namespaces.\"a.b\"]\nwat = 1",
            "namespaces.\"a.b\".wat",
            3,
        ),
        ("version = 1\nlimits.sendq = 1", "limits.sendq", 2),
    ] {
        assert_eq!(
            error_of(text),
            format!("invalid configuration: unknown key {key} in {FILE}, line {line}")
        );
    }
}

/// A newer file version turns unknown keys into warnings; known keys still apply.
#[test]
fn a_newer_version_warns_about_unknown_keys_and_applies_known_ones() -> Result<()> {
    let text = "version = 2\nshiny = true\n[limits]\nsend_queue = 9\nfancy = 1\n[future]\nx = 1\n";
    let config = load(args(), text)?;
    assert_eq!(config.limits.send_queue, 9);
    let ignored = config
        .warnings
        .iter()
        .filter(|warning| warning.contains("unknown key"));
    assert_eq!(ignored.count(), 3, "{:?}", config.warnings);
    for key in ["shiny", "limits.fancy", "future"] {
        assert!(
            config
                .warnings
                .iter()
                .any(|warning| warning.contains(&format!("unknown key {key} in {FILE}, line "))),
            "{key}: {:?}",
            config.warnings
        );
    }
    // Known keys stay strict in a newer file.
    assert!(load(args(), "version = 2\n[limits]\nsend_queue = 0").is_err());
    Ok(())
}

/// `version` is required, and must be a version.
#[test]
fn the_version_must_be_present_and_positive() {
    assert_eq!(
        error_of("listen = \"0.0.0.0:1\""),
        format!(
            "invalid configuration: version in {FILE}: missing; the file must start with `version = 1`"
        )
    );
    for bad in ["0", "-1", "\"1\"", "1.0"] {
        let message = error_of(&format!("version = {bad}"));
        assert!(
            message.starts_with("invalid configuration: version in "),
            "{message}"
        );
        assert!(
            message.contains("is not a configuration version"),
            "{message}"
        );
    }
}

// ---------------------------------------------------------------- invalid values

/// Every invalid value gets exactly one line naming the key, the file and the problem.
#[test]
fn invalid_values_give_one_line_naming_key_and_file() {
    let cases = [
        (
            "[limits]\nsend_queue = 0",
            "limits.send_queue",
            "must be an integer from 1 to 9223372036854775807",
        ),
        (
            "[limits]\nsend_queue = -3",
            "limits.send_queue",
            "must be an integer from 1 to 9223372036854775807",
        ),
        (
            "[limits]\nsend_queue = \"big\"",
            "limits.send_queue",
            "must be an integer",
        ),
        (
            "[limits]\nmax_message_bytes = 100",
            "limits.max_message_bytes",
            "from 1024 to 67108864",
        ),
        (
            "[limits]\nmax_message_bytes = 67108865",
            "limits.max_message_bytes",
            "from 1024 to 67108864",
        ),
        (
            "[limits]\npublish_rate = 0",
            "limits.publish_rate",
            "greater than 0",
        ),
        (
            "[limits]\npublish_rate = nan",
            "limits.publish_rate",
            "greater than 0",
        ),
        (
            "[rebalance]\ntolerance = -0.1",
            "rebalance.tolerance",
            "from 0 to 10",
        ),
        (
            "[rebalance]\ntolerance = nan",
            "rebalance.tolerance",
            "from 0 to 10",
        ),
        (
            "[rebalance]\nmax_per_second = 0",
            "rebalance.max_per_second",
            "an integer from 1 to 4294967295",
        ),
        (
            "[limits]\npublish_burst = 0",
            "limits.publish_burst",
            "an integer from 1 to",
        ),
        (
            "[limits]\npublish_burst = 4294967296",
            "limits.publish_burst",
            "from 1 to 4294967295",
        ),
        (
            "[limits]\ncommand_rate = 0",
            "limits.command_rate",
            "greater than 0",
        ),
        (
            "[limits]\ncommand_rate = inf",
            "limits.command_rate",
            "greater than 0",
        ),
        (
            "[limits]\ncommand_burst = 0",
            "limits.command_burst",
            "an integer from 1 to",
        ),
        (
            "[limits]\nmax_page_size = 0",
            "limits.max_page_size",
            "an integer from 1 to",
        ),
        (
            "[limits]\nmax_connections = 0",
            "limits.max_connections",
            "an integer from 1 to",
        ),
        (
            "[limits]\nmax_connections_per_user = 0",
            "limits.max_connections_per_user",
            "an integer from 1 to",
        ),
        (
            "[limits]\nmax_rooms_per_connection = 0",
            "limits.max_rooms_per_connection",
            "an integer from 1 to",
        ),
        (
            "[limits]\nmax_http_body_bytes = 0",
            "limits.max_http_body_bytes",
            "an integer from 1 to",
        ),
        (
            "[limits]\nheartbeat_ms = 0",
            "limits.heartbeat_ms",
            "an integer from 1 to",
        ),
        (
            "[limits]\nheartbeat_ms = 70000",
            "limits.heartbeat_ms",
            "less than limits.heartbeat_timeout_ms (60000)",
        ),
        (
            "[limits]\nheartbeat_ms = 1000\nheartbeat_timeout_ms = 1000",
            "limits.heartbeat_timeout_ms",
            "greater than limits.heartbeat_ms (1000)",
        ),
        (
            "[limits]\nhandshake_timeout_ms = 0",
            "limits.handshake_timeout_ms",
            "an integer from 1 to",
        ),
        (
            "[limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]",
            "limits.trusted_proxies",
            "\"lb.internal\" is not an IP network like 10.0.0.0/8",
        ),
        (
            "[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "limits.trusted_proxies",
            "not an IP network",
        ),
        (
            "[nats]\nping_interval_ms = 0",
            "nats.ping_interval_ms",
            "an integer from 1 to",
        ),
        (
            "[nats]\nnode_heartbeat_ms = 0",
            "nats.node_heartbeat_ms",
            "an integer from 1 to",
        ),
        (
            "[nats]\nrequest_timeout_ms = 0",
            "nats.request_timeout_ms",
            "an integer from 1 to",
        ),
        (
            "[nats]\ntls_cert_file = \"/c\"",
            "nats.tls_key_file",
            "must be set",
        ),
        (
            "[nats]\ncredentials_file = \"\"",
            "nats.credentials_file",
            "must not be empty",
        ),
        (
            "[auth]\nauth_timeout_ms = 0",
            "auth.auth_timeout_ms",
            "an integer from 1 to",
        ),
        (
            "[auth]\njwt_secret_file = \"\"",
            "auth.jwt_secret_file",
            "must not be empty",
        ),
        (
            "[auth]\napi_keys_file = \" \"",
            "auth.api_keys_file",
            "must not be empty",
        ),
        (
            "[auth]\napi_keys_files = [\"/k\", \"\"]",
            "auth.api_keys_files",
            "must not be empty",
        ),
        (
            "[auth]\napi_keys_files = \"/k\"",
            "auth.api_keys_files",
            "an array of strings",
        ),
        (
            "[auth]\naudience = \"\"",
            "auth.audience",
            "must not be empty",
        ),
        (
            "[auth]\nuser_rooms = [\"chat:\"]",
            "auth.user_rooms",
            "room pattern \"chat:\"",
        ),
        (
            "[auth]\nanonymous_rooms = [\"**:x\"]",
            "auth.anonymous_rooms",
            "room pattern",
        ),
        (
            "[auth]\nuser_rooms = [1]",
            "auth.user_rooms",
            "an array of strings",
        ),
        (
            "[auth]\nrequire_exp = \"yes\"",
            "auth.require_exp",
            "true or false",
        ),
        ("listen = \"localhost:8080\"", "listen", "is not an address"),
        (
            "admin_listen = \":9090\"",
            "admin_listen",
            "is not an address",
        ),
        (
            "cluster = \"prod.chat\"",
            "cluster",
            "one NATS subject token",
        ),
        ("node = \"\"", "node", "one NATS subject token"),
        (
            "nats_url = \"http://nats:4222\"",
            "nats_url",
            "nats://, tls://, ws:// or wss://",
        ),
        (
            "allowed_origins = [\"https://a.com/\"]",
            "allowed_origins",
            "must not have a path",
        ),
        (
            "allowed_origins = \"https://a.com\"",
            "allowed_origins",
            "an array of strings",
        ),
        (
            "log_format = \"xml\"",
            "log_format",
            "one of \"text\", \"json\"",
        ),
        (
            "[history]\nstorage = \"disk\"",
            "history.storage",
            "one of \"file\", \"memory\"",
        ),
        ("[history]\nreplicas = 0", "history.replicas", "from 1 to 5"),
        ("[history]\nreplicas = 7", "history.replicas", "from 1 to 5"),
        (
            "[history]\nmemory_max_bytes = 0",
            "history.memory_max_bytes",
            "an integer from 1 to",
        ),
        (
            "[namespaces.chat]\nhistory_max_bytes = 0",
            "namespaces.chat.history_max_bytes",
            "an integer from 1 to",
        ),
        (
            "[namespaces.chat]\nhistory_max_msgs = 0",
            "namespaces.chat.history_max_msgs",
            "an integer from 1 to",
        ),
        (
            "[namespaces.chat]\nrecovery_max = 0",
            "namespaces.chat.recovery_max",
            "an integer from 1 to",
        ),
        (
            "[namespaces.\"a b\"]\npresence = true",
            "namespaces.\"a b\"",
            "namespace name",
        ),
        (
            "[namespaces.chat]\npresence = 1",
            "namespaces.chat.presence",
            "true or false",
        ),
        ("limits = 3", "limits", "must be a table"),
        (
            "namespaces = { chat = 1 }",
            "namespaces.chat",
            "must be a table",
        ),
    ];
    for (body, key, problem) in cases {
        let message = error_of(&format!("version = 1\n{body}\n"));
        // The line the key is written on (after `version = 1`); a missing key is blamed on
        // its section's header.
        let name = key.rsplit('.').next().unwrap_or(key);
        let line = body
            .lines()
            .position(|line| line.contains(name))
            .map_or(2, |index| index + 2);
        let prefix = format!("invalid configuration: {key} in {FILE}, line {line}: ");
        assert!(message.starts_with(&prefix), "{body:?}: {message}");
        assert!(message.contains(problem), "{body:?}: {message}");
        assert!(!message.contains('\n'), "{body:?}: {message}");
    }
}

/// A bad flag value names the flag and its environment variable instead of a file.
#[test]
fn invalid_flag_values_name_the_flag_and_env() {
    let flags = Args {
        send_queue: Some(0),
        ..args()
    };
    let message = load(flags, "version = 1")
        .map(|_| ())
        .map_err(|error| error.to_string());
    assert_eq!(
        message,
        Err(
            "invalid configuration: limits.send_queue from --send-queue: must be an integer from 1 to 9223372036854775807"
                .to_owned()
        )
    );
    let flags = Args {
        cluster: Some("a.b".into()),
        ..args()
    };
    let message = Config::from_args(flags)
        .map(|_| ())
        .map_err(|error| error.to_string());
    assert!(
        message.as_ref().is_err_and(
            |message| message.starts_with("invalid configuration: cluster from --cluster: ")
        ),
        "{message:?}"
    );
}

/// A value clap took from the environment variable is blamed on the variable alone, and a
/// value from the file on the file and the line, even when the other layers exist.
#[test]
fn an_error_names_only_the_layer_that_set_the_value() {
    let flags = Args {
        send_queue: Some(0),
        max_connections: Some(5),
        from_env: BTreeSet::from(["send_queue".to_owned()]),
        ..args()
    };
    let message = load(flags, "version = 1\n[limits]\nsend_queue = 7")
        .map(|_| ())
        .map_err(|error| error.to_string());
    assert_eq!(
        message,
        Err(
            "invalid configuration: limits.send_queue from WSGATE_SEND_QUEUE: must be an integer from 1 to 9223372036854775807"
                .to_owned()
        )
    );
    let flags = Args {
        max_connections: Some(5),
        from_env: BTreeSet::from(["max_connections".to_owned()]),
        ..args()
    };
    let message = load(flags, "version = 1\n\n[limits]\nsend_queue = 0")
        .map(|_| ())
        .map_err(|error| error.to_string());
    assert_eq!(
        message,
        Err(format!(
            "invalid configuration: limits.send_queue in {FILE}, line 4: must be an integer from 1 to 9223372036854775807"
        ))
    );
}

/// A flag value clap refuses is one line naming the flag when it was on the command line,
/// and the environment variable when the flag was not (the value came from there).
#[test]
fn a_refused_flag_value_names_the_flag_or_its_variable() {
    let line: Vec<std::ffi::OsString> = ["wsgate", "--max-connections", "lots"]
        .iter()
        .map(Into::into)
        .collect();
    let error = match Args::command_with_defaults().try_get_matches_from(&line) {
        Ok(_) => panic!("lots is not a number"),
        Err(error) => error,
    };
    let from_flag = Args::error_line_for(&error, &line);
    assert!(
        from_flag
            .starts_with("invalid configuration: invalid value 'lots' for '--max-connections <N>'"),
        "{from_flag}"
    );
    let without_flag = Args::error_line_for(&error, &line[..1]);
    assert!(
        without_flag.starts_with(
            "invalid configuration: invalid value 'lots' for WSGATE_MAX_CONNECTIONS: "
        ),
        "{without_flag}"
    );
    assert!(!without_flag.contains('\n'));
}

/// The range in a message is the key's whole range, the same for a value below it, the
/// lowest value refused and a flag's value: `-5` and `0` no longer disagree.
#[test]
fn bounds_in_messages_agree_whatever_the_value_or_layer() {
    let problem = |message: String| {
        message
            .rsplit_once(": ")
            .map_or(String::new(), |(_, problem)| problem.to_owned())
    };
    for (key, low, high, range) in [
        (
            "limits.send_queue",
            "0",
            "-5",
            "from 1 to 9223372036854775807",
        ),
        (
            "limits.max_message_bytes",
            "1023",
            "-1",
            "from 1024 to 67108864",
        ),
        (
            "limits.max_message_bytes",
            "1023",
            "67108865",
            "from 1024 to 67108864",
        ),
        ("history.replicas", "0", "6", "from 1 to 5"),
        (
            "limits.heartbeat_ms",
            "0",
            "-1",
            "from 1 to 9223372036854775807",
        ),
        (
            "nats.ping_interval_ms",
            "0",
            "-1",
            "from 1 to 9223372036854775807",
        ),
        (
            "namespaces.chat.recovery_max",
            "0",
            "-1",
            "from 1 to 9223372036854775807",
        ),
    ] {
        let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
        let text = |value: &str| format!("version = 1\n[{table}]\n{name} = {value}\n");
        let expected = format!("must be an integer {range}");
        assert_eq!(problem(error_of(&text(low))), expected, "{key} = {low}");
        assert_eq!(problem(error_of(&text(high))), expected, "{key} = {high}");
    }
    for flags in [
        Args {
            send_queue: Some(0),
            ..args()
        },
        Args {
            max_message_bytes: Some(100),
            ..args()
        },
        Args {
            max_connections: Some(0),
            ..args()
        },
        Args {
            worker_threads: Some(0),
            ..args()
        },
        Args {
            worker_threads: Some(1025),
            ..args()
        },
    ] {
        let message = Config::from_args(flags)
            .map(|_| ())
            .map_err(|error| problem(error.to_string()));
        assert!(
            message
                .as_ref()
                .is_err_and(|problem| problem.starts_with("must be an integer from ")),
            "{message:?}"
        );
    }
}

/// `worker_threads` is unset by default (the gateway then runs one thread per usable CPU),
/// takes 1 to 1024 from any layer, and names the layer of a value out of range.
#[test]
fn worker_threads_are_bounded_in_every_layer() -> Result<()> {
    assert_eq!(load(args(), "version = 1")?.worker_threads, None);
    assert_eq!(
        load(args(), "version = 1\nworker_threads = 3\n")?.worker_threads,
        Some(3)
    );
    let flag = Args {
        worker_threads: Some(1),
        ..args()
    };
    assert_eq!(
        load(flag, "version = 1\nworker_threads = 3\n")?.worker_threads,
        Some(1),
        "the flag wins over the file"
    );
    for value in ["0", "1025", "-1"] {
        let message = error_of(&format!("version = 1\nworker_threads = {value}\n"));
        assert!(
            message.contains("worker_threads")
                && message.contains("must be an integer from 1 to 1024"),
            "{value}: {message}"
        );
    }
    Ok(())
}

/// A TOML syntax error is one line with its position.
#[test]
fn syntax_errors_are_one_line_with_a_position() {
    let message = error_of("version = 1\n[limits\n");
    assert!(
        message.starts_with(&format!(
            "invalid configuration: {FILE} is not valid TOML: line 2"
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

// ---------------------------------------------------------------- values

/// Blanks, empty entries and case in list values are normalised; an admin listener on the
/// public address is the single-listener setup.
#[test]
fn values_are_normalised() -> Result<()> {
    let flags = Args {
        allowed_origins: Some(vec!["HTTPS://App.Example.com".into(), String::new()]),
        nats_url: Some(" nats://a:4222 , b:4222".into()),
        admin_listen: "127.0.0.1:8080".parse().ok(),
        ..args()
    };
    let config = load(flags, "version = 1")?;
    assert_eq!(
        config.allowed_origins,
        vec!["https://app.example.com".to_owned()]
    );
    assert_eq!(config.nats_url.as_deref(), Some("nats://a:4222,b:4222"));
    assert_eq!(config.admin_listen, None);

    let flags = Args {
        listen: "127.0.0.1:0".parse().ok(),
        admin_listen: "127.0.0.1:0".parse().ok(),
        ..args()
    };
    let config = load(flags, "version = 1")?;
    assert_eq!(
        config.admin_listen,
        "127.0.0.1:0".parse().ok(),
        "two free ports"
    );

    let flags = Args {
        nats_url: Some(String::new()),
        ..args()
    };
    let config = load(flags, "version = 1\nnats_url = \"nats://x\"")?;
    assert_eq!(
        config.nats_url, None,
        "an empty value asks for the in-process broker"
    );

    let text =
        "version = 1\n[limits]\ntrusted_proxies = [\" 10.1.2.3/8\", \"127.0.0.2\", \"fd00::/8\"]\n";
    let config = load(args(), text)?;
    let proxies: Vec<String> = config
        .limits
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.2/32", "fd00::/8"]);
    Ok(())
}

/// The default node name is the host name made into a subject token.
#[test]
fn the_default_node_is_a_valid_token() -> Result<()> {
    let config = Config::from_args(Args::default())?;
    assert!(!config.node.is_empty() && config.node.len() <= 64);
    assert!(
        config
            .node
            .chars()
            .all(|char| char.is_ascii_alphanumeric() || char == '_' || char == '-')
    );
    Ok(())
}

/// Warnings point out configurations that start but cannot work as intended.
#[test]
fn unusable_setups_produce_warnings() -> Result<()> {
    let config = load(args(), "version = 1")?;
    assert!(
        config
            .warnings
            .iter()
            .any(|warning| warning.contains("no token key"))
    );
    let config = load(
        args(),
        "version = 1\nallow_anonymous = true\nallowed_origins = [\"https://a.example\"]\n[drain]\nseconds = 1",
    )?;
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("drain.reconnect_spread_ms"));
    Ok(())
}

/// Anonymous access to every room from any origin draws one warning; an origin list,
/// narrower anonymous rooms or no anonymous access draw none. It is a configuration warning,
/// so `--check-config` prints it as startup logs it.
#[test]
fn anonymous_access_everywhere_from_anywhere_is_warned_about() -> Result<()> {
    let exposure = |text: &str| -> Result<usize> {
        let config = load(args(), &format!("version = 1\n{text}"))?;
        Ok(config
            .warnings
            .iter()
            .filter(|warning| warning.contains("anonymous access is on for every room"))
            .count())
    };
    assert_eq!(exposure("allow_anonymous = true")?, 1);
    assert_eq!(exposure("")?, 0);
    assert_eq!(
        exposure("allow_anonymous = true\nallowed_origins = [\"https://app.example.com\"]")?,
        0
    );
    assert_eq!(
        exposure("allow_anonymous = true\n[auth]\nanonymous_rooms = [\"public:*\"]")?,
        0
    );
    Ok(())
}

// ---------------------------------------------------------------- namespaces

/// A room's namespace is its name before the first `:`; unknown or none is the default, and
/// a configured namespace takes what it leaves out from the configured default.
#[test]
fn rooms_find_their_namespace_with_fallback_to_default() -> Result<()> {
    let text = "version = 1\n\
        [namespaces.default]\nrecovery_max = 10\nclient_publish = false\n\
        [namespaces.chat]\nhistory_size = 100\npresence = true\n\
        [namespaces.feed]\nclient_publish = true\n";
    let config = load(args(), text)?;
    let namespaces = &config.namespaces;
    let chat = namespaces.for_room("chat:lobby");
    assert_eq!(chat.history_size, 100);
    assert!(chat.presence);
    assert_eq!(
        chat.recovery_max, 10,
        "from the configured default, not the built-in 1000"
    );
    assert!(!chat.client_publish, "from the configured default");
    assert!(namespaces.for_room("feed:x:y").client_publish);
    for room in ["lobby", "other:room", "default:x", "chat"] {
        assert_eq!(namespaces.for_room(room), &namespaces.default, "{room}");
    }
    assert_eq!(namespaces.default.recovery_max, 10);
    assert!(!namespaces.named.contains_key("default"));
    assert!(namespaces.any_history() && namespaces.any_presence());
    Ok(())
}

/// `--demo` on a single node adds the namespace `demo` (in-memory history, presence,
/// join/leave) as if the file held [`demo_section`], over the configured default; and so does
/// `demo = true` in a file checked with `--check-config`, so both agree.
#[test]
fn demo_on_a_single_node_adds_a_demo_namespace_with_history_and_presence() -> Result<()> {
    let config = Config::from_args(parse(&["--demo", "--node", "n"]))?;
    let demo = &config.namespaces.named[DEMO_NAMESPACE];
    assert_eq!(demo.history_size, 100);
    assert_eq!(demo.history_ttl, Duration::from_secs(3600));
    assert!(demo.presence && demo.join_leave && demo.client_publish);
    assert_eq!(config.namespaces.for_room("demo:lobby"), demo);
    assert_eq!(
        config.namespaces.for_room("chat:lobby"),
        &Namespace::default(),
        "other rooms keep the defaults"
    );

    let over_default = load(
        parse(&["--demo", "--node", "n"]),
        "version = 1\n[namespaces.default]\nrecovery_max = 20\nclient_publish = false\n",
    )?;
    let demo = &over_default.namespaces.named[DEMO_NAMESPACE];
    assert_eq!(demo.recovery_max, 20, "from the configured default");
    assert!(!demo.client_publish, "from the configured default");
    assert_eq!(demo.history_size, 100);

    let file = ScratchFile::new("demo.toml", "version = 1\ndemo = true\n");
    assert_eq!(
        Config::from_file(&file.0)?.namespaces,
        Config::from_args(parse(&["--demo", "--node", "n"]))?.namespaces,
        "--check-config sees what the gateway runs"
    );
    Ok(())
}

/// A `[namespaces.demo]` in the file is used as written, and a fleet (NATS) or `demo` off gets
/// no demo namespace: history there would be a JetStream stream nobody asked for.
#[test]
fn the_demo_namespace_is_added_only_on_a_single_node_that_configures_none() -> Result<()> {
    let configured = load(
        parse(&["--demo", "--node", "n"]),
        "version = 1\n[namespaces.demo]\npresence = true\n",
    )?;
    let demo = &configured.namespaces.named[DEMO_NAMESPACE];
    assert_eq!(
        demo.history_size, 0,
        "not merged with the built-in demo namespace"
    );
    assert!(demo.presence && !demo.join_leave);

    let fleet = Config::from_args(parse(&[
        "--demo",
        "--node",
        "n",
        "--nats-url",
        "nats://127.0.0.1:4222",
    ]))?;
    assert!(!fleet.namespaces.named.contains_key(DEMO_NAMESPACE));
    assert!(!fleet.namespaces.any_history());

    let off = Config::from_args(parse(&["--demo=false", "--node", "n"]))?;
    assert!(off.namespaces.named.is_empty());
    let file_on_flag_off = load(
        parse(&["--demo=false", "--node", "n"]),
        "version = 1\ndemo = true\n",
    )?;
    assert!(file_on_flag_off.namespaces.named.is_empty());
    Ok(())
}

// ---------------------------------------------------------------- the file model

/// A rendered file starts with `version = 1` and parses back, strictly, to the same value.
#[test]
fn to_toml_round_trips_through_the_strict_parser() -> Result<()> {
    for file in [full_file(), FileConfig::default()] {
        let text = file.to_toml();
        assert!(text.starts_with("version = 1\n"), "{text}");
        let parsed = FileConfig::parse(&text, Path::new(FILE))?;
        assert_eq!(parsed.config, file, "{text}");
        assert!(parsed.warnings.is_empty());
        load(args(), &text)?;
    }
    assert_eq!(FileConfig::default().to_toml(), "version = 1\n");
    Ok(())
}

/// [`KEYS`] lists exactly the keys of [`FileConfig`]: a fully populated file serializes to
/// every key in the table and no other.
#[test]
fn keys_cover_every_field_of_the_file_model() -> Result<()> {
    let table: toml::Table = full_file()
        .to_toml()
        .parse()
        .map_err(|error: toml::de::Error| ConfigError::Syntax {
            file: FILE.into(),
            message: error.to_string(),
        })?;
    let mut keys = BTreeSet::new();
    leaf_keys(&table, &[], &mut keys);
    assert_eq!(keys, key_names());
    Ok(())
}

/// Whatever passes a key's [`Kind`] check also deserializes into its [`FileConfig`] field, so
/// a type error is always reported by the key check, with the key's name.
#[test]
fn every_value_of_a_keys_kind_fits_its_field() -> Result<()> {
    for key in KEYS {
        if key.key == "version" {
            continue;
        }
        let value = match key.kind {
            Kind::Text => "\"x\"".to_owned(),
            Kind::Choice(words) => format!("\"{}\"", words[words.len() - 1]),
            Kind::Bool => "true".to_owned(),
            Kind::Count { max, .. } => max.to_string(),
            Kind::Number => "1.5".to_owned(),
            Kind::TextList => "[\"x\"]".to_owned(),
        };
        let dotted = key.key.replace(NAMESPACE_SEGMENT, "chat");
        let (table, name) = dotted.rsplit_once('.').unwrap_or(("", &dotted));
        let header = if table.is_empty() {
            String::new()
        } else if let Some(array) = table.strip_suffix(ARRAY_SEGMENT) {
            format!("[[{array}]]\n")
        } else {
            format!("[{table}]\n")
        };
        let text = format!("version = 1\n{header}{name} = {value}\n");
        FileConfig::parse(&text, Path::new(FILE))?;
    }
    Ok(())
}

/// Every flag of [`Args`] is the flag of a key in [`KEYS`] with the same environment
/// variable, and every flag in [`KEYS`] exists: the gateway's flags and the operator's file
/// agree.
#[test]
fn flags_and_keys_agree() {
    let command = Args::command();
    let mut flags = BTreeSet::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
        match flag.as_str() {
            "--config" => assert_eq!(env.as_deref(), Some("WSGATE_CONFIG")),
            "--check-config" => assert_eq!(env, None),
            "--help" | "--version" => {}
            _ => {
                let key = KEYS.iter().find(|key| key.flag == Some(flag.as_str()));
                let Some(key) = key else {
                    panic!("{flag} is not the flag of any key in KEYS")
                };
                assert_eq!(key.env.map(str::to_owned), env, "{flag}");
                assert!(arg.get_help().is_some(), "{flag} has no help");
                flags.insert(flag);
            }
        }
    }
    let listed: BTreeSet<String> = KEYS
        .iter()
        .filter_map(|key| key.flag.map(str::to_owned))
        .collect();
    assert_eq!(flags, listed);
}

/// `--help` shows each flag's default from [`KEYS`], and the flag docs do not repeat it.
#[test]
fn help_shows_the_defaults_of_the_key_table() {
    let command = Args::command_with_defaults();
    for key in KEYS {
        let Some(flag) = key.flag.and_then(|flag| flag.strip_prefix("--")) else {
            continue;
        };
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag));
        let help = arg
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let shown = help.matches("[default: ").count();
        if key.default == "unset" {
            assert_eq!(shown, 0, "--{flag}: {help}");
        } else {
            assert_eq!(shown, 1, "--{flag}: {help}");
            assert!(
                help.ends_with(&format!(" [default: {}]", key.default)),
                "--{flag}: {help}"
            );
        }
    }
}

/// The flags and environment variables of docs/config.md, as it lists them.
#[test]
fn keys_keep_the_documented_flags() {
    let expected = [
        ("listen", "--listen", "WSGATE_LISTEN"),
        ("admin_listen", "--admin-listen", "WSGATE_ADMIN_LISTEN"),
        ("cluster", "--cluster", "WSGATE_CLUSTER"),
        ("node", "--node", "WSGATE_NODE"),
        ("nats_url", "--nats-url", "WSGATE_NATS_URL"),
        (
            "allow_anonymous",
            "--allow-anonymous",
            "WSGATE_ALLOW_ANONYMOUS",
        ),
        (
            "allowed_origins",
            "--allowed-origins",
            "WSGATE_ALLOWED_ORIGINS",
        ),
        ("demo", "--demo", "WSGATE_DEMO"),
        ("echo_endpoint", "--echo-endpoint", "WSGATE_ECHO_ENDPOINT"),
        ("log_format", "--log-format", "WSGATE_LOG_FORMAT"),
        (
            "worker_threads",
            "--worker-threads",
            "WSGATE_WORKER_THREADS",
        ),
        ("auth.jwt_secret_file", "--jwt-secret", "WSGATE_JWT_SECRET"),
        (
            "auth.jwt_public_key_file",
            "--jwt-public-key-file",
            "WSGATE_JWT_PUBLIC_KEY_FILE",
        ),
        ("auth.api_keys_file", "--api-keys", "WSGATE_API_KEYS"),
        (
            "limits.max_connections",
            "--max-connections",
            "WSGATE_MAX_CONNECTIONS",
        ),
        (
            "limits.max_message_bytes",
            "--max-message-bytes",
            "WSGATE_MAX_MESSAGE_BYTES",
        ),
        ("limits.send_queue", "--send-queue", "WSGATE_SEND_QUEUE"),
        ("drain.seconds", "--drain-seconds", "WSGATE_DRAIN_SECONDS"),
    ];
    for (key, flag, env) in expected {
        let found = find_key(key);
        assert_eq!(found.and_then(|key| key.flag), Some(flag), "{key}");
        assert_eq!(found.and_then(|key| key.env), Some(env), "{key}");
    }
    assert_eq!(
        KEYS.iter().filter(|key| key.flag.is_some()).count(),
        expected.len()
    );
}

// ---------------------------------------------------------------- files on disk and docs

/// A unique scratch file, removed on drop.
struct ScratchFile(PathBuf);

impl ScratchFile {
    /// Writes `text` to a new file in the temporary directory.
    fn new(name: &str, text: &str) -> ScratchFile {
        let path =
            std::env::temp_dir().join(format!("wsgate-config-{}-{name}", std::process::id()));
        if let Err(error) = std::fs::write(&path, text) {
            panic!("write {}: {error}", path.display());
        }
        ScratchFile(path)
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `load` reads the file named by `--config`, and `from_file` ignores flags (for
/// `--check-config`).
#[test]
fn load_reads_the_config_file_and_from_file_checks_it_alone() -> Result<()> {
    let file = ScratchFile::new("load.toml", docs_example());
    let path = file.0.to_string_lossy().into_owned();
    let config = Config::load(parse(&[
        "--config",
        &path,
        "--cluster",
        "flag",
        "--node",
        "n",
    ]))?;
    assert_eq!(config.cluster, "flag");
    assert_eq!(config.limits.max_connections, 15_000);
    assert_eq!(config.file.as_deref(), Some(file.0.as_path()));
    assert_eq!(Config::from_file(&file.0)?.cluster, "prod_chat");

    let bad = ScratchFile::new("bad.toml", "version = 1\n[limits]\nsend_queue = 0\n");
    let message = Config::from_file(&bad.0)
        .map(|_| ())
        .map_err(|error| error.to_string());
    assert_eq!(
        message,
        Err(format!(
            "invalid configuration: limits.send_queue in {}, line 3: must be an integer from 1 to 9223372036854775807",
            bad.0.display()
        ))
    );
    Ok(())
}

/// At startup every file a key names must be readable: a missing one is an error naming the
/// key and the file; NATS files count only with a NATS URL.
#[test]
fn check_files_names_the_key_of_a_missing_file() -> Result<()> {
    let secret = ScratchFile::new("secret", "k");
    let present = secret.0.display().to_string();
    let text = |path: &str| format!("version = 1\n[auth]\njwt_secret_file = \"{path}\"\n");
    load(args(), &text(&present))?.check_files()?;

    let config = load(args(), &text("/nonexistent/jwt-secret"))?;
    match config.check_files() {
        Err(error @ ConfigError::Unreadable { .. }) => {
            assert_eq!(error.key(), Some("auth.jwt_secret_file"));
            let message = error.to_string();
            assert!(
                message.starts_with(
                    "invalid configuration: auth.jwt_secret_file: cannot read /nonexistent/jwt-secret: "
                ),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    let nats_files = "version = 1\n[nats]\ncredentials_file = \"/nonexistent/creds\"\n";
    load(args(), nats_files)?.check_files()?;
    let flags = Args {
        nats_url: Some("nats://127.0.0.1:4222".into()),
        ..args()
    };
    let error = load(flags, nats_files)?.check_files().err();
    assert_eq!(
        error.as_ref().and_then(ConfigError::key),
        Some("nats.credentials_file")
    );
    Ok(())
}

/// The gateway image's default file (gateway/image/wsgate.toml) listens on every interface,
/// public on 8080 and admin on 9090, so `docker run -p` reaches it; the built-in default
/// outside the image stays on loopback without an admin listener.
#[test]
fn the_image_default_file_listens_on_every_interface() -> Result<()> {
    let text = include_str!("../../image/wsgate.toml");
    let config = load(args(), text)?;
    assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
    assert_eq!(
        config.admin_listen,
        Some(SocketAddr::from(([0, 0, 0, 0], 9090)))
    );
    let builtin = Config::from_args(args())?;
    assert_eq!(builtin.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(builtin.admin_listen, None);
    Ok(())
}

/// A missing file is one line naming it.
#[test]
fn a_missing_file_is_reported_by_name() {
    let missing = Path::new("/nonexistent/wsgate.toml");
    match Config::from_file(missing) {
        Err(error @ ConfigError::Read { .. }) => {
            let message = error.to_string();
            assert!(
                message
                    .starts_with("invalid configuration: cannot read /nonexistent/wsgate.toml: "),
                "{message}"
            );
            assert!(!message.contains('\n'));
        }
        other => panic!("{other:?}"),
    }
}

/// The path of `docs/config.md`.
fn docs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md")
}

/// The markers around the generated table in `docs/config.md`.
const TABLE_BEGIN: &str = "<!-- keys:begin (generated from KEYS: cargo test -p wsgate-config -- --ignored write_docs_table) -->\n";
/// The end marker.
const TABLE_END: &str = "<!-- keys:end -->";

/// `docs/config.md` holds the table generated from [`KEYS`], so every key is documented with
/// its flag, env, default and meaning.
#[test]
fn docs_list_every_key() {
    let docs = match std::fs::read_to_string(docs_path()) {
        Ok(docs) => docs,
        Err(error) => panic!("read docs/config.md: {error}"),
    };
    let expected = format!("{TABLE_BEGIN}{}{TABLE_END}", markdown_table());
    assert!(
        docs.contains(&expected),
        "docs/config.md's key table is stale; run: cargo test -p wsgate-config -- --ignored write_docs_table"
    );
    for key in KEYS {
        assert!(docs.contains(&format!("`{}`", key.key)), "{}", key.key);
    }
}

/// Rewrites the generated table of `docs/config.md` from [`KEYS`]; run by hand after
/// changing a key.
#[test]
#[ignore = "writes docs/config.md; run by hand after changing KEYS"]
fn write_docs_table() {
    let path = docs_path();
    let docs = std::fs::read_to_string(&path).unwrap_or_default();
    let table = format!("{TABLE_BEGIN}{}{TABLE_END}", markdown_table());
    let updated = match (docs.find(TABLE_BEGIN), docs.find(TABLE_END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!(
                "{}{table}{}",
                &docs[..begin],
                &docs[end + TABLE_END.len()..]
            )
        }
        _ => format!("{docs}\n{table}\n"),
    };
    if let Err(error) = std::fs::write(&path, updated) {
        panic!("write {}: {error}", path.display());
    }
}

// ---------------------------------------------------------------- pusher

/// An app given only its id, key and secret file takes every documented default, and no
/// `[pusher]` section means no Pusher at all.
#[test]
fn pusher_apps_take_the_documented_defaults() -> Result<()> {
    assert_eq!(load(args(), "version = 1")?.pusher, None);
    let text = "version = 1\n[[pusher.apps]]\nid = \"1001\"\nkey = \"app-key\"\nsecret_file = \"/run/secrets/pusher/1001\"\n";
    let config = load(args(), text)?;
    let Some(pusher) = config.pusher else {
        panic!("[pusher] was given")
    };
    assert_eq!(
        pusher.apps,
        vec![PusherApp {
            id: "1001".into(),
            key: "app-key".into(),
            secret: Secret::File("/run/secrets/pusher/1001".into()),
            max_connections: None,
            enable_client_messages: true,
            max_client_events_per_second: 10,
            max_presence_members: 100,
            max_event_bytes: 10_240,
        }]
    );
    assert_eq!(
        load(args(), "version = 1\n[pusher]\n")?.pusher,
        Some(Pusher::default())
    );
    Ok(())
}

/// Every key of an app is read from `[[pusher.apps]]`, for each app.
#[test]
fn pusher_apps_read_every_key() -> Result<()> {
    let config = load(args(), &full_file().to_toml())?;
    let app = config
        .pusher
        .and_then(|pusher| pusher.apps.into_iter().next());
    assert_eq!(
        app,
        Some(PusherApp {
            id: "1001".into(),
            key: "app-key".into(),
            secret: Secret::File("/p/1001".into()),
            max_connections: Some(50),
            enable_client_messages: false,
            max_client_events_per_second: 5,
            max_presence_members: 20,
            max_event_bytes: 2048,
        })
    );
    Ok(())
}

/// A broken app is refused with the app's index and key: missing or invalid ids, keys and
/// secret files, duplicates, zero limits, unknown keys and apps that are not tables.
#[test]
fn invalid_pusher_apps_name_the_app_and_key() {
    let app = |extra: &str| {
        format!(
            "version = 1\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret_file = \"/s\"\n{extra}"
        )
    };
    let cases = [
        (
            "version = 1\n[[pusher.apps]]\nkey = \"k\"\nsecret_file = \"/s\"\n".to_owned(),
            "pusher.apps[0].id",
        ),
        (
            "version = 1\n[[pusher.apps]]\nid = \"1\"\nsecret_file = \"/s\"\n".to_owned(),
            "pusher.apps[0].key",
        ),
        (
            "version = 1\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\n".to_owned(),
            "pusher.apps[0].secret_file",
        ),
        (
            "version = 1\n[[pusher.apps]]\nid = \"a.b\"\nkey = \"k\"\nsecret_file = \"/s\"\n"
                .to_owned(),
            "pusher.apps[0].id",
        ),
        (
            "version = 1\n[[pusher.apps]]\nid = \"1\"\nkey = \"a/b\"\nsecret_file = \"/s\"\n"
                .to_owned(),
            "pusher.apps[0].key",
        ),
        (
            "version = 1\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret_file = \"\"\n"
                .to_owned(),
            "pusher.apps[0].secret_file",
        ),
        (
            app("[[pusher.apps]]\nid = \"1\"\nkey = \"k2\"\nsecret_file = \"/s\"\n"),
            "pusher.apps[1].id",
        ),
        (
            app("[[pusher.apps]]\nid = \"2\"\nkey = \"k\"\nsecret_file = \"/s\"\n"),
            "pusher.apps[1].key",
        ),
        (
            app("max_presence_members = 0\n"),
            "pusher.apps[0].max_presence_members in /etc/wsgate/wsgate.toml, line 6:",
        ),
        (
            app("max_event_bytes = 0\n"),
            "pusher.apps[0].max_event_bytes",
        ),
        (
            app("max_connections = 0\n"),
            "pusher.apps[0].max_connections",
        ),
        (
            app("max_client_events_per_second = 0\n"),
            "pusher.apps[0].max_client_events_per_second",
        ),
        (app("secret = \"inline\"\n"), "pusher.apps[0].secret in"),
        (
            app("enable_client_messages = \"yes\"\n"),
            "pusher.apps[0].enable_client_messages in",
        ),
        (
            "version = 1\n[pusher]\napps = 3\n".to_owned(),
            "pusher.apps[]",
        ),
        (
            "version = 1\n[pusher]\napps = [1]\n".to_owned(),
            "pusher.apps[]",
        ),
    ];
    for (text, key) in cases {
        let error = error_of(&text);
        assert!(error.contains(key), "{text}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

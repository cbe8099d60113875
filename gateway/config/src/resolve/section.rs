//! Resolution of each section of the configuration: its keys from the layers,
//! checked against their bounds and rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Layers, non_empty_path};
use crate::config::{
    AuthConfig, Drain, History, Limits, MAX_REBALANCE_TOLERANCE, NatsConfig, Rebalance,
};
use crate::error::{ConfigError, Origin};
use crate::file::{
    AuthSection, DrainSection, HistorySection, LimitsSection, NamespaceSection, NatsSection,
    RebalanceSection,
};
use crate::namespace::DEFAULT_NAMESPACE;
use crate::{Namespace, Namespaces, Result, Secret, key, validate};

/// `[nats]`: only the file sets these keys.
pub(super) fn resolve_nats(layers: &Layers, file: NatsSection) -> Result<NatsConfig> {
    let NatsSection {
        credentials_file,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
        ping_interval_ms,
        node_heartbeat_ms,
        request_timeout_ms,
    } = file;
    let defaults = NatsConfig::default();
    let nats = NatsConfig {
        credentials_file: layers.file_path("nats.credentials_file", credentials_file)?,
        tls_ca_file: layers.file_path("nats.tls_ca_file", tls_ca_file)?,
        tls_cert_file: layers.file_path("nats.tls_cert_file", tls_cert_file)?,
        tls_key_file: layers.file_path("nats.tls_key_file", tls_key_file)?,
        ping_interval: layers.millis(
            "nats.ping_interval_ms",
            ping_interval_ms,
            defaults.ping_interval,
        )?,
        node_heartbeat: layers.millis(
            "nats.node_heartbeat_ms",
            node_heartbeat_ms,
            defaults.node_heartbeat,
        )?,
        request_timeout: layers.millis(
            "nats.request_timeout_ms",
            request_timeout_ms,
            defaults.request_timeout,
        )?,
    };
    if nats.tls_cert_file.is_some() != nats.tls_key_file.is_some() {
        let key = if nats.tls_cert_file.is_some() {
            "nats.tls_key_file"
        } else {
            "nats.tls_cert_file"
        };
        return Err(ConfigError::invalid(
            key,
            // The line of `[nats]`, where the missing key belongs.
            layers.file_origin("nats"),
            "must be set: a client certificate needs both nats.tls_cert_file and nats.tls_key_file",
        ));
    }
    Ok(nats)
}

/// The `[auth]` keys that have flags.
pub(super) struct FlagAuth {
    /// `--jwt-secret`.
    pub(super) jwt_secret: Option<Secret>,
    /// `--jwt-public-key-file`.
    pub(super) jwt_public_key_file: Option<PathBuf>,
    /// `--api-keys`.
    pub(super) api_keys: Option<Secret>,
}

/// `[auth]`: the secret flags carry values, the file names files.
pub(super) fn resolve_auth(
    layers: &Layers,
    flags: FlagAuth,
    file: AuthSection,
) -> Result<AuthConfig> {
    let FlagAuth {
        jwt_secret,
        jwt_public_key_file,
        api_keys,
    } = flags;
    let AuthSection {
        jwt_secret_file,
        jwt_public_key_file: file_jwt_public_key_file,
        jwks_file,
        audience,
        issuer,
        leeway_seconds,
        require_exp,
        user_rooms,
        anonymous_rooms,
        api_keys_file,
        api_keys_files,
        auth_timeout_ms,
    } = file;
    let defaults = AuthConfig::default();
    let secret = |key: &str, flag: Option<Secret>, file: Option<String>| -> Result<_> {
        let file = layers.file_path(key, file)?.map(Secret::File);
        layers
            .pick(key, flag.map(Some), file.map(Some), || None)
            .check(|secret| match secret {
                Some(Secret::Value(value)) if value.is_empty() => {
                    Err("must not be empty".to_owned())
                }
                _ => Ok(()),
            })
    };
    let non_empty_text = |key: &str, value: Option<String>| -> Result<Option<String>> {
        layers.convert(key, value, |value: String| {
            if value.trim().is_empty() {
                Err("must not be empty (leave the key out to skip the check)".to_owned())
            } else {
                Ok(value)
            }
        })
    };
    let patterns = |key: &str, value: Option<Vec<String>>, default: Vec<String>| {
        layers.file_only(key, value, || default).check(|patterns| {
            patterns
                .iter()
                .try_for_each(|pattern| validate::room_pattern(pattern))
        })
    };
    Ok(AuthConfig {
        jwt_secret: secret("auth.jwt_secret_file", jwt_secret, jwt_secret_file)?,
        jwt_public_key_file: layers
            .pick(
                "auth.jwt_public_key_file",
                jwt_public_key_file.map(Some),
                layers
                    .file_path("auth.jwt_public_key_file", file_jwt_public_key_file)?
                    .map(Some),
                || None,
            )
            .check(|path| match path {
                Some(path) if path.as_os_str().is_empty() => Err("must not be empty".to_owned()),
                _ => Ok(()),
            })?,
        jwks_file: layers.file_path("auth.jwks_file", jwks_file)?,
        audience: non_empty_text("auth.audience", audience)?,
        issuer: non_empty_text("auth.issuer", issuer)?,
        leeway: Duration::from_secs(leeway_seconds.unwrap_or(defaults.leeway.as_secs())),
        require_exp: require_exp.unwrap_or(defaults.require_exp),
        user_rooms: patterns("auth.user_rooms", user_rooms, defaults.user_rooms)?,
        anonymous_rooms: patterns(
            "auth.anonymous_rooms",
            anonymous_rooms,
            defaults.anonymous_rooms,
        )?,
        api_keys: secret("auth.api_keys_file", api_keys, api_keys_file)?,
        api_keys_files: layers
            .convert(
                "auth.api_keys_files",
                api_keys_files,
                |files: Vec<String>| files.into_iter().map(non_empty_path).collect(),
            )?
            .unwrap_or(defaults.api_keys_files),
        auth_timeout: layers.millis(
            "auth.auth_timeout_ms",
            auth_timeout_ms,
            defaults.auth_timeout,
        )?,
    })
}

/// The `[limits]` keys that have flags.
pub(super) struct FlagLimits {
    /// `--max-connections`.
    pub(super) max_connections: Option<usize>,
    /// `--max-message-bytes`.
    pub(super) max_message_bytes: Option<usize>,
    /// `--send-queue`.
    pub(super) send_queue: Option<usize>,
}

/// A rate, in units per second: finite and above 0 (a token bucket that never
/// refills would refuse everything after its burst).
fn positive_rate(rate: &f64) -> std::result::Result<(), String> {
    if rate.is_finite() && *rate > 0.0 {
        Ok(())
    } else {
        Err("must be a number greater than 0".to_owned())
    }
}

/// `[limits]`.
pub(super) fn resolve_limits(
    layers: &Layers,
    flags: FlagLimits,
    file: LimitsSection,
) -> Result<Limits> {
    let FlagLimits {
        max_connections: flag_max_connections,
        max_message_bytes: flag_max_message_bytes,
        send_queue: flag_send_queue,
    } = flags;
    let LimitsSection {
        max_connections,
        max_connections_per_user,
        max_page_size,
        max_rooms_per_connection,
        max_message_bytes,
        max_http_body_bytes,
        send_queue,
        publish_rate,
        publish_burst,
        command_rate,
        command_burst,
        max_errors_per_minute,
        heartbeat_ms,
        heartbeat_timeout_ms,
        handshake_timeout_ms,
        max_connections_per_ip,
        trusted_proxies,
    } = file;
    let defaults = Limits::default();
    let heartbeat = layers.file_only(
        "limits.heartbeat_ms",
        heartbeat_ms.map(Duration::from_millis),
        || defaults.heartbeat,
    );
    let heartbeat_timeout = layers.file_only(
        "limits.heartbeat_timeout_ms",
        heartbeat_timeout_ms.map(Duration::from_millis),
        || defaults.heartbeat_timeout,
    );
    let limits = Limits {
        max_connections: layers
            .pick(
                "limits.max_connections",
                flag_max_connections,
                max_connections,
                || defaults.max_connections,
            )
            .within_bounds()?,
        max_connections_per_user: layers
            .file_only(
                "limits.max_connections_per_user",
                max_connections_per_user,
                || defaults.max_connections_per_user,
            )
            .within_bounds()?,
        max_page_size: layers
            .file_only("limits.max_page_size", max_page_size, || {
                defaults.max_page_size
            })
            .within_bounds()?,
        max_rooms_per_connection: layers
            .file_only(
                "limits.max_rooms_per_connection",
                max_rooms_per_connection,
                || defaults.max_rooms_per_connection,
            )
            .within_bounds()?,
        max_message_bytes: layers
            .pick(
                "limits.max_message_bytes",
                flag_max_message_bytes,
                max_message_bytes,
                || defaults.max_message_bytes,
            )
            .within_bounds()?,
        max_http_body_bytes: layers
            .file_only("limits.max_http_body_bytes", max_http_body_bytes, || {
                defaults.max_http_body_bytes
            })
            .within_bounds()?,
        send_queue: layers
            .pick("limits.send_queue", flag_send_queue, send_queue, || {
                defaults.send_queue
            })
            .within_bounds()?,
        publish_rate: layers
            .file_only("limits.publish_rate", publish_rate, || {
                defaults.publish_rate
            })
            .check(positive_rate)?,
        publish_burst: layers
            .file_only("limits.publish_burst", publish_burst, || {
                defaults.publish_burst
            })
            .within_bounds()?,
        command_rate: layers
            .file_only("limits.command_rate", command_rate, || {
                defaults.command_rate
            })
            .check(positive_rate)?,
        command_burst: layers
            .file_only("limits.command_burst", command_burst, || {
                defaults.command_burst
            })
            .within_bounds()?,
        max_errors_per_minute: max_errors_per_minute.unwrap_or(defaults.max_errors_per_minute),
        heartbeat: heartbeat.value,
        heartbeat_timeout: heartbeat_timeout.value,
        handshake_timeout: layers.millis(
            "limits.handshake_timeout_ms",
            handshake_timeout_ms,
            defaults.handshake_timeout,
        )?,
        max_connections_per_ip: max_connections_per_ip.unwrap_or(defaults.max_connections_per_ip),
        trusted_proxies: match trusted_proxies {
            Some(entries) => layers
                .file_only("limits.trusted_proxies", Some(entries), Vec::new)
                .map(|entries| {
                    entries
                        .iter()
                        .map(|entry| validate::ip_network(entry))
                        .collect()
                })?,
            None => defaults.trusted_proxies,
        },
    };
    // Check the pair together, blaming the key the user set (the timeout when both are set).
    let heartbeat_millis = u64::try_from(limits.heartbeat.as_millis()).unwrap_or(u64::MAX);
    if let Some(kind) = key::find(&heartbeat.key).map(|known| known.kind)
        && let Err(problem) = kind.check_count(heartbeat_millis)
    {
        return Err(ConfigError::invalid(
            heartbeat.key,
            heartbeat.origin,
            problem,
        ));
    }
    if limits.heartbeat_timeout <= limits.heartbeat {
        let (key, origin, problem) = if heartbeat_timeout.origin == Origin::Default {
            (
                heartbeat.key,
                heartbeat.origin,
                format!(
                    "must be less than limits.heartbeat_timeout_ms ({})",
                    limits.heartbeat_timeout.as_millis()
                ),
            )
        } else {
            (
                heartbeat_timeout.key,
                heartbeat_timeout.origin,
                format!(
                    "must be greater than limits.heartbeat_ms ({})",
                    limits.heartbeat.as_millis()
                ),
            )
        };
        return Err(ConfigError::invalid(key, origin, problem));
    }
    Ok(limits)
}

/// `[drain]`.
pub(super) fn resolve_drain(
    layers: &Layers,
    flag_seconds: Option<u64>,
    file: DrainSection,
) -> Result<Drain> {
    let DrainSection {
        seconds,
        reconnect_spread_ms,
    } = file;
    let defaults = Drain::default();
    Ok(Drain {
        deadline: Duration::from_secs(
            layers
                .pick("drain.seconds", flag_seconds, seconds, || {
                    defaults.deadline.as_secs()
                })
                .value,
        ),
        reconnect_spread: reconnect_spread_ms
            .map_or(defaults.reconnect_spread, Duration::from_millis),
    })
}

/// `[history]`.
pub(super) fn resolve_history(layers: &Layers, file: HistorySection) -> Result<History> {
    let HistorySection {
        storage,
        replicas,
        memory_max_bytes,
    } = file;
    let defaults = History::default();
    Ok(History {
        storage: storage.unwrap_or(defaults.storage),
        replicas: layers
            .file_only("history.replicas", replicas, || defaults.replicas)
            .within_bounds()?,
        memory_max_bytes: layers
            .file_only("history.memory_max_bytes", memory_max_bytes, || {
                defaults.memory_max_bytes
            })
            .within_bounds()?,
    })
}

/// `[rebalance]`: only the file sets these keys.
pub(super) fn resolve_rebalance(layers: &Layers, file: RebalanceSection) -> Result<Rebalance> {
    let RebalanceSection {
        enabled,
        tolerance,
        spread_ms,
        max_per_second,
        min_age_ms,
        include_unrecoverable,
    } = file;
    let defaults = Rebalance::default();
    Ok(Rebalance {
        enabled: enabled.unwrap_or(defaults.enabled),
        tolerance: layers
            .file_only("rebalance.tolerance", tolerance, || defaults.tolerance)
            .check(|tolerance| {
                if tolerance.is_finite() && (0.0..=MAX_REBALANCE_TOLERANCE).contains(tolerance) {
                    Ok(())
                } else {
                    Err(format!(
                        "must be a number from 0 to {MAX_REBALANCE_TOLERANCE}"
                    ))
                }
            })?,
        spread: spread_ms.map_or(defaults.spread, Duration::from_millis),
        max_per_second: layers
            .file_only("rebalance.max_per_second", max_per_second, || {
                defaults.max_per_second
            })
            .within_bounds()?,
        min_age: min_age_ms.map_or(defaults.min_age, Duration::from_millis),
        include_unrecoverable: include_unrecoverable.unwrap_or(defaults.include_unrecoverable),
    })
}

/// `[namespaces.<ns>]`: `default` first, then every other namespace over it.
pub(super) fn resolve_namespaces(
    layers: &Layers,
    mut sections: BTreeMap<String, NamespaceSection>,
) -> Result<Namespaces> {
    let default = match sections.remove(DEFAULT_NAMESPACE) {
        Some(section) => {
            resolve_namespace(layers, DEFAULT_NAMESPACE, section, &Namespace::default())?
        }
        None => Namespace::default(),
    };
    let mut named = BTreeMap::new();
    for (name, section) in sections {
        if let Err(problem) = validate::namespace_name(&name) {
            return Err(ConfigError::invalid(
                key::dotted(&["namespaces", &name]),
                layers.file_origin(&key::dotted(&["namespaces", &name])),
                problem,
            ));
        }
        let namespace = resolve_namespace(layers, &name, section, &default)?;
        named.insert(name, namespace);
    }
    Ok(Namespaces { default, named })
}

/// One namespace, taking what it leaves out from `base`.
pub(super) fn resolve_namespace(
    layers: &Layers,
    name: &str,
    section: NamespaceSection,
    base: &Namespace,
) -> Result<Namespace> {
    let NamespaceSection {
        history_size,
        history_ttl_seconds,
        history_max_bytes,
        history_max_msgs,
        recovery_max,
        presence,
        join_leave,
        client_publish,
    } = section;
    let key = |field: &str| key::dotted(&["namespaces", name, field]);
    Ok(Namespace {
        history_size: history_size.unwrap_or(base.history_size),
        history_ttl: history_ttl_seconds.map_or(base.history_ttl, Duration::from_secs),
        history_max_bytes: layers
            .file_only(key("history_max_bytes"), history_max_bytes, || {
                base.history_max_bytes
            })
            .within_bounds()?,
        history_max_msgs: layers
            .file_only(key("history_max_msgs"), history_max_msgs, || {
                base.history_max_msgs
            })
            .within_bounds()?,
        recovery_max: layers
            .file_only(key("recovery_max"), recovery_max, || base.recovery_max)
            .within_bounds()?,
        presence: presence.unwrap_or(base.presence),
        join_leave: join_leave.unwrap_or(base.join_leave),
        client_publish: client_publish.unwrap_or(base.client_publish),
    })
}

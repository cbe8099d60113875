//! The gateway config file (docs/config.md) and its ConfigMap.
//!
//! Secrets never appear in the file: each referenced Secret key is mounted
//! as a file under [`SECRETS_DIR`] (see the Deployment) and the file names
//! it. The gateway re-reads those files when the Secret changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use wsgate_config::{
    AuthSection, CONFIG_VERSION, DrainSection, FileConfig, HistorySection, LimitsSection,
    LogFormat, NamespaceSection, NatsSection, PusherAppSection, PusherSection, RebalanceSection,
    Storage,
};
use wsgate_crds::{HistoryStorage, WsCluster};

use super::{
    ADMIN_PORT, PUBLIC_PORT, child_meta, cluster_token, config_map_name, namespace_and_name,
};
use crate::Result;

/// Key of the config file in the ConfigMap.
pub const CONFIG_KEY: &str = "wsgate.toml";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/wsgate/config";
/// Path of the config file in the pod.
pub const CONFIG_FILE: &str = "/etc/wsgate/config/wsgate.toml";
/// Directory the Secrets are projected into.
pub const SECRETS_DIR: &str = "/etc/wsgate/secrets";

/// Where each referenced Secret key lands, relative to [`SECRETS_DIR`].
pub(crate) mod path {
    /// `auth.jwtSecret`.
    pub const JWT_SECRET: &str = "auth/jwt-secret";
    /// `auth.jwtPublicKey`.
    pub const JWT_PUBLIC_KEY: &str = "auth/jwt-public-key.pem";
    /// `auth.jwks`.
    pub const JWKS: &str = "auth/jwks.json";
    /// The operator-owned API keys Secret.
    pub const API_KEYS: &str = "auth/api-keys";
    /// `auth.apiKeysSecret`: the user's keys, mounted and never read by the
    /// operator.
    pub const USER_API_KEYS: &str = "auth/user-api-keys";
    /// `nats.credentialsSecret`.
    pub const NATS_CREDENTIALS: &str = "nats/credentials.creds";
    /// `nats.tls.caSecret`.
    pub const NATS_CA: &str = "nats/ca.crt";
    /// `nats.tls.clientCertSecretName`: certificate.
    pub const NATS_CERT: &str = "nats/tls.crt";
    /// `nats.tls.clientCertSecretName`: key.
    pub const NATS_KEY: &str = "nats/tls.key";

    /// `pusher.apps[].secretName`/`secretKey` of the app `id` (ids are distinct
    /// subject tokens, so each app gets a file of its own).
    pub fn pusher_secret(id: &str) -> String {
        format!("pusher/{id}")
    }
}

fn secret_file(relative: &str) -> String {
    format!("{SECRETS_DIR}/{relative}")
}

/// The gateway config file (TOML) for `wsc`.
///
/// `node` is not in the file: it comes from the pod name through
/// `WSGATE_NODE`.
///
/// Rendered through [`wsgate_config::FileConfig`], the gateway's own model
/// of the file, so the keys have one definition.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn gateway_config(wsc: &WsCluster) -> Result<String> {
    let (namespace, name) = namespace_and_name(wsc)?;
    let spec = &wsc.spec;
    let nats = spec.nats.as_ref().map(|nats| {
        let tls = nats.tls.as_ref();
        let client_cert = tls.and_then(|tls| tls.client_cert_secret_name.as_ref());
        NatsSection {
            // A managed NATS's `.creds` is mounted where a user's would be.
            credentials_file: (nats.credentials_secret.is_some() || nats.managed.is_some())
                .then(|| secret_file(path::NATS_CREDENTIALS)),
            tls_ca_file: tls
                .and_then(|tls| tls.ca_secret.as_ref())
                .map(|_| secret_file(path::NATS_CA)),
            tls_cert_file: client_cert.map(|_| secret_file(path::NATS_CERT)),
            tls_key_file: client_cert.map(|_| secret_file(path::NATS_KEY)),
            ping_interval_ms: Some(nats.ping_interval_ms),
            ..NatsSection::default()
        }
    });
    let auth = &spec.auth;
    let limits = &spec.limits;
    let size = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    let small = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    let config = FileConfig {
        version: CONFIG_VERSION,
        listen: Some(format!("0.0.0.0:{PUBLIC_PORT}")),
        admin_listen: Some(format!("0.0.0.0:{ADMIN_PORT}")),
        cluster: Some(cluster_token(&namespace, &name)),
        nats_url: spec.nats.as_ref().and_then(|nats| match &nats.managed {
            Some(managed) => Some(super::nats::gateway_nats_url(&namespace, &name, managed)),
            None => nats.url.clone(),
        }),
        allow_anonymous: Some(auth.allow_anonymous),
        allowed_origins: Some(spec.allowed_origins.clone()),
        require_origin: Some(spec.require_origin),
        log_format: Some(match spec.log_format {
            wsgate_crds::LogFormat::Text => LogFormat::Text,
            wsgate_crds::LogFormat::Json => LogFormat::Json,
        }),
        history: Some(match spec.nats {
            Some(_) => HistorySection {
                storage: Some(match spec.history.storage {
                    HistoryStorage::File => Storage::File,
                    HistoryStorage::Memory => Storage::Memory,
                }),
                replicas: Some(small(spec.history_replicas())),
                ..HistorySection::default()
            },
            // One gateway keeps history in its own memory.
            None => HistorySection {
                memory_max_bytes: Some(spec.history.memory_max_bytes),
                ..HistorySection::default()
            },
        }),
        nats,
        auth: Some(AuthSection {
            jwt_secret_file: auth
                .jwt_secret
                .as_ref()
                .map(|_| secret_file(path::JWT_SECRET)),
            jwt_public_key_file: auth
                .jwt_public_key
                .as_ref()
                .map(|_| secret_file(path::JWT_PUBLIC_KEY)),
            jwks_file: auth.jwks.as_ref().map(|_| secret_file(path::JWKS)),
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_seconds: Some(auth.leeway_seconds),
            require_exp: Some(auth.require_exp),
            user_rooms: Some(auth.user_rooms.clone()),
            anonymous_rooms: auth.anonymous_rooms.clone(),
            api_keys_file: Some(secret_file(path::API_KEYS)),
            api_keys_files: auth
                .api_keys_secret
                .as_ref()
                .map(|_| vec![secret_file(path::USER_API_KEYS)]),
            auth_timeout_ms: Some(auth.auth_timeout_ms),
        }),
        limits: Some(LimitsSection {
            max_connections: Some(size(limits.max_connections)),
            max_connections_per_user: Some(size(limits.max_connections_per_user)),
            max_page_size: Some(size(limits.max_page_size)),
            max_rooms_per_connection: Some(size(limits.max_rooms_per_connection)),
            max_message_bytes: Some(size(limits.max_message_bytes)),
            max_http_body_bytes: Some(size(limits.max_http_body_bytes)),
            send_queue: Some(size(limits.send_queue)),
            publish_rate: Some(limits.publish_rate as f64),
            publish_burst: Some(small(limits.publish_burst)),
            command_rate: Some(limits.command_rate as f64),
            command_burst: Some(small(limits.command_burst)),
            max_errors_per_minute: Some(small(limits.max_errors_per_minute)),
            heartbeat_ms: Some(limits.heartbeat_ms),
            heartbeat_timeout_ms: Some(limits.heartbeat_timeout_ms),
            handshake_timeout_ms: Some(limits.handshake_timeout_ms),
            max_connections_per_ip: Some(size(limits.max_connections_per_ip)),
            trusted_proxies: (!limits.trusted_proxies.is_empty())
                .then(|| limits.trusted_proxies.clone()),
        }),
        drain: Some(DrainSection {
            seconds: Some(spec.drain.seconds),
            reconnect_spread_ms: Some(spec.drain.reconnect_spread_ms),
        }),
        rebalance: Some(RebalanceSection {
            enabled: Some(spec.rebalance.enabled),
            tolerance: Some(spec.rebalance.tolerance),
            spread_ms: Some(spec.rebalance.spread_ms),
            max_per_second: Some(small(spec.rebalance.max_per_second)),
            min_age_ms: Some(spec.rebalance.min_age_ms),
            include_unrecoverable: Some(spec.rebalance.include_unrecoverable),
        }),
        namespaces: (!spec.namespaces.is_empty()).then(|| {
            spec.namespaces
                .iter()
                .map(|(ns, section)| {
                    (
                        ns.clone(),
                        NamespaceSection {
                            history_size: Some(section.history_size),
                            history_ttl_seconds: Some(section.history_ttl_seconds),
                            history_max_bytes: Some(section.history_max_bytes),
                            history_max_msgs: Some(section.history_max_msgs),
                            recovery_max: Some(size(section.recovery_max)),
                            presence: Some(section.presence),
                            join_leave: Some(section.join_leave),
                            client_publish: Some(section.client_publish),
                        },
                    )
                })
                .collect()
        }),
        pusher: spec.pusher.as_ref().map(|pusher| PusherSection {
            apps: Some(
                pusher
                    .apps
                    .iter()
                    .map(|app| PusherAppSection {
                        id: Some(app.id.clone()),
                        key: Some(app.key.clone()),
                        secret_file: Some(secret_file(&path::pusher_secret(&app.id))),
                        max_connections: app.max_connections.map(size),
                        enable_client_messages: Some(app.enable_client_messages),
                        max_client_events_per_second: Some(small(app.max_client_events_per_second)),
                        max_presence_members: Some(size(app.max_presence_members)),
                        max_event_bytes: Some(size(app.max_event_bytes)),
                    })
                    .collect(),
            ),
        }),
        ..FileConfig::default()
    };
    Ok(format!(
        "# Rendered by wsgate-operator from WsCluster {namespace}/{name}: edit the WsCluster, not this file.\n{}",
        config.to_toml()
    ))
}

/// The ConfigMap holding [`gateway_config`] under [`CONFIG_KEY`].
///
/// # Errors
///
/// As [`gateway_config`].
pub fn config_map(wsc: &WsCluster) -> Result<ConfigMap> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(ConfigMap {
        metadata: child_meta(wsc, config_map_name(&name))?,
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            gateway_config(wsc)?,
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use wsgate_config::KEYS;

    /// The CRD fields whose defaults have no gateway key: they configure Kubernetes objects.
    const CRD_ONLY: &[&str] = &["drain.pre_stop_seconds"];

    /// `camelCase` to `snake_case`, the CRD's field names to the file's.
    fn snake(camel: &str) -> String {
        let mut snake = String::new();
        for char in camel.chars() {
            if char.is_ascii_uppercase() {
                snake.push('_');
            }
            snake.push(char.to_ascii_lowercase());
        }
        snake
    }

    /// A schema default as the text [`KEYS`] writes defaults in.
    fn text(value: &Value) -> String {
        match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    /// Every default the CRD's schema gives a field of a gateway section (what the API server
    /// fills in, and so what the operator renders) is the gateway's own default for that key
    /// in [`KEYS`]: the two copies of each default cannot drift apart.
    #[test]
    fn crd_schema_defaults_are_the_gateway_defaults() {
        let crd = serde_json::to_value(wsgate_crds::crd()).unwrap_or_default();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let sections = [
            ("nats", &spec["nats"]["properties"]),
            ("auth", &spec["auth"]["properties"]),
            ("limits", &spec["limits"]["properties"]),
            ("drain", &spec["drain"]["properties"]),
            ("rebalance", &spec["rebalance"]["properties"]),
            ("history", &spec["history"]["properties"]),
            (
                "namespaces.<ns>",
                &spec["namespaces"]["additionalProperties"]["properties"],
            ),
            (
                "pusher.apps[]",
                &spec["pusher"]["properties"]["apps"]["items"]["properties"],
            ),
        ];
        let mut compared = 0;
        for (section, properties) in sections {
            let Some(properties) = properties.as_object() else {
                panic!("the CRD has no {section} section");
            };
            for (field, schema) in properties {
                let Some(default) = schema.get("default") else {
                    continue;
                };
                let dotted = format!("{section}.{}", snake(field));
                // `auth.allowAnonymous` is the file's top-level `allow_anonymous`.
                let key = KEYS
                    .iter()
                    .find(|key| key.key == dotted || key.key == snake(field));
                match key {
                    Some(key) => {
                        assert_eq!(text(default), key.default, "{dotted}");
                        compared += 1;
                    }
                    None => assert!(CRD_ONLY.contains(&dotted.as_str()), "{dotted}: no key"),
                }
            }
        }
        assert!(compared >= 25, "only {compared} defaults compared");
    }

    /// The connection limits of the spec reach the gateway: its own parser reads the
    /// rendered handshake timeout, per-IP cap and trusted proxies; an empty proxy list is
    /// left out of the file.
    #[test]
    fn connection_limits_reach_the_gateway() {
        let mut wsc = crate::fixtures::wsc("chat");
        let rendered = super::gateway_config(&wsc).unwrap();
        assert!(!rendered.contains("trusted_proxies"), "{rendered}");
        let config =
            wsgate_config::Config::from_toml(&rendered, std::path::Path::new("wsgate.toml"))
                .unwrap();
        assert_eq!(
            config.limits.handshake_timeout,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(config.limits.max_connections_per_ip, 0);

        wsc.spec.limits.handshake_timeout_ms = 2500;
        wsc.spec.limits.max_connections_per_ip = 20;
        wsc.spec.limits.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::1".into()];
        let rendered = super::gateway_config(&wsc).unwrap();
        let config =
            wsgate_config::Config::from_toml(&rendered, std::path::Path::new("wsgate.toml"))
                .unwrap_or_else(|error| panic!("{error}\n{rendered}"));
        assert_eq!(
            config.limits.handshake_timeout,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(config.limits.max_connections_per_ip, 20);
        let proxies: Vec<String> = config
            .limits
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "fd00::1/128"]);
    }

    /// The spec's `rebalance` reaches the gateway's `[rebalance]` as written, and by default
    /// the gateway's own defaults apply.
    #[test]
    fn rebalancing_settings_reach_the_gateway() {
        let path = std::path::Path::new("wsgate.toml");
        let resolve = |wsc: &wsgate_crds::WsCluster| {
            let file = super::gateway_config(wsc).unwrap_or_default();
            wsgate_config::Config::from_toml(&file, path)
                .unwrap_or_else(|error| panic!("{error}\n{file}"))
        };
        let mut wsc = crate::fixtures::wsc("chat");
        assert_eq!(resolve(&wsc).rebalance, wsgate_config::Rebalance::default());

        wsc.spec.rebalance = wsgate_crds::RebalanceSpec {
            enabled: false,
            tolerance: 0.5,
            spread_ms: 2000,
            max_per_second: 10,
            min_age_ms: 60_000,
            include_unrecoverable: true,
        };
        let rebalance = resolve(&wsc).rebalance;
        assert!(!rebalance.enabled);
        assert_eq!(rebalance.tolerance, 0.5);
        assert_eq!(rebalance.spread, std::time::Duration::from_millis(2000));
        assert_eq!(rebalance.max_per_second, 10);
        assert_eq!(rebalance.min_age, std::time::Duration::from_secs(60));
        assert!(rebalance.include_unrecoverable);
    }

    /// A trusted proxy that is not an address or a network is reported on the WsCluster
    /// (the gateway would refuse its config), naming the key.
    #[test]
    fn a_trusted_proxy_that_is_no_network_is_a_problem_of_the_spec() {
        let mut wsc = crate::fixtures::wsc("chat");
        wsc.spec.limits.trusted_proxies = vec!["lb.internal".into()];
        let problems = crate::validate::problems(&wsc);
        assert!(
            problems
                .iter()
                .any(|problem| problem.contains("limits.trustedProxies")
                    && problem.contains("lb.internal")),
            "{problems:?}"
        );
    }

    /// The history budgets of the spec reach the gateway's file: each
    /// namespace's `historyMaxBytes`/`historyMaxMsgs` always, and
    /// `history.memoryMaxBytes` when the one gateway keeps history in memory
    /// (no NATS); the gateway resolves them as written.
    #[test]
    fn history_budgets_are_rendered_into_the_gateway_config() {
        use super::gateway_config;
        use crate::fixtures::{WsClusterExt, wsc};
        use wsgate_crds::WsCluster;
        let mut single = wsc("chat");
        single.spec.history.memory_max_bytes = 12_345_678;
        single.spec.namespaces.insert(
            "hist".into(),
            wsgate_crds::NamespaceSpec {
                history_size: 10,
                history_max_bytes: 1_000_000,
                history_max_msgs: 5_000,
                ..Default::default()
            },
        );
        let path = std::path::Path::new("wsgate.toml");
        let resolve = |wsc: &WsCluster| {
            let file = gateway_config(wsc).unwrap_or_default();
            wsgate_config::Config::from_toml(&file, path)
                .unwrap_or_else(|error| panic!("{error}\n{file}"))
        };
        let config = resolve(&single);
        assert_eq!(config.history.memory_max_bytes, 12_345_678);
        let hist = &config.namespaces.named["hist"];
        assert_eq!(hist.history_max_bytes, 1_000_000);
        assert_eq!(hist.history_max_msgs, 5_000);

        let mut fleet = single.with_managed_nats(3);
        fleet.spec.history.memory_max_bytes = 12_345_678;
        let config = resolve(&fleet);
        assert_eq!(config.namespaces.named["hist"].history_max_msgs, 5_000);
        assert_eq!(
            config.history.memory_max_bytes,
            wsgate_config::History::default().memory_max_bytes,
            "JetStream keeps fleet history: the memory budget is not rendered"
        );
    }

    /// Each Pusher app of the spec reaches the gateway with its limits and a
    /// secret file named after its id, under the Secrets directory; the
    /// gateway's own parser reads the rendered file. No `pusher`: no section.
    #[test]
    fn pusher_apps_are_rendered_with_their_secret_files() {
        let mut wsc = crate::fixtures::wsc("chat");
        let path = std::path::Path::new("wsgate.toml");
        let rendered = super::gateway_config(&wsc).unwrap_or_default();
        assert!(!rendered.contains("pusher"), "{rendered}");
        wsc.spec.pusher = Some(wsgate_crds::PusherSpec {
            apps: vec![wsgate_crds::PusherAppSpec {
                id: "1001".into(),
                key: "app-key".into(),
                secret_name: "pusher-secrets".into(),
                secret_key: "app-1001".into(),
                max_connections: Some(500),
                enable_client_messages: false,
                max_client_events_per_second: 3,
                max_presence_members: 40,
                max_event_bytes: 4096,
            }],
        });
        let rendered = super::gateway_config(&wsc).unwrap_or_default();
        assert!(
            !rendered.contains("app-1001"),
            "the Secret's key is not a file name: {rendered}"
        );
        let config = wsgate_config::Config::from_toml(&rendered, path)
            .unwrap_or_else(|error| panic!("{error}\n{rendered}"));
        let apps = config.pusher.map(|pusher| pusher.apps).unwrap_or_default();
        assert_eq!(
            apps,
            vec![wsgate_config::PusherApp {
                max_connections: Some(500),
                enable_client_messages: false,
                max_client_events_per_second: 3,
                max_presence_members: 40,
                max_event_bytes: 4096,
                ..wsgate_config::PusherApp::new(
                    "1001",
                    "app-key",
                    std::path::Path::new("/etc/wsgate/secrets/pusher/1001"),
                )
            }]
        );
    }
}

//! The gateway config file (shared/CONFIG.md) and its ConfigMap.
//!
//! Secrets never appear in the file: each referenced Secret key is mounted
//! as a file under [`SECRETS_DIR`] (see the Deployment) and the file names
//! it. The gateway re-reads those files when the Secret changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use wsgate_crds::{HistoryStorage, LogFormat, WsCluster};

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
    /// `nats.credentialsSecret`.
    pub const NATS_CREDENTIALS: &str = "nats/credentials.creds";
    /// `nats.tls.caSecret`.
    pub const NATS_CA: &str = "nats/ca.crt";
    /// `nats.tls.clientCertSecretName`: certificate.
    pub const NATS_CERT: &str = "nats/tls.crt";
    /// `nats.tls.clientCertSecretName`: key.
    pub const NATS_KEY: &str = "nats/tls.key";
}

fn secret_file(relative: &str) -> String {
    format!("{SECRETS_DIR}/{relative}")
}

// TODO(wsgate-config): render through `wsgate_config::FileConfig` (one
// definition of the keys) once that crate lands; this mirror of CONFIG.md
// version 1 is the only place to change then.

/// CONFIG.md, version 1, as far as the operator sets it.
#[derive(Serialize)]
struct FileConfig {
    version: u32,
    listen: String,
    admin_listen: String,
    cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    allow_anonymous: bool,
    allowed_origins: Vec<String>,
    require_origin: bool,
    log_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats: Option<NatsSection>,
    auth: AuthSection,
    limits: LimitsSection,
    drain: DrainSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<HistorySection>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    namespaces: BTreeMap<String, NamespaceSection>,
}

#[derive(Serialize)]
struct NatsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    credentials_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key_file: Option<String>,
    ping_interval_ms: u64,
}

#[derive(Serialize)]
struct AuthSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_public_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    leeway_seconds: u64,
    require_exp: bool,
    user_rooms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_rooms: Option<Vec<String>>,
    api_keys_file: String,
    auth_timeout_ms: u64,
}

#[derive(Serialize)]
struct LimitsSection {
    max_connections: u64,
    max_connections_per_user: u64,
    max_page_size: u64,
    max_rooms_per_connection: u64,
    max_message_bytes: u64,
    max_http_body_bytes: u64,
    send_queue: u64,
    publish_rate: u64,
    publish_burst: u64,
    max_errors_per_minute: u64,
    heartbeat_ms: u64,
    heartbeat_timeout_ms: u64,
}

#[derive(Serialize)]
struct DrainSection {
    seconds: u64,
    reconnect_spread_ms: u64,
}

#[derive(Serialize)]
struct HistorySection {
    storage: &'static str,
    replicas: u64,
}

#[derive(Serialize)]
struct NamespaceSection {
    history_size: u64,
    history_ttl_seconds: u64,
    recovery_max: u64,
    presence: bool,
    join_leave: bool,
    client_publish: bool,
}

/// The gateway config file (TOML) for `wsc`.
///
/// `node` is not in the file: it comes from the pod name through
/// `WSGATE_NODE`.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name;
/// [`crate::Error::RenderConfig`] if serialization fails.
pub fn gateway_config(wsc: &WsCluster) -> Result<String> {
    let (namespace, name) = namespace_and_name(wsc)?;
    let spec = &wsc.spec;
    let nats = spec.nats.as_ref().map(|nats| {
        let tls = nats.tls.as_ref();
        let client_cert = tls.and_then(|tls| tls.client_cert_secret_name.as_ref());
        NatsSection {
            credentials_file: nats
                .credentials_secret
                .as_ref()
                .map(|_| secret_file(path::NATS_CREDENTIALS)),
            tls_ca_file: tls
                .and_then(|tls| tls.ca_secret.as_ref())
                .map(|_| secret_file(path::NATS_CA)),
            tls_cert_file: client_cert.map(|_| secret_file(path::NATS_CERT)),
            tls_key_file: client_cert.map(|_| secret_file(path::NATS_KEY)),
            ping_interval_ms: nats.ping_interval_ms,
        }
    });
    let auth = &spec.auth;
    let limits = &spec.limits;
    let config = FileConfig {
        version: 1,
        listen: format!("0.0.0.0:{PUBLIC_PORT}"),
        admin_listen: format!("0.0.0.0:{ADMIN_PORT}"),
        cluster: cluster_token(&namespace, &name),
        nats_url: spec.nats.as_ref().map(|nats| nats.url.clone()),
        allow_anonymous: auth.allow_anonymous,
        allowed_origins: spec.allowed_origins.clone(),
        require_origin: spec.require_origin,
        log_format: match spec.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        history: spec.nats.as_ref().map(|_| HistorySection {
            storage: match spec.history.storage {
                HistoryStorage::File => "file",
                HistoryStorage::Memory => "memory",
            },
            replicas: spec.history.replicas,
        }),
        nats,
        auth: AuthSection {
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
            leeway_seconds: auth.leeway_seconds,
            require_exp: auth.require_exp,
            user_rooms: auth.user_rooms.clone(),
            anonymous_rooms: auth.anonymous_rooms.clone(),
            api_keys_file: secret_file(path::API_KEYS),
            auth_timeout_ms: auth.auth_timeout_ms,
        },
        limits: LimitsSection {
            max_connections: limits.max_connections,
            max_connections_per_user: limits.max_connections_per_user,
            max_page_size: limits.max_page_size,
            max_rooms_per_connection: limits.max_rooms_per_connection,
            max_message_bytes: limits.max_message_bytes,
            max_http_body_bytes: limits.max_http_body_bytes,
            send_queue: limits.send_queue,
            publish_rate: limits.publish_rate,
            publish_burst: limits.publish_burst,
            max_errors_per_minute: limits.max_errors_per_minute,
            heartbeat_ms: limits.heartbeat_ms,
            heartbeat_timeout_ms: limits.heartbeat_timeout_ms,
        },
        drain: DrainSection {
            seconds: spec.drain.seconds,
            reconnect_spread_ms: spec.drain.reconnect_spread_ms,
        },
        namespaces: spec
            .namespaces
            .iter()
            .map(|(ns, section)| {
                (
                    ns.clone(),
                    NamespaceSection {
                        history_size: section.history_size,
                        history_ttl_seconds: section.history_ttl_seconds,
                        recovery_max: section.recovery_max,
                        presence: section.presence,
                        join_leave: section.join_leave,
                        client_publish: section.client_publish,
                    },
                )
            })
            .collect(),
    };
    let body = toml::to_string(&config)?;
    Ok(format!(
        "# Rendered by wsgate-operator from WsCluster {namespace}/{name}: edit the WsCluster, not this file.\n{body}"
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

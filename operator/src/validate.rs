//! Checks of a spec that the schema accepts but that cannot work.
//!
//! CEL rules in the CRD catch what they can at admission; the rendered
//! config is also run through the gateway's own strict parser
//! (`wsgate_config`), so anything the gateway would refuse at startup (a bad
//! room pattern, an origin that is not a URL) is reported here instead of
//! as crash-looping pods. The remaining checks need more
//! than one object's fields or are friendlier as a `Degraded` condition than
//! as a refused apply. A WsCluster failing them is not applied: its
//! existing fleet keeps running and the status says what to fix.

use wsgate_crds::WsCluster;

/// Most characters of a WsCluster name: children are named `<name>-config`
/// and `<name>-api-keys`, and Service names are DNS labels (63).
pub const MAX_NAME_LEN: usize = 52;

/// Most characters of a WsCluster name with a managed NATS: the
/// StatefulSet `<name>-nats` labels its pods `<statefulset>-<10 character
/// hash>`, a label value of at most 63 characters.
pub const MAX_MANAGED_NATS_NAME_LEN: usize = 47;

/// Every problem of `wsc`'s spec, as sentences naming the field; empty when
/// the spec can work.
pub fn problems(wsc: &WsCluster) -> Vec<String> {
    let spec = &wsc.spec;
    let mut problems = Vec::new();

    let name = wsc.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_NAME_LEN || name.contains('.') {
        problems.push(format!(
            "metadata.name: use a DNS label of at most {MAX_NAME_LEN} characters (no dots): it names the Service and the pods"
        ));
    }

    if crate::resources::nats::managed_spec(wsc).is_some() && name.len() > MAX_MANAGED_NATS_NAME_LEN
    {
        problems.push(format!(
            "metadata.name: with nats.managed use at most {MAX_MANAGED_NATS_NAME_LEN} characters: it names the NATS StatefulSet `<name>-nats`, whose pods' revision label must stay a DNS label"
        ));
    }

    let auth = &spec.auth;
    if auth.jwt_secret.is_none()
        && auth.jwt_public_key.is_none()
        && auth.jwks.is_none()
        && !auth.allow_anonymous
    {
        problems.push(
            "auth: set jwtSecret, jwtPublicKey or jwks, or allowAnonymous: true; as written every client would be refused"
                .to_owned(),
        );
    }

    if let Some(reference) = &auth.api_keys_secret {
        let own = crate::resources::api_keys_secret_name(name);
        if reference.name == own {
            problems.push(format!(
                "auth.apiKeysSecret: {own:?} is the Secret the operator makes for this WsCluster (`<name>-api-keys`): applying it would take your Secret over, and deleting the WsCluster would delete it; store your keys in a Secret of another name"
            ));
        }
    }

    for namespace in spec.namespaces.keys() {
        let valid = !namespace.is_empty()
            && namespace.len() <= 128
            && namespace.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '=' | '+' | '/')
            });
        if !valid {
            problems.push(format!(
                "namespaces.{namespace}: a room namespace is 1 to 128 characters of A-Z a-z 0-9 _ - @ = + / (no ':')"
            ));
        }
    }

    if spec.limits.heartbeat_timeout_ms <= spec.limits.heartbeat_ms {
        problems
            .push("limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs".to_owned());
    }

    if spec.drain.reconnect_spread_ms > spec.drain.seconds.saturating_mul(1000) {
        problems.push("drain.reconnectSpreadMs must fit within drain.seconds".to_owned());
    }

    if let Some(autoscaling) = &spec.autoscaling
        && autoscaling.target_cpu_utilization.is_some()
    {
        // Without `resources` the default requests include CPU.
        let has_cpu_request = crate::resources::gateway_resources(wsc)
            .requests
            .is_some_and(|requests| requests.contains_key("cpu"));
        if !has_cpu_request {
            problems.push(
                "autoscaling.targetCpuUtilization needs resources.requests.cpu: utilization is a share of the request"
                    .to_owned(),
            );
        }
    }

    // The gateway's own strict parser has the last word on the config file:
    // a value it refuses would crash-loop every pod.
    if let Ok(config) = crate::resources::gateway_config(wsc)
        && let Err(error) = wsgate_config::Config::from_toml(
            &config,
            std::path::Path::new(crate::resources::CONFIG_FILE),
        )
    {
        problems.push(gateway_refusal(&error));
    }

    problems
}

/// The gateway's refusal of the rendered config, said of the spec field the
/// refused key comes from (`auth.userRooms`, not `auth.user_rooms`), so the
/// message names what the user wrote.
fn gateway_refusal(error: &wsgate_config::ConfigError) -> String {
    match error {
        wsgate_config::ConfigError::Invalid { key, problem, .. } => {
            format!(
                "{}: {problem} (the gateway would refuse its config)",
                spec_field(key)
            )
        }
        other => format!("the gateway would refuse its config: {other}"),
    }
}

/// The spec field that renders into the gateway's config key `key`: the
/// top-level keys by name, the others segment by segment in camelCase (a
/// namespace's or an app's name as it is).
pub fn spec_field(key: &str) -> String {
    let moved = match key {
        "nats_url" => Some("nats.url"),
        "allow_anonymous" => Some("auth.allowAnonymous"),
        _ => None,
    };
    if let Some(field) = moved {
        return field.to_owned();
    }
    let mut segments: Vec<String> = Vec::new();
    for (index, segment) in key.split('.').enumerate() {
        let named = index == 1 && segments.first().is_some_and(|first| first == "namespaces");
        segments.push(if named {
            segment.to_owned()
        } else {
            camel_case(segment)
        });
    }
    segments.join(".")
}

/// `history_max_bytes` as `historyMaxBytes`.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Names of the Secrets `wsc` references (keys, NATS credentials and TLS,
/// API keys), each once, in spec order.
pub fn referenced_secrets(wsc: &WsCluster) -> Vec<String> {
    let spec = &wsc.spec;
    let auth = &spec.auth;
    let mut names: Vec<String> = [
        &auth.jwt_secret,
        &auth.jwt_public_key,
        &auth.jwks,
        &auth.api_keys_secret,
    ]
    .into_iter()
    .flatten()
    .map(|reference| reference.name.clone())
    .collect();
    if let Some(nats) = &spec.nats {
        names.extend(nats.credentials_secret.iter().map(|r| r.name.clone()));
        if let Some(tls) = &nats.tls {
            names.extend(tls.ca_secret.iter().map(|r| r.name.clone()));
            names.extend(tls.client_cert_secret_name.iter().cloned());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

#[cfg(test)]
mod tests {
    use wsgate_crds::SecretKeyRef;

    use super::*;
    use crate::fixtures::wsc;

    /// The fixture is a spec that can work.
    #[test]
    fn a_working_spec_has_no_problems() {
        assert_eq!(problems(&wsc("chat")), Vec::<String>::new());
    }

    /// `auth.apiKeysSecret` naming the operator's own `<name>-api-keys`
    /// Secret is refused: a forced apply would take the user's Secret over.
    #[test]
    fn api_keys_secret_named_like_the_operators_own_is_refused() {
        let mut clash = wsc("chat");
        clash.spec.auth.api_keys_secret = Some(SecretKeyRef {
            name: "chat-api-keys".into(),
            key: "keys".into(),
        });
        let found = problems(&clash);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("auth.apiKeysSecret:") && p.contains("\"chat-api-keys\"")),
            "{found:?}"
        );
        let mut other = clash.clone();
        other.spec.auth.api_keys_secret = Some(SecretKeyRef {
            name: "chat-backend-keys".into(),
            key: "keys".into(),
        });
        assert_eq!(problems(&other), Vec::<String>::new());
    }

    /// A heartbeat timeout at or below the heartbeat, and a spec without any
    /// token key or anonymous access, are each named.
    #[test]
    fn heartbeat_and_missing_auth_are_named() {
        let mut bad = wsc("chat");
        bad.spec.limits.heartbeat_ms = 30_000;
        bad.spec.limits.heartbeat_timeout_ms = 20_000;
        bad.spec.auth.jwt_secret = None;
        let found = problems(&bad);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("limits.heartbeatTimeoutMs")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with("auth: set jwtSecret")),
            "{found:?}"
        );
    }
}

#[cfg(test)]
mod spec_field_tests {
    use super::spec_field;

    #[test]
    fn gateway_keys_are_named_as_the_spec_fields_they_come_from() {
        assert_eq!(spec_field("auth.user_rooms"), "auth.userRooms");
        assert_eq!(spec_field("nats_url"), "nats.url");
        assert_eq!(spec_field("allowed_origins"), "allowedOrigins");
        assert_eq!(
            spec_field("namespaces.my_room_ns.history_max_bytes"),
            "namespaces.my_room_ns.historyMaxBytes"
        );
        assert_eq!(spec_field("limits.send_queue"), "limits.sendQueue");
    }
}

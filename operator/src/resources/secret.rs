//! The API keys Secret: the gateway's `auth.api_keys_file`.
//!
//! The operator owns a Secret that holds a key of its own, to read
//! `/api/v1/stats` (least privilege: no access to the pods or their exec).
//! The user's keys, `auth.apiKeysSecret`, are never read or copied: the pod
//! mounts that Secret as a second file, `auth.api_keys_files` (see the
//! Deployment), and the gateway reads both. An older operator copied them
//! after its key; those lines stay until every pod mounts the user's Secret
//! itself ([`keeps_copied_user_keys`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use rand::distr::{Alphanumeric, SampleString};
use wsgate_crds::WsCluster;

use super::{api_keys_secret_name, child_meta, namespace_and_name};
use crate::Result;

/// Key of the API keys file in the Secret.
pub const API_KEYS_KEY: &str = "api-keys";

/// A new random API key: 48 alphanumeric characters (≈285 bits).
pub fn generate_api_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

/// The operator's key: the first line of an API keys file.
pub fn operator_key(api_keys: &str) -> Option<&str> {
    api_keys
        .lines()
        .next()
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// The operator's API keys file: its one key on a line.
pub fn api_keys_file(operator_key: &str) -> String {
    format!("{operator_key}\n")
}

/// The Secret holding `api_keys` (see [`api_keys_file`]).
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn api_keys_secret(wsc: &WsCluster, api_keys: &str) -> Result<Secret> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(Secret {
        metadata: child_meta(wsc, api_keys_secret_name(&name))?,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            API_KEYS_KEY.to_owned(),
            ByteString(api_keys.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// Whether the operator's API keys file must still carry the user's keys
/// that an older operator copied after its own key: until every pod of the
/// Deployment (`cached`, as the cache holds it) runs a template that mounts
/// `auth.apiKeysSecret` itself, pods of the previous template read those
/// keys from the operator's file, and dropping them would refuse backends
/// for the length of the roll.
pub fn keeps_copied_user_keys(wsc: &WsCluster, cached: Option<&Deployment>) -> bool {
    let Some(reference) = &wsc.spec.auth.api_keys_secret else {
        return false;
    };
    let Some(deployment) = cached else {
        return false;
    };
    let mounts = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.projected.as_ref()?.sources.as_ref())
        .flatten()
        .filter_map(|source| source.secret.as_ref())
        .any(|secret| secret.name == reference.name);
    let status = deployment.status.clone().unwrap_or_default();
    let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas);
    let replicas = status.replicas.unwrap_or(0);
    let rolled_out = status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas.unwrap_or(0) == replicas
        && replicas == wanted.unwrap_or(1);
    !(mounts && rolled_out)
}

/// The operator's API keys file: its key, followed by `previous`'s other
/// lines (keys an older operator copied) while `keep_copied`.
pub fn api_keys_file_keeping(operator_key: &str, previous: &str, keep_copied: bool) -> String {
    let mut file = api_keys_file(operator_key);
    if keep_copied {
        for line in previous
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|line| !line.is_empty())
        {
            file.push_str(line);
            file.push('\n');
        }
    }
    file
}

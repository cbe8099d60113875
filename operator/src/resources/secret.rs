//! The API keys Secret: the gateway's `auth.api_keys_file`.
//!
//! The operator owns a Secret that holds a key of its own, to read
//! `/api/v1/stats` (least privilege: no access to the pods or their exec).
//! The user's keys, `auth.apiKeysSecret`, are never read or copied: the pod
//! mounts that Secret as a second file, `auth.api_keys_files` (see the
//! Deployment), and the gateway reads both.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
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

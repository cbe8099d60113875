//! The gateway pods' ServiceAccount.

use k8s_openapi::api::core::v1::ServiceAccount;
use wsgate_crds::WsCluster;

use super::{child_meta, namespace_and_name};
use crate::Result;

/// A ServiceAccount of its own per WsCluster, so that policies can single
/// the gateways out. The gateway never calls the Kubernetes API, so no
/// token is mounted.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn service_account(wsc: &WsCluster) -> Result<ServiceAccount> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(ServiceAccount {
        metadata: child_meta(wsc, name)?,
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}

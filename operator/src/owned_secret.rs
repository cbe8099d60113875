//! The contents of the Secrets the operator owns, and only those.
//!
//! The operator watches Secrets' metadata, never their values (a metadata
//! watch: `PartialObjectMetadata` on the wire). It needs the values of two
//! kinds of Secret, both its own children: the API keys Secret (its key to
//! the gateways' stats, kept across reconciles) and a managed NATS's
//! generated credentials. [`OwnedSecrets::get`] reads such a Secret with a
//! GET only when the metadata says it exists, is controlled by the asking
//! WsCluster, and changed since the last read; a Secret that a WsCluster
//! merely names (`auth.jwtSecret`, `auth.apiKeysSecret`, ...) is mounted
//! into the pods and never read.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;

use crate::{Error, Result};

/// Owned Secrets' values by namespace and name.
type Values = HashMap<(String, String), Arc<Secret>>;

/// The last value read of each owned Secret, by namespace and name; the
/// Secret's `resourceVersion` says whether it is still current.
#[derive(Clone, Default)]
pub struct SecretContents(Arc<Mutex<Values>>);

impl SecretContents {
    /// Remembers `secret` as read or applied (it carries its
    /// `resourceVersion`).
    pub fn remember(&self, secret: &Secret) {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        self.0.lock().insert(key, Arc::new(secret.clone()));
    }

    fn last(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.0
            .lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Forgets every value, as after a restart.
    pub fn clear(&self) {
        self.0.lock().clear();
    }

    fn forget(&self, namespace: &str, name: &str) {
        self.0
            .lock()
            .remove(&(namespace.to_owned(), name.to_owned()));
    }
}

/// Reads the Secrets the operator owns (see the module docs).
#[derive(Clone)]
pub struct OwnedSecrets {
    client: Client,
    /// Metadata of every watched Secret.
    metadata: Store<PartialObjectMeta<Secret>>,
    contents: SecretContents,
}

impl OwnedSecrets {
    /// Reads with `client`, trusting `metadata` for existence and
    /// ownership, and keeping values in `contents`.
    pub fn new(
        client: Client,
        metadata: Store<PartialObjectMeta<Secret>>,
        contents: SecretContents,
    ) -> Self {
        Self {
            client,
            metadata,
            contents,
        }
    }

    /// The metadata cache this reads through.
    pub fn metadata(&self) -> &Store<PartialObjectMeta<Secret>> {
        &self.metadata
    }

    /// Remembers a Secret the operator has just applied, so the next
    /// reconcile needs no GET.
    pub fn remember(&self, secret: &Secret) {
        self.contents.remember(secret);
    }

    /// The Secret `namespace/name` as the server holds it:
    ///
    /// - when the metadata cache holds no such Secret, the one last applied
    ///   (the watch may not have seen it yet: a new key must not replace
    ///   it), else `None`;
    /// - its metadata only (no `data`) when its controller is not the
    ///   WsCluster of uid `owner`: it is never read, and the apply reports
    ///   the name conflict;
    /// - else the whole Secret, from memory when its `resourceVersion` is
    ///   the one last read or applied, otherwise by a GET.
    ///
    /// # Errors
    ///
    /// [`Error::ReadSecret`] when the GET fails (other than not found).
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
        owner: Option<&str>,
    ) -> Result<Option<Secret>> {
        let last = self.contents.last(namespace, name);
        let Some(meta) = self.metadata.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(last.map(|secret| (*secret).clone()));
        };
        let controlled = owner.is_some_and(|owner| {
            meta.owner_references()
                .iter()
                .any(|reference| reference.controller == Some(true) && reference.uid == owner)
        });
        if !controlled {
            return Ok(Some(Secret {
                metadata: meta.metadata.clone(),
                ..Secret::default()
            }));
        }
        let version = meta.resource_version();
        if let Some(secret) = last
            && version.is_some()
            && secret.resource_version() == version
        {
            return Ok(Some((*secret).clone()));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                self.contents.remember(&secret);
                Ok(Some(secret))
            }
            Ok(None) => {
                self.contents.forget(namespace, name);
                Ok(None)
            }
            Err(source) => Err(Error::ReadSecret {
                name: name.to_owned(),
                source,
            }),
        }
    }
}

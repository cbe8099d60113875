//! `[pusher]`: the apps of the Pusher Channels protocol, each checked and given its defaults.

use std::collections::BTreeSet;

use super::{Layers, non_empty_path};
use crate::config::{Pusher, PusherApp};
use crate::error::ConfigError;
use crate::file::{PusherAppSection, PusherSection};
use crate::{Result, Secret, validate};

/// `[pusher]` with its `[[pusher.apps]]`: ids and keys required and distinct.
pub(super) fn resolve_pusher(layers: &Layers, section: PusherSection) -> Result<Pusher> {
    let PusherSection { apps } = section;
    let mut resolved = Vec::new();
    let mut ids = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for (index, app) in apps.unwrap_or_default().into_iter().enumerate() {
        let app = resolve_app(layers, index, app)?;
        let key = |field: &str| format!("pusher.apps[{index}].{field}");
        if !ids.insert(app.id.clone()) {
            return Err(ConfigError::invalid(
                key("id"),
                layers.file_origin(&key("id")),
                format!("{:?} is the id of an earlier app", app.id),
            ));
        }
        if !keys.insert(app.key.clone()) {
            return Err(ConfigError::invalid(
                key("key"),
                layers.file_origin(&key("key")),
                format!("{:?} is the key of an earlier app", app.key),
            ));
        }
        resolved.push(app);
    }
    Ok(Pusher { apps: resolved })
}

/// One app, the `index`th in the file (errors name it `pusher.apps[index].field`).
fn resolve_app(layers: &Layers, index: usize, app: PusherAppSection) -> Result<PusherApp> {
    let PusherAppSection {
        id,
        key: app_key,
        secret_file,
        max_connections,
        enable_client_messages,
        max_client_events_per_second,
        max_presence_members,
        max_event_bytes,
    } = app;
    let name = |field: &str| format!("pusher.apps[{index}].{field}");
    let required = |field: &str, value: Option<String>| {
        value.ok_or_else(|| {
            ConfigError::invalid(
                name(field),
                layers.file_origin(&format!("pusher.apps[{index}]")),
                "is required",
            )
        })
    };
    let id = layers
        .file_only(name("id"), Some(required("id", id)?), String::new)
        .check(|id| validate::subject_token(id))?;
    let app_key = layers
        .file_only(name("key"), Some(required("key", app_key)?), String::new)
        .check(|app_key| validate::pusher_key(app_key))?;
    let secret_file = layers
        .file_only(
            name("secret_file"),
            Some(required("secret_file", secret_file)?),
            String::new,
        )
        .map(non_empty_path)?;
    let defaults = PusherApp::new(&id, &app_key, &secret_file);
    Ok(PusherApp {
        secret: Secret::File(secret_file),
        max_connections: max_connections
            .map(|max| {
                layers
                    .file_only(name("max_connections"), Some(max), || max)
                    .within_bounds()
            })
            .transpose()?,
        enable_client_messages: enable_client_messages.unwrap_or(defaults.enable_client_messages),
        max_client_events_per_second: layers
            .file_only(
                name("max_client_events_per_second"),
                max_client_events_per_second,
                || defaults.max_client_events_per_second,
            )
            .within_bounds()?,
        max_presence_members: layers
            .file_only(name("max_presence_members"), max_presence_members, || {
                defaults.max_presence_members
            })
            .within_bounds()?,
        max_event_bytes: layers
            .file_only(name("max_event_bytes"), max_event_bytes, || {
                defaults.max_event_bytes
            })
            .within_bounds()?,
        id,
        key: app_key,
    })
}

//! Cluster-wide views of Pusher channels, kept in hub rooms so that the
//! broker's presence gathering (every live node's members of a room) answers
//! them: a channel's *roster* lists one entry per subscribed connection, and
//! an app's *directory* one entry per node and occupied channel.
//!
//! An entry is a hub membership of a small outbox that never receives
//! anything (no one publishes to these rooms), listed under a "user" and a
//! "connection": in a roster, the member (see [`member`]) and the socket id;
//! in the directory, the channel name and `<node>:<channel>`.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::app::AppState;
use crate::broker::{Broker, BrokerError, Present};
use crate::hub::Hub;
use crate::outbox::Outbox;

/// Most pages one gathering reads: a bound on its time and memory.
const MAX_PAGES: usize = 100;

/// Entries per page asked of the broker.
const PAGE: usize = 1000;

/// The hub room of an app's directory of occupied channels.
pub fn directory(app: &str) -> String {
    format!("pusher.{app}.d")
}

/// One entry in a hub room, removed with [`Enlisted::leave`].
pub struct Enlisted {
    room: String,
    outbox: Arc<Outbox>,
}

impl Enlisted {
    /// Removes the entry.
    pub async fn leave(self, hub: &Hub) {
        hub.leave(&self.room, self.outbox.key).await;
    }
}

/// Adds the entry (`user`, `conn`) to the hub room `room`.
///
/// # Errors
/// The broker's, when the room's first local entry could not subscribe.
pub async fn enlist(
    state: &AppState,
    room: &str,
    conn: &str,
    user: &str,
) -> Result<Enlisted, BrokerError> {
    let hub = &state.hub;
    let outbox = Outbox::new(hub.next_key(), Arc::from(conn), 1, state.metrics.clone());
    outbox.set_user(user);
    hub.join(&*state.broker, room, &outbox, Default::default())
        .await?;
    outbox.take();
    Ok(Enlisted {
        room: room.to_owned(),
        outbox,
    })
}

/// Every entry of `room` on every live node, up to [`MAX_PAGES`] pages.
///
/// # Errors
/// The broker's.
pub async fn gather(broker: &dyn Broker, room: &str) -> Result<Vec<Present>, BrokerError> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let page = broker.presence(room, after.take(), PAGE).await?;
        let more = page.more;
        if let Some(last) = page.members.last() {
            after = Some((last.user.clone(), last.conn.clone()));
        }
        all.extend(page.members);
        if !more || after.is_none() {
            break;
        }
    }
    Ok(all)
}

/// A roster entry's "user" for a presence member: `[user_id, user_info]` as
/// JSON, so gathering returns the member's info with its id.
pub fn member(user_id: &str, user_info: &RawValue) -> String {
    serde_json::to_string(&(user_id, user_info)).unwrap_or_default()
}

/// A presence member read back from a roster entry.
pub struct Member {
    pub user_id: String,
    pub user_info: Box<RawValue>,
}

/// Reads a roster entry's "user" back; `None` for entries of other channels' kinds.
pub fn read_member(user: &str) -> Option<Member> {
    let (user_id, user_info): (String, Box<RawValue>) = serde_json::from_str(user).ok()?;
    Some(Member { user_id, user_info })
}

/// The distinct members of gathered roster entries, by user id, in order:
/// a user with several connections is one member.
pub fn members(entries: &[Present]) -> Vec<Member> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in entries {
        if let Some(member) = read_member(&entry.user) {
            seen.entry(member.user_id.clone()).or_insert(member);
        }
    }
    seen.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members come back with their info; one user on two connections (or
    /// two nodes) is one member.
    #[test]
    fn members_are_counted_per_user_id() {
        let info = RawValue::from_string(r#"{"name":"A"}"#.to_owned()).unwrap();
        let entry = |user: &str, conn: &str, node: &str| Present {
            user: member(user, &info),
            conn: conn.to_owned(),
            node: node.to_owned(),
        };
        let entries = vec![
            entry("a", "1.1", "n1"),
            entry("a", "2.1", "n2"),
            entry("b", "1.2", "n1"),
        ];
        let members = members(&entries);
        let ids: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(members[0].user_info.get(), r#"{"name":"A"}"#);
        assert!(read_member("-").is_none());
    }
}

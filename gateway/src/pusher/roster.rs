//! Cluster-wide views of Pusher channels, kept in hub rooms so that the
//! broker's presence gathering (every live node's members of a room) answers
//! them: a channel's *roster* lists one entry per subscribed connection, and
//! an app's *directory* one entry per node and occupied channel.
//!
//! An entry is a hub membership of a small outbox that never receives
//! anything (no one publishes to these rooms), listed under a "user" and a
//! "connection": in a roster, the member (see [`member`]) and the socket id
//! (on a presence channel, stamped: see [`stamped`]); in the directory, the
//! channel name and `<node>:<channel>`.
//!
//! Whether a joining connection announces its member (`member_added`) is
//! decided after its entry is in the roster, from a gathering: it does when
//! its entry is the user's earliest ([`is_earliest`]). A connection joining
//! later always sees the earlier entries (they were in place before its
//! gathering began), so of several connections of one user joining at once,
//! on one node or several, one announces; on one node exactly, since joins of
//! a user take turns there, and across nodes as far as their clocks agree.
//! A joining connection holds a placeholder entry (user `-`, no member) while
//! it takes its stamp, so that this node already holds the roster's broker
//! subscription and the stamped entry is in place at once: a stamp never
//! waits a broker round trip for its entry.

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

/// A presence roster entry's "connection": `<stamp>/<socket id>`, the stamp
/// (nanoseconds since the Unix epoch, 20 digits) saying when it was made.
pub fn stamped(stamp: u64, socket_id: &str) -> String {
    format!("{stamp:020}/{socket_id}")
}

/// The stamp and socket id of an entry's "connection"; an entry without a
/// stamp (made by an older node) counts as made first.
fn read_stamped(conn: &str) -> (u64, &str) {
    conn.split_once('/')
        .and_then(|(stamp, socket)| Some((stamp.parse().ok()?, socket)))
        .unwrap_or((0, conn))
}

/// Whether the entry `conn` is the earliest of `user_id`'s entries in
/// `entries` (by stamp, then socket id): the one that announces the member.
pub fn is_earliest(entries: &[Present], user_id: &str, conn: &str) -> bool {
    let mine = read_stamped(conn);
    entries
        .iter()
        .filter(|entry| entry.conn != conn)
        .filter(|entry| read_member(&entry.user).is_some_and(|member| member.user_id == user_id))
        .all(|entry| read_stamped(&entry.conn) > mine)
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

    /// Of one user's entries the earliest stamp announces, whatever the
    /// order gathered; other users' entries and unstamped ones from older
    /// nodes (counted as first) are told apart.
    #[test]
    fn the_earliest_entry_of_a_user_announces_it() {
        let info = RawValue::from_string("{}".to_owned()).unwrap();
        let entry = |user: &str, conn: &str| Present {
            user: member(user, &info),
            conn: conn.to_owned(),
            node: "n".to_owned(),
        };
        let (early, late) = (stamped(5, "2.1"), stamped(7, "1.1"));
        let entries = vec![
            entry("a", &late),
            entry("b", &stamped(1, "3.1")),
            entry("a", &early),
        ];
        assert!(is_earliest(&entries, "a", &early));
        assert!(!is_earliest(&entries, "a", &late));
        assert!(
            is_earliest(&entries[..2], "a", &late),
            "alone, the later one is the earliest"
        );
        assert!(is_earliest(&entries, "b", &stamped(1, "3.1")));
        // Equal stamps: the socket id decides, for one of them only.
        let (x, y) = (stamped(5, "1.1"), stamped(5, "1.2"));
        let tied = vec![entry("a", &x), entry("a", &y)];
        assert!(is_earliest(&tied, "a", &x) && !is_earliest(&tied, "a", &y));
        let old = vec![entry("a", "9.9"), entry("a", &early)];
        assert!(
            !is_earliest(&old, "a", &early),
            "an older node's entry was first"
        );
    }
}

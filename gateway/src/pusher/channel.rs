//! Pusher channel names: what makes one valid, which kind of channel it
//! names, and how it becomes one NATS subject token.
//!
//! A valid name is 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 _ - = @ ,
//! . ;` (Pusher's rule). Its prefix says its kind: `private-encrypted-`,
//! `private-`, `presence-`, or none for a public channel; and whether it is a
//! cache channel (`cache-`, `private-cache-`, `private-encrypted-cache-`,
//! `presence-cache-`), which keeps its last event for new subscribers.
//!
//! Pusher channels live in their own subject space,
//! `wsgate.<cluster>.pusher.<app>.<c|p>.<token>`, apart from native rooms
//! (whose names never hold a `.`). The token is the name with every byte
//! outside `A-Z a-z 0-9 -` written `_XX` (two upper-case hex digits): the
//! result is never empty, holds no `.`, `*`, `>` or white space, and decodes
//! back to exactly one name, so no two channels share a subject and no name
//! can reach another subject.

/// Longest channel name Pusher accepts.
pub const MAX_NAME_LEN: usize = 164;

/// What a channel's name makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anyone with the app key may subscribe.
    Public,
    /// Subscribing needs a signature of the socket id and the channel.
    Private,
    /// As private; the server relays ciphertext and refuses client events.
    Encrypted,
    /// As private, with a signed `channel_data` that lists the member.
    Presence,
}

impl Kind {
    /// The kind of a (valid) channel name.
    pub fn of(name: &str) -> Self {
        if name.starts_with("private-encrypted-") {
            Kind::Encrypted
        } else if name.starts_with("private-") {
            Kind::Private
        } else if name.starts_with("presence-") {
            Kind::Presence
        } else {
            Kind::Public
        }
    }

    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        self != Kind::Public
    }

    /// Whether clients may send `client-` events on it.
    pub fn takes_client_events(self) -> bool {
        matches!(self, Kind::Private | Kind::Presence)
    }
}

/// The prefixes of cache channels, one per kind (Pusher's names).
const CACHE_PREFIXES: [&str; 4] = [
    "cache-",
    "private-cache-",
    "private-encrypted-cache-",
    "presence-cache-",
];

/// Whether a channel keeps its last event for new subscribers (a cache
/// channel, of any kind).
pub fn is_cache(name: &str) -> bool {
    CACHE_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Whether a byte may appear in a channel name.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_-=@,.;".contains(&byte)
}

/// Whether `name` is a valid Pusher channel name.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(is_name_byte)
}

/// Whether a byte stands for itself in a subject token.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// The channel name as one NATS subject token (see the module docs).
pub fn encode(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut token = String::with_capacity(name.len() + 8);
    for byte in name.bytes() {
        if is_plain(byte) {
            token.push(char::from(byte));
        } else {
            token.push('_');
            token.push(char::from(HEX[usize::from(byte >> 4)]));
            token.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    token
}

/// The channel name a token encodes, or `None` for a token [`encode`] never
/// makes.
pub fn decode(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'_' {
            let (hex, tail) = tail.split_at_checked(2)?;
            let text = std::str::from_utf8(hex).ok()?;
            if text.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            let byte = u8::from_str_radix(text, 16).ok()?;
            if is_plain(byte) {
                return None;
            }
            bytes.push(byte);
            rest = tail;
        } else if is_plain(first) {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The prefix of a user's own channel, where `sendToUser` events go.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// Longest user id of a signed-in connection.
pub const MAX_USER_ID_LEN: usize = 200;

/// The user id of a user channel `#server-to-user-<id>`, `None` for any
/// other name. These names are outside Pusher's channel name rule: only the
/// server sends on them, and only a connection signed in as that user
/// subscribes.
pub fn user_of(name: &str) -> Option<&str> {
    let id = name.strip_prefix(USER_CHANNEL_PREFIX)?;
    (!id.is_empty() && id.len() <= MAX_USER_ID_LEN).then_some(id)
}

/// The hub room listing the connections of a signed-in user, which
/// `terminate_connections` closes.
pub fn user_room(app: &str, user_id: &str) -> String {
    format!("pusher.{app}.u.{}", encode(user_id))
}

/// The broker's room key of a channel's events: the broker maps keys that
/// start `pusher.` to subjects of their own.
pub fn room(app: &str, name: &str) -> String {
    format!("pusher.{app}.c.{}", encode(name))
}

/// The hub room that holds a presence channel's roster: one entry per
/// subscribed connection, under its member's user id and info.
pub fn roster(app: &str, name: &str) -> String {
    format!("pusher.{app}.p.{}", encode(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pusher's own examples and limits: the allowed characters, 164 of them
    /// at most, and nothing else.
    #[test]
    fn names_follow_pushers_rule() {
        for name in ["a", "private-chat", "presence-room.1", "x=@,.;_-Z9"] {
            assert!(is_valid(name), "{name}");
        }
        assert!(is_valid(&"a".repeat(164)));
        for name in ["", "a b", "a*", "a>", "ü", "a/b", "a:b", "a\n"] {
            assert!(!is_valid(name), "{name:?}");
        }
        assert!(!is_valid(&"a".repeat(165)));
    }

    /// The prefix decides the kind, encrypted before private.
    #[test]
    fn kinds_come_from_prefixes() {
        assert_eq!(Kind::of("private-encrypted-x"), Kind::Encrypted);
        assert_eq!(Kind::of("private-x"), Kind::Private);
        assert_eq!(Kind::of("presence-x"), Kind::Presence);
        assert_eq!(Kind::of("public"), Kind::Public);
        assert_eq!(Kind::of("privatex"), Kind::Public);
        assert!(!Kind::Encrypted.takes_client_events());
        assert!(!Kind::Public.takes_client_events());
    }

    /// Cache channels are of every kind, told by the prefix after the kind's.
    #[test]
    fn cache_channels_keep_their_kind() {
        for (name, kind) in [
            ("cache-x", Kind::Public),
            ("private-cache-x", Kind::Private),
            ("private-encrypted-cache-x", Kind::Encrypted),
            ("presence-cache-x", Kind::Presence),
        ] {
            assert!(is_cache(name), "{name}");
            assert_eq!(Kind::of(name), kind, "{name}");
        }
        for name in [
            "cachex",
            "x-cache-y",
            "private-x",
            "presence-cachex",
            "#server-to-user-cache-1",
        ] {
            assert!(!is_cache(name), "{name}");
        }
    }

    /// User channels name their user; nothing else does.
    #[test]
    fn user_channels_name_their_user() {
        assert_eq!(user_of("#server-to-user-42"), Some("42"));
        assert_eq!(user_of("#server-to-user-a.b c"), Some("a.b c"));
        assert_eq!(user_of("#server-to-user-"), None);
        assert_eq!(user_of("server-to-user-42"), None);
        assert_eq!(
            user_of(&format!("#server-to-user-{}", "x".repeat(201))),
            None
        );
        assert!(!is_valid("#server-to-user-42"));
    }

    /// Tokens that [`encode`] never makes do not decode: lower-case hex,
    /// escaped plain bytes, short escapes and subject syntax.
    #[test]
    fn foreign_tokens_do_not_decode() {
        for token in ["_2e", "_41", "_2", "_", "a.b", "a*", ">", "a b"] {
            assert_eq!(decode(token), None, "{token}");
        }
        assert_eq!(decode("a_2Eb"), Some("a.b".to_owned()));
    }

    proptest! {
        /// Every valid name encodes to one safe subject token that decodes
        /// back to it.
        #[test]
        fn every_valid_name_is_one_safe_token_that_decodes_back(
            name in "[A-Za-z0-9_\\-=@,.;]{1,164}"
        ) {
            prop_assert!(is_valid(&name));
            let token = encode(&name);
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode(&token), Some(name));
        }

        /// Two different names never share a token, whatever they hold.
        #[test]
        fn different_names_never_share_a_token(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }

        /// A room key is exactly the four tokens `pusher.<app>.c.<token>`.
        #[test]
        fn room_keys_have_a_fixed_shape(name in "[A-Za-z0-9_\\-=@,.;]{1,164}") {
            let key = room("1001", &name);
            prop_assert_eq!(key.split('.').count(), 4);
            prop_assert!(!key.contains([' ', '*', '>']));
        }
    }
}

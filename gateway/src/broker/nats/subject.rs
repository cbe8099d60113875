//! The NATS subject layout. Every subject starts `wsgate.<cluster>.`; `cluster` and
//! `node` are validated single tokens, room names are validated to be one token
//! without wildcards, and user and connection ids (which may hold anything) are
//! base64url-encoded into one token.
//!
//! | subject | who subscribes | carries |
//! | --- | --- | --- |
//! | `wsgate.<cluster>.room.<room>` | nodes with local members of the room | `message` frames |
//! | `wsgate.<cluster>.user.<b64 user>.send` / `.disconnect` | every node (`user.*.*`) | `direct` frames / nothing; reply: count |
//! | `wsgate.<cluster>.node.<node>.conn.<b64 conn>.send` / `.disconnect` | that node (`node.<node>.>`) | as above |
//! | `wsgate.<cluster>.node.<node>.barrier` | that node | join barrier: proves earlier SUBs are active |
//! | `wsgate.<cluster>.stats` | every node | reply: the node's counts |
//! | `wsgate.<cluster>.presence` | every node | reply: a page of the room's local members |
//! | `wsgate.<cluster>.nodes` | every node | registry heartbeats |

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Builds the subjects of one cluster as seen from one node.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
    node: String,
}

/// What a user- or connection-addressed subject asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Send,
    Disconnect,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Disconnect => "disconnect",
        }
    }

    fn parse(token: &str) -> Option<Self> {
        match token {
            "send" => Some(Self::Send),
            "disconnect" => Some(Self::Disconnect),
            _ => None,
        }
    }
}

/// A control subject addressed to this node, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    User { user: String, verb: Verb },
    Conn { conn: String, verb: Verb },
    Barrier,
}

/// Encodes any string as one subject token.
pub fn encode(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(value)
}

fn decode(token: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}

/// Whether `token` is safe as one subject token (the rule config applies to
/// `cluster` and `node`).
pub fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a room key is one of the Pusher transport's (`pusher.<app>.…`).
pub fn is_pusher(room: &str) -> bool {
    room.starts_with("pusher.")
}

/// The node a connection id belongs to: ids are `<node>:<rest>`.
pub fn node_of_conn(conn: &str) -> Option<&str> {
    let (node, _) = conn.split_once(':')?;
    is_token(node).then_some(node)
}

impl Subjects {
    pub fn new(cluster: &str, node: &str) -> Self {
        Self {
            prefix: format!("wsgate.{cluster}"),
            node: node.to_owned(),
        }
    }

    /// A room's subject. Pusher channels' rooms (`pusher.<app>.…`, never a
    /// native room name, which holds no `.`) get a subject space of their own.
    pub fn room(&self, room: &str) -> String {
        if is_pusher(room) {
            format!("{}.{room}", self.prefix)
        } else {
            format!("{}.room.{room}", self.prefix)
        }
    }

    pub fn user(&self, user: &str, verb: Verb) -> String {
        format!("{}.user.{}.{}", self.prefix, encode(user), verb.as_str())
    }

    pub fn users(&self) -> String {
        format!("{}.user.*.*", self.prefix)
    }

    pub fn conn(&self, node: &str, conn: &str, verb: Verb) -> String {
        format!(
            "{}.node.{node}.conn.{}.{}",
            self.prefix,
            encode(conn),
            verb.as_str()
        )
    }

    pub fn own_node(&self) -> String {
        format!("{}.node.{}.>", self.prefix, self.node)
    }

    pub fn barrier(&self) -> String {
        format!("{}.node.{}.barrier", self.prefix, self.node)
    }

    pub fn stats(&self) -> String {
        format!("{}.stats", self.prefix)
    }

    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    pub fn registry(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    /// Decodes a subject received on the user or own-node wildcards.
    pub fn control(&self, subject: &str) -> Option<Control> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let tokens: Vec<&str> = rest.split('.').collect();
        match tokens.as_slice() {
            ["user", user, verb] => Some(Control::User {
                user: decode(user)?,
                verb: Verb::parse(verb)?,
            }),
            ["node", node, "conn", conn, verb] if *node == self.node => Some(Control::Conn {
                conn: decode(conn)?,
                verb: Verb::parse(verb)?,
            }),
            ["node", node, "barrier"] if *node == self.node => Some(Control::Barrier),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_with_subject_syntax_stay_one_token() {
        let subjects = Subjects::new("c", "n1");
        for user in ["a.b", "*", ">", "a b", "ü", "x\r\nPUB y 1", ""] {
            let subject = subjects.user(user, Verb::Send);
            assert_eq!(subject.split('.').count(), 5, "{subject}");
            assert!(!subject.contains([' ', '*', '>', '\r', '\n']));
            assert_eq!(
                subjects.control(&subject),
                Some(Control::User {
                    user: user.into(),
                    verb: Verb::Send
                })
            );
        }
    }

    #[test]
    fn conn_subjects_address_their_node_only() {
        let n1 = Subjects::new("c", "n1");
        let n2 = Subjects::new("c", "n2");
        let subject = n1.conn("n1", "n1:ab-1", Verb::Disconnect);
        assert_eq!(
            n1.control(&subject),
            Some(Control::Conn {
                conn: "n1:ab-1".into(),
                verb: Verb::Disconnect
            })
        );
        assert_eq!(n2.control(&subject), None);
        assert_eq!(n1.control(&n1.barrier()), Some(Control::Barrier));
    }

    /// Pusher rooms live beside, not under, the native rooms' subjects.
    #[test]
    fn pusher_rooms_have_their_own_subject_space() {
        let subjects = Subjects::new("c", "n1");
        assert_eq!(subjects.room("chat:a"), "wsgate.c.room.chat:a");
        assert_eq!(
            subjects.room("pusher.1001.c.x_2Ey"),
            "wsgate.c.pusher.1001.c.x_2Ey"
        );
    }

    #[test]
    fn node_is_read_from_conn_ids() {
        assert_eq!(node_of_conn("pod-1:x-3"), Some("pod-1"));
        assert_eq!(node_of_conn("a.b:1"), None);
        assert_eq!(node_of_conn("nocolon"), None);
    }
}

//! The server's frames, as typed `Serialize` values: replies, events and the
//! backend API's bodies. Client data travels as the `&RawValue` it arrived as,
//! so it is parsed once, by the parser, and never re-serialized.
//!
//! Every frame is written by serde_json; nothing here glues JSON text
//! together. A `message` frame is built once per publish and its bytes are
//! shared by every member it reaches, so its encoding is off the fan-out path.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use tracing::error;

use super::{ErrorCode, Failure, Id};
use crate::broker::Present;

/// Writes a frame. Serializing these types cannot fail (no maps with non-string
/// keys, no fallible `Serialize` impls); should it ever, the client gets an
/// `internal` error instead of a broken frame.
pub fn encode(frame: &impl Serialize) -> String {
    serde_json::to_string(frame).unwrap_or_else(|cause| {
        error!(%cause, "a frame could not be written");
        r#"{"error":{"code":"internal","message":"a frame could not be written"}}"#.to_owned()
    })
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Server events that are not room messages.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event<'a> {
    /// The first frame of an identified connection, and the answer to `auth`.
    Welcome {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Id>,
        conn: &'a str,
        user: &'a str,
        node: &'a str,
        heartbeat_ms: u64,
    },
    /// A direct message; `from` is `None` for a backend's.
    Direct {
        from: Option<&'a str>,
        data: &'a RawValue,
    },
    /// A member joined a room whose namespace announces it.
    Joined {
        room: &'a str,
        user: &'a str,
        conn: &'a str,
    },
    /// A member left; `reason` is `leave`, `disconnect` or `forbidden`.
    Left {
        room: &'a str,
        user: &'a str,
        conn: &'a str,
        reason: &'a str,
    },
    /// The server will close the connection after `after_ms`.
    Reconnect { after_ms: u64 },
}

impl Event<'_> {
    /// The frame's text.
    pub fn text(&self) -> String {
        encode(self)
    }
}

/// A `message` event. Rooms with history add their position: `seq`, `prev` and
/// `epoch` are stamped on by the broker once the message is stored.
#[derive(Serialize, Deserialize)]
pub struct Message<'a> {
    #[serde(rename = "type")]
    pub kind: MessageKind,
    #[serde(borrow)]
    pub room: Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// The publishing user, or `None` for a backend.
    #[serde(borrow)]
    pub from: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Cow<'a, str>>,
}

/// The `type` of a [`Message`]: always `message`.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    Message,
}

impl<'a> Message<'a> {
    /// A message as published, before any history position.
    pub fn new(room: &'a str, data: &'a RawValue, from: Option<&'a str>) -> Self {
        Self {
            kind: MessageKind::Message,
            room: Cow::Borrowed(room),
            data,
            from: from.map(Cow::Borrowed),
            seq: None,
            prev: None,
            epoch: None,
        }
    }

    /// The frame's text.
    pub fn text(&self) -> String {
        encode(self)
    }
}

/// Adds `seq`, `prev` and `epoch` to a stored `message` frame; `None` when the
/// text is not a message frame.
pub fn stamp(frame: &str, seq: u64, prev: u64, epoch: &str) -> Option<Box<RawValue>> {
    let mut message: Message<'_> = serde_json::from_str(frame).ok()?;
    message.seq = Some(seq);
    message.prev = Some(prev);
    message.epoch = Some(Cow::Borrowed(epoch));
    serde_json::value::to_raw_value(&message).ok()
}

/// A frame's text, from the raw JSON it was written as (no copy).
pub fn into_text(frame: Box<RawValue>) -> String {
    String::from(Box::<str>::from(frame))
}

/// `{"id":N,"ok":true,...}`: a successful reply with `body`'s fields.
#[derive(Serialize)]
pub struct OkReply<'a, T: Serialize> {
    pub id: &'a Id,
    pub ok: bool,
    #[serde(flatten)]
    pub body: T,
}

/// The text of a successful reply to the command `id`.
pub fn ok(id: &Id, body: impl Serialize) -> String {
    encode(&OkReply { id, ok: true, body })
}

/// An error reply. With an `id` it answers that command; without one it carries
/// `op` (and `room`) so the client can tell what failed. With neither it is the
/// backend API's and the handshake's error body.
#[derive(Serialize)]
pub struct ErrorReply<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
    pub error: &'a Failure,
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            code: ErrorCode,
            message: &'a str,
        }
        Body {
            code: self.code,
            message: &self.message,
        }
        .serialize(serializer)
    }
}

/// The text of an error reply: to `id`, or naming `op` and `room` when the
/// command had no id.
pub fn error(id: Option<&Id>, op: Option<&str>, room: Option<&str>, failure: &Failure) -> String {
    let (op, room) = if id.is_some() {
        (None, None)
    } else {
        (op, room)
    };
    encode(&ErrorReply {
        id,
        op,
        room,
        error: failure,
    })
}

/// The HTTP error body `{"error":{"code":..,"message":..}}`.
pub fn http_error(failure: &Failure) -> String {
    error(None, None, None, failure)
}

/// Stored frames, written as the JSON they already are.
pub struct Frames<'a>(pub &'a [(u64, Box<RawValue>)]);

impl Serialize for Frames<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(_, frame)| frame))
    }
}

/// What a `join` reply adds: `recovered` alone in rooms without history; the
/// position in rooms with history, and with `since` the outcome and the
/// missed messages.
#[derive(Serialize, Default)]
pub struct Joined<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<Frames<'a>>,
}

/// A page of a room's members, on the socket and in the backend API.
#[derive(Serialize)]
pub struct PresencePage<'a> {
    pub members: &'a [Present],
    /// The cursor of the next page, unless this is the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl<'a> From<&'a crate::broker::PresencePage> for PresencePage<'a> {
    fn from(page: &'a crate::broker::PresencePage) -> Self {
        let next = page
            .more
            .then(|| page.members.last())
            .flatten()
            .map(|last| super::encode_cursor(&last.user, &last.conn));
        Self {
            members: &page.members,
            next,
            partial: page.partial,
        }
    }
}

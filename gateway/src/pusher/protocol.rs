//! The Pusher Channels protocol, version 7, on the wire: the frames clients
//! send, parsed once, and every frame the server writes, as `Serialize` types.
//!
//! Frames are JSON objects `{"event", "channel"?, "data"?}`. Pusher encodes
//! the `data` of its own events as a JSON *string* holding JSON
//! (`connection_established`, `subscription_succeeded`, member events), but
//! that of `pusher:error` as an object; clients' and backends' event data are
//! relayed as they came, as the `&RawValue` they arrived as.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol version served; clients announce theirs in `?protocol=`.
pub const PROTOCOL_VERSION: u32 = 7;

/// Oldest protocol version accepted (pusher-js 4 and later speak 7).
pub const MIN_PROTOCOL_VERSION: u32 = 5;

/// Seconds of silence after which a client pings (`activity_timeout`):
/// Pusher's own value.
pub const ACTIVITY_TIMEOUT_SECONDS: u64 = 120;

/// The error codes (and close codes) of the protocol. 4000–4099: do not
/// reconnect; 4100–4199: reconnect after a back-off; 4200–4299: reconnect at
/// once; 4300–4399: errors that do not close.
pub mod code {
    /// The app key names no app.
    pub const APP_NOT_FOUND: u16 = 4001;
    /// Refused: the Origin is not allowed, a sign-in is not valid, or the
    /// app terminated the user's connections.
    pub const UNAUTHORIZED: u16 = 4009;
    /// The app is over its connection quota (`max_connections`).
    pub const OVER_QUOTA: u16 = 4004;
    /// No `protocol` query parameter.
    pub const NO_PROTOCOL: u16 = 4008;
    /// A `protocol` the server does not speak.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// Over capacity, draining, or shedding: try again after a back-off.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Reconnect now (drain, rebalance).
    pub const RECONNECT: u16 = 4200;
    /// Nothing heard from the client in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// A client event was refused; the connection stays open.
    pub const CLIENT_EVENT_REJECTED: u16 = 4301;
}

/// A frame from a client, with `data` left raw until its event is known.
#[derive(Deserialize)]
pub struct Incoming<'a> {
    pub event: String,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub channel: Option<String>,
}

/// The `data` of `pusher:subscribe` and `pusher:unsubscribe`.
#[derive(Deserialize)]
pub struct Subscribe {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence only: the member's `user_id` and `user_info`, as the JSON text
    /// the signature covers.
    #[serde(default)]
    pub channel_data: Option<String>,
}

impl Subscribe {
    /// Reads a subscribe's `data`: an object, or (from some older clients) a
    /// string holding one.
    pub fn parse(data: Option<&RawValue>) -> Option<Self> {
        let data = data?;
        serde_json::from_str(data.get()).ok().or_else(|| {
            let text: String = serde_json::from_str(data.get()).ok()?;
            serde_json::from_str(&text).ok()
        })
    }
}

/// The `data` of `pusher:signin`: the SDK's `authenticateUser` result.
#[derive(Deserialize)]
pub struct Signin {
    pub auth: String,
    /// The user's data as the JSON text the signature covers; its `id` is
    /// the user id.
    pub user_data: String,
}

impl Signin {
    /// Reads a sign-in's `data`: an object, or a string holding one.
    pub fn parse(data: Option<&RawValue>) -> Option<Self> {
        let data = data?;
        serde_json::from_str(data.get()).ok().or_else(|| {
            let text: String = serde_json::from_str(data.get()).ok()?;
            serde_json::from_str(&text).ok()
        })
    }
}

/// The user id in `user_data`: a non-empty string `id`.
pub fn user_id_of(user_data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct UserData {
        id: String,
    }
    let parsed: UserData = serde_json::from_str(user_data).ok()?;
    (!parsed.id.is_empty()).then_some(parsed.id)
}

/// `pusher:signin_success`, echoing the user data (as Sockudo does: an
/// object holding the text).
pub fn signin_success(user_data: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_data: &'a str,
    }
    Outgoing {
        event: "pusher:signin_success",
        channel: None,
        data: &Data { user_data },
        user_id: None,
    }
    .text()
}

/// A presence member as `channel_data` gives it.
#[derive(Deserialize)]
pub struct ChannelData<'a> {
    /// A string or a number; kept as its string.
    #[serde(borrow)]
    pub user_id: &'a RawValue,
    #[serde(default, borrow)]
    pub user_info: Option<&'a RawValue>,
}

impl ChannelData<'_> {
    /// The user id as a string: a JSON string's text, or a number as written.
    pub fn user_id(&self) -> Option<String> {
        let raw = self.user_id.get();
        if let Ok(text) = serde_json::from_str::<String>(raw) {
            return (!text.is_empty()).then_some(text);
        }
        serde_json::from_str::<serde_json::Number>(raw)
            .ok()
            .map(|number| number.to_string())
    }
}

/// A frame the server writes.
#[derive(Serialize)]
pub struct Outgoing<'a, D: Serialize + ?Sized> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    pub data: &'a D,
    /// Client events on presence channels carry their sender's user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
}

impl<D: Serialize + ?Sized> Outgoing<'_, D> {
    /// The frame as text. Serializing these types cannot fail (string keys,
    /// no maps with other keys); should it, an empty object is sent instead.
    pub fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A frame whose `data` is JSON written as a string, as Pusher's own events do.
fn with_string_data(event: &str, channel: Option<&str>, data: &impl Serialize) -> String {
    let inner = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Outgoing {
        event,
        channel,
        data: &inner,
        user_id: None,
    }
    .text()
}

/// `pusher:connection_established`.
pub fn connection_established(socket_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    with_string_data(
        "pusher:connection_established",
        None,
        &Data {
            socket_id,
            activity_timeout: ACTIVITY_TIMEOUT_SECONDS,
        },
    )
}

/// `pusher:error`, with a code (`None`: Pusher's `null`) and a message.
pub fn error(code: Option<u16>, message: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        code: Option<u16>,
        message: &'a str,
    }
    Outgoing {
        event: "pusher:error",
        channel: None,
        data: &Data { code, message },
        user_id: None,
    }
    .text()
}

/// `pusher:pong` (and `pusher:ping`, with that event).
pub fn empty(event: &str) -> String {
    Outgoing {
        event,
        channel: None,
        data: &serde_json::Map::new(),
        user_id: None,
    }
    .text()
}

/// The member list of a presence channel's `subscription_succeeded`.
#[derive(Serialize)]
pub struct Presence<'a> {
    pub ids: Vec<&'a str>,
    pub hash: std::collections::BTreeMap<&'a str, &'a RawValue>,
    pub count: usize,
}

/// `pusher_internal:subscription_succeeded`, with the member list on a
/// presence channel.
pub fn subscription_succeeded(channel: &str, presence: Option<Presence<'_>>) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<Presence<'a>>,
    }
    with_string_data(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        &Data { presence },
    )
}

/// `pusher:cache_miss`: a cache channel has no event to give a new
/// subscriber (Pusher's frame: the event and the channel, no data).
pub fn cache_miss(channel: &str) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        event: &'a str,
        channel: &'a str,
    }
    serde_json::to_string(&Frame {
        event: "pusher:cache_miss",
        channel,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// `pusher:subscription_error`: the shape pusher-js gives its own
/// authorization failures (`type`, `error`, `status`), so one handler serves both.
pub fn subscription_error(channel: &str, status: u16, message: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        error: &'a str,
        status: u16,
    }
    Outgoing {
        event: "pusher:subscription_error",
        channel: Some(channel),
        data: &Data {
            kind: "AuthError",
            error: message,
            status,
        },
        user_id: None,
    }
    .text()
}

/// `pusher_internal:member_added`.
pub fn member_added(channel: &str, user_id: &str, user_info: &RawValue) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
        user_info: &'a RawValue,
    }
    with_string_data(
        "pusher_internal:member_added",
        Some(channel),
        &Data { user_id, user_info },
    )
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        user_id: &'a str,
    }
    with_string_data(
        "pusher_internal:member_removed",
        Some(channel),
        &Data { user_id },
    )
}

/// An event on a channel, its `data` as it came (a string from the HTTP API,
/// whatever the client sent for client events).
pub fn event(name: &str, channel: &str, data: &RawValue, user_id: Option<&str>) -> String {
    Outgoing {
        event: name,
        channel: Some(channel),
        data,
        user_id,
    }
    .text()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pusher's own events carry their data as a string of JSON; errors as an
    /// object.
    #[test]
    fn frames_have_pushers_shapes() {
        assert_eq!(
            connection_established("1.2"),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#
        );
        assert_eq!(
            error(Some(4001), "no app"),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"no app"}}"#
        );
        assert_eq!(empty("pusher:pong"), r#"{"event":"pusher:pong","data":{}}"#);
        assert_eq!(
            subscription_succeeded("c", None),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#
        );
        let info = RawValue::from_string(r#"{"name":"a"}"#.to_owned()).unwrap();
        let presence = Presence {
            ids: vec!["u1"],
            hash: [("u1", &*info)].into_iter().collect(),
            count: 1,
        };
        assert_eq!(
            subscription_succeeded("presence-c", Some(presence)),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"presence-c","data":"{\"presence\":{\"ids\":[\"u1\"],\"hash\":{\"u1\":{\"name\":\"a\"}},\"count\":1}}"}"#
        );
        assert_eq!(
            cache_miss("cache-c"),
            r#"{"event":"pusher:cache_miss","channel":"cache-c"}"#
        );
        assert_eq!(
            member_removed("presence-c", "u1"),
            r#"{"event":"pusher_internal:member_removed","channel":"presence-c","data":"{\"user_id\":\"u1\"}"}"#
        );
    }

    /// Subscribe data is an object, or a string holding one; user ids are
    /// strings or numbers.
    #[test]
    fn subscribe_data_and_user_ids_are_read_leniently() {
        let object = RawValue::from_string(r#"{"channel":"a","auth":"k:s"}"#.to_owned()).unwrap();
        let parsed = Subscribe::parse(Some(&object)).unwrap();
        assert_eq!(
            (parsed.channel.as_str(), parsed.auth.as_deref()),
            ("a", Some("k:s"))
        );
        let string = RawValue::from_string(r#""{\"channel\":\"b\"}""#.to_owned()).unwrap();
        assert_eq!(Subscribe::parse(Some(&string)).unwrap().channel, "b");
        assert!(Subscribe::parse(None).is_none());
        for (data, id) in [
            (r#"{"user_id":"u"}"#, Some("u")),
            (r#"{"user_id":10}"#, Some("10")),
            (r#"{"user_id":""}"#, None),
            (r#"{"user_id":[1]}"#, None),
        ] {
            let parsed: ChannelData = serde_json::from_str(data).unwrap();
            assert_eq!(parsed.user_id().as_deref(), id, "{data}");
        }
    }
}

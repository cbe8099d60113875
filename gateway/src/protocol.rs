//! The client protocol (docs/protocol.md): parsing and validating client frames, and
//! writing the server's frames.
//!
//! Parsing is two-step so that a frame with a bad field still gets an error reply
//! carrying its `id`: first every known field is borrowed as raw JSON (this only
//! fails on text that is not a JSON object), then each field is interpreted. The
//! `data` of a `publish` or `send` stays raw JSON from the client's frame to every
//! recipient: it is validated once by the parser and never re-serialized.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Deepest nesting of arrays and objects accepted in `data`: members' JSON
/// parsers have limits (serde_json's is 128 levels, counting the frame around
/// `data`), and a message none of them can read must not be delivered.
pub const MAX_DATA_DEPTH: usize = 100;

/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 128;

/// The largest frame the server writes: twice `limits.max_message_bytes`, at
/// least 64 KiB. A `message` or `direct` frame (data within the message limit,
/// plus a room name, a user id and a position) always fits; replies that
/// gather many items (a join's `missed`, a presence page) are cut to fit. The
/// socket's write buffer is sized to hold one such frame.
pub fn max_frame_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_mul(2).max(64 * 1024)
}

/// Room a reply's own fields (`id`, `epoch`, `next`, ...) may take beside the
/// items it gathers, within [`max_frame_bytes`].
pub const REPLY_OVERHEAD: usize = 1024;

/// WebSocket close codes used by the gateway (docs/protocol.md, "Close codes").
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Shutdown past the drain deadline.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol violation by the peer.
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not valid UTF-8.
    pub const INVALID_UTF8: u16 = 1007;
    /// Too many client-fault errors, or over the per-user cap after `auth`.
    pub const POLICY: u16 = 1008;
    /// A message over `limits.max_message_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error or heartbeat timeout.
    pub const INTERNAL: u16 = 1011;
    /// Drain or rebalance, preceded by a `reconnect` event.
    pub const RESTART: u16 = 1012;
    /// Slow consumer: the outbound queue was full.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Authentication failed: bad or expired token, auth timeout, a frame before `auth`.
    pub const AUTH_FAILED: u16 = 4001;
    /// Disconnected through the backend API.
    pub const DISCONNECTED: u16 = 4003;
}

/// The error codes of docs/protocol.md, shared by WebSocket replies and the HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    UnknownOp,
    InvalidRoom,
    Forbidden,
    NotMember,
    NotSupported,
    LimitExceeded,
    RateLimited,
    TooLarge,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::UnknownOp => "unknown_op",
            Self::InvalidRoom => "invalid_room",
            Self::Forbidden => "forbidden",
            Self::NotMember => "not_member",
            Self::NotSupported => "not_supported",
            Self::LimitExceeded => "limit_exceeded",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status the backend API answers this code with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest | Self::InvalidRoom | Self::UnknownOp | Self::NotMember => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotSupported => 501,
            Self::LimitExceeded | Self::RateLimited => 429,
            Self::TooLarge => 413,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// Whether the client caused the error; these count towards
    /// `limits.max_errors_per_minute`, `unavailable` and `internal` never do.
    pub fn is_client_fault(self) -> bool {
        !matches!(
            self,
            Self::Unavailable | Self::Internal | Self::Unauthorized | Self::NotSupported
        )
    }
}

/// An error reply: a code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

/// Longest error message, in bytes: messages may quote the client's input (an
/// unknown op, a mistyped field), and an error reply must not echo a 64 KiB
/// frame back.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 256;

impl Failure {
    /// A failure; a message over [`MAX_ERROR_MESSAGE_BYTES`] is cut, at a
    /// character boundary, and ends with `…`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Self { code, message }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// A command's `id`: any JSON integer, echoed back exactly as it was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Id(serde_json::Number);

impl Id {
    fn parse(raw: &RawValue) -> Result<Self, Failure> {
        let text = raw.get();
        match serde_json::from_str::<serde_json::Number>(text) {
            Ok(n) if n.is_i64() || n.is_u64() => Ok(Self(n)),
            _ => Err(Failure::bad_request("id must be an integer")),
        }
    }

    /// The id as JSON text.
    pub fn as_json(&self) -> String {
        self.0.to_string()
    }
}

/// Recovery position a client sends with `join` (history comes with the history issue).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub seq: u64,
}

/// The addressee of a direct message or a disconnect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    User(String),
    Conn(String),
}

/// A parsed, validated client command.
#[derive(Debug)]
pub enum Command<'a> {
    Auth {
        token: String,
    },
    Join {
        room: &'a str,
        since: Option<Since>,
    },
    Leave {
        room: &'a str,
    },
    Publish {
        room: &'a str,
        data: &'a RawValue,
    },
    Send {
        target: Target,
        data: &'a RawValue,
    },
    Presence {
        room: &'a str,
        cursor: Option<String>,
        limit: Option<usize>,
    },
    Refresh {
        token: String,
    },
    Ping,
}

impl Command<'_> {
    /// The op's wire name, for error replies to commands without an `id`.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Publish { .. } => "publish",
            Self::Send { .. } => "send",
            Self::Presence { .. } => "presence",
            Self::Refresh { .. } => "refresh",
            Self::Ping => "ping",
        }
    }
}

/// Every field any op uses, borrowed raw from the frame.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    conn: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    cursor: Option<&'a RawValue>,
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
}

/// The outcome of parsing one text frame.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The command's `id`, when it had a valid one.
    pub id: Option<Id>,
    /// The op's name when it was a string (for error replies without `id`).
    pub op: Option<&'a str>,
    /// The room field when it was a string (for error replies without `id`).
    pub room: Option<&'a str>,
    /// The command, or why it is refused.
    pub command: Result<Command<'a>, Failure>,
}

/// Parses one text frame into a command.
pub fn parse(text: &str) -> Parsed<'_> {
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let message = if error.is_syntax() || error.is_eof() {
                format!("malformed JSON: {error}")
            } else {
                "a frame must be a JSON object".to_owned()
            };
            return Parsed {
                id: None,
                op: None,
                room: None,
                command: Err(Failure::bad_request(message)),
            };
        }
    };
    let op = raw.op.and_then(borrowed_str);
    let room = raw.room.and_then(borrowed_str);
    let id = match raw.id.map(Id::parse).transpose() {
        Ok(id) => id,
        Err(failure) => {
            return Parsed {
                id: None,
                op,
                room,
                command: Err(failure),
            };
        }
    };
    let command = interpret(&raw, op, id.is_some());
    Parsed {
        id,
        op,
        room,
        command,
    }
}

/// A JSON string without escapes, borrowed; room names and ops never need escapes.
fn borrowed_str(raw: &RawValue) -> Option<&str> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains(['\\', '"']) {
        None
    } else {
        Some(inner)
    }
}

fn owned_str(raw: &RawValue, field: &str) -> Result<String, Failure> {
    serde_json::from_str::<String>(raw.get())
        .map_err(|_| Failure::bad_request(format!("{field} must be a string")))
}

fn interpret<'a>(
    raw: &RawFrame<'a>,
    op: Option<&'a str>,
    has_id: bool,
) -> Result<Command<'a>, Failure> {
    let Some(op_raw) = raw.op else {
        return Err(Failure::bad_request("missing op"));
    };
    let Some(op) = op else {
        return Err(Failure::bad_request(format!(
            "op must be a string, got {}",
            op_raw.get()
        )));
    };
    let id_required = !matches!(op, "leave" | "publish" | "ping");
    let known = matches!(
        op,
        "auth" | "join" | "leave" | "publish" | "send" | "presence" | "refresh" | "ping"
    );
    if !known {
        return Err(Failure::new(
            ErrorCode::UnknownOp,
            format!("unknown op {op:?}"),
        ));
    }
    if id_required && !has_id {
        return Err(Failure::bad_request(format!("op {op} needs an integer id")));
    }
    let room = || -> Result<&'a str, Failure> {
        let value = raw
            .room
            .ok_or_else(|| Failure::bad_request("missing room"))?;
        let room = borrowed_str(value).ok_or_else(|| {
            if value.get().starts_with('"') {
                Failure::new(
                    ErrorCode::InvalidRoom,
                    "room name has characters outside A-Z a-z 0-9 _ - : @ = + /",
                )
            } else {
                Failure::bad_request("room must be a string")
            }
        })?;
        validate_room(room)?;
        Ok(room)
    };
    let data = || {
        let data = raw
            .data
            .ok_or_else(|| Failure::bad_request("missing data"))?;
        check_depth(data)?;
        Ok::<_, Failure>(data)
    };
    let token = || -> Result<String, Failure> {
        let value = raw
            .token
            .ok_or_else(|| Failure::bad_request("missing token"))?;
        owned_str(value, "token")
    };
    Ok(match op {
        "auth" => Command::Auth { token: token()? },
        "join" => {
            let room = room()?;
            let since = match raw.since {
                None => None,
                Some(value) if value.get() == "null" => None,
                Some(value) => Some(serde_json::from_str::<Since>(value.get()).map_err(|_| {
                    Failure::bad_request("since must be {\"epoch\": string, \"seq\": integer}")
                })?),
            };
            Command::Join { room, since }
        }
        "leave" => Command::Leave { room: room()? },
        "publish" => Command::Publish {
            room: room()?,
            data: data()?,
        },
        "send" => {
            let target = match (raw.user, raw.conn) {
                (Some(user), None) => Target::User(owned_str(user, "user")?),
                (None, Some(conn)) => Target::Conn(owned_str(conn, "conn")?),
                (Some(_), Some(_)) => {
                    return Err(Failure::bad_request("send takes user or conn, not both"));
                }
                (None, None) => return Err(Failure::bad_request("send needs user or conn")),
            };
            Command::Send {
                target,
                data: data()?,
            }
        }
        "presence" => {
            let cursor = match raw.cursor {
                Some(value) if value.get() != "null" => Some(owned_str(value, "cursor")?),
                _ => None,
            };
            let limit = match raw.limit {
                Some(value) if value.get() != "null" => {
                    Some(serde_json::from_str::<usize>(value.get()).map_err(|_| {
                        Failure::bad_request("limit must be a non-negative integer")
                    })?)
                }
                _ => None,
            };
            Command::Presence {
                room: room()?,
                cursor,
                limit,
            }
        }
        "refresh" => Command::Refresh { token: token()? },
        _ => Command::Ping,
    })
}

/// Refuses `data` nested deeper than [`MAX_DATA_DEPTH`]. One pass over the
/// already-validated JSON text, skipping strings.
pub fn check_depth(data: &RawValue) -> Result<(), Failure> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in data.get().bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(Failure::bad_request(format!(
                        "data is nested deeper than {MAX_DATA_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a room name against docs/protocol.md: 1 to 128 bytes of
/// `A-Z a-z 0-9 _ - : @ = + /`, no empty `:`-segment. Such a name is one NATS
/// subject token with no wildcard, so it can never address another subject.
pub fn validate_room(room: &str) -> Result<(), Failure> {
    let invalid = |why: &str| Err(Failure::new(ErrorCode::InvalidRoom, why.to_owned()));
    if room.is_empty() {
        return invalid("room name is empty");
    }
    if room.len() > MAX_ROOM_BYTES {
        return invalid("room name is longer than 128 bytes");
    }
    if !room.bytes().all(is_room_byte) {
        return invalid("room name has characters outside A-Z a-z 0-9 _ - : @ = + /");
    }
    if room.split(':').any(str::is_empty) {
        return invalid("room name has an empty segment");
    }
    Ok(())
}

/// The bytes a room name may hold.
pub fn is_room_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@' | b'=' | b'+' | b'/')
}

/// A presence cursor: the opaque form of the (user, conn) a page ended at.
pub fn encode_cursor(user: &str, conn: &str) -> String {
    use base64::Engine as _;
    let json = serde_json::to_string(&(user, conn)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// Reads a cursor made by [`encode_cursor`].
///
/// # Errors
/// `bad_request` for anything else.
pub fn decode_cursor(cursor: &str) -> Result<(String, String), Failure> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| Failure::bad_request("invalid cursor"))
}

pub mod frame;

#[cfg(test)]
mod tests {
    use super::*;

    fn command(text: &str) -> Result<Command<'_>, Failure> {
        parse(text).command
    }

    #[test]
    fn valid_room_names_pass() {
        for room in [
            "a",
            "chat:lobby",
            "user:alice@x.y".replace('.', "_").as_str(),
            "A-Z_0/9+=@",
            &"x".repeat(128),
        ] {
            assert!(validate_room(room).is_ok(), "{room}");
        }
    }

    #[test]
    fn rooms_that_would_become_subject_syntax_are_invalid() {
        let long = "x".repeat(129);
        for room in [
            "a.b",
            "*",
            ">",
            "a b",
            "room.*",
            &long,
            "",
            "héllo",
            "PUB x 1\r\n",
            "chat:",
            ":x",
            "a::b",
            "a\tb",
            "a\0b",
        ] {
            let failure = validate_room(room).expect_err(room);
            assert_eq!(failure.code, ErrorCode::InvalidRoom, "{room:?}");
        }
    }

    #[test]
    fn room_with_escape_sequence_is_invalid_not_bad_request() {
        let parsed = parse(r#"{"op":"join","id":1,"room":"a\u002eb"}"#);
        assert_eq!(parsed.command.unwrap_err().code, ErrorCode::InvalidRoom);
    }

    #[test]
    fn publish_keeps_data_raw() {
        let parsed = parse(r#"{"op":"publish","room":"chat:x","data":{"a": [1, 2.50]}}"#);
        match parsed.command.unwrap() {
            Command::Publish { room, data } => {
                assert_eq!(room, "chat:x");
                assert_eq!(data.get(), r#"{"a": [1, 2.50]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(parsed.id.is_none());
    }

    #[test]
    fn ids_are_echoed_exactly() {
        let parsed = parse(r#"{"op":"ping","id":18446744073709551615}"#);
        assert_eq!(parsed.id.unwrap().as_json(), "18446744073709551615");
        let parsed = parse(r#"{"op":"ping","id":-3}"#);
        assert_eq!(parsed.id.unwrap().as_json(), "-3");
    }

    #[test]
    fn non_integer_id_is_bad_request() {
        for text in [r#"{"op":"ping","id":"1"}"#, r#"{"op":"ping","id":1.5}"#] {
            assert_eq!(
                command(text).unwrap_err().code,
                ErrorCode::BadRequest,
                "{text}"
            );
        }
    }

    #[test]
    fn id_is_required_except_for_leave_publish_ping() {
        assert_eq!(
            command(r#"{"op":"join","room":"a"}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            command(r#"{"op":"send","user":"u","data":1}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        assert!(command(r#"{"op":"leave","room":"a"}"#).is_ok());
        assert!(command(r#"{"op":"publish","room":"a","data":1}"#).is_ok());
        assert!(command(r#"{"op":"ping"}"#).is_ok());
    }

    #[test]
    fn unknown_op_keeps_its_id() {
        let parsed = parse(r#"{"op":"dance","id":4}"#);
        assert_eq!(parsed.id.unwrap().as_json(), "4");
        assert_eq!(parsed.command.unwrap_err().code, ErrorCode::UnknownOp);
    }

    #[test]
    fn malformed_json_and_non_objects_are_bad_request() {
        for text in ["{", "[]", "42", "\"x\"", "", "{\"op\":}"] {
            assert_eq!(
                command(text).unwrap_err().code,
                ErrorCode::BadRequest,
                "{text:?}"
            );
        }
    }

    #[test]
    fn data_nesting_is_capped_and_strings_do_not_count() {
        let nested = |levels: usize| format!("{}0{}", "[".repeat(levels), "]".repeat(levels));
        let frame = |data: &str| format!(r#"{{"op":"publish","room":"r","data":{data}}}"#);
        assert!(command(&frame(&nested(MAX_DATA_DEPTH))).is_ok());
        let too_deep = frame(&nested(MAX_DATA_DEPTH + 1));
        assert_eq!(command(&too_deep).unwrap_err().code, ErrorCode::BadRequest);
        let brackets_in_strings = format!(r#"["{}\"[", {{"k": "}}]]"}}]"#, "[".repeat(500));
        assert!(command(&frame(&brackets_in_strings)).is_ok());
    }

    #[test]
    fn send_needs_exactly_one_target() {
        assert!(matches!(
            command(r#"{"op":"send","id":1,"user":"bob","data":"hi"}"#).unwrap(),
            Command::Send { target: Target::User(u), .. } if u == "bob"
        ));
        assert!(command(r#"{"op":"send","id":1,"user":"a","conn":"b","data":1}"#).is_err());
        assert!(command(r#"{"op":"send","id":1,"data":1}"#).is_err());
        assert!(command(r#"{"op":"send","id":1,"user":"a"}"#).is_err());
    }

    #[test]
    fn join_since_is_parsed() {
        match command(r#"{"op":"join","id":1,"room":"r","since":{"epoch":"e","seq":5}}"#).unwrap() {
            Command::Join {
                since: Some(since), ..
            } => assert_eq!(since.seq, 5),
            other => panic!("{other:?}"),
        }
        assert!(command(r#"{"op":"join","id":1,"room":"r","since":{"seq":"x"}}"#).is_err());
    }

    /// Error messages that quote the client's input are cut: a 60 KB op name is
    /// not echoed back.
    #[test]
    fn error_messages_do_not_echo_large_input() {
        let op = "é".repeat(30_000);
        for text in [
            format!(r#"{{"op":"{op}","id":1}}"#),
            format!(r#"{{"op":[{}],"id":1}}"#, "1,".repeat(20_000) + "1"),
        ] {
            let failure = command(&text).unwrap_err();
            assert!(
                failure.message.len() <= MAX_ERROR_MESSAGE_BYTES,
                "{} bytes",
                failure.message.len()
            );
            assert!(failure.message.ends_with('…'));
        }
        assert_eq!(Failure::bad_request("short").message, "short");
    }

    #[test]
    fn frames_are_valid_json() {
        let data = serde_json::value::to_raw_value(&serde_json::json!({"x": "\"q\""})).unwrap();
        let message = frame::Message::new("chat:a", &data, Some("bob\"\n")).text();
        let value: serde_json::Value = serde_json::from_str(&message).unwrap();
        assert_eq!(value["type"], "message");
        assert_eq!(value["from"], "bob\"\n");
        assert_eq!(value["data"]["x"], "\"q\"");
        let backend = frame::Message::new("chat:a", &data, None).text();
        assert_eq!(
            backend,
            r#"{"type":"message","room":"chat:a","data":{"x":"\"q\""},"from":null}"#
        );
        let error = frame::error(
            None,
            Some("publish"),
            Some("r"),
            &Failure::bad_request("x\"y"),
        );
        let value: serde_json::Value = serde_json::from_str(&error).unwrap();
        assert_eq!(value["op"], "publish");
        assert_eq!(value["error"]["code"], "bad_request");
        let answered = frame::error(
            Some(&Id::parse(&data_of("3")).unwrap()),
            Some("publish"),
            Some("r"),
            &Failure::bad_request("x"),
        );
        assert_eq!(
            answered,
            r#"{"id":3,"error":{"code":"bad_request","message":"x"}}"#
        );
        let id = Id::parse(&data_of("7")).unwrap();
        let welcome = frame::Event::Welcome {
            id: Some(&id),
            conn: "n:1",
            user: "anon:n:1",
            node: "n",
            heartbeat_ms: 25000,
        }
        .text();
        assert_eq!(
            welcome,
            r#"{"type":"welcome","id":7,"conn":"n:1","user":"anon:n:1","node":"n","heartbeat_ms":25000}"#
        );
        assert_eq!(
            frame::ok(
                &id,
                frame::Joined {
                    recovered: Some(false),
                    ..Default::default()
                }
            ),
            r#"{"id":7,"ok":true,"recovered":false}"#
        );
        assert_eq!(frame::ok(&id, ()), r#"{"id":7,"ok":true}"#);
    }

    #[test]
    fn stamping_adds_the_position_and_keeps_the_message() {
        let stored = r#"{"type":"message","room":"r","data":{"a":"}"},"from":null}"#;
        let stamped = frame::into_text(frame::stamp(stored, 7, 3, "e\"1").unwrap());
        let value: serde_json::Value = serde_json::from_str(&stamped).unwrap();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["prev"], 3);
        assert_eq!(value["epoch"], "e\"1");
        assert_eq!(value["data"]["a"], "}");
        assert!(value["from"].is_null());
        assert!(frame::stamp("{\"n\":1}", 1, 0, "e").is_none());
    }

    fn data_of(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }
}

//! Property tests of the gateway's input handling against docs/protocol.md and docs/config.md: the
//! frame parser, room validation, room patterns (against a reference matcher written from
//! docs/protocol.md's grammar), token verification and the config parser, on generated input.
//!
//! CI runs the default number of cases (256 per property); run longer with
//! `PROPTEST_CASES=100000 cargo test -p wsgate --test properties --release`.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use wsgate::auth::{Authenticator, Patterns, RoomPattern};
use wsgate::protocol::{Command, ErrorCode, MAX_ROOM_BYTES, parse, validate_room};
use wsgate_config::{AuthConfig, Config, Secret};

/// The room alphabet of docs/protocol.md, without the `:` separator.
const SEGMENT_BYTES: &str = "ABCXYZabcxyz0189_-@=+/";

/// docs/protocol.md's room grammar, written independently of the gateway.
fn reference_room_is_valid(room: &str) -> bool {
    let alphabet = |c: char| c.is_ascii_alphanumeric() || "_-:@=+/".contains(c) && c.is_ascii();
    (1..=128).contains(&room.len())
        && room.chars().all(alphabet)
        && room.split(':').all(|segment| !segment.is_empty())
}

/// docs/protocol.md's pattern grammar as a recursive matcher over segments.
fn reference_matches(pattern: &[&str], room: &[&str]) -> bool {
    match (pattern.split_first(), room.split_first()) {
        (None, None) => true,
        (Some((&"**", [])), _) => !room.is_empty(),
        (Some((&"*", rest)), Some((_, room_rest))) => reference_matches(rest, room_rest),
        (Some((literal, rest)), Some((segment, room_rest))) => {
            literal == segment && reference_matches(rest, room_rest)
        }
        _ => false,
    }
}

fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(SEGMENT_BYTES.as_bytes().to_vec()),
        1..4,
    )
    .prop_map(|bytes| String::from_utf8(bytes).expect("ASCII"))
}

/// Valid room names built from a small alphabet, so that patterns and rooms collide often.
fn room() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("a".to_owned()), Just("b".to_owned()), segment()],
        1..5,
    )
    .prop_map(|segments| segments.join(":"))
}

/// Valid patterns over the same alphabet: literal and `*` segments, maybe a final `**`.
fn pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![
                Just("a".to_owned()),
                Just("b".to_owned()),
                Just("*".to_owned()),
                segment()
            ],
            0..4,
        ),
        any::<bool>(),
    )
        .prop_filter_map(
            "a pattern has at least one segment",
            |(mut segments, rest)| {
                if rest {
                    segments.push("**".to_owned());
                }
                (!segments.is_empty()).then(|| segments.join(":"))
            },
        )
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Frames that look like commands: a known or unknown op and fields of any type.
fn command_like() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just(json!("auth")),
        Just(json!("join")),
        Just(json!("leave")),
        Just(json!("publish")),
        Just(json!("send")),
        Just(json!("presence")),
        Just(json!("refresh")),
        Just(json!("ping")),
        json_value(),
    ];
    let field = |values: BoxedStrategy<Value>| prop::option::of(values);
    (
        op,
        field(prop_oneof![any::<i64>().prop_map(Value::from), json_value()].boxed()),
        field(prop_oneof![room().prop_map(Value::from), json_value()].boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
        field(json_value().boxed()),
    )
        .prop_map(|(op, id, room, data, since, extra)| {
            let mut frame = serde_json::Map::new();
            frame.insert("op".into(), op);
            let fields = [
                ("id", id),
                ("room", room),
                ("data", data),
                ("since", since),
                ("user", extra),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    frame.insert(name.into(), value);
                }
            }
            Value::Object(frame)
        })
}

fn ok_command_room(text: &str) -> Option<String> {
    match parse(text).command {
        Ok(
            Command::Join { room, .. } | Command::Leave { room } | Command::Publish { room, .. },
        ) => Some(room.to_owned()),
        Ok(Command::Presence { room, .. }) => Some(room.to_owned()),
        _ => None,
    }
}

proptest! {
    /// Any text at all is classified, never a panic; text that is not a JSON object is a
    /// `bad_request` without an id.
    #[test]
    fn the_parser_classifies_any_text(text in ".{0,256}") {
        let parsed = parse(&text);
        let is_object = matches!(serde_json::from_str::<Value>(&text), Ok(Value::Object(_)));
        if !is_object {
            prop_assert!(parsed.id.is_none());
            prop_assert_eq!(parsed.command.unwrap_err().code, ErrorCode::BadRequest);
        }
    }

    /// Arbitrary bytes that happen to be UTF-8, including JSON punctuation, never panic.
    #[test]
    fn the_parser_survives_json_punctuation(text in r#"[{}\[\]":,0-9a-z\\ .eE+-]{0,200}"#) {
        let _ = parse(&text);
    }

    /// Command-shaped frames with fields of every type: the parser answers each with a command
    /// or a code of the error table, and an accepted room is always a valid room name.
    #[test]
    fn command_like_frames_get_a_command_or_a_protocol_error(frame in command_like()) {
        let text = frame.to_string();
        let parsed = parse(&text);
        match &parsed.command {
            Ok(command) => {
                prop_assert_eq!(Some(command.op()), frame["op"].as_str());
                if let Some(room) = ok_command_room(&text) {
                    prop_assert!(validate_room(&room).is_ok(), "accepted room {room:?}");
                }
            }
            Err(failure) => prop_assert!(
                matches!(
                    failure.code,
                    ErrorCode::BadRequest | ErrorCode::UnknownOp | ErrorCode::InvalidRoom
                ),
                "{failure}"
            ),
        }
        if let Some(id) = &parsed.id {
            prop_assert_eq!(Some(id.as_json().to_owned()), frame["id"].as_i64().map(|n| n.to_string()));
        }
    }

    /// Deeply nested `data` is refused or accepted, never a stack overflow.
    #[test]
    fn deep_nesting_never_overflows(depth in 1usize..20_000, array in any::<bool>()) {
        let (open, close) = if array { ("[", "]") } else { ("{\"a\":", "}") };
        let text = format!(
            r#"{{"op":"publish","room":"a","data":{}1{}}}"#,
            open.repeat(depth),
            close.repeat(depth)
        );
        let _ = parse(&text);
    }

    /// Room validation accepts exactly docs/protocol.md's grammar, on arbitrary strings.
    #[test]
    fn room_validation_is_the_grammar(room in ".{0,140}") {
        prop_assert_eq!(validate_room(&room).is_ok(), reference_room_is_valid(&room), "{:?}", room);
    }

    /// ... and on strings of the room alphabet, separators and a few bytes just outside it.
    #[test]
    fn room_validation_is_the_grammar_near_its_edges(room in "[a-b0:/@=+_.*> -]{0,130}") {
        prop_assert_eq!(validate_room(&room).is_ok(), reference_room_is_valid(&room), "{:?}", room);
        if let Err(failure) = validate_room(&room) {
            prop_assert_eq!(failure.code, ErrorCode::InvalidRoom);
        }
    }

    /// Every valid room is accepted, up to exactly 128 bytes.
    #[test]
    fn every_valid_room_is_accepted(room in room()) {
        let expected = room.len() <= MAX_ROOM_BYTES;
        prop_assert_eq!(validate_room(&room).is_ok(), expected);
    }

    /// A valid pattern matches exactly the rooms the reference matcher says it does.
    #[test]
    fn patterns_match_as_the_grammar_says(pattern in pattern(), rooms in prop::collection::vec(room(), 1..16)) {
        let parsed = RoomPattern::parse(&pattern).expect("a generated pattern is valid");
        let segments: Vec<&str> = pattern.split(':').collect();
        for room in &rooms {
            let room_segments: Vec<&str> = room.split(':').collect();
            prop_assert_eq!(
                parsed.matches(room),
                reference_matches(&segments, &room_segments),
                "pattern {:?}, room {:?}", pattern, room
            );
        }
        let set = Patterns::parse([pattern.as_str(), "zzz"]).expect("valid patterns");
        for room in &rooms {
            prop_assert_eq!(set.allows(room), parsed.matches(room) || room == "zzz");
        }
    }

    /// Pattern validation accepts exactly the grammar: segments of the room alphabet, `*`
    /// segments, and `**` only as the last segment.
    #[test]
    fn pattern_validation_is_the_grammar(pattern in "[ab:*./ -]{0,12}") {
        let segments: Vec<&str> = pattern.split(':').collect();
        let last = segments.len() - 1;
        let valid = !pattern.is_empty()
            && segments.iter().enumerate().all(|(i, segment)| {
                *segment == "*"
                    || (*segment == "**" && i == last)
                    || (!segment.is_empty()
                        && segment.bytes().all(|b| SEGMENT_BYTES.as_bytes().contains(&b) || b.is_ascii_alphanumeric()))
            });
        prop_assert_eq!(RoomPattern::parse(&pattern).is_ok(), valid, "{:?}", pattern);
    }

    /// Garbage tokens, and tokens with a valid shape but arbitrary parts, are refused without
    /// a panic.
    #[test]
    fn arbitrary_tokens_are_refused(
        header in ".{0,40}",
        claims in ".{0,80}",
        signature in "[A-Za-z0-9_-]{0,60}",
        raw in ".{0,120}",
    ) {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let authenticator = authenticator();
        prop_assert!(authenticator.verify(&raw).is_err());
        let shaped = format!("{}.{}.{}", engine.encode(&header), engine.encode(&claims), signature);
        prop_assert!(authenticator.verify(&shaped).is_err());
        for alg in ["none", "HS256", "RS256", "ES256", "HS512"] {
            let header = json!({"alg": alg, "typ": "JWT"}).to_string();
            let claims = json!({"sub": claims, "exp": 4_000_000_000u64}).to_string();
            let token = format!("{}.{}.{}", engine.encode(&header), engine.encode(&claims), signature);
            prop_assert!(authenticator.verify(&token).is_err(), "{alg}");
        }
    }

    /// Signed tokens round-trip: any `sub` (any characters) and any valid room patterns give
    /// that identity; the same token with one byte of its claims or signature changed, signed
    /// with another secret, or expired beyond the leeway, is refused.
    #[test]
    fn signed_tokens_round_trip_and_any_change_is_refused(
        sub in "\\PC{1,40}",
        rooms in prop::collection::vec(pattern(), 0..4),
        send in any::<bool>(),
        flip in any::<prop::sample::Index>(),
    ) {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let sign = |secret: &str, claims: &Value| {
            encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
                .expect("sign")
        };
        prop_assume!(!sub.starts_with("anon:"), "reserved for anonymous users");
        let claims = json!({"sub": sub, "exp": now + 600, "rooms": rooms, "send": send});
        let authenticator = authenticator();
        let token = sign(HS256_SECRET, &claims);
        let identity = authenticator.verify(&token).expect("a good token");
        prop_assert_eq!(&identity.user, &sub);
        prop_assert_eq!(identity.send, send);
        for room in &rooms {
            let concrete = room.replace("**", "x:y").replace('*', "z");
            prop_assert!(identity.can_join(&concrete), "{room} allows {concrete}");
        }
        prop_assert!(authenticator.verify(&sign("another-secret-of-enough-bytes-0123456789", &claims)).is_err());
        let expired = json!({"sub": sub, "exp": now - 120});
        prop_assert!(authenticator.verify(&sign(HS256_SECRET, &expired)).is_err());
        // Change one character after the header (claims or signature) to another base64url one.
        let header_end = token.find('.').expect("a dot") + 1;
        let mut bytes = token.clone().into_bytes();
        let at = header_end + flip.index(bytes.len() - header_end);
        if bytes[at] != b'.' {
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).expect("ASCII");
            if changed != token {
                // A change in the last character of the signature may only touch padding bits.
                let is_last = at == token.len() - 1;
                prop_assert!(authenticator.verify(&changed).is_err() || is_last, "{changed}");
            }
        }
    }

    /// Any `exp` and `nbf`, integers from 0 to 2^64 - 1, negative ones, or floats up to
    /// 1e300: a token is accepted or refused, never a panic, and an accepted one has a
    /// deadline that can be compared with any clock.
    #[test]
    fn any_exp_and_nbf_is_accepted_or_refused_without_panic(
        exp in prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("a JSON number", |f| f.is_finite()).prop_map(|f| json!(f)),
            Just(json!(1e300)),
            Just(json!(u64::MAX)),
        ],
        nbf in prop::option::of(prop_oneof![
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("a JSON number", |f| f.is_finite()).prop_map(|f| json!(f)),
        ]),
        clock in any::<u64>(),
    ) {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let mut claims = json!({"sub": "u", "exp": exp});
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf;
        }
        let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(HS256_SECRET.as_bytes()))
            .expect("sign");
        let authenticator = authenticator();
        if let Ok(identity) = authenticator.verify(&token) {
            prop_assert!(authenticator.deadline(&identity).is_some());
            let _ = authenticator.identity_expired(&identity, clock);
        }
    }

    /// Arbitrary text as a config file: a configuration or an error, never a panic.
    #[test]
    fn the_config_parser_never_panics_on_text(text in ".{0,300}") {
        let _ = Config::from_toml(&text, Path::new("fuzz.toml"));
    }

    /// Arbitrary TOML documents over the real keys, with values of every type: a configuration
    /// or an error naming a problem, never a panic.
    #[test]
    fn the_config_parser_never_panics_on_toml(entries in prop::collection::vec((config_key(), toml_value()), 0..8)) {
        let mut text = String::from("version = 1\n");
        let mut seen = std::collections::HashSet::new();
        let mut tables: Vec<(String, String)> = Vec::new();
        for (key, value) in entries {
            if !seen.insert(key.clone()) {
                continue;
            }
            match key.split_once('.') {
                None => text.push_str(&format!("{key} = {value}\n")),
                Some((table, rest)) => tables.push((table.to_owned(), format!("{rest} = {value}"))),
            }
        }
        // Dotted keys keep the document valid TOML whatever the tables.
        for (table, line) in tables {
            text.push_str(&format!("{table}.{line}\n"));
        }
        if let Err(error) = Config::from_toml(&text, Path::new("fuzz.toml")) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}

fn config_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "listen",
        "admin_listen",
        "cluster",
        "node",
        "nats_url",
        "allow_anonymous",
        "allowed_origins",
        "require_origin",
        "log_format",
        "nats.ping_interval_ms",
        "auth.leeway_seconds",
        "auth.user_rooms",
        "auth.anonymous_rooms",
        "auth.auth_timeout_ms",
        "limits.max_connections",
        "limits.max_message_bytes",
        "limits.send_queue",
        "limits.publish_rate",
        "limits.heartbeat_ms",
        "drain.seconds",
        "drain.reconnect_spread_ms",
        "history.storage",
        "namespaces.chat.history_size",
        "namespaces.chat.recovery_max",
        "namespaces.a-b.presence",
        "unknown_key",
    ])
    .prop_map(str::to_owned)
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9:.*/ -]{0,20}".prop_map(|s| format!("{s:?}")),
        Just("1.5".to_owned()),
        Just("[\"**\", \"chat:*\"]".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("[\"a::b\"]".to_owned()),
        Just("{ x = 1 }".to_owned()),
        Just("18446744073709551615".to_owned()),
    ]
}

const HS256_SECRET: &str = "wsgate-properties-hs256-secret-0123456789";

/// An authenticator with an HS256 secret and an RSA public key.
fn authenticator() -> Authenticator {
    thread_local! {
        static PUBLIC_KEY: std::path::PathBuf = {
            let path = std::env::temp_dir().join(format!("wsgate-properties-{}.pem", std::process::id()));
            std::fs::write(&path, include_str!("../../tests/testdata/rsa-public.pem")).expect("write the key");
            path
        };
    }
    let settings = AuthConfig {
        jwt_secret: Some(Secret::Value(
            "wsgate-properties-hs256-secret-0123456789".into(),
        )),
        jwt_public_key_file: Some(PUBLIC_KEY.with(Clone::clone)),
        leeway: Duration::from_secs(0),
        ..AuthConfig::default()
    };
    Authenticator::new(settings).expect("valid auth settings")
}

//! Session behaviour over an in-memory socket: the same code path as a real
//! connection, with the transport replaced by channels and time paused where a
//! test waits for a deadline.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::app::AppState;
use crate::broker::LocalNode;
use crate::socket::FrameWriter;

const SECRET: &str = "session-test-secret";

/// The server's end of an in-memory WebSocket. As on a real socket, the
/// writer's frames are appended to the socket's outgoing bytes (`frames`) and
/// leave, as messages, before whatever the sink is given next, and at a flush.
struct FakeSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
    frames: FrameWriter,
}

impl FakeSocket {
    fn new(
        incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
        outgoing: mpsc::UnboundedSender<Message>,
    ) -> (Self, FrameWriter) {
        let frames = FrameWriter::detached();
        let socket = Self {
            incoming,
            outgoing,
            frames: frames.clone(),
        };
        (socket, frames)
    }

    /// Sends the frames appended so far, parsed back into messages.
    fn send_appended(&self) -> Result<(), axum::Error> {
        let bytes = self.frames.take();
        let mut rest = &bytes[..];
        while let [0x81, length, after @ ..] = rest {
            let (length, after) = match *length {
                126 => (
                    usize::from(u16::from_be_bytes([after[0], after[1]])),
                    &after[2..],
                ),
                127 => {
                    let length = u64::from_be_bytes(after[..8].try_into().unwrap());
                    (usize::try_from(length).unwrap(), &after[8..])
                }
                length => (usize::from(length), after),
            };
            let text = std::str::from_utf8(&after[..length]).unwrap();
            self.outgoing
                .send(Message::Text(text.into()))
                .map_err(axum::Error::new)?;
            rest = &after[length..];
        }
        assert!(rest.is_empty(), "not a whole text frame: {rest:?}");
        Ok(())
    }
}

impl Stream for FakeSocket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for FakeSocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.send_appended()?;
        self.outgoing.send(item).map_err(axum::Error::new)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.send_appended())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.send_appended())
    }
}

/// The client's end.
struct Client {
    to_server: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    from_server: mpsc::UnboundedReceiver<Message>,
}

impl Client {
    fn send(&self, value: Value) {
        self.to_server
            .send(Ok(Message::Text(value.to_string().into())))
            .unwrap();
    }

    fn send_message(&self, message: Result<Message, axum::Error>) {
        self.to_server.send(message).unwrap();
    }

    /// The next text frame as JSON (pings skipped); panics on close.
    async fn next(&mut self) -> Value {
        loop {
            match self.from_server.recv().await.expect("connection ended") {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Skips text frames until the close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            match self
                .from_server
                .recv()
                .await
                .expect("connection ended without a close frame")
            {
                Message::Close(Some(frame)) => return frame.code,
                Message::Close(None) => panic!("close without a code"),
                _ => continue,
            }
        }
    }
}

fn state(toml: &str, args: &[&str]) -> Arc<AppState> {
    let mut argv = vec!["wsgate", "--jwt-secret", SECRET];
    argv.extend_from_slice(args);
    let args = <wsgate_config::Args as clap::Parser>::try_parse_from(argv).unwrap();
    let text = format!("version = 1\n{toml}");
    let config =
        wsgate_config::Config::from_args_and_toml(args, &text, Path::new("test.toml")).unwrap();
    let state = AppState::test(config);
    // As the server does; stopped with the test's runtime.
    crate::heartbeat::spawn(
        state.hub.clone(),
        state.config.limits.heartbeat,
        &tokio_util::task::TaskTracker::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    state
}

fn token(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

fn now() -> u64 {
    unix_now()
}

/// Opens a session; `token` authenticates it at the handshake, `None` leaves it
/// anonymous when the state allows that, otherwise waiting for `auth`.
fn connect(state: &Arc<AppState>, token: Option<&str>) -> Client {
    let (to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_server) = mpsc::unbounded_channel();
    let (socket, frames) = FakeSocket::new(incoming, outgoing);
    let conn_id: Arc<str> = Arc::from(format!("test:{}", state.hub.next_key()));
    let identity = match token {
        Some(token) => Some(state.auth.verify(token).unwrap()),
        None if state.config.allow_anonymous => Some(state.auth.anonymous(&conn_id)),
        None => None,
    };
    let slot = identity
        .as_ref()
        .map(|identity| state.hub.reserve_user(&identity.user, 100).unwrap());
    let permit = state.connections.clone().try_acquire_owned().unwrap();
    let address = state
        .per_address
        .reserve(std::net::Ipv4Addr::LOCALHOST.into())
        .unwrap();
    let start = Start {
        conn_id,
        identity,
        slot,
        permit,
        address,
        tracked: state.sessions.token(),
        frames,
    };
    tokio::spawn(run(socket, state.clone(), start));
    Client {
        to_server,
        from_server,
    }
}

/// Welcome, join, publish: the join reply comes before the room's messages and
/// the publisher, a member, receives its own message.
#[tokio::test]
async fn anonymous_member_receives_its_own_message_after_the_join_reply() {
    let state = state("", &["--allow-anonymous"]);
    let mut client = connect(&state, None);
    let welcome = client.next().await;
    assert_eq!(welcome["type"], "welcome");
    assert!(welcome["user"].as_str().unwrap().starts_with("anon:"));
    client.send(json!({"op":"join","id":1,"room":"chat:a"}));
    assert_eq!(
        client.next().await,
        json!({"id":1,"ok":true,"recovered":false})
    );
    client.send(json!({"op":"publish","id":2,"room":"chat:a","data":{"n":1}}));
    let message = client.next().await;
    assert_eq!(message["type"], "message");
    assert_eq!(message["data"], json!({"n":1}));
    assert_eq!(message["from"], welcome["user"]);
    assert_eq!(client.next().await, json!({"id":2,"ok":true}));
}

/// Without anonymous access, a frame other than `auth` closes with 4001.
#[tokio::test]
async fn a_frame_before_auth_closes_with_4001() {
    let state = state("", &[]);
    let mut client = connect(&state, None);
    client.send(json!({"op":"ping","id":1}));
    assert_eq!(client.close_code().await, close::AUTH_FAILED);
}

/// First-frame `auth` with a good token gets a welcome carrying its id.
#[tokio::test]
async fn first_frame_auth_is_answered_by_a_welcome() {
    let state = state("", &[]);
    let mut client = connect(&state, None);
    client.send(json!({"op":"auth","id":9,"token":token(json!({"sub":"alice","exp":now()+60}))}));
    let welcome = client.next().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["id"], 9);
    assert_eq!(welcome["user"], "alice");
}

/// A bad first-frame token gets `unauthorized`, then 4001.
#[tokio::test]
async fn bad_first_frame_auth_closes_with_4001() {
    let state = state("", &[]);
    let mut client = connect(&state, None);
    client.send(json!({"op":"auth","id":1,"token":"not.a.token"}));
    assert_eq!(client.next().await["error"]["code"], "unauthorized");
    assert_eq!(client.close_code().await, close::AUTH_FAILED);
}

/// Silence past `auth.auth_timeout_ms` closes with 4001.
#[tokio::test(start_paused = true)]
async fn silence_past_the_auth_timeout_closes_with_4001() {
    let state = state("[auth]\nauth_timeout_ms = 200\n", &[]);
    let mut client = connect(&state, None);
    assert_eq!(client.close_code().await, close::AUTH_FAILED);
}

/// A token's expiry (plus leeway) closes with 4001 unless refreshed.
#[tokio::test(start_paused = true)]
async fn expiry_closes_with_4001_and_refresh_for_another_user_is_refused() {
    let state = state("[auth]\nleeway_seconds = 0\n", &[]);
    let mut client = connect(&state, Some(&token(json!({"sub":"bob","exp":now()+5}))));
    assert_eq!(client.next().await["user"], "bob");
    client.send(json!({"op":"refresh","id":1,"token":token(json!({"sub":"eve","exp":now()+600}))}));
    assert_eq!(client.next().await["error"]["code"], "unauthorized");
    assert_eq!(client.close_code().await, close::AUTH_FAILED);
}

/// A refreshed token that no longer allows a room removes the connection from it
/// with a `left` event.
#[tokio::test]
async fn refresh_without_a_room_leaves_it_with_a_left_event() {
    let state = state("", &[]);
    let first = token(json!({"sub":"carol","exp":now()+60,"rooms":["chat:*"]}));
    let mut client = connect(&state, Some(&first));
    client.next().await;
    client.send(json!({"op":"join","id":1,"room":"chat:a"}));
    assert_eq!(client.next().await["ok"], true);
    let narrower = token(json!({"sub":"carol","exp":now()+120,"rooms":["news:*"]}));
    client.send(json!({"op":"refresh","id":2,"token":narrower}));
    let left = client.next().await;
    assert_eq!(left["type"], "left");
    assert_eq!(left["room"], "chat:a");
    assert_eq!(left["reason"], "forbidden");
    let reply = client.next().await;
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["exp"], now() + 120);
    assert_eq!(state.hub.stats().rooms, 0);
}

/// Client-fault errors beyond the budget close with 1008.
#[tokio::test]
async fn too_many_errors_close_with_1008() {
    let state = state(
        "[limits]\nmax_errors_per_minute = 3\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    for id in 0..4 {
        client.send(json!({"op":"nope","id":id}));
    }
    for _ in 0..3 {
        assert_eq!(client.next().await["error"]["code"], "unknown_op");
    }
    assert_eq!(client.close_code().await, close::POLICY);
}

/// Publishing beyond the burst gets `rate_limited`; a publish without id
/// reports its op and room.
#[tokio::test]
async fn publishing_beyond_the_burst_is_rate_limited() {
    let state = state(
        "[limits]\npublish_rate = 0.001\npublish_burst = 2\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    for _ in 0..3 {
        client.send(json!({"op":"publish","room":"r","data":1}));
    }
    let error = client.next().await;
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(error["op"], "publish");
    assert_eq!(error["room"], "r");
}

/// Every command draws on the command budget, not only `publish`: join/leave
/// churn past the burst gets `rate_limited`, with its op and room.
#[tokio::test]
async fn join_and_leave_churn_beyond_the_command_burst_is_rate_limited() {
    let state = state(
        "[limits]\ncommand_rate = 0.001\ncommand_burst = 4\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    for id in 0..2 {
        client.send(json!({"op":"join","id":id,"room":"r"}));
        client.send(json!({"op":"leave","room":"r"}));
    }
    assert_eq!(client.next().await["id"], 0);
    assert_eq!(client.next().await["id"], 1);
    client.send(json!({"op":"leave","room":"r"}));
    let error = client.next().await;
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(error["op"], "leave");
    assert_eq!(error["room"], "r");
}

/// Commands cost their weight: a `send` costs five pings, so after one `send`
/// a budget of 9 refuses a second but still pays for four pings.
#[tokio::test]
async fn a_send_costs_five_pings_of_the_command_budget() {
    let state = state(
        "[limits]\ncommand_rate = 0.001\ncommand_burst = 9\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    client.send(json!({"op":"send","id":1,"user":"nobody","data":1}));
    client.send(json!({"op":"send","id":2,"user":"nobody","data":1}));
    let mut replies = vec![client.next().await, client.next().await];
    replies.sort_by_key(|reply| reply["id"].as_u64());
    assert_eq!(replies[0]["error"]["code"], "forbidden", "{replies:?}");
    assert_eq!(replies[1]["error"]["code"], "rate_limited", "{replies:?}");
    for id in 3..7 {
        client.send(json!({"op":"ping","id":id}));
        assert_eq!(client.next().await["ok"], true);
    }
    client.send(json!({"op":"ping","id":7}));
    assert_eq!(client.next().await["error"]["code"], "rate_limited");
}

/// `publish` keeps its own, tighter budget beside the command budget: with a
/// generous command budget, the publish burst still decides.
#[tokio::test]
async fn publish_keeps_its_tighter_budget_within_the_command_budget() {
    let state = state(
        "[limits]\npublish_rate = 0.001\npublish_burst = 1\ncommand_rate = 0.001\ncommand_burst = 1000\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    client.send(json!({"op":"publish","id":1,"room":"r","data":1}));
    assert_eq!(client.next().await["ok"], true);
    client.send(json!({"op":"publish","id":2,"room":"r","data":1}));
    let error = client.next().await;
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(error["error"]["message"], "publish rate over the limit");
    client.send(json!({"op":"ping","id":3}));
    assert_eq!(client.next().await["ok"], true);
}

/// A failed `auth` on an anonymous connection is the client's fault: repeated,
/// it closes the connection with 1008 instead of costing a signature check
/// each, for ever.
#[tokio::test]
async fn failed_auth_on_an_anonymous_connection_counts_towards_1008() {
    let state = state(
        "[limits]\nmax_errors_per_minute = 2\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    for id in 0..3 {
        client.send(json!({"op":"auth","id":id,"token":"not-a-token"}));
    }
    for _ in 0..2 {
        assert_eq!(client.next().await["error"]["code"], "unauthorized");
    }
    assert_eq!(client.close_code().await, close::POLICY);
}

/// A failed `refresh` counts as a client fault too.
#[tokio::test]
async fn failed_refresh_counts_towards_1008() {
    let state = state("[limits]\nmax_errors_per_minute = 1\n", &[]);
    let mut client = connect(&state, Some(&token(json!({"sub":"dave","exp":now()+600}))));
    client.next().await;
    for id in 0..2 {
        client.send(json!({"op":"refresh","id":id,"token":"not-a-token"}));
    }
    assert_eq!(client.next().await["error"]["code"], "unauthorized");
    assert_eq!(client.close_code().await, close::POLICY);
}

/// The rooms-per-connection cap refuses a further join, not a repeated one.
#[tokio::test]
async fn joins_past_the_room_cap_are_refused() {
    let state = state(
        "[limits]\nmax_rooms_per_connection = 2\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    for (id, room) in ["a", "b", "a", "c"].iter().enumerate() {
        client.send(json!({"op":"join","id":id,"room":room}));
    }
    for _ in 0..3 {
        assert_eq!(client.next().await["ok"], true);
    }
    assert_eq!(client.next().await["error"]["code"], "limit_exceeded");
}

/// Transport errors map to RFC 6455 close codes.
#[tokio::test]
async fn oversize_and_invalid_utf8_map_to_1009_and_1007() {
    let state = state("", &["--allow-anonymous"]);
    let mut client = connect(&state, None);
    client.next().await;
    let too_long = tungstenite::error::CapacityError::MessageTooLong {
        size: 2,
        max_size: 1,
    };
    client.send_message(Err(axum::Error::new(tungstenite::Error::Capacity(
        too_long,
    ))));
    assert_eq!(client.close_code().await, close::TOO_BIG);

    let mut client = connect(&state, None);
    client.next().await;
    client.send_message(Err(axum::Error::new(tungstenite::Error::Utf8(
        "bad".into(),
    ))));
    assert_eq!(client.close_code().await, close::INVALID_UTF8);
}

/// Binary frames and `auth` on a token connection are `bad_request`; the
/// connection stays open.
#[tokio::test]
async fn binary_frames_get_bad_request_and_the_connection_stays_open() {
    let state = state("", &[]);
    let mut client = connect(&state, Some(&token(json!({"sub":"dan","exp":now()+60}))));
    client.next().await;
    client.send_message(Ok(Message::Binary(vec![1, 2, 3].into())));
    assert_eq!(client.next().await["error"]["code"], "bad_request");
    client.send(json!({"op":"auth","id":1,"token":"x"}));
    assert_eq!(client.next().await["error"]["code"], "bad_request");
    client.send(json!({"op":"ping","id":2}));
    assert_eq!(client.next().await, json!({"id":2,"ok":true}));
}

/// Heartbeat: no frame from the client within the timeout closes with 1011.
#[tokio::test(start_paused = true)]
async fn silence_past_the_heartbeat_timeout_closes_with_1011() {
    let state = state(
        "[limits]\nheartbeat_ms = 100\nheartbeat_timeout_ms = 300\n",
        &["--allow-anonymous"],
    );
    let mut client = connect(&state, None);
    client.next().await;
    assert_eq!(client.close_code().await, close::INTERNAL);
}

/// Presence pages follow one rule on the socket and in the API: the maximum
/// unless asked for less, never more, and a `limit` of 0 counts as 1.
#[tokio::test]
async fn presence_pages_are_clamped_between_one_and_the_maximum() {
    let state = state(
        "[limits]\nmax_page_size = 2\n[namespaces.team]\npresence = true\n",
        &["--allow-anonymous"],
    );
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut client = connect(&state, None);
        assert_eq!(client.next().await["type"], "welcome");
        client.send(json!({"op":"join","id":i,"room":"team:a"}));
        assert_eq!(client.next().await["ok"], true);
        clients.push(client);
    }
    let asker = &mut clients[0];
    for (limit, expected) in [
        (json!(0), 1),
        (json!(1), 1),
        (json!(100), 2),
        (json!(null), 2),
    ] {
        asker.send(json!({"op":"presence","id":9,"room":"team:a","limit":limit}));
        let reply = asker.next().await;
        assert_eq!(reply["id"], 9, "{reply}");
        assert_eq!(
            reply["members"].as_array().map(Vec::len),
            Some(expected),
            "limit {limit}: {reply}"
        );
        assert!(reply["next"].is_string(), "more members follow: {reply}");
    }
}

/// A token whose `exp` lies absurdly far ahead (near 2^64, or 1e300 as a
/// float) is accepted and the session lives on: its deadline is clamped, not
/// added to the clock until it overflows.
#[tokio::test]
async fn tokens_expiring_beyond_the_clock_do_not_end_the_session() {
    let state = state("[auth]\nuser_rooms = [\"**\"]\n", &[]);
    let mut clients = Vec::new();
    for exp in [
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(1e300),
        json!(9.2e18),
    ] {
        let mut client = connect(&state, Some(&token(json!({"sub":"far","exp":exp}))));
        assert_eq!(client.next().await["type"], "welcome", "exp {exp}");
        client.send(json!({"op":"ping","id":1}));
        assert_eq!(client.next().await, json!({"id":1,"ok":true}), "exp {exp}");
        clients.push(client);
    }
    assert_eq!(state.hub.stats().connections, 4);
}

proptest::proptest! {
    /// Whatever the token's deadline and the clock, the timer deadline is
    /// computed without panicking, is never in the past, and is at most
    /// MAX_TOKEN_LIFETIME ahead.
    #[test]
    fn timer_deadlines_never_overflow(deadline in proptest::num::u64::ANY, now_unix in proptest::num::u64::ANY) {
        let now = tokio::time::Instant::now();
        let at = timer_deadline(now, deadline, now_unix);
        proptest::prop_assert!(at >= now);
        proptest::prop_assert!(at - now <= MAX_TOKEN_LIFETIME);
    }
}

/// An idle connection costs mostly its task's future: it stays within 2 KiB
/// (1,352 bytes in a debug build with this test's socket when written), so a
/// change that stores the session twice or reserves room for a one-off step
/// for the connection's whole life shows here (docs/benchmarks.md, "Idle
/// memory per connection").
#[tokio::test]
async fn the_connection_future_stays_within_2_kib() {
    let state = state("", &["--allow-anonymous"]);
    let (_to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, _from_server) = mpsc::unbounded_channel();
    let (socket, frames) = FakeSocket::new(incoming, outgoing);
    let permit = state.connections.clone().try_acquire_owned().unwrap();
    let address = state
        .per_address
        .reserve(std::net::Ipv4Addr::LOCALHOST.into())
        .unwrap();
    let start = Start {
        conn_id: Arc::from("test:1"),
        identity: None,
        slot: None,
        permit,
        address,
        tracked: state.sessions.token(),
        frames,
    };
    let future = run(socket, state.clone(), start);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 2048, "the connection's future is {size} bytes");
}

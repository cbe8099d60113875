//! The HTTP API through the admin router, in process (`oneshot`): Pusher's
//! request signatures as both SDKs send them, and the limits.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::app;

const SECRET: &str = "api-test-secret";

/// A single-node state serving app `1` (key `k`, `max_event_bytes` 100).
pub(crate) fn state() -> Arc<AppState> {
    let file = std::env::temp_dir().join(format!(
        "wsgate-pusher-api-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&file, SECRET).unwrap();
    let text = format!(
        "version = 1\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret_file = {:?}\nmax_event_bytes = 100\n",
        file.display().to_string()
    );
    let config = wsgate_config::Config::from_toml(&text, Path::new("test.toml")).unwrap();
    let state = AppState::test(config);
    crate::pusher::install(&state).unwrap();
    let _ = std::fs::remove_file(&file);
    state
}

/// How a test signs: which secret, when, and whether `body_md5` is sent.
struct Signing<'a> {
    secret: &'a str,
    timestamp: u64,
    md5: Md5,
}

enum Md5 {
    /// The MD5 of the body when there is one (the Node SDK).
    WhenBody,
    /// Always, the empty body's on GETs (the Python SDK).
    Always,
    /// A wrong one.
    Wrong,
}

impl Default for Signing<'_> {
    fn default() -> Self {
        Self {
            secret: SECRET,
            timestamp: unix_now(),
            md5: Md5::WhenBody,
        }
    }
}

/// A signed request's URI.
fn signed_uri(
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    signing: &Signing,
) -> String {
    let mut query: Vec<(String, String)> = vec![
        ("auth_key".into(), "k".into()),
        ("auth_timestamp".into(), signing.timestamp.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    match signing.md5 {
        Md5::WhenBody if body.is_empty() => {}
        Md5::WhenBody | Md5::Always => query.push(("body_md5".into(), signature::body_md5(body))),
        Md5::Wrong => query.push(("body_md5".into(), signature::body_md5(b"other"))),
    }
    query.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let signed = signature::sign(
        signing.secret.as_bytes(),
        &signature::request_message(method, path, &query),
    );
    query.push(("auth_signature".into(), signed));
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{path}?{}", pairs.join("&"))
}

async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = app::admin(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post(
    state: &Arc<AppState>,
    path: &str,
    body: &Value,
    signing: &Signing<'_>,
) -> (StatusCode, String) {
    let bytes = body.to_string().into_bytes();
    let uri = signed_uri("POST", path, &[], &bytes, signing);
    call(state, "POST", &uri, bytes).await
}

/// A trigger signed as the SDKs sign it is taken; a wrong secret, an old
/// timestamp, a wrong or missing `body_md5`, an unknown key or app are not.
#[tokio::test]
async fn triggers_need_pushers_signature() {
    let state = state();
    let event = json!({"name": "e", "channel": "c", "data": "{}"});
    let ok = post(&state, "/apps/1/events", &event, &Signing::default()).await;
    assert_eq!(ok, (StatusCode::OK, "{}".to_owned()));
    let wrong = Signing {
        secret: "other",
        ..Signing::default()
    };
    let (status, body) = post(&state, "/apps/1/events", &event, &wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.starts_with("Invalid signature"), "{body}");
    let old = Signing {
        timestamp: unix_now() - 601,
        ..Signing::default()
    };
    assert_eq!(
        post(&state, "/apps/1/events", &event, &old).await.0,
        StatusCode::UNAUTHORIZED
    );
    let future = Signing {
        timestamp: unix_now() + 601,
        ..Signing::default()
    };
    assert_eq!(
        post(&state, "/apps/1/events", &event, &future).await.0,
        StatusCode::UNAUTHORIZED
    );
    let md5 = Signing {
        md5: Md5::Wrong,
        ..Signing::default()
    };
    assert_eq!(
        post(&state, "/apps/1/events", &event, &md5).await.0,
        StatusCode::UNAUTHORIZED
    );
    let bytes = event.to_string().into_bytes();
    let uri = signed_uri("POST", "/apps/1/events", &[], b"", &Signing::default());
    assert_eq!(
        call(&state, "POST", &uri, bytes).await.0,
        StatusCode::UNAUTHORIZED,
        "no body_md5"
    );
    let unknown = post(&state, "/apps/2/events", &event, &Signing::default()).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
}

/// GETs are signed with or without the empty body's MD5 (the Python and the
/// Node SDK), and a channel nobody is in is not occupied.
#[tokio::test]
async fn gets_are_taken_with_or_without_the_empty_bodys_md5() {
    let state = state();
    for md5 in [Md5::WhenBody, Md5::Always] {
        let signing = Signing {
            md5,
            ..Signing::default()
        };
        let extra = [("info", "subscription_count")];
        let uri = signed_uri("GET", "/apps/1/channels/room", &extra, b"", &signing);
        let (status, body) = call(&state, "GET", &uri, Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"occupied": false, "subscription_count": 0})
        );
    }
    let uri = signed_uri(
        "GET",
        "/apps/1/channels",
        &[("info", "user_count")],
        b"",
        &Signing::default(),
    );
    assert_eq!(
        call(&state, "GET", &uri, Vec::new()).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// The limits: event data over `max_event_bytes` (413), more than 100
/// channels or 10 batch events, bad names and socket ids (400).
#[tokio::test]
async fn triggers_over_the_limits_are_refused() {
    let state = state();
    let signing = Signing::default();
    let big = json!({"name": "e", "channel": "c", "data": "x".repeat(100)});
    assert_eq!(
        post(&state, "/apps/1/events", &big, &signing).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let wide = json!({"name": "e", "channels": channels, "data": "{}"});
    assert_eq!(
        post(&state, "/apps/1/events", &wide, &signing).await.0,
        StatusCode::BAD_REQUEST
    );
    let batch: Vec<Value> = (0..11)
        .map(|_| json!({"name": "e", "channel": "c", "data": "{}"}))
        .collect();
    let batch = json!({ "batch": batch });
    assert_eq!(
        post(&state, "/apps/1/batch_events", &batch, &signing)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    for event in [
        json!({"name": "e", "channel": "a b", "data": "{}"}),
        json!({"name": "e", "channel": "c", "data": "{}", "socket_id": "1.2.3"}),
        json!({"name": "", "channel": "c", "data": "{}"}),
        json!({"name": "e", "data": "{}"}),
    ] {
        assert_eq!(
            post(&state, "/apps/1/events", &event, &signing).await.0,
            StatusCode::BAD_REQUEST,
            "{event}"
        );
    }
    let user = json!({"name": "e", "channel": "#server-to-user-7", "data": "{}"});
    assert_eq!(
        post(&state, "/apps/1/events", &user, &signing).await.0,
        StatusCode::OK
    );
}

/// Socket ids are `\d+\.\d+` and nothing else.
#[test]
fn socket_ids_have_pushers_form() {
    assert!(is_socket_id("123.456"));
    for text in ["", "1", "1.", ".1", "a.1", "1.2.3", "1 .2"] {
        assert!(!is_socket_id(text), "{text:?}");
    }
}

/// Single node: a trigger (or a batch) on a cache channel is kept as the
/// channel's last event, the last one winning; other channels keep nothing.
#[tokio::test]
async fn triggers_on_cache_channels_are_kept_as_their_last_event() {
    let state = state();
    let one = json!({"name": "score", "channels": ["cache-a", "plain"], "data": "1"});
    assert_eq!(
        post(&state, "/apps/1/events", &one, &Signing::default())
            .await
            .0,
        StatusCode::OK
    );
    let batch = json!({"batch": [
        {"name": "score", "channel": "cache-a", "data": "2"},
        {"name": "score", "channel": "private-cache-b", "data": "3"},
    ]});
    assert_eq!(
        post(&state, "/apps/1/batch_events", &batch, &Signing::default())
            .await
            .0,
        StatusCode::OK
    );
    let last = |name: &str| {
        let state = state.clone();
        let room = channel::room("1", name);
        async move { state.broker.last(&room).await.unwrap() }
    };
    assert_eq!(
        last("cache-a").await.as_deref(),
        Some(r#"{"event":"score","channel":"cache-a","data":"2"}"#)
    );
    assert_eq!(
        last("private-cache-b").await.as_deref(),
        Some(r#"{"event":"score","channel":"private-cache-b","data":"3"}"#)
    );
    assert_eq!(last("plain").await, None);
}

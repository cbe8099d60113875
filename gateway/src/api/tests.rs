//! The backend API through its router, in process (`oneshot`): the rules the
//! API shares with the socket, seen from the API's side.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::app::{self, AppState};

fn state(toml: &str) -> std::sync::Arc<AppState> {
    let argv = ["wsgate", "--api-keys", "k1", "--allow-anonymous"];
    let args = <wsgate_config::Args as clap::Parser>::try_parse_from(argv).unwrap();
    let text = format!("version = 1\n{toml}");
    let config =
        wsgate_config::Config::from_args_and_toml(args, &text, Path::new("test.toml")).unwrap();
    AppState::test(config)
}

async fn call(
    state: &std::sync::Arc<AppState>,
    authorization: &str,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", authorization)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app::admin(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The `Bearer` scheme is matched case-insensitively (RFC 9110), as on the
/// upgrade; any other scheme, or another key, is 401 with a JSON body.
#[tokio::test]
async fn api_keys_are_accepted_whatever_the_case_of_bearer() {
    let state = state("");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = call(
            &state,
            &format!("{scheme} k1"),
            "GET",
            "/api/v1/stats",
            json!(null),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
        assert_eq!(body["connections"], 0);
    }
    let (status, body) = call(&state, "Basic k1", "GET", "/api/v1/stats", json!(null)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = call(&state, "Bearer k2", "GET", "/api/v1/stats", json!(null)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// History pages follow the page rule: `limit=0` returns one message (the
/// newest), not none, and more than `recovery_max` returns `recovery_max`.
#[tokio::test]
async fn history_pages_are_clamped_between_one_and_recovery_max() {
    let state = state("[namespaces.chat]\nhistory_size = 10\nrecovery_max = 3\n");
    for n in 1..=5 {
        let (status, body) = call(
            &state,
            "Bearer k1",
            "POST",
            "/api/v1/publish",
            json!({"room":"chat:a","data":n}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["seq"].as_u64().is_some(), "{body}");
    }
    for (limit, expected) in [("0", vec![5]), ("2", vec![4, 5]), ("100", vec![3, 4, 5])] {
        let uri = format!("/api/v1/rooms/chat:a/history?limit={limit}");
        let (status, body) = call(&state, "Bearer k1", "GET", &uri, json!(null)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data: Vec<u64> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|message| message["data"].as_u64().unwrap())
            .collect();
        assert_eq!(data, expected, "limit {limit}: {body}");
        assert_eq!(body["recovered"], false);
    }
}

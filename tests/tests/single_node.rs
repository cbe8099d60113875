//! One gateway without `--nats-url` (the in-process broker): the core behaviours shared
//! with the cluster suite, and everything that concerns one connection or one process
//! (handshake, auth modes, frames, limits, drain, HTTP endpoints, configuration).
//!
//! Run serially: `cargo test -p wsgate-tests --test single_node -- --test-threads=1`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsgate_tests::behaviour::{self, FRAME, QUIET, connect_user, options, unique_room};
use wsgate_tests::{
    Client, ConnectError, ConnectOptions, Deployment, Gateway, GatewayOptions, SIGTERM, SOON,
    Token, Topology, eventually, http, now, testdata,
};

const SINGLE: Topology = Topology::Single;

async fn single(options: GatewayOptions) -> Result<Deployment> {
    Deployment::start(SINGLE, options).await
}

// ---------------------------------------------------------------------------------------
// Behaviours shared with the cluster suite.

/// Every member (the publisher included) gets each message once; others get nothing.
#[tokio::test]
async fn publish_reaches_every_member_exactly_once() -> Result<()> {
    behaviour::publish_reaches_every_member_exactly_once(SINGLE).await
}

/// A publish right after a `join` reply reaches the new member.
#[tokio::test]
async fn publish_right_after_a_join_reply_is_delivered() -> Result<()> {
    behaviour::publish_right_after_a_join_reply_is_delivered(SINGLE).await
}

/// No message of a busy room reaches a joining connection before its `join` reply.
#[tokio::test]
async fn join_reply_comes_before_any_message_of_the_room() -> Result<()> {
    behaviour::join_reply_comes_before_any_message_of_the_room(SINGLE).await
}

/// `send` to a user reaches all its connections; `delivered` counts them, 0 included.
#[tokio::test]
async fn send_to_a_user_counts_every_connection() -> Result<()> {
    behaviour::send_to_a_user_counts_every_connection(SINGLE).await
}

/// Sends not waiting for their replies: one reply each, directs in order.
#[tokio::test]
async fn pipelined_sends_are_answered_once_and_arrive_in_order() -> Result<()> {
    behaviour::pipelined_sends_are_answered_once_each_and_arrive_in_order(SINGLE).await
}

/// `send` to a connection reaches only it, and 0 once it has closed.
#[tokio::test]
async fn send_to_a_connection_reaches_only_that_connection() -> Result<()> {
    behaviour::send_to_a_connection_reaches_only_that_connection(SINGLE).await
}

/// A user id full of subject syntax gets its `direct` events, and only it.
#[tokio::test]
async fn user_ids_with_subject_characters_are_delivered_exactly() -> Result<()> {
    behaviour::user_ids_with_subject_characters_are_delivered_exactly(SINGLE).await
}

/// `send` needs the `send` claim and exactly one target.
#[tokio::test]
async fn send_needs_the_claim_and_one_target() -> Result<()> {
    behaviour::send_needs_the_claim_and_one_target(SINGLE).await
}

/// Bad room names get `invalid_room` and nothing leaks into another room.
#[tokio::test]
async fn room_name_injection_is_refused_and_leaks_nothing() -> Result<()> {
    behaviour::room_name_injection_is_refused_and_leaks_nothing(SINGLE).await
}

/// The handshake matrix: exact 401/403/429 statuses and 101 for the good cases.
#[tokio::test]
async fn handshake_answers_with_exact_statuses() -> Result<()> {
    behaviour::handshake_answers_with_exact_statuses(SINGLE).await
}

/// The backend API refuses missing and wrong keys with 401 and bad bodies with 400.
#[tokio::test]
async fn backend_api_needs_a_key() -> Result<()> {
    behaviour::backend_api_needs_a_key(SINGLE).await
}

/// A backend publish reaches members with `from: null`.
#[tokio::test]
async fn backend_publish_reaches_members_with_from_null() -> Result<()> {
    behaviour::backend_publish_reaches_members_with_from_null(SINGLE).await
}

/// Backend `send` counts and reaches connections; `disconnect` closes them with 4003.
#[tokio::test]
async fn backend_send_and_disconnect_reach_every_connection() -> Result<()> {
    behaviour::backend_send_and_disconnect_reach_every_gateway(SINGLE).await
}

/// `stats` counts connections and rooms with `partial: false`.
#[tokio::test]
async fn stats_count_connections_and_rooms() -> Result<()> {
    behaviour::stats_count_every_gateway(SINGLE).await
}

// ---------------------------------------------------------------------------------------
// Handshake details.

/// With `require_origin`, an upgrade without `Origin` is 403; an allowed one passes.
#[tokio::test]
async fn require_origin_refuses_upgrades_without_origin() -> Result<()> {
    let deployment = single(
        options()
            .set("require_origin", true)
            .set("allowed_origins", json!(["https://app.example.com"])),
    )
    .await?;
    let url = deployment.ws_url(0);
    let auth = format!("Bearer {}", Token::new("u").signed());
    let status = Client::handshake_status(&url, &[("Authorization", &auth)]).await?;
    ensure!(status == 403, "no Origin with require_origin: {status}");
    let status = Client::handshake_status(
        &url,
        &[
            ("Authorization", &auth),
            ("Origin", "https://app.example.com"),
        ],
    )
    .await?;
    ensure!(
        status == 101,
        "allowed Origin with require_origin: {status}"
    );
    Ok(())
}

/// At `max_connections` the next upgrade is 503 `unavailable` with a `Retry-After` of a
/// few seconds; once a connection closes there is room again.
#[tokio::test]
async fn at_max_connections_upgrades_get_503_with_retry_after() -> Result<()> {
    /// The refusal of an upgrade over the limit. With `--max-connections 2` only two sockets
    /// may wait for their handshake: an attempt made while the last refused socket is still
    /// being let go is closed before HTTP (shed, not refused), and is made again.
    async fn refused_upgrade(url: &str, headers: &[(&str, &str)]) -> Result<ConnectError> {
        eventually(SOON, "an answer to the upgrade", || async move {
            match Client::connect_with(url, headers).await {
                Ok(_) => anyhow::bail!("accepted over the limit"),
                Err(ConnectError::Failed(_)) => Ok(None),
                Err(refused) => Ok(Some(refused)),
            }
        })
        .await
    }

    let deployment = single(
        options()
            .arg("--max-connections", 2)
            .set("allowed_origins", json!(["https://app.example.com"])),
    )
    .await?;
    let url = deployment.ws_url(0);
    let first = connect_user(&deployment, 0, "a").await?;
    let _second = connect_user(&deployment, 0, "b").await?;
    let auth = format!("Bearer {}", Token::new("c").signed());
    let error = match Client::connect_with(&url, &[("Authorization", &auth)]).await {
        Ok(_) => anyhow::bail!("a third connection was accepted with --max-connections 2"),
        Err(error) => error,
    };
    ensure!(error.status() == Some(503), "{error}");
    ensure!(
        error.error_code().as_deref() == Some("unavailable"),
        "{error}"
    );
    let retry: u64 = error
        .header("retry-after")
        .context("503 without Retry-After")?
        .parse()
        .context("Retry-After is not a number of seconds")?;
    ensure!((1..=60).contains(&retry), "Retry-After {retry}");
    ensure!(
        error.header("connection") == Some("close"),
        "a refused upgrade keeps its socket: {error}"
    );
    // Jittered: twenty refusals do not all name the same second.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let error = refused_upgrade(&url, &[("Authorization", &auth)]).await?;
        ensure!(error.status() == Some(503), "{error}");
        seen.insert(error.header("retry-after").unwrap_or_default().to_owned());
    }
    ensure!(
        seen.len() > 1,
        "Retry-After is not jittered: always {seen:?}"
    );
    // 503 comes first in the order of decisions: before the origin and the token.
    let error = refused_upgrade(
        &url,
        &[
            ("Authorization", "Bearer not-a-jwt"),
            ("Origin", "https://evil.example.net"),
        ],
    )
    .await?;
    ensure!(
        error.status() == Some(503),
        "at the limit, forbidden origin and bad token: {error}"
    );
    // All 22 refusals were for capacity: counted under that reason, and
    // reported to the autoscaler in the stats; no other reason moved.
    let gateway = deployment.gateway(0);
    let stats = gateway.stats().await?;
    ensure!(
        stats["nodes"][0]["upgrades_refused_capacity"] == 22,
        "stats: {stats}"
    );
    let metrics = gateway.metrics().await?;
    for (line, want) in [
        (
            r#"wsgate_upgrades_refused_total{code="503",reason="capacity"}"#,
            "22",
        ),
        (
            r#"wsgate_upgrades_refused_total{code="503",reason="draining"}"#,
            "0",
        ),
        (
            r#"wsgate_upgrades_refused_total{code="403",reason="origin"}"#,
            "0",
        ),
    ] {
        let value = metrics
            .lines()
            .find_map(|sample| sample.strip_prefix(line))
            .with_context(|| format!("{line} missing from /metrics:\n{metrics}"))?;
        ensure!(value.trim() == want, "{line} {value}, not {want}");
    }
    first.close().await;
    eventually(SOON, "a slot frees up after a close", || {
        let url = url.clone();
        let auth = auth.clone();
        async move {
            Ok(
                (Client::handshake_status(&url, &[("Authorization", &auth)]).await? == 101)
                    .then_some(()),
            )
        }
    })
    .await
}

/// The subprotocol `wsgate.v1` is accepted when offered.
#[tokio::test]
async fn subprotocol_wsgate_v1_is_accepted_when_offered() -> Result<()> {
    let deployment = single(options()).await?;
    let options = ConnectOptions::default()
        .bearer(&Token::new("u").signed())
        .header("Sec-WebSocket-Protocol", "wsgate.v1");
    let mut client = Client::connect_opts(&deployment.ws_url(0), options).await?;
    ensure!(
        client.subprotocol() == Some("wsgate.v1"),
        "selected {:?}",
        client.subprotocol()
    );
    client.welcome().await?;
    Ok(())
}

/// RS256 and ES256 tokens verify against `--jwt-public-key-file`; an HS256 token signed
/// with the public key's bytes (algorithm confusion) is 401.
#[tokio::test]
async fn public_key_tokens_verify_and_algorithm_confusion_is_refused() -> Result<()> {
    let rsa = single(GatewayOptions::new().jwt_public_key_file(testdata("rsa-public.pem"))).await?;
    let url = rsa.ws_url(0);
    let client = Client::connect_token(&url, &Token::new("rs").rs256()).await?;
    ensure!(client.user() == "rs", "{:?}", client.welcome_frame());
    let confused = Token::new("rs").hs256(wsgate_tests::RSA_PUBLIC_PEM);
    let status =
        Client::handshake_status(&url, &[("Authorization", &format!("Bearer {confused}"))]).await?;
    ensure!(
        status == 401,
        "HS256 signed with the RSA public key: {status}"
    );
    let status = Client::handshake_status(
        &url,
        &[(
            "Authorization",
            &format!("Bearer {}", Token::new("es").es256()),
        )],
    )
    .await?;
    ensure!(status == 401, "ES256 against an RSA key: {status}");
    drop(client);
    drop(rsa);

    let ec = single(GatewayOptions::new().jwt_public_key_file(testdata("ec-public.pem"))).await?;
    let client = Client::connect_token(&ec.ws_url(0), &Token::new("es").es256()).await?;
    ensure!(client.user() == "es", "{:?}", client.welcome_frame());
    Ok(())
}

/// With `auth.audience` and `auth.issuer` set, tokens without them or with other values
/// are 401 and matching ones pass.
#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() -> Result<()> {
    let deployment = single(
        options()
            .set("auth.audience", "wsgate-tests")
            .set("auth.issuer", "issuer-a"),
    )
    .await?;
    let url = deployment.ws_url(0);
    let cases = [
        (
            Token::new("u").audience("wsgate-tests").issuer("issuer-a"),
            101,
        ),
        (Token::new("u").issuer("issuer-a"), 401),
        (Token::new("u").audience("wsgate-tests"), 401),
        (Token::new("u").audience("other").issuer("issuer-a"), 401),
        (
            Token::new("u").audience("wsgate-tests").issuer("issuer-b"),
            401,
        ),
    ];
    for (token, expected) in cases {
        let status = Client::handshake_status(
            &url,
            &[("Authorization", &format!("Bearer {}", token.signed()))],
        )
        .await?;
        ensure!(
            status == expected,
            "{}: {status}, expected {expected}",
            token.claims()
        );
    }
    Ok(())
}

/// With `auth.jwks_file`, the key is chosen by the token's `kid`: RS256 and ES256 tokens
/// with their key's `kid` pass; an unknown `kid` or another key's `kid` is 401.
#[tokio::test]
async fn jwks_keys_are_chosen_by_kid() -> Result<()> {
    let jwks = testdata("jwks.json").display().to_string();
    let deployment = single(GatewayOptions::new().set("auth.jwks_file", jwks)).await?;
    let url = deployment.ws_url(0);
    let cases = [
        (
            "RS256 with kid rsa-1",
            Token::new("j").kid("rsa-1").rs256(),
            101,
        ),
        (
            "ES256 with kid ec-1",
            Token::new("j").kid("ec-1").es256(),
            101,
        ),
        (
            "RS256 with an unknown kid",
            Token::new("j").kid("nope").rs256(),
            401,
        ),
        (
            "RS256 with the EC key's kid",
            Token::new("j").kid("ec-1").rs256(),
            401,
        ),
        (
            "ES256 with the RSA key's kid",
            Token::new("j").kid("rsa-1").es256(),
            401,
        ),
        (
            "HS256 with kid rsa-1",
            Token::new("j").kid("rsa-1").signed(),
            401,
        ),
    ];
    for (what, token, expected) in cases {
        let auth = format!("Bearer {token}");
        let status = Client::handshake_status(&url, &[("Authorization", &auth)]).await?;
        ensure!(status == expected, "{what}: {status}, expected {expected}");
    }
    Ok(())
}

/// The JWT secret and API keys named by `auth.jwt_secret_file` and `auth.api_keys_file`
/// are re-read when the files change: the new ones work and the old ones stop working,
/// without a restart.
#[tokio::test]
async fn secret_files_are_reread_when_they_change() -> Result<()> {
    let dir = wsgate_tests::TempDir::new("secrets")?;
    let keys = dir.path().join("api-keys");
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&keys, "key-one\nkey-spare\n")?;
    std::fs::write(&secret, "secret-one-0123456789abcdef0123456789")?;
    let gateway = Gateway::start(
        GatewayOptions::new()
            .set("auth.api_keys_file", keys.display().to_string())
            .set("auth.jwt_secret_file", secret.display().to_string()),
    )
    .await?;
    let url = gateway.ws_url();
    let status_with = |key: &'static str| {
        let gateway = &gateway;
        async move { Ok::<_, anyhow::Error>(gateway.api_get("/api/v1/stats", Some(key)).await?.status) }
    };
    let upgrade_with = |secret: &'static str| {
        let url = url.clone();
        async move {
            let auth = format!("Bearer {}", Token::new("rot").hs256(secret));
            Client::handshake_status(&url, &[("Authorization", &auth)]).await
        }
    };
    ensure!(status_with("key-one").await? == 200, "the first key");
    ensure!(
        status_with("key-spare").await? == 200,
        "the second line of the keys file"
    );
    ensure!(
        status_with("key-two").await? == 401,
        "a key not in the file"
    );
    ensure!(
        upgrade_with("secret-one-0123456789abcdef0123456789").await? == 101,
        "the first secret"
    );
    wsgate_tests::replace_file(&keys, "key-two\n")?;
    wsgate_tests::replace_file(&secret, "secret-two-0123456789abcdef0123456789")?;
    eventually(
        Duration::from_secs(20),
        "the rotated API key works and the old one not",
        || async {
            Ok(
                (status_with("key-two").await? == 200 && status_with("key-one").await? == 401)
                    .then_some(()),
            )
        },
    )
    .await?;
    eventually(
        Duration::from_secs(20),
        "the rotated JWT secret works and the old one not",
        || async {
            let new = upgrade_with("secret-two-0123456789abcdef0123456789").await?;
            let old = upgrade_with("secret-one-0123456789abcdef0123456789").await?;
            Ok((new == 101 && old == 401).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Whether a 2 KiB publish fits `limits.max_message_bytes` (ok) or closes with 1009.
async fn accepts_two_kib(gateway: &Gateway) -> Result<bool> {
    let mut client =
        Client::connect_token(&gateway.ws_url(), &behaviour::user_token("size")).await?;
    let command = json!({"op": "publish", "room": "sizes", "data": "z".repeat(2048)});
    match client.call(command).await {
        Ok(reply) if reply["ok"] == true => Ok(true),
        Ok(reply) => anyhow::bail!("unexpected reply {reply}"),
        Err(_) => {
            let (code, _) = client.wait_close(FRAME).await?;
            ensure!(code == Some(1009), "closed with {code:?}, expected 1009");
            Ok(false)
        }
    }
}

/// Precedence: a flag beats a `WSGATE_*` variable, which beats the file.
#[tokio::test]
async fn flags_beat_environment_which_beats_the_file() -> Result<()> {
    let base = || options().unset("limits.max_message_bytes");
    let file_small_env_large = Gateway::start(
        base()
            .set("limits.max_message_bytes", 1024)
            .env("WSGATE_MAX_MESSAGE_BYTES", "65536"),
    )
    .await?;
    ensure!(
        accepts_two_kib(&file_small_env_large).await?,
        "the environment did not beat the file"
    );
    drop(file_small_env_large);
    let file_large_env_small = Gateway::start(
        base()
            .set("limits.max_message_bytes", 65536)
            .env("WSGATE_MAX_MESSAGE_BYTES", "1024"),
    )
    .await?;
    ensure!(
        !accepts_two_kib(&file_large_env_small).await?,
        "the environment did not beat the file"
    );
    drop(file_large_env_small);
    let env_small_flag_large = Gateway::start(
        base()
            .env("WSGATE_MAX_MESSAGE_BYTES", "1024")
            .arg("--max-message-bytes", 65536),
    )
    .await?;
    ensure!(
        accepts_two_kib(&env_small_flag_large).await?,
        "the flag did not beat the environment"
    );
    Ok(())
}

/// `auth.user_rooms` is the join default for tokens without `rooms`,
/// `auth.anonymous_rooms` limits anonymous users, and `auth.require_exp = false` lets
/// tokens without `exp` in.
#[tokio::test]
async fn auth_settings_from_the_file_apply() -> Result<()> {
    let deployment = single(
        options()
            .anonymous()
            .set("auth.user_rooms", json!(["lobby", "team:*"]))
            .set("auth.anonymous_rooms", json!(["public:*"]))
            .set("auth.require_exp", false),
    )
    .await?;
    let url = deployment.ws_url(0);
    let mut user =
        Client::connect_token(&url, &Token::new("no-rooms").without("exp").signed()).await?;
    user.join("lobby").await?;
    user.join("team:red").await?;
    let code = user
        .call_err(json!({"op": "join", "room": "other"}))
        .await?;
    ensure!(code == "forbidden", "join outside user_rooms: {code}");
    let mut anon = Client::connect_anonymous(&url).await?;
    anon.join("public:square").await?;
    anon.publish("public:square", json!("hi")).await?;
    for room in ["lobby", "private:x"] {
        let code = anon.call_err(json!({"op": "join", "room": room})).await?;
        ensure!(code == "forbidden", "anonymous join {room}: {code}");
        let code = anon
            .call_err(json!({"op": "publish", "room": room, "data": 1}))
            .await?;
        ensure!(code == "forbidden", "anonymous publish {room}: {code}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Connections without a token.

/// With anonymous connections allowed, a connection without a token gets a welcome at
/// once with the user `anon:<conn>`, may join and publish (default `**`), may not
/// `send`; a bad token is still 401; `refresh` is `bad_request`; `auth` later identifies it.
#[tokio::test]
async fn anonymous_connections_get_a_welcome_at_once() -> Result<()> {
    let deployment = single(options().anonymous()).await?;
    let url = deployment.ws_url(0);
    let mut anon = Client::connect_anonymous(&url).await?;
    ensure!(
        anon.user() == format!("anon:{}", anon.conn()),
        "{:?}",
        anon.welcome_frame()
    );
    ensure!(anon.node() == "gw-0", "{:?}", anon.welcome_frame());
    let room = unique_room("anon");
    anon.join(&room).await?;
    anon.publish(&room, json!("hello")).await?;
    let message = anon.next_message(&room, FRAME).await?;
    ensure!(message["from"] == anon.user().as_str(), "{message}");
    let code = anon
        .call_err(json!({"op": "send", "user": "x", "data": 1}))
        .await?;
    ensure!(code == "forbidden", "anonymous send: {code}");
    let code = anon
        .call_err(json!({"op": "refresh", "token": Token::new("x").signed()}))
        .await?;
    ensure!(code == "bad_request", "anonymous refresh: {code}");
    let status = Client::handshake_status(&url, &[("Authorization", "Bearer not-a-jwt")]).await?;
    ensure!(status == 401, "bad token with anonymous allowed: {status}");
    // A bad `auth` leaves it anonymous and open.
    let reply = anon
        .call(json!({"op": "auth", "token": "not-a-jwt"}))
        .await?;
    behaviour::expect_error(&reply, "unauthorized")?;
    anon.call_ok(json!({"op": "ping"}))
        .await
        .context("still open after a bad auth")?;
    let welcome = anon.auth(&Token::new("frank").all_rooms().signed()).await?;
    ensure!(welcome["user"] == "frank", "{welcome}");
    let code = anon
        .call_err(json!({"op": "auth", "token": Token::new("frank").signed()}))
        .await?;
    ensure!(code == "bad_request", "second auth: {code}");
    Ok(())
}

/// `auth` after an anonymous join removes the connection from rooms the token does not
/// allow, with a `left` event about itself carrying a reason.
#[tokio::test]
async fn auth_leaves_rooms_the_token_does_not_allow() -> Result<()> {
    let deployment = single(options().anonymous()).await?;
    let mut client = Client::connect_anonymous(&deployment.ws_url(0)).await?;
    client.join("chat:lobby").await?;
    client.join("news:today").await?;
    let id = 77;
    let reply = client
        .call(json!({"op": "auth", "id": id, "token": Token::new("gina").rooms(&["chat:*"]).signed()}))
        .await?;
    ensure!(
        reply["type"] == "welcome" && reply["id"] == id && reply["user"] == "gina",
        "{reply}"
    );
    let left = client.next_of_type("left", FRAME).await?;
    ensure!(
        left["room"] == "news:today" && left["conn"] == reply["conn"],
        "{left}"
    );
    ensure!(left["reason"].is_string(), "left without a reason: {left}");
    Ok(())
}

/// Without anonymous connections, a connection without a token gets no welcome until a
/// first-frame `auth`, which is answered by the welcome (with the `auth`'s id).
#[tokio::test]
async fn first_frame_auth_authenticates_a_connection_without_token() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = Client::connect(&deployment.ws_url(0)).await?;
    let welcome = client
        .call(json!({"op": "auth", "id": 5, "token": Token::new("hank").all_rooms().signed()}))
        .await?;
    ensure!(
        welcome["type"] == "welcome" && welcome["id"] == 5,
        "{welcome}"
    );
    ensure!(welcome["user"] == "hank", "{welcome}");
    client.join(&unique_room("after-auth")).await?;
    Ok(())
}

/// Without anonymous connections, any first frame other than `auth` (another op,
/// non-JSON text, binary) closes the connection with 4001.
#[tokio::test]
async fn a_frame_before_auth_closes_with_4001() -> Result<()> {
    let deployment = single(options()).await?;
    let url = deployment.ws_url(0);
    let firsts = [
        Message::text(json!({"op": "join", "id": 1, "room": "x"}).to_string()),
        Message::text(json!({"op": "ping", "id": 1}).to_string()),
        Message::text("this is not JSON"),
        Message::binary(vec![1u8, 2, 3]),
    ];
    for first in firsts {
        let mut client = Client::connect(&url).await?;
        client.send_raw(first.clone()).await?;
        client
            .expect_close(4001, FRAME)
            .await
            .with_context(|| format!("first frame {first:?}"))?;
    }
    Ok(())
}

/// Without anonymous connections, silence past `auth.auth_timeout_ms` closes with 4001.
#[tokio::test]
async fn silence_before_auth_closes_with_4001() -> Result<()> {
    let deployment = single(options().set("auth.auth_timeout_ms", 500)).await?;
    let mut client = Client::connect(&deployment.ws_url(0)).await?;
    let started = Instant::now();
    client.expect_close(4001, Duration::from_secs(5)).await?;
    ensure!(
        started.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A bad token in the first-frame `auth` gets `unauthorized`, then close 4001.
#[tokio::test]
async fn first_frame_auth_with_a_bad_token_is_unauthorized_then_4001() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = Client::connect(&deployment.ws_url(0)).await?;
    let reply = client
        .call(json!({"op": "auth", "id": 1, "token": Token::new("x").hs256("wrong")}))
        .await?;
    behaviour::expect_error(&reply, "unauthorized")?;
    client.expect_close(4001, FRAME).await?;
    Ok(())
}

/// `auth` on a connection opened with a token is `bad_request` (use `refresh`).
#[tokio::test]
async fn auth_on_a_connection_with_a_token_is_a_bad_request() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "ivy").await?;
    let code = client
        .call_err(json!({"op": "auth", "token": Token::new("ivy").signed()}))
        .await?;
    ensure!(code == "bad_request", "{code}");
    client.call_ok(json!({"op": "ping"})).await?;
    Ok(())
}

/// A first-frame `auth` for a user already at the per-user cap gets `limit_exceeded`,
/// then close 1008.
#[tokio::test]
async fn auth_over_the_per_user_cap_is_limit_exceeded_then_1008() -> Result<()> {
    let deployment = single(options().set("limits.max_connections_per_user", 1)).await?;
    let url = deployment.ws_url(0);
    let token = Token::new("jane").signed();
    let _held = Client::connect_token(&url, &token).await?;
    let mut client = Client::connect(&url).await?;
    let reply = client.call(json!({"op": "auth", "token": token})).await?;
    behaviour::expect_error(&reply, "limit_exceeded")?;
    client.expect_close(1008, FRAME).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Token lifetime.

/// With leeway 0, a connection whose token expires is closed with 4001.
#[tokio::test]
async fn token_expiry_closes_with_4001() -> Result<()> {
    let deployment = single(options().set("auth.leeway_seconds", 0)).await?;
    let mut client = Client::connect_token(
        &deployment.ws_url(0),
        &Token::new("kim").expires_in(2).signed(),
    )
    .await?;
    client.expect_close(4001, Duration::from_secs(8)).await?;
    Ok(())
}

/// `refresh` with a fresh token for the same `sub` keeps the connection open past the
/// old expiry and answers with the new `exp`; a bad token or another `sub` gets
/// `unauthorized` and changes nothing.
#[tokio::test]
async fn refresh_keeps_an_expiring_connection_open() -> Result<()> {
    let deployment = single(options().set("auth.leeway_seconds", 0)).await?;
    let old_exp = now() + 3;
    let mut client = Client::connect_token(
        &deployment.ws_url(0),
        &Token::new("leo").all_rooms().claim("exp", old_exp).signed(),
    )
    .await?;
    let code = client
        .call_err(json!({"op": "refresh", "token": Token::new("other").signed()}))
        .await?;
    ensure!(code == "unauthorized", "refresh for another sub: {code}");
    let code = client
        .call_err(json!({"op": "refresh", "token": Token::new("leo").hs256("bad")}))
        .await?;
    ensure!(code == "unauthorized", "refresh with a bad token: {code}");
    let new_exp = now() + 600;
    let reply = client
        .call_ok(json!({"op": "refresh", "token": Token::new("leo").all_rooms().claim("exp", new_exp).signed()}))
        .await?;
    ensure!(reply["exp"] == new_exp, "refresh reply: {reply}");
    // Time has to pass here: the old token's expiry is the event that must not happen.
    let wait = u64::try_from(old_exp + 2 - now()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    client
        .call_ok(json!({"op": "ping"}))
        .await
        .context("closed despite the refresh")?;
    Ok(())
}

/// A refreshed token that no longer allows a room removes the connection from it, with
/// a `left` event carrying a reason, and its messages stop.
#[tokio::test]
async fn refresh_that_drops_a_room_leaves_it() -> Result<()> {
    let deployment = single(options()).await?;
    let url = deployment.ws_url(0);
    let mut client = Client::connect_token(
        &url,
        &Token::new("mia").rooms(&["chat:*", "news:*"]).signed(),
    )
    .await?;
    client.join("news:x").await?;
    client.join("chat:y").await?;
    client
        .call_ok(json!({"op": "refresh", "token": Token::new("mia").rooms(&["chat:*"]).signed()}))
        .await?;
    let left = client.next_of_type("left", FRAME).await?;
    ensure!(
        left["room"] == "news:x" && left["reason"].is_string(),
        "{left}"
    );
    let mut publisher = connect_user(&deployment, 0, "pub").await?;
    publisher.publish("news:x", json!(1)).await?;
    publisher.publish("chat:y", json!(2)).await?;
    let message = client.next_message("chat:y", FRAME).await?;
    ensure!(message["data"] == 2, "{message}");
    client
        .expect_silence(QUIET)
        .await
        .context("a message of a room it was removed from")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Permissions.

/// The room-pattern examples of docs/protocol.md decide `join`; `publish` follows the
/// `publish` claim (membership not needed); no `rooms` claim means the configured
/// default, which is none.
#[tokio::test]
async fn room_patterns_decide_join_and_publish() -> Result<()> {
    let deployment = single(options()).await?;
    let url = deployment.ws_url(0);
    let mut client = Client::connect_token(
        &url,
        &Token::new("alice")
            .rooms(&["chat:*", "user:alice:**"])
            .signed(),
    )
    .await?;
    for (room, allowed) in [
        ("chat:lobby", true),
        ("chat", false),
        ("chat:a:b", false),
        ("user:alice:inbox", true),
        ("user:alice:a:b", true),
        ("user:alice", false),
        ("user:bob:inbox", false),
        ("lobby", false),
    ] {
        let reply = client.call(json!({"op": "join", "room": room})).await?;
        if allowed {
            ensure!(reply["ok"] == true, "join {room}: {reply}");
        } else {
            behaviour::expect_error(&reply, "forbidden").with_context(|| format!("join {room}"))?;
        }
    }
    let mut everything =
        Client::connect_token(&url, &Token::new("root").rooms(&["**"]).signed()).await?;
    for room in ["a", "a:b", "x:y:z:w"] {
        everything.join(room).await?;
    }
    let mut nothing = Client::connect_token(&url, &Token::new("nobody").signed()).await?;
    let code = nothing.call_err(json!({"op": "join", "room": "a"})).await?;
    ensure!(code == "forbidden", "join without a rooms claim: {code}");
    let mut writer = Client::connect_token(
        &url,
        &Token::new("w").rooms(&["**"]).publish(&["chat:*"]).signed(),
    )
    .await?;
    writer.publish("chat:lobby", json!("not a member")).await?;
    let code = writer
        .call_err(json!({"op": "publish", "room": "news:x", "data": 1}))
        .await?;
    ensure!(
        code == "forbidden",
        "publish outside the publish claim: {code}"
    );
    let message = client.next_message("chat:lobby", FRAME).await?;
    ensure!(message["from"] == "w", "{message}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Frames.

/// A message over `limits.max_message_bytes` closes with 1009, also when it arrives in
/// fragments that are each under the limit.
#[tokio::test]
async fn oversize_messages_close_with_1009() -> Result<()> {
    let deployment = single(options().arg("--max-message-bytes", 1024)).await?;
    let big = json!({"op": "publish", "room": "r", "data": "x".repeat(2048)}).to_string();
    let mut client = connect_user(&deployment, 0, "big").await?;
    client.send_text(&big).await?;
    client
        .expect_close(1009, FRAME)
        .await
        .context("one frame")?;
    let mut client = connect_user(&deployment, 0, "big").await?;
    client.send_fragmented_text(&big, 4).await?;
    client
        .expect_close(1009, FRAME)
        .await
        .context("four fragments of 600 bytes")?;
    let mut client = connect_user(&deployment, 0, "fits").await?;
    client
        .publish(&unique_room("fits"), json!("y".repeat(800)))
        .await
        .context("under the limit")?;
    Ok(())
}

/// A text frame that is not UTF-8 closes with 1007.
#[tokio::test]
async fn invalid_utf8_closes_with_1007() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "utf").await?;
    client.send_invalid_utf8().await?;
    client.expect_close(1007, FRAME).await?;
    Ok(())
}

/// Binary frames and malformed JSON get `bad_request` and the connection stays open; an
/// unknown op is `unknown_op`; a missing `id` where it is required is `bad_request` with
/// `op` (and `room`); `leave` of a non-member is `not_member`; `ping` answers ok.
#[tokio::test]
async fn bad_frames_get_error_replies_and_the_connection_stays_open() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "frames").await?;
    client.send_raw(Message::binary(vec![0u8, 1, 2])).await?;
    let reply = client.next_json(FRAME).await?;
    behaviour::expect_error(&reply, "bad_request").context("binary frame")?;
    for text in [
        "{not json",
        "[1,2]",
        "\"just a string\"",
        "{}",
        "{\"op\":7,\"id\":1}",
    ] {
        client.send_text(text).await?;
        let reply = client.next_json(FRAME).await?;
        behaviour::expect_error(&reply, "bad_request").with_context(|| format!("text {text:?}"))?;
    }
    client
        .call_ok(json!({"op": "ping"}))
        .await
        .context("open after bad frames")?;
    let reply = client.call(json!({"op": "teleport", "id": 41})).await?;
    behaviour::expect_error(&reply, "unknown_op")?;
    ensure!(reply["id"] == 41, "{reply}");
    client
        .send_json(&json!({"op": "join", "room": "chat:x"}))
        .await?;
    let reply = client.next_json(FRAME).await?;
    behaviour::expect_error(&reply, "bad_request").context("join without id")?;
    ensure!(
        reply["op"] == "join" && reply["room"] == "chat:x",
        "error reply without op/room: {reply}"
    );
    let code = client
        .call_err(json!({"op": "leave", "room": "never-joined"}))
        .await?;
    ensure!(code == "not_member", "{code}");
    // publish without id: silent on success, an error reply carrying op and room on failure.
    client
        .send_json(&json!({"op": "publish", "room": "a.b", "data": 1}))
        .await?;
    let reply = client.next_json(FRAME).await?;
    behaviour::expect_error(&reply, "invalid_room")?;
    ensure!(
        reply["op"] == "publish" && reply["room"] == "a.b",
        "{reply}"
    );
    client
        .send_json(&json!({"op": "ping", "id": "seven"}))
        .await?;
    let reply = client.next_json(FRAME).await?;
    behaviour::expect_error(&reply, "bad_request").context("a string id")?;
    let reply = client.call_ok(json!({"op": "ping", "id": 9})).await?;
    ensure!(reply["id"] == 9, "{reply}");
    Ok(())
}

/// Commands without `id` that succeed (`leave`, `publish`, `ping`) get no reply at all;
/// the next command with an `id` gets exactly its own reply.
#[tokio::test]
async fn successful_commands_without_id_get_no_reply() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "quiet").await?;
    let room = unique_room("quiet");
    client.join(&room).await?;
    client
        .send_json(&json!({"op": "leave", "room": room}))
        .await?;
    client
        .send_json(&json!({"op": "publish", "room": room, "data": 1}))
        .await?;
    client.send_json(&json!({"op": "ping"})).await?;
    let reply = client.call_ok(json!({"op": "ping", "id": 99})).await?;
    ensure!(reply["id"] == 99, "{reply}");
    let extra: Vec<&serde_json::Value> = client.queued().collect();
    ensure!(
        extra.is_empty(),
        "frames for commands without id: {extra:?}"
    );
    client.expect_silence(QUIET).await?;
    Ok(())
}

/// The server pings at `limits.heartbeat_ms`, announced in the welcome.
#[tokio::test]
async fn the_server_pings_at_the_heartbeat_interval() -> Result<()> {
    let deployment = single(options().set("limits.heartbeat_ms", 300)).await?;
    let mut client = connect_user(&deployment, 0, "beat").await?;
    ensure!(
        client.welcome_frame()["heartbeat_ms"] == 300,
        "{:?}",
        client.welcome_frame()
    );
    client.expect_silence(Duration::from_millis(1000)).await?;
    ensure!(
        client.pings() >= 2,
        "{} pings in 1 s at 300 ms",
        client.pings()
    );
    Ok(())
}

/// A client that answers no pings is closed with 1011 after `heartbeat_timeout_ms`.
#[tokio::test]
async fn a_client_that_answers_no_pings_is_closed_with_1011() -> Result<()> {
    let deployment = single(
        options()
            .set("limits.heartbeat_ms", 200)
            .set("limits.heartbeat_timeout_ms", 600),
    )
    .await?;
    let client = connect_user(&deployment, 0, "deaf").await?;
    // Not reading means not answering pings (tungstenite answers only while polled):
    // the time passing is the condition under test.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let code = client.raw_close_code(FRAME).await?;
    ensure!(code == 1011, "closed with {code}, expected 1011");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Limits.

/// Publishing faster than `publish_rate`/`publish_burst` gets `rate_limited`.
#[tokio::test]
async fn publish_rate_limit_answers_rate_limited() -> Result<()> {
    let deployment = single(
        options()
            .set("limits.publish_rate", 2)
            .set("limits.publish_burst", 3),
    )
    .await?;
    let mut client = connect_user(&deployment, 0, "fast").await?;
    let room = unique_room("rate");
    let mut codes = Vec::new();
    for k in 0..10 {
        let reply = client
            .call(json!({"op": "publish", "room": room, "data": k}))
            .await?;
        codes.push(wsgate_tests::error_code(&reply).unwrap_or("ok").to_owned());
    }
    ensure!(
        codes[..3].iter().all(|c| c == "ok"),
        "the burst was refused: {codes:?}"
    );
    ensure!(
        codes.iter().any(|c| c == "rate_limited"),
        "never rate limited: {codes:?}"
    );
    ensure!(
        codes.iter().all(|c| c == "ok" || c == "rate_limited"),
        "{codes:?}"
    );
    Ok(())
}

/// More client-fault errors than `max_errors_per_minute` close the connection with 1008.
#[tokio::test]
async fn too_many_errors_close_with_1008() -> Result<()> {
    let deployment = single(options().set("limits.max_errors_per_minute", 5)).await?;
    let mut client = connect_user(&deployment, 0, "abuser").await?;
    for k in 0..5 {
        let reply = client.call(json!({"op": "nonsense", "id": k})).await?;
        behaviour::expect_error(&reply, "unknown_op")?;
    }
    for k in 5..20 {
        if client
            .send_json(&json!({"op": "nonsense", "id": k}))
            .await
            .is_err()
        {
            break;
        }
    }
    client.expect_close(1008, FRAME).await?;
    Ok(())
}

/// Past `max_rooms_per_connection`, `join` is `limit_exceeded`; rejoining a room it is
/// in still succeeds, and leaving makes room.
#[tokio::test]
async fn rooms_per_connection_cap_answers_limit_exceeded() -> Result<()> {
    let deployment = single(options().set("limits.max_rooms_per_connection", 3)).await?;
    let mut client = connect_user(&deployment, 0, "joiner").await?;
    for room in ["r1", "r2", "r3"] {
        client.join(room).await?;
    }
    let code = client.call_err(json!({"op": "join", "room": "r4"})).await?;
    ensure!(code == "limit_exceeded", "{code}");
    client
        .join("r2")
        .await
        .context("rejoining a room it is in")?;
    client.leave("r1").await?;
    client.join("r4").await?;
    Ok(())
}

/// A client that stops reading is closed with 1013 (small `--send-queue`), while another
/// member of the room keeps receiving every message.
#[tokio::test]
async fn a_slow_consumer_is_closed_with_1013_and_others_keep_receiving() -> Result<()> {
    let deployment = single(
        options()
            .arg("--send-queue", 32)
            .set("limits.publish_rate", 100_000)
            .set("limits.publish_burst", 100_000)
            .set("limits.command_rate", 100_000.0)
            .set("limits.command_burst", 100_000),
    )
    .await?;
    let url = deployment.ws_url(0);
    let room = unique_room("slow");
    let mut slow = Client::connect_opts(
        &url,
        ConnectOptions::default()
            .bearer(&behaviour::user_token("slow"))
            .recv_buffer(4096),
    )
    .await?;
    slow.welcome().await?;
    slow.join(&room).await?;
    let mut fast = connect_user(&deployment, 0, "fast").await?;
    fast.join(&room).await?;
    const COUNT: usize = 300;
    let fast_room = room.clone();
    let reader = tokio::spawn(async move {
        let data = behaviour::collect_data(&mut fast, &fast_room, COUNT).await?;
        anyhow::Ok((fast, data))
    });
    let mut publisher = connect_user(&deployment, 0, "publisher").await?;
    let payload = "p".repeat(30_000);
    for k in 0..COUNT {
        publisher
            .publish(&room, json!({"k": k, "pad": payload}))
            .await?;
    }
    let (mut fast, data) = reader.await.context("fast reader")??;
    for (k, value) in data.iter().enumerate() {
        ensure!(
            value["k"] == k,
            "fast member: message {k} is {}",
            value["k"]
        );
    }
    fast.expect_silence(QUIET).await?;
    slow.expect_close(1013, Duration::from_secs(20)).await?;
    let metrics = deployment.gateway(0).metrics().await?;
    let counted = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("slow"))
        .any(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        });
    ensure!(counted, "no slow-consumer counter at 1 or more:\n{metrics}");
    Ok(())
}

fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()
        .context("VmRSS")
}

/// An idle connection (welcomed, in one room) costs the gateway a few KiB: 1000 more
/// of them grow its resident memory by less than 16 KiB each.
#[tokio::test]
async fn idle_connections_cost_a_few_kib_each() -> Result<()> {
    const IDLE: usize = 1000;
    let deployment = single(options().anonymous()).await?;
    let gateway = deployment.gateway(0);
    let url = gateway.ws_url();
    let mut clients = Vec::with_capacity(IDLE + 100);
    // Warm up allocator arenas and buffers before the baseline.
    for _ in 0..100 {
        let mut client = Client::connect_anonymous(&url).await?;
        client.join("idle").await?;
        clients.push(client);
    }
    let before = resident_kib(gateway.pid())?;
    for _ in 0..IDLE {
        let mut client = Client::connect_anonymous(&url).await?;
        client.join("idle").await?;
        clients.push(client);
    }
    let after = resident_kib(gateway.pid())?;
    let per_connection = after.saturating_sub(before) as f64 / IDLE as f64;
    eprintln!("idle connection: {per_connection:.1} KiB ({before} KiB -> {after} KiB for {IDLE})");
    ensure!(
        per_connection < 16.0,
        "{per_connection:.1} KiB per idle connection"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Features that come later.

/// `presence` is `not_supported` while no namespace keeps presence.
#[tokio::test]
async fn presence_is_not_supported() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "p").await?;
    client.join("lobby").await?;
    let code = client
        .call_err(json!({"op": "presence", "room": "lobby"}))
        .await?;
    ensure!(code == "not_supported", "{code}");
    Ok(())
}

/// A `join` with `since` in a room without history is `{"ok":true,"recovered":false}`.
#[tokio::test]
async fn join_with_since_in_a_room_without_history_is_not_recovered() -> Result<()> {
    let deployment = single(options()).await?;
    let mut client = connect_user(&deployment, 0, "s").await?;
    let plain = client.join("plain").await?;
    ensure!(
        plain["recovered"] == false,
        "join reply in a room without history: {plain}"
    );
    let reply = client
        .call_ok(json!({"op": "join", "room": "lobby", "since": {"epoch": "e1", "seq": 4}}))
        .await?;
    ensure!(reply["recovered"] == false, "{reply}");
    for key in ["epoch", "seq", "missed"] {
        ensure!(
            reply.get(key).is_none(),
            "`{key}` in a room without history: {reply}"
        );
    }
    Ok(())
}

/// A `join` in a namespace configured with `history_size > 0` is answered, never
/// crashed on or ignored: `not_supported` while history is not built, else the room's
/// position (`epoch`, `seq` 0 for a new room); other namespaces still work.
#[tokio::test]
async fn join_in_a_history_namespace_is_answered() -> Result<()> {
    let deployment = single(options().set("namespaces.chat.history_size", 10)).await?;
    let mut client = connect_user(&deployment, 0, "h").await?;
    let reply = client
        .call(json!({"op": "join", "room": "chat:lobby"}))
        .await?;
    if wsgate_tests::error_code(&reply) != Some("not_supported") {
        ensure!(reply["ok"] == true, "join in a history namespace: {reply}");
        ensure!(
            reply["epoch"].is_string() && reply["seq"] == 0,
            "no position: {reply}"
        );
    }
    client.join("news:x").await?;
    Ok(())
}

/// In a namespace with `client_publish = false`, clients get `forbidden` for `publish`
/// (members still receive what a backend publishes there).
#[tokio::test]
async fn a_namespace_without_client_publish_takes_only_backend_messages() -> Result<()> {
    let deployment = single(options().set("namespaces.news.client_publish", false)).await?;
    let mut client = connect_user(&deployment, 0, "reader").await?;
    client.join("news:today").await?;
    let code = client
        .call_err(json!({"op": "publish", "room": "news:today", "data": 1}))
        .await?;
    ensure!(code == "forbidden", "client publish in news: {code}");
    deployment
        .gateway(0)
        .api(
            "/api/v1/publish",
            &json!({"room": "news:today", "data": "from the backend"}),
        )
        .await?;
    let message = client.next_message("news:today", FRAME).await?;
    ensure!(
        message["data"] == "from the backend" && message["from"].is_null(),
        "{message}"
    );
    client
        .publish("chat:x", json!("other namespaces are open"))
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Drain.

/// SIGTERM: `/readyz` turns 503 and new upgrades get 503 at once; every client gets
/// `reconnect` with `after_ms` within the spread, then close 1012 no earlier than that;
/// the process exits 0.
#[tokio::test]
async fn sigterm_drains_with_reconnect_then_1012_and_exits_0() -> Result<()> {
    let spread = 2000u64;
    let mut deployment = single(
        options()
            .set("drain.reconnect_spread_ms", spread)
            .set("drain.seconds", 10)
            .set("allowed_origins", json!(["https://app.example.com"])),
    )
    .await?;
    let url = deployment.ws_url(0);
    let room = unique_room("drain");
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut client = connect_user(&deployment, 0, &format!("d{i}")).await?;
        client.join(&room).await?;
        clients.push(client);
    }
    deployment.gateway_mut(0).signal(SIGTERM)?;
    let gateway = deployment.gateway(0);
    let mut after = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let event = client
            .next_of_type("reconnect", FRAME)
            .await
            .with_context(|| format!("client {i}"))?;
        let after_ms = event["after_ms"]
            .as_u64()
            .with_context(|| format!("after_ms: {event}"))?;
        ensure!(
            after_ms <= spread,
            "after_ms {after_ms} beyond the spread {spread}"
        );
        after.push((Instant::now(), after_ms));
    }
    let readyz = http::get(gateway.admin(), "/readyz").await?;
    ensure!(
        readyz.status == 503,
        "/readyz while draining: {}",
        readyz.status
    );
    let auth = format!("Bearer {}", Token::new("late").signed());
    let error = match Client::connect_with(&url, &[("Authorization", &auth)]).await {
        Ok(_) => anyhow::bail!("an upgrade was accepted while draining"),
        Err(error) => error,
    };
    ensure!(
        error.status() == Some(503),
        "upgrade while draining: {error}"
    );
    ensure!(
        error.header("retry-after").is_some(),
        "503 while draining without Retry-After"
    );
    ensure!(
        error.error_code().as_deref() == Some("unavailable"),
        "{error}"
    );
    let status = Client::handshake_status(
        &url,
        &[
            ("Authorization", "Bearer not-a-jwt"),
            ("Origin", "https://evil.example.net"),
        ],
    )
    .await?;
    ensure!(
        status == 503,
        "draining comes before origin and token: {status}"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .expect_close(1012, Duration::from_secs(10))
            .await
            .with_context(|| format!("client {i}"))?;
        let (seen, after_ms) = after[i];
        // The event was read at `seen`, a little after it was sent: allow 100 ms.
        let earliest =
            seen + Duration::from_millis(after_ms).saturating_sub(Duration::from_millis(100));
        ensure!(
            Instant::now() >= earliest,
            "client {i} closed before its after_ms {after_ms}"
        );
    }
    let status = deployment
        .gateway_mut(0)
        .wait_exit(Duration::from_secs(15))
        .await?;
    ensure!(status.code() == Some(0), "exit status {status}");
    Ok(())
}

/// At `drain.seconds` the connections whose `after_ms` has not passed yet are closed
/// with 1001, and the process exits 0.
#[tokio::test]
async fn drain_deadline_closes_the_rest_with_1001() -> Result<()> {
    let mut deployment = single(
        options()
            .set("drain.reconnect_spread_ms", 20_000)
            .set("drain.seconds", 1),
    )
    .await?;
    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(connect_user(&deployment, 0, &format!("d{i}")).await?);
    }
    deployment.gateway_mut(0).signal(SIGTERM)?;
    for (i, client) in clients.iter_mut().enumerate() {
        let event = client.next_of_type("reconnect", FRAME).await?;
        let after_ms = event["after_ms"].as_u64().context("after_ms")?;
        let (code, _) = client.wait_close(Duration::from_secs(10)).await?;
        let expected: &[u16] = if after_ms < 800 {
            &[1012]
        } else if after_ms > 1200 {
            &[1001]
        } else {
            &[1001, 1012]
        };
        ensure!(
            code.is_some_and(|c| expected.contains(&c)),
            "client {i} with after_ms {after_ms} closed with {code:?}, expected {expected:?}"
        );
    }
    let status = deployment
        .gateway_mut(0)
        .wait_exit(Duration::from_secs(10))
        .await?;
    ensure!(status.code() == Some(0), "exit status {status}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// HTTP endpoints and listeners.

/// `/metrics` is Prometheus text with `wsgate_` names (and the standard `process_*`
/// metrics, docs/metrics.md), and its connection and message counters move with traffic.
#[tokio::test]
async fn metrics_expose_connection_and_message_counters() -> Result<()> {
    let deployment = single(options()).await?;
    let gateway = deployment.gateway(0);
    let room = unique_room("metrics");
    let mut a = connect_user(&deployment, 0, "a").await?;
    let mut b = connect_user(&deployment, 0, "b").await?;
    a.join(&room).await?;
    b.join(&room).await?;
    for k in 0..3 {
        a.publish(&room, json!(k)).await?;
    }
    behaviour::collect_data(&mut b, &room, 3).await?;
    let status =
        Client::handshake_status(&deployment.ws_url(0), &[("Authorization", "Bearer bad")]).await?;
    ensure!(status == 401, "bad token: {status}");
    let text = gateway.metrics().await?;
    let samples: Vec<(String, f64)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    ensure!(!samples.is_empty(), "no samples in /metrics:\n{text}");
    for (name, _) in &samples {
        ensure!(
            name.starts_with("wsgate_") || name.starts_with("process_"),
            "metric {name} without the wsgate_ prefix"
        );
    }
    let connections = samples
        .iter()
        .filter(|(n, _)| n.contains("connection") && !n.contains("total") && !n.contains("slow"))
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    ensure!(
        connections >= 2.0,
        "no connection gauge at 2 or more:\n{text}"
    );
    let messages = samples
        .iter()
        .filter(|(n, _)| n.contains("message") && n.contains("total"))
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    ensure!(messages >= 3.0, "no message counter at 3 or more:\n{text}");
    let auth_failures = samples
        .iter()
        .filter(|(n, _)| n.contains("auth") && n.contains("total"))
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    ensure!(
        auth_failures >= 1.0,
        "no auth failure counter after a 401:\n{text}"
    );
    Ok(())
}

/// The public listener serves `/ws` but not the admin endpoints or the backend API
/// when an admin listener is configured; `/healthz` answers on the admin listener.
#[tokio::test]
async fn the_public_listener_does_not_serve_admin_endpoints() -> Result<()> {
    let deployment = single(options()).await?;
    let gateway = deployment.gateway(0);
    ensure!(
        gateway.public() != gateway.admin(),
        "one address despite --admin-listen"
    );
    ensure!(gateway.healthz().await? == 200, "/healthz");
    for path in ["/metrics", "/readyz", "/api/v1/stats"] {
        let response = wsgate_tests::http::Request::get(path)
            .bearer(gateway.api_key())
            .send(gateway.public())
            .await?;
        ensure!(
            response.status == 404,
            "{path} on the public listener: {}",
            response.status
        );
    }
    Ok(())
}

/// Without `--admin-listen`, one address serves `/ws` and the admin endpoints.
#[tokio::test]
async fn one_listener_serves_websocket_and_admin() -> Result<()> {
    let gateway = Gateway::start(options().single_listener()).await?;
    ensure!(
        gateway.public() == gateway.admin(),
        "admin {} != public {}",
        gateway.admin(),
        gateway.public()
    );
    ensure!(gateway.readyz().await? == 200, "/readyz");
    gateway.metrics().await?;
    let stats = gateway.stats().await?;
    ensure!(stats["partial"] == false, "{stats}");
    let client = Client::connect_token(&gateway.ws_url(), &Token::new("one").signed()).await?;
    ensure!(client.node() == "gw-0", "{:?}", client.welcome_frame());
    Ok(())
}

/// A backend API body over `limits.max_http_body_bytes` is 413 `too_large`.
#[tokio::test]
async fn backend_bodies_over_the_limit_are_too_large() -> Result<()> {
    let deployment = single(options().set("limits.max_http_body_bytes", 1024)).await?;
    let gateway = deployment.gateway(0);
    let body = json!({"room": "r", "data": "x".repeat(4096)});
    let response = gateway
        .api_post("/api/v1/publish", Some(gateway.api_key()), &body)
        .await?;
    ensure!(
        response.status == 413 && response.error_code().as_deref() == Some("too_large"),
        "{} {}",
        response.status,
        response.text()
    );
    gateway
        .api("/api/v1/publish", &json!({"room": "r", "data": "small"}))
        .await?;
    Ok(())
}

/// Tokens, the JWT secret and API keys never appear in the logs, at debug level too.
#[tokio::test]
async fn secrets_never_appear_in_logs() -> Result<()> {
    let deployment = single(options().anonymous().env("RUST_LOG", "debug")).await?;
    let gateway = deployment.gateway(0);
    let url = deployment.ws_url(0);
    let good = Token::new("logged").all_rooms().signed();
    let forged = Token::new("logged").hs256("a-forged-secret-that-must-not-be-logged");
    let mut client = Client::connect_token(&url, &good).await?;
    client
        .call_ok(json!({"op": "refresh", "token": good}))
        .await?;
    let _ = Client::handshake_status(&format!("{url}?token={forged}"), &[]).await?;
    let _ =
        Client::handshake_status(&url, &[("Authorization", &format!("Bearer {forged}"))]).await?;
    let mut anon = Client::connect_anonymous(&url).await?;
    let _ = anon.call(json!({"op": "auth", "token": forged})).await?;
    let _ = gateway
        .api_post(
            "/api/v1/publish",
            Some("wrong-key-must-not-be-logged"),
            &json!({"room": "r", "data": 1}),
        )
        .await?;
    gateway
        .api("/api/v1/publish", &json!({"room": "r", "data": 1}))
        .await?;
    drop((client, anon));
    let logs = [gateway.stdout_lines(), gateway.stderr_lines()]
        .concat()
        .join("\n");
    for (what, secret) in [
        ("the JWT secret", wsgate_tests::TEST_JWT_SECRET),
        ("the API key", wsgate_tests::TEST_API_KEY),
        ("a wrong API key", "wrong-key-must-not-be-logged"),
        ("a good token", good.as_str()),
        ("a forged token", forged.as_str()),
        (
            "a token's signature",
            good.rsplit('.').next().unwrap_or_default(),
        ),
    ] {
        ensure!(!logs.contains(secret), "{what} appears in the logs");
    }
    Ok(())
}

/// `--log-format json` writes every log line as one JSON object.
#[tokio::test]
async fn json_logs_are_one_object_per_line() -> Result<()> {
    let deployment = single(options().arg("--log-format", "json")).await?;
    let mut client = connect_user(&deployment, 0, "json").await?;
    client.join("lobby").await?;
    client.close().await;
    let lines = deployment.gateway(0).stderr_lines();
    ensure!(!lines.is_empty(), "no log lines at all");
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(value.is_object(), "not an object: {line}");
    }
    Ok(())
}

/// `--echo-endpoint` serves a plain echo WebSocket at `/echo` (no auth, no origin
/// check, messages up to 16 MiB); without it there is no `/echo`.
#[tokio::test]
async fn the_echo_endpoint_echoes_only_when_enabled() -> Result<()> {
    let plain = single(options()).await?;
    let url = format!("ws://{}/echo", plain.gateway(0).public());
    let status = Client::handshake_status(&url, &[]).await?;
    ensure!(status == 404, "/echo without --echo-endpoint: {status}");
    drop(plain);
    let deployment = single(
        options()
            .flag("--echo-endpoint")
            .set("allowed_origins", json!(["https://app.example.com"])),
    )
    .await?;
    let url = format!("ws://{}/echo", deployment.gateway(0).public());
    let mut client = Client::connect_with(&url, &[("Origin", "https://evil.example.net")]).await?;
    client.send_text("{\"not\":\"a command\"}").await?;
    let echoed = client.next_json(FRAME).await?;
    ensure!(echoed == json!({"not": "a command"}), "{echoed}");
    let big = json!("e".repeat(1 << 20));
    client.send_json(&big).await?;
    ensure!(
        client.next_json(FRAME).await? == big,
        "the 1 MiB message came back changed"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Configuration.

/// An unknown key, a mistyped value or a missing file is one line on stderr and exit
/// status 2.
#[tokio::test]
async fn invalid_configuration_exits_2_with_one_line() -> Result<()> {
    let cases = [
        (
            "unknown key",
            GatewayOptions::new().set("limits.heartbeat_msec", 5),
        ),
        (
            "mistyped value",
            GatewayOptions::new().set("limits.send_queue", "many"),
        ),
        (
            "unknown top-level key",
            GatewayOptions::new().set("listen_on", "x"),
        ),
        (
            "bad flag value",
            GatewayOptions::new().arg("--max-connections", "lots"),
        ),
    ];
    for (what, options) in cases {
        let exited = options
            .run_to_exit(Duration::from_secs(10))
            .await
            .context(what)?;
        ensure!(
            exited.status.code() == Some(2),
            "{what}: exit {} stderr {:?}",
            exited.status,
            exited.stderr
        );
        let lines: Vec<&String> = exited
            .stderr
            .iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        ensure!(
            lines.len() == 1,
            "{what}: expected one stderr line, got {lines:?}"
        );
        ensure!(
            exited
                .stdout
                .iter()
                .all(|l| !l.starts_with("wsgate listening")),
            "{what}: it started listening"
        );
    }
    let exited = GatewayOptions::new()
        .set("limits.heartbeat_msec", 5)
        .run_to_exit(Duration::from_secs(10))
        .await?;
    ensure!(
        exited.stderr.concat().contains("heartbeat_msec"),
        "the line does not name the key: {:?}",
        exited.stderr
    );
    Ok(())
}

/// In a file with a newer `version`, unknown keys are warnings: the gateway starts and
/// serves (an older image under a newer operator).
#[tokio::test]
async fn unknown_keys_in_a_newer_file_version_are_warnings() -> Result<()> {
    let gateway = Gateway::start(
        options()
            .file_version(2)
            .set("limits.from_the_future", 1)
            .set("future_section.key", true),
    )
    .await?;
    let client = Client::connect_token(&gateway.ws_url(), &Token::new("v2").signed()).await?;
    ensure!(client.node() == "gw-0", "{:?}", client.welcome_frame());
    let logs = gateway.stderr_lines().join("\n");
    ensure!(
        logs.contains("from_the_future"),
        "no warning naming the unknown key:\n{logs}"
    );
    Ok(())
}

/// `wsgate --check-config FILE` exits 0 for a valid file and 2 for an invalid one.
#[tokio::test]
async fn check_config_validates_without_starting() -> Result<()> {
    let dir = wsgate_tests::TempDir::new("check-config")?;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GatewayOptions::new().toml())?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, GatewayOptions::new().set("limits.nonsense", 1).toml())?;
    for (file, expected) in [(&good, 0), (&bad, 2)] {
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(wsgate_tests::wsgate_binary())
                .arg("--check-config")
                .arg(file)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("--check-config did not finish")??;
        ensure!(
            output.status.code() == Some(expected),
            "--check-config {}: {} {}",
            file.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

//! Hostile frames against a real gateway (issue 8, "Bad input"): each frame of the matrix
//! gets the close code RFC 6455 and docs/protocol.md give it, or an error reply on a connection
//! that stays open, and lying length headers cost no memory.
//!
//! Run serially: `cargo test -p wsgate-tests --test hostile -- --test-threads=1`.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;
use wsgate_tests::raw::{Ending, RawSocket, encode, header_only, opcode, vm_rss_kib};
use wsgate_tests::{Gateway, GatewayOptions};

const WAIT: Duration = Duration::from_secs(10);

/// An anonymous single-node gateway with the default 64 KiB message limit.
async fn gateway() -> Result<Gateway> {
    Gateway::start(GatewayOptions::new().anonymous()).await
}

/// A raw connection past its welcome frame.
async fn connect(gateway: &Gateway) -> Result<RawSocket> {
    let mut socket = RawSocket::connect(gateway.public(), "/ws").await?;
    let welcome: Value = serde_json::from_str(&socket.next_text(WAIT).await?)?;
    ensure!(
        welcome["type"] == "welcome",
        "expected the welcome, got {welcome}"
    );
    Ok(socket)
}

/// Sends `command` (JSON text) and returns the reply with its `id`.
async fn call(socket: &mut RawSocket, command: &str) -> Result<Value> {
    socket.text(command).await?;
    loop {
        let frame: Value = serde_json::from_str(&socket.next_text(WAIT).await?)?;
        if frame.get("id").is_some() || frame.get("error").is_some() {
            return Ok(frame);
        }
    }
}

/// The connection still answers a `ping` op.
async fn still_open(socket: &mut RawSocket) -> Result<()> {
    let reply = call(socket, r#"{"op":"ping","id":424242}"#).await?;
    ensure!(reply["ok"] == true, "ping after hostile input: {reply}");
    Ok(())
}

fn error_code(reply: &Value) -> Option<&str> {
    reply["error"]["code"].as_str()
}

/// Every protocol violation of the matrix closes with its code: 1007 for invalid UTF-8
/// (whole or split across fragments), 1002 for fragmented or oversized control frames,
/// unmasked frames, reserved bits, unknown opcodes and a continuation with nothing to
/// continue, 1009 for a message over the limit however it is fragmented.
#[tokio::test]
async fn hostile_frames_close_with_the_right_code() -> Result<()> {
    let gateway = gateway().await?;
    let chunk = vec![b' '; 4096];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8",
            encode(true, opcode::TEXT, &[b'{', 0xff, 0xfe, b'}'], true),
            1007,
        ),
        (
            "invalid UTF-8 split across fragments",
            [
                encode(
                    false,
                    opcode::TEXT,
                    "{\"op\":\"ping\",\"x\":\"\u{e9}".as_bytes(),
                    true,
                ),
                encode(true, opcode::CONTINUATION, &[0xc3, 0x28, b'"', b'}'], true),
            ]
            .concat(),
            1007,
        ),
        (
            "a truncated UTF-8 sequence at the end of a message",
            encode(true, opcode::TEXT, &[b'"', 0xe2, 0x82], true),
            1007,
        ),
        (
            "fragmented ping",
            encode(false, opcode::PING, b"x", true),
            1002,
        ),
        (
            "fragmented close",
            encode(false, opcode::CLOSE, &1000u16.to_be_bytes(), true),
            1002,
        ),
        (
            "ping of 126 bytes",
            encode(true, opcode::PING, &[b'p'; 126], true),
            1002,
        ),
        (
            "unmasked frame",
            encode(true, opcode::TEXT, b"{}", false),
            1002,
        ),
        (
            "reserved bit RSV1 without an extension",
            {
                let mut frame = encode(true, opcode::TEXT, b"{}", true);
                frame[0] |= 0x40;
                frame
            },
            1002,
        ),
        ("reserved opcode 0x3", encode(true, 0x3, b"", true), 1002),
        (
            "reserved control opcode 0xB",
            encode(true, 0xB, b"", true),
            1002,
        ),
        (
            "continuation without a start",
            encode(true, opcode::CONTINUATION, b"x", true),
            1002,
        ),
        (
            "a new text frame inside a fragmented message",
            [
                encode(false, opcode::TEXT, b"{", true),
                encode(true, opcode::TEXT, b"{}", true),
            ]
            .concat(),
            1002,
        ),
        (
            "a 1 GiB length header",
            header_only(true, opcode::TEXT, 1 << 30),
            1009,
        ),
        (
            "a 2^63-1 length header",
            header_only(true, opcode::BINARY, i64::MAX as u64),
            1009,
        ),
        (
            "68 KiB in 4 KiB fragments",
            {
                let mut frames = encode(false, opcode::TEXT, &chunk, true);
                for _ in 0..15 {
                    frames.extend(encode(false, opcode::CONTINUATION, &chunk, true));
                }
                frames.extend(encode(true, opcode::CONTINUATION, &chunk, true));
                frames
            },
            1009,
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes, expected) in cases {
        let mut socket = connect(&gateway).await?;
        socket.write(&bytes).await?;
        let ending = socket.ending(WAIT).await?;
        println!("{name}: {ending:?}");
        if ending != Ending::Close(Some(expected)) {
            failures.push(format!("{name}: expected close {expected}, got {ending:?}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Hostile JSON gets an error reply (or is accepted) and the connection stays open: deep
/// nesting, huge and long numbers, binary frames, control frames between fragments.
#[tokio::test]
async fn hostile_json_gets_a_reply_and_the_connection_stays_open() -> Result<()> {
    let gateway = gateway().await?;
    let mut socket = connect(&gateway).await?;

    // 30,000 levels of arrays and of objects, within the 64 KiB limit.
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let depth = if open == "[" { 30_000 } else { 10_000 };
        let frame = format!(
            r#"{{"op":"publish","id":1,"room":"deep","data":{}0{}}}"#,
            open.repeat(depth),
            close.repeat(depth)
        );
        ensure!(frame.len() < 65_536);
        let reply = call(&mut socket, &frame).await?;
        println!("nesting {depth} of {open}: {reply}");
        // The gateway never parses `data` recursively: accepted or refused, it survives.
        ensure!(
            reply["ok"] == true || error_code(&reply) == Some("bad_request"),
            "deep nesting: {reply}"
        );
        still_open(&mut socket).await?;
    }

    // Ids that are not i64/u64 integers are bad requests; data may hold any JSON number.
    for id in [
        "1e999999",
        "99999999999999999999999999",
        "-99999999999999999999",
        "1.5",
        "1e2",
    ] {
        let reply = call(&mut socket, &format!(r#"{{"op":"ping","id":{id}}}"#)).await?;
        println!("id {id}: {reply}");
        ensure!(
            error_code(&reply) == Some("bad_request"),
            "id {id}: {reply}"
        );
    }
    let long_integer = "9".repeat(60_000);
    for data in [
        "1e400",
        "-1e-400",
        long_integer.as_str(),
        "123456789012345678901234567890.5e-99999",
    ] {
        let reply = call(
            &mut socket,
            &format!(r#"{{"op":"publish","id":7,"room":"numbers","data":{data}}}"#),
        )
        .await?;
        println!("data of {} bytes: {reply}", data.len());
        ensure!(
            reply["ok"] == true || error_code(&reply) == Some("bad_request"),
            "number data: {reply}"
        );
        still_open(&mut socket).await?;
    }

    // A binary frame is a bad request, not a close.
    socket.frame(true, opcode::BINARY, b"\x00\x01").await?;
    let reply: Value = serde_json::from_str(&socket.next_text(WAIT).await?)?;
    ensure!(
        error_code(&reply) == Some("bad_request"),
        "binary frame: {reply}"
    );

    // Pings and pongs between the fragments of a message are allowed (RFC 6455 §5.4).
    socket.frame(false, opcode::TEXT, br#"{"op":"pi"#).await?;
    socket.frame(true, opcode::PING, b"between").await?;
    socket.frame(true, opcode::PONG, b"").await?;
    socket
        .frame(true, opcode::CONTINUATION, br#"ng","id":5}"#)
        .await?;
    let reply = loop {
        let frame = socket.next_frame(WAIT).await?.expect("open");
        if frame.opcode == opcode::TEXT {
            break serde_json::from_str::<Value>(&frame.text())?;
        }
    };
    ensure!(
        reply["id"] == 5 && reply["ok"] == true,
        "fragmented ping op: {reply}"
    );
    still_open(&mut socket).await?;
    Ok(())
}

/// Lying length headers cost nothing: 200 connections each announcing a 1 GiB message, and
/// 200 each sending 60 KiB of a message and then stalling, leave the gateway's resident
/// memory within 64 MiB of where it started.
#[tokio::test]
async fn lying_length_headers_and_stalled_messages_cost_bounded_memory() -> Result<()> {
    let gateway = gateway().await?;
    let pid = gateway.pid();
    // Warm up: a few connections so that the baseline includes the runtime's steady state.
    for _ in 0..5 {
        let socket = connect(&gateway).await?;
        drop(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = vm_rss_kib(pid)?;

    let mut sockets = Vec::new();
    for _ in 0..200 {
        let mut socket = connect(&gateway).await?;
        socket
            .write(&header_only(true, opcode::TEXT, 1 << 30))
            .await?;
        socket.write(&[0u8; 4096]).await?;
        sockets.push(socket);
    }
    let mut peak = 0;
    for socket in &mut sockets {
        let ending = socket.ending(WAIT).await?;
        ensure!(
            ending == Ending::Close(Some(1009)),
            "1 GiB header: {ending:?}"
        );
        peak = peak.max(vm_rss_kib(pid)?);
    }
    sockets.clear();

    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut socket = connect(&gateway).await?;
        // A frame announcing 60 KiB (under the limit) of which all but one byte arrives.
        let payload = vec![b' '; 60 * 1024];
        let frame = encode(true, opcode::TEXT, &payload, true);
        socket.write(&frame[..frame.len() - 1]).await?;
        stalled.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    peak = peak.max(vm_rss_kib(pid)?);
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib(pid)?;
    println!(
        "VmRSS: before {before} KiB, peak {peak} KiB (+{} KiB), after {after} KiB",
        peak.saturating_sub(before)
    );
    ensure!(
        peak < before + 64 * 1024,
        "resident memory grew from {before} KiB to {peak} KiB"
    );
    let mut socket = connect(&gateway).await?;
    still_open(&mut socket).await?;
    Ok(())
}

/// `data` nested deeper than common JSON parsers accept (serde_json's default limit is 128
/// levels, Python's about 1,000) is refused with `bad_request`, so that one publisher cannot
/// send members a message their parsers fail on.
#[tokio::test]
async fn data_nested_deeper_than_parsers_accept_is_refused() -> Result<()> {
    let gateway = gateway().await?;
    let mut member = connect(&gateway).await?;
    let reply = call(&mut member, r#"{"op":"join","id":1,"room":"deep"}"#).await?;
    ensure!(reply["ok"] == true, "join: {reply}");
    let mut publisher = connect(&gateway).await?;
    let frame = format!(
        r#"{{"op":"publish","id":2,"room":"deep","data":{}0{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let reply = call(&mut publisher, &frame).await?;
    ensure!(
        error_code(&reply) == Some("bad_request"),
        "1,000 levels of nesting: {reply}"
    );
    Ok(())
}

//! `--prefill-rooms`: before the load, one connection publishes one message to
//! each of N rooms, so the gateways' history holds N rooms while the scenario
//! measures publish latency. The cost of a history publish must not grow with
//! the number of rooms the history holds (issue 15); this is how that is
//! measured.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Endpoint, Frame};

/// Publishes in flight at once on the prefilling connection: below the 256
/// deferred replies a connection may have outstanding (docs/protocol.md).
const IN_FLIGHT: u64 = 128;

/// The name of prefilled room `index`: apart from the scenario's rooms.
pub fn room_name(index: u64) -> String {
    format!("prefill-{index}")
}

/// Publishes one message to each of `rooms` rooms through `url`, pipelined,
/// and waits for every reply; returns how long it took.
///
/// # Errors
/// A refused connection, an error reply, or the connection closing.
pub async fn prefill(url: &str, secret: &str, rooms: u64) -> Result<Duration> {
    let started = Instant::now();
    let endpoint = Endpoint::resolve(url).await?;
    let token = client::token(secret, "prefill")?;
    let mut ws = client::open(&endpoint, None, Some(&token))
        .await
        .map_err(|error| anyhow::anyhow!("prefill connection: {error:?}"))?;
    let mut sent = 0u64;
    let mut answered = 0u64;
    let mut welcomed = false;
    while answered < rooms {
        while welcomed && sent < rooms && sent - answered < IN_FLIGHT {
            let publish = serde_json::json!({
                "op": "publish",
                "id": sent + 1,
                "room": room_name(sent),
                "data": {"prefill": sent},
            });
            ws.feed(Message::text(publish.to_string())).await?;
            sent += 1;
        }
        ws.flush().await?;
        let message = ws.next().await.context("prefill connection closed")??;
        match message {
            Message::Text(text) => {
                let frame: Frame<'_> = serde_json::from_str(text.as_str())
                    .with_context(|| format!("unreadable frame {text}"))?;
                if let Some(error) = &frame.error {
                    bail!("prefill publish refused: {}", error.code);
                }
                if frame.kind == Some("welcome") {
                    welcomed = true;
                } else if frame.id.is_some() && frame.ok == Some(true) {
                    answered += 1;
                }
            }
            Message::Close(frame) => bail!("prefill connection closed: {frame:?}"),
            _ => {}
        }
    }
    client::close(ws).await;
    Ok(started.elapsed())
}

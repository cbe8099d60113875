//! The metrics contract (docs/metrics.md, issue 19): a real gateway's `/metrics`
//! and the operator's metrics list exactly the metrics, types and labels the
//! document lists, and the counters that used to mislead now say what happened
//! (a dropped TCP connection is not a protocol error).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use wsgate_tests::behaviour::{options, user_token};
use wsgate_tests::raw::RawSocket;
use wsgate_tests::{Client, Gateway, GatewayOptions, eventually};

/// One metric as Prometheus stores it: its type and the label names seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
}

/// The metrics of an OpenMetrics exposition, by the name Prometheus stores
/// (counters `_total`, info `_info`; a histogram by its base name). Labels are
/// those of the samples (`le` aside), empty when a family has no series yet.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Metric>> {
    let mut metrics = BTreeMap::new();
    let mut families: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').context("TYPE line")?;
            let stored = match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            };
            metrics.insert(
                stored.clone(),
                Metric {
                    kind: kind.to_owned(),
                    labels: BTreeSet::new(),
                },
            );
            families.push((stored, kind.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).context("sample line")?;
        let sample = &line[..name_end];
        let family = families
            .iter()
            .rev()
            .find(|(stored, kind)| {
                sample == stored
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| sample == format!("{stored}{suffix}")))
            })
            .map(|(stored, _)| stored.clone())
            .with_context(|| format!("sample {sample} outside its family"))?;
        if let Some(labels) = line[name_end..].strip_prefix('{') {
            let labels = &labels[..labels.find('}').context("label set")?];
            let entry = metrics.get_mut(&family).context("family")?;
            for pair in split_labels(labels) {
                let (label, _) = pair.split_once('=').context("label")?;
                if label != "le" {
                    entry.labels.insert(label.to_owned());
                }
            }
        }
    }
    Ok(metrics)
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(labels: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}

/// The metrics docs/metrics.md lists under `heading`: the table rows whose
/// first cell is a metric name.
fn documented(heading: &str) -> Result<BTreeMap<String, Metric>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let section = text
        .split("\n## ")
        .find(|section| section.starts_with(heading))
        .with_context(|| format!("no section {heading}"))?;
    let mut metrics = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|label| label.trim().trim_matches('`'))
            .filter(|label| !label.is_empty())
            .map(str::to_owned)
            .collect();
        let metric = Metric {
            kind: cells[2].to_owned(),
            labels,
        };
        ensure!(
            metrics.insert(name.clone(), metric).is_none(),
            "{name} twice"
        );
    }
    ensure!(!metrics.is_empty(), "no metric under {heading}");
    Ok(metrics)
}

/// Compares the document with a scrape: the same names and types, and the
/// labels of every family with series. Returns every difference.
fn differences(
    documented: &BTreeMap<String, Metric>,
    scraped: &BTreeMap<String, Metric>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, metric) in scraped {
        match documented.get(name) {
            None => problems.push(format!(
                "{name} ({}) is exported but not documented",
                metric.kind
            )),
            Some(doc) if doc.kind != metric.kind => problems.push(format!(
                "{name}: documented as {}, exported as {}",
                doc.kind, metric.kind
            )),
            Some(doc) if !metric.labels.is_empty() && doc.labels != metric.labels => {
                problems.push(format!(
                    "{name}: documented labels {:?}, exported {:?}",
                    doc.labels, metric.labels
                ))
            }
            Some(_) => {}
        }
    }
    for name in documented.keys() {
        if !scraped.contains_key(name) {
            problems.push(format!("{name} is documented but not exported"));
        }
    }
    problems
}

/// The operator's metrics: what `wsgate-operator metrics` prints, the same
/// encoding `/metrics` serves (the controller itself needs a cluster).
fn operator_metrics() -> Result<String> {
    let binary = std::env::var_os("WSGATE_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| wsgate_tests::wsgate_binary().with_file_name("wsgate-operator"));
    let output = std::process::Command::new(&binary)
        .arg("metrics")
        .output()
        .with_context(|| {
            format!(
                "running {} metrics (cargo build -p wsgate-operator)",
                binary.display()
            )
        })?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// A gateway with a history namespace, after a little of everything: a
/// join, a publish, an API request, a leave.
async fn busy_gateway() -> Result<Gateway> {
    let gateway = Gateway::start(options().set("namespaces.hist.history_size", 10)).await?;
    let mut client = Client::connect_token(&gateway.ws_url(), &user_token("ada")).await?;
    client.join("hist:lobby").await?;
    client.publish("hist:lobby", json!({"text": "hi"})).await?;
    client
        .next_message("hist:lobby", Duration::from_secs(5))
        .await?;
    gateway
        .api_post(
            "/api/v1/publish",
            Some(gateway.api_key()),
            &json!({"room": "hist:lobby", "data": 1}),
        )
        .await?;
    client.leave("hist:lobby").await?;
    client.close().await;
    Ok(gateway)
}

/// docs/metrics.md lists every metric a real gateway exports, with its type
/// and labels, and nothing it does not export.
#[tokio::test]
async fn docs_metrics_md_lists_exactly_what_a_gateway_exports() -> Result<()> {
    let gateway = busy_gateway().await?;
    let scraped = parse_exposition(&gateway.metrics().await?)?;
    let problems = differences(&documented("Gateway")?, &scraped);
    ensure!(
        problems.is_empty(),
        "docs/metrics.md and /metrics disagree:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// docs/metrics.md lists every metric the operator exports, with its type and
/// labels, and nothing it does not export.
#[test]
fn docs_metrics_md_lists_exactly_what_the_operator_exports() -> Result<()> {
    let scraped = parse_exposition(&operator_metrics()?)?;
    let problems = differences(&documented("Operator")?, &scraped);
    ensure!(
        problems.is_empty(),
        "docs/metrics.md and the operator disagree:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// The value of the sample `series` (name and labels as exported).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits until `series` has `want`; fails with its last value otherwise.
async fn wait_for(gateway: &Gateway, series: &str, want: f64) -> Result<String> {
    let found = eventually(Duration::from_secs(10), series, || async {
        let text = gateway.metrics().await?;
        Ok((value(&text, series) == Some(want)).then_some(text))
    })
    .await;
    match found {
        Ok(text) => Ok(text),
        Err(error) => {
            let last = gateway.metrics().await.unwrap_or_default();
            bail!("{error:#}: {series} is {:?}", value(&last, series))
        }
    }
}

/// A client that drops TCP counts as a lost connection (network, 1006), a
/// client's close frame as the client's, and neither as a protocol error
/// (1002) or a normal close (1000) the server made.
#[tokio::test]
async fn a_dropped_connection_is_not_counted_as_a_protocol_error() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::new().anonymous()).await?;
    let mut socket = RawSocket::connect(gateway.public(), "/ws").await?;
    socket.next_text(Duration::from_secs(5)).await?;
    socket.abort();
    let text = wait_for(
        &gateway,
        r#"wsgate_closes_total{initiator="network",code="1006"}"#,
        1.0,
    )
    .await?;
    for series in [
        r#"wsgate_closes_total{initiator="server",code="1002"}"#,
        r#"wsgate_closes_total{initiator="server",code="1000"}"#,
    ] {
        ensure!(value(&text, series) == Some(0.0), "{series} moved:\n{text}");
    }

    let client = Client::connect_anonymous(&gateway.ws_url()).await?;
    client.close().await;
    let text = wait_for(
        &gateway,
        r#"wsgate_closes_total{initiator="client",code="1005"}"#,
        1.0,
    )
    .await?;
    ensure!(
        value(
            &text,
            r#"wsgate_closes_total{initiator="server",code="1000"}"#
        ) == Some(0.0),
        "a client's close counted as the server's:\n{text}"
    );
    Ok(())
}

/// With the in-process broker the gateway is one live node, ready, with its
/// build; messages delivered are counted apart from every frame queued, and
/// the backend API's requests by route and status.
#[tokio::test]
async fn a_single_node_reports_itself_and_counts_messages_apart_from_frames() -> Result<()> {
    let gateway = busy_gateway().await?;
    let text = gateway.metrics().await?;
    for (series, want) in [
        ("wsgate_nodes", 1.0),
        ("wsgate_ready", 1.0),
        ("wsgate_draining", 0.0),
        ("wsgate_broker_connected", 1.0),
        ("wsgate_joins_total", 1.0),
        ("wsgate_leaves_total", 1.0),
        (r#"wsgate_history_available{namespace="hist"}"#, 1.0),
        (
            r#"wsgate_api_requests_total{endpoint="/api/v1/publish",status="200"}"#,
            1.0,
        ),
    ] {
        ensure!(
            value(&text, series) == Some(want),
            "{series} is not {want}:\n{text}"
        );
    }
    let delivered = value(&text, "wsgate_messages_delivered_total").context("delivered")?;
    let frames = value(&text, "wsgate_frames_queued_total").context("frames")?;
    // The client's own message, then the API's, reached the one member (if
    // the API's arrived before the leave); the welcome and every reply are
    // frames, not messages.
    ensure!(
        (1.0..=2.0).contains(&delivered),
        "delivered {delivered}:\n{text}"
    );
    ensure!(
        frames >= delivered + 4.0,
        "frames {frames}, delivered {delivered}"
    );
    ensure!(
        value(&text, "wsgate_received_bytes_total").unwrap_or(0.0) > 0.0
            && value(&text, "wsgate_sent_bytes_total").unwrap_or(0.0) > 0.0,
        "bytes not counted:\n{text}"
    );
    ensure!(
        text.contains("wsgate_build_info{version=\""),
        "no build info:\n{text}"
    );
    ensure!(
        value(&text, "process_open_fds").unwrap_or(0.0) > 0.0
            && value(&text, "process_max_fds").unwrap_or(0.0) > 0.0,
        "no process metrics:\n{text}"
    );

    let refused = gateway
        .api_post(
            "/api/v1/publish",
            Some("not-a-key"),
            &json!({"room": "r", "data": 1}),
        )
        .await?;
    ensure!(refused.status == 401, "status {}", refused.status);
    wait_for(
        &gateway,
        r#"wsgate_api_requests_total{endpoint="/api/v1/publish",status="401"}"#,
        1.0,
    )
    .await?;
    Ok(())
}

/// On NATS with JetStream: round trips and stored publishes are timed, the
/// registry counts both nodes, and a NATS restart counts one reconnect.
#[tokio::test]
async fn nats_round_trips_jetstream_publishes_and_reconnects_are_measured() -> Result<()> {
    let mut deployment = wsgate_tests::Deployment::start_jetstream(
        2,
        options().set("namespaces.hist.history_size", 10),
    )
    .await?;
    let gateway = deployment.gateway(0);
    let mut client = Client::connect_token(&deployment.ws_url(0), &user_token("ada")).await?;
    client
        .publish_seq("hist:lobby", json!({"text": "stored"}))
        .await?;
    let text = gateway.metrics().await?;
    ensure!(
        value(&text, "wsgate_jetstream_publish_seconds_count").unwrap_or(0.0) >= 1.0,
        "no JetStream publish timed:\n{text}"
    );
    eventually(
        Duration::from_secs(10),
        "a NATS round trip timed",
        || async {
            let text = gateway.metrics().await?;
            Ok((value(&text, "wsgate_nats_rtt_seconds_count").unwrap_or(0.0) >= 1.0).then_some(()))
        },
    )
    .await?;
    wait_for(gateway, "wsgate_nodes", 2.0).await?;
    ensure!(
        value(&text, "wsgate_nats_reconnects_total") == Some(0.0),
        "a reconnect before any outage:\n{text}"
    );
    drop(client);

    deployment.nats_mut().restart().await?;
    let gateway = deployment.gateway(0);
    wait_for(gateway, "wsgate_nats_reconnects_total", 1.0).await?;
    wait_for(gateway, "wsgate_broker_connected", 1.0).await?;
    Ok(())
}

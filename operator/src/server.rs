//! The operator's HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The router: metrics in the Prometheus text format and health probes.
/// `/readyz` answers once the process serves; leadership is not readiness
/// (a standby replica is healthy).
pub fn app(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(metrics)
}

async fn render_metrics(
    State(metrics): State<Metrics>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Serves [`app`] on `listen` until `shutdown` is cancelled.
///
/// # Errors
///
/// When the address cannot be bound or the server fails.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// `/metrics` serves the reconcile counters in the Prometheus format;
    /// the probes answer.
    #[tokio::test]
    async fn metrics_and_probes_are_served() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        let response = app(metrics.clone())
            .oneshot(http::Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("wsgate_operator_reconcile_total 1"), "{text}");
        assert!(
            text.contains("wsgate_operator_reconcile_duration_seconds"),
            "{text}"
        );
        for path in ["/healthz", "/readyz"] {
            let response = app(metrics.clone())
                .oneshot(http::Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }
}

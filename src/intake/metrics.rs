//! `GET /healthz` and `GET /metrics`.
//!
//! Why the counts come from the store at scrape time: requests by status,
//! steps by state and attempts are rows already; reading them is cheap (a few
//! GROUP BYs), agrees exactly with `lethe status`, and stays right when several
//! daemons share one PostgreSQL or one restarts. Only call latency and call
//! results live in memory (`crate::metrics`). No auth: the text holds no
//! identity and no request id, only counts per processor name.

use super::error::ApiError;
use super::AppState;
use crate::metrics::{global, ProcessorLabels, StatusLabels, StepLabels};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::Mutex;

/// `GET /healthz`: 200 when the store answers, 503 (JSON) when not.
pub async fn healthz(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    st.engine.store.ping().await?;
    Ok(Json(json!({"status": "ok", "store": "ok"})))
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
pub async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    // One scrape at a time: the store gauges are cleared and refilled.
    static SCRAPE: Mutex<()> = Mutex::const_new(());
    let _guard = SCRAPE.lock().await;
    let m = global();
    let store = &st.engine.store;
    let requests = store.request_counts().await?;
    let steps = store.step_counts().await?;
    let attempts = store.attempt_counts().await?;
    let outbox = store.outbox_counts().await?;
    m.requests.clear();
    for s in crate::domain::RequestStatus::ALL {
        // Every status is present (0 when none), so dashboards need no `or vector(0)`.
        let n = requests
            .iter()
            .find(|(k, _)| k == s.as_str())
            .map_or(0, |(_, n)| *n);
        m.requests
            .get_or_create(&StatusLabels {
                status: s.as_str().into(),
            })
            .set(n);
    }
    m.steps.clear();
    for (processor, state, n) in steps {
        m.steps
            .get_or_create(&StepLabels { processor, state })
            .set(n);
    }
    m.attempts.clear();
    for (processor, n) in attempts {
        m.attempts
            .get_or_create(&ProcessorLabels { processor })
            .set(n);
    }
    m.outbox.clear();
    for (status, n) in outbox {
        m.outbox.get_or_create(&StatusLabels { status }).set(n);
    }
    let now = crate::store::ms(chrono::Utc::now());
    let warn = st
        .engine
        .config
        .sla
        .warn_before
        .get()
        .as_millis()
        .min(i64::MAX as u128) as i64;
    m.overdue.set(store.count_due_between(i64::MIN, now).await?);
    m.due_soon.set(
        store
            .count_due_between(now, now.saturating_add(warn))
            .await?,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, m.registry())
        .map_err(|e| ApiError::unavailable(format!("cannot render metrics: {e}")))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

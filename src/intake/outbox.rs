//! Delivers status callbacks from the store's outbox.
//!
//! Why an outbox: a callback must not be lost when the daemon dies between a
//! state change and the HTTP call, nor sent for a change that was rolled back.
//! So the store writes the callback row in the same transaction as the change
//! (`Store::apply`, the claim, the insert), and this task only delivers rows:
//! it leases due ones (the lease is a `run_at` in the future, so a crashed
//! delivery is retried after it), POSTs them, and marks them delivered — or
//! schedules the next try with `backon`'s exponential backoff (the
//! `[intake.callback_retry]` policy), giving up (`dead`) after its
//! `max_attempts`. Rows for one destination go out in order: the store hands
//! out only the oldest undelivered row per (request, url).
//!
//! Delivery is at-least-once: receivers deduplicate by the `Lethe-Event-Id`
//! header. Bodies are signed with the callback key, not the webhook secret:
//! `Lethe-Signature: t=…,ed25519=…` over `"<t>.<raw body>"` (see
//! `signature.rs`). OpenDSR's own `X-OpenDSR-Signature` needs a CA-issued
//! X.509 certificate, which lethe does not have.
//!
//! Where a callback goes is checked again here, after DNS resolution
//! (`target.rs`): a target that resolves to an internal address is never
//! sent to, its row is marked dead with the reason. Redirects are not
//! followed (a 3xx is a failed delivery), and the client's resolver refuses
//! internal addresses at connect time too.

use super::opendsr::{opendsr_status, API_VERSION, PREFIX};
use super::signature;
use super::target::{check_resolved, AllowList};
use crate::engine::Engine;
use crate::store::{from_ms, ms, OutboxRow};
use chrono::Utc;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a leased row stays invisible to other deliverers.
const LEASE: Duration = Duration::from_secs(30);
/// Per-call timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per batch.
const BATCH: i64 = 32;

/// The body of one callback.
pub fn body(engine: &Engine, row: &OutboxRow, req: &crate::store::RequestRow) -> Value {
    let at = crate::store::rfc3339(row.created_at);
    if row.protocol == "opendsr" {
        json!({
            "api_version": API_VERSION,
            "controller_id": engine.config.intake.opendsr_controller_id,
            "expected_completion_time": from_ms(req.due_at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "subject_request_id": req.external_id.as_deref().and_then(|e| e.strip_prefix(PREFIX)),
            "request_status": opendsr_status(row.status, row.event != "created"),
            "status_callback_url": row.url,
        })
    } else {
        json!({
            "id": req.id,
            "external_id": req.external_id,
            "event": row.event,
            "status": row.status.as_str(),
            "at": at,
        })
    }
}

/// Deliver until `shutdown` resolves (a delivery in flight finishes first).
pub async fn run(
    engine: Arc<Engine>,
    secrets: Arc<super::Secrets>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let allow = Arc::new(
        super::target::AllowList::parse(&engine.config.intake.callback_allow).unwrap_or_default(),
    );
    let client = match reqwest::Client::builder()
        .user_agent(concat!("lethe/", env!("CARGO_PKG_VERSION")))
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(super::target::PublicOnly(Arc::clone(&allow))))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the callback HTTP client; callbacks stay queued");
            return;
        }
    };
    let idle = engine.config.worker.idle_poll.get();
    loop {
        // Stop between deliveries, never inside one: a delivery dropped
        // half-way could leave its store transaction open, holding SQLite's
        // write lock until the busy timeout while the daemon shuts down.
        if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
            break;
        }
        let delivered = deliver_due(&engine, &client, &secrets.callback, &allow).await;
        let sleep_for = match delivered {
            Ok(n) if n > 0 => continue,
            Ok(_) => match engine.store.next_outbox_wake().await {
                Ok(Some(at)) => Duration::from_millis(
                    (at - ms(Utc::now())).clamp(1, idle.as_millis() as i64) as u64,
                ),
                _ => idle,
            },
            Err(e) => {
                tracing::warn!(error = %e, "outbox: store unavailable");
                idle
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("outbox stopped");
}

/// Deliver one batch of due callbacks; returns how many were claimed.
async fn deliver_due(
    engine: &Engine,
    client: &reqwest::Client,
    key: &ed25519_dalek::SigningKey,
    allow: &AllowList,
) -> Result<usize, crate::store::StoreError> {
    let now = ms(Utc::now());
    let rows = engine
        .store
        .claim_outbox(now, now + LEASE.as_millis() as i64, BATCH)
        .await?;
    let n = rows.len();
    let futs = rows
        .into_iter()
        .map(|row| deliver_one(engine, client, key, allow, row));
    for r in futures::future::join_all(futs).await {
        r?;
    }
    Ok(n)
}

async fn deliver_one(
    engine: &Engine,
    client: &reqwest::Client,
    key: &ed25519_dalek::SigningKey,
    allow: &AllowList,
    row: OutboxRow,
) -> Result<(), crate::store::StoreError> {
    let Some(req) = engine.store.get_request(&row.request_id).await? else {
        return engine
            .store
            .outbox_failed(row.id, None, "the request no longer exists")
            .await;
    };
    let target = match check_resolved(&row.url, allow).await {
        Err(refused) => {
            crate::metrics::observe_callback("dead");
            tracing::warn!(request = %row.request_id, callback = row.id, error = %refused, "callback target refused");
            return engine.store.outbox_failed(row.id, None, &refused).await;
        }
        Ok(t) => t,
    };
    let result = match target {
        Err(unresolved) => Err(unresolved),
        Ok(()) => {
            let bytes = serde_json::to_vec(&body(engine, &row, &req)).unwrap_or_default();
            let sig = signature::sign_callback(key, Utc::now().timestamp(), &bytes);
            client
                .post(&row.url)
                .header("content-type", "application/json")
                .header("Lethe-Signature", sig)
                .header("Lethe-Event-Id", row.id.to_string())
                .body(bytes)
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else if e.is_connect() {
                        "connection refused or unreachable".to_string()
                    } else {
                        format!("request failed: {}", e.without_url())
                    }
                })
        }
    };
    let error = match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) if r.status().is_redirection() => Some(format!(
            "HTTP {} redirecting to {}; redirects are not followed",
            r.status().as_u16(),
            crate::connectors::redirect::location_host(&row.url, r.headers())
        )),
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Some(e),
    };
    let Some(error) = error else {
        crate::metrics::observe_callback("delivered");
        tracing::info!(request = %row.request_id, callback = row.id, event = %row.event, status = %row.status, "callback delivered");
        return engine.store.outbox_delivered(row.id, ms(Utc::now())).await;
    };
    let policy = &engine.config.intake.callback_retry;
    let retry_at = (row.attempts < policy.max_attempts as i64).then(|| {
        let wait = policy.delay_after(row.attempts.max(1) as u32);
        ms(Utc::now()) + wait.as_millis().min(i64::MAX as u128) as i64
    });
    crate::metrics::observe_callback(if retry_at.is_some() { "retry" } else { "dead" });
    tracing::warn!(
        request = %row.request_id,
        callback = row.id,
        attempts = row.attempts,
        error = %error,
        gave_up = retry_at.is_none(),
        "callback not delivered"
    );
    engine.store.outbox_failed(row.id, retry_at, &error).await
}

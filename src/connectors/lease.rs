//! The lease an attempt runs under, as seen by the connector about to send.
//!
//! A worker claims a step for `lease` by the database's clock; if it stalls
//! (SIGSTOP, a long GC-like pause, a lost database) another worker takes the
//! step over once that lease has expired. Two calls for one step must then never
//! be in flight at once: the first one's result would be fenced out by its lease
//! token, but its *effect* at the processor cannot be. So every connector asks
//! [`before_send`] right before it puts a request on the wire: the call is
//! sent only if the lease, by this process's monotonic clock, still covers the
//! whole call timeout. The deadline is a lower bound of the lease in the store
//! (it is taken before the claim or heartbeat statement is sent, and the
//! database stamps `now() + lease` after it arrives), so no clock has to agree
//! with another.
//!
//! `before_send` also remembers whether a call with an effect (anything but
//! GET/HEAD) was sent, so the engine knows when a failed erase may have
//! reached the processor.
//!
//! The lease travels as a task-local, so the connectors' signatures do not
//! change; outside a worker (checks, tests) there is none and nothing is refused.

use super::ConnectorError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

tokio::task_local! {
    static LEASE: Lease;
}

/// The lease of one attempt, shared by the worker's heartbeat and the call.
#[derive(Debug, Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Instant,
    /// Deadline, in milliseconds after `base`.
    deadline_ms: AtomicU64,
    lost: AtomicBool,
    effect_calls: AtomicU64,
}

impl Lease {
    /// A lease that holds until `deadline` (this process's monotonic clock).
    pub fn until(deadline: Instant) -> Lease {
        let base = Instant::now();
        let l = Lease {
            inner: Arc::new(Inner {
                base,
                deadline_ms: AtomicU64::new(0),
                lost: AtomicBool::new(false),
                effect_calls: AtomicU64::new(0),
            }),
        };
        l.extend(deadline);
        l
    }

    /// The lease was renewed until `deadline` (never moves it back).
    pub fn extend(&self, deadline: Instant) {
        let ms = deadline
            .saturating_duration_since(self.inner.base)
            .as_millis()
            .min(u64::MAX as u128) as u64;
        self.inner.deadline_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.inner.base + Duration::from_millis(self.inner.deadline_ms.load(Ordering::SeqCst))
    }

    /// Another claim took the step over: nothing may be sent any more.
    pub fn lose(&self) {
        self.inner.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst)
    }

    /// Whether a call with an effect (not GET/HEAD) was put on the wire.
    pub fn effect_sent(&self) -> bool {
        self.effect_calls() > 0
    }

    /// How many calls with an effect were put on the wire.
    pub fn effect_calls(&self) -> u64 {
        self.inner.effect_calls.load(Ordering::SeqCst)
    }

    /// May a call that can take up to `timeout` be sent now?
    pub fn may_send(&self, method: &str, timeout: Duration) -> Result<(), ConnectorError> {
        if self.is_lost() {
            return Err(ConnectorError::transient(
                "the lease on this step was taken over; the call was not sent".to_string(),
            ));
        }
        let left = self.deadline().saturating_duration_since(Instant::now());
        if left <= timeout {
            self.lose();
            return Err(ConnectorError::transient(format!(
                "the lease on this step has {} ms left, less than the call timeout of {} ms; the call was not sent",
                left.as_millis(),
                timeout.as_millis()
            )));
        }
        if !matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD") {
            self.inner.effect_calls.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Run `fut` with this lease as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        LEASE.scope(self, fut).await
    }
}

/// Called by every connector right before it sends a request: refuses the call
/// if the current lease cannot cover `timeout`, and notes effectful calls.
/// Outside a worker's attempt there is no lease and every call may go.
pub fn before_send(method: &str, timeout: Duration) -> Result<(), ConnectorError> {
    LEASE
        .try_with(|l| l.may_send(method, timeout))
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_is_sent_only_while_the_lease_covers_its_timeout() {
        let l = Lease::until(Instant::now() + Duration::from_secs(10));
        let ok = l
            .clone()
            .scope(async { before_send("GET", Duration::from_secs(5)) })
            .await;
        assert!(ok.is_ok());
        assert!(!l.effect_sent(), "a GET has no effect");
        let refused = l
            .clone()
            .scope(async { before_send("DELETE", Duration::from_secs(11)) })
            .await;
        let e = refused.expect_err("the lease cannot cover an 11 s call");
        assert!(e.message.contains("not sent"), "{}", e.message);
        assert!(l.is_lost(), "a lease too short to send on is given up");
        assert!(!l.effect_sent(), "nothing was sent");
    }

    #[tokio::test]
    async fn an_effectful_call_is_remembered_and_a_lost_lease_sends_nothing() {
        let l = Lease::until(Instant::now() + Duration::from_secs(10));
        l.clone()
            .scope(async { before_send("POST", Duration::from_secs(1)) })
            .await
            .expect("sent");
        assert!(l.effect_sent());
        l.lose();
        assert!(l
            .clone()
            .scope(async { before_send("GET", Duration::from_secs(1)) })
            .await
            .is_err());
    }

    #[test]
    fn outside_a_worker_every_call_may_go() {
        assert!(before_send("DELETE", Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn extending_never_moves_the_deadline_back() {
        let now = Instant::now();
        let l = Lease::until(now + Duration::from_secs(10));
        l.extend(now + Duration::from_secs(5));
        assert!(l.deadline() >= now + Duration::from_secs(9));
    }
}

//! Per-processor limits that hold for the whole cluster.
//!
//! A processor's documented limit (Mailchimp: 10 connections per user, shared
//! by every app) applies to all of lethe, not to each daemon. Every worker
//! registers and heart-beats in the store; each takes `limit / live workers`
//! (at least 1) of the concurrency and of the rate. When a worker dies its
//! heartbeat stops and the others grow into its share. This needs no extra
//! write per call; the price is that with more live workers than the limit,
//! each still makes one call at a time (documented in the README).

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One processor's limits, as this worker's share.
pub struct ProcessorLimit {
    total: u32,
    rate: Option<f64>,
    sem: Arc<Semaphore>,
    capacity: AtomicU32,
    limiter: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
}

fn limiter(rate: f64) -> Option<Arc<DefaultDirectRateLimiter>> {
    let period = std::time::Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let burst = NonZeroU32::new(rate.ceil().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).map(|q| Arc::new(RateLimiter::direct(q.allow_burst(burst))))
}

impl ProcessorLimit {
    /// Limits for a processor: `concurrency` calls in flight, `rate` calls per second.
    pub fn new(concurrency: u32, rate: Option<f64>) -> ProcessorLimit {
        let total = concurrency.max(1);
        ProcessorLimit {
            total,
            rate,
            sem: Arc::new(Semaphore::new(total as usize)),
            capacity: AtomicU32::new(total),
            limiter: RwLock::new(rate.and_then(limiter)),
        }
    }

    /// This worker's current share of the concurrency.
    pub fn share(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Calls in flight in this worker now (an estimate while a share shrinks).
    pub fn in_flight(&self) -> u32 {
        let free = u32::try_from(self.sem.available_permits()).unwrap_or(u32::MAX);
        self.share().saturating_sub(free)
    }

    /// The cluster-wide limit on calls in flight.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Take this worker's share for `live` workers.
    pub fn rescale(&self, live: u32) {
        let live = live.max(1);
        let share = (self.total / live).max(1);
        let cap = self.capacity.swap(share, Ordering::SeqCst);
        if share > cap {
            self.sem.add_permits((share - cap) as usize);
        } else if share < cap {
            // Shrink as calls finish: take the surplus permits and drop them for good.
            let sem = Arc::clone(&self.sem);
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(cap - share).await {
                    p.forget();
                }
            });
        }
        if let Some(rate) = self.rate {
            if let Ok(mut l) = self.limiter.write() {
                *l = limiter(rate / live as f64);
            }
        }
    }

    /// Wait for a slot (concurrency) and a token (rate).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.sem).acquire_owned().await.ok()?;
        let l = self.limiter.read().ok().and_then(|l| l.clone());
        if let Some(l) = l {
            l.until_ready().await;
        }
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_share_is_the_limit_divided_by_live_workers_and_at_least_one() {
        let l = ProcessorLimit::new(6, None);
        assert_eq!(l.share(), 6);
        l.rescale(3);
        assert_eq!(l.share(), 2);
        l.rescale(10);
        assert_eq!(l.share(), 1);
        l.rescale(1);
        assert_eq!(l.share(), 6);
        // After shrinking tasks ran, exactly `share` permits can be held at once.
        tokio::task::yield_now().await;
        let mut held = vec![];
        for _ in 0..6 {
            held.push(l.acquire().await.unwrap());
        }
        assert_eq!(l.sem.available_permits(), 0);
    }
}

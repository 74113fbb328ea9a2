//! Per-processor limits that hold for the whole cluster.
//!
//! A processor's documented limit (Mailchimp: 10 connections per user, shared
//! by every app) applies to all of lethe, not to each daemon. The store is the
//! authority: every worker writes the configured limits into
//! `processor_limits` when it starts ([`QueueStore::set_limits`]), and a claim takes
//! a step only while fewer than `concurrency` steps of its processor are
//! running anywhere in the cluster and, for a rated processor, a token is in
//! the processor's bucket (refilled by the database's clock). The slot is the
//! running step itself: writing its result, or the expiry of its lease (a
//! crashed worker), gives it back. So a limit of 6 over 4 workers keeps 6
//! calls in flight, and 4 workers with a limit of 2 make at most 2.
//!
//! This module only counts the calls in flight in this process, for the
//! dashboard; it never holds a call back.
//!
//! [`QueueStore::set_limits`]: crate::store::QueueStore::set_limits

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// One processor's configured limits and this process's calls in flight.
pub struct ProcessorLimit {
    total: u32,
    rate: Option<f64>,
    in_flight: Arc<AtomicU32>,
}

/// A call in flight in this process; dropping it ends the count.
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ProcessorLimit {
    /// Limits for a processor: `concurrency` calls in flight, `rate` calls per second.
    pub fn new(concurrency: u32, rate: Option<f64>) -> ProcessorLimit {
        ProcessorLimit {
            total: concurrency.max(1),
            rate,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Calls in flight in this process now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The cluster-wide limit on calls in flight.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The cluster-wide rate limit (calls per second).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Count a call in flight until the guard is dropped. The slot itself was
    /// granted by the store when the step was claimed.
    pub fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&self.in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_flight_are_counted_until_their_guard_drops() {
        let l = ProcessorLimit::new(0, None);
        assert_eq!(l.total(), 1);
        let a = l.enter();
        let b = l.enter();
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        drop(b);
        assert_eq!(l.in_flight(), 0);
    }
}

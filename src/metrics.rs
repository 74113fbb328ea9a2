//! Process-wide metrics, in one registry that `GET /metrics` renders.
//!
//! Why a leaf module: the worker observes processor-call latency where the call
//! is made (`engine::worker`), and the HTTP intake renders the registry; both
//! depend on this module and it depends on nothing of ours, so the layers still
//! point one way. Counts that the store already knows (requests by status,
//! steps by state, attempts, callbacks) are read from the store at scrape time
//! into gauges here, so they agree with `lethe status` and survive restarts;
//! only what exists in no row (call latency, call results) is counted in memory.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

/// Labels of a processor call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Processor name.
    pub processor: String,
    /// `ok`, `transient`, `throttled` or `permanent`.
    pub result: String,
}

/// Labels with one processor.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessorLabels {
    /// Processor name.
    pub processor: String,
}

/// Labels with one status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Status name.
    pub status: String,
}

/// Labels of a step count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// Processor name.
    pub processor: String,
    /// Saga state.
    pub state: String,
}

/// Labels of a callback delivery attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// `delivered`, `retry` or `dead`.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric lethe exports.
pub struct Metrics {
    /// Processor calls by result (in this process).
    pub calls: Family<CallLabels, Counter>,
    /// Processor call latency in seconds (in this process).
    pub call_seconds: Family<ProcessorLabels, Histogram, fn() -> Histogram>,
    /// Requests by status (from the store at scrape time).
    pub requests: Family<StatusLabels, Gauge>,
    /// Steps by processor and state (from the store at scrape time).
    pub steps: Family<StepLabels, Gauge>,
    /// Attempts made, summed per processor over current steps (from the store).
    pub attempts: Family<ProcessorLabels, Gauge>,
    /// Callbacks by outbox state (from the store).
    pub outbox: Family<StatusLabels, Gauge>,
    /// Callback delivery attempts by result (in this process).
    pub callback_deliveries: Family<CallbackLabels, Counter>,
    /// Open requests past their `due_at` (from the store).
    pub overdue: Gauge,
    /// Open requests due within `[sla] warn_before` (from the store).
    pub due_soon: Gauge,
    registry: Registry,
}

impl Metrics {
    fn new() -> Metrics {
        let calls = Family::<CallLabels, Counter>::default();
        let call_seconds =
            Family::<ProcessorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let requests = Family::<StatusLabels, Gauge>::default();
        let steps = Family::<StepLabels, Gauge>::default();
        let attempts = Family::<ProcessorLabels, Gauge>::default();
        let outbox = Family::<StatusLabels, Gauge>::default();
        let callback_deliveries = Family::<CallbackLabels, Counter>::default();
        let overdue = Gauge::default();
        let due_soon = Gauge::default();
        let mut registry = Registry::with_prefix("lethe");
        registry.register(
            "requests_overdue",
            "Open requests past their deadline (a workflow's `deadline`, else the statutory month; from the store)",
            overdue.clone(),
        );
        registry.register(
            "requests_due_soon",
            "Open requests due within [sla] warn_before, not yet overdue (from the store)",
            due_soon.clone(),
        );
        registry.register(
            "requests",
            "Requests by status (from the store)",
            requests.clone(),
        );
        registry.register(
            "steps",
            "Steps by processor and saga state (from the store)",
            steps.clone(),
        );
        registry.register(
            "step_attempts",
            "Calls made, summed over current steps per processor; throttled calls excluded (from the store)",
            attempts.clone(),
        );
        registry.register(
            "processor_calls",
            "Processor calls made by this process, by result (ok, transient, throttled, permanent)",
            calls.clone(),
        );
        registry.register(
            "processor_call_duration_seconds",
            "Processor call latency, observed by this process",
            call_seconds.clone(),
        );
        registry.register(
            "callbacks",
            "Status callbacks by outbox state (from the store)",
            outbox.clone(),
        );
        registry.register(
            "callback_deliveries",
            "Status callback delivery attempts by this process, by result",
            callback_deliveries.clone(),
        );
        Metrics {
            calls,
            call_seconds,
            requests,
            steps,
            attempts,
            outbox,
            callback_deliveries,
            overdue,
            due_soon,
            registry,
        }
    }

    /// The registry, for rendering.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Record one processor call: its result class and how long it took.
pub fn observe_call(processor: &str, result: &str, elapsed: Duration) {
    let m = global();
    m.calls
        .get_or_create(&CallLabels {
            processor: processor.to_string(),
            result: result.to_string(),
        })
        .inc();
    m.call_seconds
        .get_or_create(&ProcessorLabels {
            processor: processor.to_string(),
        })
        .observe(elapsed.as_secs_f64());
}

/// Record one callback delivery attempt.
pub fn observe_callback(result: &str) {
    global()
        .callback_deliveries
        .get_or_create(&CallbackLabels {
            result: result.to_string(),
        })
        .inc();
}

//! The retry policy: exponential back-off with jitter, capped — the schedule
//! comes from `backon`; the policy itself is data (workflow or connector file).

use super::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// Retry policy: exponential backoff with jitter, capped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// First delay.
    #[serde(default = "d_initial")]
    pub initial: HumanDuration,
    /// Multiplier per attempt (≥ 1).
    #[serde(default = "d_factor")]
    pub factor: f32,
    /// Longest delay.
    #[serde(default = "d_cap")]
    pub cap: HumanDuration,
    /// Attempts before a step fails (throttled calls do not count).
    #[serde(default = "d_max")]
    pub max_attempts: u32,
    /// Randomise delays so retries of many steps do not arrive together.
    #[serde(default = "d_jitter")]
    pub jitter: bool,
}

fn d_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn d_factor() -> f32 {
    2.0
}
fn d_cap() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn d_max() -> u32 {
    10
}
fn d_jitter() -> bool {
    true
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: d_initial(),
            factor: d_factor(),
            cap: d_cap(),
            max_attempts: d_max(),
            jitter: d_jitter(),
        }
    }
}

impl RetryPolicy {
    /// Check the policy; on error, the key (without `retry.`) and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.factor < 1.0 || !self.factor.is_finite() {
            return Err((
                "factor".into(),
                format!("{} must be at least 1", self.factor),
            ));
        }
        if self.max_attempts == 0 {
            return Err(("max_attempts".into(), "must be at least 1".into()));
        }
        if self.initial > self.cap {
            return Err((
                "initial".into(),
                format!("{} is longer than retry.cap ({})", self.initial, self.cap),
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1`, after `attempt` attempts failed
    /// (1-based). The schedule comes from `backon`.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        use backon::BackoffBuilder;
        let mut b = backon::ExponentialBuilder::default()
            .with_min_delay(self.initial.get())
            .with_max_delay(self.cap.get())
            .with_factor(self.factor)
            .with_max_times(attempt.max(1) as usize);
        if self.jitter {
            b = b.with_jitter();
        }
        b.build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.cap.get())
    }
}

//! Pure policy decisions the worker takes before it calls a processor.
//!
//! Kept here, free of I/O, so the rule "no erase call ever reaches a held
//! processor before its hold ends" is a function that property tests can hammer.

/// A hold that may apply to a step: a workflow rule or an ad-hoc (litigation) hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSpan {
    /// The legal basis.
    pub basis: String,
    /// When it ends, in ms since the epoch; `None` = until released.
    pub until: Option<i64>,
}

/// What the gate decides for an erase about to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldGate {
    /// No hold applies now: the erase may run.
    Clear,
    /// Held: wait until `until` (`None` = until released), for `basis`.
    Held {
        /// The basis of the hold that ends last.
        basis: String,
        /// When the last applying hold ends.
        until: Option<i64>,
    },
}

/// The far future used as `run_at` for a hold without an end (9999-12-31).
pub const FOREVER_MS: i64 = 253_402_300_799_000;

/// Decide whether holds block an erase at `now`. A hold applies while
/// `now < until` (or forever without an end); when several apply, the step
/// waits for the one that ends last.
pub fn hold_gate(holds: &[HoldSpan], now: i64) -> HoldGate {
    let mut best: Option<&HoldSpan> = None;
    for h in holds {
        let active = h.until.is_none_or(|u| now < u);
        if !active {
            continue;
        }
        let later = match best {
            None => true,
            Some(b) => match (b.until, h.until) {
                (Some(_), None) => true,
                (Some(bu), Some(hu)) => hu > bu,
                (None, _) => false,
            },
        };
        if later {
            best = Some(h);
        }
    }
    match best {
        None => HoldGate::Clear,
        Some(h) => HoldGate::Held {
            basis: h.basis.clone(),
            until: h.until,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(until: Option<i64>) -> HoldSpan {
        HoldSpan {
            basis: format!("b{until:?}"),
            until,
        }
    }

    #[test]
    fn an_expired_hold_does_not_block() {
        assert_eq!(hold_gate(&[h(Some(10))], 10), HoldGate::Clear);
        assert!(matches!(
            hold_gate(&[h(Some(10))], 9),
            HoldGate::Held {
                until: Some(10),
                ..
            }
        ));
    }

    #[test]
    fn the_hold_that_ends_last_wins_and_an_open_ended_one_beats_all() {
        assert!(matches!(
            hold_gate(&[h(Some(10)), h(Some(20))], 5),
            HoldGate::Held {
                until: Some(20),
                ..
            }
        ));
        assert!(matches!(
            hold_gate(&[h(Some(10)), h(None), h(Some(20))], 5),
            HoldGate::Held { until: None, .. }
        ));
    }
}

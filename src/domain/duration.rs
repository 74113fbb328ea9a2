//! Human durations (`"30d"`, `"6y"`, `"2s"`, `"1h 30m"`), as every file in lethe writes them.
//!
//! Parsing is delegated to `humantime` (a year is 365.25 days, a month 30.44 days);
//! the wrapper exists so that config errors say what a valid value looks like.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A duration written as a human string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parse `"30d"`, `"6y"`, `"250ms"`, `"0s"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                format!("`{s}` is not a duration ({e}); write e.g. \"2s\", \"30d\", \"6y\"")
            })
    }
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
    /// As a chrono duration (saturating).
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        HumanDuration::parse(&value)
    }
}
impl From<HumanDuration> for String {
    fn from(value: HumanDuration) -> Self {
        humantime::format_duration(value.0).to_string()
    }
}
impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_days_years_seconds() {
        assert_eq!(
            HumanDuration::parse("2s").unwrap().get(),
            Duration::from_secs(2)
        );
        assert_eq!(
            HumanDuration::parse("30d").unwrap().get(),
            Duration::from_secs(30 * 86400)
        );
        assert!(HumanDuration::parse("6y").unwrap().get() > Duration::from_secs(6 * 365 * 86400));
        assert!(HumanDuration::parse("soon").is_err());
    }
}

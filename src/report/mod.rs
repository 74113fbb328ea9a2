//! Evidence for people who were not there: per-request certificates, period
//! reports and export packages.
//!
//! Each report is first built as a plain serialisable model (`Certificate`,
//! `PeriodReport`, `Manifest`) from the store alone — the JSON format *is*
//! that model — and then rendered by one module per format. Keeping the
//! model separate means every format says the same thing, and the tests can
//! check content once against the model and then against each rendering.
//!
//! Reports never hold a raw identity: the request's masked form is the only
//! identity they show, so a certificate can be kept for years after the
//! sealed identities were destroyed.

pub mod certificate;
pub mod csv;
pub mod html;
pub mod manifest;
pub mod package;
pub mod period;
pub mod sweep;

pub use certificate::Certificate;
pub use manifest::Manifest;
pub use period::PeriodReport;

use crate::store::{from_ms, Millis};

/// A report's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Plain text for a terminal or an email.
    Text,
    /// The report model as JSON (an API: fields are only ever added).
    Json,
    /// Comma-separated values (period reports).
    Csv,
    /// One self-contained, printable HTML file.
    Html,
}

/// RFC 3339 with milliseconds, UTC.
pub use crate::store::rfc3339 as ts;

/// `2026-11-23 06:40:12 UTC`, for people.
pub fn ts_human(m: Millis) -> String {
    from_ms(m).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration in milliseconds for people: `850ms`, `4.2s`, `3m 4s`, `2h 5m`, `3d 4h`, `6y 2d`.
pub fn human_ms(ms: i64) -> String {
    let neg = ms < 0;
    let ms = ms.unsigned_abs();
    let s = ms / 1000;
    let text = if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {}m", s / 3600, (s % 3600) / 60)
    } else if s < 365 * 86_400 {
        format!("{}d {}h", s / 86_400, (s % 86_400) / 3600)
    } else {
        format!("{}y {}d", s / (365 * 86_400), (s % (365 * 86_400)) / 86_400)
    };
    if neg {
        format!("-{text}")
    } else {
        text
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values.
pub fn percentile(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p as f64 / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Escape text for HTML or SVG built outside a template.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 90), Some(90));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn durations_read_like_a_person_would_write_them() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(4_200), "4.2s");
        assert_eq!(human_ms(184_000), "3m 4s");
        assert_eq!(human_ms(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
        assert_eq!(human_ms(-2_000), "-2.0s");
    }

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<b a=\"1\">&'"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
    }
}

//! Retention sweeps as connectors see them: list what is older than a cutoff,
//! then delete it in batches, reporting for each item only what the
//! processor's answer proves.
//!
//! An item's `name` (an object key and version, a file path) can be personal
//! data: it never leaves the engine in clear — the store keeps a keyed hash of
//! it, and a dry run shows it masked. A `reference` is kept only when it is a
//! pure id (a ticket number).

use serde_json::Value;
use std::collections::BTreeMap;

/// The sweeps HTTP connectors can name with `sweep = "…"` in their definition.
pub const HTTP_SWEEPS: [&str; 2] = ["zendesk_tickets", "dropbox_files"];

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepQuery<'a> {
    /// Items last modified before this (milliseconds since the epoch) go.
    pub cutoff_ms: i64,
    /// The schedule's settings: `prefix`, `path`, `status`.
    pub settings: &'a BTreeMap<String, String>,
}

impl SweepQuery<'_> {
    /// The cutoff as a time.
    pub fn cutoff(&self) -> chrono::DateTime<chrono::Utc> {
        crate::store::from_ms(self.cutoff_ms)
    }
}

/// One item older than the cutoff.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepCandidate {
    /// Its full name (may be personal: only ever stored as a keyed hash).
    pub name: String,
    /// `version`, `delete_marker`, `ticket`, `file`.
    pub kind: &'static str,
    /// A pure id, safe to show (a ticket number), if any.
    pub reference: Option<String>,
    /// Size in bytes, when known.
    pub size: Option<i64>,
    /// Last modified (milliseconds since the epoch), when known.
    pub modified_ms: Option<i64>,
}

/// What the processor answered about one item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOutcome {
    /// The candidate's `name`.
    pub name: String,
    /// True: the answer proves it removed; false: the answer refused it.
    pub removed: bool,
    /// The answer, without names (status, error code, job id…).
    pub evidence: Value,
}

/// Mask a name for a dry run: keep the first character of each path segment
/// and of the part before an `@`, and the extension of the last segment.
pub fn mask_name(name: &str) -> String {
    name.split('/')
        .map(|seg| {
            if seg.is_empty() {
                return String::new();
            }
            let (stem, ext) = match seg.rfind('.') {
                Some(i) if i > 0 && seg.len() - i <= 6 => (&seg[..i], &seg[i..]),
                _ => (seg, ""),
            };
            let first: String = stem.chars().take(1).collect();
            format!("{first}***{ext}")
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_name_shows_neither_the_local_part_nor_the_file_name() {
        let m = mask_name("customers/jane.doe@example.com/invoice-2020.pdf");
        assert_eq!(m, "c***/j***.com/i***.pdf");
        assert!(!m.contains("jane"));
    }
}

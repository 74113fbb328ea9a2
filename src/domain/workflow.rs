//! Workflow files (`workflows/*.toml`): the policy for one kind of request —
//! which processors take part and in which order, the retry policy, and the
//! legal-hold rules. Built-in ones are embedded; `workflows_dir` adds or replaces.

use super::category::Category;
pub use super::retry::RetryPolicy;
use super::{HumanDuration, RequestKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The built-in workflows.
pub const BUILTIN: &[(&str, &str)] = &[
    ("erasure.toml", include_str!("../../workflows/erasure.toml")),
    ("export.toml", include_str!("../../workflows/export.toml")),
    (
        "objection.toml",
        include_str!("../../workflows/objection.toml"),
    ),
    (
        "rectification.toml",
        include_str!("../../workflows/rectification.toml"),
    ),
];

/// One workflow file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// The request kind this workflow serves.
    pub kind: RequestKind,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// How failed calls are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// A wait before any erase call, during which `lethe cancel` stops everything.
    #[serde(default)]
    pub cooling_off: Option<HumanDuration>,
    /// A deadline shorter than the law's (e.g. `"7d"`): `due_at` = received +
    /// this. Absent: the statutory one calendar month (Art. 12(3)).
    #[serde(default)]
    pub deadline: Option<HumanDuration>,
    /// Ordered phases; a processor takes part in the first phase that selects it.
    #[serde(default, rename = "phase")]
    pub phases: Vec<PhaseDef>,
    /// Legal holds applied at planning time.
    #[serde(default, rename = "hold")]
    pub holds: Vec<HoldRule>,
    /// Retention schedules: periodic sweeps of old data at processors.
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<ScheduleDef>,
}

/// A retention schedule (`[[schedule]]`): every `every`, the selected
/// processors remove what is older than `older_than` (the connector's
/// `sweep`), and a period certificate records what the processor confirmed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// Unique across all workflow files (`lethe schedule run NAME`).
    pub name: String,
    /// Processors or categories, like a phase's `select`.
    pub select: Vec<String>,
    /// Items last modified longer ago than this are removed.
    pub older_than: HumanDuration,
    /// How often the sweep runs.
    pub every: HumanDuration,
    /// Object storage: only keys under this prefix (S3).
    #[serde(default)]
    pub prefix: Option<String>,
    /// File storage: only files under this folder (Dropbox).
    #[serde(default)]
    pub path: Option<String>,
    /// Ticketing: the ticket status to sweep (`closed`, the default, or `solved`).
    #[serde(default)]
    pub status: Option<String>,
}

impl ScheduleDef {
    /// Does this schedule take this processor?
    pub fn selects(&self, processor: &str, category: Category) -> bool {
        self.select
            .iter()
            .any(|s| Selector::parse(s).is_ok_and(|s| s.matches(processor, category)))
    }

    /// The settings passed to the connector's sweep.
    pub fn sweep_settings(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("prefix", &self.prefix),
            ("path", &self.path),
            ("status", &self.status),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), v.clone());
            }
        }
        m
    }
}

/// One phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    /// For people.
    pub name: String,
    /// `"*"`, `"category:NAME"` or a processor name.
    pub select: Vec<String>,
}

/// A legal-hold rule: matching processors are held for `duration` after receipt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRule {
    /// Selectors, as in phases.
    pub select: Vec<String>,
    /// The legal basis, shown in reports ("legal obligation, HMRC: 6 years", Art. 17(3)(b)).
    pub basis: String,
    /// How long.
    pub duration: HumanDuration,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every processor.
    All,
    /// Every processor of a category.
    Category(Category),
    /// One processor.
    Processor(String),
}

impl Selector {
    /// Parse `"*"`, `"category:NAME"`, or a processor name.
    pub fn parse(s: &str) -> Result<Selector, String> {
        if s == "*" {
            return Ok(Selector::All);
        }
        if let Some(c) = s.strip_prefix("category:") {
            let names: Vec<_> = Category::ALL.iter().map(|c| c.as_str()).collect();
            return Category::parse(c).map(Selector::Category).ok_or_else(|| {
                format!(
                    "unknown category `{c}` (expected one of {})",
                    names.join(", ")
                )
            });
        }
        if s.is_empty() {
            return Err("empty selector".into());
        }
        Ok(Selector::Processor(s.to_string()))
    }
    /// Does it select this processor?
    pub fn matches(&self, processor: &str, category: Category) -> bool {
        match self {
            Selector::All => true,
            Selector::Category(c) => *c == category,
            Selector::Processor(p) => p == processor,
        }
    }
}

/// A workflow that failed validation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: `{key}`: {reason}")]
pub struct WorkflowError {
    /// The file.
    pub file: String,
    /// The key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl WorkflowDef {
    /// Parse and validate.
    pub fn parse(file: &str, text: &str) -> Result<WorkflowDef, WorkflowError> {
        let err = |key: String, reason: String| WorkflowError {
            file: file.to_string(),
            key,
            reason,
        };
        let wf: WorkflowDef = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            err(
                line.map(|l| format!("line {l}")).unwrap_or_default(),
                e.message().to_string(),
            )
        })?;
        wf.retry
            .validate()
            .map_err(|(k, r)| err(format!("retry.{k}"), r))?;
        if wf.phases.is_empty() {
            return Err(err(
                "phase".into(),
                "at least one [[phase]] is needed (select = [\"*\"] takes every processor)".into(),
            ));
        }
        for (i, p) in wf.phases.iter().enumerate() {
            if p.select.is_empty() {
                return Err(err(format!("phase[{i}].select"), "selects nothing".into()));
            }
            for (j, s) in p.select.iter().enumerate() {
                Selector::parse(s).map_err(|r| err(format!("phase[{i}].select[{j}]"), r))?;
            }
        }
        if wf.deadline.is_some_and(|d| d.get().is_zero()) {
            return Err(err(
                "deadline".into(),
                "must be longer than 0s (remove it for the statutory one month)".into(),
            ));
        }
        for (i, h) in wf.holds.iter().enumerate() {
            for (j, s) in h.select.iter().enumerate() {
                Selector::parse(s).map_err(|r| err(format!("hold[{i}].select[{j}]"), r))?;
            }
            if h.basis.trim().is_empty() {
                return Err(err(
                    format!("hold[{i}].basis"),
                    "a hold needs its legal basis".into(),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, sc) in wf.schedules.iter().enumerate() {
            let key = |k: &str| format!("schedule[{i}].{k}");
            if sc.name.is_empty()
                || !sc
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(err(
                    key("name"),
                    format!(
                        "`{}` is not a schedule name (letters, digits, `_`, `-`, `.`)",
                        sc.name
                    ),
                ));
            }
            if !names.insert(sc.name.clone()) {
                return Err(err(
                    key("name"),
                    format!("a second schedule named `{}`", sc.name),
                ));
            }
            if sc.select.is_empty() {
                return Err(err(key("select"), "selects nothing".into()));
            }
            for (j, s) in sc.select.iter().enumerate() {
                Selector::parse(s).map_err(|r| err(format!("schedule[{i}].select[{j}]"), r))?;
            }
            if sc.older_than.get().is_zero() {
                return Err(err(
                    key("older_than"),
                    "must be longer than 0 (everything would go)".into(),
                ));
            }
            if sc.every.get() < std::time::Duration::from_secs(1) {
                return Err(err(key("every"), "must be at least 1s".into()));
            }
            if let Some(st) = &sc.status {
                if !matches!(st.as_str(), "closed" | "solved") {
                    return Err(err(
                        key("status"),
                        format!(
                            "`{st}`: expected `closed` or `solved` (open tickets are never swept)"
                        ),
                    ));
                }
            }
            if let Some(p) = &sc.prefix {
                if p.is_empty() {
                    return Err(err(
                        key("prefix"),
                        "empty: omit it to sweep the whole bucket".into(),
                    ));
                }
            }
            if let Some(p) = &sc.path {
                if !p.starts_with('/') {
                    return Err(err(key("path"), format!("`{p}` must start with `/`")));
                }
            }
        }
        Ok(wf)
    }

    /// The phase index (wave) for a processor, or None if no phase selects it.
    pub fn wave_of(&self, processor: &str, category: Category) -> Option<usize> {
        self.phases.iter().position(|p| {
            p.select
                .iter()
                .any(|s| Selector::parse(s).is_ok_and(|s| s.matches(processor, category)))
        })
    }

    /// The hold rule applying to a processor, if any.
    pub fn hold_for(&self, processor: &str, category: Category) -> Option<&HoldRule> {
        self.holds.iter().find(|h| {
            h.select
                .iter()
                .any(|s| Selector::parse(s).is_ok_and(|s| s.matches(processor, category)))
        })
    }

    /// Processor names this workflow mentions, for cross-checking against the config.
    pub fn named_processors(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for (i, p) in self.phases.iter().enumerate() {
            for (j, s) in p.select.iter().enumerate() {
                if let Ok(Selector::Processor(name)) = Selector::parse(s) {
                    out.push((format!("phase[{i}].select[{j}]"), name));
                }
            }
        }
        for (i, h) in self.holds.iter().enumerate() {
            for (j, s) in h.select.iter().enumerate() {
                if let Ok(Selector::Processor(name)) = Selector::parse(s) {
                    out.push((format!("hold[{i}].select[{j}]"), name));
                }
            }
        }
        for (i, h) in self.schedules.iter().enumerate() {
            for (j, s) in h.select.iter().enumerate() {
                if let Ok(Selector::Processor(name)) = Selector::parse(s) {
                    out.push((format!("schedule[{i}].select[{j}]"), name));
                }
            }
        }
        out
    }
}

/// Workflows by name (file stem).
#[derive(Debug, Clone, Default)]
pub struct Workflows {
    /// By name.
    pub by_name: BTreeMap<String, WorkflowDef>,
    /// The file each was read from (`workflows/erasure.toml (built in)`), by name.
    pub files: BTreeMap<String, String>,
}

impl Workflows {
    /// Load the built-in workflows, then every `*.toml` in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Workflows, WorkflowError> {
        let mut w = Workflows::default();
        for (file, text) in BUILTIN {
            let name = file.trim_end_matches(".toml");
            let shown = format!("workflows/{file} (built in)");
            w.by_name
                .insert(name.to_string(), WorkflowDef::parse(&shown, text)?);
            w.files.insert(name.to_string(), shown);
        }
        if let Some(dir) = dir {
            let rd = std::fs::read_dir(dir).map_err(|e| WorkflowError {
                file: dir.display().to_string(),
                key: "workflows_dir".into(),
                reason: format!("cannot read directory: {e}"),
            })?;
            let mut paths: Vec<_> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let file = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|e| WorkflowError {
                    file: file.clone(),
                    key: String::new(),
                    reason: format!("cannot read: {e}"),
                })?;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                w.by_name
                    .insert(name.clone(), WorkflowDef::parse(&file, &text)?);
                w.files.insert(name, file);
            }
        }
        Ok(w)
    }

    /// The workflow to use: the named one, else the one named after the kind.
    pub fn pick(
        &self,
        kind: RequestKind,
        name: Option<&str>,
    ) -> Result<(&str, &WorkflowDef), String> {
        let want = name.unwrap_or(kind.as_str());
        let (n, wf) = self.by_name.get_key_value(want).ok_or_else(|| {
            format!(
                "no workflow named `{want}` (known: {})",
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if wf.kind != kind {
            return Err(format!(
                "workflow `{want}` is for {} requests, not {kind}",
                wf.kind
            ));
        }
        Ok((n.as_str(), wf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_is_a_human_duration_longer_than_zero() {
        let base = "kind = \"erasure\"\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n";
        let w = WorkflowDef::parse("w.toml", &format!("deadline = \"7d\"\n{base}")).unwrap();
        assert_eq!(w.deadline.unwrap().get(), Duration::from_secs(7 * 86_400));
        assert!(WorkflowDef::parse("w.toml", base)
            .unwrap()
            .deadline
            .is_none());
        let e = WorkflowDef::parse("w.toml", &format!("deadline = \"0s\"\n{base}")).unwrap_err();
        assert_eq!(e.key, "deadline");
        assert!(WorkflowDef::parse("w.toml", &format!("deadline = \"soon\"\n{base}")).is_err());
    }

    #[test]
    fn built_in_workflows_parse() {
        let w = Workflows::load(None).unwrap();
        assert!(w.pick(RequestKind::Erasure, None).is_ok());
        assert!(w.pick(RequestKind::Export, None).is_ok());
        assert!(w.pick(RequestKind::Export, Some("erasure")).is_err());
        assert!(w.pick(RequestKind::Objection, None).is_ok());
        assert!(w.pick(RequestKind::Rectification, None).is_ok());
    }

    #[test]
    fn the_retry_schedule_grows_and_is_capped() {
        let p = RetryPolicy {
            initial: HumanDuration::parse("1s").unwrap(),
            factor: 2.0,
            cap: HumanDuration::parse("5s").unwrap(),
            max_attempts: 10,
            jitter: false,
        };
        assert_eq!(p.delay_after(1), Duration::from_secs(1));
        assert_eq!(p.delay_after(2), Duration::from_secs(2));
        assert_eq!(p.delay_after(3), Duration::from_secs(4));
        assert_eq!(p.delay_after(4), Duration::from_secs(5));
        assert_eq!(p.delay_after(9), Duration::from_secs(5));
    }

    #[test]
    fn a_bad_selector_names_its_key() {
        let e = WorkflowDef::parse(
            "w.toml",
            "kind = \"erasure\"\n[[phase]]\nname = \"x\"\nselect = [\"category:mailinglist\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "phase[0].select[0]");
        assert!(e.reason.contains("mailinglist"));
    }
}

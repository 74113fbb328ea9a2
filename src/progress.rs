//! What `lethe run` shows while it works, and how it says it ended.
//!
//! Three outputs, chosen by where standard output goes:
//!
//! - a terminal: live progress (indicatif) — one line per processor with its
//!   steps done / waiting / failed / in flight, an overall line, and a line
//!   above them for each request that reached a resting status;
//! - anything else: one plain line per such request (`request ID completed:
//!   newsletter erased, books retained`);
//! - `--json`: one JSON object per such request (the `status --json` document
//!   on one line), then `{"summary": {…}}`.
//!
//! A request is reported when its status changes to one where this run can do
//! no more for it now (anything but `in_progress`); requests the run touched
//! that are still `in_progress` at the end are reported then. The summary
//! says what remains (per processor and state: back-offs and their next try,
//! windows, holds, confirmations, phases behind a failed step) and until when.
//! Nothing here prints an identity: requests show their masked subject only.

use crate::domain::{RequestStatus, StepState};
use crate::engine::worker::{Recorded, RunObserver, RunSummary};
use crate::engine::Engine;
use crate::store::{from_ms, Millis, StepRow, WaitGroup};
use crate::view::RequestView;
use chrono::Utc;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the run's report goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Live progress bars on a terminal.
    Terminal,
    /// One plain line per finished request.
    Lines,
    /// One JSON object per finished request, then a summary object.
    Json,
}

impl Output {
    /// `--json` wins; else a terminal on stdout gets live progress.
    pub fn detect(json: bool) -> Output {
        if json {
            Output::Json
        } else if std::io::stdout().is_terminal() {
            Output::Terminal
        } else {
            Output::Lines
        }
    }
}

/// Where a step stands, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    InFlight,
    Done,
    Waiting,
    Failed,
}

#[derive(Default)]
struct State {
    /// The last known bucket of every step this run touched, with its processor.
    steps: HashMap<i64, (String, Bucket)>,
    /// Requests touched, and the status last reported for each (None: not yet).
    requests: BTreeMap<String, Option<RequestStatus>>,
    /// Requests reported so far.
    reported: usize,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    processors: BTreeMap<String, ProgressBar>,
}

/// A [`RunObserver`] that shows the run (see the module docs).
pub struct Progress {
    out: Output,
    engine: Arc<Engine>,
    started: Instant,
    max_wait: Duration,
    state: Mutex<State>,
    bars: Mutex<Option<Bars>>,
}

impl Progress {
    /// A display for a run of `engine` bounded by `max_wait`.
    pub fn new(out: Output, engine: Arc<Engine>, max_wait: Duration) -> Progress {
        let bars = (out == Output::Terminal).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let overall = multi.add(ProgressBar::new_spinner());
            overall.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            overall.set_message("starting: looking for due steps");
            overall.enable_steady_tick(Duration::from_millis(120));
            Bars {
                multi,
                overall,
                processors: BTreeMap::new(),
            }
        });
        Progress {
            out,
            engine,
            started: Instant::now(),
            max_wait,
            state: Mutex::new(State::default()),
            bars: Mutex::new(bars),
        }
    }

    fn counts(st: &State) -> BTreeMap<String, [u64; 4]> {
        let mut by: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for (p, b) in st.steps.values() {
            let c = by.entry(p.clone()).or_default();
            c[match b {
                Bucket::Done => 0,
                Bucket::Waiting => 1,
                Bucket::Failed => 2,
                Bucket::InFlight => 3,
            }] += 1;
        }
        by
    }

    /// Redraw the per-processor lines and the overall line.
    fn redraw(&self, sleeping: Option<Millis>) {
        let Ok(st) = self.state.lock() else { return };
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        let Some(bars) = bars.as_mut() else { return };
        let counts = Progress::counts(&st);
        let mut total = [0u64; 4];
        for (p, c) in &counts {
            for i in 0..4 {
                total[i] += c[i];
            }
            let bar = bars.processors.entry(p.clone()).or_insert_with(|| {
                let b = bars.multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("  {prefix:<18} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(p.clone());
                b
            });
            bar.set_message(format!(
                "done {} · waiting {} · failed {} · in flight {}",
                c[0], c[1], c[2], c[3]
            ));
        }
        let mut msg = format!(
            "{} step(s): done {} · waiting {} · failed {} · in flight {} · {} request(s) finished",
            st.steps.len(),
            total[0],
            total[1],
            total[2],
            total[3],
            st.reported
        );
        if let Some(at) = sleeping {
            msg.push_str(&format!(
                " · nothing due now; next step due at {}",
                clock(at)
            ));
        }
        bars.overall.set_message(msg);
    }

    /// Print a line (above the bars on a terminal).
    fn line(&self, text: &str) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(b) = bars.as_ref() {
                b.multi.suspend(|| println!("{text}"));
                return;
            }
        }
        println!("{text}");
    }

    /// Report request `id` at its current status.
    async fn report(&self, id: &str) {
        let store = &self.engine.store;
        let (Ok(Some(req)), Ok(steps)) = (store.get_request(id).await, store.steps(id).await)
        else {
            return;
        };
        let phases = crate::view::phase_names(&self.engine.config, &req.workflow);
        let view = RequestView::with_phases(&req, Some(&steps), Utc::now(), &phases);
        if let Ok(mut st) = self.state.lock() {
            let first = st.requests.get(id).is_none_or(|s| s.is_none());
            st.requests.insert(id.to_string(), Some(req.status));
            if first {
                st.reported += 1;
            }
        }
        match self.out {
            Output::Json => match serde_json::to_string(&view) {
                Ok(j) => println!("{j}"),
                Err(e) => tracing::warn!(error = %e, "cannot render a request as JSON"),
            },
            _ => self.line(&request_line(&view, &steps)),
        }
    }

    /// Report the requests not yet reported, stop the display, print the
    /// summary; returns the exit code (1 when a step of this run failed).
    pub async fn finish(&self, summary: &RunSummary) -> u8 {
        let pending: Vec<String> = self
            .state
            .lock()
            .map(|st| {
                st.requests
                    .iter()
                    .filter(|(_, s)| s.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in pending {
            self.report(&id).await;
        }
        self.redraw(None);
        if let Ok(mut bars) = self.bars.lock() {
            if let Some(b) = bars.take() {
                for p in b.processors.values() {
                    p.finish();
                }
                b.overall.finish();
            }
        }
        let remaining = match self.engine.store.waiting_summary().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: cannot read what remains: {e}");
                vec![]
            }
        };
        let code = if summary.failed > 0 { 1 } else { 0 };
        let requests = self.state.lock().map(|s| s.requests.len()).unwrap_or(0);
        let ended = if self.max_wait.is_zero() {
            "nothing more was due".to_string()
        } else {
            format!(
                "nothing more was due within --max-wait {}",
                humantime::format_duration(self.max_wait)
            )
        };
        if self.out == Output::Json {
            let v = serde_json::json!({"summary": {
                "processed": summary.processed,
                "failed_steps": summary.failed,
                "released_leases": summary.released,
                "requests": requests,
                "elapsed_ms": self.started.elapsed().as_millis() as u64,
                "max_wait_ms": self.max_wait.as_millis() as u64,
                "ended": ended,
                "exit_code": code,
                "remaining": remaining.iter().map(|g| serde_json::json!({
                    "processor": g.processor,
                    "state": g.state.as_str(),
                    "error_class": g.error_class,
                    "waiting_for": group_kind(g),
                    "count": g.count,
                    "next_at": (g.next_at < crate::domain::policy::FOREVER_MS).then(|| crate::store::rfc3339(g.next_at)),
                })).collect::<Vec<_>>(),
            }});
            println!("{v}");
        } else {
            println!(
                "run ended: {ended}; {} step(s) processed for {requests} request(s), {} failed, in {}",
                summary.processed,
                summary.failed,
                humantime::format_duration(Duration::from_secs(self.started.elapsed().as_secs()))
            );
            if remaining.is_empty() {
                println!("nothing remains: every step is final");
            } else {
                let n: i64 = remaining.iter().map(|g| g.count).sum();
                println!("remaining: {n} step(s) not final");
                for g in &remaining {
                    println!("  {:<18} {:>5}  {}", g.processor, g.count, group_text(g));
                }
            }
            if code == 1 {
                println!("exit 1: {} step(s) failed in this run: `lethe list --status failed`, then `lethe status ID` says what to do", summary.failed);
            }
        }
        code
    }
}

#[async_trait::async_trait]
impl RunObserver for Progress {
    async fn claimed(&self, steps: &[StepRow]) {
        if let Ok(mut st) = self.state.lock() {
            for s in steps {
                st.steps
                    .insert(s.id, (s.processor.clone(), Bucket::InFlight));
                st.requests.entry(s.request_id.clone()).or_insert(None);
            }
        }
        self.redraw(None);
    }

    async fn recorded(&self, r: &Recorded) {
        let bucket = match r.to {
            StepState::Done | StepState::Skipped | StepState::Cancelled => Bucket::Done,
            StepState::Failed => Bucket::Failed,
            StepState::Running => Bucket::InFlight,
            _ => Bucket::Waiting,
        };
        if let Ok(mut st) = self.state.lock() {
            st.steps.insert(r.step_id, (r.processor.clone(), bucket));
        }
        if r.status != r.previous && r.status != RequestStatus::InProgress {
            self.report(&r.request_id).await;
        }
        self.redraw(None);
    }

    async fn sleeping(&self, next: Millis) {
        self.redraw(Some(next));
    }
}

/// `request ID completed: newsletter erased, books retained` (masked; no identity).
fn request_line(v: &RequestView, steps: &[StepRow]) -> String {
    let mut parts = vec![];
    let mut notes = vec![];
    for (s, sv) in steps.iter().zip(v.steps.iter().flatten()) {
        parts.push(format!(
            "{} {}",
            s.processor,
            s.outcome.map(|o| o.as_str()).unwrap_or(s.state.as_str())
        ));
        if matches!(s.state, StepState::Failed)
            || sv.waiting_for.as_deref() == Some("earlier_phase")
        {
            notes.push(format!("{}: {}", s.processor, sv.detail()));
        }
    }
    let mut line = format!(
        "request {} {} ({}): {}",
        v.id,
        v.status,
        v.subject,
        parts.join(", ")
    );
    for n in notes {
        line.push_str("\n    ");
        line.push_str(&n);
    }
    line
}

/// The `waiting_for` kind of a group of steps (as in `status --json`).
fn group_kind(g: &WaitGroup) -> &'static str {
    use StepState as S;
    if g.blocked && matches!(g.state, S::Pending | S::RetryWait) {
        return "earlier_phase";
    }
    match g.state {
        S::Failed => "operator",
        S::Running => "processor",
        S::Pending => "worker",
        S::RetryWait => match g.error_class.as_deref() {
            Some("throttled") => "throttle",
            Some("paused") => "paused_processor",
            _ => "retry",
        },
        S::Grace => "soft_delete_window",
        S::Held => "hold",
        S::AwaitingConfirmation => "manual_confirmation",
        S::Done | S::Skipped | S::Cancelled => "nothing",
    }
}

/// What a group of remaining steps waits for, and until when.
fn group_text(g: &WaitGroup) -> String {
    let at = crate::store::rfc3339(g.next_at);
    let first = if g.count > 1 { "the first " } else { "" };
    match group_kind(g) {
        "earlier_phase" => format!("{}: waiting for an earlier phase of their request (`lethe status ID` names it)", g.state),
        "operator" => format!(
            "failed ({}): needs `lethe retry ID --processor {p}` or `lethe skip ID --processor {p} --reason …`",
            g.error_class.as_deref().unwrap_or("permanent"),
            p = g.processor
        ),
        "processor" => format!("running at another worker; {first}lease ends {at}"),
        "worker" => format!("pending; {first}due {at}"),
        "throttle" => format!("throttled by the processor; {first}next try {at}"),
        "paused_processor" => format!("processor paused after failing calls in a row; next try {at}"),
        "retry" => format!(
            "back-off after a {} error; {first}next try {at}",
            g.error_class.as_deref().unwrap_or("transient")
        ),
        "soft_delete_window" => format!("soft-deleted; {first}recovery window ends {at}"),
        "hold" if g.next_at >= crate::domain::policy::FOREVER_MS => {
            "legal hold until released (`lethe hold list`)".into()
        }
        "hold" => format!("legal hold; {first}ends {at}"),
        "manual_confirmation" => "awaiting `lethe confirm ID --processor …` (a person does the task)".into(),
        _ => g.state.to_string(),
    }
}

fn clock(at: Millis) -> String {
    from_ms(at).format("%H:%M:%S UTC").to_string()
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("out", &self.out).finish()
    }
}

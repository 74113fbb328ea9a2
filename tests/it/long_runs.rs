//! Long runs: `lethe run --until-idle` against processors that fail, throttle
//! or back off. It ends when nothing is due before `--max-wait`, reports each
//! request it finished (a line, or a JSON object), says what remains and until
//! when, and exits 1 when a step failed. On a terminal (tmux) it shows live
//! progress per processor.

use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use crate::why_waiting::{two_phase_env, CRM_LIST};
use serde_json::Value;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const EMAIL: &str = "jane.longrun@example.com";
const NOBODY: &str = "nobody.here@example.com";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `run ARGS`, which must end by itself (a hang fails the test, it never blocks the suite).
async fn run(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut all = vec!["run", "--until-idle"];
    all.extend_from_slice(args);
    tokio::time::timeout(Duration::from_secs(120), env.lethe(&all))
        .await
        .unwrap_or_else(|_| panic!("`lethe {all:?}` did not end"))
}

/// `crm` refuses EMAIL's erasure for good (400); NOBODY is on no list.
async fn crm_refuses(server: &wiremock::MockServer) {
    Mock::given(method("POST"))
        .and(path(fakes::delete_path_in(CRM_LIST, EMAIL)))
        .respond_with(fakes::problem(
            400,
            "Invalid Resource",
            "This member cannot be deleted.",
        ))
        .with_priority(5)
        .mount(server)
        .await;
}

on_both_backends!(
    a_run_with_a_failed_step_prints_a_line_per_request_then_what_remains_and_exits_1,
    json_output_is_one_object_per_finished_request_then_a_summary,
    a_processor_that_throttles_forever_does_not_keep_the_run_going,
    max_wait_carries_a_back_off_within_it_through_to_the_end,
);

async fn a_run_with_a_failed_step_prints_a_line_per_request_then_what_remains_and_exits_1(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    crm_refuses(&server).await;
    let env = two_phase_env(backend, &server, API_KEY, "300ms", "").await;
    let failing = env.erase(EMAIL).await;
    let fine = env.erase(NOBODY).await;

    let out = run(&env, &[]).await;
    assert_eq!(out.status.code(), Some(1), "a step failed: {}", show(&out));
    let text = stdout(&out);
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("request {id} ")))
            .unwrap_or_else(|| panic!("no line for {id}: {}", show(&out)))
            .to_string()
    };
    assert!(
        line(&failing).contains("failed") && line(&failing).contains("crm failed"),
        "{}",
        show(&out)
    );
    assert!(
        line(&failing).contains("newsletter erased"),
        "{}",
        show(&out)
    );
    assert!(
        line(&fine).contains(" completed ")
            && line(&fine).contains("newsletter not_found, crm not_found"),
        "{}",
        show(&out)
    );
    assert!(
        text.contains("run ended: nothing more was due"),
        "{}",
        show(&out)
    );
    let remaining = text
        .lines()
        .find(|l| l.trim_start().starts_with("crm ") && l.contains("failed (permanent)"))
        .unwrap_or_else(|| panic!("what remains names the failed step: {}", show(&out)));
    assert!(remaining.contains("lethe skip"), "{remaining}");
    assert!(text.contains("exit 1: 1 step(s) failed"), "{}", show(&out));
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes when stdout is not a terminal"
    );
    assert!(
        !text.contains("jane.longrun@") && !text.contains("nobody.here@"),
        "identities are masked: {text}"
    );

    // A run with nothing to do: exit 0, and the failed step is still named as remaining.
    let out = run(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("failed (permanent)"),
        "{}",
        show(&out)
    );
}

async fn json_output_is_one_object_per_finished_request_then_a_summary(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    crm_refuses(&server).await;
    let env = two_phase_env(backend, &server, API_KEY, "300ms", "").await;
    let failing = env.erase(EMAIL).await;
    let fine = env.erase(NOBODY).await;

    let out = run(&env, &["--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let docs: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: `{l}`")))
        .collect();
    let (summary, requests) = docs.split_last().expect("at least the summary");
    assert_eq!(requests.len(), 2, "{docs:#?}");
    let by_id = |id: &str| {
        requests
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no object for {id}: {docs:#?}"))
    };
    assert_eq!(by_id(&failing)["status"], "failed");
    assert_eq!(
        TestEnv::step(by_id(&failing), "crm")["waiting_for"],
        "operator"
    );
    assert_eq!(by_id(&fine)["status"], "completed");
    assert_eq!(by_id(&fine)["subject"], "n***@example.com");

    let s = &summary["summary"];
    assert_eq!(s["exit_code"], 1, "{s:#}");
    assert_eq!(s["failed_steps"], 1);
    assert_eq!(s["processed"], 4, "two requests, two steps each: {s:#}");
    assert_eq!(s["requests"], 2);
    let remaining = s["remaining"].as_array().cloned().unwrap_or_default();
    assert_eq!(remaining.len(), 1, "{s:#}");
    assert_eq!(remaining[0]["processor"], "crm");
    assert_eq!(remaining[0]["state"], "failed");
    assert_eq!(remaining[0]["waiting_for"], "operator");
    assert_eq!(remaining[0]["count"], 1);
}

async fn a_processor_that_throttles_forever_does_not_keep_the_run_going(backend: Backend) {
    let server = fakes::mailchimp().await;
    // Every erase call: 429 with `Retry-After: 0` — due again at once, for ever.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(
            fakes::problem(429, "Too Many Requests", "You have exceeded the limit.")
                .insert_header("Retry-After", "0"),
        )
        .with_priority(5)
        .mount(&server)
        .await;
    let env = two_phase_env(backend, &server, API_KEY, "300ms", "").await;
    let id = env.erase(EMAIL).await;

    let out = run(&env, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "throttling is not a failure: {}",
        show(&out)
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1,
        "without --max-wait the run takes only what was due when it started"
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("request {id} in_progress")),
        "{}",
        show(&out)
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("newsletter ")
                && l.contains("throttled by the processor")),
        "{}",
        show(&out)
    );

    // With a bound it keeps trying until the bound, then ends all the same.
    let out = run(&env, &["--max-wait", "2s"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await > 2,
        "it retried within --max-wait"
    );
    assert!(
        stdout(&out).contains("nothing more was due within --max-wait 2s"),
        "{}",
        show(&out)
    );
    assert_eq!(env.status(&id).await["status"], "in_progress");
}

async fn max_wait_carries_a_back_off_within_it_through_to_the_end(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    fakes::add_member_to(&server, CRM_LIST, EMAIL).await;
    // The first erase call at the newsletter: 503; the next one succeeds.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(fakes::problem(503, "Service Unavailable", "busy"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let env = two_phase_env(backend, &server, API_KEY, "300ms", "").await;
    let id = env.erase(EMAIL).await;

    let out = run(&env, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["state"],
        "retry_wait",
        "{st:#}"
    );
    assert!(
        stdout(&out).contains("back-off after a transient error"),
        "what remains says why: {}",
        show(&out)
    );

    let out = run(&env, &["--max-wait", "1m"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(st["status"], "completed", "both phases in one run: {st:#}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("request {id} completed")),
        "{}",
        show(&out)
    );
    assert!(text.contains("nothing remains"), "{}", show(&out));

    // Refused before anything runs: a bad duration, or --max-wait without --until-idle.
    for args in [
        vec!["run", "--until-idle", "--max-wait", "soon"],
        vec!["run", "--max-wait", "1m"],
    ] {
        let out = env.lethe(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
    }
}

/// A tmux server of its own, killed when the test ends (even when it fails).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .cmd(&["capture-pane", "-p", "-t", "run", "-S", "-200"])
                .stdout,
        )
        .into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_live_progress_per_processor_and_how_the_run_ended() {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    // The crm call takes a while, so the display can be seen while it is in flight.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path_in(CRM_LIST, EMAIL)))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(4)))
        .with_priority(1)
        .mount(&server)
        .await;
    let env = two_phase_env(Backend::Sqlite, &server, API_KEY, "300ms", "").await;
    let id = env.erase(EMAIL).await;

    let mut line = String::from("env -u RUST_LOG");
    for (k, v) in &env.env {
        line.push_str(&format!(" {k}={}", quote(v)));
    }
    line.push_str(&format!(
        " {} --config {} run --until-idle; echo EXIT=$?; sleep 120",
        quote(env!("CARGO_BIN_EXE_lethe")),
        quote(&env.config.display().to_string())
    ));
    let tmux = Tmux {
        socket: format!("lethe-test-{}", uuid::Uuid::new_v4().simple()),
    };
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "run",
        "-x",
        "160",
        "-y",
        "40",
        "-c",
        &env.dir.path().display().to_string(),
        &line,
    ]);
    assert!(out.status.success(), "tmux: {}", show(&out));

    // While crm's call is in flight, the terminal says so, per processor and
    // overall. (The newsletter's line turns `done` when the worker has reaped
    // its task, which may be a moment after crm was claimed: the screen is
    // read until it shows both, for the 4 s crm's call lasts.)
    let mut live = None;
    let mut last = String::new();
    for _ in 0..300 {
        last = tmux.screen();
        if last.contains("EXIT=") {
            break;
        }
        let crm_in_flight = last
            .lines()
            .any(|l| l.trim_start().starts_with("crm") && l.contains("in flight 1"));
        let newsletter_done = last.lines().any(|l| {
            l.trim_start().starts_with("newsletter")
                && l.contains("done 1 · waiting 0 · failed 0 · in flight 0")
        });
        if crm_in_flight && newsletter_done {
            live = Some(last.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = live.unwrap_or_else(|| {
        panic!("no screen showed crm in flight and the newsletter done; last screen:\n{last}")
    });
    assert!(live.contains("step(s): done 1"), "the overall line: {live}");

    // Then it ends by itself and says how.
    let mut end = String::new();
    for _ in 0..600 {
        end = tmux.screen();
        if end.contains("EXIT=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(end.contains("EXIT=0"), "{end}");
    assert_eq!(
        end.matches("step(s): done 2").count(),
        1,
        "the final display is drawn once, not smeared by other output: {end}"
    );
    assert!(
        end.lines().any(|l| l.trim_start().starts_with("crm")
            && l.contains("done 1 · waiting 0 · failed 0 · in flight 0")),
        "{end}"
    );
    assert!(end.contains(&format!("request {id} completed")), "{end}");
    assert!(end.contains("run ended: nothing more was due"), "{end}");
    assert!(end.contains("nothing remains"), "{end}");
}

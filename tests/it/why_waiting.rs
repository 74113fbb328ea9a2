//! Why is it waiting? `lethe status` says, for every step that is not final,
//! what it waits for and until when; a step behind a failed earlier phase
//! names that phase and the failed step; `lethe skip` is the operator's way
//! out, and the certificate shows the skip honestly (never as erased).

use crate::fakes::{self, API_KEY, LIST};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

pub const CRM_LIST: &str = "c0ffee01";
const EMAIL: &str = "jane.waiting@example.com";

/// Two phases: the newsletter first ("stop mail"), then everything else.
pub fn phased_workflow(retry_initial: &str, extra: &str) -> String {
    format!(
        "kind = \"erasure\"\n[retry]\ninitial = \"{retry_initial}\"\nfactor = 2.0\ncap = \"2h\"\nmax_attempts = 5\njitter = false\n\n\
         [[phase]]\nname = \"stop mail\"\nselect = [\"newsletter\"]\n\n[[phase]]\nname = \"everything else\"\nselect = [\"*\"]\n{extra}"
    )
}

/// A Mailchimp processor whose API key comes from `key_env`.
pub fn mailchimp_processor(server: &MockServer, name: &str, list: &str, key_env: &str) -> String {
    format!(
        "[[processor]]\nname = \"{name}\"\nconnector = \"mailchimp\"\nbase_url = \"{}/3.0\"\nsettings = {{ list_id = \"{list}\" }}\nsecrets = {{ api_key = \"{key_env}\" }}\n",
        server.uri()
    )
}

/// `newsletter` (phase "stop mail") and `crm` (phase "everything else") on
/// one Mailchimp fake; the newsletter's key is `newsletter_key` (env
/// NEWSLETTER_KEY), the others' the fake's (env MAILCHIMP_API_KEY).
pub async fn two_phase_env(
    backend: Backend,
    server: &MockServer,
    newsletter_key: &str,
    retry_initial: &str,
    wf_extra: &str,
) -> TestEnv {
    let procs = format!(
        "{}\n{}",
        mailchimp_processor(server, "newsletter", LIST, "NEWSLETTER_KEY"),
        mailchimp_processor(server, "crm", CRM_LIST, "MAILCHIMP_API_KEY"),
    );
    let mut env = TestEnv::new(backend, "workflows_dir = \"workflows\"", &procs).await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(
        env.dir.path().join("workflows/erasure.toml"),
        phased_workflow(retry_initial, wf_extra),
    )
    .unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("NEWSLETTER_KEY", newsletter_key);
    env
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

on_both_backends!(
    a_failed_step_blocks_the_later_phase_which_names_it_until_the_operator_skips_it,
    status_says_what_every_waiting_step_waits_for_and_until_when,
    retry_of_a_failed_step_is_audited_and_lets_the_later_phase_run,
);

async fn a_failed_step_blocks_the_later_phase_which_names_it_until_the_operator_skips_it(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    fakes::add_member_to(&server, CRM_LIST, EMAIL).await;
    // The newsletter's key is rejected: a permanent failure in the first phase.
    let env = two_phase_env(backend, &server, "wrong-key-us21", "300ms", "").await;
    let id = env.erase(EMAIL).await;

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed step: exit 1; {}",
        show(&out)
    );

    let st = env.status(&id).await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["state"], "failed");
    assert_eq!(nl["waiting_for"], "operator", "{nl:#}");
    let reason = nl["waiting_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("lethe retry {id} --processor newsletter"))
            && reason.contains(&format!("lethe skip {id} --processor newsletter")),
        "{reason}"
    );
    let crm = TestEnv::step(&st, "crm");
    assert_eq!(crm["state"], "pending", "{crm:#}");
    assert_eq!(crm["waiting_for"], "earlier_phase", "{crm:#}");
    assert!(
        crm["waiting_reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("waiting for phase \"stop mail\": newsletter failed"),
        "{crm:#}"
    );
    // The text table says the same.
    let out = env.lethe(&["status", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out).contains("waiting for phase \"stop mail\": newsletter failed"),
        "{}",
        show(&out)
    );
    // Blocked means blocked: no call reached the later phase's processor, even after more runs.
    env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path_in(CRM_LIST, EMAIL)).await,
        0
    );

    // Only a failed step can be skipped, and only with a reason.
    let out = env
        .lethe(&["skip", &id, "--processor", "crm", "--reason", "x"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not `failed`"),
        "{}",
        show(&out)
    );
    let out = env
        .lethe(&["skip", &id, "--processor", "newsletter", "--reason", "  "])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(
        env.status(&id).await["status"],
        "failed",
        "a refused skip changes nothing"
    );

    let out = env
        .lethe(&[
            "skip",
            &id,
            "--processor",
            "newsletter",
            "--reason",
            "audience deleted at Mailchimp; jane.waiting@example.com confirmed by phone",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out).contains("skipped by the operator"),
        "{}",
        show(&out)
    );

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(
        st["status"], "completed_with_exceptions",
        "a skipped step never makes a request `completed`: {st:#}"
    );
    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["state"], "skipped");
    assert!(
        nl["outcome"].is_null(),
        "a skipped step has no outcome: {nl:#}"
    );
    assert!(nl["waiting_for"].is_null());
    let why = nl["skipped_reason"].as_str().unwrap_or_default();
    assert!(why.starts_with("audience deleted at Mailchimp"), "{nl:#}");
    assert!(
        !why.contains("jane.waiting@"),
        "identities are masked: {why}"
    );
    let crm = TestEnv::step(&st, "crm");
    assert_eq!(crm["outcome"], "erased", "the later phase ran: {crm:#}");
    assert!(crm["waiting_for"].is_null());

    // The certificate: skipped by the operator with the reason, never erased.
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    assert_eq!(cert["request"]["status"], "completed_with_exceptions");
    let row = cert["processors"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["processor"] == "newsletter"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(row["result"], "skipped", "{row:#}");
    assert_eq!(row["skipped"]["by"], "operator");
    assert!(row["skipped"]["reason"]
        .as_str()
        .unwrap_or_default()
        .starts_with("audience deleted at Mailchimp"));
    assert_eq!(
        row["error"]["class"], "permanent",
        "the failure stays on record: {row:#}"
    );
    assert!(row["timeline"]
        .as_array()
        .is_some_and(|t| t.iter().any(|e| e["kind"] == "skipped")));
    let out = env.lethe(&["report", &id]).await;
    let cert_text = text(&out);
    assert!(cert_text.contains("skipped by the operator"), "{cert_text}");
    assert!(!cert_text.contains("jane.waiting@"), "{cert_text}");
    // Audited, and the chain still verifies.
    let events = env.store().await.request_events(&id).await.unwrap();
    let skip = events
        .iter()
        .find(|e| e.kind == "step.skipped")
        .expect("step.skipped event");
    assert_eq!(skip.detail["by"], "operator");
    assert_eq!(skip.detail["processor"], "newsletter");
    let out = env.lethe(&["audit", "verify"]).await;
    assert!(out.status.success(), "{}", show(&out));
}

async fn status_says_what_every_waiting_step_waits_for_and_until_when(backend: Backend) {
    const HELD_LIST: &str = "acc00001";
    const THROTTLED_LIST: &str = "feed0001";
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    fakes::add_member_to(&server, HELD_LIST, EMAIL).await;
    // `crm` answers 503 (a back-off follows), `promo` 429 with Retry-After (throttled).
    Mock::given(method("POST"))
        .and(path(fakes::delete_path_in(CRM_LIST, EMAIL)))
        .respond_with(fakes::problem(503, "Service Unavailable", "try later"))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path_in(THROTTLED_LIST, EMAIL)))
        .respond_with(
            fakes::problem(429, "Too Many Requests", "slow down")
                .insert_header("Retry-After", "3600"),
        )
        .with_priority(5)
        .mount(&server)
        .await;
    let hold = "\n[[hold]]\nselect = [\"accounts\"]\nbasis = \"legal obligation, HMRC: 6 years (Art. 17(3)(b))\"\nduration = \"6y\"\n";
    let env = two_phase_env(backend, &server, API_KEY, "1h", hold).await;
    let extra = format!(
        "{}\n{}",
        mailchimp_processor(&server, "accounts", HELD_LIST, "MAILCHIMP_API_KEY"),
        mailchimp_processor(&server, "promo", THROTTLED_LIST, "MAILCHIMP_API_KEY"),
    );
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(&extra);
    std::fs::write(&env.config, cfg).unwrap();
    let id = env.erase(EMAIL).await;

    let before = chrono::Utc::now();
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "nothing failed: {}", show(&out));
    let st = env.status(&id).await;
    let at = |step: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            step["until"]
                .as_str()
                .unwrap_or_else(|| panic!("until in {step:#}")),
        )
        .unwrap()
        .with_timezone(&chrono::Utc)
    };

    let nl = TestEnv::step(&st, "newsletter");
    assert_eq!(nl["outcome"], "erased");
    assert!(
        nl["waiting_for"].is_null() && nl["until"].is_null(),
        "a final step waits for nothing: {nl:#}"
    );

    let crm = TestEnv::step(&st, "crm");
    assert_eq!(crm["state"], "retry_wait", "{st:#}");
    assert_eq!(crm["waiting_for"], "retry", "{crm:#}");
    assert_eq!(crm["until"], crm["run_at"], "until is the next try");
    assert!(
        at(crm) >= before + chrono::Duration::minutes(59),
        "the 1h back-off: {crm:#}"
    );
    assert!(
        crm["waiting_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("back-off after a transient error"),
        "the last error class is named: {crm:#}"
    );

    let promo = TestEnv::step(&st, "promo");
    assert_eq!(promo["waiting_for"], "throttle", "{promo:#}");
    assert!(
        at(promo) >= before + chrono::Duration::minutes(59),
        "Retry-After 3600: {promo:#}"
    );

    let acc = TestEnv::step(&st, "accounts");
    assert_eq!(acc["state"], "held");
    assert_eq!(acc["waiting_for"], "hold", "{acc:#}");
    assert_eq!(acc["until"], acc["hold"]["until"]);
    assert!(
        at(acc) > before + chrono::Duration::days(5 * 365),
        "{acc:#}"
    );
    assert!(acc["waiting_reason"]
        .as_str()
        .unwrap_or_default()
        .contains("legal obligation, HMRC"));

    // The run's summary names the same waits.
    let out = env.lethe(&["run", "--until-idle", "--json"]).await;
    let last = text(&out)
        .lines()
        .last()
        .map(str::to_string)
        .unwrap_or_default();
    let summary: Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    let remaining = summary["summary"]["remaining"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<(&str, &str)> = remaining
        .iter()
        .map(|g| {
            (
                g["processor"].as_str().unwrap_or(""),
                g["waiting_for"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("crm", "retry"),
        ("promo", "throttle"),
        ("accounts", "hold"),
    ] {
        assert!(kinds.contains(&want), "{want:?} in {summary:#}");
    }
}

async fn retry_of_a_failed_step_is_audited_and_lets_the_later_phase_run(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    fakes::add_member_to(&server, CRM_LIST, EMAIL).await;
    let mut env = two_phase_env(backend, &server, "wrong-key-us21", "300ms", "").await;
    let id = env.erase(EMAIL).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // The credential is fixed; the operator retries the failed step.
    env.set_env("NEWSLETTER_KEY", API_KEY);
    let out = env
        .lethe(&["retry", &id, "--processor", "newsletter"])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["waiting_for"],
        "worker",
        "{st:#}"
    );

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "crm")["outcome"], "erased");
    let events = env.store().await.request_events(&id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "step.retried"));
}

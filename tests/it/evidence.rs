//! Evidence through the CLI: certificates and period reports in every format
//! for a request with every outcome, export packages, the audit chain caught
//! out by a hand edit, and no personal data left once identities are shredded.
//!
//! Outcomes come from the real engine against fakes: the Mailchimp fake
//! (erased, not_found, a 401 that fails), a workflow hold (held), and two
//! test-only connector definitions served by wiremock: a trash bin that
//! soft-deletes with a 1s recovery window (grace → purged) and an SMS gateway
//! whose erase only suppresses (retained).

use crate::fakes::{self, API_KEY, LIST};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "Jane.Doe@Example.com";
const PHONE: &str = "+447700900123";
const HOLD_BASIS: &str = "legal obligation, HMRC: 6 years (Art. 17(3)(b))";
const RETAINED: &str = "delivery logs kept 6 months by the carrier (legal obligation)";

const ERASURE_WORKFLOW: &str = r#"kind = "erasure"
[retry]
initial = "200ms"
factor = 2.0
cap = "1s"
max_attempts = 5
jitter = false
[[phase]]
name = "all"
select = ["*"]
[[hold]]
select = ["category:accounting"]
basis = "legal obligation, HMRC: 6 years (Art. 17(3)(b))"
duration = "6y"
"#;

/// A trash bin (Dropbox-like): erase moves the subject's files to the trash;
/// they are purged after the recovery window; lookup then answers 404.
const TRASHBIN: &str = r#"name = "trashbin"
category = "object_storage"
secrets = ["token"]
soft_delete_window = "1s"
[auth]
scheme = "bearer"
token = "{{ secrets.token }}"
[actions.lookup]
requires = ["email"]
[[actions.lookup.calls]]
path = "/v1/owners/{{ subject.email | lower | sha256 }}"
[actions.export]
requires = ["email"]
[[actions.export.calls]]
name = "files"
path = "/v1/owners/{{ subject.email | lower | sha256 }}/files"
[actions.erase]
requires = ["email"]
effect = "soft_deleted"
[[actions.erase.calls]]
method = "DELETE"
path = "/v1/owners/{{ subject.email | lower | sha256 }}"
reference = "/trash_id"
"#;

/// An SMS gateway: erasure only suppresses the number; delivery logs are kept.
const SMSGW: &str = r#"name = "smsgw"
category = "sms"
secrets = ["token"]
[auth]
scheme = "header"
headers = { "X-Api-Key" = "{{ secrets.token }}" }
[actions.export]
requires = ["phone"]
[[actions.export.calls]]
name = "messages"
path = "/v2/messages"
query = { to = "{{ subject.phone }}" }
[actions.erase]
requires = ["phone"]
effect = "retained"
retained_reason = "delivery logs kept 6 months by the carrier (legal obligation)"
[[actions.erase.calls]]
method = "POST"
path = "/v2/suppressions"
json = '{"msisdn": "{{ subject.phone }}"}'
reference = "/suppression_id"
"#;

/// An accounting system; erasures are held by the workflow, exports run.
const LEDGER: &str = r#"name = "ledger"
category = "accounting"
secrets = ["token"]
[auth]
scheme = "bearer"
token = "{{ secrets.token }}"
[actions.export]
requires = ["email"]
[[actions.export.calls]]
name = "invoices"
path = "/api/invoices"
query = { email = "{{ subject.email | lower }}" }
[actions.erase]
requires = ["email"]
[[actions.erase.calls]]
method = "DELETE"
path = "/api/contacts"
query = { email = "{{ subject.email | lower }}" }
"#;

fn owner_path(suffix: &str) -> String {
    let h = hex::encode(Sha256::digest(EMAIL.to_lowercase().as_bytes()));
    format!("/v1/owners/{h}{suffix}")
}

/// The non-Mailchimp processors' fake: trash bin, SMS gateway, ledger.
async fn other_processors() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(owner_path("")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"trash_id": "trash-881", "restorable_days": 30})),
        )
        .mount(&s)
        .await;
    // After the soft delete the owner is gone (purged when the window ends).
    Mock::given(method("GET"))
        .and(path(owner_path("")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "not_found"})))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path(owner_path("/files")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "files": [{"name": "passport-scan.pdf", "size": 48213}, {"name": "contract.docx", "size": 9120}]
        })))
        .mount(&s)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/suppressions"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"suppression_id": "sup-42"})))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{"id": "msg-1", "body": "Your code is 4411", "sent": "2026-10-02T10:00:00Z"}]
        })))
        .mount(&s)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/invoices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "invoices": [{"number": "INV-2026-0042", "total": "120.00", "currency": "GBP"}]
        })))
        .mount(&s)
        .await;
    s
}

fn mailchimp_block(name: &str, server: &MockServer, list: &str, key_env: &str) -> String {
    format!(
        "[[processor]]\nname = \"{name}\"\nconnector = \"mailchimp\"\nbase_url = \"{}/3.0\"\nsettings = {{ list_id = \"{list}\" }}\nsecrets = {{ api_key = \"{key_env}\" }}\n\n",
        server.uri()
    )
}

fn custom_block(name: &str, connector: &str, server: &MockServer) -> String {
    format!(
        "[[processor]]\nname = \"{name}\"\nconnector = \"{connector}\"\nbase_url = \"{}\"\nsecrets = {{ token = \"OTHER_TOKEN\" }}\n\n",
        server.uri()
    )
}

struct World {
    env: TestEnv,
    mailchimp: MockServer,
    other: MockServer,
}

/// Processors for every outcome. `failing` adds `events-list`, whose API key
/// is rejected (401 → failed). `store_extra` goes into `[store]`.
async fn world(backend: Backend, failing: bool, store_extra: &str) -> World {
    let mailchimp = fakes::mailchimp().await;
    if failing {
        // The newsletter's first delete meets a 503: a retry wait on the timeline.
        Mock::given(method("POST"))
            .and(path(fakes::delete_path(EMAIL)))
            .respond_with(fakes::problem(
                503,
                "Service Unavailable",
                "Mailchimp is temporarily unavailable.",
            ))
            .up_to_n_times(1)
            .with_priority(3)
            .mount(&mailchimp)
            .await;
    }
    fakes::add_member(&mailchimp, EMAIL).await;
    let other = other_processors().await;
    let mut body = String::new();
    body.push_str(store_extra);
    body.push('\n');
    body.push_str(&mailchimp_block(
        "newsletter",
        &mailchimp,
        LIST,
        "MAILCHIMP_API_KEY",
    ));
    body.push_str(&mailchimp_block(
        "old-list",
        &mailchimp,
        "0ld11570",
        "MAILCHIMP_API_KEY",
    ));
    if failing {
        body.push_str(&mailchimp_block(
            "events-list",
            &mailchimp,
            "3v3n75",
            "EVENTS_API_KEY",
        ));
    }
    body.push_str(&custom_block("files", "trashbin", &other));
    body.push_str(&custom_block("sms", "smsgw", &other));
    body.push_str(&custom_block("accounts", "ledger", &other));
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"\nconnectors_dir = \"connectors\"",
        &body,
    )
    .await;
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("workflows/erasure.toml"), ERASURE_WORKFLOW).unwrap();
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::write(dir.join("connectors/trashbin.toml"), TRASHBIN).unwrap();
    std::fs::write(dir.join("connectors/smsgw.toml"), SMSGW).unwrap();
    std::fs::write(dir.join("connectors/ledger.toml"), LEDGER).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("EVENTS_API_KEY", "bad-key-us21");
    env.set_env("OTHER_TOKEN", "tok-123");
    World {
        env,
        mailchimp,
        other,
    }
}

/// Run the engine until `done(status)` holds, or panic after `secs`.
async fn run_until(env: &TestEnv, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let out = env.lethe(&["run", "--until-idle"]).await;
        // Exit 1: a step failed in this run (some of these requests fail on purpose).
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "run failed: {}",
            show(&out)
        );
        let st = env.status(id).await;
        if done(&st) {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request {id} did not get there within {secs}s: {st:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// File the every-outcome erasure and run it until the trash bin's purge is verified.
async fn every_outcome_request(w: &World) -> String {
    let v = w
        .env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    run_until(&w.env, &id, 30, |st| {
        st["status"] == "failed" && TestEnv::step(st, "files")["outcome"] == "purged"
    })
    .await;
    id
}

fn row<'a>(cert: &'a Value, processor: &str) -> &'a Value {
    cert["processors"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["processor"] == processor))
        .unwrap_or_else(|| panic!("no row for {processor} in {cert:#}"))
}

fn assert_no_raw_identity(what: &str, text: &str) {
    for raw in [EMAIL, &EMAIL.to_lowercase(), PHONE, "447700900123"] {
        assert!(
            !text.contains(raw),
            "{what} contains the raw identity `{raw}`"
        );
    }
}

on_both_backends!(
    a_certificate_shows_every_outcome_with_its_evidence_in_text_json_and_html,
    a_period_report_counts_requests_and_processors_in_text_json_csv_and_html,
    an_edited_audit_row_is_named_by_audit_verify_and_flagged_in_the_certificate,
    after_the_retention_no_identity_is_left_in_the_database,
    an_export_package_holds_every_processors_data_with_verifiable_hashes,
    an_export_file_is_age_encrypted_0600_and_deleted_after_the_export_retention,
    a_backup_taken_before_shredding_no_longer_opens_once_key_rotate_ran_and_the_old_key_is_gone,
    key_rotate_rewraps_every_data_key_and_refuses_naming_the_missing_old_key,
);

async fn a_certificate_shows_every_outcome_with_its_evidence_in_text_json_and_html(
    backend: Backend,
) {
    let w = world(backend, true, "").await;
    let id = every_outcome_request(&w).await;
    let env = &w.env;

    // JSON: the model itself.
    let out = env.lethe(&["report", &id, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_raw_identity("the JSON certificate", &stdout(&out));
    let cert: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &cert["request"];
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["kind"], "erasure");
    let subject = r["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("j***@example.com") && subject.contains("+44*"),
        "{subject}"
    );
    assert_eq!(r["status"], "failed");
    assert!(r["completed_at"].is_null() && r["deadline_met"].is_null());
    assert_eq!(r["overdue"], false);
    assert_eq!(r["identities"], "sealed");

    let nl = row(&cert, "newsletter");
    assert_eq!(
        (
            nl["result"].as_str(),
            nl["category"].as_str(),
            nl["action"].as_str()
        ),
        (Some("erased"), Some("mailing_list"), Some("erase"))
    );
    assert_eq!(nl["evidence"]["status"], 204);
    assert_eq!(nl["attempts"], 2, "a 503, then the erasure");
    assert!(nl["when"].as_str().is_some());
    let nl_kinds: Vec<&str> = nl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(nl_kinds, ["created", "retry_wait", "done"]);
    let wait = &nl["timeline"][1];
    assert!(
        wait["label"]
            .as_str()
            .unwrap()
            .starts_with("attempt 1: transient (HTTP 503); retry in"),
        "{wait:#}"
    );
    assert!(wait["until_ms"].as_i64().unwrap() > wait["at_ms"].as_i64().unwrap());

    let old = row(&cert, "old-list");
    assert_eq!(old["result"], "not_found");
    assert_eq!(old["evidence"]["status"], 404);

    let failed = row(&cert, "events-list");
    assert_eq!(failed["result"], "failed");
    assert_eq!(failed["evidence"]["status"], 401);
    assert_eq!(failed["error"]["class"], "permanent");
    let msg = failed["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("credentials rejected") && msg.contains("EVENTS_API_KEY"),
        "{msg}"
    );

    let held = row(&cert, "accounts");
    assert_eq!(held["result"], "held");
    assert_eq!(held["category"], "accounting");
    assert_eq!(held["hold"]["basis"], HOLD_BASIS);
    let until = held["hold"]["until"].as_str().unwrap();
    let received_year: i32 = r["received_at"].as_str().unwrap()[..4].parse().unwrap();
    let until_year: i32 = until[..4].parse().unwrap();
    assert_eq!(until_year - received_year, 6, "a 6-year hold: {until}");
    assert_eq!(
        held["attempts"], 0,
        "a held step never called the processor"
    );

    let purged = row(&cert, "files");
    assert_eq!(purged["result"], "purged");
    assert_eq!(purged["category"], "object_storage");
    let sd = &purged["soft_delete"];
    let (deleted, window, verified) = (
        sd["deleted_at"].as_str().unwrap(),
        sd["window_until"].as_str().unwrap(),
        sd["purge_verified_at"].as_str().unwrap(),
    );
    assert!(deleted < window && window <= verified, "{sd:#}");
    assert_eq!(
        purged["evidence"]["status"], 404,
        "the purge is verified by a lookup that finds nothing"
    );
    let kinds: Vec<&str> = purged["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "grace", "done"]);
    let grace = &purged["timeline"][1];
    assert!(
        grace["label"]
            .as_str()
            .unwrap()
            .contains("recovery window 1.0s"),
        "{grace:#}"
    );

    let retained = row(&cert, "sms");
    assert_eq!(retained["result"], "retained");
    assert_eq!(retained["evidence"]["status"], 201);
    assert_eq!(retained["evidence"]["reference"], "sup-42");
    assert_eq!(retained["retained_reason"], RETAINED);

    // The audit head cited is the one `audit verify` computes.
    let v = env.json(&["audit", "verify", "--json"]).await;
    assert_eq!(cert["audit"]["chain_verified"], true);
    assert_eq!(cert["audit"]["chain_head"], v["head"]);
    assert_eq!(cert["audit"]["chain_events"], v["checked"]);
    assert!(cert["audit"]["request_events"].as_u64().unwrap() >= 8);

    // Text.
    let out = env.lethe(&["report", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert_no_raw_identity("the text certificate", &text);
    for want in [
        "CERTIFICATE OF ERASURE",
        &format!("request {id}"),
        "subject:     j***@example.com",
        "status:      failed",
        "deadline:    open, not yet due",
        &format!("hold until {}: {HOLD_BASIS}", &until[..10]),
        "purge verified",
        &format!("retained: {RETAINED}"),
        "HTTP 201, ref sup-42",
        "permanent: credentials rejected",
        &format!("head {}", v["head"].as_str().unwrap()),
        "verified",
    ] {
        assert!(
            text.contains(want),
            "text certificate lacks `{want}`:\n{text}"
        );
    }
    for (p, result) in [
        ("newsletter", "erased"),
        ("old-list", "not_found"),
        ("events-list", "failed"),
        ("accounts", "held"),
        ("files", "purged"),
        ("sms", "retained"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("no line for {p}:\n{text}"));
        assert!(line.contains(result), "{p} should be {result}: {line}");
    }

    // HTML: one self-contained file, written with -o.
    let file = env.dir.path().join("certificate.html");
    let out = env
        .lethe(&[
            "report",
            &id,
            "--format",
            "html",
            "-o",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let html = std::fs::read_to_string(&file).unwrap();
    assert_no_raw_identity("the HTML certificate", &html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<style>") && html.contains("@media print"));
    for external in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "the page must not load `{external}`"
        );
    }
    assert!(html.contains("<svg") && html.contains("Per-processor timeline"));
    for (p, class, result) in [
        ("newsletter", "ok", "erased"),
        ("old-list", "none", "not_found"),
        ("events-list", "bad", "failed"),
        ("accounts", "kept", "held"),
        ("files", "ok", "purged"),
        ("sms", "kept", "retained"),
    ] {
        assert!(
            html.contains(&format!("<strong>{p}</strong>")),
            "no row for {p}"
        );
        assert!(
            html.contains(&format!("<span class=\"pill {class}\">{result}</span>")),
            "{p} is not shown as {result}"
        );
        // Each processor has a labelled row in the timeline.
        assert!(
            html.contains(&format!("font-weight=\"600\" fill=\"#263238\">{p}</text>")),
            "no timeline row for {p}"
        );
    }
    // The hold runs past the chart: it is cut with its end date.
    assert!(html.contains(&format!("until {}", &until[..10])));
    // The retry wait, the recovery window and the hold are drawn as bars.
    assert!(html.contains("soft-deleted; recovery window 1.0s</title></rect>"));
    assert!(html.contains("attempt 1: transient (HTTP 503); retry in"));
    assert!(html.contains(&v["head"].as_str().unwrap().to_string()));
    assert!(html.contains("j***@example.com"));

    if let Some(png) = crate::evidence::screenshot(&file).await {
        assert!(
            png.len() > 20_000,
            "the screenshot is {} bytes: a blank page?",
            png.len()
        );
    }

    // csv is for period reports.
    let out = env.lethe(&["report", &id, "--format", "csv"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("csv is for period reports"));
    // An unknown id is bad input.
    let out = env.lethe(&["report", "no-such-id"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request with id `no-such-id`"));
    drop(w.other);
}

/// Open `file` in headless Chromium and take a screenshot; returns the PNG.
/// Chromium is required when `LETHE_TEST_CHROMIUM` is set (`.ci/run` sets it
/// and installs Debian's `chromium`); otherwise, without it, this is skipped.
pub async fn screenshot(file: &std::path::Path) -> Option<Vec<u8>> {
    let required = std::env::var_os("LETHE_TEST_CHROMIUM").is_some();
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(!required, "LETHE_TEST_CHROMIUM is set but `chromium` is not installed (apt-get install -y chromium)");
        eprintln!("note: chromium not installed; the HTML screenshot check is skipped");
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let png = file.with_extension("png");
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", file.display()))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", show(&out));
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    if let Some(keep) = std::env::var_os("LETHE_SCREENSHOT_DIR") {
        let name = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".html", ".png");
        let _ = std::fs::copy(&png, std::path::Path::new(&keep).join(name));
    }
    Some(bytes)
}

async fn a_period_report_counts_requests_and_processors_in_text_json_csv_and_html(
    backend: Backend,
) {
    let mut w = world(backend, true, "").await;
    let id = every_outcome_request(&w).await;
    // A second request for someone nobody holds: it fails only at events-list too.
    let other = w.env.erase("nobody@example.org").await;
    run_until(&w.env, &other, 30, |st| st["status"] == "failed").await;
    // Fix the key and retry the first: it closes with the accounting hold as its exception.
    w.env.set_env("EVENTS_API_KEY", API_KEY);
    let out = w.env.lethe(&["retry", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = run_until(&w.env, &id, 30, |st| {
        st["status"] == "completed_with_exceptions"
    })
    .await;
    assert_eq!(TestEnv::step(&st, "events-list")["outcome"], "not_found");
    let env = &w.env;

    let today = chrono::Utc::now().date_naive();
    let from = (today - chrono::Days::new(1)).to_string();
    let to = (today + chrono::Days::new(1)).to_string();
    let args = |fmt: &'static str| {
        vec![
            "report".to_string(),
            "--from".into(),
            from.clone(),
            "--to".into(),
            to.clone(),
            "--format".into(),
            fmt.into(),
        ]
    };
    let run = |a: Vec<String>| async move {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = env.lethe(&refs).await;
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        stdout(&out)
    };

    let json: Value = serde_json::from_str(&run(args("json")).await).unwrap();
    let c = &json["requests"];
    assert_eq!(c["received"], 2);
    assert_eq!(c["erasure"], 2);
    assert_eq!(c["completed"], 1);
    assert_eq!(c["on_time"], 1);
    assert_eq!(c["late"], 0);
    assert_eq!(c["overdue"], 0);
    assert_eq!(c["open"], 1);
    assert_eq!(c["failed"], 1);
    let t = &json["time_to_complete"];
    assert_eq!(t["count"], 1);
    let req = env.status(&id).await;
    let received =
        chrono::DateTime::parse_from_rfc3339(req["received_at"].as_str().unwrap()).unwrap();
    let completed =
        chrono::DateTime::parse_from_rfc3339(req["completed_at"].as_str().unwrap()).unwrap();
    let ttc = (completed - received).num_milliseconds();
    assert_eq!(t["p50_ms"], ttc);
    assert_eq!(t["p90_ms"], ttc);
    assert_eq!(t["max_ms"], ttc);
    let procs = json["processors"].as_array().unwrap();
    let names: Vec<&str> = procs
        .iter()
        .map(|p| p["processor"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "accounts",
            "events-list",
            "files",
            "newsletter",
            "old-list",
            "sms"
        ]
    );
    let p = |n: &str| procs.iter().find(|p| p["processor"] == n).unwrap();
    assert_eq!(
        (
            p("accounts")["steps"].as_u64(),
            p("accounts")["held"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        p("events-list")["failed"],
        1,
        "the second request still fails there"
    );
    assert_eq!(p("events-list")["completed"], 1);
    assert_eq!(
        p("newsletter")["outcomes"],
        json!({"erased": 1, "not_found": 1})
    );
    assert_eq!(p("files")["outcomes"]["purged"], 1);
    assert_eq!(p("sms")["outcomes"]["retained"], 1);
    assert_eq!(p("old-list")["completed"], 2);
    assert!(p("newsletter")["median_ms"].as_i64().unwrap() >= 0);
    assert!(p("accounts")["median_ms"].is_null(), "nothing done there");

    let text = run(args("text")).await;
    assert!(text.contains(&format!("PERIOD REPORT {from}")), "{text}");
    for want in [
        "received        2",
        "completed       1",
        "on time         1",
        "overdue         0",
        "open            1",
    ] {
        assert!(text.contains(want), "text lacks `{want}`:\n{text}");
    }
    assert!(
        text.contains(&format!("p50 {}", t["p50"].as_str().unwrap())),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("newsletter ")).unwrap();
    assert!(line.contains("erased 1, not_found 1"), "{line}");

    let csv = run(args("csv")).await;
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(rows[0], "scope,processor,metric,value");
    for want in [
        "requests,,received,2",
        "requests,,on_time,1",
        "requests,,open,1",
        &format!("time_to_complete,,p50_ms,{ttc}"),
        "processor,accounts,held,2",
        "processor,events-list,failed,1",
        "processor,files,outcome_purged,1",
        "processor,sms,outcome_retained,1",
    ] {
        assert!(rows.contains(&want), "csv lacks `{want}`:\n{csv}");
    }

    let file = env.dir.path().join("period.html");
    let mut a = args("html");
    a.extend(["-o".to_string(), file.to_str().unwrap().to_string()]);
    run(a).await;
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("Completion per processor") && html.contains("<svg"));
    assert!(html.contains("<div class=\"n\">2</div><div class=\"l\">received</div>"));
    for p in names {
        assert!(html.contains(&format!("<strong>{p}</strong>")), "{p}");
    }
    // The chart: accounts' bar is all held, events-list's has one failed segment.
    assert!(html.contains("<title>2 held</title>"));
    assert!(html.contains("<title>1 failed</title>"));
    assert!(!html.contains("<script"));
    if let Some(png) = screenshot(&file).await {
        assert!(png.len() > 20_000, "the screenshot is {} bytes", png.len());
    }

    // Bad periods are bad input.
    let out = env
        .lethe(&["report", "--from", "2026-13-01", "--to", "2026-12-01"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from `2026-13-01`"));
    let out = env.lethe(&["report", "--from", &to, "--to", &from]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    drop(w.mailchimp);
}

async fn an_edited_audit_row_is_named_by_audit_verify_and_flagged_in_the_certificate(
    backend: Backend,
) {
    let w = world(backend, false, "").await;
    let env = &w.env;
    let id = env.erase(EMAIL).await;
    run_until(env, &id, 30, |st| {
        st["status"] == "completed_with_exceptions"
    })
    .await;
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // Someone rewrites history: the newsletter's erasure "found nothing".
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let target = events
        .iter()
        .find(|e| e.kind == "step.done" && e.detail["processor"] == "newsletter")
        .expect("the newsletter's done event");
    assert_eq!(target.detail["outcome"], "erased");
    let sql = format!(
        "UPDATE events SET detail = replace(detail, '\"erased\"', '\"not_found\"') WHERE seq = {}",
        target.seq
    );
    let n = match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&env.db_url).await.unwrap();
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
    };
    assert_eq!(n, 1);

    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("BROKEN at event #{}", target.seq)) && text.contains("altered"),
        "{text}"
    );
    let out = env.lethe(&["audit", "verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["broken"]["seq"], target.seq);
    assert_eq!(v["checked"], target.seq - 1, "every row before it verified");

    // The certificate still renders, says the chain is broken where, and exits 1.
    let out = env.lethe(&["report", &id, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let cert: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cert["audit"]["chain_verified"], false);
    assert_eq!(cert["audit"]["broken_at"], target.seq);
    let out = env.lethe(&["report", &id]).await;
    assert!(stdout(&out).contains(&format!("BROKEN at event #{}", target.seq)));
}

/// Every byte of the SQLite files, or every row of every table of the test's schema as text.
async fn database_text(env: &TestEnv) -> Vec<u8> {
    match env.backend {
        Backend::Sqlite => {
            let mut all = vec![];
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let p = env.dir.path().join(format!("lethe.db{suffix}"));
                // Read by another process: closing a descriptor of the file in
                // this one would drop every SQLite lock this process holds on
                // it (POSIX fcntl semantics), and the CLI would then believe it
                // is alone and reset the WAL under the test's open store.
                if p.exists() {
                    let out = std::process::Command::new("cat").arg(&p).output().unwrap();
                    all.extend(out.stdout);
                }
            }
            assert!(all.len() > 4096, "the database files were read");
            all
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(tables.iter().any(|(t,)| t == "requests"), "{tables:?}");
            let mut all = vec![];
            for (t,) in tables {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT t::text FROM \"{t}\" t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                for (r,) in rows {
                    all.extend(r.into_bytes());
                    all.push(b'\n');
                }
            }
            all
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

async fn after_the_retention_no_identity_is_left_in_the_database(backend: Backend) {
    let w = world(backend, false, "identity_retention = \"2s\"").await;
    let env = &w.env;
    // Without the key, nothing that touches identities starts.
    let mut nokey = TestEnv::new(backend, "", "").await;
    nokey.env.clear();
    let out = nokey.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LETHE_KEY is not set"));

    // Only the trash bin and the SMS gateway: the held ledger would keep the identity.
    let v = env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let store = env.store().await;
    let sealed = store
        .get_request(&id)
        .await
        .unwrap()
        .unwrap()
        .identities
        .expect("sealed");
    let st = run_until(env, &id, 30, |st| {
        st["status"] == "completed_with_exceptions"
            && TestEnv::step(st, "files")["outcome"] == "purged"
    })
    .await;
    assert_eq!(TestEnv::step(&st, "accounts")["state"], "held");
    // Held: the identity is still needed when the hold ends, so it is kept.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success());
    assert!(store
        .get_request(&id)
        .await
        .unwrap()
        .unwrap()
        .identities
        .is_some());
    // The processors really were called with the raw identities.
    let sms_calls = w.other.received_requests().await.unwrap();
    assert!(sms_calls
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains(PHONE)));

    // A request with nothing held: completes, and its identities go once the retention passed.
    drop(store);
    let w2 = world(backend, false, "identity_retention = \"2s\"").await;
    let env = &w2.env;
    // No accounting processor this time.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let cfg = cfg.replace(
        "name = \"accounts\"\nconnector = \"ledger\"",
        "name = \"accounts\"\nconnector = \"smsgw\"",
    );
    std::fs::write(&env.config, cfg).unwrap();
    let v = env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let store = env.store().await;
    let sealed2 = store
        .get_request(&id)
        .await
        .unwrap()
        .unwrap()
        .identities
        .expect("sealed");
    assert_ne!(sealed, sealed2);
    // A cancelled request is closed too; its identities go the same way.
    let cancelled = env
        .json(&[
            "request",
            "erase",
            "--email",
            "Other.Person@Example.net",
            "--json",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.lethe(&["cancel", &cancelled]).await;
    assert!(out.status.success(), "{}", show(&out));
    run_until(env, &id, 30, |st| st["status"] == "completed").await;
    assert!(
        store
            .get_request(&id)
            .await
            .unwrap()
            .unwrap()
            .identities
            .is_some(),
        "kept until the retention has passed"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let row = store.get_request(&id).await.unwrap().unwrap();
    assert!(row.identities.is_none(), "identities destroyed");
    let c = store.get_request(&cancelled).await.unwrap().unwrap();
    assert_eq!(c.status.as_str(), "cancelled");
    assert!(
        c.identities.is_none(),
        "a cancelled request's identities are destroyed too"
    );
    assert!(!row.subject_hash.is_empty(), "the keyed hash remains");
    let events = store.request_events(&id).await.unwrap();
    assert_eq!(events.last().unwrap().kind, "request.identities_destroyed");
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    assert_eq!(cert["request"]["identities"], "destroyed");
    assert!(cert["request"]["identities_destroyed_at"].is_string());
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // `store` stays open, as a running daemon's would: SQLite then keeps its
    // WAL file on disk, and it is searched too.
    let bytes = database_text(env).await;
    for raw in [
        EMAIL.as_bytes(),
        EMAIL.to_lowercase().as_bytes(),
        PHONE.as_bytes(),
        b"447700900123",
        b"other.person@example.net",
    ] {
        assert!(
            !contains(&bytes, raw),
            "`{}` is still in the database",
            String::from_utf8_lossy(raw)
        );
    }
    // Nor the sealed blob (which the key would open): not in the file, not in the WAL.
    let needle: Vec<u8> = match backend {
        Backend::Sqlite => sealed2[12..44].to_vec(),
        Backend::Postgres => hex::encode(&sealed2[12..44]).into_bytes(),
    };
    assert!(
        !contains(&bytes, &needle),
        "the sealed identities are still in the database"
    );
    // The other world's request was held: its sealed blob is still there (the search can find one).
    let bytes1 = database_text(&w.env).await;
    let needle1: Vec<u8> = match backend {
        Backend::Sqlite => sealed[12..44].to_vec(),
        Backend::Postgres => hex::encode(&sealed[12..44]).into_bytes(),
    };
    assert!(
        contains(&bytes1, &needle1),
        "the search finds a sealed blob that is still kept"
    );
    drop(store);
}

async fn an_export_package_holds_every_processors_data_with_verifiable_hashes(backend: Backend) {
    let mut w = world(backend, false, "").await;
    let env = &w.env;
    let v = env
        .json(&[
            "request", "export", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    run_until(env, &id, 30, |st| st["status"] == "completed").await;

    // The export's certificate: each file's hash is in the evidence.
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    assert_eq!(cert["request"]["kind"], "export");
    let nl_note = row(&cert, "newsletter")["evidence"]["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(row(&cert, "old-list")["result"], "not_found");
    assert_eq!(
        row(&cert, "accounts")["result"],
        "exported",
        "holds defer erasure, not export"
    );

    let base = env.dir.path().join("pkg");
    let out = env
        .lethe(&["package", &id, "-o", base.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("old-list           held no data about the subject"),
        "{}",
        show(&out)
    );

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(base.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["request"]["id"], id.as_str());
    assert_eq!(manifest["request"]["kind"], "export");
    assert!(manifest["request"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("j***@example.com"));
    // Every file's hash verifies, and every file is listed.
    let files = manifest["files"].as_array().unwrap();
    let mut listed: Vec<String> = vec![];
    for f in files {
        let p = f["path"].as_str().unwrap();
        let bytes = std::fs::read(base.join(p)).unwrap();
        assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)), "{p}");
        assert_eq!(f["bytes"], bytes.len());
        listed.push(p.to_string());
    }
    listed.sort();
    assert_eq!(
        listed,
        [
            "accounts.json",
            "evidence/certificate.json",
            "files.json",
            "index.html",
            "newsletter.json",
            "sms.json"
        ]
    );
    let cert: Value =
        serde_json::from_slice(&std::fs::read(base.join("evidence/certificate.json")).unwrap())
            .unwrap();
    assert_eq!(cert["request"]["kind"], "export");
    assert!(cert["audit"]["events"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    let mut on_disk: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        [
            "accounts.json",
            "evidence",
            "files.json",
            "index.html",
            "manifest.json",
            "newsletter.json",
            "sms.json"
        ]
    );

    // Every processor's data from the fakes.
    let doc = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(base.join(name)).unwrap()).unwrap()
    };
    let nl = doc("newsletter.json");
    assert_eq!(nl["data"]["member"]["email_address"], EMAIL);
    assert_eq!(
        nl["data"]["notes"]["notes"][0]["note"],
        "asked for invoice copy"
    );
    assert_eq!(
        doc("files.json")["data"]["files"]["files"][0]["name"],
        "passport-scan.pdf"
    );
    assert_eq!(
        doc("sms.json")["data"]["messages"]["messages"][0]["body"],
        "Your code is 4411"
    );
    assert_eq!(
        doc("accounts.json")["data"]["invoices"]["invoices"][0]["number"],
        "INV-2026-0042"
    );
    let procs = manifest["processors"].as_array().unwrap();
    let old = procs.iter().find(|p| p["processor"] == "old-list").unwrap();
    assert_eq!(old["outcome"], "not_found");
    assert!(old["file"].is_null());
    let nlp = procs
        .iter()
        .find(|p| p["processor"] == "newsletter")
        .unwrap();
    assert_eq!(nlp["summary"], "data returned");
    assert!(
        nl_note.ends_with(&format!("sha256 {}", nlp["sha256"].as_str().unwrap())),
        "the package's hash is the one recorded at collection: {nl_note}"
    );
    assert_eq!(
        nlp["sha256"],
        files
            .iter()
            .find(|f| f["path"] == "newsletter.json")
            .unwrap()["sha256"]
    );
    let index = std::fs::read_to_string(base.join("index.html")).unwrap();
    assert!(index.contains("held no data about the subject") && index.contains("newsletter.json"));

    // The zip holds the same files, byte for byte.
    let zip_bytes = std::fs::read(env.dir.path().join("pkg.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.clone())).unwrap();
    assert_eq!(zip.len(), 7);
    for name in listed.iter().map(String::as_str).chain(["manifest.json"]) {
        let mut f = zip.by_name(name).unwrap();
        let mut b = vec![];
        std::io::Read::read_to_end(&mut f, &mut b).unwrap();
        assert_eq!(b, std::fs::read(base.join(name)).unwrap(), "{name}");
    }

    // Encrypted: only the .zip.age is written, and it opens with the passphrase.
    w.env.set_env("PKG_PASS", "correct horse battery staple");
    let env = &w.env;
    let base2 = env.dir.path().join("sealed");
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            base2.to_str().unwrap(),
            "--passphrase-env",
            "PKG_PASS",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !base2.exists() && !env.dir.path().join("sealed.zip").exists(),
        "no plaintext copy"
    );
    let sealed = std::fs::read(env.dir.path().join("sealed.zip.age")).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    assert!(!contains(&sealed, b"passport-scan.pdf"));
    assert!(lethe::report::package::decrypt(&sealed, "wrong passphrase").is_err());
    let plain = lethe::report::package::decrypt(&sealed, "correct horse battery staple").unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(plain)).unwrap();
    let mut b = vec![];
    std::io::Read::read_to_end(&mut zip.by_name("files.json").unwrap(), &mut b).unwrap();
    assert_eq!(b, std::fs::read(base.join("files.json")).unwrap());

    // A missing passphrase variable is bad input, and nothing is written.
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            env.dir.path().join("x").to_str().unwrap(),
            "--passphrase-env",
            "NOPE_PASS",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(!env.dir.path().join("x.zip.age").exists());
    // An altered export file is refused.
    let f = env.dir.path().join("exports").join(&id).join("sms.json");
    let mut text = std::fs::read_to_string(&f).unwrap();
    text = text.replace("4411", "9999");
    std::fs::write(&f, text).unwrap();
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            env.dir.path().join("y").to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`sms`")
            && String::from_utf8_lossy(&out.stderr).contains("was altered")
    );
    assert!(!env.dir.path().join("y").exists());
    // An erasure has no package.
    let erasure = env.erase("someone@example.org").await;
    let out = env.lethe(&["package", &erasure]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// A world whose erasures complete (the held ledger replaced by the SMS gateway).
async fn completing_world(backend: Backend, store_extra: &str) -> World {
    let w = world(backend, false, store_extra).await;
    let cfg = std::fs::read_to_string(&w.env.config).unwrap();
    let cfg = cfg.replace(
        "name = \"accounts\"\nconnector = \"ledger\"",
        "name = \"accounts\"\nconnector = \"smsgw\"",
    );
    std::fs::write(&w.env.config, cfg).unwrap();
    w
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn an_export_file_is_age_encrypted_0600_and_deleted_after_the_export_retention(
    backend: Backend,
) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    // Without a recipient (and no explicit plaintext), an export is refused at once.
    let w0 = world(backend, false, "export_plaintext = false").await;
    let out = w0
        .env
        .lethe(&["request", "export", "--email", EMAIL, "--json"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("export_recipient"),
        "{}",
        show(&out)
    );
    assert!(!w0.env.dir.path().join("exports").exists());

    let w = world(
        backend,
        false,
        &format!("export_recipient = \"{recipient}\"\nexport_retention = \"3s\""),
    )
    .await;
    let env = &w.env;
    let v = env
        .json(&[
            "request", "export", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    run_until(env, &id, 30, |st| st["status"] == "completed").await;
    let exports = env.dir.path().join("exports");
    let dir = exports.join(&id);
    #[cfg(unix)]
    {
        assert_eq!(mode(&exports), 0o700, "the export directory");
        assert_eq!(mode(&dir), 0o700, "the request's export directory");
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accounts.json.age",
            "files.json.age",
            "newsletter.json.age",
            "sms.json.age"
        ]
    );
    for n in &names {
        let p = dir.join(n);
        #[cfg(unix)]
        assert_eq!(mode(&p), 0o600, "{n}");
        let bytes = std::fs::read(&p).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1"), "{n}");
        assert!(
            serde_json::from_slice::<Value>(&bytes).is_err(),
            "{n} is not JSON"
        );
        for raw in [
            &b"passport-scan.pdf"[..],
            b"Your code is",
            EMAIL.as_bytes(),
            b"request_id",
        ] {
            assert!(!contains(&bytes, raw), "{n} holds plaintext");
        }
    }
    // It decrypts with the configured identity to the exported data.
    let plain = lethe::report::package::decrypt_with(
        &std::fs::read(dir.join("files.json.age")).unwrap(),
        std::slice::from_ref(&identity),
    )
    .unwrap();
    let doc: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(doc["request_id"], id.as_str());
    assert_eq!(
        doc["data"]["files"]["files"][0]["name"],
        "passport-scan.pdf"
    );
    let other = age::x25519::Identity::generate();
    assert!(lethe::report::package::decrypt_with(
        &std::fs::read(dir.join("files.json.age")).unwrap(),
        std::slice::from_ref(&other),
    )
    .is_err());
    // The recorded hash is the plaintext's.
    let cert = env.json(&["report", &id, "--format", "json"]).await;
    let note = row(&cert, "files")["evidence"]["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.ends_with(&hex::encode(Sha256::digest(&plain))),
        "{note}"
    );

    // The package needs the identity; with it, it holds the plaintext.
    let base = env.dir.path().join("pkg");
    let out = env
        .lethe(&["package", &id, "-o", base.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--identity-file"),
        "{}",
        show(&out)
    );
    assert!(!base.exists());
    let idfile = env.dir.path().join("admin.agekey");
    std::fs::write(
        &idfile,
        format!(
            "# public key: {recipient}\n{}\n",
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
        ),
    )
    .unwrap();
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            base.to_str().unwrap(),
            "--identity-file",
            idfile.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(std::fs::read(base.join("files.json")).unwrap(), plain);
    // The manifest records how the source files are kept, and until when.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["at_rest"]["encrypted"], true, "{manifest:#}");
    assert!(
        manifest["at_rest"]["delete_after"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{manifest:#}"
    );
    // An altered encrypted file is refused.
    let sms = dir.join("sms.json.age");
    let mut b = std::fs::read(&sms).unwrap();
    let last = b.len() - 3;
    b[last] ^= 1;
    std::fs::write(&sms, &b).unwrap();
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            env.dir.path().join("y").to_str().unwrap(),
            "--identity-file",
            idfile.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`sms`"),
        "{}",
        show(&out)
    );

    // After the retention the files are gone, with an audit event, and the
    // package says so.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(!dir.exists(), "the export files are deleted");
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let del = events
        .iter()
        .find(|e| e.kind == "request.exports_deleted")
        .expect("an audit event");
    assert_eq!(del.detail["files"], 4);
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            env.dir.path().join("z").to_str().unwrap(),
            "--identity-file",
            idfile.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("were deleted at"),
        "{}",
        show(&out)
    );
    // Once only: a second pass deletes nothing and writes no second event.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let n = store
        .request_events(&id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "request.exports_deleted")
        .count();
    assert_eq!(n, 1);
}

/// Run SQL against a test's own database (either backend), returning nothing.
async fn exec(env: &TestEnv, sql: &str, bytes: Option<Vec<u8>>, id: &str) {
    match env.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&env.db_url).await.unwrap();
            let mut q = sqlx::query(sql);
            if let Some(b) = bytes {
                q = q.bind(b);
            }
            q.bind(id).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            let mut q = sqlx::query(sql);
            if let Some(b) = bytes {
                q = q.bind(b);
            }
            q.bind(id).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// A copy of the requests and data keys as a backup would hold them.
async fn backup(env: &TestEnv) -> String {
    match env.backend {
        Backend::Sqlite => {
            let file = env.dir.path().join("backup.db");
            let pool = sqlx::SqlitePool::connect(&env.db_url).await.unwrap();
            sqlx::query(&format!("VACUUM INTO '{}'", file.display()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            format!("sqlite://{}", file.display())
        }
        Backend::Postgres => {
            let schema = format!("bk_{}", uuid::Uuid::new_v4().simple());
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            for q in [
                format!("CREATE SCHEMA {schema}"),
                format!("CREATE TABLE {schema}.requests AS SELECT * FROM requests"),
                format!("CREATE TABLE {schema}.data_keys AS SELECT * FROM data_keys"),
            ] {
                sqlx::query(&q).execute(&pool).await.unwrap();
            }
            pool.close().await;
            schema
        }
    }
}

/// From a backup: the request's sealed identities and its data key row.
async fn from_backup(env: &TestEnv, at: &str, id: &str) -> (Vec<u8>, lethe::store::DataKeyRow) {
    type Row = (Option<Vec<u8>>, String, Option<Vec<u8>>);
    let sql = |prefix: &str| {
        format!(
            "SELECT r.identities, k.kid, k.wrapped FROM {prefix}requests r JOIN {prefix}data_keys k ON k.request_id = r.id WHERE r.id = $1"
        )
    };
    let (sealed, kid, wrapped): Row = match env.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(at).await.unwrap();
            sqlx::query_as(&sql(""))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            sqlx::query_as(&sql(&format!("{at}.")))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    (
        sealed.expect("the backup holds the sealed identities"),
        lethe::store::DataKeyRow {
            request_id: id.to_string(),
            kid,
            wrapped,
            created_at: 0,
            destroyed_at: None,
        },
    )
}

fn key_of(env: &TestEnv, var: &str) -> String {
    env.env
        .iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v.clone())
        .unwrap()
}

async fn a_backup_taken_before_shredding_no_longer_opens_once_key_rotate_ran_and_the_old_key_is_gone(
    backend: Backend,
) {
    use lethe::crypto::Keys;
    let mut w = completing_world(
        backend,
        "identity_retention = \"2s\"\nold_key_envs = [\"LETHE_KEY_OLD\"]",
    )
    .await;
    let k1 = key_of(&w.env, "LETHE_KEY");
    let id = w.env.erase(EMAIL).await;
    run_until(&w.env, &id, 30, |st| st["status"] == "completed").await;
    let store = w.env.store().await;
    let live_key = store.data_key(&id).await.unwrap().expect("a data key");
    assert_eq!(live_key.kid, Keys::kid_of(&k1).unwrap());
    let wrapped = live_key.wrapped.clone().expect("live");

    // The nightly backup, taken before the retention passed.
    let bk = backup(&w.env).await;
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let out = w.env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let shredded = store.data_key(&id).await.unwrap().unwrap();
    assert!(shredded.wrapped.is_none(), "the live data key is destroyed");
    assert!(shredded.destroyed_at.is_some());
    let bytes = database_text(&w.env).await;
    let needle = match backend {
        Backend::Sqlite => wrapped[12..44].to_vec(),
        Backend::Postgres => hex::encode(&wrapped[12..44]).into_bytes(),
    };
    assert!(
        !contains(&bytes, &needle),
        "the wrapped data key is not in the live database"
    );

    // What a backup attacker holding the backup *and* the current master key
    // can still do: open it. That is the limit of shredding alone.
    let (sealed, bk_row) = from_backup(&w.env, &bk, &id).await;
    let with_k1 = Keys::from_base64("k1", &k1).unwrap();
    assert_eq!(
        with_k1.open(&id, &sealed, Some(&bk_row)).unwrap(),
        lethe::domain::Subject::parse(Some(EMAIL), None, None, None).unwrap()
    );

    // A live request, still needing its identity.
    let live = w.env.erase("Other.Person@Example.net").await;
    let live_hash = store
        .get_request(&live)
        .await
        .unwrap()
        .unwrap()
        .subject_hash;

    // Rotate: a new master key, the old one only to re-wrap.
    let k2 = lethe::crypto::Keys::generate_base64();
    w.env.set_env("LETHE_KEY", &k2);
    w.env.set_env("LETHE_KEY_OLD", &k1);
    let out = w.env.lethe(&["key", "rotate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("re-wrapped 2 data key(s)"),
        "the live request's and the matching key, not the destroyed one: {}",
        show(&out)
    );
    // The old master key is destroyed.
    w.env.env.retain(|(k, _)| k != "LETHE_KEY_OLD");
    let env = &w.env;
    // The live request still runs, with the new key only: its identity opens.
    let st = run_until(env, &live, 30, |st| st["status"] == "completed").await;
    assert_eq!(TestEnv::step(&st, "newsletter")["state"], "done");
    // Matching is unchanged by rotation.
    let again = env.erase("other.person@example.net").await;
    assert_eq!(
        store
            .get_request(&again)
            .await
            .unwrap()
            .unwrap()
            .subject_hash,
        live_hash
    );

    // The backup now holds a data key wrapped by a master key that no longer
    // exists: with every key there is, it does not open.
    let (sealed, bk_row) = from_backup(env, &bk, &id).await;
    assert_eq!(bk_row.kid, Keys::kid_of(&k1).unwrap());
    let with_k2 = Keys::from_base64("k2", &k2).unwrap();
    let err = with_k2.open(&id, &sealed, Some(&bk_row)).unwrap_err();
    assert!(err.to_string().contains(&bk_row.kid), "{err}");
    // Nor does the live database help: its copy of the data key is destroyed.
    let live_row = store.data_key(&id).await.unwrap().unwrap();
    assert!(with_k2.open(&id, &sealed, Some(&live_row)).is_err());
    drop(store);
}

async fn key_rotate_rewraps_every_data_key_and_refuses_naming_the_missing_old_key(
    backend: Backend,
) {
    use lethe::crypto::Keys;
    let mut w = completing_world(backend, "old_key_envs = [\"LETHE_KEY_OLD\"]").await;
    let k1 = key_of(&w.env, "LETHE_KEY");
    let keys1 = Keys::from_base64("k1", &k1).unwrap();
    let r1 = w.env.erase(EMAIL).await;
    // A request sealed the old way, directly under the master key (before
    // envelope encryption): no data key of its own.
    let legacy = w.env.erase("Other.Person@Example.net").await;
    let legacy_subject =
        lethe::domain::Subject::parse(Some("Other.Person@Example.net"), None, None, None).unwrap();
    exec(
        &w.env,
        "DELETE FROM data_keys WHERE request_id = $1",
        None,
        &legacy,
    )
    .await;
    exec(
        &w.env,
        "UPDATE requests SET identities = $1 WHERE id = $2",
        Some(keys1.seal_legacy(&legacy_subject)),
        &legacy,
    )
    .await;
    let store = w.env.store().await;
    assert!(store.data_key(&legacy).await.unwrap().is_none());
    let sealed_r1 = store.get_request(&r1).await.unwrap().unwrap().identities;

    // A new master key; the old one is named but not set: refused, naming it.
    let k2 = Keys::generate_base64();
    w.env.set_env("LETHE_KEY", &k2);
    let out = w.env.lethe(&["key", "rotate"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LETHE_KEY_OLD") && err.contains(&Keys::kid_of(&k1).unwrap()),
        "{}",
        show(&out)
    );
    assert_eq!(
        store.data_key(&r1).await.unwrap().unwrap().kid,
        keys1.kid(),
        "nothing changed"
    );

    // With the old key set, old-key data opens before any rotation.
    w.env.set_env("LETHE_KEY_OLD", &k1);
    run_until(&w.env, &r1, 30, |st| st["status"] == "completed").await;
    run_until(&w.env, &legacy, 30, |st| st["status"] == "completed").await;

    let out = w.env.lethe(&["key", "rotate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("re-wrapped 2 data key(s)"),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains("moved 1 request(s)"),
        "{}",
        show(&out)
    );
    let kid2 = Keys::kid_of(&k2).unwrap();
    assert_eq!(store.data_key(&r1).await.unwrap().unwrap().kid, kid2);
    assert_eq!(store.data_key(&legacy).await.unwrap().unwrap().kid, kid2);
    assert_eq!(
        store.get_request(&r1).await.unwrap().unwrap().identities,
        sealed_r1,
        "the payload is not touched"
    );
    // Idempotent.
    let out = w.env.lethe(&["key", "rotate", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rewrapped"], 0);
    assert_eq!(v["upgraded"], 0);
    assert_eq!(v["kid"], kid2.as_str());

    // Without the old key, everything opens with the new one alone.
    w.env.env.retain(|(k, _)| k != "LETHE_KEY_OLD");
    let keys2 = Keys::from_base64("k2", &k2).unwrap();
    for (id, email) in [(&r1, EMAIL), (&legacy, "Other.Person@Example.net")] {
        let row = store.get_request(id).await.unwrap().unwrap();
        let key = store.data_key(id).await.unwrap();
        let s = keys2
            .open(id, row.identities.as_deref().unwrap(), key.as_ref())
            .unwrap();
        assert_eq!(
            s,
            lethe::domain::Subject::parse(Some(email), None, None, None).unwrap()
        );
        assert!(keys1
            .open(id, row.identities.as_deref().unwrap(), key.as_ref())
            .is_err());
    }
    let out = w.env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let again = w.env.erase(EMAIL).await;
    assert_eq!(
        store
            .get_request(&again)
            .await
            .unwrap()
            .unwrap()
            .subject_hash,
        store.get_request(&r1).await.unwrap().unwrap().subject_hash,
        "matching is unchanged"
    );
}

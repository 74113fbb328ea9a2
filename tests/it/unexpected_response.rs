//! Answers that are not what the API answers are never a success (issue 10,
//! point 2): a `200` HTML login page, invalid JSON or a JSON error body (a
//! processor's bad moment, or a wrong `base_url`) is an "unexpected response":
//! transient, retried, then `failed` — never `erased`, never `not_found` — and
//! `lethe check` reports it. Through the CLI, on both backends, against fakes
//! that otherwise answer like the real APIs.

use crate::connectors_fakes::{inject, Api, Stripe, Whm, SUBJECT_ARGS};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const EMAIL: &str = "jane.doe@example.com";

/// Three attempts 200 ms apart: a failure is final within a second or two.
const SHORT_RETRIES: &str = r#"kind = "erasure"
[retry]
initial = "200ms"
factor = 1.0
cap = "200ms"
max_attempts = 3
jitter = false
[[phase]]
name = "all"
select = ["*"]
"#;

/// A login page that echoes the address it was asked about (as such pages do).
fn login_page() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!("<!DOCTYPE html><html><head><title>Sign in</title></head><body><form action=\"/login\"><input name=\"user\" value=\"{EMAIL}\"></form></body></html>"),
        "text/html; charset=utf-8",
    )
}

/// WHM's removeacct answer, cut off: `{"metadata": {"result": 1, …` with no end.
fn invalid_json() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(
            "{{\"metadata\": {{\"command\": \"removeacct\", \"result\": 1, \"reason\": \"{EMAIL}"
        ),
        "application/json",
    )
}

fn json_error_body() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "status": "error",
        "message": format!("could not delete {EMAIL}: maintenance"),
    }))
}

async fn env_with(backend: Backend, processors: &str) -> TestEnv {
    let env = TestEnv::new(backend, "workflows_dir = \"workflows\"", processors).await;
    let wf = env.dir.path().join("workflows");
    std::fs::create_dir_all(&wf).unwrap();
    std::fs::write(wf.join("erasure.toml"), SHORT_RETRIES).unwrap();
    env
}

async fn stripe_env(backend: Backend, stripe: &Stripe) -> TestEnv {
    let mut env = env_with(backend, &stripe.processor_toml()).await;
    env.set_env(Stripe::SECRET_VAR, Stripe::SECRET);
    env
}

async fn mailchimp_env(backend: Backend, server: &wiremock::MockServer) -> TestEnv {
    let mut env = env_with(backend, &fakes::processor_toml(server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

async fn file_erasure(env: &TestEnv) -> String {
    let mut args = vec!["request", "erase"];
    args.extend(SUBJECT_ARGS);
    args.push("--json");
    env.json(&args).await["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// One `run --until-idle`, then the step: it must wait for a retry with an
/// "unexpected response" naming the processor, the status and the content type.
/// Then run until the request closes: the step must have failed after all
/// three attempts, never having been `erased` or `not_found`.
async fn assert_unexpected_then_failed(
    env: &TestEnv,
    id: &str,
    processor: &str,
    status: u16,
    content_type: &str,
) -> Value {
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(id).await;
    let step = TestEnv::step(&st, processor);
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient", "{st:#}");
    assert!(step["outcome"].is_null(), "{st:#}");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "processor `{processor}`: unexpected response to erase"
        )) && err.contains(&format!("HTTP {status}"))
            && err.contains(&format!("content-type {content_type}"))
            && err.contains("expected")
            && err.contains("check base_url"),
        "{err}"
    );
    assert!(
        !err.contains(EMAIL) && !err.contains("jane.doe"),
        "the body (which echoes the subject) is never quoted: {err}"
    );

    let st = env
        .run_until_status(
            id,
            &["completed", "completed_with_exceptions", "failed"],
            30,
        )
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, processor);
    assert_eq!(step["state"], "failed", "{st:#}");
    assert_eq!(step["attempts"], 3, "{st:#}");
    assert!(
        step["outcome"].is_null(),
        "never erased, never not_found: {st:#}"
    );
    assert!(step["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("unexpected response")));
    st
}

on_both_backends!(
    an_erase_answered_with_an_html_login_page_is_never_erased_and_fails_after_its_attempts,
    an_erase_answered_with_invalid_json_is_never_erased_and_fails_after_its_attempts,
    an_erase_answered_with_a_json_error_body_is_never_erased_and_fails_after_its_attempts,
    the_well_formed_erase_answer_still_ends_erased,
    a_json_error_body_where_the_api_answers_204_no_content_is_never_erased,
    an_html_404_page_from_a_wrong_base_url_is_never_not_found,
    check_exits_non_zero_naming_the_processor_when_the_check_call_answers_an_html_page,
);

async fn an_erase_answered_with_an_html_login_page_is_never_erased_and_fails_after_its_attempts(
    backend: Backend,
) {
    // Before: Mailchimp's delete-permanent answered by a login page was `erased`.
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(login_page())
        .with_priority(1)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let env = mailchimp_env(backend, &server).await;
    let id = env.erase(EMAIL).await;
    assert_unexpected_then_failed(&env, &id, "newsletter", 200, "text/html").await;
}

async fn an_erase_answered_with_invalid_json_is_never_erased_and_fails_after_its_attempts(
    backend: Backend,
) {
    // Before: WHM's removeacct cut off mid-document matched no rule, so its
    // HTTP 200 made the account `erased`.
    let whm = Whm::start(true).await;
    let (m, re) = whm.erase_call();
    inject(whm.server(), m, re, invalid_json(), 100).await;
    let mut env = env_with(backend, &whm.processor_toml()).await;
    env.set_env(Whm::SECRET_VAR, Whm::SECRET);
    let id = file_erasure(&env).await;
    let st =
        assert_unexpected_then_failed(&env, &id, Whm::PROCESSOR, 200, "application/json").await;
    let err = TestEnv::step(&st, Whm::PROCESSOR)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(
        !whm.erased_as_expected(),
        "the fake still holds the account"
    );
}

async fn an_erase_answered_with_a_json_error_body_is_never_erased_and_fails_after_its_attempts(
    backend: Backend,
) {
    let stripe = Stripe::start(true).await;
    let (m, re) = stripe.erase_call();
    inject(stripe.server(), m, re, json_error_body(), 100).await;
    let env = stripe_env(backend, &stripe).await;
    let id = file_erasure(&env).await;
    let st =
        assert_unexpected_then_failed(&env, &id, Stripe::PROCESSOR, 200, "application/json").await;
    let err = TestEnv::step(&st, Stripe::PROCESSOR)["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("/deleted"), "names what was expected: {err}");
    assert!(
        stripe.state.lock().unwrap().present,
        "the fake still holds the customer"
    );
}

async fn the_well_formed_erase_answer_still_ends_erased(backend: Backend) {
    let stripe = Stripe::start(true).await;
    let env = stripe_env(backend, &stripe).await;
    let id = file_erasure(&env).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["attempts"], 1, "{st:#}");
    assert!(stripe.erased_as_expected());

    // And Mailchimp's 204 No Content.
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = mailchimp_env(backend, &server).await;
    let id = env.erase(EMAIL).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["evidence"]["status"], 204, "{st:#}");
}

async fn a_json_error_body_where_the_api_answers_204_no_content_is_never_erased(backend: Backend) {
    // Mailchimp's delete-permanent answers 204 with no body; a 200 carrying an
    // error document is not that answer.
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "errors": [{"field": "email_address", "message": format!("{EMAIL} is locked")}]
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let env = mailchimp_env(backend, &server).await;
    let id = env.erase(EMAIL).await;
    let st = assert_unexpected_then_failed(&env, &id, "newsletter", 200, "application/json").await;
    let err = TestEnv::step(&st, "newsletter")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("no body"), "{err}");
}

async fn an_html_404_page_from_a_wrong_base_url_is_never_not_found(backend: Backend) {
    // A base_url on the right host but the wrong path: the web server's own 404
    // page, not Mailchimp's problem+json "Resource Not Found".
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>",
            "text/html",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    let env = mailchimp_env(backend, &server).await;
    let id = env.erase(EMAIL).await;
    let st = assert_unexpected_then_failed(&env, &id, "newsletter", 404, "text/html").await;
    let err = TestEnv::step(&st, "newsletter")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("not found"), "{err}");
}

async fn check_exits_non_zero_naming_the_processor_when_the_check_call_answers_an_html_page(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let env = mailchimp_env(backend, &server).await;
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "the fake's ping is fine: {}",
        show(&out)
    );

    Mock::given(method("GET"))
        .and(path("/3.0/ping"))
        .respond_with(login_page())
        .with_priority(1)
        .mount(&server)
        .await;
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v:#}");
    let p = &v["processors"][0];
    assert_eq!(p["processor"], "newsletter");
    assert_eq!(p["ok"], false, "{v:#}");
    assert_eq!(p["status"], 200, "{v:#}");
    let err = p["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("processor `newsletter`: unexpected response to check")
            && err.contains("content-type text/html")
            && err.contains("/health_status"),
        "{err}"
    );

    // The text output says so too.
    let out = env.lethe(&["check"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("newsletter") && text.contains("unexpected response"),
        "{text}"
    );
}

// ------------------------------------------------------------------ S3

fn s3_processor(base: &str) -> String {
    r#"
[[processor]]
name = "files"
connector = "s3"
base_url = "BASE"
settings = { bucket = "bucket", prefix_template = "customers/{{ subject.customer_id }}/", region = "eu-west-2" }
secrets = { access_key_id = "S3_ACCESS_KEY_ID", secret_access_key = "S3_SECRET_ACCESS_KEY" }
"#
    .replace("BASE", base)
}

async fn s3_env(backend: Backend, server: &wiremock::MockServer) -> TestEnv {
    let mut env = env_with(backend, &s3_processor(&server.uri())).await;
    env.set_env("S3_ACCESS_KEY_ID", "AKIDLETHETEST");
    env.set_env(
        "S3_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    env
}

on_both_backends!(
    an_s3_listing_answered_with_an_html_page_is_never_not_found_and_fails_after_its_attempts,
    check_of_an_s3_processor_answering_an_html_page_exits_non_zero,
);

async fn an_s3_listing_answered_with_an_html_page_is_never_not_found_and_fails_after_its_attempts(
    backend: Backend,
) {
    // Before: an HTML page read as an empty ListVersionsResult, i.e. "nothing
    // under the prefix": `not_found`, a false record.
    let server = wiremock::MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .and(query_param("versions", ""))
        .respond_with(login_page())
        .mount(&server)
        .await;
    let env = s3_env(backend, &server).await;
    let id = file_erasure(&env).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient", "{st:#}");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("processor `files`: unexpected response to ListObjectVersions")
            && err.contains("HTTP 200")
            && err.contains("content-type text/html")
            && err.contains("ListVersionsResult"),
        "{err}"
    );
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["attempts"], 3, "{st:#}");
    assert!(step["outcome"].is_null(), "never not_found: {st:#}");
}

async fn check_of_an_s3_processor_answering_an_html_page_exits_non_zero(backend: Backend) {
    let server = wiremock::MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .and(query_param("versioning", ""))
        .respond_with(login_page())
        .mount(&server)
        .await;
    let env = s3_env(backend, &server).await;
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["processors"][0];
    assert_eq!(p["processor"], "files");
    assert_eq!(p["ok"], false, "{v:#}");
    let err = p["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("unexpected response to GetBucketVersioning")
            && err.contains("VersioningConfiguration"),
        "{err}"
    );
}

//! One erasure carried through the saga against a Mailchimp fake, via the CLI.

use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const EMAIL: &str = "Jane.Doe@Example.com";

/// A workflow with retries in milliseconds, so tests do not wait minutes.
const FAST_WORKFLOW: &str = r#"kind = "erasure"
[retry]
initial = "300ms"
factor = 2.0
cap = "2s"
max_attempts = 5
jitter = false
[[phase]]
name = "all"
select = ["*"]
"#;

async fn env_with(backend: Backend, server: &wiremock::MockServer) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &fakes::processor_toml(server),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env
}

on_both_backends!(
    an_erasure_of_a_known_member_completes_with_outcome_erased,
    an_unknown_subject_ends_not_found,
    two_503s_then_success_end_erased_after_three_attempts_with_retry_wait_in_between,
    a_401_fails_naming_the_processor_and_env_var_and_retry_then_succeeds,
    an_export_writes_the_members_data,
    a_bodiless_403_is_throttling_and_does_not_use_up_an_attempt,
);

async fn an_erasure_of_a_known_member_completes_with_outcome_erased(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = env_with(backend, &server).await;

    let id = env.erase(EMAIL).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;

    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "done");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["attempts"], 1);
    assert_eq!(step["evidence"]["status"], 204);
    assert_eq!(
        st["subject"], "j***@example.com",
        "identities are masked in status"
    );
    assert_eq!(st["deadline_met"], true);
    // Erasure is delete-permanent, exactly once; never the archiving DELETE.
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    assert_eq!(
        fakes::count(&server, "DELETE", &fakes::member_path(EMAIL)).await,
        0
    );
}

async fn an_unknown_subject_ends_not_found(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = env_with(backend, &server).await;

    let id = env.erase("nobody@example.org").await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;

    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["outcome"], "not_found");
    assert_eq!(step["evidence"]["status"], 404);
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path("nobody@example.org")).await,
        1
    );
}

async fn two_503s_then_success_end_erased_after_three_attempts_with_retry_wait_in_between(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(fakes::problem(
            503,
            "Service Unavailable",
            "Mailchimp is temporarily unavailable.",
        ))
        .up_to_n_times(2)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let env = env_with(backend, &server).await;

    let id = env.erase(EMAIL).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient");
    assert_eq!(step["attempts"], 1);
    let err = step["last_error"].as_str().unwrap();
    assert!(err.contains("newsletter") && err.contains("503"), "{err}");
    assert_eq!(st["status"], "in_progress");

    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["attempts"], 3);
    assert!(
        step["last_error"].is_null(),
        "the error is cleared once the step succeeds"
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        3
    );
}

async fn a_401_fails_naming_the_processor_and_env_var_and_retry_then_succeeds(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let mut env = env_with(backend, &server).await;
    env.set_env("MAILCHIMP_API_KEY", "wrong-key-us21");

    let id = env.erase(EMAIL).await;
    let st = env
        .run_until_status(&id, &["failed", "completed"], 20)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "failed");
    assert_eq!(step["error_class"], "permanent");
    assert_eq!(step["attempts"], 1, "a permanent error is not retried");
    let err = step["last_error"].as_str().unwrap();
    assert!(
        err.contains("credentials rejected by processor `newsletter`"),
        "{err}"
    );
    assert!(err.contains("MAILCHIMP_API_KEY"), "{err}");
    assert!(
        !err.contains("wrong-key"),
        "the secret itself never appears: {err}"
    );

    // `status` exits 1 when a step needs attention.
    let out = env.lethe(&["status", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let out = env.lethe(&["retry", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 step(s) back to pending"));
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "newsletter")["outcome"], "erased");
}

async fn an_export_writes_the_members_data(backend: Backend) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let env = env_with(backend, &server).await;

    let v = env
        .json(&["request", "export", "--email", EMAIL, "--json"])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["kind"], "export");
    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["action"], "export");
    assert_eq!(step["outcome"], "exported");

    let file = env
        .dir
        .path()
        .join("exports")
        .join(&id)
        .join("newsletter.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let data = &doc["data"];
    assert_eq!(data["member"]["email_address"], EMAIL);
    assert_eq!(data["member"]["merge_fields"]["FNAME"], "Jane");
    assert_eq!(data["notes"]["notes"][0]["note"], "asked for invoice copy");
    assert_eq!(data["tags"]["tags"][0]["name"], "customer");
    assert_eq!(data["activity_feed"]["total_items"], 1);
    // An export never erases.
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        0
    );
}

async fn a_bodiless_403_is_throttling_and_does_not_use_up_an_attempt(backend: Backend) {
    let server = fakes::mailchimp().await;
    // Mailchimp at high volume: 403 with no body and no headers.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(ResponseTemplate::new(403))
        .up_to_n_times(2)
        .with_priority(3)
        .mount(&server)
        .await;
    fakes::add_member(&server, EMAIL).await;
    let env = env_with(backend, &server).await;

    let id = env.erase(EMAIL).await;
    env.lethe(&["run", "--until-idle"]).await;
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "throttled");
    assert_eq!(
        step["attempts"], 0,
        "a throttled call does not use up an attempt"
    );

    let st = env
        .run_until_status(&id, &["completed", "failed"], 20)
        .await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["attempts"], 1);
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        3
    );
}

//! A processor that echoes the subject back in its own encoding (an error
//! detail, a reference) gets it stored masked: percent-encoded and upper-case
//! emails, phones in national or bracketed format.

use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "jane.doe+news@example.com";
const PHONE: &str = "+447700900123";

/// Every raw form the processors below echo.
const ECHOED: [&str; 6] = [
    "jane.doe+news",
    "JANE.DOE",
    "jane.doe%2Bnews%40example.com",
    "7700 900123",
    "07700900123",
    "447700900123",
];

fn assert_masked(what: &str, text: &str) {
    for raw in ECHOED {
        assert!(
            !text.to_lowercase().contains(&raw.to_lowercase()),
            "{what} holds `{raw}`:\n{text}"
        );
    }
}

on_both_backends!(
    a_processor_error_echoing_the_subject_in_other_encodings_is_stored_masked,
    a_processor_reference_echoing_the_subject_is_stored_masked_in_the_evidence,
);

async fn a_processor_error_echoing_the_subject_in_other_encodings_is_stored_masked(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    // Mailchimp's 400 "Invalid Resource" quotes what it was given.
    Mock::given(path_regex(r"^/3\.0/lists/.*"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": "Invalid Resource",
            "status": 400,
            "detail": "JANE.DOE+NEWS@EXAMPLE.COM (jane.doe%2Bnews%40example.com) looks fake or invalid; sms +44 (0)7700 900123 / 07700900123",
            "instance": "2c2b2a29-2827-2625-2423-222120191817"
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let v = env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let st = env.run_until_status(&id, &["failed"], 30).await;
    let err = TestEnv::step(&st, "newsletter")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("looks fake or invalid"), "{err}");
    assert!(err.contains("j***@example.com"), "{err}");
    assert!(err.contains("+44********23"), "{err}");
    assert_masked("the step's last error", &err);
    let out = env.lethe(&["report", &id, "--format", "json"]).await;
    assert!(out.status.code().is_some(), "{}", show(&out));
    assert_masked("the certificate", &String::from_utf8_lossy(&out.stdout));
}

async fn a_processor_reference_echoing_the_subject_is_stored_masked_in_the_evidence(
    backend: Backend,
) {
    // An in-house system behind the generic webhook connector answers with a
    // reference that quotes the subject, form-encoded.
    let crm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "reference": "deleted contact email=jane.doe%2Bnews%40example.com&phone=%2B447700900123 (JANE.DOE+NEWS@example.com)"
        })))
        .mount(&crm)
        .await;
    let toml = format!(
        "[[processor]]\nname = \"crm\"\nconnector = \"webhook\"\nbase_url = \"{}\"\nsecrets = {{ signing_secret = \"CRM_SECRET\" }}\n",
        crm.uri()
    );
    let mut env = TestEnv::new(backend, "", &toml).await;
    env.set_env("CRM_SECRET", "crm-signing-secret");
    let v = env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let st = env.run_until_status(&id, &["completed"], 30).await;
    let reference = TestEnv::step(&st, "crm")["evidence"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        reference, "deleted contact email=j***@example.com&phone=+44********23 (j***@example.com)",
        "{st:#}"
    );
    let out = env.lethe(&["report", &id, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_masked("the certificate", &String::from_utf8_lossy(&out.stdout));
}

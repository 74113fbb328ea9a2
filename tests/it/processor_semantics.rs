//! What the real APIs do that a naive connector gets wrong, through the CLI
//! against fakes that answer like them: Stripe's case-sensitive email filter and
//! its lagging Search index, WHM's reseller refusal for a missing account,
//! Mailgun's paginated event log, and the note a "not found" carries when a
//! lagging search took part in it.

use crate::connectors_fakes::{
    count, Api, Mailgun, Stripe, Whm, CUSTOMER, MG_DOMAIN, WHM_RESELLER,
};
use crate::connectors_suite::{env_for, env_with, finish, run_once};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};

/// A customer Stripe holds under a mixed-case address.
const ADA_ID: &str = "cus_PxAdaLovelace01";
const ADA_STORED: &str = "Ada.Lovelace@Example.com";

/// A Stripe fake holding only Ada's customer record, stored as `ADA_STORED`;
/// `indexed`: whether the Search index shows it yet.
async fn stripe_with_ada(indexed: bool) -> Stripe {
    let api = Stripe::start(false).await;
    {
        let mut s = api.state.lock().unwrap();
        s.messages.push(json!({"id": ADA_ID, "object": "customer", "email": ADA_STORED, "name": "Ada Lovelace", "created": 1700000000, "livemode": false}));
        s.present = true;
        if !indexed {
            s.not_indexed.push(ADA_ID.to_string());
        }
    }
    api
}

/// File an erasure (or export) for `email`; returns the request id.
async fn file_email(env: &TestEnv, kind: &str, email: &str) -> String {
    let v = env
        .json(&["request", kind, "--email", email, "--json"])
        .await;
    v["id"].as_str().expect("id").to_string()
}

fn ada_gone(api: &Stripe) -> bool {
    !api.state
        .lock()
        .unwrap()
        .messages
        .iter()
        .any(|c| c["id"] == ADA_ID)
}

on_both_backends!(
    a_stripe_customer_stored_in_mixed_case_is_erased_when_the_subject_gave_that_case,
    a_stripe_customer_stored_in_mixed_case_is_found_by_search_when_filed_in_lower_case,
    a_stripe_not_found_from_a_lagging_search_is_noted_in_status_and_certificate,
    a_missing_whm_account_asked_for_by_a_reseller_token_ends_not_found_not_failed,
    a_mailgun_export_includes_the_subjects_events_from_every_page,
);

async fn a_stripe_customer_stored_in_mixed_case_is_erased_when_the_subject_gave_that_case(
    backend: Backend,
) {
    // Not in the Search index yet: only the exact, case-sensitive list filter
    // with the address as given can find it.
    let api = stripe_with_ada(false).await;
    let env = env_for(backend, &api).await;
    let id = file_email(&env, "erase", ADA_STORED).await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["evidence"]["reference"], ADA_ID, "{st:#}");
    assert!(ada_gone(&api), "the customer was deleted at Stripe");
    assert_eq!(
        count(&api.server, "DELETE", &format!("^/v1/customers/{ADA_ID}$")).await,
        1,
        "found by two lookups, deleted once"
    );
    assert!(
        !st.to_string().contains("Lovelace@"),
        "no raw email in status: {st:#}"
    );
}

async fn a_stripe_customer_stored_in_mixed_case_is_found_by_search_when_filed_in_lower_case(
    backend: Backend,
) {
    // Neither form of the address matches the stored case: only the
    // case-insensitive Search API finds the customer.
    let api = stripe_with_ada(true).await;
    let env = env_for(backend, &api).await;
    let id = file_email(&env, "erase", "ada.lovelace@example.com").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["attempts"], 1, "{st:#}");
    assert!(ada_gone(&api), "the customer was deleted at Stripe");
    // The Idempotency-Key is per step, action and customer (never per attempt).
    let keys = api.state.lock().unwrap().idempotency_keys.clone();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with(&format!("{id}:payments:erase:{ADA_ID}|")),
        "{keys:?}"
    );
}

async fn a_stripe_not_found_from_a_lagging_search_is_noted_in_status_and_certificate(
    backend: Backend,
) {
    // Filed in lower case, stored in mixed case, and not in the Search index
    // yet: the first "not found" is not believed.
    let api = stripe_with_ada(false).await;
    let env = env_for(backend, &api).await;
    let id = file_email(&env, "erase", "ada.lovelace@example.com").await;
    let st = run_once(&env, &id).await;
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["state"], "retry_wait", "re-checked later: {st:#}");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("searching again"), "{err}");
    assert!(step["outcome"].is_null(), "{st:#}");
    // A re-check is not the processor failing: it does not count towards a pause.
    assert_eq!(step["error_class"], "recheck", "{st:#}");
    let health = env.store().await.health(Stripe::PROCESSOR).await.unwrap();
    assert_eq!(health.consecutive_failures, 0, "{health:?}");

    // Still not indexed when searched again: now "not found", with the note.
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["outcome"], "not_found", "{st:#}");
    assert_eq!(step["attempts"], 2, "{st:#}");
    let note = step["evidence"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("a search whose index lags"), "{st:#}");
    assert_eq!(
        count(&api.server, "GET", r"^/v1/customers/search$").await,
        2,
        "searched twice"
    );

    let out = env.lethe(&["report", &id, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let cert: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = cert["processors"]
        .as_array()
        .and_then(|p| p.iter().find(|r| r["processor"] == Stripe::PROCESSOR))
        .unwrap_or_else(|| panic!("{cert:#}"));
    assert_eq!(row["result"], "not_found", "{cert:#}");
    let note = row["evidence"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("a search whose index lags"), "{cert:#}");
    // The first, unbelieved "not found" is on the timeline as a retry.
    let kinds: Vec<&str> = row["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"retry_wait"), "{kinds:?}");
    assert!(row["error"].is_null(), "{cert:#}");
    let out = env.lethe(&["report", &id]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a search whose index lags"),
        "the text certificate shows it too: {}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_customer_indexed_before_the_recheck_is_erased_not_reported_missing() {
    let api = stripe_with_ada(false).await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file_email(&env, "erase", "ada.lovelace@example.com").await;
    let st = run_once(&env, &id).await;
    assert_eq!(
        TestEnv::step(&st, Stripe::PROCESSOR)["state"],
        "retry_wait",
        "{st:#}"
    );
    // The index catches up within its lag.
    api.state.lock().unwrap().not_indexed.clear();
    let st = finish(&env, &id).await;
    let step = TestEnv::step(&st, Stripe::PROCESSOR);
    assert_eq!(step["outcome"], "erased", "{st:#}");
    assert!(step["evidence"]["note"].is_null(), "{st:#}");
    assert!(ada_gone(&api));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_export_lists_a_customer_found_by_two_lookups_once() {
    let api = stripe_with_ada(true).await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file_email(&env, "export", ADA_STORED).await;
    let st = finish(&env, &id).await;
    assert_eq!(
        TestEnv::step(&st, Stripe::PROCESSOR)["outcome"],
        "exported",
        "{st:#}"
    );
    let doc = read_export(&env, &id, Stripe::PROCESSOR);
    let ids: Vec<&str> = doc["data"]["customers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [ADA_ID], "{doc:#}");
    assert_eq!(
        count(&api.server, "GET", r"^/v1/invoices$").await,
        1,
        "{doc:#}"
    );
}

async fn a_missing_whm_account_asked_for_by_a_reseller_token_ends_not_found_not_failed(
    backend: Backend,
) {
    let api = Whm::start(false).await;
    let toml = api.processor_toml().replace(
        "whm_user = \"root\"",
        &format!("whm_user = \"{WHM_RESELLER}\""),
    );
    assert!(toml.contains(WHM_RESELLER), "{toml}");
    let mut env = env_with(backend, &toml).await;
    env.set_env(Whm::SECRET_VAR, Whm::SECRET);
    let args = ["request", "erase", "--customer-id", CUSTOMER, "--json"];
    let v = env.json(&args).await;
    let id = v["id"].as_str().expect("id").to_string();
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, Whm::PROCESSOR);
    assert_eq!(step["outcome"], "not_found", "{st:#}");
    assert_eq!(step["attempts"], 1, "{st:#}");
    assert_eq!(
        count(&api.server, "GET", r"^/json-api/removeacct$").await,
        0,
        "removeacct is not asked about an account that is not there"
    );
    // The same account present: the reseller's token removes it.
    let api = Whm::start(true).await;
    let toml = api.processor_toml().replace(
        "whm_user = \"root\"",
        &format!("whm_user = \"{WHM_RESELLER}\""),
    );
    let mut env = env_with(backend, &toml).await;
    env.set_env(Whm::SECRET_VAR, Whm::SECRET);
    let v = env.json(&args).await;
    let id = v["id"].as_str().expect("id").to_string();
    let st = finish(&env, &id).await;
    assert_eq!(
        TestEnv::step(&st, Whm::PROCESSOR)["outcome"],
        "erased",
        "{st:#}"
    );
    assert!(api.erased_as_expected());
}

async fn a_mailgun_export_includes_the_subjects_events_from_every_page(backend: Backend) {
    let api = Mailgun::start(true).await;
    let env = env_for(backend, &api).await;
    let id = crate::connectors_suite::file(&env, "export").await;
    let st = finish(&env, &id).await;
    assert_eq!(
        TestEnv::step(&st, Mailgun::PROCESSOR)["outcome"],
        "exported",
        "{st:#}"
    );
    let doc = read_export(&env, &id, Mailgun::PROCESSOR);
    let events = doc["data"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["delivered", "opened", "clicked"], "{doc:#}");
    for e in &events {
        assert_eq!(e["recipient"], crate::connectors_fakes::EMAIL, "{e:#}");
        assert!(e["client-info"]["user-agent"].is_string(), "{e:#}");
        assert!(e["geolocation"]["city"].is_string(), "{e:#}");
    }
    // Two pages with events, then the empty page that ends the list.
    assert_eq!(
        count(
            &api.server,
            "GET",
            &format!("^/v3/{}/events", MG_DOMAIN.replace('.', r"\."))
        )
        .await,
        3
    );
    assert!(
        doc["data"].get("paging").is_none() && !doc.to_string().contains("WzMsIFtb"),
        "pages are not kept, only their events: {doc:#}"
    );
}

fn read_export(env: &TestEnv, id: &str, processor: &str) -> Value {
    let path = env
        .dir
        .path()
        .join("exports")
        .join(id)
        .join(format!("{processor}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

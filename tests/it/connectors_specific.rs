//! The quirks of single APIs, through the CLI: what happens when a soft delete
//! did not take by the end of its window, Twilio's 20009, Mailgun's bare 404
//! and kept suppressions, WHM's `200` refusals.

use crate::connectors_fakes::{
    count, inject, twilio_20009, Api, Dropbox, Mailgun, OneDrive, Twilio, Whm, Zendesk, ZohoDesk,
    EMAIL,
};
use crate::connectors_suite::{env_for, file, finish, run_once};
use crate::helpers::{Backend, TestEnv};
use wiremock::ResponseTemplate;

/// Soft delete "does not take" (an agent restores the item during the window):
/// after the window verify still finds it, so the purge action runs.
async fn still_there_after_the_window_is_purged<A: Api>(
    restore: impl Fn(&A),
) -> (A, serde_json::Value) {
    let api = A::start(true).await;
    restore(&api);
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file(&env, "erase").await;
    let st = run_once(&env, &id).await;
    assert_eq!(TestEnv::step(&st, A::PROCESSOR)["state"], "grace", "{st:#}");
    let st = finish(&env, &id).await;
    (api, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zendesk_user_still_found_after_the_window_is_permanently_deleted_by_purge() {
    let (api, st) = still_there_after_the_window_is_purged::<Zendesk>(|z| {
        z.state.lock().unwrap().restore_after_delete = true
    })
    .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "helpdesk");
    assert_eq!(step["outcome"], "purged", "{st:#}");
    assert_eq!(step["evidence"]["reference"], "35436", "{st:#}");
    let (soft, purged) = {
        let s = api.state.lock().unwrap();
        (s.soft_deleted, s.purged)
    };
    assert!(soft && purged);
    // Soft delete twice (erase, then purge), permanent delete once.
    assert_eq!(
        count(&api.server, "DELETE", r"^/api/v2/users/35436$").await,
        2
    );
    assert_eq!(
        count(&api.server, "DELETE", r"^/api/v2/deleted_users/35436$").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropbox_folder_still_there_after_the_window_is_permanently_deleted() {
    let (api, st) = still_there_after_the_window_is_purged::<Dropbox>(|d| {
        d.state.lock().unwrap().restore_after_delete = true
    })
    .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "files")["outcome"], "purged", "{st:#}");
    assert!(api.state.lock().unwrap().purged);
    assert_eq!(
        count(&api.server, "POST", r"^/2/files/permanently_delete$").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_onedrive_item_restored_from_the_recycle_bin_is_permanently_deleted() {
    let (api, st) = still_there_after_the_window_is_purged::<OneDrive>(|d| {
        d.state.lock().unwrap().restore_after_delete = true
    })
    .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(
        TestEnv::step(&st, "sharepoint")["outcome"],
        "purged",
        "{st:#}"
    );
    assert!(api.state.lock().unwrap().purged);
    assert_eq!(count(&api.server, "POST", r"/permanentDelete$").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zoho_contact_still_found_after_the_window_fails_asking_a_person_to_act() {
    // Zoho Desk has no verified permanent-delete API, so there is no purge action.
    let api = ZohoDesk::start(true).await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file(&env, "erase").await;
    let st = run_once(&env, &id).await;
    assert_eq!(
        TestEnv::step(&st, "support-desk")["state"],
        "grace",
        "{st:#}"
    );
    // Someone restores the contact from the recycle bin during the window.
    api.state.lock().unwrap().soft_deleted = false;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "support-desk");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("still holds the subject after its recovery window"),
        "{err}"
    );
    assert!(err.contains("lethe retry"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_error_20009_is_retried_later_then_every_message_is_deleted_once() {
    let api = Twilio::start(true).await;
    let (m, p) = api.erase_call();
    inject(&api.server, m, p, twilio_20009(), 1).await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file(&env, "erase").await;

    let st = run_once(&env, &id).await;
    let step = TestEnv::step(&st, "sms");
    assert_eq!(step["state"], "retry_wait", "not a failure: {st:#}");
    assert_eq!(step["error_class"], "transient");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("not yet finished"), "{err}");

    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "sms")["outcome"], "erased");
    assert!(api.erased_as_expected());
    // Three of the subject's messages (two to, one from), each deleted once after the 20009.
    for sid in [
        "SM1f1e1d1c1b1a19181716151413121110",
        "SM2f2e2d2c2b2a29282726252423222120",
        "SM3f3e3d3c3b3a39383736353433323130",
    ] {
        let n = count(&api.server, "DELETE", &format!("/Messages/{sid}\\.json$")).await;
        assert!(n >= 1, "{sid} deleted");
    }
    assert_eq!(
        count(&api.server, "DELETE", r"/Messages/SM0+other\.json$").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_keeps_suppressions_and_a_bare_404_is_retried_not_taken_as_not_found() {
    let api = Mailgun::start(true).await;
    // A 404 without JSON (eventual consistency, or a path the API does not know yet).
    let (m, p) = api.erase_call();
    inject(
        &api.server,
        m,
        p,
        ResponseTemplate::new(404).set_body_string("404 page not found"),
        1,
    )
    .await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file(&env, "erase").await;
    let st = run_once(&env, &id).await;
    let step = TestEnv::step(&st, "mail");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient");

    let st = finish(&env, &id).await;
    let step = TestEnv::step(&st, "mail");
    assert_eq!(step["outcome"], "retained", "{st:#}");
    let note = step["evidence"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("an opt-out must be honoured"), "{note}");
    // Suppressions are never deleted.
    for table in ["unsubscribes", "bounces", "complaints"] {
        assert_eq!(count(&api.server, "DELETE", &format!("/{table}/")).await, 0);
    }
    assert!(!st.to_string().contains(EMAIL), "no raw email in status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whm_refusal_answered_with_http_200_fails_with_whms_reason() {
    let api = Whm::start(true).await;
    let (m, p) = api.erase_call();
    inject(
        &api.server,
        m,
        p,
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "metadata": {"command": "removeacct", "result": 0, "version": 1,
                         "reason": "The account is owned by a reseller you do not control."}
        })),
        1,
    )
    .await;
    let env = env_for(Backend::Sqlite, &api).await;
    let id = file(&env, "erase").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "hosting");
    assert_eq!(step["error_class"], "permanent");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("owned by a reseller"), "{err}");
    assert!(!api.erased_as_expected(), "the account is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_template_that_does_not_compile_is_refused_at_load_naming_the_key() {
    let env = crate::connectors_suite::env_with(
        Backend::Sqlite,
        "[[processor]]\nname = \"files\"\nconnector = \"dropbox\"\nsettings = { path = \"/Customers/{{ subject.customer_id \" }\nsecrets = { access_token = \"DROPBOX_TOKEN\" }\n",
    )
    .await;
    let out = env.lethe(&["check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", crate::helpers::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("processor[0].settings.path"), "{err}");
    assert!(err.contains("template does not compile"), "{err}");
}

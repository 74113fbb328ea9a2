//! A small company with one processor of each category (and then some): one
//! erasure across all of them, one export collecting everyone's data, and
//! `lethe check` against every processor's cheapest authenticated call.

use crate::connectors_fakes::{
    Api, Dropbox, Mailgun, OneDrive, Stripe, Twilio, Webhook, Whm, Xero, Zendesk, ZohoDesk, EMAIL,
};
use crate::connectors_suite::{env_with, file, finish, run_once};
use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;

struct Company {
    mailgun: Mailgun,
    zendesk: Zendesk,
    zoho: ZohoDesk,
    xero: Xero,
    stripe: Stripe,
    whm: Whm,
    dropbox: Dropbox,
    onedrive: OneDrive,
    twilio: Twilio,
    webhook: Webhook,
    mailchimp: wiremock::MockServer,
}

/// (processor, category, outcome once everything is finished)
const EXPECTED: [(&str, &str, &str); 11] = [
    ("newsletter", "mailing_list", "erased"),
    (Mailgun::PROCESSOR, "mailing_list", "retained"),
    (Zendesk::PROCESSOR, "ticketing", "purged"),
    (ZohoDesk::PROCESSOR, "ticketing", "purged"),
    (Xero::PROCESSOR, "accounting", "retained"),
    (Stripe::PROCESSOR, "accounting", "erased"),
    (Whm::PROCESSOR, "hosting", "erased"),
    (Dropbox::PROCESSOR, "object_storage", "purged"),
    (OneDrive::PROCESSOR, "object_storage", "purged"),
    (Twilio::PROCESSOR, "sms", "erased"),
    (Webhook::PROCESSOR, "other", "erased"),
];

impl Company {
    async fn start() -> Company {
        let mailchimp = fakes::mailchimp().await;
        fakes::add_member(&mailchimp, EMAIL).await;
        Company {
            mailgun: Mailgun::start(true).await,
            zendesk: Zendesk::start(true).await,
            zoho: ZohoDesk::start(true).await,
            xero: Xero::start(true).await,
            stripe: Stripe::start(true).await,
            whm: Whm::start(true).await,
            dropbox: Dropbox::start(true).await,
            onedrive: OneDrive::start(true).await,
            twilio: Twilio::start(true).await,
            webhook: Webhook::start(true).await,
            mailchimp,
        }
    }

    fn toml(&self) -> String {
        [
            fakes::processor_toml(&self.mailchimp),
            self.mailgun.processor_toml(),
            self.zendesk.processor_toml(),
            self.zoho.processor_toml(),
            self.xero.processor_toml(),
            self.stripe.processor_toml(),
            self.whm.processor_toml(),
            self.dropbox.processor_toml(),
            self.onedrive.processor_toml(),
            self.twilio.processor_toml(),
            self.webhook.processor_toml(),
        ]
        .join("\n")
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MAILCHIMP_API_KEY", fakes::API_KEY),
            (Mailgun::SECRET_VAR, Mailgun::SECRET),
            (Zendesk::SECRET_VAR, Zendesk::SECRET),
            (ZohoDesk::SECRET_VAR, ZohoDesk::SECRET),
            (Xero::SECRET_VAR, Xero::SECRET),
            (Stripe::SECRET_VAR, Stripe::SECRET),
            (Whm::SECRET_VAR, Whm::SECRET),
            (Dropbox::SECRET_VAR, Dropbox::SECRET),
            (OneDrive::SECRET_VAR, OneDrive::SECRET),
            (Twilio::SECRET_VAR, Twilio::SECRET),
            (Webhook::SECRET_VAR, Webhook::SECRET),
        ]
    }

    async fn env(&self, backend: Backend) -> TestEnv {
        let mut env = env_with(backend, &self.toml()).await;
        for (k, v) in Company::secrets() {
            env.set_env(k, v);
        }
        env
    }
}

on_both_backends!(one_erasure_reaches_every_category_and_status_shows_each_outcome);

async fn one_erasure_reaches_every_category_and_status_shows_each_outcome(backend: Backend) {
    let co = Company::start().await;
    let env = co.env(backend).await;
    let id = file(&env, "erase").await;

    // First pass: the hard deletes are done, the soft deletes wait out their windows.
    let st = run_once(&env, &id).await;
    assert_eq!(st["status"], "waiting", "{st:#}");
    for (p, _, outcome) in EXPECTED {
        let step = TestEnv::step(&st, p);
        if outcome == "purged" {
            assert_eq!(step["state"], "grace", "{p}: {st:#}");
            assert!(step["grace_until"].is_string(), "{p}");
        } else {
            assert_eq!(step["state"], "done", "{p}: {st:#}");
            assert_eq!(step["outcome"], outcome, "{p}: {st:#}");
        }
    }

    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let steps = st["steps"].as_array().unwrap();
    assert_eq!(steps.len(), EXPECTED.len());
    for (p, category, outcome) in EXPECTED {
        let step = TestEnv::step(&st, p);
        assert_eq!(step["category"], category, "{p}");
        assert_eq!(step["outcome"], outcome, "{p}: {st:#}");
    }
    let mut categories: Vec<&str> = steps
        .iter()
        .filter_map(|s| s["category"].as_str())
        .collect();
    categories.sort();
    categories.dedup();
    assert_eq!(
        categories,
        [
            "accounting",
            "hosting",
            "mailing_list",
            "object_storage",
            "other",
            "sms",
            "ticketing"
        ]
    );
    // Retained outcomes say why.
    let xero = TestEnv::step(&st, Xero::PROCESSOR);
    assert!(xero["evidence"]["note"]
        .as_str()
        .unwrap_or_default()
        .contains("legal obligation"));
    // And each fake really lost (or archived, or kept as an opt-out) the subject.
    assert!(co.mailgun.erased_as_expected());
    assert!(co.zendesk.erased_as_expected());
    assert!(co.zoho.erased_as_expected());
    assert!(co.xero.erased_as_expected());
    assert!(co.stripe.erased_as_expected());
    assert!(co.whm.erased_as_expected());
    assert!(co.dropbox.erased_as_expected());
    assert!(co.onedrive.erased_as_expected());
    assert!(co.twilio.erased_as_expected());
    assert!(co.webhook.erased_as_expected());
    assert_eq!(
        fakes::count(&co.mailchimp, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    assert!(!st.to_string().contains(EMAIL), "identities masked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_export_collects_every_processors_data_into_one_file_each() {
    let co = Company::start().await;
    let env = co.env(Backend::Sqlite).await;
    let id = file(&env, "export").await;
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let dir = env.dir.path().join("exports").join(&id);
    let read = |p: &str| -> Value {
        let path = dir.join(format!("{p}.json"));
        let doc: Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        assert_eq!(doc["processor"], p);
        assert_eq!(doc["request_id"], id.as_str());
        doc["data"].clone()
    };
    for (p, _, _) in EXPECTED {
        assert_eq!(TestEnv::step(&st, p)["outcome"], "exported", "{p}: {st:#}");
    }
    assert_eq!(read("newsletter")["member"]["email_address"], EMAIL);
    co.mailgun.check_export(&read(Mailgun::PROCESSOR));
    co.zendesk.check_export(&read(Zendesk::PROCESSOR));
    co.zoho.check_export(&read(ZohoDesk::PROCESSOR));
    co.xero.check_export(&read(Xero::PROCESSOR));
    co.stripe.check_export(&read(Stripe::PROCESSOR));
    co.whm.check_export(&read(Whm::PROCESSOR));
    co.dropbox.check_export(&read(Dropbox::PROCESSOR));
    co.onedrive.check_export(&read(OneDrive::PROCESSOR));
    co.twilio.check_export(&read(Twilio::PROCESSOR));
    co.webhook.check_export(&read(Webhook::PROCESSOR));
    // Nothing was erased anywhere.
    assert!(!co.stripe.erased_as_expected() && !co.twilio.erased_as_expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_processor_ok_with_good_credentials() {
    let co = Company::start().await;
    let env = co.env(Backend::Sqlite).await;
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    let procs = v["processors"].as_array().unwrap();
    assert_eq!(procs.len(), EXPECTED.len());
    for p in procs {
        assert_eq!(p["ok"], true, "{p:#}");
        assert_eq!(p["status"], 200, "{p:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_env_var_of_every_processor_whose_credentials_are_rejected() {
    let co = Company::start().await;
    let mut env = co.env(Backend::Sqlite).await;
    for (k, _) in Company::secrets() {
        env.set_env(k, "rejected-secret-value");
    }
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let vars: std::collections::BTreeMap<&str, &str> = [
        ("newsletter", "MAILCHIMP_API_KEY"),
        (Mailgun::PROCESSOR, Mailgun::SECRET_VAR),
        (Zendesk::PROCESSOR, Zendesk::SECRET_VAR),
        (ZohoDesk::PROCESSOR, ZohoDesk::SECRET_VAR),
        (Xero::PROCESSOR, Xero::SECRET_VAR),
        (Stripe::PROCESSOR, Stripe::SECRET_VAR),
        (Whm::PROCESSOR, Whm::SECRET_VAR),
        (Dropbox::PROCESSOR, Dropbox::SECRET_VAR),
        (OneDrive::PROCESSOR, OneDrive::SECRET_VAR),
        (Twilio::PROCESSOR, Twilio::SECRET_VAR),
        (Webhook::PROCESSOR, Webhook::SECRET_VAR),
    ]
    .into_iter()
    .collect();
    for p in v["processors"].as_array().unwrap() {
        let name = p["processor"].as_str().unwrap();
        assert_eq!(p["ok"], false, "{p:#}");
        assert_eq!(p["error_class"], "permanent", "{p:#}");
        let err = p["error"].as_str().unwrap();
        assert!(err.contains("credentials rejected"), "{name}: {err}");
        assert!(err.contains(vars[name]), "{name}: {err}");
        assert!(!err.contains("rejected-secret-value"), "{name}: {err}");
    }
}

#[test]
fn the_readme_small_company_config_loads() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("### A small company")
        .nth(1)
        .expect("the small-company section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its toml block");
    let dir = tempfile::tempdir().unwrap();
    let cfg = lethe::config::Config::parse(&dir.path().join("lethe.toml"), block)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut connectors: Vec<&str> = cfg
        .processors
        .iter()
        .map(|p| p.connector.as_str())
        .collect();
    connectors.sort();
    assert_eq!(
        connectors,
        [
            "dropbox",
            "mailchimp",
            "mailgun",
            "stripe",
            "twilio",
            "webhook",
            "whm",
            "xero",
            "zendesk"
        ]
    );
}

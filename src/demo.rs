//! `lethe demo`: one erasure, end to end, against local simulated processors.
//!
//! Everything but the processors is real: the config is parsed and validated,
//! the store is a SQLite file, identities are sealed, the engine plans, leases,
//! calls the connector over HTTP, retries a processor that answers 503, and
//! writes the audit chain — which the demo verifies at the end.

use crate::config::Config;
use crate::crypto::Keys;
use crate::domain::{RequestKind, Subject};
use crate::engine::{Engine, SubmitOptions};
use crate::sim::mailchimp::Mailchimp;
use crate::view::RequestView;
use anyhow::Context;
use chrono::Utc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBJECT: &str = "jane.doe@example.com";

/// Run the demo; returns the exit code.
pub async fn run() -> anyhow::Result<u8> {
    let dir = std::env::temp_dir().join(format!(
        "lethe-demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(dir.join("workflows")).context("creating the demo directory")?;

    // Two simulated Mailchimp accounts: one healthy, one that fails twice with 503 first.
    let healthy = Mailchimp::new("demo-key-us21");
    healthy.add_member("customers", SUBJECT);
    healthy.add_member("customers", "someone.else@example.com");
    let flaky = Mailchimp::new("demo-key-us21");
    flaky.add_member("events", SUBJECT);
    flaky.fail_next.store(2, Ordering::Relaxed);
    let s1 = crate::sim::serve(healthy.router())
        .await
        .context("starting a simulated processor")?;
    let s2 = crate::sim::serve(flaky.router())
        .await
        .context("starting a simulated processor")?;

    // The demo's secret lives only in this process's environment, as a real one would.
    std::env::set_var("DEMO_MAILCHIMP_KEY", "demo-key-us21");
    let config_text = format!(
        r#"workflows_dir = "workflows"

[store]
url = "sqlite://{db}"
key_env = "LETHE_KEY"

[[processor]]
name = "newsletter"
connector = "mailchimp"
base_url = "{u1}/3.0"
settings = {{ list_id = "customers" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}

[[processor]]
name = "product-updates"
connector = "mailchimp"
base_url = "{u1}/3.0"
settings = {{ list_id = "product-updates" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}

[[processor]]
name = "event-invites"
connector = "mailchimp"
base_url = "{u2}/3.0"
settings = {{ list_id = "events" }}
secrets = {{ api_key = "DEMO_MAILCHIMP_KEY" }}
"#,
        db = dir.join("lethe.db").display(),
        u1 = s1.url(),
        u2 = s2.url(),
    );
    let workflow = r#"kind = "erasure"
description = "demo: the default erasure policy, with retries in milliseconds instead of minutes"
[retry]
initial = "150ms"
factor = 2.0
cap = "1s"
max_attempts = 5
jitter = false
[[phase]]
name = "stop mail"
select = ["category:mailing_list"]
"#;
    std::fs::write(dir.join("workflows/erasure.toml"), workflow)?;
    let config_path = dir.join("lethe.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::load(&config_path)?;
    let key = Keys::generate_base64();
    let keys = Keys::from_base64("LETHE_KEY", &key)?;
    let store = crate::store::open(&config.store.url).await?;
    store.migrate().await?;
    let engine = Engine::new(Arc::new(config), store, keys)?;

    println!(
        "lethe demo — erasure of {} at 3 simulated Mailchimp audiences\n",
        Subject::parse(Some(SUBJECT), None, None, None)?.masked()
    );
    let started = Instant::now();
    let sub = engine
        .submit(
            RequestKind::Erasure,
            Subject::parse(Some(SUBJECT), None, None, None)?,
            SubmitOptions::default(),
        )
        .await?;
    let id = sub.request.id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let req = loop {
        engine.run_until_idle().await?;
        let req = engine.request(&id).await?;
        if req.status.is_closed()
            || req.status == crate::domain::RequestStatus::Failed
            || Instant::now() > deadline
        {
            break req;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    let steps = engine.store.steps(&id).await?;
    print!(
        "{}",
        RequestView::new(&req, Some(&steps), Utc::now()).to_text()
    );
    let audit = crate::audit::verify(engine.store.as_ref()).await?;
    println!(
        "\nfinished in {} ms (including {} ms of deliberate retry back-off)",
        elapsed.as_millis(),
        150 + 300
    );
    println!(
        "processors now hold the subject: newsletter={}, event-invites={}",
        healthy.has_member("customers", SUBJECT),
        flaky.has_member("events", SUBJECT)
    );
    println!(
        "audit chain: {} events, {}",
        audit.checked,
        if audit.broken.is_none() {
            "verified"
        } else {
            "BROKEN"
        }
    );
    println!("\nthe demo's files are in {}", dir.display());
    println!(
        "inspect: LETHE_KEY='{key}' lethe --config {} status {id}",
        config_path.display()
    );
    println!(
        "certificate: lethe --config {} report {id} --format html -o certificate.html",
        config_path.display()
    );
    Ok(
        if req.status == crate::domain::RequestStatus::Completed && audit.broken.is_none() {
            0
        } else {
            1
        },
    )
}

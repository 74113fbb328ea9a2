//! A processor whose error text echoes the subject in every form it might
//! (case, percent-encoding, a phone written five ways, the customer id): none
//! of it may reach the database — file and WAL, or any PostgreSQL row — the
//! status output or the logs. The message that is kept is scrubbed, lives
//! outside the hash chain (the chain holds its SHA-256), and is destroyed with
//! the identities while the chain still verifies.

use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::Mock;

const EMAIL: &str = "Jane.Doe@Example.com";
const PHONE: &str = "+44 7700 900123";
const CUSTOMER: &str = "cus_8842QX";

/// The forms the fake echoes back; none may be stored or logged.
const ECHOED: &[&str] = &[
    "jane.doe@example.com",
    "JANE.DOE@EXAMPLE.COM",
    "jane.doe%40example.com",
    "Jane.Doe%40Example.com",
    "+447700900123",
    "+44 7700 900123",
    "07700 900123",
    "447700900123",
    "+44-7700-900-123",
    "(0)7700 900123",
    "%2B447700900123",
    "cus_8842QX",
    "CUS_8842QX",
];

/// Lower-cased needles to look for in stored bytes.
fn needles() -> Vec<String> {
    let mut n: Vec<String> = ECHOED.iter().map(|s| s.to_lowercase()).collect();
    n.extend(["7700900123".to_string(), "jane.doe".to_string()]);
    n
}

fn leaks(haystack: &str) -> Vec<String> {
    let h = haystack.to_lowercase();
    needles().into_iter().filter(|n| h.contains(n)).collect()
}

on_both_backends!(processor_text_echoing_the_subject_in_any_form_is_never_stored_or_logged);

async fn processor_text_echoing_the_subject_in_any_form_is_never_stored_or_logged(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let echo = format!(
        "{} is in compliance state; also known as {}. Phones: {}. Customer {}.",
        ECHOED[0],
        ECHOED[1..4].join(", "),
        ECHOED[4..11].join(", "),
        ECHOED[11..].join(" / ")
    );
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(fakes::problem(400, "Member In Compliance State", &echo))
        .with_priority(3)
        .mount(&server)
        .await;
    let mut env = TestEnv::new(
        backend,
        "",
        &format!(
            "identity_retention = \"1s\"\n\n{}",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    // identity_retention belongs to [store]: TestEnv appends `body` right after it.
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("RUST_LOG", "debug");
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--phone",
            PHONE,
            "--customer-id",
            CUSTOMER,
            "--json",
        ])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let out = env.lethe(&["run", "--until-idle"]).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "failed", "{st:#}");
    let kept = step["last_error"].as_str().unwrap_or_default().to_string();
    assert!(
        kept.contains("Member In Compliance State") || kept.contains("compliance"),
        "the processor's message is kept, scrubbed: {kept}"
    );
    assert_eq!(leaks(&kept), Vec::<String>::new(), "last_error: {kept}");
    assert_eq!(leaks(&log), Vec::<String>::new(), "the log:\n{log}");

    // The chain holds the message's hash, never the message.
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let failed = events
        .iter()
        .find(|e| e.kind == "step.failed")
        .expect("step.failed");
    assert!(failed.detail.get("error").is_none(), "{:?}", failed.detail);
    let hash = failed.detail["error_sha256"]
        .as_str()
        .expect("error_sha256");
    let texts = store.texts(&id).await.unwrap();
    assert!(
        texts.iter().any(|(h, body)| h == hash && body == &kept),
        "the text is kept beside the chain under its hash: {texts:?}"
    );

    // Every stored byte: SQLite's file and WAL, or every PostgreSQL row.
    let dump = dump_store(&env, backend).await;
    assert_eq!(leaks(&dump), Vec::<String>::new(), "raw identity stored");

    // Closed and past its retention: the text goes with the identities; the
    // chain still verifies.
    let out = env.lethe(&["cancel", &id]).await;
    assert!(out.status.success(), "{}", show(&out));
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        store.texts(&id).await.unwrap().is_empty(),
        "texts destroyed"
    );
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["last_error"],
        Value::Null,
        "{st:#}"
    );
    let out = env.lethe(&["audit", "verify"]).await;
    assert!(out.status.success(), "{}", show(&out));
}

/// Everything the store holds, as text.
pub(crate) async fn dump_store(env: &TestEnv, backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let mut all = String::new();
            for f in ["lethe.db", "lethe.db-wal"] {
                if let Ok(bytes) = std::fs::read(env.dir.path().join(f)) {
                    all.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            assert!(all.len() > 1000, "the database files were read");
            all
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&env.db_url).await.unwrap();
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            assert!(tables.len() > 3, "{tables:?}");
            let mut all = String::new();
            for (t,) in tables {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("SELECT row_to_json(x)::text FROM \"{t}\" x"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                for (r,) in rows {
                    all.push_str(&r);
                    all.push('\n');
                }
            }
            all
        }
    }
}

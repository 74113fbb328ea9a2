//! Signed checkpoints of the audit chains (issue 12.2): the public key that
//! `lethe audit key` prints, checkpoints written by one elected daemon,
//! certificates carrying an inclusion proof that `lethe audit verify
//! --certificate` checks offline, and rewritten or truncated chains caught by
//! `lethe audit verify`.

use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use base64::Engine as _;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_key_prints_the_public_key_derived_from_the_master_key_and_its_id() {
    let env = TestEnv::new(Backend::Sqlite, "", "").await;
    let out = env.lethe(&["audit", "key"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = env.json(&["audit", "key", "--json"]).await;
    let public = v["public_key"].as_str().expect("public_key");
    let kid = v["key_id"].as_str().expect("key_id");
    assert_eq!(v["algorithm"], "ed25519");
    assert!(text.starts_with(public), "{text}");
    assert!(text.contains(kid), "{text}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(public)
        .expect("base64");
    assert_eq!(raw.len(), 32);
    // It is the key derived from LETHE_KEY: the same key twice, another with another master key.
    let again = env.json(&["audit", "key", "--json"]).await;
    assert_eq!(again["public_key"], public);
    let mut other = TestEnv::new(Backend::Sqlite, "", "").await;
    other.set_env("LETHE_KEY", &crate::helpers::test_key());
    let theirs = other.json(&["audit", "key", "--json"]).await;
    assert_ne!(theirs["public_key"], public);
    // No store is needed (nor created).
    assert!(!env.dir.path().join("lethe.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_key_uses_the_seed_named_by_signing_key_env_and_names_a_bad_one() {
    let mut env = TestEnv::new(
        Backend::Sqlite,
        "",
        "[audit]\nsigning_key_env = \"LETHE_AUDIT_KEY\"\ncheckpoint_every = \"1s\"\n",
    )
    .await;
    let out = env.lethe(&["audit", "key"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LETHE_AUDIT_KEY"),
        "{}",
        show(&out)
    );
    env.set_env("LETHE_AUDIT_KEY", "not base64!");
    let out = env.lethe(&["audit", "key"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let seed = [42u8; 32];
    env.set_env(
        "LETHE_AUDIT_KEY",
        &base64::engine::general_purpose::STANDARD.encode(seed),
    );
    let v = env.json(&["audit", "key", "--json"]).await;
    let expect = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    assert_eq!(
        v["public_key"],
        base64::engine::general_purpose::STANDARD.encode(expect.as_bytes())
    );
    assert_eq!(v["key_id"], lethe::audit::checkpoint::key_id(&expect));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checkpoint_interval_is_a_config_error_naming_the_key() {
    let env = TestEnv::new(
        Backend::Sqlite,
        "",
        "[audit]\ncheckpoint_every = \"soon\"\n",
    )
    .await;
    let out = env.lethe(&["audit", "key"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`soon` is not a duration"),
        "{}",
        show(&out)
    );
    let env = TestEnv::new(Backend::Sqlite, "", "[audit]\ncheckpoint_every = \"0s\"\n").await;
    let out = env.lethe(&["audit", "key"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit.checkpoint_every"),
        "{}",
        show(&out)
    );
}

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

/// A world with the Mailchimp fake (members `emails` known) and checkpoints every 200 ms.
async fn world(backend: Backend, emails: &[&str]) -> (TestEnv, wiremock::MockServer) {
    let server = fakes::mailchimp().await;
    for e in emails {
        fakes::add_member(&server, e).await;
    }
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &format!(
            "{}\n[audit]\ncheckpoint_every = \"200ms\"\n",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("MAILCHIMP_API_KEY", fakes::API_KEY);
    (env, server)
}

/// The base64 public key `lethe audit key --json` prints.
async fn public_key(env: &TestEnv) -> String {
    env.json(&["audit", "key", "--json"]).await["public_key"]
        .as_str()
        .expect("public_key")
        .to_string()
}

/// Write the request's JSON certificate to `file`; returns it parsed.
async fn certificate(env: &TestEnv, id: &str, file: &std::path::Path) -> Value {
    let out = env
        .lethe(&[
            "report",
            id,
            "--format",
            "json",
            "-o",
            file.to_str().expect("utf-8 path"),
        ])
        .await;
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", show(&out));
    serde_json::from_str(&std::fs::read_to_string(file).expect("certificate file")).expect("JSON")
}

/// `lethe audit verify --certificate FILE --public-key K...` with no config,
/// no key in the environment and no store: fully offline.
async fn verify_offline(file: &std::path::Path, keys: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.arg("--config")
        .arg(dir.path().join("absent.toml"))
        .args(["audit", "verify", "--certificate"])
        .arg(file)
        .current_dir(dir.path())
        .env_remove("LETHE_KEY")
        .env_remove("LETHE_CONFIG");
    for k in keys {
        c.args(["--public-key", k]);
    }
    c.output().await.expect("run lethe")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Run the SQL on the test's store (to play someone with write access to the database).
async fn sql(env: &TestEnv, statements: &[String]) {
    match env.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&env.db_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&pool).await.unwrap();
            }
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&env.db_url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&pool).await.unwrap();
            }
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

on_both_backends!(
    a_certificate_verifies_offline_with_the_printed_public_key_and_fails_when_an_event_is_edited_or_the_key_is_wrong,
    a_certificate_made_before_any_checkpoint_says_pending_and_does_not_verify_offline,
    a_request_chain_rewritten_consistently_in_the_database_is_caught_by_audit_verify,
    a_truncated_chain_tail_below_a_checkpointed_position_is_caught_by_audit_verify,
    checkpoints_signed_before_a_key_rotation_still_verify_with_the_old_master_key_configured,
);

async fn a_certificate_verifies_offline_with_the_printed_public_key_and_fails_when_an_event_is_edited_or_the_key_is_wrong(
    backend: Backend,
) {
    let (env, _server) = world(backend, &[EMAIL]).await;
    let id = env.erase(EMAIL).await;
    env.run_until_status(&id, &["completed"], 30).await;
    let pk = public_key(&env).await;
    let file = env.dir.path().join("cert.json");
    let cert = certificate(&env, &id, &file).await;
    let audit = &cert["audit"];
    assert_eq!(audit["pending_checkpoint"], false, "{audit:#}");
    assert!(audit["checkpoint"].is_object(), "{audit:#}");
    assert_eq!(
        audit["key_id"],
        env.json(&["audit", "key", "--json"]).await["key_id"]
    );
    let events = audit["events"].as_array().expect("events");
    assert!(events.len() >= 3, "{audit:#}");
    assert_eq!(
        audit["proof"]["leaf"]["hash"],
        events.last().unwrap()["hash"]
    );
    assert!(
        !std::fs::read_to_string(&file).unwrap().contains("Jane"),
        "no raw identity in the certificate"
    );

    let out = verify_offline(&file, &[&pk]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).starts_with("ok:"), "{}", show(&out));
    // The text and HTML certificates name the checkpoint and the key.
    let cp_id = audit["checkpoint"]["id"].as_i64().unwrap();
    let kid = audit["key_id"].as_str().unwrap();
    let out = env.lethe(&["report", &id]).await;
    assert!(
        stdout(&out).contains(&format!("checkpoint:  #{cp_id} signed"))
            && stdout(&out).contains(kid),
        "{}",
        show(&out)
    );
    let out = env.lethe(&["report", &id, "--format", "html"]).await;
    assert!(
        stdout(&out).contains("Signed checkpoint") && stdout(&out).contains(kid),
        "{}",
        show(&out)
    );

    // Someone edits one event in the file: the newsletter "found nothing".
    let mut edited = cert.clone();
    let ev = edited["audit"]["events"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["kind"] == "step.done")
        .expect("a step.done event");
    assert_eq!(ev["detail"]["outcome"], "erased");
    ev["detail"]["outcome"] = "not_found".into();
    let pos = ev["chain_seq"].as_i64().unwrap();
    let bad = env.dir.path().join("edited.json");
    std::fs::write(&bad, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    let out = verify_offline(&bad, &[&pk]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("position {pos}")) && stdout(&out).contains("altered"),
        "{}",
        show(&out)
    );

    // Recomputing the edited chain's hashes does not help: the head is no longer the proven leaf.
    let mut rehashed = edited.clone();
    let mut prev = lethe::domain::event::GENESIS_HASH.to_string();
    for e in rehashed["audit"]["events"].as_array_mut().unwrap() {
        let h = lethe::domain::event::event_hash(
            &prev,
            &lethe::domain::event::ChainedEvent {
                chain: e["chain"].as_str().unwrap(),
                chain_seq: e["chain_seq"].as_i64().unwrap(),
                at_ms: e["at"].as_i64().unwrap(),
                request_id: e["request"].as_str(),
                step_id: e["step"].as_i64(),
                kind: e["kind"].as_str().unwrap(),
                detail: &e["detail"],
            },
        );
        e["prev_hash"] = prev.clone().into();
        e["hash"] = h.clone().into();
        prev = h;
    }
    std::fs::write(&bad, serde_json::to_string(&rehashed).unwrap()).unwrap();
    let out = verify_offline(&bad, &[&pk]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stdout(&out).contains("proven leaf"), "{}", show(&out));

    // A wrong public key fails, naming the key the checkpoint was signed with.
    let other = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let other_pk =
        base64::engine::general_purpose::STANDARD.encode(other.verifying_key().as_bytes());
    let out = verify_offline(&file, &[&other_pk]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains(audit["key_id"].as_str().unwrap()),
        "{}",
        show(&out)
    );
    // Among several keys (e.g. before and after a rotation) the right one is picked.
    let out = verify_offline(&file, &[&other_pk, &pk]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // A forged signature (the checkpoint's root changed) fails.
    let mut forged = cert.clone();
    forged["audit"]["checkpoint"]["root"] = "00".repeat(32).into();
    std::fs::write(&bad, serde_json::to_string(&forged).unwrap()).unwrap();
    let out = verify_offline(&bad, &[&pk]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));

    // No key at all and no config: exit 2 naming what is missing.
    let out = verify_offline(&file, &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--public-key"),
        "{}",
        show(&out)
    );

    // And the store check agrees.
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("signed checkpoints verified"),
        "{}",
        show(&out)
    );
    // Without any key at hand it checks the rest and says the signatures were not checked.
    let out = env
        .command(&["audit", "verify"])
        .env_remove("LETHE_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains("signatures NOT checked"),
        "{}",
        show(&out)
    );
    let out = env
        .command(&["audit", "verify", "--public-key", &pk])
        .env_remove("LETHE_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        stdout(&out).contains("signed checkpoints verified"),
        "{}",
        show(&out)
    );
}

async fn a_certificate_made_before_any_checkpoint_says_pending_and_does_not_verify_offline(
    backend: Backend,
) {
    let (env, _server) = world(backend, &[EMAIL]).await;
    let id = env.erase(EMAIL).await;
    let file = env.dir.path().join("cert.json");
    let cert = certificate(&env, &id, &file).await;
    assert_eq!(
        cert["audit"]["pending_checkpoint"], true,
        "{:#}",
        cert["audit"]
    );
    assert!(cert["audit"]["checkpoint"].is_null());
    assert!(cert["audit"]["proof"].is_null());
    let out = verify_offline(&file, &[&public_key(&env).await]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains("pending_checkpoint"),
        "{}",
        show(&out)
    );
    let out = env.lethe(&["report", &id]).await;
    assert!(stdout(&out).contains("PENDING"), "{}", show(&out));

    // After a run (which checkpoints at its end) it is covered.
    env.run_until_status(&id, &["completed"], 30).await;
    let cert = certificate(&env, &id, &file).await;
    assert_eq!(cert["audit"]["pending_checkpoint"], false);
    let out = verify_offline(&file, &[&public_key(&env).await]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// Rewrite the request's chain as someone with write access but without the
/// key would: change one event, recompute every hash after it with lethe's own
/// code, and update the chain's head to match.
async fn rewrite_chain(env: &TestEnv, id: &str) -> i64 {
    let store = env.store().await;
    let chain = format!("request:{id}");
    let events = store.chain_events(&chain, 0, 1000).await.unwrap();
    let mut prev = lethe::domain::event::GENESIS_HASH.to_string();
    let mut statements = vec![];
    let mut changed = 0;
    for e in &events {
        let mut detail = e.detail.clone();
        if e.kind == "step.done" && detail["outcome"] == "erased" {
            detail["outcome"] = "not_found".into();
            changed = e.chain_seq;
        }
        let h = lethe::domain::event::event_hash(
            &prev,
            &lethe::domain::event::ChainedEvent {
                chain: &e.chain,
                chain_seq: e.chain_seq,
                at_ms: e.at,
                request_id: e.request_id.as_deref(),
                step_id: e.step_id,
                kind: &e.kind,
                detail: &detail,
            },
        );
        statements.push(format!(
            "UPDATE events SET detail = {}, prev_hash = {}, hash = {} WHERE seq = {}",
            quote(&detail.to_string()),
            quote(&prev),
            quote(&h),
            e.seq
        ));
        prev = h;
    }
    assert!(changed > 0, "the chain has an erased step.done");
    statements.push(format!(
        "UPDATE chain_heads SET hash = {} WHERE chain = {}",
        quote(&prev),
        quote(&chain)
    ));
    sql(env, &statements).await;
    changed
}

async fn a_request_chain_rewritten_consistently_in_the_database_is_caught_by_audit_verify(
    backend: Backend,
) {
    let (env, _server) = world(backend, &[EMAIL]).await;
    let id = env.erase(EMAIL).await;
    env.run_until_status(&id, &["completed"], 30).await;
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let pos = rewrite_chain(&env, &id).await;
    // The rewritten chain recomputes (that is the point of the attack)…
    let v = env.json(&["audit", "verify", "--json"]).await;
    assert_eq!(v["broken_chains"], 0, "{v:#}");
    // …but the signed checkpoint no longer matches it.
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("chain request:{id}")) && text.contains("rewritten"),
        "{text}"
    );
    let problems = v["checkpoints"]["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p["chain"] == format!("request:{id}")),
        "{v:#}"
    );
    assert!(pos >= 1);
    // A certificate made now cannot prove the rewritten head.
    let file = env.dir.path().join("cert.json");
    let cert = certificate(&env, &id, &file).await;
    assert!(cert["audit"]["proof"].is_null(), "{:#}", cert["audit"]);
}

async fn a_truncated_chain_tail_below_a_checkpointed_position_is_caught_by_audit_verify(
    backend: Backend,
) {
    let (env, _server) = world(backend, &[EMAIL]).await;
    let id = env.erase(EMAIL).await;
    env.run_until_status(&id, &["completed"], 30).await;
    let store = env.store().await;
    let chain = format!("request:{id}");
    let events = store.chain_events(&chain, 0, 1000).await.unwrap();
    let n = events.len();
    assert!(n >= 3);
    // Delete the last two events and move the head back to match.
    let keep = &events[n - 3];
    sql(
        &env,
        &[
            format!(
                "DELETE FROM events WHERE chain = {} AND chain_seq > {}",
                quote(&chain),
                keep.chain_seq
            ),
            format!(
                "UPDATE chain_heads SET chain_seq = {}, hash = {}, event_seq = {} WHERE chain = {}",
                keep.chain_seq,
                quote(&keep.hash),
                keep.seq,
                quote(&chain)
            ),
        ],
    )
    .await;
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "chain {chain} position {} was checkpointed but its event is gone",
            events[n - 1].chain_seq
        )),
        "{text}"
    );
}

async fn checkpoints_signed_before_a_key_rotation_still_verify_with_the_old_master_key_configured(
    backend: Backend,
) {
    let (mut env, _server) = world(backend, &[EMAIL, "other@example.com"]).await;
    let id = env.erase(EMAIL).await;
    env.run_until_status(&id, &["completed"], 30).await;
    let old_pk = public_key(&env).await;
    let file = env.dir.path().join("cert.json");
    certificate(&env, &id, &file).await;

    // Rotate the master key: the old one moves to LETHE_KEY_OLD.
    let old = env
        .env
        .iter()
        .find(|(k, _)| k == "LETHE_KEY")
        .map(|(_, v)| v.clone())
        .unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            "key_env = \"LETHE_KEY\"",
            "key_env = \"LETHE_KEY\"\nold_key_envs = [\"LETHE_KEY_OLD\"]",
        ),
    )
    .unwrap();
    env.set_env("LETHE_KEY_OLD", &old);
    env.set_env("LETHE_KEY", &crate::helpers::test_key());
    let out = env.lethe(&["key", "rotate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let new_pk = public_key(&env).await;
    assert_ne!(new_pk, old_pk);
    let id2 = env.erase("other@example.com").await;
    env.run_until_status(&id2, &["completed"], 30).await;

    let v = env.json(&["audit", "verify", "--json"]).await;
    assert_eq!(v["checkpoints"]["problems"], serde_json::json!([]), "{v:#}");
    assert_eq!(
        v["checkpoints"]["key_ids"].as_array().map(Vec::len),
        Some(2),
        "{v:#}"
    );
    // The certificate made before the rotation verifies with the old public key.
    let out = verify_offline(&file, &[&new_pk, &old_pk]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// Checkpoints in the store, by id.
async fn checkpoints(env: &TestEnv) -> Vec<lethe::store::CheckpointRow> {
    env.store().await.checkpoints(0, 10_000).await.unwrap()
}

/// Poll until `pred` holds for the checkpoints, or panic after `secs`.
async fn wait_checkpoints(
    env: &TestEnv,
    secs: u64,
    what: &str,
    pred: impl Fn(&[lethe::store::CheckpointRow]) -> bool,
) -> Vec<lethe::store::CheckpointRow> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let cps = checkpoints(env).await;
        if pred(&cps) {
            return cps;
        }
        if std::time::Instant::now() > deadline {
            panic!("{what} within {secs}s; checkpoints: {cps:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The request's certificate, once its head is covered by a checkpoint and it is completed.
async fn wait_covered(env: &TestEnv, id: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let out = env.lethe(&["report", id, "--format", "json"]).await;
        if let Ok(cert) = serde_json::from_slice::<Value>(&out.stdout) {
            if cert["audit"]["pending_checkpoint"] == false
                && cert["audit"]["checkpoint"].is_object()
                && cert["request"]["status"] == "completed"
            {
                return;
            }
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "request {id} not completed and checkpointed within {secs}s: {}",
                show(&out)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgresql_elect_one_checkpoint_writer_and_the_checkpoint_chain_verifies(
) {
    let emails = ["a1@example.com", "a2@example.com", "a3@example.com"];
    let (env, _server) = world(Backend::Postgres, &emails).await;
    let mut first = env.command(&["daemon"]).spawn().expect("daemon 1");
    let id = env.erase(emails[0]).await;
    wait_covered(&env, &id, 60).await;
    let cps = checkpoints(&env).await;
    let leader = cps[0].writer.clone();

    // A second daemon on the same database stands by.
    let mut second = env.command(&["daemon"]).spawn().expect("daemon 2");
    let id = env.erase(emails[1]).await;
    wait_covered(&env, &id, 60).await;
    let before_kill = checkpoints(&env).await;
    assert!(
        before_kill.iter().all(|c| c.writer == leader),
        "only the elected daemon writes: {before_kill:#?}"
    );

    // The leader dies without a word: once its lease expires the other takes over.
    first.start_kill().expect("kill -9");
    let _ = first.wait().await;
    let id = env.erase(emails[2]).await;
    wait_covered(&env, &id, 90).await;
    let cps = wait_checkpoints(&env, 30, "the second daemon writes", |c| {
        c.iter().any(|c| c.writer != leader)
    })
    .await;
    let _ = second.start_kill();
    let _ = second.wait().await;

    // Writers never interleave (one at a time): one block, then the other.
    let changes = cps
        .windows(2)
        .filter(|w| w[0].writer != w[1].writer)
        .count();
    assert_eq!(changes, 1, "{cps:#?}");
    let ids: Vec<i64> = cps.iter().map(|c| c.id).collect();
    assert_eq!(ids, (1..=cps.len() as i64).collect::<Vec<_>>());
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("{} signed checkpoints verified", cps.len())),
        "{}",
        show(&out)
    );
}

//! Signed checkpoints of the audit chains (issue 12.2): the public key that
//! `lethe audit key` prints, checkpoints written by one elected daemon,
//! certificates carrying an inclusion proof that `lethe audit verify
//! --certificate` checks offline, and rewritten or truncated chains caught by
//! `lethe audit verify`.

use crate::helpers::{show, Backend, TestEnv};
use base64::Engine as _;

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

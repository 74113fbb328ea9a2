//! The test harness: a fresh store (a SQLite file, or a PostgreSQL schema of its
//! own) per test, a config file, and the real `lethe` binary run as a user would.

use serde_json::Value;
use sqlx::Connection;
use std::path::PathBuf;
use std::process::Output;
use tempfile::TempDir;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL of the test PostgreSQL (DEVELOPERS.md: trust auth on 127.0.0.1:5432, database `test`).
pub fn pg_admin_url() -> String {
    std::env::var("LETHE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh schema in the test database; returns a URL whose connections use it.
pub async fn pg_schema_url() -> String {
    let admin = pg_admin_url();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is not reachable ({e}); start it (see DEVELOPERS.md) or set LETHE_TEST_PG"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if admin.contains('?') { '&' } else { '?' };
    format!("{admin}{sep}options[search_path]={schema}")
}

/// One test's world.
pub struct TestEnv {
    pub dir: TempDir,
    pub backend: Backend,
    pub db_url: String,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A base64 32-byte key.
pub fn test_key() -> String {
    lethe::crypto::Keys::generate_base64()
}

impl TestEnv {
    /// A new world with `body` appended to a `[store]` section (processors, worker, dirs…).
    /// `top` goes before every table (top-level keys such as `workflows_dir`).
    pub async fn new(backend: Backend, top: &str, body: &str) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("lethe.db").display()),
            Backend::Postgres => pg_schema_url().await,
        };
        let config = dir.path().join("lethe.toml");
        // Export requests need an age recipient or an explicit choice of
        // plaintext files; tests that do not test that choose plaintext.
        // (It takes the place of the blank line, so line numbers stay put.)
        let exports = if body.contains("export_recipient") || body.contains("export_plaintext") {
            ""
        } else {
            "export_plaintext = true"
        };
        let text = format!(
            "{top}\n[store]\nurl = \"{db_url}\"\nkey_env = \"LETHE_KEY\"\n{exports}\n{body}\n"
        );
        std::fs::write(&config, text).expect("write config");
        let key = test_key();
        TestEnv {
            dir,
            backend,
            db_url,
            config,
            env: vec![("LETHE_KEY".into(), key)],
        }
    }

    /// Set an environment variable for every command run.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(ek, _)| ek != k);
        self.env.push((k.into(), v.into()));
    }

    /// A `lethe` command with this world's config and environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_lethe"));
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path());
        c.env_remove("LETHE_KEY")
            .env_remove("MAILCHIMP_API_KEY")
            .env_remove("RUST_LOG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.kill_on_drop(true);
        c
    }

    /// Run `lethe ARGS` to completion.
    pub async fn lethe(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run lethe")
    }

    /// Run, require exit 0, parse stdout as JSON.
    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.lethe(args).await;
        assert!(
            out.status.success() || out.status.code() == Some(1),
            "lethe {args:?} failed: {}",
            show(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("lethe {args:?}: stdout is not JSON ({e}): {}", show(&out)))
    }

    /// File an erasure for `email`; returns the request id.
    pub async fn erase(&self, email: &str) -> String {
        let v = self
            .json(&["request", "erase", "--email", email, "--json"])
            .await;
        v["id"].as_str().expect("id").to_string()
    }

    /// `status ID --json`.
    pub async fn status(&self, id: &str) -> Value {
        self.json(&["status", id, "--json"]).await
    }

    /// The step of `processor` in a status document.
    pub fn step<'a>(status: &'a Value, processor: &str) -> &'a Value {
        status["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["processor"] == processor))
            .unwrap_or_else(|| panic!("no step for {processor} in {status:#}"))
    }

    /// Run `run --until-idle` until the request's status is one of `want`, or panic after `secs`.
    pub async fn run_until_status(&self, id: &str, want: &[&str], secs: u64) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let out = self.lethe(&["run", "--until-idle"]).await;
            // Exit 1: a step failed in this run (the status says which).
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "run failed: {}",
                show(&out)
            );
            let st = self.status(id).await;
            if want.iter().any(|w| st["status"] == *w) {
                return st;
            }
            if std::time::Instant::now() > deadline {
                panic!("request {id} did not reach {want:?} within {secs}s: {st:#}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Open the store directly (for assertions that reach past the CLI).
    pub async fn store(&self) -> std::sync::Arc<dyn lethe::store::Store> {
        let s = lethe::store::open(&self.db_url).await.expect("open store");
        s.migrate().await.expect("migrate");
        s
    }
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Generate one test per backend from an async fn taking a `Backend`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

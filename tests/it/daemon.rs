//! A running `lethe daemon` with its HTTP intake on a free port, and a client
//! that signs webhooks the way an intake form does.

use crate::fakes::{self, API_KEY};
use crate::helpers::{Backend, TestEnv};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::{Duration, Instant};

pub const SECRET: &str = "whsec-test-0123456789";
pub const TOKEN: &str = "api-token-test-abcdef";
/// The callback signing key (an Ed25519 seed, 32 bytes of base64).
pub const CALLBACK_KEY: &str = "Y2FsbGJhY2sta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg=";

/// The public key receivers pin, derived here independently of lethe.
pub fn callback_public_key() -> ed25519_dalek::VerifyingKey {
    use base64::Engine as _;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(CALLBACK_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key()
}

/// Whether a callback's `Lethe-Signature: t=…,ed25519=…` verifies with `key` over the raw body.
pub fn callback_signed_by(key: &ed25519_dalek::VerifyingKey, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut sig = None;
    for p in header.split(',') {
        match p.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("ed25519", x)) => sig = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, sig) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
        return false;
    };
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    key.verify_strict(&msg, &sig).is_ok()
}

/// Retries in milliseconds, so tests do not wait minutes.
pub const FAST_WORKFLOW: &str = r#"kind = "erasure"
[retry]
initial = "200ms"
factor = 2.0
cap = "1s"
max_attempts = 5
jitter = false
[[phase]]
name = "all"
select = ["*"]
"#;

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `Lethe-Signature` for `body` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("{t}.").as_bytes());
    m.update(body);
    format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A test world whose processors are the given Mailchimp fake, with `[intake]` on a free port.
pub async fn intake_env(backend: Backend, server: &wiremock::MockServer) -> (TestEnv, u16) {
    intake_env_with(backend, server, "").await
}

/// The `[intake]` keys every test world gets: wiremock receivers listen on
/// plain http on 127.0.0.1, which must be allow-listed.
pub const TEST_CALLBACK_ALLOW: &str = "callback_allow = [\"http://127.0.0.1:*\"]";

/// Like [`intake_env`], with extra `[worker]` keys.
pub async fn intake_env_with(
    backend: Backend,
    server: &wiremock::MockServer,
    worker: &str,
) -> (TestEnv, u16) {
    let port = free_port();
    let body = format!(
        "[worker]\nidle_poll = \"100ms\"\nlease = \"20s\"\n{worker}\n\n[intake]\nlisten = \"127.0.0.1:{port}\"\n{TEST_CALLBACK_ALLOW}\n\
         [intake.callback_retry]\ninitial = \"200ms\"\nfactor = 2.0\ncap = \"500ms\"\nmax_attempts = 100\njitter = false\n\n{}timeout = \"10s\"\n",
        fakes::processor_toml(server)
    );
    let mut env = TestEnv::new(backend, "workflows_dir = \"workflows\"", &body).await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("LETHE_WEBHOOK_SECRET", SECRET);
    env.set_env("LETHE_API_TOKEN", TOKEN);
    env.set_env("LETHE_CALLBACK_KEY", CALLBACK_KEY);
    (env, port)
}

/// The daemon process; its stderr (the log) goes to a file.
pub struct Daemon {
    pub child: tokio::process::Child,
    pub base: String,
    pub log: std::path::PathBuf,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Start `lethe daemon` and wait until `/healthz` answers 200.
    pub async fn start(env: &TestEnv, port: u16) -> Daemon {
        let log = env
            .dir
            .path()
            .join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let child = env
            .command(&["daemon"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn daemon");
        let d = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = d.http.get(d.url("/healthz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not serve /healthz within 30s; log:\n{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POST a webhook body signed now.
    pub async fn webhook(&self, body: &str) -> (u16, Value) {
        let sig = sign(SECRET, now(), body.as_bytes());
        self.post_raw("/v1/requests", body.as_bytes().to_vec(), Some(&sig), None)
            .await
    }

    /// POST raw bytes with an optional signature and token.
    pub async fn post_raw(
        &self,
        p: &str,
        body: Vec<u8>,
        sig: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .post(self.url(p))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = sig {
            rb = rb.header("Lethe-Signature", s);
        }
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("POST");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// GET with a bearer token (or none).
    pub async fn get(&self, p: &str, token: Option<&str>) -> (u16, Value) {
        let mut rb = self.http.get(self.url(p));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("GET");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    /// GET /metrics as text.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Poll `GET /v1/requests/{id}` until its status is one of `want`.
    pub async fn wait_status(&self, id: &str, want: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (code, v) = self.get(&format!("/v1/requests/{id}"), Some(TOKEN)).await;
            assert_eq!(code, 200, "{v:#}");
            if want.iter().any(|w| v["status"] == *w) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "request {id} did not reach {want:?} within {secs}s: {v:#}\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().expect("pid");
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!(
                    "daemon did not stop within 30s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
        };
        let log = self.log_text();
        assert!(status.success(), "daemon exit {status:?}; log:\n{log}");
        log
    }
}

/// The value of a metric line `name{labels} value` (labels in the order rendered), or 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().expect("number"))
        .unwrap_or(0.0)
}

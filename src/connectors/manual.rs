//! The `manual` connector: a processor with no API (TextMarketer, Kashflow, a
//! paper archive). lethe cannot erase there itself, so it hands a task to a
//! named contact and waits for a person to say it is done (`lethe confirm`).
//!
//! Why a webhook: it reaches whatever the company already uses to assign work
//! (a ticket system, a chat bot, Zapier), and it can be signed, so the receiver
//! can trust that the task came from lethe. The POST goes to the processor's
//! `base_url`; its body is JSON and carries
//! `Lethe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
//! the same scheme lethe's own intake accepts, with the secret from the env var
//! named by `secrets.webhook_secret`.
//!
//! The task must name the real subject — the contact has to find them — so the
//! raw identities go into the task body sent to the contact, and nowhere else:
//! events, status and logs only ever see the masked subject.
//!
//! This module only knows how to deliver a task and classify the receiver's
//! answer; when to send (first task, reminders) and what the saga does is the
//! engine's business (`engine::manual`).

use super::definition::Category;
use super::http::{retry_after, ProcessorSpec};
use super::{
    CallContext, Connector, ConnectorError, Erase, ErrorClass, Evidence, Export, Lookup, Verify,
};
use crate::domain::HumanDuration;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default time between reminders.
pub const DEFAULT_REMIND_EVERY: Duration = Duration::from_secs(5 * 86400);

/// Check a `manual` processor's settings when the config is loaded.
/// Returns the settings key and what is wrong.
pub fn validate_settings(settings: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    if settings
        .get("contact")
        .map(|c| c.trim().is_empty())
        .unwrap_or(true)
    {
        return Err((
            "settings.contact".into(),
            "name the person or team who must act (e.g. \"ops@example.com\")".into(),
        ));
    }
    if let Some(r) = settings.get("remind_every") {
        let d = HumanDuration::parse(r).map_err(|e| ("settings.remind_every".to_string(), e))?;
        if d.get() < Duration::from_millis(500) {
            return Err((
                "settings.remind_every".into(),
                "must be at least 500ms".into(),
            ));
        }
    }
    Ok(())
}

/// The task sent to the contact. Carries the raw identities: it goes to the
/// contact only, never into the store, events or logs.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// Always `lethe.manual_task`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `{request}:{processor}`: the same for the task and all its reminders.
    pub task_id: String,
    /// 0 for the task, then 1, 2, … for each reminder.
    pub reminder: u32,
    /// The processor (from lethe.toml).
    pub processor: String,
    /// Who must act.
    pub contact: String,
    /// The request.
    pub request_id: String,
    /// `erase` or `export`.
    pub action: String,
    /// The legal deadline (RFC 3339).
    pub due_at: String,
    /// The subject, masked (safe to show in a ticket title).
    pub subject_masked: String,
    /// The subject's identities, raw: what the contact must search for.
    pub subject: BTreeMap<String, String>,
    /// What to do, in words.
    pub text: String,
    /// The command that records completion.
    pub confirm_command: String,
}

/// A processor that is handled by a person.
pub struct ManualConnector {
    spec: ProcessorSpec,
    client: reqwest::Client,
    remind_every: Duration,
    timeout: Duration,
}

impl ManualConnector {
    /// Build it; the category is the processor's (`category = …` in lethe.toml).
    pub fn new(spec: ProcessorSpec, client: reqwest::Client, timeout: Duration) -> ManualConnector {
        let remind_every = spec
            .settings
            .get("remind_every")
            .and_then(|r| HumanDuration::parse(r).ok())
            .map(|d| d.get())
            .unwrap_or(DEFAULT_REMIND_EVERY);
        ManualConnector {
            spec,
            client,
            remind_every,
            timeout,
        }
    }

    /// Who must act.
    pub fn contact(&self) -> &str {
        self.spec
            .settings
            .get("contact")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Extra instructions for the contact, if configured.
    pub fn instructions(&self) -> Option<&str> {
        self.spec.settings.get("instructions").map(String::as_str)
    }

    /// Time between reminders.
    pub fn remind_every(&self) -> Duration {
        self.remind_every
    }

    fn secret(&self) -> Result<String, ConnectorError> {
        let Some(var) = self.spec.secrets.get("webhook_secret") else {
            return Err(ConnectorError::permanent(format!(
                "processor `{}`: secret `webhook_secret` is not configured",
                self.spec.name
            )));
        };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(ConnectorError::permanent(format!(
                "processor `{}`: environment variable {var} (secret `webhook_secret`) is not set",
                self.spec.name
            ))),
        }
    }

    fn secret_var(&self) -> &str {
        self.spec
            .secrets
            .get("webhook_secret")
            .map(String::as_str)
            .unwrap_or("the webhook secret")
    }

    /// Deliver a task to the webhook. The error never contains the task body.
    pub async fn send(&self, task: &Task) -> Result<Evidence, ConnectorError> {
        let secret = self.secret()?;
        let body = serde_json::to_vec(task)
            .map_err(|e| ConnectorError::permanent(format!("cannot encode the task: {e}")))?;
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let signature = sign(&secret, t, &body);
        let p = &self.spec.name;
        let resp = self
            .client
            .post(&self.spec.base_url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Lethe-Signature", format!("t={t},v1={signature}"))
            .header(
                "Idempotency-Key",
                format!("{}:{}", task.task_id, task.reminder),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                ConnectorError::transient(format!(
                    "processor `{p}`: the task webhook {what}; the task will be sent again"
                ))
            })?;
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers());
        if (200..300).contains(&status) {
            return Ok(Evidence {
                status: Some(status),
                reference: None,
                note: None,
            });
        }
        let (class, message) = match status {
            429 => (
                ErrorClass::Throttled,
                format!("processor `{p}`: the task webhook is throttling (HTTP 429)"),
            ),
            408 | 425 | 500..=599 => (
                ErrorClass::Transient,
                format!("processor `{p}`: the task webhook is unavailable (HTTP {status}); the task will be sent again"),
            ),
            401 | 403 => (
                ErrorClass::Permanent,
                format!(
                    "credentials rejected by processor `{p}`: the task webhook refused the signature (HTTP {status}): check {}",
                    self.secret_var()
                ),
            ),
            _ => (
                ErrorClass::Permanent,
                format!("processor `{p}`: the task webhook refused the task (HTTP {status}): check base_url"),
            ),
        };
        Err(ConnectorError {
            class,
            message,
            status: Some(status),
            retry_after: after,
        })
    }

    fn no_api(&self) -> ConnectorError {
        ConnectorError::permanent(format!(
            "processor `{}` has no API: lethe sends its contact a task instead, and `lethe confirm` records the answer",
            self.spec.name
        ))
    }
}

/// `hex(HMAC-SHA256(secret, "<t>.<body>"))`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[async_trait]
impl Connector for ManualConnector {
    fn processor(&self) -> &str {
        &self.spec.name
    }
    fn category(&self) -> Category {
        self.spec.category
    }
    fn concurrency(&self) -> u32 {
        self.spec.concurrency
    }
    fn can_purge(&self) -> bool {
        false
    }
    /// No API to call: check that tasks can be signed (the secret is set).
    async fn check(&self) -> Result<Evidence, ConnectorError> {
        self.secret()?;
        Ok(Evidence {
            status: None,
            reference: None,
            note: Some(format!(
                "no API: tasks for {} go to the webhook",
                self.contact()
            )),
        })
    }
    async fn lookup(&self, _cx: CallContext<'_>) -> Result<Lookup, ConnectorError> {
        Err(self.no_api())
    }
    async fn export(&self, _cx: CallContext<'_>) -> Result<Export, ConnectorError> {
        Err(self.no_api())
    }
    async fn erase(&self, _cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        Err(self.no_api())
    }
    async fn verify(&self, _cx: CallContext<'_>) -> Result<Verify, ConnectorError> {
        Err(self.no_api())
    }
    async fn purge(&self, _cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        Err(self.no_api())
    }
    fn as_manual(&self) -> Option<&ManualConnector> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k',b'1700000000.{}',hashlib.sha256).hexdigest())"
        assert_eq!(
            sign("k", 1_700_000_000, b"{}"),
            "c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
    }

    #[test]
    fn settings_need_a_contact_and_a_real_duration() {
        let s = |c: &str, r: &str| {
            BTreeMap::from([
                ("contact".to_string(), c.to_string()),
                ("remind_every".to_string(), r.to_string()),
            ])
        };
        assert!(validate_settings(&s("ops@example.com", "5d")).is_ok());
        assert_eq!(
            validate_settings(&s(" ", "5d")).unwrap_err().0,
            "settings.contact"
        );
        assert_eq!(
            validate_settings(&s("ops", "soon")).unwrap_err().0,
            "settings.remind_every"
        );
    }
}

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
//! Or by email: when `base_url` is `smtp://host[:port]` (STARTTLS, default port
//! 587) or `smtps://host[:port]` (TLS, default 465), the task goes as a plain-text
//! mail from `settings.smtp_from` to the contact (then an email address), through
//! `lettre`, with `secrets.smtp_username`/`smtp_password` if given.
//! `settings.smtp_tls = "none"` allows an unencrypted local relay.
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

/// How tasks reach the contact.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivery {
    /// POST to `base_url`.
    Webhook,
    /// Mail through an SMTP server.
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmtpTls {
    Implicit,
    StartTls,
    None,
}

fn delivery(
    base_url: &str,
    settings: &BTreeMap<String, String>,
) -> Result<Delivery, (String, String)> {
    let Ok(u) = url::Url::parse(base_url) else {
        return Err(("base_url".into(), format!("`{base_url}` is not a URL")));
    };
    let (tls, default_port) = match u.scheme() {
        "smtps" => (SmtpTls::Implicit, 465),
        "smtp" => (SmtpTls::StartTls, 587),
        _ => return Ok(Delivery::Webhook),
    };
    let tls = match settings.get("smtp_tls").map(String::as_str) {
        None | Some("auto") => tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            return Err((
                "settings.smtp_tls".into(),
                format!("`{other}` is not \"auto\" or \"none\""),
            ))
        }
    };
    let host = u.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err((
            "base_url".into(),
            format!("`{base_url}` names no SMTP host"),
        ));
    }
    Ok(Delivery::Email {
        host,
        port: u.port().unwrap_or(default_port),
        tls,
    })
}

/// Check a `manual` processor's settings when the config is loaded.
/// Returns the key and what is wrong.
pub fn validate_settings(
    base_url: &str,
    settings: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<(), (String, String)> {
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
    let by_mail = matches!(delivery(base_url, settings)?, Delivery::Email { .. });
    if !by_mail && !secrets.contains_key("webhook_secret") {
        return Err((
            "secrets".into(),
            "a task webhook is signed: give webhook_secret = \"ENV_VAR_NAME\"".into(),
        ));
    }
    if by_mail {
        for k in ["smtp_from", "contact"] {
            let v = settings.get(k).map(String::as_str).unwrap_or("");
            if v.parse::<lettre::Address>().is_err() {
                return Err((
                    format!("settings.{k}"),
                    format!(
                        "`{v}` is not an email address (tasks go by email: base_url is smtp://)"
                    ),
                ));
            }
        }
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
    /// A rectification's new values, raw: what the contact must change the
    /// data to (empty for other kinds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
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
    delivery: Delivery,
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
        let delivery = delivery(&spec.base_url, &spec.settings).unwrap_or(Delivery::Webhook);
        ManualConnector {
            spec,
            client,
            remind_every,
            timeout,
            delivery,
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

    /// Deliver a task (webhook or email). The error never contains the task body.
    pub async fn send(&self, task: &Task) -> Result<Evidence, ConnectorError> {
        super::lease::before_send("POST", self.timeout)?;
        match &self.delivery {
            Delivery::Webhook => self.post(task).await,
            Delivery::Email { host, port, tls } => self.mail(task, host, *port, *tls).await,
        }
    }

    fn optional_secret(&self, name: &str) -> Result<Option<String>, ConnectorError> {
        let Some(var) = self.spec.secrets.get(name) else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(ConnectorError::permanent(format!(
                "processor `{}`: environment variable {var} (secret `{name}`) is not set",
                self.spec.name
            ))),
        }
    }

    async fn mail(
        &self,
        task: &Task,
        host: &str,
        port: u16,
        tls: SmtpTls,
    ) -> Result<Evidence, ConnectorError> {
        use lettre::message::header::ContentType;
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
        let p = &self.spec.name;
        let bad = |what: &str| {
            ConnectorError::permanent(format!("processor `{p}`: {what} is not an email address"))
        };
        let from: lettre::Address = self
            .spec
            .settings
            .get("smtp_from")
            .map(String::as_str)
            .unwrap_or("")
            .parse()
            .map_err(|_| bad("settings.smtp_from"))?;
        let to: lettre::Address = self
            .contact()
            .parse()
            .map_err(|_| bad("settings.contact"))?;
        let mut body = task.text.clone();
        body.push_str("\n\nThe person:\n");
        for (k, v) in &task.subject {
            body.push_str(&format!("  {k}: {v}\n"));
        }
        body.push_str(&format!(
            "\nRequest: {}\nAction: {}\nDue: {}\nTask: {} (reminder {})\n",
            task.request_id, task.action, task.due_at, task.task_id, task.reminder
        ));
        let verb = if task.action == "erase" {
            "Erase"
        } else {
            "Export"
        };
        let subject = format!(
            "[lethe] {}{verb} {} at {}, due {}",
            if task.reminder > 0 { "Reminder: " } else { "" },
            task.subject_masked,
            task.processor,
            task.due_at.get(..10).unwrap_or(&task.due_at)
        );
        let msg = Message::builder()
            .from(lettre::message::Mailbox::new(Some("lethe".into()), from))
            .to(lettre::message::Mailbox::new(None, to))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| {
                ConnectorError::permanent(format!(
                    "processor `{p}`: cannot build the task mail: {e}"
                ))
            })?;
        let builder = match tls {
            SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| {
            ConnectorError::permanent(format!("processor `{p}`: SMTP server `{host}`: {e}"))
        })?;
        let mut builder = builder.port(port).timeout(Some(self.timeout));
        if let (Some(u), Some(pw)) = (
            self.optional_secret("smtp_username")?,
            self.optional_secret("smtp_password")?,
        ) {
            builder = builder.credentials(Credentials::new(u, pw));
        }
        let mailer = builder.build();
        match mailer.send(msg).await {
            Ok(resp) => Ok(Evidence {
                status: None,
                reference: Some(format!(
                    "SMTP {} {}",
                    resp.code(),
                    resp.message().next().unwrap_or("")
                )),
                note: None,
            }),
            Err(e) => {
                let code = e.status().map(|c| c.to_string());
                let code_s = code.clone().unwrap_or_default();
                let (class, message) = if code_s == "535" || code_s == "530" {
                    (
                        ErrorClass::Permanent,
                        format!(
                            "credentials rejected by processor `{p}`: the SMTP server refused the login ({code_s}): check {}",
                            ["smtp_username", "smtp_password"]
                                .iter()
                                .filter_map(|k| self.spec.secrets.get(*k).map(String::as_str))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                } else if e.is_permanent() {
                    (
                        ErrorClass::Permanent,
                        format!("processor `{p}`: the SMTP server refused the task mail ({code_s}): check settings.contact and smtp_from"),
                    )
                } else {
                    (
                        ErrorClass::Transient,
                        format!(
                            "processor `{p}`: the task mail could not be sent{}; it will be sent again",
                            code.map(|c| format!(" ({c})")).unwrap_or_else(|| " (SMTP server unreachable)".into())
                        ),
                    )
                };
                Err(ConnectorError {
                    class,
                    message,
                    status: None,
                    retry_after: None,
                })
            }
        }
    }

    async fn post(&self, task: &Task) -> Result<Evidence, ConnectorError> {
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
                let what = super::send_failure(&e);
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
        if self.delivery == Delivery::Webhook {
            self.secret()?;
        }
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

    fn validate_settings_h(
        base_url: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<(), (String, String)> {
        let secrets = BTreeMap::from([("webhook_secret".to_string(), "HOOK_SECRET".to_string())]);
        validate_settings(base_url, settings, &secrets)
    }

    #[test]
    fn settings_need_a_contact_and_a_real_duration() {
        let s = |c: &str, r: &str| {
            BTreeMap::from([
                ("contact".to_string(), c.to_string()),
                ("remind_every".to_string(), r.to_string()),
            ])
        };
        let hook = "https://hooks.example.com/t";
        assert!(validate_settings_h(hook, &s("ops@example.com", "5d")).is_ok());
        assert_eq!(
            validate_settings_h(hook, &s(" ", "5d")).unwrap_err().0,
            "settings.contact"
        );
        assert_eq!(
            validate_settings_h(hook, &s("ops", "soon")).unwrap_err().0,
            "settings.remind_every"
        );
        // By email, the contact must be an address and smtp_from is needed.
        assert_eq!(
            validate_settings_h("smtp://mail.example.com", &s("ops team", "5d"))
                .unwrap_err()
                .0,
            "settings.smtp_from"
        );
        let mut m = s("ops team", "5d");
        m.insert("smtp_from".into(), "lethe@example.com".into());
        assert_eq!(
            validate_settings_h("smtp://mail.example.com", &m)
                .unwrap_err()
                .0,
            "settings.contact"
        );
        m.insert("contact".into(), "ops@example.com".into());
        assert!(validate_settings_h("smtps://mail.example.com", &m).is_ok());
    }
}

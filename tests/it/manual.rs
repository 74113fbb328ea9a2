//! The `manual` connector through the CLI: a signed task to a webhook receiver
//! (wiremock), `awaiting_confirmation` with reminders, and `lethe confirm`.

use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "task-webhook-secret-for-tests";
const EMAIL: &str = "Jane.Doe@Example.com";
const PHONE: &str = "+447700900123";

const FAST_WORKFLOW: &str = "kind = \"erasure\"\n[retry]\ninitial = \"300ms\"\nfactor = 2.0\ncap = \"2s\"\nmax_attempts = 5\njitter = false\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n";

fn processor_toml(url: &str, remind_every: &str) -> String {
    format!(
        r#"
[[processor]]
name = "textmarketer"
connector = "manual"
category = "sms"
base_url = "{url}/hooks/lethe-tasks"
settings = {{ contact = "ops@shop.example", remind_every = "{remind_every}", instructions = "Log in to TextMarketer, Contacts, search by number." }}
secrets = {{ webhook_secret = "TASKS_WEBHOOK_SECRET" }}
"#
    )
}

async fn env_for(backend: Backend, url: &str, remind_every: &str) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &processor_toml(url, remind_every),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    env.set_env("TASKS_WEBHOOK_SECRET", SECRET);
    env
}

async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/lethe-tasks"))
        .respond_with(ResponseTemplate::new(202))
        .with_priority(5)
        .mount(&server)
        .await;
    server
}

async fn erase(env: &TestEnv) -> String {
    let v = env
        .json(&[
            "request", "erase", "--email", EMAIL, "--phone", PHONE, "--json",
        ])
        .await;
    v["id"].as_str().expect("id").to_string()
}

/// The tasks the receiver got, after checking each one's signature independently.
async fn tasks(server: &MockServer) -> Vec<Value> {
    let reqs = server.received_requests().await.unwrap_or_default();
    reqs.iter()
        .filter(|r| r.url.path() == "/hooks/lethe-tasks")
        .map(|r| {
            let sig = r
                .headers
                .get("lethe-signature")
                .and_then(|v| v.to_str().ok())
                .expect("Lethe-Signature header");
            let (t, v1) = sig
                .split_once(",v1=")
                .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
                .expect("t=…,v1=…");
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(&r.body);
            assert_eq!(
                hex::encode(mac.finalize().into_bytes()),
                v1,
                "the signature is HMAC-SHA256(secret, \"<t>.<body>\")"
            );
            serde_json::from_slice(&r.body).expect("a JSON task")
        })
        .collect()
}

on_both_backends!(
    a_manual_processor_gets_a_signed_task_is_reminded_and_is_completed_by_confirm,
    confirm_refuses_an_unknown_processor_and_a_step_not_awaiting_confirmation_with_exit_2,
    a_task_webhook_that_is_down_is_retried_and_the_task_is_not_lost,
    an_export_at_a_manual_processor_asks_for_a_copy_and_is_confirmed,
    a_task_by_email_reaches_the_contact_through_smtp_after_a_temporary_refusal,
);

async fn a_manual_processor_gets_a_signed_task_is_reminded_and_is_completed_by_confirm(
    backend: Backend,
) {
    let server = receiver().await;
    let env = env_for(backend, &server.uri(), "1s").await;
    let id = erase(&env).await;

    let st = env.run_until_status(&id, &["waiting", "failed"], 20).await;
    assert_eq!(st["status"], "waiting", "{st:#}");
    let step = TestEnv::step(&st, "textmarketer");
    assert_eq!(step["state"], "awaiting_confirmation");
    assert_eq!(step["category"], "sms", "the processor's category override");
    assert_eq!(step["evidence"]["contact"], "ops@shop.example");

    let sent = tasks(&server).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let task = &sent[0];
    assert_eq!(task["type"], "lethe.manual_task");
    assert_eq!(task["processor"], "textmarketer");
    assert_eq!(task["request_id"], id.as_str());
    assert_eq!(task["action"], "erase");
    assert_eq!(task["reminder"], 0);
    assert_eq!(task["contact"], "ops@shop.example");
    assert_eq!(
        task["due_at"].as_str().unwrap()[..10],
        st["due_at"].as_str().unwrap()[..10]
    );
    assert_eq!(task["subject_masked"], st["subject"]);
    // The contact needs the real identities to act: they are in the task body only.
    assert_eq!(task["subject"]["email"], "jane.doe@example.com");
    assert_eq!(task["subject"]["phone"], PHONE);
    let text = task["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("lethe confirm {id} --processor textmarketer")),
        "{text}"
    );
    assert!(text.contains("search by number"), "{text}");

    // After remind_every, the next run sends a reminder of the same task.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tasks(&server).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no reminder was sent");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let out = env.lethe(&["run", "--until-idle"]).await;
        assert!(out.status.success(), "{}", show(&out));
    }
    let sent = tasks(&server).await;
    assert_eq!(sent[1]["reminder"], 1);
    assert_eq!(sent[1]["task_id"], sent[0]["task_id"]);
    assert!(sent[1]["text"].as_str().unwrap().starts_with("Reminder 1:"));
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "textmarketer")["state"],
        "awaiting_confirmation"
    );
    assert_eq!(
        TestEnv::step(&st, "textmarketer")["evidence"]["reminders"],
        1
    );

    let out = env
        .lethe(&[
            "confirm",
            &id,
            "--processor",
            "textmarketer",
            "--note",
            "  Sam deleted contact jane.doe@example.com and its SMS log  ",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "textmarketer");
    assert_eq!(step["state"], "done");
    assert_eq!(step["outcome"], "confirmed");
    let note = step["evidence"]["note"].as_str().unwrap();
    assert_eq!(
        note,
        "confirmed: Sam deleted contact j***@example.com and its SMS log"
    );

    // Events: the task, the reminder (with its count) and the confirmation; never a raw identity.
    let events = env.store().await.request_events(&id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"step.task_issued"), "{kinds:?}");
    assert!(kinds.contains(&"step.confirmed"), "{kinds:?}");
    let reminder = events
        .iter()
        .find(|e| e.kind == "step.reminder_sent")
        .expect("a reminder event");
    assert_eq!(reminder.detail["reminder"], 1);
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>())
        .unwrap()
        .to_lowercase();
    let status_text = serde_json::to_string(&st).unwrap().to_lowercase();
    for raw in ["jane.doe@", "7700900123"] {
        assert!(!all.contains(raw), "raw identity in events: {all}");
        assert!(
            !status_text.contains(raw),
            "raw identity in status: {status_text}"
        );
    }
    let audit = env.lethe(&["audit", "verify"]).await;
    assert!(audit.status.success(), "{}", show(&audit));
}

async fn confirm_refuses_an_unknown_processor_and_a_step_not_awaiting_confirmation_with_exit_2(
    backend: Backend,
) {
    let server = receiver().await;
    let env = env_for(backend, &server.uri(), "5d").await;
    let id = erase(&env).await;

    // Not yet run: the step is pending, nothing has been asked of anyone.
    let out = env
        .lethe(&["confirm", &id, "--processor", "textmarketer"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`pending`, not `awaiting_confirmation`"),
        "{err}"
    );

    env.run_until_status(&id, &["waiting"], 20).await;
    let out = env
        .lethe(&["confirm", &id, "--processor", "kashflow"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no step at processor `kashflow`") && err.contains("textmarketer"),
        "{err}"
    );
    let st = env.status(&id).await;
    assert_eq!(
        TestEnv::step(&st, "textmarketer")["state"],
        "awaiting_confirmation",
        "a refused confirm changes nothing"
    );

    let out = env
        .lethe(&["confirm", &id, "--processor", "textmarketer"])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(env.status(&id).await["status"], "completed");
    // Confirming twice is refused: the step is done.
    let out = env
        .lethe(&["confirm", &id, "--processor", "textmarketer"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`done`"));
}

async fn a_task_webhook_that_is_down_is_retried_and_the_task_is_not_lost(backend: Backend) {
    // A port with nothing listening: the receiver is down.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let env = env_for(backend, &format!("http://{addr}"), "5d").await;
    let id = erase(&env).await;

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "textmarketer");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient");
    assert!(step["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("could not connect") && !e.contains("jane")));

    // The receiver comes back on the same address, first answering 503 once.
    let listener = std::net::TcpListener::bind(addr).expect("the port is free again");
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/lethe-tasks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks/lethe-tasks"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(5)
        .mount(&server)
        .await;

    let st = env.run_until_status(&id, &["waiting", "failed"], 30).await;
    assert_eq!(st["status"], "waiting", "{st:#}");
    assert_eq!(
        TestEnv::step(&st, "textmarketer")["state"],
        "awaiting_confirmation"
    );
    let sent = tasks(&server).await;
    assert_eq!(sent.len(), 2, "a 503, then the same task delivered");
    assert_eq!(sent[0]["task_id"], sent[1]["task_id"]);
    assert_eq!(
        sent[1]["reminder"], 0,
        "still the first task, not a reminder"
    );
}

async fn an_export_at_a_manual_processor_asks_for_a_copy_and_is_confirmed(backend: Backend) {
    let server = receiver().await;
    let env = env_for(backend, &server.uri(), "5d").await;
    let v = env
        .json(&["request", "export", "--phone", PHONE, "--json"])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let st = env.run_until_status(&id, &["waiting", "failed"], 20).await;
    assert_eq!(st["status"], "waiting", "{st:#}");
    let sent = tasks(&server).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["action"], "export");
    assert!(sent[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Collect a copy of every record of this person at textmarketer"));
    assert_eq!(sent[0]["subject"]["phone"], PHONE);
    assert!(sent[0]["subject"].get("email").is_none());

    let out = env
        .lethe(&[
            "confirm",
            &id,
            "--processor",
            "textmarketer",
            "--note",
            "CSV sent to the subject",
        ])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    assert_eq!(st["status"], "completed");
    assert_eq!(TestEnv::step(&st, "textmarketer")["outcome"], "confirmed");
    assert_eq!(
        TestEnv::step(&st, "textmarketer")["evidence"]["note"],
        "confirmed: CSV sent to the subject"
    );
}

/// A minimal SMTP server (RFC 5321's happy path): keeps each mail's envelope and
/// DATA; answers the first MAIL FROM with `451` when `refuse_first` is set.
async fn smtp_server(
    refuse_first: bool,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let refuse = std::sync::Arc::new(AtomicBool::new(refuse_first));
    let kept = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (kept, refuse) = (kept.clone(), refuse.clone());
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 test.local ESMTP\r\n").await;
                let (mut from, mut to) = (String::new(), String::new());
                while let Ok(Some(line)) = lines.next_line().await {
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250-test.local\r\n250 8BITMIME\r\n"
                    } else if cmd.starts_with("MAIL FROM:") {
                        if refuse.swap(false, Ordering::SeqCst) {
                            b"451 4.3.0 try again later\r\n"
                        } else {
                            from = line[10..].trim().to_string();
                            b"250 2.1.0 Ok\r\n"
                        }
                    } else if cmd.starts_with("RCPT TO:") {
                        to = line[8..].trim().to_string();
                        b"250 2.1.5 Ok\r\n"
                    } else if cmd == "DATA" {
                        let _ = w
                            .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                            .await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        kept.lock().unwrap().push((from.clone(), to.clone(), data));
                        b"250 2.0.0 Ok: queued as 7F3A\r\n"
                    } else if cmd == "QUIT" {
                        let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
                        break;
                    } else if cmd == "RSET" || cmd == "NOOP" {
                        b"250 2.0.0 Ok\r\n"
                    } else {
                        b"502 5.5.2 Command not recognized\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, mails)
}

async fn a_task_by_email_reaches_the_contact_through_smtp_after_a_temporary_refusal(
    backend: Backend,
) {
    let (port, mails) = smtp_server(true).await;
    let body = format!(
        r#"
[[processor]]
name = "kashflow"
connector = "manual"
category = "accounting"
base_url = "smtp://127.0.0.1:{port}"
settings = {{ contact = "books@shop.example", smtp_from = "lethe@shop.example", smtp_tls = "none", remind_every = "5d" }}
"#
    );
    let env = TestEnv::new(backend, "workflows_dir = \"workflows\"", &body).await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(env.dir.path().join("workflows/erasure.toml"), FAST_WORKFLOW).unwrap();
    let id = erase(&env).await;

    // The server says "try later": a transient error, the task is kept for a retry.
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "kashflow");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "transient");
    assert!(step["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("451"));

    let st = env.run_until_status(&id, &["waiting", "failed"], 20).await;
    assert_eq!(st["status"], "waiting", "{st:#}");
    let step = TestEnv::step(&st, "kashflow");
    assert_eq!(step["state"], "awaiting_confirmation");
    assert!(step["evidence"]["reference"]
        .as_str()
        .is_some_and(|r| r.starts_with("SMTP 250")));

    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let (from, to, raw) = &mails[0];
    let data = &unfold_and_decode(raw);
    assert_eq!(from, "<lethe@shop.example>");
    assert_eq!(to, "<books@shop.example>");
    assert!(
        data.contains("Subject: [lethe] Erase j***@example.com, +44********23 at kashflow, due 20"),
        "{data}"
    );
    assert!(data.contains("  email: jane.doe@example.com"), "{data}");
    assert!(data.contains(&format!("Request: {id}")), "{data}");
    assert!(data.contains("lethe confirm"), "{data}");

    let out = env
        .lethe(&["confirm", &id, "--processor", "kashflow"])
        .await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(env.status(&id).await["status"], "completed");
}

/// Unfold header lines and decode the quoted-printable body, as a mail reader would.
fn unfold_and_decode(raw: &str) -> String {
    let unfolded = raw.replace("\n ", " ").replace("=\n", "");
    let bytes = unfolded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&unfolded[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! The web dashboard: the real `lethe daemon` with `[intake]` and
//! `[dashboard]`, a real store, the Mailchimp fake as processor, and a headless
//! Chromium driven over the DevTools protocol (`browser.rs`) for what a person
//! does — log in, read the pages, press the buttons. Raw HTTP (reqwest) is used
//! where a browser would not go: forged forms and a missing token.
//! Screenshots of every page land in `target/tmp/dashboard/<test>/`.

use crate::browser::{self, Browser};
use crate::daemon::{intake_env, Daemon, TOKEN};
use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use std::path::PathBuf;

const PASSWORD: &str = "correct horse battery staple";
const FAILING: &str = "Failing.Person@Example.com";
const OTHER: &str = "other.failing@example.com";
const HELD_CLI: &str = "held.by-cli@example.com";
const HELD_WEB: &str = "held.by-web@example.com";

/// The daemon with a dashboard password made by `lethe dashboard hash-password`.
async fn world(backend: Backend) -> (TestEnv, u16, wiremock::MockServer) {
    let server = fakes::mailchimp().await;
    for e in [FAILING, OTHER, HELD_CLI, HELD_WEB] {
        fakes::add_member(&server, e).await;
    }
    let (env, port) = intake_env(backend, &server).await;
    let mut cmd = env.command(&["dashboard", "hash-password"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn hash-password");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!("\n[dashboard]\npassword_hash = \"{hash}\"\n"));
    std::fs::write(&env.config, text).unwrap();
    (env, port, server)
}

/// An erasure whose only step failed (the processor refused the API key), filed and run before the daemon starts.
async fn failed_request(env: &mut TestEnv, email: &str) -> String {
    env.set_env("MAILCHIMP_API_KEY", "0000-wrong-key-us21");
    let id = env.erase(email).await;
    let st = env.run_until_status(&id, &["failed"], 30).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["state"],
        "failed",
        "{st:#}"
    );
    env.set_env("MAILCHIMP_API_KEY", fakes::API_KEY);
    id
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `<input … name="NAME" value="…">` in a page.
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

fn cookie_pair(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .find(|p| p.starts_with(&format!("{name}=")))
}

/// Log in over raw HTTP as a form would; the session's `Cookie` header.
async fn http_login(d: &Daemon, secret: &str) -> (u16, Option<String>) {
    let http = no_redirects();
    let page = http.get(d.url("/dashboard/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let nonce = cookie_pair(&page, "lethe_login").expect("login nonce cookie");
    let csrf = input_value(&page.text().await.unwrap(), "csrf").expect("csrf field");
    let res = http
        .post(d.url("/dashboard/login"))
        .header("cookie", &nonce)
        .form(&[("csrf", csrf.as_str()), ("password", secret)])
        .send()
        .await
        .unwrap();
    let code = res.status().as_u16();
    (code, cookie_pair(&res, "lethe_session"))
}

/// A page with a session cookie: (status, body).
async fn http_get(d: &Daemon, cookie: &str, path: &str) -> (u16, String) {
    let res = no_redirects()
        .get(d.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A form post with a session cookie: (status, Location).
async fn http_post(
    d: &Daemon,
    cookie: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let mut rb = no_redirects().post(d.url(path)).form(form);
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    let res = rb.send().await.unwrap();
    let loc = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (res.status().as_u16(), loc)
}

/// Events in the whole audit chain (`lethe audit verify --json`).
async fn audit_events(env: &TestEnv) -> u64 {
    let v = env.json(&["audit", "verify", "--json"]).await;
    assert!(v["broken"].is_null(), "{v:#}");
    v["checked"].as_u64().unwrap()
}

/// Where a test's screenshots go (printed, kept after the test).
fn shots(test: &str, backend: Backend) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard")
        .join(format!("{test}-{backend:?}").to_lowercase());
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("screenshots: {}", dir.display());
    dir
}

/// Log in through the login form in the browser.
async fn browser_login(b: &mut Browser, d: &Daemon, secret: &str) {
    b.goto(&d.url("/dashboard/requests")).await;
    assert!(b.url().await.ends_with("/dashboard/login"));
    b.submit(&format!(
        "document.getElementById('password').value = {}; document.getElementById('login').submit()",
        serde_json::to_string(secret).unwrap()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_visitor_gets_the_login_page_and_a_wrong_password_is_refused() {
    let (mut env, port, _server) = world(Backend::Sqlite).await;
    let id = failed_request(&mut env, FAILING).await;
    let d = Daemon::start(&env, port).await;
    let before = audit_events(&env).await;

    // Every page and every button without a session: to the login page, nothing done.
    for p in [
        "/dashboard/requests".to_string(),
        format!("/dashboard/requests/{id}"),
        "/dashboard/processors".into(),
        "/dashboard/reports".into(),
        format!("/dashboard/requests/{id}/certificate/json"),
        "/dashboard/reports/period/csv".into(),
    ] {
        let res = no_redirects().get(d.url(&p)).send().await.unwrap();
        assert_eq!(res.status(), 303, "{p}");
        assert_eq!(res.headers()["location"], "/dashboard/login", "{p}");
    }
    let (code, loc) = http_post(&d, None, &format!("/dashboard/requests/{id}/retry"), &[]).await;
    assert_eq!((code, loc.as_str()), (303, "/dashboard/login"));
    // The API's bearer token is not a dashboard session.
    let res = no_redirects()
        .get(d.url("/dashboard/requests"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);

    // A wrong password is refused, with the login page again and no session.
    let (code, cookie) = http_login(&d, "correct horse battery stapler").await;
    assert_eq!(code, 401);
    assert!(cookie.is_none());
    // A login form without the nonce cookie's token is refused (login CSRF).
    let (code, _) = http_post(&d, None, "/dashboard/login", &[("password", PASSWORD)]).await;
    assert_eq!(code, 403);
    // The password and the API token both log in; the cookie is HttpOnly and SameSite=Strict.
    let page = no_redirects()
        .get(d.url("/dashboard/login"))
        .send()
        .await
        .unwrap();
    let nonce = cookie_pair(&page, "lethe_login").unwrap();
    let csrf = input_value(&page.text().await.unwrap(), "csrf").unwrap();
    let res = no_redirects()
        .post(d.url("/dashboard/login"))
        .header("cookie", &nonce)
        .form(&[("csrf", csrf.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains("Secure"),
        "not Secure unless configured: {set}"
    );
    let (code, cookie) = http_login(&d, TOKEN).await;
    assert_eq!(code, 303);
    let cookie = cookie.unwrap();
    let (code, body) = http_get(&d, &cookie, "/dashboard/requests?view=failed").await;
    assert_eq!(code, 200);
    assert!(body.contains(&id[..8]), "{body}");
    // Logging out ends the session: the same cookie no longer opens a page.
    let csrf = input_value(&body, "csrf").unwrap();
    let (code, loc) = http_post(&d, Some(&cookie), "/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!((code, loc.as_str()), (303, "/dashboard/login"));
    let (code, _) = http_get(&d, &cookie, "/dashboard/requests").await;
    assert_eq!(code, 303);

    if browser::available() {
        let dir = shots("login", Backend::Sqlite);
        let mut b = Browser::start().await;
        b.goto(&d.url(&format!("/dashboard/requests/{id}"))).await;
        assert!(
            b.url().await.ends_with("/dashboard/login"),
            "{}",
            b.url().await
        );
        let html = b.html().await;
        assert!(html.contains("id=\"password\""), "{html}");
        assert!(!html.contains(&id), "nothing of the request before login");
        b.screenshot(&dir.join("login.png")).await;
        browser_login(&mut b, &d, "wrong password").await;
        let html = b.html().await;
        assert!(html.contains("Wrong password or token."), "{html}");
        assert!(b.url().await.ends_with("/dashboard/login"));
        b.screenshot(&dir.join("login-refused.png")).await;
        b.goto(&d.url("/dashboard/requests")).await;
        assert!(
            b.url().await.ends_with("/dashboard/login"),
            "still logged out"
        );
        browser_login(&mut b, &d, PASSWORD).await;
        assert!(
            b.url().await.ends_with("/dashboard/requests"),
            "{}",
            b.url().await
        );
        assert!(b.html().await.contains("<h1>Requests</h1>"));
        b.close().await;
    }
    assert_eq!(
        audit_events(&env).await,
        before,
        "logging in and out is not audited and writes nothing"
    );
    let st = env.status(&id).await;
    assert_eq!(st["status"], "failed");
    d.stop().await;

    // A short password is refused by the helper; a hash that is not Argon2 by the config.
    let mut cmd = env.command(&["dashboard", "hash-password"]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"short\n")
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&env.config).unwrap();
    let start = text.find("password_hash = \"").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let bad = format!(
        "{}password_hash = \"{PASSWORD}\"{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&env.config, bad).unwrap();
    let out = env.lethe(&["status", &id]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dashboard.password_hash") && err.contains("hash-password"),
        "{err}"
    );
    assert!(
        !err.contains(PASSWORD),
        "the refused value is not echoed: {err}"
    );
}

on_both_backends!(
    a_forged_or_missing_csrf_token_is_refused_and_writes_nothing,
    the_retry_and_hold_release_buttons_write_the_same_events_as_the_cli,
    every_page_shows_masked_identities_only_and_offers_the_reports_for_download,
);

async fn a_forged_or_missing_csrf_token_is_refused_and_writes_nothing(backend: Backend) {
    let (mut env, port, server) = world(backend).await;
    let id = failed_request(&mut env, FAILING).await;
    let calls = fakes::count(&server, "POST", &fakes::delete_path(FAILING)).await;
    let d = Daemon::start(&env, port).await;
    let before = audit_events(&env).await;
    let (_, a) = http_login(&d, PASSWORD).await;
    let a = a.unwrap();
    let (_, b) = http_login(&d, PASSWORD).await;
    let b = b.unwrap();
    let (code, page) = http_get(&d, &a, &format!("/dashboard/requests/{id}")).await;
    assert_eq!(code, 200);
    let token_a = input_value(&page, "csrf").expect("the page's forms carry a token");
    let (_, page_b) = http_get(&d, &b, &format!("/dashboard/requests/{id}")).await;
    let token_b = input_value(&page_b, "csrf").unwrap();
    assert_ne!(token_a, token_b, "a token belongs to one session");

    let zeros = "0".repeat(64);
    let retry = format!("/dashboard/requests/{id}/retry");
    let cancel = format!("/dashboard/requests/{id}/cancel");
    let extend = format!("/dashboard/requests/{id}/extend");
    for (path, form) in [
        (&retry, vec![]),
        (&retry, vec![("csrf", "forged")]),
        (&retry, vec![("csrf", token_b.as_str())]),
        (&cancel, vec![("csrf", "")]),
        (
            &extend,
            vec![("csrf", zeros.as_str()), ("reason", "complex request")],
        ),
    ] {
        let (code, _) = http_post(&d, Some(&a), path, &form).await;
        assert_eq!(code, 403, "{path} {form:?}");
    }
    // The same forms with a valid token would have been accepted (the check is what refused them).
    let (code, loc) = http_post(
        &d,
        Some(&a),
        &format!("/dashboard/requests/{id}/extend"),
        &[("csrf", &token_a), ("reason", "")],
    )
    .await;
    assert_eq!(
        (code, loc.as_str()),
        (400, ""),
        "a valid token reaches the form's checks"
    );

    if browser::available() {
        let dir = shots("csrf", backend);
        let mut br = Browser::start().await;
        browser_login(&mut br, &d, PASSWORD).await;
        br.goto(&d.url(&format!("/dashboard/requests/{id}"))).await;
        // A page whose token was tampered with, as a forged form would send it.
        br.submit(
            "const f = document.querySelector('#step-newsletter form[action$=\"/retry\"]'); \
             f.querySelector('input[name=csrf]').value = 'forged'; f.submit()",
        )
        .await;
        let html = br.html().await;
        assert!(
            html.contains("Form refused") && html.contains("Nothing was changed"),
            "{html}"
        );
        br.screenshot(&dir.join("forged-form-refused.png")).await;
        br.close().await;
    }

    assert_eq!(audit_events(&env).await, before, "nothing was written");
    let st = env.status(&id).await;
    assert_eq!(st["status"], "failed", "{st:#}");
    assert!(st["extended_reason"].is_null());
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(FAILING)).await,
        calls,
        "no call was made"
    );

    // With the session's token the same forms act, as `lethe extend` and `lethe cancel` do.
    let seq = last_seq(&env).await;
    let (code, loc) = http_post(
        &d,
        Some(&a),
        &extend,
        &[("csrf", &token_a), ("reason", "complex request")],
    )
    .await;
    assert_eq!(code, 303);
    assert!(loc.ends_with("?done=extended"), "{loc}");
    let (code, _) = http_post(&d, Some(&a), &cancel, &[("csrf", &token_a)]).await;
    assert_eq!(code, 303);
    let st = env.status(&id).await;
    assert_eq!(st["extended_reason"], "complex request");
    assert_eq!(st["status"], "cancelled", "{st:#}");
    let kinds: Vec<String> = events_after(&env, seq)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"request.extended".to_string()), "{kinds:?}");
    // A second extension is refused, as the CLI refuses it.
    let (code, _) = http_post(
        &d,
        Some(&a),
        &extend,
        &[("csrf", &token_a), ("reason", "again")],
    )
    .await;
    assert_eq!(code, 409);
    d.stop().await;
}

/// Events of the whole chain after `after` (exclusive).
async fn events_after(env: &TestEnv, after: i64) -> Vec<lethe::store::EventRow> {
    env.store().await.events(after, 10_000).await.unwrap()
}

async fn last_seq(env: &TestEnv) -> i64 {
    events_after(env, 0)
        .await
        .last()
        .map(|e| e.seq)
        .unwrap_or(0)
}

async fn the_retry_and_hold_release_buttons_write_the_same_events_as_the_cli(backend: Backend) {
    if !browser::available() {
        return;
    }
    let dir = shots("buttons", backend);
    let (mut env, port, server) = world(backend).await;
    let by_cli = failed_request(&mut env, OTHER).await;
    let by_web = failed_request(&mut env, FAILING).await;
    // Litigation holds on two subjects, then an erasure for each: both held.
    let mut holds = vec![];
    for email in [HELD_CLI, HELD_WEB] {
        let h = env
            .json(&[
                "hold",
                "add",
                "--email",
                email,
                "--basis",
                "litigation: case 2026-114",
                "--json",
            ])
            .await;
        holds.push(h["id"].as_str().unwrap().to_string());
    }
    let held_cli = env.erase(HELD_CLI).await;
    let held_web = env.erase(HELD_WEB).await;
    let d = Daemon::start(&env, port).await;
    for id in [&held_cli, &held_web] {
        let st = d
            .wait_status(id, &["completed_with_exceptions", "waiting"], 30)
            .await;
        assert_eq!(TestEnv::step(&st, "newsletter")["state"], "held", "{st:#}");
    }

    let mut b = Browser::start().await;
    browser_login(&mut b, &d, PASSWORD).await;

    // Retry: the CLI for one request, the button for the other.
    let seq = last_seq(&env).await;
    let out = env.lethe(&["retry", &by_cli]).await;
    assert!(out.status.success(), "{}", show(&out));
    let cli_event = events_after(&env, seq)
        .await
        .into_iter()
        .find(|e| e.kind == "step.retried")
        .expect("the CLI's retry event");
    b.goto(&d.url(&format!("/dashboard/requests/{by_web}")))
        .await;
    b.screenshot(&dir.join("request-failed.png")).await;
    let seq = last_seq(&env).await;
    b.submit("document.querySelector('#step-newsletter button[value=retry]').click()")
        .await;
    assert!(
        b.html().await.contains("back to pending"),
        "the page says what was done"
    );
    let web_event = events_after(&env, seq)
        .await
        .into_iter()
        .find(|e| e.kind == "step.retried")
        .expect("the button's retry event");
    assert_eq!(web_event.kind, cli_event.kind);
    assert_eq!(
        web_event.detail, cli_event.detail,
        "the same event, field for field"
    );
    assert_eq!(web_event.request_id.as_deref(), Some(by_web.as_str()));
    for id in [&by_cli, &by_web] {
        let st = d.wait_status(id, &["completed", "failed"], 30).await;
        assert_eq!(st["status"], "completed", "the retried step ran: {st:#}");
    }
    b.goto(&d.url(&format!("/dashboard/requests/{by_web}")))
        .await;
    assert!(b.html().await.contains("erased"));
    b.screenshot(&dir.join("request-retried.png")).await;

    // Hold release: the CLI for one hold, the button for the other.
    let seq = last_seq(&env).await;
    let out = env.lethe(&["hold", "release", &holds[0]]).await;
    assert!(out.status.success(), "{}", show(&out));
    let cli_event = events_after(&env, seq)
        .await
        .into_iter()
        .find(|e| e.kind == "hold.released")
        .expect("the CLI's release event");
    b.goto(&d.url(&format!("/dashboard/requests/{held_web}")))
        .await;
    let html = b.html().await;
    assert!(
        html.contains("litigation: case 2026-114") && html.contains("until released"),
        "{html}"
    );
    b.screenshot(&dir.join("request-held.png")).await;
    let seq = last_seq(&env).await;
    b.submit("document.querySelector('#holds button').click()")
        .await;
    assert!(b.html().await.contains("The hold is released"));
    let web_event = events_after(&env, seq)
        .await
        .into_iter()
        .find(|e| e.kind == "hold.released")
        .expect("the button's release event");
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("hold");
        v.as_object_mut().unwrap().remove("subject");
        v
    };
    assert_eq!(web_event.detail["hold"], holds[1].as_str());
    assert_eq!(strip(&web_event.detail), strip(&cli_event.detail));
    assert_eq!(
        web_event
            .detail
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        cli_event
            .detail
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    for id in [&held_cli, &held_web] {
        let st = d.wait_status(id, &["completed"], 30).await;
        assert_eq!(
            TestEnv::step(&st, "newsletter")["outcome"],
            "erased",
            "{st:#}"
        );
    }
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(HELD_WEB)).await,
        1
    );
    // The processors page counts this daemon's calls: four erasures, no error, no throttling.
    b.goto(&d.url("/dashboard/processors")).await;
    b.screenshot(&dir.join("processors.png")).await;
    let text = |id: &str| format!("document.getElementById('{id}').textContent.trim()");
    let calls: u64 = b
        .eval(&text("calls-newsletter"))
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(calls >= 4, "{calls} calls");
    assert_eq!(b.eval(&text("error-rate-newsletter")).await, "0%");
    assert_eq!(b.eval(&text("throttled-newsletter")).await, "0");
    b.close().await;
    d.stop().await;
}

async fn every_page_shows_masked_identities_only_and_offers_the_reports_for_download(
    backend: Backend,
) {
    let (mut env, port, _server) = world(backend).await;
    let failed = failed_request(&mut env, FAILING).await;
    let done = env.erase(OTHER).await;
    env.run_until_status(&done, &["completed"], 30).await;
    let d = Daemon::start(&env, port).await;
    let raw = [FAILING.to_lowercase(), OTHER.to_lowercase()];
    let assert_masked = |what: &str, text: &str| {
        let lower = text.to_lowercase();
        for r in &raw {
            assert!(!lower.contains(r.as_str()), "{what} shows a raw identity");
        }
        assert!(
            !lower.contains("failing.person"),
            "{what} shows part of an identity"
        );
    };
    let today = chrono::Utc::now().date_naive().to_string();

    // Pages as the browser renders them (or as served, without a browser).
    let pages: Vec<(&str, String)> = vec![
        ("requests-open", "/dashboard/requests".into()),
        ("requests-all", "/dashboard/requests?view=all".into()),
        (
            "requests-failed",
            "/dashboard/requests?view=failed&kind=erasure&processor=newsletter".into(),
        ),
        ("request-failed", format!("/dashboard/requests/{failed}")),
        ("request-completed", format!("/dashboard/requests/{done}")),
        ("processors", "/dashboard/processors".into()),
        (
            "reports",
            format!("/dashboard/reports?from={today}&to={today}"),
        ),
    ];
    let mut rendered = std::collections::HashMap::new();
    if browser::available() {
        let dir = shots("pages", backend);
        let mut b = Browser::start().await;
        browser_login(&mut b, &d, PASSWORD).await;
        for (name, path) in &pages {
            b.goto(&d.url(path)).await;
            let html = b.html().await;
            b.screenshot(&dir.join(format!("{name}.png"))).await;
            rendered.insert(*name, html);
        }
        b.close().await;
    } else {
        let (_, cookie) = http_login(&d, PASSWORD).await;
        let cookie = cookie.unwrap();
        for (name, path) in &pages {
            let (code, html) = http_get(&d, &cookie, path).await;
            assert_eq!(code, 200, "{path}: {html}");
            rendered.insert(*name, html);
        }
    }
    for (name, html) in &rendered {
        assert_masked(name, html);
        assert!(!html.contains("<script"), "{name}: no script");
    }
    let list = &rendered["requests-all"];
    assert!(
        list.contains("f***@example.com") && list.contains("o***@example.com"),
        "{list}"
    );
    assert!(
        !rendered["requests-open"].contains(&done[..8]),
        "a completed request is not open"
    );
    let failed_only = &rendered["requests-failed"];
    assert!(
        failed_only.contains(&failed[..8]) && !failed_only.contains(&done[..8]),
        "{failed_only}"
    );
    let rf = &rendered["request-failed"];
    assert!(
        rf.contains("needs attention") && rf.contains(">Retry</button>"),
        "{rf}"
    );
    let rc = &rendered["request-completed"];
    assert!(
        rc.contains("erased") && rc.contains("<svg"),
        "the timeline: {rc}"
    );
    assert!(!rc.contains(">Retry</button>"), "nothing to retry");
    let procs = &rendered["processors"];
    assert!(
        procs.contains("processor-newsletter") && procs.contains("<svg"),
        "{procs}"
    );
    assert!(
        procs.contains("50%"),
        "one of two steps completed in the period: {procs}"
    );
    let reports = &rendered["reports"];
    assert!(
        reports.contains("certificate/csv") && reports.contains("period/json"),
        "{reports}"
    );

    // Downloads: the certificate and the period report in each format.
    let (_, cookie) = http_login(&d, PASSWORD).await;
    let cookie = cookie.unwrap();
    for path in [
        format!("/dashboard/requests/{done}/certificate/html"),
        format!("/dashboard/requests/{done}/certificate/json"),
        format!("/dashboard/requests/{done}/certificate/csv"),
        format!("/dashboard/reports/period/html?from={today}&to={today}"),
        format!("/dashboard/reports/period/json?from={today}&to={today}"),
        format!("/dashboard/reports/period/csv?from={today}&to={today}"),
    ] {
        let res = no_redirects()
            .get(d.url(&path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"));
        let body = res.text().await.unwrap();
        assert_masked(&path, &body);
        if path.contains("certificate") {
            assert!(
                body.contains("o***@example.com") && body.contains("erased"),
                "{path}: {body}"
            );
        }
    }
    // The JSON downloads are what `lethe report` prints.
    let (_, cert) = http_get(
        &d,
        &cookie,
        &format!("/dashboard/requests/{done}/certificate/json"),
    )
    .await;
    let cert: Value = serde_json::from_str(&cert).unwrap();
    let cli = env.json(&["report", &done, "--format", "json"]).await;
    assert_eq!(cert["processors"], cli["processors"]);
    assert_eq!(cert["request"], cli["request"]);
    let (_, period) = http_get(
        &d,
        &cookie,
        &format!("/dashboard/reports/period/json?from={today}&to={today}"),
    )
    .await;
    let period: Value = serde_json::from_str(&period).unwrap();
    let cli = env
        .json(&[
            "report", "--from", &today, "--to", &today, "--format", "json",
        ])
        .await;
    assert_eq!(period["requests"], cli["requests"]);
    assert_eq!(period["requests"]["received"], 2);
    // A bad filter is refused with a page, not an error dump.
    let (code, body) = http_get(&d, &cookie, "/dashboard/requests?kind=everything").await;
    assert_eq!(code, 400);
    assert!(
        body.contains("kind: expected erasure, export, objection or rectification"),
        "{body}"
    );
    let log = d.stop().await;
    assert_masked("the daemon's log", &log);
}

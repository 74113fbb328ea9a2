//! Outbound requests stay where they belong: no redirects to other hosts,
//! status callbacks only to public https targets (or listed origins), and
//! callbacks signed with their own key, never the webhook secret.

use crate::daemon::{
    callback_public_key, callback_signed_by, intake_env, now, sign, Daemon, CALLBACK_KEY, SECRET,
    TEST_CALLBACK_ALLOW, TOKEN,
};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::json;
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "jane.doe@example.com";

fn form(external_id: &str, callback: Option<&str>) -> String {
    let mut v = json!({
        "kind": "erasure",
        "identities": {"email": EMAIL},
        "external_id": external_id,
    });
    if let Some(c) = callback {
        v["callback_url"] = json!(c);
    }
    v.to_string()
}

/// Loopback, private or link-local (checked here independently of lethe).
fn internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Wait until `server` has received at least `n` requests.
async fn wait_received(server: &MockServer, n: usize, secs: u64) -> Vec<wiremock::Request> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = server.received_requests().await.unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "got {} requests, wanted {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_both_backends!(
    a_processor_redirecting_the_erase_to_another_host_sends_nothing_there_and_the_step_is_not_erased,
    a_status_callback_answered_with_a_redirect_to_another_host_is_not_followed,
    callback_urls_to_internal_or_plain_http_targets_are_refused_with_422_and_nothing_is_filed,
    a_callback_host_that_resolves_to_an_internal_address_is_never_called_and_its_delivery_is_dead,
    callbacks_verify_with_the_callback_key_only_and_a_captured_callback_signature_is_no_webhook_signature,
);

async fn a_processor_redirecting_the_erase_to_another_host_sends_nothing_there_and_the_step_is_not_erased(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&elsewhere)
        .await;
    // The member is there, but the delete answers 307 to another host (a
    // 307 tells the client to re-send the same body there).
    Mock::given(method("GET"))
        .and(path(fakes::member_path(EMAIL)))
        .respond_with(ResponseTemplate::new(200).set_body_json(fakes::member_doc(EMAIL)))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/collect?email={EMAIL}", elsewhere.uri()).as_str(),
        ))
        .with_priority(5)
        .mount(&server)
        .await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let id = env.erase(EMAIL).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the step failed: {}",
        show(&out)
    );

    assert_eq!(
        elsewhere
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0,
        "the redirect was followed to another host"
    );
    assert_eq!(
        fakes::count(&server, "POST", &fakes::delete_path(EMAIL)).await,
        1
    );
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_ne!(step["outcome"], "erased", "{st:#}");
    assert_eq!(step["state"], "failed", "a redirect is permanent: {st:#}");
    assert_eq!(step["error_class"], "permanent", "{st:#}");
    let err = step["last_error"].as_str().unwrap_or_default();
    let host = elsewhere.uri().trim_start_matches("http://").to_string();
    assert!(err.contains("newsletter"), "{err}");
    assert!(err.contains("HTTP 307"), "{err}");
    assert!(err.contains(&host), "names the Location host: {err}");
    assert!(
        !err.contains("collect") && !err.contains("jane"),
        "the Location's path and query stay out: {err}"
    );
}

async fn a_status_callback_answered_with_a_redirect_to_another_host_is_not_followed(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&elsewhere)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/steal", elsewhere.uri()).as_str()),
        )
        .mount(&receiver)
        .await;
    let (code, v) = d
        .webhook(&form("form-302", Some(&format!("{}/hook", receiver.uri()))))
        .await;
    assert_eq!(code, 201, "{v:#}");
    // Retried (a 3xx is a failed delivery), never followed.
    wait_received(&receiver, 2, 30).await;
    assert_eq!(
        elsewhere
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0,
        "the callback followed the redirect"
    );
    let log = d.stop().await;
    assert!(log.contains("redirects are not followed"), "{log}");
}

async fn callback_urls_to_internal_or_plain_http_targets_are_refused_with_422_and_nothing_is_filed(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    // Also allow-list plain-http `localhost` on any port, to show listing works.
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        TEST_CALLBACK_ALLOW,
        "callback_allow = [\"http://127.0.0.1:*\", \"http://localhost:*\"]",
    );
    std::fs::write(&env.config, text).unwrap();
    let d = Daemon::start(&env, port).await;
    for (i, bad) in [
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/hook",
        "http://example.com/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "http://127.0.0.1.nip.io/hook",
    ]
    .iter()
    .enumerate()
    {
        let (code, v) = d.webhook(&form(&format!("bad-{i}"), Some(bad))).await;
        assert_eq!(code, 422, "{bad}: {v:#}");
        assert_eq!(v["error"]["field"], "callback_url", "{bad}: {v:#}");
        let reason = v["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("callback_allow"),
            "the refusal says how to allow it: {v:#}"
        );
        let osr = json!({
            "subject_request_id": format!("a7551968-d5d6-44b2-9831-81576710{i:04}"),
            "subject_request_type": "erasure",
            "submitted_time": "2026-10-10T15:00:00Z",
            "subject_identities": [{"identity_type": "email", "identity_value": EMAIL, "identity_format": "raw"}],
            "status_callback_urls": [bad],
        });
        let (code, v) = d
            .post_raw(
                "/opendsr/v1/requests",
                osr.to_string().into_bytes(),
                None,
                Some(TOKEN),
            )
            .await;
        assert_eq!(code, 422, "OpenDSR {bad}: {v:#}");
        assert_eq!(
            v["error"]["field"], "status_callback_urls[0]",
            "{bad}: {v:#}"
        );
    }
    let (code, list) = d.get("/v1/requests", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list:#}");

    // A listed origin is allowed, and its callbacks are delivered.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let listed = format!("http://localhost:{}/hook", receiver.address().port());
    let (code, v) = d.webhook(&form("listed", Some(&listed))).await;
    assert_eq!(code, 201, "{v:#}");
    wait_received(&receiver, 1, 30).await;
    d.stop().await;
}

async fn a_callback_host_that_resolves_to_an_internal_address_is_never_called_and_its_delivery_is_dead(
    backend: Backend,
) {
    // This machine's own name passes the intake check (https, not
    // `localhost`) but resolves to an internal address: what a DNS name
    // pointed (or re-pointed) at the private network looks like.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 443))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| internal(a.ip())),
        "precondition: this machine's name `{host}` must resolve to internal addresses only, got {addrs:?}"
    );
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    let receiver = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let rport = receiver.local_addr().unwrap().port();
    let (code, v) = d
        .webhook(&form(
            "rebind",
            Some(&format!("https://{host}:{rport}/hook")),
        ))
        .await;
    assert_eq!(
        code, 201,
        "an https URL on a public-looking name passes intake: {v:#}"
    );
    let id = v["id"].as_str().unwrap().to_string();
    d.wait_status(&id, &["completed"], 30).await;
    let store = env.store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = store.outbox_counts().await.unwrap();
        if counts.iter().all(|(s, _)| s == "dead") && !counts.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "callbacks not dead: {counts:?}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        receiver.accept().is_err(),
        "the daemon connected to the internal address"
    );
    let log = d.stop().await;
    assert!(log.contains("callback target refused"), "{log}");
    assert!(log.contains("resolves to"), "{log}");
}

async fn callbacks_verify_with_the_callback_key_only_and_a_captured_callback_signature_is_no_webhook_signature(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let (env, port) = intake_env(backend, &server).await;

    // `lethe intake key` prints the public key receivers pin.
    let key = env.json(&["intake", "key", "--json"]).await;
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(callback_public_key().to_bytes());
    assert_eq!(key["public_key"], expected.as_str(), "{key:#}");
    assert_eq!(key["algorithm"], "ed25519");

    let d = Daemon::start(&env, port).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let (code, v) = d
        .webhook(&form("keys", Some(&format!("{}/hook", receiver.uri()))))
        .await;
    assert_eq!(code, 201, "{v:#}");
    let got = wait_received(&receiver, 1, 30).await;
    let r = &got[0];
    let sig = r
        .headers
        .get("lethe-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed")
        .to_string();
    assert!(
        callback_signed_by(&callback_public_key(), &sig, &r.body),
        "{sig}"
    );
    // Not an HMAC with the webhook secret.
    let t: i64 = sig
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    let hmac = sign(SECRET, t, &r.body);
    let v1 = hmac.split_once("v1=").map(|(_, m)| m).unwrap();
    assert!(!sig.contains(v1), "signed with the webhook secret: {sig}");

    // A receiver replaying the callback (body and signature) at the intake is refused.
    let (code, v) = d
        .post_raw("/v1/requests", r.body.clone(), Some(&sig), None)
        .await;
    assert_eq!(code, 401, "{v:#}");
    assert_eq!(v["error"]["field"], "Lethe-Signature", "{v:#}");
    // So is a webhook body signed with the callback signature's scheme and key.
    let body = form("forged", None);
    let forged = {
        use base64::Engine as _;
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(CALLBACK_KEY)
            .unwrap()
            .try_into()
            .unwrap();
        use ed25519_dalek::Signer;
        let k = ed25519_dalek::SigningKey::from_bytes(&seed);
        let t = now();
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body.as_bytes());
        format!("t={t},ed25519={}", hex::encode(k.sign(&msg).to_bytes()))
    };
    let (code, v) = d
        .post_raw("/v1/requests", body.into_bytes(), Some(&forged), None)
        .await;
    assert_eq!(code, 401, "{v:#}");
    let (_, list) = d.get("/v1/requests", Some(TOKEN)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_to_start_without_a_valid_callback_key_naming_the_variable() {
    let server = fakes::mailchimp().await;
    let (mut env, _port) = intake_env(Backend::Sqlite, &server).await;
    env.env.retain(|(k, _)| k != "LETHE_CALLBACK_KEY");
    let out = tokio::time::timeout(Duration::from_secs(30), env.lethe(&["daemon"]))
        .await
        .expect("the daemon started instead of refusing");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LETHE_CALLBACK_KEY"), "{err}");
    assert!(err.contains("intake.callback_signing_key_env"), "{err}");

    env.set_env("LETHE_CALLBACK_KEY", "too-short");
    let out = tokio::time::timeout(Duration::from_secs(30), env.lethe(&["daemon"]))
        .await
        .expect("the daemon started instead of refusing");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not 32 bytes of base64"), "{err}");
    assert!(
        !err.contains("too-short"),
        "the key's value is not echoed: {err}"
    );
}

on_both_backends!(
    a_connector_that_opts_in_follows_a_redirect_within_its_own_host_and_still_not_to_another,
);

async fn a_connector_that_opts_in_follows_a_redirect_within_its_own_host_and_still_not_to_another(
    backend: Backend,
) {
    const OTHER: &str = "john.roe@example.com";
    let server = fakes::mailchimp().await;
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(204))
        .mount(&elsewhere)
        .await;
    for email in [EMAIL, OTHER] {
        Mock::given(method("GET"))
            .and(path(fakes::member_path(email)))
            .respond_with(ResponseTemplate::new(200).set_body_json(fakes::member_doc(email)))
            .with_priority(5)
            .mount(&server)
            .await;
    }
    // Jane's delete moved within the API (307 to the same host, which erases);
    // John's points at another host.
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(EMAIL)))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", "/3.0/moved/delete-permanent"),
        )
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/3.0/moved/delete-permanent"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(fakes::delete_path(OTHER)))
        .respond_with(
            ResponseTemplate::new(308)
                .insert_header("location", format!("{}/collect", elsewhere.uri()).as_str()),
        )
        .with_priority(5)
        .mount(&server)
        .await;
    let mut env = TestEnv::new(
        backend,
        "connectors_dir = \"connectors\"",
        &fakes::processor_toml(&server),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("connectors")).unwrap();
    let def = include_str!("../../connectors/mailchimp.toml").replacen(
        "[limits]\n",
        "[limits]\nfollow_redirects = \"same_host\"\n",
        1,
    );
    std::fs::write(env.dir.path().join("connectors/mailchimp.toml"), def).unwrap();
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let jane = env.erase(EMAIL).await;
    let john = env.erase(OTHER).await;
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "john's step failed: {}",
        show(&out)
    );

    let st = env.status(&jane).await;
    assert_eq!(
        TestEnv::step(&st, "newsletter")["outcome"],
        "erased",
        "{st:#}"
    );
    assert_eq!(
        fakes::count(&server, "POST", "/3.0/moved/delete-permanent").await,
        1
    );
    let st = env.status(&john).await;
    let step = TestEnv::step(&st, "newsletter");
    assert_eq!(step["state"], "failed", "{st:#}");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("HTTP 308"), "{err}");
    assert_eq!(
        elsewhere
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0,
        "followed to another host"
    );
}

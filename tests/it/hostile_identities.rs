//! Identities can never steer a call (issue 11, point 1).
//!
//! Every built-in declarative connector, against its fake, through the CLI:
//! identities that would climb out of the subject's own resource (`x/..`,
//! `%2e%2e`, `a?b`, `a#b`, `../../etc`) are refused at the edge (exit 2, the
//! rule named, the value not echoed), and identities the grammar accepts but
//! that are tricky in a URL (`a+b@x.com`, `o'brien@x.com`, `C-1.2`, `acct:77`,
//! `x@y`) reach the processor intact, as one path segment or one query value,
//! on the processor's own host, never as a `.`/`..`/empty segment. The webhook
//! and OpenDSR intake refuse the same identities with 422 naming the field.

use crate::connectors_fakes::{
    decoded_path, Api, Dropbox, Mailgun, OneDrive, Stripe, Twilio, Webhook, Whm, Xero, Zendesk,
    ZendeskPermanent, ZohoDesk, OD_DRIVE, PHONE,
};
use crate::connectors_suite::{env_for, finish};
use crate::daemon::{intake_env, Daemon, TOKEN};
use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::{json, Value};
use wiremock::{MockServer, Request};

/// Customer ids that would name another folder, or the drive root.
const REFUSED_IDS: [&str; 6] = ["x/..", "%2e%2e", "a?b", "a#b", "../../etc", ".."];
/// Emails that would change a URL's meaning.
const REFUSED_EMAILS: [&str; 4] = ["a/b@x.com", "a?b@x.com", "a#b@x.com", "a%2fb@x.com"];
/// (email, customer id): accepted by the grammar, tricky in a URL.
const TRICKY: [(&str, &str); 3] = [
    ("a+b@x.com", "C-1.2"),
    ("o'brien@x.com", "acct:77"),
    ("x=y&z@x.com", "x@y"),
];

/// Which identity a connector puts into its calls.
#[derive(Clone, Copy)]
enum Uses {
    Email,
    Customer,
    Phone,
    /// The lower-cased email's MD5 (Mailchimp's subscriber hash).
    EmailHash,
}

/// Percent-decode one string.
fn decode(s: &str) -> String {
    crate::connectors_fakes::percent_decode(s)
}

/// The raw (still encoded) path segments of a request.
fn raw_segments(r: &Request) -> Vec<String> {
    r.url
        .path()
        .strip_prefix('/')
        .unwrap_or(r.url.path())
        .split('/')
        .map(str::to_string)
        .collect()
}

/// The refused identities exit 2 at the CLI, naming the rule and not echoing the value.
async fn refused_at_the_cli(env: &TestEnv) {
    for bad in REFUSED_IDS {
        let out = env
            .lethe(&["request", "erase", "--customer-id", bad, "--json"])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "customer id {bad:?}: {}",
            show(&out)
        );
        assert!(
            err.contains("invalid customer id") && err.contains("A-Z a-z 0-9"),
            "the error names the field and the rule: {err}"
        );
        // (`..` alone is part of the rule text itself.)
        assert!(
            bad == ".." || !err.contains(bad),
            "the refused value is not echoed: {err}"
        );
    }
    for bad in REFUSED_EMAILS {
        let out = env
            .lethe(&["request", "erase", "--email", bad, "--json"])
            .await;
        assert_eq!(out.status.code(), Some(2), "email {bad:?}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid email"),
            "{}",
            show(&out)
        );
    }
}

/// File one erasure per tricky identity set, run them to the end, and check
/// every request the fake received.
async fn tricky_stay_in_their_own_resource<A: Api>(backend: Backend, uses: Uses) {
    let api = A::start(false).await;
    let env = env_for(backend, &api).await;
    refused_at_the_cli(&env).await;
    let mut ids = vec![];
    for (email, customer) in TRICKY {
        let v = env
            .json(&[
                "request",
                "erase",
                "--email",
                email,
                "--customer-id",
                customer,
                "--phone",
                PHONE,
                "--json",
            ])
            .await;
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        finish(&env, id).await;
    }
    check_requests(api.server(), uses).await;
}

async fn check_requests(server: &MockServer, uses: Uses) {
    let reqs = server.received_requests().await.unwrap_or_default();
    assert!(!reqs.is_empty(), "the processor was called");
    let base = url::Url::parse(&server.uri()).expect("fake uri");
    for r in &reqs {
        // Host unchanged, and no segment that climbs or is empty.
        // (wiremock's recorded URL has a placeholder host: the Host header is what was sent.)
        let host = r
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let want = format!(
            "{}:{}",
            base.host_str().unwrap_or_default(),
            base.port().unwrap_or(80)
        );
        assert_eq!(host, want, "the host is unchanged for {}", r.url.path());
        for seg in raw_segments(r) {
            let d = decode(&seg);
            assert!(
                !seg.is_empty() && d != "." && d != ".." && !d.contains('/'),
                "segment {seg:?} of {} is empty, climbs or holds a `/`",
                r.url.path()
            );
        }
        // Every identity that appears in a path is a whole segment of its own.
        for (email, customer) in TRICKY {
            for v in [email, customer] {
                for seg in raw_segments(r) {
                    let d = decode(&seg);
                    if d.contains(v) {
                        assert_eq!(d, v, "{v:?} is one whole segment in {}", r.url.path());
                    }
                }
            }
        }
    }
    // And each identity reached the processor intact.
    let values: Vec<String> = match uses {
        Uses::Email => TRICKY.iter().map(|(e, _)| e.to_string()).collect(),
        Uses::Customer => TRICKY.iter().map(|(_, c)| c.to_string()).collect(),
        Uses::Phone => vec![PHONE.to_string()],
        Uses::EmailHash => TRICKY
            .iter()
            .map(|(e, _)| {
                use md5::Digest as _;
                hex::encode(md5::Md5::digest(e.to_lowercase().as_bytes()))
            })
            .collect(),
    };
    for v in &values {
        let v = v.as_str();
        let reached = reqs.iter().any(|r| {
            raw_segments(r).iter().any(|s| decode(s) == v)
                || r.url.query_pairs().any(|(_, q)| {
                    q == v
                        || q.contains(&format!("'{v}'"))
                        || q.contains(&format!("'{}'", v.replace('\'', "\\'")))
                })
                || String::from_utf8_lossy(&r.body).contains(v)
        });
        assert!(
            reached,
            "{v:?} reached the processor intact (a whole segment, query value or JSON string)"
        );
    }
}

async fn hostile_identities_stay_in_their_own_resource_at_mailgun(backend: Backend) {
    tricky_stay_in_their_own_resource::<Mailgun>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_zendesk(backend: Backend) {
    tricky_stay_in_their_own_resource::<Zendesk>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_zendesk_permanent(backend: Backend) {
    tricky_stay_in_their_own_resource::<ZendeskPermanent>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_zoho_desk(backend: Backend) {
    tricky_stay_in_their_own_resource::<ZohoDesk>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_xero(backend: Backend) {
    tricky_stay_in_their_own_resource::<Xero>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_stripe(backend: Backend) {
    tricky_stay_in_their_own_resource::<Stripe>(backend, Uses::Email).await
}
async fn hostile_identities_stay_in_their_own_resource_at_whm(backend: Backend) {
    tricky_stay_in_their_own_resource::<Whm>(backend, Uses::Customer).await
}
async fn hostile_identities_stay_in_their_own_resource_at_twilio(backend: Backend) {
    tricky_stay_in_their_own_resource::<Twilio>(backend, Uses::Phone).await
}
async fn hostile_identities_stay_in_their_own_resource_at_webhook(backend: Backend) {
    tricky_stay_in_their_own_resource::<Webhook>(backend, Uses::Email).await
}

/// Dropbox: the path in the JSON body is the subject's own folder, exactly.
async fn hostile_identities_stay_in_their_own_resource_at_dropbox(backend: Backend) {
    let api = Dropbox::start(false).await;
    let env = env_for(backend, &api).await;
    refused_at_the_cli(&env).await;
    for (email, customer) in TRICKY {
        let v = env
            .json(&[
                "request",
                "erase",
                "--email",
                email,
                "--customer-id",
                customer,
                "--json",
            ])
            .await;
        finish(&env, v["id"].as_str().expect("id")).await;
    }
    check_requests(api.server(), Uses::Customer).await;
    let reqs = api.server.received_requests().await.unwrap_or_default();
    let wanted: Vec<String> = TRICKY
        .iter()
        .map(|(_, c)| format!("/customers/{c}"))
        .collect();
    for r in &reqs {
        let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
            continue;
        };
        if let Some(p) = body["path"].as_str() {
            assert!(
                wanted.iter().any(|w| w == p),
                "Dropbox path {p:?} is a subject's own folder"
            );
        }
    }
}

/// OneDrive: only `root:/customers/<id>` of each subject, never the
/// customers folder or the drive root (on main, `x/..` resolved to
/// `root:/customers` and deleted every customer's folder).
async fn hostile_identities_stay_in_their_own_resource_at_onedrive(backend: Backend) {
    let api = OneDrive::start(false).await;
    let env = env_for(backend, &api).await;
    refused_at_the_cli(&env).await;
    for (email, customer) in TRICKY {
        let v = env
            .json(&[
                "request",
                "erase",
                "--email",
                email,
                "--customer-id",
                customer,
                "--json",
            ])
            .await;
        finish(&env, v["id"].as_str().expect("id")).await;
    }
    check_requests(api.server(), Uses::Customer).await;
    let reqs = api.server.received_requests().await.unwrap_or_default();
    for r in &reqs {
        let segs: Vec<String> = raw_segments(r).iter().map(|s| decode(s)).collect();
        if segs.iter().any(|s| s.starts_with("root")) {
            assert_eq!(
                segs.len(),
                5,
                "by-path calls have exactly 5 segments: {}",
                r.url.path()
            );
            assert_eq!(
                &segs[..4],
                &["drives", OD_DRIVE, "root:", "customers"],
                "{}",
                r.url.path()
            );
            assert!(
                TRICKY.iter().any(|(_, c)| segs[4] == *c),
                "the last segment is a subject's own id: {}",
                r.url.path()
            );
        }
        let p = decoded_path(r);
        assert!(
            !p.ends_with("root:/customers") && !p.ends_with("root:") && !p.ends_with("/root"),
            "never the customers folder or the drive root: {p}"
        );
    }
    for (_, c) in TRICKY {
        assert!(
            reqs.iter()
                .any(|r| decoded_path(r) == format!("/drives/{OD_DRIVE}/root:/customers/{c}")),
            "{c:?} was looked up in its own folder"
        );
    }
}

/// Mailchimp (its own fake): the member hash segment is computed from the address.
async fn hostile_identities_stay_in_their_own_resource_at_mailchimp(backend: Backend) {
    let server = fakes::mailchimp().await;
    let mut env = crate::connectors_suite::env_with(backend, &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", fakes::API_KEY);
    refused_at_the_cli(&env).await;
    for (email, _) in TRICKY {
        let id = env.erase(email).await;
        finish(&env, &id).await;
    }
    check_requests(&server, Uses::EmailHash).await;
}

/// The webhook and OpenDSR intake refuse the same identities with 422 naming the field.
async fn the_intake_refuses_steering_identities_with_422_naming_the_field(backend: Backend) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    let d = Daemon::start(&env, port).await;
    for (i, bad) in REFUSED_IDS.iter().enumerate() {
        let (status, body) = d
            .webhook(
                &json!({"kind": "erasure", "identities": {"customer_id": bad}, "external_id": format!("h-{i}")})
                    .to_string(),
            )
            .await;
        assert_eq!(status, 422, "webhook customer_id {bad:?}: {body:#}");
        assert_eq!(body["error"]["field"], "identities.customer_id", "{body:#}");
        let reason = body["error"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("A-Z a-z 0-9") && (*bad == ".." || !reason.contains(bad)),
            "{reason}"
        );

        let (status, body) = d
            .post_raw(
                "/opendsr/v1/requests",
                json!({"subject_request_id": uuid::Uuid::new_v4().to_string(), "subject_request_type": "erasure",
                       "submitted_time": "2026-11-20T09:00:00Z",
                       "subject_identities": [{"identity_type": "controller_customer_id", "identity_value": bad, "identity_format": "raw"}]})
                .to_string()
                .into_bytes(),
                None,
                Some(TOKEN),
            )
            .await;
        assert_eq!(
            status, 422,
            "OpenDSR controller_customer_id {bad:?}: {body:#}"
        );
        assert_eq!(
            body["error"]["field"], "subject_identities[0].identity_value",
            "{body:#}"
        );
    }
    for (i, bad) in REFUSED_EMAILS.iter().enumerate() {
        let (status, body) = d
            .webhook(
                &json!({"kind": "erasure", "identities": {"email": bad}, "external_id": format!("e-{i}")})
                    .to_string(),
            )
            .await;
        assert_eq!(status, 422, "webhook email {bad:?}: {body:#}");
        assert_eq!(body["error"]["field"], "identities.email", "{body:#}");
    }
    let listed = env.json(&["list", "--json"]).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing was filed: {listed:#}"
    );
}

on_both_backends!(
    hostile_identities_stay_in_their_own_resource_at_mailgun,
    hostile_identities_stay_in_their_own_resource_at_zendesk,
    hostile_identities_stay_in_their_own_resource_at_zendesk_permanent,
    hostile_identities_stay_in_their_own_resource_at_zoho_desk,
    hostile_identities_stay_in_their_own_resource_at_xero,
    hostile_identities_stay_in_their_own_resource_at_stripe,
    hostile_identities_stay_in_their_own_resource_at_whm,
    hostile_identities_stay_in_their_own_resource_at_twilio,
    hostile_identities_stay_in_their_own_resource_at_webhook,
    hostile_identities_stay_in_their_own_resource_at_dropbox,
    hostile_identities_stay_in_their_own_resource_at_onedrive,
    hostile_identities_stay_in_their_own_resource_at_mailchimp,
    the_intake_refuses_steering_identities_with_422_naming_the_field,
);

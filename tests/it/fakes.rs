//! A wiremock Mailchimp that answers like the real Marketing API v3
//! (PROCESSORS.md §1.1): Basic auth with the API key as password (any user
//! name), members keyed by MD5 of the lower-cased email, `problem+json` errors,
//! 204 from `actions/delete-permanent`.

use base64::Engine as _;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

pub const API_KEY: &str = "0123456789abcdef0123456789abcdef-us21";
pub const LIST: &str = "a1b2c3d4";

/// Matches a request whose Basic auth password is the API key.
pub struct ApiKey(pub bool);

impl Match for ApiKey {
    fn matches(&self, req: &Request) -> bool {
        let ok = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|up| up.split_once(':').is_some_and(|(_, p)| p == API_KEY));
        ok == self.0
    }
}

pub fn problem(status: u16, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/problem+json")
        .set_body_json(json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "995c5cb0-3280-4a6e-808b-3b096d0bb219"
        }))
}

pub fn hash(email: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(email.to_lowercase().as_bytes()))
}

pub fn member_path(email: &str) -> String {
    format!("/3.0/lists/{LIST}/members/{}", hash(email))
}

pub fn delete_path(email: &str) -> String {
    format!("{}/actions/delete-permanent", member_path(email))
}

/// A started fake with the always-on behaviour: 401 for a bad key, 404 for any unknown member.
pub async fn mailchimp() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(ApiKey(false))
        .respond_with(problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/3.0/ping"))
        .and(ApiKey(true))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"health_status": "Everything's Chimpy!"})),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(path_regex(r"^/3\.0/lists/.*"))
        .and(ApiKey(true))
        .respond_with(problem(
            404,
            "Resource Not Found",
            "The requested resource could not be found.",
        ))
        .with_priority(100)
        .mount(&server)
        .await;
    server
}

/// The member document the real API returns (trimmed).
pub fn member_doc(email: &str) -> serde_json::Value {
    json!({
        "id": hash(email),
        "email_address": email,
        "unique_email_id": "882e9bec19",
        "contact_id": "e2e5e3a9e39c35e3d29c5ed3a7b2a3c1",
        "full_name": "Jane Doe",
        "status": "subscribed",
        "merge_fields": {"FNAME": "Jane", "LNAME": "Doe"},
        "list_id": LIST,
        "tags": [{"id": 1, "name": "customer"}]
    })
}

/// Mount a known member: readable, exportable, and permanently deletable once (204, then 404).
pub async fn add_member(server: &MockServer, email: &str) {
    Mock::given(method("GET"))
        .and(path(member_path(email)))
        .and(ApiKey(true))
        .respond_with(ResponseTemplate::new(200).set_body_json(member_doc(email)))
        .with_priority(10)
        .mount(server)
        .await;
    for (sub, body) in [
        (
            "activity-feed",
            json!({"activity": [{"activity_type": "open", "created_at_timestamp": "2026-10-01T09:00:00+00:00"}], "total_items": 1}),
        ),
        (
            "activity",
            json!({"activity": [{"action": "open", "timestamp": "2026-10-01T09:00:00+00:00"}], "total_items": 1}),
        ),
        ("events", json!({"events": [], "total_items": 0})),
        ("goals", json!({"goals": [], "total_items": 0})),
        (
            "notes",
            json!({"notes": [{"id": 7, "note": "asked for invoice copy"}], "total_items": 1}),
        ),
        (
            "tags",
            json!({"tags": [{"id": 1, "name": "customer"}], "total_items": 1}),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("{}/{sub}", member_path(email))))
            .and(ApiKey(true))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .with_priority(10)
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(delete_path(email)))
        .and(ApiKey(true))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .with_priority(10)
        .mount(server)
        .await;
}

/// Processor block for lethe.toml.
pub fn processor_toml(server: &MockServer) -> String {
    format!(
        "[[processor]]\nname = \"newsletter\"\nconnector = \"mailchimp\"\nbase_url = \"{}/3.0\"\nsettings = {{ list_id = \"{LIST}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n",
        server.uri()
    )
}

/// Requests the fake received matching method and path.
pub async fn count(server: &MockServer, m: &str, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .count()
}

/// Mount a known member on another list (readable, permanently deletable once).
pub async fn add_member_to(server: &MockServer, list: &str, email: &str) {
    let member = format!("/3.0/lists/{list}/members/{}", hash(email));
    Mock::given(method("GET"))
        .and(path(member.clone()))
        .and(ApiKey(true))
        .respond_with(ResponseTemplate::new(200).set_body_json(member_doc(email)))
        .with_priority(10)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{member}/actions/delete-permanent")))
        .and(ApiKey(true))
        .respond_with(ResponseTemplate::new(204))
        .up_to_n_times(1)
        .with_priority(10)
        .mount(server)
        .await;
}

/// A Mailchimp processor block with its own name and list.
pub fn named_processor_toml(server: &MockServer, name: &str, list: &str) -> String {
    format!(
        "[[processor]]\nname = \"{name}\"\nconnector = \"mailchimp\"\nbase_url = \"{}/3.0\"\nsettings = {{ list_id = \"{list}\" }}\nsecrets = {{ api_key = \"MAILCHIMP_API_KEY\" }}\n",
        server.uri()
    )
}

/// The delete-permanent path of a member of `list`.
pub fn delete_path_in(list: &str, email: &str) -> String {
    format!(
        "/3.0/lists/{list}/members/{}/actions/delete-permanent",
        hash(email)
    )
}

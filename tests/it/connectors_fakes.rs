//! Stateful wiremock fakes for every built-in declarative connector, answering
//! the way PROCESSORS.md says the real APIs do: the same paths and methods, the
//! same bodies (trimmed), the same status codes and throttling signals.
//!
//! Each fake keeps the subject's data in shared state, so an erase really
//! removes it (a soft delete hides it from search; a purge removes it for good)
//! and a retry after a failure sees what the earlier attempt left.

use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{any, method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const EMAIL: &str = "jane.doe@example.com";
pub const PHONE: &str = "+442079460958";
pub const CUSTOMER: &str = "jdoe42";
/// Another customer whose address a fuzzy search also matches: never touched.
pub const DECOY: &str = "jane.doe@example.com.au";
/// The decoy's ids at Zendesk, Xero and Zoho.
pub const DECOY_IDS: [&str; 3] = ["99001", "decoydecoy01", "1892000000099999"];

/// Requests other than GET that named the decoy (in the path or the body).
pub async fn decoy_writes(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() != "GET")
        .filter(|r| {
            let body = String::from_utf8_lossy(&r.body);
            DECOY_IDS
                .iter()
                .any(|id| r.url.path().contains(id) || body.contains(id))
        })
        .count()
}

/// The identities every connector test files its request with.
pub const SUBJECT_ARGS: [&str; 6] = [
    "--email",
    EMAIL,
    "--phone",
    PHONE,
    "--customer-id",
    CUSTOMER,
];

/// How a successful erase ends at this processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `done` / `erased` at once.
    Erased,
    /// `done` / `retained`, the reason containing this text.
    Retained(&'static str),
    /// `grace` first, then `done` / `purged` after the window.
    Grace,
}

/// One processor API fake.
pub trait Api: Sized {
    /// Connector name.
    const CONNECTOR: &'static str;
    /// Processor name in lethe.toml.
    const PROCESSOR: &'static str;
    /// Category as `status --json` shows it.
    const CATEGORY: &'static str;
    /// How a successful erase ends.
    const ENDED: Ended;
    /// The env var holding the secret.
    const SECRET_VAR: &'static str;
    /// The good secret.
    const SECRET: &'static str;
    /// Start with or without the subject's data.
    fn start(with_subject: bool) -> impl std::future::Future<Output = Self>;
    /// The server.
    fn server(&self) -> &MockServer;
    /// The `[[processor]]` block.
    fn processor_toml(&self) -> String;
    /// Method and path regex of the decisive erase call (faults are injected there).
    fn erase_call(&self) -> (&'static str, &'static str);
    /// What the API answers when it is briefly unavailable.
    fn transient(&self) -> ResponseTemplate;
    /// What the API answers when throttling, with its Retry-After if it sends one.
    fn throttled(&self) -> Option<ResponseTemplate>;
    /// The throttling answer carries `Retry-After: 1`.
    const RETRY_AFTER: bool = false;
    /// Its lookup includes a search whose index lags (searched again once).
    const LAGGING_SEARCH: bool = false;
    /// The subject's data is gone (or, for retained outcomes, what must be kept is kept).
    fn erased_as_expected(&self) -> bool;
    /// Assert the exported document holds the subject's data.
    fn check_export(&self, data: &Value);
}

/// Requests the fake received with this method whose (encoded) path matches `re`.
pub async fn count(server: &MockServer, m: &str, re: &str) -> usize {
    use wiremock::Match;
    let matcher = path_regex(re);
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == m && matcher.matches(r))
        .count()
}

/// Percent-decode a request path (`%40` → `@`, `%2B` → `+`).
pub fn decoded_path(req: &Request) -> String {
    percent_decode(req.url.path())
}

/// Percent-decode one string.
pub fn percent_decode(s: &str) -> String {
    let p = s.as_bytes();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'%' && i + 2 < p.len() {
            let hex = std::str::from_utf8(&p[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(p[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query parameter, decoded.
pub fn query(req: &Request, k: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.into_owned())
}

/// The request's JSON body.
pub fn body(req: &Request) -> Value {
    serde_json::from_slice(&req.body).unwrap_or(Value::Null)
}

fn header(req: &Request, k: &str) -> Option<String> {
    req.headers
        .get(k)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Authorization: Basic` user and password.
pub fn basic(req: &Request) -> Option<(String, String)> {
    let b = header(req, "authorization")?;
    let b = b.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Mount the fake: one router behind an auth check.
async fn mount(
    server: &MockServer,
    authorized: impl Fn(&Request) -> bool + Send + Sync + 'static,
    unauthorized: ResponseTemplate,
    route: impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static,
) {
    Mock::given(any())
        .respond_with(move |req: &Request| {
            if authorized(req) {
                route(req)
            } else {
                unauthorized.clone()
            }
        })
        .with_priority(10)
        .mount(server)
        .await;
}

/// Answer the next `times` calls matching method and path regex with `resp`.
pub async fn inject(server: &MockServer, m: &str, re: &str, resp: ResponseTemplate, times: u64) {
    Mock::given(method(m))
        .and(path_regex(re))
        .respond_with(resp)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
}

fn j(status: u16, v: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(v)
}

fn text(status: u16, t: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "text/plain; charset=utf-8")
        .set_body_string(t.to_string())
}

/// Shared state: is the subject there, soft-deleted, gone?
#[derive(Debug, Default)]
pub struct State {
    pub present: bool,
    pub soft_deleted: bool,
    pub purged: bool,
    /// For fakes where a soft delete "does not take" (restored by someone).
    pub restore_after_delete: bool,
    /// Idempotency keys seen.
    pub idempotency_keys: Vec<String>,
    /// Twilio: messages still held. Stripe: customers held.
    pub messages: Vec<Value>,
    /// Stripe: ids of customers the search index does not show yet (it lags
    /// behind writes by up to a minute); clear it to let the index catch up.
    pub not_indexed: Vec<String>,
}

pub type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- Mailgun

pub struct Mailgun {
    pub server: MockServer,
    pub state: Shared,
}

pub const MG_LIST: &str = "customers@mg.example.com";
pub const MG_DOMAIN: &str = "mg.example.com";

impl Api for Mailgun {
    const CONNECTOR: &'static str = "mailgun";
    const PROCESSOR: &'static str = "mail";
    const CATEGORY: &'static str = "mailing_list";
    const ENDED: Ended = Ended::Retained("an opt-out must be honoured");
    const SECRET_VAR: &'static str = "MAILGUN_API_KEY";
    const SECRET: &'static str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        let base = server.uri();
        mount(
            &server,
            |r| basic(r).is_some_and(|(u, p)| u == "api" && p == Self::SECRET),
            text(401, "Forbidden"),
            move |req| {
                let p = decoded_path(req);
                let member = format!("/v3/lists/{MG_LIST}/members/{EMAIL}");
                let mut s = lock(&st);
                match (req.method.as_str(), p.as_str()) {
                    ("GET", x) if x == format!("/v3/lists/{MG_LIST}") => j(
                        200,
                        json!({"list": {"address": MG_LIST, "name": "Customers", "members_count": 1200}}),
                    ),
                    ("GET", x) if x == member && s.present => j(
                        200,
                        json!({"member": {"address": EMAIL, "name": "Jane Doe", "subscribed": true, "vars": {"plan": "pro"}}}),
                    ),
                    ("DELETE", x) if x == member && s.present => {
                        s.present = false;
                        j(
                            200,
                            json!({"member": {"address": EMAIL}, "message": "Mailing list member has been deleted"}),
                        )
                    }
                    // Any other address on the list: Mailgun's JSON 404, as for a gone member.
                    (_, x) if x == member || x.starts_with(&format!("/v3/lists/{MG_LIST}/members/")) => {
                        j(404, json!({"message": "Member not found"}))
                    }
                    // The suppression is the opt-out record: it stays whatever happens.
                    ("GET", x) if x == format!("/v3/{MG_DOMAIN}/unsubscribes/{EMAIL}") => j(
                        200,
                        json!({"address": EMAIL, "tags": ["*"], "created_at": "Fri, 21 Oct 2026 11:02:55 UTC"}),
                    ),
                    // The event log, filtered by recipient, three events over two
                    // pages; `paging.next` is always a URL, the end is an empty page.
                    ("GET", x) if x == format!("/v3/{MG_DOMAIN}/events") || x.starts_with(&format!("/v3/{MG_DOMAIN}/events/")) => {
                        let page = x.rsplit('/').next().unwrap_or_default();
                        let first = page == "events";
                        if first && query(req, "recipient").as_deref() != Some(EMAIL) {
                            return j(200, mg_events_page(&base, vec![], "WzMsIFtbInAiXV1d"));
                        }
                        match page {
                            "events" => j(200, mg_events_page(&base, vec![mg_event("delivered", 1), mg_event("opened", 2)], "WzMsIFtbInAiLCAiMiJdXV0")),
                            "WzMsIFtbInAiLCAiMiJdXV0" => j(200, mg_events_page(&base, vec![mg_event("clicked", 3)], "WzMsIFtbInAiLCAiMyJdXV0")),
                            _ => j(200, mg_events_page(&base, vec![], "WzMsIFtbInAiLCAiNCJdXV0")),
                        }
                    }
                    ("GET", x) if x.starts_with(&format!("/v3/{MG_DOMAIN}/")) => {
                        j(404, json!({"message": "Address not found in table"}))
                    }
                    _ => text(404, "404 page not found"),
                }
            },
        )
        .await;
        Mailgun { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"mailgun\"\nbase_url = \"{}\"\nsettings = {{ list = \"{MG_LIST}\", domain = \"{MG_DOMAIN}\" }}\nsecrets = {{ api_key = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/v3/lists/.+/members/.+$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(503, json!({"message": "Service Unavailable"}))
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        // Mailgun documents no Retry-After header.
        Some(j(429, json!({"message": "Too many requests"})))
    }
    fn erased_as_expected(&self) -> bool {
        !lock(&self.state).present
    }
    fn check_export(&self, data: &Value) {
        let events: Vec<&str> = data["events"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["event"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            events,
            ["delivered", "opened", "clicked"],
            "both pages: {data:#}"
        );
        assert_eq!(data["events"][0]["ip"], "198.51.100.23", "{data:#}");
        assert_eq!(data["list_member"]["member"]["address"], EMAIL, "{data:#}");
        assert_eq!(data["unsubscribe"]["tags"][0], "*", "{data:#}");
        assert!(data["bounce"].is_null(), "{data:#}");
    }
}

/// One Mailgun event for the subject (the Events API shape, trimmed).
fn mg_event(kind: &str, n: u32) -> Value {
    json!({
        "event": kind,
        "id": format!("czsjqFATSlC3QtAK-C80n{n}"),
        "timestamp": 1_763_884_800.0 + f64::from(n),
        "recipient": EMAIL,
        "recipient-domain": "example.com",
        "ip": "198.51.100.23",
        "geolocation": {"country": "GB", "region": "England", "city": "London"},
        "client-info": {"client-type": "browser", "client-os": "Linux", "device-type": "desktop", "client-name": "Firefox", "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
        "message": {"headers": {"to": EMAIL, "message-id": format!("2026112011.{n}@{MG_DOMAIN}"), "from": format!("news@{MG_DOMAIN}"), "subject": "November news"}},
        "tags": [],
        "user-variables": {}
    })
}

/// One page of Mailgun events, linking the next page by an opaque token.
fn mg_events_page(base: &str, items: Vec<Value>, next: &str) -> Value {
    let url = |t: &str| format!("{base}/v3/{MG_DOMAIN}/events/{t}");
    json!({
        "items": items,
        "paging": {
            "next": url(next),
            "previous": url("WzIsIFtbInAiXV1d"),
            "first": url("WzMsIFtbImYiXV1d"),
            "last": url("WzMsIFtbImwiXV1d")
        }
    })
}

// ---------------------------------------------------------------- Zendesk

pub struct Zendesk {
    pub server: MockServer,
    pub state: Shared,
    pub connector: &'static str,
}

pub const ZD_AGENT: &str = "agent@acme.test";
pub const ZD_USER_ID: u64 = 35436;

async fn zendesk_fake(with_subject: bool) -> (MockServer, Shared) {
    let server = MockServer::start().await;
    let state: Shared = Arc::new(Mutex::new(State {
        present: with_subject,
        ..Default::default()
    }));
    let st = state.clone();
    let user = json!({"id": ZD_USER_ID, "name": "Jane Doe", "email": EMAIL, "role": "end-user", "active": true, "created_at": "2025-03-01T10:00:00Z"});
    mount(
        &server,
        |r| {
            basic(r).is_some_and(|(u, p)| u == format!("{ZD_AGENT}/token") && p == Zendesk::SECRET)
        },
        j(401, json!({"error": "Couldn't authenticate you"})),
        move |req| {
            let p = decoded_path(req);
            let mut s = lock(&st);
            let visible = s.present && !s.soft_deleted;
            let uid = format!("/api/v2/users/{ZD_USER_ID}");
            match (req.method.as_str(), p.as_str()) {
                ("GET", "/api/v2/users/me") => j(
                    200,
                    json!({"user": {"id": 1, "email": ZD_AGENT, "role": "admin"}}),
                ),
                ("GET", "/api/v2/users/search") => {
                    // Zendesk's search is not an exact match: a similar address comes back too.
                    let asked = query(req, "query").unwrap_or_default();
                    let mut users = vec![];
                    if DECOY.starts_with(asked.as_str()) {
                        users.push(json!({"id": 99001, "name": "Jane Doe (AU)", "email": DECOY, "role": "end-user", "active": true}));
                    }
                    if visible && asked == EMAIL {
                        users.push(user.clone());
                    }
                    j(
                        200,
                        json!({"users": users, "next_page": null, "previous_page": null, "count": users.len()}),
                    )
                }
                ("GET", "/api/v2/deleted_users") => {
                    // Soft-deleted users keep their email; permanently deleted ones lose it.
                    let mut list = vec![json!({"id": 9001, "name": "Someone Else", "email": "other@example.org", "active": false})];
                    if s.soft_deleted {
                        list.push(if s.purged {
                            json!({"id": ZD_USER_ID, "name": "Permanently Deleted User", "email": null, "phone": null, "active": false})
                        } else {
                            json!({"id": ZD_USER_ID, "name": "Jane Doe", "email": EMAIL, "active": false})
                        });
                    }
                    j(200, json!({"deleted_users": list, "next_page": null, "previous_page": null, "count": list.len()}))
                }
                ("GET", x) if x == uid && visible => j(200, json!({"user": user})),
                ("GET", x) if x == format!("{uid}/identities") && visible => j(
                    200,
                    json!({"identities": [{"id": 77, "user_id": ZD_USER_ID, "type": "email", "value": EMAIL, "verified": true, "primary": true}], "next_page": null, "count": 1}),
                ),
                ("GET", "/api/v2/search/export") if visible => j(
                    200,
                    json!({"results": [{"id": 4711, "subject": "Invoice copy please", "status": "closed", "requester_id": ZD_USER_ID, "result_type": "ticket"}], "meta": {"has_more": false, "after_cursor": null, "before_cursor": null}, "links": {"next": null, "prev": null}}),
                ),
                ("DELETE", x) if x == uid && visible => {
                    if s.restore_after_delete {
                        s.restore_after_delete = false; // an agent restores it once
                    } else {
                        s.soft_deleted = true;
                    }
                    let mut u = user.clone();
                    u["active"] = json!(false);
                    j(200, json!({"user": u}))
                }
                ("DELETE", x)
                    if x == format!("/api/v2/deleted_users/{ZD_USER_ID}")
                        && s.soft_deleted
                        && !s.purged =>
                {
                    s.purged = true;
                    j(
                        200,
                        json!({"deleted_user": {"id": ZD_USER_ID, "name": "Permanently Deleted User", "email": null, "phone": null}}),
                    )
                }
                _ => j(
                    404,
                    json!({"error": "RecordNotFound", "description": "Not found"}),
                ),
            }
        },
    )
    .await;
    (server, state)
}

impl Api for Zendesk {
    const LAGGING_SEARCH: bool = true;
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "zendesk";
    const PROCESSOR: &'static str = "helpdesk";
    const CATEGORY: &'static str = "ticketing";
    const ENDED: Ended = Ended::Grace;
    const SECRET_VAR: &'static str = "ZENDESK_API_TOKEN";
    const SECRET: &'static str = "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv";

    async fn start(with_subject: bool) -> Self {
        let (server, state) = zendesk_fake(with_subject).await;
        Zendesk {
            server,
            state,
            connector: "zendesk",
        }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"{}\"\nbase_url = \"{}\"\nsettings = {{ agent_email = \"{ZD_AGENT}\" }}\nsecrets = {{ api_token = \"{}\" }}\nsoft_delete_window = \"2s\"\n",
            Self::PROCESSOR,
            self.connector,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/api/v2/users/\d+$")
    }
    fn transient(&self) -> ResponseTemplate {
        text(503, "Service Unavailable")
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        // 429 + Retry-After in seconds; the body is often text/plain.
        Some(
            text(
                429,
                "Rate limit for users exceeded. Please wait and try again.",
            )
            .insert_header("retry-after", "1"),
        )
    }
    fn erased_as_expected(&self) -> bool {
        let s = lock(&self.state);
        s.soft_deleted
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(data["user"][0]["user"]["email"], EMAIL, "{data:#}");
        assert_eq!(data["identities"][0]["identities"][0]["value"], EMAIL);
        assert_eq!(data["tickets"][0]["results"][0]["id"], 4711);
        assert!(
            !data.to_string().contains(DECOY),
            "another person's data: {data:#}"
        );
    }
}

/// The same fake, through `zendesk_permanent`.
pub struct ZendeskPermanent(pub Zendesk);

impl Api for ZendeskPermanent {
    const LAGGING_SEARCH: bool = true;
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "zendesk_permanent";
    const PROCESSOR: &'static str = "helpdesk";
    const CATEGORY: &'static str = "ticketing";
    const ENDED: Ended = Ended::Erased;
    const SECRET_VAR: &'static str = Zendesk::SECRET_VAR;
    const SECRET: &'static str = Zendesk::SECRET;

    async fn start(with_subject: bool) -> Self {
        let (server, state) = zendesk_fake(with_subject).await;
        ZendeskPermanent(Zendesk {
            server,
            state,
            connector: "zendesk_permanent",
        })
    }
    fn server(&self) -> &MockServer {
        &self.0.server
    }
    fn processor_toml(&self) -> String {
        self.0.processor_toml()
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/api/v2/deleted_users/\d+$")
    }
    fn transient(&self) -> ResponseTemplate {
        self.0.transient()
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        // 700 permanent deletions per 10 minutes, then 429 + Retry-After.
        self.0.throttled()
    }
    fn erased_as_expected(&self) -> bool {
        lock(&self.0.state).purged
    }
    fn check_export(&self, data: &Value) {
        self.0.check_export(data)
    }
}

// ---------------------------------------------------------------- Zoho Desk

pub struct ZohoDesk {
    pub server: MockServer,
    pub state: Shared,
}

pub const ZOHO_ORG: &str = "60001280952";
pub const ZOHO_CONTACT: &str = "1892000000042032";

impl Api for ZohoDesk {
    const CONNECTOR: &'static str = "zoho_desk";
    const PROCESSOR: &'static str = "support-desk";
    const CATEGORY: &'static str = "ticketing";
    const ENDED: Ended = Ended::Grace;
    const SECRET_VAR: &'static str = "ZOHO_OAUTH_TOKEN";
    const SECRET: &'static str = "1000.2370ff****.9aa3f5a1";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| {
                header(r, "authorization").as_deref()
                    == Some(&format!("Zoho-oauthtoken {}", Self::SECRET))
                    && header(r, "orgid").as_deref() == Some(ZOHO_ORG)
            },
            j(
                401,
                json!({"errorCode": "INVALID_OAUTH", "message": "The OAuth Token you provided is invalid."}),
            ),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let visible = s.present && !s.soft_deleted;
                match (req.method.as_str(), p.as_str()) {
                    ("GET", x) if x == format!("/api/v1/organizations/{ZOHO_ORG}") => j(
                        200,
                        json!({"id": ZOHO_ORG, "companyName": "Acme", "edition": "PROFESSIONAL"}),
                    ),
                    ("GET", "/api/v1/contacts/search") => {
                        let asked = query(req, "email").unwrap_or_default();
                        // A partial match also comes back.
                        let mut data = vec![];
                        if DECOY.starts_with(asked.as_str()) {
                            data.push(json!({"id": "1892000000099999", "email": DECOY, "firstName": "Jane", "lastName": "Doe (AU)"}));
                        }
                        if visible && asked == EMAIL {
                            data.push(json!({"id": ZOHO_CONTACT, "email": EMAIL, "firstName": "Jane", "lastName": "Doe"}));
                        }
                        if !data.is_empty() {
                            j(200, json!({"data": data, "count": data.len()}))
                        } else {
                            // Zoho answers an empty search with 204 and no body.
                            ResponseTemplate::new(204)
                        }
                    }
                    ("GET", x) if x == format!("/api/v1/contacts/{ZOHO_CONTACT}") && visible => j(
                        200,
                        json!({"id": ZOHO_CONTACT, "email": EMAIL, "firstName": "Jane", "lastName": "Doe", "phone": PHONE, "accountId": "1892000000042001"}),
                    ),
                    ("GET", x) if x == format!("/api/v1/contacts/{ZOHO_CONTACT}/tickets") && visible => j(
                        200,
                        json!({"data": [{"id": "1892000000093071", "ticketNumber": "101", "subject": "Login problem", "status": "Closed"}]}),
                    ),
                    ("POST", "/api/v1/contacts/moveToTrash") => {
                        let ids = body(req)["contactIds"].clone();
                        if visible && ids == json!([ZOHO_CONTACT]) {
                            s.soft_deleted = true;
                            ResponseTemplate::new(204)
                        } else {
                            j(
                                422,
                                json!({"errorCode": "INVALID_DATA", "message": "The data is invalid due to validation restrictions"}),
                            )
                        }
                    }
                    _ => j(
                        404,
                        json!({"errorCode": "URL_NOT_FOUND", "message": "The URL you requested could not be found"}),
                    ),
                }
            },
        )
        .await;
        ZohoDesk { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"zoho_desk\"\nbase_url = \"{}\"\nsettings = {{ org_id = \"{ZOHO_ORG}\" }}\nsecrets = {{ oauth_token = \"{}\" }}\nsoft_delete_window = \"2s\"\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("POST", r"^/api/v1/contacts/moveToTrash$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(
            500,
            json!({"errorCode": "INTERNAL_SERVER_ERROR", "message": "An internal server error occurred while performing this operation."}),
        )
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(j(
            429,
            json!({"errorCode": "TOO_MANY_REQUESTS", "message": "You have exceeded the allowed number of API requests."}),
        ))
    }
    fn erased_as_expected(&self) -> bool {
        lock(&self.state).soft_deleted
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(data["contact"][0]["email"], EMAIL, "{data:#}");
        assert_eq!(data["tickets"][0]["data"][0]["ticketNumber"], "101");
        assert!(
            !data.to_string().contains(DECOY),
            "another person's data: {data:#}"
        );
    }
}

// ---------------------------------------------------------------- Xero

pub struct Xero {
    pub server: MockServer,
    pub state: Shared,
}

pub const XERO_TENANT: &str = "70784a63-d24b-46a9-a4db-0e70a274b056";
pub const XERO_CONTACT: &str = "bd2270c3-8706-4c11-9cfb-000b551c3f51";

impl Api for Xero {
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "xero";
    const PROCESSOR: &'static str = "books";
    const CATEGORY: &'static str = "accounting";
    const ENDED: Ended = Ended::Retained("legal obligation");
    const SECRET_VAR: &'static str = "XERO_ACCESS_TOKEN";
    const SECRET: &'static str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjFDQUY4";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        let envelope = |k: &str, v: Value| {
            let mut o = json!({"Id": "5f1f5b3a-1c1f-4c1e-9d7e-2b0f1c8a9b11", "Status": "OK", "ProviderName": "lethe", "DateTimeUTC": "/Date(1763884800000)/"});
            o[k] = v;
            o
        };
        mount(
            &server,
            |r| {
                header(r, "authorization").as_deref() == Some(&format!("Bearer {}", Self::SECRET))
                    && header(r, "xero-tenant-id").as_deref() == Some(XERO_TENANT)
            },
            j(
                401,
                json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful", "Instance": "3b4a6e5c-8c1a-4f0e-a9b2-1d2c3e4f5a6b"}),
            ),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let contact = |status: &str| json!({"ContactID": XERO_CONTACT, "ContactStatus": status, "Name": "Jane Doe", "EmailAddress": EMAIL});
                match (req.method.as_str(), p.as_str()) {
                    ("GET", "/Organisation") => j(200, envelope("Organisations", json!([{"Name": "Acme Ltd", "CountryCode": "GB"}]))),
                    ("GET", "/Contacts") => {
                        let term = query(req, "searchTerm").unwrap_or_default().to_lowercase();
                        let archived_ok = query(req, "includeArchived").as_deref() == Some("true");
                        let hit = term == EMAIL && (s.present || (s.soft_deleted && archived_ok));
                        let status = if s.present { "ACTIVE" } else { "ARCHIVED" };
                        // searchTerm is a contains-search over names and addresses.
                        let mut list = vec![json!({"ContactID": "0f8a2c1e-1111-4c11-9cfb-decoydecoy01", "ContactStatus": "ACTIVE", "Name": "Jane Doe Pty", "EmailAddress": DECOY})];
                        if hit {
                            list.push(contact(status));
                        }
                        j(200, envelope("Contacts", json!(list)))
                    }
                    ("GET", x) if x == format!("/Contacts/{XERO_CONTACT}") && (s.present || s.soft_deleted) => j(
                        200,
                        envelope("Contacts", json!([contact(if s.present { "ACTIVE" } else { "ARCHIVED" })])),
                    ),
                    ("GET", "/Invoices") if query(req, "ContactIDs").as_deref() == Some(XERO_CONTACT) => j(
                        200,
                        envelope("Invoices", json!([{"InvoiceID": "243216c5-369e-4056-ac67-05388f86dc81", "InvoiceNumber": "INV-0042", "Total": 120.0, "Status": "PAID"}])),
                    ),
                    ("POST", x) if x == format!("/Contacts/{XERO_CONTACT}") && s.present => {
                        let b = body(req);
                        if b["Contacts"][0]["ContactStatus"] != "ARCHIVED" {
                            return j(400, json!({"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred"}));
                        }
                        if let Some(k) = header(req, "idempotency-key") {
                            s.idempotency_keys.push(k);
                        }
                        s.present = false;
                        s.soft_deleted = true; // archived: kept, restorable
                        j(200, envelope("Contacts", json!([contact("ARCHIVED")])))
                    }
                    _ => j(404, json!({"Title": "Not Found", "Status": 404, "Detail": "The resource you're looking for cannot be found"})),
                }
            },
        )
        .await;
        Xero { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"xero\"\nbase_url = \"{}\"\nsettings = {{ tenant_id = \"{XERO_TENANT}\" }}\nsecrets = {{ access_token = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("POST", r"^/Contacts/[0-9a-f-]+$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(
            503,
            json!({"Title": "Service Unavailable", "Status": 503, "Detail": "The Xero API is temporarily unavailable"}),
        )
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .insert_header("x-rate-limit-problem", "minute")
                .insert_header("x-minlimit-remaining", "0"),
        )
    }
    fn erased_as_expected(&self) -> bool {
        let s = lock(&self.state);
        // Archived, not deleted, and the archive call carried an Idempotency-Key.
        !s.present && s.soft_deleted && !s.idempotency_keys.is_empty()
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(
            data["contact"][0]["Contacts"][0]["EmailAddress"], EMAIL,
            "{data:#}"
        );
        assert_eq!(
            data["invoices"][0]["Invoices"][0]["InvoiceNumber"],
            "INV-0042"
        );
        assert!(
            !data.to_string().contains(DECOY),
            "another person's data: {data:#}"
        );
    }
}

// ---------------------------------------------------------------- Stripe

pub struct Stripe {
    pub server: MockServer,
    pub state: Shared,
}

pub const STRIPE_CUS: &str = "cus_NffrFeUfNV2Hib";
pub const STRIPE_CUS2: &str = "cus_Q2wB7nTg5YxZk1";

impl Api for Stripe {
    const LAGGING_SEARCH: bool = true;
    const CONNECTOR: &'static str = "stripe";
    const PROCESSOR: &'static str = "payments";
    const CATEGORY: &'static str = "accounting";
    const ENDED: Ended = Ended::Erased;
    const SECRET_VAR: &'static str = "STRIPE_SECRET_KEY";
    const SECRET: &'static str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        // Two customer records with the subject's email (a re-signup): both are the subject's.
        let customers = if with_subject {
            vec![
                json!({"id": STRIPE_CUS, "object": "customer", "email": EMAIL, "name": "Jane Doe", "created": 1680893993, "livemode": false}),
                json!({"id": STRIPE_CUS2, "object": "customer", "email": EMAIL, "name": "Jane Doe", "created": 1712430000, "livemode": false}),
            ]
        } else {
            vec![]
        };
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            messages: customers,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| basic(r).is_some_and(|(u, p)| u == Self::SECRET && p.is_empty()),
            j(
                401,
                json!({"error": {"message": "Invalid API Key provided: sk_test_****oops", "type": "invalid_request_error"}}),
            ),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let list = |data: Value, url: &str| json!({"object": "list", "data": data, "has_more": false, "url": url});
                let held = |s: &State, id: &str| s.messages.iter().any(|c| c["id"] == id);
                match (req.method.as_str(), p.as_str()) {
                    ("GET", "/v1/balance") => j(200, json!({"object": "balance", "available": [{"amount": 0, "currency": "gbp"}], "livemode": false})),
                    ("GET", "/v1/customers") => {
                        // Exact, case-sensitive email filter; deleted customers are not listed.
                        let email = query(req, "email");
                        let data: Vec<Value> = s.messages.iter().filter(|c| email.as_deref() == c["email"].as_str()).cloned().collect();
                        j(200, list(json!(data), "/v1/customers"))
                    }
                    ("GET", "/v1/customers/search") => {
                        // Search query language: `email:'…'` is an exact match that
                        // ignores case; `\'` escapes a quote. The index lags writes.
                        let q = query(req, "query").unwrap_or_default();
                        let Some(asked) = q.strip_prefix("email:'").and_then(|r| r.strip_suffix('\'')) else {
                            return j(400, json!({"error": {"type": "invalid_request_error", "message": format!("Invalid query: {q}")}}));
                        };
                        let asked = asked.replace("\\'", "'").to_lowercase();
                        let data: Vec<Value> = s
                            .messages
                            .iter()
                            .filter(|c| c["email"].as_str().map(str::to_lowercase).as_deref() == Some(asked.as_str()))
                            .filter(|c| !s.not_indexed.iter().any(|id| c["id"] == id.as_str()))
                            .cloned()
                            .collect();
                        j(200, json!({"object": "search_result", "data": data, "has_more": false, "next_page": null, "url": "/v1/customers/search"}))
                    }
                    ("GET", "/v1/invoices") => {
                        let cus = query(req, "customer").unwrap_or_default();
                        let data = if cus == STRIPE_CUS && held(&s, &cus) {
                            json!([{"id": "in_1MtHbELkdIwHu7ixl4OzzPMv", "object": "invoice", "customer": STRIPE_CUS, "amount_due": 1200}])
                        } else {
                            json!([])
                        };
                        j(200, list(data, "/v1/invoices"))
                    }
                    ("GET", "/v1/charges") => j(200, list(json!([]), "/v1/charges")),
                    ("DELETE", x) if x.starts_with("/v1/customers/") => {
                        let id = x.trim_start_matches("/v1/customers/").to_string();
                        if !held(&s, &id) {
                            return j(404, json!({"error": {"code": "resource_missing", "doc_url": "https://stripe.com/docs/error-codes/resource-missing", "message": format!("No such customer: '{id}'"), "param": "id", "type": "invalid_request_error"}}));
                        }
                        // A key reused for a different request is refused (Stripe keeps the first).
                        if let Some(k) = header(req, "idempotency-key") {
                            let prefix = format!("{k}|");
                            if s.idempotency_keys.iter().any(|seen| seen.starts_with(&prefix) && *seen != format!("{k}|{x}")) {
                                return j(400, json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}}));
                            }
                            s.idempotency_keys.push(format!("{k}|{x}"));
                        }
                        s.messages.retain(|c| c["id"] != id.as_str());
                        s.present = !s.messages.is_empty();
                        j(200, json!({"id": id, "object": "customer", "deleted": true}))
                    }
                    _ => j(404, json!({"error": {"type": "invalid_request_error", "message": "Unrecognized request URL"}})),
                }
            },
        )
        .await;
        Stripe { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"stripe\"\nbase_url = \"{}\"\nsecrets = {{ secret_key = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/v1/customers/cus_\w+$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(
            500,
            json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}),
        )
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(j(
            429,
            json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests hit the API too quickly."}}),
        ))
    }
    fn erased_as_expected(&self) -> bool {
        let s = lock(&self.state);
        // Both customer records deleted, each with its own Idempotency-Key.
        s.messages.is_empty() && s.idempotency_keys.len() >= 2
    }
    fn check_export(&self, data: &Value) {
        // Each customer once, though the list filter and the search both found it.
        assert_eq!(data["customers"][0]["id"], STRIPE_CUS, "{data:#}");
        assert_eq!(data["customers"][1]["id"], STRIPE_CUS2, "{data:#}");
        assert_eq!(
            data["customers"].as_array().map(Vec::len),
            Some(2),
            "{data:#}"
        );
        assert_eq!(data["invoices"][0]["data"][0]["amount_due"], 1200);
    }
}

// ---------------------------------------------------------------- WHM

pub struct Whm {
    pub server: MockServer,
    pub state: Shared,
}

/// The WHM users the fake accepts: root, and a reseller whose token can only
/// act on the accounts it owns.
pub const WHM_ROOT: &str = "root";
pub const WHM_RESELLER: &str = "reseller1";

impl Api for Whm {
    const CONNECTOR: &'static str = "whm";
    const PROCESSOR: &'static str = "hosting";
    const CATEGORY: &'static str = "hosting";
    const ENDED: Ended = Ended::Erased;
    const SECRET_VAR: &'static str = "WHM_API_TOKEN";
    const SECRET: &'static str = "U7HMR63FHY282DQZ4H5BIH16JLYSO01M";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| {
                [WHM_ROOT, WHM_RESELLER].iter().any(|u| {
                    header(r, "authorization").as_deref()
                        == Some(&format!("whm {u}:{}", Self::SECRET))
                })
            },
            text(403, "Access denied"),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let reseller = header(req, "authorization")
                    .is_some_and(|a| a.starts_with(&format!("whm {WHM_RESELLER}:")));
                let meta = |cmd: &str, result: u8, reason: &str| json!({"command": cmd, "reason": reason, "result": result, "version": 1});
                if query(req, "api.version").as_deref() != Some("1") {
                    return j(200, json!({"cpanelresult": {"error": "Unknown app (API version) requested"}}));
                }
                match (req.method.as_str(), p.as_str()) {
                    ("GET", "/json-api/version") => j(200, json!({"metadata": meta("version", 1, "OK"), "data": {"version": "11.118.0.12"}})),
                    ("GET", "/json-api/accountsummary") => {
                        if s.present && query(req, "user").as_deref() == Some(CUSTOMER) {
                            j(200, json!({"metadata": meta("accountsummary", 1, "OK"), "data": {"acct": [{"user": CUSTOMER, "domain": "janedoe.example", "email": EMAIL, "plan": "basic", "diskused": "120M", "startdate": "25 Mar 01 10:00"}]}}))
                        } else {
                            j(200, json!({"metadata": meta("accountsummary", 0, "Account does not exist.")}))
                        }
                    }
                    ("GET", "/json-api/removeacct") => {
                        if s.present && query(req, "username").as_deref() == Some(CUSTOMER) {
                            s.present = false;
                            j(200, json!({"metadata": {"command": "removeacct", "reason": "jdoe42 account removed", "result": 1, "version": 1, "output": {"raw": "Running pre removal script (/usr/local/cpanel/scripts/prekillacct)......Done\nRemoving Crontab...Done\nRemoving User...Done\nAccount Removal Complete!!!\n"}}}))
                        } else if reseller {
                            // A reseller cannot tell a missing account from one it
                            // does not own: WHM answers the same refusal.
                            j(200, json!({"metadata": meta("removeacct", 0, &format!("You do not have access to an account named \u{201c}{}\u{201d}.", query(req, "username").unwrap_or_default()))}))
                        } else {
                            j(200, json!({"metadata": meta("removeacct", 0, &format!("Sorry, a user named \u{201c}{}\u{201d} does not exist.", query(req, "username").unwrap_or_default()))}))
                        }
                    }
                    _ => text(404, "Not Found"),
                }
            },
        )
        .await;
        Whm { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"whm\"\nbase_url = \"{}\"\nsettings = {{ whm_user = \"root\", account = \"{{{{ subject.customer_id }}}}\" }}\nsecrets = {{ api_token = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("GET", r"^/json-api/removeacct$")
    }
    fn transient(&self) -> ResponseTemplate {
        // cpsrvd restarting behind the proxy.
        text(503, "Service Unavailable")
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        None // WHM documents no throttling signal.
    }
    fn erased_as_expected(&self) -> bool {
        !lock(&self.state).present
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(
            data["account"]["data"]["acct"][0]["email"], EMAIL,
            "{data:#}"
        );
    }
}

// ---------------------------------------------------------------- Dropbox

pub struct Dropbox {
    pub server: MockServer,
    pub state: Shared,
}

pub const DBX_PATH: &str = "/customers/jdoe42";

impl Api for Dropbox {
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "dropbox";
    const PROCESSOR: &'static str = "files";
    const CATEGORY: &'static str = "object_storage";
    const ENDED: Ended = Ended::Grace;
    const SECRET_VAR: &'static str = "DROPBOX_TOKEN";
    const SECRET: &'static str = "sl.BzZaFx4g0uRhJ7cVd9bT";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| header(r, "authorization").as_deref() == Some(&format!("Bearer {}", Self::SECRET)),
            j(401, json!({"error_summary": "invalid_access_token/..", "error": {".tag": "invalid_access_token"}})),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let b = body(req);
                let ours = b["path"] == DBX_PATH;
                let visible = s.present && !s.soft_deleted && !s.purged;
                let folder = json!({".tag": "folder", "name": "jdoe42", "path_lower": DBX_PATH, "path_display": DBX_PATH, "id": "id:a4ayc_80_OEAAAAAAAAAXw"});
                let not_found = |route: &str| j(409, json!({"error_summary": format!("{route}/not_found/.."), "error": {".tag": route, route: {".tag": "not_found"}}}));
                match (req.method.as_str(), p.as_str()) {
                    ("POST", "/2/users/get_current_account") => j(200, json!({"account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc", "email": "admin@acme.test", "account_type": {".tag": "business"}})),
                    ("POST", "/2/files/get_metadata") if ours && visible => j(200, folder.clone()),
                    ("POST", "/2/files/get_metadata") => not_found("path"),
                    ("POST", "/2/files/list_folder") if ours && visible => j(200, json!({"entries": [{".tag": "file", "name": "contract.pdf", "path_display": "/customers/jdoe42/contract.pdf", "size": 48213}], "cursor": "ZtkX9_EHj3x7PMkVuFIhwKYXEpwpLwyxp9vMKomUhllil9q7eWiAu", "has_more": false})),
                    ("POST", "/2/files/delete_v2") if ours && visible => {
                        if s.restore_after_delete {
                            s.restore_after_delete = false;
                        } else {
                            s.soft_deleted = true;
                        }
                        j(200, json!({"metadata": folder}))
                    }
                    ("POST", "/2/files/delete_v2") => not_found("path_lookup"),
                    ("POST", "/2/files/permanently_delete") if ours && s.present && !s.purged => {
                        s.purged = true;
                        // A route without a result answers JSON `null` (application/json).
                        ResponseTemplate::new(200).set_body_raw("null", "application/json")
                    }
                    ("POST", "/2/files/permanently_delete") => not_found("path_lookup"),
                    _ => text(404, "Unknown API function"),
                }
            },
        )
        .await;
        Dropbox { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"dropbox\"\nbase_url = \"{}\"\nsettings = {{ path = \"/customers/{{{{ subject.customer_id }}}}\" }}\nsecrets = {{ access_token = \"{}\" }}\nsoft_delete_window = \"2s\"\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("POST", r"^/2/files/delete_v2$")
    }
    fn transient(&self) -> ResponseTemplate {
        text(503, "Service Unavailable")
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(
            j(429, json!({"error_summary": "too_many_write_operations/..", "error": {"reason": {".tag": "too_many_write_operations"}, "retry_after": 1}}))
                .insert_header("retry-after", "1"),
        )
    }
    fn erased_as_expected(&self) -> bool {
        lock(&self.state).soft_deleted
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(data["metadata"]["path_display"], DBX_PATH, "{data:#}");
        assert_eq!(data["entries"]["entries"][0]["name"], "contract.pdf");
    }
}

// ---------------------------------------------------------------- OneDrive

pub struct OneDrive {
    pub server: MockServer,
    pub state: Shared,
}

pub const OD_DRIVE: &str = "b!t18F8ybsHUq1z3LTz8xvZqP8zaSWjkFNhsME-Fepo75dTf9vQKfeRblBZjoSQrd7";
pub const OD_ITEM: &str = "01BYE5RZ6QN3ZWBTUFOFD3GSPGOHDJD36K";

impl Api for OneDrive {
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "onedrive";
    const PROCESSOR: &'static str = "sharepoint";
    const CATEGORY: &'static str = "object_storage";
    const ENDED: Ended = Ended::Grace;
    const SECRET_VAR: &'static str = "GRAPH_TOKEN";
    const SECRET: &'static str = "eyJ0eXAiOiJKV1QiLCJub25jZSI6";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| header(r, "authorization").as_deref() == Some(&format!("Bearer {}", Self::SECRET)),
            j(401, json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure. Invalid audience."}})),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let visible = s.present && !s.soft_deleted && !s.purged;
                let item = json!({"id": OD_ITEM, "name": "jdoe42", "folder": {"childCount": 1}, "parentReference": {"driveId": OD_DRIVE, "path": "/drive/root:/customers"}});
                let by_path = format!("/drives/{OD_DRIVE}/root:/customers/{CUSTOMER}");
                let item_path = format!("/drives/{OD_DRIVE}/items/{OD_ITEM}");
                match (req.method.as_str(), p.as_str()) {
                    ("GET", x) if x == format!("/drives/{OD_DRIVE}") => j(200, json!({"id": OD_DRIVE, "driveType": "business", "quota": {"used": 1024}})),
                    ("GET", x) if x == by_path && visible => j(200, item),
                    ("GET", x) if x == format!("{item_path}/children") && visible => j(200, json!({"value": [{"id": "01BYE5RZ5MYLM2SMX75ZBIPQZIHT6OAYPB", "name": "passport-scan.jpg", "size": 210113}]})),
                    ("DELETE", x) if x == item_path && visible => {
                        if s.restore_after_delete {
                            s.restore_after_delete = false;
                        } else {
                            s.soft_deleted = true;
                        }
                        ResponseTemplate::new(204)
                    }
                    ("POST", x) if x == format!("{item_path}/permanentDelete") && visible => {
                        s.purged = true;
                        ResponseTemplate::new(204)
                    }
                    _ => j(404, json!({"error": {"code": "itemNotFound", "message": "The resource could not be found."}})),
                }
            },
        )
        .await;
        OneDrive { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"onedrive\"\nbase_url = \"{}\"\nsettings = {{ drive_id = \"{OD_DRIVE}\", path = \"customers/{{{{ subject.customer_id }}}}\" }}\nsecrets = {{ access_token = \"{}\" }}\nsoft_delete_window = \"2s\"\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/drives/[^/]+/items/[^/]+$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(
            503,
            json!({"error": {"code": "serviceNotAvailable", "message": "The service is not available. Try the request again after a delay."}}),
        )
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(
            j(429, json!({"error": {"code": "activityLimitReached", "message": "The app or user has been throttled."}}))
                .insert_header("retry-after", "1"),
        )
    }
    fn erased_as_expected(&self) -> bool {
        lock(&self.state).soft_deleted
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(data["item"]["id"], OD_ITEM, "{data:#}");
        assert_eq!(data["children"]["value"][0]["name"], "passport-scan.jpg");
    }
}

// ---------------------------------------------------------------- Twilio

pub struct Twilio {
    pub server: MockServer,
    pub state: Shared,
}

pub const TW_SID: &str = "ACa1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6";
pub const TW_NUMBER: &str = "+15017122661";

fn tw_message(sid: &str, to: &str, from: &str, body: &str) -> Value {
    json!({"sid": sid, "account_sid": TW_SID, "to": to, "from": from, "body": body, "status": "delivered", "direction": if from == TW_NUMBER { "outbound-api" } else { "inbound" }, "num_media": "0", "date_sent": "Thu, 24 Aug 2026 05:01:45 +0000", "uri": format!("/2010-04-01/Accounts/{TW_SID}/Messages/{sid}.json")})
}

impl Api for Twilio {
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "twilio";
    const PROCESSOR: &'static str = "sms";
    const CATEGORY: &'static str = "sms";
    const ENDED: Ended = Ended::Erased;
    const SECRET_VAR: &'static str = "TWILIO_AUTH_TOKEN";
    const SECRET: &'static str = "f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let mut messages = vec![tw_message(
            "SM0000000000000000000000000000other",
            "+447700900123",
            TW_NUMBER,
            "Your code is 1234",
        )];
        if with_subject {
            messages.push(tw_message(
                "SM1f1e1d1c1b1a19181716151413121110",
                PHONE,
                TW_NUMBER,
                "Your order has shipped",
            ));
            messages.push(tw_message(
                "SM2f2e2d2c2b2a29282726252423222120",
                PHONE,
                TW_NUMBER,
                "Your parcel arrives today",
            ));
            messages.push(tw_message(
                "SM3f3e3d3c3b3a39383736353433323130",
                TW_NUMBER,
                PHONE,
                "STOP",
            ));
        }
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            messages,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| basic(r).is_some_and(|(u, p)| u == TW_SID && p == Self::SECRET),
            j(401, json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})),
            move |req| {
                let p = decoded_path(req);
                let mut s = lock(&st);
                let base = format!("/2010-04-01/Accounts/{TW_SID}");
                match (req.method.as_str(), p.as_str()) {
                    ("GET", x) if x == format!("{base}.json") => j(200, json!({"sid": TW_SID, "friendly_name": "Acme", "status": "active", "type": "Full"})),
                    ("GET", x) if x == format!("{base}/Messages.json") => {
                        let to = query(req, "To");
                        let from = query(req, "From");
                        let size: usize = query(req, "PageSize").and_then(|p| p.parse().ok()).unwrap_or(50).clamp(1, 1000);
                        let page_no: usize = query(req, "Page").and_then(|p| p.parse().ok()).unwrap_or(0);
                        // PageToken "PA<sid>": the page starts after that message.
                        let after = query(req, "PageToken").and_then(|t| t.strip_prefix("PA").map(str::to_string));
                        let all: Vec<Value> = s
                            .messages
                            .iter()
                            .filter(|m| to.as_ref().is_none_or(|t| m["to"] == *t) && from.as_ref().is_none_or(|f| m["from"] == *f))
                            .filter(|m| after.as_ref().is_none_or(|a| m["sid"].as_str().is_some_and(|sid| sid > a.as_str())))
                            .cloned()
                            .collect();
                        let page: Vec<Value> = all.iter().take(size).cloned().collect();
                        let filter = match (&to, &from) {
                            (Some(t), _) => format!("To={}", t.replace('+', "%2B")),
                            (_, Some(f)) => format!("From={}", f.replace('+', "%2B")),
                            _ => String::new(),
                        };
                        let next = if all.len() > size {
                            let last = page.last().and_then(|m| m["sid"].as_str()).unwrap_or_default();
                            json!(format!("{base}/Messages.json?{filter}&PageSize={size}&Page={}&PageToken=PA{last}", page_no + 1))
                        } else {
                            Value::Null
                        };
                        j(200, json!({"messages": page, "end": page.len().saturating_sub(1), "first_page_uri": format!("{base}/Messages.json?{filter}&PageSize={size}&Page=0"), "next_page_uri": next, "page": page_no, "page_size": size, "previous_page_uri": null, "start": 0, "uri": format!("{base}/Messages.json?{filter}&PageSize={size}&Page={page_no}")}))
                    }
                    ("DELETE", x) if x.starts_with(&format!("{base}/Messages/")) && x.ends_with(".json") => {
                        let sid = &x[base.len() + "/Messages/".len()..x.len() - ".json".len()];
                        let before = s.messages.len();
                        s.messages.retain(|m| m["sid"] != sid);
                        if s.messages.len() < before {
                            ResponseTemplate::new(204)
                        } else {
                            j(404, json!({"code": 20404, "message": format!("The requested resource {x} was not found"), "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}))
                        }
                    }
                    _ => j(404, json!({"code": 20404, "message": "The requested resource was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})),
                }
            },
        )
        .await;
        Twilio { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"twilio\"\nbase_url = \"{}\"\nsettings = {{ account_sid = \"{TW_SID}\" }}\nsecrets = {{ auth_token = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("DELETE", r"^/2010-04-01/Accounts/\w+/Messages/\w+\.json$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(
            500,
            json!({"code": 20500, "message": "An internal server error has occurred", "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500}),
        )
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(
            j(429, json!({"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}))
                .insert_header("retry-after", "1"),
        )
    }
    fn erased_as_expected(&self) -> bool {
        let s = lock(&self.state);
        // Every message to or from the subject is gone; the other customer's is not.
        s.messages.len() == 1 && s.messages[0]["to"] != PHONE
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(
            data["to_subject"][0]["messages"].as_array().map(Vec::len),
            Some(2),
            "{data:#}"
        );
        assert_eq!(
            data["from_subject"][0]["messages"][0]["body"], "STOP",
            "{data:#}"
        );
    }
}

/// The 20009 answer: a message that is not finished cannot be deleted yet.
pub fn twilio_20009() -> ResponseTemplate {
    j(
        400,
        json!({"code": 20009, "message": "Cannot delete message because it is not yet finished", "more_info": "https://www.twilio.com/docs/errors/20009", "status": 400}),
    )
}

// ---------------------------------------------------------------- Webhook

pub struct Webhook {
    pub server: MockServer,
    pub state: Shared,
}

impl Api for Webhook {
    const RETRY_AFTER: bool = true;
    const CONNECTOR: &'static str = "webhook";
    const PROCESSOR: &'static str = "crm";
    const CATEGORY: &'static str = "other";
    const ENDED: Ended = Ended::Erased;
    const SECRET_VAR: &'static str = "CRM_WEBHOOK_SECRET";
    const SECRET: &'static str = "whsec_9f8e7d6c5b4a";

    async fn start(with_subject: bool) -> Self {
        let server = MockServer::start().await;
        let state: Shared = Arc::new(Mutex::new(State {
            present: with_subject,
            ..Default::default()
        }));
        let st = state.clone();
        mount(
            &server,
            |r| {
                // The in-house endpoint checks the signature over the exact body.
                header(r, "x-lethe-signature").as_deref()
                    == Some(&format!("sha256={}", lethe::connectors::http::hmac_hex(Self::SECRET, &r.body)))
            },
            j(401, json!({"error": "bad signature"})),
            move |req| {
                let full = decoded_path(req);
                let p = full.strip_prefix("/lethe").unwrap_or(&full).to_string();
                let mut s = lock(&st);
                let b = body(req);
                let ours = b["subject"]["email"] == EMAIL && b["action"] == p.trim_start_matches('/');
                match (req.method.as_str(), p.as_str()) {
                    ("POST", "/check") => j(200, json!({"ok": true})),
                    ("POST", "/lookup") | ("POST", "/export") if ours && s.present => j(200, json!({"reference": "crm-7781", "customer": {"email": EMAIL, "name": "Jane Doe"}, "orders": [{"id": 9001, "total": 49.5}]})),
                    ("POST", "/erase") if ours && s.present && b["idempotency_key"].as_str().is_some_and(|k| !k.is_empty()) => {
                        s.present = false;
                        j(200, json!({"reference": "crm-7781", "deleted": true}))
                    }
                    _ => j(404, json!({"error": "no such customer"})),
                }
            },
        )
        .await;
        Webhook { server, state }
    }
    fn server(&self) -> &MockServer {
        &self.server
    }
    fn processor_toml(&self) -> String {
        format!(
            "[[processor]]\nname = \"{}\"\nconnector = \"webhook\"\nbase_url = \"{}/lethe\"\nsecrets = {{ signing_secret = \"{}\" }}\n",
            Self::PROCESSOR,
            self.server.uri(),
            Self::SECRET_VAR
        )
    }
    fn erase_call(&self) -> (&'static str, &'static str) {
        ("POST", r"^/lethe/erase$")
    }
    fn transient(&self) -> ResponseTemplate {
        j(502, json!({"error": "upstream database unavailable"}))
    }
    fn throttled(&self) -> Option<ResponseTemplate> {
        Some(j(429, json!({"error": "slow down"})).insert_header("retry-after", "1"))
    }
    fn erased_as_expected(&self) -> bool {
        !lock(&self.state).present
    }
    fn check_export(&self, data: &Value) {
        assert_eq!(data["data"]["customer"]["email"], EMAIL, "{data:#}");
        assert_eq!(data["data"]["orders"][0]["id"], 9001);
    }
}

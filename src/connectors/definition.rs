//! Connector definitions: the TOML files in `connectors/`, parsed and validated.
//!
//! A definition is data a compliance reviewer can read: which calls erase a
//! subject, which status codes mean what. Everything that can be checked without
//! calling the processor is checked here, at load: templates compile, JSON
//! Pointers are well-formed, status codes are real, required keys are present.
//! An error names the file, the key and the reason.

use crate::domain::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The built-in definitions, embedded so the binary works from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "mailchimp.toml",
        include_str!("../../connectors/mailchimp.toml"),
    ),
    ("s3.toml", include_str!("../../connectors/s3.toml")),
    ("manual.toml", include_str!("../../connectors/manual.toml")),
    (
        "mailgun.toml",
        include_str!("../../connectors/mailgun.toml"),
    ),
    (
        "zendesk.toml",
        include_str!("../../connectors/zendesk.toml"),
    ),
    (
        "zendesk_permanent.toml",
        include_str!("../../connectors/zendesk_permanent.toml"),
    ),
    (
        "zoho_desk.toml",
        include_str!("../../connectors/zoho_desk.toml"),
    ),
    ("xero.toml", include_str!("../../connectors/xero.toml")),
    ("stripe.toml", include_str!("../../connectors/stripe.toml")),
    ("whm.toml", include_str!("../../connectors/whm.toml")),
    (
        "dropbox.toml",
        include_str!("../../connectors/dropbox.toml"),
    ),
    (
        "onedrive.toml",
        include_str!("../../connectors/onedrive.toml"),
    ),
    ("twilio.toml", include_str!("../../connectors/twilio.toml")),
    (
        "webhook.toml",
        include_str!("../../connectors/webhook.toml"),
    ),
];

pub use crate::domain::Category;

/// One connector definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDef {
    /// The name processors refer to (`connector = "mailchimp"`).
    pub name: String,
    /// The file it was read from (`connectors/x.toml (built in)` for the
    /// built-in ones), for messages.
    #[serde(skip)]
    pub file: String,
    /// The processor category.
    pub category: Category,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Where the API's documentation is.
    #[serde(default)]
    pub docs: Option<String>,
    /// A native connector implemented in code (e.g. `s3`); the calls below are then unused.
    #[serde(default)]
    pub native: Option<String>,
    /// The base URL used when a processor gives none.
    #[serde(default)]
    pub default_base_url: Option<String>,
    /// Settings every processor using this connector must give.
    #[serde(default)]
    pub settings: Vec<String>,
    /// Secrets (env var names in lethe.toml) every processor must give.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The processor's recovery window after an erase that only soft-deletes.
    #[serde(default)]
    pub soft_delete_window: Option<HumanDuration>,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: Auth,
    /// Default limits that keep below the processor's documented ones.
    #[serde(default)]
    pub limits: Limits,
    /// A retry policy for this API, overriding the workflow's (e.g. an API that
    /// asks for at least a minute between tries).
    #[serde(default)]
    pub retry: Option<crate::domain::retry::RetryPolicy>,
    /// How to read responses, for every call unless a call overrides it.
    #[serde(default)]
    pub responses: Responses,
    /// The cheapest authenticated call, for `lethe check`.
    #[serde(default)]
    pub check: Option<Call>,
    /// Sign every request body with HMAC-SHA256 (in-house webhooks).
    #[serde(default)]
    pub sign: Option<Signing>,
    /// The actions.
    #[serde(default)]
    pub actions: Actions,
    /// Why an optional action (`object`, `rectify`) does not exist at this
    /// processor, and what to do instead: action name → reason, shown on the
    /// certificate of a step recorded `not_applicable`.
    #[serde(default)]
    pub not_applicable: BTreeMap<String, String>,
    /// Retention sweeps (`[[schedule]]` in a workflow): which built-in sweep
    /// this API supports (see `connectors::sweep::HTTP_SWEEPS`). Native
    /// connectors that sweep (S3) need no key.
    #[serde(default)]
    pub sweep: Option<String>,
}

impl ConnectorDef {
    /// The definition of an optional request action (`object`, `rectify`).
    pub fn request_action(&self, action: crate::domain::Action) -> Option<&ActionDef> {
        use crate::domain::Action;
        match action {
            Action::Erase => self.actions.erase.as_ref(),
            Action::Export => self.actions.export.as_ref(),
            Action::Object => self.actions.object.as_ref(),
            Action::Rectify => self.actions.rectify.as_ref(),
        }
    }

    /// Why this connector cannot carry out `action` (`None`: it can, or a
    /// person does it through a manual task). `fields`: for `rectify`, the
    /// fields the request changes.
    pub fn not_applicable_reason(
        &self,
        action: crate::domain::Action,
        fields: &[String],
    ) -> Option<String> {
        if self.native.as_deref() == Some("manual") {
            return None;
        }
        let why = |what: String| match self.not_applicable.get(action.as_str()) {
            Some(r) => format!("{what}: {r}"),
            None => what,
        };
        let Some(def) = self.request_action(action) else {
            let what = format!(
                "connector `{}` has no `{}` action",
                self.name,
                action.as_str()
            );
            return Some(if self.not_applicable.contains_key(action.as_str()) {
                why(what)
            } else {
                format!("{what}: if this processor holds the subject's data, do it there by hand")
            });
        };
        if action == crate::domain::Action::Rectify
            && !fields.iter().any(|f| def.fields.contains(f))
        {
            return Some(why(format!(
                "connector `{}` cannot change {} (its `rectify` action changes {})",
                self.name,
                fields.join(", "),
                if def.fields.is_empty() {
                    "nothing".to_string()
                } else {
                    def.fields.join(", ")
                }
            )));
        }
        None
    }

    /// Whether processors of this connector can run a retention sweep.
    pub fn can_sweep(&self) -> bool {
        self.sweep.is_some() || self.native.as_deref() == Some("s3")
    }
}

/// Authentication schemes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, tag = "scheme", rename_all = "snake_case")]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic; both parts are templates.
    Basic {
        /// User name template.
        username: String,
        /// Password template.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// Token template.
        token: String,
    },
    /// Any header(s), e.g. `Authorization: Zoho-oauthtoken …` plus `orgId`.
    Header {
        /// Header name to value template.
        headers: BTreeMap<String, String>,
    },
}

/// An HMAC-SHA256 signature over the exact request body bytes, sent in a header,
/// so an in-house endpoint can tell lethe's calls from anyone else's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// The header carrying the signature (e.g. `X-Lethe-Signature`).
    pub header: String,
    /// The key, a template (normally `{{ secrets.signing_secret }}`).
    pub secret: String,
    /// Put before the hex digest (default `sha256=`).
    #[serde(default = "default_sign_prefix")]
    pub prefix: String,
}

fn default_sign_prefix() -> String {
    "sha256=".to_string()
}

/// Default limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many calls in flight to one processor.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Per-call timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Most calls per second, to stay below a documented rate limit.
    #[serde(default)]
    pub rate_per_second: Option<f64>,
    /// Whether redirects are followed: `never` (the default; a 3xx is a
    /// permanent error) or `same_host` (only to the same scheme, host and port).
    #[serde(default)]
    pub follow_redirects: super::redirect::FollowRedirects,
}

fn default_concurrency() -> u32 {
    4
}
fn default_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            rate_per_second: None,
            follow_redirects: Default::default(),
        }
    }
}

/// How status codes and bodies are read.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Responses {
    /// Statuses that mean success (default: any 2xx).
    #[serde(default)]
    pub success: Option<Vec<u16>>,
    /// Statuses that mean "no such subject" (default: 404).
    #[serde(default)]
    pub not_found: Option<Vec<u16>>,
    /// Statuses that mean throttling (default: 429).
    #[serde(default)]
    pub throttled: Option<Vec<u16>>,
    /// Statuses that mean throttling only when the body is empty (Mailchimp's bodiless 403).
    #[serde(default)]
    pub throttled_without_body: Option<Vec<u16>>,
    /// Further statuses to treat as transient (default: 408, 425, 5xx).
    #[serde(default)]
    pub transient: Option<Vec<u16>>,
    /// JSON Pointers to the processor's error message, tried in order.
    #[serde(default)]
    pub error_message: Option<Vec<String>>,
    /// Rules that look into the body, tried in order before the status lists
    /// (Dropbox's `409 path/not_found`, Twilio's error 20009, WHM's `200` with `result: 0`).
    #[serde(default)]
    pub when: Option<Vec<BodyRule>>,
    /// What a success must look like: one shape or a list, any of which may
    /// match. A success that matches none (an HTML login page, invalid JSON, a
    /// JSON error body, a status no shape covers) is an "unexpected response":
    /// transient, so the retry policy fails the step once its attempts run out.
    /// Without any declaration, only HTML pages are refused.
    #[serde(default, deserialize_with = "one_or_many")]
    pub expect: Option<Vec<Expect>>,
    /// What a "not found" answer must look like, where the API documents its
    /// body (a JSON 404): an HTML 404 from a wrong base_url is then an
    /// unexpected response, never "not found".
    #[serde(default, deserialize_with = "one_or_many")]
    pub expect_not_found: Option<Vec<Expect>>,
}

/// What the body of a declared response is.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// A JSON document (`null` included).
    Json,
    /// No body at all (a 204), or only whitespace.
    Empty,
    /// Anything, not looked at.
    Any,
}

/// One shape a response may have (`expect`, `expect_not_found`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The statuses this shape is for (default: every status of its kind).
    #[serde(default)]
    pub status: Option<Vec<u16>>,
    /// The body: `json`, `empty` or `any`. Default: `json` when `content_type`
    /// is a JSON type or a `pointer` is given, else `any`.
    #[serde(default)]
    pub body: Option<BodyKind>,
    /// The media type the response must declare (parameters such as `charset`
    /// are ignored; `application/json` also accepts `application/…+json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// A JSON Pointer that must be present in the body (and not null).
    #[serde(default)]
    pub pointer: Option<String>,
    /// With `pointer`: the value required there (a number also matches its string form).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// JSON Pointers that must NOT be present (and not null): an error body's
    /// `/error` or `/errors` answered with a 2xx.
    #[serde(default)]
    pub absent: Vec<String>,
}

impl Expect {
    /// The body this shape needs, defaults applied.
    pub fn body_kind(&self) -> BodyKind {
        match self.body {
            Some(b) => b,
            None if self.pointer.is_some()
                || !self.absent.is_empty()
                || self.content_type.as_deref().is_some_and(is_json_type) =>
            {
                BodyKind::Json
            }
            None => BodyKind::Any,
        }
    }

    /// Is this shape for `status`?
    pub fn applies_to(&self, status: u16) -> bool {
        self.status.as_ref().is_none_or(|l| l.contains(&status))
    }

    /// Does a received content type (a header value, or none) satisfy this shape?
    pub fn content_type_ok(&self, received: Option<&str>) -> bool {
        let Some(want) = &self.content_type else {
            return true;
        };
        let Some(got) = received.map(media_type) else {
            return false;
        };
        let want = want.to_ascii_lowercase();
        got == want
            || (want == "application/json"
                && got.starts_with("application/")
                && got.ends_with("+json"))
    }

    /// For people: `application/json with /id`, `no body`, `HTTP 204: no body`.
    pub fn describe(&self) -> String {
        let mut d = match (self.body_kind(), &self.content_type) {
            (BodyKind::Empty, _) => "no body".to_string(),
            (_, Some(ct)) => ct.to_ascii_lowercase(),
            (BodyKind::Json, None) => "JSON".to_string(),
            (BodyKind::Any, None) => "any body".to_string(),
        };
        if let Some(p) = &self.pointer {
            d.push_str(&format!(" with {p}"));
            if let Some(v) = &self.equals {
                d.push_str(&format!(" = {v}"));
            }
        }
        if !self.absent.is_empty() {
            d.push_str(&format!(" without {}", self.absent.join(", ")));
        }
        match &self.status {
            Some(l) => format!(
                "HTTP {}: {d}",
                l.iter().map(u16::to_string).collect::<Vec<_>>().join("/")
            ),
            None => d,
        }
    }
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn media_type(header: &str) -> String {
    header
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `application/json` or any `…/…+json` type.
pub fn is_json_type(ct: &str) -> bool {
    let m = media_type(ct);
    m == "application/json" || m.ends_with("+json")
}

/// `expect = { … }` or `expect = [{ … }, …]`.
fn one_or_many<'de, D>(d: D) -> Result<Option<Vec<Expect>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let v = toml::Value::deserialize(d)?;
    let shapes = match v {
        toml::Value::Array(a) => a
            .into_iter()
            .map(|x| x.try_into::<Expect>())
            .collect::<Result<Vec<_>, _>>(),
        t @ toml::Value::Table(_) => t.try_into::<Expect>().map(|e| vec![e]),
        other => {
            return Err(D::Error::custom(format!(
                "expected a table such as {{ content_type = \"application/json\", pointer = \"/id\" }} or a list of them, found a {}",
                other.type_str()
            )))
        }
    };
    shapes
        .map(Some)
        .map_err(|e| D::Error::custom(e.message().to_string()))
}

/// What a matching [`BodyRule`] makes of a response.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleOutcome {
    /// The call worked.
    Success,
    /// No such subject (or item).
    NotFound,
    /// Slow down; `Retry-After` is honoured.
    Throttled,
    /// Try again later.
    Transient,
    /// A person must act.
    Permanent,
}

/// A response rule that matches on the status and on the body.
/// Every condition given must hold; at least one body condition is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyRule {
    /// Statuses the rule applies to (default: any).
    #[serde(default)]
    pub status: Option<Vec<u16>>,
    /// The raw body contains this text.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// A JSON Pointer into the body; with `equals`, the value there must equal it,
    /// without, it must exist.
    #[serde(default)]
    pub pointer: Option<String>,
    /// The value at `pointer` (compared as JSON; a number also matches its string form).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// What the response then means.
    pub then: RuleOutcome,
}

impl BodyRule {
    /// Does this rule match the response?
    pub fn matches(&self, status: u16, body: &str, json: Option<&serde_json::Value>) -> bool {
        if let Some(l) = &self.status {
            if !l.contains(&status) {
                return false;
            }
        }
        if let Some(t) = &self.body_contains {
            if !body.contains(t.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.pointer {
            let Some(found) = json.and_then(|j| j.pointer(p)) else {
                return false;
            };
            if let Some(want) = &self.equals {
                let same = found == want
                    || match (found, want) {
                        (serde_json::Value::Number(n), serde_json::Value::String(s))
                        | (serde_json::Value::String(s), serde_json::Value::Number(n)) => {
                            n.to_string() == *s
                        }
                        _ => false,
                    };
                if !same {
                    return false;
                }
            }
        }
        true
    }
}

impl Responses {
    /// This call's rules, falling back to the connector's, then to the defaults.
    pub fn merged(&self, fallback: &Responses) -> Responses {
        Responses {
            success: self.success.clone().or_else(|| fallback.success.clone()),
            not_found: self
                .not_found
                .clone()
                .or_else(|| fallback.not_found.clone()),
            throttled: self
                .throttled
                .clone()
                .or_else(|| fallback.throttled.clone()),
            throttled_without_body: self
                .throttled_without_body
                .clone()
                .or_else(|| fallback.throttled_without_body.clone()),
            transient: self
                .transient
                .clone()
                .or_else(|| fallback.transient.clone()),
            error_message: self
                .error_message
                .clone()
                .or_else(|| fallback.error_message.clone()),
            when: self.when.clone().or_else(|| fallback.when.clone()),
            expect: self.expect.clone().or_else(|| fallback.expect.clone()),
            expect_not_found: self
                .expect_not_found
                .clone()
                .or_else(|| fallback.expect_not_found.clone()),
        }
    }
}

/// The actions a connector can take.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// Does the processor hold anything for the subject?
    pub lookup: Option<ActionDef>,
    /// Collect the subject's data.
    pub export: Option<ActionDef>,
    /// Erase the subject.
    pub erase: Option<ActionDef>,
    /// After a recovery window: is it really gone? (default: `lookup`)
    pub verify: Option<ActionDef>,
    /// Permanently delete what a soft delete left (optional).
    pub purge: Option<ActionDef>,
    /// Stop processing without deleting: unsubscribe, opt out (optional; an
    /// objection is `not_applicable` where it is missing).
    pub object: Option<ActionDef>,
    /// Change the subject's data to the request's new values (`{{ set.* }}`;
    /// optional; a rectification is `not_applicable` where it is missing).
    pub rectify: Option<ActionDef>,
    /// Enumerate every identity the processor holds, page by page (optional;
    /// `lethe suppression check` hashes each locally to find erased subjects
    /// that re-appeared — the suppression list holds only keyed hashes, so a
    /// processor cannot be searched by value).
    pub list: Option<ListDef>,
}

/// How pages of a `list` follow each other.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// `{{ page.offset }}` grows by the items of each page (Mailchimp
    /// `offset`/`count`); a page shorter than `page_size` is the last.
    Offset,
    /// The response names the next page's URL at `next_page` (Zendesk
    /// `/links/next` with `/meta/has_more`); followed on the same origin only.
    NextUrl,
    /// `{{ page.after }}` is the last item's value at `cursor`, while the
    /// response's `has_more` is true (Stripe `starting_after`).
    AfterLast,
}

/// The `list` action: one paged call and where the identities are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListDef {
    /// The call for one page (`{{ page.offset }}`, `{{ page.size }}`, `{{ page.after }}` available).
    pub call: Call,
    /// JSON Pointer to the array of items in a page.
    pub items: String,
    /// Identity kind (`email`, `phone`, `customer_id`) → JSON Pointer into an item.
    pub identities: BTreeMap<String, String>,
    /// How pages follow each other.
    pub paging: Paging,
    /// Items per page (what the call asks for; `{{ page.size }}`).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// `next_url`: JSON Pointer to the next page's URL (null or absent: the last page).
    #[serde(default)]
    pub next_page: Option<String>,
    /// `after_last`: JSON Pointer into an item to the cursor value (e.g. `/id`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// `next_url`/`after_last`: JSON Pointer to a boolean "more pages" flag.
    #[serde(default)]
    pub has_more: Option<String>,
}

fn default_page_size() -> u32 {
    100
}

/// What an erase call achieves at this processor.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EraseEffect {
    /// Gone for good.
    #[default]
    Erased,
    /// Moved to a trash / deletion queue; purged after the recovery window.
    SoftDeleted,
    /// Kept on purpose (e.g. a suppression entry); `retained_reason` says why.
    Retained,
}

/// One action: a sequence of calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionDef {
    /// Identities the action needs; a subject with none of them is `not_found` here.
    #[serde(default)]
    pub requires: Vec<String>,
    /// For `erase`: what a successful call sequence means.
    #[serde(default)]
    pub effect: EraseEffect,
    /// For `effect = "retained"`: the basis, shown in reports.
    #[serde(default)]
    pub retained_reason: Option<String>,
    /// For `rectify`: the fields (`email`, `phone`, `name`, `customer_id`)
    /// this processor can change; other new values are not sent here.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The calls, in order. A call answering `not_found` ends the action as not found.
    pub calls: Vec<Call>,
}

/// One HTTP call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// A name for the call; the key of its data in an export.
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path template, appended to the processor's base URL.
    pub path: String,
    /// Query parameters (templates).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body template (rendered, then parsed as JSON before sending).
    #[serde(default)]
    pub json: Option<String>,
    /// A form body (templates).
    #[serde(default)]
    pub form: Option<BTreeMap<String, String>>,
    /// Leave out form fields that render to an empty string (a rectification
    /// sends only the fields it changes).
    #[serde(default)]
    pub omit_empty: bool,
    /// For `rectify`: new-value field (`email`, `name`…) → JSON Pointer where
    /// this call's response must show the new value. A field the request
    /// changes whose value the response does not echo fails the call: the
    /// step is never recorded `rectified` on an answer that does not prove it.
    #[serde(default)]
    pub echo: BTreeMap<String, String>,
    /// Response rules for this call.
    #[serde(default)]
    pub responses: Responses,
    /// What a success of this call looks like (shorthand for `responses.expect`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub expect: Option<Vec<Expect>>,
    /// Values to keep for later calls: var name → JSON Pointer into the response.
    #[serde(default)]
    pub extract: BTreeMap<String, String>,
    /// If an `extract` pointer finds nothing, the subject is not found here.
    #[serde(default)]
    pub missing_means_not_found: bool,
    /// For an export call: a 404 means "no such data" (recorded as null), not "no subject".
    #[serde(default)]
    pub optional: bool,
    /// JSON Pointer to the processor's reference id for the evidence.
    #[serde(default)]
    pub reference: Option<String>,
    /// JSON Pointer to an array in this call's response: the calls after this one
    /// (up to the next call with a `for_each`, or the end) run once per element,
    /// with the element bound as `{{ item }}`. An action whose every `for_each`
    /// found an empty array found nothing (`not_found`). Inside the loop, a call
    /// answering `not_found` means that element is already gone: the loop moves on.
    #[serde(default)]
    pub for_each: Option<String>,
    /// With `for_each`: an expression over `item` (and the usual context); only
    /// elements for which it is true are iterated, for APIs that cannot filter
    /// server-side (e.g. `item.email == subject.email`).
    #[serde(default)]
    pub for_each_if: Option<String>,
    /// With `for_each`: a JSON Pointer to the next page's URL in the response
    /// (Twilio's `/next_page_uri`, Zendesk's `/next_page`); pages are followed,
    /// on the processor's own host only, until it is null (at most 1,000 pages).
    #[serde(default)]
    pub next_page: Option<String>,
    /// Keep this call's response in an export (default true). Set false for
    /// searches whose results may name other people.
    #[serde(default = "default_keep")]
    pub keep: bool,
    /// With `for_each`: keep the elements iterated over (after `for_each_if`)
    /// in the export, one entry each, instead of whole responses; for lists
    /// whose pages also carry other people's data or paging noise.
    #[serde(default)]
    pub keep_items: bool,
    /// With `for_each`: a JSON Pointer into each element (e.g. `/id`). An element
    /// whose value there was already iterated by an earlier loop of the same
    /// action is skipped, so two lookups finding the same record act on it once.
    #[serde(default)]
    pub unique_by: Option<String>,
    /// This call is a search whose index lags behind the processor's data
    /// (Stripe's Search API, Zendesk search). A "not found" it took part in is
    /// recorded with a note saying so; see `recheck_after`.
    #[serde(default)]
    pub eventually_consistent: bool,
    /// With `eventually_consistent`: how far the index can lag. A "not found"
    /// the call took part in is not believed on a step's first attempt: the step
    /// is retried after this long, and only the second "not found" is final.
    #[serde(default)]
    pub recheck_after: Option<HumanDuration>,
}

fn default_keep() -> bool {
    true
}

fn default_method() -> String {
    "GET".to_string()
}

/// A definition that failed validation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: `{key}`: {reason}")]
pub struct DefinitionError {
    /// The file.
    pub file: String,
    /// The key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// The identities a template may use.
pub const IDENTITY_NAMES: [&str; 4] = ["email", "phone", "customer_id", "name"];

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

impl ConnectorDef {
    /// Parse and validate one definition file.
    pub fn parse(file: &str, text: &str) -> Result<ConnectorDef, DefinitionError> {
        let def: ConnectorDef = toml::from_str(text).map_err(|e| DefinitionError {
            file: file.to_string(),
            key: e.span().map(|s| describe_span(text, s)).unwrap_or_default(),
            reason: e.message().to_string(),
        })?;
        def.validate(file)?;
        Ok(ConnectorDef {
            file: file.to_string(),
            ..def
        })
    }

    fn validate(&self, file: &str) -> Result<(), DefinitionError> {
        let err = |key: &str, reason: String| DefinitionError {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                "name",
                format!("`{}` must be lower-case letters, digits and `_`", self.name),
            ));
        }
        if let Some(r) = &self.retry {
            r.validate()
                .map_err(|(k, reason)| err(&format!("retry.{k}"), reason))?;
        }
        if self.limits.concurrency == 0 {
            return Err(err("limits.concurrency", "must be at least 1".into()));
        }
        if self
            .limits
            .rate_per_second
            .is_some_and(|r| !(r > 0.0 && r.is_finite()))
        {
            return Err(err(
                "limits.rate_per_second",
                "must be a positive number".into(),
            ));
        }
        let env = crate::connectors::template::environment();
        if let Auth::Basic { username, password } = &self.auth {
            check_template(&env, username).map_err(|r| err("auth.username", r))?;
            check_template(&env, password).map_err(|r| err("auth.password", r))?;
        }
        if let Auth::Bearer { token } = &self.auth {
            check_template(&env, token).map_err(|r| err("auth.token", r))?;
        }
        if let Auth::Header { headers } = &self.auth {
            for (k, v) in headers {
                check_template(&env, v).map_err(|r| err(&format!("auth.headers.{k}"), r))?;
            }
        }
        check_responses(&self.responses).map_err(|(k, r)| err(&format!("responses.{k}"), r))?;
        if let Some(sg) = &self.sign {
            check_template(&env, &sg.secret).map_err(|r| err("sign.secret", r))?;
            if reqwest::header::HeaderName::from_bytes(sg.header.as_bytes()).is_err() {
                return Err(err(
                    "sign.header",
                    format!("`{}` is not a valid header name", sg.header),
                ));
            }
        }
        if let Some(c) = &self.check {
            check_call(&env, c).map_err(|(k, r)| err(&format!("check.{k}"), r))?;
        }
        if let Some(sw) = &self.sweep {
            if !crate::connectors::sweep::HTTP_SWEEPS.contains(&sw.as_str()) {
                return Err(err(
                    "sweep",
                    format!(
                        "`{sw}` is not a known sweep (known: {})",
                        crate::connectors::sweep::HTTP_SWEEPS.join(", ")
                    ),
                ));
            }
        }
        if let Some(n) = &self.native {
            if !crate::connectors::NATIVE.contains(&n.as_str()) {
                return Err(err(
                    "native",
                    format!(
                        "`{n}` is not a native connector (known: {})",
                        crate::connectors::NATIVE.join(", ")
                    ),
                ));
            }
        }
        if self.native.is_none() {
            if self.actions.erase.is_none() {
                return Err(err(
                    "actions.erase",
                    "missing: every connector must say how to erase".into(),
                ));
            }
            if self.actions.export.is_none() {
                return Err(err(
                    "actions.export",
                    "missing: every connector must say how to export".into(),
                ));
            }
        }
        if let Some(l) = &self.actions.list {
            check_call(&env, &l.call)
                .map_err(|(k, r)| err(&format!("actions.list.call.{k}"), r))?;
            if l.identities.is_empty() {
                return Err(err(
                    "actions.list.identities",
                    "name at least one identity and its JSON Pointer".into(),
                ));
            }
            for k in l.identities.keys() {
                if !["email", "phone", "customer_id"].contains(&k.as_str()) {
                    return Err(err(
                        &format!("actions.list.identities.{k}"),
                        "not an identity kind (expected email, phone or customer_id)".into(),
                    ));
                }
            }
            if l.page_size == 0 {
                return Err(err("actions.list.page_size", "must be at least 1".into()));
            }
            match l.paging {
                Paging::NextUrl if l.next_page.is_none() => {
                    return Err(err(
                        "actions.list.next_page",
                        "required with paging = \"next_url\"".into(),
                    ))
                }
                Paging::AfterLast if l.cursor.is_none() || l.has_more.is_none() => {
                    return Err(err(
                        "actions.list.cursor",
                        "cursor and has_more are required with paging = \"after_last\"".into(),
                    ))
                }
                _ => {}
            }
        }
        let named = [
            ("lookup", &self.actions.lookup),
            ("export", &self.actions.export),
            ("erase", &self.actions.erase),
            ("verify", &self.actions.verify),
            ("purge", &self.actions.purge),
            ("object", &self.actions.object),
            ("rectify", &self.actions.rectify),
        ];
        for (k, reason) in &self.not_applicable {
            if !["object", "rectify"].contains(&k.as_str()) {
                return Err(err(
                    &format!("not_applicable.{k}"),
                    "only `object` and `rectify` may be declared not applicable".into(),
                ));
            }
            if reason.trim().is_empty() {
                return Err(err(
                    &format!("not_applicable.{k}"),
                    "needs a reason (what to do instead)".into(),
                ));
            }
        }
        if let Some(r) = &self.actions.rectify {
            for (i, f) in r.fields.iter().enumerate() {
                if !IDENTITY_NAMES.contains(&f.as_str()) {
                    return Err(err(
                        &format!("actions.rectify.fields[{i}]"),
                        format!(
                            "`{f}` is not a field (expected one of {})",
                            IDENTITY_NAMES.join(", ")
                        ),
                    ));
                }
            }
            if r.fields.is_empty() {
                return Err(err(
                    "actions.rectify.fields",
                    "say which fields this processor can change".into(),
                ));
            }
        }
        for (name, action) in named {
            let Some(a) = action else { continue };
            if a.calls.is_empty() {
                return Err(err(
                    &format!("actions.{name}.calls"),
                    "needs at least one call".into(),
                ));
            }
            for (i, r) in a.requires.iter().enumerate() {
                if !IDENTITY_NAMES.contains(&r.as_str()) {
                    return Err(err(
                        &format!("actions.{name}.requires[{i}]"),
                        format!(
                            "`{r}` is not an identity (expected one of {})",
                            IDENTITY_NAMES.join(", ")
                        ),
                    ));
                }
            }
            if a.effect == EraseEffect::Retained && a.retained_reason.is_none() {
                return Err(err(
                    &format!("actions.{name}.retained_reason"),
                    "required when effect = \"retained\"".into(),
                ));
            }
            if a.effect == EraseEffect::SoftDeleted && self.soft_delete_window.is_none() {
                return Err(err(
                    "soft_delete_window",
                    format!("required because actions.{name} soft-deletes"),
                ));
            }
            for (i, c) in a.calls.iter().enumerate() {
                check_call(&env, c)
                    .map_err(|(k, r)| err(&format!("actions.{name}.calls[{i}].{k}"), r))?;
            }
        }
        Ok(())
    }
}

fn describe_span(text: &str, span: std::ops::Range<usize>) -> String {
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

fn check_template(env: &minijinja::Environment<'static>, t: &str) -> Result<(), String> {
    env.template_from_str(t)
        .map(|_| ())
        .map_err(|e| format!("template does not compile: {e}"))
}

fn check_pointer(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "`{p}` is not a JSON Pointer (it must start with `/`)"
        ))
    }
}

fn check_statuses(list: &Option<Vec<u16>>) -> Result<(), String> {
    for s in list.iter().flatten() {
        if !(100..=599).contains(s) {
            return Err(format!("{s} is not an HTTP status code"));
        }
    }
    Ok(())
}

fn check_responses(r: &Responses) -> Result<(), (String, String)> {
    for (k, l) in [
        ("success", &r.success),
        ("not_found", &r.not_found),
        ("throttled", &r.throttled),
        ("throttled_without_body", &r.throttled_without_body),
        ("transient", &r.transient),
    ] {
        check_statuses(l).map_err(|e| (k.to_string(), e))?;
    }
    for p in r.error_message.iter().flatten() {
        check_pointer(p).map_err(|e| ("error_message".to_string(), e))?;
    }
    if let Some(shapes) = &r.expect {
        check_expect(shapes).map_err(|(k, e)| (format!("expect{k}"), e))?;
    }
    if let Some(shapes) = &r.expect_not_found {
        check_expect(shapes).map_err(|(k, e)| (format!("expect_not_found{k}"), e))?;
    }
    for (i, rule) in r.when.iter().flatten().enumerate() {
        let key = format!("when[{i}]");
        check_statuses(&rule.status).map_err(|e| (key.clone(), e))?;
        if let Some(p) = &rule.pointer {
            check_pointer(p).map_err(|e| (format!("{key}.pointer"), e))?;
        }
        if rule.body_contains.is_none() && rule.pointer.is_none() {
            return Err((
                key,
                "needs `body_contains` or `pointer` (status alone belongs in the status lists)"
                    .into(),
            ));
        }
        if rule.equals.is_some() && rule.pointer.is_none() {
            return Err((format!("{key}.equals"), "needs a `pointer`".into()));
        }
    }
    Ok(())
}

fn check_call(env: &minijinja::Environment<'static>, c: &Call) -> Result<(), (String, String)> {
    let m = c.method.to_ascii_uppercase();
    if !METHODS.contains(&m.as_str()) {
        return Err((
            "method".into(),
            format!("`{}` is not one of {}", c.method, METHODS.join(", ")),
        ));
    }
    check_template(env, &c.path).map_err(|e| ("path".to_string(), e))?;
    if !c.path.starts_with('/') {
        return Err(("path".into(), "must start with `/`".into()));
    }
    for (k, v) in &c.query {
        check_template(env, v).map_err(|e| (format!("query.{k}"), e))?;
    }
    for (k, v) in &c.headers {
        check_template(env, v).map_err(|e| (format!("headers.{k}"), e))?;
    }
    if let Some(j) = &c.json {
        check_template(env, j).map_err(|e| ("json".to_string(), e))?;
    }
    for (k, v) in c.form.iter().flatten() {
        check_template(env, v).map_err(|e| (format!("form.{k}"), e))?;
    }
    if c.json.is_some() && c.form.is_some() {
        return Err((
            "json".into(),
            "a call has either `json` or `form`, not both".into(),
        ));
    }
    for (k, p) in &c.extract {
        check_pointer(p).map_err(|e| (format!("extract.{k}"), e))?;
    }
    for (k, p) in &c.echo {
        if !IDENTITY_NAMES.contains(&k.as_str()) {
            return Err((
                format!("echo.{k}"),
                format!(
                    "`{k}` is not a field (expected one of {})",
                    IDENTITY_NAMES.join(", ")
                ),
            ));
        }
        check_pointer(p).map_err(|e| (format!("echo.{k}"), e))?;
    }
    if let Some(p) = &c.reference {
        check_pointer(p).map_err(|e| ("reference".to_string(), e))?;
    }
    if let Some(p) = &c.for_each {
        check_pointer(p).map_err(|e| ("for_each".to_string(), e))?;
    }
    if let Some(p) = &c.next_page {
        if c.for_each.is_none() {
            return Err(("next_page".into(), "needs a `for_each`".into()));
        }
        check_pointer(p).map_err(|e| ("next_page".to_string(), e))?;
    }
    if let Some(p) = &c.unique_by {
        if c.for_each.is_none() {
            return Err(("unique_by".into(), "needs a `for_each`".into()));
        }
        check_pointer(p).map_err(|e| ("unique_by".to_string(), e))?;
    }
    if c.keep_items && c.for_each.is_none() {
        return Err(("keep_items".into(), "needs a `for_each`".into()));
    }
    if c.recheck_after.is_some() && !c.eventually_consistent {
        return Err((
            "recheck_after".into(),
            "only applies with `eventually_consistent = true`".into(),
        ));
    }
    if let Some(x) = &c.for_each_if {
        if c.for_each.is_none() {
            return Err(("for_each_if".into(), "needs a `for_each`".into()));
        }
        env.compile_expression(x).map_err(|e| {
            (
                "for_each_if".to_string(),
                format!("expression does not compile: {e}"),
            )
        })?;
    }
    check_responses(&c.responses).map_err(|(k, e)| (format!("responses.{k}"), e))?;
    if let Some(shapes) = &c.expect {
        if c.responses.expect.is_some() {
            return Err((
                "expect".into(),
                "given twice: use either `expect` or `responses.expect`".into(),
            ));
        }
        check_expect(shapes).map_err(|(k, e)| (format!("expect{k}"), e))?;
    }
    Ok(())
}

/// A response shape list; the key suffix is `[i].field` (or `.field` for a single shape).
fn check_expect(shapes: &[Expect]) -> Result<(), (String, String)> {
    if shapes.is_empty() {
        return Err((
            String::new(),
            "is empty: declare at least one shape (e.g. { content_type = \"application/json\" })"
                .into(),
        ));
    }
    for (i, e) in shapes.iter().enumerate() {
        let at = if shapes.len() == 1 {
            String::new()
        } else {
            format!("[{i}]")
        };
        check_statuses(&e.status).map_err(|r| (format!("{at}.status"), r))?;
        if e.status.as_ref().is_some_and(|l| l.is_empty()) {
            return Err((
                format!("{at}.status"),
                "is empty: leave it out to mean every status".into(),
            ));
        }
        if let Some(ct) = &e.content_type {
            let m = media_type(ct);
            let ok = ct.trim().eq_ignore_ascii_case(&m)
                && m.split_once('/').is_some_and(|(t, s)| {
                    !t.is_empty()
                        && !s.is_empty()
                        && !s.contains('/')
                        && m.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "/+-.!#$&^_".contains(c))
                });
            if !ok {
                return Err((
                    format!("{at}.content_type"),
                    format!("`{ct}` is not a media type such as `application/json` (leave out parameters like charset)"),
                ));
            }
        }
        if let Some(p) = &e.pointer {
            check_pointer(p).map_err(|r| (format!("{at}.pointer"), r))?;
        }
        if e.equals.is_some() && e.pointer.is_none() {
            return Err((format!("{at}.equals"), "needs a `pointer`".into()));
        }
        for (j, p) in e.absent.iter().enumerate() {
            check_pointer(p).map_err(|r| (format!("{at}.absent[{j}]"), r))?;
        }
        let json_only = e.pointer.is_some() || !e.absent.is_empty();
        match e.body_kind() {
            BodyKind::Empty if e.content_type.is_some() || json_only => {
                return Err((
                    format!("{at}.body"),
                    "`empty` cannot have a `content_type`, `pointer` or `absent`".into(),
                ))
            }
            BodyKind::Any if json_only => {
                return Err((
                    format!("{at}.body"),
                    "`pointer` and `absent` need body = \"json\"".into(),
                ))
            }
            BodyKind::Json
                if e.content_type
                    .as_deref()
                    .is_some_and(|ct| !is_json_type(ct)) =>
            {
                return Err((
                    format!("{at}.content_type"),
                    "a JSON body (or a `pointer`) needs a JSON content type".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_definition_loads_with_erase_export_and_check() {
        for (file, text) in BUILTIN {
            let def = ConnectorDef::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
            if def.native.is_some() {
                // Native connectors (s3, manual) carry their actions in code.
                continue;
            }
            assert!(def.actions.erase.is_some(), "{file}");
            assert!(def.actions.export.is_some(), "{file}");
            assert!(def.check.is_some(), "{file} has no [check] call");
        }
    }

    /// The effective success declaration of a call: its own, else its
    /// `responses.expect`, else the connector's.
    fn declared<'a>(def: &'a ConnectorDef, c: &'a Call) -> Option<&'a Vec<Expect>> {
        c.expect
            .as_ref()
            .or(c.responses.expect.as_ref())
            .or(def.responses.expect.as_ref())
    }

    #[test]
    fn every_builtin_success_call_declares_what_its_answer_looks_like() {
        let mut calls = 0;
        for (file, text) in BUILTIN {
            let def = ConnectorDef::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
            if def.native.is_some() {
                // s3 checks S3's XML in code (src/connectors/s3.rs); manual has no calls.
                continue;
            }
            let a = &def.actions;
            let mut all: Vec<(String, &Call)> =
                def.check.iter().map(|c| ("check".to_string(), c)).collect();
            for (name, action) in [
                ("lookup", &a.lookup),
                ("export", &a.export),
                ("erase", &a.erase),
                ("verify", &a.verify),
                ("purge", &a.purge),
            ] {
                for (i, c) in action.iter().flat_map(|x| x.calls.iter()).enumerate() {
                    all.push((format!("actions.{name}.calls[{i}]"), c));
                }
            }
            for (at, c) in all {
                calls += 1;
                let shapes = declared(&def, c)
                    .unwrap_or_else(|| panic!("{file}: {at} declares no `expect`"));
                for e in shapes {
                    assert!(
                        e.body_kind() == BodyKind::Empty || e.content_type.is_some(),
                        "{file}: {at}: `{}` accepts any body",
                        e.describe()
                    );
                }
            }
        }
        assert!(calls > 60, "only {calls} calls seen");
    }

    #[test]
    fn builtins_whose_api_documents_a_json_404_require_it_for_not_found() {
        for name in [
            "mailchimp",
            "mailgun",
            "zendesk",
            "zendesk_permanent",
            "stripe",
            "onedrive",
            "twilio",
            "dropbox",
            "whm",
        ] {
            let (file, text) = BUILTIN
                .iter()
                .find(|(f, _)| *f == format!("{name}.toml"))
                .expect("built-in");
            let def = ConnectorDef::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
            let shapes = def
                .responses
                .expect_not_found
                .unwrap_or_else(|| panic!("{file}: no expect_not_found"));
            assert!(
                shapes
                    .iter()
                    .all(|e| e.content_type.as_deref().is_some_and(is_json_type)),
                "{file}: {shapes:?}"
            );
        }
    }

    fn erase_with(expect: &str) -> String {
        format!(
            r#"
name = "x"
category = "other"
[actions.erase]
[[actions.erase.calls]]
path = "/a"
expect = {expect}
[actions.export]
[[actions.export.calls]]
path = "/a"
"#
        )
    }

    #[test]
    fn a_bad_success_declaration_is_refused_naming_file_and_key() {
        for (expect, key, reason) in [
            (
                r#"{ content_type = "json" }"#,
                "actions.erase.calls[0].expect.content_type",
                "media type",
            ),
            (
                r#"{ content_type = "application/json; charset=utf-8" }"#,
                "actions.erase.calls[0].expect.content_type",
                "parameters",
            ),
            (
                r#"{ pointer = "id" }"#,
                "actions.erase.calls[0].expect.pointer",
                "JSON Pointer",
            ),
            (
                r#"{ equals = 1 }"#,
                "actions.erase.calls[0].expect.equals",
                "pointer",
            ),
            (
                r#"{ body = "empty", pointer = "/id" }"#,
                "actions.erase.calls[0].expect.body",
                "empty",
            ),
            (
                r#"{ content_type = "text/html", pointer = "/id" }"#,
                "actions.erase.calls[0].expect.content_type",
                "JSON content type",
            ),
            (
                r#"[{ status = [204], body = "empty" }, { status = [700] }]"#,
                "actions.erase.calls[0].expect[1].status",
                "700",
            ),
            (r#"[]"#, "actions.erase.calls[0].expect", "empty"),
        ] {
            let e = ConnectorDef::parse("x.toml", &erase_with(expect)).unwrap_err();
            assert_eq!(e.file, "x.toml");
            assert_eq!(e.key, key, "{expect}: {e}");
            assert!(e.reason.contains(reason), "{expect}: {e}");
        }
        // A misspelt field is a parse error naming the field.
        let e = ConnectorDef::parse("x.toml", &erase_with(r#"{ pointr = "/id" }"#)).unwrap_err();
        assert!(e.to_string().contains("pointr"), "{e}");
        // Given twice.
        let text = erase_with(r#"{ body = "empty" }"#).replace(
            "expect = ",
            "responses = { expect = { body = \"any\" } }\nexpect = ",
        );
        let e = ConnectorDef::parse("x.toml", &text).unwrap_err();
        assert_eq!(e.key, "actions.erase.calls[0].expect", "{e}");
        // At connector level.
        let text = erase_with(r#"{ body = "empty" }"#).replace(
            "[actions.erase]",
            "[responses]\nexpect_not_found = { content_type = \"application/json\", equals = 0 }\n[actions.erase]",
        );
        let e = ConnectorDef::parse("x.toml", &text).unwrap_err();
        assert_eq!(e.key, "responses.expect_not_found.equals", "{e}");
    }

    #[test]
    fn a_declared_shape_reads_content_types_and_describes_itself() {
        let e = Expect {
            status: None,
            body: None,
            content_type: Some("application/json".into()),
            pointer: Some("/id".into()),
            equals: None,
            absent: vec![],
        };
        assert_eq!(e.body_kind(), BodyKind::Json);
        assert!(e.content_type_ok(Some("application/json; charset=utf-8")));
        assert!(e.content_type_ok(Some("Application/Problem+JSON")));
        assert!(!e.content_type_ok(Some("text/html")));
        assert!(!e.content_type_ok(None));
        assert_eq!(e.describe(), "application/json with /id");
        let empty = Expect {
            status: Some(vec![204]),
            body: Some(BodyKind::Empty),
            content_type: None,
            pointer: None,
            equals: None,
            absent: vec![],
        };
        assert_eq!(empty.describe(), "HTTP 204: no body");
        assert!(empty.applies_to(204) && !empty.applies_to(200));
    }

    #[test]
    fn a_bad_retry_policy_in_a_definition_names_its_key() {
        let (_, text) = BUILTIN[0];
        let bad = text.replace("[auth]", "[retry]\nfactor = 0.5\n\n[auth]");
        let e = ConnectorDef::parse("x.toml", &bad).unwrap_err();
        assert_eq!(e.key, "retry.factor", "{e}");
    }

    #[test]
    fn a_body_rule_without_a_body_condition_is_refused_naming_the_key() {
        let text = r#"
name = "x"
category = "other"
[responses]
when = [{ status = [409], then = "not_found" }]
[actions.erase]
[[actions.erase.calls]]
path = "/a"
[actions.export]
[[actions.export.calls]]
path = "/a"
"#;
        let e = ConnectorDef::parse("x.toml", text).unwrap_err();
        assert_eq!(e.key, "responses.when[0]", "{e}");
        assert!(e.reason.contains("body_contains"), "{e}");
    }

    #[test]
    fn a_for_each_that_is_not_a_json_pointer_is_refused() {
        let text = r#"
name = "x"
category = "other"
[actions.erase]
[[actions.erase.calls]]
path = "/a"
for_each = "messages"
[actions.export]
[[actions.export.calls]]
path = "/a"
"#;
        let e = ConnectorDef::parse("x.toml", text).unwrap_err();
        assert_eq!(e.key, "actions.erase.calls[0].for_each", "{e}");
    }

    #[test]
    fn unique_by_and_recheck_after_are_refused_where_they_cannot_apply() {
        let text = |extra: &str| {
            format!(
                "name = \"x\"\ncategory = \"other\"\n[actions.erase]\n[[actions.erase.calls]]\npath = \"/a\"\n{extra}\n[actions.export]\n[[actions.export.calls]]\npath = \"/a\"\n"
            )
        };
        let e = ConnectorDef::parse("x.toml", &text("unique_by = \"/id\"")).unwrap_err();
        assert_eq!(e.key, "actions.erase.calls[0].unique_by", "{e}");
        let e = ConnectorDef::parse("x.toml", &text("recheck_after = \"1m\"")).unwrap_err();
        assert_eq!(e.key, "actions.erase.calls[0].recheck_after", "{e}");
        let e = ConnectorDef::parse("x.toml", &text("keep_items = true")).unwrap_err();
        assert_eq!(e.key, "actions.erase.calls[0].keep_items", "{e}");
        let ok = "for_each = \"/d\"\nunique_by = \"/id\"\neventually_consistent = true\nrecheck_after = \"1m\"";
        ConnectorDef::parse("x.toml", &text(ok)).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn body_rules_match_status_text_and_pointer_values() {
        let rule = BodyRule {
            status: Some(vec![409]),
            body_contains: Some("/not_found".into()),
            pointer: None,
            equals: None,
            then: RuleOutcome::NotFound,
        };
        let b = r#"{"error_summary":"path_lookup/not_found/.","error":{".tag":"path_lookup"}}"#;
        assert!(rule.matches(409, b, None));
        assert!(!rule.matches(400, b, None));
        assert!(!rule.matches(409, r#"{"error_summary":"path/conflict/"}"#, None));
        let code = BodyRule {
            status: None,
            body_contains: None,
            pointer: Some("/code".into()),
            equals: Some(serde_json::json!(20009)),
            then: RuleOutcome::Transient,
        };
        let j = serde_json::json!({"code": 20009, "message": "not finished"});
        assert!(code.matches(400, "", Some(&j)));
        assert!(!code.matches(400, "", Some(&serde_json::json!({"code": 20404}))));
        assert!(!code.matches(400, "", None));
        let as_text = BodyRule {
            equals: Some(serde_json::json!("20009")),
            ..code
        };
        assert!(
            as_text.matches(400, "", Some(&j)),
            "a number matches its string form"
        );
    }
}

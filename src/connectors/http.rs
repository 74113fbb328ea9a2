//! The declarative HTTP connector: runs the calls a definition file describes.
//!
//! Each call's path, query, headers and body are rendered from templates with
//! the subject, the processor's settings and secrets, and values extracted from
//! earlier calls. The response is classified right here: success, not found,
//! throttled (with `Retry-After`), transient or permanent — with a message that
//! names the processor and, for rejected credentials, the env var to check.

use super::definition::{
    media_type, ActionDef, Auth, BodyKind, Call, Category, ConnectorDef, EraseEffect, Expect,
    Responses, RuleOutcome,
};
use super::{
    scrub, CallContext, Changed, Connector, ConnectorError, Erase, ErrorClass, Evidence, Export,
    Lookup, Verify,
};
use crate::domain::Subject;
use async_trait::async_trait;
use minijinja::Environment;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod dropbox_sweep;
mod zendesk_sweep;

/// A configured processor, as connectors see it.
#[derive(Debug, Clone)]
pub struct ProcessorSpec {
    /// The processor's name (`newsletter`).
    pub name: String,
    /// The config file the processor is defined in, for messages.
    pub config_file: String,
    /// Base URL, without a trailing slash.
    pub base_url: String,
    /// Settings (list ids, subdomains…).
    pub settings: BTreeMap<String, String>,
    /// Secret name → the environment variable holding it.
    pub secrets: BTreeMap<String, String>,
    /// Concurrency limit.
    pub concurrency: u32,
    /// Recovery window after a soft delete.
    pub soft_delete_window: Option<Duration>,
    /// Most calls per second (None: no rate limit beyond concurrency).
    pub rate_per_second: Option<f64>,
    /// The processor's category (the connector's, unless lethe.toml overrides it).
    pub category: Category,
    /// The call timeout, if lethe.toml overrides the connector's.
    pub timeout: Option<Duration>,
}

/// A connector driven by a definition file.
pub struct HttpConnector {
    spec: ProcessorSpec,
    def: Arc<ConnectorDef>,
    client: reqwest::Client,
    env: Environment<'static>,
    /// Renders URL paths: every interpolated value is one encoded segment.
    path_env: Environment<'static>,
}

/// The most pages one `for_each` call follows.
const MAX_PAGES: usize = 1000;

/// What one call left for the action.
enum Step {
    /// The subject (or, in a loop, this element) is not there.
    NotFound,
    /// The call worked; its body, when it was JSON.
    Done(Option<Value>),
}

/// What an action accumulates across its calls.
struct RunState {
    /// The action being run (`erase`, `check`…), for messages.
    action: &'static str,
    /// How many calls the action has (a lone call is not named in messages).
    calls: usize,
    secrets: BTreeMap<String, String>,
    vars: Map<String, Value>,
    data: Map<String, Value>,
    evidence: Evidence,
    /// `unique_by` values already iterated by a loop of this action.
    seen: std::collections::HashSet<String>,
    /// An `eventually_consistent` call ran: `Some(its recheck_after)`.
    lagging: Option<Option<Duration>>,
}

impl RunState {
    /// Keep a call's response for the export: inside a loop (or across pages),
    /// one entry per element (or page), in order.
    fn record(&mut self, name: String, value: Value, as_list: bool) {
        if !as_list {
            self.data.insert(name, value);
            return;
        }
        match self.data.get_mut(&name) {
            Some(Value::Array(a)) => a.push(value),
            _ => {
                self.data.insert(name, Value::Array(vec![value]));
            }
        }
    }
}

/// What running an action's calls produced.
struct ActionRun {
    not_found: bool,
    data: Map<String, Value>,
    evidence: Evidence,
    /// An `eventually_consistent` call took part: `Some(its recheck_after)`.
    lagging: Option<Option<Duration>>,
}

/// The evidence note of a "not found" that rests partly on a lagging search index.
pub const LAGGING_SEARCH_NOTE: &str = "nothing found, but a search whose index lags behind the processor's data took part: anything created or changed shortly before that search may not have been seen";

const DEFAULT_ERROR_POINTERS: [&str; 6] = [
    "/detail",
    "/message",
    "/error/message",
    "/description",
    "/title",
    "/error",
];

impl HttpConnector {
    /// Build a connector for one processor. `client` is shared, so connections are reused.
    pub fn new(spec: ProcessorSpec, def: Arc<ConnectorDef>, client: reqwest::Client) -> Self {
        HttpConnector {
            spec,
            def,
            client,
            env: super::template::environment(),
            path_env: super::template::path_environment(),
        }
    }

    fn secret_values(&self) -> Result<BTreeMap<String, String>, ConnectorError> {
        let mut out = BTreeMap::new();
        for (name, var) in &self.spec.secrets {
            match std::env::var(var) {
                Ok(v) if !v.is_empty() => {
                    out.insert(name.clone(), v);
                }
                _ => {
                    return Err(ConnectorError::permanent(format!(
                        "processor `{}`: environment variable {var} (secret `{name}`) is not set",
                        self.spec.name
                    )))
                }
            }
        }
        Ok(out)
    }

    fn context(
        &self,
        cx: Option<&CallContext<'_>>,
        vars: &Map<String, Value>,
        secrets: &BTreeMap<String, String>,
        item: Option<&Value>,
    ) -> Result<Value, ConnectorError> {
        let subject = cx
            .map(|c| subject_value(c.subject))
            .unwrap_or(Value::Object(Map::new()));
        let request = serde_json::json!({
            "id": cx.map(|c| c.request_id).unwrap_or(""),
            "idempotency_key": cx.map(|c| c.idempotency_key).unwrap_or(""),
        });
        // A setting may itself be a template over the subject (a Dropbox folder
        // per customer, a cPanel account name): render it first.
        let mut settings = Map::new();
        let sctx = serde_json::json!({ "subject": subject, "request": request });
        for (k, v) in &self.spec.settings {
            let is_template = v.contains("{{") || v.contains("{%");
            if is_template && cx.is_none() {
                // No subject (a `check` call): a per-subject setting has no value.
                continue;
            }
            let value = if is_template {
                let value = self.env.render_str(v, &sctx).map_err(|e| {
                    ConnectorError::permanent(format!(
                        "processor `{}` ({}): setting `{k}` could not be rendered: {}",
                        self.spec.name,
                        self.spec.config_file,
                        super::template::describe_error(&self.env, v, false, &sctx, &e)
                    ))
                })?;
                // A per-subject setting is a folder, an account, a path: it may
                // never climb out of the subject's own place.
                if super::template::has_dot_segment(&value) {
                    return Err(ConnectorError::permanent(format!(
                        "processor `{}`: setting `{k}` renders to a path with a `.` or `..` segment for this subject; refused, nothing was sent (check the setting and the subject's identity)",
                        self.spec.name
                    )));
                }
                value
            } else {
                v.clone()
            };
            settings.insert(k.clone(), Value::String(value));
        }
        Ok(serde_json::json!({
            "settings": settings,
            "secrets": secrets,
            "subject": subject,
            "request": request,
            "vars": vars,
            "item": item.cloned().unwrap_or(Value::Null),
            "set": cx.and_then(|c| c.set).map(set_value).unwrap_or(Value::Object(Map::new())),
        }))
    }

    fn render(&self, what: &str, template: &str, ctx: &Value) -> Result<String, ConnectorError> {
        self.env.render_str(template, ctx).map_err(|e| {
            ConnectorError::permanent(format!(
                "processor `{}`: connector `{}` ({}) could not render {what}: {}",
                self.spec.name,
                self.def.name,
                self.def.file,
                super::template::describe_error(&self.env, template, false, ctx, &e)
            ))
        })
    }

    fn secrets_hint(&self) -> String {
        let vars: Vec<&str> = self.spec.secrets.values().map(|s| s.as_str()).collect();
        if vars.is_empty() {
            String::new()
        } else {
            format!(": check {}", vars.join(", "))
        }
    }

    async fn send(
        &self,
        call: &Call,
        ctx: &Value,
        secrets: &BTreeMap<String, String>,
        page_url: Option<&str>,
    ) -> Result<(u16, HeaderMap, String), ConnectorError> {
        let url = match page_url {
            Some(u) => u.to_string(),
            None => self.build_url(call, ctx)?.to_string(),
        };
        let method = reqwest::Method::from_bytes(call.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| ConnectorError::permanent(format!("bad method {}", call.method)))?;
        let mut req = self
            .client
            .request(method, &url)
            .timeout(self.spec.timeout.unwrap_or(self.def.limits.timeout.get()));
        let sctx = serde_json::json!({ "secrets": secrets, "settings": self.spec.settings });
        match &self.def.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                req = req.basic_auth(
                    self.render("auth.username", username, &sctx)?,
                    Some(self.render("auth.password", password, &sctx)?),
                );
            }
            Auth::Bearer { token } => {
                req = req.bearer_auth(self.render("auth.token", token, &sctx)?);
            }
            Auth::Header { headers } => {
                for (k, v) in headers {
                    req = req.header(
                        header_name(k)?,
                        header_value(&self.render("an auth header", v, &sctx)?)?,
                    );
                }
            }
        }
        if !call.query.is_empty() && page_url.is_none() {
            let mut q = Vec::with_capacity(call.query.len());
            for (k, v) in &call.query {
                q.push((k.clone(), self.render("a query parameter", v, ctx)?));
            }
            req = req.query(&q);
        }
        for (k, v) in &call.headers {
            req = req.header(
                header_name(k)?,
                header_value(&self.render("a header", v, ctx)?)?,
            );
        }
        let mut sent_body: Vec<u8> = Vec::new();
        if let Some(j) = &call.json {
            let body = self.render("the JSON body", j, ctx)?;
            let parsed: Value = serde_json::from_str(&body).map_err(|e| {
                ConnectorError::permanent(format!(
                    "connector `{}`: the JSON body template does not render to JSON: {e}",
                    self.def.name
                ))
            })?;
            sent_body = serde_json::to_vec(&parsed).map_err(|e| {
                ConnectorError::permanent(format!("cannot encode the JSON body: {e}"))
            })?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(sent_body.clone());
        }
        if let Some(f) = &call.form {
            let mut form = Vec::with_capacity(f.len());
            for (k, v) in f {
                let value = self.render("a form field", v, ctx)?;
                if call.omit_empty && value.is_empty() {
                    continue;
                }
                form.push((k.clone(), value));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            sent_body = body.clone().into_bytes();
            req = req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        if let Some(sign) = &self.def.sign {
            let key = self.render("sign.secret", &sign.secret, &sctx)?;
            req = req.header(
                header_name(&sign.header)?,
                header_value(&format!("{}{}", sign.prefix, hmac_hex(&key, &sent_body)))?,
            );
        }
        super::lease::before_send(
            &call.method,
            self.spec.timeout.unwrap_or(self.def.limits.timeout.get()),
        )?;
        let resp = req.send().await.map_err(|e| {
            let what = super::send_failure(&e);
            ConnectorError::transient(format!(
                "processor `{}`: {what} ({})",
                self.spec.name,
                host_of(&self.spec.base_url)
            ))
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if let Some(e) =
            super::redirect::redirect_error(&self.spec.name, status, resp.url().as_str(), &headers)
        {
            return Err(e);
        }
        let body = resp.text().await.map_err(|e| {
            ConnectorError::transient(format!(
                "processor `{}`: reading the response failed: {}",
                self.spec.name,
                e.without_url()
            ))
        })?;
        Ok((status, headers, body))
    }

    /// Run an action's calls in order (and `for_each` loops over the calls after one).
    async fn run(
        &self,
        name: &'static str,
        action: &ActionDef,
        cx: Option<&CallContext<'_>>,
    ) -> Result<ActionRun, ConnectorError> {
        let secrets = self.secret_values()?;
        let mut st = RunState {
            action: name,
            calls: action.calls.len(),
            secrets,
            vars: Map::new(),
            data: Map::new(),
            evidence: Evidence::default(),
            seen: std::collections::HashSet::new(),
            lagging: None,
        };
        let calls = &action.calls;
        let mut iterated = false;
        let mut items_seen = 0usize;
        let mut i = 0;
        while i < calls.len() {
            let call = &calls[i];
            let doc = match self.exec(call, i, cx, None, &mut st, None).await? {
                Step::NotFound => {
                    return Ok(ActionRun {
                        not_found: true,
                        data: st.data,
                        evidence: st.evidence,
                        lagging: st.lagging,
                    })
                }
                Step::Done(doc) => doc,
            };
            let Some(ptr) = &call.for_each else {
                i += 1;
                continue;
            };
            // An optional list (an export's event log) may be empty without
            // meaning the subject is not here.
            iterated |= !call.optional;
            let end = calls[i + 1..]
                .iter()
                .position(|c| c.for_each.is_some())
                .map(|p| i + 1 + p)
                .unwrap_or(calls.len());
            let mut doc = doc;
            let mut pages = 1usize;
            loop {
                let (items, listed) = self.items(call, i, ptr, doc.as_ref(), cx, &mut st)?;
                if !call.optional {
                    items_seen += items.len();
                }
                if call.keep_items {
                    for item in &items {
                        st.record(call_name(call, i), item.clone(), true);
                    }
                }
                for item in &items {
                    for (j, inner) in calls.iter().enumerate().take(end).skip(i + 1) {
                        if let Step::NotFound =
                            self.exec(inner, j, cx, Some(item), &mut st, None).await?
                        {
                            // This element is already gone; go on with the next one.
                            break;
                        }
                    }
                }
                let next = call
                    .next_page
                    .as_ref()
                    .and_then(|np| doc.as_ref().and_then(|d| d.pointer(np)))
                    .and_then(|v| v.as_str())
                    .filter(|u| !u.is_empty())
                    .map(|u| self.same_origin(u))
                    .transpose()?;
                // A page with no elements ends the list even if it links a next
                // one (Mailgun's events always carry `paging.next`).
                let Some(next) = next.filter(|_| listed > 0) else {
                    break;
                };
                pages += 1;
                if pages > MAX_PAGES {
                    return Err(ConnectorError::permanent(format!(
                        "processor `{}`: more than {MAX_PAGES} pages for call {i}; stopping",
                        self.spec.name
                    )));
                }
                doc = match self.exec(call, i, cx, None, &mut st, Some(&next)).await? {
                    Step::NotFound => break,
                    Step::Done(d) => d,
                };
            }
            i = end;
        }
        Ok(ActionRun {
            not_found: iterated && items_seen == 0,
            data: st.data,
            evidence: st.evidence,
            lagging: st.lagging,
        })
    }

    /// The `list` action: every page, every item's identities.
    async fn list_pages(
        &self,
        def: &super::definition::ListDef,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        use super::definition::Paging;
        let secrets = self.secret_values()?;
        let mut st = RunState {
            action: "list",
            calls: 1,
            secrets: secrets.clone(),
            vars: Map::new(),
            data: Map::new(),
            evidence: Evidence::default(),
            seen: std::collections::HashSet::new(),
            lagging: None,
        };
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        let mut after = String::new();
        let mut next_url: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut ctx = self.context(None, &st.vars, &st.secrets, None)?;
            ctx["page"] = serde_json::json!({
                "offset": offset,
                "size": def.page_size,
                "after": after,
            });
            // A cursor parameter is sent only once there is a cursor (Stripe
            // refuses an empty `starting_after`).
            let mut call = def.call.clone();
            if after.is_empty() {
                call.query.retain(|_, v| !v.contains("page.after"));
            }
            let (status, headers, body) = self
                .send(&call, &ctx, &secrets, next_url.as_deref())
                .await?;
            let rules = def.call.responses.merged(&self.def.responses);
            match classify(&rules, status, &body) {
                Class::Success => {}
                Class::NotFound => {
                    return Err(ConnectorError::permanent(format!(
                        "processor `{}`: the list call answered {status} (not found): is base_url or the list setting right?",
                        self.spec.name
                    )))
                }
                Class::Error(class) => {
                    return Err(self.error(class, status, &headers, &body, &rules, None))
                }
            }
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let shapes = def.call.expect.as_ref().or(rules.expect.as_ref());
            if let Err(why) = conforms(shapes.map(Vec::as_slice), status, content_type, &body) {
                return Err(self.unexpected(
                    "list",
                    "",
                    status,
                    content_type,
                    why,
                    shapes.map(Vec::as_slice),
                    false,
                ));
            }
            let doc: Value = serde_json::from_str(&body).map_err(|_| {
                ConnectorError::transient(format!(
                    "processor `{}` answered the list call with a body that is not JSON",
                    self.spec.name
                ))
            })?;
            let items = match doc.pointer(&def.items) {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Null) | None => vec![],
                Some(_) => {
                    return Err(ConnectorError::permanent(format!(
                        "processor `{}` answered the list call without a JSON array at `{}`; the API may have changed",
                        self.spec.name, def.items
                    )))
                }
            };
            for item in &items {
                for (kind, ptr) in &def.identities {
                    if let Some(Value::String(v)) = item.pointer(ptr) {
                        if !v.is_empty() {
                            out.push((kind.clone(), v.clone()));
                        }
                    }
                }
            }
            let more = def
                .has_more
                .as_ref()
                .map(|p| doc.pointer(p).and_then(Value::as_bool).unwrap_or(false));
            match def.paging {
                Paging::Offset => {
                    if items.len() < def.page_size as usize || items.is_empty() {
                        return Ok(out);
                    }
                    offset += items.len() as u64;
                }
                Paging::NextUrl => {
                    let next = def
                        .next_page
                        .as_ref()
                        .and_then(|p| doc.pointer(p))
                        .and_then(Value::as_str)
                        .filter(|u| !u.is_empty());
                    match next {
                        Some(u) if more != Some(false) && !items.is_empty() => {
                            next_url = Some(self.same_origin(u)?);
                        }
                        _ => return Ok(out),
                    }
                }
                Paging::AfterLast => {
                    let last = def
                        .cursor
                        .as_ref()
                        .and_then(|p| items.last().and_then(|i| i.pointer(p)))
                        .and_then(Value::as_str);
                    match last {
                        Some(c) if more == Some(true) => after = c.to_string(),
                        _ => return Ok(out),
                    }
                }
            }
            st.evidence.status = Some(status);
        }
        Err(ConnectorError::permanent(format!(
            "processor `{}`: more than {MAX_PAGES} pages in the list; stopping",
            self.spec.name
        )))
    }

    /// The elements a `for_each` iterates over in one response, after
    /// `for_each_if` and `unique_by`; and how many the response listed.
    fn items(
        &self,
        call: &Call,
        i: usize,
        ptr: &str,
        doc: Option<&Value>,
        cx: Option<&CallContext<'_>>,
        st: &mut RunState,
    ) -> Result<(Vec<Value>, usize), ConnectorError> {
        let items = match doc.map(|d| d.pointer(ptr)) {
            Some(Some(Value::Array(a))) => a.clone(),
            Some(Some(Value::Null) | None) => Vec::new(),
            // An optional call that found nothing (recorded as null).
            None if call.optional => Vec::new(),
            _ => {
                return Err(ConnectorError::permanent(format!(
                    "processor `{}` answered without a JSON array at `{ptr}` (for_each of call {i}); the API may have changed",
                    self.spec.name
                )))
            }
        };
        let listed = items.len();
        let items = match &call.for_each_if {
            None => items,
            Some(expr) => {
                let compiled = self.env.compile_expression(expr).map_err(|e| {
                    ConnectorError::permanent(format!(
                        "connector `{}`: for_each_if of call {i} does not compile: {e}",
                        self.def.name
                    ))
                })?;
                let mut kept = Vec::new();
                for item in items {
                    let ctx = self.context(cx, &st.vars, &st.secrets, Some(&item))?;
                    let keep = compiled.eval(&ctx).map_err(|e| {
                        ConnectorError::permanent(format!(
                            "connector `{}` ({}): for_each_if of call {i} failed: {}",
                            self.def.name,
                            self.def.file,
                            super::template::describe_error(&self.env, expr, true, &ctx, &e)
                        ))
                    })?;
                    if keep.is_true() {
                        kept.push(item);
                    }
                }
                kept
            }
        };
        let Some(p) = &call.unique_by else {
            return Ok((items, listed));
        };
        // An element an earlier lookup of this action found was acted on already.
        let kept = items
            .into_iter()
            .filter(|item| match item.pointer(p) {
                Some(Value::String(v)) => st.seen.insert(v.clone()),
                Some(v) if !v.is_null() => st.seen.insert(v.to_string()),
                _ => true,
            })
            .collect();
        Ok((kept, listed))
    }

    /// The one place a call's URL is built: the path template is rendered with
    /// every interpolated value percent-encoded as one segment (`| raw_path`
    /// for a value that is several segments, checked), then set on the base
    /// URL with the `url` crate. Refused, never sent: a path with an empty,
    /// `.` or `..` segment, `?` or `#`, or one the URL parser would rewrite
    /// (fewer or other segments than rendered, another origin).
    fn build_url(&self, call: &Call, ctx: &Value) -> Result<url::Url, ConnectorError> {
        let which = call
            .name
            .as_deref()
            .map(|n| format!("call `{n}`"))
            .unwrap_or_else(|| format!("path `{}`", call.path));
        let refuse = |why: &str| {
            ConnectorError::permanent(format!(
                "processor `{}`: connector `{}` {which}: the rendered URL path {why}; refused, nothing was sent (check the processor's settings and the subject's identity)",
                self.spec.name, self.def.name
            ))
        };
        let rendered = self.path_env.render_str(&call.path, ctx).map_err(|e| {
            ConnectorError::permanent(format!(
                "processor `{}`: connector `{}` ({}) could not render the path of {which}: {}",
                self.spec.name,
                self.def.name,
                self.def.file,
                super::template::describe_error(&self.path_env, &call.path, false, ctx, &e)
            ))
        })?;
        let Some(rest) = rendered.strip_prefix('/') else {
            return Err(refuse("does not start with `/`"));
        };
        if rendered.contains(['?', '#']) {
            return Err(refuse("contains `?` or `#`"));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        for seg in &segments {
            if seg.is_empty() {
                return Err(refuse("has an empty segment (`//`)"));
            }
            if super::template::has_dot_segment(seg) {
                return Err(refuse("has a `.` or `..` segment"));
            }
        }
        let base = url::Url::parse(&self.spec.base_url).map_err(|e| {
            ConnectorError::permanent(format!(
                "processor `{}`: base_url is not a URL ({e}): fix base_url in lethe.toml",
                self.spec.name
            ))
        })?;
        let base_segments: Vec<String> = base
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.set_path(&format!("{}{rendered}", base.path().trim_end_matches('/')));
        let built: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let expected = base_segments.len() + segments.len();
        if url.origin() != base.origin()
            || built.len() != expected
            || built[..base_segments.len()] != base_segments[..]
        {
            return Err(refuse("would leave the processor's base URL"));
        }
        Ok(url)
    }

    /// A next-page link, resolved against the base URL; only on the processor's
    /// own origin, so credentials never go to a host the config does not name.
    fn same_origin(&self, link: &str) -> Result<String, ConnectorError> {
        let base = url::Url::parse(&self.spec.base_url).map_err(|e| {
            ConnectorError::permanent(format!("processor `{}`: bad base_url: {e}", self.spec.name))
        })?;
        let next = base.join(link).map_err(|e| {
            ConnectorError::permanent(format!(
                "processor `{}` gave a next-page link that is not a URL: {e}",
                self.spec.name
            ))
        })?;
        if next.origin() != base.origin() {
            return Err(ConnectorError::permanent(format!(
                "processor `{}` gave a next-page link on another host ({}); not followed",
                self.spec.name,
                next.host_str().unwrap_or("?")
            )));
        }
        Ok(next.to_string())
    }

    /// One call: send, classify, extract. Returns the parsed body.
    async fn exec(
        &self,
        call: &Call,
        i: usize,
        cx: Option<&CallContext<'_>>,
        item: Option<&Value>,
        st: &mut RunState,
        page_url: Option<&str>,
    ) -> Result<Step, ConnectorError> {
        let subject = cx.map(|c| c.subject);
        let ctx = self.context(cx, &st.vars, &st.secrets, item)?;
        let (status, headers, body) = self.send(call, &ctx, &st.secrets, page_url).await?;
        if call.eventually_consistent {
            let after = call.recheck_after.map(|d| d.get());
            st.lagging = Some(st.lagging.flatten().max(after));
        }
        let rules = call.responses.merged(&self.def.responses);
        let class = classify(&rules, status, &body);
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let declared = match class {
            Class::Success => Some((call.expect.as_ref().or(rules.expect.as_ref()), false)),
            Class::NotFound => Some((rules.expect_not_found.as_ref(), true)),
            Class::Error(_) => None,
        };
        if let Some((shapes, not_found)) = declared {
            if let Err(why) = conforms(shapes.map(Vec::as_slice), status, content_type, &body) {
                let which = match &call.name {
                    Some(n) => format!(" call `{n}`"),
                    None if st.calls > 1 => format!(" call {i}"),
                    None => String::new(),
                };
                return Err(self.unexpected(
                    st.action,
                    &which,
                    status,
                    content_type,
                    why,
                    shapes.map(Vec::as_slice),
                    not_found,
                ));
            }
        }
        match class {
            Class::Success => {}
            Class::NotFound if call.optional => {
                if call.keep {
                    st.record(call_name(call, i), Value::Null, item.is_some());
                }
                return Ok(Step::Done(None));
            }
            Class::NotFound => {
                st.evidence.status = Some(status);
                return Ok(Step::NotFound);
            }
            Class::Error(class) => {
                return Err(self.error(class, status, &headers, &body, &rules, subject))
            }
        }
        let json: Option<Value> = if body.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&body).ok()
        };
        if !call.extract.is_empty() || call.reference.is_some() || call.for_each.is_some() {
            let Some(doc) = &json else {
                return Err(ConnectorError {
                    class: ErrorClass::Transient,
                    message: format!(
                        "processor `{}` answered HTTP {status} with a body that is not JSON; expected JSON to read the response",
                        self.spec.name
                    ),
                    status: Some(status),
                    retry_after: None,
                });
            };
            for (var, ptr) in &call.extract {
                match doc.pointer(ptr).filter(|v| !v.is_null()) {
                    Some(v) => {
                        st.vars.insert(var.clone(), v.clone());
                    }
                    None if call.missing_means_not_found => {
                        st.evidence.status = Some(status);
                        return Ok(Step::NotFound);
                    }
                    None => {
                        return Err(ConnectorError {
                            class: ErrorClass::Permanent,
                            message: format!(
                                "processor `{}` answered HTTP {status} without `{ptr}` (needed for `{var}`); the API may have changed",
                                self.spec.name
                            ),
                            status: Some(status),
                            retry_after: None,
                        })
                    }
                }
            }
            if let Some(ptr) = &call.reference {
                if let Some(v) = doc.pointer(ptr) {
                    st.evidence.reference = Some(match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                }
            }
        }
        if !call.echo.is_empty() {
            self.check_echo(call, &ctx, json.as_ref(), status, st)?;
        }
        st.evidence.status = Some(status);
        let value = match &json {
            Some(v) => v.clone(),
            None if body.is_empty() => Value::Null,
            None => Value::String(body),
        };
        if !call.keep {
            return Ok(Step::Done(json));
        }
        st.record(
            call_name(call, i),
            value,
            item.is_some() || call.next_page.is_some(),
        );
        Ok(Step::Done(json))
    }

    /// A rectification's answer must show every new value it sent (`echo`):
    /// compared here, never copied into evidence or messages (only field
    /// names are). The fields proven are noted in the evidence.
    fn check_echo(
        &self,
        call: &Call,
        ctx: &Value,
        json: Option<&Value>,
        status: u16,
        st: &mut RunState,
    ) -> Result<(), ConnectorError> {
        let mut proven = vec![];
        for (field, ptr) in &call.echo {
            let Some(want) = ctx
                .pointer(&format!("/set/{field}"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let got = json.and_then(|d| d.pointer(ptr)).and_then(Value::as_str);
            let same = got
                .is_some_and(|g| g == want || (field == "email" && g.eq_ignore_ascii_case(want)));
            if !same {
                return Err(ConnectorError {
                    class: ErrorClass::Transient,
                    message: format!(
                        "processor `{}`: the answer to {} (HTTP {status}) does not show the new `{field}` at `{ptr}`; not recorded as rectified",
                        self.spec.name, st.action
                    ),
                    status: Some(status),
                    retry_after: None,
                });
            }
            proven.push(field.clone());
        }
        if !proven.is_empty() {
            st.evidence.note = Some(format!("the answer shows the new {}", proven.join(", ")));
        }
        Ok(())
    }

    /// Run an `object` or `rectify` action.
    async fn run_change(
        &self,
        name: &'static str,
        cx: CallContext<'_>,
    ) -> Result<Changed, ConnectorError> {
        let action = self.action(name)?;
        if let Some(ev) = self.needs_missing_identity(action, cx.subject) {
            return Ok(Changed::NotFound(ev));
        }
        let run = self.run(name, action, Some(&cx)).await?;
        if run.not_found {
            return Ok(Changed::NotFound(self.not_found_evidence(run, &cx, true)?));
        }
        Ok(Changed::Done(run.evidence))
    }

    /// A success (or not-found) answer that is not what the API answers: a
    /// login page, invalid JSON, a JSON error body. Transient: a wrong base_url
    /// or a processor's bad moment, which the retry policy ends by failing the
    /// step. The body is never quoted (it may echo personal data).
    #[allow(clippy::too_many_arguments)]
    fn unexpected(
        &self,
        action: &str,
        which: &str,
        status: u16,
        content_type: Option<&str>,
        why: Mismatch,
        shapes: Option<&[Expect]>,
        not_found: bool,
    ) -> ConnectorError {
        let ct = content_type
            .map(media_type)
            .map(|m| {
                m.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(80)
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "none".into());
        let reason = why.describe();
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(", {reason}")
        };
        let expected = match shapes {
            Some(l) => l
                .iter()
                .map(Expect::describe)
                .collect::<Vec<_>>()
                .join(" or "),
            None => "an API answer, not an HTML page".into(),
        };
        let kind = if not_found { " for \"not found\"" } else { "" };
        ConnectorError {
            class: ErrorClass::Transient,
            message: format!(
                "processor `{}`: unexpected response to {action}{which} (HTTP {status}, content-type {ct}{reason}; expected {expected}{kind}): check base_url",
                self.spec.name
            ),
            status: Some(status),
            retry_after: None,
        }
    }

    fn error(
        &self,
        class: ErrorClass,
        status: u16,
        headers: &HeaderMap,
        body: &str,
        rules: &Responses,
        subject: Option<&Subject>,
    ) -> ConnectorError {
        let detail = error_detail(body, rules);
        let detail = match subject {
            Some(s) => scrub(&detail, s),
            None => detail,
        };
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        let p = &self.spec.name;
        let message = match (class, status) {
            (ErrorClass::Throttled, _) => {
                format!("processor `{p}` is throttling (HTTP {status}){detail}")
            }
            (ErrorClass::Transient | ErrorClass::Recheck, _) => {
                format!("processor `{p}` is unavailable (HTTP {status}){detail}")
            }
            (ErrorClass::Permanent, 401 | 403) => {
                format!(
                    "credentials rejected by processor `{p}` (HTTP {status}{detail}){}",
                    self.secrets_hint()
                )
            }
            (ErrorClass::Permanent, _) => {
                format!("processor `{p}` refused the request (HTTP {status}){detail}")
            }
        };
        ConnectorError {
            class,
            message,
            status: Some(status),
            retry_after: retry_after(headers),
        }
    }

    fn needs_missing_identity(&self, action: &ActionDef, subject: &Subject) -> Option<Evidence> {
        if action.requires.is_empty() {
            return None;
        }
        let v = subject_value(subject);
        if action.requires.iter().any(|r| v.get(r).is_some()) {
            return None;
        }
        Some(Evidence {
            status: None,
            reference: None,
            note: Some(format!(
                "the subject has no {} to look up at this processor",
                action.requires.join(" or ")
            )),
        })
    }

    fn action(&self, name: &str) -> Result<&ActionDef, ConnectorError> {
        let a = match name {
            "lookup" => self.def.actions.lookup.as_ref(),
            "export" => self.def.actions.export.as_ref(),
            "erase" => self.def.actions.erase.as_ref(),
            "verify" => self
                .def
                .actions
                .verify
                .as_ref()
                .or(self.def.actions.lookup.as_ref()),
            "purge" => self.def.actions.purge.as_ref(),
            "object" => self.def.actions.object.as_ref(),
            "rectify" => self.def.actions.rectify.as_ref(),
            _ => None,
        };
        a.ok_or_else(|| {
            ConnectorError::permanent(format!(
                "connector `{}` has no `{name}` action (processor `{}`)",
                self.def.name, self.spec.name
            ))
        })
    }

    /// The evidence of a "not found", once it can be believed. When a search
    /// whose index lags took part, the evidence says so; and if the definition
    /// gives `recheck_after`, a first attempt's "not found" is not believed yet:
    /// a transient error asks the engine to search again after the lag.
    fn not_found_evidence(
        &self,
        run: ActionRun,
        cx: &CallContext<'_>,
        recheck: bool,
    ) -> Result<Evidence, ConnectorError> {
        let Some(lag) = run.lagging else {
            return Ok(run.evidence);
        };
        if let (Some(after), true, Some(1)) = (lag, recheck, cx.attempt()) {
            return Err(ConnectorError {
                class: ErrorClass::Recheck,
                message: format!(
                    "processor `{}`: nothing found, but by a search whose index can lag by {}: searching again after that before believing it",
                    self.spec.name,
                    crate::domain::HumanDuration(after)
                ),
                status: run.evidence.status,
                retry_after: Some(after),
            });
        }
        Ok(Evidence {
            note: Some(LAGGING_SEARCH_NOTE.to_string()),
            ..run.evidence
        })
    }

    async fn run_erase(
        &self,
        name: &'static str,
        action: &ActionDef,
        cx: CallContext<'_>,
        recheck: bool,
    ) -> Result<Erase, ConnectorError> {
        if let Some(ev) = self.needs_missing_identity(action, cx.subject) {
            return Ok(Erase::NotFound(ev));
        }
        let run = self.run(name, action, Some(&cx)).await?;
        if run.not_found {
            return Ok(Erase::NotFound(self.not_found_evidence(run, &cx, recheck)?));
        }
        Ok(match action.effect {
            EraseEffect::Erased => Erase::Erased(run.evidence),
            EraseEffect::SoftDeleted => Erase::SoftDeleted {
                evidence: run.evidence,
                window: self
                    .spec
                    .soft_delete_window
                    .or(self.def.soft_delete_window.map(|w| w.get()))
                    .unwrap_or(Duration::from_secs(30 * 86400)),
            },
            EraseEffect::Retained => {
                let reason = action.retained_reason.clone().unwrap_or_default();
                Erase::Retained {
                    evidence: Evidence {
                        note: Some(reason.clone()),
                        ..run.evidence
                    },
                    reason,
                }
            }
        })
    }
}

#[async_trait]
impl Connector for HttpConnector {
    fn can_sweep(&self) -> bool {
        self.def.sweep.is_some()
    }
    fn sweep_batch(&self) -> usize {
        match self.def.sweep.as_deref() {
            Some("dropbox_files") => dropbox_sweep::DROPBOX_BATCH,
            _ => 100,
        }
    }
    async fn sweep_list(
        &self,
        q: &super::sweep::SweepQuery<'_>,
    ) -> Result<Vec<super::sweep::SweepCandidate>, ConnectorError> {
        match self.def.sweep.as_deref() {
            Some("zendesk_tickets") => self.zendesk_sweep_list(q).await,
            Some("dropbox_files") => self.dropbox_sweep_list(q).await,
            _ => Err(ConnectorError::permanent(format!(
                "processor `{}`: connector `{}` has no retention sweep",
                self.spec.name, self.def.name
            ))),
        }
    }
    async fn sweep_delete(
        &self,
        _q: &super::sweep::SweepQuery<'_>,
        items: &[super::sweep::SweepCandidate],
    ) -> Result<Vec<super::sweep::SweepOutcome>, ConnectorError> {
        match self.def.sweep.as_deref() {
            Some("zendesk_tickets") => self.zendesk_sweep_delete(items).await,
            Some("dropbox_files") => self.dropbox_sweep_delete(items).await,
            _ => Err(ConnectorError::permanent(format!(
                "processor `{}`: connector `{}` has no retention sweep",
                self.spec.name, self.def.name
            ))),
        }
    }
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
        self.def.actions.purge.is_some()
    }

    async fn check(&self) -> Result<Evidence, ConnectorError> {
        let call = self.def.check.as_ref().ok_or_else(|| {
            ConnectorError::permanent(format!(
                "connector `{}` defines no `check` call",
                self.def.name
            ))
        })?;
        let action = ActionDef {
            fields: vec![],
            requires: vec![],
            effect: EraseEffect::Erased,
            retained_reason: None,
            calls: vec![call.clone()],
        };
        let run = self.run("check", &action, None).await?;
        if run.not_found {
            return Err(ConnectorError::permanent(format!(
                "processor `{}`: the check call answered {} (not found): is base_url right?",
                self.spec.name,
                run.evidence.status.unwrap_or(0)
            )));
        }
        Ok(run.evidence)
    }

    async fn list_identities(&self) -> Option<Result<Vec<(String, String)>, ConnectorError>> {
        let def = self.def.actions.list.as_ref()?;
        Some(self.list_pages(def).await)
    }

    async fn lookup(&self, cx: CallContext<'_>) -> Result<Lookup, ConnectorError> {
        let action = self.action("lookup")?;
        if let Some(ev) = self.needs_missing_identity(action, cx.subject) {
            return Ok(Lookup::NotFound(ev));
        }
        let run = self.run("lookup", action, Some(&cx)).await?;
        Ok(if run.not_found {
            Lookup::NotFound(self.not_found_evidence(run, &cx, true)?)
        } else {
            Lookup::Found(run.evidence)
        })
    }

    async fn export(&self, cx: CallContext<'_>) -> Result<Export, ConnectorError> {
        let action = self.action("export")?;
        if let Some(ev) = self.needs_missing_identity(action, cx.subject) {
            return Ok(Export::NotFound(ev));
        }
        let run = self.run("export", action, Some(&cx)).await?;
        Ok(if run.not_found {
            Export::NotFound(self.not_found_evidence(run, &cx, true)?)
        } else {
            Export::Data {
                data: Value::Object(run.data),
                evidence: run.evidence,
            }
        })
    }

    async fn erase(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        let action = self.action("erase")?;
        self.run_erase("erase", action, cx, true).await
    }

    async fn verify(&self, cx: CallContext<'_>) -> Result<Verify, ConnectorError> {
        let action = self.action("verify")?;
        if let Some(ev) = self.needs_missing_identity(action, cx.subject) {
            return Ok(Verify::Clean(ev));
        }
        let run = self.run("verify", action, Some(&cx)).await?;
        Ok(if run.not_found {
            // After a recovery window: the lag is long past, no re-check.
            Verify::Clean(self.not_found_evidence(run, &cx, false)?)
        } else {
            Verify::StillPresent(run.evidence)
        })
    }

    async fn purge(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        let action = self.action("purge")?;
        let mut a = action.clone();
        a.effect = EraseEffect::Erased;
        self.run_erase("purge", &a, cx, false).await
    }

    async fn object(&self, cx: CallContext<'_>) -> Result<Changed, ConnectorError> {
        self.run_change("object", cx).await
    }

    async fn rectify(&self, cx: CallContext<'_>) -> Result<Changed, ConnectorError> {
        self.run_change("rectify", cx).await
    }
}

#[derive(Clone, Copy)]
enum Class {
    Success,
    NotFound,
    Error(ErrorClass),
}

/// Why a response does not match its declared shapes.
#[derive(Debug, PartialEq)]
enum Mismatch {
    /// No shape is for this status.
    Status,
    /// Several shapes applied and none matched.
    NoShape,
    /// An HTML page where no shape is declared.
    Html,
    /// The wrong (or no) content type.
    ContentType,
    /// A body where none belongs.
    NotEmpty,
    /// JSON declared; the body does not parse.
    NotJson,
    /// The pointer is absent (or null).
    Missing(String),
    /// The pointer has another value (not shown: it may be personal data).
    Value(String),
    /// A pointer that marks an error body is there.
    ErrorBody(String),
}

impl Mismatch {
    fn describe(&self) -> String {
        match self {
            Mismatch::Status => "a status not declared as success".into(),
            Mismatch::NoShape | Mismatch::ContentType | Mismatch::Html => String::new(),
            Mismatch::NotEmpty => "a body where none is expected".into(),
            Mismatch::NotJson => "the body is not valid JSON".into(),
            Mismatch::Missing(p) => format!("no {p} in the body"),
            Mismatch::Value(p) => format!("another value at {p}"),
            Mismatch::ErrorBody(p) => format!("an error body ({p})"),
        }
    }
}

/// Is `ct` an HTML page's content type, or does the body look like one?
fn looks_like_html(ct: Option<&str>, body: &str) -> bool {
    let m = ct.map(media_type).unwrap_or_default();
    if m == "text/html" || m == "application/xhtml+xml" {
        return true;
    }
    let head: String = body
        .trim_start()
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// Does a response match one of the declared shapes? Without a declaration,
/// anything but an HTML page does.
fn conforms(
    shapes: Option<&[Expect]>,
    status: u16,
    ct: Option<&str>,
    body: &str,
) -> Result<(), Mismatch> {
    let Some(shapes) = shapes else {
        return if looks_like_html(ct, body) {
            Err(Mismatch::Html)
        } else {
            Ok(())
        };
    };
    let applicable: Vec<&Expect> = shapes.iter().filter(|e| e.applies_to(status)).collect();
    let mut first = None;
    for e in &applicable {
        match matches_shape(e, ct, body) {
            Ok(()) => return Ok(()),
            Err(m) => {
                first.get_or_insert(m);
            }
        }
    }
    match (applicable.len(), first) {
        (0, _) => Err(Mismatch::Status),
        (1, Some(m)) => Err(m),
        _ => Err(Mismatch::NoShape),
    }
}

fn matches_shape(e: &Expect, ct: Option<&str>, body: &str) -> Result<(), Mismatch> {
    let kind = e.body_kind();
    if kind == BodyKind::Empty {
        return if body.trim().is_empty() {
            Ok(())
        } else {
            Err(Mismatch::NotEmpty)
        };
    }
    if !e.content_type_ok(ct) {
        return Err(Mismatch::ContentType);
    }
    if kind == BodyKind::Any {
        return Ok(());
    }
    let json: Value = serde_json::from_str(body).map_err(|_| Mismatch::NotJson)?;
    if let Some(p) = e
        .absent
        .iter()
        .find(|p| json.pointer(p).is_some_and(|v| !v.is_null()))
    {
        return Err(Mismatch::ErrorBody(p.clone()));
    }
    let Some(p) = &e.pointer else { return Ok(()) };
    let found = json
        .pointer(p)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Mismatch::Missing(p.clone()))?;
    if let Some(want) = &e.equals {
        let same = found == want
            || match (found, want) {
                (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
                    n.to_string() == *s
                }
                _ => false,
            };
        if !same {
            return Err(Mismatch::Value(p.clone()));
        }
    }
    Ok(())
}

fn classify(rules: &Responses, status: u16, body: &str) -> Class {
    if let Some(when) = &rules.when {
        let json = serde_json::from_str::<Value>(body).ok();
        if let Some(rule) = when.iter().find(|r| r.matches(status, body, json.as_ref())) {
            return match rule.then {
                RuleOutcome::Success => Class::Success,
                RuleOutcome::NotFound => Class::NotFound,
                RuleOutcome::Throttled => Class::Error(ErrorClass::Throttled),
                RuleOutcome::Transient => Class::Error(ErrorClass::Transient),
                RuleOutcome::Permanent => Class::Error(ErrorClass::Permanent),
            };
        }
    }
    let within = |l: &Option<Vec<u16>>| l.as_ref().is_some_and(|l| l.contains(&status));
    let success = match &rules.success {
        Some(l) => l.contains(&status),
        None => (200..300).contains(&status),
    };
    if success {
        return Class::Success;
    }
    let not_found = match &rules.not_found {
        Some(l) => l.contains(&status),
        None => status == 404,
    };
    if not_found {
        return Class::NotFound;
    }
    let throttled = match &rules.throttled {
        Some(l) => l.contains(&status),
        None => status == 429,
    };
    if throttled || (within(&rules.throttled_without_body) && body.trim().is_empty()) {
        return Class::Error(ErrorClass::Throttled);
    }
    if within(&rules.transient) || matches!(status, 408 | 425) || status >= 500 {
        return Class::Error(ErrorClass::Transient);
    }
    Class::Error(ErrorClass::Permanent)
}

fn error_detail(body: &str, rules: &Responses) -> String {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        // Not JSON: a short, single-line excerpt, or nothing for HTML pages.
        let t = body.trim();
        if t.is_empty() || t.starts_with('<') {
            return String::new();
        }
        return excerpt(t.lines().next().unwrap_or(""), 160);
    };
    let pointers: Vec<&str> = match &rules.error_message {
        Some(l) => l.iter().map(|s| s.as_str()).collect(),
        None => DEFAULT_ERROR_POINTERS.to_vec(),
    };
    for p in pointers {
        if let Some(Value::String(s)) = json.pointer(p) {
            return excerpt(s, 300);
        }
    }
    String::new()
}

/// At most `max` characters of a processor's text. A cut never ends inside a
/// word: a half identity (`jane.do…`) would slip past the scrubber, which
/// only recognises whole ones, so the cut word is dropped.
fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    let whole = match cut.rfind(char::is_whitespace) {
        Some(i) => cut[..i].trim_end(),
        None => "",
    };
    format!("{whole} …")
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86400.0 * 7.0)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn subject_value(s: &Subject) -> Value {
    let mut m = Map::new();
    if let Some(e) = &s.email {
        m.insert("email".into(), Value::String(e.expose().to_string()));
        // As the subject gave it, for APIs that compare addresses case-sensitively.
        m.insert(
            "email_as_given".into(),
            Value::String(e.as_given().to_string()),
        );
    }
    if let Some(p) = &s.phone {
        m.insert("phone".into(), Value::String(p.expose().to_string()));
    }
    if let Some(c) = &s.customer_id {
        m.insert("customer_id".into(), Value::String(c.expose().to_string()));
    }
    if let Some(n) = &s.name {
        m.insert("name".into(), Value::String(n.expose().to_string()));
    }
    Value::Object(m)
}

/// A rectification's new values for templates: only the fields it sets
/// (`{{ set | tojson }}` is a body with exactly the changed fields).
fn set_value(s: &Subject) -> Value {
    let mut v = subject_value(s);
    if let Value::Object(m) = &mut v {
        m.remove("email_as_given");
    }
    v
}

fn call_name(call: &Call, i: usize) -> String {
    call.name.clone().unwrap_or_else(|| format!("call_{i}"))
}

fn header_name(k: &str) -> Result<HeaderName, ConnectorError> {
    HeaderName::from_bytes(k.as_bytes())
        .map_err(|_| ConnectorError::permanent(format!("`{k}` is not a valid header name")))
}

fn header_value(v: &str) -> Result<HeaderValue, ConnectorError> {
    HeaderValue::from_str(v)
        .map_err(|_| ConnectorError::permanent("a header value has characters HTTP does not allow"))
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn hmac_hex(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn host_of(base: &str) -> String {
    url::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::connectors::definition::ConnectorDef;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn connector(server: &MockServer, text: &str) -> HttpConnector {
        let def = ConnectorDef::parse("t.toml", text).expect("definition");
        let spec = ProcessorSpec {
            config_file: "lethe.toml".into(),
            name: "p".into(),
            base_url: server.uri(),
            settings: [(
                "folder".to_string(),
                "/c/{{ subject.customer_id }}".to_string(),
            )]
            .into_iter()
            .collect(),
            secrets: BTreeMap::new(),
            concurrency: 1,
            soft_delete_window: None,
            rate_per_second: None,
            category: Category::Other,
            timeout: None,
        };
        HttpConnector::new(spec, Arc::new(def), reqwest::Client::new())
    }

    const LOOP: &str = r#"
name = "looping"
category = "sms"
[actions.export]
[[actions.export.calls]]
path = "/list"
query = { to = "{{ subject.phone }}" }
for_each = "/items"
[[actions.erase.calls]]
name = "list"
path = "/list"
query = { to = "{{ subject.phone }}" }
for_each = "/items"
[[actions.erase.calls]]
name = "deleted"
method = "DELETE"
path = "/items/{{ item.sid }}"
[[actions.erase.calls]]
name = "folder"
path = "/folders{{ settings.folder | raw_path }}"
"#;

    fn subject() -> Subject {
        Subject::parse(None, Some("+442079460958"), Some("c42"), None).unwrap()
    }

    #[tokio::test]
    async fn for_each_runs_the_following_calls_once_per_element_and_skips_gone_ones() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .and(query_param("to", "+442079460958"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"items": [{"sid": "a"}, {"sid": "b"}, {"sid": "c"}]}),
            ))
            .mount(&server)
            .await;
        for (sid, status) in [("a", 204), ("b", 404), ("c", 204)] {
            Mock::given(method("DELETE"))
                .and(path(format!("/items/{sid}")))
                .respond_with(ResponseTemplate::new(status))
                .expect(1)
                .mount(&server)
                .await;
        }
        // The setting is a template over the subject. This call is in the loop body
        // too: it runs for `a` and `c`, not for `b`, whose DELETE found it gone.
        Mock::given(method("GET"))
            .and(path("/folders/c/c42"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
            .expect(2)
            .mount(&server)
            .await;
        let c = connector(&server, LOOP);
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        let e = c.erase(cx).await.expect("erase");
        assert!(matches!(e, Erase::Erased(_)), "{e:?}");
        server.verify().await;
    }

    #[tokio::test]
    async fn an_id_from_a_response_stays_one_path_segment_and_a_dot_segment_is_never_sent() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"items": [{"sid": "a/b?c#d"}, {"sid": "../../admin"}]}),
            ))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/folders/c/c42"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
            .mount(&server)
            .await;
        let c = connector(&server, LOOP);
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        // `../../admin` encodes to one segment, but a server that decodes `%2F`
        // would climb: refused, the call is not sent.
        let e = c.erase(cx).await.expect_err("refused");
        assert!(e.to_string().contains("`.` or `..` segment"), "{e}");
        let deletes: Vec<String> = server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == "DELETE")
            .map(|r| r.url.path().to_string())
            .collect();
        assert_eq!(
            deletes,
            ["/items/a%2Fb%3Fc%23d"],
            "an id is one encoded segment under /items; a climbing one is never sent"
        );

        // An item id that is exactly `..` is refused, never sent as `/items/..` (= `/`).
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"items": [{"sid": ".."}]})),
            )
            .mount(&server)
            .await;
        let c = connector(&server, LOOP);
        let e = c.erase(cx).await.expect_err("refused");
        assert!(e.to_string().contains("`.` or `..` segment"), "{e}");
        assert!(server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .all(|r| r.method.as_str() == "GET"));
    }

    #[tokio::test]
    async fn for_each_over_an_empty_array_means_not_found() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"items": []})),
            )
            .mount(&server)
            .await;
        let c = connector(&server, LOOP);
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        let ex = c.export(cx).await.expect("export");
        assert!(matches!(ex, Export::NotFound(_)), "{ex:?}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    const PAGED: &str = r#"
name = "paged"
category = "sms"
[actions.export]
[[actions.export.calls]]
name = "pages"
path = "/list"
for_each = "/items"
next_page = "/next"
[actions.erase]
[[actions.erase.calls]]
path = "/list"
for_each = "/items"
next_page = "/next"
for_each_if = "item.to == subject.phone"
[[actions.erase.calls]]
method = "DELETE"
path = "/items/{{ item.sid }}"
"#;

    /// A `list` action with the given paging keys, over `/customers`.
    fn lister(server: &MockServer, paging: &str) -> HttpConnector {
        let text = format!(
            r#"
name = "lister"
category = "other"
[actions.export]
[[actions.export.calls]]
path = "/x"
[[actions.erase.calls]]
path = "/x"
[actions.list]
items = "/data"
identities = {{ email = "/email", phone = "/phone" }}
page_size = 2
{paging}
[actions.list.call]
path = "/customers"
query = {{ limit = "{{{{ page.size }}}}", offset = "{{{{ page.offset }}}}", starting_after = "{{{{ page.after }}}}" }}
"#
        );
        connector(server, &text)
    }

    #[tokio::test]
    async fn list_after_last_sends_the_cursor_only_from_the_second_page_and_stops_without_has_more()
    {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/customers"))
            .and(query_param("starting_after", "cus_2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [{"id": "cus_3", "email": "c@example.com"}], "has_more": false
            })))
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/customers"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [{"id": "cus_1", "email": "a@example.com", "phone": null},
                         {"id": "cus_2", "email": "b@example.com", "phone": "+442079460958"}],
                "has_more": true
            })))
            .expect(1)
            .with_priority(2)
            .mount(&server)
            .await;
        let c = lister(
            &server,
            "paging = \"after_last\"\ncursor = \"/id\"\nhas_more = \"/has_more\"",
        );
        let got = c.list_identities().await.expect("can list").unwrap();
        assert_eq!(
            got,
            vec![
                ("email".to_string(), "a@example.com".to_string()),
                ("email".to_string(), "b@example.com".to_string()),
                ("phone".to_string(), "+442079460958".to_string()),
                ("email".to_string(), "c@example.com".to_string()),
            ]
        );
        let first = &server.received_requests().await.unwrap()[0];
        assert!(
            !first.url.query().unwrap_or("").contains("starting_after"),
            "no empty cursor on the first page: {}",
            first.url
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn list_offset_pages_until_a_short_page_and_next_url_stays_on_the_processor() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/customers"))
            .and(query_param("offset", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [{"email": "c@example.com"}]
            })))
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/customers"))
            .and(query_param("offset", "0"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [{"email": "a@example.com"}, {"email": "b@example.com"}]
            })))
            .expect(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let c = lister(&server, "paging = \"offset\"");
        let got = c.list_identities().await.expect("can list").unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        server.verify().await;

        // next_url to another host is refused, never followed.
        let other = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/customers"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "data": [{"email": "a@example.com"}],
                "links": {"next": "https://evil.example/customers?page[after]=x"},
                "meta": {"has_more": true}
            })))
            .mount(&other)
            .await;
        let c = lister(
            &other,
            "paging = \"next_url\"\nnext_page = \"/links/next\"\nhas_more = \"/meta/has_more\"",
        );
        assert!(c.list_identities().await.expect("can list").is_err());
        // A connector without `list` cannot enumerate.
        assert!(connector(&other, LOOP).list_identities().await.is_none());
    }

    #[tokio::test]
    async fn next_page_is_followed_and_for_each_if_keeps_only_matching_elements() {
        let server = MockServer::start().await;
        let next = format!("{}/list?page=2", server.uri());
        Mock::given(method("GET"))
            .and(path("/list"))
            .and(query_param("page", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "items": [{"sid": "c", "to": "+442079460958"}], "next": null
            })))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "items": [{"sid": "a", "to": "+442079460958"}, {"sid": "b", "to": "+15550001111"}],
                "next": next
            })))
            .with_priority(2)
            .mount(&server)
            .await;
        for sid in ["a", "c"] {
            Mock::given(method("DELETE"))
                .and(path(format!("/items/{sid}")))
                .respond_with(ResponseTemplate::new(204))
                .expect(1)
                .mount(&server)
                .await;
        }
        Mock::given(method("DELETE"))
            .and(path("/items/b"))
            .respond_with(ResponseTemplate::new(204))
            .expect(0)
            .mount(&server)
            .await;
        let c = connector(&server, PAGED);
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        assert!(matches!(c.erase(cx).await.unwrap(), Erase::Erased(_)));
        let Export::Data { data, .. } = c.export(cx).await.unwrap() else {
            panic!("no data")
        };
        assert_eq!(data["pages"].as_array().map(Vec::len), Some(2), "{data}");
        server.verify().await;
    }

    #[tokio::test]
    async fn a_next_page_link_to_another_host_is_not_followed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/list"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "items": [], "next": "https://elsewhere.example/list?page=2"
            })))
            .mount(&server)
            .await;
        let c = connector(&server, PAGED);
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        let e = c.export(cx).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("another host"), "{e}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sign_sends_an_hmac_of_the_exact_body() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/erase"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        std::env::set_var("LETHE_UNIT_SIGNING", "s3cret");
        let text = r#"
name = "signed"
category = "other"
secrets = ["k"]
[sign]
header = "X-Sig"
secret = "{{ secrets.k }}"
[actions.export]
[[actions.export.calls]]
path = "/x"
[actions.erase]
[[actions.erase.calls]]
method = "POST"
path = "/erase"
json = '{"subject": {{ subject | tojson }}}'
"#;
        let def = ConnectorDef::parse("t.toml", text).unwrap();
        let spec = ProcessorSpec {
            config_file: "lethe.toml".into(),
            name: "p".into(),
            base_url: server.uri(),
            settings: BTreeMap::new(),
            secrets: [("k".to_string(), "LETHE_UNIT_SIGNING".to_string())]
                .into_iter()
                .collect(),
            concurrency: 1,
            soft_delete_window: None,
            rate_per_second: None,
            category: Category::Other,
            timeout: None,
        };
        let c = HttpConnector::new(spec, Arc::new(def), reqwest::Client::new());
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        c.erase(cx).await.expect("erase");
        let req = &server.received_requests().await.unwrap()[0];
        let sig = req.headers.get("x-sig").unwrap().to_str().unwrap();
        assert_eq!(sig, format!("sha256={}", hmac_hex("s3cret", &req.body)));
        // Computed independently: python3 -c "import hmac,hashlib;print(hmac.new(b'key',b'The quick brown fox jumps over the lazy dog',hashlib.sha256).hexdigest())"
        assert_eq!(
            hmac_hex("key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn the_stripe_search_query_quotes_the_email_and_escapes_an_apostrophe() {
        let (_, text) = crate::connectors::definition::BUILTIN
            .iter()
            .find(|(f, _)| *f == "stripe.toml")
            .expect("stripe.toml");
        let def = ConnectorDef::parse("stripe.toml", text).expect("definition");
        let erase = def.actions.erase.expect("erase");
        let search = erase
            .calls
            .iter()
            .find(|c| c.path == "/v1/customers/search")
            .expect("a search call");
        assert!(search.eventually_consistent && search.recheck_after.is_some());
        let s = Subject::parse(Some("Pat.O'Brien@Example.com"), None, None, None).unwrap();
        let ctx = serde_json::json!({ "subject": subject_value(&s) });
        let q = super::super::template::environment()
            .render_str(&search.query["query"], &ctx)
            .unwrap();
        assert_eq!(q, r"email:'pat.o\'brien@example.com'");
        let given = erase
            .calls
            .iter()
            .filter(|c| c.path == "/v1/customers")
            .map(|c| {
                super::super::template::environment()
                    .render_str(&c.query["email"], &ctx)
                    .unwrap()
            })
            .collect::<Vec<_>>();
        assert_eq!(
            given,
            ["pat.o'brien@example.com", "Pat.O'Brien@Example.com"]
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    fn shape(text: &str) -> Vec<Expect> {
        let def = ConnectorDef::parse(
            "t.toml",
            &format!(
                "name = \"t\"\ncategory = \"other\"\n[actions.erase]\n[[actions.erase.calls]]\npath = \"/a\"\nexpect = {text}\n[actions.export]\n[[actions.export.calls]]\npath = \"/a\"\n"
            ),
        )
        .expect("definition");
        def.actions.erase.expect("erase").calls[0]
            .expect
            .clone()
            .expect("expect")
    }

    #[test]
    fn a_success_must_match_a_declared_shape() {
        let id = shape(r#"{ content_type = "application/json", pointer = "/id" }"#);
        let j = Some("application/json");
        assert_eq!(conforms(Some(&id), 200, j, r#"{"id": "a1"}"#), Ok(()));
        assert_eq!(
            conforms(Some(&id), 200, Some("text/html"), "<html></html>"),
            Err(Mismatch::ContentType)
        );
        assert_eq!(
            conforms(Some(&id), 200, j, r#"{"id": "a1""#),
            Err(Mismatch::NotJson)
        );
        assert_eq!(
            conforms(Some(&id), 200, j, r#"{"status": "error", "message": "x"}"#),
            Err(Mismatch::Missing("/id".into()))
        );
        assert_eq!(
            conforms(Some(&id), 200, j, r#"{"id": null}"#),
            Err(Mismatch::Missing("/id".into()))
        );
        let done = shape(
            r#"{ content_type = "application/json", pointer = "/metadata/result", equals = 1 }"#,
        );
        assert_eq!(
            conforms(Some(&done), 200, j, r#"{"metadata": {"result": "1"}}"#),
            Ok(()),
            "a number matches its string form"
        );
        assert_eq!(
            conforms(Some(&done), 200, j, r#"{"metadata": {"result": 0}}"#),
            Err(Mismatch::Value("/metadata/result".into()))
        );
        let either = shape(
            r#"[{ status = [204], body = "empty" }, { content_type = "application/json", absent = ["/error", "/errors"] }]"#,
        );
        assert_eq!(conforms(Some(&either), 204, None, ""), Ok(()));
        assert_eq!(conforms(Some(&either), 200, j, r#"{"ok": true}"#), Ok(()));
        assert_eq!(
            conforms(Some(&either), 200, j, r#"{"errors": [{"code": 1}]}"#),
            Err(Mismatch::ErrorBody("/errors".into()))
        );
        assert_eq!(
            conforms(Some(&either), 204, None, "{}"),
            Err(Mismatch::NoShape),
            "both shapes apply to 204 and neither matches"
        );
        let only_204 = shape(r#"{ status = [204], body = "empty" }"#);
        assert_eq!(
            conforms(Some(&only_204), 200, None, ""),
            Err(Mismatch::Status)
        );
        // Nothing declared: anything but an HTML page.
        assert_eq!(conforms(None, 200, j, "{}"), Ok(()));
        assert_eq!(conforms(None, 204, None, ""), Ok(()));
        assert_eq!(
            conforms(None, 200, Some("text/html; charset=utf-8"), "<p>hi</p>"),
            Err(Mismatch::Html)
        );
        assert_eq!(
            conforms(None, 200, None, "  <!DOCTYPE html><html></html>"),
            Err(Mismatch::Html)
        );
    }

    #[tokio::test]
    async fn an_unexpected_answer_names_processor_call_status_content_type_and_expectation() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/erase"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                "<html><body>Sign in as jane@example.com</body></html>",
                "text/html; charset=utf-8",
            ))
            .mount(&server)
            .await;
        let c = connector(
            &server,
            r#"
name = "json_api"
category = "other"
[actions.export]
[[actions.export.calls]]
path = "/x"
[actions.erase]
[[actions.erase.calls]]
name = "deleted"
method = "POST"
path = "/erase"
expect = { content_type = "application/json", pointer = "/id" }
"#,
        );
        let s = subject();
        let cx = CallContext {
            subject: &s,
            request_id: "r",
            idempotency_key: "r:p:0",
            attempt: 1,
            set: None,
        };
        let e = c.erase(cx).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.status, Some(200));
        assert_eq!(
            e.message,
            "processor `p`: unexpected response to erase call `deleted` (HTTP 200, content-type text/html; expected application/json with /id): check base_url"
        );
    }

    #[test]
    fn mailchimp_bodiless_403_is_throttling_but_403_with_body_is_not() {
        let rules = Responses {
            throttled_without_body: Some(vec![403]),
            ..Default::default()
        };
        assert!(matches!(
            classify(&rules, 403, ""),
            Class::Error(ErrorClass::Throttled)
        ));
        assert!(matches!(
            classify(&rules, 403, "{\"title\":\"Forbidden\"}"),
            Class::Error(ErrorClass::Permanent)
        ));
        assert!(matches!(
            classify(&rules, 503, ""),
            Class::Error(ErrorClass::Transient)
        ));
        assert!(matches!(classify(&rules, 404, ""), Class::NotFound));
        assert!(matches!(classify(&rules, 204, ""), Class::Success));
    }
}

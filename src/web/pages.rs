//! The dashboard's pages (GET): the login form, the requests list, one
//! request, the processors, the reports, and the report downloads.
//!
//! Each page needs a session (else: to the login page) and reads through the
//! store trait and the report builders only; the pages show the stored masked
//! identity and nothing else about a subject.

use super::{html, now_secs, Dash, WebError};
use crate::domain::{RequestKind, RequestStatus};
use crate::report::{self, certificate, html as rhtml, period};
use crate::store::{self, Millis, RequestFilter, RequestRow, StepRow};
use crate::view::{RequestView, StepView};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::{context, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The session, or the login page.
pub fn require(d: &Dash, headers: &HeaderMap) -> Result<super::auth::Session, WebError> {
    d.auth
        .session(headers, now_secs())
        .ok_or(WebError::LoginRequired)
}

/// `GET /dashboard/login`.
pub async fn login_page(State(d): State<Dash>, headers: HeaderMap) -> Result<Response, WebError> {
    if d.auth.session(&headers, now_secs()).is_some() {
        return Ok(Redirect::to("/dashboard/requests").into_response());
    }
    login_form(&d, &headers, None, axum::http::StatusCode::OK)
}

/// The login form, with an error when a login was refused.
pub fn login_form(
    d: &Dash,
    headers: &HeaderMap,
    error: Option<&str>,
    status: axum::http::StatusCode,
) -> Result<Response, WebError> {
    let (csrf, set) = d.auth.login_form(headers);
    let body = d.render(
        "login.html",
        context! {
            csrf => csrf,
            error => error,
            password_set => d.engine.config.dashboard.password_hash.is_some(),
        },
    )?;
    let mut res = (status, html(body)).into_response();
    if let Some(c) = set {
        if let Ok(v) = c.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn refuse_unknown(q: &HashMap<String, String>, known: &[&str]) -> Result<(), WebError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(WebError::BadRequest(format!(
            "unknown filter `{}` (known: {})",
            k.chars().take(40).collect::<String>(),
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A period bound: `YYYY-MM-DD`, inclusive (the end: to the next midnight, UTC).
fn day(field: &str, v: &str, end: bool) -> Result<Millis, WebError> {
    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
        WebError::BadRequest(format!("{field}: expected a date such as 2026-11-01"))
    })?;
    let d = if end { d.succ_opt().unwrap_or(d) } else { d };
    Ok(store::ms(d.and_time(chrono::NaiveTime::MIN).and_utc()))
}

/// `from`/`to` of a query, defaulting to the last 30 days.
fn period_of(q: &HashMap<String, String>) -> Result<(String, String, Millis, Millis), WebError> {
    let today = Utc::now().date_naive();
    let f = param(q, "from")
        .map(str::to_string)
        .unwrap_or_else(|| (today - chrono::Days::new(29)).to_string());
    let t = param(q, "to")
        .map(str::to_string)
        .unwrap_or_else(|| today.to_string());
    let (from, to) = (day("from", &f, false)?, day("to", &t, true)?);
    if from >= to {
        return Err(WebError::BadRequest("from is not before to".into()));
    }
    Ok((f, t, from, to))
}

const VIEWS: [&str; 6] = ["open", "overdue", "waiting", "failed", "closed", "all"];

/// `GET /dashboard/requests?view=&kind=&status=&processor=&from=&to=`.
pub async fn requests(
    State(d): State<Dash>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let s = require(&d, &headers)?;
    refuse_unknown(&q, &["view", "kind", "status", "processor", "from", "to"])?;
    let view = param(&q, "view").unwrap_or("open");
    if !VIEWS.contains(&view) {
        return Err(WebError::BadRequest(format!(
            "view: expected one of {}",
            VIEWS.join(", ")
        )));
    }
    let kind = param(&q, "kind")
        .map(|k| k.parse::<RequestKind>())
        .transpose()
        .map_err(|_| {
            WebError::BadRequest(
                "kind: expected erasure, export, objection or rectification".into(),
            )
        })?;
    let status = param(&q, "status")
        .map(|k| k.parse::<RequestStatus>())
        .transpose()
        .map_err(|_| WebError::BadRequest("status: not a request status".into()))?;
    let processor = param(&q, "processor");
    let names: Vec<String> = d
        .engine
        .config
        .processors
        .iter()
        .map(|p| p.name.clone())
        .collect();
    if let Some(p) = processor {
        if !names.iter().any(|n| n == p) {
            return Err(WebError::BadRequest(
                "processor: no processor of that name".into(),
            ));
        }
    }
    let from = param(&q, "from")
        .map(|v| day("from", v, false))
        .transpose()?;
    let to = param(&q, "to").map(|v| day("to", v, true)).transpose()?;
    let now = Utc::now();
    let filter = RequestFilter {
        status: status.or(match view {
            "waiting" => Some(RequestStatus::Waiting),
            "failed" => Some(RequestStatus::Failed),
            _ => None,
        }),
        overdue_at: (view == "overdue").then(|| store::ms(now)),
        received_from: from,
        received_to: to,
        limit: Some(1000),
        subject_hash: None,
    };
    let st = d.engine.store.as_ref();
    let rows = st.list_requests(&filter).await?;
    let at_processor: Option<HashSet<String>> = match processor {
        Some(p) => Some(
            st.steps_received_between(from.unwrap_or(0), to.unwrap_or(i64::MAX))
                .await?
                .into_iter()
                .filter(|s| s.processor == p)
                .map(|s| s.request_id)
                .collect(),
        ),
        None => None,
    };
    let views: Vec<RequestView> = rows
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| match view {
            "open" => !r.status.is_closed(),
            "closed" => r.status.is_closed(),
            _ => true,
        })
        .filter(|r| at_processor.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .map(|r| RequestView::new(r, None, now))
        .collect();
    // The counters above the list: the whole store, not the filtered view.
    let counts: BTreeMap<String, i64> = st.request_counts().await?.into_iter().collect();
    let overdue = st
        .list_requests(&RequestFilter {
            overdue_at: Some(store::ms(now)),
            ..Default::default()
        })
        .await?
        .len();
    let open: i64 = counts
        .iter()
        .filter(|(k, _)| {
            k.parse::<RequestStatus>()
                .map(|s| !s.is_closed())
                .unwrap_or(false)
        })
        .map(|(_, v)| *v)
        .sum();
    let body = d.render(
        "requests.html",
        context! {
            page => "requests",
            csrf => s.csrf,
            rows => Value::from_serialize(&views),
            counts => context! {
                open => open,
                overdue => overdue,
                waiting => counts.get("waiting").copied().unwrap_or(0),
                failed => counts.get("failed").copied().unwrap_or(0),
            },
            f => context! {
                view => view,
                kind => kind.map(|k| k.as_str()),
                status => status.map(|s| s.as_str()),
                processor => processor,
                from => param(&q, "from"),
                to => param(&q, "to"),
            },
            views => VIEWS,
            statuses => RequestStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            processors => names,
        },
    )?;
    Ok(html(body))
}

/// Why a step waits, and what comes next, in one sentence.
fn why(s: &StepView, row: &StepRow, paused_until: Option<Millis>, now: Millis) -> String {
    let at = report::ts_human(row.run_at);
    let paused = paused_until
        .filter(|p| *p > now)
        .map(|p| {
            format!(
                "; the processor is paused after failures in a row until {}",
                report::ts_human(p)
            )
        })
        .unwrap_or_default();
    match s.state.as_str() {
        "pending" if row.run_at > now => format!("scheduled: runs at {at}{paused}"),
        "pending" => format!("due now: waits for a worker and the processor's limits{paused}"),
        "running" => format!(
            "a call is in flight (leased until {})",
            row.lease_expires_at
                .map(report::ts_human)
                .unwrap_or_else(|| "?".into())
        ),
        "retry_wait" => format!(
            "back-off after a {} error: runs again at {at}{paused}. {}",
            s.error_class.as_deref().unwrap_or("transient"),
            s.last_error.as_deref().unwrap_or("")
        ),
        "grace" => format!(
            "soft-deleted: the processor can restore it until {}; the purge is verified at {at}",
            row.grace_until
                .map(report::ts_human)
                .unwrap_or_else(|| "?".into())
        ),
        "held" => match &s.hold {
            Some(h) => format!(
                "legal hold ({}) until {}",
                h.basis,
                h.until.as_deref().unwrap_or("released")
            ),
            None => "legal hold".into(),
        },
        "awaiting_confirmation" => {
            "a manual processor: waits for someone to confirm the task was carried out".into()
        }
        "failed" => format!(
            "needs attention: {}",
            s.last_error.as_deref().unwrap_or("failed")
        ),
        _ => String::new(),
    }
}

/// `GET /dashboard/requests/{id}`.
pub async fn request(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let s = require(&d, &headers)?;
    let st = d.engine.store.as_ref();
    let req = st
        .get_request(&id)
        .await?
        .ok_or_else(|| WebError::NotFound("no request with this id".into()))?;
    let steps = st.steps(&req.id).await?;
    let now = Utc::now();
    let nowms = store::ms(now);
    let view = RequestView::new(&req, Some(&steps), now);
    let cert = certificate::build(st, &req.id, nowms)
        .await?
        .ok_or_else(|| WebError::NotFound("no request with this id".into()))?;
    let mut paused: HashMap<String, Option<Millis>> = HashMap::new();
    for p in steps.iter().map(|s| s.processor.clone()) {
        if let std::collections::hash_map::Entry::Vacant(e) = paused.entry(p) {
            let h = st.health(e.key()).await?;
            e.insert(h.paused_until);
        }
    }
    let step_rows: Vec<Value> = view
        .steps
        .iter()
        .flatten()
        .zip(steps.iter())
        .map(|(v, row)| {
            let p = paused.get(&row.processor).copied().flatten();
            context! {
                s => Value::from_serialize(v),
                run_at => report::ts_human(row.run_at),
                why => why(v, row, p, nowms),
                detail => v.detail(),
                can_retry => v.state == "failed",
                can_confirm => v.state == "awaiting_confirmation",
            }
        })
        .collect();
    let holds: Vec<Value> = st
        .list_holds(false)
        .await?
        .into_iter()
        .filter(|h| h.subject_hash == req.subject_hash)
        .map(|h| {
            context! {
                id => h.id,
                basis => h.basis,
                processor => h.processor,
                until => h.until_at.filter(|u| *u < crate::domain::policy::FOREVER_MS).map(report::ts_human),
                created_at => report::ts_human(h.created_at),
            }
        })
        .collect();
    let events: Vec<Value> = st
        .request_events(&req.id)
        .await?
        .into_iter()
        .map(|e| context! { seq => e.seq, at => report::ts_human(e.at), kind => e.kind })
        .collect();
    let done = param(&q, "done").and_then(|d| match d {
        "retried" => Some("Failed steps are back to pending; the worker picks them up."),
        "confirmed" => Some("The manual task is confirmed."),
        "extended" => Some("The deadline is extended (once, by two months)."),
        "cancelled" => Some("The request is cancelled."),
        "released" => {
            Some("The hold is released; held erasures run now unless another hold applies.")
        }
        "nothing" => Some("Nothing to retry: no failed step."),
        _ => None,
    });
    let closed = req.status.is_closed();
    let body = d.render(
        "request.html",
        context! {
            page => "requests",
            csrf => s.csrf,
            r => Value::from_serialize(&view),
            received => report::ts_human(req.received_at),
            due => report::ts_human(req.due_at),
            steps => step_rows,
            holds => holds,
            events => events,
            cert => Value::from_serialize(&cert),
            timeline => Value::from_safe_string(rhtml::timeline_svg(&cert.processors)),
            any_failed => steps.iter().any(|s| s.state == crate::domain::StepState::Failed),
            can_extend => !closed && req.extended_reason.is_none(),
            can_cancel => !closed,
            done => done,
        },
    )?;
    Ok(html(body))
}

fn download(content_type: &str, filename: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn render_failed(e: impl std::fmt::Display) -> WebError {
    tracing::error!(error = %e, "dashboard: rendering a report failed");
    WebError::Internal
}

/// `GET /dashboard/requests/{id}/certificate/{html|json|csv}`: `lethe report ID`.
pub async fn certificate(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path((id, format)): Path<(String, String)>,
) -> Result<Response, WebError> {
    require(&d, &headers)?;
    let cert = certificate::build(d.engine.store.as_ref(), &id, store::ms(Utc::now()))
        .await?
        .ok_or_else(|| WebError::NotFound("no request with this id".into()))?;
    let name = format!("certificate-{}", cert.request.id);
    Ok(match format.as_str() {
        "html" => download(
            "text/html; charset=utf-8",
            &format!("{name}.html"),
            rhtml::certificate(&cert).map_err(render_failed)?,
        ),
        "json" => download(
            "application/json",
            &format!("{name}.json"),
            serde_json::to_string_pretty(&cert).map_err(render_failed)? + "\n",
        ),
        "csv" => download(
            "text/csv; charset=utf-8",
            &format!("{name}.csv"),
            report::csv::certificate(&cert),
        ),
        _ => return Err(WebError::NotFound("formats: html, json, csv".into())),
    })
}

/// `GET /dashboard/reports/period/{html|json|csv}?from=&to=`: `lethe report --from --to`.
pub async fn period_download(
    State(d): State<Dash>,
    headers: HeaderMap,
    Path(format): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    require(&d, &headers)?;
    refuse_unknown(&q, &["from", "to"])?;
    let (f, t, from, to) = period_of(&q)?;
    let r = period::build(d.engine.store.as_ref(), from, to, store::ms(Utc::now())).await?;
    let name = format!("period-{f}-{t}");
    Ok(match format.as_str() {
        "html" => download(
            "text/html; charset=utf-8",
            &format!("{name}.html"),
            rhtml::period(&r).map_err(render_failed)?,
        ),
        "json" => download(
            "application/json",
            &format!("{name}.json"),
            serde_json::to_string_pretty(&r).map_err(render_failed)? + "\n",
        ),
        "csv" => download(
            "text/csv; charset=utf-8",
            &format!("{name}.csv"),
            report::csv::period(&r),
        ),
        _ => return Err(WebError::NotFound("formats: html, json, csv".into())),
    })
}

/// `GET /dashboard/reports?from=&to=`.
pub async fn reports(
    State(d): State<Dash>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let s = require(&d, &headers)?;
    refuse_unknown(&q, &["from", "to"])?;
    let (f, t, from, to) = period_of(&q)?;
    let st = d.engine.store.as_ref();
    let r = period::build(st, from, to, store::ms(Utc::now())).await?;
    let recent: Vec<RequestView> = st
        .list_requests(&RequestFilter {
            received_from: Some(from),
            received_to: Some(to),
            limit: Some(200),
            ..Default::default()
        })
        .await?
        .iter()
        .map(|r: &RequestRow| RequestView::new(r, None, Utc::now()))
        .collect();
    let body = d.render(
        "reports.html",
        context! {
            page => "reports",
            csrf => s.csrf,
            from => f,
            to => t,
            r => Value::from_serialize(&r),
            chart => Value::from_safe_string(rhtml::completion_svg(&r)),
            requests => Value::from_serialize(&recent),
        },
    )?;
    Ok(html(body))
}

fn call_count(processor: &str, result: &str) -> u64 {
    crate::metrics::global()
        .calls
        .get(&crate::metrics::CallLabels {
            processor: processor.to_string(),
            result: result.to_string(),
        })
        .map(|c| c.get())
        .unwrap_or(0)
}

/// `GET /dashboard/processors?from=&to=`.
pub async fn processors(
    State(d): State<Dash>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let s = require(&d, &headers)?;
    refuse_unknown(&q, &["from", "to"])?;
    let (f, t, from, to) = period_of(&q)?;
    let st = d.engine.store.as_ref();
    let nowms = store::ms(Utc::now());
    let r = period::build(st, from, to, nowms).await?;
    let mut by_state: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for (p, state, n) in st.step_counts().await? {
        by_state.entry(p).or_default().insert(state, n);
    }
    let mut rows = vec![];
    for p in &d.engine.config.processors {
        let spec = d.engine.config.spec(p);
        let h = st.health(&p.name).await?;
        let ok = call_count(&p.name, "ok");
        let transient = call_count(&p.name, "transient");
        let throttled = call_count(&p.name, "throttled");
        let permanent = call_count(&p.name, "permanent");
        let calls = ok + transient + throttled + permanent;
        let (in_flight, share, limit) =
            d.engine
                .calls_in_flight(&p.name)
                .unwrap_or((0, spec.concurrency, spec.concurrency));
        let stats = r.processors.iter().find(|s| s.processor == p.name);
        let rate = stats
            .filter(|s| s.steps > 0)
            .map(|s| format!("{:.0}%", 100.0 * s.completed as f64 / s.steps as f64));
        let states = by_state.remove(&p.name).unwrap_or_default();
        rows.push(context! {
            name => p.name,
            connector => p.connector,
            category => spec.category.as_str(),
            paused_until => h.paused_until.filter(|u| *u > nowms).map(report::ts_human),
            failures_in_a_row => h.consecutive_failures,
            last_error => h.last_error,
            calls => calls,
            error_rate => (calls > 0).then(|| format!("{:.0}%", 100.0 * (transient + permanent) as f64 / calls as f64)),
            throttled => throttled,
            in_flight => in_flight,
            share => share,
            limit => limit,
            rate_per_second => spec.rate_per_second,
            completion => rate,
            period_steps => stats.map(|s| s.steps).unwrap_or(0),
            states => states,
        });
    }
    let body = d.render(
        "processors.html",
        context! {
            page => "processors",
            csrf => s.csrf,
            from => f,
            to => t,
            rows => rows,
            chart => Value::from_safe_string(rhtml::completion_svg(&r)),
        },
    )?;
    Ok(html(body))
}

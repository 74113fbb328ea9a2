//! Requests and their steps as rows: creating a request (with its steps, its
//! `request.created` event, its data key, its pending suppression entries and,
//! if asked, its status-callback destinations) in one transaction, and reading
//! requests, steps and the processor free text of their events.
//!
//! Invariants: a request is inserted with every step it will ever have, and its
//! stored status is derived from those steps (`domain::derive_status`); nothing
//! here changes a step afterwards (that is [`QueueStore::apply`](super::QueueStore::apply)).

use super::{
    Callback, Millis, NewRequest, NewStep, RequestFilter, RequestRow, StepRow, StoreError,
};
use async_trait::async_trait;

/// Creating and reading requests and their steps.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Insert a request with its steps and a `request.created` event.
    async fn create_request(
        &self,
        req: NewRequest,
        steps: Vec<NewStep>,
        now: Millis,
    ) -> Result<RequestRow, StoreError>;

    /// Insert a request, its steps, its status-callback destinations and a
    /// `created` callback to each, in one transaction.
    async fn create_request_with_callbacks(
        &self,
        req: NewRequest,
        steps: Vec<NewStep>,
        callbacks: Vec<Callback>,
        now: Millis,
    ) -> Result<RequestRow, StoreError>;

    /// A request by id.
    async fn get_request(&self, id: &str) -> Result<Option<RequestRow>, StoreError>;
    /// The requests among `ids` that exist, each once, in no particular
    /// order, read in one statement per 500 ids (the worker reads a claimed
    /// batch's requests this way).
    async fn get_requests(&self, ids: &[String]) -> Result<Vec<RequestRow>, StoreError>;

    /// A request by its intake form id.
    async fn find_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<RequestRow>, StoreError>;

    /// Requests, newest first.
    async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<RequestRow>, StoreError>;

    /// A request's steps, by wave then processor.
    async fn steps(&self, request_id: &str) -> Result<Vec<StepRow>, StoreError>;

    /// Requests that follow up `request_id`, newest first.
    async fn follow_ups(&self, request_id: &str) -> Result<Vec<RequestRow>, StoreError>;

    /// Processor free text of a request's events, by SHA-256 (the chain holds
    /// the hash; the text is destroyed with the identities).
    async fn texts(&self, request_id: &str) -> Result<Vec<(String, String)>, StoreError>;
}

/// Stamp out the requests statements for one backend, as the module `request_sql`
/// of the backend's file: `$conn` is its connection type, `$pool` its pool
/// type, `$dbnow` the SQL expression for the database's clock in milliseconds.
/// Sibling modules of the other concerns are reached as `super::<name>_sql`.
macro_rules! request_sql_fns {
    ($conn:ty, $pool:ty, $dbnow:expr) => {
        use $crate::domain::{derive_status, StepState};
        use $crate::store::common::{closed, PendingEvent, RawRequest, RawStep, REQ_COLS, STEP_COLS};
        use $crate::store::{NewRequest, NewStep, RequestFilter, RequestRow, StepRow, StoreError};

        pub(super) async fn insert_request(
            conn: &mut $conn,
            req: &NewRequest,
            steps: &[NewStep],
            now: i64,
        ) -> Result<(), StoreError> {
            let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
            let status = derive_status(false, &states);
            sqlx::query(
                "INSERT INTO requests (id, kind, workflow, status, cancelled, received_at, due_at, completed_at, \
                 extended_reason, external_id, subject_hash, subject_masked, identities, callback_url, updated_at, \
                 verified, follows) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&req.id)
            .bind(req.kind.as_str())
            .bind(&req.workflow)
            .bind(status.as_str())
            .bind(req.received_at)
            .bind(req.due_at)
            .bind(if closed(status) { Some(now) } else { None })
            .bind(&req.external_id)
            .bind(&req.subject_hash)
            .bind(&req.subject_masked)
            .bind(&req.identities)
            .bind(&req.callback_url)
            .bind(now)
            .bind(req.verified as i64)
            .bind(&req.follows)
            .execute(&mut *conn)
            .await?;
            for e in &req.suppress {
                sqlx::query(
                    "INSERT INTO suppression (hash, kind, request_id, masked, active, created_at) \
                     VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (hash, request_id) DO NOTHING",
                )
                .bind(&e.hash)
                .bind(&e.kind)
                .bind(&req.id)
                .bind(&e.masked)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            if let Some(k) = &req.data_key {
                sqlx::query("INSERT INTO data_keys (request_id, kid, wrapped, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&req.id)
                    .bind(&k.kid)
                    .bind(&k.wrapped)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
            }
            for s in steps {
                sqlx::query(
                    "INSERT INTO steps (request_id, processor, connector, category, action, wave, state, phase, attempts, \
                     run_at, hold_basis, hold_until, updated_at, outcome, evidence, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'act', 0, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&req.id)
                .bind(&s.processor)
                .bind(&s.connector)
                .bind(&s.category)
                .bind(s.action.as_str())
                .bind(s.wave)
                .bind(s.state.as_str())
                .bind(s.run_at)
                .bind(&s.hold_basis)
                .bind(s.hold_until)
                .bind(now)
                .bind(s.outcome.map(|o| o.as_str()))
                .bind(s.note.as_ref().map(|n| serde_json::json!({"note": n}).to_string()))
                .bind(s.outcome.map(|_| now))
                .execute(&mut *conn)
                .await?;
            }
            let detail = serde_json::json!({
                "kind": req.kind.as_str(),
                "workflow": req.workflow,
                "subject": req.subject_masked,
                "due_at": req.due_at,
                "external_id": req.external_id,
                "verified": req.verified,
                "follows": req.follows,
                "steps": steps.iter().map(|s| {
                    let mut d = serde_json::json!({
                        "processor": s.processor,
                        "action": s.action.as_str(),
                        "state": s.state.as_str(),
                        "hold_basis": s.hold_basis,
                        "hold_until": s.hold_until,
                    });
                    if let (Some(o), serde_json::Value::Object(m)) = (s.outcome, &mut d) {
                        m.insert("outcome".into(), o.as_str().into());
                        m.insert("reason".into(), s.note.clone().into());
                    }
                    d
                }).collect::<Vec<_>>(),
            });
            let mut detail = detail;
            if let (false, serde_json::Value::Object(m)) = (req.fields.is_empty(), &mut detail) {
                m.insert("fields".into(), req.fields.clone().into());
            }
            super::audit_sql::append_events(
                conn,
                now,
                vec![PendingEvent { request_id: Some(req.id.clone()), step_id: None, kind: "request.created".into(), detail }],
            )
            .await
        }

        pub(super) async fn get_request(pool: &$pool, id: &str) -> Result<Option<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE id = $1");
            let raw: Option<RawRequest> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
            raw.map(RawRequest::into_row).transpose()
        }

        pub(super) async fn get_requests(pool: &$pool, ids: &[String]) -> Result<Vec<RequestRow>, StoreError> {
            let mut ids: Vec<&String> = ids.iter().collect();
            ids.sort_unstable();
            ids.dedup();
            let mut out = Vec::with_capacity(ids.len());
            // One statement per 500 ids (well under either backend's bind limit).
            for chunk in ids.chunks(500) {
                let marks = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
                let sql = format!("SELECT {REQ_COLS} FROM requests WHERE id IN ({marks})");
                let mut q = sqlx::query_as::<_, RawRequest>(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                for raw in q.fetch_all(pool).await? {
                    out.push(raw.into_row()?);
                }
            }
            Ok(out)
        }

        pub(super) async fn find_by_external_id(pool: &$pool, ext: &str) -> Result<Option<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE external_id = $1");
            let raw: Option<RawRequest> = sqlx::query_as(&sql).bind(ext).fetch_optional(pool).await?;
            raw.map(RawRequest::into_row).transpose()
        }

        pub(super) async fn list_requests(pool: &$pool, f: &RequestFilter) -> Result<Vec<RequestRow>, StoreError> {
            let sql = format!(
                "SELECT {REQ_COLS} FROM requests WHERE ($1 IS NULL OR status = $1) \
                 AND ($2 IS NULL OR (due_at < $2 AND status NOT IN ('completed','completed_with_exceptions','cancelled'))) \
                 AND ($3 IS NULL OR received_at >= $3) AND ($4 IS NULL OR received_at < $4) \
                 AND ($6 IS NULL OR subject_hash = $6) \
                 ORDER BY received_at DESC, id LIMIT $5"
            );
            let raw: Vec<RawRequest> = sqlx::query_as(&sql)
                .bind(f.status.map(|s| s.as_str()))
                .bind(f.overdue_at)
                .bind(f.received_from)
                .bind(f.received_to)
                .bind(f.limit.unwrap_or(i64::MAX))
                .bind(&f.subject_hash)
                .fetch_all(pool)
                .await?;
            raw.into_iter().map(RawRequest::into_row).collect()
        }

        pub(super) async fn steps(pool: &$pool, request_id: &str) -> Result<Vec<StepRow>, StoreError> {
            let sql = format!("SELECT {STEP_COLS} FROM steps WHERE request_id = $1 ORDER BY wave, processor");
            let raw: Vec<RawStep> = sqlx::query_as(&sql).bind(request_id).fetch_all(pool).await?;
            raw.into_iter().map(RawStep::into_row).collect()
        }

        pub(super) async fn follow_ups(pool: &$pool, id: &str) -> Result<Vec<RequestRow>, StoreError> {
            let sql = format!("SELECT {REQ_COLS} FROM requests WHERE follows = $1 ORDER BY received_at DESC, id");
            let raw: Vec<RawRequest> = sqlx::query_as(&sql).bind(id).fetch_all(pool).await?;
            raw.into_iter().map(RawRequest::into_row).collect()
        }

        pub(super) async fn texts(pool: &$pool, request_id: &str) -> Result<Vec<(String, String)>, StoreError> {
            let rows: Vec<(String, String)> = sqlx::query_as("SELECT hash, body FROM texts WHERE request_id = $1 ORDER BY at, hash")
                .bind(request_id)
                .fetch_all(pool)
                .await?;
            Ok(rows)
        }
    };
}

pub(super) use request_sql_fns;

/// Implement [`RequestStore`] for a backend struct with a `pool` field.
macro_rules! impl_requests_store {
    ($store:ty, $begin:path) => {
        #[async_trait::async_trait]
        impl $crate::store::requests::RequestStore for $store {
            async fn create_request(
                &self,
                req: $crate::store::NewRequest,
                steps: Vec<$crate::store::NewStep>,
                now: i64,
            ) -> Result<$crate::store::RequestRow, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    request_sql::insert_request(&mut tx, &req, &steps, now).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await?;
                request_sql::get_request(&self.pool, &req.id)
                    .await?
                    .ok_or_else(|| {
                        $crate::store::StoreError::Unavailable(
                            "request vanished after insert".into(),
                        )
                    })
            }

            async fn create_request_with_callbacks(
                &self,
                req: $crate::store::NewRequest,
                steps: Vec<$crate::store::NewStep>,
                callbacks: Vec<$crate::store::Callback>,
                now: i64,
            ) -> Result<$crate::store::RequestRow, $crate::store::StoreError> {
                let pool = &self.pool;
                $crate::store::common::retrying(|| async {
                    let mut tx = $begin(pool).await?;
                    request_sql::insert_request(&mut tx, &req, &steps, now).await?;
                    outbox_sql::insert_callbacks(&mut tx, &req.id, &callbacks, now).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await?;
                request_sql::get_request(&self.pool, &req.id)
                    .await?
                    .ok_or_else(|| {
                        $crate::store::StoreError::Unavailable(
                            "request vanished after insert".into(),
                        )
                    })
            }

            async fn get_request(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::RequestRow>, $crate::store::StoreError> {
                request_sql::get_request(&self.pool, id).await
            }

            async fn get_requests(
                &self,
                ids: &[String],
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                request_sql::get_requests(&self.pool, ids).await
            }

            async fn find_by_external_id(
                &self,
                ext: &str,
            ) -> Result<Option<$crate::store::RequestRow>, $crate::store::StoreError> {
                request_sql::find_by_external_id(&self.pool, ext).await
            }

            async fn list_requests(
                &self,
                f: &$crate::store::RequestFilter,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                request_sql::list_requests(&self.pool, f).await
            }

            async fn steps(
                &self,
                request_id: &str,
            ) -> Result<Vec<$crate::store::StepRow>, $crate::store::StoreError> {
                request_sql::steps(&self.pool, request_id).await
            }

            async fn follow_ups(
                &self,
                id: &str,
            ) -> Result<Vec<$crate::store::RequestRow>, $crate::store::StoreError> {
                request_sql::follow_ups(&self.pool, id).await
            }

            async fn texts(
                &self,
                request_id: &str,
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                request_sql::texts(&self.pool, request_id).await
            }
        }
    };
}

pub(super) use impl_requests_store;

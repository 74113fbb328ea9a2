//! The PostgreSQL backend: for more than one machine; any number of daemons share it.
//!
//! Claiming uses `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on
//! each other's rows and never take the same step. A claim first locks the
//! `processor_limits` rows (in name order) and refills their token buckets, so
//! two claims never count the same free slot of a processor's cluster-wide limit.
//! The claim is one call of a server-side function (created after the
//! migrations, named by a hash of its body), so those rows stay locked for the
//! server's milliseconds, not for several network round trips.
//! Connecting waits out a server that refuses for a few seconds (a restart,
//! a failover, no free connection slot).
//! There is no global lock:
//! audit appends are serialised per chain, by the request row that `apply`
//! locks first and by the chain's `chain_heads` row. Row locks are taken in a
//! fixed order (requests by id, chain heads by name), and a transaction the
//! server aborts on a deadlock (40P01) or serialization failure (40001) is
//! retried with a jittered backoff.

use super::common::{claim_pick, CLAIMABLE};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

mod audit_sql {
    crate::store::audit::audit_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod request_sql {
    crate::store::requests::request_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod queue_sql {
    crate::store::queue::queue_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod hold_sql {
    crate::store::holds::hold_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod outbox_sql {
    crate::store::outbox::outbox_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod report_sql {
    crate::store::reports::report_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod key_sql {
    crate::store::keys::key_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

mod checkpoint_sql {
    crate::store::checkpoints::checkpoint_sql_fns!(sqlx::PgConnection, sqlx::PgPool, super::DB_NOW);
}

/// The database server's clock in milliseconds: leases are stamped and
/// expired by it, so a worker's skewed clock cannot steal a live step.
const DB_NOW: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Statements may carry data-modifying CTEs (`WITH … INSERT … UPDATE`), so
/// a write that would take two round trips under a row lock takes one.
const DML_IN_CTE: bool = true;

/// Result batches one process writes at once (of the pool's 16 connections).
const WRITERS: usize = 8;

/// PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to `postgres://…`.
    pub async fn connect(url: &str) -> Result<PgStore, super::StoreError> {
        // A session that stops inside a transaction (a frozen or stopped
        // process) would hold its row locks for ever and stall
        // every other daemon: the server ends it instead. lethe's own
        // transactions last milliseconds.
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| super::StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .options([("idle_in_transaction_session_timeout", "10s")]);
        // A server that is restarting, failing over or out of connection
        // slots answers again within seconds: a `run --until-idle` from cron
        // or a daemon starting beside others waits for it (up to ~5 s)
        // instead of failing at once. Anything else (bad credentials, a
        // missing database) fails at once.
        use backon::Retryable;
        let pool = (|| {
            PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
        })
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_total_delay(Some(Duration::from_secs(5)))
                .with_max_times(usize::MAX)
                .with_jitter(),
        )
        .when(connect_is_transient)
        .notify(|e, after| {
            tracing::warn!(error = %e, retry_in = ?after, "PostgreSQL refused the connection; retrying");
        })
        .await?;
        Ok(PgStore { pool })
    }

    /// The pool, for tests that need to reach past the trait (e.g. to tamper with a row).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A connection refused for a reason that passes: the server is down or
/// restarting (an I/O error, SQLSTATE class 08, 57P03 "cannot connect now"),
/// or out of connection slots (53300).
fn connect_is_transient(e: &sqlx::Error) -> bool {
    match e {
        // Not `PoolTimedOut`: a server that accepts and then hangs already
        // took the whole acquire timeout; the command reports it.
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c == "53300" || c == "57P03" || c.starts_with("08")),
        _ => false,
    }
}

/// A write transaction (READ COMMITTED). No global lock: writers of
/// different requests run in parallel; see the module docs for lock order.
async fn begin(pool: &PgPool) -> Result<super::WriteTx<sqlx::Postgres>, sqlx::Error> {
    Ok(super::WriteTx::new(pool.begin().await?, None))
}

/// The claim in one statement, run after `refill` locked the limit rows: pick
/// and lease the due steps, take a token per claimed step of a rated
/// processor, and queue a `started` callback for each request whose first
/// step this is (the same as SQLite's three statements).
fn claim_sql() -> String {
    format!(
        "{}, claimed AS (UPDATE steps SET state = 'running', lease_owner = $1, lease_expires_at = {DB_NOW} + $2, \
         attempts = steps.attempts + 1, lease_token = steps.lease_token + 1, started_at = COALESCE(steps.started_at, $3), \
         updated_at = $3 FROM due WHERE steps.id = due.id AND steps.state IN {CLAIMABLE} RETURNING steps.*), \
         spent AS (UPDATE processor_limits l SET tokens = l.tokens - c.n * 1000000 \
         FROM (SELECT processor, COUNT(*) AS n FROM claimed GROUP BY processor) c \
         WHERE l.processor = c.processor AND l.rate_milli IS NOT NULL RETURNING 1), \
         started AS (INSERT INTO outbox (request_id, url, protocol, event, status, created_at, run_at) \
         SELECT cb.request_id, cb.url, cb.protocol, 'started', r.status, $3, $3 \
         FROM request_callbacks cb JOIN requests r ON r.id = cb.request_id \
         WHERE cb.request_id IN (SELECT request_id FROM claimed WHERE started_at = $3) \
         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.request_id = cb.request_id AND o.event = 'started') RETURNING 1) \
         SELECT * FROM claimed",
        claim_pick("FOR UPDATE OF s SKIP LOCKED").trim_end()
    )
}

/// The claim as a server-side function: the refill that locks the limit
/// rows and the claim statement run in one round trip, outside any
/// client-held transaction, so the limit rows stay locked for the server's
/// milliseconds, not for three network round trips — claims of many daemons
/// queue on those rows. A VOLATILE PL/pgSQL function takes a new snapshot
/// per statement (READ COMMITTED), so the claim counts the running steps of
/// claims committed while it waited for the lock, as the two-statement
/// transaction did. The name carries a hash of the body: a binary calls the
/// function it created, so two versions of lethe on one database (a rolling
/// upgrade) never run each other's claim.
struct ClaimFunction {
    signature: String,
    create: String,
    call: String,
}

fn claim_function() -> &'static ClaimFunction {
    static F: std::sync::OnceLock<ClaimFunction> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        use sha2::Digest;
        let body = format!(
            "BEGIN {}; RETURN QUERY {}; END",
            queue_sql::refill_sql(),
            claim_sql()
        );
        let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        let name = format!("lethe_claim_{}", &hash[..16]);
        let signature = format!("{name}(text, bigint, bigint, bigint, bigint, bigint)");
        ClaimFunction {
            create: format!(
                "CREATE OR REPLACE FUNCTION {signature} \
                 RETURNS SETOF steps LANGUAGE plpgsql VOLATILE AS $lethe$ {body} $lethe$"
            ),
            signature,
            call: format!("SELECT * FROM {name}($1, $2, $3, $4, $5, $6)"),
        }
    })
}

/// After the migrations: create this binary's claim function unless the
/// database has it (one look per process start; the server logs no error for
/// a missing function this way).
async fn ensure_claim_function(pool: &PgPool) -> Result<(), super::StoreError> {
    let f = claim_function();
    let present: bool = sqlx::query_scalar("SELECT to_regprocedure($1) IS NOT NULL")
        .bind(&f.signature)
        .fetch_one(pool)
        .await?;
    if !present {
        create_claim_function(pool).await;
    }
    Ok(())
}

/// Create this binary's claim function. Two processes may create it at once:
/// the loser's error is only logged, and the next call of the function
/// decides (it exists, or that call fails and names why).
async fn create_claim_function(pool: &PgPool) {
    if let Err(e) = sqlx::query(&claim_function().create).execute(pool).await {
        tracing::debug!(error = %e, "creating the claim function");
    }
}

/// Claim due steps in one round trip (see [`ClaimFunction`]); the function
/// is created the first time a database lacks it (SQLSTATE 42883).
async fn claim(
    pool: &PgPool,
    worker: &str,
    now: i64,
    due_by: i64,
    lease_ms: i64,
    limit: i64,
    candidates: i64,
) -> Result<Vec<super::StepRow>, super::StoreError> {
    let f = claim_function();
    let call = || {
        sqlx::query_as::<_, super::common::RawStep>(&f.call)
            .bind(worker)
            .bind(lease_ms)
            .bind(now)
            .bind(limit)
            .bind(due_by)
            .bind(candidates)
            .fetch_all(pool)
    };
    let raw = match call().await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42883") => {
            create_claim_function(pool).await;
            call().await?
        }
        r => r?,
    };
    raw.into_iter()
        .map(super::common::RawStep::into_row)
        .collect()
}

/// Which limit rows a claim locks before it counts free slots: all of them,
/// in name order (the same order in every claim, so claims cannot deadlock).
const LIMITS_LOCK: &str =
    "processor IN (SELECT processor FROM processor_limits ORDER BY processor FOR UPDATE)";

fn claim_outbox_sql() -> String {
    format!(
        "WITH due AS ({} FOR UPDATE SKIP LOCKED) UPDATE outbox SET run_at = $2, attempts = outbox.attempts + 1 \
         FROM due WHERE outbox.id = due.id RETURNING {}",
        super::common::OUTBOX_DUE.replace("o.id FROM", "o.id AS id FROM"),
        super::common::OUTBOX_COLS
            .split(", ")
            .map(|c| format!("outbox.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// After crypto-shredding: nothing more to do (dead row versions are reclaimed by VACUUM).
async fn after_shred(_pool: &PgPool) -> Result<(), super::StoreError> {
    Ok(())
}

super::schema::impl_schema_store!(
    PgStore,
    sqlx::migrate!("./migrations/postgres"),
    ensure_claim_function
);
super::requests::impl_requests_store!(PgStore, begin);
super::queue::impl_queue_store!(PgStore, begin, claim, WRITERS);
super::audit::impl_audit_store!(PgStore);
super::checkpoints::impl_checkpoints_store!(PgStore, begin);
super::holds::impl_holds_store!(PgStore, begin);
super::outbox::impl_outbox_store!(PgStore, begin, claim_outbox_sql);
super::reports::impl_reports_store!(PgStore);
super::keys::impl_keys_store!(PgStore, begin, after_shred);

super::sweep::impl_sweep_store!(PgStore, sqlx::PgConnection, begin, audit_sql, DB_NOW);

//! Per-request audit chains (issue 12): every request, hold and processor has
//! its own hash chain and head, appended without a global lock; `audit verify`
//! checks every chain against its head (a truncated tail is named), old stores
//! keep verifying their pre-0011 `legacy` chain, and a certificate verifies
//! only its request's chain. On both backends, through the store and the CLI.

use crate::fakes;
use crate::helpers::{pg_schema_url, show, Backend, TestEnv};
use crate::on_both_backends;
use lethe::domain::event::{chain_hash, event_hash, ChainedEvent, EventBody, GENESIS_HASH};
use lethe::domain::{Action, Outcome, Phase, RequestKind, StepState};
use lethe::store::{
    self, Applied, ChangeSet, NewRequest, NewStep, RequestPatch, StepChange, Store,
};
use serde_json::{json, Value};
use std::sync::Arc;

on_both_backends!(
    concurrent_applies_on_different_requests_all_succeed_and_every_chain_verifies,
    batches_touching_the_same_requests_in_opposite_orders_both_commit,
    every_append_moves_its_chain_head_and_clears_checkpointed,
    deleting_the_last_event_of_a_request_is_named_as_a_truncated_chain,
    a_chain_whose_rows_or_head_were_all_deleted_is_named,
    editing_an_events_detail_is_named_with_its_chain_and_position,
    rewriting_a_whole_chain_consistently_is_not_detectable_without_signed_checkpoints,
    a_store_written_before_0011_keeps_verifying_and_new_events_get_their_own_chains,
    audit_verify_exits_1_naming_the_chain_whose_last_event_was_deleted_and_0_when_intact,
);

struct Fresh {
    store: Arc<dyn Store>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn fresh(b: Backend) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("s.db").display()),
        Backend::Postgres => pg_schema_url().await,
    };
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    Fresh {
        store,
        url,
        _dir: dir,
    }
}

/// Run SQL behind lethe's back (tampering, or writing an old-format store).
async fn exec(b: Backend, url: &str, sql: &str) -> u64 {
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql)
                .execute(&pool)
                .await
                .unwrap()
                .rows_affected()
        }
    }
}

fn new_request(id: &str) -> NewRequest {
    NewRequest {
        id: id.into(),
        kind: RequestKind::Erasure,
        workflow: "erasure".into(),
        received_at: 1000,
        due_at: 1000 + 30 * 86_400_000,
        external_id: None,
        subject_hash: format!("hash-{id}"),
        subject_masked: "j***@example.com".into(),
        identities: vec![1, 2, 3],
        callback_url: None,
        data_key: None,
        fields: vec![],
        verified: true,
        follows: None,
        suppress: vec![],
    }
}

fn step(processor: &str) -> NewStep {
    NewStep {
        processor: processor.into(),
        connector: "mailchimp".into(),
        category: "mailing_list".into(),
        action: Action::Erase,
        wave: 0,
        state: StepState::Pending,
        run_at: 1000,
        hold_basis: None,
        hold_until: None,
        outcome: None,
        note: None,
    }
}

fn finish(request_id: &str, step_id: i64, token: i64, now: i64) -> ChangeSet {
    ChangeSet {
        request_id: request_id.into(),
        now,
        steps: vec![StepChange {
            step_id,
            from: StepState::Running,
            lease_token: Some(token),
            maybe_acted: false,
            to: StepState::Done,
            phase: Phase::Act,
            outcome: Some(Outcome::Erased),
            run_at: now,
            attempts: None,
            error: None,
            evidence: Some(json!({"status": 204})),
            hold: None,
            grace_until: None,
            finished: true,
            event: "step.done".into(),
            detail: json!({"outcome": "erased", "step": step_id}),
        }],
        request: RequestPatch::default(),
        events: vec![],
    }
}

/// `n` requests with `steps` steps each, all claimed; returns the claimed rows.
async fn claimed(store: &dyn Store, n: usize, steps: usize) -> Vec<store::StepRow> {
    for i in 0..n {
        let s = (0..steps).map(|k| step(&format!("p{k}"))).collect();
        store
            .create_request(new_request(&format!("r{i:03}")), s, 1000)
            .await
            .unwrap();
    }
    let c = store
        .claim_due("w", 1000, 600_000, (n * steps) as i64)
        .await
        .unwrap();
    assert_eq!(c.len(), n * steps);
    c
}

async fn concurrent_applies_on_different_requests_all_succeed_and_every_chain_verifies(b: Backend) {
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 40, 1).await;
    let tasks: Vec<_> = c
        .into_iter()
        .map(|s| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .apply(finish(&s.request_id, s.id, s.lease_token, 2000))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let applied = t
            .await
            .unwrap()
            .expect("no apply fails: no deadlock, no lock error");
        assert!(matches!(applied, Applied::Done { .. }), "{applied:?}");
    }
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.chains, 40, "one chain per request");
    // created + step.done + request.status for each request.
    assert_eq!(v.checked, 40 * 3);
    for i in 0..40 {
        let chain = format!("request:r{i:03}");
        let cv = lethe::audit::verify_chain(f.store.as_ref(), &chain)
            .await
            .unwrap();
        assert!(cv.broken.is_none(), "{cv:?}");
        assert_eq!(cv.checked, 3);
        let events = f.store.chain_events(&chain, 0, 100).await.unwrap();
        let pos: Vec<i64> = events.iter().map(|e| e.chain_seq).collect();
        assert_eq!(pos, [1, 2, 3], "{chain}");
        assert_eq!(events[0].prev_hash, GENESIS_HASH);
    }
}

async fn batches_touching_the_same_requests_in_opposite_orders_both_commit(b: Backend) {
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 12, 2).await;
    // One batch finishes every request's p0 step in id order, the other every
    // p1 step in reverse: without a lock order they would deadlock.
    let mut forward: Vec<ChangeSet> = c
        .iter()
        .filter(|s| s.processor == "p0")
        .map(|s| finish(&s.request_id, s.id, s.lease_token, 2000))
        .collect();
    forward.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let mut backward: Vec<ChangeSet> = c
        .iter()
        .filter(|s| s.processor == "p1")
        .map(|s| finish(&s.request_id, s.id, s.lease_token, 2000))
        .collect();
    backward.sort_by(|a, b| b.request_id.cmp(&a.request_id));
    let want_order: Vec<String> = backward.iter().map(|c| c.request_id.clone()).collect();
    let (s1, s2) = (f.store.clone(), f.store.clone());
    let t1 = tokio::spawn(async move { s1.apply_batch(forward).await });
    let t2 = tokio::spawn(async move { s2.apply_batch(backward).await });
    let r1 = t1.await.unwrap().expect("forward batch commits");
    let r2 = t2.await.unwrap().expect("backward batch commits");
    assert_eq!(r2.len(), want_order.len(), "one result per change set");
    for r in r1.iter().chain(r2.iter()) {
        assert!(matches!(r, Ok(Applied::Done { .. })), "{r:?}");
    }
    for id in &want_order {
        let req = f.store.get_request(id).await.unwrap().unwrap();
        assert_eq!(req.status.as_str(), "completed", "{id}");
    }
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.chains, 12);
}

async fn every_append_moves_its_chain_head_and_clears_checkpointed(b: Backend) {
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 1, 1).await;
    let head = f.store.chain_head("request:r000").await.unwrap().unwrap();
    assert_eq!(head.chain_seq, 1);
    assert!(!head.checkpointed);
    let created = f.store.chain_events("request:r000", 0, 10).await.unwrap();
    assert_eq!(head.hash, created[0].hash);
    assert_eq!(head.event_seq, created[0].seq);

    // A checkpoint marks it; the next append clears the mark.
    exec(
        b,
        &f.url,
        "UPDATE chain_heads SET checkpointed = TRUE WHERE chain = 'request:r000'",
    )
    .await;
    assert!(
        f.store
            .chain_head("request:r000")
            .await
            .unwrap()
            .unwrap()
            .checkpointed
    );
    f.store
        .apply(finish("r000", c[0].id, c[0].lease_token, 2000))
        .await
        .unwrap();
    let head = f.store.chain_head("request:r000").await.unwrap().unwrap();
    assert_eq!(head.chain_seq, 3, "step.done and request.status appended");
    assert!(!head.checkpointed);
    assert_eq!(head.updated_at, 2000);

    // Holds and processors get chains of their own.
    f.store
        .add_hold(store::HoldRow {
            id: "h1".into(),
            subject_hash: "hash-x".into(),
            subject_masked: "x***@example.com".into(),
            basis: "litigation".into(),
            until_at: None,
            processor: None,
            created_at: 3000,
            released_at: None,
        })
        .await
        .unwrap();
    f.store.release_hold("h1", 4000).await.unwrap();
    f.store
        .record_call("mc", Some("HTTP 503"), 5000, 1, 60_000)
        .await
        .unwrap();
    let heads = f.store.chain_heads("", 100).await.unwrap();
    let names: Vec<(&str, i64)> = heads
        .iter()
        .map(|h| (h.chain.as_str(), h.chain_seq))
        .collect();
    assert_eq!(
        names,
        [("hold:h1", 2), ("processor:mc", 1), ("request:r000", 3)]
    );
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!((v.chains, v.checked), (3, 6));
    let last = heads.iter().max_by_key(|h| h.event_seq).unwrap();
    assert_eq!(v.head.as_deref(), Some(last.hash.as_str()));
}

async fn deleting_the_last_event_of_a_request_is_named_as_a_truncated_chain(b: Backend) {
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 2, 1).await;
    for s in &c {
        f.store
            .apply(finish(&s.request_id, s.id, s.lease_token, 2000))
            .await
            .unwrap();
    }
    let events = f.store.chain_events("request:r000", 0, 10).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.chain_seq, 3);
    let n = exec(
        b,
        &f.url,
        &format!("DELETE FROM events WHERE seq = {}", last.seq),
    )
    .await;
    assert_eq!(n, 1);
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    let broken = v.broken.clone().expect("a truncated tail is detected");
    assert_eq!(broken.chain, "request:r000");
    assert_eq!(broken.chain_seq, 3, "the missing position");
    assert_eq!(broken.seq, last.seq);
    assert!(broken.reason.contains("truncated"), "{}", broken.reason);
    assert_eq!(
        v.broken_chains, 1,
        "the other request's chain still verifies"
    );
    assert_eq!(v.chains, 2);

    // The certificate of the damaged request says so; the other's does not.
    let cert = lethe::report::certificate::build(f.store.as_ref(), "r000", 3000)
        .await
        .unwrap()
        .unwrap();
    assert!(!cert.audit.chain_verified);
    assert_eq!(cert.audit.chain, "request:r000");
    let cert = lethe::report::certificate::build(f.store.as_ref(), "r001", 3000)
        .await
        .unwrap()
        .unwrap();
    assert!(cert.audit.chain_verified);
    assert_eq!(cert.audit.chain_events, 3, "only its own chain is verified");
}

async fn a_chain_whose_rows_or_head_were_all_deleted_is_named(b: Backend) {
    let f = fresh(b).await;
    claimed(f.store.as_ref(), 3, 1).await;
    // Hold ids whose order differs between bytewise and locale collations.
    for id in ["h-b", "hA", "ha"] {
        f.store
            .add_hold(store::HoldRow {
                id: id.into(),
                subject_hash: "hash-x".into(),
                subject_masked: "x***@example.com".into(),
                basis: "litigation".into(),
                until_at: None,
                processor: None,
                created_at: 3000,
                released_at: None,
            })
            .await
            .unwrap();
    }
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!((v.chains, v.checked), (6, 6));

    exec(b, &f.url, "DELETE FROM events WHERE chain = 'request:r000'").await;
    exec(
        b,
        &f.url,
        "DELETE FROM chain_heads WHERE chain = 'request:r002'",
    )
    .await;
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    let named: Vec<(&str, i64)> = v
        .broken_list
        .iter()
        .map(|b| (b.chain.as_str(), b.chain_seq))
        .collect();
    assert_eq!(named, [("request:r000", 1), ("request:r002", 1)], "{v:?}");
    assert!(v.broken_list[0].reason.contains("truncated"));
    assert!(v.broken_list[1].reason.contains("no head"));
    assert_eq!((v.chains, v.broken_chains), (6, 2));

    // A row inserted without a chain is reported too.
    exec(
        b,
        &f.url,
        "INSERT INTO events (at, request_id, step_id, kind, detail, prev_hash, hash) \
         VALUES (1, NULL, NULL, 'forged', '{}', 'x', 'y')",
    )
    .await;
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert_eq!(v.broken_chains, 3);
    assert!(v.broken_list[2].reason.contains("without a chain"));
}

async fn editing_an_events_detail_is_named_with_its_chain_and_position(b: Backend) {
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 2, 1).await;
    for s in &c {
        f.store
            .apply(finish(&s.request_id, s.id, s.lease_token, 2000))
            .await
            .unwrap();
    }
    let events = f.store.chain_events("request:r001", 0, 10).await.unwrap();
    let done = events.iter().find(|e| e.kind == "step.done").unwrap();
    exec(
        b,
        &f.url,
        &format!(
            "UPDATE events SET detail = '{{\"outcome\":\"not_found\"}}' WHERE seq = {}",
            done.seq
        ),
    )
    .await;
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    let broken = v.broken.expect("an edit is detected");
    assert_eq!(
        (broken.chain.as_str(), broken.chain_seq, broken.seq),
        ("request:r001", done.chain_seq, done.seq)
    );
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
}

async fn rewriting_a_whole_chain_consistently_is_not_detectable_without_signed_checkpoints(
    b: Backend,
) {
    // The documented limit: an attacker with write access who recomputes every
    // hash of a chain AND its head leaves nothing to detect. Only signed
    // checkpoints of the heads catch that; this test pins the limit down.
    let f = fresh(b).await;
    let c = claimed(f.store.as_ref(), 1, 1).await;
    f.store
        .apply(finish("r000", c[0].id, c[0].lease_token, 2000))
        .await
        .unwrap();
    let events = f.store.chain_events("request:r000", 0, 10).await.unwrap();
    let mut prev = GENESIS_HASH.to_string();
    for e in &events {
        let detail: Value = if e.kind == "step.done" {
            json!({"outcome": "not_found"})
        } else {
            e.detail.clone()
        };
        let hash = event_hash(
            &prev,
            &ChainedEvent {
                chain: &e.chain,
                chain_seq: e.chain_seq,
                at_ms: e.at,
                request_id: e.request_id.as_deref(),
                step_id: e.step_id,
                kind: &e.kind,
                detail: &detail,
            },
        );
        let sql = format!(
            "UPDATE events SET detail = '{}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}",
            detail.to_string().replace('\'', "''"),
            e.seq
        );
        exec(b, &f.url, &sql).await;
        prev = hash;
    }
    // Without updating the head, the rewrite is caught …
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    let broken = v.broken.expect("the head no longer matches");
    assert!(broken.reason.contains("head"), "{}", broken.reason);
    // … with it, it is not.
    exec(
        b,
        &f.url,
        &format!("UPDATE chain_heads SET hash = '{prev}' WHERE chain = 'request:r000'"),
    )
    .await;
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
}

/// Apply migrations before 0011 only: the schema lethe had before per-chain hashing.
async fn old_schema(b: Backend, url: &str) {
    match b {
        Backend::Sqlite => {
            let mut m = sqlx::migrate!("./migrations/sqlite");
            m.migrations = m
                .migrations
                .iter()
                .filter(|x| x.version < 11)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            m.run(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let mut m = sqlx::migrate!("./migrations/postgres");
            m.migrations = m
                .migrations
                .iter()
                .filter(|x| x.version < 11)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            m.run(&pool).await.unwrap();
        }
    }
}

async fn a_store_written_before_0011_keeps_verifying_and_new_events_get_their_own_chains(
    b: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("old.db").display()),
        Backend::Postgres => pg_schema_url().await,
    };
    old_schema(b, &url).await;
    // Rows as lethe wrote them before 0011: one global chain, numbered by seq,
    // hashed with the old rule.
    exec(
        b,
        &url,
        "INSERT INTO requests (id, kind, workflow, status, cancelled, received_at, due_at, subject_hash, \
         subject_masked, updated_at) VALUES ('old', 'erasure', 'erasure', 'in_progress', 0, 1000, 9000000000, \
         'hash-old', 'o***@example.com', 1000)",
    )
    .await;
    exec(
        b,
        &url,
        "INSERT INTO steps (request_id, processor, connector, category, action, wave, state, phase, attempts, \
         run_at, updated_at) VALUES ('old', 'p0', 'mailchimp', 'mailing_list', 'erase', 0, 'pending', 'act', 0, 1000, 1000)",
    )
    .await;
    let old: [(Option<&str>, &str, Value); 3] = [
        (Some("old"), "request.created", json!({"kind": "erasure"})),
        (
            None,
            "hold.added",
            json!({"hold": "h0", "basis": "litigation"}),
        ),
        (Some("old"), "request.note", json!({"n": 1})),
    ];
    let mut prev = GENESIS_HASH.to_string();
    for (i, (req, kind, detail)) in old.iter().enumerate() {
        let seq = i as i64 + 1;
        let hash = chain_hash(
            &prev,
            &EventBody {
                seq,
                at_ms: 1000 + seq,
                request_id: *req,
                step_id: None,
                kind,
                detail,
            },
        );
        let req_sql = req.map(|r| format!("'{r}'")).unwrap_or("NULL".into());
        exec(
            b,
            &url,
            &format!(
                "INSERT INTO events (seq, at, request_id, step_id, kind, detail, prev_hash, hash) \
                 VALUES ({seq}, {}, {req_sql}, NULL, '{kind}', '{detail}', '{prev}', '{hash}')",
                1000 + seq
            ),
        )
        .await;
        prev = hash;
    }

    // lethe migrates the store; the old rows verify as the `legacy` chain.
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let v = lethe::audit::verify(store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!((v.chains, v.checked), (1, 3));
    assert_eq!(v.head.as_deref(), Some(prev.as_str()));
    let head = store.chain_head("legacy").await.unwrap().unwrap();
    assert_eq!((head.chain_seq, head.event_seq), (3, 3));

    // The old request keeps working; its new events start its own chain.
    let c = store.claim_due("w", 2000, 600_000, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    store
        .apply(finish("old", c[0].id, c[0].lease_token, 3000))
        .await
        .unwrap();
    let mine = store.request_events("old").await.unwrap();
    let chains: Vec<(&str, i64)> = mine
        .iter()
        .map(|e| (e.chain.as_str(), e.chain_seq))
        .collect();
    assert_eq!(
        chains,
        [
            ("legacy", 1),
            ("legacy", 3),
            ("request:old", 1),
            ("request:old", 2)
        ]
    );
    assert!(
        mine[2].seq > 3,
        "the global order continues after the old rows"
    );
    let v = lethe::audit::verify(store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!((v.chains, v.checked), (2, 5));
    let cert = lethe::report::certificate::build(store.as_ref(), "old", 4000)
        .await
        .unwrap()
        .unwrap();
    assert!(cert.audit.chain_verified);
    assert_eq!(
        cert.audit.chain_events, 5,
        "its legacy rows are verified too"
    );

    // Deleting the legacy chain's last row is now detected as well (before
    // 0011 it was not: the shorter chain verified).
    exec(b, &url, "DELETE FROM events WHERE seq = 3").await;
    let v = lethe::audit::verify(store.as_ref()).await.unwrap();
    let broken = v.broken.expect("the legacy tail is gone");
    assert_eq!((broken.chain.as_str(), broken.chain_seq), ("legacy", 3));
    assert!(broken.reason.contains("truncated"), "{}", broken.reason);
}

async fn audit_verify_exits_1_naming_the_chain_whose_last_event_was_deleted_and_0_when_intact(
    b: Backend,
) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(b, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", fakes::API_KEY);
    let a = env.erase("ann@example.com").await;
    let bb = env.erase("bob@example.com").await;
    env.run_until_status(&a, &["completed"], 30).await;
    env.run_until_status(&bb, &["completed"], 30).await;

    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = env.json(&["audit", "verify", "--json"]).await;
    assert!(v["broken"].is_null(), "{v:#}");
    assert_eq!(v["chains"], 2, "{v:#}");

    let cert = env.json(&["report", &a, "--format", "json"]).await;
    assert_eq!(cert["audit"]["chain"], format!("request:{a}"));
    assert_eq!(cert["audit"]["chain_verified"], true);
    let store = env.store().await;
    let events = store
        .chain_events(&format!("request:{a}"), 0, 100)
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(cert["audit"]["chain_head"], last.hash.as_str());
    assert_eq!(cert["audit"]["chain_events"], events.len());
    let timeline = cert["processors"][0]["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .all(|t| t["chain_seq"].as_i64().unwrap() >= 1),
        "{timeline:#?}"
    );

    exec(
        b,
        &env.db_url,
        &format!("DELETE FROM events WHERE seq = {}", last.seq),
    )
    .await;
    let out = env.lethe(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("chain request:{a}, position {}", last.chain_seq))
            && text.contains("truncated"),
        "{text}"
    );
    let out = env.lethe(&["audit", "verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["broken"]["chain"], format!("request:{a}"));
    assert_eq!(v["broken"]["chain_seq"], last.chain_seq);
    assert_eq!(v["broken"]["seq"], last.seq);
    assert_eq!(v["broken_chains"], 1);

    // The damaged request's certificate says so and exits 1; the other's is intact.
    let out = env.lethe(&["report", &a, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let cert: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cert["audit"]["chain_verified"], false);
    let out = env.lethe(&["report", &bb, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// PostgreSQL only (SQLite has one writer and cannot deadlock): a transaction
/// the server aborts to break a deadlock (40P01) is run again, and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_chosen_as_a_deadlock_victim_on_postgres_is_retried_and_succeeds() {
    let f = fresh(Backend::Postgres).await;
    let c = claimed(f.store.as_ref(), 1, 1).await;
    let before = store::contended_retries();
    // Another session takes the chain head first, then (below) the request row:
    // the opposite of lethe's order. It waits longer before checking for a
    // deadlock, so lethe's transaction is the one the server aborts.
    let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '10s'")
        .execute(&mut *other)
        .await
        .unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    sqlx::query("SELECT chain_seq FROM chain_heads WHERE chain = 'request:r000' FOR UPDATE")
        .execute(&mut *other)
        .await
        .unwrap();
    let st = f.store.clone();
    let (id, token) = (c[0].id, c[0].lease_token);
    let apply = tokio::spawn(async move { st.apply(finish("r000", id, token, 2000)).await });
    // Wait until lethe's transaction holds the request row and waits for the head.
    let mut waited = 0;
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(pid)
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        waited += 1;
        assert!(
            waited < 500,
            "lethe's apply never waited for the chain head"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Closing the cycle: the server aborts lethe's transaction (40P01) …
    let n = sqlx::query("UPDATE requests SET updated_at = updated_at WHERE id = 'r000'")
        .execute(&mut *other)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    other.rollback().await.unwrap();
    // … which runs it again, and it commits.
    let applied = apply
        .await
        .unwrap()
        .expect("the deadlock victim is retried");
    assert!(matches!(applied, Applied::Done { .. }), "{applied:?}");
    assert!(store::contended_retries() > before, "it was retried");
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.checked, 3);
}

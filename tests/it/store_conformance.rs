//! The store conformance suite: the same tests against SQLite and PostgreSQL.

use crate::helpers::{pg_schema_url, Backend};
use crate::on_both_backends;
use lethe::domain::{Action, Outcome, Phase, RequestKind, RequestStatus, StepState};
use lethe::store::{
    self, Applied, ChangeSet, NewRequest, NewStep, RequestFilter, RequestPatch, StepChange, Store,
    StoreError,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

struct Fresh {
    store: Arc<dyn Store>,
    url: String,
    _dir: tempfile::TempDir,
}

async fn fresh(backend: Backend) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("s.db").display()),
        Backend::Postgres => pg_schema_url().await,
    };
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    // Migrating twice is harmless.
    store.migrate().await.unwrap();
    Fresh {
        store,
        url,
        _dir: dir,
    }
}

fn new_request(id: &str, received: i64) -> NewRequest {
    NewRequest {
        id: id.into(),
        kind: RequestKind::Erasure,
        workflow: "erasure".into(),
        received_at: received,
        due_at: received + 30 * 86_400_000,
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

fn step(processor: &str, wave: i64, run_at: i64) -> NewStep {
    NewStep {
        processor: processor.into(),
        connector: "mailchimp".into(),
        category: "mailing_list".into(),
        action: Action::Erase,
        wave,
        state: StepState::Pending,
        run_at,
        hold_basis: None,
        hold_until: None,
        outcome: None,
        note: None,
    }
}

/// The result of the claim that holds lease token `token`.
fn finish(step_id: i64, token: i64, outcome: Outcome, now: i64) -> StepChange {
    StepChange {
        step_id,
        from: StepState::Running,
        lease_token: Some(token),
        maybe_acted: false,
        to: StepState::Done,
        phase: Phase::Act,
        outcome: Some(outcome),
        run_at: now,
        attempts: None,
        error: None,
        evidence: Some(json!({"status": 204})),
        hold: None,
        grace_until: None,
        finished: true,
        event: "step.done".into(),
        detail: json!({"outcome": outcome.as_str()}),
    }
}

fn cs(request_id: &str, now: i64, steps: Vec<StepChange>) -> ChangeSet {
    ChangeSet {
        request_id: request_id.into(),
        now,
        steps,
        request: RequestPatch::default(),
        events: vec![],
    }
}

on_both_backends!(
    a_request_and_its_steps_round_trip,
    a_batch_of_requests_is_read_at_once_and_unknown_ids_are_left_out,
    due_steps_are_claimed_once_and_future_ones_not_at_all,
    concurrent_claimers_never_take_the_same_step,
    a_later_wave_waits_for_the_earlier_one,
    an_expired_lease_returns_the_step_to_pending,
    a_worker_whose_clock_runs_ahead_cannot_take_a_live_lease,
    a_stale_lease_token_is_refused_even_from_the_same_worker,
    a_result_from_a_worker_that_lost_its_lease_is_refused_and_nothing_is_written,
    finishing_every_step_completes_the_request_and_is_audited,
    a_request_is_extended_once_only,
    listing_filters_by_status_and_overdue,
    external_ids_are_unique,
    next_wake_is_the_earliest_due_unblocked_step,
    the_audit_chain_verifies_and_an_edited_row_is_named,
    a_batch_commits_each_change_set_on_its_own_and_skips_a_conflicting_one,
    data_keys_are_stored_with_the_request_rewrapped_only_from_their_kid_and_destroyed_by_shredding,
    a_legacy_row_is_upgraded_once_and_closed_exports_are_due_for_deletion_once,
    claims_grant_a_processors_slots_and_tokens_cluster_wide_and_a_finished_step_gives_its_slot_back,
    every_value_the_code_writes_is_accepted_and_an_unknown_one_refused_or_named_corrupt,
);

async fn claims_grant_a_processors_slots_and_tokens_cluster_wide_and_a_finished_step_gives_its_slot_back(
    b: Backend,
) {
    let f = fresh(b).await;
    for r in 0..6 {
        f.store
            .create_request(
                new_request(&format!("r{r}"), 1000),
                vec![
                    step("limited", 0, 1000),
                    step("rated", 0, 1000),
                    step("free", 0, 1000),
                ],
                1000,
            )
            .await
            .unwrap();
    }
    f.store
        .set_limits(&[
            store::LimitSpec {
                processor: "limited".into(),
                concurrency: 2,
                rate_per_second: None,
            },
            // A rate of 0.001/s: the bucket starts full (burst 1) and does not refill during the test.
            store::LimitSpec {
                processor: "rated".into(),
                concurrency: 10,
                rate_per_second: Some(0.001),
            },
        ])
        .await
        .unwrap();
    // Two claimers, as two daemons: together they get 2 "limited", 1 "rated", every "free".
    let a = f.store.claim_due("w1", 2000, 60000, 4).await.unwrap();
    let b2 = f.store.claim_due("w2", 2000, 60000, 100).await.unwrap();
    let count = |p: &str| {
        a.iter()
            .chain(b2.iter())
            .filter(|s| s.processor == p)
            .count()
    };
    assert_eq!(count("limited"), 2, "{a:?} {b2:?}");
    assert_eq!(count("rated"), 1, "one token");
    assert_eq!(count("free"), 6, "no limit row: not limited");
    assert!(f
        .store
        .claim_due("w3", 2000, 60000, 100)
        .await
        .unwrap()
        .is_empty());
    let usage = f.store.limit_usage().await.unwrap();
    let limited = usage.iter().find(|u| u.processor == "limited").unwrap();
    assert_eq!((limited.concurrency, limited.running), (2, 2));
    // A written result gives its slot back; the next claim takes exactly one more.
    let done = a
        .iter()
        .chain(b2.iter())
        .find(|s| s.processor == "limited")
        .unwrap();
    let out = f
        .store
        .apply(cs(
            &done.request_id,
            3000,
            vec![finish(done.id, done.lease_token, Outcome::Erased, 3000)],
        ))
        .await
        .unwrap();
    assert!(matches!(out, Applied::Done { .. }), "{out:?}");
    let c = f.store.claim_due("w3", 3000, 60000, 100).await.unwrap();
    assert_eq!(
        c.iter().map(|s| s.processor.as_str()).collect::<Vec<_>>(),
        vec!["limited"]
    );
    // Raising the limit (a new config) frees more slots at once.
    f.store
        .set_limits(&[store::LimitSpec {
            processor: "limited".into(),
            concurrency: 4,
            rate_per_second: None,
        }])
        .await
        .unwrap();
    let c = f.store.claim_due("w4", 3000, 60000, 100).await.unwrap();
    assert_eq!(c.len(), 2, "{c:?}");
}

async fn a_batch_commits_each_change_set_on_its_own_and_skips_a_conflicting_one(b: Backend) {
    let f = fresh(b).await;
    for r in ["r1", "r2", "r3"] {
        f.store
            .create_request(new_request(r, 1000), vec![step("a", 0, 1000)], 1000)
            .await
            .unwrap();
    }
    let c = f.store.claim_due("w", 1000, 60000, 10).await.unwrap();
    assert_eq!(c.len(), 3);
    let by_req = |r: &str| c.iter().find(|s| s.request_id == r).unwrap().id;
    let events_before = f.store.events(0, 1000).await.unwrap().len();
    let out = f
        .store
        .apply_batch(vec![
            cs(
                "r1",
                2000,
                vec![finish(by_req("r1"), 1, Outcome::Erased, 2000)],
            ),
            // Not our lease: refused, and only this change set is rolled back.
            cs(
                "r2",
                2000,
                vec![finish(by_req("r2"), 99, Outcome::Erased, 2000)],
            ),
            cs(
                "r3",
                2000,
                vec![finish(by_req("r3"), 1, Outcome::NotFound, 2000)],
            ),
        ])
        .await
        .unwrap();
    let out: Vec<Applied> = out.into_iter().map(|a| a.unwrap()).collect();
    assert!(
        matches!(
            out[0],
            Applied::Done {
                status: RequestStatus::Completed,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        out[1],
        Applied::Conflict {
            step_id: by_req("r2")
        }
    );
    assert!(
        matches!(
            out[2],
            Applied::Done {
                status: RequestStatus::Completed,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        f.store.get_request("r2").await.unwrap().unwrap().status,
        RequestStatus::InProgress
    );
    assert_eq!(
        f.store.steps("r2").await.unwrap()[0].state,
        StepState::Running
    );
    // Two step events and two status events, none for the refused one; the chain still verifies.
    assert_eq!(
        f.store.events(0, 1000).await.unwrap().len(),
        events_before + 4
    );
    assert!(lethe::audit::verify(f.store.as_ref())
        .await
        .unwrap()
        .broken
        .is_none());
}

async fn a_request_and_its_steps_round_trip(b: Backend) {
    let f = fresh(b).await;
    let r = f
        .store
        .create_request(
            new_request("r1", 1000),
            vec![step("a", 0, 1000), step("b", 1, 1000)],
            1000,
        )
        .await
        .unwrap();
    assert_eq!(r.id, "r1");
    assert_eq!(r.status, RequestStatus::InProgress);
    assert_eq!(r.identities.as_deref(), Some(&[1u8, 2, 3][..]));
    let got = f.store.get_request("r1").await.unwrap().unwrap();
    assert_eq!(got, r);
    let steps = f.store.steps("r1").await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s.processor.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(steps
        .iter()
        .all(|s| s.state == StepState::Pending && s.attempts == 0 && s.phase == Phase::Act));
    assert!(f.store.get_request("nope").await.unwrap().is_none());
    let ev = f.store.request_events("r1").await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, "request.created");
}

async fn a_batch_of_requests_is_read_at_once_and_unknown_ids_are_left_out(b: Backend) {
    let f = fresh(b).await;
    let mut made = Vec::new();
    for i in 0..3 {
        let id = format!("r{i}");
        made.push(
            f.store
                .create_request(new_request(&id, 1000 + i), vec![step("a", 0, 1000)], 1000)
                .await
                .unwrap(),
        );
    }
    let ids: Vec<String> = ["r2", "nope", "r0"].iter().map(|s| s.to_string()).collect();
    let mut got = f.store.get_requests(&ids).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, vec![made[0].clone(), made[2].clone()]);
    assert!(f.store.get_requests(&[]).await.unwrap().is_empty());
    // More ids than one statement takes (500 a statement), with repeats: each
    // request found once, wherever it falls.
    let mut many: Vec<String> = (0..1200).map(|i| format!("unknown-{i}")).collect();
    many[0] = "r0".into();
    many[700] = "r1".into();
    many[1199] = "r2".into();
    many.push("r1".into());
    let mut got = f.store.get_requests(&many).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, made);
}

async fn due_steps_are_claimed_once_and_future_ones_not_at_all(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(
            new_request("r1", 1000),
            vec![step("due", 0, 1000), step("later", 0, 9000)],
            1000,
        )
        .await
        .unwrap();
    let c = f.store.claim_due("w1", 2000, 62000, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].processor, "due");
    assert_eq!(c[0].state, StepState::Running);
    assert_eq!(c[0].lease_owner.as_deref(), Some("w1"));
    // The lease is stamped by the database's clock, not the caller's `now`.
    let real_now = chrono::Utc::now().timestamp_millis();
    let expires = c[0].lease_expires_at.expect("leased");
    assert!(
        (expires - (real_now + 62000)).abs() < 10_000,
        "lease ends {expires}, expected about {}",
        real_now + 62000
    );
    assert_eq!(c[0].lease_token, 1, "the first claim takes token 1");
    assert_eq!(c[0].attempts, 1);
    assert!(
        f.store
            .claim_due("w2", 2000, 62000, 10)
            .await
            .unwrap()
            .is_empty(),
        "a leased step is not claimed again"
    );
    let c = f.store.claim_due("w2", 9000, 69000, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].processor, "later");
}

async fn concurrent_claimers_never_take_the_same_step(b: Backend) {
    let f = fresh(b).await;
    for r in 0..10 {
        let steps = (0..5).map(|i| step(&format!("p{i}"), 0, 1000)).collect();
        f.store
            .create_request(new_request(&format!("r{r}"), 1000), steps, 1000)
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for w in 0..4 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            loop {
                let c = s.claim_due(&format!("w{w}"), 2000, 60000, 3).await.unwrap();
                if c.is_empty() {
                    break;
                }
                mine.extend(c.into_iter().map(|s| s.id));
            }
            mine
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 50, "every step claimed");
    assert_eq!(unique.len(), 50, "no step claimed twice");
}

async fn a_later_wave_waits_for_the_earlier_one(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(
            new_request("r1", 1000),
            vec![step("first", 0, 1000), step("second", 1, 1000)],
            1000,
        )
        .await
        .unwrap();
    let c = f.store.claim_due("w", 2000, 60000, 10).await.unwrap();
    assert_eq!(
        c.iter().map(|s| s.processor.as_str()).collect::<Vec<_>>(),
        ["first"]
    );
    assert!(f
        .store
        .claim_due("w", 2000, 60000, 10)
        .await
        .unwrap()
        .is_empty());
    let applied = f
        .store
        .apply(cs(
            "r1",
            3000,
            vec![finish(c[0].id, 1, Outcome::Erased, 3000)],
        ))
        .await
        .unwrap();
    assert!(
        matches!(
            applied,
            Applied::Done {
                status: RequestStatus::InProgress,
                ..
            }
        ),
        "{applied:?}"
    );
    let c = f.store.claim_due("w", 3000, 60000, 10).await.unwrap();
    assert_eq!(
        c.iter().map(|s| s.processor.as_str()).collect::<Vec<_>>(),
        ["second"]
    );
}

async fn an_expired_lease_returns_the_step_to_pending(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let c = f.store.claim_due("dead", 1000, 400, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    let token = c[0].lease_token;
    assert!(
        f.store.heartbeat(c[0].id, token, 400).await.unwrap(),
        "the holder of the token may extend its lease"
    );
    assert!(
        !f.store.heartbeat(c[0].id, token + 1, 60_000).await.unwrap(),
        "another token may not"
    );
    assert_eq!(
        f.store.release_expired_leases(1000).await.unwrap(),
        0,
        "not yet expired"
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(f.store.release_expired_leases(3000).await.unwrap(), 1);
    let s = &f.store.steps("r1").await.unwrap()[0];
    assert_eq!(s.state, StepState::Pending);
    assert_eq!(s.lease_owner, None);
    assert!(
        s.maybe_acted,
        "an erase whose lease ran out may have reached the processor"
    );
    let c2 = f.store.claim_due("alive", 3000, 63000, 10).await.unwrap();
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0].attempts, 2);
    assert_eq!(c2[0].lease_token, token + 1, "a new claim, a new token");
    assert!(
        !f.store.heartbeat(c[0].id, token, 60_000).await.unwrap(),
        "the old token can no longer extend anything"
    );
    let events = f.store.request_events("r1").await.unwrap();
    let expired = events
        .iter()
        .find(|e| e.kind == "step.lease_expired")
        .expect("a lease_expired event");
    assert_eq!(expired.detail["may_have_reached_processor"], true);
}

async fn a_worker_whose_clock_runs_ahead_cannot_take_a_live_lease(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let real_now = chrono::Utc::now().timestamp_millis();
    let c = f.store.claim_due("w1", real_now, 60_000, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    // A second worker whose clock is an hour fast looks for expired leases.
    let skewed = real_now + 3_600_000;
    assert_eq!(
        f.store.release_expired_leases(skewed).await.unwrap(),
        0,
        "expiry is judged by the database's clock"
    );
    assert!(f
        .store
        .claim_due("w2", skewed, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    let s = &f.store.steps("r1").await.unwrap()[0];
    assert_eq!(s.lease_owner.as_deref(), Some("w1"));
}

async fn a_stale_lease_token_is_refused_even_from_the_same_worker(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    // One worker id claims, stalls past its lease, and claims the step again.
    let first = f.store.claim_due("w", 1000, 1, 10).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(f.store.release_expired_leases(1000).await.unwrap(), 1);
    let second = f.store.claim_due("w", 1000, 60_000, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    // The stalled first attempt's result carries the first token: refused.
    let r = f
        .store
        .apply(cs(
            "r1",
            2000,
            vec![finish(
                first[0].id,
                first[0].lease_token,
                Outcome::NotFound,
                2000,
            )],
        ))
        .await
        .unwrap();
    assert_eq!(
        r,
        Applied::Conflict {
            step_id: first[0].id
        }
    );
    let s = &f.store.steps("r1").await.unwrap()[0];
    assert_eq!(s.state, StepState::Running, "the live claim is untouched");
    let r = f
        .store
        .apply(cs(
            "r1",
            2100,
            vec![finish(
                second[0].id,
                second[0].lease_token,
                Outcome::Erased,
                2100,
            )],
        ))
        .await
        .unwrap();
    assert!(matches!(r, Applied::Done { .. }), "{r:?}");
}

async fn a_result_from_a_worker_that_lost_its_lease_is_refused_and_nothing_is_written(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let c = f.store.claim_due("old", 1000, 1, 10).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.store.release_expired_leases(2000).await.unwrap();
    let c2 = f.store.claim_due("new", 2000, 62000, 10).await.unwrap();
    assert_eq!(c2.len(), 1);
    let events_before = f.store.events(0, 1000).await.unwrap().len();
    let r = f
        .store
        .apply(cs(
            "r1",
            2500,
            vec![finish(c[0].id, c[0].lease_token, Outcome::Erased, 2500)],
        ))
        .await
        .unwrap();
    assert_eq!(r, Applied::Conflict { step_id: c[0].id });
    assert_eq!(
        f.store.events(0, 1000).await.unwrap().len(),
        events_before,
        "no event written"
    );
    let s = &f.store.steps("r1").await.unwrap()[0];
    assert_eq!(s.state, StepState::Running);
    assert_eq!(s.lease_owner.as_deref(), Some("new"));
    let r = f
        .store
        .apply(cs(
            "r1",
            2600,
            vec![finish(c[0].id, c2[0].lease_token, Outcome::Erased, 2600)],
        ))
        .await
        .unwrap();
    assert!(matches!(
        r,
        Applied::Done {
            status: RequestStatus::Completed,
            ..
        }
    ));
    assert_eq!(
        f.store.apply(cs("missing", 1, vec![])).await.unwrap(),
        Applied::NoRequest
    );
}

async fn finishing_every_step_completes_the_request_and_is_audited(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(
            new_request("r1", 1000),
            vec![step("a", 0, 1000), step("b", 0, 1000)],
            1000,
        )
        .await
        .unwrap();
    let c = f.store.claim_due("w", 1000, 60000, 10).await.unwrap();
    let r = f
        .store
        .apply(cs(
            "r1",
            2000,
            vec![finish(c[0].id, 1, Outcome::Erased, 2000)],
        ))
        .await
        .unwrap();
    assert_eq!(
        r,
        Applied::Done {
            previous: RequestStatus::InProgress,
            status: RequestStatus::InProgress
        }
    );
    assert_eq!(
        f.store
            .get_request("r1")
            .await
            .unwrap()
            .unwrap()
            .completed_at,
        None
    );
    let r = f
        .store
        .apply(cs(
            "r1",
            3000,
            vec![finish(c[1].id, 1, Outcome::NotFound, 3000)],
        ))
        .await
        .unwrap();
    assert_eq!(
        r,
        Applied::Done {
            previous: RequestStatus::InProgress,
            status: RequestStatus::Completed
        }
    );
    let req = f.store.get_request("r1").await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Completed);
    assert_eq!(req.completed_at, Some(3000));
    let steps = f.store.steps("r1").await.unwrap();
    assert_eq!(steps[0].outcome, Some(Outcome::Erased));
    assert_eq!(steps[0].evidence, Some(json!({"status": 204})));
    assert_eq!(steps[1].finished_at, Some(3000));
    let kinds: Vec<String> = f
        .store
        .request_events("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "request.created",
            "step.done",
            "step.done",
            "request.status"
        ]
    );
    let counts = f.store.step_counts().await.unwrap();
    assert!(counts.contains(&("a".into(), "done".into(), 1)));
}

async fn a_request_is_extended_once_only(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let mut c = cs("r1", 2000, vec![]);
    c.request.extend_to = Some((99_000, "complex request".into()));
    assert!(matches!(
        f.store.apply(c.clone()).await.unwrap(),
        Applied::Done { .. }
    ));
    let req = f.store.get_request("r1").await.unwrap().unwrap();
    assert_eq!(req.due_at, 99_000);
    assert_eq!(req.extended_reason.as_deref(), Some("complex request"));
    c.request.extend_to = Some((199_000, "again".into()));
    assert_eq!(f.store.apply(c).await.unwrap(), Applied::AlreadyExtended);
    assert_eq!(
        f.store.get_request("r1").await.unwrap().unwrap().due_at,
        99_000
    );
}

async fn listing_filters_by_status_and_overdue(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("old", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    f.store
        .create_request(new_request("new", 5000), vec![step("a", 0, 5000)], 5000)
        .await
        .unwrap();
    let all = f
        .store
        .list_requests(&RequestFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["new", "old"],
        "newest first"
    );
    let c = f.store.claim_due("w", 1000, 60000, 1).await.unwrap();
    f.store
        .apply(cs(
            &c[0].request_id,
            2000,
            vec![finish(c[0].id, 1, Outcome::Erased, 2000)],
        ))
        .await
        .unwrap();
    let done = f
        .store
        .list_requests(&RequestFilter {
            status: Some(RequestStatus::Completed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].id, "old");
    let overdue = f
        .store
        .list_requests(&RequestFilter {
            overdue_at: Some(1000 + 31 * 86_400_000 + 5000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        overdue.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["new"],
        "a completed request is never overdue"
    );
}

async fn external_ids_are_unique(b: Backend) {
    let f = fresh(b).await;
    let mut r = new_request("r1", 1000);
    r.external_id = Some("form-8842".into());
    f.store
        .create_request(r.clone(), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    assert_eq!(
        f.store
            .find_by_external_id("form-8842")
            .await
            .unwrap()
            .unwrap()
            .id,
        "r1"
    );
    r.id = "r2".into();
    let e = f
        .store
        .create_request(r, vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Duplicate(_)), "{e:?}");
    assert!(
        f.store.get_request("r2").await.unwrap().is_none(),
        "the failed insert left nothing behind"
    );
}

async fn next_wake_is_the_earliest_due_unblocked_step(b: Backend) {
    let f = fresh(b).await;
    assert_eq!(f.store.next_wake().await.unwrap(), None);
    f.store
        .create_request(
            new_request("r1", 1000),
            vec![step("a", 0, 5000), step("blocked", 1, 2000)],
            1000,
        )
        .await
        .unwrap();
    assert_eq!(
        f.store.next_wake().await.unwrap(),
        Some(5000),
        "a blocked step does not wake the worker"
    );
    let c = f.store.claim_due("w", 5000, 7000, 10).await.unwrap();
    assert_eq!(
        f.store.next_wake().await.unwrap(),
        c[0].lease_expires_at,
        "a lease expiry wakes the worker"
    );
}

async fn the_audit_chain_verifies_and_an_edited_row_is_named(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let c = f.store.claim_due("w", 1000, 60000, 10).await.unwrap();
    f.store
        .apply(cs(
            "r1",
            2000,
            vec![finish(c[0].id, 1, Outcome::Erased, 2000)],
        ))
        .await
        .unwrap();
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    assert_eq!(v.checked, 3);
    assert!(v.broken.is_none());
    // Someone rewrites history: the erasure "did not happen".
    let sql = "UPDATE events SET detail = '{\"outcome\":\"not_found\"}' WHERE seq = 2";
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&f.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
    let v = lethe::audit::verify(f.store.as_ref()).await.unwrap();
    let broken = v.broken.expect("tampering is detected");
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
}

fn wk(kid: &str, b: u8) -> store::WrappedKey {
    store::WrappedKey {
        kid: kid.into(),
        wrapped: vec![b; 60],
    }
}

async fn data_keys_are_stored_with_the_request_rewrapped_only_from_their_kid_and_destroyed_by_shredding(
    b: Backend,
) {
    let f = fresh(b).await;
    for (id, kid) in [("r1", "k1"), ("r2", "k1"), ("r3", "k2")] {
        let mut r = new_request(id, 1000);
        r.data_key = Some(wk(kid, 7));
        f.store
            .create_request(r, vec![step("a", 0, 1000)], 1000)
            .await
            .unwrap();
    }
    let k = f.store.data_key("r1").await.unwrap().unwrap();
    assert_eq!(
        (k.kid.as_str(), k.wrapped.as_deref(), k.created_at),
        ("k1", Some(&[7u8; 60][..]), 1000)
    );
    assert!(f.store.data_key("nope").await.unwrap().is_none());
    // Insert-if-absent keeps the first.
    let first = f
        .store
        .put_data_key_if_absent("lethe:x", wk("k1", 1), 5)
        .await
        .unwrap();
    let second = f
        .store
        .put_data_key_if_absent("lethe:x", wk("k2", 2), 6)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(second.kid, "k1");
    // Not under k2: r1, r2, lethe:x (ordered, paged).
    let page = f.store.data_keys_not_under("k2", "", 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|k| k.request_id.as_str()).collect();
    assert_eq!(ids, ["lethe:x", "r1"]);
    let page = f.store.data_keys_not_under("k2", "r1", 2).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].request_id, "r2");
    // Compare-and-set on the old kid: a stale one is skipped.
    let n = f
        .store
        .rewrap_data_keys(vec![
            store::Rewrap {
                request_id: "r1".into(),
                old_kid: "k1".into(),
                key: wk("k2", 9),
            },
            store::Rewrap {
                request_id: "r2".into(),
                old_kid: "k0".into(),
                key: wk("k2", 9),
            },
        ])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        f.store.data_key("r1").await.unwrap().unwrap().wrapped,
        Some(vec![9; 60])
    );
    assert_eq!(f.store.data_key("r2").await.unwrap().unwrap().kid, "k1");
    // Shredding destroys the data key with the identities.
    let c = f.store.claim_due("w", 1000, 60000, 10).await.unwrap();
    let r1 = c.iter().find(|s| s.request_id == "r1").unwrap();
    f.store
        .apply(cs(
            "r1",
            2000,
            vec![finish(r1.id, r1.lease_token, Outcome::Erased, 2000)],
        ))
        .await
        .unwrap();
    let ids = f.store.shred_identities(10_000, 1000).await.unwrap();
    assert_eq!(ids, ["r1"]);
    let k = f.store.data_key("r1").await.unwrap().unwrap();
    assert_eq!((k.wrapped, k.destroyed_at), (None, Some(10_000)));
    assert!(f
        .store
        .data_key("r2")
        .await
        .unwrap()
        .unwrap()
        .wrapped
        .is_some());
    // A destroyed key is never re-wrapped.
    assert!(f
        .store
        .data_keys_not_under("k9", "", 10)
        .await
        .unwrap()
        .iter()
        .all(|k| k.request_id != "r1"));
    let n = f
        .store
        .rewrap_data_keys(vec![store::Rewrap {
            request_id: "r1".into(),
            old_kid: "k2".into(),
            key: wk("k3", 3),
        }])
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(f
        .store
        .data_key("r1")
        .await
        .unwrap()
        .unwrap()
        .wrapped
        .is_none());
}

async fn a_legacy_row_is_upgraded_once_and_closed_exports_are_due_for_deletion_once(b: Backend) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("old", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    let mut r = new_request("new", 1000);
    r.data_key = Some(wk("k1", 1));
    f.store.create_request(r, vec![], 1000).await.unwrap();
    let legacy = f.store.legacy_identities("", 10).await.unwrap();
    assert_eq!(legacy, vec![("old".to_string(), vec![1, 2, 3])]);
    // Only if the sealed blob is still the one read.
    assert!(!f
        .store
        .upgrade_identities("old", &[9], &[4, 5], wk("k1", 2), 1500)
        .await
        .unwrap());
    assert!(f
        .store
        .upgrade_identities("old", &[1, 2, 3], &[4, 5], wk("k1", 2), 1500)
        .await
        .unwrap());
    assert!(!f
        .store
        .upgrade_identities("old", &[4, 5], &[6], wk("k1", 3), 1500)
        .await
        .unwrap());
    assert_eq!(
        f.store
            .get_request("old")
            .await
            .unwrap()
            .unwrap()
            .identities,
        Some(vec![4, 5])
    );
    assert_eq!(
        f.store.data_key("old").await.unwrap().unwrap().wrapped,
        Some(vec![2; 60])
    );
    assert!(f.store.legacy_identities("", 10).await.unwrap().is_empty());

    // Exports: closed ones, once the retention passed since they closed, once.
    let mut e = new_request("exp", 1000);
    e.kind = RequestKind::Export;
    f.store.create_request(e, vec![], 1000).await.unwrap(); // no steps: completed at 1000
    let mut open = new_request("exp-open", 1000);
    open.kind = RequestKind::Export;
    f.store
        .create_request(open, vec![step("a", 0, 99_999)], 1000)
        .await
        .unwrap();
    assert!(f
        .store
        .exports_due_for_deletion(1500, 1000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        f.store.exports_due_for_deletion(2000, 1000).await.unwrap(),
        ["exp"]
    );
    f.store
        .apply(ChangeSet {
            request_id: "exp".into(),
            now: 2000,
            steps: vec![],
            request: RequestPatch::default(),
            events: vec![("request.exports_deleted".into(), json!({"files": 0}))],
        })
        .await
        .unwrap();
    assert!(f
        .store
        .exports_due_for_deletion(3000, 1000)
        .await
        .unwrap()
        .is_empty());
}

/// Run statements against the test database directly (past the store).
async fn raw(b: Backend, url: &str, sql: &str) -> Result<u64, sqlx::Error> {
    match b {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            Ok(sqlx::query(sql).execute(&pool).await?.rows_affected())
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            Ok(sqlx::query(sql).execute(&pool).await?.rows_affected())
        }
    }
}

/// PostgreSQL's CHECK constraints (0017) accept every value of the domain
/// enums and refuse anything else with SQLSTATE 23514; SQLite, which cannot
/// add them to existing tables, keeps such a row and the store names it as
/// corrupt when it reads it.
async fn every_value_the_code_writes_is_accepted_and_an_unknown_one_refused_or_named_corrupt(
    b: Backend,
) {
    let f = fresh(b).await;
    f.store
        .create_request(new_request("r1", 1000), vec![step("a", 0, 1000)], 1000)
        .await
        .unwrap();
    for s in StepState::ALL {
        if s == StepState::Running {
            continue; // needs a lease: below
        }
        let sql = format!(
            "UPDATE steps SET state = '{}' WHERE request_id = 'r1'",
            s.as_str()
        );
        assert_eq!(raw(b, &f.url, &sql).await.unwrap(), 1, "{s}");
    }
    for o in Outcome::ALL {
        let sql = format!(
            "UPDATE steps SET state = 'done', outcome = '{}' WHERE request_id = 'r1'",
            o.as_str()
        );
        assert_eq!(raw(b, &f.url, &sql).await.unwrap(), 1, "{o}");
    }
    for st in RequestStatus::ALL {
        let sql = format!(
            "UPDATE requests SET status = '{}' WHERE id = 'r1'",
            st.as_str()
        );
        assert_eq!(raw(b, &f.url, &sql).await.unwrap(), 1, "{st}");
    }
    for k in RequestKind::ALL {
        let sql = format!(
            "UPDATE requests SET kind = '{}' WHERE id = 'r1'",
            k.as_str()
        );
        assert_eq!(raw(b, &f.url, &sql).await.unwrap(), 1, "{k}");
    }
    raw(
        b,
        &f.url,
        "UPDATE steps SET state = 'running', lease_owner = 'w', lease_expires_at = 5000 WHERE request_id = 'r1'",
    )
    .await
    .unwrap();
    let invalid = [
        "UPDATE steps SET state = 'exploded' WHERE request_id = 'r1'",
        "UPDATE steps SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, outcome = 'vanished' WHERE request_id = 'r1'",
        "UPDATE steps SET phase = 'dance' WHERE request_id = 'r1'",
        "UPDATE steps SET attempts = -1 WHERE request_id = 'r1'",
        "UPDATE steps SET lease_owner = NULL WHERE request_id = 'r1'",
        "UPDATE steps SET state = 'pending' WHERE request_id = 'r1'",
        "UPDATE requests SET status = 'finished' WHERE id = 'r1'",
        "UPDATE requests SET kind = 'erase' WHERE id = 'r1'",
    ];
    match b {
        Backend::Postgres => {
            for sql in invalid {
                let e = raw(b, &f.url, sql).await.expect_err(sql);
                let code = match &e {
                    sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
                    _ => None,
                };
                assert_eq!(code.as_deref(), Some("23514"), "{sql}: {e}");
            }
            // Nothing was written: the step is still as the store left it.
            let steps = f.store.steps("r1").await.unwrap();
            assert_eq!(steps[0].state, StepState::Running);
            assert_eq!(steps[0].lease_owner.as_deref(), Some("w"));
        }
        Backend::Sqlite => {
            raw(b, &f.url, invalid[0]).await.unwrap();
            match f.store.steps("r1").await {
                Err(StoreError::Corrupt { table, .. }) => assert_eq!(table, "steps"),
                other => panic!("expected a corrupt row, got {other:?}"),
            }
        }
    }
}

/// `events.detail` (and the evidence columns) stay TEXT on PostgreSQL: the
/// chain hashes the canonical form of the parsed detail, and a `jsonb` round
/// trip can change it (a float `serde_json` writes as `1e18` comes back as an
/// integer), and `jsonb` refuses a string holding NUL, which TEXT keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_stay_text_on_postgres_because_jsonb_would_change_what_a_hash_covers() {
    let f = fresh(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(&f.url).await.unwrap();
    for (table, col) in [
        ("events", "detail"),
        ("steps", "evidence"),
        ("sweep_items", "evidence"),
    ] {
        let (t,): (String,) = sqlx::query_as(
            "SELECT data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
        )
        .bind(table)
        .bind(col)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(t, "text", "{table}.{col}");
    }
    let canon = |v: &serde_json::Value| {
        let mut s = String::new();
        lethe::domain::event::canonical_json(v, &mut s);
        s
    };
    let detail = json!({"rate": 1e18});
    let (back,): (String,) = sqlx::query_as("SELECT CAST(CAST($1 AS TEXT) AS jsonb)::text")
        .bind(detail.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    let back: serde_json::Value = serde_json::from_str(&back).unwrap();
    assert_ne!(canon(&detail), canon(&back), "{back}");
    let nul = json!({"answer": "a\u{0}b"}).to_string();
    assert!(sqlx::query("SELECT CAST(CAST($1 AS TEXT) AS jsonb)")
        .bind(&nul)
        .execute(&pool)
        .await
        .is_err());
}

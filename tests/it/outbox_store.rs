//! The outbox in the store, on SQLite and PostgreSQL: callbacks are written in
//! the transaction of the change that causes them (and not at all when it is
//! refused), and handed out oldest-first per destination, one lease at a time.

use crate::helpers::{pg_schema_url, Backend};
use crate::on_both_backends;
use lethe::domain::{Action, Outcome, Phase, RequestKind, RequestStatus, StepState};
use lethe::store::{
    self, Applied, Callback, ChangeSet, NewRequest, NewStep, RequestPatch, StepChange, Store,
};
use serde_json::json;
use std::sync::Arc;

async fn fresh(backend: Backend) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("o.db").display()),
        Backend::Postgres => pg_schema_url().await,
    };
    let s = store::open(&url).await.unwrap();
    s.migrate().await.unwrap();
    (s, dir)
}

fn request(id: &str) -> NewRequest {
    NewRequest {
        id: id.into(),
        kind: RequestKind::Erasure,
        workflow: "erasure".into(),
        received_at: 1000,
        due_at: 1000 + 30 * 86_400_000,
        external_id: Some(format!("opendsr:{id}")),
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

fn pending_step(processor: &str) -> NewStep {
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

fn done(step_id: i64, from: StepState, now: i64) -> ChangeSet {
    ChangeSet {
        request_id: "r1".into(),
        now,
        steps: vec![StepChange {
            step_id,
            from,
            lease_token: Some(1),
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
            detail: json!({}),
        }],
        request: RequestPatch::default(),
        events: vec![],
    }
}

fn counts(v: &[(String, i64)]) -> Vec<(&str, i64)> {
    v.iter().map(|(s, n)| (s.as_str(), *n)).collect()
}

on_both_backends!(callbacks_are_written_with_their_change_and_handed_out_in_order_per_destination);

async fn callbacks_are_written_with_their_change_and_handed_out_in_order_per_destination(
    b: Backend,
) {
    let (s, _dir) = fresh(b).await;
    let cbs = vec![
        Callback {
            url: "http://a.test/cb".into(),
            protocol: "lethe".into(),
        },
        Callback {
            url: "http://b.test/cb".into(),
            protocol: "opendsr".into(),
        },
    ];
    s.create_request_with_callbacks(request("r1"), vec![pending_step("p")], cbs, 1000)
        .await
        .unwrap();
    assert_eq!(
        counts(&s.outbox_counts().await.unwrap()),
        vec![("pending", 2)]
    );
    assert_eq!(s.next_outbox_wake().await.unwrap(), Some(1000));

    // One `created` per destination; leased, so not handed out twice.
    let c = s.claim_outbox(1000, 31_000, 10).await.unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|r| r.event == "created" && r.attempts == 1));
    assert_eq!(c[0].status, RequestStatus::InProgress);
    assert!(s.claim_outbox(1000, 31_000, 10).await.unwrap().is_empty());
    let (a_created, b_created) = (c[0].clone(), c[1].clone());
    assert_eq!(a_created.url, "http://a.test/cb");

    // The first claim of a step queues `started`, once.
    let claimed = s.claim_due("w", 2000, 60_000, 10).await.unwrap();
    assert_eq!(
        counts(&s.outbox_counts().await.unwrap()),
        vec![("pending", 4)]
    );
    // …but a destination's later callback waits for its earlier one.
    assert!(s.claim_outbox(2000, 32_000, 10).await.unwrap().is_empty());
    s.outbox_delivered(a_created.id, 2500).await.unwrap();
    s.outbox_failed(b_created.id, Some(5000), "HTTP 503")
        .await
        .unwrap();
    let c = s.claim_outbox(3000, 33_000, 10).await.unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].url.as_str(), c[0].event.as_str()),
        ("http://a.test/cb", "started")
    );
    s.outbox_delivered(c[0].id, 3000).await.unwrap();
    let c = s.claim_outbox(5000, 35_000, 10).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].id, c[0].attempts),
        (b_created.id, 2),
        "retried, attempt counted"
    );

    // A refused change (the step is not in the expected state) queues nothing.
    let r = s
        .apply(done(claimed[0].id, StepState::Pending, 6000))
        .await
        .unwrap();
    assert!(matches!(r, Applied::Conflict { .. }));
    assert_eq!(
        counts(&s.outbox_counts().await.unwrap()),
        vec![("delivered", 2), ("pending", 2)]
    );
    // The status change queues one `status` per destination, in the same transaction.
    let r = s
        .apply(done(claimed[0].id, StepState::Running, 6000))
        .await
        .unwrap();
    assert_eq!(
        r,
        Applied::Done {
            previous: RequestStatus::InProgress,
            status: RequestStatus::Completed
        }
    );
    assert_eq!(
        counts(&s.outbox_counts().await.unwrap()),
        vec![("delivered", 2), ("pending", 4)]
    );
    // Giving up marks a row dead; it no longer holds back the rows after it.
    s.outbox_failed(b_created.id, None, "gave up")
        .await
        .unwrap();
    let c = s.claim_outbox(40_000, 70_000, 10).await.unwrap();
    let got: Vec<(&str, &str, RequestStatus)> = c
        .iter()
        .map(|r| (r.url.as_str(), r.event.as_str(), r.status))
        .collect();
    assert_eq!(
        got,
        vec![
            ("http://b.test/cb", "started", RequestStatus::InProgress),
            ("http://a.test/cb", "status", RequestStatus::Completed),
        ]
    );
    assert_eq!(
        counts(&s.outbox_counts().await.unwrap()),
        vec![("dead", 1), ("delivered", 2), ("pending", 3)]
    );
}

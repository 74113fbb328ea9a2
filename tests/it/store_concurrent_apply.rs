//! Many workers finishing steps of the same request at the same moment must
//! leave the request's derived status right, on both backends. (Found by the
//! all-categories erasure: on PostgreSQL, concurrent change sets each computed
//! the status without the other's step and the last commit wrote a stale one.)

use crate::helpers::{pg_schema_url, Backend};
use crate::on_both_backends;
use lethe::domain::{Action, Outcome, Phase, RequestKind, RequestStatus, StepState};
use lethe::store::{self, ChangeSet, NewRequest, NewStep, RequestPatch, StepChange};
use serde_json::json;

on_both_backends!(steps_finished_concurrently_complete_the_request);

async fn steps_finished_concurrently_complete_the_request(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("s.db").display()),
        Backend::Postgres => pg_schema_url().await,
    };
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    for round in 0..5 {
        let id = format!("r{round}");
        let steps: Vec<NewStep> = (0..8)
            .map(|i| NewStep {
                processor: format!("p{i}"),
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
            })
            .collect();
        store
            .create_request(
                NewRequest {
                    id: id.clone(),
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
                },
                steps,
                1000,
            )
            .await
            .unwrap();
        let claimed = store.claim_due("w", 1000, 60_000, 100).await.unwrap();
        assert_eq!(claimed.len(), 8);
        let tasks: Vec<_> = claimed
            .into_iter()
            .map(|s| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    store
                        .apply(ChangeSet {
                            request_id: id,
                            now: 2000,
                            steps: vec![StepChange {
                                step_id: s.id,
                                from: StepState::Running,
                                lease_token: Some(1),
                                maybe_acted: false,
                                to: StepState::Done,
                                phase: Phase::Act,
                                outcome: Some(Outcome::Erased),
                                run_at: 2000,
                                attempts: None,
                                error: None,
                                evidence: Some(json!({"status": 204})),
                                hold: None,
                                grace_until: None,
                                finished: true,
                                event: "step.done".into(),
                                detail: json!({"outcome": "erased"}),
                            }],
                            request: RequestPatch::default(),
                            events: vec![],
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let req = store.get_request(&id).await.unwrap().unwrap();
        assert_eq!(req.status, RequestStatus::Completed, "round {round}");
        assert_eq!(req.completed_at, Some(2000));
    }
}

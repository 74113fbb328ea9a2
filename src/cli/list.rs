//! `lethe list`: requests, newest first, optionally by status or overdue.
//! Reads the store only; the status filter is parsed before the store is opened.

use super::helpers::open_store;
use super::BadInput;
use crate::config::Config;
use crate::domain::RequestStatus;
use crate::store::{self, RequestFilter};
use crate::view::RequestView;
use chrono::Utc;

/// `lethe list`.
pub(super) async fn list(
    config: Config,
    status: Option<String>,
    overdue: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let status = status
        .map(|s| s.parse::<RequestStatus>())
        .transpose()
        .map_err(BadInput)?;
    let store = open_store(&config).await?;
    let now = Utc::now();
    let filter = RequestFilter {
        status,
        overdue_at: overdue.then(|| store::ms(now)),
        ..Default::default()
    };
    let rows = store.list_requests(&filter).await?;
    let views: Vec<RequestView> = rows
        .iter()
        .map(|r| RequestView::new(r, None, now))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        println!(
            "{:<36}  {:<8}  {:<26}  {:<10}  {:>9}  SUBJECT",
            "ID", "KIND", "STATUS", "DUE", "DAYS LEFT"
        );
        for v in &views {
            println!(
                "{:<36}  {:<8}  {:<26}  {:<10}  {:>9}  {}",
                v.id,
                v.kind,
                v.status,
                &v.due_at[..10],
                if v.status == "completed" {
                    "-".to_string()
                } else {
                    v.days_left.to_string()
                },
                v.subject
            );
        }
    }
    Ok(0)
}

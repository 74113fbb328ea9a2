//! `lethe status ID`: one request and every step. Reads the store only (no
//! engine, no keys); exits 1 when the request failed, so scripts can branch on it.

use super::helpers::open_store;
use super::BadInput;
use crate::config::Config;
use crate::domain::RequestStatus;
use crate::view::RequestView;
use chrono::Utc;

/// `lethe status ID`.
pub(super) async fn status(config: Config, id: String, json: bool) -> anyhow::Result<u8> {
    let store = open_store(&config).await?;
    let req = store
        .get_request(&id)
        .await?
        .ok_or_else(|| BadInput(format!("no request with id `{id}`")))?;
    let steps = store.steps(&req.id).await?;
    let phases = crate::view::phase_names(&config, &req.workflow);
    let view = RequestView::with_phases(&req, Some(&steps), Utc::now(), &phases);
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.to_text());
    }
    Ok(if req.status == RequestStatus::Failed {
        1
    } else {
        0
    })
}

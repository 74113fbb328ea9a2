//! `lethe check`: everything that can be found wrong without a request, then
//! the store, the identity key and every processor (see `crate::check`).

use crate::config::Config;
use std::time::Duration;

/// `lethe check`.
pub(super) async fn check(config: Config, json: bool, timeout: Duration) -> anyhow::Result<u8> {
    crate::check::run(config, json, timeout).await
}

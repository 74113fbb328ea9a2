//! `lethe key rotate`: re-wraps every live data key under the current master
//! key, so old master keys can be destroyed. Opens the keys itself (not through
//! the engine) because rotation needs the key store, not the workflows.

use super::helpers::{bind_keys, open_store};
use crate::config::Config;
use crate::crypto::Keys;
use clap::Subcommand;

/// `key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Re-wrap every live data key under the current master key ([store] key_env),
    /// opening them with it or the old ones ([store] old_key_envs); payloads are untouched.
    Rotate {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe key rotate`.
pub(super) async fn key_rotate(config: Config, json: bool) -> anyhow::Result<u8> {
    let keys = Keys::from_config(&config.store)?;
    let store = open_store(&config).await?;
    let keys = bind_keys(keys, store.as_ref()).await?;
    let r = keys
        .rotate(store.as_ref(), 500)
        .await
        .map_err(|e| match e {
            crate::crypto::KeyStoreError::Key(k) => anyhow::Error::new(k),
            crate::crypto::KeyStoreError::Store(s) => anyhow::Error::new(s),
        })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "re-wrapped {} data key(s) under master key {} ({}); moved {} request(s) sealed before envelope encryption onto data keys",
            r.rewrapped, r.kid, config.store.key_env, r.upgraded
        );
        println!("every live data key is now wrapped by {}: the old master keys can be destroyed (backups taken before now then no longer open)", config.store.key_env);
    }
    Ok(0)
}

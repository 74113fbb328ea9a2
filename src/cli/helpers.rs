//! What several commands share: opening the store (migrated, its URL redacted
//! in errors), building the engine with its bound keys, parsing identity flags
//! and period bounds, writing output to a file or stdout, and waiting for a
//! shutdown signal. Kept apart so each command file holds only its own verb.

use super::BadInput;
use crate::config::Config;
use crate::crypto::Keys;
use crate::domain::{IdentityError, Subject};
use crate::engine::Engine;
use crate::store::{self, Store};
use anyhow::Context;
use chrono::Utc;
use std::sync::Arc;

/// Parse the identity flags, naming the flag of a refused value
/// (`--phone: invalid phone: …`); the error keeps its exit code 2.
pub fn subject_from_flags(
    email: Option<&str>,
    phone: Option<&str>,
    customer_id: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Subject> {
    let flag = |e: &IdentityError| match e {
        IdentityError::Email(_) => "--email",
        IdentityError::Phone(_) => "--phone",
        IdentityError::CustomerId(_) => "--customer-id",
        IdentityError::Name(_) => "--name",
        IdentityError::Empty => "identities",
    };
    Subject::parse(email, phone, customer_id, name).map_err(|e| {
        let f = flag(&e);
        anyhow::Error::new(e).context(f)
    })
}

pub(super) async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::open(&config.store.url)
        .await
        .with_context(|| format!("opening the store ({})", redact_url(&config.store.url)))?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

pub(super) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

pub(super) async fn engine(config: Config) -> anyhow::Result<Arc<Engine>> {
    let keys = Keys::from_config(&config.store)?;
    let store = open_store(&config).await?;
    let keys = bind_keys(keys, store.as_ref()).await?;
    Ok(Engine::new(Arc::new(config), store, keys)?)
}

pub(super) async fn bind_keys(keys: Keys, store: &dyn Store) -> anyhow::Result<Keys> {
    keys.bind_store(store).await.map_err(|e| match e {
        crate::crypto::KeyStoreError::Key(k) => anyhow::Error::new(k),
        crate::crypto::KeyStoreError::Store(s) => anyhow::Error::new(s),
    })
}

/// A period bound: `YYYY-MM-DD` (midnight UTC; for the end, the next midnight,
/// so the day is included) or an RFC 3339 time.
pub(super) fn period_bound(flag: &str, v: &str, end: bool) -> Result<store::Millis, BadInput> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(store::ms(d.and_time(chrono::NaiveTime::MIN).and_utc()));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| store::ms(t.with_timezone(&Utc)))
        .map_err(|_| {
            BadInput(format!(
                "--{flag} `{v}`: expected a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)"
            ))
        })
}

/// Write to `-o FILE` (atomically: a temporary sibling renamed into place) or stdout.
pub(super) fn emit(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".into());
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", path.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

//! `lethe check`: the config, connectors and workflows were validated by
//! loading; this reaches the store, the identity key and every processor, and
//! exits 1 if any is not ok. Uses a throwaway key so a missing one is reported,
//! not fatal.

use super::helpers::open_store;
use crate::config::Config;
use crate::crypto::Keys;
use crate::engine::Engine;
use crate::store::Store;
use std::sync::Arc;

/// `lethe check`.
pub(super) async fn check(config: Config, json: bool) -> anyhow::Result<u8> {
    // Config, connectors and workflows were validated by loading. Now reach each processor.
    let store = open_store(&config).await;
    let store_ok = store.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"));
    let keys = Keys::from_env(&config.store.key_env)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let store_arc: Arc<dyn Store> = match store {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    let e = Engine::new(
        Arc::new(config),
        store_arc,
        Keys::from_base64("check", &Keys::generate_base64())?,
    )?;
    let results = e.check().await;
    let ok = results.iter().all(|(_, r)| r.is_ok()) && keys.is_ok() && store_ok.is_ok();
    if json {
        let v = serde_json::json!({
            "ok": ok,
            "store": store_ok.as_ref().err(),
            "key": keys.as_ref().err(),
            "processors": results.iter().map(|(name, r)| match r {
                Ok(ev) => serde_json::json!({"processor": name, "ok": true, "status": ev.status}),
                Err(e) => serde_json::json!({"processor": name, "ok": false, "error_class": e.class.as_str(), "error": e.message, "status": e.status}),
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("config ok: {}", e.config.path.display());
        println!("store ok");
        match &keys {
            Ok(()) => println!("identity key ok ({})", e.config.store.key_env),
            Err(m) => println!("identity key: {m}"),
        }
        for (name, r) in &results {
            match r {
                Ok(ev) => println!("{name:<18} ok (HTTP {})", ev.status.unwrap_or(0)),
                Err(err) => println!("{name:<18} {}: {}", err.class.as_str(), err.message),
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

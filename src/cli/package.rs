//! `lethe package ID`: an export request's data as a directory and a zip, or
//! an age-encrypted zip. The passphrase and identity file are read before
//! anything is written; existing output is never overwritten.

use super::helpers::open_store;
use super::BadInput;
use crate::config::Config;
use crate::store;
use chrono::Utc;
use std::path::PathBuf;

/// `lethe package`.
pub(super) async fn package(
    config: Config,
    id: String,
    output: Option<PathBuf>,
    passphrase_env: Option<String>,
    identity_file: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use crate::report::package::{self, PackageError};
    let identities = match &identity_file {
        Some(f) => package::read_identity_file(f).map_err(|e| BadInput(e.to_string()))?,
        None => vec![],
    };
    // Read the passphrase before anything is written: a missing one is bad input.
    let passphrase = match &passphrase_env {
        Some(var) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                return Err(BadInput(format!(
                    "--passphrase-env {var}: the environment variable {var} is not set or empty"
                ))
                .into())
            }
        },
        None => None,
    };
    let base = output.unwrap_or_else(|| PathBuf::from(format!("lethe-export-{id}")));
    let store = open_store(&config).await?;
    let pkg = package::build(
        store.as_ref(),
        &config.export_dir,
        &id,
        store::ms(Utc::now()),
        &identities,
        config.store.export_retention.get(),
    )
    .await
    .map_err(|e| match e {
        PackageError::NoRequest(_)
        | PackageError::NotExport(_)
        | PackageError::NeedIdentity(_)
        | PackageError::BadIdentity(_)
        | PackageError::Deleted { .. } => anyhow::Error::new(BadInput(e.to_string())),
        PackageError::Store(s) => anyhow::Error::new(s),
        other => anyhow::Error::new(other),
    })?;
    let with_ext = |ext: &str| {
        let mut s = base.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    let zip = pkg.zip()?;
    let written = match passphrase {
        Some(p) => {
            let path = with_ext(".zip.age");
            package::write_new_file(&path, &package::encrypt(&zip, &p)?)?;
            vec![path]
        }
        None => {
            let zpath = with_ext(".zip");
            if zpath.exists() {
                return Err(BadInput(format!(
                    "{} already exists: remove it or choose another -o",
                    zpath.display()
                ))
                .into());
            }
            pkg.write_dir(&base)?;
            package::write_new_file(&zpath, &zip)?;
            vec![base.clone(), zpath]
        }
    };
    let m = &pkg.manifest;
    println!(
        "export package for request {} ({})",
        m.request.id, m.request.subject
    );
    for p in &m.processors {
        println!("  {:<18} {}", p.processor, p.summary);
    }
    for w in &written {
        println!("wrote {}", w.display());
    }
    if !m.request.status.starts_with("completed") {
        eprintln!(
            "warning: request status is {}: the package holds only what was collected so far",
            m.request.status
        );
    }
    Ok(0)
}

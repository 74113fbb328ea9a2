//! The export package: what an export request hands to its subject.
//!
//! The engine writes one JSON file per processor as each export step finishes
//! (`<export_dir>/<request>/<processor>.json`) and records the file's SHA-256
//! in the step's evidence. The package gathers those files — refusing any
//! whose bytes no longer match the recorded hash — and adds a `manifest.json`
//! (the request, what each processor returned or that it held nothing, the
//! SHA-256 of every file), a short `index.html` for the subject to read, and
//! the request's JSON certificate (`evidence/certificate.json`, verifiable
//! offline with `lethe audit verify --certificate`).
//!
//! Export files at rest are encrypted to `[store] export_recipient` (age
//! X25519; `<processor>.json.age`, mode 0600 in 0700 directories) unless
//! `export_plaintext = true`; the package decrypts them with the admin's age
//! identity (`--identity-file`) and checks the plaintext against the recorded
//! hash. The retention pass deletes them `export_retention` after the request
//! closed (event `request.exports_deleted`); a package of deleted exports is
//! refused, naming when they were deleted.
//!
//! It is written as a directory plus a zip of it; with a passphrase, only an
//! age-encrypted zip is written (a plaintext copy next to it would defeat the
//! point). The passphrase comes from an environment variable, never from the
//! command line, where it would land in shell history and `ps`.

pub use super::manifest::{
    Manifest, ManifestAtRest, ManifestFile, ManifestProcessor, ManifestRequest,
};
use super::ts;
use crate::domain::RequestKind;
use crate::store::{AuditStore, CheckpointStore, Millis, RequestStore, StoreError};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Why a package could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// No such request.
    #[error("no request with id `{0}`")]
    NoRequest(String),
    /// Packages are for export requests.
    #[error("request `{0}` is an erasure: only export requests have data to package")]
    NotExport(String),
    /// An exported file is missing or was altered since it was collected.
    #[error("{0}")]
    Integrity(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed.
    #[error("{0}")]
    Io(String),
    /// The export files are encrypted and no identity was given.
    #[error("the export files of request `{0}` are encrypted to [store] export_recipient: pass --identity-file FILE holding its age identity (AGE-SECRET-KEY-1…)")]
    NeedIdentity(String),
    /// The identity file is unusable.
    #[error("{0}")]
    BadIdentity(String),
    /// The export files were deleted by the retention pass.
    #[error("the export files of request `{id}` were deleted at {at} ([store] export_retention after the request closed): there is nothing left to package; file a new export request")]
    Deleted {
        /// Request id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
}

/// Create `dir` (and its parents) if missing, and make it 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Write `bytes` to `path`, readable by the owner only (0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let mut f = o.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut f = o.open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
}

/// Encrypt to an age X25519 recipient (`age1…`).
pub fn encrypt_to(recipient: &str, plain: &[u8]) -> Result<Vec<u8>, PackageError> {
    let io = |e: &dyn std::fmt::Display| PackageError::Io(format!("encrypting: {e}"));
    let r: age::x25519::Recipient = recipient.parse().map_err(|_| {
        PackageError::Io(
            "[store] export_recipient is not an age X25519 recipient (age1…)".to_string(),
        )
    })?;
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| io(&e))?;
    let mut out = vec![];
    let mut w = enc.wrap_output(&mut out).map_err(|e| io(&e))?;
    w.write_all(plain).map_err(|e| io(&e))?;
    w.finish().map_err(|e| io(&e))?;
    Ok(out)
}

/// Read an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
pub fn read_identity_file(path: &Path) -> Result<Vec<age::x25519::Identity>, PackageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PackageError::BadIdentity(format!(
            "--identity-file {}: cannot read: {e}",
            path.display()
        ))
    })?;
    let ids: Vec<age::x25519::Identity> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .filter_map(|l| l.parse().ok())
        .collect();
    if ids.is_empty() {
        return Err(PackageError::BadIdentity(format!(
            "--identity-file {}: holds no age X25519 identity (a line AGE-SECRET-KEY-1…, as age-keygen writes)",
            path.display()
        )));
    }
    Ok(ids)
}

/// Decrypt what [`encrypt_to`] wrote with one of `ids`.
pub fn decrypt_with(cipher: &[u8], ids: &[age::x25519::Identity]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let d = age::Decryptor::new_buffered(cipher).map_err(|e| e.to_string())?;
    let mut r = d
        .decrypt(ids.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = vec![];
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A package in memory: the manifest and every file (including `manifest.json`).
#[derive(Debug, Clone)]
pub struct Package {
    /// The manifest.
    pub manifest: Manifest,
    /// (path, bytes), `manifest.json` last.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Where a package holds the request's JSON certificate.
pub const CERTIFICATE_FILE: &str = "evidence/certificate.json";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Gather request `id`'s export files from `export_dir` into a package.
pub async fn build<S: RequestStore + AuditStore + CheckpointStore + ?Sized>(
    store: &S,
    export_dir: &Path,
    id: &str,
    now: Millis,
    identities: &[age::x25519::Identity],
    retention: std::time::Duration,
) -> Result<Package, PackageError> {
    let req = store
        .get_request(id)
        .await?
        .ok_or_else(|| PackageError::NoRequest(id.to_string()))?;
    if req.kind != RequestKind::Export {
        return Err(PackageError::NotExport(req.id));
    }
    if let Some(e) = store
        .request_events(&req.id)
        .await?
        .iter()
        .find(|e| e.kind == "request.exports_deleted")
    {
        return Err(PackageError::Deleted {
            id: req.id,
            at: ts(e.at),
        });
    }
    let steps = store.steps(&req.id).await?;
    let mut all_encrypted = true;
    let mut files = vec![];
    let mut processors = vec![];
    for s in &steps {
        let outcome = s.outcome.map(|o| o.as_str().to_string());
        let mut entry = ManifestProcessor {
            processor: s.processor.clone(),
            category: s.category.clone(),
            state: s.state.as_str().into(),
            outcome: outcome.clone(),
            summary: String::new(),
            file: None,
            bytes: None,
            sha256: None,
        };
        match outcome.as_deref() {
            Some("exported") => {
                let sealed_path = export_dir
                    .join(&req.id)
                    .join(format!("{}.json.age", s.processor));
                let encrypted = sealed_path.exists();
                all_encrypted &= encrypted;
                let path = if encrypted {
                    sealed_path
                } else {
                    export_dir
                        .join(&req.id)
                        .join(format!("{}.json", s.processor))
                };
                if encrypted && identities.is_empty() {
                    return Err(PackageError::NeedIdentity(req.id.clone()));
                }
                let bytes = std::fs::read(&path).map_err(|e| {
                    PackageError::Integrity(format!(
                        "the export file of processor `{}` cannot be read ({}: {e}); `lethe retry` cannot re-collect a finished step: file a new export",
                        s.processor,
                        path.display()
                    ))
                })?;
                let bytes = if encrypted {
                    decrypt_with(&bytes, identities).map_err(|e| {
                        PackageError::Integrity(format!(
                            "the export file of processor `{}` ({}) cannot be decrypted with --identity-file ({e}): it was altered after it was collected, or the identity is not the one of [store] export_recipient",
                            s.processor,
                            path.display()
                        ))
                    })?
                } else {
                    bytes
                };
                let hash = sha256_hex(&bytes);
                let recorded = s
                    .evidence
                    .as_ref()
                    .and_then(|e| e.get("note"))
                    .and_then(|n| n.as_str())
                    .and_then(|n| n.split("sha256 ").nth(1))
                    .map(|h| h.trim().to_string());
                if let Some(rec) = recorded {
                    if rec != hash {
                        return Err(PackageError::Integrity(format!(
                            "the export file of processor `{}` ({}) was altered after it was collected: its SHA-256 is {hash}, the audit trail recorded {rec}",
                            s.processor,
                            path.display()
                        )));
                    }
                }
                let name = format!("{}.json", s.processor);
                entry.summary = "data returned".into();
                entry.file = Some(name.clone());
                entry.bytes = Some(bytes.len() as u64);
                entry.sha256 = Some(hash);
                files.push((name, bytes));
            }
            Some("not_found") => entry.summary = "held no data about the subject".into(),
            Some(o) => entry.summary = o.replace('_', " "),
            None => {
                entry.summary = match &s.last_error {
                    Some(e) => format!("{}: {e}", s.state.as_str()),
                    None => format!("not collected ({})", s.state.as_str()),
                }
            }
        }
        processors.push(entry);
    }
    let mut manifest = Manifest {
        format: "lethe-export-package/1".into(),
        generated_at: ts(now),
        request: ManifestRequest {
            id: req.id.clone(),
            kind: req.kind.as_str().into(),
            status: req.status.as_str().into(),
            subject: req.subject_masked.clone(),
            received_at: ts(req.received_at),
            completed_at: req.completed_at.map(ts),
        },
        processors,
        files: vec![],
        at_rest: {
            let delete_after = req
                .completed_at
                .map(|c| ts(c.saturating_add(retention.as_millis().min(i64::MAX as u128) as i64)));
            ManifestAtRest {
                encrypted: all_encrypted,
                note: format!(
                    "the export files lethe collected are {} on its disk and are deleted {}",
                    if all_encrypted {
                        "age-encrypted (mode 0600)"
                    } else {
                        "kept in plaintext (export_plaintext = true), mode 0600,"
                    },
                    match &delete_after {
                        Some(t) =>
                            format!("at {t} ([store] export_retention after the request closed)"),
                        None =>
                            "once the request closes and [store] export_retention has passed".into(),
                    }
                ),
                delete_after,
            }
        },
    };
    // The request's certificate (JSON, with its signed checkpoint and inclusion
    // proof when one covers it): `lethe audit verify --certificate` checks it
    // offline. In a subdirectory, so no processor's file can collide with it.
    if let Some(cert) = super::certificate::build(store, &req.id, now).await? {
        let json = serde_json::to_vec_pretty(&cert)
            .map_err(|e| PackageError::Io(format!("encoding the certificate: {e}")))?;
        files.push((CERTIFICATE_FILE.into(), json));
    }
    let index = super::html::package_index(&manifest)
        .map_err(|e| PackageError::Io(format!("rendering index.html: {e}")))?
        .into_bytes();
    files.push(("index.html".into(), index));
    manifest.files = files
        .iter()
        .map(|(p, b)| ManifestFile {
            path: p.clone(),
            bytes: b.len() as u64,
            sha256: sha256_hex(b),
        })
        .collect();
    let mjson = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| PackageError::Io(format!("encoding manifest.json: {e}")))?;
    files.push(("manifest.json".into(), mjson));
    Ok(Package { manifest, files })
}

impl Package {
    /// The package as a zip (deflated).
    pub fn zip(&self) -> Result<Vec<u8>, PackageError> {
        let io = |e: &dyn std::fmt::Display| PackageError::Io(format!("building the zip: {e}"));
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in &self.files {
            z.start_file(name.as_str(), opts).map_err(|e| io(&e))?;
            z.write_all(bytes).map_err(|e| io(&e))?;
        }
        Ok(z.finish().map_err(|e| io(&e))?.into_inner())
    }

    /// Write the files into a new directory `dir` (refused if it exists), via a
    /// temporary sibling renamed into place, so a failure leaves nothing half-written.
    pub fn write_dir(&self, dir: &Path) -> Result<(), PackageError> {
        if dir.exists() {
            return Err(PackageError::Io(format!(
                "{} already exists: remove it or choose another -o",
                dir.display()
            )));
        }
        let tmp = tmp_sibling(dir);
        let io = |e: std::io::Error| PackageError::Io(format!("writing {}: {e}", dir.display()));
        let _ = std::fs::remove_dir_all(&tmp);
        // Personal data: the directory is 0700 and every file 0600.
        create_private_dir(&tmp).map_err(io)?;
        for (name, bytes) in &self.files {
            let path = tmp.join(name);
            if let Some(parent) = path.parent() {
                create_private_dir(parent).map_err(io)?;
            }
            write_private(&path, bytes).map_err(io)?;
        }
        std::fs::rename(&tmp, dir).map_err(io)
    }
}

fn tmp_sibling(p: &Path) -> std::path::PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into());
    p.with_file_name(format!(".{name}.tmp"))
}

/// Write `bytes` to a new file `path` (refused if it exists), atomically, readable by the owner only (0600).
pub fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    if path.exists() {
        return Err(PackageError::Io(format!(
            "{} already exists: remove it or choose another -o",
            path.display()
        )));
    }
    let tmp = tmp_sibling(path);
    let io = |e: std::io::Error| PackageError::Io(format!("writing {}: {e}", path.display()));
    write_private(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Encrypt with an age passphrase (scrypt recipient).
pub fn encrypt(plain: &[u8], passphrase: &str) -> Result<Vec<u8>, PackageError> {
    let io = |e: &dyn std::fmt::Display| PackageError::Io(format!("encrypting: {e}"));
    let enc = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(
        passphrase.to_owned(),
    ));
    let mut out = vec![];
    let mut w = enc.wrap_output(&mut out).map_err(|e| io(&e))?;
    w.write_all(plain).map_err(|e| io(&e))?;
    w.finish().map_err(|e| io(&e))?;
    Ok(out)
}

/// Decrypt what [`encrypt`] wrote.
pub fn decrypt(cipher: &[u8], passphrase: &str) -> Result<Vec<u8>, PackageError> {
    use std::io::Read;
    let err = |e: &dyn std::fmt::Display| PackageError::Io(format!("decrypting: {e}"));
    let d = age::Decryptor::new_buffered(cipher).map_err(|e| err(&e))?;
    let id = age::scrypt::Identity::new(age::secrecy::SecretString::from(passphrase.to_owned()));
    let mut r = d
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| err(&e))?;
    let mut out = vec![];
    r.read_to_end(&mut out).map_err(|e| err(&e))?;
    Ok(out)
}

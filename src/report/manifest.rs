//! The export package's manifest (`manifest.json`): the model that
//! `package` builds and `html` renders as the package's `index.html`. It lives
//! apart from both so neither imports the other's module for it.

use serde::Serialize;

/// `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Format marker.
    pub format: String,
    /// When packaged (RFC 3339).
    pub generated_at: String,
    /// The request.
    pub request: ManifestRequest,
    /// One entry per processor.
    pub processors: Vec<ManifestProcessor>,
    /// Every other file of the package with its SHA-256.
    pub files: Vec<ManifestFile>,
    /// How lethe keeps the export files it packaged from.
    pub at_rest: ManifestAtRest,
}

/// How the export files behind a package are kept at rest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestAtRest {
    /// Every collected file was age-encrypted (mode 0600) on lethe's disk.
    pub encrypted: bool,
    /// When lethe deletes them (`[store] export_retention` after the request
    /// closed; RFC 3339), or null while the request is open.
    pub delete_after: Option<String>,
    /// In words.
    pub note: String,
}

/// The request in a manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestRequest {
    /// Request id.
    pub id: String,
    /// Always `export`.
    pub kind: String,
    /// Status when packaged.
    pub status: String,
    /// Masked identities.
    pub subject: String,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339, if closed.
    pub completed_at: Option<String>,
}

/// What one processor returned.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestProcessor {
    /// Processor name.
    pub processor: String,
    /// Category.
    pub category: String,
    /// Step state.
    pub state: String,
    /// Outcome (`exported`, `not_found`), if done.
    pub outcome: Option<String>,
    /// For people: "data returned", "held nothing about the subject", "failed: …".
    pub summary: String,
    /// The file in the package, if any.
    pub file: Option<String>,
    /// Its size.
    pub bytes: Option<u64>,
    /// Its SHA-256 (hex).
    pub sha256: Option<String>,
}

/// A file and its hash.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestFile {
    /// Path inside the package.
    pub path: String,
    /// Size.
    pub bytes: u64,
    /// SHA-256 (hex).
    pub sha256: String,
}

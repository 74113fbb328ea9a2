//! The native S3 connector (AWS S3 and S3-compatible servers).
//!
//! Why native: S3 needs SigV4 request signing, speaks XML, and erasure in a
//! versioned bucket is not one call. A plain `DELETE /{key}` only adds a delete
//! marker and every older version stays readable, so erasure here lists every
//! version **and** every delete marker under the subject's key prefix
//! (`ListObjectVersions`, paged) and deletes each one by `versionId` with
//! `DeleteObjects` batches of at most 1,000 keys, each carrying the `Content-MD5`
//! S3 requires. A final listing checks that nothing is left; leftovers (e.g. a
//! write racing the erasure) are a transient error, so the step runs again.
//!
//! S3 cannot search by email: a processor maps a subject to a key prefix with
//! the `prefix_template` setting (e.g. `customers/{{ subject.customer_id }}/`),
//! rendered with the project's template environment. The template must use the
//! subject and the rendered prefix must end with `/`, so that a template can
//! never select the whole bucket or a neighbour's keys (`customers/12` would
//! also match `customers/123/…`).
//!
//! Requests are path-style (`{base_url}/{bucket}/{key}`), which AWS and every
//! S3-compatible server accept. Errors are read from S3's XML `<Error>` body:
//! `503 SlowDown` is throttling (S3 never sends 429), other 5xx are transient,
//! rejected credentials and a missing bucket are permanent with a message that
//! says what to check. Object keys can contain the subject's identifiers, so they
//! never appear in error messages.
//!
//! Export: every current object under the prefix, with key, size, last-modified
//! and ETag. Its content is included when it is at most `export_inline_max_bytes`
//! (default 1 MiB): as `content_text` when it is UTF-8, else `content_base64`.
//! A larger object is listed with `content_omitted` saying so.

use super::definition::Category;
use super::http::ProcessorSpec;
use super::template;
use super::{
    scrub, CallContext, Connector, ConnectorError, Erase, ErrorClass, Evidence, Export, Lookup,
    Verify,
};
use crate::domain::Subject;
use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The most keys one `DeleteObjects` request may carry (an S3 limit).
pub const MAX_DELETE_BATCH: usize = 1000;

/// Default largest object whose content goes into an export file.
const DEFAULT_INLINE_MAX: u64 = 1024 * 1024;

/// Check an `s3` processor's settings when the config is loaded.
/// Returns the settings key and what is wrong.
pub fn validate_settings(settings: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    let bucket = settings.get("bucket").map(String::as_str).unwrap_or("");
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err((
            "settings.bucket".into(),
            format!("`{bucket}` is not an S3 bucket name (lower-case letters, digits, `-`, `.`)"),
        ));
    }
    let t = settings
        .get("prefix_template")
        .map(String::as_str)
        .unwrap_or("");
    let env = template::environment();
    env.template_from_str(t).map_err(|e| {
        (
            "settings.prefix_template".to_string(),
            format!("template does not compile: {e}"),
        )
    })?;
    if !t.contains("subject.") {
        return Err((
            "settings.prefix_template".into(),
            "must use the subject (e.g. `customers/{{ subject.customer_id }}/`): a fixed prefix would erase everyone's objects".into(),
        ));
    }
    if !t.trim_end().ends_with('/') {
        return Err((
            "settings.prefix_template".into(),
            "must end with `/`, so that `customers/12` cannot also select `customers/123/…`".into(),
        ));
    }
    if let Some(m) = settings.get("export_inline_max_bytes") {
        m.parse::<u64>().map_err(|_| {
            (
                "settings.export_inline_max_bytes".to_string(),
                format!("`{m}` is not a number of bytes"),
            )
        })?;
    }
    Ok(())
}

/// One processor backed by an S3 bucket.
pub struct S3Connector {
    spec: ProcessorSpec,
    client: reqwest::Client,
    bucket: String,
    region: String,
    prefix_template: String,
    inline_max: u64,
    timeout: Duration,
}

/// One entry of a `ListObjectVersions` page: a version or a delete marker.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionEntry {
    /// The object key.
    pub key: String,
    /// The version id (`null` in a bucket that never had versioning).
    pub version_id: String,
    /// Whether this is the current version of the key.
    pub is_latest: bool,
    /// A delete marker rather than data.
    pub delete_marker: bool,
    /// Size in bytes (0 for markers).
    pub size: u64,
    /// Last modified, as S3 wrote it.
    pub last_modified: String,
    /// ETag (versions only).
    pub etag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListVersionsResult {
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextKeyMarker", default)]
    next_key_marker: Option<String>,
    #[serde(rename = "NextVersionIdMarker", default)]
    next_version_id_marker: Option<String>,
    #[serde(rename = "Version", default)]
    versions: Vec<XmlVersion>,
    #[serde(rename = "DeleteMarker", default)]
    delete_markers: Vec<XmlVersion>,
}

#[derive(Debug, Deserialize)]
struct XmlVersion {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "VersionId")]
    version_id: String,
    #[serde(rename = "IsLatest", default)]
    is_latest: bool,
    #[serde(rename = "LastModified", default)]
    last_modified: String,
    #[serde(rename = "Size", default)]
    size: u64,
    #[serde(rename = "ETag", default)]
    etag: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct XmlError {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// `DeleteObjects` in quiet mode: only the keys that failed are listed.
#[derive(Debug, Deserialize)]
struct DeleteResult {
    #[serde(rename = "Error", default)]
    errors: Vec<XmlError>,
}

#[derive(Debug, Serialize)]
#[serde(rename = "Delete")]
struct DeleteRequest<'a> {
    #[serde(rename = "Quiet")]
    quiet: bool,
    #[serde(rename = "Object")]
    objects: Vec<DeleteObject<'a>>,
}

#[derive(Debug, Serialize)]
struct DeleteObject<'a> {
    #[serde(rename = "Key")]
    key: &'a str,
    #[serde(rename = "VersionId")]
    version_id: &'a str,
}

/// The XML body of one `DeleteObjects` request and its `Content-MD5` (base64 of the MD5).
pub fn delete_body(entries: &[VersionEntry]) -> Result<(String, String), ConnectorError> {
    let req = DeleteRequest {
        quiet: true,
        objects: entries
            .iter()
            .map(|e| DeleteObject {
                key: &e.key,
                version_id: &e.version_id,
            })
            .collect(),
    };
    let xml = quick_xml::se::to_string(&req)
        .map_err(|e| ConnectorError::permanent(format!("cannot write the delete request: {e}")))?;
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{xml}");
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
    Ok((body, md5))
}

/// Percent-encode everything but RFC 3986 unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

struct Response {
    status: u16,
    /// The media type S3 declared (lower-cased, no parameters), if any.
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The local name of an XML document's root element (after the declaration,
/// comments and any DOCTYPE), or None when the body is not XML at all.
fn xml_root(body: &[u8]) -> Option<String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(Event::Text(t)) if !t.iter().all(u8::is_ascii_whitespace) => return None,
            Ok(_) => {}
        }
        buf.clear();
    }
}

impl S3Connector {
    /// Build the connector; `client` is the engine's shared HTTP client.
    pub fn new(spec: ProcessorSpec, client: reqwest::Client, timeout: Duration) -> S3Connector {
        let get = |k: &str| spec.settings.get(k).cloned().unwrap_or_default();
        let region = spec
            .settings
            .get("region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let inline_max = spec
            .settings
            .get("export_inline_max_bytes")
            .and_then(|m| m.parse().ok())
            .unwrap_or(DEFAULT_INLINE_MAX);
        S3Connector {
            bucket: get("bucket"),
            prefix_template: get("prefix_template"),
            region,
            inline_max,
            timeout,
            client,
            spec,
        }
    }

    fn secrets_hint(&self) -> String {
        let vars: Vec<&str> = self.spec.secrets.values().map(String::as_str).collect();
        vars.join(", ")
    }

    fn credentials(&self) -> Result<Credentials, ConnectorError> {
        let var = |name: &str, required: bool| -> Result<Option<String>, ConnectorError> {
            let Some(env) = self.spec.secrets.get(name) else {
                return if required {
                    Err(ConnectorError::permanent(format!(
                        "processor `{}`: secret `{name}` is not configured",
                        self.spec.name
                    )))
                } else {
                    Ok(None)
                };
            };
            match std::env::var(env) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(ConnectorError::permanent(format!(
                    "processor `{}`: environment variable {env} (secret `{name}`) is not set",
                    self.spec.name
                ))),
            }
        };
        let akid = var("access_key_id", true)?.unwrap_or_default();
        let secret = var("secret_access_key", true)?.unwrap_or_default();
        let token = var("session_token", false)?;
        Ok(Credentials::new(akid, secret, token, None, "lethe"))
    }

    /// The subject's key prefix, or `None` when the subject lacks the identity the template uses.
    fn prefix(&self, subject: &Subject) -> Result<Option<String>, ConnectorError> {
        let mut ids = serde_json::Map::new();
        let mut missing = Vec::new();
        for (name, v) in [
            (
                "email",
                subject.email.as_ref().map(|e| e.expose().to_string()),
            ),
            (
                "phone",
                subject.phone.as_ref().map(|p| p.expose().to_string()),
            ),
            (
                "customer_id",
                subject.customer_id.as_ref().map(|c| c.expose().to_string()),
            ),
            (
                "name",
                subject.name.as_ref().map(|n| n.expose().to_string()),
            ),
        ] {
            match v {
                Some(v) => {
                    ids.insert(name.into(), Value::String(v));
                }
                None if self.prefix_template.contains(&format!("subject.{name}")) => {
                    missing.push(name)
                }
                None => {}
            }
        }
        if !missing.is_empty() {
            return Ok(None);
        }
        let env = template::environment();
        let ctx = json!({"subject": Value::Object(ids), "settings": self.spec.settings});
        let prefix = env.render_str(&self.prefix_template, &ctx).map_err(|e| {
            ConnectorError::permanent(format!(
                "processor `{}`: settings.prefix_template could not be rendered: {}",
                self.spec.name,
                scrub(&e.to_string(), subject)
            ))
        })?;
        let prefix = prefix.trim().to_string();
        if prefix.is_empty()
            || prefix == "/"
            || !prefix.ends_with('/')
            || prefix.contains("//")
            || super::template::has_dot_segment(&prefix)
        {
            return Err(ConnectorError::permanent(format!(
                "processor `{}`: settings.prefix_template rendered an unsafe prefix (empty, not ending with `/`, or with an empty, `.` or `..` segment); refusing to touch the bucket",
                self.spec.name
            )));
        }
        Ok(Some(prefix))
    }

    fn missing_identity(&self) -> Evidence {
        Evidence {
            note: Some(
                "the subject has none of the identities settings.prefix_template uses".into(),
            ),
            ..Default::default()
        }
    }

    /// Send one signed request. `path` and `query` must already be encoded.
    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Vec<u8>,
        extra: &[(&str, String)],
    ) -> Result<Response, ConnectorError> {
        let mut url = format!("{}{}", self.spec.base_url, path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let creds = self.credentials()?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        // S3 signs the path exactly as sent (encoded once); the default would encode it twice.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| ConnectorError::permanent(format!("cannot sign: {e}")))?;
        let params: aws_sigv4::http_request::SigningParams<'_> = params.into();
        let headers: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| ConnectorError::permanent(format!("cannot sign the request: {e}")))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ConnectorError::permanent(format!("cannot sign the request: {e}")))?
            .into_parts();
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ConnectorError::permanent(format!("bad method {method}")))?;
        let mut req = self.client.request(m, &url).timeout(self.timeout);
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        super::lease::before_send(method, self.timeout)?;
        let resp = req.body(body).send().await.map_err(|e| {
            let what = super::send_failure(&e);
            ConnectorError::transient(format!("processor `{}`: {what}", self.spec.name))
        })?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(super::definition::media_type);
        let body = resp.bytes().await.map_err(|e| {
            ConnectorError::transient(format!(
                "processor `{}`: reading the response failed: {}",
                self.spec.name,
                e.without_url()
            ))
        })?;
        Ok(Response {
            status,
            content_type,
            body: body.to_vec(),
        })
    }

    /// A 200 must be S3's XML answer (root element `roots[0]`, or another
    /// S3-compatible server's name for it), or, where `empty_ok`,
    /// no body. Anything else (an HTML page from a wrong base_url or a proxy) is
    /// an unexpected response: transient, so the retry policy ends it. The body
    /// is never quoted (object keys hold identifiers).
    fn expect_xml(
        &self,
        r: &Response,
        operation: &str,
        roots: &[&str],
        empty_ok: bool,
    ) -> Result<(), ConnectorError> {
        if empty_ok && r.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let html = matches!(
            r.content_type.as_deref(),
            Some("text/html" | "application/xhtml+xml")
        );
        let found = xml_root(&r.body);
        if !html && found.as_deref().is_some_and(|f| roots.contains(&f)) {
            return Ok(());
        }
        let ct: String = r
            .content_type
            .as_deref()
            .unwrap_or("none")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(80)
            .collect();
        let got = match found {
            Some(f) => format!(
                "root element <{}>",
                f.chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(40)
                    .collect::<String>()
            ),
            None if r.body.is_empty() => "no body".into(),
            None => "not XML".into(),
        };
        let or_empty = if empty_ok { " or no body" } else { "" };
        Err(ConnectorError {
            class: ErrorClass::Transient,
            message: format!(
                "processor `{}`: unexpected response to {operation} (HTTP {}, content-type {ct}, {got}; expected S3's XML <{}>{or_empty}): check base_url",
                self.spec.name,
                r.status,
                roots.first().copied().unwrap_or_default()
            ),
            status: Some(r.status),
            retry_after: None,
        })
    }

    /// Classify an S3 error response.
    fn error(&self, r: &Response, subject: Option<&Subject>) -> ConnectorError {
        let text = String::from_utf8_lossy(&r.body);
        let err: XmlError = quick_xml::de::from_str(&text).unwrap_or_default();
        let p = &self.spec.name;
        let detail = if err.code.is_empty() {
            String::new()
        } else {
            let m = match subject {
                Some(s) => scrub(&err.message, s),
                None => err.message.clone(),
            };
            format!(
                ": {} ({})",
                err.code,
                m.chars().take(200).collect::<String>()
            )
        };
        let status = r.status;
        let (class, message) = match (status, err.code.as_str()) {
            (503, _) | (_, "SlowDown") => (
                ErrorClass::Throttled,
                format!("processor `{p}` is throttling (HTTP {status}{detail})"),
            ),
            (429, _) => (
                ErrorClass::Throttled,
                format!("processor `{p}` is throttling (HTTP {status}{detail})"),
            ),
            (s, _) if s >= 500 || s == 408 => (
                ErrorClass::Transient,
                format!("processor `{p}` is unavailable (HTTP {status}{detail})"),
            ),
            (
                _,
                "AccessDenied" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "ExpiredToken"
                | "InvalidToken" | "InvalidSecurity",
            )
            | (401 | 403, _) => (
                ErrorClass::Permanent,
                format!(
                    "credentials rejected by processor `{p}` (HTTP {status}{detail}): check {}",
                    self.secrets_hint()
                ),
            ),
            (_, "NoSuchBucket") => (
                ErrorClass::Permanent,
                format!(
                    "processor `{p}`: bucket `{}` does not exist at {} (NoSuchBucket): check settings.bucket and base_url",
                    self.bucket, self.spec.base_url
                ),
            ),
            (_, "AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException") => (
                ErrorClass::Permanent,
                format!("processor `{p}`: wrong region or endpoint for bucket `{}` (HTTP {status}{detail}): check settings.region and base_url", self.bucket),
            ),
            _ => (
                ErrorClass::Permanent,
                format!("processor `{p}` refused the request (HTTP {status}{detail})"),
            ),
        };
        ConnectorError {
            class,
            message,
            status: Some(status),
            retry_after: None,
        }
    }

    /// Every version and delete marker under `prefix`, following the pages.
    pub async fn list_versions(
        &self,
        prefix: &str,
        subject: Option<&Subject>,
    ) -> Result<Vec<VersionEntry>, ConnectorError> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        let path = format!("/{}", self.bucket);
        loop {
            let mut q = format!("prefix={}&versions=", encode(prefix, false));
            if let Some((k, v)) = &markers {
                q = format!(
                    "key-marker={}&prefix={}&version-id-marker={}&versions=",
                    encode(k, false),
                    encode(prefix, false),
                    encode(v, false)
                );
            }
            let r = self.send("GET", &path, &q, Vec::new(), &[]).await?;
            if r.status != 200 {
                return Err(self.error(&r, subject));
            }
            self.expect_xml(&r, "ListObjectVersions", &["ListVersionsResult"], false)?;
            let text = String::from_utf8_lossy(&r.body);
            let page: ListVersionsResult = quick_xml::de::from_str(&text).map_err(|e| {
                ConnectorError::transient(format!(
                    "processor `{}` answered ListObjectVersions with XML lethe cannot read: {e}",
                    self.spec.name
                ))
            })?;
            for (v, dm) in page
                .versions
                .into_iter()
                .map(|v| (v, false))
                .chain(page.delete_markers.into_iter().map(|v| (v, true)))
            {
                // S3 matches the prefix; a server that did not would put others at risk.
                if !v.key.starts_with(prefix) {
                    continue;
                }
                out.push(VersionEntry {
                    key: v.key,
                    version_id: v.version_id,
                    is_latest: v.is_latest,
                    delete_marker: dm,
                    size: if dm { 0 } else { v.size },
                    last_modified: v.last_modified,
                    etag: v.etag,
                });
            }
            if !page.is_truncated {
                break;
            }
            match (page.next_key_marker, page.next_version_id_marker) {
                (Some(k), v) => {
                    let next = (k, v.unwrap_or_default());
                    if markers.as_ref() == Some(&next) {
                        return Err(ConnectorError::transient(format!(
                            "processor `{}`: ListObjectVersions did not advance its markers",
                            self.spec.name
                        )));
                    }
                    markers = Some(next);
                }
                (None, _) => {
                    return Err(ConnectorError::transient(format!(
                        "processor `{}`: ListObjectVersions was truncated without NextKeyMarker",
                        self.spec.name
                    )))
                }
            }
        }
        Ok(out)
    }

    /// Delete the given versions and markers by id, in batches of at most 1,000.
    /// Returns the number of batches sent.
    async fn delete_versions(
        &self,
        entries: &[VersionEntry],
        subject: &Subject,
    ) -> Result<usize, ConnectorError> {
        let path = format!("/{}", self.bucket);
        let mut batches = 0;
        for chunk in entries.chunks(MAX_DELETE_BATCH) {
            let (body, md5) = delete_body(chunk)?;
            let r = self
                .send(
                    "POST",
                    &path,
                    "delete=",
                    body.into_bytes(),
                    &[
                        ("content-md5", md5),
                        ("content-type", "application/xml".to_string()),
                    ],
                )
                .await?;
            batches += 1;
            if r.status != 200 {
                return Err(self.error(&r, Some(subject)));
            }
            self.expect_xml(&r, "DeleteObjects", &["DeleteResult"], true)?;
            if r.body.iter().all(u8::is_ascii_whitespace) {
                // Quiet mode with nothing to report; the listing afterwards checks.
                continue;
            }
            let text = String::from_utf8_lossy(&r.body);
            let result: DeleteResult = quick_xml::de::from_str(&text).map_err(|e| {
                ConnectorError::transient(format!(
                    "processor `{}` answered DeleteObjects with XML lethe cannot read: {e}",
                    self.spec.name
                ))
            })?;
            if let Some(first) = result.errors.first() {
                let n = result.errors.len();
                let permanent = result.errors.iter().any(|e| {
                    !matches!(
                        e.code.as_str(),
                        "InternalError" | "ServiceUnavailable" | "SlowDown" | "OperationAborted"
                    )
                });
                let throttled = result.errors.iter().all(|e| e.code == "SlowDown");
                let class = if permanent {
                    ErrorClass::Permanent
                } else if throttled {
                    ErrorClass::Throttled
                } else {
                    ErrorClass::Transient
                };
                let msg = scrub(&first.message, subject);
                let hint = if matches!(first.code.as_str(), "AccessDenied") {
                    format!(
                        " (Object Lock or a policy may protect them; else check {})",
                        self.secrets_hint()
                    )
                } else {
                    String::new()
                };
                return Err(ConnectorError {
                    class,
                    message: format!(
                        "processor `{}` could not delete {n} of {} versions in a batch: {} ({}){hint}",
                        self.spec.name,
                        chunk.len(),
                        first.code,
                        msg.chars().take(200).collect::<String>()
                    ),
                    status: Some(r.status),
                    retry_after: None,
                });
            }
        }
        Ok(batches)
    }

    async fn get_object(
        &self,
        key: &str,
        subject: &Subject,
    ) -> Result<Option<Vec<u8>>, ConnectorError> {
        let path = format!("/{}/{}", self.bucket, encode(key, true));
        let r = self.send("GET", &path, "", Vec::new(), &[]).await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => {
                let text = String::from_utf8_lossy(&r.body);
                let err: XmlError = quick_xml::de::from_str(&text).unwrap_or_default();
                if err.code == "NoSuchBucket" {
                    Err(self.error(&r, Some(subject)))
                } else {
                    Ok(None)
                }
            }
            _ => Err(self.error(&r, Some(subject))),
        }
    }

    async fn erase_all(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        let Some(prefix) = self.prefix(cx.subject)? else {
            return Ok(Erase::NotFound(self.missing_identity()));
        };
        let found = self.list_versions(&prefix, Some(cx.subject)).await?;
        if found.is_empty() {
            return Ok(Erase::NotFound(Evidence {
                status: Some(200),
                note: Some("no object version or delete marker under the subject's prefix".into()),
                ..Default::default()
            }));
        }
        let markers = found.iter().filter(|e| e.delete_marker).count();
        let versions = found.len() - markers;
        let batches = self.delete_versions(&found, cx.subject).await?;
        let left = self.list_versions(&prefix, Some(cx.subject)).await?;
        if !left.is_empty() {
            return Err(ConnectorError::transient(format!(
                "processor `{}`: {} version(s) or delete marker(s) were still listed after the delete (written meanwhile?); trying again",
                self.spec.name,
                left.len()
            )));
        }
        Ok(Erase::Erased(Evidence {
            status: Some(200),
            reference: None,
            note: Some(format!(
                "deleted {versions} object version(s) and {markers} delete marker(s) by versionId in {batches} batch(es); none listed afterwards"
            )),
        }))
    }
}

/// `DeleteObjects` in verbose mode: `<Deleted>` proves a version gone,
/// `<Error>` names one that was not.
#[derive(Debug, Deserialize, Default)]
struct VerboseDeleteResult {
    #[serde(rename = "Deleted", default)]
    deleted: Vec<XmlDeleted>,
    #[serde(rename = "Error", default)]
    errors: Vec<XmlKeyError>,
}

#[derive(Debug, Deserialize)]
struct XmlDeleted {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "VersionId", default)]
    version_id: Option<String>,
    #[serde(rename = "DeleteMarkerVersionId", default)]
    delete_marker_version_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct XmlKeyError {
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "VersionId", default)]
    version_id: Option<String>,
    #[serde(rename = "Code", default)]
    code: String,
}

/// A sweep candidate's name: the key and the version id (the key may be personal).
fn sweep_name(key: &str, version_id: &str) -> String {
    format!("{key}\n{version_id}")
}

/// The key and version id back from a sweep candidate's name.
fn split_sweep_name(name: &str) -> (&str, &str) {
    match name.rfind('\n') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    }
}

impl S3Connector {
    /// A sweep's failure: the status and S3's error code, never its message
    /// (it can quote a key).
    fn sweep_error(&self, r: &Response, operation: &str) -> ConnectorError {
        let mut e = self.error(r, None);
        let text = String::from_utf8_lossy(&r.body);
        let err: XmlError = quick_xml::de::from_str(&text).unwrap_or_default();
        e.message = format!(
            "processor `{}` answered {operation} with HTTP {}{}",
            self.spec.name,
            r.status,
            if err.code.is_empty() {
                String::new()
            } else {
                format!(" ({})", err.code)
            }
        );
        e
    }

    async fn sweep_list_versions(
        &self,
        q: &super::sweep::SweepQuery<'_>,
    ) -> Result<Vec<super::sweep::SweepCandidate>, ConnectorError> {
        let prefix = q.settings.get("prefix").map(String::as_str).unwrap_or("");
        let all = self.list_versions(prefix, None).await?;
        let mut out = Vec::new();
        for v in all {
            let modified = chrono::DateTime::parse_from_rfc3339(&v.last_modified)
                .map_err(|_| {
                    ConnectorError::transient(format!(
                        "processor `{}`: ListObjectVersions gave a LastModified that is not a time; nothing deleted",
                        self.spec.name
                    ))
                })?
                .timestamp_millis();
            if modified >= q.cutoff_ms {
                continue;
            }
            out.push(super::sweep::SweepCandidate {
                name: sweep_name(&v.key, &v.version_id),
                kind: if v.delete_marker {
                    "delete_marker"
                } else {
                    "version"
                },
                reference: None,
                size: i64::try_from(v.size).ok(),
                modified_ms: Some(modified),
            });
        }
        Ok(out)
    }

    async fn sweep_delete_batch(
        &self,
        items: &[super::sweep::SweepCandidate],
    ) -> Result<Vec<super::sweep::SweepOutcome>, ConnectorError> {
        let entries: Vec<VersionEntry> = items
            .iter()
            .map(|c| {
                let (key, version) = split_sweep_name(&c.name);
                VersionEntry {
                    key: key.to_string(),
                    version_id: version.to_string(),
                    is_latest: false,
                    delete_marker: c.kind == "delete_marker",
                    size: 0,
                    last_modified: String::new(),
                    etag: None,
                }
            })
            .collect();
        // Verbose mode: every deleted version is named in the answer (the proof).
        let (body, _) = delete_body(&entries)?;
        let body = body.replacen("<Quiet>true</Quiet>", "<Quiet>false</Quiet>", 1);
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let path = format!("/{}", self.bucket);
        let r = self
            .send(
                "POST",
                &path,
                "delete=",
                body.into_bytes(),
                &[
                    ("content-md5", md5),
                    ("content-type", "application/xml".to_string()),
                ],
            )
            .await?;
        if r.status != 200 {
            return Err(self.sweep_error(&r, "DeleteObjects"));
        }
        self.expect_xml(&r, "DeleteObjects", &["DeleteResult"], false)?;
        let text = String::from_utf8_lossy(&r.body);
        let result: VerboseDeleteResult = quick_xml::de::from_str(&text).map_err(|_| {
            ConnectorError::transient(format!(
                "processor `{}` answered DeleteObjects with XML lethe cannot read",
                self.spec.name
            ))
        })?;
        let mut out = Vec::new();
        for d in result.deleted {
            let version = d.version_id.unwrap_or_default();
            out.push(super::sweep::SweepOutcome {
                name: sweep_name(&d.key, &version),
                removed: true,
                evidence: json!({
                    "status": r.status,
                    "operation": "DeleteObjects",
                    "deleted": true,
                    "version_id": version,
                    "delete_marker_version_id": d.delete_marker_version_id,
                }),
            });
        }
        for e in result.errors {
            let version = e.version_id.unwrap_or_default();
            out.push(super::sweep::SweepOutcome {
                name: sweep_name(&e.key, &version),
                removed: false,
                evidence: json!({
                    "status": r.status,
                    "operation": "DeleteObjects",
                    "error": e.code,
                    "version_id": version,
                }),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Connector for S3Connector {
    fn can_sweep(&self) -> bool {
        true
    }
    fn sweep_batch(&self) -> usize {
        MAX_DELETE_BATCH
    }
    async fn sweep_list(
        &self,
        q: &super::sweep::SweepQuery<'_>,
    ) -> Result<Vec<super::sweep::SweepCandidate>, ConnectorError> {
        self.sweep_list_versions(q).await
    }
    async fn sweep_delete(
        &self,
        _q: &super::sweep::SweepQuery<'_>,
        items: &[super::sweep::SweepCandidate],
    ) -> Result<Vec<super::sweep::SweepOutcome>, ConnectorError> {
        self.sweep_delete_batch(items).await
    }
    fn processor(&self) -> &str {
        &self.spec.name
    }
    fn category(&self) -> Category {
        self.spec.category
    }
    fn concurrency(&self) -> u32 {
        self.spec.concurrency
    }
    fn can_purge(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<Evidence, ConnectorError> {
        // GetBucketVersioning: cheap, authenticated, and says whether versions exist.
        let r = self
            .send(
                "GET",
                &format!("/{}", self.bucket),
                "versioning=",
                Vec::new(),
                &[],
            )
            .await?;
        if r.status != 200 {
            return Err(self.error(&r, None));
        }
        // moto (5.x) names the root after the operation.
        self.expect_xml(
            &r,
            "GetBucketVersioning",
            &["VersioningConfiguration", "GetBucketVersioningResponse"],
            false,
        )?;
        let text = String::from_utf8_lossy(&r.body);
        let versioning = if text.contains("<Status>Enabled</Status>") {
            "versioning enabled"
        } else if text.contains("<Status>Suspended</Status>") {
            "versioning suspended"
        } else {
            "versioning never enabled"
        };
        Ok(Evidence {
            status: Some(200),
            reference: None,
            note: Some(format!("bucket `{}`: {versioning}", self.bucket)),
        })
    }

    async fn lookup(&self, cx: CallContext<'_>) -> Result<Lookup, ConnectorError> {
        let Some(prefix) = self.prefix(cx.subject)? else {
            return Ok(Lookup::NotFound(self.missing_identity()));
        };
        let found = self.list_versions(&prefix, Some(cx.subject)).await?;
        let ev = Evidence {
            status: Some(200),
            reference: None,
            note: Some(format!("{} version(s) and delete marker(s)", found.len())),
        };
        Ok(if found.is_empty() {
            Lookup::NotFound(ev)
        } else {
            Lookup::Found(ev)
        })
    }

    async fn export(&self, cx: CallContext<'_>) -> Result<Export, ConnectorError> {
        let Some(prefix) = self.prefix(cx.subject)? else {
            return Ok(Export::NotFound(self.missing_identity()));
        };
        let found = self.list_versions(&prefix, Some(cx.subject)).await?;
        let current: Vec<&VersionEntry> = found
            .iter()
            .filter(|e| e.is_latest && !e.delete_marker)
            .collect();
        if current.is_empty() {
            return Ok(Export::NotFound(Evidence {
                status: Some(200),
                note: Some("no current object under the subject's prefix".into()),
                ..Default::default()
            }));
        }
        let mut objects = Vec::with_capacity(current.len());
        for e in current {
            let mut o = json!({
                "key": e.key,
                "size": e.size,
                "last_modified": e.last_modified,
                "etag": e.etag,
                "version_id": e.version_id,
            });
            if e.size > self.inline_max {
                o["content_omitted"] = json!(format!(
                    "larger than export_inline_max_bytes ({} bytes)",
                    self.inline_max
                ));
            } else if let Some(bytes) = self.get_object(&e.key, cx.subject).await? {
                match String::from_utf8(bytes) {
                    Ok(text) => o["content_text"] = Value::String(text),
                    Err(e) => {
                        o["content_base64"] = Value::String(
                            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                        )
                    }
                }
            } else {
                // Deleted between the listing and the GET.
                continue;
            }
            objects.push(o);
        }
        let n = objects.len();
        Ok(Export::Data {
            data: json!({ "bucket": self.bucket, "prefix": prefix, "objects": objects }),
            evidence: Evidence {
                status: Some(200),
                reference: None,
                note: Some(format!("{n} current object(s)")),
            },
        })
    }

    async fn erase(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        self.erase_all(cx).await
    }

    async fn verify(&self, cx: CallContext<'_>) -> Result<Verify, ConnectorError> {
        let Some(prefix) = self.prefix(cx.subject)? else {
            return Ok(Verify::Clean(self.missing_identity()));
        };
        let left = self.list_versions(&prefix, Some(cx.subject)).await?;
        let ev = Evidence {
            status: Some(200),
            reference: None,
            note: Some(format!(
                "{} version(s) and delete marker(s) listed",
                left.len()
            )),
        };
        Ok(if left.is_empty() {
            Verify::Clean(ev)
        } else {
            Verify::StillPresent(ev)
        })
    }

    async fn purge(&self, cx: CallContext<'_>) -> Result<Erase, ConnectorError> {
        self.erase_all(cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_versions_page_with_interleaved_versions_and_markers_is_read_whole() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>c/1/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <NextKeyMarker>c/1/b.txt</NextKeyMarker><NextVersionIdMarker>v3</NextVersionIdMarker>
  <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
  <Version><Key>c/1/a.txt</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"x"</ETag><Size>5</Size><StorageClass>STANDARD</StorageClass></Version>
  <DeleteMarker><Key>c/1/b.txt</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><LastModified>2024-01-02T00:00:00.000Z</LastModified></DeleteMarker>
  <Version><Key>c/1/b.txt</Key><VersionId>v3</VersionId><IsLatest>false</IsLatest><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"y"</ETag><Size>7</Size></Version>
</ListVersionsResult>"#;
        let page: ListVersionsResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("c/1/b.txt"));
        assert_eq!(page.next_version_id_marker.as_deref(), Some("v3"));
        assert_eq!(page.versions.len(), 2);
        assert_eq!(page.delete_markers.len(), 1);
        assert_eq!(page.versions[1].size, 7);
        assert!(!page.versions[1].is_latest);
    }

    #[test]
    fn the_delete_body_lists_every_version_and_its_md5_is_base64() {
        let e = |k: &str, v: &str| VersionEntry {
            key: k.into(),
            version_id: v.into(),
            is_latest: false,
            delete_marker: false,
            size: 0,
            last_modified: String::new(),
            etag: None,
        };
        let (body, md5) = delete_body(&[e("a&b.txt", "v1"), e("c", "v2")]).unwrap();
        assert!(body.contains("<Quiet>true</Quiet>"), "{body}");
        assert!(
            body.contains("<Object><Key>a&amp;b.txt</Key><VersionId>v1</VersionId></Object>"),
            "{body}"
        );
        assert_eq!(body.matches("<Object>").count(), 2);
        let want = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        assert_eq!(md5, want);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&md5)
                .unwrap()
                .len(),
            16
        );
    }

    #[test]
    fn keys_are_encoded_for_the_path_and_query() {
        assert_eq!(encode("a b/ü+x", true), "a%20b/%C3%BC%2Bx");
        assert_eq!(encode("c/1/", false), "c%2F1%2F");
    }

    #[test]
    fn a_prefix_template_must_use_the_subject_and_end_with_a_slash() {
        let s = |t: &str| {
            BTreeMap::from([
                ("bucket".to_string(), "b".to_string()),
                ("prefix_template".to_string(), t.to_string()),
            ])
        };
        assert!(validate_settings(&s("customers/{{ subject.customer_id }}/")).is_ok());
        assert_eq!(
            validate_settings(&s("customers/")).unwrap_err().0,
            "settings.prefix_template"
        );
        assert!(validate_settings(&s("customers/{{ subject.customer_id }}"))
            .unwrap_err()
            .1
            .contains("end with"));
        assert!(validate_settings(&s("c/{{ subject.customer_id")).is_err());
    }
}

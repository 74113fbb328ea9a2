//! A real S3-compatible server for the S3 tests: `moto` (PyPI, `pip install
//! 'moto[server]'`), started once per test binary on a free port unless
//! `LETHE_TEST_S3_URL` names one already running. The tests fail (never skip)
//! when moto is missing: the S3 erasure must be proven against a real server.
//!
//! Also a tiny S3 client of the tests' own (plain HTTP; moto does not check
//! signatures), so that what remains in a bucket is listed independently of the
//! connector under test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The server, kept alive (its stdin open) for the life of the test binary.
static MOTO: OnceLock<(String, Mutex<Option<Child>>)> = OnceLock::new();

/// moto is started by this script; it exits when the test binary (its stdin) goes away.
const MOTO_SCRIPT: &str = r#"
import sys
try:
    from moto.server import ThreadedMotoServer
except ImportError as e:
    print("missing: " + str(e), flush=True)
    sys.exit(3)
s = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
s.start()
print("ready", flush=True)
sys.stdin.read()
s.stop()
"#;

static MOTO_INSTALLED: OnceLock<()> = OnceLock::new();

/// Install moto from PyPI on first use when it is missing, so `cargo test` does
/// its own set-up on a fresh machine (as `.ci/run` does).
pub fn ensure_moto() {
    MOTO_INSTALLED.get_or_init(|| {
        let present = Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "-q", "moto[server]"])
                .stdout(Stdio::null())
                .status();
        }
    });
}

/// The base URL of the S3-compatible server.
pub fn url() -> String {
    MOTO.get_or_init(|| {
        if let Ok(u) = std::env::var("LETHE_TEST_S3_URL") {
            return (u.trim_end_matches('/').to_string(), Mutex::new(None));
        }
        ensure_moto();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("python3")
            .args(["-c", MOTO_SCRIPT, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto (the S3-compatible test server)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).ok();
        if line.trim() != "ready" {
            panic!(
                "moto (the S3-compatible test server) did not start: {line:?}. \
                 Install it with `pip install 'moto[server]'` (.ci/run does), \
                 or set LETHE_TEST_S3_URL to a running S3-compatible server"
            );
        }
        (format!("http://127.0.0.1:{port}"), Mutex::new(Some(child)))
    })
    .0
    .clone()
}

/// One version or delete marker, as listed by the test's own client.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub key: String,
    pub version_id: String,
    pub delete_marker: bool,
}

/// The tests' own S3 client.
pub struct S3 {
    pub base: String,
    http: reqwest::Client,
}

impl S3 {
    pub fn new() -> S3 {
        // moto does not verify signatures, but treats a request without an
        // Authorization header as anonymous, which may not overwrite a key.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDTESTCLIENT/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            ),
        );
        S3 {
            base: url(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("client"),
        }
    }

    async fn ok(&self, r: reqwest::RequestBuilder, what: &str) -> String {
        let resp = r.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "{what}: HTTP {status}: {body}");
        body
    }

    /// A new bucket with versioning enabled.
    pub async fn versioned_bucket(&self) -> String {
        let b = format!("lethe-{}", uuid::Uuid::new_v4().simple());
        self.ok(self.http.put(format!("{}/{b}", self.base)), "create bucket")
            .await;
        self.ok(
            self.http.put(format!("{}/{b}?versioning", self.base)).body(
                "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                     <Status>Enabled</Status></VersioningConfiguration>",
            ),
            "enable versioning",
        )
        .await;
        b
    }

    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<reqwest::Body>) {
        self.ok(
            self.http
                .put(format!("{}/{bucket}/{key}", self.base))
                .header("content-type", "application/octet-stream")
                .body(body),
            "put object",
        )
        .await;
    }

    /// A plain DELETE: in a versioned bucket it only adds a delete marker.
    pub async fn delete(&self, bucket: &str, key: &str) {
        self.ok(
            self.http.delete(format!("{}/{bucket}/{key}", self.base)),
            "delete object",
        )
        .await;
    }

    /// Every version and delete marker in the bucket (all pages).
    pub async fn list_all(&self, bucket: &str) -> Vec<Listed> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut req = self
                .http
                .get(format!("{}/{bucket}", self.base))
                .query(&[("versions", "")]);
            if let Some((k, v)) = &marker {
                req = req.query(&[("key-marker", k), ("version-id-marker", v)]);
            }
            let body = self.ok(req, "list versions").await;
            let doc: serde_json::Value = xml_to_entries(&body);
            for e in doc["entries"].as_array().cloned().unwrap_or_default() {
                out.push(Listed {
                    key: e["key"].as_str().unwrap_or_default().to_string(),
                    version_id: e["version_id"].as_str().unwrap_or_default().to_string(),
                    delete_marker: e["marker"].as_bool().unwrap_or(false),
                });
            }
            if doc["truncated"] == true {
                marker = Some((
                    doc["next_key"].as_str().unwrap_or_default().to_string(),
                    doc["next_version"].as_str().unwrap_or_default().to_string(),
                ));
            } else {
                return out;
            }
        }
    }
}

/// Read a ListVersionsResult with quick-xml's event reader (independent of the
/// connector's serde structs).
fn xml_to_entries(xml: &str) -> serde_json::Value {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut cur = serde_json::Map::new();
    let mut truncated = false;
    let (mut next_key, mut next_version) = (String::new(), String::new());
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
                if name == "Version" || name == "DeleteMarker" {
                    cur = serde_json::Map::new();
                    cur.insert("marker".into(), (name == "DeleteMarker").into());
                }
                path.push(name);
            }
            Ok(Event::End(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).to_string();
                if name == "Version" || name == "DeleteMarker" {
                    entries.push(serde_json::Value::Object(std::mem::take(&mut cur)));
                }
                path.pop();
            }
            Ok(Event::Text(t)) => {
                let text = t.decode().map(|c| c.into_owned()).unwrap_or_default();
                let text = quick_xml::escape::unescape(&text)
                    .map(|c| c.into_owned())
                    .unwrap_or(text);
                match path.last().map(String::as_str) {
                    Some("Key") if path.len() >= 2 => {
                        cur.insert("key".into(), text.into());
                    }
                    Some("VersionId") => {
                        cur.insert("version_id".into(), text.into());
                    }
                    Some("IsTruncated") => truncated = text == "true",
                    Some("NextKeyMarker") => next_key = text,
                    Some("NextVersionIdMarker") => next_version = text,
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => panic!("bad XML from the S3 server: {e}: {xml}"),
            _ => {}
        }
    }
    serde_json::json!({
        "entries": entries,
        "truncated": truncated,
        "next_key": next_key,
        "next_version": next_version,
    })
}

/// A second moto, with request authentication on (`INITIAL_NO_AUTH_ACTION_COUNT=0`):
/// it checks each request's SigV4 signature against an IAM access key created
/// in-process, with a versioned bucket `signed`. Stops when dropped.
pub struct SignedServer {
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    child: Child,
}

const SIGNED_SCRIPT: &str = r#"
import os, sys, json
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
from moto.server import ThreadedMotoServer
from moto.iam.models import iam_backends
from moto.s3.models import s3_backends
from moto.core import DEFAULT_ACCOUNT_ID as ACC
iam = iam_backends[ACC]["global"]
iam.create_user("us-east-1", "lethe")
key = iam.create_access_key("lethe")
iam.put_user_policy("lethe", "s3all", json.dumps({"Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
s3 = s3_backends[ACC]["aws"]
s3.create_bucket("signed", "eu-west-2")
s3.put_bucket_versioning("signed", "Enabled")
s = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
s.start()
print("ready", key.access_key_id, key.secret_access_key, flush=True)
sys.stdin.read()
s.stop()
"#;

impl SignedServer {
    pub fn start() -> SignedServer {
        ensure_moto();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("python3")
            .args(["-c", SIGNED_SCRIPT, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to run moto");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .ok();
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 3 || parts[0] != "ready" {
            panic!(
                "moto with authentication did not start: {line:?}; `pip install 'moto[server]'`"
            );
        }
        SignedServer {
            url: format!("http://127.0.0.1:{port}"),
            access_key_id: parts[1].to_string(),
            secret_access_key: parts[2].to_string(),
            child,
        }
    }
}

impl Drop for SignedServer {
    fn drop(&mut self) {
        // Closing stdin ends the script; then reap it.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

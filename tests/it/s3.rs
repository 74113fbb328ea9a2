//! The `s3` connector through the CLI: against moto (a real S3-compatible
//! server, versioning on) for erasure and export, and against a wiremock S3 that
//! answers with S3's own XML for paging, 1,000-key batches, SlowDown and
//! permanent errors.

use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use crate::s3_server::{Listed, SignedServer, S3};
use base64::Engine as _;
use md5::Digest as _;
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SUBJECT: &str = "C-1001";
const OTHER: &str = "C-1002";
/// Shares the subject's id as a prefix: must survive (`customers/C-1001/` ≠ `customers/C-10010/`).
const NEIGHBOUR: &str = "C-10010";

const FAST_WORKFLOWS: [(&str, &str); 2] = [
    (
        "erasure.toml",
        "kind = \"erasure\"\n[retry]\ninitial = \"300ms\"\nfactor = 2.0\ncap = \"2s\"\nmax_attempts = 5\njitter = false\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n",
    ),
    (
        "export.toml",
        "kind = \"export\"\n[retry]\ninitial = \"300ms\"\nfactor = 2.0\ncap = \"2s\"\nmax_attempts = 5\njitter = false\n[[phase]]\nname = \"all\"\nselect = [\"*\"]\n",
    ),
];

fn processor_toml(base: &str, bucket: &str) -> String {
    r#"
[[processor]]
name = "files"
connector = "s3"
base_url = "BASE"
settings = { bucket = "BUCKET", prefix_template = "customers/{{ subject.customer_id }}/", region = "eu-west-2" }
secrets = { access_key_id = "S3_ACCESS_KEY_ID", secret_access_key = "S3_SECRET_ACCESS_KEY" }
"#
    .replace("BASE", base)
    .replace("BUCKET", bucket)
}

async fn env_for(backend: Backend, base: &str, bucket: &str) -> TestEnv {
    let mut env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &processor_toml(base, bucket),
    )
    .await;
    let dir = env.dir.path().join("workflows");
    std::fs::create_dir_all(&dir).unwrap();
    for (f, t) in FAST_WORKFLOWS {
        std::fs::write(dir.join(f), t).unwrap();
    }
    env.set_env("S3_ACCESS_KEY_ID", "AKIDLETHETEST");
    env.set_env(
        "S3_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    env
}

async fn file_erasure(env: &TestEnv, customer_id: &str) -> String {
    let v = env
        .json(&[
            "request",
            "erase",
            "--email",
            "jane@example.com",
            "--customer-id",
            customer_id,
            "--json",
        ])
        .await;
    v["id"].as_str().expect("id").to_string()
}

/// A versioned bucket holding, for the subject: an object overwritten twice
/// (3 versions), a binary object, and an object deleted plainly (1 version +
/// 1 delete marker); and objects of another subject and of a prefix neighbour.
async fn seeded_bucket(s3: &S3) -> String {
    let b = s3.versioned_bucket().await;
    for v in [
        "{\"v\":1}",
        "{\"v\":2}",
        "{\"v\":3,\"email\":\"jane@example.com\"}",
    ] {
        s3.put(&b, &format!("customers/{SUBJECT}/profile.json"), v)
            .await;
    }
    s3.put(
        &b,
        &format!("customers/{SUBJECT}/scan.bin"),
        vec![0u8, 159, 146, 150, 255],
    )
    .await;
    s3.put(&b, &format!("customers/{SUBJECT}/notes.txt"), "call back")
        .await;
    s3.delete(&b, &format!("customers/{SUBJECT}/notes.txt"))
        .await;
    for v in ["a", "b"] {
        s3.put(&b, &format!("customers/{OTHER}/profile.json"), v)
            .await;
    }
    s3.put(&b, &format!("customers/{NEIGHBOUR}/profile.json"), "n")
        .await;
    b
}

fn under(listed: &[Listed], prefix: &str) -> Vec<Listed> {
    listed
        .iter()
        .filter(|l| l.key.starts_with(prefix))
        .cloned()
        .collect()
}

on_both_backends!(
    an_erasure_removes_every_version_and_delete_marker_of_the_subject_and_nothing_else,
    an_export_collects_the_subjects_current_objects_as_text_or_base64,
    a_subject_with_no_objects_under_its_prefix_is_not_found,
    more_than_1000_versions_are_deleted_in_batches_of_at_most_1000_with_a_correct_content_md5,
    a_503_slowdown_is_throttling_and_the_erasure_then_completes,
    rejected_credentials_fail_naming_the_env_vars_and_a_missing_bucket_says_so,
    a_prefix_template_that_could_select_other_subjects_is_refused_with_exit_2,
    check_reaches_the_bucket_and_reports_rejected_credentials,
    a_version_that_delete_objects_refuses_fails_the_step_without_naming_the_key,
    hostile_customer_ids_are_refused_or_stay_inside_their_own_prefix_in_the_bucket,
);

async fn an_erasure_removes_every_version_and_delete_marker_of_the_subject_and_nothing_else(
    backend: Backend,
) {
    let s3 = S3::new();
    let bucket = seeded_bucket(&s3).await;
    let before = s3.list_all(&bucket).await;
    let mine = under(&before, &format!("customers/{SUBJECT}/"));
    assert_eq!(
        mine.len(),
        6,
        "seeded 5 versions + 1 delete marker: {mine:#?}"
    );
    assert_eq!(mine.iter().filter(|l| l.delete_marker).count(), 1);
    let others: Vec<Listed> = before
        .iter()
        .filter(|l| !l.key.starts_with(&format!("customers/{SUBJECT}/")))
        .cloned()
        .collect();
    assert_eq!(others.len(), 3);

    let env = env_for(backend, &s3.base, &bucket).await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;

    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["category"], "object_storage");
    let note = step["evidence"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("5 object version(s) and 1 delete marker(s)"),
        "{note}"
    );

    // The proof, listed by the test's own client: nothing of the subject is left,
    // not a version and not a delete marker; everyone else's versions are intact.
    let after = s3.list_all(&bucket).await;
    assert!(
        under(&after, &format!("customers/{SUBJECT}/")).is_empty(),
        "left behind: {after:#?}"
    );
    let mut after_others = after.clone();
    after_others.sort_by(|a, b| (&a.key, &a.version_id).cmp(&(&b.key, &b.version_id)));
    let mut others = others;
    others.sort_by(|a, b| (&a.key, &a.version_id).cmp(&(&b.key, &b.version_id)));
    assert_eq!(after_others, others);

    // Neither the status nor the audit trail holds the raw identities or object keys.
    let text = serde_json::to_string(&st).unwrap();
    assert!(!text.contains(SUBJECT) && !text.contains("jane@"), "{text}");
    let store = env.store().await;
    let events = store.request_events(&id).await.unwrap();
    let all = serde_json::to_string(&events.iter().map(|e| &e.detail).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(SUBJECT) && !all.contains("jane@"), "{all}");
}

async fn an_export_collects_the_subjects_current_objects_as_text_or_base64(backend: Backend) {
    let s3 = S3::new();
    let bucket = seeded_bucket(&s3).await;
    let env = env_for(backend, &s3.base, &bucket).await;
    let v = env
        .json(&["request", "export", "--customer-id", SUBJECT, "--json"])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "files")["outcome"], "exported");

    let file = env.dir.path().join("exports").join(&id).join("files.json");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("export file")).unwrap();
    let objects = doc["data"]["objects"].as_array().expect("objects");
    let mut keys: Vec<&str> = objects.iter().map(|o| o["key"].as_str().unwrap()).collect();
    keys.sort();
    // The plainly deleted notes.txt is not current; the other subjects are not exported.
    assert_eq!(
        keys,
        [
            format!("customers/{SUBJECT}/profile.json"),
            format!("customers/{SUBJECT}/scan.bin")
        ]
    );
    let profile = objects
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with("profile.json"))
        .unwrap();
    assert_eq!(
        profile["content_text"], "{\"v\":3,\"email\":\"jane@example.com\"}",
        "the current version"
    );
    assert_eq!(profile["size"], 34);
    assert!(profile["last_modified"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let scan = objects
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with("scan.bin"))
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(scan["content_base64"].as_str().unwrap())
            .unwrap(),
        vec![0u8, 159, 146, 150, 255]
    );
    // An export reads; it deletes nothing.
    assert_eq!(s3.list_all(&bucket).await.len(), 9);
}

async fn a_subject_with_no_objects_under_its_prefix_is_not_found(backend: Backend) {
    let s3 = S3::new();
    let bucket = seeded_bucket(&s3).await;
    let env = env_for(backend, &s3.base, &bucket).await;
    let id = file_erasure(&env, "C-9999").await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "files")["outcome"], "not_found");
    assert_eq!(s3.list_all(&bucket).await.len(), 9, "nothing was deleted");
}

// ---- a wiremock S3 that keeps state and answers with S3's XML ----

/// The objects a fake bucket holds: (key, version id, is delete marker).
type Entries = Arc<Mutex<Vec<(String, String, bool)>>>;

/// ListObjectVersions over the fake's entries, 1,000 per page, honouring key-marker/version-id-marker.
struct ListVersions(Entries);

impl Respond for ListVersions {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let q: std::collections::HashMap<String, String> =
            req.url.query_pairs().into_owned().collect();
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let mut all: Vec<(String, String, bool)> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0.starts_with(&prefix))
            .cloned()
            .collect();
        all.sort();
        let start = match (q.get("key-marker"), q.get("version-id-marker")) {
            (Some(k), Some(v)) => all
                .iter()
                .position(|e| &e.0 == k && &e.1 == v)
                .map(|p| p + 1)
                .unwrap_or(all.len()),
            _ => 0,
        };
        let page: Vec<_> = all.iter().skip(start).take(1000).cloned().collect();
        let truncated = start + page.len() < all.len();
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bucket</Name>");
        xml.push_str(&format!(
            "<Prefix>{prefix}</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>{truncated}</IsTruncated>"
        ));
        if let (true, Some(last)) = (truncated, page.last()) {
            xml.push_str(&format!(
                "<NextKeyMarker>{}</NextKeyMarker><NextVersionIdMarker>{}</NextVersionIdMarker>",
                last.0, last.1
            ));
        }
        for (k, v, marker) in &page {
            if *marker {
                xml.push_str(&format!("<DeleteMarker><Key>{k}</Key><VersionId>{v}</VersionId><IsLatest>true</IsLatest><LastModified>2024-05-01T10:00:00.000Z</LastModified></DeleteMarker>"));
            } else {
                xml.push_str(&format!("<Version><Key>{k}</Key><VersionId>{v}</VersionId><IsLatest>false</IsLatest><LastModified>2024-05-01T10:00:00.000Z</LastModified><ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Version>"));
            }
        }
        xml.push_str("</ListVersionsResult>");
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/xml")
            .set_body_string(xml)
    }
}

/// DeleteObjects: records each batch (body, Content-MD5) and removes what it names.
struct DeleteObjects(Entries, Arc<Mutex<Vec<(String, String)>>>);

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    s.split(open)
        .skip(1)
        .filter_map(|p| p.split(close).next())
        .collect()
}

impl Respond for DeleteObjects {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&req.body).to_string();
        let md5 = req
            .headers
            .get("content-md5")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.1.lock().unwrap().push((body.clone(), md5));
        let objects = between(&body, "<Object>", "</Object>");
        let gone: Vec<(String, String)> = objects
            .iter()
            .map(|o| {
                (
                    between(o, "<Key>", "</Key>")[0].to_string(),
                    between(o, "<VersionId>", "</VersionId>")[0].to_string(),
                )
            })
            .collect();
        self.0
            .lock()
            .unwrap()
            .retain(|e| !gone.contains(&(e.0.clone(), e.1.clone())));
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/xml")
            .set_body_string("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></DeleteResult>")
    }
}

fn s3_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/xml")
        .set_body_string(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>nFXhL9yEaOV7kHtPSM4fkDn+Q2vTyAGvZYbX6RmhbwsxHD9k+8A=</HostId></Error>"
        ))
}

struct FakeS3 {
    server: MockServer,
    entries: Entries,
    batches: Arc<Mutex<Vec<(String, String)>>>,
}

async fn fake_s3(entries: Vec<(String, String, bool)>) -> FakeS3 {
    let server = MockServer::start().await;
    let entries: Entries = Arc::new(Mutex::new(entries));
    let batches = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .and(query_param("versions", ""))
        .respond_with(ListVersions(entries.clone()))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/bucket"))
        .and(query_param("delete", ""))
        .respond_with(DeleteObjects(entries.clone(), batches.clone()))
        .with_priority(5)
        .mount(&server)
        .await;
    FakeS3 {
        server,
        entries,
        batches,
    }
}

async fn more_than_1000_versions_are_deleted_in_batches_of_at_most_1000_with_a_correct_content_md5(
    backend: Backend,
) {
    let mut entries: Vec<(String, String, bool)> = (0..1500)
        .map(|i| {
            (
                format!("customers/{SUBJECT}/f{:03}.txt", i / 3),
                format!("v{i:04}"),
                i % 3 == 2,
            )
        })
        .collect();
    entries.push((format!("customers/{OTHER}/a.txt"), "v1".into(), false));
    let fake = fake_s3(entries).await;
    let env = env_for(backend, &fake.server.uri(), "bucket").await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let note = TestEnv::step(&st, "files")["evidence"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains("1000 object version(s) and 500 delete marker(s)")
            && note.contains("2 batch(es)"),
        "{note}"
    );

    let batches = fake.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 2, "1,500 keys need two DeleteObjects calls");
    let mut deleted = 0;
    for (body, md5) in &batches {
        let n = body.matches("<Object>").count();
        assert!(n <= 1000, "a batch of {n} keys");
        assert!(body.contains("<Quiet>true</Quiet>"));
        assert_eq!(
            *md5,
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes())),
            "Content-MD5 must be base64(MD5(body))"
        );
        assert_eq!(
            body.matches("<VersionId>").count(),
            n,
            "every key by versionId"
        );
        deleted += n;
    }
    assert_eq!(deleted, 1500);
    // Only the other subject's object is left.
    assert_eq!(
        *fake.entries.lock().unwrap(),
        vec![(format!("customers/{OTHER}/a.txt"), "v1".to_string(), false)]
    );
    // Every call was SigV4-signed with the configured key and region.
    let reqs = fake.server.received_requests().await.unwrap();
    assert!(reqs.iter().all(|r| r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(
            |a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDLETHETEST/")
                && a.contains("/eu-west-2/s3/aws4_request")
                && a.contains("SignedHeaders=")
                && a.contains("content-md5") == (r.method.as_str() == "POST")
        )
        && r.headers.contains_key("x-amz-date")
        && r.headers.contains_key("x-amz-content-sha256")));
}

async fn a_503_slowdown_is_throttling_and_the_erasure_then_completes(backend: Backend) {
    let fake = fake_s3(vec![(
        format!("customers/{SUBJECT}/a.txt"),
        "v1".into(),
        false,
    )])
    .await;
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .respond_with(s3_error(
            503,
            "SlowDown",
            "Please reduce your request rate.",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let env = env_for(backend, &fake.server.uri(), "bucket").await;
    let id = file_erasure(&env, SUBJECT).await;

    let out = env.lethe(&["run", "--until-idle"]).await;
    assert!(out.status.success(), "{}", show(&out));
    let st = env.status(&id).await;
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["state"], "retry_wait", "{st:#}");
    assert_eq!(step["error_class"], "throttled");
    assert!(step["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("throttling") && e.contains("SlowDown")));
    assert_eq!(
        step["attempts"], 0,
        "a throttled call does not use up an attempt"
    );

    let st = env
        .run_until_status(&id, &["completed", "failed"], 30)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["outcome"], "erased");
    assert_eq!(step["attempts"], 1);
    assert!(fake.entries.lock().unwrap().is_empty());
}

async fn rejected_credentials_fail_naming_the_env_vars_and_a_missing_bucket_says_so(
    backend: Backend,
) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .respond_with(s3_error(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/gone"))
        .respond_with(s3_error(
            404,
            "NoSuchBucket",
            "The specified bucket does not exist",
        ))
        .mount(&server)
        .await;

    let env = env_for(backend, &server.uri(), "bucket").await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["failed", "completed"], 30)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["error_class"], "permanent");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("credentials rejected by processor `files`")
            && err.contains("InvalidAccessKeyId")
            && err.contains("S3_ACCESS_KEY_ID"),
        "{err}"
    );
    assert_eq!(step["attempts"], 1, "a permanent error is not retried");
    let out = env.lethe(&["status", &id]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed request needs attention"
    );

    let env = env_for(backend, &server.uri(), "gone").await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["failed", "completed"], 30)
        .await;
    let err = TestEnv::step(&st, "files")["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("bucket `gone` does not exist") && err.contains("settings.bucket"),
        "{err}"
    );
}

async fn a_prefix_template_that_could_select_other_subjects_is_refused_with_exit_2(
    backend: Backend,
) {
    for (template, why) in [
        ("customers/", "must use the subject"),
        ("customers/{{ subject.customer_id }}", "must end with `/`"),
    ] {
        let body = processor_toml("http://127.0.0.1:9", "bucket")
            .replace("customers/{{ subject.customer_id }}/", template);
        let env = TestEnv::new(backend, "", &body).await;
        let out = env
            .lethe(&["request", "erase", "--customer-id", SUBJECT])
            .await;
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("processor[0].settings.prefix_template") && err.contains(why),
            "{template}: {err}"
        );
    }
}

async fn check_reaches_the_bucket_and_reports_rejected_credentials(backend: Backend) {
    let s3 = S3::new();
    let bucket = s3.versioned_bucket().await;
    let env = env_for(backend, &s3.base, &bucket).await;
    let v = env.json(&["check", "--json"]).await;
    let p = &v["processors"][0];
    assert_eq!(p["processor"], "files");
    assert_eq!(p["ok"], true, "{v:#}");

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/bucket"))
        .and(query_param("versioning", ""))
        .respond_with(s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ))
        .mount(&server)
        .await;
    let env = env_for(backend, &server.uri(), "bucket").await;
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["processors"][0];
    assert_eq!(p["ok"], false);
    assert_eq!(p["error_class"], "permanent");
    assert!(
        p["error"].as_str().is_some_and(
            |e| e.contains("SignatureDoesNotMatch") && e.contains("S3_SECRET_ACCESS_KEY")
        )
    );
}

async fn a_version_that_delete_objects_refuses_fails_the_step_without_naming_the_key(
    backend: Backend,
) {
    let fake = fake_s3(vec![
        (format!("customers/{SUBJECT}/a.txt"), "v1".into(), false),
        (format!("customers/{SUBJECT}/b.txt"), "v2".into(), false),
    ])
    .await;
    // S3 answers 200 and lists, in quiet mode, only the keys it could not delete
    // (here: a version under an Object Lock legal hold).
    Mock::given(method("POST"))
        .and(path("/bucket"))
        .and(query_param("delete", ""))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/xml")
                .set_body_string(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Error><Key>customers/{SUBJECT}/b.txt</Key><VersionId>v2</VersionId><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>"
                )),
        )
        .with_priority(1)
        .mount(&fake.server)
        .await;
    let env = env_for(backend, &fake.server.uri(), "bucket").await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["failed", "completed"], 30)
        .await;
    assert_eq!(st["status"], "failed", "{st:#}");
    let step = TestEnv::step(&st, "files");
    assert_eq!(step["error_class"], "permanent");
    let err = step["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("could not delete 1 of 2 versions")
            && err.contains("AccessDenied")
            && err.contains("Object Lock"),
        "{err}"
    );
    assert!(
        !err.contains(SUBJECT),
        "object keys hold identifiers: {err}"
    );
}

/// On the real server: 1,001 versions (11 keys × 91; the 1,000-entry page ends
/// inside a key, so the listing pages by version-id marker) plus a delete marker
/// need two DeleteObjects calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_thousand_versions_on_the_real_server_are_all_deleted() {
    let s3 = S3::new();
    let bucket = s3.versioned_bucket().await;
    // Versions of one key are written in order; different keys in parallel.
    futures::future::join_all((0..11).map(|k| {
        let (s3, bucket) = (&s3, &bucket);
        async move {
            for i in 0..91 {
                s3.put(
                    bucket,
                    &format!("customers/{SUBJECT}/log{k:02}.txt"),
                    format!("line {i}"),
                )
                .await;
            }
        }
    }))
    .await;
    let key = format!("customers/{SUBJECT}/log00.txt");
    s3.delete(&bucket, &key).await;
    s3.put(&bucket, &format!("customers/{OTHER}/log.txt"), "keep")
        .await;
    assert_eq!(
        under(
            &s3.list_all(&bucket).await,
            &format!("customers/{SUBJECT}/")
        )
        .len(),
        1002
    );

    let env = env_for(Backend::Sqlite, &s3.base, &bucket).await;
    let id = file_erasure(&env, SUBJECT).await;
    let st = env
        .run_until_status(&id, &["completed", "failed"], 60)
        .await;
    assert_eq!(st["status"], "completed", "{st:#}");
    let note = TestEnv::step(&st, "files")["evidence"]["note"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains("1001 object version(s) and 1 delete marker(s)")
            && note.contains("in 2 batch(es)"),
        "{note}"
    );
    let after = s3.list_all(&bucket).await;
    assert!(
        under(&after, &format!("customers/{SUBJECT}/")).is_empty(),
        "{after:#?}"
    );
    assert_eq!(after.len(), 1, "the other subject's object is untouched");
}

/// moto with authentication on checks SigV4 signatures against an IAM access
/// key: `lethe check` (GetBucketVersioning) is accepted with the right secret and
/// refused as rejected credentials with a wrong one. (Only `check`: moto's
/// verifier sees query values decoded, so it miscomputes any signed request whose
/// query holds an encoded `/`, such as every ListObjectVersions prefix; real S3
/// does not. The erasure itself is proven against the unauthenticated moto.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_sigv4_accepts_the_signature_and_refuses_a_wrong_secret() {
    let server = tokio::task::spawn_blocking(SignedServer::start)
        .await
        .unwrap();
    let mut env = env_for(Backend::Sqlite, &server.url, "signed").await;
    env.set_env("S3_ACCESS_KEY_ID", &server.access_key_id);
    env.set_env("S3_SECRET_ACCESS_KEY", &server.secret_access_key);
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["processors"][0]["ok"], true, "{v:#}");

    env.set_env("S3_SECRET_ACCESS_KEY", "not-the-secret");
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["processors"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("credentials rejected by processor `files`")
            && err.contains("SignatureDoesNotMatch")
            && err.contains("S3_SECRET_ACCESS_KEY"),
        "{err}"
    );
}

/// The hostile-identity suite for S3: ids that would steer a key prefix
/// (`..`, `/`, percent-encoding, `?`, `#`) are refused at the CLI with the
/// bucket untouched; ids the grammar accepts but that are odd in a key (`:`,
/// `@`, `.`) erase exactly their own prefix on the real server, and a
/// neighbour whose id starts with theirs keeps everything.
async fn hostile_customer_ids_are_refused_or_stay_inside_their_own_prefix_in_the_bucket(
    backend: Backend,
) {
    let s3 = S3::new();
    let bucket = s3.versioned_bucket().await;
    let tricky = ["C-1.2", "acct:77", "x@y"];
    for id in tricky {
        s3.put(&bucket, &format!("customers/{id}/profile.json"), "mine")
            .await;
        s3.put(
            &bucket,
            &format!("customers/{id}0/profile.json"),
            "neighbour",
        )
        .await;
    }
    s3.put(&bucket, "customers/profile.json", "top level").await;
    s3.put(&bucket, "etc/passwd", "outside").await;
    let before = s3.list_all(&bucket).await;
    assert_eq!(before.len(), 8);

    let env = env_for(backend, &s3.base, &bucket).await;
    for id in [
        "x/..",
        "%2e%2e",
        "a?b",
        "a#b",
        "../../etc",
        "..",
        "a/b",
        ".",
    ] {
        let out = env
            .lethe(&[
                "request",
                "erase",
                "--email",
                "jane@example.com",
                "--customer-id",
                id,
            ])
            .await;
        assert_eq!(out.status.code(), Some(2), "{id}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("customer"),
            "{id}: {}",
            show(&out)
        );
    }
    let out = env.lethe(&["run", "--until-idle"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        s3.list_all(&bucket).await,
        before,
        "a refused id touched the bucket"
    );

    for id in tricky {
        let rid = file_erasure(&env, id).await;
        let st = env
            .run_until_status(&rid, &["completed", "failed"], 30)
            .await;
        assert_eq!(st["status"], "completed", "{id}: {st:#}");
        assert_eq!(
            TestEnv::step(&st, "files")["outcome"],
            "erased",
            "{id}: {st:#}"
        );
    }
    let mut left: Vec<String> = s3
        .list_all(&bucket)
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    left.sort();
    let mut want: Vec<String> = tricky
        .iter()
        .map(|id| format!("customers/{id}0/profile.json"))
        .chain(["customers/profile.json".into(), "etc/passwd".into()])
        .collect();
    want.sort();
    assert_eq!(left, want);
}

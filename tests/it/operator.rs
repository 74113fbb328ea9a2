//! The operator's experience (issue 13): where the store is, what `lethe
//! check` finds without a request, and the small things — a closed pipe, colour
//! codes in log files, external ids, masks of short ids, private package
//! files, how a stale signature is described, released holds.

use crate::daemon::{intake_env, sign, Daemon, SECRET};
use crate::fakes::{self, API_KEY};
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::Value;
use std::path::Path;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const EMAIL: &str = "jane.doe@example.com";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Point the world's config at `sqlite://lethe.db` (relative) instead of its absolute URL.
fn use_relative_sqlite(env: &TestEnv) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text = text.replace(
        &format!("url = \"{}\"", env.db_url),
        "url = \"sqlite://lethe.db\"",
    );
    assert!(text.contains("sqlite://lethe.db"));
    std::fs::write(&env.config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_sqlite_store_is_found_next_to_the_config_and_reading_commands_never_create_one()
{
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(Backend::Sqlite, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    use_relative_sqlite(&env);
    let elsewhere = tempfile::tempdir().unwrap();
    let next_to_config = env.dir.path().join("lethe.db");
    let run_elsewhere = |args: &[&str]| {
        let mut c = env.command(args);
        c.current_dir(elsewhere.path());
        c
    };

    // Commands that read refuse a store that does not exist, naming its path.
    for args in [
        vec!["list"],
        vec!["status", "00000000-0000-0000-0000-000000000000"],
        vec!["audit", "verify"],
        vec!["hold", "list"],
        vec!["report", "--from", "2026-01-01", "--to", "2026-01-31"],
    ] {
        let out = run_elsewhere(&args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(
            stderr(&out).contains(&next_to_config.display().to_string()),
            "{args:?}: the message names the file: {}",
            show(&out)
        );
    }
    assert!(!next_to_config.exists(), "no database was created");
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing was created in the working directory"
    );

    // A request filed from elsewhere lands next to the config…
    let out = run_elsewhere(&["request", "erase", "--email", EMAIL, "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next_to_config.exists());
    assert!(!elsewhere.path().join("lethe.db").exists());
    // …and is listed from anywhere.
    let out = run_elsewhere(&["list"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(stdout(&out).contains(&id), "{}", show(&out));
}

/// A connector with a mistake in almost every template.
const SLOPPY_CONNECTOR: &str = r#"
name = "acme"
category = "other"
settings = ["tenant"]
secrets = ["token"]

[auth]
scheme = "bearer"
token = "{{ secrets.tokn }}"

[check]
path = "/ping"

[[actions.lookup.calls]]
path = "/t/{{ settings.tenant }}/people/{{ subject.emial }}"
extract = { pid = "/id" }

[[actions.export.calls]]
path = "/t/{{ settings.tenant }}/people/{{ subject.email }}"

[[actions.erase.calls]]
method = "DELETE"
path = "/t/{{ settings.tenant | shout }}/people/{{ vars.pidd }}"
"#;

on_both_backends!(
    lethe_check_names_each_mistake_with_its_file_and_processor_and_exits_2,
    lethe_check_gives_up_on_a_silent_processor_and_shows_a_manual_one_without_an_http_status,
    an_undefined_value_at_run_time_names_the_variable_and_the_connector_file,
    a_reader_that_stops_early_ends_lethe_list_quietly,
    an_external_id_is_counted_in_characters_as_the_webhook_counts_them,
    a_short_customer_id_is_masked_to_nothing,
    package_directories_and_files_are_readable_by_the_owner_only,
    hold_list_all_marks_released_holds,
);

async fn lethe_check_names_each_mistake_with_its_file_and_processor_and_exits_2(backend: Backend) {
    let server = fakes::mailchimp().await;
    let acme = MockServer::start().await;
    let processors = format!(
        "{}\n[[processor]]\nname = \"crm\"\nconnector = \"acme\"\nbase_url = \"{}\"\n\
         settings = {{ tenant = \"t1\", tennant = \"t2\", folder = \"{{{{ subject.customer_idd }}}}\" }}\n\
         secrets = {{ token = \"ACME_TOKEN\" }}\n\n\
         [intake]\nlisten = \"127.0.0.1:1\"\nwebhook_secret_env = \"CHECK_TEST_WEBHOOK_SECRET\"\n",
        fakes::processor_toml(&server),
        acme.uri()
    );
    let mut env = TestEnv::new(
        backend,
        "connectors_dir = \"connectors\"\nworkflows_dir = \"workflows\"",
        &processors,
    )
    .await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("ACME_TOKEN", "t");
    env.set_env("LETHE_API_TOKEN", "token");
    env.set_env("LETHE_CALLBACK_KEY", &crate::helpers::test_key());
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("connectors")).unwrap();
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("connectors/acme.toml"), SLOPPY_CONNECTOR).unwrap();
    // The default export workflow's file says it is for erasures, and selects nothing.
    std::fs::write(
        dir.join("workflows/export.toml"),
        "kind = \"erasure\"\n[[phase]]\nname = \"texts\"\nselect = [\"category:sms\"]\n",
    )
    .unwrap();
    let connector = dir.join("connectors/acme.toml").display().to_string();
    let config = env.config.display().to_string();
    let workflow = dir.join("workflows/export.toml").display().to_string();

    let out = env.lethe(&["check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = stdout(&out);
    let problems: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("problem: "))
        .collect();
    for (file, processor, key, what) in [
        (&connector, Some("crm"), "auth.token", "`secrets.tokn`"),
        (
            &connector,
            Some("crm"),
            "actions.lookup.calls[0].path",
            "`subject.emial`",
        ),
        (
            &connector,
            Some("crm"),
            "actions.erase.calls[0].path",
            "`vars.pidd`",
        ),
        (
            &connector,
            Some("crm"),
            "actions.erase.calls[0].path",
            "unknown filter",
        ),
        (
            &config,
            Some("crm"),
            "processor[1].settings.tennant",
            "has no setting `tennant`",
        ),
        (
            &config,
            Some("crm"),
            "processor[1].settings.folder",
            "`subject.customer_idd`",
        ),
        (
            &config,
            Some("crm"),
            "processor[1].settings.folder",
            "has no setting `folder`",
        ),
        (&workflow, None, "kind", "kind = \"erasure\""),
        (&workflow, None, "phase", "selects no processor"),
        (
            &config,
            None,
            "intake.webhook_secret_env",
            "CHECK_TEST_WEBHOOK_SECRET is not set",
        ),
    ] {
        let want_start = match processor {
            Some(p) => format!("{file}: processor `{p}`: `{key}`: "),
            None => format!("{file}: `{key}`: "),
        };
        assert!(
            problems
                .iter()
                .any(|l| l.starts_with(&want_start) && l.contains(what)),
            "no problem line `{want_start}…{what}…` in:\n{}",
            show(&out)
        );
    }
    assert!(
        !problems.iter().any(|l| l.contains("newsletter")),
        "the correct processor has no problem: {}",
        show(&out)
    );
    assert!(
        text.contains("newsletter         ok (HTTP 200)"),
        "{}",
        show(&out)
    );

    // --json keeps its fields and adds the problems.
    let out = env.lethe(&["check", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v.get("store").is_some() && v.get("key").is_some(), "{v:#}");
    let nl = &v["processors"][0];
    assert_eq!(nl["processor"], "newsletter");
    assert_eq!(nl["ok"], true);
    assert_eq!(nl["status"], 200);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 10, "{v:#}");
    assert!(problems.iter().any(|p| p["file"] == connector.as_str()
        && p["processor"] == "crm"
        && p["key"] == "actions.lookup.calls[0].path"
        && p["problem"].as_str().unwrap().contains("subject.emial")));

    // Fixed, the same check passes.
    std::fs::remove_file(dir.join("workflows/export.toml")).unwrap();
    std::fs::write(
        dir.join("connectors/acme.toml"),
        SLOPPY_CONNECTOR
            .replace("tokn", "token")
            .replace("emial", "email")
            .replace(" | shout", "")
            .replace("pidd", "pid"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        ", tennant = \"t2\", folder = \"{{ subject.customer_idd }}\"",
        "",
    );
    std::fs::write(&env.config, text).unwrap();
    env.set_env("CHECK_TEST_WEBHOOK_SECRET", "s");
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&acme)
        .await;
    let out = env.lethe(&["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stdout(&out).contains("problem"), "{}", show(&out));
}

async fn lethe_check_gives_up_on_a_silent_processor_and_shows_a_manual_one_without_an_http_status(
    backend: Backend,
) {
    let silent = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/3.0/ping"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_secs(120))
                .set_body_json(serde_json::json!({"health_status": "late"})),
        )
        .mount(&silent)
        .await;
    let processors = format!(
        "{}\n[[processor]]\nname = \"paper\"\nconnector = \"manual\"\nbase_url = \"{}/tasks\"\n\
         settings = {{ contact = \"ops@shop.example\" }}\nsecrets = {{ webhook_secret = \"PAPER_SECRET\" }}\n",
        fakes::processor_toml(&silent),
        silent.uri()
    );
    let mut env = TestEnv::new(backend, "", &processors).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    env.set_env("PAPER_SECRET", "s");
    let out = env.lethe(&["check", "--timeout", "1s"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {}", show(&out)))
            .to_string()
    };
    assert!(
        line("newsletter").contains("no answer within 1s"),
        "{}",
        show(&out)
    );
    let paper = line("paper");
    assert!(paper.contains("ok (") && !paper.contains("HTTP"), "{paper}");
    assert!(
        stderr(&out).contains("checking newsletter"),
        "it says what it waits on: {}",
        show(&out)
    );

    let out = env.lethe(&["check", "--timeout", "1s", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nl = &v["processors"][0];
    assert_eq!(nl["processor"], "newsletter", "{v:#}");
    assert_eq!(nl["ok"], false);
    assert_eq!(nl["timed_out"], true);
    assert!(nl["error_class"].is_string() && nl["error"].is_string());
    let paper = &v["processors"][1];
    assert_eq!(paper["ok"], true);
    assert_eq!(paper["manual"], true);
    assert!(paper["status"].is_null(), "{v:#}");
    assert!(paper["note"].as_str().unwrap().contains("ops@shop.example"));
}

async fn an_undefined_value_at_run_time_names_the_variable_and_the_connector_file(
    backend: Backend,
) {
    // Statically fine (`pid` is extracted by the lookup), but the erase call
    // runs without that lookup's value.
    let server = MockServer::start().await;
    let connector = SLOPPY_CONNECTOR
        .replace("tokn", "token")
        .replace("emial", "email")
        .replace(" | shout", "")
        .replace("pidd", "pid");
    let processors = format!(
        "[[processor]]\nname = \"crm\"\nconnector = \"acme\"\nbase_url = \"{}\"\n\
         settings = {{ tenant = \"t1\" }}\nsecrets = {{ token = \"ACME_TOKEN\" }}\n",
        server.uri()
    );
    let mut env = TestEnv::new(backend, "connectors_dir = \"connectors\"", &processors).await;
    env.set_env("ACME_TOKEN", "t");
    std::fs::create_dir_all(env.dir.path().join("connectors")).unwrap();
    let file = env.dir.path().join("connectors/acme.toml");
    std::fs::write(&file, connector).unwrap();
    let id = env.erase(EMAIL).await;
    let st = env.run_until_status(&id, &["failed"], 30).await;
    let err = crate::helpers::TestEnv::step(&st, "crm")["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{st:#}"))
        .to_string();
    assert!(
        err.contains("`vars.pid` is undefined"),
        "names the variable: {err}"
    );
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(!err.contains(EMAIL), "{err}");
}

async fn a_reader_that_stops_early_ends_lethe_list_quietly(backend: Backend) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    for i in 0..3 {
        env.erase(&format!("person{i}@example.com")).await;
    }
    // A pipe whose reader is gone before lethe writes: every write fails with EPIPE.
    let (writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
    drop(reader);
    let writer = std::process::Stdio::from(writer.into_blocking_fd().unwrap());
    let out = env
        .command(&["list"])
        .stdout(writer)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        !stderr(&out).contains("panicked"),
        "no panic message: {}",
        show(&out)
    );
}

async fn an_external_id_is_counted_in_characters_as_the_webhook_counts_them(backend: Backend) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    // 200 characters of two bytes each: within the limit of 200 characters.
    let ok = "é".repeat(200);
    let out = env
        .lethe(&["request", "erase", "--email", EMAIL, "--external-id", &ok])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let too_long = "é".repeat(201);
    let out = env
        .lethe(&[
            "request",
            "erase",
            "--email",
            EMAIL,
            "--external-id",
            &too_long,
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("--external-id: longer than 200 characters"),
        "{}",
        show(&out)
    );
    let list = env.json(&["list", "--json"]).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "nothing written: {list:#}"
    );
}

async fn a_short_customer_id_is_masked_to_nothing(backend: Backend) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    for (id, masked) in [("c1", "***"), ("cus_123", "c***"), ("cust-0042", "cu***")] {
        let v = env
            .json(&["request", "erase", "--customer-id", id, "--json"])
            .await;
        assert_eq!(v["subject"], masked, "{id}: {v:#}");
    }
    let v = env
        .json(&["request", "erase", "--email", "jo@example.com", "--json"])
        .await;
    assert_eq!(
        v["subject"], "***@example.com",
        "a short local part shows nothing"
    );
    let out = env.lethe(&["list"]).await;
    let text = stdout(&out);
    assert!(!text.contains("c1*"), "{text}");
    assert!(!text.contains("jo@"), "{text}");
}

async fn package_directories_and_files_are_readable_by_the_owner_only(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let server = fakes::mailchimp().await;
    fakes::add_member(&server, EMAIL).await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let v = env
        .json(&["request", "export", "--email", EMAIL, "--json"])
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    env.run_until_status(&id, &["completed"], 30).await;
    let base = env.dir.path().join("pkg");
    let out = env
        .lethe(&["package", &id, "-o", base.to_str().unwrap()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&base), 0o700, "the package directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&base).unwrap() {
        let p = entry.unwrap().path();
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
        files += 1;
    }
    assert!(files >= 2, "a manifest and the newsletter's data");
    assert_eq!(mode(&env.dir.path().join("pkg.zip")), 0o600, "the zip");

    env.set_env("OPERATOR_TEST_PASSPHRASE", "correct horse");
    let enc = env.dir.path().join("enc");
    let out = env
        .lethe(&[
            "package",
            &id,
            "-o",
            enc.to_str().unwrap(),
            "--passphrase-env",
            "OPERATOR_TEST_PASSPHRASE",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(mode(&env.dir.path().join("enc.zip.age")), 0o600);
}

async fn hold_list_all_marks_released_holds(backend: Backend) {
    let server = fakes::mailchimp().await;
    let mut env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    env.set_env("MAILCHIMP_API_KEY", API_KEY);
    let released = env
        .json(&[
            "hold", "add", "--email", EMAIL, "--basis", "case 1", "--json",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let active = env
        .json(&[
            "hold",
            "add",
            "--email",
            "other@example.com",
            "--basis",
            "case 2",
            "--json",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.lethe(&["hold", "release", &released]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let out = env.lethe(&["hold", "list", "--all"]).await;
    let text = stdout(&out);
    assert!(text.lines().next().unwrap().contains("STATUS"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id))
            .unwrap()
            .to_string()
    };
    assert!(line(&released).contains(" released "), "{text}");
    assert!(line(&active).contains(" active "), "{text}");

    let v = env.json(&["hold", "list", "--all", "--json"]).await;
    let by_id = |id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(&released)["status"], "released");
    assert!(by_id(&released)["released_at"].is_string());
    assert_eq!(by_id(&active)["status"], "active");
    assert!(by_id(&active)["released_at"].is_null());
    // Without --all, only the open one.
    let v = env.json(&["hold", "list", "--json"]).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_logging_to_a_file_writes_no_colour_codes_and_a_stale_signature_is_said_to_be_in_the_past(
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(Backend::Sqlite, &server).await;
    let d = Daemon::start(&env, port).await;
    let body =
        r#"{"kind":"erasure","identities":{"email":"jane@example.com"},"external_id":"f-1"}"#;
    let sig = sign(SECRET, crate::daemon::now() - 400, body.as_bytes());
    let (code, v) = d
        .post_raw("/v1/requests", body.as_bytes().to_vec(), Some(&sig), None)
        .await;
    assert_eq!(code, 401, "{v:#}");
    let msg = v.to_string();
    assert!(msg.contains(" s ago"), "{msg}");
    assert!(!msg.contains("from now"), "{msg}");
    let log = d.stop().await;
    assert!(log.contains("INFO"), "the log has lines: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escape in a log file: {log:?}"
    );
}

//! `lethe demo`, run as a new user runs it: the story it tells, the certificate
//! it writes, and the next commands it prints, each run exactly as printed.
//!
//! The demo is SQLite by design (one file, no server), so these tests have no
//! PostgreSQL variant.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `lethe demo` with its temporary files under `tmp`, run from `cwd`, with no
/// lethe variable in the environment.
fn run_demo(tmp: &Path, cwd: &Path) -> Output {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_lethe"));
    c.arg("demo")
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("LETHE_KEY")
        .env_remove("LETHE_CONFIG")
        .env_remove("RUST_LOG");
    c.output().expect("run lethe demo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lines of `out` under the heading `heading` (up to the next blank line).
fn section<'a>(out: &'a str, heading: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// Every whitespace run made one space, so that wrapped sentences compare whole.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A world for one demo run: a TMPDIR whose path has a space (so the printed
/// commands must quote it) and an unrelated working directory.
struct World {
    _root: tempfile::TempDir,
    tmp: PathBuf,
    elsewhere: PathBuf,
}

fn world() -> World {
    let root = tempfile::tempdir().expect("tempdir");
    let tmp = root.path().join("temp dir");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    World {
        _root: root,
        tmp,
        elsewhere,
    }
}

#[test]
fn the_demo_tells_what_was_asked_what_each_processor_did_and_why() {
    let w = world();
    let out = run_demo(&w.tmp, &w.elsewhere);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let all = flat(&stdout);

    // What was asked: the masked subject, the kind, the legal deadline.
    let asked = flat(&section(&stdout, "What was asked").join("\n"));
    assert!(
        asked.contains(
            "Erase all personal data about j***@example.com (GDPR Art. 17, the right to erasure)"
        ),
        "{stdout}"
    );
    assert!(
        asked.contains("at each processor: event-invites, newsletter, product-updates."),
        "{stdout}"
    );
    assert!(
        asked.contains(", one month after receipt (Art. 12(3))."),
        "{stdout}"
    );
    assert!(asked.contains("Legal deadline: 20"), "{stdout}");

    // What each processor did, and why: the 503s explained from the events.
    let did = flat(&section(&stdout, "What each processor did").join("\n"));
    assert!(
        did.contains(
            "event-invites (mailing list): erased Answered 503 Service Unavailable twice; \
             lethe retried with back-off (waited 150ms, then 300ms), then erased on attempt 3 \
             (204 No Content)"
        ),
        "{stdout}"
    );
    assert!(
        did.contains(
            "newsletter (mailing list): erased Erased on the first attempt (204 No Content)"
        ),
        "{stdout}"
    );
    assert!(
        did.contains(
            "product-updates (mailing list): held no data Answered 404 Not Found on the first \
             attempt: it held no data on the subject, so there was nothing to erase"
        ),
        "{stdout}"
    );
    assert!(
        all.contains(
            "Asked directly afterwards, no simulated audience lists the subject any more."
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("=false") && !stdout.contains("=true"),
        "{stdout}"
    );

    // The audit chain, verified.
    let audit = flat(&section(&stdout, "Audit trail").join("\n"));
    assert!(
        audit.contains("7 events recorded for this request"),
        "{stdout}"
    );
    assert!(audit.contains("recomputes: verified"), "{stdout}");
}

#[test]
fn the_demo_writes_its_certificate_as_html_at_the_absolute_path_it_prints() {
    let w = world();
    let out = run_demo(&w.tmp, &w.elsewhere);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines = section(&stdout, "Certificate of erasure");
    assert_eq!(lines.len(), 1, "{stdout}");
    let path = PathBuf::from(lines[0].trim());
    assert!(path.is_absolute(), "{stdout}");
    assert!(
        path.starts_with(w.tmp.canonicalize().expect("canonical")),
        "the demo's files belong under TMPDIR: {}",
        path.display()
    );
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("certificate.html")
    );
    let html = std::fs::read_to_string(&path).expect("the printed certificate exists");
    assert!(
        html.starts_with("<!DOCTYPE html>"),
        "{}",
        &html[..html.len().min(200)]
    );
    let id = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Request "))
        .and_then(|l| l.split(',').next())
        .expect("the request id is printed");
    assert!(
        html.contains(id),
        "the certificate is of the demo's request"
    );
    assert!(html.contains("j***@example.com"));
    assert!(!html.contains("jane.doe@example.com"));
    assert!(html.contains("event-invites") && html.contains("erased"));
    // The demo signs a checkpoint before it writes the certificate, so the
    // certificate carries a signed checkpoint, not "pending".
    assert!(
        html.contains("the head is leaf") && !html.contains("no signed checkpoint covers"),
        "the demo's certificate is covered by a signed checkpoint"
    );
}

#[test]
fn every_next_command_the_demo_prints_runs_as_printed_from_anywhere_without_a_key() {
    let w = world();
    let out = run_demo(&w.tmp, &w.elsewhere);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let commands: Vec<&str> = section(&stdout, "Next:")
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 3, "{stdout}");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_lethe"))
        .canonicalize()
        .expect("canonical");
    let id = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Request "))
        .and_then(|l| l.split(',').next())
        .expect("the request id is printed")
        .to_string();
    let mut outputs = vec![];
    for cmd in &commands {
        assert!(
            cmd.starts_with(&exe.display().to_string()),
            "a next command starts with the running executable's path: {cmd}"
        );
        assert!(
            cmd.contains("--config '"),
            "the config path with a space is quoted: {cmd}"
        );
        // As a user pastes it: through a shell, in another directory, with no
        // lethe variable (so no key) in the environment and no lethe on the PATH.
        let run = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&w.elsewhere)
            .env_remove("LETHE_KEY")
            .env_remove("LETHE_CONFIG")
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("run sh");
        assert_eq!(
            run.status.code(),
            Some(0),
            "`{cmd}` failed:\n{}{}",
            text(&run.stdout),
            text(&run.stderr)
        );
        outputs.push(text(&run.stdout));
    }
    assert!(
        outputs[0].contains(&id) && outputs[0].contains("status: completed"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[1].contains("CERTIFICATE OF ERASURE") && outputs[1].contains("deadline:    met"),
        "{}",
        outputs[1]
    );
    assert!(
        outputs[2].starts_with("ok: 7 events verified"),
        "{}",
        outputs[2]
    );
    // Nothing was written where the commands ran.
    assert_eq!(std::fs::read_dir(&w.elsewhere).expect("ls").count(), 0);
}

#[test]
fn the_demo_prints_no_secret_and_no_raw_email() {
    let w = world();
    let out = run_demo(&w.tmp, &w.elsewhere);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let printed = format!("{stdout}\n{}", text(&out.stderr));
    assert!(!printed.contains("LETHE_KEY="), "{printed}");
    // The simulated API key (`<32 hex>-us21`) and the env var holding it.
    assert!(!printed.contains("-us21"), "{printed}");
    assert!(!printed.contains("DEMO_MAILCHIMP_KEY"), "{printed}");
    for token in printed.split(|c: char| c.is_whitespace() || "'\"(),;".contains(c)) {
        // No master key: no printed value (alone or as `VAR=value`) is 32 bytes in base64.
        let value = token.split_once('=').map_or(token, |(_, v)| v);
        for candidate in [token, value] {
            let decoded = base64::engine::general_purpose::STANDARD.decode(candidate);
            assert!(
                !matches!(decoded, Ok(ref b) if b.len() == 32),
                "a 32-byte base64 value was printed: {token}"
            );
        }
        // No identity in the clear: an email is only ever masked.
        if token.contains('@') {
            assert!(
                token.contains("***@"),
                "an unmasked email was printed: {token}"
            );
        }
    }
    assert!(!printed.contains("jane.doe"), "{printed}");
    assert!(!printed.contains("someone.else"), "{printed}");
}

//! Bad input gets exit code 2 and a message naming what is wrong; nothing is written.

use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;

on_both_backends!(
    a_malformed_email_is_refused_with_exit_2_and_nothing_is_written,
    a_broken_config_file_is_refused_with_exit_2_naming_file_and_line,
    a_broken_connector_file_is_refused_with_exit_2_naming_file_and_key,
    a_broken_workflow_file_is_refused_with_exit_2_naming_file_and_key,
);

/// Whether the store holds any request. For SQLite, a store never opened is a missing file.
async fn store_has_requests(env: &TestEnv) -> bool {
    if env.backend == Backend::Sqlite && !env.dir.path().join("lethe.db").exists() {
        return false;
    }
    let store = env.store().await;
    !store
        .list_requests(&Default::default())
        .await
        .unwrap()
        .is_empty()
}

async fn a_malformed_email_is_refused_with_exit_2_and_nothing_is_written(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = TestEnv::new(backend, "", &fakes::processor_toml(&server)).await;
    for bad in [
        "jane@",
        "jane.example.com",
        "jane@example",
        "ja ne@example.com",
    ] {
        let out = env.lethe(&["request", "erase", "--email", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid email"), "{bad}: {err}");
    }
    let out = env
        .lethe(&["request", "erase", "--phone", "07700 900123"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid phone"));
    let out = env.lethe(&["request", "erase", "--name", "Jane Doe"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a name alone identifies nobody: {}",
        show(&out)
    );
    assert!(
        !store_has_requests(&env).await,
        "nothing may be written for bad input"
    );
}

async fn a_broken_config_file_is_refused_with_exit_2_naming_file_and_line(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = TestEnv::new(
        backend,
        "",
        &format!(
            "{}\nconcurrency = \"ten\"\n",
            fakes::processor_toml(&server)
        ),
    )
    .await;
    let out = env
        .lethe(&["request", "erase", "--email", "jane@example.com"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lethe.toml") && err.contains("line 13"),
        "names the file and line: {err}"
    );

    // Unknown connector: names the key.
    let env2 = TestEnv::new(
        backend,
        "",
        &fakes::processor_toml(&server).replace("\"mailchimp\"", "\"mailchimps\""),
    )
    .await;
    let out = env2.lethe(&["check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processor[0].connector") && err.contains("mailchimps"),
        "{err}"
    );
    assert!(!store_has_requests(&env).await);
    assert!(!store_has_requests(&env2).await);
}

async fn a_broken_connector_file_is_refused_with_exit_2_naming_file_and_key(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = TestEnv::new(
        backend,
        "connectors_dir = \"connectors\"",
        &fakes::processor_toml(&server),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("connectors")).unwrap();
    // A template that does not compile.
    let text = include_str!("../../connectors/mailchimp.toml").replace(
        "/actions/delete-permanent\"",
        "/actions/delete-permanent{{ oops\"",
    );
    std::fs::write(env.dir.path().join("connectors/mailchimp.toml"), text).unwrap();
    let out = env
        .lethe(&["request", "erase", "--email", "jane@example.com"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connectors/mailchimp.toml"), "{err}");
    assert!(err.contains("actions.erase.calls[0].path"), "{err}");
    assert!(!store_has_requests(&env).await);
}

async fn a_broken_workflow_file_is_refused_with_exit_2_naming_file_and_key(backend: Backend) {
    let server = fakes::mailchimp().await;
    let env = TestEnv::new(
        backend,
        "workflows_dir = \"workflows\"",
        &fakes::processor_toml(&server),
    )
    .await;
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    std::fs::write(
        env.dir.path().join("workflows/erasure.toml"),
        "kind = \"erasure\"\n[retry]\ninitial = \"soon\"\n[[phase]]\nname = \"x\"\nselect = [\"*\"]\n",
    )
    .unwrap();
    let out = env
        .lethe(&["request", "erase", "--email", "jane@example.com"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workflows/erasure.toml") && err.contains("soon"),
        "{err}"
    );

    std::fs::write(
        env.dir.path().join("workflows/erasure.toml"),
        "kind = \"erasure\"\n[[phase]]\nname = \"x\"\nselect = [\"no-such-processor\"]\n",
    )
    .unwrap();
    let out = env
        .lethe(&["request", "erase", "--email", "jane@example.com"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("phase[0].select[0]") && err.contains("no-such-processor"),
        "{err}"
    );
    assert!(!store_has_requests(&env).await);
}

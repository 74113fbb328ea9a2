//! Phone numbers in the forms people write them: `+44(0)7700-900123` is the
//! subject `+447700900123` at the processor, and a number that is not in
//! international format is refused with exit 2 / 422 naming the flag or field.

use crate::connectors_fakes::{count, Api, Twilio};
use crate::connectors_suite::{env_for, finish};
use crate::daemon::{intake_env, Daemon};
use crate::fakes;
use crate::helpers::{show, Backend, TestEnv};
use crate::on_both_backends;
use serde_json::json;

on_both_backends!(
    a_uk_number_written_with_its_trunk_zero_in_brackets_is_erased_at_twilio_as_the_e164_number,
    a_phone_not_in_international_format_is_refused_naming_the_flag_or_field_and_nothing_is_written,
);

async fn a_uk_number_written_with_its_trunk_zero_in_brackets_is_erased_at_twilio_as_the_e164_number(
    backend: Backend,
) {
    // The fake holds one message to +447700900123.
    let api = Twilio::start(false).await;
    let env = env_for(backend, &api).await;
    let v = env
        .json(&["request", "erase", "--phone", "+44(0)7700-900123", "--json"])
        .await;
    assert_eq!(v["subject"], "+44********23", "{v:#}");
    let id = v["id"].as_str().unwrap().to_string();
    let st = finish(&env, &id).await;
    assert_eq!(st["status"], "completed", "{st:#}");
    assert_eq!(TestEnv::step(&st, "sms")["outcome"], "erased", "{st:#}");
    assert_eq!(
        count(&api.server, "DELETE", r"/Messages/SM0+other\.json$").await,
        1,
        "the message to +447700900123 is deleted"
    );
}

async fn a_phone_not_in_international_format_is_refused_naming_the_flag_or_field_and_nothing_is_written(
    backend: Backend,
) {
    let server = fakes::mailchimp().await;
    let (env, port) = intake_env(backend, &server).await;
    for bad in ["07700 900123", "+44 7700", "+44 77OO 9OO123", "call me"] {
        let out = env.lethe(&["request", "erase", "--phone", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--phone"), "{bad}: {err}");
        assert!(
            err.contains("expected international format"),
            "{bad}: {err}"
        );
        assert!(
            !err.contains("900123"),
            "{bad}: the raw value is echoed: {err}"
        );
    }
    let d = Daemon::start(&env, port).await;
    let body =
        json!({"kind": "erasure", "identities": {"phone": "07700 900123"}, "external_id": "f-1"});
    let (code, v) = d.webhook(&body.to_string()).await;
    assert_eq!(code, 422, "{v:#}");
    assert_eq!(v["error"]["field"], "identities.phone", "{v:#}");
    let reason = v["error"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("expected international format"), "{reason}");
    assert!(!reason.contains("900123"), "{reason}");
    d.stop().await;
    let n = env.json(&["list", "--json"]).await;
    assert_eq!(n.as_array().map(Vec::len), Some(0), "nothing written");
}

//! The template engine for connector definitions (minijinja), with the filters
//! processor APIs need: `lower`, `urlencode` (built in), `md5`, `sha256`, `base64`,
//! and the path filters `raw_path` and `checked_path`.
//!
//! Undefined values are errors, not empty strings: a typo in a definition must
//! fail loudly instead of calling `DELETE /members/` on the wrong path.
//!
//! A call's URL path is rendered by [`path_environment`]: every value printed
//! by `{{ }}` is percent-encoded as **one path segment** (`x/..` becomes
//! `x%2F..`), while the template's literal text stays as written. A value that
//! really is a path of several segments (OneDrive's `root:/{{ settings.path | raw_path }}`
//! addressing) must say so with `| raw_path`, which refuses a `.`/`..` segment,
//! an empty segment (`//`), a scheme, `?`, `#`, `\` or a control character, and
//! encodes each segment on its own. In a JSON body, a path (Dropbox's `path`)
//! goes through `| checked_path | tojson`: the same checks, no encoding.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use sha2::Sha256;
use std::fmt::Write as _;

fn md5_filter(s: String) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn sha256_filter(s: String) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn base64_filter(s: String) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Percent-encode `s` for use as one URL path segment: everything but the
/// RFC 3986 unreserved characters and the harmless `pchar`s `!$&'()*+,=:@` is
/// encoded — in particular `/`, `?`, `#`, `%`, `;`, `\`, spaces and non-ASCII.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-encode everything but `A-Za-z0-9-._~` (the `urlencode` filter in a path).
fn encode_strict(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decode `%XX` escapes (lossy), to see what a server would see.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a value may not be used as a path: `None` when it may.
///
/// Refused: empty, a `.` or `..` segment (also percent-encoded, `%2e%2e`), an
/// empty segment (`//`), a scheme (`https:`), `?`, `#`, `\`, control characters.
pub fn path_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("is empty");
    }
    if value.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    // Decode twice: a server that decodes once more must not see `..` either.
    let decoded = percent_decode(&percent_decode(value));
    if decoded.contains(['?', '#']) {
        return Some("contains `?` or `#`");
    }
    if decoded.contains('\\') {
        return Some("contains `\\`");
    }
    if decoded.contains("://") {
        return Some("contains a scheme (`…://`)");
    }
    let inner = decoded.strip_prefix('/').unwrap_or(&decoded);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    for seg in inner.split('/') {
        if seg.is_empty() {
            return Some("has an empty segment (`//`)");
        }
        if seg == "." || seg == ".." {
            return Some("has a `.` or `..` segment");
        }
    }
    None
}

/// Whether `value`, split on `/` (also after percent-decoding), has a `.` or
/// `..` segment: what would climb out of the subject's own folder.
pub fn has_dot_segment(value: &str) -> bool {
    let decoded = percent_decode(&percent_decode(value));
    decoded
        .split(['/', '\\'])
        .any(|seg| seg == "." || seg == "..")
}

fn path_error(value: &str) -> Result<(), Error> {
    match path_problem(value) {
        None => Ok(()),
        Some(why) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("a path value {why}; refused, the call is not sent (check the setting or identity it comes from)"),
        )),
    }
}

/// `| raw_path`: a value that is a path of several segments, checked, each
/// segment percent-encoded, the `/` between them kept.
fn raw_path_filter(value: String) -> Result<Value, Error> {
    path_error(&value)?;
    let encoded = value
        .split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/");
    Ok(Value::from_safe_string(encoded))
}

/// `| checked_path`: a path that does not go into a URL (a JSON body): checked, unchanged.
fn checked_path_filter(value: String) -> Result<String, Error> {
    path_error(&value)?;
    Ok(value)
}

/// `| urlencode` in a URL path: the value as one fully encoded segment.
fn urlencode_segment_filter(value: String) -> Value {
    Value::from_safe_string(encode_strict(&value))
}

/// A fresh environment with lethe's filters and strict undefined handling, for
/// headers, query values and JSON bodies (nothing is encoded: reqwest encodes
/// query values, `tojson` encodes JSON).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Output is URL paths, headers and JSON, never HTML: no auto-escaping.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("md5", md5_filter);
    env.add_filter("sha256", sha256_filter);
    env.add_filter("base64", base64_filter);
    env.add_filter("raw_path", checked_path_filter);
    env.add_filter("checked_path", checked_path_filter);
    env
}

/// The environment for a call's URL path: like [`environment`], but every
/// value printed by `{{ }}` is percent-encoded as one path segment unless a
/// filter marked it safe (`raw_path`, `urlencode`).
pub fn path_environment() -> Environment<'static> {
    let mut env = environment();
    env.add_filter("raw_path", raw_path_filter);
    env.add_filter("urlencode", urlencode_segment_filter);
    env.set_formatter(|out, _state, value| {
        if value.is_safe() {
            write!(out, "{value}").map_err(Error::from)
        } else if value.is_none() {
            Err(Error::new(
                ErrorKind::UndefinedError,
                "a path value is none (missing)",
            ))
        } else {
            write!(out, "{}", encode_segment(&value.to_string())).map_err(Error::from)
        }
    });
    env
}
/// The variables `source` (a template, or an expression when `expression`)
/// reads from its context, as dotted paths (`subject.email`, `item`): what
/// it declares itself and the environment's globals (`range`…) left out.
/// Empty if it does not compile (that is reported elsewhere).
pub fn variables(
    env: &Environment<'static>,
    source: &str,
    expression: bool,
) -> std::collections::BTreeSet<String> {
    let found = if expression {
        env.compile_expression(source)
            .map(|e| e.undeclared_variables(true))
    } else {
        env.template_from_str(source)
            .map(|t| t.undeclared_variables(true))
    };
    let globals: std::collections::BTreeSet<&str> = env.globals().map(|(k, _)| k).collect();
    found
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !globals.contains(v.split('.').next().unwrap_or(v)))
        .collect()
}

/// The variables of `source` that `ctx` does not define: for an error that
/// names them (`subject.emial`) instead of minijinja's bare "undefined value".
pub fn undefined_in(
    env: &Environment<'static>,
    source: &str,
    expression: bool,
    ctx: &serde_json::Value,
) -> Vec<String> {
    variables(env, source, expression)
        .into_iter()
        .filter(|path| {
            let mut at = ctx;
            for seg in path.split('.') {
                match at {
                    serde_json::Value::Object(m) => match m.get(seg) {
                        Some(v) => at = v,
                        None => return true,
                    },
                    // A lookup into a non-object: not a plain missing name.
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Describe a render error: for an undefined value, which variables are
/// undefined (`` `subject.emial` is undefined``); otherwise minijinja's message.
pub fn describe_error(
    env: &Environment<'static>,
    source: &str,
    expression: bool,
    ctx: &serde_json::Value,
    e: &Error,
) -> String {
    if e.kind() == ErrorKind::UndefinedError {
        let missing = undefined_in(env, source, expression, ctx);
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            return format!(
                "{} {} undefined (an undefined value is an error, never an empty string)",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            );
        }
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn mailchimp_subscriber_hash_is_md5_of_lower_cased_email() {
        let env = environment();
        let out = env
            .render_str(
                "{{ email | lower | md5 }}",
                context! { email => "Urist.McVankab@FreddieMac.com" },
            )
            .unwrap();
        // Computed independently: python3 -c "import hashlib; print(hashlib.md5(b'urist.mcvankab@freddiemac.com').hexdigest())"
        assert_eq!(out, "05b9d43160b5c68a327efe2a45c8b90c");
    }

    #[test]
    fn urlencode_and_sha256_filters_work() {
        let env = environment();
        assert_eq!(
            env.render_str("{{ q | urlencode }}", context! { q => "a+b@c.com" })
                .unwrap(),
            "a%2Bb%40c.com"
        );
        assert_eq!(
            env.render_str("{{ q | sha256 }}", context! { q => "abc" })
                .unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_undefined_value_is_an_error_not_an_empty_string() {
        let env = environment();
        assert!(env
            .render_str(
                "/members/{{ subject.emial }}",
                context! { subject => context!{ email => "x" } }
            )
            .is_err());
    }

    #[test]
    fn an_undefined_value_error_names_the_variable() {
        let env = environment();
        let src = "{{ subject.emial }}/{{ item.id }}{% for x in range(2) %}{{ x }}{% endfor %}";
        let ctx = serde_json::json!({"subject": {"email": "x"}, "item": {"id": 1}});
        let e = env.render_str(src, &ctx).unwrap_err();
        let m = describe_error(&env, src, false, &ctx, &e);
        assert!(m.contains("`subject.emial` is undefined"), "{m}");
        assert_eq!(undefined_in(&env, src, false, &ctx), vec!["subject.emial"]);
    }

    #[test]
    fn a_value_in_a_url_path_is_one_encoded_segment_and_the_literal_text_stays() {
        let env = path_environment();
        let ctx = context! { id => "x/..", e => "a+b@x.com", p => "customers/C-1.2" };
        assert_eq!(
            env.render_str("/c/{{ id }}/m/{{ e }}", &ctx).unwrap(),
            "/c/x%2F../m/a+b@x.com"
        );
        assert_eq!(
            env.render_str("/m/{{ e | urlencode }}", &ctx).unwrap(),
            "/m/a%2Bb%40x.com",
            "urlencode is not encoded twice"
        );
        assert_eq!(
            env.render_str("/root:/{{ p | raw_path }}", &ctx).unwrap(),
            "/root:/customers/C-1.2"
        );
    }

    #[test]
    fn a_raw_or_checked_path_with_dot_segments_a_scheme_or_empty_segments_is_refused() {
        for env in [environment(), path_environment()] {
            for bad in [
                "customers/x/..",
                "customers/%2e%2e",
                "customers/%252e%252e",
                "../etc",
                "a//b",
                "https://evil.example/x",
                "a?b",
                "a#b",
                "a\\..\\b",
            ] {
                for filter in ["raw_path", "checked_path"] {
                    let r =
                        env.render_str(&format!("{{{{ p | {filter} }}}}"), context! { p => bad });
                    assert!(r.is_err(), "{filter} let {bad:?} through: {r:?}");
                }
            }
        }
        assert_eq!(
            environment()
                .render_str(
                    "{{ p | checked_path | tojson }}",
                    context! { p => "/customers/C-1.2" }
                )
                .unwrap(),
            "\"/customers/C-1.2\""
        );
    }
}

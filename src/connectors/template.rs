//! The template engine for connector definitions (minijinja), with the filters
//! processor APIs need: `lower`, `urlencode` (built in), `md5`, `sha256`, `base64`.
//!
//! Undefined values are errors, not empty strings: a typo in a definition must
//! fail loudly instead of calling `DELETE /members/` on the wrong path.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use minijinja::{Environment, UndefinedBehavior};
use sha2::Sha256;

fn md5_filter(s: String) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn sha256_filter(s: String) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn base64_filter(s: String) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A fresh environment with lethe's filters and strict undefined handling.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Output is URL paths, headers and JSON, never HTML: no auto-escaping.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("md5", md5_filter);
    env.add_filter("sha256", sha256_filter);
    env.add_filter("base64", base64_filter);
    env
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
}

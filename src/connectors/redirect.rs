//! Redirects: not followed, unless a connector opts in to its own host.
//!
//! Why: `reqwest` follows up to 10 redirects by default, re-sending a 307/308's
//! body — which carries the subject's identities — to whatever host the
//! `Location` names, and bypassing the same-origin rule of `next_page`
//! pagination. So every client lethe builds uses [`policy`]`(Never)`, and a
//! 3xx from a processor is a permanent error ([`redirect_error`]) naming the
//! processor, the status and only the *host* of the `Location` (its path and
//! query may carry identities). A connector whose API legitimately redirects
//! within itself says so: `[limits] follow_redirects = "same_host"` follows a
//! redirect only when scheme, host and port equal the original request's.

use super::{ConnectorError, ErrorClass};
use serde::Deserialize;

/// `[limits] follow_redirects` in a connector definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowRedirects {
    /// Never follow: a 3xx is a permanent error (the default).
    #[default]
    Never,
    /// Follow only to the same scheme, host and port (at most 5 hops).
    SameHost,
}

/// Most hops followed under [`FollowRedirects::SameHost`].
pub const MAX_HOPS: usize = 5;

/// The `reqwest` redirect policy for `follow`.
pub fn policy(follow: FollowRedirects) -> reqwest::redirect::Policy {
    match follow {
        FollowRedirects::Never => reqwest::redirect::Policy::none(),
        FollowRedirects::SameHost => reqwest::redirect::Policy::custom(|attempt| {
            let Some(first) = attempt.previous().first() else {
                return attempt.stop();
            };
            let same = first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default();
            if same && attempt.previous().len() <= MAX_HOPS {
                attempt.follow()
            } else {
                // Stop: the 3xx itself comes back and is refused by `redirect_error`.
                attempt.stop()
            }
        }),
    }
}

/// A client for processors: no redirects (or same-host ones), lethe's user agent.
pub fn client(follow: FollowRedirects) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("lethe/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .redirect(policy(follow))
        .build()
}

/// Whether `status` is a redirect (3xx other than 304 Not Modified).
pub fn is_redirect(status: u16) -> bool {
    (300..400).contains(&status) && status != 304
}

/// The host (and port) a `Location` header points to, relative to `base`;
/// never its path or query. `?` when absent or unreadable.
pub fn location_host(base: &str, headers: &reqwest::header::HeaderMap) -> String {
    let loc = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    let Some(loc) = loc else {
        return "no Location".into();
    };
    url::Url::parse(base)
        .and_then(|b| b.join(loc))
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_else(|| "?".into())
}

/// The error for a redirect answer from `processor`, or `None` when `status` is not one.
pub fn redirect_error(
    processor: &str,
    status: u16,
    base: &str,
    headers: &reqwest::header::HeaderMap,
) -> Option<ConnectorError> {
    if !is_redirect(status) {
        return None;
    }
    Some(ConnectorError {
        class: ErrorClass::Permanent,
        message: format!(
            "processor `{processor}` answered HTTP {status} redirecting to {}; redirects are not followed (a redirect re-sends the subject elsewhere): fix the processor's base_url, or set [limits] follow_redirects = \"same_host\" in its connector if the API redirects within its own host",
            location_host(base, headers)
        ),
        status: Some(status),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_error_names_the_location_host_but_not_its_path() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LOCATION,
            "https://evil.example:8443/erase?email=jane@example.com"
                .parse()
                .unwrap(),
        );
        let e = redirect_error("crm", 307, "https://api.example", &h).unwrap();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(e.message.contains("evil.example:8443"), "{}", e.message);
        assert!(e.message.contains("HTTP 307"), "{}", e.message);
        assert!(!e.message.contains("jane"), "{}", e.message);
        assert!(redirect_error("crm", 304, "https://api.example", &h).is_none());
        assert!(redirect_error("crm", 200, "https://api.example", &h).is_none());
    }
}

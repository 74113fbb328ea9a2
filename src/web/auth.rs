//! Who may use the dashboard: the password (an Argon2 hash in `lethe.toml`)
//! or the API token logs in; a login is a signed cookie; every form carries a
//! CSRF token bound to that cookie.
//!
//! Sessions keep no server state: the cookie is `EXPIRY.SID.MAC`, the MAC an
//! HMAC-SHA256 over expiry and session id under a key held only by the daemon
//! (`[dashboard] session_key_env`, or random per start). The cookie is
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it) and `Secure` when configured. The CSRF token of a session is
//! `HMAC(key, "csrf" | SID)`: a page served to the logged-in user carries it
//! in each form; a forged or missing one is refused before anything is read
//! from the form. The login form has the same protection against login CSRF,
//! bound to a short-lived `lethe_login` nonce cookie. Logging out forgets the
//! session id in this process (a stolen cookie still dies at its expiry).
//! Every comparison of a secret is constant-time (`subtle`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "lethe_session";
/// The login form's nonce cookie.
pub const LOGIN_COOKIE: &str = "lethe_login";

/// Hash a password for `[dashboard] password_hash` (Argon2id, a random salt, the crate's default cost).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The dashboard's credentials and session key.
pub struct Auth {
    password_hash: Option<String>,
    api_token: secrecy::SecretString,
    key: SecretSlice<u8>,
    ttl_secs: i64,
    secure: bool,
    revoked: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(***)")
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id (random, 128 bits, hex).
    pub sid: String,
    /// The CSRF token its forms carry.
    pub csrf: String,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Auth {
    /// Credentials from config and the intake's API token; the key signs sessions.
    pub fn new(
        password_hash: Option<String>,
        api_token: secrecy::SecretString,
        key: Option<Vec<u8>>,
        ttl_secs: i64,
        secure: bool,
    ) -> Auth {
        let key = key.unwrap_or_else(|| {
            let mut b = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            b
        });
        Auth {
            password_hash,
            api_token,
            key: SecretSlice::from(key),
            ttl_secs,
            secure,
            revoked: Mutex::new(HashSet::new()),
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        // HMAC takes keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for p in parts {
            m.update(p.as_bytes());
            m.update(b"|");
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// Whether `given` is the dashboard password or the API token.
    pub fn verify(&self, given: &str) -> bool {
        let token_ok: bool = given
            .as_bytes()
            .ct_eq(self.api_token.expose_secret().as_bytes())
            .into();
        let password_ok = self.password_hash.as_deref().is_some_and(|h| {
            PasswordHash::new(h)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(given.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        });
        !given.is_empty() && (token_ok || password_ok)
    }

    /// A new session: the `Set-Cookie` value.
    pub fn login_cookie(&self, now_secs: i64) -> String {
        let exp = (now_secs + self.ttl_secs).to_string();
        let sid = random_hex(16);
        let mac = self.mac(&["session", &exp, &sid]);
        self.cookie(SESSION_COOKIE, &format!("{exp}.{sid}.{mac}"), self.ttl_secs)
    }

    /// The `Set-Cookie` value that ends a session in the browser.
    pub fn logout_cookie(&self) -> String {
        self.cookie(SESSION_COOKIE, "", 0)
    }

    /// Forget a session id in this process.
    pub fn revoke(&self, s: &Session) {
        if let Ok(mut r) = self.revoked.lock() {
            r.insert(s.sid.clone());
        }
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        format!(
            "{name}={value}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The session of a request, if its cookie is valid, unexpired and not logged out.
    pub fn session(&self, headers: &HeaderMap, now_secs: i64) -> Option<Session> {
        let value = cookie(headers, SESSION_COOKIE)?;
        let mut it = value.splitn(3, '.');
        let (exp, sid, mac) = (it.next()?, it.next()?, it.next()?);
        let want = self.mac(&["session", exp, sid]);
        if !bool::from(want.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        if exp.parse::<i64>().ok()? <= now_secs {
            return None;
        }
        if self.revoked.lock().ok()?.contains(sid) {
            return None;
        }
        Some(Session {
            sid: sid.to_string(),
            csrf: self.mac(&["csrf", sid]),
        })
    }

    /// Whether a form's token is this session's.
    pub fn csrf_ok(&self, s: &Session, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(s.csrf.as_bytes())))
    }

    /// The login form's nonce cookie and token: the nonce already in the
    /// browser, or a new one (then `Some(Set-Cookie)`).
    pub fn login_form(&self, headers: &HeaderMap) -> (String, Option<String>) {
        match cookie(headers, LOGIN_COOKIE).filter(|n| n.len() == 32) {
            Some(n) => (self.mac(&["login", &n]), None),
            None => {
                let n = random_hex(16);
                (
                    self.mac(&["login", &n]),
                    Some(self.cookie(LOGIN_COOKIE, &n, 3600)),
                )
            }
        }
    }

    /// Whether a login form's token matches the browser's nonce cookie.
    pub fn login_csrf_ok(&self, headers: &HeaderMap, given: Option<&str>) -> bool {
        let Some(n) = cookie(headers, LOGIN_COOKIE) else {
            return false;
        };
        let want = self.mac(&["login", &n]);
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(want.as_bytes())))
    }
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            Some(hash_password("correct horse").unwrap()),
            secrecy::SecretString::from("tok"),
            None,
            3600,
            false,
        )
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap().to_string();
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, pair.parse().unwrap());
        h
    }

    #[test]
    fn the_password_or_the_token_logs_in_and_nothing_else_does() {
        let a = auth();
        assert!(a.verify("correct horse"));
        assert!(a.verify("tok"));
        assert!(!a.verify("correct horsE"));
        assert!(!a.verify(""));
    }

    #[test]
    fn a_session_cookie_is_refused_when_tampered_expired_or_logged_out() {
        let a = auth();
        let c = a.login_cookie(1000);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        let s = a.session(&with_cookie(&c), 1000).expect("valid");
        assert!(a.csrf_ok(&s, Some(&s.csrf)));
        assert!(!a.csrf_ok(&s, Some("00")));
        assert!(!a.csrf_ok(&s, None));
        assert!(a.session(&with_cookie(&c), 1000 + 3600).is_none());
        let tampered = c.replacen("lethe_session=", "lethe_session=9", 1);
        assert!(a.session(&with_cookie(&tampered), 1000).is_none());
        a.revoke(&s);
        assert!(a.session(&with_cookie(&c), 1000).is_none());
    }

    #[test]
    fn the_cookie_is_secure_when_configured() {
        let a = Auth::new(None, secrecy::SecretString::from("tok"), None, 60, true);
        assert!(a.login_cookie(0).ends_with("; Secure"));
        assert!(!a.verify("anything but the token"));
    }
}

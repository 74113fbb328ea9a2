//! Where status callbacks may go: https to public addresses, or an origin the
//! operator listed in `[intake] callback_allow`.
//!
//! Why: a callback URL comes from the caller of the intake. Without this check
//! anyone holding the webhook secret (or any OpenDSR controller) could make the
//! daemon POST to `http://169.254.169.254/` (cloud metadata), to `localhost`
//! admin ports or to the private network — server-side request forgery. The
//! URL is checked twice: at intake (a refused URL is a 422 naming the field,
//! and nothing is written) and again at delivery, *after* DNS resolution, so a
//! public name that resolves (or later re-resolves) to a private address is
//! refused too; the client's resolver enforces the same rule at connect time.
//!
//! Refused unless allow-listed: non-https schemes; `localhost` and
//! `*.localhost`; loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16,
//! fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
//! (100.64/10), unspecified, broadcast and multicast addresses (IPv4-mapped
//! IPv6 addresses count as their IPv4 address).
//!
//! An allow-list entry is an origin `scheme://host[:port]`: a URL matches when
//! scheme and host are equal and the port is equal (the scheme's default when
//! omitted) — or any port with `:*`. No paths, no wildcards in hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// One `callback_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    /// `None`: any port (`:*`).
    port: Option<u16>,
}

impl Origin {
    /// Parse `scheme://host[:port|:*]` (a trailing `/` is accepted).
    pub fn parse(entry: &str) -> Result<Origin, String> {
        let e = entry.trim().trim_end_matches('/');
        let (e, any_port) = match e.strip_suffix(":*") {
            Some(rest) => (rest, true),
            None => (e, false),
        };
        let u = url::Url::parse(e).map_err(|err| {
            format!("`{entry}` is not an origin like https://hooks.example.com[:port] ({err})")
        })?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!(
                "`{entry}`: only http and https origins can be listed"
            ));
        }
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("`{entry}` names no host"))?;
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
            return Err(format!(
                "`{entry}`: an entry is an origin (scheme://host[:port]), without path or query"
            ));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!("`{entry}`: an entry carries no user or password"));
        }
        if any_port && u.port().is_some() {
            return Err(format!("`{entry}`: give a port or `:*`, not both"));
        }
        Ok(Origin {
            scheme: u.scheme().to_string(),
            host: host.to_string(),
            port: if any_port {
                None
            } else {
                u.port_or_known_default()
            },
        })
    }

    fn matches(&self, u: &url::Url) -> bool {
        self.scheme == u.scheme()
            && u.host_str() == Some(self.host.as_str())
            && self
                .port
                .is_none_or(|p| u.port_or_known_default() == Some(p))
    }
}

/// The parsed `[intake] callback_allow`.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<Origin>);

impl AllowList {
    /// Parse every entry; the error names the first bad one.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        entries
            .iter()
            .map(|e| Origin::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// Whether `u` is on a listed origin.
    pub fn allows(&self, u: &url::Url) -> bool {
        self.0.iter().any(|o| o.matches(u))
    }

    fn allows_host(&self, host: &str) -> bool {
        self.0.iter().any(|o| o.host.eq_ignore_ascii_case(host))
    }
}

/// Why `ip` is no place for a callback, or `None` when it is a public unicast address.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() {
        Some("broadcast or multicast")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The intake check: `Ok` or why the URL is refused (naming no part of it but its kind).
pub fn check_url(u: &str, allow: &AllowList) -> Result<url::Url, String> {
    let p = url::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if (p.scheme() != "http" && p.scheme() != "https") || p.host().is_none() {
        return Err("must be an https URL".into());
    }
    if allow.allows(&p) {
        return Ok(p);
    }
    if p.scheme() != "https" {
        return Err(
            "must be https (plain http only to an origin listed in [intake] callback_allow)".into(),
        );
    }
    if !p.username().is_empty() || p.password().is_some() {
        return Err("must not carry a user or password".into());
    }
    match p.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err(refused("names localhost"));
            }
        }
        Some(url::Host::Ipv4(ip)) => {
            if let Some(kind) = forbidden_ip(IpAddr::V4(ip)) {
                return Err(refused(&format!("is a {kind} address")));
            }
        }
        Some(url::Host::Ipv6(ip)) => {
            if let Some(kind) = forbidden_ip(IpAddr::V6(ip)) {
                return Err(refused(&format!("is a {kind} address")));
            }
        }
        None => return Err("must be an https URL".into()),
    }
    Ok(p)
}

fn refused(what: &str) -> String {
    format!(
        "the host {what}; callbacks go to public https addresses only (list the origin in [intake] callback_allow to allow it)"
    )
}

/// The delivery check, after DNS resolution: `Err` with a reason when the URL
/// is refused outright (the delivery is then dead), `Ok(Err)` when the name
/// cannot be resolved now (try again later).
pub async fn check_resolved(u: &str, allow: &AllowList) -> Result<Result<(), String>, String> {
    let p = check_url(u, allow)?;
    if allow.allows(&p) {
        return Ok(Ok(()));
    }
    let port = p.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match p.host() {
        Some(url::Host::Domain(d)) => match tokio::net::lookup_host((d, port)).await {
            Ok(a) => a.collect(),
            Err(e) => return Ok(Err(format!("cannot resolve the callback host: {e}"))),
        },
        // Literal addresses were checked by `check_url`.
        _ => return Ok(Ok(())),
    };
    for a in &addrs {
        if let Some(kind) = forbidden_ip(a.ip()) {
            return Err(format!(
                "the callback host resolves to {} ({kind}); callbacks go to public addresses only (list the origin in [intake] callback_allow to allow it)",
                a.ip()
            ));
        }
    }
    if addrs.is_empty() {
        return Ok(Err("the callback host resolves to no address".into()));
    }
    Ok(Ok(()))
}

/// A DNS resolver for the callback client that refuses names resolving to a
/// forbidden address (unless the host is allow-listed): the check holds at
/// connect time even if the name re-resolves after [`check_resolved`].
#[derive(Debug, Clone)]
pub struct PublicOnly(pub Arc<AllowList>);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow.allows_host(&host) {
                if let Some(kind) = addrs.iter().find_map(|a| forbidden_ip(a.ip())) {
                    return Err(format!("callback host resolves to a {kind} address").into());
                }
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(e: &[&str]) -> AllowList {
        AllowList::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn internal_and_plain_http_targets_are_refused_and_public_https_is_not() {
        let none = AllowList::default();
        for bad in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/x",
            "https://172.16.3.4/",
            "https://192.168.1.1/",
            "https://127.0.0.1:9000/",
            "https://2130706433/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://0.0.0.0/",
            "https://localhost/",
            "https://api.localhost./",
            "http://example.com/",
            "ftp://example.com/",
        ] {
            assert!(check_url(bad, &none).is_err(), "{bad} accepted");
        }
        assert!(check_url("https://hooks.example.com/cb", &none).is_ok());
        assert!(check_url("https://93.184.216.34/cb", &none).is_ok());
    }

    #[test]
    fn an_allow_list_entry_admits_its_origin_only() {
        let a = allow(&["http://127.0.0.1:9000", "https://hooks.internal.example"]);
        assert!(check_url("http://127.0.0.1:9000/cb", &a).is_ok());
        assert!(check_url("http://127.0.0.1:9001/cb", &a).is_err());
        assert!(check_url("https://127.0.0.1:9000/cb", &a).is_err());
        assert!(check_url("https://hooks.internal.example/x", &a).is_ok());
        assert!(check_url("http://hooks.internal.example/x", &a).is_err());
        let any = allow(&["http://127.0.0.1:*"]);
        assert!(check_url("http://127.0.0.1:1234/cb", &any).is_ok());
        assert!(Origin::parse("https://h.example/path").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}

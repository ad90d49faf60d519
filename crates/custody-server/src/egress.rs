//! Requests the server makes to addresses that site admins give it (alert webhooks), kept away
//! from the server's own network (DESIGN.md §4 invariant 10).
//!
//! An address is refused when it names, or resolves to, a loopback, link-local, private,
//! shared (CGNAT), multicast, documentation or otherwise reserved address, in any spelling: the
//! URL parser turns decimal (`http://2130706433/`), hexadecimal (`0x7f.0.0.1`), octal and short
//! (`127.1`) IPv4 forms into the address they mean before it is checked, and an IPv6 address
//! that carries an IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address inside. Host
//! names are checked as they are resolved, by the client's own resolver, so the address
//! checked is the address connected to (no second lookup for DNS rebinding to change). An
//! operator may allow named hosts (`[alerts] allow_hosts`), for a SIEM on the private network.
//! Redirects are never followed: a 3xx is a failed delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server may connect to `ip` on an admin's say-so.
pub fn ip_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4),
        IpAddr::V6(v6) => v6_allowed(v6),
    }
}

fn v4_allowed(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240;
    !reserved
}

fn v6_allowed(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_allowed(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address the packets go to.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_allowed(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_allowed(embedded_v4(s[1], s[2]));
    }
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // IPv4-compatible (::/96, deprecated) and documentation (2001:db8::/32).
        || s[..6] == [0; 6]
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // Site-local (fec0::/10, deprecated but still routed by some stacks).
        || (s[0] & 0xffc0) == 0xfec0;
    !reserved
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The hosts an operator allows though they are private, as written in `allow_hosts`.
#[derive(Debug, Clone, Default)]
pub struct Allowed(Arc<[String]>);

impl Allowed {
    /// Allows exactly these hosts (names, or addresses as the URL writes them: `10.0.0.5`,
    /// `[fd00::5]`).
    pub fn hosts(hosts: impl IntoIterator<Item = String>) -> Self {
        Self(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
    }

    pub(crate) fn contains(&self, host: &str) -> bool {
        self.0.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// How a delivery refused by the guard begins its error, so the sender can tell it from a
/// receiver that failed (and put it on the record).
pub const REFUSED: &str = "refused by the egress guard: ";

/// Why an address was refused; says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an absolute `https://` URL (plain `http://` only to an allowed host).
    #[error("{0}")]
    Url(String),
    /// It names, or resolves to, an address on the server's own networks.
    #[error(
        "{0} is a loopback, link-local, private or reserved address: alerts are not sent there \
         unless the operator allows the host"
    )]
    Private(String),
}

/// Checks an admin's URL before it is stored, and again before every request: the scheme, and
/// the host when it is an address. Host names are checked as they are resolved.
pub fn check_url(text: &str, allowed: &Allowed) -> Result<reqwest::Url, Refused> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| Refused::Url(format!("not a URL ({e}): give an https:// address")))?;
    let host = url.host_str().ok_or_else(|| Refused::Url("the URL has no host".into()))?;
    let allowed_host = allowed.contains(host);
    match url.scheme() {
        "https" => {}
        "http" if allowed_host => {}
        _ => return Err(Refused::Url("give an https:// address".into())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Url(
            "put no credentials in the URL; the signature proves the sender".into(),
        ));
    }
    // The parser wrote any IPv4 spelling as a dotted quad, and IPv6 in brackets.
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    if let Some(ip) = ip
        && !allowed_host
        && !ip_allowed(ip)
    {
        return Err(Refused::Private(host.to_owned()));
    }
    Ok(url)
}

/// Resolves host names for the guarded client, refusing a name any of whose addresses is not
/// allowed (unless the operator allows the name).
#[derive(Debug, Clone)]
struct GuardedResolver {
    allowed: Allowed,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.contains(name.as_str());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allowed && (addrs.is_empty() || addrs.iter().any(|a| !ip_allowed(a.ip()))) {
                return Err(
                    Box::new(Refused::Private(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for admins' addresses: the guarded resolver, no redirects, TLS 1.3, and a
/// timeout.
#[derive(Debug, Clone)]
pub struct Egress {
    client: reqwest::Client,
    allowed: Allowed,
}

impl Egress {
    /// A client that allows the operator's `allowed` hosts besides public addresses, trusting
    /// `extra_roots` (PEM) as well as the system's roots (for tests and private CAs).
    pub fn new(allowed: Allowed, extra_roots: Option<&str>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .dns_resolver(Arc::new(GuardedResolver { allowed: allowed.clone() }))
            .tls_version_min(reqwest::tls::Version::TLS_1_3)
            .user_agent(concat!("Custody/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| e.to_string())?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self { client: builder.build().map_err(|e| e.to_string())?, allowed })
    }

    /// The hosts the operator allows.
    pub fn allowed(&self) -> &Allowed {
        &self.allowed
    }

    /// Posts `body` (JSON) to `url` with `headers`, checking the URL first. Any 2xx is
    /// delivery; anything else, a redirect included, is a failure that says what came back.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<(), String> {
        let url = check_url(url, &self.allowed).map_err(|e| format!("{REFUSED}{e}"))?;
        let mut request =
            self.client.post(url).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        answered(request).await
    }

    /// Posts a form to `url` as `user` with `password` (HTTP basic), checking the URL first,
    /// as an SMS provider's API wants.
    pub async fn post_form(
        &self,
        url: &str,
        (user, password): (&str, &str),
        form: &[(&str, &str)],
    ) -> Result<(), String> {
        let url = check_url(url, &self.allowed).map_err(|e| format!("{REFUSED}{e}"))?;
        answered(self.client.post(url).basic_auth(user, Some(password)).form(form)).await
    }
}

/// Sends a request: any 2xx is delivery; anything else, a redirect included, is a failure
/// that says what came back.
async fn answered(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!("answered {status}: redirects are not followed"))
    } else {
        Err(format!("answered {status}"))
    }
}

/// A request's failure in words, with its cause (a refused address shows as such).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut refused = false;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        refused |= cause.downcast_ref::<Refused>().is_some();
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if refused { format!("{REFUSED}{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> bool {
        matches!(check_url(url, &Allowed::default()), Err(Refused::Private(_)))
    }

    #[test]
    fn loopback_link_local_private_and_reserved_addresses_are_refused_in_every_spelling() {
        for url in [
            "https://127.0.0.1/hook",
            "https://127.1/hook",
            "https://2130706433/hook",
            "https://0x7f000001/hook",
            "https://0x7f.0.0.1/hook",
            "https://0177.0.0.1/hook",
            "https://0/hook",
            "https://0.0.0.0/hook",
            "https://10.1.2.3/hook",
            "https://167772161/hook",
            "https://172.16.0.1/hook",
            "https://172.31.255.255/hook",
            "https://192.168.1.1/hook",
            "https://0xc0a80101/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/hook",
            "https://198.18.0.1/hook",
            "https://224.0.0.1/hook",
            "https://255.255.255.255/hook",
            "https://[::1]/hook",
            "https://[::]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://[::ffff:7f00:1]/hook",
            "https://[64:ff9b::a00:1]/hook",
            "https://[2002:c0a8:101::1]/hook",
            "https://[fe80::1]/hook",
            "https://[fc00::1]/hook",
            "https://[fd12:3456::1]/hook",
            "https://[fec0::1]/hook",
            "https://[ff02::1]/hook",
        ] {
            assert!(refused(url), "{url} must be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_and_the_operator_may_allow_a_host() {
        for url in [
            "https://93.184.215.14/hook",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook",
            "https://siem.example.org/hook",
            "https://172.32.0.1/hook",
        ] {
            assert!(check_url(url, &Allowed::default()).is_ok(), "{url}");
        }
        let allowed = Allowed::hosts(["10.0.0.5".to_owned(), "SIEM.corp".to_owned()]);
        assert!(check_url("https://10.0.0.5/hook", &allowed).is_ok());
        assert!(check_url("http://siem.corp/hook", &allowed).is_ok(), "plain http, allowed host");
        assert!(check_url("https://10.0.0.6/hook", &allowed).is_err());
        assert!(matches!(
            check_url("http://siem.example.org/hook", &allowed),
            Err(Refused::Url(_))
        ));
        for bad in ["ftp://siem.example.org/", "not a url", "https://user:pw@siem.example.org/"] {
            assert!(matches!(check_url(bad, &allowed), Err(Refused::Url(_))), "{bad}");
        }
    }
}

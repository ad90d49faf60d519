//! Alerts to a SIEM: one RFC 5424 message per notification, over TLS 1.3 with RFC 5425 octet
//! counting (`<length> <message>`), carrying a CEF event (the Common Event Format), which
//! SIEMs parse without a custom rule.
//!
//! ```text
//! <PRI>1 2026-11-22T03:00:00.000Z lockers.example.org custody - alert - CEF:0|Custody|Custody|0.1.0|pry|Pry|10|…
//! ```
//!
//! PRI is facility 13 (log audit) with the alert's severity: critical 2, high 3, medium 4,
//! low 5. The receiver's certificate is checked against the system's roots and the operator's
//! CA file (`[alerts] ca_file`); its host goes through the same egress guard as webhooks.

use std::sync::Arc;
use std::time::Duration;

use custody_app::alerts::Alert;
use custody_core::Timestamp;
use custody_core::alert::Severity;
use tokio::io::AsyncWriteExt as _;

use crate::egress::{Allowed, Refused, ip_allowed};

/// How long one delivery may take, connection and handshake included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Facility 13: log audit.
const FACILITY: u8 = 13;

/// CEF's severity (0 to 10) for an alert's.
const fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Syslog's severity for an alert's.
const fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Low => 5,
        Severity::Medium => 4,
        Severity::High => 3,
        Severity::Critical => 2,
    }
}

/// A CEF header field: backslash and pipe escaped; line breaks become spaces.
pub fn cef_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A CEF extension value: backslash and equals escaped, line breaks written `\n` and `\r`.
pub fn cef_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The CEF event for `alert` and `event` (`raised`).
pub fn cef(alert: &Alert, event: &str, public_url: &str) -> String {
    let kind = alert.kind.as_str();
    let name = format!("Custody alert {event}: {kind}");
    let mut ext = vec![
        ("rt", alert.raised_at.as_millis().to_string()),
        ("externalId", alert.id.to_string()),
        ("act", event.to_owned()),
        ("cs1Label", "site".to_owned()),
        ("cs1", alert.site.to_string()),
        ("cs3Label", "state".to_owned()),
        ("cs3", alert.state.as_str().to_owned()),
        ("cnt", alert.readings.to_string()),
        ("request", format!("{}/portal/alerts/{}", public_url.trim_end_matches('/'), alert.id)),
    ];
    if let Some(bank) = &alert.bank {
        ext.extend([("cs2Label", "bank".to_owned()), ("cs2", bank.to_string())]);
    }
    if let Some(n) = alert.compartment {
        ext.extend([("cn1Label", "compartment".to_owned()), ("cn1", n.to_string())]);
    }
    let ext: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", cef_value(v))).collect();
    format!(
        "CEF:0|Custody|Custody|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(kind),
        cef_header(&name),
        cef_severity(alert.severity),
        ext.join(" ")
    )
}

/// The RFC 5424 message for `alert`, from `host` at `at`.
pub fn message(alert: &Alert, event: &str, public_url: &str, at: Timestamp) -> String {
    let host = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
        .unwrap_or_else(|| "-".to_owned());
    let pri = FACILITY * 8 + syslog_severity(alert.severity);
    format!(
        "<{pri}>1 {} {host} custody - alert - {}",
        crate::views::rfc3339(at),
        cef(alert, event, public_url)
    )
}

/// Where syslog goes, and whom it trusts.
#[derive(Clone)]
pub struct SyslogSender {
    tls: tokio_rustls::TlsConnector,
    allowed: Allowed,
}

impl std::fmt::Debug for SyslogSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSender").finish_non_exhaustive()
    }
}

impl SyslogSender {
    /// A sender trusting the CA certificates in `ca_pem` (the system's bundle and the
    /// operator's CA file), for the operator's `allowed` private hosts besides public ones.
    pub fn new(ca_pem: &str, allowed: Allowed) -> Result<Self, String> {
        let trust =
            custody_crypto::tls::ServerTrust { ca_pem: ca_pem.to_owned(), pins: Vec::new() };
        let config = custody_crypto::tls::client_config(
            &trust,
            None,
            &[],
            Arc::new(custody_crypto::SystemClock),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(config)), allowed })
    }

    /// Sends one message to `target` (`host:port`), framed by its length.
    pub async fn send(&self, target: &str, message: &str) -> Result<(), String> {
        let (host, port) =
            split_target(target).map_err(|e| format!("{}{e}", crate::egress::REFUSED))?;
        let deliver = async {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            let allowed = self.allowed.contains(host);
            if !allowed && (addrs.is_empty() || addrs.iter().any(|a| !ip_allowed(a.ip()))) {
                return Err(format!(
                    "{}{}",
                    crate::egress::REFUSED,
                    Refused::Private(host.to_owned())
                ));
            }
            let tcp = tokio::net::TcpStream::connect(addrs.as_slice())
                .await
                .map_err(|e| format!("cannot connect to {target}: {e}"))?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host}: {e}"))?;
            let mut stream =
                self.tls.connect(name, tcp).await.map_err(|e| format!("TLS with {target}: {e}"))?;
            let frame = format!("{} {message}", message.len());
            stream.write_all(frame.as_bytes()).await.map_err(|e| e.to_string())?;
            stream.shutdown().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(TIMEOUT, deliver).await.map_err(|_| format!("{target}: timed out"))?
    }
}

/// `host:port` of a syslog receiver, its host checked as the egress guard checks a URL's.
pub fn split_target(target: &str) -> Result<(&str, u16), Refused> {
    let (host, port) = target
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p > 0)?)))
        .filter(|(h, _)| !h.is_empty() && !h.contains(['/', '@', ' ']))
        .ok_or_else(|| {
            Refused::Url("give the receiver as host:port (6514 is syslog over TLS)".into())
        })?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Checks a syslog receiver's `host:port` before it is stored: an address must not be
/// private unless the operator allows it (names are checked as they resolve, at every send).
pub fn check_target(target: &str, allowed: &Allowed) -> Result<(), Refused> {
    let (host, _) = split_target(target)?;
    crate::egress::check_url(&format!("https://{}/", bracketed(host)), allowed).map(|_| ())
}

fn bracketed(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Undoes CEF's escaping of an extension value, as a SIEM's parser does.
    fn unescape_value(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn an_extension_value_round_trips_and_never_breaks_the_line(text in ".*") {
            let escaped = cef_value(&text);
            prop_assert!(!escaped.contains('\n') && !escaped.contains('\r'));
            prop_assert!(!escaped.replace("\\\\", "").replace("\\=", "").contains('='));
            prop_assert_eq!(unescape_value(&escaped), text);
        }

        #[test]
        fn a_header_field_never_splits_the_header(text in ".*") {
            let escaped = cef_header(&text);
            prop_assert!(!escaped.replace("\\\\", "").replace("\\|", "").contains('|'));
            prop_assert!(!escaped.contains('\n'));
        }
    }

    #[test]
    fn receivers_are_host_and_port_on_allowed_addresses() {
        let none = Allowed::default();
        assert_eq!(split_target("siem.example.org:6514").unwrap(), ("siem.example.org", 6514));
        assert!(check_target("siem.example.org:6514", &none).is_ok());
        for private in ["127.0.0.1:6514", "[::1]:6514", "10.1.1.1:514", "2130706433:6514"] {
            assert!(matches!(check_target(private, &none), Err(Refused::Private(_))), "{private}");
        }
        for bad in ["siem.example.org", "siem.example.org:0", ":6514", "a/b:6514", "u@h:6514"] {
            assert!(matches!(check_target(bad, &none), Err(Refused::Url(_))), "{bad}");
        }
        let allowed = Allowed::hosts(["10.1.1.1".to_owned()]);
        assert!(check_target("10.1.1.1:6514", &allowed).is_ok());
    }
}

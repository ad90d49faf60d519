//! The server's configuration: `DATA_DIR/custody.toml`, with `CUSTODY_*` environment overrides.
//!
//! Unknown keys are errors, every setting is checked by [`Config::validate`], and nothing
//! disables TLS: the one plaintext option is named `danger_plaintext` and only reaches a relay
//! on this machine.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use custody_core::approval::RemoteOpenBudget;
use serde::{Deserialize, Serialize};

use crate::outbox::{SmtpSecurity, SmtpSettings, Transport};

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is not acceptable.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Addresses and names.
    pub server: ServerSection,
    /// How recipients are told.
    pub notifications: NotificationSection,
    /// The SMTP relay, for `channel = "email"`.
    pub smtp: Option<SmtpSection>,
    /// Where signed audit checkpoints are shipped, besides `DATA_DIR/checkpoints`.
    pub audit: AuditSection,
    /// Rules a site may tune.
    pub security: SecuritySection,
    /// Where alerts may be sent.
    pub alerts: AlertsSection,
    /// The SMS provider, for staff who agreed to hear of alerts by text message.
    pub sms: Option<SmsSection>,
}

/// `[sms]`: a Twilio-compatible API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSection {
    /// The API's base URL (`https://api.twilio.com`).
    pub base_url: String,
    /// The account.
    pub account_sid: String,
    /// A file holding the account's auth token (readable by the server alone).
    pub auth_token_file: PathBuf,
    /// The sender's number (E.164) or name.
    pub from: String,
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Hosts on private networks that site admins may point alert webhooks at (a SIEM on the
    /// site's network, say). Every other private, loopback or link-local address is refused.
    pub allow_hosts: Vec<String>,
    /// CA certificates (PEM) to trust for webhooks and syslog receivers besides the system's,
    /// for a SIEM with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// `[security]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Whether lifting a lockdown needs a second person's approval (on by default).
    pub lockdown_lift_approval: bool,
    /// Doors one person opens alone without a parcel's own credential (remote opens, bulk
    /// opens, retrievals) in `remote_opens_window_hours`; each further one waits for a second
    /// person. Derived in docs/SECURITY.md.
    pub remote_opens_per_person: u32,
    /// … and at one bank, whoever opens them.
    pub remote_opens_per_bank: u32,
    /// The sliding window those budgets count over, in hours (1–168).
    pub remote_opens_window_hours: u64,
}

impl Default for SecuritySection {
    fn default() -> Self {
        let budget = RemoteOpenBudget::default();
        Self {
            lockdown_lift_approval: true,
            remote_opens_per_person: budget.per_opener,
            remote_opens_per_bank: budget.per_bank,
            remote_opens_window_hours: budget.window.as_secs() / 3600,
        }
    }
}

impl SecuritySection {
    /// The remote-open budget these settings describe.
    pub fn remote_opens(&self) -> RemoteOpenBudget {
        RemoteOpenBudget {
            per_opener: self.remote_opens_per_person,
            per_bank: self.remote_opens_per_bank,
            window: custody_core::time::hours(self.remote_opens_window_hours.min(24 * 365)),
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// A syslog receiver for checkpoints: `tcp://host:port` or `udp://host:port`.
    pub syslog: Option<String>,
    /// An HTTPS endpoint that receives each checkpoint as a JSON `POST`.
    pub webhook: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// HTTPS API and portal.
    pub listen: SocketAddr,
    /// Device gateway (mutual TLS).
    pub gateway_listen: SocketAddr,
    /// The portal's public URL, for links in messages.
    pub public_url: String,
    /// Where agents reach the gateway (`host:port`).
    pub gateway_address: String,
    /// Reverse proxies in front of `listen` (IP addresses). Only from these is
    /// `X-Forwarded-For` believed when throttling sign-ins by address; from anyone else the
    /// connection's own address counts.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            public_url: "https://localhost:8443".into(),
            gateway_address: "localhost:8444".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSection {
    /// `email` (through `[smtp]`) or `file` (one `.eml` per message in `outbox_dir`).
    pub channel: String,
    /// For the file channel; default `DATA_DIR/outbox`.
    pub outbox_dir: Option<PathBuf>,
}

impl Default for NotificationSection {
    fn default() -> Self {
        Self { channel: "file".into(), outbox_dir: None }
    }
}

/// `[smtp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// Relay host.
    pub host: String,
    /// Relay port (587 for STARTTLS, 465 for TLS).
    pub port: u16,
    /// `starttls`, `tls`, or `danger_plaintext` (a relay on this machine only).
    pub security: String,
    /// Sender, such as `Custody <lockers@example.org>`.
    pub from: String,
    /// Extra CA certificates to trust for the relay (PEM file).
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: Option<String>,
    /// File holding the password (0600); or set `CUSTODY_SMTP_PASSWORD`.
    pub password_file: Option<PathBuf>,
}

/// The system's CA bundle (Debian's `ca-certificates`).
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, message: message.into() }
}

impl Config {
    /// Reads `path` (defaults when it does not exist), then applies the environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config = if path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            toml::from_str(&text)
                .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
        } else {
            Self::default()
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Applies `CUSTODY_LISTEN`, `CUSTODY_GATEWAY_LISTEN`, `CUSTODY_PUBLIC_URL`,
    /// `CUSTODY_GATEWAY_ADDRESS` and `CUSTODY_NOTIFICATION_CHANNEL`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("CUSTODY_LISTEN") {
            self.server.listen = v.parse().map_err(|_| {
                invalid("CUSTODY_LISTEN", "expected host:port such as 127.0.0.1:8443")
            })?;
        }
        if let Some(v) = var("CUSTODY_GATEWAY_LISTEN") {
            self.server.gateway_listen = v.parse().map_err(|_| {
                invalid("CUSTODY_GATEWAY_LISTEN", "expected host:port such as 127.0.0.1:8444")
            })?;
        }
        if let Some(v) = var("CUSTODY_PUBLIC_URL") {
            self.server.public_url = v;
        }
        if let Some(v) = var("CUSTODY_GATEWAY_ADDRESS") {
            self.server.gateway_address = v;
        }
        if let Some(v) = var("CUSTODY_NOTIFICATION_CHANNEL") {
            self.notifications.channel = v;
        }
        Ok(())
    }

    /// The checkpoint sinks of `[audit]`.
    pub fn checkpoint_sinks(&self) -> Result<Vec<crate::ship::Sink>, ConfigError> {
        let mut sinks = Vec::new();
        if let Some(spec) = &self.audit.syslog {
            sinks.push(crate::ship::Sink::syslog(spec).map_err(|m| invalid("audit.syslog", m))?);
        }
        if let Some(spec) = &self.audit.webhook {
            sinks.push(crate::ship::Sink::webhook(spec).map_err(|m| invalid("audit.webhook", m))?);
        }
        Ok(sinks)
    }

    /// How alerts leave the server: the hosts the operator allows, and the system's roots
    /// with the operator's CA file; e-mail through the notification transport, and text
    /// messages through `[sms]` when it is set.
    pub fn alert_senders(&self, data_dir: &Path) -> Result<crate::fanout::Senders, ConfigError> {
        let allowed = crate::egress::Allowed::hosts(self.alerts.allow_hosts.iter().cloned());
        let mut ca_pem = std::fs::read_to_string(SYSTEM_ROOTS).unwrap_or_default();
        if let Some(file) = &self.alerts.ca_file {
            let extra = std::fs::read_to_string(file)
                .map_err(|e| invalid("alerts.ca_file", format!("{}: {e}", file.display())))?;
            ca_pem.push_str(&extra);
        }
        let mut senders =
            crate::fanout::Senders::new(&allowed, &ca_pem).map_err(|m| invalid("alerts", m))?;
        senders.email = Some(self.transport(data_dir)?);
        if let Some(sms) = &self.sms {
            let token = std::fs::read_to_string(&sms.auth_token_file).map_err(|source| {
                ConfigError::Read { path: sms.auth_token_file.clone(), source }
            })?;
            senders.sms = Some(crate::sms::SmsSender {
                base_url: sms.base_url.clone(),
                account_sid: sms.account_sid.clone(),
                auth_token: zeroize::Zeroizing::new(token.trim().to_owned()),
                from: sms.from.clone(),
            });
        }
        Ok(senders)
    }

    /// Checks every setting and explains what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checkpoint_sinks()?;
        self.security
            .remote_opens()
            .validate()
            .map_err(|m| invalid("security.remote_opens_*", m))?;
        if !self.server.public_url.starts_with("https://") {
            return Err(invalid(
                "server.public_url",
                "must start with https:// (Custody serves only HTTPS)",
            ));
        }
        if !self.server.gateway_address.contains(':') {
            return Err(invalid(
                "server.gateway_address",
                "expected host:port, such as lockers.example.org:8444",
            ));
        }
        // Port 0 means "any free port", which two listeners may both ask for.
        if self.server.listen == self.server.gateway_listen && self.server.listen.port() != 0 {
            return Err(invalid("server.gateway_listen", "must differ from server.listen"));
        }
        match self.notifications.channel.as_str() {
            "file" => {}
            "email" => {
                let smtp = self.smtp.as_ref().ok_or_else(|| {
                    invalid("smtp", "channel = \"email\" needs an [smtp] section")
                })?;
                smtp_security(&smtp.security)?;
                if smtp.host.trim().is_empty() {
                    return Err(invalid("smtp.host", "must not be empty"));
                }
                if smtp.security == "danger_plaintext"
                    && !["localhost", "127.0.0.1", "::1"].contains(&smtp.host.as_str())
                {
                    return Err(invalid(
                        "smtp.security",
                        "danger_plaintext is allowed only for a relay on this machine (localhost)",
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "notifications.channel",
                    format!("{other:?} is not a channel; use \"email\" or \"file\""),
                ));
            }
        }
        Ok(())
    }

    /// The notification transport this configuration describes.
    pub fn transport(&self, data_dir: &Path) -> Result<Transport, ConfigError> {
        self.validate()?;
        if self.notifications.channel == "file" {
            return Ok(Transport::File(
                self.notifications.outbox_dir.clone().unwrap_or_else(|| data_dir.join("outbox")),
            ));
        }
        let smtp = self.smtp.as_ref().ok_or_else(|| invalid("smtp", "missing"))?;
        let ca_pem = smtp
            .ca_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.clone(), source })
            })
            .transpose()?;
        let password = match (&smtp.password_file, std::env::var("CUSTODY_SMTP_PASSWORD").ok()) {
            (_, Some(p)) => Some(zeroize::Zeroizing::new(p)),
            (Some(path), None) => Some(zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?
                    .trim()
                    .to_owned(),
            )),
            (None, None) => None,
        };
        let credentials = match (&smtp.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "smtp.username",
                    "give both a username and a password, or neither",
                ));
            }
        };
        Ok(Transport::Smtp(SmtpSettings {
            host: smtp.host.clone(),
            port: smtp.port,
            security: smtp_security(&smtp.security)?,
            from: smtp.from.clone(),
            ca_pem,
            credentials,
        }))
    }

    /// The file as text, for `custody init`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn smtp_security(s: &str) -> Result<SmtpSecurity, ConfigError> {
    match s {
        "starttls" => Ok(SmtpSecurity::StartTls),
        "tls" => Ok(SmtpSecurity::Tls),
        "danger_plaintext" => Ok(SmtpSecurity::DangerPlaintext),
        _ => Err(invalid("smtp.security", "use \"starttls\", \"tls\" or \"danger_plaintext\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        toml::from_str::<Config>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        again.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_explained() {
        assert!(
            parse("[server]\nlisten = \"127.0.0.1:1\"\ntls = false\n")
                .unwrap_err()
                .contains("unknown field")
        );
        let mut c = Config::default();
        c.server.public_url = "http://lockers.example".into();
        assert!(c.validate().unwrap_err().to_string().contains("https://"));
        let mut c = Config::default();
        c.notifications.channel = "email".into();
        assert!(c.validate().unwrap_err().to_string().contains("[smtp]"));
        let sinks: Config = toml::from_str(
            "[audit]\nsyslog = \"tcp://logs.example.org:6514\"\nwebhook = \"https://siem.example.org/in\"\n",
        )
        .unwrap();
        assert_eq!(sinks.checkpoint_sinks().unwrap().len(), 2);
        let bad: Config = toml::from_str("[audit]\nsyslog = \"logs.example.org\"\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("audit.syslog"));
        c.smtp = Some(SmtpSection {
            host: "mail.example.org".into(),
            port: 25,
            security: "danger_plaintext".into(),
            from: "x@example.org".into(),
            ca_file: None,
            username: None,
            password_file: None,
        });
        assert!(c.validate().unwrap_err().to_string().contains("only for a relay on this machine"));
        let mut c = Config::default();
        c.apply_env(|k| (k == "CUSTODY_LISTEN").then(|| "nonsense".into())).unwrap_err();
    }
}

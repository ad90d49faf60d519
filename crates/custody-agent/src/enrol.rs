//! Enrolment and the agent's identity on disk.
//!
//! ```text
//! AGENT_DIR/
//!   agent.toml        device id, bank id, gateway address, server name and pin
//!   device.key        the device's private key, made here and never sent anywhere   (0600)
//!   device.pem        its certificate, issued by the platform's internal CA
//!   server-ca.pem     the CA that issued the server's certificate
//!   command.pub       the server's command verification key (Ed25519, base64)
//!   journal.log       what the agent did and saw, hash-chained (`crate::journal`)     (0600)
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use custody_core::Clock;
use custody_crypto::pki::DeviceKey;
use custody_crypto::sign::PublicKey;
use custody_crypto::tls::{ServerTrust, client_config};
use custody_proto::device::{EnrolRequest, EnrolResponse};
use data_encoding::HEXLOWER;
use serde::{Deserialize, Serialize};

use crate::core::Identity;
use crate::link::LinkConfig;

/// Why enrolment or loading failed, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The directory already holds an identity.
    #[error(
        "{0} already holds an enrolled identity; use another --data-dir or remove it to re-enrol"
    )]
    AlreadyEnrolled(PathBuf),
    /// The pin is not 64 hex characters.
    #[error(
        "the server pin must be 64 hex characters (SHA-256 of the server's public key, printed by `custody init`)"
    )]
    BadPin,
    /// The server could not be reached or refused the enrolment.
    #[error("enrolment failed: {0}")]
    Server(String),
    /// A key, certificate or file content is not valid.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// `agent.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Device id.
    pub device: String,
    /// Bank id.
    pub bank: String,
    /// Gateway address, `host:port`.
    pub gateway: String,
    /// Name on the server's certificate.
    pub server_name: String,
    /// SHA-256 of the server's public key, hex. Add the next key's pin before rotating.
    pub server_pins: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EnrolError + '_ {
    move |source| EnrolError::Io { path: path.to_owned(), source }
}

fn write(path: &Path, contents: &[u8], secret: bool) -> Result<(), EnrolError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let _ = secret;
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn read(path: &Path) -> Result<String, EnrolError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn pin(hex: &str) -> Result<[u8; 32], EnrolError> {
    HEXLOWER
        .decode(hex.trim().to_lowercase().as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(EnrolError::BadPin)
}

/// Everything the daemon needs, loaded from the agent's directory.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// Who the agent is.
    pub identity: Identity,
    /// How it reaches the gateway.
    pub link: LinkConfig,
    /// Until when the bank's OSDP reader may be read without Secure Channel, while an
    /// installer commissions it (from `custody agent run --commissioning-until`); never by
    /// default.
    pub commissioning_until: Option<custody_core::Timestamp>,
    /// The journal file (`AGENT_DIR/journal.log`).
    pub journal: PathBuf,
}

/// Where to enrol and what to trust.
#[derive(Debug, Clone)]
pub struct EnrolTarget {
    /// The server's public URL, `https://host:port`.
    pub server_url: String,
    /// The CA that issued the server's certificate, PEM.
    pub server_ca_pem: String,
    /// SHA-256 of the server's public key, hex (from `custody init`).
    pub server_pin: String,
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty()).then(|| host.trim_start_matches('[').trim_end_matches(']').to_owned())
}

/// Enrols this device with a single-use token and stores its identity in `dir`.
pub async fn enrol(
    dir: &Path,
    target: &EnrolTarget,
    token: &str,
    clock: Arc<dyn Clock>,
) -> Result<AgentFile, EnrolError> {
    let agent_toml = dir.join("agent.toml");
    if agent_toml.exists() {
        return Err(EnrolError::AlreadyEnrolled(dir.to_owned()));
    }
    let pin = pin(&target.server_pin)?;
    let server_name = host_of(&target.server_url).ok_or_else(|| EnrolError::Invalid {
        what: "server URL",
        message: "expected https://host:port".into(),
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = DeviceKey::generate()
        .map_err(|e| EnrolError::Invalid { what: "device key", message: e.to_string() })?;
    let csr = key
        .csr("custody-agent")
        .map_err(|e| EnrolError::Invalid { what: "csr", message: e.to_string() })?;
    let trust = ServerTrust { ca_pem: target.server_ca_pem.clone(), pins: vec![pin] };
    let tls = client_config(&trust, None, &[b"http/1.1"], clock)
        .map_err(|e| EnrolError::Invalid { what: "server CA", message: e.to_string() })?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| EnrolError::Server(e.to_string()))?;
    let url = format!("{}/api/v1/devices/enrol", target.server_url.trim_end_matches('/'));
    let response = client
        .post(url)
        .json(&EnrolRequest { token: token.trim().to_owned(), csr_pem: csr })
        .send()
        .await
        .map_err(|e| {
            EnrolError::Server(format!(
                "{e} (is the server running, and are the CA and pin right?)"
            ))
        })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(EnrolError::Server(format!("{status}: {body}")));
    }
    let answer: EnrolResponse =
        response.json().await.map_err(|e| EnrolError::Server(e.to_string()))?;
    PublicKey::from_base64(&answer.command_key)
        .map_err(|e| EnrolError::Invalid { what: "command key", message: e.to_string() })?;
    write(&dir.join("device.key"), key.to_pem().as_bytes(), true)?;
    write(&dir.join("device.pem"), answer.certificate_pem.as_bytes(), false)?;
    write(&dir.join("server-ca.pem"), target.server_ca_pem.as_bytes(), false)?;
    write(&dir.join("command.pub"), answer.command_key.as_bytes(), false)?;
    let file = AgentFile {
        device: answer.device,
        bank: answer.bank,
        gateway: answer.gateway,
        server_name,
        server_pins: vec![HEXLOWER.encode(&pin)],
    };
    let text = toml::to_string_pretty(&file)
        .map_err(|e| EnrolError::Invalid { what: "agent.toml", message: e.to_string() })?;
    write(&agent_toml, text.as_bytes(), false)?;
    Ok(file)
}

/// Loads an enrolled identity from `dir`, with the gateway address optionally overridden.
pub fn load(
    dir: &Path,
    gateway_override: Option<&str>,
    clock: Arc<dyn Clock>,
) -> Result<AgentSetup, EnrolError> {
    let agent_toml = dir.join("agent.toml");
    if !agent_toml.exists() {
        return Err(EnrolError::Invalid {
            what: "agent directory",
            message: format!(
                "{} has no agent.toml; run `custody agent enrol` first",
                dir.display()
            ),
        });
    }
    let file: AgentFile = toml::from_str(&read(&agent_toml)?)
        .map_err(|e| EnrolError::Invalid { what: "agent.toml", message: e.to_string() })?;
    let pins = file.server_pins.iter().map(|p| pin(p)).collect::<Result<Vec<_>, _>>()?;
    if pins.is_empty() {
        return Err(EnrolError::BadPin);
    }
    let key_path = dir.join("device.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            std::fs::metadata(&key_path).map_err(io(&key_path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(EnrolError::Invalid {
                what: "device.key",
                message: format!("readable by others (mode {mode:o}); run chmod 600"),
            });
        }
    }
    let key = zeroize::Zeroizing::new(read(&key_path)?);
    let cert = read(&dir.join("device.pem"))?;
    let trust = ServerTrust { ca_pem: read(&dir.join("server-ca.pem"))?, pins };
    let tls = client_config(&trust, Some((&cert, &key)), &[b"http/1.1"], clock).map_err(|e| {
        EnrolError::Invalid { what: "device certificate or key", message: e.to_string() }
    })?;
    let command_key = PublicKey::from_base64(&read(&dir.join("command.pub"))?)
        .map_err(|e| EnrolError::Invalid { what: "command.pub", message: e.to_string() })?;
    Ok(AgentSetup {
        identity: Identity { device: file.device, bank: file.bank, command_key },
        link: LinkConfig {
            gateway: gateway_override.map_or(file.gateway, str::to_owned),
            server_name: file.server_name,
            tls: Arc::new(tls),
            local_address: None,
        },
        commissioning_until: None,
        journal: dir.join("journal.log"),
    })
}

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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custody_core::Clock;
use custody_core::Timestamp;
use custody_crypto::pki::first_cert_der;
use custody_crypto::pki::{CertificateInfo, DeviceKey, certificate_info};
use custody_crypto::private_files;
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

/// Writes one of the agent's files: everything in its directory is its owner's alone.
fn write(path: &Path, contents: &[u8]) -> Result<(), EnrolError> {
    private_files::write(path, contents, true).map_err(io(path))
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
    pub commissioning_until: Option<Timestamp>,
    /// The journal file (`AGENT_DIR/journal.log`).
    pub journal: PathBuf,
    /// The agent's directory.
    pub dir: PathBuf,
    /// The device certificate in use.
    pub certificate: CertificateInfo,
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
    private_files::create_dir(dir).map_err(io(dir))?;
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
    write(&dir.join("device.key"), key.to_pem().as_bytes())?;
    write(&dir.join("device.pem"), answer.certificate_pem.as_bytes())?;
    write(&dir.join("server-ca.pem"), target.server_ca_pem.as_bytes())?;
    write(&dir.join("command.pub"), answer.command_key.as_bytes())?;
    let file = AgentFile {
        device: answer.device,
        bank: answer.bank,
        gateway: answer.gateway,
        server_name,
        server_pins: vec![HEXLOWER.encode(&pin)],
    };
    let text = toml::to_string_pretty(&file)
        .map_err(|e| EnrolError::Invalid { what: "agent.toml", message: e.to_string() })?;
    write(&agent_toml, text.as_bytes())?;
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
    promote_renewal(dir)?;
    let key_path = dir.join("device.key");
    // The directory holds the device key, the journal and the offline list: nobody else may
    // read any of it.
    let private =
        [dir.to_owned(), key_path.clone(), dir.join("journal.log"), dir.join("offline.json")];
    private_files::check(&private, dir)
        .map_err(|e| EnrolError::Invalid { what: "agent directory", message: e.to_string() })?;
    let key = zeroize::Zeroizing::new(read(&key_path)?);
    let cert = read(&dir.join("device.pem"))?;
    let trust = ServerTrust { ca_pem: read(&dir.join("server-ca.pem"))?, pins };
    let tls = client_config(&trust, Some((&cert, &key)), &[b"http/1.1"], clock).map_err(|e| {
        EnrolError::Invalid { what: "device certificate or key", message: e.to_string() }
    })?;
    let certificate = first_cert_der(&cert)
        .and_then(|der| certificate_info(&der))
        .map_err(|e| EnrolError::Invalid { what: "device.pem", message: e.to_string() })?;
    let command_key = PublicKey::from_base64(&read(&dir.join("command.pub"))?)
        .map_err(|e| EnrolError::Invalid { what: "command.pub", message: e.to_string() })?;
    Ok(AgentSetup {
        identity: Identity { device: file.device, bank: file.bank, command_key },
        link: LinkConfig {
            gateway: gateway_override.map_or(file.gateway, str::to_owned),
            server_name: file.server_name,
            tls: Arc::new(tls),
            local_address: None,
            silent_after: crate::link::SILENT_AFTER,
        },
        commissioning_until: None,
        journal: dir.join("journal.log"),
        dir: dir.to_owned(),
        certificate,
    })
}

/// Whether the certificate should be renewed at `now`: once two thirds of its lifetime have
/// passed, leaving a third (ten days of the default thirty) for the server to be reachable.
pub fn renewal_due(now: Timestamp, certificate: &CertificateInfo) -> bool {
    let (from, to) = (certificate.not_before.as_millis(), certificate.not_after.as_millis());
    now.as_millis() >= from + (to - from) / 3 * 2
}

/// A new key, made here, and the request for its certificate.
pub fn begin_renewal() -> Result<(DeviceKey, String), EnrolError> {
    let key = DeviceKey::generate()
        .map_err(|e| EnrolError::Invalid { what: "device key", message: e.to_string() })?;
    let csr = key
        .csr("custody-agent")
        .map_err(|e| EnrolError::Invalid { what: "csr", message: e.to_string() })?;
    Ok((key, csr))
}

/// Stores the renewed certificate with its new key and loads the identity again. The pair is
/// written beside the old one and then moved into place; a power cut in between is completed
/// at the next start (`promote_renewal`).
pub fn finish_renewal(
    setup: &AgentSetup,
    key: &DeviceKey,
    certificate_pem: &str,
    clock: Arc<dyn Clock>,
) -> Result<AgentSetup, EnrolError> {
    let info = first_cert_der(certificate_pem)
        .and_then(|der| certificate_info(&der))
        .map_err(|e| EnrolError::Invalid { what: "renewed certificate", message: e.to_string() })?;
    if info.spki_sha256 != key.spki_sha256() || info.common_name != setup.identity.device {
        return Err(EnrolError::Invalid {
            what: "renewed certificate",
            message: "not for this device's new key".into(),
        });
    }
    let dir = &setup.dir;
    let (key_new, cert_new) = (dir.join("device.key.new"), dir.join("device.pem.new"));
    write(&key_new, key.to_pem().as_bytes())?;
    write(&cert_new, certificate_pem.as_bytes())?;
    promote_renewal(dir)?;
    let mut renewed = load(dir, Some(&setup.link.gateway), clock)?;
    renewed.commissioning_until = setup.commissioning_until;
    renewed.journal.clone_from(&setup.journal);
    Ok(renewed)
}

/// Moves a renewed key and certificate written beside the old ones into place, completing a
/// renewal a power cut interrupted; a half-written renewal is dropped.
fn promote_renewal(dir: &Path) -> Result<(), EnrolError> {
    let (key, cert) = (dir.join("device.key"), dir.join("device.pem"));
    let (key_new, cert_new) = (dir.join("device.key.new"), dir.join("device.pem.new"));
    let spki_of_key = |path: &Path| -> Option<[u8; 32]> {
        DeviceKey::from_pem(&read(path).ok()?).ok().map(|k| k.spki_sha256())
    };
    let remove = |path: &Path| -> Result<(), EnrolError> {
        if path.exists() { std::fs::remove_file(path).map_err(io(path)) } else { Ok(()) }
    };
    let cert_spki =
        read(&cert_new).ok().and_then(|pem| custody_crypto::pki::spki_pin_of_pem(&pem).ok());
    match (cert_spki, key_new.exists()) {
        // Both written whole: move the key, then the certificate.
        (Some(spki), true) if spki_of_key(&key_new) == Some(spki) => {
            std::fs::rename(&key_new, &key).map_err(io(&key))?;
            std::fs::rename(&cert_new, &cert).map_err(io(&cert))?;
        }
        // The key was moved already: the certificate follows.
        (Some(spki), false) if spki_of_key(&key) == Some(spki) => {
            std::fs::rename(&cert_new, &cert).map_err(io(&cert))?;
        }
        // Nothing, or a half-written renewal: the old pair stays.
        _ => {
            remove(&key_new)?;
            remove(&cert_new)?;
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_crypto::pki::{CertificateAuthority, generate_ca};

    const NOW: Timestamp = Timestamp::from_millis(1_893_456_000_000);

    fn certified(ca: &CertificateAuthority, serial: u8) -> (DeviceKey, String) {
        let key = DeviceKey::generate().unwrap();
        let csr = key.csr("custody-agent").unwrap();
        let cert = ca
            .sign_device_csr(&csr, "dev_a", [serial; 16], NOW, custody_core::time::days(30))
            .unwrap();
        (key, cert)
    }

    /// The agent's directory holding the old pair, plus what a renewal left behind.
    fn dir_with(
        ca: &CertificateAuthority,
        leftovers: impl FnOnce(&Path, &DeviceKey, &str),
    ) -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old_cert) = certified(ca, 1);
        std::fs::write(dir.path().join("device.key"), old_key.to_pem().as_bytes()).unwrap();
        std::fs::write(dir.path().join("device.pem"), &old_cert).unwrap();
        let (new_key, new_cert) = certified(ca, 2);
        leftovers(dir.path(), &new_key, &new_cert);
        (dir, old_cert, new_cert)
    }

    fn pem_in(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("device.pem")).unwrap()
    }

    /// Wherever a power cut interrupts a renewal, the next start has a matching pair: the new
    /// one when it was written whole, the old one otherwise.
    #[test]
    fn an_interrupted_renewal_leaves_a_matching_pair() {
        let ca = generate_ca("test", [9; 16], NOW, custody_core::time::days(365)).unwrap();
        let ca = CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).unwrap();
        let write_key = |d: &Path, k: &DeviceKey| {
            std::fs::write(d.join("device.key.new"), k.to_pem().as_bytes()).unwrap();
        };
        // Both written, neither moved.
        let (dir, _, new) = dir_with(&ca, |d, k, c| {
            write_key(d, k);
            std::fs::write(d.join("device.pem.new"), c).unwrap();
        });
        promote_renewal(dir.path()).unwrap();
        assert_eq!(pem_in(dir.path()), new);
        // The key moved, the certificate not yet.
        let (dir, _, new) = dir_with(&ca, |d, k, c| {
            std::fs::write(d.join("device.key"), k.to_pem().as_bytes()).unwrap();
            std::fs::write(d.join("device.pem.new"), c).unwrap();
        });
        promote_renewal(dir.path()).unwrap();
        assert_eq!(pem_in(dir.path()), new);
        // Only the key written: dropped.
        let (dir, old, _) = dir_with(&ca, |d, k, _| write_key(d, k));
        promote_renewal(dir.path()).unwrap();
        assert_eq!(pem_in(dir.path()), old);
        assert!(!dir.path().join("device.key.new").exists());
        // The certificate cut short: dropped, with its key.
        let (dir, old, _) = dir_with(&ca, |d, k, c| {
            write_key(d, k);
            std::fs::write(d.join("device.pem.new"), c.get(..c.len() / 2).unwrap()).unwrap();
        });
        promote_renewal(dir.path()).unwrap();
        assert_eq!(pem_in(dir.path()), old);
        assert!(!dir.path().join("device.pem.new").exists());
        let key = std::fs::read_to_string(dir.path().join("device.key")).unwrap();
        let cert = custody_crypto::pki::spki_pin_of_pem(&pem_in(dir.path())).unwrap();
        assert_eq!(DeviceKey::from_pem(&key).unwrap().spki_sha256(), cert, "a matching pair");
    }

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let certificate = CertificateInfo {
            common_name: "dev_a".into(),
            serial_hex: "01".into(),
            spki_sha256: [0; 32],
            not_before: NOW,
            not_after: NOW.plus(custody_core::time::days(30)),
        };
        assert!(!renewal_due(NOW.plus(custody_core::time::days(19)), &certificate));
        assert!(renewal_due(NOW.plus(custody_core::time::days(20)), &certificate));
    }
}

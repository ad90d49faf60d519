//! TLS configurations: TLS 1.3 only, aws-lc-rs only, and pinning for the device link.
//!
//! rustls is built with the `tls12` feature because other crates in the tree enable it, so
//! "TLS 1.3 only" is enforced here in code for every configuration (DESIGN.md §4 invariant 7).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use custody_core::Clock;

use crate::pki::{certificate_info, certs_from_pem};
use crate::{CryptoError, constant_time_eq};

/// Lets certificate validity be judged by the platform's clock, so tests with a manual clock
/// check expiry exactly and production uses [`crate::SystemClock`].
#[derive(Debug)]
struct ClockTime(Arc<dyn Clock>);

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        u64::try_from(self.0.now().as_secs())
            .ok()
            .map(|s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s)))
    }
}

fn tls_err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Tls(e.to_string())
}

/// The one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, CryptoError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(tls_err)
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CryptoError> {
    let mut store = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        store.add(cert).map_err(tls_err)?;
    }
    Ok(Arc::new(store))
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Browsers and API clients: no client certificate.
    None,
    /// The device gateway: a certificate issued by this CA, and not revoked, is required at the
    /// handshake.
    Required {
        /// The internal CA, PEM.
        ca_pem: String,
        /// Serial numbers of revoked certificates, refused at the handshake.
        revoked: Revoked,
    },
}

/// The serial numbers (lowercase hex, as [`certificate_info`] gives them) of revoked client
/// certificates, shared between the handshake and whoever revokes: a change applies to the next
/// handshake.
#[derive(Debug, Clone, Default)]
pub struct Revoked(Arc<std::sync::RwLock<std::collections::HashSet<String>>>);

impl Revoked {
    /// Replaces the set.
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) {
        let mut set = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *set = serials.into_iter().collect();
    }

    /// Whether `serial` is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(serial)
    }
}

/// The CA's chain check, then the revocation check.
#[derive(Debug)]
struct RevocationVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Revoked,
}

impl ClientCertVerifier for RevocationVerifier {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let info = certificate_info(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self.revoked.contains(&info.serial_hex) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS 1.3 server configuration.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_auth: &ClientAuth,
    alpn: &[&[u8]],
    clock: Arc<dyn Clock>,
) -> Result<ServerConfig, CryptoError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_details(provider.clone(), Arc::new(ClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required { ca_pem, revoked } => {
            let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider)
                .build()
                .map_err(tls_err)?;
            builder.with_client_cert_verifier(Arc::new(RevocationVerifier {
                inner,
                revoked: revoked.clone(),
            }))
        }
    };
    let mut config = builder
        .with_single_cert(certs_from_pem(cert_chain_pem)?, key_from_pem(key_pem)?)
        .map_err(tls_err)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No 0-RTT: early data is replayable, and nothing here needs it.
    config.max_early_data_size = 0;
    // No resumption either, stateful or by ticket: a resumed session skips the client
    // certificate's verification, so a device revoked since its last handshake would be let
    // through it. Every connection is a full handshake, and every one meets the revocation
    // check (DESIGN.md §4 invariant 12).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    if crate::fips::BUILT && !config.fips() {
        return Err(CryptoError::Fips("the TLS server configuration is not FIPS"));
    }
    Ok(config)
}

/// How a client recognises the server.
#[derive(Debug, Clone)]
pub struct ServerTrust {
    /// CA certificates that may issue the server's certificate, PEM.
    pub ca_pem: String,
    /// SHA-256 SPKI pins; when non-empty the server's key must match one (current and next, for
    /// rotation). Empty means CA validation alone (browsers' model, used by the CLI).
    pub pins: Vec<[u8; 32]>,
}

/// Verifies the chain and name with webpki, then the key pin.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if self.pins.is_empty() {
            return Ok(verified);
        }
        let info = certificate_info(end_entity)
            .map_err(|_| rustls::Error::General("unparseable server certificate".into()))?;
        if self.pins.iter().any(|pin| constant_time_eq(pin, &info.spki_sha256)) {
            Ok(verified)
        } else {
            Err(rustls::Error::General("server key does not match the pinned key".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with a TLS 1.3-only configuration; refuse rather than trust.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS 1.3 client configuration, with a client certificate when `identity` is given.
pub fn client_config(
    trust: &ServerTrust,
    identity: Option<(&str, &str)>,
    alpn: &[&[u8]],
    clock: Arc<dyn Clock>,
) -> Result<ClientConfig, CryptoError> {
    let provider = provider();
    let inner =
        WebPkiServerVerifier::builder_with_provider(roots(&trust.ca_pem)?, provider.clone())
            .build()
            .map_err(tls_err)?;
    let verifier = Arc::new(PinnedVerifier { inner, pins: trust.pins.clone() });
    let builder = ClientConfig::builder_with_details(provider, Arc::new(ClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain_pem, key_pem)) => builder
            .with_client_auth_cert(certs_from_pem(chain_pem)?, key_from_pem(key_pem)?)
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if crate::fips::BUILT && !config.fips() {
        return Err(CryptoError::Fips("the TLS client configuration is not FIPS"));
    }
    Ok(config)
}

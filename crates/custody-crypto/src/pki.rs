//! The platform's internal certificate authority.
//!
//! `custody init` makes a CA and a server certificate signed by it. Agents make their own key
//! pair on the device and send only a CSR; the server signs the CSR's public key into a client
//! certificate whose every field it sets itself: nothing the device asks for (names, usages,
//! CA rights) is copied from the request. The device's identity is the certificate's common name.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use custody_core::Timestamp;

use crate::{CryptoError, sha256};

fn cert_err(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Certificate(e.to_string())
}

fn to_time(t: Timestamp) -> Result<OffsetDateTime, CryptoError> {
    OffsetDateTime::from_unix_timestamp(t.as_secs()).map_err(cert_err)
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key; written only to 0600 files.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

fn validity(
    params: &mut CertificateParams,
    now: Timestamp,
    lifetime: std::time::Duration,
) -> Result<(), CryptoError> {
    // Backdate by an hour so a peer whose clock runs a little behind accepts a fresh certificate.
    params.not_before = to_time(now.minus(custody_core::time::hours(1)))?;
    params.not_after = to_time(now.plus(lifetime))?;
    Ok(())
}

/// Makes a new CA certificate and key, valid from `now` for `lifetime`.
pub fn generate_ca(
    name: &str,
    serial: [u8; 16],
    now: Timestamp,
    lifetime: std::time::Duration,
) -> Result<CertifiedKey, CryptoError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    // May sign end-entity certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    validity(&mut params, now, lifetime)?;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
}

/// The CA, loaded to sign certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateAuthority")
    }
}

impl CertificateAuthority {
    /// Loads the CA from its certificate and key.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CryptoError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(cert_err)?;
        Ok(Self { issuer, cert_pem: cert_pem.to_owned() })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server certificate for `hostnames` (DNS names or IP addresses) with a new key.
    pub fn issue_server(
        &self,
        hostnames: &[String],
        serial: [u8; 16],
        now: Timestamp,
        lifetime: std::time::Duration,
    ) -> Result<CertifiedKey, CryptoError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hostnames.first().map_or("custody", String::as_str));
        params.distinguished_name = dn;
        params.subject_alt_names = hostnames
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h.clone().try_into().map(SanType::DnsName).map_err(cert_err),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, lifetime)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(CertifiedKey { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// A client certificate for device `common_name` on the public key of `csr_pem`.
    ///
    /// The CSR's signature is checked (the device holds the key); its requested extensions are
    /// ignored.
    pub fn sign_device_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        serial: [u8; 16],
        now: Timestamp,
        lifetime: std::time::Duration,
    ) -> Result<String, CryptoError> {
        if csr_pem.len() > 8 * 1024 {
            return Err(CryptoError::Certificate("csr too large".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(cert_err)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, lifetime)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(cert_err)?;
        Ok(cert.pem())
    }
}

/// A device's own key pair, made on the device.
pub struct DeviceKey(KeyPair);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(<private>)")
    }
}

impl DeviceKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<Self, CryptoError> {
        KeyPair::generate().map(Self).map_err(cert_err)
    }

    /// Loads a key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        KeyPair::from_pem(pem).map(Self).map_err(cert_err)
    }

    /// The PKCS#8 PEM, for the device's 0600 key file.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.serialize_pem())
    }

    /// SHA-256 of its public key info: what a certificate for it carries.
    pub fn spki_sha256(&self) -> [u8; 32] {
        sha256(&rcgen::PublicKeyData::subject_public_key_info(&self.0))
    }

    /// A certificate signing request, PEM.
    pub fn csr(&self, common_name: &str) -> Result<String, CryptoError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.serialize_request(&self.0).and_then(|r| r.pem()).map_err(cert_err)
    }
}

/// What the server reads from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject common name: for devices, the device id.
    pub common_name: String,
    /// The serial number, hex.
    pub serial_hex: String,
    /// SHA-256 of the subject public key info.
    pub spki_sha256: [u8; 32],
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

/// Every certificate in a PEM bundle, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CryptoError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CryptoError::Tls(e.to_string()))?;
    if certs.is_empty() {
        return Err(CryptoError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// The first certificate of a PEM bundle, DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, CryptoError> {
    certs_from_pem(pem)?
        .into_iter()
        .next()
        .map(|c| c.to_vec())
        .ok_or_else(|| CryptoError::Tls("no certificate in PEM".into()))
}

/// Reads a DER certificate.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, CryptoError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(cert_err)?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| CryptoError::Certificate("certificate has no common name".into()))?
        .to_owned();
    Ok(CertificateInfo {
        common_name,
        serial_hex: cert.raw_serial_as_string().replace(':', ""),
        spki_sha256: sha256(cert.public_key().raw),
        not_before: Timestamp::from_millis(
            cert.validity().not_before.timestamp().saturating_mul(1000),
        ),
        not_after: Timestamp::from_millis(
            cert.validity().not_after.timestamp().saturating_mul(1000),
        ),
    })
}

/// SHA-256 of the subject public key info of the first certificate in `cert_pem`: the pin an
/// agent uses to recognise the server.
pub fn spki_pin_of_pem(cert_pem: &str) -> Result<[u8; 32], CryptoError> {
    let der = first_cert_der(cert_pem)?;
    certificate_info(&der).map(|i| i.spki_sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use custody_core::time::days;

    #[test]
    fn device_csr_becomes_a_client_certificate_with_server_chosen_fields() {
        let rng = Rng::new();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let ca_pair = generate_ca("Test CA", rng.bytes().unwrap(), now, days(3650)).unwrap();
        let ca = CertificateAuthority::load(&ca_pair.cert_pem, &ca_pair.key_pem).unwrap();
        let device = DeviceKey::generate().unwrap();
        // The device asks for a different name; the server's choice wins.
        let csr = device.csr("i-am-the-server").unwrap();
        let cert =
            ca.sign_device_csr(&csr, "dev_abc", rng.bytes().unwrap(), now, days(30)).unwrap();
        let info = certificate_info(&first_cert_der(&cert).unwrap()).unwrap();
        assert_eq!(info.common_name, "dev_abc");
        assert_eq!(info.not_after, Timestamp::from_millis(now.plus(days(30)).as_secs() * 1000));
        assert!(ca.sign_device_csr("garbage", "dev_x", [1; 16], now, days(1)).is_err());
    }

    #[test]
    fn server_pins_follow_the_key() {
        let rng = Rng::new();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let ca_pair = generate_ca("Test CA", rng.bytes().unwrap(), now, days(3650)).unwrap();
        let ca = CertificateAuthority::load(&ca_pair.cert_pem, &ca_pair.key_pem).unwrap();
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let a = ca.issue_server(&hosts, rng.bytes().unwrap(), now, days(365)).unwrap();
        let b = ca.issue_server(&hosts, rng.bytes().unwrap(), now, days(365)).unwrap();
        assert_ne!(spki_pin_of_pem(&a.cert_pem).unwrap(), spki_pin_of_pem(&b.cert_pem).unwrap());
    }
}

//! Real TLS handshakes between configurations from `custody_crypto::tls`, over an in-memory pipe.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::sync::Arc;

use custody_core::Timestamp;
use custody_core::time::days;
use custody_crypto::Rng;
use custody_crypto::pki::{
    CertificateAuthority, CertifiedKey, DeviceKey, generate_ca, spki_pin_of_pem,
};
use custody_crypto::tls::{ClientAuth, Revoked, ServerTrust, client_config, server_config};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn clock() -> Arc<dyn custody_core::Clock> {
    Arc::new(custody_core::ManualClock::new(NOW))
}

struct Pki {
    ca: CertificateAuthority,
    ca_pem: String,
    server: CertifiedKey,
}

fn pki() -> Pki {
    let rng = Rng::new();
    let ca_pair = generate_ca("Custody test CA", rng.bytes().unwrap(), NOW, days(3650)).unwrap();
    let ca = CertificateAuthority::load(&ca_pair.cert_pem, &ca_pair.key_pem).unwrap();
    let server =
        ca.issue_server(&["localhost".into()], rng.bytes().unwrap(), NOW, days(365)).unwrap();
    Pki { ca, ca_pem: ca_pair.cert_pem.clone(), server }
}

fn device_identity(pki: &Pki) -> (String, String) {
    let key = DeviceKey::generate().unwrap();
    let cert = pki
        .ca
        .sign_device_csr(&key.csr("dev").unwrap(), "dev_test", [9; 16], NOW, days(30))
        .unwrap();
    (cert, key.to_pem().to_string())
}

/// Runs one handshake and a one-byte exchange; `Ok` when both sides succeed.
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> Result<Option<String>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let server_side = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        let peer = s.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        s.write_all(&buf).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let version = s.get_ref().1.protocol_version();
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
        Ok::<_, String>(
            peer.map(|c| custody_crypto::pki::certificate_info(&c).unwrap().common_name),
        )
    });
    let client_side = async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = connector.connect(name, b).await.map_err(|e| e.to_string())?;
        c.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let client_result = client_side.await;
    let server_result = server_side.await.unwrap();
    client_result?;
    server_result
}

#[tokio::test]
async fn mutual_tls_with_matching_pin_succeeds_and_names_the_device() {
    let p = pki();
    let pin = spki_pin_of_pem(&p.server.cert_pem).unwrap();
    let (cert, key) = device_identity(&p);
    let server = server_config(
        &p.server.cert_pem,
        &p.server.key_pem,
        &ClientAuth::Required { ca_pem: p.ca_pem.clone(), revoked: Revoked::default() },
        &[],
        clock(),
    )
    .unwrap();
    let client = client_config(
        &ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![[0; 32], pin] },
        Some((&cert, &key)),
        &[],
        clock(),
    )
    .unwrap();
    assert_eq!(handshake(server, client).await, Ok(Some("dev_test".into())));
}

#[tokio::test]
async fn pin_mismatch_is_refused_even_with_a_valid_certificate() {
    let p = pki();
    let other_server = p.ca.issue_server(&["localhost".into()], [3; 16], NOW, days(365)).unwrap();
    let wrong_pin = spki_pin_of_pem(&other_server.cert_pem).unwrap();
    let server =
        server_config(&p.server.cert_pem, &p.server.key_pem, &ClientAuth::None, &[], clock())
            .unwrap();
    let client = client_config(
        &ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![wrong_pin] },
        None,
        &[],
        clock(),
    )
    .unwrap();
    let err = handshake(server, client).await.unwrap_err();
    assert!(err.contains("pinned"), "{err}");
}

#[tokio::test]
async fn device_gateway_refuses_a_client_without_certificate() {
    let p = pki();
    let server = server_config(
        &p.server.cert_pem,
        &p.server.key_pem,
        &ClientAuth::Required { ca_pem: p.ca_pem.clone(), revoked: Revoked::default() },
        &[],
        clock(),
    )
    .unwrap();
    let client =
        client_config(&ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![] }, None, &[], clock())
            .unwrap();
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn device_gateway_refuses_a_certificate_from_a_foreign_ca() {
    let p = pki();
    let foreign = pki();
    let (cert, key) = device_identity(&foreign);
    let server = server_config(
        &p.server.cert_pem,
        &p.server.key_pem,
        &ClientAuth::Required { ca_pem: p.ca_pem.clone(), revoked: Revoked::default() },
        &[],
        clock(),
    )
    .unwrap();
    let client = client_config(
        &ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![] },
        Some((&cert, &key)),
        &[],
        clock(),
    )
    .unwrap();
    assert!(handshake(server, client).await.is_err());
}

#[tokio::test]
async fn a_client_offering_only_tls12_is_refused() {
    let p = pki();
    let server =
        server_config(&p.server.cert_pem, &p.server.key_pem, &ClientAuth::None, &[], clock())
            .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in custody_crypto::pki::certs_from_pem(&p.ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let tls12_only = rustls::ClientConfig::builder_with_provider(custody_crypto::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let err = handshake(server, tls12_only).await.unwrap_err();
    assert!(err.to_lowercase().contains("protocol") || err.contains("version"), "{err}");
}

#[tokio::test]
async fn expired_device_certificate_is_refused() {
    let p = pki();
    let (cert, key) = device_identity(&p);
    let later: Arc<dyn custody_core::Clock> =
        Arc::new(custody_core::ManualClock::new(NOW.plus(days(31))));
    let server = server_config(
        &p.server.cert_pem,
        &p.server.key_pem,
        &ClientAuth::Required { ca_pem: p.ca_pem.clone(), revoked: Revoked::default() },
        &[],
        later.clone(),
    )
    .unwrap();
    let client = client_config(
        &ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![] },
        Some((&cert, &key)),
        &[],
        later,
    )
    .unwrap();
    let err = handshake(server, client).await.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn untrusted_server_certificate_is_refused() {
    let p = pki();
    let foreign = pki();
    let server = server_config(
        &foreign.server.cert_pem,
        &foreign.server.key_pem,
        &ClientAuth::None,
        &[],
        clock(),
    )
    .unwrap();
    let client =
        client_config(&ServerTrust { ca_pem: p.ca_pem.clone(), pins: vec![] }, None, &[], clock())
            .unwrap();
    assert!(handshake(server, client).await.is_err());
}

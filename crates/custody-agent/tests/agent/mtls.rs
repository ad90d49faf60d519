//! The device link's mutual TLS, refused every way it should be: no client certificate, one from
//! a foreign CA, an expired one, the server's own certificate used as a client's, TLS 1.2 from
//! either side, and an impostor server whose certificate the CA issued but whose key is not the
//! pinned one. Each case changes one thing from a connection that works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::sync::Arc;

use custody_agent::link::{self, LinkConfig};
use custody_crypto::pki::{CertificateAuthority, DeviceKey, generate_ca};
use custody_crypto::tls::{ClientAuth, ServerTrust, client_config, server_config};
use custody_testkit::TestServer;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// The gateway refused the handshake with this TLS alert.
fn refused_with(err: &link::LinkError, alert: &str) {
    assert!(err.to_string().contains(&format!("received fatal alert: {alert}")), "{err}");
}

/// The `device.refused` entries of the whole log: their reasons.
async fn refusals_on_record(server: &TestServer) -> Vec<String> {
    server
        .env
        .log()
        .await
        .into_iter()
        .filter(|r| r.event.action == custody_core::audit::AuditAction::DeviceRefused)
        .filter_map(|r| r.event.reason)
        .collect()
}

/// DESIGN.md §4 invariant 13: the refusal is on the record, with its reason and source.
async fn on_record(server: &TestServer, reason: &str) {
    let want = format!("{reason}:from:127.0.0.1");
    custody_testkit::eventually(&format!("{want} on the record"), || async {
        refusals_on_record(server).await.contains(&want)
    })
    .await;
}

async fn server() -> TestServer {
    TestServer::start(custody_testkit::sqlite_store().await).await
}

fn gateway(server: &TestServer) -> String {
    format!("localhost:{}", server.running.gateway.port())
}

/// A link configuration trusting the server (CA and pin) and presenting `identity`.
fn config(server: &TestServer, identity: Option<(&str, &str)>) -> LinkConfig {
    let (cert, _) = server.env.data.server_tls().unwrap();
    let trust = ServerTrust {
        ca_pem: server.env.data.server_ca_pem().unwrap(),
        pins: vec![custody_crypto::pki::spki_pin_of_pem(&cert).unwrap()],
    };
    let tls = client_config(&trust, identity, &[b"http/1.1"], server.env.app.clock()).unwrap();
    LinkConfig {
        gateway: gateway(server),
        server_name: "localhost".into(),
        tls: Arc::new(tls),
        local_address: None,
        silent_after: link::SILENT_AFTER,
    }
}

/// The enrolled agent's own certificate and key, read from its directory.
fn enrolled(dir: &std::path::Path) -> (String, String) {
    (
        std::fs::read_to_string(dir.join("device.pem")).unwrap(),
        std::fs::read_to_string(dir.join("device.key")).unwrap(),
    )
}

/// The platform's internal CA, which issues server and device certificates.
fn platform_ca(server: &TestServer) -> CertificateAuthority {
    let key = std::fs::read_to_string(server.env.data.root().join("keys/ca.key")).unwrap();
    CertificateAuthority::load(&server.env.data.server_ca_pem().unwrap(), &key).unwrap()
}

#[tokio::test]
async fn the_enrolled_identity_connects() {
    let server = server().await;
    let agent = server.agent().await;
    agent.handle.stop();
    let (cert, key) = enrolled(agent.dir());
    link::connect(&config(&server, Some((&cert, &key)))).await.unwrap();
}

/// The agent's directory holds its key, journal and offline list: enrolment makes it and every
/// file in it its owner's alone, even where the operator made it open, and an agent whose
/// directory others can read does not start.
#[cfg(unix)]
#[tokio::test]
async fn the_agents_directory_is_private_and_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = server().await;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("agent");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.enrol_agent(&dir).await;
    assert!(custody_crypto::private_files::check_tree(&dir).unwrap() >= 6, "all 0600/0700");
    let load = || custody_agent::enrol::load(&dir, Some(&gateway(&server)), server.env.app.clock());
    assert!(load().is_ok());
    std::fs::write(dir.join("journal.log"), b"").unwrap();
    std::fs::set_permissions(dir.join("journal.log"), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let refused = load().map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("chmod -R go-rwx"), "{refused}");
}

#[tokio::test]
async fn no_client_certificate_is_refused_at_the_handshake() {
    let server = server().await;
    let err = link::connect(&config(&server, None)).await.unwrap_err();
    refused_with(&err, "CertificateRequired");
    on_record(&server, "no_certificate").await;
}

/// A flood of refused handshakes is on the record in a bounded number of entries, each
/// counted: the first at once, the rest when the window ends.
#[tokio::test]
async fn a_flood_of_refused_handshakes_is_counted_not_copied_into_the_log() {
    let server = server().await;
    let floods = 60;
    for _ in 0..floods {
        link::connect(&config(&server, None)).await.unwrap_err();
    }
    on_record(&server, "no_certificate").await;
    server.running.state.refusals.flush().await;
    let entries = refusals_on_record(&server).await;
    assert_eq!(entries.len(), 2, "the first, then the rest in one: {entries:?}");
    let repeated = format!("no_certificate:from:127.0.0.1:repeated:{}", floods - 1);
    assert!(entries.contains(&repeated), "{entries:?}");
}

#[tokio::test]
async fn a_certificate_from_a_foreign_ca_is_refused() {
    let server = server().await;
    let now = server.env.app.now();
    let foreign =
        generate_ca("Custody impostor CA", [7; 16], now, custody_core::time::days(365)).unwrap();
    let foreign = CertificateAuthority::load(&foreign.cert_pem, &foreign.key_pem).unwrap();
    let key = DeviceKey::generate().unwrap();
    let cert = foreign
        .sign_device_csr(
            &key.csr("dev_x").unwrap(),
            "dev_x",
            [8; 16],
            now,
            custody_core::time::days(30),
        )
        .unwrap();
    let err = link::connect(&config(&server, Some((&cert, &key.to_pem())))).await.unwrap_err();
    refused_with(&err, "UnknownCA");
    on_record(&server, "foreign_ca").await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let server = server().await;
    let agent = server.agent().await;
    agent.handle.stop();
    let (cert, key) = enrolled(agent.dir());
    server.env.clock.advance(custody_core::time::days(31));
    let err = link::connect(&config(&server, Some((&cert, &key)))).await.unwrap_err();
    refused_with(&err, "CertificateExpired");
    on_record(&server, "expired").await;
}

/// The server's own certificate comes from the same CA, for server authentication only.
#[tokio::test]
async fn a_certificate_for_another_usage_is_refused() {
    let server = server().await;
    let (cert, key) = server.env.data.server_tls().unwrap();
    let err = link::connect(&config(&server, Some((&cert, &key)))).await.unwrap_err();
    refused_with(&err, "UnsupportedCertificate");
    on_record(&server, "wrong_usage").await;
    // A device certificate issued by the same CA but never enrolled is refused after the
    // handshake: the gateway knows no such device.
    let now = server.env.app.now();
    let stray = DeviceKey::generate().unwrap();
    let cert = platform_ca(&server)
        .sign_device_csr(
            &stray.csr("dev_y").unwrap(),
            "dev_y",
            [9; 16],
            now,
            custody_core::time::days(30),
        )
        .unwrap();
    let err = link::connect(&config(&server, Some((&cert, &stray.to_pem())))).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    on_record(&server, "unenrolled").await;
}

/// A client offering TLS 1.2 only, with a valid device certificate.
#[tokio::test]
async fn tls_1_2_offered_by_a_client_is_refused() {
    let server = server().await;
    let agent = server.agent().await;
    agent.handle.stop();
    let (cert, key) = enrolled(agent.dir());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(server.env.data.server_ca_pem().unwrap().as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect();
    let tls12 = rustls::ClientConfig::builder_with_provider(custody_crypto::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap())
        .unwrap();
    let tcp = TcpStream::connect(gateway(&server)).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let result = tokio_rustls::TlsConnector::from(Arc::new(tls12)).connect(name, tcp).await;
    let Err(err) = result else { panic!("the gateway speaks TLS 1.3 only") };
    assert!(err.to_string().to_lowercase().contains("protocol"), "{err}");
}

/// Runs a TLS server with `cert` and `key` on a port of its own; returns its address.
async fn impostor(server: &TestServer, cert: &str, key: &str, tls12_only: bool) -> String {
    let config = if tls12_only {
        rustls::ServerConfig::builder_with_provider(custody_crypto::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap()
    } else {
        server_config(cert, key, &ClientAuth::None, &[b"http/1.1"], server.env.app.clock()).unwrap()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("localhost:{}", listener.local_addr().unwrap().port());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    address
}

/// A server whose certificate the platform's CA issued, for the right name, but with a key
/// that is not the pinned one: the agent refuses it.
#[tokio::test]
async fn an_impostor_server_with_a_valid_certificate_but_another_key_is_refused() {
    let server = server().await;
    let agent = server.agent().await;
    agent.handle.stop();
    let (cert, key) = enrolled(agent.dir());
    let now = server.env.app.now();
    let issued = platform_ca(&server)
        .issue_server(&["localhost".into()], [10; 16], now, custody_core::time::days(30))
        .unwrap();
    let mut config = config(&server, Some((&cert, &key)));
    config.gateway = impostor(&server, &issued.cert_pem, &issued.key_pem, false).await;
    let err = link::connect(&config).await.unwrap_err();
    assert!(err.to_string().contains("pinned"), "{err}");
}

/// The real server's certificate and key, but over TLS 1.2: the agent does not speak it.
#[tokio::test]
async fn a_server_offering_tls_1_2_is_refused() {
    let server = server().await;
    let agent = server.agent().await;
    agent.handle.stop();
    let (cert, key) = enrolled(agent.dir());
    let (server_cert, server_key) = server.env.data.server_tls().unwrap();
    let mut config = config(&server, Some((&cert, &key)));
    config.gateway = impostor(&server, &server_cert, &server_key, true).await;
    let err = link::connect(&config).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("protocol"), "{err}");
}

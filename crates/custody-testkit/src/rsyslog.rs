//! A real rsyslog receiving syslog over TLS on loopback (Debian's `rsyslog` and
//! `rsyslog-openssl`), for the SIEM channel's tests: RFC 5425 framing, TLS, and what a SIEM's
//! collector actually stores.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A running rsyslogd that writes every message it takes, raw, one a line.
#[derive(Debug)]
pub struct Rsyslog {
    child: std::process::Child,
    out: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const OPENSSL_DRIVER: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so";

impl Rsyslog {
    /// Starts rsyslogd with this certificate and key (PEM) on a free loopback port; `None`
    /// (with a notice naming `test`) when it is not installed and not required.
    pub async fn start(test: &str, cert_pem: &str, key_pem: &str) -> Option<Self> {
        if !Path::new(RSYSLOGD).exists() || !Path::new(OPENSSL_DRIVER).exists() {
            assert!(
                std::env::var("CUSTODY_REQUIRE_RSYSLOG").as_deref() != Ok("1"),
                "CUSTODY_REQUIRE_RSYSLOG=1 but rsyslog or rsyslog-openssl is missing"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (rsyslog): {test} — install Debian rsyslog and rsyslog-openssl"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("a directory for rsyslog");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("cert.pem"), cert_pem).expect("certificate");
        std::fs::write(path("key.pem"), key_pem).expect("key");
        let out = path("received.log");
        let config = format!(
            "global(workDirectory=\"{work}\"\n\
             defaultNetstreamDriver=\"ossl\"\n\
             defaultNetstreamDriverCertFile=\"{cert}\"\n\
             defaultNetstreamDriverKeyFile=\"{key}\")\n\
             module(load=\"imtcp\" streamDriver.name=\"ossl\" streamDriver.mode=\"1\" \
             streamDriver.authMode=\"anon\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             *.* action(type=\"omfile\" file=\"{out}\" template=\"raw\")\n",
            work = dir.path().display(),
            cert = path("cert.pem").display(),
            key = path("key.pem").display(),
            out = out.display(),
        );
        std::fs::write(path("rsyslog.conf"), config).expect("configuration");
        let child = std::process::Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-iNONE")
            .arg("-f")
            .arg(path("rsyslog.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start rsyslogd");
        crate::eventually("rsyslog listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Some(Self { child, out, port, _dir: dir })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages it took so far, as it stored them.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

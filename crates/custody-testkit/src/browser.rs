//! Headless Chromium (Debian `chromium` and `chromium-driver`) driven over WebDriver, on a
//! profile of its own.
//!
//! Without Chromium and ChromeDriver, [`start`] prints a notice and returns `None`, so the test
//! passes, unless `CUSTODY_REQUIRE_BROWSER=1` (as in CI), which makes their absence a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use fantoccini::ClientBuilder;
use serde_json::json;

use crate::eventually;

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn chromedriver(path: &Path) -> (Driver, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(path)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    eventually("chromedriver to listen", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    (Driver(child), port)
}

/// A browser session; dropping it ends the browser.
pub struct Browser {
    /// The WebDriver client.
    pub client: fantoccini::Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Browser")
    }
}

/// Starts a headless Chromium with `args` added to the usual ones; `None` (with a notice
/// naming `test`) when it is not installed and not required.
pub async fn start(test: &str, args: &[String]) -> Option<Browser> {
    let (Some(chromium), Some(driver)) = (
        find(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]),
        find(&["/usr/bin/chromedriver"]),
    ) else {
        assert!(
            std::env::var("CUSTODY_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CUSTODY_REQUIRE_BROWSER=1 but chromium or chromedriver is missing"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (browser): {test} — install Debian chromium and chromium-driver"
        );
        return None;
    };
    let (driver, port) = chromedriver(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    all.push(format!("--user-data-dir={}", profile.path().display()));
    all.extend(args.iter().cloned());
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": all }
    });
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session");
    Some(Browser { client, _driver: driver, _profile: profile })
}

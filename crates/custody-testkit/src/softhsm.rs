//! A SoftHSM2 token (Debian's `softhsm2`) in a temporary directory, for the tests of
//! key-encryption keys held in a PKCS#11 module; OpenSC's `pkcs11-tool` (Debian's `opensc`)
//! shows what is on it, as an operator would look.
//!
//! SoftHSM2 finds its tokens through the file `SOFTHSM2_CONF` names, read when a process
//! loads the module, so everything that loads it here is a child process given
//! [`SoftHsm::env`]. (libsofthsm2 also brings OpenSSL into whatever loads it: never the test
//! process itself.) Without the tools, [`SoftHsm::token`] prints a notice and returns `None`,
//! unless `CUSTODY_REQUIRE_SOFTHSM=1` (as in CI).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian installs the module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every token made here.
pub const PIN: &str = "31415926";

/// An initialised, empty token labelled `custody`.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    /// A fresh token; `None` (with a notice naming `test`) when SoftHSM2 or OpenSC is missing
    /// and not required.
    pub fn token(test: &str) -> Option<Self> {
        let tools = Command::new("softhsm2-util").arg("--version").output().is_ok()
            && Command::new("pkcs11-tool").arg("--help").output().is_ok();
        if !tools || !Path::new(MODULE).exists() {
            assert!(
                std::env::var("CUSTODY_REQUIRE_SOFTHSM").as_deref() != Ok("1"),
                "CUSTODY_REQUIRE_SOFTHSM=1 but softhsm2 or opensc is missing"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (SoftHSM2): {test} — install Debian softhsm2 and opensc"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("a directory for the token");
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = Self { dir };
        let out = hsm
            .command("softhsm2-util")
            .args(["--init-token", "--free", "--label", "custody", "--pin", PIN, "--so-pin"])
            .arg("27182818")
            .output()
            .expect("softhsm2-util runs");
        assert!(out.status.success(), "init token: {}", String::from_utf8_lossy(&out.stderr));
        Some(hsm)
    }

    /// The variable a process needs to find this token.
    pub fn env(&self) -> (&'static str, PathBuf) {
        ("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
    }

    /// `program` set up to find this token.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        let (name, value) = self.env();
        c.env(name, value);
        c
    }

    /// `keys/pkcs11.toml` for this token, its PIN in `pin_file` beside it (mode 0600).
    pub fn configure(&self, keys_dir: &Path) {
        custody_crypto::private_files::write(&keys_dir.join("hsm.pin"), PIN.as_bytes(), false)
            .unwrap();
        std::fs::write(
            keys_dir.join("pkcs11.toml"),
            format!("module = \"{MODULE}\"\ntoken = \"custody\"\npin_file = \"hsm.pin\"\n"),
        )
        .unwrap();
    }

    /// What `pkcs11-tool --list-objects` shows of the token's private objects, logged in.
    pub fn objects(&self) -> String {
        let out = self
            .command("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", "custody", "--login", "--pin", PIN])
            .arg("--list-objects")
            .output()
            .expect("pkcs11-tool runs");
        assert!(out.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

//! The data directory: keys, certificates and the SQLite database of one installation.
//!
//! ```text
//! DATA_DIR/
//!   custody.db            SQLite database (when no database URL is given)
//!   keys/master.key       32 random bytes; every symmetric key is derived from it   (0600)
//!   keys/command.pk8      Ed25519 key that signs open commands, PKCS#8             (0600)
//!   keys/ca.pem           the internal CA certificate
//!   keys/ca.key           the internal CA key                                        (0600)
//!   tls/server.pem        the HTTPS and gateway certificate
//!   tls/server.key        its key                                                    (0600)
//!   tls/server-ca.pem     the CA agents and the CLI trust for the server certificate
//!   keys/metrics.token    bearer token for Prometheus at /metrics                   (0600)
//!   keys/checkpoint.pk8   Ed25519 key that signs audit checkpoints, PKCS#8           (0600)
//!   keys/checkpoint.vkey  its public verifier key, for auditors
//!   keys/kek-<id>.key     a key-encryption key: wraps people's own data keys           (0600)
//!   keys/kek.current      the id of the KEK that wraps new keys
//!   keys/pkcs11.toml      optional: a PKCS#11 module whose token holds KEKs (see `keks`)
//! ```
//!
//! Every directory is created 0700 and every file 0600 (the database and its `-wal` and `-shm`
//! files too). Secret files are refused when group- or world-readable, and so is the directory
//! itself, so a copied directory with loose permissions does not run (DESIGN.md §4 invariant 3).

use std::path::{Path, PathBuf};

use custody_core::Clock;
use custody_core::time::days;
use custody_crypto::kek::{Kek, LocalKek};
use custody_crypto::pki::{CertificateAuthority, generate_ca, spki_pin_of_pem};
use custody_crypto::sign::SigningKey;
use custody_crypto::{CryptoError, MasterKey, Rng, private_files};

use crate::KeyRing;

mod keks;

use keks::{CURRENT_KEK, kek_err};
pub use keks::{KekHome, PKCS11_CONFIG};

/// Why the data directory could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// `init` would overwrite existing keys.
    #[error("{0} already holds keys; refusing to overwrite them (use another --data-dir)")]
    AlreadyInitialised(PathBuf),
    /// A required file is missing.
    #[error("{0} is missing; run `custody init --data-dir …` first")]
    Missing(PathBuf),
    /// The directory, or something in it, is open to other users.
    #[error(transparent)]
    Exposed(#[from] private_files::Exposed),
    /// A secret file is readable by others.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A configuration file in the data directory is not valid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A key or certificate is not valid.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: CryptoError,
    },
}

/// A certificate the operator brings instead of the generated one.
#[derive(Debug, Clone)]
pub struct SuppliedCertificate {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// The CA that issued it, PEM (agents validate against it and pin the key).
    pub ca_pem: String,
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The directory.
    pub root: PathBuf,
    /// SHA-256 of the server's public key, hex: the pin agents check.
    pub server_pin_hex: String,
    /// The command verification key, base64.
    pub command_key: String,
    /// The audit checkpoint verifier key (`name+id+key`).
    pub checkpoint_key: String,
}

/// The name of an installation's audit log (its checkpoints' origin line and key name): the
/// first host name followed by `/custody-audit`.
pub fn audit_origin(hostnames: &[String]) -> String {
    format!("{}/custody-audit", hostnames.first().map_or("localhost", String::as_str))
}

/// An installation's data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io { path: path.to_owned(), source }
}

/// Writes `contents` to a new file that only the owner can read.
fn write_secret(path: &Path, contents: &[u8]) -> Result<(), SetupError> {
    private_files::write(path, contents, false).map_err(io(path))
}

/// Writes a certificate or public key: nothing secret, but private like everything in the
/// directory (the operator hands copies to whoever needs them).
fn write_public(path: &Path, contents: &[u8]) -> Result<(), SetupError> {
    private_files::write(path, contents, true).map_err(io(path))
}

/// Reads a secret file after checking nobody else can read it.
fn read_secret(path: &Path) -> Result<Vec<u8>, SetupError> {
    if !path.exists() {
        return Err(SetupError::Missing(path.to_owned()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SetupError::Insecure { path: path.to_owned(), mode });
        }
    }
    std::fs::read(path).map_err(io(path))
}

fn read_public(path: &Path) -> Result<String, SetupError> {
    if !path.exists() {
        return Err(SetupError::Missing(path.to_owned()));
    }
    std::fs::read_to_string(path).map_err(io(path))
}

fn key_err(path: &Path) -> impl FnOnce(CryptoError) -> SetupError + '_ {
    move |source| SetupError::Key { path: path.to_owned(), source }
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// The server certificate chain, PEM file.
    pub fn server_cert_path(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }

    /// The server key, PEM file.
    pub fn server_key_path(&self) -> PathBuf {
        self.tls_dir().join("server.key")
    }

    /// Whether `init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.keys_dir().join("master.key").exists()
    }

    /// Creates keys, the internal CA and the server certificate. Refuses to overwrite.
    pub fn init(
        &self,
        hostnames: &[String],
        supplied: Option<&SuppliedCertificate>,
        clock: &dyn Clock,
        rng: &Rng,
    ) -> Result<InitReport, SetupError> {
        if self.is_initialised() {
            return Err(SetupError::AlreadyInitialised(self.root.clone()));
        }
        let (keys, tls) = (self.keys_dir(), self.tls_dir());
        for dir in [&self.root, &keys, &tls] {
            private_files::create_dir(dir).map_err(io(dir))?;
        }
        let now = clock.now();
        let ca_path = keys.join("ca.key");
        let ca = generate_ca(
            "Custody internal CA",
            rng.bytes().map_err(key_err(&ca_path))?,
            now,
            days(3650),
        )
        .map_err(key_err(&ca_path))?;
        write_public(&keys.join("ca.pem"), ca.cert_pem.as_bytes())?;
        write_secret(&ca_path, ca.key_pem.as_bytes())?;

        let kek = LocalKek::create(&keys, rng).map_err(kek_err)?;
        write_public(&keys.join(CURRENT_KEK), format!("{}\n", kek.id()).as_bytes())?;

        let command_path = keys.join("command.pk8");
        let (command, pkcs8) = SigningKey::generate(rng).map_err(key_err(&command_path))?;
        write_secret(&command_path, &pkcs8)?;

        let (cert_pem, key_pem, server_ca_pem) = if let Some(s) = supplied {
            (s.cert_pem.clone(), s.key_pem.clone(), s.ca_pem.clone())
        } else {
            let authority =
                CertificateAuthority::load(&ca.cert_pem, &ca.key_pem).map_err(key_err(&ca_path))?;
            let server = authority
                .issue_server(hostnames, rng.bytes().map_err(key_err(&ca_path))?, now, days(825))
                .map_err(key_err(&ca_path))?;
            (server.cert_pem, server.key_pem.to_string(), ca.cert_pem.clone())
        };
        let pin = spki_pin_of_pem(&cert_pem).map_err(key_err(&self.server_cert_path()))?;
        write_public(&self.server_cert_path(), cert_pem.as_bytes())?;
        write_secret(&self.server_key_path(), key_pem.as_bytes())?;
        write_public(&tls.join("server-ca.pem"), server_ca_pem.as_bytes())?;

        let checkpoint_path = keys.join("checkpoint.pk8");
        let (checkpoint, pkcs8) = SigningKey::generate(rng).map_err(key_err(&checkpoint_path))?;
        write_secret(&checkpoint_path, &pkcs8)?;
        let signer =
            custody_audit::checkpoint::NoteSigner::new(&audit_origin(hostnames), checkpoint)
                .map_err(|_| SetupError::Key {
                    path: checkpoint_path.clone(),
                    source: CryptoError::InvalidKey("checkpoint key name"),
                })?;
        write_public(
            &keys.join("checkpoint.vkey"),
            format!("{}\n", signer.verifier_key()).as_bytes(),
        )?;

        let metrics_path = keys.join("metrics.token");
        let metrics: [u8; 24] = rng.bytes().map_err(key_err(&metrics_path))?;
        write_secret(&metrics_path, data_encoding::BASE64URL_NOPAD.encode(&metrics).as_bytes())?;

        // The master key is written last: its presence marks a complete initialisation.
        let master_path = keys.join("master.key");
        let master = MasterKey::generate(rng).map_err(key_err(&master_path))?;
        write_secret(&master_path, master.expose_bytes())?;

        Ok(InitReport {
            root: self.root.clone(),
            server_pin_hex: data_encoding::HEXLOWER.encode(&pin),
            command_key: command.public_key().to_string(),
            checkpoint_key: signer.verifier_key(),
        })
    }

    /// Refuses a data directory that others could read: the directory, its key and
    /// certificate folders, the database with its `-wal` and `-shm` files, the queued mail and
    /// the checkpoints. Every command that loads the keys checks it first.
    pub fn check_private(&self) -> Result<(), SetupError> {
        let db = self.root.join(custody_store::SQLITE_FILE);
        let paths = [
            self.root.clone(),
            self.keys_dir(),
            self.tls_dir(),
            db.clone(),
            db.with_extension("db-wal"),
            db.with_extension("db-shm"),
            self.root.join("outbox"),
            self.checkpoint_dir(),
        ];
        Ok(private_files::check(&paths, &self.root)?)
    }

    /// Loads the keys the use cases need, refusing weak or exposed ones, and a directory
    /// others could read.
    pub fn load_keys(&self) -> Result<KeyRing, SetupError> {
        if !self.root.join("keys/master.key").exists() {
            return Err(SetupError::Missing(self.root.join("keys/master.key")));
        }
        self.check_private()?;
        let keys = self.keys_dir();
        let master_path = keys.join("master.key");
        let master =
            MasterKey::from_bytes(&read_secret(&master_path)?).map_err(key_err(&master_path))?;
        let command_path = keys.join("command.pk8");
        let command =
            SigningKey::from_pkcs8(&read_secret(&command_path)?).map_err(key_err(&command_path))?;
        let ca_key_path = keys.join("ca.key");
        let ca_key =
            String::from_utf8(read_secret(&ca_key_path)?).map_err(|_| SetupError::Key {
                path: ca_key_path.clone(),
                source: CryptoError::InvalidKey("not PEM"),
            })?;
        let ca = CertificateAuthority::load(&read_public(&keys.join("ca.pem"))?, &ca_key)
            .map_err(key_err(&ca_key_path))?;
        let checkpoint_path = keys.join("checkpoint.pk8");
        let checkpoint_key = SigningKey::from_pkcs8(&read_secret(&checkpoint_path)?)
            .map_err(key_err(&checkpoint_path))?;
        let vkey = self.checkpoint_verifier_key()?;
        let name = vkey.split('+').next().unwrap_or_default().to_owned();
        let invalid = |why| SetupError::Key {
            path: checkpoint_path.clone(),
            source: CryptoError::InvalidKey(why),
        };
        let checkpoint = custody_audit::checkpoint::NoteSigner::new(&name, checkpoint_key)
            .map_err(|_| invalid("checkpoint key name"))?;
        if checkpoint.verifier_key() != vkey {
            return Err(invalid("does not match checkpoint.vkey"));
        }
        let kek_ring = self.load_keks(&master)?;
        KeyRing::new(&master, kek_ring, command, ca, checkpoint).map_err(key_err(&master_path))
    }

    /// The bearer token Prometheus presents at `/metrics`.
    pub fn metrics_token(&self) -> Result<String, SetupError> {
        let path = self.keys_dir().join("metrics.token");
        let bytes = read_secret(&path)?;
        let token = String::from_utf8(bytes).map_err(|_| SetupError::Key {
            path: path.clone(),
            source: CryptoError::InvalidKey("not text"),
        })?;
        let token = token.trim().to_owned();
        if token.len() < 24 {
            return Err(SetupError::Key {
                path,
                source: CryptoError::InvalidKey("metrics token too short"),
            });
        }
        Ok(token)
    }

    /// The path of the configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("custody.toml")
    }

    /// The server certificate chain and key, PEM.
    pub fn server_tls(&self) -> Result<(String, String), SetupError> {
        let key_path = self.server_key_path();
        let key = String::from_utf8(read_secret(&key_path)?).map_err(|_| SetupError::Key {
            path: key_path,
            source: CryptoError::InvalidKey("not PEM"),
        })?;
        Ok((read_public(&self.server_cert_path())?, key))
    }

    /// The checkpoint verifier key (`name+id+key`), as auditors need it.
    pub fn checkpoint_verifier_key(&self) -> Result<String, SetupError> {
        read_public(&self.keys_dir().join("checkpoint.vkey")).map(|k| k.trim().to_owned())
    }

    /// Where signed checkpoints are written for shipping off the machine.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The CA clients trust for the server certificate, PEM.
    pub fn server_ca_pem(&self) -> Result<String, SetupError> {
        read_public(&self.tls_dir().join("server-ca.pem"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_core::{ManualClock, Timestamp};

    #[test]
    fn init_then_load_and_refuse_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let clock = ManualClock::new(Timestamp::from_millis(1_893_456_000_000));
        let report = data.init(&["localhost".into()], None, &clock, &Rng::new()).unwrap();
        assert_eq!(report.server_pin_hex.len(), 64);
        assert!(data.load_keys().is_ok());
        assert!(matches!(
            data.init(&["localhost".into()], None, &clock, &Rng::new()),
            Err(SetupError::AlreadyInitialised(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let master = dir.path().join("keys/master.key");
            assert_eq!(std::fs::metadata(&master).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(data.load_keys(), Err(SetupError::Insecure { .. })));
        }
    }

    /// `init` makes a KEK file and names it current; new subject keys are wrapped under it, and
    /// what the master key's KEK wrapped before still opens. A `kek.current` that names no KEK
    /// file, a KEK file others can read, or one that is not a key stop the keys loading.
    #[test]
    fn init_makes_a_kek_that_wraps_new_keys_and_a_broken_one_stops_loading() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let clock = ManualClock::new(Timestamp::from_millis(1_893_456_000_000));
        data.init(&["localhost".into()], None, &clock, &Rng::new()).unwrap();
        let keys = dir.path().join("keys");
        let current = std::fs::read_to_string(keys.join(CURRENT_KEK)).unwrap().trim().to_owned();
        assert!(keys.join(format!("kek-{current}.key")).exists());
        let ring = data.load_keys().unwrap().keks;
        assert_eq!(ring.current(), current);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [current.as_str(), "master"]);
        let key = [7u8; 32];
        assert_eq!(ring.wrap(b"per_alice", &key).unwrap().kek, current);

        // Before KEK files: no kek.current, new keys under the master key's KEK.
        std::fs::remove_file(keys.join(CURRENT_KEK)).unwrap();
        let before = data.load_keys().unwrap().keks;
        assert_eq!(before.current(), "master");
        let old = before.wrap(b"per_alice", &key).unwrap();
        std::fs::write(keys.join(CURRENT_KEK), format!("{current}\n")).unwrap();
        let after = data.load_keys().unwrap().keks;
        assert_eq!(*after.unwrap(b"per_alice", &old).unwrap(), key, "the old key still opens");

        std::fs::write(keys.join(CURRENT_KEK), "file-0000000000000000\n").unwrap();
        assert!(matches!(data.load_keys(), Err(SetupError::Key { .. })));
        std::fs::write(keys.join(CURRENT_KEK), format!("{current}\n")).unwrap();
        let stray = keys.join("kek-file-00000000000000ff.key");
        private_files::write(&stray, &[1; 31], false).unwrap();
        assert!(matches!(data.load_keys(), Err(SetupError::Key { .. })), "not 32 bytes");
        std::fs::remove_file(&stray).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let file = keys.join(format!("kek-{current}.key"));
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(matches!(data.load_keys(), Err(SetupError::Insecure { .. })));
        }
    }

    /// Everything `init` makes is the owner's alone, even in a directory the operator made
    /// open; a directory (or database) others could read is refused with the command to fix it.
    #[cfg(unix)]
    #[test]
    fn init_makes_everything_private_and_an_open_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = DataDir::new(&root);
        let clock = ManualClock::new(Timestamp::from_millis(1_893_456_000_000));
        data.init(&["localhost".into()], None, &clock, &Rng::new()).unwrap();
        let mut seen = 0;
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::metadata(&path).unwrap();
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(meta.permissions().mode() & 0o777, want, "{}", path.display());
            if meta.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            seen += 1;
        }
        assert!(seen > 10, "the keys, certificates and folders: {seen}");
        assert!(data.load_keys().is_ok());
        let db = root.join(custody_store::SQLITE_FILE);
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = data.load_keys().map(|_| ()).unwrap_err();
        assert!(refused.to_string().contains("chmod -R go-rwx"), "{refused}");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert!(matches!(data.load_keys(), Err(SetupError::Exposed(_))));
    }

    #[test]
    fn a_supplied_certificate_is_used_and_its_ca_given_to_agents() {
        use custody_core::time::days;
        let (rng, now) = (Rng::new(), Timestamp::from_millis(1_893_456_000_000));
        let ca = generate_ca("Operator CA", rng.bytes().unwrap(), now, days(365)).unwrap();
        let cert = CertificateAuthority::load(&ca.cert_pem, &ca.key_pem)
            .unwrap()
            .issue_server(&["lockers.example.org".into()], rng.bytes().unwrap(), now, days(90))
            .unwrap();
        let supplied = SuppliedCertificate {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.to_string(),
            ca_pem: ca.cert_pem.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let report = data.init(&[], Some(&supplied), &ManualClock::new(now), &rng).unwrap();
        let (served, key) = data.server_tls().unwrap();
        assert_eq!((served, key), (cert.cert_pem.clone(), cert.key_pem.to_string()));
        assert_eq!(data.server_ca_pem().unwrap(), ca.cert_pem);
        let pin = spki_pin_of_pem(&cert.cert_pem).unwrap();
        assert_eq!(report.server_pin_hex, data_encoding::HEXLOWER.encode(&pin));
    }

    #[test]
    fn a_default_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let clock = ManualClock::new(Timestamp::from_millis(1_893_456_000_000));
        data.init(&["localhost".into()], None, &clock, &Rng::new()).unwrap();
        let master = dir.path().join("keys/master.key");
        std::fs::remove_file(&master).unwrap();
        write_secret(&master, &[0u8; 32]).unwrap();
        let err = data.load_keys().unwrap_err();
        assert!(err.to_string().contains("not random"), "{err}");
    }
}

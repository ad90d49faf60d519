//! The key-encryption keys of a data directory: `kek-<id>.key` files in the key directory, the
//! one derived from the master key, and, when `keys/pkcs11.toml` names a PKCS#11 module, the
//! KEKs on its token. `keys/kek.current` names the one that wraps new keys.
//!
//! ```toml
//! # keys/pkcs11.toml
//! module = "/usr/lib/softhsm/libsofthsm2.so"   # the module's shared library
//! token = "custody"                            # the token's label
//! pin_file = "/etc/custody/hsm.pin"            # the user PIN, readable by the service alone
//! ```
//!
//! A relative `pin_file` is read from the key directory. With the file present, every command
//! that loads the keys opens the token, and refuses to start when it cannot (fail closed): a
//! key it wrapped would not open otherwise.

use std::path::PathBuf;
use std::sync::Arc;

use custody_crypto::kek::pkcs11::{self, Pkcs11Token};
use custody_crypto::kek::{Kek, KekFileError, KekRing, LocalKek};
use custody_crypto::{CryptoError, MasterKey, Rng};

use super::{DataDir, SetupError, io, key_err, read_public, read_secret, write_public};

/// The file in the key directory naming the KEK that wraps new keys.
pub(super) const CURRENT_KEK: &str = "kek.current";
/// The file in the key directory that names a PKCS#11 module and token.
pub const PKCS11_CONFIG: &str = "pkcs11.toml";

/// Where a new key-encryption key is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekHome {
    /// A `kek-<id>.key` file in the key directory.
    File,
    /// The token `keys/pkcs11.toml` names.
    Pkcs11,
}

/// `keys/pkcs11.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Pkcs11Config {
    module: PathBuf,
    token: String,
    pin_file: PathBuf,
}

pub(super) fn kek_err(e: KekFileError) -> SetupError {
    match e {
        KekFileError::Io { path, source } => SetupError::Io { path, source },
        KekFileError::Malformed(path) => {
            SetupError::Key { path, source: CryptoError::InvalidKey("not a key-encryption key") }
        }
        KekFileError::Crypto(source) => SetupError::Key { path: PathBuf::new(), source },
    }
}

impl DataDir {
    fn pkcs11_config_path(&self) -> PathBuf {
        self.keys_dir().join(PKCS11_CONFIG)
    }

    /// Where `custody admin rotate-keys` makes a new KEK unless told: on the PKCS#11 token when
    /// `keys/pkcs11.toml` exists, in a file otherwise.
    pub fn default_kek_home(&self) -> KekHome {
        if self.pkcs11_config_path().exists() { KekHome::Pkcs11 } else { KekHome::File }
    }

    /// The token `keys/pkcs11.toml` names, logged in; `None` without the file.
    fn pkcs11_token(&self) -> Result<Option<Arc<Pkcs11Token>>, SetupError> {
        let path = self.pkcs11_config_path();
        if !path.exists() {
            return Ok(None);
        }
        let config: Pkcs11Config = toml::from_str(&read_public(&path)?).map_err(|e| {
            SetupError::Config { path: path.clone(), message: e.message().to_owned() }
        })?;
        let pin_path = self.keys_dir().join(&config.pin_file);
        let pin = zeroize::Zeroizing::new(read_secret(&pin_path)?);
        let pin = std::str::from_utf8(&pin).map_err(|_| SetupError::Config {
            path: pin_path.clone(),
            message: "the PIN is not text".into(),
        })?;
        let token =
            Pkcs11Token::open(&config.module, &config.token, pin.trim_end_matches(['\r', '\n']))
                .map_err(key_err(&path))?;
        Ok(Some(token))
    }

    /// Makes a new key-encryption key in `home` and names it current, so that keys wrapped from
    /// now on (by this process and by a server started afterwards) are wrapped under it. The
    /// older KEKs stay: what they wrapped still opens. Returns the new KEK's id.
    pub fn rotate_kek(&self, home: KekHome, rng: &Rng) -> Result<String, SetupError> {
        let keys = self.keys_dir();
        let id = match home {
            KekHome::File => LocalKek::create(&keys, rng).map_err(kek_err)?.id().to_owned(),
            KekHome::Pkcs11 => {
                let token = self
                    .pkcs11_token()?
                    .ok_or_else(|| SetupError::Missing(self.pkcs11_config_path()))?;
                token.generate(rng).map_err(key_err(&self.pkcs11_config_path()))?.id().to_owned()
            }
        };
        // Named through a rename, so a crash leaves the old name or the new, never half a file.
        let next = keys.join("kek.current.next");
        write_public(&next, format!("{id}\n").as_bytes())?;
        let current = keys.join(CURRENT_KEK);
        std::fs::rename(&next, &current).map_err(io(&current))?;
        std::fs::File::open(&keys).and_then(|d| d.sync_all()).map_err(io(&keys))?;
        Ok(id)
    }

    /// The key-encryption keys alone, as [`DataDir::load_keys`] holds them (for tools that
    /// wrap or check subjects' keys outside the application).
    pub fn keks(&self) -> Result<KekRing, SetupError> {
        self.check_private()?;
        let path = self.keys_dir().join("master.key");
        let master = MasterKey::from_bytes(&read_secret(&path)?).map_err(key_err(&path))?;
        self.load_keks(&master)
    }

    /// The ids of the KEKs that could be retired: the files in the key directory and the KEKs
    /// on the token (the master key's own is never retired).
    pub fn held_keks(&self) -> Result<Vec<String>, SetupError> {
        let files = LocalKek::files_in(&self.keys_dir()).map_err(kek_err)?;
        let mut ids: Vec<String> = files.iter().filter_map(|p| LocalKek::id_of(p)).collect();
        if let Some(token) = self.pkcs11_token()? {
            let keks = token.keks().map_err(key_err(&self.pkcs11_config_path()))?;
            ids.extend(keks.iter().map(|k| k.id().to_owned()));
        }
        Ok(ids)
    }

    /// Deletes the KEK `id` (a retirement: nothing it wrapped is left): its file, synced so it
    /// is gone after a crash too, or its key on the token.
    pub fn remove_kek(&self, id: &str) -> Result<(), SetupError> {
        let keys = self.keys_dir();
        if id.starts_with(pkcs11::ID_PREFIX) {
            let config = self.pkcs11_config_path();
            let token = self.pkcs11_token()?.ok_or_else(|| SetupError::Missing(config.clone()))?;
            if token.destroy(id).map_err(key_err(&config))? {
                return Ok(());
            }
            return Err(SetupError::Key {
                path: config,
                source: CryptoError::InvalidKey("no such key on the token"),
            });
        }
        let path = keys.join(format!("kek-{id}.key"));
        if LocalKek::id_of(&path).as_deref() != Some(id) {
            return Err(SetupError::Key { path, source: CryptoError::InvalidKey("not a KEK id") });
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
        std::fs::File::open(&keys).and_then(|d| d.sync_all()).map_err(io(&keys))
    }

    /// The key-encryption keys: every `kek-<id>.key` in the key directory, those on the token
    /// when there is one, and the one derived from the master key, which wrapped subject keys
    /// before KEKs had files of their own. New keys are wrapped under the KEK `kek.current`
    /// names; without that file (an installation from before), under the derived one.
    pub(super) fn load_keks(&self, master: &MasterKey) -> Result<KekRing, SetupError> {
        let keys = self.keys_dir();
        let derived: Arc<dyn Kek> =
            Arc::new(LocalKek::derived(master).map_err(key_err(&keys.join("master.key")))?);
        let mut held: Vec<Arc<dyn Kek>> = Vec::new();
        for path in LocalKek::files_in(&keys).map_err(kek_err)? {
            let bytes = zeroize::Zeroizing::new(read_secret(&path)?);
            held.push(Arc::new(LocalKek::from_file(&path, &bytes).map_err(kek_err)?));
        }
        if let Some(token) = self.pkcs11_token()? {
            let on_token = token.keks().map_err(key_err(&self.pkcs11_config_path()))?;
            held.extend(on_token.into_iter().map(|k| Arc::new(k) as Arc<dyn Kek>));
        }
        let current_path = keys.join(CURRENT_KEK);
        if !current_path.exists() {
            return Ok(KekRing::new(derived, held));
        }
        let named = read_public(&current_path)?.trim().to_owned();
        let Some(current) = held.iter().find(|k| k.id() == named).cloned() else {
            let why = if named.starts_with(pkcs11::ID_PREFIX) {
                "names a KEK on no token keys/pkcs11.toml reaches"
            } else {
                "names no kek-<id>.key in the key directory"
            };
            return Err(SetupError::Key {
                path: current_path,
                source: CryptoError::InvalidKey(why),
            });
        };
        Ok(KekRing::new(current, held.into_iter().chain([derived])))
    }
}

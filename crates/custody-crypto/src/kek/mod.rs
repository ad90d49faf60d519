//! Key-encryption keys (KEKs): what wraps each data subject's own key (envelope encryption).
//!
//! A subject's data key ([`SubjectKey`]) seals their personal data; a KEK seals the
//! data key, bound to the subject. What a KEK wraps is stored beside the KEK's id, so keys can be
//! rotated online: every data key is re-wrapped under a new KEK, and the old one is retired
//! once nothing names it. Destroying a subject's wrapped data key erases their data whichever
//! KEK wrapped it.
//!
//! Every backend wraps alike: AES-256-GCM, a random 96-bit nonce, the subject as associated
//! data, `nonce ‖ ciphertext ‖ tag` out. Backends:
//! - [`LocalKek`], read from a file: 32 random bytes in `kek-<id>.key` in the data directory's
//!   key directory, readable by the service's user alone. The default.
//! - [`LocalKek::derived`]: derived from the master key ([`Purpose::SubjectKeys`]), which
//!   wrapped every subject key before KEKs had files of their own. Installations from then read
//!   their keys through it until they are re-wrapped under a file KEK.
//! - [`pkcs11::Pkcs11Kek`] (feature `pkcs11`): an AES-256 key inside a PKCS#11 module (an HSM)
//!   that never leaves it; the module wraps and unwraps.
//!
//! A [`KekRing`] holds the KEKs an installation has and the one that wraps new keys. A wrapped
//! key that names a KEK the ring does not hold does not open: nothing is guessed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::seal::Sealer;
use crate::{CryptoError, MasterKey, Purpose, Rng};

#[cfg(feature = "pkcs11")]
pub mod pkcs11;

/// The id [`LocalKek::derived`] goes by.
pub const DERIVED_KEK_ID: &str = "master";

/// A key-encryption key.
pub trait Kek: Send + Sync + fmt::Debug {
    /// Its id, stored beside everything it wraps.
    fn id(&self) -> &str;

    /// `key` sealed for `context` (the subject it belongs to).
    fn wrap(&self, context: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, CryptoError>;

    /// The key in `wrapped`, if this KEK sealed it for `context`.
    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError>;
}

/// Why a KEK file could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KekFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a KEK: not 32 bytes, or not named `kek-<id>.key`.
    #[error("{0}: not a key-encryption key (32 bytes in kek-<id>.key)")]
    Malformed(PathBuf),
    /// Making a key failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// One data subject's own key. It is random (not derived), so that destroying its stored,
/// wrapped copy destroys it; it is kept only wrapped under a key-encryption key
/// (this module), bound to the subject's id.
pub struct SubjectKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(<key>)")
    }
}

impl SubjectKey {
    /// A new random key.
    pub fn generate(rng: &Rng) -> Result<Self, CryptoError> {
        Ok(Self(Zeroizing::new(rng.bytes()?)))
    }

    /// The key wrapped for `subject` under the ring's current KEK, for storage.
    pub fn wrap(&self, keks: &KekRing, subject: &str) -> Result<Wrapped, CryptoError> {
        keks.wrap(subject.as_bytes(), &self.0)
    }

    /// The key of `subject` from its wrapped form; fails if it was wrapped for someone else or
    /// under a KEK the ring does not hold.
    pub fn unwrap(keks: &KekRing, subject: &str, wrapped: &Wrapped) -> Result<Self, CryptoError> {
        keks.unwrap(subject.as_bytes(), wrapped).map(Self)
    }

    /// A sealer under this key.
    pub fn sealer(&self) -> Result<Sealer, CryptoError> {
        Sealer::from_key(&self.0)
    }
}

/// A KEK this process holds in memory: read from a file of its own, or derived from the master
/// key.
pub struct LocalKek {
    id: String,
    sealer: Sealer,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKek").field("id", &self.id).finish_non_exhaustive()
    }
}

const PREFIX: &str = "kek-";
const SUFFIX: &str = ".key";

impl LocalKek {
    /// The KEK derived from `master` (id [`DERIVED_KEK_ID`]): how subject keys were wrapped
    /// before KEKs had files of their own.
    pub fn derived(master: &MasterKey) -> Result<Self, CryptoError> {
        Ok(Self {
            id: DERIVED_KEK_ID.to_owned(),
            sealer: Sealer::new(master, Purpose::SubjectKeys)?,
        })
    }

    /// A new KEK, written to `kek-<id>.key` in `dir` (mode 0600, synced) under a fresh random
    /// id. Never overwrites a file.
    pub fn create(dir: &Path, rng: &Rng) -> Result<Self, KekFileError> {
        let id = format!("file-{}", data_encoding::HEXLOWER.encode(&rng.bytes::<8>()?));
        let key = Zeroizing::new(rng.bytes::<32>()?);
        let path = dir.join(format!("{PREFIX}{id}{SUFFIX}"));
        crate::private_files::write(&path, key.as_slice(), false)
            .map_err(|source| KekFileError::Io { path, source })?;
        Ok(Self { sealer: Sealer::from_key(&key)?, id })
    }

    /// The KEK in `path`.
    pub fn load(path: &Path) -> Result<Self, KekFileError> {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|source| KekFileError::Io { path: path.to_owned(), source })?,
        );
        Self::from_file(path, &bytes)
    }

    /// The KEK of a file already read (by a caller that checks its permissions first).
    pub fn from_file(path: &Path, bytes: &[u8]) -> Result<Self, KekFileError> {
        let id = Self::id_of(path).ok_or_else(|| KekFileError::Malformed(path.to_owned()))?;
        let key: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.try_into().map_err(|_| KekFileError::Malformed(path.to_owned()))?);
        Ok(Self { sealer: Sealer::from_key(&key)?, id })
    }

    /// The KEK files in `dir`, by name.
    pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, KekFileError> {
        let io = |source| KekFileError::Io { path: dir.to_owned(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if Self::id_of(&path).is_some() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Every KEK file in `dir`, by id.
    pub fn load_all(dir: &Path) -> Result<Vec<Self>, KekFileError> {
        Self::files_in(dir)?.iter().map(|path| Self::load(path)).collect()
    }

    /// The id in the name of the KEK file at `path` (`file-` and 16 lowercase hex digits), if
    /// its name is one.
    pub fn id_of(path: &Path) -> Option<String> {
        let name = path.file_name()?.to_str()?;
        let id = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let hex = id.strip_prefix("file-")?;
        (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| id.to_owned())
    }
}

impl Kek for LocalKek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, context: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        self.sealer.seal(context, key)
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let plain = Zeroizing::new(self.sealer.open(context, wrapped)?);
        let key: [u8; 32] =
            plain.as_slice().try_into().map_err(|_| CryptoError::InvalidKey("wrapped key"))?;
        Ok(Zeroizing::new(key))
    }
}

/// Every KEK an installation holds, and the one that wraps new keys.
#[derive(Debug, Clone)]
pub struct KekRing {
    current: Arc<dyn Kek>,
    by_id: BTreeMap<String, Arc<dyn Kek>>,
}

/// A wrapped key and the KEK that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The KEK's id.
    pub kek: String,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub bytes: Vec<u8>,
}

impl KekRing {
    /// A ring whose new keys are wrapped by `current`; `others` still open what they wrapped.
    pub fn new(current: Arc<dyn Kek>, others: impl IntoIterator<Item = Arc<dyn Kek>>) -> Self {
        let mut by_id: BTreeMap<String, Arc<dyn Kek>> =
            others.into_iter().map(|k| (k.id().to_owned(), k)).collect();
        by_id.insert(current.id().to_owned(), Arc::clone(&current));
        Self { current, by_id }
    }

    /// The id of the KEK that wraps new keys.
    pub fn current(&self) -> &str {
        self.current.id()
    }

    /// The ids of every KEK held.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    /// `key` wrapped for `context` under the current KEK.
    pub fn wrap(&self, context: &[u8], key: &[u8; 32]) -> Result<Wrapped, CryptoError> {
        Ok(Wrapped { kek: self.current.id().to_owned(), bytes: self.current.wrap(context, key)? })
    }

    /// The key in `wrapped`, if the KEK it names is held and sealed it for `context`.
    pub fn unwrap(
        &self,
        context: &[u8],
        wrapped: &Wrapped,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.by_id
            .get(&wrapped.kek)
            .ok_or(CryptoError::InvalidKey("no such key-encryption key"))?
            .unwrap(context, &wrapped.bytes)
    }

    /// `wrapped` under the current KEK (unchanged when it is already): a rotation's step.
    pub fn rewrap(&self, context: &[u8], wrapped: &Wrapped) -> Result<Wrapped, CryptoError> {
        if wrapped.kek == self.current() {
            return Ok(wrapped.clone());
        }
        let key = self.unwrap(context, wrapped)?;
        self.wrap(context, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(keks: Vec<Arc<dyn Kek>>) -> KekRing {
        let mut keks = keks.into_iter();
        let current = keks.next().unwrap();
        KekRing::new(current, keks)
    }

    #[test]
    fn subject_keys_wrap_for_one_subject_and_seal_their_data() {
        let rng = Rng::new();
        let master = MasterKey::generate(&rng).unwrap();
        let ring_of = |master: &MasterKey| {
            let kek = LocalKek::derived(master).unwrap();
            KekRing::new(Arc::new(kek), [])
        };
        let keks = ring_of(&master);
        let key = SubjectKey::generate(&rng).unwrap();
        let wrapped = key.wrap(&keks, "per_alice").unwrap();
        let text = key.sealer().unwrap().seal(b"ctx", b"Alice lost her phone").unwrap();

        let again = SubjectKey::unwrap(&keks, "per_alice", &wrapped).unwrap();
        assert_eq!(again.sealer().unwrap().open(b"ctx", &text).unwrap(), b"Alice lost her phone");
        assert!(SubjectKey::unwrap(&keks, "per_bob", &wrapped).is_err(), "another subject");
        let other = ring_of(&MasterKey::generate(&rng).unwrap());
        assert!(SubjectKey::unwrap(&other, "per_alice", &wrapped).is_err(), "another KEK");
        let stranger = SubjectKey::generate(&rng).unwrap();
        assert!(stranger.sealer().unwrap().open(b"ctx", &text).is_err(), "another key");
    }

    #[test]
    fn a_file_kek_wraps_for_one_subject_and_reads_back_from_its_file() {
        let rng = Rng::new();
        let dir = tempfile::tempdir().unwrap();
        let kek = LocalKek::create(dir.path(), &rng).unwrap();
        let key = rng.bytes::<32>().unwrap();
        let wrapped = kek.wrap(b"per_alice", &key).unwrap();
        assert_eq!(*kek.unwrap(b"per_alice", &wrapped).unwrap(), key);
        assert!(kek.unwrap(b"per_bob", &wrapped).is_err(), "another subject");
        assert!(!wrapped.windows(8).any(|w| key.windows(8).any(|k| k == w)));

        let again = LocalKek::load_all(dir.path()).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id(), kek.id());
        assert_eq!(*again[0].unwrap(b"per_alice", &wrapped).unwrap(), key);
        let other = LocalKek::create(dir.path(), &rng).unwrap();
        assert_ne!(other.id(), kek.id());
        assert!(other.unwrap(b"per_alice", &wrapped).is_err(), "another KEK");
    }

    #[cfg(unix)]
    #[test]
    fn a_kek_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let rng = Rng::new();
        let dir = tempfile::tempdir().unwrap();
        let kek = LocalKek::create(dir.path(), &rng).unwrap();
        let path = dir.path().join(format!("kek-{}.key", kek.id()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    }

    #[test]
    fn a_file_that_is_not_a_kek_is_refused_and_others_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kek-file-00112233445566ff.key"), [0u8; 31]).unwrap();
        assert!(matches!(LocalKek::load_all(dir.path()), Err(KekFileError::Malformed(_))));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master.key"), [0u8; 32]).unwrap();
        std::fs::write(dir.path().join("kek-FILE-00112233445566FF.key"), [0u8; 32]).unwrap();
        assert!(LocalKek::load_all(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_ring_wraps_under_its_current_kek_and_rotates_what_others_wrapped() {
        let rng = Rng::new();
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate(&rng).unwrap();
        let derived: Arc<dyn Kek> = Arc::new(LocalKek::derived(&master).unwrap());
        let file: Arc<dyn Kek> = Arc::new(LocalKek::create(dir.path(), &rng).unwrap());
        let key = rng.bytes::<32>().unwrap();

        let before = ring_of(vec![Arc::clone(&derived)]);
        let old = before.wrap(b"per_alice", &key).unwrap();
        assert_eq!(old.kek, DERIVED_KEK_ID);

        let after = ring_of(vec![Arc::clone(&file), derived]);
        assert_eq!(*after.unwrap(b"per_alice", &old).unwrap(), key, "old keys still open");
        let new = after.rewrap(b"per_alice", &old).unwrap();
        assert_eq!(new.kek, file.id());
        assert_eq!(*after.unwrap(b"per_alice", &new).unwrap(), key);
        assert_eq!(after.rewrap(b"per_alice", &new).unwrap(), new, "done once");
        assert!(after.rewrap(b"per_bob", &old).is_err(), "another subject");

        let retired = ring_of(vec![file]);
        assert!(retired.unwrap(b"per_alice", &old).is_err(), "a retired KEK opens nothing");
        assert_eq!(*retired.unwrap(b"per_alice", &new).unwrap(), key);
    }

    #[test]
    fn the_derived_kek_reads_subject_keys_wrapped_before_keks_had_files() {
        let rng = Rng::new();
        let master = MasterKey::generate(&rng).unwrap();
        let key = rng.bytes::<32>().unwrap();
        // As subject keys were wrapped then: the master key's subject-key sealer, the subject's
        // id as associated data.
        let old = Sealer::new(&master, Purpose::SubjectKeys).unwrap();
        let wrapped = old.seal(b"per_alice", &key).unwrap();
        let kek = LocalKek::derived(&master).unwrap();
        assert_eq!(*kek.unwrap(b"per_alice", &wrapped).unwrap(), key);
    }
}

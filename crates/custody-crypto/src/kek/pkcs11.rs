//! Key-encryption keys inside a PKCS#11 module: an HSM, a cloud HSM's client library, or
//! SoftHSM2 for tests.
//!
//! Each KEK is an AES-256 secret key on the token, made there sensitive and non-extractable,
//! labelled `custody-kek-hsm-<16 hex digits>` (its KEK id is `hsm-<16 hex digits>`). Custody
//! never sees it: the module seals each subject's data key with AES-256-GCM under it
//! (`C_Encrypt`, a random 96-bit nonce from this process, the subject as associated data) and
//! opens it again (`C_Decrypt`). What comes out is laid out as every other KEK's output,
//! `nonce ‖ ciphertext ‖ tag`, so a rotation moves keys between a file and a module either way.
//!
//! A module is loaded and initialised once per process ([`Pkcs11Token::open`] keeps a context
//! per module path): PKCS#11 allows one `C_Initialize` per process. A token is reached through
//! one read-write session, logged in as its user; calls on it take turns. A session's calls
//! are short (one AES-GCM operation on 32 bytes), so they run on the caller's thread.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::Kek;
use crate::{CryptoError, Rng};

/// What a KEK's label on the token starts with; the KEK id follows.
const LABEL_PREFIX: &str = "custody-kek-";
/// What every module KEK's id starts with.
pub const ID_PREFIX: &str = "hsm-";
const NONCE: usize = 12;
const TAG_BITS: u64 = 128;

fn failed(what: &str) -> impl Fn(Error) -> CryptoError + '_ {
    move |e| match e {
        Error::Pkcs11(rv, function) => CryptoError::Pkcs11(format!("{what}: {function:?}: {rv:?}")),
        other => CryptoError::Pkcs11(format!("{what}: {other}")),
    }
}

/// The module at `path`, loaded and initialised once for the whole process.
fn context(path: &Path) -> Result<Pkcs11, CryptoError> {
    static CONTEXTS: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| CryptoError::Pkcs11("module table poisoned".into()))?;
    if let Some(ctx) = contexts.get(path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(failed(&format!("loading {}", path.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of this process initialised the module already: it is usable.
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed("initialising the module")(e)),
    }
    contexts.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A token in a PKCS#11 module, logged in, that holds Custody's KEKs.
pub struct Pkcs11Token {
    label: String,
    session: Mutex<Session>,
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Pkcs11Token {
    /// The token labelled `label` in the module at `module`, logged in with the user `pin`.
    pub fn open(module: &Path, label: &str, pin: &str) -> Result<Arc<Self>, CryptoError> {
        let ctx = context(module)?;
        let slots = ctx.get_slots_with_token().map_err(failed("listing the slots"))?;
        let mut found = None;
        for slot in slots {
            let info = ctx.get_token_info(slot).map_err(failed("reading a token"))?;
            if info.label().trim_end() == label {
                found = Some(slot);
                break;
            }
        }
        let slot =
            found.ok_or_else(|| CryptoError::Pkcs11(format!("no token labelled {label:?}")))?;
        let session = ctx.open_rw_session(slot).map_err(failed("opening a session"))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
            // Login state is the application's, shared by its sessions: another session of
            // this process logged in already.
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(failed(&format!("logging in to token {label:?}"))(e)),
        }
        Ok(Arc::new(Self { label: label.to_owned(), session: Mutex::new(session) }))
    }

    fn session(&self) -> Result<std::sync::MutexGuard<'_, Session>, CryptoError> {
        self.session.lock().map_err(|_| CryptoError::Pkcs11("session poisoned".into()))
    }

    /// Every Custody KEK on the token.
    pub fn keks(self: &Arc<Self>) -> Result<Vec<Pkcs11Kek>, CryptoError> {
        let session = self.session()?;
        let template =
            [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(KeyType::AES)];
        let handles = session.find_objects(&template).map_err(failed("finding keys"))?;
        let mut keks = Vec::new();
        for handle in handles {
            let attrs = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(failed("reading a key's label"))?;
            let label = attrs.iter().find_map(|a| match a {
                Attribute::Label(l) => std::str::from_utf8(l).ok(),
                _ => None,
            });
            if let Some(id) = label.and_then(id_of_label) {
                keks.push(Pkcs11Kek { id, handle, token: Arc::clone(self), rng: Rng::new() });
            }
        }
        keks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keks)
    }

    /// A new KEK made on the token: AES-256, sensitive, never extractable, kept on the token.
    pub fn generate(self: &Arc<Self>, rng: &Rng) -> Result<Pkcs11Kek, CryptoError> {
        let id = format!("{ID_PREFIX}{}", data_encoding::HEXLOWER.encode(&rng.bytes::<8>()?));
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(format!("{LABEL_PREFIX}{id}").into_bytes()),
        ];
        let handle = self
            .session()?
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(failed("making a key"))?;
        Ok(Pkcs11Kek { id, handle, token: Arc::clone(self), rng: rng.clone() })
    }

    /// Destroys the KEK `id` on the token (a retirement: nothing it wrapped is left). Whether
    /// there was one.
    pub fn destroy(self: &Arc<Self>, id: &str) -> Result<bool, CryptoError> {
        let Some(kek) = self.keks()?.into_iter().find(|k| k.id == id) else {
            return Ok(false);
        };
        self.session()?.destroy_object(kek.handle).map_err(failed("destroying a key"))?;
        Ok(true)
    }
}

fn id_of_label(label: &str) -> Option<String> {
    let id = label.strip_prefix(LABEL_PREFIX)?;
    let hex = id.strip_prefix(ID_PREFIX)?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| id.to_owned())
}

/// A KEK on a PKCS#11 token.
pub struct Pkcs11Kek {
    id: String,
    handle: ObjectHandle,
    token: Arc<Pkcs11Token>,
    rng: Rng,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("id", &self.id)
            .field("token", &self.token.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Kek {
    /// Whether the token reports the key as sensitive and never extractable (what
    /// [`Pkcs11Token::generate`] asks for; a key put there by hand may not be).
    pub fn is_locked_in(&self) -> Result<bool, CryptoError> {
        let attrs = self
            .token
            .session()?
            .get_attributes(
                self.handle,
                &[AttributeType::Sensitive, AttributeType::NeverExtractable],
            )
            .map_err(failed("reading a key's attributes"))?;
        Ok(attrs
            .iter()
            .all(|a| matches!(a, Attribute::Sensitive(true) | Attribute::NeverExtractable(true)))
            && attrs.len() == 2)
    }
}

impl Kek for Pkcs11Kek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, context: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, CryptoError> {
        let nonce = self.rng.bytes::<NONCE>()?;
        let mut iv = nonce;
        let params =
            GcmParams::new(&mut iv, context, TAG_BITS.into()).map_err(failed("GCM parameters"))?;
        let sealed = self
            .token
            .session()?
            .encrypt(&Mechanism::AesGcm(params), self.handle, key)
            .map_err(failed("wrapping a key"))?;
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let (nonce, sealed) = wrapped
            .split_at_checked(NONCE)
            .ok_or(CryptoError::InvalidKey("wrapped key too short"))?;
        let mut iv: [u8; NONCE] = nonce.try_into().map_err(|_| CryptoError::Verification)?;
        let params =
            GcmParams::new(&mut iv, context, TAG_BITS.into()).map_err(failed("GCM parameters"))?;
        let plain = Zeroizing::new(
            self.token
                .session()?
                .decrypt(&Mechanism::AesGcm(params), self.handle, sealed)
                .map_err(|e| match e {
                    // The tag did not match: not this subject's key, or altered.
                    Error::Pkcs11(
                        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                        _,
                    ) => CryptoError::Verification,
                    other => failed("unwrapping a key")(other),
                })?,
        );
        let key: [u8; 32] =
            plain.as_slice().try_into().map_err(|_| CryptoError::InvalidKey("wrapped key"))?;
        Ok(Zeroizing::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_custody_keks_only() {
        assert_eq!(
            id_of_label("custody-kek-hsm-0123456789abcdef").as_deref(),
            Some("hsm-0123456789abcdef")
        );
        for other in [
            "hsm-0123456789abcdef",
            "custody-kek-hsm-0123456789ABCDEF",
            "custody-kek-hsm-0123",
            "custody-kek-file-0123456789abcdef",
            "payments-key",
        ] {
            assert_eq!(id_of_label(other), None, "{other}");
        }
    }
}

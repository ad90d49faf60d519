//! Key-encryption keys on a real PKCS#11 token (SoftHSM2): made there, locked in, wrapping and
//! unwrapping subjects' keys inside the module, interchangeable with a file KEK in a rotation.
//!
//! SoftHSM2 finds its token through `SOFTHSM2_CONF`, read when the module loads, so the test
//! runs its checks in a child process of this binary given that variable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::path::Path;
use std::sync::Arc;

use custody_crypto::Rng;
use custody_crypto::kek::pkcs11::Pkcs11Token;
use custody_crypto::kek::{Kek as _, KekRing, LocalKek};
use custody_testkit::softhsm::{MODULE, PIN, SoftHsm};

const CHILD: &str = "CUSTODY_PKCS11_CHILD";
const NAME: &str = "keks_on_a_token_wrap_unwrap_and_rotate_inside_the_module";

#[test]
fn keks_on_a_token_wrap_unwrap_and_rotate_inside_the_module() {
    if std::env::var_os(CHILD).is_some() {
        in_the_module();
        return;
    }
    let Some(hsm) = SoftHsm::token(NAME) else { return };
    let out = hsm
        .command(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the checks inside the module failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The key the checks left on the token, as the token itself reports it: AES-256, only
    // for encrypting and decrypting, never readable outside.
    let objects = hsm.objects();
    assert_eq!(objects.matches("label:      custody-kek-hsm-").count(), 1, "{objects}");
    assert!(objects.contains("Secret Key Object; AES length 32"), "{objects}");
    assert!(objects.contains("sensitive, always sensitive, never extractable"), "{objects}");
}

fn in_the_module() {
    let module = Path::new(MODULE);
    // Refused first: once this process has logged in, the token takes its later logins as done.
    let wrong = Pkcs11Token::open(module, "custody", "00000000").unwrap_err();
    assert!(wrong.to_string().contains("PinIncorrect"), "{wrong}");
    let missing = Pkcs11Token::open(module, "elsewhere", PIN).unwrap_err();
    assert!(missing.to_string().contains("no token labelled \"elsewhere\""), "{missing}");

    let rng = Rng::new();
    let token = Pkcs11Token::open(module, "custody", PIN).unwrap();
    assert!(token.keks().unwrap().is_empty());
    let kek = token.generate(&rng).unwrap();
    assert!(kek.id().starts_with("hsm-") && kek.id().len() == 20, "{}", kek.id());
    assert!(kek.is_locked_in().unwrap());

    let key = [42u8; 32];
    let wrapped = kek.wrap(b"per_alice", &key).unwrap();
    assert_eq!(wrapped.len(), 12 + 32 + 16, "nonce, key, tag");
    assert_ne!(kek.wrap(b"per_alice", &key).unwrap(), wrapped, "a fresh nonce each time");
    assert!(!wrapped.windows(32).any(|w| w == key), "the key is not in what is stored");
    assert_eq!(*kek.unwrap(b"per_alice", &wrapped).unwrap(), key);
    // Bound to the subject, and sealed: a tag that does not match is refused inside the module
    // (SoftHSM2 answers CKR_GENERAL_ERROR; others CKR_ENCRYPTED_DATA_INVALID).
    assert!(kek.unwrap(b"per_bob", &wrapped).is_err());
    let mut altered = wrapped.clone();
    altered[20] ^= 1;
    assert!(kek.unwrap(b"per_alice", &altered).is_err());
    assert!(kek.unwrap(b"per_alice", &wrapped[..8]).is_err());

    // A rotation from a file KEK to the token and back: the same key comes out each way.
    let dir = tempfile::tempdir().unwrap();
    let file: Arc<dyn custody_crypto::kek::Kek> =
        Arc::new(LocalKek::create(dir.path(), &rng).unwrap());
    let on_file = KekRing::new(Arc::clone(&file), []).wrap(b"per_carol", &key).unwrap();
    let to_token = KekRing::new(Arc::new(kek), [Arc::clone(&file)]);
    let moved = to_token.rewrap(b"per_carol", &on_file).unwrap();
    assert!(moved.kek.starts_with("hsm-"));

    // A second token handle (as the next process would open it) finds the key by its label.
    let again = Pkcs11Token::open(module, "custody", PIN).unwrap();
    let found: Vec<Arc<dyn custody_crypto::kek::Kek>> =
        again.keks().unwrap().into_iter().map(|k| Arc::new(k) as _).collect();
    assert_eq!(found.len(), 1);
    let only_token = KekRing::new(Arc::clone(&found[0]), []);
    assert_eq!(*only_token.unwrap(b"per_carol", &moved).unwrap(), key);
    let back = KekRing::new(file, found).rewrap(b"per_carol", &moved).unwrap();
    assert!(back.kek.starts_with("file-"));

    // Retiring destroys the key on the token; what it alone wrapped no longer opens.
    let spare = token.generate(&rng).unwrap();
    let lost = spare.wrap(b"per_dave", &key).unwrap();
    let spare_id = spare.id().to_owned();
    assert!(token.destroy(&spare_id).unwrap());
    assert!(!token.destroy(&spare_id).unwrap(), "gone already");
    assert_eq!(token.keks().unwrap().len(), 1);
    assert!(spare.unwrap(b"per_dave", &lost).is_err());
}

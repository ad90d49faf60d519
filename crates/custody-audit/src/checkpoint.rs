//! Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes, Ed25519.
//!
//! ```text
//! custody.example.org/audit          origin: names the log
//! 1234                               tree size
//! 3Ehw…Y0k=                          root hash, base64
//!
//! — custody.example.org/audit hnB5…  signature line: key name, base64(key id ‖ signature)
//! ```
//!
//! The key id is the first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`; verifier keys
//! are written `name+hex(key id)+base64(0x01 ‖ public key)`. Any tool that reads signed notes
//! (the Go `sumdb/note` package, witnesses) can check Custody's checkpoints.

use custody_crypto::sha256;
use custody_crypto::sign::{PublicKey, SigningKey};
use data_encoding::{BASE64, HEXLOWER};

use crate::merkle::Hash;

/// Largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// Why a checkpoint or key could not be read or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a well-formed note or checkpoint.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// No signature by the expected key.
    #[error("no signature by key {0}")]
    NotSigned(String),
    /// A signature by the expected key that does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// The note is for another log.
    #[error("checkpoint is for log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// What the checkpoint says.
        found: String,
        /// What the verifier expects.
        expected: String,
    },
}

/// A tree head: which log, how many entries, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of those entries.
    pub root: Hash,
    /// Extension lines (none are defined yet; kept for forward compatibility).
    pub extensions: Vec<String>,
}

fn valid_line(s: &str) -> bool {
    !s.is_empty() && !s.contains('\n') && s.chars().all(|c| !c.is_control())
}

impl Checkpoint {
    /// The note body: origin, size and base64 root, each on its own line.
    pub fn body(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(&self.root));
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Parses a note body.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let text = body.strip_suffix('\n').ok_or(CheckpointError::Malformed("checkpoint body"))?;
        let mut lines = text.split('\n');
        let origin =
            lines.next().filter(|l| valid_line(l)).ok_or(CheckpointError::Malformed("origin"))?;
        let size_text = lines.next().ok_or(CheckpointError::Malformed("size"))?;
        // Decimal without sign or leading zeros, as the spec requires.
        if size_text.is_empty()
            || !size_text.bytes().all(|b| b.is_ascii_digit())
            || (size_text.len() > 1 && size_text.starts_with('0'))
        {
            return Err(CheckpointError::Malformed("size"));
        }
        let size = size_text.parse().map_err(|_| CheckpointError::Malformed("size"))?;
        let root = lines
            .next()
            .and_then(|l| BASE64.decode(l.as_bytes()).ok())
            .and_then(|b| Hash::try_from(b).ok())
            .ok_or(CheckpointError::Malformed("root hash"))?;
        let extensions = lines.map(str::to_owned).collect::<Vec<_>>();
        if extensions.iter().any(|e| !valid_line(e)) {
            return Err(CheckpointError::Malformed("extension line"));
        }
        Ok(Self { origin: origin.to_owned(), size, root, extensions })
    }
}

fn key_id(name: &str, public: &PublicKey) -> [u8; 4] {
    let mut input = Vec::with_capacity(name.len() + 34);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ED25519);
    input.extend_from_slice(public.as_bytes());
    let h = sha256(&input);
    [h[0], h[1], h[2], h[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// Signs notes under a key name.
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl NoteSigner {
    /// A signer named `name` (no spaces or `+`).
    pub fn new(name: &str, key: SigningKey) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::Malformed("key name"));
        }
        let id = key_id(name, &key.public_key());
        Ok(Self { name: name.to_owned(), key, id })
    }

    /// The key name (the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key for this signer: `name+hex(id)+base64(0x01 ‖ public key)`.
    pub fn verifier_key(&self) -> String {
        let mut typed = vec![ED25519];
        typed.extend_from_slice(self.key.public_key().as_bytes());
        format!("{}+{}+{}", self.name, HEXLOWER.encode(&self.id), BASE64.encode(&typed))
    }

    /// Signs a note body (which ends with a newline) and returns the whole signed note.
    pub fn sign(&self, body: &str) -> Result<String, CheckpointError> {
        if !body.ends_with('\n') || body.contains("\n\n") {
            return Err(CheckpointError::Malformed("note body"));
        }
        let signature = self.key.sign_exact(body.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature);
        Ok(format!("{body}\n\u{2014} {} {}\n", self.name, BASE64.encode(&blob)))
    }

    /// Signs a checkpoint.
    pub fn sign_checkpoint(&self, c: &Checkpoint) -> Result<String, CheckpointError> {
        self.sign(&c.body())
    }
}

/// Checks notes signed by one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: PublicKey,
}

impl NoteVerifier {
    /// Parses a verifier key, `name+hex(id)+base64(0x01 ‖ public key)`, checking that the id
    /// belongs to the key.
    pub fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let bad = CheckpointError::Malformed("verifier key");
        let (name, rest) = vkey.trim().split_once('+').ok_or(bad.clone())?;
        let (id_hex, key_b64) = rest.split_once('+').ok_or(bad.clone())?;
        if !valid_name(name) || id_hex.len() != 8 {
            return Err(bad);
        }
        let id: [u8; 4] = HEXLOWER
            .decode(id_hex.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(bad.clone())?;
        let typed = BASE64.decode(key_b64.as_bytes()).map_err(|_| bad.clone())?;
        let (&kind, key) = typed.split_first().ok_or(bad.clone())?;
        if kind != ED25519 {
            return Err(CheckpointError::Malformed(
                "verifier key type (only Ed25519 is supported)",
            ));
        }
        let key = PublicKey::from_bytes(key).map_err(|_| bad.clone())?;
        if key_id(name, &key) != id {
            return Err(CheckpointError::Malformed("verifier key id"));
        }
        Ok(Self { name: name.to_owned(), id, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies a signed note and returns its body. Signatures by other keys are ignored (they
    /// may be witnesses' cosignatures); one valid signature by this key is required.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed("note (too large)"));
        }
        let split = note.rfind("\n\n").ok_or(CheckpointError::Malformed("note"))?;
        let (body, signatures) = (
            note.get(..=split).ok_or(CheckpointError::Malformed("note"))?,
            note.get(split + 2..).unwrap_or(""),
        );
        let signatures =
            signatures.strip_suffix('\n').ok_or(CheckpointError::Malformed("signature lines"))?;
        let mut found_bad = false;
        for line in signatures.split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or(CheckpointError::Malformed("signature line"))?;
            let (name, blob) =
                rest.split_once(' ').ok_or(CheckpointError::Malformed("signature line"))?;
            let blob = BASE64
                .decode(blob.as_bytes())
                .map_err(|_| CheckpointError::Malformed("signature"))?;
            let Some((id, signature)) = blob.split_first_chunk::<4>() else {
                return Err(CheckpointError::Malformed("signature"));
            };
            if name != self.name || *id != self.id {
                continue;
            }
            if self.key.verify_exact(body.as_bytes(), signature).is_ok() {
                return Ok(body);
            }
            found_bad = true;
        }
        if found_bad {
            Err(CheckpointError::BadSignature(self.name.clone()))
        } else {
            Err(CheckpointError::NotSigned(self.name.clone()))
        }
    }

    /// Verifies a signed checkpoint for log `origin`.
    pub fn open_checkpoint(&self, note: &str, origin: &str) -> Result<Checkpoint, CheckpointError> {
        let checkpoint = Checkpoint::parse_body(self.open(note)?)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                found: checkpoint.origin,
                expected: origin.to_owned(),
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The signed-note example of Go's golang.org/x/mod/sumdb/note, reproduced byte for byte.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signer() -> NoteSigner {
        let typed = BASE64.decode(GO_SKEY_B64.as_bytes()).unwrap();
        assert_eq!(typed[0], ED25519);
        NoteSigner::new("PeterNeumann", SigningKey::from_seed(&typed[1..]).unwrap()).unwrap()
    }

    #[test]
    fn interoperates_with_the_go_note_package() {
        let signer = go_signer();
        assert_eq!(signer.verifier_key(), GO_VKEY);
        assert_eq!(signer.sign(GO_TEXT).unwrap(), GO_NOTE);
        let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
        assert_eq!(verifier.open(GO_NOTE).unwrap(), GO_TEXT);
        let tampered = GO_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            verifier.open(&tampered),
            Err(CheckpointError::BadSignature("PeterNeumann".into()))
        );
    }

    #[test]
    fn checkpoints_round_trip_and_bind_the_origin() {
        let (key, _) = SigningKey::generate(&custody_crypto::Rng::new()).unwrap();
        let signer = NoteSigner::new("lockers.example.org/audit", key).unwrap();
        let c = Checkpoint {
            origin: "lockers.example.org/audit".into(),
            size: 1234,
            root: [7; 32],
            extensions: vec![],
        };
        let note = signer.sign_checkpoint(&c).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        assert_eq!(verifier.open_checkpoint(&note, "lockers.example.org/audit").unwrap(), c);
        assert!(matches!(
            verifier.open_checkpoint(&note, "other.example.org/audit"),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        let rolled_back = note.replacen("1234", "1233", 1);
        assert!(verifier.open(&rolled_back).is_err());
        // Another key's signature alone is not enough.
        let (other, _) = SigningKey::generate(&custody_crypto::Rng::new()).unwrap();
        let forged = NoteSigner::new("lockers.example.org/audit", other)
            .unwrap()
            .sign_checkpoint(&c)
            .unwrap();
        assert!(matches!(verifier.open(&forged), Err(CheckpointError::NotSigned(_))));
    }

    #[test]
    fn malformed_bodies_and_keys_are_refused() {
        for bad in [
            "",
            "origin\n",
            "origin\n12\n",
            "origin\n012\nAAAA\n",
            "origin\n-1\nAAAA\n",
            "origin\n1\nnot base64\n",
            "origin\n1\nAAAA\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "name",
            "name+00000000",
            "na me+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn opening_never_panics(note in "\\PC{0,300}") {
            let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
            let _ = verifier.open(&note);
            let _ = Checkpoint::parse_body(&note);
        }
    }
}

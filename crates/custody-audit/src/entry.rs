//! The audit entry and its canonical encoding (format version 1, `docs/AUDIT-FORMAT.md`).
//!
//! The leaf hash covers exactly [`Entry::encode`]: a magic string, the version, then every field
//! in a fixed order, length-prefixed, so one entry has one encoding and no two entries share
//! one. Personal data never appears in clear: it sits in `sealed`, ciphertext under a key of
//! its own subject, so destroying that key erases the data while the leaf hash, and with it
//! the log, stays verifiable.

/// Marks an encoded entry.
pub const MAGIC: &[u8] = b"custody-audit-entry";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Largest encoded entry, in bytes.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Personal data, encrypted under its subject's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Whose data it is (a person id); their key decrypts it until it is destroyed.
    pub subject: String,
    /// Nonce, ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log (leaf index, from 0).
    pub index: u64,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
    /// `person`, `carrier_key`, `device`, `system` or `anonymous`.
    pub actor_kind: String,
    /// The actor's opaque id.
    pub actor_id: Option<String>,
    /// What happened (`parcel.deposit`, `compartment.remote_open`…).
    pub action: String,
    /// Site id.
    pub site: Option<String>,
    /// Bank id.
    pub bank: Option<String>,
    /// Compartment id.
    pub compartment: Option<String>,
    /// Parcel id.
    pub parcel: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// A reason that holds no personal data (machine codes, purposes).
    pub reason: Option<String>,
    /// Personal data, sealed.
    pub sealed: Option<Sealed>,
    /// SHA-256 hashes of evidence files (photos, clips) that belong to this entry.
    pub evidence: Vec<[u8; 32]>,
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not an entry, or cut short.
    #[error("malformed entry ({0})")]
    Malformed(&'static str),
    /// An entry of a format version this build does not know.
    #[error("unsupported entry version {0}")]
    Version(u8),
    /// Larger than [`MAX_ENTRY_BYTES`].
    #[error("entry too large")]
    TooLarge,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
        None => out.push(0),
    }
}

/// An entry borrowed field by field, the way the store keeps it: what the verifier rebuilds
/// the canonical bytes from, without copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Position in the log.
    pub index: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Actor kind.
    pub actor_kind: &'a str,
    /// Actor id.
    pub actor_id: Option<&'a str>,
    /// Action.
    pub action: &'a str,
    /// Site, bank, compartment and parcel ids.
    pub target: [Option<&'a str>; 4],
    /// Outcome.
    pub outcome: &'a str,
    /// Reason.
    pub reason: Option<&'a str>,
    /// Subject and ciphertext of the sealed part.
    pub sealed: Option<(&'a str, &'a [u8])>,
    /// The evidence hashes, concatenated (32 bytes each).
    pub evidence: &'a [u8],
}

impl EntryRef<'_> {
    /// Appends the canonical encoding of this entry to `out`. Fails, leaving `out` as it was,
    /// when the evidence is not a whole number of hashes or the entry is over
    /// [`MAX_ENTRY_BYTES`]: no such entry can be decoded, so none may be written.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EntryError> {
        if !self.evidence.len().is_multiple_of(32) {
            return Err(EntryError::Malformed("evidence length"));
        }
        let start = out.len();
        self.encode_unchecked(out);
        if out.len() - start > MAX_ENTRY_BYTES {
            out.truncate(start);
            return Err(EntryError::TooLarge);
        }
        Ok(())
    }

    /// The encoding, whatever its size; `evidence` must be whole hashes.
    fn encode_unchecked(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        put_bytes(out, self.actor_kind.as_bytes());
        put_opt(out, self.actor_id.map(str::as_bytes));
        put_bytes(out, self.action.as_bytes());
        for field in self.target {
            put_opt(out, field.map(str::as_bytes));
        }
        put_bytes(out, self.outcome.as_bytes());
        put_opt(out, self.reason.map(str::as_bytes));
        match self.sealed {
            Some((subject, ciphertext)) => {
                out.push(1);
                put_bytes(out, subject.as_bytes());
                put_bytes(out, ciphertext);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&((self.evidence.len() / 32) as u32).to_be_bytes());
        out.extend_from_slice(self.evidence);
    }

    /// The leaf hash of this entry. `scratch` is reused between calls, so a scan allocates
    /// nothing per entry.
    pub fn leaf_hash(&self, scratch: &mut Vec<u8>) -> Result<crate::merkle::Hash, EntryError> {
        scratch.clear();
        self.encode_into(scratch)?;
        Ok(crate::merkle::leaf_hash(scratch))
    }
}

impl Entry {
    /// This entry borrowed field by field; `evidence` is where its hashes are laid end to end
    /// (see [`Entry::evidence_bytes`]).
    pub fn borrowed<'a>(&'a self, evidence: &'a [u8]) -> EntryRef<'a> {
        EntryRef {
            index: self.index,
            at_ms: self.at_ms,
            actor_kind: &self.actor_kind,
            actor_id: self.actor_id.as_deref(),
            action: &self.action,
            target: [
                self.site.as_deref(),
                self.bank.as_deref(),
                self.compartment.as_deref(),
                self.parcel.as_deref(),
            ],
            outcome: &self.outcome,
            reason: self.reason.as_deref(),
            sealed: self.sealed.as_ref().map(|s| (s.subject.as_str(), s.ciphertext.as_slice())),
            evidence,
        }
    }

    /// The evidence hashes laid end to end, as the store keeps them.
    pub fn evidence_bytes(&self) -> Vec<u8> {
        self.evidence.concat()
    }

    /// The canonical bytes the leaf hash covers. Whether they are within [`MAX_ENTRY_BYTES`]
    /// is for the writer to check ([`EntryRef::encode_into`]); a reader rejects larger ones.
    pub fn encode(&self) -> Vec<u8> {
        let evidence = self.evidence_bytes();
        let mut out = Vec::with_capacity(256);
        self.borrowed(&evidence).encode_unchecked(&mut out);
        out
    }

    /// The leaf hash of this entry.
    pub fn leaf_hash(&self) -> crate::merkle::Hash {
        crate::merkle::leaf_hash(&self.encode())
    }

    /// Reads canonical bytes back; anything else (trailing bytes, bad UTF-8, other versions)
    /// is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge);
        }
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(EntryError::Malformed("magic"));
        }
        let version = r.byte()?;
        if version != VERSION {
            return Err(EntryError::Version(version));
        }
        let entry = Self {
            index: u64::from_be_bytes(r.array()?),
            at_ms: i64::from_be_bytes(r.array()?),
            actor_kind: r.string()?,
            actor_id: r.opt_string()?,
            action: r.string()?,
            site: r.opt_string()?,
            bank: r.opt_string()?,
            compartment: r.opt_string()?,
            parcel: r.opt_string()?,
            outcome: r.string()?,
            reason: r.opt_string()?,
            sealed: match r.byte()? {
                0 => None,
                1 => Some(Sealed { subject: r.string()?, ciphertext: r.bytes()?.to_vec() }),
                _ => return Err(EntryError::Malformed("sealed flag")),
            },
            evidence: {
                let n = u32::from_be_bytes(r.array()?) as usize;
                if n > r.0.len() / 32 {
                    return Err(EntryError::Malformed("evidence count"));
                }
                (0..n).map(|_| r.array()).collect::<Result<_, _>>()?
            },
        };
        if !r.0.is_empty() {
            return Err(EntryError::Malformed("trailing bytes"));
        }
        Ok(entry)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(EntryError::Malformed("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, EntryError> {
        self.take(1)?.first().copied().ok_or(EntryError::Malformed("truncated"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        self.take(N)?.try_into().map_err(|_| EntryError::Malformed("truncated"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], EntryError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, EntryError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| EntryError::Malformed("utf-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, EntryError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(EntryError::Malformed("presence flag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            index: 41,
            at_ms: 1_893_456_000_000,
            actor_kind: "person".into(),
            actor_id: Some("per_abc".into()),
            action: "compartment.remote_open".into(),
            site: Some("sit_a".into()),
            bank: Some("bnk_b".into()),
            compartment: Some("cmp_c".into()),
            parcel: None,
            outcome: "success".into(),
            reason: Some("remote_open".into()),
            sealed: Some(Sealed { subject: "per_abc".into(), ciphertext: vec![1, 2, 3] }),
            evidence: vec![[9; 32]],
        }
    }

    fn entries() -> impl Strategy<Value = Entry> {
        let opt = || proptest::option::of("[a-z_0-9]{0,12}");
        (
            any::<u64>(),
            any::<i64>(),
            "[a-z_]{1,12}",
            opt(),
            "[a-z_.]{1,24}",
            (opt(), opt(), opt(), opt()),
            "[a-z]{1,8}",
            proptest::option::of("\\PC{0,40}"),
            proptest::option::of((
                "[a-z_0-9]{1,12}",
                proptest::collection::vec(any::<u8>(), 0..64),
            )),
            proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        )
            .prop_map(
                |(
                    index,
                    at_ms,
                    actor_kind,
                    actor_id,
                    action,
                    (site, bank, compartment, parcel),
                    outcome,
                    reason,
                    sealed,
                    evidence,
                )| Entry {
                    index,
                    at_ms,
                    actor_kind,
                    actor_id,
                    action,
                    site,
                    bank,
                    compartment,
                    parcel,
                    outcome,
                    reason,
                    sealed: sealed.map(|(subject, ciphertext)| Sealed { subject, ciphertext }),
                    evidence,
                },
            )
    }

    #[test]
    fn the_encoding_starts_with_magic_and_version() {
        let bytes = sample().encode();
        assert!(bytes.starts_with(b"custody-audit-entry\x01"));
        assert_eq!(Entry::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn strictness() {
        let bytes = sample().encode();
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Entry::decode(&trailing).is_err());
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut v2 = bytes.clone();
        v2[MAGIC.len()] = 2;
        assert_eq!(Entry::decode(&v2), Err(EntryError::Version(2)));
        assert!(Entry::decode(b"not an entry").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(entry in entries()) {
            prop_assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }

        /// Distinct entries never share an encoding (so never a leaf hash, short of a SHA-256
        /// collision).
        #[test]
        fn distinct_entries_encode_differently(a in entries(), b in entries()) {
            prop_assume!(a != b);
            prop_assert_ne!(a.encode(), b.encode());
        }

        /// The verifier's allocation-free path (fields as stored → leaf hash) gives exactly
        /// the owned entry's bytes and hash.
        #[test]
        fn borrowed_entries_encode_as_owned_ones(a in entries()) {
            let evidence = a.evidence_bytes();
            let mut out = vec![7];
            a.borrowed(&evidence).encode_into(&mut out).unwrap();
            prop_assert_eq!(out[1..].to_vec(), a.encode());
            let mut scratch = Vec::new();
            prop_assert_eq!(a.borrowed(&evidence).leaf_hash(&mut scratch).unwrap(), a.leaf_hash());
        }

        /// Evidence that is not whole hashes, and entries too large to read back, are never
        /// encoded.
        #[test]
        fn unreadable_entries_are_not_encoded(a in entries(), extra in 1..32_usize) {
            let mut evidence = a.evidence_bytes();
            evidence.extend(std::iter::repeat_n(0, extra));
            let mut out = vec![7];
            prop_assert_eq!(
                a.borrowed(&evidence).encode_into(&mut out),
                Err(EntryError::Malformed("evidence length"))
            );
            let huge = Entry { reason: Some("x".repeat(MAX_ENTRY_BYTES)), ..a };
            let evidence = huge.evidence_bytes();
            prop_assert_eq!(huge.borrowed(&evidence).encode_into(&mut out), Err(EntryError::TooLarge));
            prop_assert_eq!(out, vec![7]);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Entry::decode(&bytes);
            let mut with_magic = b"custody-audit-entry\x01".to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = Entry::decode(&with_magic);
        }
    }
}

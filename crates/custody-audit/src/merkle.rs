//! RFC 6962 / RFC 9162 §2.1 Merkle trees: hashing, the compact frontier, inclusion and
//! consistency proofs and their verification.
//!
//! Leaves are hashed as `SHA-256(0x00 ‖ data)` and interior nodes as `SHA-256(0x01 ‖ left ‖
//! right)`; the left subtree of a tree of `n > 1` leaves holds the largest power of two smaller
//! than `n`. The domain separation of leaves and nodes is what stops a second-preimage attack
//! that passes a node off as a leaf.

use custody_crypto::sha256;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of an empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The leaf hash of `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(0x00);
    buf.extend_from_slice(data);
    sha256(&buf)
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The largest power of two strictly smaller than `n`, for `n ≥ 2` (every caller); total for
/// smaller `n` so it can never panic.
fn split(n: u64) -> u64 {
    1 << (n.max(2) - 1).ilog2()
}

/// Hashes of any contiguous range of leaves. The store implements it over stored leaf and node
/// hashes; tests implement it over a slice.
pub trait RangeHashes {
    /// Why a hash could not be read.
    type Error;
    /// The Merkle tree hash of leaves `lo..hi` (`lo < hi`).
    fn range_hash(&mut self, lo: u64, hi: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in memory.
impl RangeHashes for &[Hash] {
    type Error = ProofError;

    fn range_hash(&mut self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        let (lo, hi) = (
            usize::try_from(lo).map_err(|_| ProofError::OutOfRange)?,
            usize::try_from(hi).map_err(|_| ProofError::OutOfRange)?,
        );
        self.get(lo..hi).map(root_of).ok_or(ProofError::OutOfRange)
    }
}

/// The Merkle tree hash of a list of leaf hashes.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k =
                usize::try_from(split(leaves.len() as u64)).unwrap_or(usize::MAX).min(leaves.len());
            let (left, right) = leaves.split_at(k);
            node_hash(&root_of(left), &root_of(right))
        }
    }
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// An index or size outside the tree.
    #[error("index or size out of range")]
    OutOfRange,
    /// The proof has the wrong number of hashes for the sizes it claims.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The proof does not lead to the expected root.
    #[error("proof does not match the root")]
    Mismatch,
}

/// The compact form of a tree: the roots of its perfect subtrees, largest first. It is all an
/// appender needs to compute the root after each new leaf, in O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, from the leftmost (largest) to the rightmost (smallest);
    /// subtree `i` covers `2^b` leaves for the `i`-th highest set bit `b` of `size`.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from its size and peaks (as stored), checking they fit together.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Result<Self, ProofError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(ProofError::WrongLength);
        }
        Ok(Self { size, peaks })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks, largest subtree first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash. Returns the roots of the perfect subtrees it completed, as
    /// `(level, index, hash)` with level 0 for the leaf itself, so the store can keep them for
    /// proofs.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut completed = Vec::with_capacity(2);
        self.push_with(leaf, |level, index, hash| completed.push((level, index, hash)));
        completed
    }

    /// [`Frontier::push`] that hands each completed subtree root to `completed` instead of
    /// collecting them (the verifier pushes millions of leaves).
    pub fn push_with(&mut self, leaf: Hash, mut completed: impl FnMut(u32, u64, Hash)) {
        let index = self.size;
        completed(0, index, leaf);
        let mut hash = leaf;
        let mut level = 0u32;
        // Each trailing one bit of the old size is a peak of the same height as the new one:
        // merge them.
        while (index >> level) & 1 == 1 {
            let left = self.peaks.pop().unwrap_or(hash);
            hash = node_hash(&left, &hash);
            level += 1;
            completed(level, index >> level, hash);
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else { return empty_root() };
        peaks.fold(*last, |acc, peak| node_hash(peak, &acc))
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1), shortest subtree first.
pub fn inclusion_proof<R: RangeHashes>(
    source: &mut R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofErrorOr<R::Error>> {
    if index >= size {
        return Err(ProofErrorOr::Proof(ProofError::OutOfRange));
    }
    let mut proof = Vec::new();
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// A proof error or an error reading hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofErrorOr<E> {
    /// The request was not valid.
    Proof(ProofError),
    /// Reading hashes failed.
    Source(E),
}

fn path<R: RangeHashes>(
    source: &mut R,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofErrorOr<R::Error>> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(source, m, lo, lo + k, out)?;
        out.push(source.range_hash(lo + k, hi).map_err(ProofErrorOr::Source)?);
    } else {
        path(source, m - k, lo + k, hi, out)?;
        out.push(source.range_hash(lo, lo + k).map_err(ProofErrorOr::Source)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if custody_crypto::constant_time_eq(&r, root) { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// The consistency proof between the trees of the first `old` and the first `new` leaves
/// (RFC 9162 §2.1.4.1).
pub fn consistency_proof<R: RangeHashes>(
    source: &mut R,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofErrorOr<R::Error>> {
    if old == 0 || old > new {
        return Err(ProofErrorOr::Proof(ProofError::OutOfRange));
    }
    let mut proof = Vec::new();
    if old < new {
        subproof(source, old, 0, new, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<R: RangeHashes>(
    source: &mut R,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofErrorOr<R::Error>> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(source.range_hash(lo, hi).map_err(ProofErrorOr::Source)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(source, m, lo, lo + k, whole, out)?;
        out.push(source.range_hash(lo + k, hi).map_err(ProofErrorOr::Source)?);
    } else {
        subproof(source, m - k, lo + k, hi, false, out)?;
        out.push(source.range_hash(lo, lo + k).map_err(ProofErrorOr::Source)?);
    }
    Ok(())
}

/// Checks that the tree of `new` leaves with root `new_root` extends the tree of `old` leaves
/// with root `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::OutOfRange);
    }
    if old == new {
        return if proof.is_empty() && custody_crypto::constant_time_eq(old_root, new_root) {
            Ok(())
        } else if proof.is_empty() {
            Err(ProofError::Mismatch)
        } else {
            Err(ProofError::WrongLength)
        };
    }
    // If the old size is a power of two, the old root is the first element of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (first, rest) = path.split_first().ok_or(ProofError::WrongLength)?;
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if custody_crypto::constant_time_eq(&fr, old_root)
        && custody_crypto::constant_time_eq(&sr, new_root)
    {
        Ok(())
    } else {
        Err(ProofError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::HEXLOWER;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        HEXLOWER.decode(s.as_bytes()).unwrap().try_into().unwrap()
    }

    /// The RFC 6962 reference leaves (as published with Certificate Transparency's test data).
    fn inputs() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|x| HEXLOWER.decode(x.as_bytes()).unwrap())
        .collect()
    }

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves() -> Vec<Hash> {
        inputs().iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn roots_match_the_rfc_6962_vectors() {
        let leaves = leaves();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), h(ROOTS[0]));
        for n in 1..=8 {
            assert_eq!(root_of(&leaves[..n]), h(ROOTS[n]), "root_of({n})");
            frontier.push(leaves[n - 1]);
            assert_eq!(frontier.root(), h(ROOTS[n]), "frontier({n})");
        }
        assert_eq!(
            leaves[0],
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        );
    }

    #[test]
    fn inclusion_proofs_match_the_reference_vectors() {
        let leaves = leaves();
        let cases: &[(u64, u64, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                &[
                    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for &(index, size, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = inclusion_proof(&mut &leaves[..], index, size).unwrap();
            assert_eq!(got, want, "inclusion({index}, {size})");
            let root = h(ROOTS[usize::try_from(size).unwrap()]);
            verify_inclusion(&leaves[usize::try_from(index).unwrap()], index, size, &got, &root)
                .unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors() {
        let leaves = leaves();
        let cases: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for &(old, new, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let got = consistency_proof(&mut &leaves[..], old, new).unwrap();
            assert_eq!(got, want, "consistency({old}, {new})");
            let (r1, r2) =
                (h(ROOTS[usize::try_from(old).unwrap()]), h(ROOTS[usize::try_from(new).unwrap()]));
            verify_consistency(old, new, &got, &r1, &r2).unwrap();
        }
    }

    #[test]
    fn frontier_reports_every_completed_subtree() {
        let leaves = leaves();
        let mut f = Frontier::new();
        let mut nodes = Vec::new();
        for leaf in &leaves {
            nodes.extend(f.push(*leaf));
        }
        // 8 leaves, 4 + 2 + 1 interior nodes.
        assert_eq!(nodes.len(), 15);
        assert!(nodes.contains(&(3, 0, h(ROOTS[8]))));
        assert!(nodes.contains(&(
            1,
            2,
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a")
        )));
        let rebuilt = Frontier::from_parts(f.size(), f.peaks().to_vec()).unwrap();
        assert_eq!(rebuilt.root(), f.root());
        assert!(Frontier::from_parts(3, vec![[0; 32]]).is_err());
    }

    proptest! {
        #[test]
        fn proofs_verify_and_any_change_fails(data in proptest::collection::vec(any::<u8>(), 1..40), n in 1u64..300, pick in any::<u64>(), flip in any::<(usize, u8)>()) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[data.as_slice(), &i.to_be_bytes()].concat())).collect();
            let mut frontier = Frontier::new();
            for l in &leaves { frontier.push(*l); }
            let root = frontier.root();
            prop_assert_eq!(root, root_of(&leaves));
            let index = pick % n;
            let proof = inclusion_proof(&mut &leaves[..], index, n).unwrap();
            prop_assert!(verify_inclusion(&leaves[usize::try_from(index).unwrap()], index, n, &proof, &root).is_ok());
            // A different leaf, index or root fails; so does a tampered proof.
            let mut other = leaves[usize::try_from(index).unwrap()];
            other[flip.0 % 32] ^= flip.1 | 1;
            prop_assert!(verify_inclusion(&other, index, n, &proof, &root).is_err());
            if n > 1 {
                prop_assert!(verify_inclusion(&leaves[usize::try_from(index).unwrap()], (index + 1) % n, n, &proof, &root).is_err());
            }
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = node_hash(first, first);
                prop_assert!(verify_inclusion(&leaves[usize::try_from(index).unwrap()], index, n, &bad, &root).is_err());
            }
            let old = 1 + pick % n;
            let cproof = consistency_proof(&mut &leaves[..], old, n).unwrap();
            let old_root = root_of(&leaves[..usize::try_from(old).unwrap()]);
            prop_assert!(verify_consistency(old, n, &cproof, &old_root, &root).is_ok());
            // A rewritten history (a different old root) is not consistent.
            let mut forged = old_root;
            forged[0] ^= 1;
            prop_assert!(verify_consistency(old, n, &cproof, &forged, &root).is_err());
        }
    }
}

/// A node of the tree: level (0 for leaves) and index within the level.
pub type NodeId = (u32, u64);

/// The perfect subtrees whose roots make up the hash of leaves `lo..hi`, split as RFC 6962
/// splits a tree: the stored nodes a reader needs for that range.
pub fn pieces(lo: u64, hi: u64, out: &mut Vec<NodeId>) {
    let n = hi.saturating_sub(lo);
    if n == 0 {
        return;
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let level = n.trailing_zeros();
        out.push((level, lo >> level));
        return;
    }
    let k = split(n);
    pieces(lo, lo + k, out);
    pieces(lo + k, hi, out);
}

/// Records the ranges a proof needs instead of hashing them.
#[derive(Debug, Default)]
struct Recorder(Vec<(u64, u64)>);

impl RangeHashes for Recorder {
    type Error = ProofError;
    fn range_hash(&mut self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        self.0.push((lo, hi));
        Ok([0; 32])
    }
}

fn nodes_of(ranges: Vec<(u64, u64)>) -> Vec<NodeId> {
    let mut out = Vec::new();
    for (lo, hi) in ranges {
        pieces(lo, hi, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The stored nodes an inclusion proof of leaf `index` in a tree of `size` leaves needs.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, ProofError> {
    let mut r = Recorder::default();
    inclusion_proof(&mut r, index, size).map_err(|e| match e {
        ProofErrorOr::Proof(p) | ProofErrorOr::Source(p) => p,
    })?;
    Ok(nodes_of(r.0))
}

/// The stored nodes a consistency proof between sizes `old` and `new` needs.
pub fn consistency_nodes(old: u64, new: u64) -> Result<Vec<NodeId>, ProofError> {
    let mut r = Recorder::default();
    consistency_proof(&mut r, old, new).map_err(|e| match e {
        ProofErrorOr::Proof(p) | ProofErrorOr::Source(p) => p,
    })?;
    Ok(nodes_of(r.0))
}

/// Hashes of stored nodes, fetched ahead: a [`RangeHashes`] source for proofs over a store.
#[derive(Debug, Default, Clone)]
pub struct NodeMap(pub std::collections::BTreeMap<NodeId, Hash>);

impl RangeHashes for NodeMap {
    type Error = ProofError;

    fn range_hash(&mut self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        let mut ids = Vec::new();
        pieces(lo, hi, &mut ids);
        let mut hashes = ids
            .iter()
            .map(|id| self.0.get(id).copied().ok_or(ProofError::OutOfRange))
            .collect::<Result<Vec<_>, _>>()?;
        // The pieces are the RFC 6962 split, left to right: fold them back from the right.
        let last = hashes.pop().ok_or(ProofError::OutOfRange)?;
        Ok(hashes.iter().rev().fold(last, |acc, h| node_hash(h, &acc)))
    }
}

#[cfg(test)]
mod store_proof_tests {
    use super::*;
    use proptest::prelude::*;

    /// All perfect-subtree roots of a list of leaves, as a store keeps them.
    fn stored(leaves: &[Hash]) -> NodeMap {
        let mut f = Frontier::new();
        let mut map = NodeMap::default();
        for l in leaves {
            for (level, idx, h) in f.push(*l) {
                map.0.insert((level, idx), h);
            }
        }
        map
    }

    proptest! {
        /// Proofs made from stored nodes, fetched by `inclusion_nodes` / `consistency_nodes`,
        /// equal proofs made from the leaves.
        #[test]
        fn proofs_from_stored_nodes_equal_proofs_from_leaves(n in 1u64..200, a in any::<u64>(), b in any::<u64>()) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let all = stored(&leaves);
            let size = 1 + a % n;
            let index = b % size;
            let needed = inclusion_nodes(index, size).unwrap();
            let mut fetched = NodeMap(needed.iter().map(|id| (*id, all.0[id])).collect());
            let from_store = inclusion_proof(&mut fetched, index, size).unwrap();
            prop_assert_eq!(from_store, inclusion_proof(&mut &leaves[..], index, size).unwrap());
            let old = 1 + b % size;
            let needed = consistency_nodes(old, size).unwrap();
            let mut fetched = NodeMap(needed.iter().map(|id| (*id, all.0[id])).collect());
            prop_assert_eq!(consistency_proof(&mut fetched, old, size).unwrap(), consistency_proof(&mut &leaves[..], old, size).unwrap());
        }
    }
}

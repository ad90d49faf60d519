//! Conformance with an independent RFC 6962 implementation: for every tree size up to a few
//! hundred leaves, our roots, inclusion proofs and consistency proofs are byte-for-byte those of
//! the `ct-merkle` crate, and each side's proofs verify under the other's verifier.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use ct_merkle::{ConsistencyProof, InclusionProof, RootHash, mem_backed_tree::MemoryBackedTree};
use custody_audit::merkle::{
    Frontier, Hash, consistency_proof, inclusion_proof, leaf_hash, verify_consistency,
    verify_inclusion,
};
use sha2::Sha256;

/// Leaf contents of differing lengths, including the empty one.
fn value(i: u64) -> Vec<u8> {
    let len = usize::try_from(i % 37).unwrap();
    (0..len).map(|j| u8::try_from((i * 31 + j as u64) % 251).unwrap()).collect()
}

fn bytes(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|h| h.iter().copied()).collect()
}

fn their_root(tree: &MemoryBackedTree<Sha256, Vec<u8>>) -> Hash {
    Hash::try_from(tree.root().as_bytes().as_slice()).unwrap()
}

#[test]
fn roots_and_inclusion_proofs_match_ct_merkle() {
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut ours = Frontier::new();
    let mut leaves: Vec<Hash> = Vec::new();
    for i in 0..300_u64 {
        let v = value(i);
        theirs.push(v.clone());
        ours.push(leaf_hash(&v));
        leaves.push(leaf_hash(&v));
        let size = i + 1;
        let root = their_root(&theirs);
        assert_eq!(ours.root(), root, "root at size {size}");
        // Every index for small trees; a spread of indices for larger ones.
        let step = if size <= 70 { 1 } else { 7 };
        for index in (0..size).step_by(step).chain([size - 1]) {
            let mut source: &[Hash] = &leaves;
            let mine = inclusion_proof(&mut source, index, size).unwrap();
            let idx = usize::try_from(index).unwrap();
            let theirs_proof = theirs.prove_inclusion(idx);
            assert_eq!(bytes(&mine), theirs_proof.as_bytes(), "inclusion {index} of {size}");
            // Cross-verification: ours under theirs, theirs under ours.
            let as_theirs = InclusionProof::<Sha256>::from_bytes(bytes(&mine));
            theirs.root().verify_inclusion(&value(index), index, &as_theirs).unwrap();
            let as_ours: Vec<Hash> =
                theirs_proof.as_bytes().chunks(32).map(|c| Hash::try_from(c).unwrap()).collect();
            verify_inclusion(&leaf_hash(&value(index)), index, size, &as_ours, &root).unwrap();
        }
    }
}

#[test]
fn consistency_proofs_match_ct_merkle() {
    let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut leaves: Vec<Hash> = Vec::new();
    let mut roots: Vec<RootHash<Sha256>> = Vec::new();
    for i in 0..130_u64 {
        theirs.push(value(i));
        leaves.push(leaf_hash(&value(i)));
        roots.push(theirs.root());
        let new = i + 1;
        for old in 1..=new {
            let mut source: &[Hash] = &leaves;
            let mine = consistency_proof(&mut source, old, new).unwrap();
            let additions = usize::try_from(new - old).unwrap();
            let theirs_proof = theirs.prove_consistency(additions);
            assert_eq!(bytes(&mine), theirs_proof.as_bytes(), "consistency {old} → {new}");
            let old_root = &roots[usize::try_from(old - 1).unwrap()];
            let as_theirs = ConsistencyProof::<Sha256>::try_from_bytes(bytes(&mine)).unwrap();
            theirs.root().verify_consistency(old_root, &as_theirs).unwrap();
            let old_hash = Hash::try_from(old_root.as_bytes().as_slice()).unwrap();
            verify_consistency(old, new, &mine, &old_hash, &their_root(&theirs)).unwrap();
        }
    }
}

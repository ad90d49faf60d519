//! The tamper-evident audit log: an RFC 6962 Merkle tree over the entries, proofs that an entry
//! is in the log and that a later log extends an earlier one, and signed checkpoints.
//!
//! **Architecture Invariant:** this crate knows no SQL and does no I/O. The store keeps leaf and
//! node hashes; this crate says what they must be and checks them, so an auditor's verifier and
//! the server run the same code.

pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod merkle;

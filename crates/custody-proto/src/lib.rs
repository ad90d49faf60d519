//! Custody's wire types: the device protocol between server and agent, and the bodies of the
//! HTTP API.
//!
//! **Architecture Invariant:** this crate depends on no other workspace crate. Ids travel as
//! strings here and are parsed into domain types at the edge that receives them, so the wire
//! format can be versioned independently of the domain.

pub mod api;
pub mod device;

//! Custody's wire types: the device protocol between server and agent, the bodies of the HTTP
//! API, and the frames the agent exchanges with a bank's lock boards.
//!
//! **Architecture Invariant:** this crate depends on no other workspace crate. Ids travel as
//! strings here and are parsed into domain types at the edge that receives them, so the wire
//! format can be versioned independently of the domain.

pub mod api;
pub mod device;
pub mod lock_board;

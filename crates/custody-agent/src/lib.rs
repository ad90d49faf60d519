//! The Custody agent: runs one locker bank.
//!
//! **Architecture Invariant:** the decisions (open or refuse, what the kiosk shows) live in the
//! sans-IO [`core`]; sockets, timers and hardware live at the edge ([`link`], [`hardware`],
//! [`daemon`]). The daemon only carries events in and actions out.
//!
//! **Architecture Invariant:** hardware is reached only through the traits in [`hardware`]; the
//! simulator implements the same traits as a real driver, so tests and demos run the same
//! daemon code.

pub mod cli;
pub mod core;
pub mod daemon;
pub mod enrol;
pub mod hardware;
pub mod journal;
pub mod kiosk;
pub mod link;
pub mod osdp;

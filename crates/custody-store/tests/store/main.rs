//! The store on both backends: conformance of every operation, and migrations over data an older
//! Custody left, as one test binary with a module per concern.

mod conformance;
mod migrations;

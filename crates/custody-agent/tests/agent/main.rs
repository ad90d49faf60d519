//! The agent against real hardware protocols and a real server: the device link, lock boards over
//! pseudo-terminals, mutual TLS and the kiosk page, as one test binary with a module per concern.

mod binary;
mod kiosk;
mod link;
mod lockboard;
mod mtls;

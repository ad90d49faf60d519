//! The QR token decoder reads whatever a kiosk's scanner sees: any bytes at all. It must never
//! panic, and whatever it accepts must be exactly what the encoder writes for the same token.
#![no_main]

use custody_core::token::ScannedToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(scanned) = ScannedToken::decode(text) {
        let signature: [u8; 64] = scanned.signature().try_into().expect("64-byte signature");
        assert_eq!(scanned.token.encode(&signature), text, "one spelling per token");
        assert_eq!(scanned.signed_bytes(), scanned.token.signed_bytes());
    }
});

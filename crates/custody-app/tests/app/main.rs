//! custody-app's use cases, tested against the real store on both backends: one test binary
//! (linked once) with a module per concern.

mod alerts;
mod audit_tamper;
mod audit_verify;
mod badges;
mod breaches;
mod codes;
mod couriers;
mod factors;
mod keys;
mod lockdown;
mod offline;
mod passkeys;
mod personal;
mod presence;
mod privileges;
mod qr;
mod retention;
mod sign_in_links;
mod story;
mod throttling;
mod unaddressed;

//! Open commands: every check an unlock must pass, and why one is refused.

use super::AgentCore;
use custody_core::Timestamp;
use custody_core::compartment::CompartmentNumber;
use custody_proto::device::{OPEN_COMMAND_DOMAIN, SignedOpenCommand};
use data_encoding::BASE64;

/// Why an open command was refused. Reported to the server and never executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The signature does not verify.
    BadSignature,
    /// The command is for another device.
    OtherDevice,
    /// The command is for another bank.
    OtherBank,
    /// No such compartment here (or 0).
    UnknownCompartment,
    /// Past its expiry.
    Expired,
    /// This nonce was executed already.
    Replay,
    /// Not yet connected and welcomed: the compartment list is unknown.
    NotReady,
    /// The bank is locked down.
    LockedDown,
    /// The journal cannot be written: nothing opens that could not be accounted for.
    JournalFailed,
}

impl Refusal {
    /// Stable name for the server's audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::OtherDevice => "other_device",
            Self::OtherBank => "other_bank",
            Self::UnknownCompartment => "unknown_compartment",
            Self::Expired => "expired",
            Self::Replay => "replay",
            Self::NotReady => "not_ready",
            Self::LockedDown => "locked_down",
            Self::JournalFailed => "journal_failed",
        }
    }
}

impl AgentCore {
    /// Decides whether an open command may be executed.
    pub fn check(
        &self,
        now: Timestamp,
        signed: &SignedOpenCommand,
    ) -> Result<CompartmentNumber, Refusal> {
        let command = &signed.command;
        let signature =
            BASE64.decode(signed.signature.as_bytes()).map_err(|_| Refusal::BadSignature)?;
        self.identity
            .command_key
            .verify(OPEN_COMMAND_DOMAIN, &command.signing_bytes(), &signature)
            .map_err(|_| Refusal::BadSignature)?;
        if command.device != self.identity.device {
            return Err(Refusal::OtherDevice);
        }
        if command.bank != self.identity.bank {
            return Err(Refusal::OtherBank);
        }
        if !self.welcomed {
            return Err(Refusal::NotReady);
        }
        let compartment =
            CompartmentNumber::new(command.compartment).map_err(|_| Refusal::UnknownCompartment)?;
        if !self.compartments.contains(&compartment.get()) {
            return Err(Refusal::UnknownCompartment);
        }
        if now.as_millis() >= command.expires_at_ms {
            return Err(Refusal::Expired);
        }
        if self.executed.contains_key(&command.nonce) {
            return Err(Refusal::Replay);
        }
        if self.journal_failed {
            return Err(Refusal::JournalFailed);
        }
        if self.locked() {
            return Err(Refusal::LockedDown);
        }
        Ok(compartment)
    }
}

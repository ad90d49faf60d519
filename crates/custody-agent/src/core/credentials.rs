//! Badges and QR pickup tokens, checked here before the server is asked.

use super::{Action, AgentCore};
use custody_core::Timestamp;
use custody_core::badge::{BadgeNumber, ReaderKind};
use custody_core::token::{PickupToken, QR_TOKEN_DOMAIN, QR_TOKEN_TEXT_LEN, ScannedToken};
use custody_crypto::secret::badge_verifier;
use custody_proto::device::{AgentMessage, BadgeList, BadgeRead};
use data_encoding::BASE64;

/// Why a badge read was refused at the kiosk, before the server was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadgeRefusal {
    /// Not a badge number (too short, not hexadecimal).
    Malformed,
    /// Read over OSDP without Secure Channel after the reader's commissioning window.
    InsecureReader,
    /// No badge list from the server yet: no badge is known.
    NoList,
    /// Not in the site's list: unknown or revoked.
    Unknown,
}

/// Why a scanned QR token was refused at the kiosk, before or without asking the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token.
    Malformed,
    /// The signature does not verify under the command key.
    BadSignature,
    /// For another bank.
    OtherBank,
    /// For a compartment this bank does not have.
    UnknownCompartment,
    /// Past its expiry.
    Expired,
    /// Already used at this kiosk.
    Replay,
}

impl AgentCore {
    /// A QR code at the scanner: checked here first. A token that fails is refused at once,
    /// and still reported (under a request id nobody waits for) so the server audits the scan.
    pub(super) fn scanned(&mut self, now: Timestamp, text: &str) -> Vec<Action> {
        // Anything longer than a token is cut to one character past it: still malformed,
        // never a large message.
        let token: String = text.chars().take(QR_TOKEN_TEXT_LEN + 1).collect();
        let checked = self.check_token(now, &token);
        if !self.ready() {
            return self.offline_token(now, checked);
        }
        match checked {
            Ok(checked) => {
                let remembered = (checked.code.to_string(), checked.expires_at.as_millis());
                let actions = self
                    .ask(|request_id| AgentMessage::QrPickup { request_id, token: token.clone() });
                if self.ready() {
                    self.scanning.insert(self.next_request - 1, remembered);
                }
                actions
            }
            Err(_) => {
                self.refuse_and_report(|request_id| AgentMessage::QrPickup { request_id, token })
            }
        }
    }

    /// A badge at the reader: checked here first against the site's list. A read that fails is
    /// refused at once and still reported (under a request id nobody waits for), so the server
    /// audits it and counts it against the kiosk's budget.
    pub(super) fn badge(
        &mut self,
        now: Timestamp,
        number: &str,
        reader: ReaderKind,
    ) -> Vec<Action> {
        // A read longer than any badge is cut: still refused, never a large message.
        let number: String = number.chars().take(200).collect();
        let read = |number: String| BadgeRead { number, reader: reader.as_str().to_owned() };
        match self.check_badge(now, &number, reader) {
            Ok(_) => {
                self.ask(|request_id| AgentMessage::BadgeRead { request_id, badge: read(number) })
            }
            Err(_) => self.refuse_and_report(|request_id| AgentMessage::BadgeRead {
                request_id,
                badge: read(number),
            }),
        }
    }

    /// Checks a badge read offline: a badge number, from a reader trusted now, in the site's
    /// list as last synced.
    pub fn check_badge(
        &self,
        now: Timestamp,
        number: &str,
        reader: ReaderKind,
    ) -> Result<BadgeNumber, BadgeRefusal> {
        let number = BadgeNumber::parse(number).map_err(|_| BadgeRefusal::Malformed)?;
        if reader == ReaderKind::OsdpClear && self.commissioning_until.is_none_or(|u| now >= u) {
            return Err(BadgeRefusal::InsecureReader);
        }
        let (key, verifiers) = self.badges.as_ref().ok_or(BadgeRefusal::NoList)?;
        if !verifiers.contains(&badge_verifier(key, number.as_bytes())) {
            return Err(BadgeRefusal::Unknown);
        }
        Ok(number)
    }

    /// Takes the site's badge list as synced; a list that cannot be read leaves no badge known
    /// (fail closed).
    pub(super) fn take_badges(&mut self, list: &BadgeList) {
        let decode32 =
            |s: &str| -> Option<[u8; 32]> { BASE64.decode(s.as_bytes()).ok()?.try_into().ok() };
        self.badges = decode32(&list.key).and_then(|key| {
            let verifiers = list.verifiers.iter().map(|v| decode32(v)).collect::<Option<_>>()?;
            Some((key, verifiers))
        });
    }

    /// Checks a scanned QR token offline: signature, bank, compartment, expiry, and that it
    /// has not opened here before.
    pub fn check_token(&self, now: Timestamp, text: &str) -> Result<PickupToken, TokenRefusal> {
        let scanned = ScannedToken::decode(text).map_err(|_| TokenRefusal::Malformed)?;
        self.identity
            .command_key
            .verify(QR_TOKEN_DOMAIN, scanned.signed_bytes(), scanned.signature())
            .map_err(|_| TokenRefusal::BadSignature)?;
        let token = scanned.token;
        if token.bank.as_str() != self.identity.bank {
            return Err(TokenRefusal::OtherBank);
        }
        if self.welcomed && !self.compartments.contains(&token.compartment.get()) {
            return Err(TokenRefusal::UnknownCompartment);
        }
        if now >= token.expires_at {
            return Err(TokenRefusal::Expired);
        }
        if self.used_tokens.contains_key(token.code.as_str()) {
            return Err(TokenRefusal::Replay);
        }
        Ok(token)
    }
}

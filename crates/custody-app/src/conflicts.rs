//! Every way a request can clash with the current state: the stable `code` of a 409 answer,
//! listed once so that the API document names them all and a client can match on them.

/// Declares the conflict codes: each variant with its wire code and what it means.
macro_rules! conflict_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal,)*) => {
        /// Why a request clashes with the current state (the `code` of a 409 answer).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ConflictCode {
            $($(#[doc = $doc])+ $variant,)*
        }

        impl ConflictCode {
            /// Every code, in the order the API document lists them.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The stable code on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// What it means, for the API document.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => concat!($($doc),+).trim(),)*
                }
            }
        }
    };
}

conflict_codes! {
    /// The record exists already (a uniqueness rule of the store refused it).
    Exists = "conflict",
    /// The parcel is not in a state that allows this (not deposited, not waiting, no locker).
    ParcelState = "parcel_state",
    /// The parcel already has a recipient.
    ParcelAddressed = "parcel_addressed",
    /// Nobody is named for this parcel yet.
    NoRecipient = "no_recipient",
    /// No resident of the site has that e-mail address.
    UnknownRecipient = "unknown_recipient",
    /// The compartment is not in a state that allows this (not occupied, no longer reserved).
    CompartmentState = "compartment_state",
    /// A compartment with that number exists in the bank.
    CompartmentExists = "compartment_exists",
    /// No free compartment of the parcel's size (and needs) in the bank.
    NoFreeCompartment = "no_free_compartment",
    /// The deposit's reservation ran out; start the deposit again.
    ReservationLapsed = "reservation_lapsed",
    /// The compartment's door sensor does not report it closed yet.
    DoorNotClosed = "door_not_closed",
    /// No unused pickup code could be drawn for the bank.
    CodeSpaceExhausted = "code_space_exhausted",
    /// The parcel has no working pickup code; ask for it to be sent again.
    NoCode = "no_code",
    /// Not the code the locker's screen shows now.
    PresenceCode = "presence_code",
    /// The bank has no enrolled device to send a command to.
    BankNotEnrolled = "bank_not_enrolled",
    /// The bank is locked down: nothing opens until an admin lifts the lockdown.
    LockedDown = "locked_down",
    /// The bank is not locked down.
    NotLockedDown = "not_locked_down",
    /// One person's bulk opens passed the hourly cap.
    BulkOpenCap = "bulk_open_cap",
    /// Past the remote-open budget, and this open cannot become a request: another member of
    /// staff must approve.
    SecondPersonRequired = "second_person_required",
    /// The alert changed meanwhile, or its state does not allow this step.
    AlertState = "alert_state",
    /// Only a notification in the dead-letter list is sent again.
    DeliveryState = "delivery_state",
    /// The request was answered already or has lapsed.
    ApprovalClosed = "approval_closed",
    /// What the request names changed since it was made; ask again.
    ApprovalStale = "approval_stale",
    /// A request needs a second person: someone else must approve it.
    SamePerson = "same_person",
    /// The person is disabled.
    Disabled = "disabled",
    /// The e-mail address is already registered.
    EmailTaken = "email_taken",
    /// The organisation's last super-admin keeps the role.
    LastSuperAdmin = "last_super_admin",
    /// This process's key-encryption key is not the installation's current one.
    KekNotCurrent = "kek_not_current",
    /// A breach cannot close before the authority, and the people it reached, are told.
    NoticesOutstanding = "notices_outstanding",
    /// A carrier of that name exists.
    CarrierExists = "carrier_exists",
    /// The API key is revoked or retiring already.
    KeyRetired = "key_retired",
    /// Only couriers have kiosk codes.
    NotACourier = "not_a_courier",
    /// No courier code can be given today.
    CourierCodeUnavailable = "courier_code_unavailable",
    /// A badge with this number is registered.
    BadgeExists = "badge_exists",
    /// The badge is revoked already.
    BadgeRevoked = "badge_revoked",
    /// No second factor is set up yet.
    NoFactor = "no_factor",
    /// The role needs a second factor, and this is the last one.
    LastFactor = "last_factor",
    /// The sign-in is too old to set up a second factor; sign in again.
    SignInAgain = "sign_in_again",
    /// No authenticator app is being set up.
    NoEnrolment = "no_enrolment",
    /// Setting up the authenticator app took too long.
    EnrolmentExpired = "enrolment_expired",
    /// Too many wrong codes: the authenticator app is locked; use a recovery code.
    TotpLocked = "totp_locked",
    /// No passkey is registered.
    NoPasskey = "no_passkey",
    /// That passkey is registered already.
    PasskeyTaken = "passkey_taken",
    /// The message was delivered already.
    MessageWiped = "message_wiped",
    /// The audit log is empty.
    EmptyLog = "empty_log",
}

#[cfg(test)]
mod tests {
    use super::ConflictCode;

    #[test]
    fn every_code_is_distinct_snake_case_and_explained() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ConflictCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(code.meaning().ends_with('.'), "{s}: {}", code.meaning());
        }
    }
}

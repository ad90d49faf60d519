//! Parcels as the API shows them: the views, the chain of custody, and what carriers, staff
//! and recipients send about them.

use serde::{Deserialize, Serialize};

use super::CompartmentView;

/// A parcel: metadata only, never a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelView {
    /// Id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Bank, once assigned.
    pub bank: Option<String>,
    /// Compartment, once assigned.
    pub compartment: Option<String>,
    /// Delivering carrier.
    pub carrier: String,
    /// Who may collect it: `null` while nobody is named (the carrier's address matched no
    /// resident), and always `null` to carriers and couriers, who never learn who a parcel is
    /// for.
    pub recipient: Option<String>,
    /// Carrier's reference; `null` once the recipient has been erased.
    pub tracking_ref: Option<String>,
    /// Size class.
    pub size: String,
    /// `expected`, `deposited`, `notified`, `picked_up`, `expired`, `returned` or `retrieved`.
    /// Carriers see `deposited` for `notified`: whether a recipient was told is not theirs to
    /// know.
    pub state: String,
    /// Announced.
    pub created_at: String,
    /// Deposited.
    pub deposited_at: Option<String>,
    /// Recipient notified (never shown to carriers).
    pub notified_at: Option<String>,
    /// End of the pickup window.
    pub expires_at: Option<String>,
    /// Left the locker for good.
    pub closed_at: Option<String>,
}

/// One entry of a parcel's chain of custody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventView {
    /// Position in the audit log.
    pub seq: i64,
    /// When.
    pub at: String,
    /// `person`, `carrier_key`, `device`, `system` or `anonymous`.
    pub actor_kind: String,
    /// The actor's id, when it has one.
    pub actor_id: Option<String>,
    /// What happened, such as `parcel.deposit`.
    pub action: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Why, as a machine reason (`code_expired`, `throttled:bank`, a purpose).
    pub reason: Option<String>,
    /// The words a person gave for the action (a remote open, a retrieval), when any were.
    pub statement: Option<StatementView>,
}

/// The words a person gave for an action. They are personal data, kept sealed under their
/// subject's own key; staff and auditors in scope and the subject read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatementView {
    /// `shown`; `withheld` (the caller may not read them); or `erased` (their subject was
    /// erased, and nobody can read them).
    pub state: String,
    /// The words, when shown.
    pub text: Option<String>,
}

/// A parcel with its chain of custody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParcelHistory {
    /// The parcel.
    pub parcel: ParcelView,
    /// Its events, oldest first.
    pub events: Vec<EventView>,
}

/// A carrier announces a parcel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExpectParcelRequest {
    /// Destination site.
    pub site: String,
    /// The recipient's e-mail address, as registered at the site.
    pub recipient_email: String,
    /// Carrier's tracking reference.
    pub tracking_ref: String,
    /// `small`, `medium`, `large` or `extra_large`.
    pub size: String,
    /// Needs an accessible-height compartment.
    #[serde(default)]
    pub accessible: bool,
    /// Needs a refrigerated compartment.
    #[serde(default)]
    pub refrigerated: bool,
}

/// Start a deposit at a bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// The bank the courier stands at.
    pub bank: String,
    /// A larger compartment than the announced size, for a parcel that does not fit one
    /// (`small`, `medium`, `large`, `extra_large`); a smaller size is ignored.
    #[serde(default)]
    pub size: Option<String>,
}

/// A deposit under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DepositView {
    /// The parcel.
    pub parcel: ParcelView,
    /// The reserved compartment, whose door is opening.
    pub compartment: CompartmentView,
    /// Whether the open command reached the bank's agent.
    pub command_delivered: bool,
}

/// A QR pickup token for the resident's app: shown as a QR code, held to the locker's scanner.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PickupQrView {
    /// The token's text (`CQ1:…`, 201 characters of the QR alphanumeric set). Opens the
    /// compartment once; never log it.
    pub token: String,
    /// When it stops working (RFC 3339); ask for a fresh one before then.
    pub expires_at: String,
}

impl std::fmt::Debug for PickupQrView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickupQrView").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// Open one's own compartment from the app, standing at the bank.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppOpenRequest {
    /// The six digits the bank's kiosk shows now (they change every 30 seconds).
    pub presence_code: String,
}

impl std::fmt::Debug for AppOpenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppOpenRequest(<redacted>)")
    }
}

/// A compartment opening for its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppOpenView {
    /// The compartment number, on its door.
    pub compartment: u16,
    /// Whether the open command reached the bank's agent.
    pub command_delivered: bool,
}

/// Name the resident a parcel is for, when the carrier's address matched none (staff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddressParcelRequest {
    /// The resident's e-mail address, as registered at the parcel's site.
    pub email: String,
}

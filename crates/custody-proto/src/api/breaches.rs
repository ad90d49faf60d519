//! Personal-data breaches: declared, with their deadlines, notices and steps.

use serde::{Deserialize, Serialize};

/// A personal-data breach as staff declare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclareBreachRequest {
    /// The site it happened at.
    pub site: String,
    /// The bank, when it was one bank.
    #[serde(default)]
    pub bank: Option<String>,
    /// The alert that raised it, if one did.
    #[serde(default)]
    pub alert: Option<String>,
    /// What happened (sealed at rest; up to 4,000 characters).
    pub summary: String,
    /// The window of time it covers: from (RFC 3339).
    pub window_from: String,
    /// To (RFC 3339; not in the future).
    pub window_to: String,
    /// When the organisation became aware of it (RFC 3339): the clocks run from here.
    pub discovered_at: String,
}

/// A step in answering a breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BreachStepRequest {
    /// `authority_notified`, `individuals_notified`, `hhs_notified`, `media_notified` or
    /// `closed` (which needs the authority, and the people reached, told first).
    pub step: String,
}

/// When each notice of a breach is due (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreachDeadlinesView {
    /// The supervisory authority: 72 hours from discovery (GDPR Art. 33).
    pub authority: String,
    /// Each person reached: 60 days (HIPAA §164.404).
    pub individuals: String,
    /// HHS: 60 days for 500 or more people; else 60 days after the year ends (§164.408).
    pub hhs: String,
    /// The media, when more than 500 are reached (§164.406).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
}

/// A step recorded in answering a breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreachStepView {
    /// Which step.
    pub step: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who recorded it.
    pub by: String,
}

/// A personal-data breach with its clocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreachView {
    /// Id.
    pub id: String,
    /// Where.
    pub site: String,
    /// Which bank, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
    /// The alert that raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// What happened.
    pub summary: String,
    /// The window it covers (RFC 3339): from.
    pub window_from: String,
    /// To.
    pub window_to: String,
    /// When the organisation became aware of it.
    pub discovered_at: String,
    /// When it was declared.
    pub declared_at: String,
    /// Who declared it.
    pub declared_by: String,
    /// How many people the audit log shows it reached.
    pub affected: u64,
    /// When each notice is due.
    pub deadlines: BreachDeadlinesView,
    /// What has been done, in order.
    pub steps: Vec<BreachStepView>,
}

/// One person's drafted notice of a breach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreachNoticeView {
    /// The person.
    pub person: String,
    /// Their address; absent once they were erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The letter, with the controller's parts in brackets.
    pub text: String,
}

/// The notices a breach calls for, drafted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreachNoticesView {
    /// To the supervisory authority (GDPR Art. 33(3)).
    pub authority: String,
    /// To each person reached (GDPR Art. 34, HIPAA §164.404(c)).
    pub individuals: Vec<BreachNoticeView>,
}

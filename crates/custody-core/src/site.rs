//! Site settings.

use std::time::Duration;

use crate::time::{days, hours};

/// How long a parcel waits for its recipient before it expires (DESIGN.md §1: default 7 days,
/// per site). Between 1 hour and 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickupWindow(Duration);

/// A pickup window outside 1 hour – 90 days.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickup window must be between 1 hour and 90 days")]
pub struct PickupWindowError;

impl PickupWindow {
    /// The default: seven days.
    pub const DEFAULT: Self = Self(days(7));

    /// Parses a window.
    pub fn new(d: Duration) -> Result<Self, PickupWindowError> {
        if (hours(1)..=days(90)).contains(&d) { Ok(Self(d)) } else { Err(PickupWindowError) }
    }

    /// The window.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Default for PickupWindow {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long a site keeps personal data once it has served its purpose (GDPR Art. 5(1)(e)),
/// in days, each between [`Retention::MIN_DAYS`] and [`Retention::MAX_DAYS`]. The sweeper
/// enforces it; the audit log itself is not personal data in clear (its words about people
/// are sealed under their own keys) and is kept whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Days after a parcel closes (picked up, returned to its carrier, or retrieved) before
    /// its tracking number and the link to its recipient are dropped.
    pub parcel_days: u32,
    /// Days after a session ends before its record (where it was started from) is deleted.
    pub session_days: u32,
    /// Days after a message or an alert notification was delivered or given up before its
    /// delivery record is deleted.
    pub delivery_days: u32,
    /// Days photos and clips are kept after they were taken.
    pub evidence_days: u32,
}

/// A retention outside its bounds, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} must be between 1 and 3650 days")]
pub struct RetentionError(pub &'static str);

impl Retention {
    /// The shortest retention: a day, so that a parcel disputed the day after pickup can still
    /// be traced.
    pub const MIN_DAYS: u32 = 1;
    /// The longest: ten years.
    pub const MAX_DAYS: u32 = 3650;
    /// What a site keeps unless its admins say otherwise: parcels 90 days (a carrier's claim
    /// window), sessions 30, delivery records 30, evidence 90.
    pub const DEFAULT: Self =
        Self { parcel_days: 90, session_days: 30, delivery_days: 30, evidence_days: 90 };

    /// `self`, if every field is within bounds.
    pub fn checked(self) -> Result<Self, RetentionError> {
        for (name, days) in [
            ("parcel_days", self.parcel_days),
            ("session_days", self.session_days),
            ("delivery_days", self.delivery_days),
            ("evidence_days", self.evidence_days),
        ] {
            if !(Self::MIN_DAYS..=Self::MAX_DAYS).contains(&days) {
                return Err(RetentionError(name));
            }
        }
        Ok(self)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An IANA time zone name such as `Europe/Berlin`, checked for form only (the server has no time
/// zone database; the name is for display in the site's local time by clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName(String);

/// A time zone name of the wrong form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time zone must be an IANA name such as Europe/Berlin or UTC")]
pub struct TimeZoneError;

impl TimeZoneName {
    /// Parses a time zone name.
    pub fn parse(s: &str) -> Result<Self, TimeZoneError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-+".contains(&b))
            });
        if ok { Ok(Self(s.to_owned())) } else { Err(TimeZoneError) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_bounded() {
        assert_eq!(PickupWindow::default().get(), days(7));
        assert!(PickupWindow::new(crate::time::minutes(1)).is_err());
        assert!(PickupWindow::new(days(91)).is_err());
        assert!(PickupWindow::new(days(14)).is_ok());
    }

    #[test]
    fn retention_is_bounded_and_names_the_field() {
        assert_eq!(Retention::default().checked(), Ok(Retention::DEFAULT));
        let zero = Retention { session_days: 0, ..Retention::DEFAULT };
        assert_eq!(zero.checked(), Err(RetentionError("session_days")));
        let long = Retention { evidence_days: 3651, ..Retention::DEFAULT };
        assert_eq!(
            long.checked().unwrap_err().to_string(),
            "evidence_days must be between 1 and 3650 days"
        );
        let edges = Retention { parcel_days: 1, session_days: 3650, ..Retention::DEFAULT };
        assert!(edges.checked().is_ok());
    }

    #[test]
    fn time_zones() {
        for ok in ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"] {
            assert!(TimeZoneName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Europe//Berlin", "/UTC", "Europe/Ber lin", "../etc/passwd"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad}");
        }
    }
}

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
    fn time_zones() {
        for ok in ["UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"] {
            assert!(TimeZoneName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Europe//Berlin", "/UTC", "Europe/Ber lin", "../etc/passwd"] {
            assert!(TimeZoneName::parse(bad).is_err(), "{bad}");
        }
    }
}

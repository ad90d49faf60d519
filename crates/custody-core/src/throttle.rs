//! Attempt throttles: fixed windows with a failure budget.
//!
//! A rule allows at most `max_failures` failed attempts per window for one key (one kiosk, one
//! bank, one account, one source address). The window is aligned to multiples of its length, so
//! the store counts failures with one conditional upsert per attempt and the bound on guesses a
//! year is exact: `max_failures × (windows per year + 1)`. The guessing bound in
//! `docs/SECURITY.md` is computed from these numbers.

use std::time::Duration;

use crate::time::{Timestamp, duration_millis, hours, minutes};

/// One throttle: a failure budget per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Stable name, part of the store key and the audit reason (`kiosk`, `bank`, `account`…).
    pub name: &'static str,
    /// Failures allowed in one window; the next attempt in the window is refused unchecked.
    pub max_failures: u32,
    /// Window length.
    pub window: Duration,
}

/// Milliseconds in a (Julian) year.
const YEAR_MS: i64 = 31_557_600_000;

impl ThrottleRule {
    /// Start of the window containing `now`.
    pub fn window_start(&self, now: Timestamp) -> Timestamp {
        let len = duration_millis(self.window).max(1);
        Timestamp::from_millis(now.as_millis().div_euclid(len) * len)
    }

    /// When the window containing `now` ends and the budget renews.
    pub fn window_end(&self, now: Timestamp) -> Timestamp {
        self.window_start(now).plus(self.window)
    }

    /// Whether another attempt may be checked, given the failures already counted in the window.
    pub fn allows(&self, failures_in_window: u32) -> bool {
        failures_in_window < self.max_failures
    }

    /// The most failed attempts one key can make in a year under this rule alone.
    pub fn max_failures_per_year(&self) -> u64 {
        let windows = YEAR_MS / duration_millis(self.window).max(1) + 1;
        u64::from(self.max_failures) * u64::try_from(windows).unwrap_or(u64::MAX)
    }
}

/// Failed pickup-code entries at one kiosk.
pub const KIOSK_PICKUP: ThrottleRule =
    ThrottleRule { name: "kiosk", max_failures: 5, window: minutes(5) };
/// Failed code entries (pickup and courier codes) across a whole bank, whatever the channel.
pub const BANK_PICKUP: ThrottleRule =
    ThrottleRule { name: "bank", max_failures: 10, window: minutes(60) };
/// … and over a day. This one sets the guessing bound: at most `24 × 366 = 8,784` failed
/// guesses a year at a bank (a year touches 366 day windows), each opening something with
/// probability at most `10^-10` (a locker number and ten digits), so at most `8.8e-7` a year
/// (DESIGN.md §4 invariant 6; `docs/SECURITY.md`).
pub const BANK_PICKUP_DAY: ThrottleRule =
    ThrottleRule { name: "bank_day", max_failures: 24, window: hours(24) };
/// Failed codes typed at a bank's kiosk while its agent cannot reach the server, counted by the
/// agent itself (and kept across its restarts in its journal). With [`BANK_PICKUP_DAY`] it sets
/// the guessing bound: `(24 + 3) × 366 = 9,882` failed guesses a year, so at most `9.9e-7`.
pub const OFFLINE_PICKUP_DAY: ThrottleRule =
    ThrottleRule { name: "offline_day", max_failures: 3, window: hours(24) };
/// Failed password logins for one account.
pub const ACCOUNT_LOGIN: ThrottleRule =
    ThrottleRule { name: "account", max_failures: 10, window: minutes(15) };
/// … and over a day: past the short budget the waits grow from a quarter of an hour to a day.
pub const ACCOUNT_LOGIN_DAY: ThrottleRule =
    ThrottleRule { name: "account_day", max_failures: 30, window: hours(24) };
/// Failed password logins from a browser that has signed in to that account before (it holds
/// the account's device cookie): a budget of its own, which failures from anywhere else do
/// not touch, so nobody can lock a person out by failing on purpose.
pub const DEVICE_LOGIN: ThrottleRule =
    ThrottleRule { name: "device", max_failures: 10, window: minutes(15) };
/// Failed password logins across the installation, against password spraying over many
/// accounts and addresses. Browsers with a device cookie are not held by it.
pub const GLOBAL_LOGIN: ThrottleRule =
    ThrottleRule { name: "global", max_failures: 1000, window: minutes(15) };
/// Compartments one person opens by bulk opens, approved or not: a cap no approval lifts.
pub const BULK_OPEN_PERSON: ThrottleRule =
    ThrottleRule { name: "bulk_open", max_failures: 24, window: hours(1) };
/// Sign-in links asked for one address (whether it belongs to anyone or not): no mail bombing.
pub const LINK_ACCOUNT: ThrottleRule =
    ThrottleRule { name: "link_account", max_failures: 3, window: minutes(15) };
/// Sign-in links asked for from one source address.
pub const LINK_SOURCE: ThrottleRule =
    ThrottleRule { name: "link_source", max_failures: 20, window: minutes(15) };
/// Pickup codes re-sent for one parcel: a lost message is found again, a mailbox is not
/// flooded.
pub const RESEND_PARCEL: ThrottleRule =
    ThrottleRule { name: "resend_parcel", max_failures: 3, window: hours(24) };
/// … and for one recipient, whatever the parcel.
pub const RESEND_RECIPIENT: ThrottleRule =
    ThrottleRule { name: "resend_recipient", max_failures: 10, window: hours(24) };
/// Wrong presence codes sent from the app by one person (opening from the phone).
pub const APP_OPEN: ThrottleRule =
    ThrottleRule { name: "app_open", max_failures: 5, window: minutes(15) };
/// … and over a day.
pub const APP_OPEN_DAY: ThrottleRule =
    ThrottleRule { name: "app_open_day", max_failures: 20, window: hours(24) };
/// Failed password logins from one source address.
pub const SOURCE_LOGIN: ThrottleRule =
    ThrottleRule { name: "source", max_failures: 50, window: minutes(15) };
/// Failed second-factor codes (authenticator app or recovery code) for one account, short term.
pub const ACCOUNT_SECOND_FACTOR: ThrottleRule =
    ThrottleRule { name: "factor", max_failures: 5, window: minutes(15) };
/// … and over a day.
pub const ACCOUNT_SECOND_FACTOR_DAY: ThrottleRule =
    ThrottleRule { name: "factor_day", max_failures: 20, window: hours(24) };
/// Wrong authenticator-app codes in a row after which the app is locked until it is set up
/// again (NIST SP 800-63B §5.2.2 allows at most 100). With three codes valid at any moment, an
/// attacker who has the password guesses one before the lock with probability at most
/// `100 × 3 / 10^6 = 0.03 %` (`docs/SECURITY.md`). Recovery codes (120 bits) still work, so
/// the lock cannot shut the person out.
pub const TOTP_CONSECUTIVE_FAILURES: u32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_and_renew() {
        let rule = KIOSK_PICKUP;
        let t = Timestamp::from_millis(7 * 60_000 + 123);
        assert_eq!(rule.window_start(t), Timestamp::from_millis(5 * 60_000));
        assert_eq!(rule.window_end(t), Timestamp::from_millis(10 * 60_000));
        assert!(rule.allows(4));
        assert!(!rule.allows(5));
        assert_eq!(rule.window_start(Timestamp::from_millis(-1)), Timestamp::from_millis(-300_000));
    }

    #[test]
    fn yearly_budget_is_exact() {
        // 10 an hour: 8766 hours in a Julian year, plus the partial window at each end.
        assert_eq!(BANK_PICKUP.max_failures_per_year(), 10 * 8767);
        // 24 a day: 365 days, plus the partial window at each end.
        assert_eq!(BANK_PICKUP_DAY.max_failures_per_year(), 24 * 366);
    }

    /// DESIGN.md §4 invariant 6, from the constants as they are: the guesses a bank lets
    /// through in a year, each opening something with probability one in the code space (a
    /// guess names its locker), stay under one in a million.
    #[test]
    fn the_guessing_bound_holds() {
        let online =
            BANK_PICKUP_DAY.max_failures_per_year().min(BANK_PICKUP.max_failures_per_year());
        let space = crate::code::PICKUP_CODE_SPACE;
        #[allow(clippy::cast_precision_loss, reason = "a probability, to two figures")]
        let p = |guesses: u64| guesses as f64 / space as f64;
        assert!(p(online) > 8.7e-7 && p(online) < 8.8e-7, "SECURITY.md says 8.8e-7: {online}");
        // While the agent cannot reach the server it counts wrong codes itself, on top of
        // whatever the server let through that year.
        let both = online + OFFLINE_PICKUP_DAY.max_failures_per_year();
        assert!(p(both) <= 1e-6, "{both} guesses a year over {space} codes: {}", p(both));
        assert!(p(both) > 9.8e-7 && p(both) < 9.9e-7, "SECURITY.md says 9.9e-7: {both}");
    }

    /// Badges share the kiosk's and the bank's budgets with typed codes, so a guess is one kind
    /// or the other: a guessed badge number must open no more often than a guessed code.
    #[test]
    fn a_guessed_badge_opens_no_more_often_than_a_guessed_code() {
        use crate::badge::{MAX_SITE_BADGES, MIN_BADGE_BITS};
        #[allow(clippy::cast_precision_loss, reason = "probabilities, to two figures")]
        let (badge, code) = (
            MAX_SITE_BADGES as f64 / 2f64.powi(i32::try_from(MIN_BADGE_BITS).unwrap_or(0)),
            1.0 / crate::code::PICKUP_CODE_SPACE as f64,
        );
        assert!(badge <= code, "a badge guess opens with {badge}, a code guess with {code}");
    }
}

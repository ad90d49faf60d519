//! Personal-data breaches: the deadlines the law sets from the moment the organisation became
//! aware of one, and the steps that answer them.
//!
//! - GDPR Art. 33(1): the supervisory authority, without undue delay and within 72 hours.
//! - HIPAA §164.404(b): each individual, without unreasonable delay and within 60 days.
//! - HIPAA §164.408: the Secretary (HHS) within 60 days when 500 or more are affected;
//!   otherwise in the yearly log, within 60 days after the end of the calendar year.
//! - HIPAA §164.406: prominent media outlets within 60 days when more than 500 residents of a
//!   State or jurisdiction are affected (Custody cannot know where people live; it flags a
//!   breach of more than 500 people for the controller to decide).

use std::time::Duration;

use crate::compartment::named_enum;
use crate::time::{Timestamp, days, hours};

/// The GDPR's window for telling the supervisory authority.
pub const AUTHORITY_WINDOW: Duration = hours(72);
/// HIPAA's outer limit for telling individuals, HHS (large breaches) and the media.
pub const HIPAA_WINDOW: Duration = days(60);
/// Affected people from which HHS is told within 60 days rather than in the yearly log.
pub const HHS_PROMPT_FROM: u64 = 500;
/// Affected people above which a media notice may be owed.
pub const MEDIA_ABOVE: u64 = 500;

/// When each notice is due, for a breach discovered at `discovered` affecting `affected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The supervisory authority (GDPR Art. 33): 72 hours.
    pub authority: Timestamp,
    /// Each individual (HIPAA §164.404; GDPR Art. 34 says "without undue delay"): 60 days.
    pub individuals: Timestamp,
    /// HHS (HIPAA §164.408): 60 days for 500 or more; else 60 days after the year ends.
    pub hhs: Timestamp,
    /// The media (HIPAA §164.406), when more than 500 are affected.
    pub media: Option<Timestamp>,
}

impl Deadlines {
    /// The deadlines of a breach discovered at `discovered` that affects `affected` people.
    pub fn of(discovered: Timestamp, affected: u64) -> Self {
        let within_60 = discovered.plus(HIPAA_WINDOW);
        let hhs = if affected >= HHS_PROMPT_FROM {
            within_60
        } else {
            start_of_next_year(discovered).plus(HIPAA_WINDOW)
        };
        Self {
            authority: discovered.plus(AUTHORITY_WINDOW),
            individuals: within_60,
            hhs,
            media: (affected > MEDIA_ABOVE).then_some(within_60),
        }
    }
}

/// 00:00 UTC on 1 January of the year after the one `t` falls in.
pub fn start_of_next_year(t: Timestamp) -> Timestamp {
    let (year, _, _) = civil_from_days(t.utc_day());
    Timestamp::utc_day_start(days_from_civil(year + 1, 1, 1))
}

/// Day `days` since the epoch as `YYYY-MM-DD`, for notices.
pub fn civil_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day since the epoch (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

/// Days since the epoch of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

named_enum!(
    /// A step in answering a breach, each recorded once, with when and by whom.
    BreachStep {
        /// The supervisory authority was told (GDPR Art. 33).
        AuthorityNotified = "authority_notified",
        /// The affected people were told (GDPR Art. 34, HIPAA §164.404).
        IndividualsNotified = "individuals_notified",
        /// HHS was told, or the breach entered in the yearly log (HIPAA §164.408).
        HhsNotified = "hhs_notified",
        /// The media were told (HIPAA §164.406).
        MediaNotified = "media_notified",
        /// The breach is closed: every notice owed was given.
        Closed = "closed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// 2030-03-15T10:00:00Z.
    const MARCH_2030: Timestamp = Timestamp::from_millis(1_899_880_800_000);

    #[test]
    fn dates_round_trip() {
        for day in [-800_000, -1, 0, 1, 10_957, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2030, 1, 1), 21_915);
        assert_eq!(civil_date(21_915), "2030-01-01");
    }

    #[test]
    fn the_clocks_run_from_discovery() {
        let small = Deadlines::of(MARCH_2030, 12);
        assert_eq!(small.authority, MARCH_2030.plus(hours(72)));
        assert_eq!(small.individuals, MARCH_2030.plus(days(60)));
        // Fewer than 500: the yearly log, due 60 days after 2030 ends (1 March 2031, 00:00).
        assert_eq!(small.hhs, Timestamp::utc_day_start(days_from_civil(2031, 3, 2)));
        assert_eq!(small.media, None);
        let large = Deadlines::of(MARCH_2030, 500);
        assert_eq!((large.hhs, large.media), (MARCH_2030.plus(days(60)), None));
        let larger = Deadlines::of(MARCH_2030, 501);
        assert_eq!(larger.media, Some(MARCH_2030.plus(days(60))));
        // The last moment of a year still counts in that year.
        let eve =
            Timestamp::utc_day_start(days_from_civil(2031, 1, 1)).minus(Duration::from_millis(1));
        assert_eq!(start_of_next_year(eve), Timestamp::utc_day_start(days_from_civil(2031, 1, 1)));
    }
}

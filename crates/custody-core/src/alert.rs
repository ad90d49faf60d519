//! Alerts: what the agents' sensors and the server's own checks raise, how serious each is, and
//! the states an alert goes through (`docs/design/0007-incidents.md`).
//!
//! A sensor that chatters must not bury the one reading that matters, nor flood the link, so
//! each kind has a [`Debounce`] rule: how many readings within how long make one that counts,
//! and how long after a counted reading the next is not counted again. [`Debouncer`] applies
//! the rules; the agent runs it on its readings before reporting them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Timestamp;
use crate::TransitionError;
use crate::compartment::named_enum;

named_enum!(
    /// What an alert is about.
    AlertKind {
        /// A blow to the bank (accelerometer).
        Impact = "impact",
        /// A door or panel levered (pry sensor).
        Pry = "pry",
        /// Drilling (vibration at drilling frequencies).
        Drill = "drill",
        /// A door read open with no command to open it.
        DoorForced = "door_forced",
        /// A door left open past its time.
        DoorLeftOpen = "door_left_open",
        /// A compartment opened with the mechanical override key.
        OverrideKey = "override_key",
        /// The card reader's tamper switch.
        ReaderTamper = "reader_tamper",
        /// The bank's enclosure opened.
        EnclosureOpen = "enclosure_open",
        /// Mains power lost (the controller runs on its battery).
        PowerLoss = "power_loss",
        /// The bank's agent missed its heartbeats.
        DeviceOffline = "device_offline",
        /// A bank's budget for typed credentials spent: someone is guessing.
        BruteForce = "brute_force",
        /// Bulk opens beyond their cap.
        BulkOpen = "bulk_open",
        /// One device identity connected from two places at once: a copied certificate.
        IdentityInTwoPlaces = "identity_in_two_places",
        /// The audit log's self-check failed.
        AuditIntegrity = "audit_integrity",
    }
);

named_enum!(
    /// How serious an alert is, least first.
    Severity {
        /// Worth a look in working hours.
        Low = "low",
        /// Worth a look today.
        Medium = "medium",
        /// Someone should look now.
        High = "high",
        /// An attack under way, or the record in doubt.
        Critical = "critical",
    }
);

named_enum!(
    /// Where an alert stands.
    AlertState {
        /// Raised; nobody has taken it yet.
        Open = "open",
        /// Someone took it and is looking into it.
        Acknowledged = "acknowledged",
        /// Dealt with. A resolved alert stays resolved: a new reading raises a new alert.
        Resolved = "resolved",
    }
);

named_enum!(
    /// What a lockdown rule locks down when it matches.
    LockdownScope {
        /// The bank the alert is about.
        Bank = "bank",
        /// Every bank of the site.
        Site = "site",
    }
);

/// A site's rule: an alert of `kind` (any kind, with `None`) at `min_severity` or above locks
/// down `scope` the moment it is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockdownRule {
    /// The kind it is for; `None` for every kind.
    pub kind: Option<AlertKind>,
    /// The least severity that triggers it.
    pub min_severity: Severity,
    /// What it locks down.
    pub scope: LockdownScope,
}

impl LockdownRule {
    /// Whether an alert of `kind` and `severity` triggers this rule.
    pub fn matches(&self, kind: AlertKind, severity: Severity) -> bool {
        self.kind.is_none_or(|k| k == kind) && severity >= self.min_severity
    }
}

/// What staff do with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStep {
    /// Take it: they own it from now on.
    Acknowledge,
    /// Close it.
    Resolve,
}

impl AlertStep {
    /// The step's name, as in the audit log.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }
}

impl AlertState {
    /// The state after `step`, or an error when the step makes no sense now.
    pub fn apply(self, step: AlertStep) -> Result<Self, TransitionError> {
        match (self, step) {
            (Self::Open, AlertStep::Acknowledge) => Ok(Self::Acknowledged),
            (Self::Open | Self::Acknowledged, AlertStep::Resolve) => Ok(Self::Resolved),
            (from, step) => {
                Err(TransitionError { entity: "alert", event: step.as_str(), from: from.as_str() })
            }
        }
    }

    /// Whether a new reading of the same kind joins this alert rather than raising another.
    pub const fn is_live(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged)
    }
}

impl AlertKind {
    /// Whether an agent may report this kind; the others are the server's own, and a device
    /// that claims one is not believed.
    pub const fn from_sensor(self) -> bool {
        matches!(
            self,
            Self::Impact
                | Self::Pry
                | Self::Drill
                | Self::DoorForced
                | Self::DoorLeftOpen
                | Self::OverrideKey
                | Self::ReaderTamper
                | Self::EnclosureOpen
                | Self::PowerLoss
        )
    }

    /// How serious an alert of this kind is unless a site says otherwise.
    pub const fn default_severity(self) -> Severity {
        match self {
            Self::Pry
            | Self::Drill
            | Self::DoorForced
            | Self::IdentityInTwoPlaces
            | Self::AuditIntegrity => Severity::Critical,
            Self::Impact
            | Self::OverrideKey
            | Self::ReaderTamper
            | Self::EnclosureOpen
            | Self::BruteForce
            | Self::BulkOpen => Severity::High,
            Self::DoorLeftOpen | Self::PowerLoss | Self::DeviceOffline => Severity::Medium,
        }
    }
}

/// When readings of one kind count: `threshold` of them within `window`, and then none again
/// for `quiet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// Readings needed within the window (at least 1).
    pub threshold: u32,
    /// The window they must fall in.
    pub window: Duration,
    /// After a counted reading, how long further readings are not counted again.
    pub quiet: Duration,
}

impl Debounce {
    /// The rule for `kind` unless a bank says otherwise: an impact needs three within ten
    /// seconds (a slammed door is one); anything else counts at once. Either way one minute
    /// passes before the same kind at the same place counts again.
    pub const fn default_for(kind: AlertKind) -> Self {
        let threshold = if matches!(kind, AlertKind::Impact) { 3 } else { 1 };
        Self { threshold, window: Duration::from_secs(10), quiet: Duration::from_mins(1) }
    }
}

/// Applies [`Debounce`] rules to readings, per kind and compartment (`None` for the bank as a
/// whole).
#[derive(Debug, Default, Clone)]
pub struct Debouncer {
    seen: BTreeMap<(AlertKind, Option<u16>), Seen>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    /// Readings not yet counted, within the window (ms).
    recent: Vec<i64>,
    /// The last counted reading (ms).
    counted: Option<i64>,
}

impl Debouncer {
    /// Takes a reading at `at`; whether it counts under `rule`.
    pub fn reading(
        &mut self,
        rule: Debounce,
        kind: AlertKind,
        compartment: Option<u16>,
        at: Timestamp,
    ) -> bool {
        let at = at.as_millis();
        let window = millis(rule.window);
        let seen = self.seen.entry((kind, compartment)).or_default();
        if seen.counted.is_some_and(|c| at.saturating_sub(c) < millis(rule.quiet)) {
            return false;
        }
        seen.recent.retain(|r| at.saturating_sub(*r) < window);
        seen.recent.push(at);
        if seen.recent.len() < usize::try_from(rule.threshold.max(1)).unwrap_or(usize::MAX) {
            return false;
        }
        seen.recent.clear();
        seen.counted = Some(at);
        true
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp::from_millis(1_893_456_000_000);

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(T0.as_millis() + ms)
    }

    #[test]
    fn states_move_forward_only() {
        use AlertState as S;
        use AlertStep as E;
        let table = [
            (S::Open, E::Acknowledge, Some(S::Acknowledged)),
            (S::Open, E::Resolve, Some(S::Resolved)),
            (S::Acknowledged, E::Resolve, Some(S::Resolved)),
            (S::Acknowledged, E::Acknowledge, None),
            (S::Resolved, E::Acknowledge, None),
            (S::Resolved, E::Resolve, None),
        ];
        for (from, step, to) in table {
            assert_eq!(from.apply(step).ok(), to, "{from} {}", step.as_str());
        }
        assert!(S::Open.is_live() && S::Acknowledged.is_live() && !S::Resolved.is_live());
        let err = S::Resolved.apply(E::Resolve).unwrap_err();
        assert_eq!((err.entity, err.event, err.from), ("alert", "resolve", "resolved"));
    }

    #[test]
    fn every_kind_has_a_severity_and_only_sensor_kinds_come_from_devices() {
        let sensors: Vec<&str> =
            AlertKind::ALL.iter().filter(|k| k.from_sensor()).map(|k| k.as_str()).collect();
        assert_eq!(
            sensors,
            [
                "impact",
                "pry",
                "drill",
                "door_forced",
                "door_left_open",
                "override_key",
                "reader_tamper",
                "enclosure_open",
                "power_loss"
            ]
        );
        let critical: Vec<&str> = AlertKind::ALL
            .iter()
            .filter(|k| k.default_severity() == Severity::Critical)
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            critical,
            ["pry", "drill", "door_forced", "identity_in_two_places", "audit_integrity"]
        );
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
    }

    #[test]
    fn a_rule_matches_its_kind_at_its_severity_or_above() {
        let pry = LockdownRule {
            kind: Some(AlertKind::Pry),
            min_severity: Severity::High,
            scope: LockdownScope::Bank,
        };
        assert!(pry.matches(AlertKind::Pry, Severity::Critical));
        assert!(pry.matches(AlertKind::Pry, Severity::High));
        assert!(!pry.matches(AlertKind::Pry, Severity::Medium));
        assert!(!pry.matches(AlertKind::Drill, Severity::Critical));
        let any = LockdownRule { kind: None, ..pry };
        assert!(any.matches(AlertKind::Drill, Severity::Critical));
        assert!(!any.matches(AlertKind::PowerLoss, Severity::Medium));
    }

    #[test]
    fn a_pry_counts_at_once_and_then_not_for_a_minute() {
        let mut d = Debouncer::default();
        let rule = Debounce::default_for(AlertKind::Pry);
        assert!(d.reading(rule, AlertKind::Pry, Some(3), at(0)));
        assert!(!d.reading(rule, AlertKind::Pry, Some(3), at(59_999)));
        assert!(d.reading(rule, AlertKind::Pry, Some(4), at(1_000)), "another compartment");
        assert!(d.reading(rule, AlertKind::Pry, Some(3), at(60_000)));
    }

    #[test]
    fn an_impact_needs_three_within_ten_seconds() {
        let mut d = Debouncer::default();
        let rule = Debounce::default_for(AlertKind::Impact);
        let hit = |d: &mut Debouncer, ms| d.reading(rule, AlertKind::Impact, None, at(ms));
        assert!(!hit(&mut d, 0));
        assert!(!hit(&mut d, 9_000));
        // The first has left the window: two within ten seconds, not three.
        assert!(!hit(&mut d, 10_500));
        assert!(hit(&mut d, 12_000));
        assert!(!hit(&mut d, 13_000), "quiet");
    }

    proptest! {
        #[test]
        fn counted_readings_are_a_quiet_period_apart_and_need_the_threshold(
            gaps in proptest::collection::vec(0i64..20_000, 1..60),
            threshold in 1u32..5,
        ) {
            let rule = Debounce {
                threshold,
                window: Duration::from_secs(10),
                quiet: Duration::from_secs(30),
            };
            let mut d = Debouncer::default();
            let (mut now, mut counted, mut since) = (0i64, Vec::new(), 0u32);
            for gap in gaps {
                now += gap;
                since += 1;
                if d.reading(rule, AlertKind::Drill, Some(1), at(now)) {
                    prop_assert!(since >= threshold);
                    counted.push(now);
                    since = 0;
                }
            }
            for pair in counted.windows(2) {
                prop_assert!(pair[1] - pair[0] >= 30_000);
            }
        }
    }
}

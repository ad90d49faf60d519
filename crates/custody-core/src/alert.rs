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
    /// How an alert reaches people and systems.
    Channel {
        /// E-mail to a member of staff who agreed to it.
        Email = "email",
        /// A text message to a member of staff who agreed to it.
        Sms = "sms",
        /// An HTTPS `POST` signed per Standard Webhooks, to a site's endpoint.
        Webhook = "webhook",
        /// RFC 5424 over TLS with a CEF payload, to a site's SIEM.
        Syslog = "syslog",
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

    /// A rule from its stable names: `kind` is an alert kind or `any`.
    pub fn parse(kind: &str, min_severity: &str, scope: &str) -> Result<Self, String> {
        Ok(Self {
            kind: Self::parse_kind(kind)?,
            min_severity: Severity::parse(min_severity)
                .ok_or("min_severity: low, medium, high or critical")?,
            scope: LockdownScope::parse(scope).ok_or("scope: bank or site")?,
        })
    }

    /// `any` (`None`), or an alert kind.
    pub fn parse_kind(kind: &str) -> Result<Option<AlertKind>, String> {
        if kind == ANY_KIND {
            return Ok(None);
        }
        AlertKind::parse(kind).map(Some).ok_or_else(|| format!("no alert kind {kind:?}"))
    }

    /// The stable name of the rule's kind: the alert kind, or `any`.
    pub fn kind_str(&self) -> &'static str {
        self.kind.map_or(ANY_KIND, AlertKind::as_str)
    }
}

/// The name of a lockdown rule for every kind.
pub const ANY_KIND: &str = "any";

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
            Self::PowerLoss | Self::DeviceOffline => Severity::Medium,
            // Often a courier still loading: worth a look, not a call.
            Self::DoorLeftOpen => Severity::Low,
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

/// How long a door may stand open before it is `door_left_open`, unless a bank says otherwise.
pub const DOOR_LEFT_OPEN_AFTER: Duration = Duration::from_mins(3);

/// A bank's sensor settings: the debounce rules that differ from each kind's default
/// ([`Debounce::default_for`]), and how long a door may stand open. Set by an admin; the bank's
/// agent applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorSettings {
    /// Rules by kind, where the bank differs from the default.
    pub debounce: BTreeMap<AlertKind, Debounce>,
    /// A door open for longer is `door_left_open`.
    pub door_left_open_after: Duration,
}

impl Default for SensorSettings {
    fn default() -> Self {
        Self { debounce: BTreeMap::new(), door_left_open_after: DOOR_LEFT_OPEN_AFTER }
    }
}

/// The most readings a rule may want before one counts: more, and a real attack could go
/// unreported.
pub const MAX_THRESHOLD: u32 = 20;
/// The longest window and quiet period a rule may have.
pub const MAX_DEBOUNCE: Duration = Duration::from_hours(1);
/// The shortest quiet period: less, and a chattering sensor floods the link.
pub const MIN_QUIET: Duration = Duration::from_secs(1);
/// The bounds on how long a door may stand open.
pub const DOOR_LEFT_OPEN_RANGE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_hours(24));

impl SensorSettings {
    /// Settings as they travel (the API's and the device link's form): `(kind, threshold,
    /// window in ms, quiet in ms)` for each kind that differs, and the door's time in seconds.
    pub fn from_wire(
        rules: impl IntoIterator<Item = (String, u32, u64, u64)>,
        door_left_open_after_secs: u64,
    ) -> Result<Self, String> {
        let rules = rules.into_iter().map(|(kind, threshold, window_ms, quiet_ms)| {
            let window = Duration::from_millis(window_ms);
            (kind, Debounce { threshold, window, quiet: Duration::from_millis(quiet_ms) })
        });
        Self::new(rules, Duration::from_secs(door_left_open_after_secs))
    }

    /// The rule for `kind` at this bank.
    pub fn debounce_for(&self, kind: AlertKind) -> Debounce {
        self.debounce.get(&kind).copied().unwrap_or_else(|| Debounce::default_for(kind))
    }

    /// Settings from their parts: `(kind, threshold, window, quiet)` for each kind that
    /// differs from its default, and how long a door may stand open. Every kind must come from
    /// a sensor and appear once; every figure must be within bounds.
    pub fn new(
        rules: impl IntoIterator<Item = (String, Debounce)>,
        door_left_open_after: Duration,
    ) -> Result<Self, String> {
        let mut debounce = BTreeMap::new();
        for (name, rule) in rules {
            let kind = AlertKind::parse(&name)
                .filter(|k| k.from_sensor())
                .ok_or_else(|| format!("{name:?} is not a kind a sensor reads"))?;
            if !(1..=MAX_THRESHOLD).contains(&rule.threshold) {
                return Err(format!("{kind}: threshold must be 1 to {MAX_THRESHOLD}"));
            }
            if rule.window > MAX_DEBOUNCE || rule.quiet > MAX_DEBOUNCE {
                return Err(format!("{kind}: window and quiet must be at most an hour"));
            }
            if rule.threshold > 1 && rule.window.is_zero() {
                return Err(format!("{kind}: a threshold above 1 needs a window"));
            }
            if rule.quiet < MIN_QUIET {
                return Err(format!("{kind}: quiet must be at least a second"));
            }
            if debounce.insert(kind, rule).is_some() {
                return Err(format!("{kind}: given twice"));
            }
        }
        let (least, most) = DOOR_LEFT_OPEN_RANGE;
        if !(least..=most).contains(&door_left_open_after) {
            return Err("door_left_open_after: 30 seconds to 24 hours".into());
        }
        Ok(Self { debounce, door_left_open_after })
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

    #[test]
    fn sensor_settings_take_sensor_kinds_within_bounds_only() {
        let rule = |threshold, window_s, quiet_s| Debounce {
            threshold,
            window: Duration::from_secs(window_s),
            quiet: Duration::from_secs(quiet_s),
        };
        let door = DOOR_LEFT_OPEN_AFTER;
        let set = SensorSettings::new([("impact".to_owned(), rule(5, 20, 120))], door).unwrap();
        assert_eq!(set.debounce_for(AlertKind::Impact), rule(5, 20, 120));
        assert_eq!(set.debounce_for(AlertKind::Pry), Debounce::default_for(AlertKind::Pry));
        assert_eq!(SensorSettings::new([], door).unwrap(), SensorSettings::default());
        let refused = [
            (vec![("brute_force".to_owned(), rule(1, 10, 60))], door, "not a kind a sensor"),
            (vec![("nothing".to_owned(), rule(1, 10, 60))], door, "not a kind a sensor"),
            (vec![("pry".to_owned(), rule(0, 10, 60))], door, "threshold"),
            (vec![("pry".to_owned(), rule(21, 10, 60))], door, "threshold"),
            (vec![("pry".to_owned(), rule(2, 0, 60))], door, "needs a window"),
            (vec![("pry".to_owned(), rule(1, 3601, 60))], door, "at most an hour"),
            (vec![("pry".to_owned(), rule(1, 10, 0))], door, "at least a second"),
            (
                vec![("pry".to_owned(), rule(1, 10, 60)), ("pry".to_owned(), rule(2, 10, 60))],
                door,
                "twice",
            ),
            (vec![], Duration::from_secs(29), "door_left_open_after"),
            (vec![], Duration::from_hours(25), "door_left_open_after"),
        ];
        for (rules, door, says) in refused {
            let err = SensorSettings::new(rules.clone(), door).unwrap_err();
            assert!(err.contains(says), "{rules:?} {door:?}: {err}");
        }
    }

    #[test]
    fn lockdown_rules_parse_from_their_names() {
        let rule = LockdownRule::parse("any", "high", "site").unwrap();
        assert_eq!(rule.kind_str(), "any");
        assert!(rule.matches(AlertKind::Impact, Severity::High));
        assert!(!rule.matches(AlertKind::PowerLoss, Severity::Medium));
        let pry = LockdownRule::parse("pry", "low", "bank").unwrap();
        assert_eq!((pry.kind, pry.scope), (Some(AlertKind::Pry), LockdownScope::Bank));
        assert!(
            LockdownRule::parse("prying", "low", "bank").unwrap_err().contains("no alert kind")
        );
        assert!(LockdownRule::parse("pry", "dire", "bank").unwrap_err().contains("min_severity"));
        assert!(LockdownRule::parse("pry", "low", "world").unwrap_err().contains("scope"));
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

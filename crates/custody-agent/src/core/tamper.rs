//! Door and sensor readings: debounced, journaled, reported until acknowledged, matched
//! against the site's lockdown rules; doors forced or left open; lockdowns.

use super::{Action, AgentCore, FORCED_AFTER_MS};
use crate::journal::{Entry, Reading};
use custody_core::Timestamp;
use custody_core::alert::{AlertKind, LockdownRule, SensorSettings};
use custody_proto::device::{AgentMessage, BankPolicy, DoorReading};

/// The sensor settings and lockdown rules of a policy as sent; an error for one that cannot be
/// read whole.
pub(super) fn policy(sent: &BankPolicy) -> Result<(SensorSettings, Vec<LockdownRule>), String> {
    let rules =
        sent.sensors.rules.iter().map(|r| (r.kind.clone(), r.threshold, r.window_ms, r.quiet_ms));
    let sensors = SensorSettings::from_wire(rules, sent.sensors.door_left_open_after_secs)?;
    let lockdown = sent
        .lockdown
        .iter()
        .map(|r| LockdownRule::parse(&r.kind, &r.min_severity, &r.scope))
        .collect::<Result<_, _>>()?;
    Ok((sensors, lockdown))
}

impl AgentCore {
    /// Takes the server's word on the lockdown: journaled when it changes.
    pub(super) fn lockdown(&mut self, now: Timestamp, on: bool) -> Vec<Action> {
        if on == self.locked_down {
            return Vec::new();
        }
        self.locked_down = on;
        vec![self.record(now, Entry::Lockdown { on }), Action::Interlock(self.interlocked())]
    }

    /// Takes the bank's policy as sent: journaled when it changed. One that cannot be read
    /// leaves the last one in force.
    pub(super) fn take_policy(&mut self, now: Timestamp, sent: BankPolicy) -> Vec<Action> {
        let Ok((sensors, rules)) = policy(&sent) else { return Vec::new() };
        if sensors == self.sensors && rules == self.rules {
            return Vec::new();
        }
        self.sensors = sensors;
        self.rules = rules;
        vec![self.record(now, Entry::Policy { policy: sent })]
    }

    /// The server has a reading: it need not be sent again, and a lockdown it engaged here is
    /// the server's to keep or lift from now on.
    pub(super) fn reading_acknowledged(&mut self, now: Timestamp, counter: u64) -> Vec<Action> {
        let was = self.interlocked();
        if self.readings.remove(&counter).is_none() {
            return Vec::new();
        }
        let mut actions = vec![self.record(now, Entry::SensorAck { counter })];
        if self.interlocked() != was {
            actions.push(Action::Interlock(self.interlocked()));
        }
        actions
    }

    /// Doors open longer than the bank allows, each once per opening.
    pub(super) fn doors_left_open(&mut self, now: Timestamp) -> Vec<Action> {
        let after =
            i64::try_from(self.sensors.door_left_open_after.as_millis()).unwrap_or(i64::MAX);
        let due: Vec<u16> = self
            .open_since
            .iter()
            .filter(|(_, (since, told))| !told && now.as_millis().saturating_sub(*since) >= after)
            .map(|(c, _)| *c)
            .collect();
        let mut actions = Vec::new();
        for compartment in due {
            if let Some(open) = self.open_since.get_mut(&compartment) {
                open.1 = true;
            }
            actions.extend(self.sensor(now, AlertKind::DoorLeftOpen, Some(compartment)));
        }
        actions
    }

    /// A door reading: journaled and reported. A shut door that opens with no unlock shortly
    /// before was forced (or opened with the override key, which reads the same); each unlock
    /// allows one opening. A door never read before counts as shut (the journal gives the
    /// last reading before a restart, so a door opened while the agent was down is caught); an
    /// unknown reading says nothing either way.
    pub(super) fn door(
        &mut self,
        now: Timestamp,
        compartment: u16,
        reading: DoorReading,
    ) -> Vec<Action> {
        let before = self.doors.insert(compartment, reading);
        match reading {
            DoorReading::Open if before != Some(DoorReading::Open) => {
                self.open_since.insert(compartment, (now.as_millis(), false));
            }
            DoorReading::Closed => {
                self.open_since.remove(&compartment);
            }
            DoorReading::Open | DoorReading::Unknown => {}
        }
        let record = self.record(now, Entry::Door { compartment, reading });
        let mut actions = vec![
            record,
            Action::Send(AgentMessage::DoorReport {
                compartment,
                door: reading,
                counter: self.counter,
            }),
        ];
        if reading != DoorReading::Open
            || before.unwrap_or(DoorReading::Closed) != DoorReading::Closed
        {
            return actions;
        }
        let unlocked = self
            .unlocked_at
            .remove(&compartment)
            .is_some_and(|at| now.as_millis().saturating_sub(at) < FORCED_AFTER_MS);
        if !unlocked {
            actions.extend(self.sensor(now, AlertKind::DoorForced, Some(compartment)));
        }
        actions
    }

    /// A tamper reading: if it counts under the bank's rule for its kind, journaled, then
    /// reported (and again after every welcome until acknowledged). A reading one of the site's
    /// lockdown rules matches locks the bank down here at once.
    pub(super) fn sensor(
        &mut self,
        now: Timestamp,
        kind: AlertKind,
        compartment: Option<u16>,
    ) -> Vec<Action> {
        if !kind.from_sensor()
            || !self.debouncer.reading(self.sensors.debounce_for(kind), kind, compartment, now)
        {
            return Vec::new();
        }
        let was = self.interlocked();
        let locks = self.rules.iter().any(|r| r.matches(kind, kind.default_severity()));
        let alert = kind.as_str().to_owned();
        let record = self.record(now, Entry::Sensor { alert: alert.clone(), compartment, locks });
        let reading = Reading { alert, compartment, at_ms: now.as_millis(), locks };
        let message = reading.message(self.counter);
        self.readings.insert(self.counter, reading);
        let mut actions = vec![record];
        if self.interlocked() != was {
            actions.push(Action::Interlock(true));
        }
        actions.push(Action::Send(message));
        actions
    }
}

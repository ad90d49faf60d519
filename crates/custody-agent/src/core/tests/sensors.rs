//! Tamper readings, the bank's policy, lockdown from a rule, doors left open or forced.

use super::*;

fn reported(actions: &[Action]) -> Vec<(String, Option<u16>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(AgentMessage::Sensor { kind, compartment, .. }) => {
                Some((kind.clone(), *compartment))
            }
            _ => None,
        })
        .collect()
}

fn door(f: &mut Fixture, at: Timestamp, n: u16, reading: DoorReading) -> Vec<Action> {
    f.core.handle(at, Event::Door { compartment: n, reading })
}

#[test]
fn a_reading_that_counts_is_journaled_then_reported_and_others_are_not() {
    let mut f = fixture();
    let pry = Event::Sensor { kind: AlertKind::Pry, compartment: Some(2) };
    let first = f.core.handle(NOW, pry.clone());
    let [
        Action::Record(Record {
            counter,
            entry: Entry::Sensor { alert, compartment, locks: false },
            ..
        }),
        Action::Send(AgentMessage::Sensor { counter: sent, at_ms, .. }),
    ] = first.as_slice()
    else {
        panic!("{first:?}")
    };
    assert_eq!(
        (alert.as_str(), *compartment, counter, *at_ms),
        ("pry", Some(2), sent, NOW.as_millis())
    );
    assert!(f.core.handle(NOW, pry).is_empty(), "debounced");
    // One impact is a slammed door; three in ten seconds are a blow.
    let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
    assert!(f.core.handle(NOW, impact.clone()).is_empty());
    assert!(f.core.handle(NOW, impact.clone()).is_empty());
    assert_eq!(reported(&f.core.handle(NOW, impact)), [("impact".to_owned(), None)]);
    // The server's own kinds never come from here.
    let claimed = Event::Sensor { kind: AlertKind::AuditIntegrity, compartment: None };
    assert!(f.core.handle(NOW, claimed).is_empty());
    // Offline too: it is sent after the next welcome.
    f.core.handle(NOW, Event::Disconnected);
    let drill = Event::Sensor { kind: AlertKind::Drill, compartment: Some(1) };
    assert_eq!(reported(&f.core.handle(NOW, drill)), [("drill".to_owned(), Some(1))]);
}

/// A policy with the site's rule for pry (bank scope) and a bank that counts every
/// impact and allows doors a minute open.
fn pry_locks() -> BankPolicy {
    BankPolicy {
        sensors: custody_proto::api::SensorSettingsView {
            rules: vec![custody_proto::api::SensorRuleView {
                kind: "impact".into(),
                threshold: 1,
                window_ms: 1_000,
                quiet_ms: 1_000,
            }],
            door_left_open_after_secs: 60,
        },
        lockdown: vec![custody_proto::api::LockdownRuleView {
            kind: "pry".into(),
            min_severity: "high".into(),
            scope: "bank".into(),
        }],
    }
}

fn counters(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(AgentMessage::Sensor { counter, .. }) => Some(*counter),
            _ => None,
        })
        .collect()
}

fn policy_records(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Record(Record { entry: Entry::Policy { .. }, .. })))
        .count()
}

#[test]
fn the_banks_policy_is_journaled_when_it_changes_and_a_bad_one_changes_nothing() {
    let mut f = fixture();
    let sent = Event::Server(ServerMessage::Policy(pry_locks()));
    assert_eq!(policy_records(&f.core.handle(NOW, sent.clone())), 1);
    assert_eq!(policy_records(&f.core.handle(NOW, sent)), 0, "the same again");
    // The bank's own rule: one impact counts here.
    let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
    assert_eq!(reported(&f.core.handle(NOW, impact)), [("impact".to_owned(), None)]);
    // A policy that cannot be read whole leaves the last one in force.
    let mut bad = pry_locks();
    bad.lockdown[0].scope = "world".into();
    bad.sensors.rules.clear();
    let later = NOW.plus(std::time::Duration::from_secs(2));
    assert!(f.core.handle(later, Event::Server(ServerMessage::Policy(bad))).is_empty());
    let impact = Event::Sensor { kind: AlertKind::Impact, compartment: Some(1) };
    assert_eq!(reported(&f.core.handle(later, impact)), [("impact".to_owned(), Some(1))]);
    // Before a welcome, nothing the link says is taken.
    let mut g = fixture();
    g.core.handle(NOW, Event::Disconnected);
    g.core.handle(NOW, Event::Connected);
    let early = g.core.handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())));
    assert!(early.is_empty());
}

#[test]
fn a_reading_a_rule_matches_locks_the_bank_down_until_the_server_has_it() {
    let mut f = fixture();
    f.core.handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())));
    f.core.handle(NOW, Event::Disconnected);
    // Offline: a drill is not the rule's kind; a pry is, and locks at once.
    let drill = f.core.handle(NOW, Event::Sensor { kind: AlertKind::Drill, compartment: None });
    assert!(!drill.contains(&Action::Interlock(true)) && !f.core.interlocked());
    let pry = f.core.handle(NOW, Event::Sensor { kind: AlertKind::Pry, compartment: Some(2) });
    assert!(matches!(
        pry.as_slice(),
        [
            Action::Record(Record { entry: Entry::Sensor { locks: true, .. }, .. }),
            Action::Interlock(true),
            Action::Send(AgentMessage::Sensor { .. })
        ]
    ));
    let pry_counter = counters(&pry)[0];
    assert!(matches!(
        f.core.handle(NOW, Event::CodeEntered("2 12345 67890".into())).as_slice(),
        [Action::Show(Screen::NotAccepted)]
    ));
    // Back online, the server's "not locked down" does not lift it: it has not seen
    // the pry yet. Both readings go again, in the order they were made.
    f.core.handle(NOW, Event::Connected);
    let back = f.core.handle(NOW, welcome(false));
    assert_eq!(counters(&back), [pry_counter - 1, pry_counter]);
    assert!(!back.contains(&Action::Interlock(false)) && f.core.interlocked());
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "n-pry")))).as_deref(),
        Some("locked_down")
    );
    // The drill acknowledged changes nothing; the server locks down by the same rule,
    // then acknowledges the pry: still locked, now by the server's word.
    let ack = |counter| Event::Server(ServerMessage::SensorAck { counter });
    assert!(!f.core.handle(NOW, ack(pry_counter - 1)).contains(&Action::Interlock(false)));
    f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
    let taken = f.core.handle(NOW, ack(pry_counter));
    assert!(matches!(
        taken.as_slice(),
        [Action::Record(Record { entry: Entry::SensorAck { .. }, .. })]
    ));
    assert!(f.core.interlocked());
    assert!(f.core.handle(NOW, ack(pry_counter)).is_empty(), "acknowledged once");
    // An admin lifts it: the server's word holds.
    let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
    assert!(lifted.contains(&Action::Interlock(false)) && !f.core.interlocked());
    // Acknowledged readings are not sent again.
    f.core.handle(NOW, Event::Disconnected);
    f.core.handle(NOW, Event::Connected);
    assert!(counters(&f.core.handle(NOW, welcome(false))).is_empty());
}

#[test]
fn a_lockdown_the_agent_engaged_holds_across_a_restart() {
    let mut f = fixture();
    let mut restored = Restored::default();
    let pry = Event::Sensor { kind: AlertKind::Pry, compartment: None };
    for action in f
        .core
        .handle(NOW, Event::Server(ServerMessage::Policy(pry_locks())))
        .into_iter()
        .chain(f.core.handle(NOW, pry))
    {
        if let Action::Record(record) = action {
            restored.apply(&record);
        }
    }
    let mut g = fixture();
    g.core = welcomed(&g.key).restore(restored);
    assert!(g.core.interlocked(), "locked before the server says anything");
    let back = g.core.handle(NOW, welcome(false));
    assert_eq!(reported(&back), [("pry".to_owned(), None)], "sent again");
    // The restored policy holds: one impact counts, as the bank's rule says.
    let later = NOW.plus(std::time::Duration::from_mins(5));
    let impact = Event::Sensor { kind: AlertKind::Impact, compartment: None };
    assert_eq!(reported(&g.core.handle(later, impact)).len(), 1);
    let counter = counters(&back)[0];
    let acked = g.core.handle(NOW, Event::Server(ServerMessage::SensorAck { counter }));
    assert!(acked.contains(&Action::Interlock(false)) && !g.core.interlocked());
}

#[test]
fn a_door_open_past_the_banks_time_is_reported_once_per_opening() {
    let mut f = fixture();
    let left = vec![("door_left_open".to_owned(), Some(2))];
    let at = |secs| NOW.plus(std::time::Duration::from_secs(secs));
    open(&mut f.core, NOW, sign(&f.key, command(2, "n-left")));
    door(&mut f, NOW, 2, DoorReading::Open);
    // The default: three minutes.
    assert!(reported(&f.core.handle(at(179), Event::Tick)).is_empty());
    assert_eq!(reported(&f.core.handle(at(180), Event::Tick)), left);
    assert!(reported(&f.core.handle(at(900), Event::Tick)).is_empty(), "once");
    // Shut and opened again (forced, this time): a new opening, a new report.
    door(&mut f, at(901), 2, DoorReading::Closed);
    door(&mut f, at(902), 2, DoorReading::Open);
    assert_eq!(reported(&f.core.handle(at(1082), Event::Tick)), left);
    // The bank's own time, and an unknown reading changes nothing.
    f.core.handle(at(1083), Event::Server(ServerMessage::Policy(pry_locks())));
    door(&mut f, at(1083), 3, DoorReading::Open);
    door(&mut f, at(1100), 3, DoorReading::Unknown);
    let three = f.core.handle(at(1143), Event::Tick);
    assert_eq!(reported(&three), [("door_left_open".to_owned(), Some(3))]);
    // Across a restart: the opening's time and its report come from the journal.
    let mut restored = Restored::default();
    let mut g = fixture();
    for action in door(&mut g, NOW, 1, DoorReading::Open)
        .into_iter()
        .chain(door(&mut g, NOW, 3, DoorReading::Open))
        .chain(g.core.handle(at(180), Event::Tick))
    {
        if let Action::Record(record) = action {
            restored.apply(&record);
        }
    }
    let mut h = fixture();
    h.core = welcomed(&h.key).restore(restored);
    assert!(reported(&h.core.handle(at(400), Event::Tick)).is_empty(), "reported before");
    door(&mut h, at(401), 1, DoorReading::Closed);
    door(&mut h, at(402), 3, DoorReading::Closed);
    assert!(reported(&h.core.handle(at(900), Event::Tick)).is_empty(), "all shut");
}

#[test]
fn a_door_that_opens_without_an_unlock_was_forced() {
    let mut f = fixture();
    let forced = vec![("door_forced".to_owned(), Some(1))];
    // Shut, then open with no unlock: forced. A door never read counts as shut.
    assert!(reported(&door(&mut f, NOW, 1, DoorReading::Closed)).is_empty());
    assert_eq!(reported(&door(&mut f, NOW, 1, DoorReading::Open)), forced);
    assert_eq!(
        reported(&door(&mut f, NOW, 3, DoorReading::Open)),
        [("door_forced".to_owned(), Some(3))]
    );
    // Opened after its unlock: fine, once.
    open(&mut f.core, NOW, sign(&f.key, command(2, "n-door")));
    assert!(reported(&door(&mut f, NOW, 2, DoorReading::Open)).is_empty());
    door(&mut f, NOW, 2, DoorReading::Closed);
    let again = NOW.plus(std::time::Duration::from_mins(2));
    let twice = reported(&door(&mut f, again, 2, DoorReading::Open));
    assert_eq!(twice, [("door_forced".to_owned(), Some(2))]);
    // An unlock long ago allows nothing now; an unknown reading says nothing.
    open(&mut f.core, NOW, sign(&f.key, command(4, "n-late")));
    let stale = NOW.plus(std::time::Duration::from_mins(11));
    let late = reported(&door(&mut f, stale, 4, DoorReading::Open));
    assert_eq!(late, [("door_forced".to_owned(), Some(4))]);
    door(&mut f, stale, 5, DoorReading::Unknown);
    assert!(reported(&door(&mut f, stale, 5, DoorReading::Open)).is_empty());
}

#[test]
fn a_door_opened_while_the_agent_was_down_is_caught_at_restart() {
    let mut f = fixture();
    let mut restored = Restored::default();
    for action in door(&mut f, NOW, 1, DoorReading::Closed)
        .into_iter()
        .chain(door(&mut f, NOW, 2, DoorReading::Closed))
        .chain(open(&mut f.core, NOW, sign(&f.key, command(2, "n-r"))))
        .chain(door(&mut f, NOW, 2, DoorReading::Open))
    {
        if let Action::Record(record) = action {
            restored.apply(&record);
        }
    }
    let mut g = fixture();
    g.core = welcomed(&g.key).restore(restored);
    let later = NOW.plus(std::time::Duration::from_mins(1));
    assert_eq!(
        reported(&door(&mut g, later, 1, DoorReading::Open)),
        [("door_forced".to_owned(), Some(1))]
    );
    assert!(reported(&door(&mut g, later, 2, DoorReading::Open)).is_empty(), "open before");
}

#[test]
fn an_unlock_cut_short_by_a_restart_still_allows_its_opening() {
    let mut f = fixture();
    let mut restored = Restored::default();
    for action in door(&mut f, NOW, 2, DoorReading::Closed).into_iter().chain(open(
        &mut f.core,
        NOW,
        sign(&f.key, command(2, "n-cut")),
    )) {
        if let Action::Record(record) = action {
            restored.apply(&record);
        }
    }
    let mut g = fixture();
    g.core = welcomed(&g.key).restore(restored);
    let later = NOW.plus(std::time::Duration::from_mins(1));
    assert!(reported(&door(&mut g, later, 2, DoorReading::Open)).is_empty());
}

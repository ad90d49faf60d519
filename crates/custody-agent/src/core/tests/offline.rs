//! Opening while the server is unreachable: listed codes, couriers, budgets, restarts.

use super::*;
const KEY: [u8; 32] = [5; 32];
/// Compartment 2's code.
const TYPED: &str = "2 01234 56789";
const DAY_MS: i64 = 86_400_000;

fn listed(id: &str, compartment: u16, digits: &str, expires_at_ms: i64) -> OfflineCode {
    OfflineCode {
        id: id.into(),
        compartment,
        verifier: BASE64.encode(&offline_code_verifier(&KEY, compartment, digits.as_bytes())),
        expires_at_ms,
    }
}

fn list(codes: Vec<OfflineCode>) -> Event {
    Event::Server(ServerMessage::OfflineList(OfflineList {
        couriers: Vec::new(),
        expected: Vec::new(),
        free: Vec::new(),
        key: BASE64.encode(&KEY),
        issued_at_ms: NOW.as_millis(),
        valid_until_ms: NOW.as_millis() + 2 * DAY_MS,
        codes,
    }))
}

/// A welcomed core holding compartment 2's code (and 3's, expiring in a minute), with a
/// list good for two days, then cut off from the server.
fn cut_off(f: &mut Fixture) {
    let code_id = custody_core::CodeId::from_random([3; 16]);
    f.core.handle(
        NOW,
        list(vec![
            listed(code_id.as_str(), 2, "0123456789", NOW.as_millis() + 2 * DAY_MS),
            listed("cod_soon", 3, "1111111111", NOW.as_millis() + 60_000),
        ]),
    );
    f.core.handle(NOW, Event::Disconnected);
}

fn typed(f: &mut Fixture, at: Timestamp, code: &str) -> Vec<Action> {
    f.core.handle(at, Event::CodeEntered(code.into()))
}

fn shown(actions: &[Action]) -> Option<&Screen> {
    actions.iter().find_map(|a| match a {
        Action::Show(s) => Some(s),
        _ => None,
    })
}

fn uses(actions: &[Action]) -> Vec<OfflineUse> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(AgentMessage::Offline(u)) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_listed_code_opens_once_offline_and_is_reported_until_acknowledged() {
    let mut f = fixture();
    cut_off(&mut f);
    let opened = typed(&mut f, NOW, TYPED);
    let [
        Action::Record(Record { entry: Entry::Offline { used }, .. }),
        Action::Unlock { compartment, nonce },
        Action::Show(Screen::Open(2)),
    ] = opened.as_slice()
    else {
        panic!("journaled, then unlocked, then shown: {opened:?}")
    };
    assert_eq!(compartment.get(), 2);
    assert_eq!(nonce, &format!("offline-{}", used.id));
    assert!(
        matches!(&used.what, OfflineWhat::Opened { compartment: 2, method, .. } if method == "code")
    );
    // The board's answer is journaled and goes nowhere else.
    let answered = f.core.handle(NOW, Event::Unlocked { nonce: nonce.clone(), result: Ok(()) });
    assert!(matches!(answered.as_slice(), [Action::Record(_)]), "{answered:?}");
    // The same code again: refused, and that is journaled too.
    let again = typed(&mut f, NOW, TYPED);
    assert_eq!(shown(&again), Some(&Screen::NotAccepted));
    assert!(matches!(
        &again[0],
        Action::Record(Record {
            entry: Entry::Offline { used: OfflineUse { what: OfflineWhat::Refused { .. }, .. } },
            ..
        })
    ));
    // Back online: both are reported, after every welcome until acknowledged.
    f.core.handle(NOW, Event::Connected);
    let reported = uses(&f.core.handle(NOW, welcome(false)));
    assert_eq!(reported.len(), 2);
    assert_eq!(reported[0], used.clone());
    let acked =
        f.core.handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id.clone() }));
    assert!(matches!(
        acked.as_slice(),
        [Action::Record(Record { entry: Entry::Acknowledged { .. }, .. })]
    ));
    let twice =
        f.core.handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id.clone() }));
    assert!(twice.is_empty(), "an acknowledgement is journaled once");
    f.core.handle(NOW, Event::Disconnected);
    f.core.handle(NOW, Event::Connected);
    let left = uses(&f.core.handle(NOW, welcome(false)));
    assert_eq!(left.len(), 1);
    assert!(matches!(left[0].what, OfflineWhat::Refused { .. }));
}

/// Something that happens to a core before a code is typed offline.
type Before = fn(&mut Fixture);

fn nothing(_: &mut Fixture) {}

/// Back online for `step`, then cut off again.
fn online(f: &mut Fixture, step: impl FnOnce(&mut Fixture)) {
    f.core.handle(NOW, Event::Connected);
    f.core.handle(NOW, welcome(false));
    step(f);
    f.core.handle(NOW, Event::Disconnected);
}

fn locked_down(f: &mut Fixture) {
    online(f, |f| {
        f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
    });
}

fn journal_failed(f: &mut Fixture) {
    f.core.handle(NOW, Event::JournalFailed);
}

fn opened_online(f: &mut Fixture) {
    online(f, |f| {
        let signed = sign(&f.key, command(2, "n1"));
        f.core.handle(NOW, Event::Server(ServerMessage::Open(signed)));
    });
}

fn revoked(f: &mut Fixture) {
    online(f, |f| {
        f.core.handle(NOW, list(Vec::new()));
    });
}

fn unreadable_list(f: &mut Fixture) {
    online(f, |f| {
        let list = OfflineList {
            couriers: Vec::new(),
            expected: Vec::new(),
            free: Vec::new(),
            key: "short".into(),
            issued_at_ms: NOW.as_millis(),
            valid_until_ms: NOW.as_millis() + DAY_MS,
            codes: Vec::new(),
        };
        f.core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)));
    });
}

/// Everything that keeps a code from opening offline, and what the kiosk says.
#[test]
fn what_offline_refuses() {
    let later = |ms: i64| Timestamp::from_millis(NOW.as_millis() + ms);
    let cases: [(&str, Before, &str, Timestamp, Screen); 11] = [
        ("a wrong code", nothing, "2 01234 56788", NOW, Screen::NotAccepted),
        ("another locker's", nothing, "1 01234 56789", NOW, Screen::NotAccepted),
        ("the first format", nothing, "01234567", NOW, Screen::NotAccepted),
        ("not a code", nothing, "hello", NOW, Screen::NotAccepted),
        ("expired", nothing, "3 11111 11111", later(60_000), Screen::NotAccepted),
        ("past the deadline", nothing, TYPED, later(2 * DAY_MS), Screen::Offline),
        ("locked down", locked_down, TYPED, NOW, Screen::NotAccepted),
        ("the journal failed", journal_failed, TYPED, NOW, Screen::NotAccepted),
        ("opened online since", opened_online, TYPED, NOW, Screen::NotAccepted),
        ("revoked since", revoked, TYPED, NOW, Screen::NotAccepted),
        ("an unreadable list", unreadable_list, TYPED, NOW, Screen::Offline),
    ];
    for (name, before, code, at, want) in cases {
        let mut f = fixture();
        cut_off(&mut f);
        before(&mut f);
        let actions = typed(&mut f, at, code);
        assert_eq!(shown(&actions), Some(&want), "{name}: {actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Unlock { .. })), "{name}");
    }
    // And the one that opens, for contrast.
    let mut f = fixture();
    cut_off(&mut f);
    assert_eq!(shown(&typed(&mut f, NOW, TYPED)), Some(&Screen::Open(2)));
}

#[test]
fn the_list_is_saved_when_it_changes_and_hourly_and_taken_up_after_a_restart() {
    let mut f = fixture();
    let code = listed("cod_a", 2, "0123456789", NOW.as_millis() + 2 * DAY_MS);
    let sync = |f: &mut Fixture, codes: Vec<OfflineCode>, until: i64| {
        let list = OfflineList {
            couriers: Vec::new(),
            expected: Vec::new(),
            free: Vec::new(),
            key: BASE64.encode(&KEY),
            issued_at_ms: NOW.as_millis(),
            valid_until_ms: until,
            codes,
        };
        f.core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)))
    };
    let day = NOW.as_millis() + DAY_MS;
    let first = sync(&mut f, vec![code.clone()], day);
    let [Action::Save(Some(saved))] = first.as_slice() else { panic!("{first:?}") };
    let saved = saved.clone();
    assert!(sync(&mut f, vec![code.clone()], day + 60_000).is_empty(), "a minute on");
    assert_eq!(sync(&mut f, vec![code.clone()], day + SAVE_EVERY_MS).len(), 1, "an hour");
    assert_eq!(sync(&mut f, Vec::new(), day + SAVE_EVERY_MS).len(), 1, "codes changed");
    // Refused by the server: nothing is kept.
    let bye = ServerMessage::Goodbye { reason: "revoked".into() };
    assert!(f.core.handle(NOW, Event::Server(bye)).contains(&Action::Save(None)));

    // A restart while the server is unreachable takes up the saved list.
    let g = fixture();
    let identity = g.core.identity.clone();
    let mut restarted = AgentCore::new(identity).saved_list(&saved);
    assert_eq!(restarted.offline_codes(NOW), Some(1));
    let opened = restarted.handle(NOW, Event::CodeEntered(TYPED.into()));
    assert!(opened.contains(&Action::Show(Screen::Open(2))), "{opened:?}");
    let deadline = Timestamp::from_millis(day);
    assert_eq!(restarted.offline_codes(deadline), None, "past its deadline");
}

/// DESIGN.md §4 invariant 12: told at connecting that its identity is refused, the agent
/// drops its presence key, badges and offline list (and the saved list) at once, and
/// the kiosk says it is out of service until a welcome.
#[test]
fn an_identity_the_server_refuses_keeps_nothing_and_is_out_of_service() {
    let mut f = fixture();
    cut_off(&mut f);
    assert_eq!(f.core.offline_codes(NOW), Some(2));
    assert!(typed(&mut f, NOW, TYPED).contains(&Action::Show(Screen::Open(2))));
    let refused = f.core.handle(NOW, Event::IdentityRefused);
    assert_eq!(refused, vec![Action::Presence(None), Action::Save(None)]);
    assert_eq!(f.core.offline_codes(NOW), None);
    assert!(f.core.out_of_service());
    for input in [
        Event::CodeEntered(TYPED.into()),
        Event::QrScanned("CUSTODY1:x".into()),
        Event::BadgeRead { number: "0A0B0C0D0E0F".into(), reader: ReaderKind::OsdpSecure },
    ] {
        assert_eq!(f.core.handle(NOW, input), vec![Action::Show(Screen::OutOfService)]);
    }
}

#[test]
fn with_no_list_the_kiosk_says_it_cannot_check() {
    let mut f = fixture();
    f.core.handle(NOW, Event::Disconnected);
    assert_eq!(typed(&mut f, NOW, TYPED), vec![Action::Show(Screen::Offline)]);
}

#[test]
fn wrong_codes_offline_spend_a_daily_budget_kept_across_restarts() {
    let mut f = fixture();
    cut_off(&mut f);
    let mut journal = Vec::new();
    for _ in 0..OFFLINE_PICKUP_DAY.max_failures {
        let actions = typed(&mut f, NOW, "2 99999 99999");
        assert_eq!(shown(&actions), Some(&Screen::NotAccepted));
        journal.extend(actions.into_iter().filter_map(|a| match a {
            Action::Record(r) => Some(r),
            _ => None,
        }));
    }
    // Spent: even the right code is not checked today.
    assert_eq!(typed(&mut f, NOW, TYPED), vec![Action::Show(Screen::CodesPaused)]);
    // A restart does not refill it: the journal holds the refusals.
    let mut restored = Restored::default();
    for r in &journal {
        restored.apply(r);
    }
    let mut g = fixture();
    g.core = welcomed(&g.key).restore(restored);
    cut_off(&mut g);
    assert_eq!(typed(&mut g, NOW, TYPED), vec![Action::Show(Screen::CodesPaused)]);
    // The next day's budget is fresh.
    let tomorrow = OFFLINE_PICKUP_DAY.window_end(NOW);
    assert_eq!(shown(&typed(&mut g, tomorrow, TYPED)), Some(&Screen::Open(2)));
}

#[test]
fn a_code_spent_offline_stays_spent_across_a_restart_and_a_stale_list() {
    let mut f = fixture();
    cut_off(&mut f);
    let opened = typed(&mut f, NOW, TYPED);
    let Action::Record(record) = &opened[0] else { panic!("{opened:?}") };
    let mut restored = Restored::default();
    restored.apply(record);
    let mut g = fixture();
    g.core = welcomed(&g.key).restore(restored);
    // The server's list still has it (the use not reconciled yet).
    cut_off(&mut g);
    assert_eq!(shown(&typed(&mut g, NOW, TYPED)), Some(&Screen::NotAccepted));
    // And the use is still to be reported.
    g.core.handle(NOW, Event::Connected);
    assert_eq!(uses(&g.core.handle(NOW, welcome(false))).len(), 2);
}

mod courier {
    use super::*;

    /// Today's code of the courier in the list.
    const TODAY: &str = "1234 5678 9012";
    /// Tomorrow's.
    const TOMORROW: &str = "2109 8765 4321";

    fn verifier(day: i64, typed: &str) -> String {
        let digits = typed.replace(' ', "");
        BASE64.encode(&offline_courier_verifier(&KEY, day, digits.as_bytes()).unwrap())
    }

    fn parcel(id: &str, size: &str, accessible: bool) -> OfflineParcel {
        OfflineParcel {
            parcel: KioskParcel {
                id: id.into(),
                tracking_ref: format!("1Z-{id}"),
                size: size.into(),
            },
            carrier: "car_a".into(),
            accessible,
            refrigerated: false,
        }
    }

    fn free(compartment: u16, size: &str, accessible: bool) -> OfflineCompartment {
        OfflineCompartment { compartment, size: size.into(), accessible, refrigerated: false }
    }

    /// A welcomed core holding a list with one courier of carrier `car_a` (today's and
    /// tomorrow's codes), three of its parcels and one of another carrier's, and four
    /// free compartments; then cut off from the server.
    fn cut_off(f: &mut Fixture) {
        let today = NOW.as_millis().div_euclid(DAY_MS);
        let courier = |day, typed| OfflineCourier {
            courier: "per_courier".into(),
            carrier: "car_a".into(),
            day,
            verifier: verifier(day, typed),
        };
        let mut other = parcel("prc_other", "small", false);
        other.carrier = "car_b".into();
        f.core.handle(
            NOW,
            Event::Server(ServerMessage::OfflineList(OfflineList {
                key: BASE64.encode(&KEY),
                issued_at_ms: NOW.as_millis(),
                valid_until_ms: NOW.as_millis() + 2 * DAY_MS,
                codes: Vec::new(),
                couriers: vec![courier(today, TODAY), courier(today + 1, TOMORROW)],
                expected: vec![
                    parcel("prc_small", "small", false),
                    parcel("prc_medium", "medium", false),
                    parcel("prc_access", "small", true),
                    other,
                ],
                free: vec![
                    free(4, "large", false),
                    free(2, "medium", false),
                    free(3, "small", true),
                    free(1, "small", false),
                ],
            })),
        );
        f.core.handle(NOW, Event::Disconnected);
    }

    fn courier(f: &mut Fixture, at: Timestamp, code: &str, action: CourierAction) -> Vec<Action> {
        let credential = CourierCredential::Code { code: code.into() };
        f.core.handle(at, Event::Courier { credential, action })
    }

    fn deposit(f: &mut Fixture, parcel: &str, size: Option<&str>) -> Vec<Action> {
        let action = CourierAction::Deposit { parcel: parcel.into(), size: size.map(Into::into) };
        courier(f, NOW, TODAY, action)
    }

    fn confirm(f: &mut Fixture, at: Timestamp, parcel: &str) -> Vec<Action> {
        courier(f, at, TODAY, CourierAction::Confirm { parcel: parcel.into() })
    }

    fn opened(actions: &[Action]) -> Option<u16> {
        actions.iter().find_map(|a| match a {
            Action::Unlock { compartment, .. } => Some(compartment.get()),
            _ => None,
        })
    }

    fn shut(f: &mut Fixture, compartment: u16) {
        f.core.handle(NOW, Event::Door { compartment, reading: DoorReading::Closed });
    }

    #[test]
    fn a_courier_s_code_shows_their_work_from_the_list() {
        let mut f = fixture();
        cut_off(&mut f);
        let shown_now = courier(&mut f, NOW, TODAY, CourierAction::Visit);
        let [Action::Show(Screen::CourierWork { deposits, returns, free })] = shown_now.as_slice()
        else {
            panic!("{shown_now:?}")
        };
        let ids: Vec<&str> = deposits.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["prc_small", "prc_medium", "prc_access"], "only their carrier's");
        assert!(returns.is_empty(), "taking parcels back needs the server");
        let sizes: Vec<(&str, u32)> = free.iter().map(|c| (c.size.as_str(), c.count)).collect();
        assert_eq!(sizes, [("small", 2), ("medium", 1), ("large", 1)]);
        // Tomorrow's code is tomorrow's only.
        let early = courier(&mut f, NOW, TOMORROW, CourierAction::Visit);
        assert_eq!(shown(&early), Some(&Screen::NotAccepted));
        let tomorrow = NOW.plus(std::time::Duration::from_hours(24));
        let next_day = courier(&mut f, tomorrow, TOMORROW, CourierAction::Visit);
        assert!(matches!(shown(&next_day), Some(Screen::CourierWork { .. })));
    }

    #[test]
    fn a_deposit_opens_the_smallest_free_compartment_that_fits_once() {
        let mut f = fixture();
        cut_off(&mut f);
        let small = deposit(&mut f, "prc_small", None);
        let [
            Action::Record(Record { entry: Entry::Offline { used }, .. }),
            Action::Unlock { compartment, nonce },
            Action::Show(Screen::Open(1)),
        ] = small.as_slice()
        else {
            panic!("journaled, then unlocked, then shown: {small:?}")
        };
        assert_eq!(compartment.get(), 1, "small, and not the accessible one");
        assert_eq!(nonce, &format!("offline-{}", used.id));
        assert_eq!(
            used.what,
            OfflineWhat::Deposited {
                courier: "per_courier".into(),
                parcel: "prc_small".into(),
                compartment: 1,
            }
        );
        // Neither the parcel nor its compartment is offered again.
        assert_eq!(shown(&deposit(&mut f, "prc_small", None)), Some(&Screen::NotAccepted));
        // The accessible parcel takes the accessible compartment; a larger size chosen
        // takes a larger one; another carrier's parcel is not theirs to deposit.
        assert_eq!(opened(&deposit(&mut f, "prc_access", None)), Some(3));
        assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("large"))), Some(4));
        assert_eq!(shown(&deposit(&mut f, "prc_other", None)), Some(&Screen::NotAccepted));
        let work = courier(&mut f, NOW, TODAY, CourierAction::Visit);
        let Some(Screen::CourierWork { deposits, free, .. }) = shown(&work) else {
            panic!("{work:?}")
        };
        assert!(deposits.is_empty());
        assert_eq!(free, &[FreeCompartments { size: "medium".into(), count: 1 }]);
    }

    #[test]
    fn nothing_fits_nothing_opens() {
        let mut f = fixture();
        cut_off(&mut f);
        assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("extra_large"))), None);
        // A smaller size than announced is no help.
        assert_eq!(opened(&deposit(&mut f, "prc_medium", Some("small"))), Some(2));
    }

    #[test]
    fn a_deposit_is_confirmed_once_its_door_is_shut_and_reported_in_order() {
        let mut f = fixture();
        cut_off(&mut f);
        let opening = deposit(&mut f, "prc_small", None);
        assert_eq!(opened(&opening), Some(1));
        // No reading of that door yet, then the door open: not yet.
        assert_eq!(shown(&confirm(&mut f, NOW, "prc_small")), Some(&Screen::NotAccepted));
        let door = Event::Door { compartment: 1, reading: DoorReading::Open };
        f.core.handle(NOW, door);
        assert_eq!(shown(&confirm(&mut f, NOW, "prc_small")), Some(&Screen::NotAccepted));
        shut(&mut f, 1);
        let later = NOW.plus(std::time::Duration::from_mins(2));
        let done = confirm(&mut f, later, "prc_small");
        let [
            Action::Record(Record { entry: Entry::Offline { used }, .. }),
            Action::Show(Screen::Thanks),
        ] = done.as_slice()
        else {
            panic!("{done:?}")
        };
        assert!(
            matches!(&used.what, OfflineWhat::Confirmed { parcel, .. } if parcel == "prc_small")
        );
        assert_eq!(shown(&confirm(&mut f, later, "prc_small")), Some(&Screen::NotAccepted));
        // Back online: the deposit is reported before its confirmation.
        f.core.handle(later, Event::Connected);
        let reported = uses(&f.core.handle(later, welcome(false)));
        let kinds: Vec<bool> =
            reported.iter().map(|u| matches!(u.what, OfflineWhat::Deposited { .. })).collect();
        assert_eq!(kinds, [true, false]);
    }

    #[test]
    fn a_confirmation_comes_in_time_from_the_courier_who_deposited() {
        let mut f = fixture();
        cut_off(&mut f);
        deposit(&mut f, "prc_small", None);
        shut(&mut f, 1);
        let late = NOW.plus(std::time::Duration::from_mins(10));
        assert_eq!(shown(&confirm(&mut f, late, "prc_small")), Some(&Screen::NotAccepted));
        assert_eq!(shown(&confirm(&mut f, NOW, "prc_medium")), Some(&Screen::NotAccepted));
    }

    #[test]
    fn what_a_courier_cannot_do_offline() {
        let mut f = fixture();
        cut_off(&mut f);
        let back = CourierAction::Return { parcel: "prc_small".into() };
        assert_eq!(shown(&courier(&mut f, NOW, TODAY, back)), Some(&Screen::Offline));
        let badge = CourierCredential::Badge {
            badge: BadgeRead { number: "00ff00ff".into(), reader: "osdp_secure".into() },
        };
        let read =
            f.core.handle(NOW, Event::Courier { credential: badge, action: CourierAction::Visit });
        assert_eq!(shown(&read), Some(&Screen::Offline));
        // A wrong code is refused, journaled, and spends the offline budget that wrong
        // pickup codes spend.
        for _ in 0..OFFLINE_PICKUP_DAY.max_failures {
            let wrong = courier(&mut f, NOW, "0000 0000 0000", CourierAction::Visit);
            assert_eq!(shown(&wrong), Some(&Screen::NotAccepted));
            assert!(matches!(
                &wrong[0],
                Action::Record(Record { entry: Entry::Offline { used: OfflineUse { what: OfflineWhat::Refused { method }, .. } }, .. }) if method == "courier"
            ));
        }
        let paused = courier(&mut f, NOW, TODAY, CourierAction::Visit);
        assert_eq!(shown(&paused), Some(&Screen::CodesPaused));
        // Locked down, nothing opens.
        let mut g = fixture();
        cut_off(&mut g);
        g.core.handle(NOW, Event::Connected);
        g.core.handle(NOW, welcome(true));
        g.core.handle(NOW, Event::Disconnected);
        assert_eq!(shown(&deposit(&mut g, "prc_small", None)), Some(&Screen::NotAccepted));
        assert_eq!(opened(&deposit(&mut g, "prc_small", None)), None);
    }

    #[test]
    fn a_compartment_opened_online_is_not_offered_offline() {
        let mut f = fixture();
        cut_off(&mut f);
        online(&mut f, |f| {
            let signed = sign(&f.key, command(1, "n1"));
            open(&mut f.core, NOW, signed);
        });
        assert_eq!(opened(&deposit(&mut f, "prc_small", None)), Some(3), "1 went online");
    }

    #[test]
    fn offline_deposits_survive_a_restart_until_the_server_has_them() {
        let mut f = fixture();
        cut_off(&mut f);
        let mut restored = Restored::default();
        for action in deposit(&mut f, "prc_small", None) {
            if let Action::Record(record) = action {
                restored.apply(&record);
            }
        }
        let mut g = fixture();
        g.core = welcomed(&g.key).restore(restored);
        // The server's list, not reconciled yet, still offers both.
        cut_off(&mut g);
        assert_eq!(opened(&deposit(&mut g, "prc_small", None)), None);
        assert_eq!(opened(&deposit(&mut g, "prc_access", None)), Some(3));
        // Once the server has the first and a list follows, it is the list's to say.
        g.core.handle(NOW, Event::Connected);
        let reported = uses(&g.core.handle(NOW, welcome(false)));
        for used in reported {
            g.core.handle(NOW, Event::Server(ServerMessage::OfflineAck { id: used.id }));
        }
        let later = NOW.plus(std::time::Duration::from_mins(10));
        let relisted = Event::Server(ServerMessage::OfflineList(OfflineList {
            key: BASE64.encode(&KEY),
            issued_at_ms: later.as_millis(),
            valid_until_ms: later.as_millis() + DAY_MS,
            codes: Vec::new(),
            couriers: Vec::new(),
            expected: Vec::new(),
            free: vec![free(1, "small", false)],
        }));
        g.core.handle(later, relisted);
        assert!(g.core.deposits.is_empty(), "{:?}", g.core.deposits);
    }
}

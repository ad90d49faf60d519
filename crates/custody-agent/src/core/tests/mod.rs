//! The core's decisions, tested with plain values: open commands, the kiosk's questions and
//! answers, the journal and lockdown here; each other topic in a file of its own.

use super::*;
use crate::journal::{Entry, Record, Restored};
use custody_core::Timestamp;
use custody_core::alert::AlertKind;
use custody_core::badge::{BadgeNumber, ReaderKind};
use custody_core::compartment::CompartmentNumber;
use custody_core::throttle::OFFLINE_PICKUP_DAY;
use custody_core::token::{QR_TOKEN_DOMAIN, QR_TOKEN_TEXT_LEN};
use custody_crypto::Rng;
use custody_crypto::secret::badge_verifier;
use custody_crypto::secret::{offline_code_verifier, offline_courier_verifier};
use custody_crypto::sign::SigningKey;
use custody_proto::device::{
    AgentMessage, BadgeList, BadgeRead, BankPolicy, CommandOutcome, CourierAction, CourierAnswer,
    CourierCredential, DoorReading, FreeCompartments, KioskParcel, OPEN_COMMAND_DOMAIN,
    OfflineCode, OfflineCompartment, OfflineCourier, OfflineList, OfflineParcel, OfflineUse,
    OfflineWhat, OpenCommand, PickupAnswer, PresenceKey, ServerMessage, SignedOpenCommand,
};
use data_encoding::BASE64;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_millis(1_893_456_000_000);

struct Fixture {
    key: SigningKey,
    core: AgentCore,
}

fn fixture() -> Fixture {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let core = welcomed(&key);
    Fixture { key, core }
}

/// A connected core that the server has welcomed, trusting `key`.
fn welcomed(key: &SigningKey) -> AgentCore {
    let identity =
        Identity { device: "dev_a".into(), bank: "bnk_a".into(), command_key: key.public_key() };
    let mut core = AgentCore::new(identity);
    core.handle(NOW, Event::Connected);
    core.handle(NOW, welcome(false));
    core
}

fn command(compartment: u16, nonce: &str) -> OpenCommand {
    OpenCommand {
        device: "dev_a".into(),
        bank: "bnk_a".into(),
        compartment,
        nonce: nonce.into(),
        issued_at_ms: NOW.as_millis(),
        expires_at_ms: NOW.as_millis() + 30_000,
        purpose: "pickup".into(),
    }
}

fn sign(key: &SigningKey, command: OpenCommand) -> SignedOpenCommand {
    let signature = BASE64.encode(&key.sign(OPEN_COMMAND_DOMAIN, &command.signing_bytes()));
    SignedOpenCommand { command, signature }
}

fn open(core: &mut AgentCore, at: Timestamp, signed: SignedOpenCommand) -> Vec<Action> {
    core.handle(at, Event::Server(ServerMessage::Open(signed)))
}

fn refused(actions: &[Action]) -> Option<String> {
    match actions {
        [
            Action::Send(AgentMessage::CommandResult {
                outcome: CommandOutcome::Refused { reason },
                ..
            }),
        ] => Some(reason.clone()),
        _ => None,
    }
}

#[test]
fn a_valid_command_unlocks_once() {
    let mut f = fixture();
    let signed = sign(&f.key, command(2, "n1"));
    let actions = open(&mut f.core, NOW, signed.clone());
    assert_eq!(
        actions,
        vec![
            Action::Record(Record {
                counter: 1,
                at_ms: NOW.as_millis(),
                entry: Entry::Unlock {
                    nonce: "n1".into(),
                    compartment: 2,
                    expires_at_ms: NOW.as_millis() + 30_000
                }
            }),
            Action::Unlock { compartment: CompartmentNumber::new(2).unwrap(), nonce: "n1".into() }
        ],
        "journaled before the board is told"
    );
    assert_eq!(refused(&open(&mut f.core, NOW, signed)).as_deref(), Some("replay"));
}

/// Every way a command can be wrong, and the refusal it gets.
#[test]
fn refusal_table() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let (other, _) = SigningKey::generate(&Rng::new()).unwrap();
    let key = &key;
    let cases: Vec<(&str, SignedOpenCommand, Timestamp)> = vec![
        ("bad_signature", sign(&other, command(1, "a")), NOW),
        (
            "bad_signature",
            SignedOpenCommand { signature: "not base64!".into(), ..sign(key, command(1, "b")) },
            NOW,
        ),
        (
            "bad_signature",
            SignedOpenCommand { command: command(3, "c"), ..sign(key, command(1, "c")) },
            NOW,
        ),
        ("other_device", sign(key, OpenCommand { device: "dev_b".into(), ..command(1, "d") }), NOW),
        ("other_bank", sign(key, OpenCommand { bank: "bnk_b".into(), ..command(1, "e") }), NOW),
        ("unknown_compartment", sign(key, command(0, "f")), NOW),
        ("unknown_compartment", sign(key, command(9, "g")), NOW),
        ("expired", sign(key, command(1, "h")), NOW.plus(std::time::Duration::from_secs(30))),
    ];
    for (want, signed, at) in cases {
        let mut core = welcomed(key);
        let actions = core.handle(at, Event::Server(ServerMessage::Open(signed.clone())));
        assert_eq!(refused(&actions).as_deref(), Some(want), "{signed:?}");
    }
}

#[test]
fn nothing_opens_before_the_welcome_or_after_a_goodbye() {
    let mut f = fixture();
    f.core.handle(NOW, Event::Server(ServerMessage::Goodbye { reason: "revoked".into() }));
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "x")))).as_deref(),
        Some("not_ready")
    );
    let mut f = fixture();
    f.core.handle(NOW, Event::Disconnected);
    f.core.handle(NOW, Event::Connected);
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "y")))).as_deref(),
        Some("not_ready")
    );
}

#[test]
fn a_welcome_for_another_device_is_ignored() {
    let mut f = fixture();
    f.core.handle(NOW, Event::Disconnected);
    f.core.handle(NOW, Event::Connected);
    let shown = f.core.handle(
        NOW,
        Event::Server(ServerMessage::Welcome {
            protocol: 1,
            device: "dev_z".into(),
            bank: "bnk_a".into(),
            compartments: vec![1],
            server_time_ms: 0,
            presence_key: PresenceKey("a2V5".into()),
            locked_down: false,
        }),
    );
    assert!(!f.core.ready());
    assert_eq!(shown, vec![Action::Presence(None)], "no presence code from a stranger");
}

#[test]
fn the_kiosk_says_when_typed_codes_are_paused() {
    let mut f = fixture();
    let actions = f.core.handle(NOW, Event::CodeEntered("1 00000 00000".into()));
    let Some(Action::Send(AgentMessage::PickupAttempt { request_id, .. })) =
        actions.get(1).cloned()
    else {
        panic!("{actions:?}")
    };
    let paused = ServerMessage::Pickup { request_id, answer: PickupAnswer::Paused };
    assert_eq!(f.core.handle(NOW, Event::Server(paused)), vec![Action::Show(Screen::CodesPaused)]);
}

#[test]
fn the_presence_code_is_shown_only_while_welcomed() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let mut core = AgentCore::new(Identity {
        device: "dev_a".into(),
        bank: "bnk_a".into(),
        command_key: key.public_key(),
    });
    core.handle(NOW, Event::Connected);
    let welcome = ServerMessage::Welcome {
        protocol: 1,
        device: "dev_a".into(),
        bank: "bnk_a".into(),
        compartments: vec![1],
        server_time_ms: 0,
        presence_key: PresenceKey("a2V5".into()),
        locked_down: false,
    };
    let shown = core.handle(NOW, Event::Server(welcome));
    assert_eq!(shown, vec![Action::Presence(Some(PresenceKey("a2V5".into())))]);
    assert_eq!(core.handle(NOW, Event::Disconnected), vec![Action::Presence(None)]);
    let goodbye = ServerMessage::Goodbye { reason: "revoked".into() };
    assert_eq!(
        core.handle(NOW, Event::Server(goodbye)),
        vec![Action::Presence(None), Action::Save(None)]
    );
}

#[test]
fn kiosk_codes_go_to_the_server_and_answers_come_back() {
    let mut f = fixture();
    let actions = f.core.handle(NOW, Event::CodeEntered("1234 5678".into()));
    let Some(Action::Send(AgentMessage::PickupAttempt { request_id, .. })) =
        actions.get(1).cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(actions[0], Action::Show(Screen::Checking));
    let shown = f.core.handle(
        NOW,
        Event::Server(ServerMessage::Pickup { request_id, answer: PickupAnswer::Refused }),
    );
    assert_eq!(shown, vec![Action::Show(Screen::NotAccepted)]);
    // An answer nobody asked for is dropped.
    assert!(
        f.core
            .handle(
                NOW,
                Event::Server(ServerMessage::Pickup {
                    request_id: 99,
                    answer: PickupAnswer::Accepted { compartment: 1 }
                })
            )
            .is_empty()
    );
    f.core.handle(NOW, Event::Disconnected);
    assert_eq!(
        f.core.handle(NOW, Event::CodeEntered("1".into())),
        vec![Action::Show(Screen::Offline)]
    );
}

#[test]
fn a_courier_asks_the_server_and_the_kiosk_shows_the_answer() {
    let mut f = fixture();
    let credential = CourierCredential::Code { code: "1234 5678 9012".into() };
    let event = Event::Courier { credential, action: CourierAction::Visit };
    let actions = f.core.handle(NOW, event.clone());
    let Some(Action::Send(AgentMessage::Courier { request_id, action, .. })) =
        actions.get(1).cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(action, CourierAction::Visit);
    let parcel =
        KioskParcel { id: "prc_a".into(), tracking_ref: "1Z".into(), size: "small".into() };
    let free = vec![FreeCompartments { size: "small".into(), count: 2 }];
    let work = CourierAnswer::Work {
        deposits: vec![parcel.clone()],
        returns: Vec::new(),
        free: free.clone(),
    };
    let shown =
        f.core.handle(NOW, Event::Server(ServerMessage::Courier { request_id, answer: work }));
    assert_eq!(
        shown,
        vec![Action::Show(Screen::CourierWork {
            deposits: vec![parcel],
            returns: Vec::new(),
            free
        })]
    );
    // Answered once: a second answer to the same request is dropped, and an opening
    // announced in it shows nothing (only a signed command opens a door).
    let again = CourierAnswer::Opening { compartment: 1 };
    assert!(
        f.core
            .handle(NOW, Event::Server(ServerMessage::Courier { request_id, answer: again }))
            .is_empty()
    );
    f.core.handle(NOW, Event::Disconnected);
    assert_eq!(f.core.handle(NOW, event), vec![Action::Show(Screen::Offline)]);
}

#[test]
fn door_reports_carry_a_monotonic_counter() {
    let mut f = fixture();
    let counters: Vec<u64> = (0..3)
        .map(|_| {
            match f
                .core
                .handle(NOW, Event::Door { compartment: 1, reading: DoorReading::Closed })
                .as_slice()
            {
                [
                    Action::Record(Record {
                        counter: journaled, entry: Entry::Door { .. }, ..
                    }),
                    Action::Send(AgentMessage::DoorReport { counter, .. }),
                ] if journaled == counter => *counter,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(counters, vec![1, 2, 3]);
}

mod sensors;

fn welcome(locked_down: bool) -> Event {
    Event::Server(ServerMessage::Welcome {
        protocol: 1,
        device: "dev_a".into(),
        bank: "bnk_a".into(),
        compartments: vec![1, 2, 3],
        server_time_ms: NOW.as_millis(),
        presence_key: PresenceKey("a2V5".into()),
        locked_down,
    })
}

fn lockdown_records(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Record(Record { entry: Entry::Lockdown { on }, .. }) => Some(*on),
            _ => None,
        })
        .collect()
}

#[test]
fn a_locked_down_bank_opens_nothing_until_the_lockdown_is_lifted() {
    let mut f = fixture();
    f.core.handle(NOW, Event::Disconnected);
    f.core.handle(NOW, Event::Connected);
    let actions = f.core.handle(NOW, welcome(true));
    assert_eq!(lockdown_records(&actions), [true], "journaled");
    assert!(actions.contains(&Action::Interlock(true)));
    assert!(f.core.interlocked());
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "a")))).as_deref(),
        Some("locked_down")
    );
    assert_eq!(
        f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true })),
        [],
        "no change, nothing journaled"
    );
    let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
    assert_eq!(lockdown_records(&lifted), [false]);
    assert!(lifted.contains(&Action::Interlock(false)));
    assert!(matches!(
        open(&mut f.core, NOW, sign(&f.key, command(1, "b"))).as_slice(),
        [Action::Record(_), Action::Unlock { .. }]
    ));
    // Engaged after the welcome too.
    let engaged = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
    assert!(engaged.contains(&Action::Interlock(true)));
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(2, "c")))).as_deref(),
        Some("locked_down")
    );
}

#[test]
fn a_restarted_core_never_executes_a_begun_command_again_and_stays_locked_down() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let identity =
        Identity { device: "dev_a".into(), bank: "bnk_a".into(), command_key: key.public_key() };
    let restored = Restored {
        counter: 41,
        executed: [("n1".to_owned(), NOW.as_millis() + 30_000)].into(),
        locked_down: true,
        ..Restored::default()
    };
    let mut core = AgentCore::new(identity).restore(restored);
    assert!(core.interlocked(), "locked down before the server says anything");
    core.handle(NOW, Event::Connected);
    core.handle(NOW, welcome(true));
    assert_eq!(
        refused(&open(&mut core, NOW, sign(&key, command(1, "n2")))).as_deref(),
        Some("locked_down")
    );
    let lifted = core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
    assert!(matches!(lifted.first(), Some(Action::Record(Record { counter: 42, .. }))));
    assert_eq!(
        refused(&open(&mut core, NOW, sign(&key, command(1, "n1")))).as_deref(),
        Some("replay"),
        "begun before the power cut: never again"
    );
}

#[test]
fn once_the_journal_fails_nothing_opens() {
    let mut f = fixture();
    assert_eq!(f.core.handle(NOW, Event::JournalFailed), [Action::Interlock(true)]);
    assert_eq!(
        refused(&open(&mut f.core, NOW, sign(&f.key, command(1, "a")))).as_deref(),
        Some("journal_failed")
    );
    f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: true }));
    let lifted = f.core.handle(NOW, Event::Server(ServerMessage::Lockdown { on: false }));
    assert!(lifted.contains(&Action::Interlock(true)), "a lift does not undo a failed journal");
}

/// What can happen to the agent, in any order.
#[derive(Debug, Clone)]
enum Step {
    Command {
        compartment: u16,
        nonce: u8,
        late: bool,
    },
    Lockdown(bool),
    Reconnect {
        locked_down: bool,
    },
    Door(u16),
    JournalFailed,
    /// The link drops.
    Cut,
    /// The server sends a list with a code for each of compartments 1 to 3.
    List,
    /// Compartment `n`'s code is typed (or a wrong one).
    Typed {
        compartment: u16,
        right: bool,
    },
}

/// The list of [`Step::List`]: compartment `n`'s code is `n` repeated ten times.
fn offline_list() -> Event {
    let key = [5; 32];
    let codes = (1..=3_u16)
        .map(|n| OfflineCode {
            id: format!("cod_{n}"),
            compartment: n,
            verifier: BASE64.encode(&offline_code_verifier(
                &key,
                n,
                n.to_string().repeat(10).as_bytes(),
            )),
            expires_at_ms: NOW.as_millis() + 86_400_000,
        })
        .collect();
    Event::Server(ServerMessage::OfflineList(OfflineList {
        couriers: Vec::new(),
        expected: Vec::new(),
        free: Vec::new(),
        key: BASE64.encode(&key),
        issued_at_ms: NOW.as_millis(),
        valid_until_ms: NOW.as_millis() + 86_400_000,
        codes,
    }))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Cut),
        Just(Step::List),
        (1_u16..4, any::<bool>())
            .prop_map(|(compartment, right)| Step::Typed { compartment, right }),
        (0_u16..5, 0_u8..6, any::<bool>()).prop_map(|(compartment, nonce, late)| Step::Command {
            compartment,
            nonce,
            late
        }),
        any::<bool>().prop_map(Step::Lockdown),
        any::<bool>().prop_map(|locked_down| Step::Reconnect { locked_down }),
        (1_u16..4).prop_map(Step::Door),
        Just(Step::JournalFailed),
    ]
}

proptest! {
    /// Whatever happens: every unlock follows the journal record of its own command; no
    /// nonce is unlocked twice; nothing unlocks while locked down or after the journal
    /// failed; journal counters go up by one. Offline, every unlock follows the record of
    /// its own use, and no code opens twice.
    #[test]
    fn every_unlock_is_journaled_first_and_none_while_interlocked(steps in proptest::collection::vec(step(), 1..40)) {
        let mut f = fixture();
        let mut unlocked = BTreeSet::new();
        let mut codes_opened = BTreeSet::new();
        let mut counter = 0;
        let mut interlocked = false;
        for s in steps {
            let at = NOW;
            let actions = match s {
                Step::Command { compartment, nonce, late } => {
                    let at = if late { NOW.plus(std::time::Duration::from_secs(31)) } else { NOW };
                    open(&mut f.core, at, sign(&f.key, command(compartment, &format!("n{nonce}"))))
                }
                Step::Lockdown(on) => f.core.handle(at, Event::Server(ServerMessage::Lockdown { on })),
                Step::Reconnect { locked_down } => {
                    f.core.handle(at, Event::Disconnected);
                    f.core.handle(at, Event::Connected);
                    f.core.handle(at, welcome(locked_down))
                }
                Step::Door(n) => f.core.handle(at, Event::Door { compartment: n, reading: DoorReading::Closed }),
                Step::JournalFailed => f.core.handle(at, Event::JournalFailed),
                Step::Cut => f.core.handle(at, Event::Disconnected),
                Step::List => f.core.handle(at, offline_list()),
                Step::Typed { compartment, right } => {
                    let digits = if right { compartment.to_string().repeat(10) } else { "0".repeat(10) };
                    f.core.handle(at, Event::CodeEntered(format!("{compartment} {digits}")))
                }
            };
            let mut last_record = None;
            for action in &actions {
                match action {
                    Action::Record(r) => {
                        prop_assert_eq!(r.counter, counter + 1);
                        counter = r.counter;
                        last_record = Some(r.entry.clone());
                    }
                    Action::Interlock(on) => interlocked = *on,
                    Action::Unlock { compartment, nonce } => {
                        prop_assert!(!interlocked && !f.core.interlocked());
                        let journaled = match &last_record {
                            Some(Entry::Unlock { nonce: n, compartment: c, .. }) => n == nonce && *c == compartment.get(),
                            Some(Entry::Offline { used: OfflineUse { id, what: OfflineWhat::Opened { code, compartment: c, .. }, .. } }) => {
                                prop_assert!(codes_opened.insert(code.clone()), "{} opened twice", code);
                                *nonce == format!("{OFFLINE_NONCE}{id}") && *c == compartment.get()
                            }
                            _ => false,
                        };
                        prop_assert!(journaled, "{:?}", actions);
                        prop_assert!(unlocked.insert(nonce.clone()), "{} twice", nonce);
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(interlocked, f.core.interlocked());
        }
    }
}

/// Found by the property test: a nonce is forgotten once its command has expired, so a
/// clock set back afterwards must not make the command valid again.
#[test]
fn a_clock_set_back_does_not_revive_a_forgotten_command() {
    let mut f = fixture();
    let signed = sign(&f.key, command(1, "n"));
    assert_eq!(open(&mut f.core, NOW, signed.clone()).len(), 2);
    let later = NOW.plus(std::time::Duration::from_secs(31));
    f.core.handle(later, Event::Door { compartment: 1, reading: DoorReading::Closed });
    assert_eq!(refused(&open(&mut f.core, NOW, signed)).as_deref(), Some("expired"));
}

#[test]
fn nonces_are_forgotten_only_after_their_command_expired() {
    let mut f = fixture();
    open(&mut f.core, NOW, sign(&f.key, command(1, "n")));
    let later = NOW.plus(std::time::Duration::from_secs(29));
    assert_eq!(
        refused(&open(&mut f.core, later, sign(&f.key, command(1, "n")))).as_deref(),
        Some("replay")
    );
}

mod offline;

mod qr;

proptest! {
    /// Whatever a (possibly hostile) server sends, the core never unlocks a compartment the
    /// bank does not have, never compartment 0, and never without a valid signature.
    #[test]
    fn hostile_commands_never_unlock(compartment in any::<u16>(), nonce in "[a-z0-9]{0,8}", device in "dev_[ab]", bank in "bnk_[ab]", dt in -60_000i64..60_000, forge in any::<bool>()) {
        let mut f = fixture();
        let cmd = OpenCommand { device: device.clone(), bank: bank.clone(), expires_at_ms: NOW.as_millis() + dt, ..command(compartment, &nonce) };
        let signed = if forge {
            let (other, _) = SigningKey::generate(&Rng::new()).unwrap();
            sign(&other, cmd)
        } else {
            sign(&f.key, cmd)
        };
        for action in open(&mut f.core, NOW, signed) {
            if let Action::Unlock { compartment: c, .. } = action {
                prop_assert!(!forge && device == "dev_a" && bank == "bnk_a" && dt > 0);
                prop_assert!((1..=3).contains(&c.get()));
            }
        }
    }
}

mod badges;

//! QR pickup tokens, checked offline before the server is asked.

use super::*;
use custody_core::token::PickupToken;
use custody_core::{BankId, CodeId, ParcelId};

fn bank() -> BankId {
    BankId::from_random([1; 16])
}

/// A welcomed core of a bank with a real id (tokens carry ids in binary).
fn kiosk(key: &SigningKey, connected: bool) -> AgentCore {
    let identity = Identity {
        device: "dev_a".into(),
        bank: bank().to_string(),
        command_key: key.public_key(),
    };
    let mut core = AgentCore::new(identity);
    if connected {
        core.handle(NOW, Event::Connected);
        core.handle(
            NOW,
            Event::Server(ServerMessage::Welcome {
                protocol: 1,
                device: "dev_a".into(),
                bank: bank().to_string(),
                compartments: vec![1, 2, 3],
                server_time_ms: NOW.as_millis(),
                presence_key: PresenceKey("a2V5".into()),
                locked_down: false,
            }),
        );
    }
    core
}

fn token(compartment: u16) -> PickupToken {
    PickupToken {
        bank: bank(),
        compartment: CompartmentNumber::new(compartment).unwrap(),
        parcel: ParcelId::from_random([2; 16]),
        code: CodeId::from_random([3; 16]),
        expires_at: NOW.plus(std::time::Duration::from_mins(10)),
    }
}

fn signed(key: &SigningKey, t: &PickupToken) -> String {
    t.encode(&key.sign(QR_TOKEN_DOMAIN, &t.signed_bytes()))
}

#[test]
fn a_token_is_checked_offline() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let (stranger, _) = SigningKey::generate(&Rng::new()).unwrap();
    let core = kiosk(&key, false);
    let good = token(2);
    let other_bank = PickupToken { bank: BankId::from_random([9; 16]), ..token(2) };
    // An open command's signature over the same bytes, under its own domain.
    let wrong_domain = good.encode(&key.sign(OPEN_COMMAND_DOMAIN, &good.signed_bytes()));
    let mut flipped = signed(&key, &good).into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        (signed(&key, &good), NOW, Ok(())),
        (signed(&key, &good), good.expires_at, Err(TokenRefusal::Expired)),
        (signed(&stranger, &good), NOW, Err(TokenRefusal::BadSignature)),
        (wrong_domain, NOW, Err(TokenRefusal::BadSignature)),
        (flipped, NOW, Err(TokenRefusal::BadSignature)),
        (signed(&key, &other_bank), NOW, Err(TokenRefusal::OtherBank)),
        ("CQ1:HELLO".into(), NOW, Err(TokenRefusal::Malformed)),
        (String::new(), NOW, Err(TokenRefusal::Malformed)),
    ];
    for (text, at, want) in cases {
        assert_eq!(core.check_token(at, &text).map(|_| ()), want, "{text}");
    }
    // Once welcomed the kiosk knows its compartments.
    let core = kiosk(&key, true);
    assert_eq!(
        core.check_token(NOW, &signed(&key, &token(7))).map(|_| ()),
        Err(TokenRefusal::UnknownCompartment)
    );
}

#[test]
fn a_good_token_asks_the_server_and_then_works_no_more() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let mut core = kiosk(&key, true);
    let text = signed(&key, &token(2));
    let asked = core.handle(NOW, Event::QrScanned(text.clone()));
    let Some(Action::Send(AgentMessage::QrPickup { request_id, token })) = asked.get(1) else {
        panic!("{asked:?}")
    };
    assert_eq!((asked[0].clone(), token), (Action::Show(Screen::Checking), &text));
    let answer = PickupAnswer::Accepted { compartment: 2 };
    let shown =
        core.handle(NOW, Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }));
    assert_eq!(shown, vec![Action::Show(Screen::Open(2))]);
    // The same token again is refused here, and still reported for the audit log.
    let again = core.handle(NOW, Event::QrScanned(text.clone()));
    assert_eq!(again[0], Action::Show(Screen::NotAccepted));
    let Some(Action::Send(AgentMessage::QrPickup { request_id, .. })) = again.get(1) else {
        panic!("{again:?}")
    };
    assert_eq!(core.check_token(NOW, &text).map(|_| ()), Err(TokenRefusal::Replay));
    // The server's refusal of the report changes nothing on the screen.
    let answer = PickupAnswer::Refused;
    let late =
        core.handle(NOW, Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }));
    assert!(late.is_empty());
}

#[test]
fn a_refused_token_can_be_scanned_again() {
    // The server said no (a lockdown, say): the kiosk keeps no mark, so the same token
    // works once the reason is gone.
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let mut core = kiosk(&key, true);
    let text = signed(&key, &token(2));
    let asked = core.handle(NOW, Event::QrScanned(text.clone()));
    let Some(Action::Send(AgentMessage::QrPickup { request_id, .. })) = asked.get(1) else {
        panic!("{asked:?}")
    };
    let answer = PickupAnswer::Refused;
    core.handle(NOW, Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }));
    assert!(core.check_token(NOW, &text).is_ok());
}

#[test]
fn offline_a_good_token_waits_and_a_bad_one_is_refused() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let mut core = kiosk(&key, false);
    let good = core.handle(NOW, Event::QrScanned(signed(&key, &token(2))));
    assert_eq!(good, vec![Action::Show(Screen::Offline)]);
    let bad = core.handle(NOW, Event::QrScanned("CQ1:FORGED".into()));
    assert_eq!(bad, vec![Action::Show(Screen::NotAccepted)]);
}

#[test]
fn offline_a_token_opens_only_if_its_code_is_listed() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let mut core = kiosk(&key, true);
    let listed = token(2);
    let day = 86_400_000;
    let list = OfflineList {
        couriers: Vec::new(),
        expected: Vec::new(),
        free: Vec::new(),
        key: BASE64.encode(&[5; 32]),
        issued_at_ms: NOW.as_millis(),
        valid_until_ms: NOW.as_millis() + day,
        codes: vec![OfflineCode {
            id: listed.code.as_str().into(),
            compartment: 2,
            verifier: BASE64.encode(&[0; 32]),
            expires_at_ms: NOW.as_millis() + day,
        }],
    };
    core.handle(NOW, Event::Server(ServerMessage::OfflineList(list)));
    core.handle(NOW, Event::Disconnected);
    let unlisted = PickupToken { code: CodeId::from_random([4; 16]), ..token(2) };
    let refused = core.handle(NOW, Event::QrScanned(signed(&key, &unlisted)));
    assert_eq!(refused.last(), Some(&Action::Show(Screen::NotAccepted)));
    let opened = core.handle(NOW, Event::QrScanned(signed(&key, &listed)));
    assert!(
        matches!(
            opened.as_slice(),
            [
                Action::Record(Record { entry: Entry::Offline { used: OfflineUse { what: OfflineWhat::Opened { method, compartment: 2, .. }, .. } }, .. }),
                Action::Unlock { .. },
                Action::Show(Screen::Open(2)),
            ] if method == "qr"
        ),
        "{opened:?}"
    );
    let again = core.handle(NOW, Event::QrScanned(signed(&key, &listed)));
    assert_eq!(again.last(), Some(&Action::Show(Screen::NotAccepted)));
}

proptest! {
    /// Whatever the scanner reads, the kiosk asks the server about it only if it is a
    /// token signed for this bank; nothing else is ever awaited.
    #[test]
    fn only_genuine_tokens_are_awaited(text in ".{0,300}") {
        let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
        let mut core = kiosk(&key, true);
        let actions = core.handle(NOW, Event::QrScanned(text));
        prop_assert_eq!(&actions[0], &Action::Show(Screen::NotAccepted));
        for action in &actions {
            if let Action::Send(AgentMessage::QrPickup { token, .. }) = action {
                prop_assert!(token.chars().count() <= QR_TOKEN_TEXT_LEN + 1);
            }
        }
    }
}

//! Badge reads against the synced list, and which readers are trusted.

use super::*;

const ANNS: &str = "04A2B3C4D5E6F7";
const KEY: [u8; 32] = [9; 32];

fn synced(core: &mut AgentCore, numbers: &[&str]) {
    let verifiers = numbers
        .iter()
        .map(|n| {
            let n = BadgeNumber::parse(n).unwrap();
            BASE64.encode(&badge_verifier(&KEY, n.as_bytes()))
        })
        .collect();
    let list = BadgeList { key: BASE64.encode(&KEY), verifiers };
    assert!(core.handle(NOW, Event::Server(ServerMessage::Badges(list))).is_empty());
}

fn read(core: &mut AgentCore, at: Timestamp, reader: ReaderKind) -> Vec<Action> {
    core.handle(at, Event::BadgeRead { number: ANNS.into(), reader })
}

#[test]
fn a_read_is_checked_against_the_synced_list() {
    let mut f = fixture();
    let check = |core: &AgentCore, number: &str, reader| core.check_badge(NOW, number, reader);
    assert_eq!(check(&f.core, ANNS, ReaderKind::OsdpSecure), Err(BadgeRefusal::NoList));
    synced(&mut f.core, &[ANNS]);
    assert!(check(&f.core, ANNS, ReaderKind::OsdpSecure).is_ok());
    assert!(check(&f.core, "04:a2:b3:c4:d5:e6:f7", ReaderKind::Keyboard).is_ok());
    assert!(check(&f.core, ANNS, ReaderKind::Wiegand).is_ok());
    assert_eq!(
        check(&f.core, "04A2B3C4D5E6F8", ReaderKind::OsdpSecure),
        Err(BadgeRefusal::Unknown)
    );
    assert_eq!(check(&f.core, "04A2B3", ReaderKind::OsdpSecure), Err(BadgeRefusal::Malformed));
    assert_eq!(
        check(&f.core, ANNS, ReaderKind::OsdpClear),
        Err(BadgeRefusal::InsecureReader),
        "no commissioning window: OSDP in the clear is refused"
    );
    // A revocation reaches the kiosk with the next list.
    synced(&mut f.core, &["04A2B3C4D5E6F8"]);
    assert_eq!(check(&f.core, ANNS, ReaderKind::OsdpSecure), Err(BadgeRefusal::Unknown));
    // A list that cannot be read leaves no badge known.
    let garbled = BadgeList { key: "not base64".into(), verifiers: Vec::new() };
    f.core.handle(NOW, Event::Server(ServerMessage::Badges(garbled)));
    assert_eq!(check(&f.core, "04A2B3C4D5E6F8", ReaderKind::OsdpSecure), Err(BadgeRefusal::NoList));
}

#[test]
fn osdp_in_the_clear_only_while_commissioning() {
    let (key, _) = SigningKey::generate(&Rng::new()).unwrap();
    let until = NOW.plus(custody_core::time::hours(1));
    let mut core = welcomed(&key).commissioning_until(Some(until));
    synced(&mut core, &[ANNS]);
    assert!(core.check_badge(NOW, ANNS, ReaderKind::OsdpClear).is_ok());
    assert_eq!(
        core.check_badge(until, ANNS, ReaderKind::OsdpClear),
        Err(BadgeRefusal::InsecureReader)
    );
    assert!(core.check_badge(until, ANNS, ReaderKind::OsdpSecure).is_ok());
}

#[test]
fn a_known_badge_asks_the_server_and_any_other_is_refused_but_reported() {
    let mut f = fixture();
    synced(&mut f.core, &[ANNS]);
    let asked = read(&mut f.core, NOW, ReaderKind::OsdpSecure);
    let [
        Action::Show(Screen::Checking),
        Action::Send(AgentMessage::BadgeRead { request_id, badge }),
    ] = asked.as_slice()
    else {
        panic!("{asked:?}")
    };
    assert_eq!((badge.number.as_str(), badge.reader.as_str()), (ANNS, "osdp_secure"));
    let answer = PickupAnswer::Accepted { compartment: 2 };
    let shown = f
        .core
        .handle(NOW, Event::Server(ServerMessage::Pickup { request_id: *request_id, answer }));
    assert_eq!(shown, vec![Action::Show(Screen::Open(2))]);

    // Refused here at once, and still sent so the server audits and counts it.
    let refused = read(&mut f.core, NOW, ReaderKind::OsdpClear);
    assert!(matches!(
        refused.as_slice(),
        [Action::Show(Screen::NotAccepted), Action::Send(AgentMessage::BadgeRead { .. })]
    ));
    // A courier's badge that fails here is not sent as a courier's question.
    let credential = CourierCredential::Badge {
        badge: BadgeRead { number: "04A2B3C4D5E6F8".into(), reader: "osdp_secure".into() },
    };
    assert_eq!(
        f.core.handle(NOW, Event::Courier { credential, action: CourierAction::Visit }),
        vec![Action::Show(Screen::NotAccepted)]
    );
    // A revoked device forgets the list; offline, nothing is asked.
    f.core.handle(NOW, Event::Server(ServerMessage::Goodbye { reason: "revoked".into() }));
    assert_eq!(f.core.check_badge(NOW, ANNS, ReaderKind::OsdpSecure), Err(BadgeRefusal::NoList));
    assert_eq!(
        read(&mut f.core, NOW, ReaderKind::OsdpSecure),
        vec![Action::Show(Screen::NotAccepted)]
    );
}

proptest! {
    #[test]
    fn reads_of_any_shape_are_never_asked_about_unless_listed(number in ".{0,300}", kind in 0usize..4) {
        let mut f = fixture();
        synced(&mut f.core, &[ANNS]);
        let reader = ReaderKind::ALL[kind];
        let actions = f.core.handle(NOW, Event::BadgeRead { number: number.clone(), reader });
        let asked = actions.iter().any(|a| matches!(a, Action::Show(Screen::Checking)));
        let listed = BadgeNumber::parse(&number).is_ok_and(|n| n.to_hex() == ANNS);
        prop_assert_eq!(asked, listed && reader != ReaderKind::OsdpClear);
    }
}

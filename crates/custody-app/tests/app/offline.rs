//! Offline operation at the server: the list of code verifiers a bank's agent is sent, and the
//! reconciliation of what its kiosk did while it could not reach the server. Each use is
//! consumed once however often it is reported; a use the record disagrees with is audited as
//! a conflict. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::parcels::PickupOutcome;
use custody_app::{AppError, Caller};
use custody_core::ParcelId;
use custody_core::audit::{AuditAction, Outcome};
use custody_core::code::PickupEntry;
use custody_core::compartment::{CompartmentState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::time::minutes;
use custody_crypto::secret::{offline_code_verifier, offline_courier_verifier};
use custody_proto::device::{OfflineList, OfflineUse, OfflineWhat};
use custody_testkit::{Env, TestStore, backends};
use data_encoding::BASE64;
use futures_util::FutureExt as _;

/// The code record a parcel's code has in `list`, and its compartment.
fn listed(list: &OfflineList, code: &str) -> Option<(String, u16)> {
    let Ok(PickupEntry::Current { locker, code }) = PickupEntry::parse(code) else {
        panic!("a current code")
    };
    let key: [u8; 32] = BASE64.decode(list.key.as_bytes()).unwrap().try_into().unwrap();
    let verifier =
        BASE64.encode(&offline_code_verifier(&key, locker.get(), code.expose().as_bytes()));
    list.codes
        .iter()
        .find(|c| c.compartment == locker.get() && c.verifier == verifier)
        .map(|c| (c.id.clone(), c.compartment))
}

fn opened(id: &str, code: &str, compartment: u16, at_ms: i64) -> OfflineUse {
    OfflineUse {
        id: id.into(),
        at_ms,
        what: OfflineWhat::Opened { code: code.into(), compartment, method: "code".into() },
    }
}

/// Reasons of the site's audit entries of `action`, oldest first.
async fn reasons(env: &Env, action: AuditAction) -> Vec<(Outcome, String)> {
    let mut out: Vec<_> = env
        .site_log(500)
        .await
        .iter()
        .filter(|r| r.event.action == action)
        .map(|r| (r.event.outcome, r.event.reason.clone().unwrap_or_default()))
        .collect();
    out.reverse();
    out
}

async fn state(env: &Env, parcel: &ParcelId) -> ParcelState {
    env.app.parcel(&Caller::Operator, parcel).await.unwrap().state
}

backends!(
    the_list_holds_a_verifier_of_each_working_code_and_never_a_code,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let (parcel, code) = env.delivered("ann@harbour.example").await;
        let list = env.app.offline_list(&env.bank).await.unwrap();
        assert_eq!(list.codes.len(), 1);
        assert!(listed(&list, &code).is_some(), "the code's verifier under the bank's key");
        let now = env.app.now().as_millis();
        assert_eq!(list.valid_until_ms - now, 24 * 3_600_000, "the sync deadline is a day away");
        let digits: String = code.chars().filter(char::is_ascii_digit).collect();
        let json = serde_json::to_string(&list).unwrap();
        assert!(!json.contains(&digits[digits.len() - 10..]), "no code in clear");
        assert!(!format!("{list:?}").contains(&list.key), "the key is not logged");

        // Another bank's list is its own, under its own key.
        let garage = env.app.create_bank(&Caller::Operator, &env.site, "Garage").await.unwrap();
        let other = env.app.offline_list(&garage.id).await.unwrap();
        assert!(other.codes.is_empty());
        assert_ne!(other.key, list.key);

        // A resent code replaces the old one in the list.
        env.clock.advance(minutes(1));
        env.app.resend_code(&Env::as_person(&env.ann), &parcel).await.unwrap();
        let fresh = env.code_sent_for(&parcel).await;
        let list = env.app.offline_list(&env.bank).await.unwrap();
        assert_eq!(list.codes.len(), 1);
        assert_ne!(code, fresh);
        assert!(listed(&list, &code).is_none(), "old gone");
        assert!(listed(&list, &fresh).is_some(), "new there: {fresh} {list:?}");

        // Picked up: gone.
        let picked = env.app.redeem_code(&env.device, &fresh).await.unwrap();
        assert!(matches!(picked, PickupOutcome::Accepted { .. }));
        assert!(env.app.offline_list(&env.bank).await.unwrap().codes.is_empty());
    }
);

backends!(an_offline_pickup_reported_twice_is_consumed_once, |t: TestStore| async move {
    let env = Env::new(t).await;
    let (parcel, code) = env.delivered("ann@harbour.example").await;
    let list = env.app.offline_list(&env.bank).await.unwrap();
    let (id, n) = listed(&list, &code).unwrap();
    let at = env.app.now().as_millis();
    let used = opened("7-1", &id, n, at);
    env.app.reconcile_offline(&env.device, used.clone()).await.unwrap();
    // The acknowledgement was lost with the link: the agent reports it again.
    env.app.reconcile_offline(&env.device, used).await.unwrap();
    assert_eq!(state(&env, &parcel).await, ParcelState::PickedUp);
    let accepted: Vec<_> = reasons(&env, AuditAction::PickupAttempt)
        .await
        .into_iter()
        .filter(|(_, r)| r == "code_accepted_offline")
        .collect();
    assert_eq!(accepted, vec![(Outcome::Success, "code_accepted_offline".to_owned())]);
    let pickups = reasons(&env, AuditAction::PickUp).await;
    assert_eq!(pickups.len(), 1, "one pickup in the parcel's custody");
    assert!(reasons(&env, AuditAction::PickupOfflineConflict).await.is_empty());
    // The code is spent for the server too (once its grace re-open is over).
    env.clock.advance(minutes(3));
    let again = env.app.redeem_code(&env.device, &code).await.unwrap();
    assert!(matches!(again, PickupOutcome::Refused), "{again:?}");
});

backends!(what_the_record_disagrees_with_is_audited_as_a_conflict, |t: TestStore| async move {
    let env = Env::new(t).await;
    let at = env.app.now().as_millis();

    // Revoked after the agent's last sync (a resend): the door opened on the parcel, so the
    // pickup is recorded, and the new code dies with it.
    let (revoked, old) = env.delivered("ann@harbour.example").await;
    let (old_id, n) = listed(&env.app.offline_list(&env.bank).await.unwrap(), &old).unwrap();
    env.clock.advance(minutes(1));
    env.app.resend_code(&Env::as_person(&env.ann), &revoked).await.unwrap();
    let fresh = env.code_sent_for(&revoked).await;
    env.app.reconcile_offline(&env.device, opened("1-1", &old_id, n, at)).await.unwrap();
    assert_eq!(state(&env, &revoked).await, ParcelState::PickedUp);
    let refused = env.app.redeem_code(&env.device, &fresh).await.unwrap();
    assert!(matches!(refused, PickupOutcome::Refused));

    // Used already (a second kiosk, online): nothing changes but the record of it.
    let (used, code) = env.delivered("bob@harbour.example").await;
    let (used_id, m) = listed(&env.app.offline_list(&env.bank).await.unwrap(), &code).unwrap();
    env.app.redeem_code(&env.device, &code).await.unwrap();
    env.app.reconcile_offline(&env.device, opened("2-1", &used_id, m, at)).await.unwrap();
    assert_eq!(state(&env, &used).await, ParcelState::PickedUp);

    // Nothing the server knows, and a code reported for another compartment.
    env.app.reconcile_offline(&env.device, opened("3-1", "cod_nothing", 1, at)).await.unwrap();
    env.app.reconcile_offline(&env.device, opened("4-1", &used_id, m + 1, at)).await.unwrap();

    // Its compartment taken out of service since the agent's last sync (the record is moved
    // here directly): the code was good, but the door opened on a compartment the record no
    // longer holds the parcel in, so only staff can say what happened.
    let (gone, code) = env.delivered("ann@harbour.example").await;
    let (gone_id, k) = listed(&env.app.offline_list(&env.bank).await.unwrap(), &code).unwrap();
    let held_in = env.app.parcel(&Caller::Operator, &gone).await.unwrap().compartment.unwrap();
    let now = env.app.now();
    let out = CompartmentState::OutOfService;
    let moved = env
        .app
        .store()
        .write(move |tx| {
            async move {
                tx.move_compartment(&held_in, CompartmentState::Occupied, out, None, now).await
            }
            .boxed()
        })
        .await;
    assert!(moved.unwrap());
    env.app.reconcile_offline(&env.device, opened("5-1", &gone_id, k, at)).await.unwrap();
    assert_eq!(state(&env, &gone).await, ParcelState::Notified, "left for staff");

    let conflicts = reasons(&env, AuditAction::PickupOfflineConflict).await;
    let why: Vec<&str> = conflicts.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(why, ["revoked", "used", "unknown_code", "other_compartment", "parcel_not_waiting"]);
    assert!(conflicts.iter().all(|(o, _)| *o == Outcome::Failure));
});

backends!(refusals_offline_are_audited_as_attempts, |t: TestStore| async move {
    let env = Env::new(t).await;
    let at = env.app.now().as_millis();
    for (id, method) in [("1-1", "code"), ("2-1", "qr"), ("3-1", "<script>")] {
        let used = OfflineUse {
            id: id.into(),
            at_ms: at,
            what: OfflineWhat::Refused { method: method.into() },
        };
        env.app.reconcile_offline(&env.device, used).await.unwrap();
    }
    let attempts = reasons(&env, AuditAction::PickupAttempt).await;
    let why: Vec<&str> = attempts.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(why, ["code_refused_offline", "qr_refused_offline", "unknown_refused_offline"]);
});

backends!(only_a_device_reconciles_and_only_sane_ids, |t: TestStore| async move {
    let env = Env::new(t).await;
    let used = opened("1-1", "cod_x", 1, 0);
    let staff = env.stepped_up(&env.admin);
    assert!(matches!(
        env.app.reconcile_offline(&staff, used.clone()).await,
        Err(AppError::Forbidden)
    ));
    let long = OfflineUse { id: "x".repeat(65), ..used };
    assert!(matches!(
        env.app.reconcile_offline(&env.device, long).await,
        Err(AppError::Invalid(_))
    ));
});

/// Today's UTC day at `env`'s clock, and the courier's code typed on it, without spaces.
async fn todays_courier_code(env: &Env) -> (i64, String) {
    let code = env.app.courier_code(&Env::as_person(&env.courier)).await.unwrap();
    let day = env.app.now().as_millis().div_euclid(86_400_000);
    (day, code.code.replace(' ', ""))
}

fn deposited(
    id: &str,
    courier: &str,
    parcel: &ParcelId,
    compartment: u16,
    at_ms: i64,
) -> OfflineUse {
    OfflineUse {
        id: id.into(),
        at_ms,
        what: OfflineWhat::Deposited {
            courier: courier.into(),
            parcel: parcel.to_string(),
            compartment,
        },
    }
}

fn confirmed(id: &str, courier: &str, parcel: &ParcelId, at_ms: i64) -> OfflineUse {
    OfflineUse {
        id: id.into(),
        at_ms,
        what: OfflineWhat::Confirmed { courier: courier.into(), parcel: parcel.to_string() },
    }
}

async fn compartment(env: &Env, n: u16) -> custody_app::compartments::Compartment {
    let all = env.app.bank_overview(&env.bank).await.unwrap();
    all.into_iter().find(|c| c.number.get() == n).unwrap()
}

backends!(the_list_lets_couriers_deposit_offline, |t: TestStore| async move {
    let env = Env::new(t).await;
    let list = env.app.offline_list(&env.bank).await.unwrap();
    assert!(list.couriers.is_empty(), "no parcel announced, no courier needed");
    assert_eq!(list.free.len(), 6);

    let parcel = env.announce("ann@harbour.example", "1Z-OFFLINE", SizeClass::Medium).await;
    let list = env.app.offline_list(&env.bank).await.unwrap();
    let (day, digits) = todays_courier_code(&env).await;
    let key: [u8; 32] = BASE64.decode(list.key.as_bytes()).unwrap().try_into().unwrap();
    let verifier = BASE64.encode(&offline_courier_verifier(&key, day, digits.as_bytes()).unwrap());
    let days: Vec<i64> = list.couriers.iter().map(|c| c.day).collect();
    assert_eq!(days, [day, day + 1], "today's and tomorrow's codes");
    let today = &list.couriers[0];
    assert_eq!(today.courier, env.courier.id.to_string());
    assert_eq!(today.carrier, env.carrier.to_string());
    assert_eq!(today.verifier, verifier, "Argon2id of today's code under the bank's key");
    assert_ne!(list.couriers[1].verifier, verifier, "tomorrow's is another");
    let json = serde_json::to_string(&list).unwrap();
    assert!(!json.contains(&digits), "no courier code in clear");
    let expected: Vec<&str> = list.expected.iter().map(|p| p.parcel.id.as_str()).collect();
    assert_eq!(expected, [parcel.id.as_str()]);
    assert_eq!(list.expected[0].parcel.size, "medium");
    assert_eq!(list.expected[0].carrier, env.carrier.to_string());

    // Another bank's verifiers are its own, and its compartments.
    let garage = env.app.create_bank(&Caller::Operator, &env.site, "Garage").await.unwrap();
    let other = env.app.offline_list(&garage.id).await.unwrap();
    assert_eq!(other.expected, list.expected, "the same site's parcels");
    assert!(other.free.is_empty());
    assert!(other.couriers.iter().all(|c| c.verifier != verifier));

    // A courier disabled is in no list.
    env.app.disable_person(&Caller::Operator, &env.courier.id).await.unwrap();
    assert!(env.app.offline_list(&env.bank).await.unwrap().couriers.is_empty());
});

backends!(
    an_offline_deposit_is_reserved_then_confirmed_and_notified_once,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let parcel = env.announce("ann@harbour.example", "1Z-OFFLINE", SizeClass::Small).await.id;
        let courier = env.courier.id.to_string();
        let at = env.app.now().as_millis();
        let deposit = deposited("3-1", &courier, &parcel, 2, at);
        env.app.reconcile_offline(&env.device, deposit.clone()).await.unwrap();
        env.app.reconcile_offline(&env.device, deposit).await.unwrap();
        let reserved = compartment(&env, 2).await;
        assert_eq!(reserved.state, CompartmentState::Reserved);
        assert_eq!(reserved.parcel.as_ref(), Some(&parcel));
        assert_eq!(state(&env, &parcel).await, ParcelState::Expected);
        let reserves = reasons(&env, AuditAction::DepositReserve).await;
        assert_eq!(reserves, [(Outcome::Success, "courier_code_offline".to_owned())], "once");

        // Reported when the bank is back, five minutes on.
        env.clock.advance(minutes(5));
        let confirmation = confirmed("4-2", &courier, &parcel, at + 60_000);
        env.app.reconcile_offline(&env.device, confirmation).await.unwrap();
        assert_eq!(state(&env, &parcel).await, ParcelState::Notified, "Ann is told at once");
        assert!(env.code_sent_for(&parcel).await.len() > 10);
        assert_eq!(compartment(&env, 2).await.state, CompartmentState::Occupied);
        let history = env.app.parcel_history(&Caller::Operator, &parcel).await.unwrap().1;
        let deposit = history.iter().find(|e| e.0.event.action == AuditAction::Deposit).unwrap();
        assert_eq!(deposit.0.event.actor.id.as_deref(), Some(courier.as_str()), "the courier's");
        assert_eq!(deposit.0.event.at.as_millis(), at + 60_000, "at the time it happened");
        assert!(reasons(&env, AuditAction::DepositOfflineConflict).await.is_empty());

        // Opened, never confirmed: the reservation lapses as one begun online does.
        let other = env.announce("bob@harbour.example", "1Z-LAPSED", SizeClass::Small).await.id;
        env.app
            .reconcile_offline(&env.device, deposited("5-3", &courier, &other, 3, at))
            .await
            .unwrap();
        assert_eq!(compartment(&env, 3).await.state, CompartmentState::Reserved);
        env.clock.advance(minutes(10));
        assert_eq!(env.app.release_stale_reservations().await.unwrap(), 1);
        assert_eq!(compartment(&env, 3).await.state, CompartmentState::Free);
        assert_eq!(state(&env, &other).await, ParcelState::Expected);
    }
);

backends!(
    offline_deposits_the_record_disagrees_with_change_nothing_but_the_log,
    |t: TestStore| async move {
        let env = Env::new(t).await;
        let courier = env.courier.id.to_string();
        let (held, _) = env.delivered("ann@harbour.example").await;
        let waiting = env.announce("bob@harbour.example", "1Z-WAITING", SizeClass::Small).await.id;
        let at = env.app.now().as_millis();
        let uses = [
            // Compartment 1 holds Ann's parcel.
            deposited("1-1", &courier, &waiting, 1, at),
            // Ann's parcel is not waiting for a deposit.
            deposited("2-1", &courier, &held, 2, at),
            // Ann is no courier.
            deposited("3-1", env.ann.id.as_str(), &waiting, 2, at),
            deposited("4-1", &courier, &ParcelId::from_random([7; 16]), 2, at),
            deposited("5-1", &courier, &waiting, 99, at),
            confirmed("6-1", &courier, &waiting, at),
        ];
        for used in uses {
            env.app.reconcile_offline(&env.device, used).await.unwrap();
        }
        let conflicts: Vec<String> = reasons(&env, AuditAction::DepositOfflineConflict)
            .await
            .into_iter()
            .map(|(outcome, reason)| {
                assert_eq!(outcome, Outcome::Failure);
                reason
            })
            .collect();
        assert_eq!(
            conflicts,
            [
                "compartment_not_free",
                "parcel_not_expected",
                "courier_not_allowed",
                "unknown_parcel",
                "unknown_compartment",
                "no_deposit_under_way"
            ]
        );
        assert_eq!(state(&env, &waiting).await, ParcelState::Expected);
        assert_eq!(compartment(&env, 2).await.state, CompartmentState::Free);
        assert_eq!(compartment(&env, 1).await.parcel.as_ref(), Some(&held));
    }
);

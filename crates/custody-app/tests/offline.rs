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
use custody_core::audit::{AuditAction, Outcome};
use custody_core::code::PickupEntry;
use custody_core::parcel::ParcelState;
use custody_core::time::minutes;
use custody_core::{BankId, ParcelId};
use custody_crypto::secret::offline_code_verifier;
use custody_proto::device::{OfflineList, OfflineUse, OfflineWhat};
use custody_testkit::{Env, TestStore, backends};
use data_encoding::BASE64;

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
        let other = env.app.offline_list(&BankId::from_random([9; 16])).await.unwrap();
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

    let conflicts = reasons(&env, AuditAction::PickupOfflineConflict).await;
    let why: Vec<&str> = conflicts.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(why, ["revoked", "used", "unknown_code", "other_compartment"]);
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

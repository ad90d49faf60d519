//! Parcels for an address that matches no resident: the carrier cannot tell them from any
//! other, and the site's staff name the resident or take the parcel out. On both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use custody_app::Caller;
use custody_app::parcels::Parcel;
use custody_app::parcels::as_seen_by;
use custody_app::parcels::{ParcelSpec, PickupOutcome};
use custody_app::personal::Statement;
use custody_core::ParcelId;
use custody_core::audit::AuditAction;
use custody_core::compartment::SizeClass;
use custody_core::parcel::ParcelState;
use custody_core::time::days;
use custody_proto::device::DoorReading;
use custody_testkit::{Env, TestStore, backends};
use futures_util::FutureExt as _;

fn spec(env: &Env, email: &str, tracking_ref: &str) -> ParcelSpec {
    ParcelSpec {
        site: env.site.clone(),
        carrier: env.carrier.clone(),
        recipient_email: email.into(),
        tracking_ref: tracking_ref.into(),
        size: SizeClass::Small,
        accessible: false,
        refrigerated: false,
    }
}

/// What a carrier's caller is told about a parcel, with what differs between any two parcels
/// anyway (ids, compartments, references) left out.
fn told(p: &Parcel) -> String {
    format!(
        "{} recipient={:?} notified_at={:?} deposited={} expires={}",
        p.state,
        p.recipient,
        p.notified_at,
        p.deposited_at.is_some(),
        p.expires_at.is_some()
    )
}

/// Announces, deposits and confirms a parcel for `email` as `carrier` would, the way the API
/// and the kiosk do (confirm and notify at once). Returns every answer the carrier got, then
/// the carrier's list entry and chain of custody of the parcel.
async fn carrier_delivers(
    env: &Env,
    carrier: &Caller,
    email: &str,
    tracking_ref: &str,
) -> (ParcelId, Vec<String>) {
    let mut answers = Vec::new();
    let p = env.app.expect_parcel(carrier, spec(env, email, tracking_ref)).await.unwrap();
    answers.push(told(&as_seen_by(carrier, p.clone())));
    let deposit = env.app.start_deposit(carrier, &p.id, &env.bank).await.unwrap();
    answers.push(told(&as_seen_by(carrier, deposit.parcel)));
    let n = deposit.compartment.number.get();
    env.app.door_report(&env.device, n, DoorReading::Open).await.unwrap();
    env.app.door_report(&env.device, n, DoorReading::Closed).await.unwrap();
    let confirmed = env.app.confirm_and_notify(carrier, &p.id).await.unwrap();
    answers.push(told(&as_seen_by(carrier, confirmed)));
    let listed = env.app.visible_parcels(carrier, None, 50).await.unwrap();
    answers.push(told(listed.iter().find(|l| l.id == p.id).unwrap()));
    let (seen, history) = env.app.parcel_history(carrier, &p.id).await.unwrap();
    answers.push(told(&seen));
    let actions: Vec<String> = history
        .iter()
        .map(|(row, _)| format!("{} {}", row.event.action, row.event.outcome))
        .collect();
    answers.push(actions.join(", "));
    let (seen, _, proven) = env.app.parcel_custody(carrier, &p.id).await.unwrap();
    answers.push(told(&seen));
    answers.push(proven.iter().map(|e| e.row.event.action.as_str()).collect::<Vec<_>>().join(", "));
    (p.id, answers)
}

async fn row(env: &Env, id: &ParcelId) -> Parcel {
    env.app.parcel(&Caller::Operator, id).await.unwrap()
}

async fn messages(env: &Env, id: &ParcelId) -> usize {
    let id = id.clone();
    env.app
        .store()
        .read(move |tx| async move { tx.messages_for_parcel(&id).await }.boxed())
        .await
        .unwrap()
        .len()
}

// Rule 6 of docs/SECURITY.md: a carrier's key announcing parcels learns nothing about
// who lives at the site, through its answers, its list, or the parcel's chain of custody.
backends!(a_carrier_cannot_tell_who_lives_at_a_site, |t: TestStore| async move {
    let env = Env::new(t).await;
    for carrier in [env.carrier().await, Env::as_person(&env.courier)] {
        let (ann_parcel, for_ann) =
            carrier_delivers(&env, &carrier, "ann@harbour.example", "1Z999AA10123456784").await;
        let (nobody_parcel, for_nobody) =
            carrier_delivers(&env, &carrier, "nobody@harbour.example", "1Z999AA10123456785").await;
        assert_eq!(for_ann, for_nobody, "the carrier's answers differ");
        assert!(for_ann[2].starts_with("deposited recipient=None notified_at=None"), "{for_ann:?}");

        // The truth, for those who may see it: Ann was told and holds a code; the other
        // parcel waits for the site's staff, and nobody was sent anything.
        let ann = row(&env, &ann_parcel).await;
        assert_eq!((ann.state, ann.recipient), (ParcelState::Notified, Some(env.ann.id.clone())));
        assert_eq!(messages(&env, &ann_parcel).await, 1);
        let held = row(&env, &nobody_parcel).await;
        assert_eq!((held.state, held.recipient.clone()), (ParcelState::Deposited, None));
        assert_eq!(messages(&env, &nobody_parcel).await, 0);
        let admin = Env::as_person(&env.admin);
        let (seen, _) = env.app.parcel_history(&admin, &nobody_parcel).await.unwrap();
        assert_eq!(seen, held, "staff see the parcel as it is");
        // The sweeper that retries notifications does not keep trying to tell nobody.
        assert_eq!(env.app.notify_pending().await.unwrap(), 0);
        let auditor = Env::as_person(&env.auditor);
        let listed = env.app.unaddressed_parcels(&auditor, &env.site, 50).await.unwrap();
        assert!(listed.iter().any(|p| p.id == nobody_parcel));
        assert!(!listed.iter().any(|p| p.id == ann_parcel));
    }
    // Residents and carriers do not read the staff's list.
    for outsider in [Env::as_person(&env.ann), env.carrier().await] {
        let err = env.app.unaddressed_parcels(&outsider, &env.site, 50).await.unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }
});

backends!(staff_name_the_resident_and_the_code_goes_out, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carrier = env.carrier().await;
    let (parcel, _) =
        carrier_delivers(&env, &carrier, "robert@harbour.example", "1Z999AA10123456786").await;
    let admin = Env::as_person(&env.admin);

    // Only the site's managers name a recipient, and only a resident of the site.
    for who in [carrier.clone(), Env::as_person(&env.bob), Env::as_person(&env.auditor)] {
        let refused = env.app.address_parcel(&who, &parcel, "bob@harbour.example").await;
        assert!(
            matches!(
                refused.as_ref().map_err(custody_app::AppError::code),
                Err("forbidden" | "not_found")
            ),
            "{refused:?}"
        );
    }
    let err = env.app.address_parcel(&admin, &parcel, "robert@harbour.example").await.unwrap_err();
    assert_eq!(err.code(), "unknown_recipient");
    let err = env.app.address_parcel(&admin, &parcel, "not an address").await.unwrap_err();
    assert_eq!(err.code(), "invalid_request");
    assert_eq!(messages(&env, &parcel).await, 0, "nothing sent on a refusal");

    let named = env.app.address_parcel(&admin, &parcel, "bob@harbour.example").await.unwrap();
    assert_eq!((named.state, named.recipient), (ParcelState::Notified, Some(env.bob.id.clone())));
    let code = env.code_sent_for(&parcel).await;
    assert!(matches!(
        env.app.redeem_code(&env.device, &code).await.unwrap(),
        PickupOutcome::Accepted { .. }
    ));
    assert!(env.app.unaddressed_parcels(&admin, &env.site, 50).await.unwrap().is_empty());
    let err = env.app.address_parcel(&admin, &parcel, "ann@harbour.example").await.unwrap_err();
    assert_eq!(err.code(), "parcel_addressed", "named once");
    let log = env.log().await;
    let named: Vec<_> =
        log.iter().filter(|r| r.event.action == AuditAction::ParcelAddress).collect();
    // The carrier's and the auditor's refusals and the naming; Bob, who may not even see the
    // parcel, is refused as `access.denied`.
    assert_eq!(named.len(), 3, "{named:?}");

    // A parcel already addressed to a resident is not renamed.
    let (ann_parcel, _) =
        carrier_delivers(&env, &carrier, "ann@harbour.example", "1Z999AA10123456787").await;
    let err = env.app.address_parcel(&admin, &ann_parcel, "bob@harbour.example").await.unwrap_err();
    assert_eq!(err.code(), "parcel_addressed");
});

backends!(a_parcel_nobody_is_named_for_leaves_like_any_other, |t: TestStore| async move {
    let env = Env::new(t).await;
    let carrier = env.carrier().await;
    let (to_desk, _) =
        carrier_delivers(&env, &carrier, "nobody@harbour.example", "1Z999AA10123456788").await;
    let (back, _) =
        carrier_delivers(&env, &carrier, "nobody@harbour.example", "1Z999AA10123456789").await;

    // Staff take one out for the front desk; their words are sealed (to the one who gave them,
    // as nobody else is named) and never kept in the clear.
    let admin = env.stepped_up(&env.admin);
    let taken = env.app.retrieve(&admin, &to_desk, "handed over at the front desk").await.unwrap();
    assert!(taken.opened().is_ok());
    let (_, history) = env.app.parcel_history(&admin, &to_desk).await.unwrap();
    let (entry, said) =
        history.iter().find(|(r, _)| r.event.action == AuditAction::Retrieve).unwrap();
    assert_eq!(entry.event.reason, None);
    assert_eq!(said, &Statement::Shown("handed over at the front desk".into()));

    // The other is left alone: it expires and goes back to its carrier.
    env.clock.advance(days(8));
    assert!(env.app.expire_due().await.unwrap() >= 1);
    assert_eq!(row(&env, &back).await.state, ParcelState::Expired);
    let err =
        env.app.address_parcel(&Env::as_person(&env.admin), &back, "ann@harbour.example").await;
    assert_eq!(err.unwrap_err().code(), "parcel_state");
    let (returned, _) = env.app.return_to_carrier(&carrier, &back).await.unwrap();
    assert_eq!(returned.state, ParcelState::Returned);
});

//! The store conformance suite: every test runs against SQLite and against PostgreSQL
//! (`<test>::sqlite`, `<test>::postgres`). One suite, two backends, the same expectations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use custody_core::alert::{AlertKind, AlertState, Severity};
use custody_core::audit::{Actor, AuditAction, AuditEvent, Outcome, Target};
use custody_core::compartment::{CompartmentNumber, CompartmentState, DoorState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::person::Role;
use custody_core::site::PickupWindow;
use custody_core::text::Name;
use custody_core::time::{days, minutes};
use custody_core::{
    AlertId, BankId, CarrierId, CodeId, CompartmentId, DeviceId, MessageId, OrgId, ParcelId,
    PersonId, SiteId, Timestamp, TokenId,
};
use custody_store::*;
use custody_testkit::{TEST_EPOCH, TestStore, backends};
use futures_util::FutureExt as _;
use sqlx::Connection as _;

const NOW: Timestamp = TEST_EPOCH;

fn rid<T>(f: fn([u8; 16]) -> T) -> T {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
    f(bytes)
}

#[derive(Clone)]
struct World {
    org: OrgId,
    site: SiteId,
    bank: BankId,
    carrier: CarrierId,
    recipient: PersonId,
}

async fn world(store: &Store) -> World {
    let w = World {
        org: rid(OrgId::from_random),
        site: rid(SiteId::from_random),
        bank: rid(BankId::from_random),
        carrier: rid(CarrierId::from_random),
        recipient: rid(PersonId::from_random),
    };
    let w2 = w.clone();
    store
        .write(move |tx| {
            async move {
                tx.insert_org(&OrgRow {
                    id: w2.org.clone(),
                    name: Name::parse("Acme Living").unwrap(),
                    created_at: NOW,
                })
                .await?;
                tx.insert_site(&SiteRow {
                    id: w2.site.clone(),
                    org: w2.org.clone(),
                    name: Name::parse("Harbour House").unwrap(),
                    time_zone: "Europe/Berlin".into(),
                    pickup_window: PickupWindow::DEFAULT,
                    created_at: NOW,
                })
                .await?;
                tx.insert_bank(&BankRow {
                    id: w2.bank.clone(),
                    site: w2.site.clone(),
                    name: Name::parse("Lobby").unwrap(),
                    created_at: NOW,
                })
                .await?;
                tx.insert_carrier(&CarrierRow {
                    id: w2.carrier.clone(),
                    org: w2.org.clone(),
                    name: Name::parse("Parcelco").unwrap(),
                    created_at: NOW,
                })
                .await?;
                tx.insert_person(&PersonRow {
                    id: w2.recipient.clone(),
                    org: w2.org.clone(),
                    // The store keeps what the application sealed; any bytes stand in here.
                    email_index: Some(w2.recipient.as_str().as_bytes().to_vec()),
                    details: PersonDetails::Sealed {
                        email: b"sealed address".to_vec(),
                        name: b"sealed name".to_vec(),
                    },
                    key: None,
                    role: Role::Resident,
                    site: Some(w2.site.clone()),
                    carrier: None,
                    password_hash: None,
                    disabled_at: None,
                    created_at: NOW,
                })
                .await?;
                Ok::<_, StoreError>(())
            }
            .boxed()
        })
        .await
        .unwrap();
    w
}

async fn add_compartment(
    store: &Store,
    bank: &BankId,
    number: u16,
    size: SizeClass,
    accessible: bool,
    refrigerated: bool,
) -> CompartmentId {
    let c = NewCompartment {
        id: rid(CompartmentId::from_random),
        bank: bank.clone(),
        number: CompartmentNumber::new(number).unwrap(),
        size,
        accessible,
        refrigerated,
    };
    let id = c.id.clone();
    store
        .write(move |tx| async move { tx.insert_compartment(&c, NOW).await }.boxed())
        .await
        .unwrap();
    id
}

async fn add_parcel(store: &Store, w: &World) -> ParcelId {
    let p = ParcelRow {
        id: rid(ParcelId::from_random),
        org: w.org.clone(),
        site: w.site.clone(),
        bank: None,
        compartment: None,
        carrier: w.carrier.clone(),
        recipient: Some(w.recipient.clone()),
        tracking_ref: Some(StoredText::Sealed(b"sealed tracking number".to_vec())),
        size: SizeClass::Small,
        needs_accessible: false,
        needs_refrigerated: false,
        state: ParcelState::Expected,
        created_at: NOW,
        deposited_at: None,
        notified_at: None,
        expires_at: None,
        closed_at: None,
        updated_at: NOW,
    };
    let id = p.id.clone();
    store.write(move |tx| async move { tx.insert_parcel(&p).await }.boxed()).await.unwrap();
    id
}

fn needs(size: SizeClass, accessible: bool, refrigerated: bool) -> CompartmentNeeds {
    CompartmentNeeds { size, accessible, refrigerated }
}

async fn reserve(
    store: &Store,
    bank: &BankId,
    n: CompartmentNeeds,
    parcel: &ParcelId,
) -> Option<CompartmentRow> {
    let (bank, parcel) = (bank.clone(), parcel.clone());
    store
        .write(move |tx| async move { tx.reserve_compartment(&bank, n, &parcel, NOW.plus(minutes(10)), NOW).await }.boxed())
        .await
        .unwrap()
}

backends!(physical_model_round_trips, |t: TestStore| async move {
    let w = world(&t.store).await;
    let c = add_compartment(&t.store, &w.bank, 12, SizeClass::Medium, true, false).await;
    let (site, bank, org) = (w.site.clone(), w.bank.clone(), w.org.clone());
    let (sites, banks, comps, one) = t
        .store
        .read(move |tx| {
            async move {
                Ok::<_, StoreError>((
                    tx.sites(&org).await?,
                    tx.banks(&site).await?,
                    tx.compartments(&bank).await?,
                    tx.compartment(&c).await?,
                ))
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].pickup_window, PickupWindow::DEFAULT);
    assert_eq!(banks[0].id, w.bank);
    assert_eq!(comps.len(), 1);
    let one = one.unwrap();
    assert_eq!(
        (one.number.get(), one.size, one.accessible, one.refrigerated),
        (12, SizeClass::Medium, true, false)
    );
    assert_eq!((one.state, one.door), (CompartmentState::Free, DoorState::Unknown));
});

backends!(uniqueness_is_a_conflict, |t: TestStore| async move {
    let w = world(&t.store).await;
    add_compartment(&t.store, &w.bank, 1, SizeClass::Small, false, false).await;
    let dup = NewCompartment {
        id: rid(CompartmentId::from_random),
        bank: w.bank.clone(),
        number: CompartmentNumber::new(1).unwrap(),
        size: SizeClass::Large,
        accessible: false,
        refrigerated: false,
    };
    let err = t
        .store
        .write(move |tx| async move { tx.insert_compartment(&dup, NOW).await }.boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let recipient = w.recipient.clone();
    let person = t
        .store
        .read(move |tx| async move { tx.person(&recipient).await }.boxed())
        .await
        .unwrap()
        .unwrap();
    let twin = PersonRow { id: rid(PersonId::from_random), ..person };
    let err = t
        .store
        .write(move |tx| async move { tx.insert_person(&twin).await }.boxed())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
});

backends!(reservation_picks_the_smallest_plain_fit, |t: TestStore| async move {
    let w = world(&t.store).await;
    add_compartment(&t.store, &w.bank, 1, SizeClass::Large, false, false).await;
    let accessible_medium =
        add_compartment(&t.store, &w.bank, 2, SizeClass::Medium, true, false).await;
    let plain_medium = add_compartment(&t.store, &w.bank, 3, SizeClass::Medium, false, false).await;
    let cold = add_compartment(&t.store, &w.bank, 4, SizeClass::ExtraLarge, false, true).await;
    let p1 = add_parcel(&t.store, &w).await;
    let got = reserve(&t.store, &w.bank, needs(SizeClass::Small, false, false), &p1).await.unwrap();
    assert_eq!(got.id, plain_medium, "smallest fit, keeping the accessible one free");
    assert_eq!(got.state, CompartmentState::Reserved);
    assert_eq!(got.parcel.as_ref(), Some(&p1));
    let p2 = add_parcel(&t.store, &w).await;
    assert_eq!(
        reserve(&t.store, &w.bank, needs(SizeClass::Small, true, false), &p2).await.unwrap().id,
        accessible_medium
    );
    let p3 = add_parcel(&t.store, &w).await;
    assert_eq!(
        reserve(&t.store, &w.bank, needs(SizeClass::Small, false, true), &p3).await.unwrap().id,
        cold
    );
    let p4 = add_parcel(&t.store, &w).await;
    assert!(
        reserve(&t.store, &w.bank, needs(SizeClass::ExtraLarge, false, false), &p4).await.is_none(),
        "nothing that large left"
    );
});

backends!(concurrent_reservations_never_share_a_compartment, |t: TestStore| async move {
    let w = world(&t.store).await;
    for n in 1..=5 {
        add_compartment(&t.store, &w.bank, n, SizeClass::Medium, false, false).await;
    }
    let mut parcels = Vec::new();
    for _ in 0..20 {
        parcels.push(add_parcel(&t.store, &w).await);
    }
    let store = Arc::new(t.store.clone());
    let tasks: Vec<_> = parcels
        .into_iter()
        .map(|p| {
            let (store, bank) = (store.clone(), w.bank.clone());
            tokio::spawn(async move {
                reserve(&store, &bank, needs(SizeClass::Small, false, false), &p)
                    .await
                    .map(|c| c.id)
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            won.push(id);
        }
    }
    assert_eq!(won.len(), 5, "five compartments, five winners");
    assert_eq!(won.iter().collect::<BTreeSet<_>>().len(), 5, "all distinct");
});

async fn issue_code(
    store: &Store,
    w: &World,
    number: u16,
    hash: &[u8],
    expires_at: Timestamp,
) -> ParcelId {
    let parcel = add_parcel(store, w).await;
    let comp = add_compartment(store, &w.bank, number, SizeClass::Small, false, false).await;
    let code = NewPickupCode {
        id: rid(CodeId::from_random),
        parcel: parcel.clone(),
        bank: w.bank.clone(),
        compartment: comp,
        code_hash: hash.to_vec(),
        offline_verifier: [hash, b"offline"].concat(),
        created_at: NOW,
        expires_at,
    };
    store.write(move |tx| async move { tx.insert_pickup_code(&code).await }.boxed()).await.unwrap();
    parcel
}

async fn redeem(
    store: &Store,
    bank: &BankId,
    hash: &[u8],
    at: Timestamp,
) -> Result<RedeemedCode, CodeRefusal> {
    let (bank, hash) = (bank.clone(), hash.to_vec());
    store
        .write(move |tx| async move { tx.redeem_pickup_code(&bank, &hash, at).await }.boxed())
        .await
        .unwrap()
        .map_err(|refused| refused.reason)
}

backends!(pickup_codes_are_single_use_and_expire, |t: TestStore| async move {
    let w = world(&t.store).await;
    let parcel = issue_code(&t.store, &w, 1, &[1; 32], NOW.plus(days(7))).await;
    assert_eq!(redeem(&t.store, &w.bank, &[1; 32], NOW).await.unwrap().parcel, parcel);
    assert_eq!(redeem(&t.store, &w.bank, &[1; 32], NOW).await, Err(CodeRefusal::Used));
    assert_eq!(redeem(&t.store, &w.bank, &[2; 32], NOW).await, Err(CodeRefusal::Unknown));
    issue_code(&t.store, &w, 2, &[3; 32], NOW.plus(days(7))).await;
    assert_eq!(
        redeem(&t.store, &w.bank, &[3; 32], NOW.plus(days(7))).await,
        Err(CodeRefusal::Expired),
        "expiry is exclusive"
    );
    let revoked = issue_code(&t.store, &w, 3, &[4; 32], NOW.plus(days(7))).await;
    let n = t
        .store
        .write(move |tx| async move { tx.revoke_pickup_codes(&revoked, NOW).await }.boxed())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(redeem(&t.store, &w.bank, &[4; 32], NOW).await, Err(CodeRefusal::Revoked));
    let other_bank = rid(BankId::from_random);
    issue_code(&t.store, &w, 4, &[5; 32], NOW.plus(days(7))).await;
    assert_eq!(
        redeem(&t.store, &other_bank, &[5; 32], NOW).await,
        Err(CodeRefusal::Unknown),
        "codes are bound to their bank"
    );
});

backends!(a_bank_s_offline_list_holds_the_codes_that_work, |t: TestStore| async move {
    let w = world(&t.store).await;
    issue_code(&t.store, &w, 1, &[1; 32], NOW.plus(days(7))).await;
    issue_code(&t.store, &w, 2, &[2; 32], NOW.plus(days(1))).await;
    let revoked = issue_code(&t.store, &w, 3, &[3; 32], NOW.plus(days(7))).await;
    redeem(&t.store, &w.bank, &[1; 32], NOW).await.unwrap();
    let bank = w.bank.clone();
    let listed = t
        .store
        .write(move |tx| {
            async move {
                tx.revoke_pickup_codes(&revoked, NOW).await?;
                tx.offline_codes(&bank, NOW).await
            }
            .boxed()
        })
        .await
        .unwrap();
    let got: Vec<_> = listed.iter().map(|c| (c.compartment.get(), c.verifier.clone())).collect();
    assert_eq!(got, vec![(2, [&[2u8; 32][..], b"offline"].concat())], "used and revoked left out");
    let bank = w.bank.clone();
    let later = t
        .store
        .read(move |tx| async move { tx.offline_codes(&bank, NOW.plus(days(1))).await }.boxed())
        .await
        .unwrap();
    assert!(later.is_empty(), "expired left out");
    let other = rid(BankId::from_random);
    let none = t
        .store
        .read(move |tx| async move { tx.offline_codes(&other, NOW).await }.boxed())
        .await
        .unwrap();
    assert!(none.is_empty(), "another bank's list is its own");
});

// Readings of one thing going on make one alert, even arriving at once; once it is resolved,
// the next reading raises a new one. Its timeline keeps its order.
backends!(readings_of_one_thing_make_one_live_alert, |t: TestStore| async move {
    let w = world(&t.store).await;
    let pry = |n: u8| NewAlert {
        id: AlertId::from_random([n; 16]),
        org: w.org.clone(),
        site: w.site.clone(),
        bank: Some(w.bank.clone()),
        compartment: Some(3),
        kind: AlertKind::Pry,
        severity: Severity::Critical,
    };
    let raised: Vec<(AlertId, bool)> = futures_util::future::join_all((1..=4).map(|n| {
        let alert = pry(n);
        t.store.write(move |tx| async move { tx.raise_alert(&alert, NOW).await }.boxed())
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(raised.iter().filter(|(_, new)| *new).count(), 1, "{raised:?}");
    let id = raised[0].0.clone();
    assert!(raised.iter().all(|(a, _)| *a == id), "one alert");
    let (first, site) = (id.clone(), w.site.clone());
    let (alert, live) = t
        .store
        .write(move |tx| {
            async move {
                tx.add_alert_event(&first, NOW, "dev_x", "raised", None).await?;
                tx.add_alert_event(&first, NOW, "per_x", "note", Some("on my way")).await?;
                assert!(
                    !tx.move_alert(
                        &first,
                        AlertState::Acknowledged,
                        AlertState::Resolved,
                        None,
                        NOW
                    )
                    .await?
                );
                assert!(
                    tx.move_alert(&first, AlertState::Open, AlertState::Resolved, None, NOW)
                        .await?
                );
                Ok::<_, StoreError>((
                    tx.alert(&first).await?,
                    tx.alerts_of_site(&site, true, 10).await?,
                ))
            }
            .boxed()
        })
        .await
        .unwrap();
    let alert = alert.unwrap();
    assert_eq!(
        (alert.state, alert.readings, alert.kind),
        (AlertState::Resolved, 4, AlertKind::Pry)
    );
    assert_eq!(alert.compartment, Some(3));
    assert!(live.is_empty(), "resolved is not live");
    let again = pry(9);
    let (second, new) = t
        .store
        .write(move |tx| async move { tx.raise_alert(&again, NOW).await }.boxed())
        .await
        .unwrap();
    assert!(new && second != id, "a new alert once the last was resolved");
    let (first, site) = (id.clone(), w.site.clone());
    let (events, all) = t
        .store
        .read(move |tx| {
            async move {
                Ok::<_, StoreError>((
                    tx.alert_events(&first).await?,
                    tx.alerts_of_site(&site, false, 10).await?,
                ))
            }
            .boxed()
        })
        .await
        .unwrap();
    let timeline: Vec<(u64, &str, Option<&str>)> =
        events.iter().map(|e| (e.seq, e.what.as_str(), e.note.as_deref())).collect();
    assert_eq!(timeline, [(1, "raised", None), (2, "note", Some("on my way"))]);
    assert_eq!(all.len(), 2);
    // Units adding to one alert's timeline at once (an admin's answer while the fan-out
    // records a delivery) each get the next number; none fails on another's.
    let added = futures_util::future::join_all((0..8).map(|_| {
        let alert = id.clone();
        t.store.write(move |tx| {
            async move { tx.add_alert_event(&alert, NOW, "per_x", "note", None).await }.boxed()
        })
    }))
    .await;
    assert!(added.iter().all(Result::is_ok), "{added:?}");
    let first = id.clone();
    let events =
        t.store.read(move |tx| async move { tx.alert_events(&first).await }.boxed()).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
});

backends!(an_offline_use_is_recorded_once, |t: TestStore| async move {
    let w = world(&t.store).await;
    let device = DeviceRow {
        id: rid(DeviceId::from_random),
        bank: w.bank.clone(),
        cert_serial: "01".into(),
        spki_sha256: vec![7; 32],
        enrolled_at: NOW,
        cert_expires_at: NOW.plus(days(30)),
        revoked_at: None,
        last_seen_at: None,
    };
    let id = device.id.clone();
    let results = t
        .store
        .write(move |tx| {
            async move {
                tx.insert_device(&device).await?;
                Ok::<_, StoreError>([
                    tx.record_offline_use(&id, "5-1000", NOW).await?,
                    tx.record_offline_use(&id, "5-1000", NOW).await?,
                    tx.record_offline_use(&id, "6-1000", NOW).await?,
                ])
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(results, [true, false, true]);
});

backends!(fifty_concurrent_redemptions_yield_exactly_one, |t: TestStore| async move {
    let w = world(&t.store).await;
    issue_code(&t.store, &w, 5, &[9; 32], NOW.plus(days(7))).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, bank) = (t.store.clone(), w.bank.clone());
            tokio::spawn(async move { redeem(&store, &bank, &[9; 32], NOW).await })
        })
        .collect();
    let mut wins = 0;
    let mut used = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(CodeRefusal::Used) => used += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((wins, used), (1, 49));
});

backends!(parcel_moves_are_conditional, |t: TestStore| async move {
    let w = world(&t.store).await;
    let p = add_parcel(&t.store, &w).await;
    let p2 = p.clone();
    let (moved, again) = t
        .store
        .write(move |tx| {
            async move {
                let a = tx
                    .move_parcel(
                        &p2,
                        ParcelState::Expected,
                        ParcelState::Deposited,
                        NOW,
                        Some(NOW.plus(days(7))),
                    )
                    .await?;
                let b = tx
                    .move_parcel(&p2, ParcelState::Expected, ParcelState::Deposited, NOW, None)
                    .await?;
                Ok::<_, StoreError>((a, b))
            }
            .boxed()
        })
        .await
        .unwrap();
    assert!(moved && !again);
    let row =
        t.store.read(move |tx| async move { tx.parcel(&p).await }.boxed()).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.deposited_at, row.expires_at),
        (ParcelState::Deposited, Some(NOW), Some(NOW.plus(days(7))))
    );
});

fn event(action: AuditAction, parcel: Option<ParcelId>) -> AuditEvent {
    AuditEvent {
        at: NOW,
        actor: Actor::system(),
        action,
        target: Target { parcel, ..Target::default() },
        outcome: Outcome::Success,
        reason: None,
        personal: None,
    }
}

backends!(a_failing_unit_rolls_back_alone, |t: TestStore| async move {
    let w = world(&t.store).await;
    let parcels: Vec<ParcelId> =
        futures_util::future::join_all((0..10).map(|_| add_parcel(&t.store, &w))).await;
    // Ten concurrent units, each appends an audit entry and moves its parcel; the odd ones then
    // fail. On SQLite they share commits; each failure must undo only its own unit.
    let tasks: Vec<_> = parcels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (store, p) = (t.store.clone(), p.clone());
            tokio::spawn(async move {
                store
                    .write(move |tx| {
                        async move {
                            tx.append_audit(&event(AuditAction::Deposit, Some(p.clone())))?;
                            tx.move_parcel(
                                &p,
                                ParcelState::Expected,
                                ParcelState::Deposited,
                                NOW,
                                Some(NOW),
                            )
                            .await?;
                            if i % 2 == 1 { Err(StoreError::Conflict) } else { Ok(()) }
                        }
                        .boxed()
                    })
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().is_ok(), i % 2 == 0);
    }
    for (i, p) in parcels.into_iter().enumerate() {
        let (row, audit) = t
            .store
            .read(move |tx| {
                async move {
                    Ok::<_, StoreError>((
                        tx.parcel(&p).await?.unwrap(),
                        tx.audit_for_parcel(&p).await?,
                    ))
                }
                .boxed()
            })
            .await
            .unwrap();
        let kept = i % 2 == 0;
        assert_eq!(row.state == ParcelState::Deposited, kept, "parcel {i}");
        assert_eq!(audit.len(), usize::from(kept), "audit of parcel {i}");
    }
});

backends!(audit_log_is_a_merkle_tree_and_append_only, |t: TestStore| async move {
    t.store
        .write(|tx| {
            async move {
                tx.append_audit(&event(AuditAction::OrgCreate, None))?;
                tx.append_audit(&event(AuditAction::SiteCreate, None))?;
                Ok::<_, StoreError>(())
            }
            .boxed()
        })
        .await
        .unwrap();
    let entries =
        t.store.read(|tx| async move { tx.audit_from(0, 10).await }.boxed()).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.seq, e.event.action)).collect::<Vec<_>>(),
        vec![(0, AuditAction::OrgCreate), (1, AuditAction::SiteCreate)]
    );
    let (leaves, head) = t
        .store
        .read(|tx| {
            async move {
                    Ok::<_, StoreError>((tx.audit_leaves(0, 10).await?, tx.tree_head().await?))
                }
                .boxed()
        })
        .await
        .unwrap();
    let hashes = check_leaves(&leaves);
    assert_eq!((head.size(), head.root()), (2, custody_audit::merkle::root_of(&hashes)));
    // Someone with direct database access still cannot rewrite history quietly.
    let mut conn = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    for sql in [
        "UPDATE audit_entries SET outcome = 'failure'",
        "DELETE FROM audit_entries",
        "DELETE FROM audit_nodes",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
});

/// Checks each stored entry: it sits at its own position and its fields, encoded, hash to its
/// stored leaf hash. Returns the leaf hashes.
fn check_leaves(leaves: &[StoredEntry]) -> Vec<custody_audit::merkle::Hash> {
    leaves
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let entry = l.entry();
            assert_eq!(
                (entry.index, l.row.seq),
                (u64::try_from(i).unwrap(), i64::try_from(i).unwrap())
            );
            assert_eq!(entry.action, l.row.event.action.as_str());
            assert_eq!(entry.at_ms, l.row.event.at.as_millis());
            let leaf = custody_audit::merkle::leaf_hash(&entry.encode());
            assert_eq!(leaf.as_slice(), l.leaf_hash.as_slice());
            leaf
        })
        .collect()
}

backends!(concurrent_appends_stay_dense_and_consistent, |t: TestStore| async move {
    let tasks: Vec<_> = (0..40u64)
        .map(|i| {
            let store = t.store.clone();
            tokio::spawn(async move {
                store
                    .write(move |tx| {
                        async move {
                            for _ in 0..=(i % 3) {
                                tx.append_audit(&event(AuditAction::DoorReport, None))?;
                            }
                            if i % 5 == 4 { Err(StoreError::Conflict) } else { Ok(()) }
                        }
                        .boxed()
                    })
                    .await
            })
        })
        .collect();
    let mut expected = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        if task.await.unwrap().is_ok() {
            expected += i % 3 + 1;
        }
    }
    let (leaves, head, level1) = t
        .store
        .read(|tx| {
            async move {
                Ok::<_, StoreError>((
                    tx.audit_leaves(0, 1000).await?,
                    tx.tree_head().await?,
                    tx.audit_nodes(1, 0, 1000).await?,
                ))
            }
            .boxed()
        })
        .await
        .unwrap();
    assert_eq!(leaves.len(), expected, "failed units left no entries");
    let hashes = check_leaves(&leaves);
    assert_eq!(head.size(), u64::try_from(expected).unwrap());
    assert_eq!(head.root(), custody_audit::merkle::root_of(&hashes));
    for (idx, hash) in level1 {
        let i = usize::try_from(idx).unwrap() * 2;
        assert_eq!(
            hash.as_slice(),
            custody_audit::merkle::node_hash(&hashes[i], &hashes[i + 1]).as_slice(),
            "node (1, {idx})"
        );
    }
});

backends!(throttle_counting_is_atomic, |t: TestStore| async move {
    let window = NOW;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = t.store.clone();
            tokio::spawn(async move {
                store
                    .write(move |tx| async move { tx.add_failure("kiosk:x", window).await }.boxed())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u32>>(), "every attempt saw a distinct count");
    t.store
        .write(move |tx| async move { tx.refund_failure("kiosk:x", window).await }.boxed())
        .await
        .unwrap();
    let n = t
        .store
        .read(move |tx| async move { tx.failures("kiosk:x", window).await }.boxed())
        .await
        .unwrap();
    assert_eq!(n, 49);
    let other = t
        .store
        .read(move |tx| {
            async move { tx.failures("kiosk:x", window.plus(minutes(5))).await }.boxed()
        })
        .await
        .unwrap();
    assert_eq!(other, 0, "a new window starts from zero");
});

backends!(outbox_leases_and_wipes, |t: TestStore| async move {
    let id = rid(MessageId::from_random);
    let id2 = id.clone();
    t.store
        .write(move |tx| {
            async move { tx.enqueue_message(&id2, "email", None, b"sealed", NOW).await }.boxed()
        })
        .await
        .unwrap();
    let lease = |at: Timestamp| {
        let store = t.store.clone();
        async move {
            store
                .write(move |tx| {
                    async move { tx.lease_due_messages(at, at.plus(minutes(1)), 10).await }.boxed()
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(lease(NOW).await.len(), 1);
    assert!(lease(NOW).await.is_empty(), "leased messages are not handed out twice");
    let again = lease(NOW.plus(minutes(2))).await;
    assert_eq!(again.len(), 1, "a lapsed lease makes the message due again");
    let id3 = id.clone();
    t.store
        .write(move |tx| {
            async move {
                tx.message_failed(&id3, "connection refused", Some(NOW.plus(minutes(5))), NOW).await
            }
            .boxed()
        })
        .await
        .unwrap();
    assert!(lease(NOW.plus(minutes(3))).await.is_empty(), "not before its retry time");
    assert_eq!(lease(NOW.plus(minutes(5))).await.len(), 1);
    let id4 = id.clone();
    t.store
        .write(move |tx| async move { tx.message_delivered(&id4, NOW).await }.boxed())
        .await
        .unwrap();
    let row = t
        .store
        .read(move |tx| async move { tx.message(&id).await }.boxed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.sealed, row.delivered_at, row.attempts), (None, Some(NOW), 2));
    assert!(lease(NOW.plus(days(1))).await.is_empty());
});

backends!(enrolment_tokens_work_once, |t: TestStore| async move {
    let w = world(&t.store).await;
    let token = NewEnrolmentToken {
        id: rid(TokenId::from_random),
        bank: w.bank.clone(),
        token_hash: vec![7; 32],
        created_at: NOW,
        expires_at: NOW.plus(minutes(30)),
    };
    t.store
        .write(move |tx| async move { tx.insert_enrolment_token(&token).await }.boxed())
        .await
        .unwrap();
    let consume = |at: Timestamp| {
        let store = t.store.clone();
        async move {
            store
                .write(move |tx| {
                    async move { tx.consume_enrolment_token(&[7; 32], at).await }.boxed()
                })
                .await
                .unwrap()
        }
    };
    let results = futures_util::future::join_all((0..10).map(|_| consume(NOW))).await;
    assert_eq!(results.iter().filter(|r| r.as_ref() == Some(&w.bank)).count(), 1);
    let late = NewEnrolmentToken {
        id: rid(TokenId::from_random),
        bank: w.bank.clone(),
        token_hash: vec![8; 32],
        created_at: NOW,
        expires_at: NOW.plus(minutes(30)),
    };
    t.store
        .write(move |tx| async move { tx.insert_enrolment_token(&late).await }.boxed())
        .await
        .unwrap();
    let expired = t
        .store
        .write(|tx| {
            async move { tx.consume_enrolment_token(&[8; 32], NOW.plus(minutes(30))).await }.boxed()
        })
        .await
        .unwrap();
    assert_eq!(expired, None);
});

backends!(reads_cannot_write, |t: TestStore| async move {
    let err =
        t.store.read(|tx| async move { tx.add_failure("k", NOW).await }.boxed()).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
});

backends!(reopening_keeps_data_and_schema, |t: TestStore| async move {
    let w = world(&t.store).await;
    let again = Store::open(&t.url).await.unwrap();
    let org = w.org.clone();
    let got =
        again.read(move |tx| async move { tx.org(&org).await }.boxed()).await.unwrap().unwrap();
    assert_eq!(got.id, w.org);
});

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_durable_commits() {
    let t = custody_testkit::sqlite_store().await;
    let mut conn = sqlx::AnyConnection::connect(&t.url).await.unwrap();
    let row = sqlx::query("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(sqlx::Row::get::<String, _>(&row, 0).to_lowercase(), "wal");
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(matches!(Store::open("mysql://localhost/x").await, Err(StoreError::UnsupportedUrl)));
}

/// `custody bench audit` holds appends against inserting the log's own rows with none of the
/// store's work; that is only a fair limit if what it inserts is exactly what the log stores.
#[tokio::test]
async fn the_raw_limit_inserts_exactly_the_rows_the_log_stores() {
    let t = custody_testkit::sqlite_store().await;
    for unit in 0..40_u32 {
        t.store
            .write(move |tx| {
                async move {
                    for _ in 0..=(unit % 4) {
                        tx.append_audit(&event(AuditAction::DoorReport, None))?;
                    }
                    Ok::<_, StoreError>(())
                }
                .boxed()
            })
            .await
            .unwrap();
    }
    let size = t.store.read(|tx| async move { tx.tree_head().await }.boxed()).await.unwrap().size();
    let copied = 77;
    assert!(size > copied);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.db");
    bench::raw_log_inserts(&t.store, copied, &raw).await.unwrap();

    let dump = |url: String, upto: u64| async move {
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let rows = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
        let entries = rows(format!(
            "SELECT quote(seq) || quote(at) || quote(actor_kind) || quote(actor_id) || quote(action) \
             || quote(site_id) || quote(bank_id) || quote(compartment_id) || quote(parcel_id) \
             || quote(outcome) || quote(reason) || quote(sealed_subject) || quote(sealed) \
             || quote(evidence) || quote(leaf_hash) AS r FROM audit_entries WHERE seq < {upto} ORDER BY seq"
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let nodes = rows(format!(
            "SELECT quote(level) || quote(idx) || quote(hash) AS r FROM audit_nodes \
             WHERE ((idx + 1) << level) <= {upto} ORDER BY level, idx"
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let text = |rows: Vec<sqlx::any::AnyRow>| -> Vec<String> {
            rows.iter().map(|r| sqlx::Row::get::<String, _>(r, "r")).collect()
        };
        (text(entries), text(nodes))
    };
    let (log_entries, log_nodes) = dump(t.url.clone(), copied).await;
    let (raw_entries, raw_nodes) =
        dump(format!("sqlite://{}?mode=ro", raw.display()), u64::MAX >> 2).await;
    assert_eq!(raw_entries.len() as u64, copied);
    assert_eq!(raw_entries, log_entries);
    assert!(!raw_nodes.is_empty());
    assert_eq!(raw_nodes, log_nodes);
}

/// Migration 4 on both backends (the `backends!` macro opens a store, which would migrate
/// past the version these tests start from).
mod entries_stored_once {
    use super::*;
    use custody_audit::entry::Entry;
    use custody_audit::merkle::{Frontier, leaf_hash};
    use custody_core::audit::SealedText;
    use custody_testkit::TestDatabase;

    /// A log of `n` entries written as schema version 3 stored it (canonical bytes beside
    /// copies of the fields), the last one with `last_evidence` evidence hashes. Returns the
    /// entries.
    async fn version_3_log(url: &str, n: u64, last_evidence: usize) -> Vec<Entry> {
        migrate_to(url, 3).await.unwrap();
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        let (mut frontier, mut entries) = (Frontier::new(), Vec::new());
        for index in 0..n {
            let mut e = event(AuditAction::Deposit, Some(rid(ParcelId::from_random)));
            e.reason = (index % 2 == 0).then(|| "code_expired".to_owned());
            e.personal = (index % 3 == 0).then(|| SealedText {
                subject: rid(PersonId::from_random),
                ciphertext: vec![u8::try_from(index).unwrap(); 40],
            });
            let mut entry = entry_of(index, &e);
            if index + 1 == n {
                entry.evidence = vec![[7; 32]; last_evidence];
            }
            let bytes = entry.encode();
            let leaf = leaf_hash(&bytes);
            sqlx::query(
                "INSERT INTO audit_entries (seq, at, actor_kind, actor_id, action, site_id, \
                 bank_id, compartment_id, parcel_id, outcome, reason, entry, leaf_hash, \
                 sealed_subject, sealed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(i64::try_from(index).unwrap())
            .bind(entry.at_ms)
            .bind(entry.actor_kind.clone())
            .bind(entry.actor_id.clone())
            .bind(entry.action.clone())
            .bind(entry.site.clone())
            .bind(entry.bank.clone())
            .bind(entry.compartment.clone())
            .bind(entry.parcel.clone())
            .bind(entry.outcome.clone())
            .bind(entry.reason.clone())
            .bind(bytes)
            .bind(leaf.to_vec())
            .bind(entry.sealed.as_ref().map(|s| s.subject.clone()))
            .bind(entry.sealed.as_ref().map(|s| s.ciphertext.clone()))
            .execute(&mut conn)
            .await
            .unwrap();
            for (level, idx, hash) in frontier.push(leaf) {
                if level > 0 {
                    sqlx::query("INSERT INTO audit_nodes (level, idx, hash) VALUES ($1, $2, $3)")
                        .bind(i64::from(level))
                        .bind(i64::try_from(idx).unwrap())
                        .bind(hash.to_vec())
                        .execute(&mut conn)
                        .await
                        .unwrap();
                }
            }
            entries.push(entry);
        }
        sqlx::query("UPDATE audit_tree SET size = $1, peaks = $2 WHERE id = 1")
            .bind(i64::try_from(n).unwrap())
            .bind(frontier.peaks().concat())
            .execute(&mut conn)
            .await
            .unwrap();
        entries
    }

    async fn an_older_log_is_carried_over_whole(db: TestDatabase) {
        let written = version_3_log(&db.url, 13, 0).await;
        let t = db.open().await;
        let stored =
            t.store.read(|tx| async move { tx.audit_leaves(0, 100).await }.boxed()).await.unwrap();
        // Each entry, rebuilt from its row, is byte for byte what version 3 stored.
        assert_eq!(stored.iter().map(StoredEntry::entry).collect::<Vec<_>>(), written);
        let hashes = check_leaves(&stored);
        // The log goes on growing from where it was.
        t.store
            .write(|tx| async move { tx.append_audit(&event(AuditAction::Deposit, None)) }.boxed())
            .await
            .unwrap();
        let (stored, head) = t
            .store
            .read(|tx| {
                async move {
                    Ok::<_, StoreError>((tx.audit_leaves(0, 100).await?, tx.tree_head().await?))
                }
                .boxed()
            })
            .await
            .unwrap();
        assert_eq!(check_leaves(&stored)[..13], hashes[..]);
        assert_eq!(head.size(), 14);
        assert_eq!(head.root(), custody_audit::merkle::root_of(&check_leaves(&stored)));
    }

    async fn a_log_with_evidence_stops_the_migration_unchanged(db: TestDatabase) {
        let written = version_3_log(&db.url, 5, 2).await;
        let err = Store::open(&db.url).await.unwrap_err();
        assert!(matches!(err, StoreError::Migration { version: 4, .. }), "{err:?}");
        // Still version 3, every byte where it was.
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        let version: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(version, 3);
        let bytes: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT entry FROM audit_entries ORDER BY seq")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(bytes, written.iter().map(Entry::encode).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        an_older_log_is_carried_over_whole(custody_testkit::sqlite_database()).await;
        a_log_with_evidence_stops_the_migration_unchanged(custody_testkit::sqlite_database()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let name = "entries_stored_once::postgres";
        let Some(db) = custody_testkit::postgres_database(name).await else { return };
        an_older_log_is_carried_over_whole(db).await;
        let Some(db) = custody_testkit::postgres_database(name).await else { return };
        a_log_with_evidence_stops_the_migration_unchanged(db).await;
    }
}

backends!(an_entry_too_large_to_read_back_fails_its_own_unit, |t: TestStore| async move {
    let huge = AuditEvent {
        reason: Some("x".repeat(custody_audit::entry::MAX_ENTRY_BYTES)),
        ..event(AuditAction::Deposit, None)
    };
    let (ok, refused) = tokio::join!(
        t.store
            .write(|tx| async move { tx.append_audit(&event(AuditAction::Deposit, None)) }.boxed()),
        t.store.write(move |tx| async move { tx.append_audit(&huge) }.boxed()),
    );
    ok.unwrap();
    assert!(matches!(refused, Err(StoreError::Refused(_))), "{refused:?}");
    let stored =
        t.store.read(|tx| async move { tx.audit_leaves(0, 10).await }.boxed()).await.unwrap();
    assert_eq!(stored.len(), 1);
    check_leaves(&stored);
});

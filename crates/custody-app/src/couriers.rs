//! Couriers at the kiosk. A courier signs in to the app and fetches today's code: twelve
//! digits derived from the courier and the UTC day under a key of the server's, so it changes
//! every day by itself and nobody without the key can work one out. At the kiosk the courier
//! types it to see the parcels they may deposit there (their carrier's, announced for that
//! site) and the returns waiting (their carrier's expired parcels in that bank), and again
//! with each deposit, confirmation or return. Each of those runs the same use case, under the
//! same access policy, as the courier's own signed-in request: a courier code opens nothing
//! the courier could not open anyway, and never a resident's parcel. A courier may hold their
//! badge to the reader instead of typing the code, if the reader has OSDP Secure Channel
//! (`badges`).
//!
//! A typed code spends the kiosk's and the bank's budgets, the ones pickup codes spend, so
//! every code guessed at a kiosk counts against one limit; a code that works gives its
//! attempt back. Only the code's keyed hash is stored. A code stops working at the end of its
//! day, and at once when its courier is disabled or is a courier no more.

use crate::conflicts::ConflictCode;
use crate::parcels::Parcel;
use crate::people::Person;
use custody_core::audit::{AuditAction, AuditEvent, Outcome, Target};
use custody_core::code::courier_digits;
use custody_core::compartment::{CompartmentState, SizeClass};
use custody_core::parcel::ParcelState;
use custody_core::person::Role;
use custody_core::policy::Principal;
use custody_core::{ParcelId, PersonId, Timestamp};
use custody_store::PersonRow;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

use crate::parcels::{Deposit, Opening};
use crate::throttle::Budgets;
use crate::{App, AppError, Caller};

/// Today's code of a courier.
#[derive(Clone)]
pub struct CourierCode {
    /// The code, in groups of four digits.
    pub code: Zeroizing<String>,
    /// When it stops working (the end of its UTC day).
    pub valid_until: Timestamp,
}

impl std::fmt::Debug for CourierCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CourierCode")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// What a courier finds at a kiosk.
#[derive(Debug, Clone)]
pub struct CourierVisit {
    /// The courier.
    pub courier: Person,
    /// Their carrier's parcels announced for this site, waiting to be deposited.
    pub deposits: Vec<Parcel>,
    /// Their carrier's expired parcels in this bank, waiting to be taken back.
    pub returns: Vec<Parcel>,
    /// Free compartments of the bank by size, smallest first; sizes with none are left out.
    pub free: Vec<(SizeClass, u32)>,
}

/// How a courier says who they are at the kiosk.
#[derive(Debug, Clone, Copy)]
pub enum CourierAt<'a> {
    /// Today's code, as typed.
    Code(&'a str),
    /// Their badge: its number, in hexadecimal, and the kind of reader that read it.
    Badge {
        /// The number.
        number: &'a str,
        /// The reader (`osdp_secure`, …).
        reader: &'a str,
    },
}

impl<'a> From<&'a str> for CourierAt<'a> {
    fn from(code: &'a str) -> Self {
        Self::Code(code)
    }
}

impl<'a> From<&'a String> for CourierAt<'a> {
    fn from(code: &'a String) -> Self {
        Self::Code(code)
    }
}

impl<'a> From<&'a Zeroizing<String>> for CourierAt<'a> {
    fn from(code: &'a Zeroizing<String>) -> Self {
        Self::Code(code)
    }
}

impl App {
    /// A courier's code on UTC day `day` (days since the epoch), in groups of four digits.
    pub(crate) fn courier_code_on(&self, person: &PersonId, day: i64) -> Zeroizing<String> {
        let mac = self.keys().courier_codes.hash(&[
            b"code",
            person.as_str().as_bytes(),
            &day.to_be_bytes(),
        ]);
        let mut first = [0u8; 8];
        first.copy_from_slice(mac.get(..8).unwrap_or(&[0; 8]));
        // 2^64 is 1.8e7 times 10^12: the remainder is uniform to within one part in 1e7.
        let n = u64::from_be_bytes(first) % 10u64.pow(12);
        let digits = format!("{n:012}");
        Zeroizing::new(format!(
            "{} {} {}",
            digits.get(..4).unwrap_or_default(),
            digits.get(4..8).unwrap_or_default(),
            digits.get(8..).unwrap_or_default()
        ))
    }

    fn courier_code_hash(&self, digits: &str) -> [u8; 32] {
        self.keys().courier_codes.hash(&[b"lookup", digits.as_bytes()])
    }

    /// Today's kiosk code of the signed-in courier, valid until the end of the UTC day.
    pub async fn courier_code(&self, caller: &Caller) -> Result<CourierCode, AppError> {
        let Caller::Principal(Principal::Person { id, standing, .. }) = caller else {
            return Err(AppError::Forbidden);
        };
        if standing.role != Role::Courier {
            return Err(AppError::conflict(
                ConflictCode::NotACourier,
                "only couriers have kiosk codes",
            ));
        }
        let now = self.now();
        let day = now.utc_day();
        let valid_until = Timestamp::utc_day_start(day + 1);
        let code = self.courier_code_on(id, day);
        let hash = self.courier_code_hash(&code.replace(' ', ""));
        let person = id.clone();
        let holder = self
            .store()
            .write(move |tx| {
                async move {
                    tx.keep_courier_code(&hash, &person, now, valid_until).await?;
                    Ok::<_, AppError>(tx.courier_by_code(&hash, now).await?)
                }
                .boxed()
            })
            .await?;
        if holder.as_ref() != Some(id) {
            // Another courier drew the same twelve digits today (about one day in two million
            // with a thousand couriers): theirs stands, this one would open their work.
            return Err(AppError::conflict(
                ConflictCode::CourierCodeUnavailable,
                "no code can be given today; ask an admin to deposit for you",
            ));
        }
        Ok(CourierCode { code, valid_until })
    }

    /// The courier whose code was typed, or badge read, at the calling device's kiosk, as a
    /// caller of their own; `None` (audited) when the code or badge is malformed, unknown,
    /// lapsed or throttled, a badge was read by a reader without Secure Channel, or the courier
    /// is disabled, no longer a courier or out of this site's scope.
    async fn courier_at_kiosk(
        &self,
        device: &Caller,
        who: CourierAt<'_>,
    ) -> Result<Option<(PersonRow, Caller)>, AppError> {
        let Caller::Principal(Principal::Device { device: id, bank, site, org }) = device else {
            return Err(AppError::Forbidden);
        };
        let now = self.now();
        let budgets = Budgets::kiosk(id, bank);
        let target =
            Target { site: Some(site.clone()), bank: Some(bank.clone()), ..Target::default() };
        let attempt = |outcome, reason: &str| {
            AuditEvent::ended(
                outcome,
                now,
                device.actor(),
                AuditAction::CourierCode,
                target.clone(),
            )
            .because(reason)
        };
        let method = match who {
            CourierAt::Code(_) => "code",
            CourierAt::Badge { .. } => "badge",
        };
        self.spend_or_throttle(&budgets, attempt(Outcome::Denied, method)).await?;
        let (holder, unknown, known) = match who {
            CourierAt::Code(typed) => {
                let holder = match courier_digits(typed).map(|d| self.courier_code_hash(&d)) {
                    Some(hash) => {
                        self.store()
                            .read(move |tx| {
                                async move { tx.courier_by_code(&hash, now).await }.boxed()
                            })
                            .await?
                    }
                    None => None,
                };
                (holder, "bad_code", "courier")
            }
            CourierAt::Badge { number, reader } => {
                match self.courier_by_badge(site, number, reader).await? {
                    Ok(person) => (Some(person), "badge_unknown", "courier_badge"),
                    Err(reason) => (None, reason, "courier_badge"),
                }
            }
        };
        let found = match holder {
            Some(id) => {
                self.store().read(move |tx| async move { tx.person(&id).await }.boxed()).await?
            }
            None => None,
        };
        let courier = found.filter(|p| {
            p.disabled_at.is_none()
                && p.role == Role::Courier
                && p.carrier.is_some()
                && crate::people::standing_of(p).scope.covers(org, site)
        });
        let Some(courier) = courier else {
            let failed = attempt(Outcome::Failure, unknown);
            self.store().write(move |tx| async move { tx.append_audit(&failed) }.boxed()).await?;
            return Ok(None);
        };
        let mut known = attempt(Outcome::Success, known);
        known.actor = custody_core::audit::Actor {
            kind: custody_core::audit::ActorKind::Person,
            id: Some(courier.id.to_string()),
        };
        self.store()
            .write(move |tx| {
                async move {
                    budgets.refund(tx, now).await?;
                    tx.append_audit(&known)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        let caller = Caller::Principal(crate::people::principal_of_row(&courier, None));
        Ok(Some((courier, caller)))
    }

    /// A courier's code typed at the kiosk: what they may deposit here and take back.
    pub async fn courier_visit<'a>(
        &self,
        device: &Caller,
        who: impl Into<CourierAt<'a>>,
    ) -> Result<Option<CourierVisit>, AppError> {
        let Some((courier, _)) = self.courier_at_kiosk(device, who.into()).await? else {
            return Ok(None);
        };
        let Caller::Principal(Principal::Device { bank, site, .. }) = device else {
            return Err(AppError::Forbidden);
        };
        let Some(carrier) = courier.carrier.clone() else { return Ok(None) };
        let parcels = self
            .store()
            .read(move |tx| async move { tx.parcels_for_carrier(&carrier, 500).await }.boxed())
            .await?;
        let deposits = self.parcel_views(
            parcels
                .iter()
                .filter(|p| &p.site == site && p.state == ParcelState::Expected && p.bank.is_none())
                .cloned()
                .collect(),
        )?;
        let returns = self.parcel_views(
            parcels
                .into_iter()
                .filter(|p| p.bank.as_ref() == Some(bank) && p.state == ParcelState::Expired)
                .collect(),
        )?;
        let mut free = std::collections::BTreeMap::<SizeClass, u32>::new();
        for c in self.bank_overview(bank).await? {
            if c.state == CompartmentState::Free {
                *free.entry(c.size).or_default() += 1;
            }
        }
        let free = free.into_iter().collect();
        let courier = self.person_view(&courier)?;
        Ok(Some(CourierVisit { courier, deposits, returns, free }))
    }

    /// A courier deposits `parcel` at the kiosk's bank: as their own deposit, under its rules,
    /// in a compartment of at least `size` if they chose a larger one at the kiosk.
    pub async fn courier_deposit<'a>(
        &self,
        device: &Caller,
        who: impl Into<CourierAt<'a>>,
        parcel: &ParcelId,
        size: Option<SizeClass>,
    ) -> Result<Option<Deposit>, AppError> {
        let Caller::Principal(Principal::Device { bank, .. }) = device else {
            return Err(AppError::Forbidden);
        };
        let Some((_, courier)) = self.courier_at_kiosk(device, who.into()).await? else {
            return Ok(None);
        };
        self.start_deposit_sized(&courier, parcel, bank, size).await.map(Some)
    }

    /// A courier confirms a deposit at the kiosk (the door is shut on the parcel); the
    /// recipient is notified at once.
    pub async fn courier_confirm<'a>(
        &self,
        device: &Caller,
        who: impl Into<CourierAt<'a>>,
        parcel: &ParcelId,
    ) -> Result<Option<Parcel>, AppError> {
        let Some((_, courier)) = self.courier_at_kiosk(device, who.into()).await? else {
            return Ok(None);
        };
        self.confirm_and_notify(&courier, parcel).await.map(Some)
    }

    /// A courier takes one of their carrier's expired parcels back at the kiosk.
    pub async fn courier_return<'a>(
        &self,
        device: &Caller,
        who: impl Into<CourierAt<'a>>,
        parcel: &ParcelId,
    ) -> Result<Option<(Parcel, Opening)>, AppError> {
        let Some((_, courier)) = self.courier_at_kiosk(device, who.into()).await? else {
            return Ok(None);
        };
        let p = self.return_to_carrier(&courier, parcel).await?;
        Ok(Some(p))
    }
}

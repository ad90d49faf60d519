//! Opening while the server is unreachable: the bank's list of code verifiers and
//! couriers' codes as last synced, each use journaled first and reported until acknowledged,
//! and a small daily budget for wrong codes.

use std::collections::BTreeMap;

use super::credentials::TokenRefusal;
use super::screen::Screen;
use super::{Action, AgentCore, CONFIRM_WITHIN_MS, OFFLINE_NONCE, SAVE_EVERY_MS};
use crate::journal::{Entry, OfflineDeposit};
use custody_core::Timestamp;
use custody_core::code::{PickupEntry, courier_digits};
use custody_core::compartment::{CompartmentNumber, SizeClass};
use custody_core::throttle::OFFLINE_PICKUP_DAY;
use custody_core::token::PickupToken;
use custody_crypto::secret::{constant_time_eq, offline_code_verifier, offline_courier_verifier};
use custody_proto::device::{
    CourierAction, CourierCredential, DoorReading, FreeCompartments, OfflineCompartment,
    OfflineCourier, OfflineList, OfflineParcel, OfflineUse, OfflineWhat,
};
use data_encoding::BASE64;

/// The bank's codes as last synced: its offline key, the verifiers, what couriers may
/// deposit, and until when they may be trusted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeldCodes {
    pub(super) key: [u8; 32],
    pub(super) valid_until_ms: i64,
    pub(super) codes: Vec<HeldCode>,
    pub(super) couriers: Vec<HeldCourier>,
    pub(super) expected: Vec<OfflineParcel>,
    pub(super) free: Vec<OfflineCompartment>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeldCourier {
    pub(super) id: String,
    pub(super) carrier: String,
    pub(super) day: i64,
    pub(super) verifier: [u8; 32],
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeldCode {
    pub(super) id: String,
    pub(super) compartment: u16,
    pub(super) verifier: [u8; 32],
    pub(super) expires_at_ms: i64,
}

impl HeldCodes {
    /// The list as synced; `None` for one that cannot be read (fail closed: nothing opens
    /// offline).
    fn take(list: &OfflineList) -> Option<Self> {
        let decode32 =
            |s: &str| -> Option<[u8; 32]> { BASE64.decode(s.as_bytes()).ok()?.try_into().ok() };
        let codes = list
            .codes
            .iter()
            .map(|c| {
                Some(HeldCode {
                    id: c.id.clone(),
                    compartment: c.compartment,
                    verifier: decode32(&c.verifier)?,
                    expires_at_ms: c.expires_at_ms,
                })
            })
            .collect::<Option<_>>()?;
        let couriers = list
            .couriers
            .iter()
            .map(|c: &OfflineCourier| {
                Some(HeldCourier {
                    id: c.courier.clone(),
                    carrier: c.carrier.clone(),
                    day: c.day,
                    verifier: decode32(&c.verifier)?,
                })
            })
            .collect::<Option<_>>()?;
        Some(Self {
            key: decode32(&list.key)?,
            valid_until_ms: list.valid_until_ms,
            codes,
            couriers,
            expected: list.expected.clone(),
            free: list.free.clone(),
        })
    }
}

/// Where an offline use falls in the order they happened: by time, then by journal counter
/// (its id begins with it).
pub(super) fn use_order(used: &OfflineUse) -> (i64, u64) {
    let counter = used.id.split('-').next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (used.at_ms, counter)
}

impl AgentCore {
    /// Takes up the list saved before a restart ([`Action::Save`]), so the kiosk still checks
    /// codes if the server is unreachable when it starts. Its deadline holds as it was.
    #[must_use]
    pub fn saved_list(mut self, list: &OfflineList) -> Self {
        self.offline = HeldCodes::take(list);
        self.saved_until_ms = list.valid_until_ms;
        self
    }

    /// How many codes the kiosk can check offline now, or `None` without a list it may trust.
    pub fn offline_codes(&self, now: Timestamp) -> Option<usize> {
        self.held(now).map(|h| h.codes.len())
    }

    /// The list of codes, while it may be trusted: synced, and its deadline not passed.
    pub(super) fn held(&self, now: Timestamp) -> Option<&HeldCodes> {
        self.offline.as_ref().filter(|h| now.as_millis() < h.valid_until_ms)
    }

    /// Whether the offline budget for wrong codes has room at `now`.
    pub(super) fn offline_budget_left(&self, now: Timestamp) -> bool {
        let start = OFFLINE_PICKUP_DAY.window_start(now).as_millis();
        let end = OFFLINE_PICKUP_DAY.window_end(now).as_millis();
        let spent = self.refusals.iter().filter(|at| (start..end).contains(*at)).count();
        OFFLINE_PICKUP_DAY.allows(u32::try_from(spent).unwrap_or(u32::MAX))
    }

    /// A code typed while the server is unreachable: checked against the list as last synced.
    pub(super) fn offline_code(&mut self, now: Timestamp, typed: &str) -> Vec<Action> {
        if self.interlocked() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let Some(held) = self.held(now) else { return vec![Action::Show(Screen::Offline)] };
        if !self.offline_budget_left(now) {
            return vec![Action::Show(Screen::CodesPaused)];
        }
        // Codes of the first format (no locker number) are checked by the server only.
        let found = match PickupEntry::parse(typed) {
            Ok(PickupEntry::Current { locker, code }) => {
                let verifier =
                    offline_code_verifier(&held.key, locker.get(), code.expose().as_bytes());
                held.codes
                    .iter()
                    .find(|c| {
                        c.compartment == locker.get() && constant_time_eq(&c.verifier, &verifier)
                    })
                    .map(|c| (c.id.clone(), c.compartment, c.expires_at_ms))
            }
            _ => None,
        };
        match found {
            Some((id, n, expires)) if self.may_open_offline(now, &id, expires) => {
                self.open_offline(now, id, n, "code")
            }
            _ => self.refuse_offline(now, "code"),
        }
    }

    /// A scanned token while the server is unreachable: checked as ever, and its code must be
    /// in the list as last synced (so a code revoked since does not open).
    pub(super) fn offline_token(
        &mut self,
        now: Timestamp,
        checked: Result<PickupToken, TokenRefusal>,
    ) -> Vec<Action> {
        // Locked down, no list, or the budget spent: refused without a record (a token cannot
        // be guessed, so such a refusal is not worth one). A genuine token with no list to
        // check it against waits for the server, as a typed code does.
        let held = self.held(now);
        let Some(held) = held.filter(|_| !self.interlocked() && self.offline_budget_left(now))
        else {
            let wait = checked.is_ok() && held.is_none() && !self.interlocked();
            return vec![Action::Show(if wait { Screen::Offline } else { Screen::NotAccepted })];
        };
        let found = checked.ok().and_then(|token| {
            held.codes
                .iter()
                .find(|c| c.id == token.code.as_str() && c.compartment == token.compartment.get())
                .map(|c| (c.id.clone(), c.compartment, c.expires_at_ms))
        });
        match found {
            Some((id, n, expires)) if self.may_open_offline(now, &id, expires) => {
                self.open_offline(now, id, n, "qr")
            }
            _ => self.refuse_offline(now, "qr"),
        }
    }

    /// Whether a held code may open its compartment offline now: not expired, and not spent
    /// here already. (Its compartment is the server's word, as the welcome's list is, and
    /// holds after a restart that has had no welcome yet.)
    pub(super) fn may_open_offline(&self, now: Timestamp, id: &str, expires: i64) -> bool {
        now.as_millis() < expires && !self.spent.contains(id)
    }

    /// Opens a compartment for a code from the list: the use is journaled first (it is what
    /// the server is told on reconnect), the code is spent here, then the door is released.
    pub(super) fn open_offline(
        &mut self,
        now: Timestamp,
        code: String,
        n: u16,
        method: &str,
    ) -> Vec<Action> {
        let Ok(compartment) = CompartmentNumber::new(n) else {
            return self.refuse_offline(now, method);
        };
        self.spent.insert(code.clone());
        let what = OfflineWhat::Opened { code, compartment: n, method: method.to_owned() };
        let (record, id) = self.offline_use(now, what);
        self.unlocked_at.insert(n, now.as_millis());
        vec![
            record,
            Action::Unlock { compartment, nonce: format!("{OFFLINE_NONCE}{id}") },
            Action::Show(Screen::Open(n)),
        ]
    }

    /// Refuses a credential offline: journaled and reported like an open, and it spends the
    /// offline budget.
    pub(super) fn refuse_offline(&mut self, now: Timestamp, method: &str) -> Vec<Action> {
        self.refusals.push(now.as_millis());
        let (record, _) = self.offline_use(now, OfflineWhat::Refused { method: method.to_owned() });
        vec![record, Action::Show(Screen::NotAccepted)]
    }

    /// Journals an offline use under an id no other use of this agent has (the record's counter
    /// and time: a journal started afresh counts from 1 again, at another time), and keeps it
    /// until the server acknowledges it.
    pub(super) fn offline_use(&mut self, now: Timestamp, what: OfflineWhat) -> (Action, String) {
        let id = format!("{}-{}", self.counter + 1, now.as_millis());
        let used = OfflineUse { id: id.clone(), at_ms: now.as_millis(), what };
        self.pending.insert(id.clone(), used.clone());
        (self.record(now, Entry::Offline { used }), id)
    }

    /// A courier at the kiosk while the server is unreachable: their code is checked against
    /// the list's verifiers of today's courier codes, then what they chose is done from the
    /// list. A badge, or taking a parcel back, needs the server.
    pub(super) fn offline_courier(
        &mut self,
        now: Timestamp,
        credential: &CourierCredential,
        action: CourierAction,
    ) -> Vec<Action> {
        if self.interlocked() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let CourierCredential::Code { code } = credential else {
            return vec![Action::Show(Screen::Offline)];
        };
        let Some(held) = self.held(now) else { return vec![Action::Show(Screen::Offline)] };
        if !self.offline_budget_left(now) {
            return vec![Action::Show(Screen::CodesPaused)];
        }
        let day = now.utc_day();
        let verifier = courier_digits(code)
            .and_then(|digits| offline_courier_verifier(&held.key, day, digits.as_bytes()).ok());
        let found = verifier.and_then(|v| {
            held.couriers
                .iter()
                .find(|c| c.day == day && constant_time_eq(&c.verifier, &v))
                .map(|c| (c.id.clone(), c.carrier.clone()))
        });
        let Some((courier, carrier)) = found else {
            return self.refuse_offline(now, "courier");
        };
        match action {
            CourierAction::Visit => vec![Action::Show(Screen::CourierWork {
                deposits: self.to_deposit(&carrier).map(|p| p.parcel.clone()).collect(),
                returns: Vec::new(),
                free: self.free_by_size(),
            })],
            CourierAction::Deposit { parcel, size } => {
                self.deposit_offline(now, &courier, &carrier, &parcel, size.as_deref())
            }
            CourierAction::Confirm { parcel } => self.confirm_offline(now, &courier, &parcel),
            CourierAction::Return { .. } => vec![Action::Show(Screen::Offline)],
        }
    }

    /// The carrier's parcels announced for the site and not deposited here offline.
    pub(super) fn to_deposit<'a>(
        &'a self,
        carrier: &'a str,
    ) -> impl Iterator<Item = &'a OfflineParcel> {
        let expected = self.offline.as_ref().map_or(&[][..], |h| &h.expected[..]);
        expected
            .iter()
            .filter(move |p| p.carrier == carrier && !self.deposits.contains_key(&p.parcel.id))
    }

    /// The free compartments as last synced, less those deposits went into offline.
    pub(super) fn free(&self) -> impl Iterator<Item = &OfflineCompartment> {
        let free = self.offline.as_ref().map_or(&[][..], |h| &h.free[..]);
        free.iter().filter(|c| !self.deposits.values().any(|d| d.compartment == c.compartment))
    }

    /// How many compartments of each size are free, smallest first; sizes with none left out.
    pub(super) fn free_by_size(&self) -> Vec<FreeCompartments> {
        let mut by_size = BTreeMap::<SizeClass, u32>::new();
        for c in self.free() {
            if let Some(size) = SizeClass::parse(&c.size) {
                *by_size.entry(size).or_default() += 1;
            }
        }
        by_size
            .into_iter()
            .map(|(size, count)| FreeCompartments { size: size.as_str().to_owned(), count })
            .collect()
    }

    /// A courier deposits `parcel` offline: the smallest free compartment that fits it (or the
    /// larger size they chose, and its other needs) opens, journaled first.
    pub(super) fn deposit_offline(
        &mut self,
        now: Timestamp,
        courier: &str,
        carrier: &str,
        parcel: &str,
        size: Option<&str>,
    ) -> Vec<Action> {
        let Some(p) = self.to_deposit(carrier).find(|p| p.parcel.id == parcel) else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let Some(announced) = SizeClass::parse(&p.parcel.size) else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let fits = size.and_then(SizeClass::parse).map_or(announced, |s| s.max(announced));
        let (accessible, refrigerated) = (p.accessible, p.refrigerated);
        // As the server chooses: the smallest that fits, then the fewest features, then the
        // lowest number.
        let chosen = self
            .free()
            .filter_map(|c| {
                Some((SizeClass::parse(&c.size)?, c.accessible, c.refrigerated, c.compartment))
            })
            .filter(|(s, a, r, _)| *s >= fits && (*a || !accessible) && (*r || !refrigerated))
            .min()
            .and_then(|(.., n)| CompartmentNumber::new(n).ok());
        let Some(compartment) = chosen else {
            return vec![Action::Show(Screen::NotAccepted)];
        };
        let n = compartment.get();
        let what = OfflineWhat::Deposited {
            courier: courier.to_owned(),
            parcel: parcel.to_owned(),
            compartment: n,
        };
        let (record, id) = self.offline_use(now, what);
        self.deposits.insert(
            parcel.to_owned(),
            OfflineDeposit {
                courier: courier.to_owned(),
                compartment: n,
                at_ms: now.as_millis(),
                confirmed: false,
                uses: vec![id.clone()],
            },
        );
        self.unlocked_at.insert(n, now.as_millis());
        vec![
            record,
            Action::Unlock { compartment, nonce: format!("{OFFLINE_NONCE}{id}") },
            Action::Show(Screen::Open(n)),
        ]
    }

    /// A courier confirms offline that a parcel they deposited here offline is in: only once,
    /// in time, and with its door's last reading shut (as the server requires online).
    pub(super) fn confirm_offline(
        &mut self,
        now: Timestamp,
        courier: &str,
        parcel: &str,
    ) -> Vec<Action> {
        let open = self.deposits.get(parcel).filter(|d| {
            d.courier == courier
                && !d.confirmed
                && now.as_millis() < d.at_ms + CONFIRM_WITHIN_MS
                && self.doors.get(&d.compartment) == Some(&DoorReading::Closed)
        });
        if open.is_none() {
            return vec![Action::Show(Screen::NotAccepted)];
        }
        let what =
            OfflineWhat::Confirmed { courier: courier.to_owned(), parcel: parcel.to_owned() };
        let (record, id) = self.offline_use(now, what);
        if let Some(d) = self.deposits.get_mut(parcel) {
            d.confirmed = true;
            d.uses.push(id);
        }
        vec![record, Action::Show(Screen::Thanks)]
    }

    /// Takes the server's list of codes (once welcomed): kept on disk when its codes change,
    /// and hourly for its deadline.
    pub(super) fn take_list(&mut self, now: Timestamp, list: OfflineList) -> Vec<Action> {
        if !self.welcomed {
            return Vec::new();
        }
        let held = HeldCodes::take(&list);
        // A deposit the server has taken in shows in this list (its compartment no longer
        // free, its parcel no longer expected), unless it is still to be confirmed here.
        let pending = &self.pending;
        self.deposits.retain(|_, d| {
            let settled = d.uses.iter().all(|id| !pending.contains_key(id));
            let done = d.confirmed || now.as_millis() >= d.at_ms + CONFIRM_WITHIN_MS;
            !(settled && done)
        });
        // Saved when the codes change, and hourly for the deadline: a restart while
        // the server is unreachable finds a list at most an hour shorter.
        let same = |h: &HeldCodes, o: &HeldCodes| {
            h.key == o.key
                && h.codes == o.codes
                && h.couriers == o.couriers
                && h.expected == o.expected
                && h.free == o.free
        };
        let changed = match (&held, &self.offline) {
            (Some(new), Some(old)) => !same(new, old),
            (new, _) => new.is_some(),
        };
        self.offline = held;
        let due = list.valid_until_ms.saturating_sub(self.saved_until_ms) >= SAVE_EVERY_MS;
        if self.offline.is_some() && (changed || due) {
            self.saved_until_ms = list.valid_until_ms;
            return vec![Action::Save(Some(list))];
        }
        Vec::new()
    }
}

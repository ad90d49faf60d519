//! Each site's retention of personal data (GDPR Art. 5(1)(e)), and the sweep that enforces
//! it: closed parcels lose their tracking number and recipient, lapsed sessions and old
//! delivery records are deleted. The audit log is kept whole; its words about people are
//! sealed under their own keys, which erasure destroys.

use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
use custody_core::policy;
use custody_core::site::Retention;
use custody_core::{SiteId, Timestamp};
use custody_store::Tx;
use futures_util::FutureExt as _;

use crate::{App, AppError, Caller};

/// Rows one unit of the sweep works through, per kind.
const BATCH: i64 = 500;
/// Units one sweep runs per kind at most, so a backlog (the first sweep after an upgrade, a
/// retention shortened) is worked off over several sweeps without holding the writer.
const UNITS_PER_SWEEP: u32 = 20;

/// What one sweep dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Closed parcels whose tracking number and recipient were dropped.
    pub parcels: u64,
    /// Sessions deleted.
    pub sessions: u64,
    /// Records of delivered or abandoned messages deleted.
    pub messages: u64,
    /// Records of delivered or abandoned alert notifications deleted.
    pub alert_deliveries: u64,
}

impl Swept {
    /// Whether anything was dropped.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl App {
    /// `site`'s retention (its own, or the defaults). Staff and auditors in scope; out of scope
    /// the site does not exist.
    pub async fn retention(&self, caller: &Caller, site: &SiteId) -> Result<Retention, AppError> {
        let place = self.site(site).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &place.org, &place.id))?;
        let site = site.clone();
        let own =
            self.store().read(move |tx| async move { tx.retention(&site).await }.boxed()).await?;
        Ok(own.unwrap_or_default())
    }

    /// Sets `site`'s retention. Admins in scope, stepped up; audited with the days.
    pub async fn set_retention(
        &self,
        caller: &Caller,
        site: &SiteId,
        retention: Retention,
    ) -> Result<Retention, AppError> {
        let place = self.site(site).await?;
        caller.unless_hidden(|p| policy::may_view_site(p, &place.org, &place.id))?;
        let retention = retention.checked().map_err(AppError::invalid)?;
        let target = Target { site: Some(place.id.clone()), ..Target::default() };
        self.authorize(caller, AuditAction::SiteRetention, &target, |p| {
            policy::may_manage_site(p, &place.org, &place.id).and_then(|()| self.stepped_up(p))
        })
        .await?;
        let event =
            AuditEvent::success(self.now(), caller.actor(), AuditAction::SiteRetention, target)
                .because(format!(
                    "parcels:{};sessions:{};deliveries:{};evidence:{}",
                    retention.parcel_days,
                    retention.session_days,
                    retention.delivery_days,
                    retention.evidence_days
                ));
        let (now, site) = (self.now(), site.clone());
        self.store()
            .write(move |tx| {
                async move {
                    tx.put_retention(&site, &retention, now).await?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(retention)
    }

    /// One pass of the retention sweep: each kind in units of [`BATCH`] rows, oldest first,
    /// up to [`UNITS_PER_SWEEP`] units each. One audit entry counts what went, when anything
    /// did.
    pub async fn apply_retention(&self) -> Result<Swept, AppError> {
        let mut swept = Swept::default();
        for kind in Kind::ALL {
            for _ in 0..UNITS_PER_SWEEP {
                let now = self.now();
                let n = self
                    .store()
                    .write(move |tx| async move { kind.unit(tx, now).await }.boxed())
                    .await?;
                *swept.count_of(kind) += n;
                if n < BATCH.unsigned_abs() {
                    break;
                }
            }
        }
        if !swept.is_empty() {
            let event = AuditEvent::success(
                self.now(),
                Actor::system(),
                AuditAction::RetentionApply,
                Target::default(),
            )
            .because(format!(
                "parcels:{};sessions:{};messages:{};alert_deliveries:{}",
                swept.parcels, swept.sessions, swept.messages, swept.alert_deliveries
            ));
            self.store()
                .write(move |tx| {
                    async move { tx.append_audit(&event).map_err(AppError::from) }.boxed()
                })
                .await?;
        }
        Ok(swept)
    }
}

/// What the sweep works through.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Parcels,
    Sessions,
    Messages,
    AlertDeliveries,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Parcels, Self::Sessions, Self::Messages, Self::AlertDeliveries];

    /// One unit: up to [`BATCH`] rows of this kind past their site's retention at `now`.
    async fn unit(self, tx: &mut Tx, now: Timestamp) -> Result<u64, AppError> {
        let default = Retention::DEFAULT;
        Ok(match self {
            Self::Parcels => tx.anonymise_closed_parcels(now, &default, BATCH).await?,
            Self::Sessions => tx.delete_lapsed_sessions(now, &default, BATCH).await?,
            Self::Messages => tx.delete_old_messages(now, &default, BATCH).await?,
            Self::AlertDeliveries => tx.delete_old_alert_deliveries(now, &default, BATCH).await?,
        })
    }
}

impl Swept {
    fn count_of(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::Parcels => &mut self.parcels,
            Kind::Sessions => &mut self.sessions,
            Kind::Messages => &mut self.messages,
            Kind::AlertDeliveries => &mut self.alert_deliveries,
        }
    }
}

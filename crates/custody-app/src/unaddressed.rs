//! Parcels announced for an address that matches no resident of the site.
//!
//! A carrier's key announces parcels by e-mail address. Refusing an unknown address would tell
//! any carrier who lives where, so the address is accepted all the same: the parcel is recorded
//! with no recipient, deposited like any other, and nobody is sent a code. It waits on the
//! site's list of unaddressed parcels, where staff name the resident (who is then sent a code)
//! or take it out for the front desk with a reason; left alone it expires and goes back to its
//! carrier like any parcel nobody collected. What a carrier sees of any parcel (the answers,
//! the states, the chain of custody) is the same whether or not a resident was found
//! (`sight`).

use crate::conflicts::ConflictCode;
use crate::parcels::Parcel;
use custody_core::audit::AuditAction;
use custody_core::parcel::ParcelState;
use custody_core::policy;
use custody_core::text::Email;
use custody_core::{ParcelId, SiteId};
use futures_util::FutureExt as _;

use crate::parcels::{event, lives_at, parcel_target};
use crate::{App, AppError, Caller};

impl App {
    /// A site's parcels that nobody is named for yet and that are still in its care, oldest
    /// first: for its staff and auditors.
    pub async fn unaddressed_parcels(
        &self,
        caller: &Caller,
        site: &SiteId,
        limit: u32,
    ) -> Result<Vec<Parcel>, AppError> {
        let s = self.viewable_site(caller, site).await?;
        let limit = limit.clamp(1, 500);
        self.parcel_views(
            self.store()
                .read(move |tx| async move { tx.unaddressed_parcels(&s.id, limit).await }.boxed())
                .await?,
        )
    }

    /// Staff name the resident a parcel with no recipient is for, by their e-mail address. A
    /// parcel already in its compartment is then notified at once, as a deposit would be (the
    /// sweeper retries a notification that cannot be queued now).
    pub async fn address_parcel(
        &self,
        caller: &Caller,
        parcel: &ParcelId,
        email: &str,
    ) -> Result<Parcel, AppError> {
        let index = self.email_index(&Email::parse(email).map_err(AppError::invalid)?);
        let p = self.parcel_row(caller, parcel).await?;
        self.authorize(caller, AuditAction::ParcelAddress, &parcel_target(&p), |pr| {
            policy::may_manage_site(pr, &p.org, &p.site)
        })
        .await?;
        let site = self.site(&p.site).await?;
        let (now, actor) = (self.now(), caller.actor());
        let addressed = self
            .store()
            .write(move |tx| {
                async move {
                    let p = tx.parcel(&p.id).await?.ok_or(AppError::NotFound)?;
                    if p.recipient.is_some() {
                        return Err(AppError::conflict(
                            ConflictCode::ParcelAddressed,
                            "the parcel already has a recipient",
                        ));
                    }
                    if !matches!(p.state, ParcelState::Expected | ParcelState::Deposited) {
                        return Err(AppError::conflict(
                            ConflictCode::ParcelState,
                            format!(
                                "the parcel is {}: only one announced or in its compartment \
                                 can be given a recipient",
                                p.state
                            ),
                        ));
                    }
                    let person = tx
                        .person_by_email_index(&index)
                        .await?
                        .filter(|person| lives_at(person, &site))
                        .ok_or_else(|| {
                            AppError::conflict(
                                ConflictCode::UnknownRecipient,
                                "no resident of this site has that e-mail address; add them \
                                 first, or take the parcel out for the front desk",
                            )
                        })?;
                    if !tx.address_parcel(&p.id, &person.id, now).await? {
                        return Err(AppError::conflict(
                            ConflictCode::ParcelAddressed,
                            "the parcel already has a recipient",
                        ));
                    }
                    let target = parcel_target(&p);
                    tx.append_audit(&event(&actor, AuditAction::ParcelAddress, target, now, None))?;
                    tx.parcel(&p.id).await?.ok_or(AppError::NotFound)
                }
                .boxed()
            })
            .await?;
        if addressed.state != ParcelState::Deposited {
            return self.parcel_view(addressed);
        }
        match self.notify(&addressed.id).await {
            Ok(p) => Ok(p),
            Err(e) => {
                tracing::warn!(parcel = %addressed.id, error = %e, "notification deferred");
                self.parcel_view(addressed)
            }
        }
    }
}

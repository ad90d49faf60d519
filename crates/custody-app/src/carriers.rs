//! Carriers: the organisations that deliver, with their couriers (`couriers`) and API keys
//! (`api_keys`).

use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::policy::{self};
use custody_core::text::Name;
use custody_core::{CarrierId, OrgId};
use custody_store::{CarrierRow, StoreError};
use futures_util::FutureExt as _;

use custody_core::Timestamp;

view! {
    /// A carrier.
    Carrier from CarrierRow {
        /// Id.
        id: CarrierId,
        /// Organisation that accepts it.
        org: OrgId,
        /// Display name.
        name: Name,
        /// Created.
        created_at: Timestamp,
    }
}

impl App {
    /// Registers a carrier with an organisation.
    pub async fn create_carrier(
        &self,
        caller: &Caller,
        org: &OrgId,
        name: &str,
    ) -> Result<Carrier, AppError> {
        self.authorize(caller, AuditAction::CarrierCreate, &Target::default(), |p| {
            policy::may_manage_org(p, org)
        })
        .await?;
        let carrier = CarrierRow {
            id: self.new_id(CarrierId::from_random)?,
            org: org.clone(),
            name: Name::parse(name).map_err(AppError::invalid)?,
            created_at: self.now(),
        };
        let event = AuditEvent::success(
            carrier.created_at,
            caller.actor(),
            AuditAction::CarrierCreate,
            Target::default(),
        );
        let row = carrier.clone();
        self.store()
            .write(move |tx| {
                async move {
                    tx.org(&row.org).await?.ok_or(AppError::NotFound)?;
                    tx.insert_carrier(&row).await.map_err(|e| match e {
                        StoreError::Conflict => AppError::conflict(
                            ConflictCode::CarrierExists,
                            "a carrier of that name exists",
                        ),
                        other => other.into(),
                    })?;
                    tx.append_audit(&event)?;
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await?;
        Ok(carrier.into())
    }
}

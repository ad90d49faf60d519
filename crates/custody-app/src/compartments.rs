//! A bank's compartments: adding them, and reading them for agents and pages.

use crate::conflicts::ConflictCode;
use crate::{App, AppError, Caller};
use custody_core::audit::{AuditAction, AuditEvent, Target};
use custody_core::compartment::{CompartmentNumber, SizeClass};
use custody_core::policy::{self};
use custody_core::{BankId, CompartmentId};
use custody_store::{CompartmentRow, NewCompartment, StoreError};
use futures_util::FutureExt as _;

use custody_core::compartment::{CompartmentState, DoorState};
use custody_core::{ParcelId, Timestamp};

view! {
    /// A compartment and its current state.
    Compartment from CompartmentRow {
        /// Id.
        id: CompartmentId,
        /// Bank.
        bank: BankId,
        /// Number on the door.
        number: CompartmentNumber,
        /// Size class.
        size: SizeClass,
        /// At accessible height.
        accessible: bool,
        /// Refrigerated.
        refrigerated: bool,
        /// Occupancy.
        state: CompartmentState,
        /// Last sensed door state.
        door: DoorState,
        /// The parcel it is reserved for or holds.
        parcel: Option<ParcelId>,
        /// End of the current reservation.
        reserved_until: Option<Timestamp>,
        /// Last change.
        updated_at: Timestamp,
    }
}

/// A new compartment's details.
#[derive(Debug, Clone, Copy)]
pub struct CompartmentSpec {
    /// Number on the door.
    pub number: u16,
    /// Size class.
    pub size: SizeClass,
    /// At accessible height.
    pub accessible: bool,
    /// Refrigerated.
    pub refrigerated: bool,
}

impl App {
    /// Adds compartments to a bank, all or none.
    pub async fn add_compartments(
        &self,
        caller: &Caller,
        bank: &BankId,
        specs: &[CompartmentSpec],
    ) -> Result<Vec<Compartment>, AppError> {
        let (bank_row, site_row) = self.bank_and_site(bank).await?;
        let target = Target {
            site: Some(site_row.id.clone()),
            bank: Some(bank.clone()),
            ..Target::default()
        };
        self.authorize(caller, AuditAction::CompartmentCreate, &target, |p| {
            policy::may_manage_site(p, &site_row.org, &site_row.id)
        })
        .await?;
        let mut new = Vec::with_capacity(specs.len());
        for spec in specs {
            new.push(NewCompartment {
                id: self.new_id(CompartmentId::from_random)?,
                bank: bank_row.id.clone(),
                number: CompartmentNumber::new(spec.number).map_err(AppError::invalid)?,
                size: spec.size,
                accessible: spec.accessible,
                refrigerated: spec.refrigerated,
            });
        }
        let (now, actor) = (self.now(), caller.actor());
        let bank = bank.clone();
        self.store()
            .write(move |tx| {
                async move {
                    let mut rows = Vec::with_capacity(new.len());
                    for c in &new {
                        tx.insert_compartment(c, now).await.map_err(|e| match e {
                            StoreError::Conflict => AppError::conflict(
                                ConflictCode::CompartmentExists,
                                format!("compartment {} already exists in this bank", c.number),
                            ),
                            other => other.into(),
                        })?;
                        tx.append_audit(&AuditEvent::success(
                            now,
                            actor.clone(),
                            AuditAction::CompartmentCreate,
                            Target { compartment: Some(c.id.clone()), ..target.clone() },
                        ))?;
                    }
                    for row in tx.compartments(&bank).await? {
                        if new.iter().any(|c| c.id == row.id) {
                            rows.push(row);
                        }
                    }
                    Ok::<_, AppError>(rows)
                }
                .boxed()
            })
            .await
            .map(crate::views)
    }

    /// The compartment numbers of a bank (for its agent).
    pub async fn bank_compartment_numbers(&self, bank: &BankId) -> Result<Vec<u16>, AppError> {
        let bank = bank.clone();
        let rows = self
            .store()
            .read(move |tx| async move { tx.compartments(&bank).await }.boxed())
            .await?;
        Ok(rows.iter().map(|c| c.number.get()).collect())
    }

    /// A bank's compartments (for pages that show compartment numbers).
    pub async fn bank_overview(&self, bank: &BankId) -> Result<Vec<Compartment>, AppError> {
        let bank = bank.clone();
        Ok(crate::views(
            self.store()
                .read(move |tx| async move { tx.compartments(&bank).await }.boxed())
                .await?,
        ))
    }
}

//! Forensic export of an incident (`docs/design/0007-incidents.md`): one file an investigator
//! can take away and check offline with `custody audit verify FILE --key KEY`.
//!
//! The bundle is an audit export (the signed checkpoint first, then entries with inclusion
//! proofs) with one more line, the incident: the alert and its timeline, each event naming the
//! entry that records it. The entries are those that name the alert, and the rest of what
//! happened at its bank (or its site, for an alert about the whole site) from a quarter of an
//! hour before its first event to a quarter of an hour after its last: the doors, the codes,
//! the commands around it. The timeline's words (notes, reasons) stay on the server, as they
//! may name people; the entries carry them sealed, as every export does.

use custody_audit::export::{Incident, IncidentEvent, Line, rfc3339};
use custody_core::AlertId;
use custody_core::time::minutes;
use custody_store::AuditFilter;

use crate::audit::{ExportSummary, export_io};
use crate::{App, AppError, Caller};

/// How long before an incident's first event, and after its last, its place's entries belong
/// in its bundle.
const MARGIN: std::time::Duration = minutes(15);

/// At most this many entries in one bundle: an incident, not the site's whole history.
const MOST_ENTRIES: usize = 20_000;

impl App {
    /// Exports alert `id` as an incident's bundle, for someone who may see its site, with a
    /// fresh step-up and a reason (recorded as `audit.export`, reason `incident:<id>`, their
    /// words sealed to them). `write` receives the lines in order.
    pub async fn export_incident(
        &self,
        caller: &Caller,
        id: &AlertId,
        reason: &str,
        mut write: impl FnMut(&Line) -> std::io::Result<()>,
    ) -> Result<ExportSummary, AppError> {
        let found = self.alert(caller, id).await?;
        let alert = &found.alert;
        self.export_on_record(caller, &alert.site, reason, Some(format!("incident:{id}"))).await?;
        let times = found.timeline.iter().map(|e| e.at);
        let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
            return Err(AppError::Invalid("the alert has no timeline".into()));
        };
        let filter = AuditFilter {
            site: Some(alert.site.clone()),
            since: Some(first.minus(MARGIN)),
            until: Some(last.plus(MARGIN)),
            ..AuditFilter::default()
        };
        let (checkpoint, note) = self.current_checkpoint().await?;
        let bank = alert.bank.as_ref().map(|b| b.as_str().to_owned());
        let mut entries = Vec::new();
        self.each_proven(&filter, checkpoint.size, |e| {
            let here = bank.is_none() || e.bank.is_none() || e.bank == bank;
            if here || e.names(id.as_str()) {
                if entries.len() == MOST_ENTRIES {
                    return Err(AppError::Invalid(format!(
                        "more than {MOST_ENTRIES} entries around this alert: export the site's \
                         entries for the time instead"
                    )));
                }
                entries.push(e);
            }
            Ok(())
        })
        .await?;
        // Each event is backed by the first entry not yet used that names the alert at its time;
        // each step is recorded in the unit of work that puts it on the timeline.
        let mut used = std::collections::BTreeSet::new();
        let mut timeline = Vec::with_capacity(found.timeline.len());
        for event in &found.timeline {
            let at = rfc3339(event.at.as_millis());
            let backing = entries
                .iter()
                .find(|e| !used.contains(&e.index) && e.at == at && e.names(id.as_str()))
                .map(|e| e.index);
            let Some(entry) = backing else {
                tracing::error!(alert = %id, what = %event.what, "a timeline event with no audit entry");
                return Err(AppError::Invalid(format!(
                    "the audit log has no entry for the alert's {} at {at}; run `custody audit \
                     verify` on the server",
                    event.what
                )));
            };
            used.insert(entry);
            timeline.push(IncidentEvent {
                at,
                who: event.actor.clone(),
                what: event.what.clone(),
                entry,
            });
        }
        let incident = Incident {
            id: id.to_string(),
            kind: alert.kind.as_str().to_owned(),
            severity: alert.severity.as_str().to_owned(),
            state: alert.state.as_str().to_owned(),
            site: alert.site.to_string(),
            bank: alert.bank.as_ref().map(ToString::to_string),
            compartment: alert.compartment,
            owner: alert.owner.as_ref().map(ToString::to_string),
            readings: alert.readings,
            raised_at: rfc3339(alert.raised_at.as_millis()),
            timeline,
        };
        write(&Line::Checkpoint { note }).map_err(export_io)?;
        write(&Line::Incident(Box::new(incident))).map_err(export_io)?;
        let count = entries.len();
        for e in entries {
            write(&Line::Entry(Box::new(e))).map_err(export_io)?;
        }
        Ok(ExportSummary { entries: count, checkpoint_size: checkpoint.size })
    }
}

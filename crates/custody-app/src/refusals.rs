//! Refusals at the edges, where no use case runs to audit them: a device gateway handshake
//! refused before any device is known, an alert target refused by the egress guard. Every
//! refusal at every boundary is on the record (DESIGN.md §4 invariant 13); the server counts
//! these and hands them over here aggregated, so a flood cannot fill the log.

use custody_core::SiteId;
use custody_core::audit::{Actor, AuditAction, AuditEvent, Target};
use futures_util::FutureExt as _;

use crate::{App, AppError};

/// Refusals of one kind from one source, as the server counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRefusal {
    /// `DeviceRefused` or `EgressRefused`.
    pub action: AuditAction,
    /// Why (`revoked`, `foreign_ca`, `private_address`, …).
    pub reason: String,
    /// Where from: an address, or the person who gave a refused target.
    pub source: String,
    /// The site concerned, when one is.
    pub site: Option<SiteId>,
    /// How many: 1 for the first of its kind in a window, recorded at once; more for the rest
    /// of the window, recorded in one entry when it ends.
    pub count: u64,
}

impl App {
    /// Records refusals counted at the edges, one entry each, in one unit of work.
    pub async fn record_refusals(&self, refusals: Vec<EdgeRefusal>) -> Result<(), AppError> {
        if refusals.is_empty() {
            return Ok(());
        }
        let now = self.now();
        self.store()
            .write(move |tx| {
                async move {
                    for r in refusals {
                        // Reasons and sources come from the wire: printable and short only.
                        let clean = |t: &str| -> String {
                            t.chars().filter(char::is_ascii_graphic).take(80).collect()
                        };
                        let (reason, source) = (clean(&r.reason), clean(&r.source));
                        let reason = match r.count {
                            1 => format!("{reason}:from:{source}"),
                            n => format!("{reason}:from:{source}:repeated:{n}"),
                        };
                        tx.append_audit(
                            &AuditEvent::denied(
                                now,
                                Actor::system(),
                                r.action,
                                Target { site: r.site, ..Target::default() },
                            )
                            .because(reason),
                        )?;
                    }
                    Ok::<_, AppError>(())
                }
                .boxed()
            })
            .await
    }
}

//! Refusals at the edges, counted so that a flood can neither fill the audit log nor slow the
//! gateway (DESIGN.md §4 invariant 13): device handshakes refused before any device is known,
//! and alert targets the egress guard refuses.
//!
//! Within a window of [`WINDOW`], the first refusal of each kind (edge, reason, source) is
//! recorded at once; the rest are counted and recorded in one entry per kind when the window
//! ends ([`Refusals::flush`]). At most [`KINDS_PER_WINDOW`] kinds are told apart in a window;
//! refusals of any further kind are counted together in one `others` entry. So a window adds at
//! most `2 × KINDS_PER_WINDOW + 1` entries, however many refusals it saw, and noting one costs
//! the gateway a map update under a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use custody_app::App;
use custody_app::refusals::EdgeRefusal;
use custody_core::SiteId;
use custody_core::audit::AuditAction;

/// How long refusals of one kind are counted before their total is recorded.
pub const WINDOW: Duration = Duration::from_mins(1);

/// Kinds of refusal told apart in one window; beyond these, refusals are counted as `others`.
pub const KINDS_PER_WINDOW: usize = 32;

/// Where a refusal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edge {
    /// The device gateway: its TLS handshake, or its upgrade for a device not enrolled.
    Device,
    /// The egress guard, for an alert target.
    Egress,
}

impl Edge {
    fn action(self) -> AuditAction {
        match self {
            Self::Device => AuditAction::DeviceRefused,
            Self::Egress => AuditAction::EgressRefused,
        }
    }
}

/// One kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    edge: Edge,
    reason: &'static str,
    source: String,
    site: Option<SiteId>,
}

/// The refusals counted in the current window.
#[derive(Debug, Default)]
struct Window {
    kinds: HashMap<Kind, u64>,
    others: HashMap<Edge, u64>,
}

impl Window {
    /// Counts one refusal; `true` when it is the first of its kind in the window.
    fn note(&mut self, kind: &Kind) -> bool {
        if let Some(n) = self.kinds.get_mut(kind) {
            *n += 1;
            return false;
        }
        if self.kinds.len() >= KINDS_PER_WINDOW {
            *self.others.entry(kind.edge).or_default() += 1;
            return false;
        }
        self.kinds.insert(kind.clone(), 1);
        true
    }

    /// Ends the window: what is left to record (the repeats of each kind, and the others).
    fn drain(&mut self) -> Vec<EdgeRefusal> {
        let mut left: Vec<EdgeRefusal> = self
            .kinds
            .drain()
            .filter(|(_, n)| *n > 1)
            .map(|(k, n)| EdgeRefusal {
                action: k.edge.action(),
                reason: k.reason.to_owned(),
                source: k.source,
                site: k.site,
                count: n - 1,
            })
            .collect();
        left.extend(self.others.drain().map(|(edge, n)| EdgeRefusal {
            action: edge.action(),
            reason: "others".into(),
            source: "many".into(),
            site: None,
            count: n,
        }));
        left
    }
}

/// The server's count of refusals at its edges.
#[derive(Clone)]
pub struct Refusals {
    app: App,
    window: Arc<Mutex<Window>>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").finish_non_exhaustive()
    }
}

impl Refusals {
    /// Counts refusals for `app`'s audit log.
    pub fn new(app: App) -> Self {
        Self { app, window: Arc::default() }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // Each operation is one map update: a poisoned lock is still consistent.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a refusal at `edge` for `reason` from `source` (an address, or the person who
    /// gave a target), about `site` when one is concerned. The first of its kind in the window
    /// is recorded at once, off the caller's path.
    pub fn refused(&self, edge: Edge, reason: &'static str, source: String, site: Option<SiteId>) {
        let kind = Kind { edge, reason, source, site };
        if !self.window().note(&kind) {
            return;
        }
        let app = self.app.clone();
        let first = EdgeRefusal {
            action: edge.action(),
            reason: reason.to_owned(),
            source: kind.source,
            site: kind.site,
            count: 1,
        };
        tokio::spawn(async move {
            if let Err(e) = app.record_refusals(vec![first]).await {
                tracing::error!(error = %e, "a refusal at the edge was not recorded");
            }
        });
    }

    /// Ends the window: records how many more of each kind came, and the others.
    pub async fn flush(&self) {
        let left = self.window().drain();
        if let Err(e) = self.app.record_refusals(left).await {
            tracing::error!(error = %e, "refusals at the edge were not recorded");
        }
    }
}

/// Why the device gateway's TLS handshake failed, in the audit log's words.
pub fn handshake_reason(error: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer => "foreign_ca",
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => "expired",
            C::Revoked => "revoked",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "wrong_usage",
            _ => "bad_certificate",
        },
        Some(rustls::Error::PeerIncompatible(_)) => "incompatible",
        _ => "handshake",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(reason: &'static str, source: &str) -> Kind {
        Kind { edge: Edge::Device, reason, source: source.into(), site: None }
    }

    /// A flood of ten thousand refusals from a thousand addresses adds a bounded number of
    /// entries, and every refusal is counted in one of them.
    #[test]
    fn a_flood_is_counted_in_a_bounded_number_of_entries() {
        let mut w = Window::default();
        let mut first = 0;
        for i in 0..10_000u32 {
            if w.note(&kind("revoked", &format!("192.0.2.{}", i % 1000))) {
                first += 1;
            }
        }
        assert_eq!(first, KINDS_PER_WINDOW);
        let left = w.drain();
        assert!(left.len() <= KINDS_PER_WINDOW + 1, "{}", left.len());
        let counted: u64 = left.iter().map(|r| r.count).sum::<u64>() + first as u64;
        assert_eq!(counted, 10_000);
        assert!(left.iter().any(|r| r.reason == "others"));
        assert!(w.drain().is_empty(), "a new window starts empty");
    }

    #[test]
    fn a_single_refusal_is_recorded_once() {
        let mut w = Window::default();
        assert!(w.note(&kind("foreign_ca", "192.0.2.7")));
        assert!(w.drain().is_empty(), "recorded at once; nothing left for the window's end");
        assert!(w.note(&kind("foreign_ca", "192.0.2.7")), "a new window records it again");
    }
}

//! The app's views as API bodies.

use custody_app::Caller;
use custody_app::audit::AuditRecord;
use custody_app::compartments::Compartment;
use custody_app::parcels::Parcel;
use custody_app::parcels::as_seen_by;
use custody_app::people::Person;
use custody_app::personal::Statement;
use custody_app::sites::Site;
use custody_core::Timestamp;
use custody_proto::api::{
    CompartmentView, EventView, ParcelView, PersonView, SiteView, StatementView,
};
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, to the millisecond.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_millis()) * 1_000_000)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A person.
pub(crate) fn person(p: &Person) -> PersonView {
    PersonView {
        id: p.id.to_string(),
        name: p.name.to_string(),
        email: p.email.to_string(),
        role: p.role.as_str().into(),
        site: p.site.as_ref().map(ToString::to_string),
        carrier: p.carrier.as_ref().map(ToString::to_string),
    }
}

/// A compartment.
pub(crate) fn compartment(c: &Compartment) -> CompartmentView {
    CompartmentView {
        id: c.id.to_string(),
        number: c.number.get(),
        size: c.size.as_str().into(),
        accessible: c.accessible,
        refrigerated: c.refrigerated,
        state: c.state.as_str().into(),
        door: c.door.as_str().into(),
    }
}

/// A parcel, as `caller` may see it (`custody_app::parcels::as_seen_by`).
pub(crate) fn parcel(caller: &Caller, p: &Parcel) -> ParcelView {
    let p = &as_seen_by(caller, p.clone());
    ParcelView {
        id: p.id.to_string(),
        site: p.site.to_string(),
        bank: p.bank.as_ref().map(ToString::to_string),
        compartment: p.compartment.as_ref().map(ToString::to_string),
        carrier: p.carrier.to_string(),
        recipient: p.recipient.as_ref().map(ToString::to_string),
        tracking_ref: p.tracking_ref.as_ref().map(ToString::to_string),
        size: p.size.as_str().into(),
        state: p.state.as_str().into(),
        created_at: rfc3339(p.created_at),
        deposited_at: p.deposited_at.map(rfc3339),
        notified_at: p.notified_at.map(rfc3339),
        expires_at: p.expires_at.map(rfc3339),
        closed_at: p.closed_at.map(rfc3339),
    }
}

/// An audit entry, with the words given for it as the caller may see them.
pub(crate) fn event(r: &AuditRecord, said: &Statement) -> EventView {
    EventView {
        seq: r.seq,
        at: rfc3339(r.event.at),
        actor_kind: r.event.actor.kind.as_str().into(),
        actor_id: r.event.actor.id.clone(),
        action: r.event.action.as_str().into(),
        outcome: r.event.outcome.as_str().into(),
        reason: r.event.reason.clone(),
        statement: statement(said),
    }
}

fn statement(said: &Statement) -> Option<StatementView> {
    let (state, text) = match said {
        Statement::None => return None,
        Statement::Shown(text) => ("shown", Some(text.clone())),
        Statement::Withheld => ("withheld", None),
        Statement::Erased => ("erased", None),
    };
    Some(StatementView { state: state.into(), text })
}

/// How the portal shows the words given for an event: the words, or why they are not shown.
pub(crate) fn statement_line(said: &Statement) -> String {
    match said {
        Statement::None => String::new(),
        Statement::Shown(text) => format!("“{text}”"),
        Statement::Withheld => "(statement withheld)".into(),
        Statement::Erased => "(statement erased)".into(),
    }
}

/// A site without its banks.
pub(crate) fn site(s: &Site) -> SiteView {
    SiteView {
        id: s.id.to_string(),
        name: s.name.to_string(),
        time_zone: s.time_zone.clone(),
        pickup_window_hours: s.pickup_window.get().as_secs() / 3600,
        banks: Vec::new(),
    }
}

/// A request for approval as the API shows it.
pub(crate) fn approval(a: &custody_app::approvals::Approval) -> custody_proto::api::ApprovalView {
    custody_proto::api::ApprovalView {
        id: a.id.to_string(),
        kind: a.kind.as_str().to_owned(),
        subject: a.subject.clone(),
        params: a.params.clone(),
        requested_by: a.requested_by.to_string(),
        requested_at: rfc3339(a.requested_at),
        expires_at: rfc3339(a.expires_at),
        outcome: a.decision.as_ref().map(|(_, _, o)| o.as_str().to_owned()),
        decided_by: a.decision.as_ref().map(|(by, _, _)| by.to_string()),
    }
}

/// A lockdown rule.
pub(crate) fn lockdown_rule(
    r: custody_core::alert::LockdownRule,
) -> custody_proto::api::LockdownRuleView {
    custody_proto::api::LockdownRuleView {
        kind: r.kind_str().to_owned(),
        min_severity: r.min_severity.as_str().to_owned(),
        scope: r.scope.as_str().to_owned(),
    }
}

/// A bank's sensor settings.
pub(crate) fn sensor_settings(
    s: &custody_core::alert::SensorSettings,
) -> custody_proto::api::SensorSettingsView {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    custody_proto::api::SensorSettingsView {
        rules: s
            .debounce
            .iter()
            .map(|(kind, rule)| custody_proto::api::SensorRuleView {
                kind: kind.as_str().to_owned(),
                threshold: rule.threshold,
                window_ms: millis(rule.window),
                quiet_ms: millis(rule.quiet),
            })
            .collect(),
        door_left_open_after_secs: s.door_left_open_after.as_secs(),
    }
}

/// A bank's policy, for its agent.
pub(crate) fn bank_policy(
    p: &custody_app::sensors::BankPolicy,
) -> custody_proto::device::BankPolicy {
    custody_proto::device::BankPolicy {
        sensors: sensor_settings(&p.sensors),
        lockdown: p.lockdown.iter().copied().map(lockdown_rule).collect(),
    }
}

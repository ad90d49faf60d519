//! Where a site's alerts go: endpoints, deliveries, and people's subscriptions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use custody_core::alert::{Channel, Severity};
use custody_core::{DeliveryId, EndpointId, SiteId};
use custody_proto::api::{
    AlertDeliveryView, AlertEndpointCreatedView, AlertEndpointView, AlertSubscriptionView,
    NewAlertEndpointRequest,
};
use serde::Deserialize;

use super::{ApiResult, Json, parse_id};
use crate::extract::{PersonSession, Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

fn endpoint_view(e: &custody_app::fanout::Endpoint) -> AlertEndpointView {
    AlertEndpointView {
        id: e.id.to_string(),
        channel: e.channel.as_str().to_owned(),
        target: e.target.clone(),
        min_severity: e.min_severity.as_str().to_owned(),
        created_at: views::rfc3339(e.created_at),
    }
}

fn delivery_view(d: &custody_app::fanout::Delivery) -> AlertDeliveryView {
    let state = match (d.delivered_at, d.dead_at) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "dead",
        (None, None) => "pending",
    };
    AlertDeliveryView {
        id: d.id.to_string(),
        alert: d.alert.to_string(),
        channel: d.channel.as_str().to_owned(),
        endpoint: d.endpoint.as_ref().map(ToString::to_string),
        event: d.event.clone(),
        state: state.to_owned(),
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        created_at: views::rfc3339(d.created_at),
        next_attempt_at: (state == "pending").then(|| views::rfc3339(d.next_attempt_at)),
    }
}

/// A site's alert endpoints.
pub async fn alert_endpoints(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<Vec<AlertEndpointView>> {
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alert_endpoints(reader.caller(), &site).await?;
    Ok(Json(rows.iter().map(endpoint_view).collect()))
}

/// Add an endpoint for a site's alerts: a webhook or a syslog receiver on a public address.
pub async fn add_alert_endpoint(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<NewAlertEndpointRequest>,
) -> Result<(StatusCode, Json<AlertEndpointCreatedView>), ApiError> {
    let site: SiteId = parse_id(&id, "site")?;
    let invalid = |m: String| ApiError::from(custody_app::AppError::Invalid(m));
    let min_severity = Severity::parse(&body.min_severity)
        .ok_or_else(|| invalid("min_severity: low, medium, high or critical".into()))?;
    let channel = Channel::parse(&body.channel)
        .filter(|c| matches!(c, Channel::Webhook | Channel::Syslog))
        .ok_or_else(|| invalid("channel: webhook or syslog".into()))?;
    let checked = match channel {
        Channel::Webhook => {
            crate::egress::check_url(&body.target, &state.allowed_hosts).map(|_| ())
        }
        _ => crate::syslog::check_target(&body.target, &state.allowed_hosts),
    };
    if let Err(e) = checked {
        // Refused on the record too, under the person who gave it.
        let reason = match e {
            crate::egress::Refused::Private(_) => "private_address",
            crate::egress::Refused::Url(_) => "bad_target",
        };
        let who = staff.caller().actor().id.unwrap_or_default();
        let site = Some(site.clone());
        state.refusals.refused(crate::refusals::Edge::Egress, reason, who, site);
        return Err(invalid(format!("target: {e}")));
    }
    let new = custody_app::fanout::NewEndpoint { channel, target: body.target, min_severity };
    let added = state.app.add_alert_endpoint(staff.caller(), &site, new).await?;
    let view = AlertEndpointCreatedView {
        endpoint: endpoint_view(&added.endpoint),
        secret: added.secret.map(|s| s.to_string()),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Remove an alert endpoint; the site's endpoints left.
pub async fn remove_alert_endpoint(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<Vec<AlertEndpointView>> {
    let id: EndpointId = parse_id(&id, "alert endpoint")?;
    let rows = state.app.remove_alert_endpoint(staff.caller(), &id).await?;
    Ok(Json(rows.iter().map(endpoint_view).collect()))
}

/// Which of a site's notifications to list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    dead: Option<bool>,
}

/// A site's alert notifications, newest first (`?dead=true`: the dead-letter list).
pub async fn alert_deliveries(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AlertDeliveryView>> {
    let Query(q) = query?;
    let site: SiteId = parse_id(&id, "site")?;
    let rows = state.app.alert_deliveries(reader.caller(), &site, q.dead.unwrap_or(false)).await?;
    Ok(Json(rows.iter().map(delivery_view).collect()))
}

/// Send a notification from the dead-letter list again.
pub async fn retry_alert_delivery(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> ApiResult<AlertDeliveryView> {
    let id: DeliveryId = parse_id(&id, "alert delivery")?;
    Ok(Json(delivery_view(&state.app.retry_alert_delivery(staff.caller(), &id).await?)))
}

pub(crate) fn subscription_view(s: &custody_app::fanout::Subscription) -> AlertSubscriptionView {
    AlertSubscriptionView {
        site: s.site.to_string(),
        channel: s.channel.as_str().to_owned(),
        phone: s.phone.clone(),
        min_severity: s.min_severity.as_str().to_owned(),
        consented_at: Some(views::rfc3339(s.consented_at)),
    }
}

/// The signed-in person's consents to hear of alerts.
pub async fn my_alert_subscriptions(
    State(state): State<ServerState>,
    session: PersonSession,
) -> ApiResult<Vec<AlertSubscriptionView>> {
    let rows = state.app.my_alert_subscriptions(session.caller()).await?;
    Ok(Json(rows.iter().map(subscription_view).collect()))
}

/// Agree to hear of a site's alerts by e-mail or text message.
pub async fn subscribe_alerts(
    State(state): State<ServerState>,
    session: PersonSession,
    Json(body): Json<AlertSubscriptionView>,
) -> ApiResult<AlertSubscriptionView> {
    let site: SiteId = parse_id(&body.site, "site")?;
    let invalid = |m: &str| ApiError::from(custody_app::AppError::Invalid(m.to_owned()));
    let channel = Channel::parse(&body.channel)
        .filter(|c| matches!(c, Channel::Email | Channel::Sms))
        .ok_or_else(|| invalid("channel: email or sms"))?;
    let min_severity = Severity::parse(&body.min_severity)
        .ok_or_else(|| invalid("min_severity: low, medium, high or critical"))?;
    let row = state
        .app
        .subscribe_alerts(session.caller(), &site, channel, body.phone.as_deref(), min_severity)
        .await?;
    Ok(Json(subscription_view(&row)))
}

/// Withdraw a consent to hear of a site's alerts on a channel.
pub async fn unsubscribe_alerts(
    State(state): State<ServerState>,
    session: PersonSession,
    Path((site, channel)): Path<(String, String)>,
) -> ApiResult<Vec<AlertSubscriptionView>> {
    let site: SiteId = parse_id(&site, "site")?;
    let channel = Channel::parse(&channel).ok_or_else(|| {
        ApiError::from(custody_app::AppError::Invalid("channel: email or sms".into()))
    })?;
    state.app.unsubscribe_alerts(session.caller(), &site, channel).await?;
    let rows = state.app.my_alert_subscriptions(session.caller()).await?;
    Ok(Json(rows.iter().map(subscription_view).collect()))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Person, Staff, StaffRead};
    table
        .get(
            "/api/v1/me/alert-subscriptions",
            Person,
            Doc::list("Your consents to hear of sites' alerts", "AlertSubscriptionView"),
            my_alert_subscriptions,
        )
        .post(
            "/api/v1/me/alert-subscriptions",
            Person,
            Doc::json(
                "Agree to hear of a site's alerts by e-mail or text message, from a severity up",
                200,
                "AlertSubscriptionView",
            )
            .taking("AlertSubscriptionView"),
            subscribe_alerts,
        )
        .delete(
            "/api/v1/me/alert-subscriptions/{site}/{channel}",
            Person,
            Doc::list("Withdraw a consent; the consents left", "AlertSubscriptionView"),
            unsubscribe_alerts,
        )
        .get(
            "/api/v1/sites/{id}/alert-endpoints",
            StaffRead,
            Doc::list("Where the site's alerts are sent besides its staff", "AlertEndpointView"),
            alert_endpoints,
        )
        .post(
            "/api/v1/sites/{id}/alert-endpoints",
            Staff,
            Doc::json(
                "Add a webhook for the site's alerts (needs a step-up); 201 with its signing \
                 secret, shown this once",
                201,
                "AlertEndpointCreatedView",
            )
            .taking("NewAlertEndpointRequest"),
            add_alert_endpoint,
        )
        .delete(
            "/api/v1/alert-endpoints/{id}",
            Staff,
            Doc::list("Remove an alert endpoint (needs a step-up)", "AlertEndpointView"),
            remove_alert_endpoint,
        )
        .get(
            "/api/v1/sites/{id}/alert-deliveries",
            StaffRead,
            Doc::list(
                "The site's alert notifications, newest first (`?dead=true`: the dead-letter list)",
                "AlertDeliveryView",
            ),
            alert_deliveries,
        )
        .post(
            "/api/v1/alert-deliveries/{id}/retry",
            Staff,
            Doc::json(
                "Send a notification from the dead-letter list again",
                200,
                "AlertDeliveryView",
            ),
            retry_alert_delivery,
        )
}

//! People and their roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custody_app::people::NewPerson;
use custody_app::people::RoleChange;
use custody_app::personal::PersonalData;
use custody_core::person::Role;
use custody_proto::api::{
    ConsentChangeView, CreatePersonRequest, PersonView, PersonalDataView, RoleChangeRequest,
};
use zeroize::Zeroizing;

use super::{Json, parse_id};
use crate::extract::{PersonSession, Staff};
use crate::routes::{Access, Doc, Routes};
use crate::{ApiError, ServerState, views};

/// Add a person.
pub async fn create_person(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Json(body): Json<CreatePersonRequest>,
) -> Result<(StatusCode, Json<PersonView>), ApiError> {
    let role = parse_role(&body.role)?;
    let new = NewPerson {
        org: staff.person().org.clone(),
        email: body.email,
        name: body.name,
        role,
        site: body.site.as_deref().map(|s| parse_id(s, "site")).transpose()?,
        carrier: body.carrier.as_deref().map(|s| parse_id(s, "carrier")).transpose()?,
        password: body.password.map(Zeroizing::new),
        reason: body.reason,
    };
    let p = state.app.create_person(staff.caller(), new).await?;
    Ok((StatusCode::CREATED, Json(views::person(&p))))
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "role must be resident, courier, auditor, admin or super_admin",
        )
    })
}

/// Give a person another role; making someone super-admin waits for a second super-admin.
pub async fn change_role(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<RoleChangeRequest>,
) -> Result<Response, ApiError> {
    let id: custody_core::PersonId = parse_id(&id, "person")?;
    let role = parse_role(&body.role)?;
    Ok(match state.app.change_role(staff.caller(), &id, role, &body.reason).await? {
        RoleChange::Changed(p) => Json(views::person(&p)).into_response(),
        RoleChange::Pending(a) => (StatusCode::ACCEPTED, Json(views::approval(&a))).into_response(),
    })
}

/// Disable a person and end their sessions.
pub async fn disable_person(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: custody_core::PersonId = parse_id(&id, "person")?;
    state.app.disable_person(staff.caller(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything held about a person, to answer a request they made to the site (GDPR Art. 15
/// and 20). Staff who may manage them; audited.
pub async fn personal_data(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<PersonalDataView>, ApiError> {
    let id: custody_core::PersonId = parse_id(&id, "person")?;
    let data = state.app.personal_data(staff.caller(), &id).await?;
    Ok(Json(personal_data_document(state.app.now(), staff.caller(), &data, None)))
}

/// Everything held about the signed-in person (GDPR Art. 15 and 20); audited.
pub async fn my_personal_data(
    State(state): State<ServerState>,
    session: PersonSession,
) -> Result<Json<PersonalDataView>, ApiError> {
    let data = state.app.personal_data(session.caller(), &session.person().id).await?;
    let current = Some(&session.info.id);
    Ok(Json(personal_data_document(state.app.now(), session.caller(), &data, current)))
}

/// The export of `d` as the API gives it (`custody-personal-data/1`), made at `now` for `caller`;
/// `current` marks the session it was asked from. `custody admin export-personal-data` prints
/// the same document.
pub fn personal_data_document(
    now: custody_core::Timestamp,
    caller: &custody_app::Caller,
    d: &PersonalData,
    current: Option<&custody_core::SessionId>,
) -> PersonalDataView {
    PersonalDataView {
        format: "custody-personal-data/1".into(),
        exported_at: views::rfc3339(now),
        person: views::person(&d.person),
        sessions: d.sessions.iter().map(|s| super::sessions::session_item(s, current)).collect(),
        consents: d.consents.iter().map(super::fanout::subscription_view).collect(),
        consent_history: d
            .consent_history
            .iter()
            .map(|c| ConsentChangeView {
                site: c.site.to_string(),
                channel: c.channel.to_string(),
                change: if c.given.is_some() { "given" } else { "withdrawn" }.into(),
                min_severity: c.given.map(|s| s.to_string()),
                at: views::rfc3339(c.at),
            })
            .collect(),
        badges: d.badges.iter().map(super::badges::badge_view).collect(),
        parcels: d.parcels.iter().map(|p| views::parcel(caller, p)).collect(),
        events: d.statements.iter().map(|(r, said)| views::event(r, said)).collect(),
    }
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Person, Staff};
    table
        .post(
            "/api/v1/people",
            Staff,
            Doc::json("Add a person", 201, "PersonView").taking("CreatePersonRequest").throttled(),
            create_person,
        )
        .post(
            "/api/v1/people/{id}/role",
            Staff,
            Doc::json(
                "Give a person another role (needs a step-up); making someone super-admin \
                 answers 202 with a request another super-admin must approve",
                200,
                "PersonView",
            )
            .taking("RoleChangeRequest")
            .or_pending(),
            change_role,
        )
        .post(
            "/api/v1/people/{id}/disable",
            Staff,
            Doc::plain("Disable a person; ends their sessions").answering(204),
            disable_person,
        )
        .get(
            "/api/v1/people/{id}/personal-data",
            Staff,
            Doc::json(
                "Everything held about a person, for a request they made (GDPR Art. 15 and 20)",
                200,
                "PersonalDataView",
            ),
            personal_data,
        )
        .get(
            "/api/v1/me/personal-data",
            Person,
            Doc::json(
                "Everything held about the signed-in person (GDPR Art. 15 and 20)",
                200,
                "PersonalDataView",
            ),
            my_personal_data,
        )
}

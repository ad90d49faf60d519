//! Each bank's sensor settings.

use axum::extract::{Path, State};
use custody_core::BankId;
use custody_core::alert::SensorSettings;
use custody_proto::api::SensorSettingsView;

use super::{ApiResult, Json, parse_id};
use crate::extract::{Staff, StaffRead};
use crate::routes::{Access, Doc, Routes};
use crate::{ServerState, views};

/// A bank's sensor settings.
pub async fn sensor_settings(
    State(state): State<ServerState>,
    StaffRead(reader): StaffRead,
    Path(id): Path<String>,
) -> ApiResult<SensorSettingsView> {
    let bank: BankId = parse_id(&id, "bank")?;
    Ok(Json(views::sensor_settings(&state.app.sensor_settings(reader.caller(), &bank).await?)))
}

/// Replace a bank's sensor settings.
pub async fn set_sensor_settings(
    State(state): State<ServerState>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(body): Json<SensorSettingsView>,
) -> ApiResult<SensorSettingsView> {
    let bank: BankId = parse_id(&id, "bank")?;
    let rules = body.rules.into_iter().map(|r| (r.kind, r.threshold, r.window_ms, r.quiet_ms));
    let settings = SensorSettings::from_wire(rules, body.door_left_open_after_secs)
        .map_err(custody_app::AppError::Invalid)?;
    let stored = state.app.set_sensor_settings(staff.caller(), &bank, settings).await?;
    Ok(Json(views::sensor_settings(&stored)))
}

/// This concept's routes, each with its access class and a line for the API document.
pub(crate) fn routes(table: Routes<ServerState>) -> Routes<ServerState> {
    use Access::{Staff, StaffRead};
    table
        .get(
            "/api/v1/banks/{id}/sensors",
            StaffRead,
            Doc::json(
                "The bank's sensor settings: debounce rules and how long a door may stand open",
                200,
                "SensorSettingsView",
            ),
            sensor_settings,
        )
        .post(
            "/api/v1/banks/{id}/sensors",
            Staff,
            Doc::json(
                "Replace the bank's sensor settings (needs a step-up); its agent applies them at once",
                200,
                "SensorSettingsView",
            )
            .taking("SensorSettingsView"),
            set_sensor_settings,
        )
}

//! The OpenAPI 3.1 document, served at `/api/v1/openapi.json`.
//!
//! Schemas come from the API bodies' `ToSchema` derives; paths come from the route table, so a
//! route and its documentation are registered in one place.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::Method;
use custody_proto::api::{
    AddressParcelRequest, AlertDeliveryView, AlertDetailView, AlertEndpointCreatedView,
    AlertEndpointView, AlertEventView, AlertSubscriptionView, AlertView, ApiKeyIssued, ApiKeyView,
    AppOpenRequest, AppOpenView, ApprovalView, AuditExportRequest, BadgeView, BankView,
    BoardHealthView, BreachDeadlinesView, BreachNoticeView, BreachNoticesView, BreachStepRequest,
    BreachStepView, BreachView, BulkOpenRequest, CarrierView, CompartmentSpec, CompartmentView,
    ConsentChangeView, ConsistencyView, CourierCodeView, CreateApiKeyRequest, CreateBankRequest,
    CreateCarrierRequest, CreateCompartmentsRequest, CreatePersonRequest, CreateSiteRequest,
    CustodyEvent, CustodyView, DeclareBreachRequest, DepositRequest, DepositView, DeviceHealthView,
    DeviceView, EndedView, EnrolmentTokenView, ErrorBody, ErrorDetail, EventView,
    ExpectParcelRequest, FactorRequest, FactorsView, ImportBadgesRequest, LinkRedeemRequest,
    LinkRequest, LockdownRuleView, LockdownView, LoginRequest, NewAlertEndpointRequest,
    NoteRequest, OpeningView, ParcelHistory, ParcelView, PasskeyAnswerRequest, PasskeyCeremonyView,
    PersonView, PersonalDataView, PickupQrView, ReasonRequest, RecoveryCodesView,
    RegisterBadgeRequest, RetentionView, RoleChangeRequest, RotateApiKeyRequest, SensorRuleView,
    SensorSettingsView, SessionListItem, SessionView, SiteView, StatementView, TotpConfirmRequest,
    TotpEnrolmentView,
};
use custody_proto::device::{EnrolRequest, EnrolResponse};
use utoipa::OpenApi as _;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ArrayBuilder, ContentBuilder, PathsBuilder, Ref, ResponseBuilder};

use custody_app::conflicts::ConflictCode;

use crate::routes::{Access, RouteInfo};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Custody",
        description = "Smart parcel locker platform: the HTTP API. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        LoginRequest,
        LinkRequest,
        LinkRedeemRequest,
        PersonView,
        SessionView,
        FactorRequest,
        FactorsView,
        PasskeyCeremonyView,
        PasskeyAnswerRequest,
        TotpEnrolmentView,
        TotpConfirmRequest,
        RecoveryCodesView,
        SessionListItem,
        PersonalDataView,
        ConsentChangeView,
        EndedView,
        LockdownView,
        AlertView,
        AlertEventView,
        AlertDetailView,
        NoteRequest,
        LockdownRuleView,
        AlertEndpointView,
        NewAlertEndpointRequest,
        AlertEndpointCreatedView,
        AlertDeliveryView,
        AlertSubscriptionView,
        SensorRuleView,
        SensorSettingsView,
        RetentionView,
        DeclareBreachRequest,
        BreachStepRequest,
        BreachDeadlinesView,
        BreachStepView,
        BreachView,
        BreachNoticeView,
        BreachNoticesView,
        DeviceView,
        DeviceHealthView,
        BoardHealthView,
        BadgeView,
        RegisterBadgeRequest,
        ImportBadgesRequest,
        CourierCodeView,
        CompartmentView,
        BankView,
        SiteView,
        ParcelView,
        EventView,
        StatementView,
        ParcelHistory,
        ExpectParcelRequest,
        DepositRequest,
        DepositView,
        PickupQrView,
        AppOpenRequest,
        AppOpenView,
        AddressParcelRequest,
        ReasonRequest,
        AuditExportRequest,
        OpeningView,
        CreateSiteRequest,
        CreateBankRequest,
        CompartmentSpec,
        CreateCompartmentsRequest,
        CreatePersonRequest,
        RoleChangeRequest,
        ApprovalView,
        BulkOpenRequest,
        ApiKeyView,
        RotateApiKeyRequest,
        CreateCarrierRequest,
        CarrierView,
        CreateApiKeyRequest,
        ApiKeyIssued,
        EnrolmentTokenView,
        EnrolRequest,
        EnrolResponse,
        CustodyEvent,
        CustodyView,
        ConsistencyView
    ))
)]
struct Base;

/// Whether a route belongs in the API document (pages and static files do not).
pub fn documented(route: &RouteInfo) -> bool {
    route.path.starts_with("/api/") || ["/healthz", "/readyz", "/metrics"].contains(&route.path)
}

fn method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        Method::PUT => HttpMethod::Put,
        _ => HttpMethod::Get,
    }
}

fn security(access: Access) -> Vec<SecurityRequirement> {
    let none: [&str; 0] = [];
    let session = || SecurityRequirement::new("session", none);
    let key = || SecurityRequirement::new("api_key", none);
    match access {
        Access::Public => Vec::new(),
        Access::Person | Access::AnySession | Access::StaffRead | Access::Staff => {
            vec![session()]
        }
        Access::Signed | Access::Carrier => vec![session(), key()],
        Access::Metrics => vec![SecurityRequirement::new("metrics_token", none)],
    }
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
    )
}

/// Every status an operation answers besides its success, and what each means. The route ×
/// role test checks that every status the server answers is one of these.
pub fn statuses(route: &RouteInfo) -> Vec<(u16, &'static str)> {
    let d = route.doc;
    let api = route.path.starts_with("/api/v1/") && route.path != "/api/v1/openapi.json";
    let mut out = Vec::new();
    if d.pending {
        out.push((
            202,
            "waiting for a second person: the body is the approval request (ApprovalView)",
        ));
    }
    if api || route.path.contains('{') || d.request.is_some() {
        out.push((400, "malformed: an id in the path (`invalid_id`), the query or the JSON"));
    }
    if route.access != Access::Public {
        out.push((401, "not signed in"));
        out.push((403, "role does not allow this, or a second factor or step-up is needed"));
    }
    if api {
        // Ids come in paths and bodies alike, and what they name may be gone or out of reach.
        out.push((404, "no such thing, or not yours to see"));
        out.push((409, "clashes with the current state: `code` is one of ConflictCode"));
    }
    if d.request.is_some() {
        out.push((413, "body too large"));
        out.push((415, "not JSON"));
    }
    if api {
        out.push((422, "invalid field value"));
    }
    if d.throttled {
        out.push((429, "too many attempts (`throttled`): wait and try again"));
    }
    if d.opens {
        out.push((503, "the bank's agent is not connected (`bank_offline`)"));
    }
    if route.path == "/readyz" {
        out.push((503, "the database does not answer"));
    }
    out
}

/// The conflict codes a 409 answer's `code` takes, each with its meaning.
fn conflict_codes() -> utoipa::openapi::Schema {
    let codes = ConflictCode::ALL;
    let table: Vec<String> =
        codes.iter().map(|c| format!("- `{}`: {}", c.as_str(), c.meaning())).collect();
    let table = table.join("\n");
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(codes.iter().map(|c| c.as_str())))
        .description(Some(format!(
            "Why a request clashes with the current state (409):\n\n{table}"
        )))
        .into()
}

fn build(table: &[RouteInfo]) -> String {
    let mut doc = Base::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("ConflictCode".to_owned(), conflict_codes().into());
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-custody-session"))),
    );
    components
        .add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    components.add_security_scheme(
        "metrics_token",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );

    let mut by_path: BTreeMap<String, PathItemBuilder> = BTreeMap::new();
    for route in table.iter().filter(|r| documented(r)) {
        let d = route.doc;
        let mut op = OperationBuilder::new()
            .summary(Some(d.summary))
            .operation_id(Some(route.operation))
            .tag(format!("{:?}", route.access));
        for req in security(route.access) {
            op = op.security(req);
        }
        for segment in route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(segment)
                    .parameter_in(ParameterIn::Path)
                    .required(utoipa::openapi::Required::True)
                    .description(Some("opaque id"))
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String),
                    )),
            );
        }
        if let Some(body) = d.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(utoipa::openapi::Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name(body))).build(),
                    )
                    .build(),
            ));
        }
        let ok = match d.response {
            Some((name, false)) => ResponseBuilder::new().description("success").content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name(name))).build(),
            ),
            Some((name, true)) => ResponseBuilder::new().description("success").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ArrayBuilder::new().items(Ref::from_schema_name(name))))
                    .build(),
            ),
            None => ResponseBuilder::new().description("success"),
        };
        op = op.response(d.status.to_string(), ok);
        for (status, description) in statuses(route) {
            let answer = if status == 202 {
                ResponseBuilder::new().description(description).content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApprovalView")))
                        .build(),
                )
            } else {
                error(description)
            };
            op = op.response(status.to_string(), answer);
        }
        let item = by_path
            .remove(route.path)
            .unwrap_or_default()
            .operation(method(&route.method), op.build());
        by_path.insert(route.path.to_owned(), item);
    }
    let mut paths = PathsBuilder::new();
    for (path, item) in by_path {
        paths = paths.path(path, item.build());
    }
    doc.paths = paths.build();
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// The document for the server's routes (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| build(&crate::routes_table()))
}

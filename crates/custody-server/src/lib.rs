//! The Custody server: the HTTPS API and admin portal, the device gateway, the outbox worker
//! and the housekeeping sweeper.
//!
//! **Architecture Invariant:** the server holds no business rules. Handlers prove who is calling
//! with a capability extractor, call one use case of `custody-app`, and translate the answer.
//!
//! **Architecture Invariant:** every route is registered through [`routes::Routes`] with its
//! access class; the route × role test walks that table.

pub mod account;
pub mod account_pages;
pub mod alert_pages;
pub mod api;
pub mod config;
pub mod egress;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod gateway;
mod headers;
pub mod listen;
pub mod openapi;
pub mod outbox;
pub mod portal;
mod qr;
pub mod refusals;
pub mod routes;
pub mod ship;
pub mod sign_in_links;
pub mod sms;
pub mod syslog;
mod views;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use custody_app::App;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::limit::RequestBodyLimitLayer;

pub use error::ApiError;
pub use gateway::DeviceHub;
pub use listen::RequestClient;

use routes::{Access, Doc, RouteInfo, Routes};

/// Largest request body accepted, checked before reading (ASVS 5.2.1).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What handlers share.
#[derive(Clone)]
pub struct ServerState {
    /// The use cases.
    pub app: App,
    /// Connected agents.
    pub hub: DeviceHub,
    /// The Prometheus registry, when metrics are recorded in this process.
    pub metrics: Option<PrometheusHandle>,
    /// The scraper's bearer token.
    pub metrics_token: Arc<str>,
    /// Proxies whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Private hosts the operator lets site admins point alert webhooks at.
    pub allowed_hosts: egress::Allowed,
    /// Refusals at the edges (device handshakes, the egress guard), counted for the log.
    pub refusals: refusals::Refusals,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState").field("app", &self.app).finish_non_exhaustive()
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).clone()
}

#[allow(clippy::too_many_lines, reason = "one line per route: the table is meant to be read whole")]
fn table() -> Routes<ServerState> {
    use Access::{AnySession, Carrier, Metrics, Person, Public, Signed, Staff, StaffRead};
    Routes::new()
        .get("/healthz", Public, Doc::plain("Liveness"), api::health::healthz)
        .get("/readyz", Public, Doc::plain("Readiness: the database answers"), api::health::readyz)
        .get("/metrics", Metrics, Doc::plain("Prometheus metrics"), api::health::metrics)
        .get("/api/v1/openapi.json", Public, Doc::plain("This document"), api::health::openapi)
        .post(
            "/api/v1/sessions",
            Public,
            Doc::json("Sign in with a password; sets the session cookie", 200, "SessionView")
                .taking("LoginRequest"),
            api::sessions::login,
        )
        .post(
            "/api/v1/sessions/link",
            Public,
            Doc::plain(
                "Ask for a sign-in link by e-mail (residents): 202 whoever asks; binds it to this \
                 client by a cookie",
            )
            .taking("LinkRequest"),
            sign_in_links::request,
        )
        .post(
            "/api/v1/sessions/link/redeem",
            Public,
            Doc::json(
                "Sign in with the link's token, from the client that asked",
                200,
                "SessionView",
            )
            .taking("LinkRedeemRequest"),
            sign_in_links::redeem,
        )
        .post(
            "/api/v1/sessions/passkey/begin",
            Public,
            Doc::json("Begin signing in with a passkey alone", 200, "PasskeyCeremonyView"),
            account::begin_passkey_sign_in,
        )
        .post(
            "/api/v1/sessions/passkey/finish",
            Public,
            Doc::json(
                "Sign in with the browser's answer; sets the session cookie",
                200,
                "SessionView",
            )
            .taking("PasskeyAnswerRequest"),
            account::passkey_sign_in,
        )
        .delete("/api/v1/sessions/current", AnySession, Doc::plain("Sign out"), api::sessions::logout)
        .post(
            "/api/v1/sessions/current/factor",
            AnySession,
            Doc::json(
                "Prove a second factor (sign-in's second step, or a step-up); rotates the cookie",
                200,
                "SessionView",
            )
            .taking("FactorRequest"),
            account::prove_factor,
        )
        .post(
            "/api/v1/sessions/current/passkey/begin",
            AnySession,
            Doc::json("Begin proving a passkey in this session", 200, "PasskeyCeremonyView"),
            account::begin_passkey_proof,
        )
        .post(
            "/api/v1/sessions/current/passkey/finish",
            AnySession,
            Doc::json("Prove it with the browser's answer; rotates the cookie", 200, "SessionView")
                .taking("PasskeyAnswerRequest"),
            account::prove_passkey,
        )
        .get(
            "/api/v1/sessions",
            Person,
            Doc::list("The signed-in person's sessions", "SessionListItem"),
            account::sessions,
        )
        .delete(
            "/api/v1/sessions/{id}",
            Person,
            Doc::plain("End one of them"),
            account::end_session,
        )
        .post(
            "/api/v1/sessions/end-others",
            Person,
            Doc::json("End every other session of the signed-in person", 200, "EndedView"),
            account::end_other_sessions,
        )
        .get("/api/v1/me", Person, Doc::json("The signed-in person", 200, "PersonView"), api::sessions::me)
        .get(
            "/api/v1/me/alert-subscriptions",
            Person,
            Doc::list("Your consents to hear of sites' alerts", "AlertSubscriptionView"),
            api::fanout::my_alert_subscriptions,
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
            api::fanout::subscribe_alerts,
        )
        .delete(
            "/api/v1/me/alert-subscriptions/{site}/{channel}",
            Person,
            Doc::list("Withdraw a consent; the consents left", "AlertSubscriptionView"),
            api::fanout::unsubscribe_alerts,
        )
        .get(
            "/api/v1/me/courier-code",
            Person,
            Doc::json("A courier's kiosk code for today (couriers only)", 200, "CourierCodeView"),
            api::couriers::courier_code,
        )
        .get(
            "/api/v1/me/factors",
            AnySession,
            Doc::json("The second factors the signed-in person holds", 200, "FactorsView"),
            account::factors,
        )
        .post(
            "/api/v1/me/totp",
            AnySession,
            Doc::json(
                "Begin setting up an authenticator app (a step-up when a factor is held)",
                201,
                "TotpEnrolmentView",
            ),
            account::begin_totp,
        )
        .post(
            "/api/v1/me/totp/confirm",
            AnySession,
            Doc::json(
                "Confirm the app with its first code; rotates the cookie, may issue recovery codes",
                200,
                "SessionView",
            )
            .taking("TotpConfirmRequest"),
            account::confirm_totp,
        )
        .post(
            "/api/v1/me/passkeys/begin",
            AnySession,
            Doc::json(
                "Begin registering a passkey (a step-up when a factor is held)",
                200,
                "PasskeyCeremonyView",
            ),
            account::begin_passkey,
        )
        .post(
            "/api/v1/me/passkeys/finish",
            AnySession,
            Doc::json(
                "Finish registering it; rotates the cookie, may issue recovery codes",
                200,
                "SessionView",
            )
            .taking("PasskeyAnswerRequest"),
            account::finish_passkey,
        )
        .delete(
            "/api/v1/me/totp",
            Person,
            Doc::plain("Remove the authenticator app (needs a step-up)"),
            account::remove_totp,
        )
        .post(
            "/api/v1/me/recovery-codes",
            Person,
            Doc::json("Replace the recovery codes (needs a step-up)", 201, "RecoveryCodesView"),
            account::recovery_codes,
        )
        .get(
            "/api/v1/parcels",
            Signed,
            Doc::list("Parcels the caller may see (staff: ?site=)", "ParcelView"),
            api::parcels::parcels,
        )
        .post(
            "/api/v1/parcels",
            Carrier,
            Doc::json("Announce a parcel", 201, "ParcelView").taking("ExpectParcelRequest"),
            api::parcels::expect_parcel,
        )
        .get("/api/v1/parcels/{id}", Signed, Doc::json("A parcel", 200, "ParcelView"), api::parcels::parcel)
        .get(
            "/api/v1/parcels/{id}/history",
            Signed,
            Doc::json("A parcel's chain of custody", 200, "ParcelHistory"),
            api::parcels::parcel_history,
        )
        .get(
            "/api/v1/parcels/{id}/custody",
            Signed,
            Doc::json(
                "A parcel's chain of custody with inclusion proofs against a signed checkpoint",
                200,
                "CustodyView",
            ),
            api::audit::parcel_custody,
        )
        .post(
            "/api/v1/parcels/{id}/resend-code",
            Person,
            Doc::plain(
                "Send the recipient a new pickup code, retiring the old one (the recipient or \
                 staff; 3 a day per parcel, 10 per recipient): 202",
            ),
            api::parcels::resend_code,
        )
        .get(
            "/api/v1/parcels/{id}/pickup-qr",
            Person,
            Doc::json(
                "A QR pickup token for the recipient's own parcel, valid for 10 minutes (the \
                 recipient only)",
                200,
                "PickupQrView",
            ),
            api::qr::pickup_qr,
        )
        .post(
            "/api/v1/parcels/{id}/open",
            Person,
            Doc::json(
                "Open one's own compartment from the app, standing at the bank: with the code its \
                 kiosk shows now (the recipient only; wrong codes throttled per person)",
                200,
                "AppOpenView",
            )
            .taking("AppOpenRequest"),
            api::presence::open_from_app,
        )
        .post(
            "/api/v1/parcels/{id}/deposit",
            Carrier,
            Doc::json("Reserve a compartment and open it", 200, "DepositView")
                .taking("DepositRequest"),
            api::parcels::start_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/deposit/confirm",
            Carrier,
            Doc::json(
                "Confirm a deposit after the door closed; notifies the recipient",
                200,
                "ParcelView",
            ),
            api::parcels::confirm_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/deposit/cancel",
            Carrier,
            Doc::json("Abandon a deposit under way", 200, "ParcelView"),
            api::parcels::cancel_deposit,
        )
        .post(
            "/api/v1/parcels/{id}/return",
            Carrier,
            Doc::json("Take an expired parcel back", 200, "OpeningView"),
            api::parcels::return_to_carrier,
        )
        .post(
            "/api/v1/parcels/{id}/retrieve",
            Staff,
            Doc::json(
                "Take a parcel out, with a reason; past the remote-open budget it answers 202 \
                 with a request another member of staff approves",
                200,
                "OpeningView",
            )
                .taking("ReasonRequest"),
            api::parcels::retrieve,
        )
        .post(
            "/api/v1/parcels/{id}/recipient",
            Staff,
            Doc::json(
                "Name the resident a parcel is for, when the carrier's address matched none; \
                 a parcel already in its compartment is notified at once",
                200,
                "ParcelView",
            )
            .taking("AddressParcelRequest"),
            api::unaddressed::address,
        )
        .post(
            "/api/v1/compartments/{id}/open",
            Staff,
            Doc::json(
                "Open a compartment remotely, with a reason (needs a step-up); past the \
                 remote-open budget it answers 202 with a request another member of staff \
                 approves",
                200,
                "OpeningView",
            )
                .taking("ReasonRequest"),
            api::remote_opens::remote_open,
        )
        .post(
            "/api/v1/banks/{id}/bulk-open",
            Staff,
            Doc::list(
                "Open several compartments at once (needs a step-up); more than three, or past \
                 the remote-open budget, answer 202 with a request another member of staff \
                 approves",
                "OpeningView",
            )
            .taking("BulkOpenRequest"),
            api::bulk::bulk_open,
        )
        .get(
            "/api/v1/banks/{id}/lockdown",
            StaffRead,
            Doc::json("Whether the bank is locked down", 200, "LockdownView"),
            api::lockdown::lockdown,
        )
        .post(
            "/api/v1/banks/{id}/lockdown",
            Staff,
            Doc::json("Lock the bank down at once, with a reason", 200, "LockdownView")
                .taking("ReasonRequest"),
            api::lockdown::engage_lockdown,
        )
        .post(
            "/api/v1/banks/{id}/lockdown/lift",
            Staff,
            Doc::json(
                "Lift the lockdown (needs a step-up and a reason); 202 with a request another \
                 member of staff approves, unless approvals are off",
                200,
                "LockdownView",
            )
            .taking("ReasonRequest"),
            api::lockdown::lift_lockdown,
        )
        .get(
            "/api/v1/banks/{id}/sensors",
            StaffRead,
            Doc::json(
                "The bank's sensor settings: debounce rules and how long a door may stand open",
                200,
                "SensorSettingsView",
            ),
            api::sensors::sensor_settings,
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
            api::sensors::set_sensor_settings,
        )
        .get(
            "/api/v1/sites/{id}/alert-endpoints",
            StaffRead,
            Doc::list("Where the site's alerts are sent besides its staff", "AlertEndpointView"),
            api::fanout::alert_endpoints,
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
            api::fanout::add_alert_endpoint,
        )
        .delete(
            "/api/v1/alert-endpoints/{id}",
            Staff,
            Doc::list("Remove an alert endpoint (needs a step-up)", "AlertEndpointView"),
            api::fanout::remove_alert_endpoint,
        )
        .get(
            "/api/v1/sites/{id}/alert-deliveries",
            StaffRead,
            Doc::list(
                "The site's alert notifications, newest first (`?dead=true`: the dead-letter list)",
                "AlertDeliveryView",
            ),
            api::fanout::alert_deliveries,
        )
        .post(
            "/api/v1/alert-deliveries/{id}/retry",
            Staff,
            Doc::json(
                "Send a notification from the dead-letter list again",
                200,
                "AlertDeliveryView",
            ),
            api::fanout::retry_alert_delivery,
        )
        .get(
            "/api/v1/sites/{id}/lockdown-rules",
            StaffRead,
            Doc::list(
                "The site's lockdown rules: which new alerts lock down their bank or the site",
                "LockdownRuleView",
            ),
            api::lockdown::lockdown_rules,
        )
        .post(
            "/api/v1/sites/{id}/lockdown-rules",
            Staff,
            Doc::list(
                "Set the site's rule for a kind (or `any`), replacing it",
                "LockdownRuleView",
            )
            .taking("LockdownRuleView"),
            api::lockdown::set_lockdown_rule,
        )
        .delete(
            "/api/v1/sites/{id}/lockdown-rules/{kind}",
            Staff,
            Doc::list("Remove the site's rule for a kind (needs a step-up)", "LockdownRuleView"),
            api::lockdown::remove_lockdown_rule,
        )
        .get(
            "/api/v1/sites/{id}/alerts",
            StaffRead,
            Doc::list(
                "The site's alerts, newest first (`?live=true`: only those not resolved)",
                "AlertView",
            ),
            api::alerts::site_alerts,
        )
        .get(
            "/api/v1/alerts/{id}",
            StaffRead,
            Doc::json("An alert with its timeline", 200, "AlertDetailView"),
            api::alerts::alert,
        )
        .post(
            "/api/v1/alerts/{id}/acknowledge",
            Staff,
            Doc::json("Take an alert: it is yours from now on", 200, "AlertView"),
            api::alerts::acknowledge_alert,
        )
        .post(
            "/api/v1/alerts/{id}/notes",
            Staff,
            Doc::json("Add a note to an alert's timeline", 200, "AlertView").taking("NoteRequest"),
            api::alerts::note_alert,
        )
        .post(
            "/api/v1/alerts/{id}/resolve",
            Staff,
            Doc::json("Resolve an alert, saying what it was", 200, "AlertView")
                .taking("ReasonRequest"),
            api::alerts::resolve_alert,
        )
        .post(
            "/api/v1/alerts/{id}/export",
            StaffRead,
            Doc::plain(
                "Export an incident: the alert, its timeline and the audit entries around it with \
                 proofs (JSON lines, verified by `custody audit verify`); needs a step-up and a \
                 reason",
            )
            .taking("ReasonRequest"),
            api::incident::export_incident,
        )
        .get(
            "/api/v1/banks/{id}/devices",
            StaffRead,
            Doc::list("The bank's agent identities, newest first", "DeviceView"),
            api::devices::bank_devices,
        )
        .post(
            "/api/v1/devices/{id}/revoke",
            Staff,
            Doc::json(
                "Revoke an agent's identity (needs a step-up and a reason): its certificate is \
                 refused at the handshake and its live link ends",
                200,
                "DeviceView",
            )
            .taking("ReasonRequest"),
            api::devices::revoke_device,
        )
        .get(
            "/api/v1/sites",
            StaffRead,
            Doc::list("Sites in the caller's scope", "SiteView"),
            api::admin::sites,
        )
        .post(
            "/api/v1/sites",
            Staff,
            Doc::json("Create a site", 201, "SiteView").taking("CreateSiteRequest"),
            api::admin::create_site,
        )
        .get(
            "/api/v1/sites/{id}",
            StaffRead,
            Doc::json("A site with its banks and compartments", 200, "SiteView"),
            api::admin::site,
        )
        .post(
            "/api/v1/sites/{id}/banks",
            Staff,
            Doc::json("Create a bank", 201, "BankView").taking("CreateBankRequest"),
            api::admin::create_bank,
        )
        .get(
            "/api/v1/sites/{id}/unaddressed-parcels",
            StaffRead,
            Doc::list(
                "The site's parcels nobody is named for yet (the carrier's address matched no \
                 resident), still in its care, oldest first",
                "ParcelView",
            ),
            api::unaddressed::list,
        )
        .get(
            "/api/v1/sites/{id}/badges",
            StaffRead,
            Doc::list("The site's badges, revoked ones too (numbers never shown)", "BadgeView"),
            api::badges::badges,
        )
        .post(
            "/api/v1/sites/{id}/badges",
            Staff,
            Doc::json("Register a badge to a person of the site", 201, "BadgeView")
                .taking("RegisterBadgeRequest"),
            api::badges::register_badge,
        )
        .post(
            "/api/v1/sites/{id}/badges/import",
            Staff,
            Doc::list(
                "Register every badge of an access-control export (CSV), or none: 422 lists \
                 the lines at fault",
                "BadgeView",
            )
            .answering(201)
            .taking("ImportBadgesRequest"),
            api::badges::import_badges,
        )
        .post(
            "/api/v1/badges/{id}/revoke",
            Staff,
            Doc::json(
                "Revoke a badge; the site's kiosks refuse it from the next sync",
                200,
                "BadgeView",
            ),
            api::badges::revoke_badge,
        )
        .post(
            "/api/v1/banks/{id}/compartments",
            Staff,
            Doc::list("Add compartments", "CompartmentView").taking("CreateCompartmentsRequest"),
            api::admin::create_compartments,
        )
        .post(
            "/api/v1/banks/{id}/enrolment-tokens",
            Staff,
            Doc::json("Issue a single-use enrolment token", 201, "EnrolmentTokenView"),
            api::devices::create_enrolment_token,
        )
        .post(
            "/api/v1/people",
            Staff,
            Doc::json("Add a person", 201, "PersonView").taking("CreatePersonRequest"),
            api::admin::create_person,
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
            .taking("RoleChangeRequest"),
            api::admin::change_role,
        )
        .get(
            "/api/v1/approvals",
            Staff,
            Doc::list("Requests waiting for a second person", "ApprovalView"),
            api::approvals::approvals,
        )
        .post(
            "/api/v1/approvals/{id}/approve",
            Staff,
            Doc::json(
                "Approve a request (needs a step-up; not one's own): it runs",
                200,
                "ApprovalView",
            ),
            api::approvals::approve,
        )
        .post(
            "/api/v1/approvals/{id}/reject",
            Staff,
            Doc::json("Reject a request, or withdraw one's own", 200, "ApprovalView"),
            api::approvals::reject,
        )
        .post(
            "/api/v1/people/{id}/disable",
            Staff,
            Doc::plain("Disable a person; ends their sessions"),
            api::admin::disable_person,
        )
        .post(
            "/api/v1/carriers",
            Staff,
            Doc::json("Register a carrier", 201, "CarrierView").taking("CreateCarrierRequest"),
            api::admin::create_carrier,
        )
        .post(
            "/api/v1/carriers/{id}/api-keys",
            Staff,
            Doc::json("Issue an API key", 201, "ApiKeyIssued").taking("CreateApiKeyRequest"),
            api::admin::create_api_key,
        )
        .get(
            "/api/v1/carriers/{id}/api-keys",
            Staff,
            Doc::list("A carrier's keys, with their last use (never their secrets)", "ApiKeyView"),
            api::admin::api_keys,
        )
        .post(
            "/api/v1/api-keys/{id}/rotate",
            Staff,
            Doc::json(
                "Rotate a key (needs a step-up): the old one works until the overlap ends",
                201,
                "ApiKeyIssued",
            )
            .taking("RotateApiKeyRequest"),
            api::admin::rotate_api_key,
        )
        .post(
            "/api/v1/api-keys/{id}/revoke",
            Staff,
            Doc::plain("Revoke a key at once (needs a step-up)"),
            api::admin::revoke_api_key,
        )
        .post(
            "/api/v1/devices/enrol",
            Public,
            Doc::json("Enrol an agent with a single-use token and a CSR", 201, "EnrolResponse")
                .taking("EnrolRequest"),
            api::devices::enrol,
        )
        .get(
            "/api/v1/audit/key",
            Public,
            Doc::plain("The audit checkpoint verifier key (C2SP note verifier key)"),
            api::audit::audit_key,
        )
        .get(
            "/api/v1/audit/checkpoint",
            StaffRead,
            Doc::plain("The latest signed audit checkpoint (C2SP signed note)"),
            api::audit::audit_checkpoint,
        )
        .get(
            "/api/v1/audit/consistency",
            StaffRead,
            Doc::json(
                "A consistency proof between two log sizes (?old=&new=)",
                200,
                "ConsistencyView",
            ),
            api::audit::audit_consistency,
        )
        .post(
            "/api/v1/audit/export",
            StaffRead,
            Doc::plain(
                "Export a site's audit entries with proofs (JSON lines, as `custody audit \
                 export`); needs a step-up and a reason",
            )
            .taking("AuditExportRequest"),
            api::audit::audit_export,
        )
        .get("/", Public, Doc::plain("Redirect to the portal"), portal::root)
        .get("/static/custody.css", Public, Doc::plain("Style sheet"), portal::stylesheet)
        .get("/static/passkey.js", Public, Doc::plain("The passkey script"), portal::passkey_script)
        .get("/static/alerts.js", Public, Doc::plain("The live alert list's script"), alert_pages::script)
        .get("/portal/login", Public, Doc::plain("Sign-in page"), portal::login_page)
        .post("/portal/login", Public, Doc::plain("Sign in"), portal::login_submit)
        .post(
            "/portal/login/link",
            Public,
            Doc::plain("E-mail a sign-in link"),
            sign_in_links::request_page,
        )
        .get(
            "/portal/login/link",
            Public,
            Doc::plain("The page an e-mailed sign-in link opens"),
            sign_in_links::open_page,
        )
        .post(
            "/portal/login/link/redeem",
            Public,
            Doc::plain("Sign in with the link"),
            sign_in_links::redeem_page,
        )
        .post("/portal/logout", AnySession, Doc::plain("Sign out"), portal::logout)
        .get(
            "/portal/second-factor",
            AnySession,
            Doc::plain("The second-factor step, and step-up"),
            account_pages::second_factor,
        )
        .post(
            "/portal/second-factor",
            AnySession,
            Doc::plain("Prove a second factor"),
            account_pages::second_factor_submit,
        )
        .get("/portal/account", Person, Doc::plain("Factors and sessions"), account_pages::account)
        .post(
            "/portal/account/totp",
            AnySession,
            Doc::plain("Begin setting up an authenticator app"),
            account_pages::totp_begin,
        )
        .post(
            "/portal/account/totp/confirm",
            AnySession,
            Doc::plain("Confirm the authenticator app"),
            account_pages::totp_confirm,
        )
        .post(
            "/portal/account/totp/remove",
            Person,
            Doc::plain("Remove the authenticator app"),
            account_pages::totp_remove,
        )
        .post(
            "/portal/account/recovery-codes",
            Person,
            Doc::plain("New recovery codes"),
            account_pages::recovery_codes,
        )
        .post(
            "/portal/account/sessions/{id}/end",
            Person,
            Doc::plain("End a session"),
            account_pages::end_session,
        )
        .post(
            "/portal/account/sessions/end-others",
            Person,
            Doc::plain("End every other session"),
            account_pages::end_other_sessions,
        )
        .get("/portal", Person, Doc::plain("Overview"), portal::home)
        .get("/portal/sites/{id}", StaffRead, Doc::plain("A site"), portal::site)
        .get(
            "/portal/sites/{id}/alerts",
            StaffRead,
            Doc::plain("A site's live alerts"),
            alert_pages::alerts,
        )
        .get(
            "/portal/sites/{id}/alerts/live",
            StaffRead,
            Doc::plain("A site's live alerts as server-sent events (`alerts`: the list's rows)"),
            alert_pages::live,
        )
        .get(
            "/portal/alerts/{id}",
            StaffRead,
            Doc::plain("An alert and its timeline (where notifications link)"),
            alert_pages::alert,
        )
        .post(
            "/portal/alerts/{id}/acknowledge",
            Staff,
            Doc::plain("Acknowledge an alert from the list (form)"),
            alert_pages::acknowledge,
        )
        .post(
            "/portal/alerts/{id}/resolve",
            Staff,
            Doc::plain("Resolve an alert from the list, saying what it was (form)"),
            alert_pages::resolve,
        )
        .post(
            "/portal/parcels/{id}/recipient",
            Staff,
            Doc::plain("Name the resident a held parcel is for, from the site's page (form)"),
            portal::address_parcel,
        )
        .get(
            "/portal/parcels/{id}",
            Person,
            Doc::plain("A parcel and its chain of custody"),
            portal::parcel,
        )
        .post(
            "/portal/parcels/{id}/open",
            Person,
            Doc::plain("Open one's own compartment with the code the kiosk shows (form)"),
            portal::open_parcel,
        )
}

/// Every route of the public server with its access class.
pub fn routes_table() -> Vec<RouteInfo> {
    table().finish().1
}

async fn not_found() -> ApiError {
    ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Counts requests and their latency per route and status, with bounded labels (route
/// patterns, never ids).
async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    #[allow(clippy::disallowed_methods, reason = "the metrics adapter measures real latency")]
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("custody_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("custody_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Gives errors produced below the handlers (body limit, method not allowed) the API's JSON
/// error shape, so every 4xx is machine-readable.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            response.status(),
            "payload_too_large",
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .into_response(),
        http::StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            response.status(),
            "method_not_allowed",
            "this route does not take that method",
        )
        .into_response(),
        _ => response,
    }
}

/// The public router: API, portal, health, metrics.
pub fn router(state: ServerState) -> Router {
    let (api, _) = table().finish();
    let router = api
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(record))
        .with_state(state);
    headers::secure(router)
}

/// The device gateway's router.
pub fn gateway_router(state: ServerState) -> Router {
    Router::new()
        .route("/v1/link", axum::routing::get(gateway::link))
        .fallback(|| async { not_found().await.into_response() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTPS API and portal listen.
    pub public: SocketAddr,
    /// Where the device gateway listens.
    pub gateway: SocketAddr,
    /// Shared state (the app and the device hub).
    pub state: ServerState,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// TLS material and addresses for [`start`].
#[derive(Debug, Clone)]
pub struct Listen {
    /// Public HTTPS address.
    pub public: SocketAddr,
    /// Device gateway address.
    pub gateway: SocketAddr,
    /// Server certificate chain, PEM.
    pub cert_pem: String,
    /// Server key, PEM.
    pub key_pem: String,
    /// Reverse proxies in front of the public listener, whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Starts both listeners and the background workers.
pub async fn start(
    app: App,
    listen: Listen,
    metrics_token: Arc<str>,
    workers: outbox::Workers,
) -> std::io::Result<Running> {
    use custody_crypto::tls::{ClientAuth, server_config};
    let state = ServerState {
        app: app.clone(),
        hub: DeviceHub::default(),
        metrics: metrics_handle(),
        metrics_token,
        trusted_proxies: listen.trusted_proxies.clone().into(),
        allowed_hosts: workers
            .alerts
            .as_ref()
            .map(|s| s.webhooks.allowed().clone())
            .unwrap_or_default(),
        refusals: refusals::Refusals::new(app.clone()),
    };
    app.set_presence(Arc::new(state.hub.clone()));
    let public_tls = server_config(
        &listen.cert_pem,
        &listen.key_pem,
        &ClientAuth::None,
        &[b"h2", b"http/1.1"],
        app.clock(),
    )
    .map_err(std::io::Error::other)?;
    let gateway_tls = server_config(
        &listen.cert_pem,
        &listen.key_pem,
        &ClientAuth::Required { ca_pem: app.ca_pem().to_owned(), revoked: state.hub.revoked() },
        &[b"http/1.1"],
        app.clock(),
    )
    .map_err(std::io::Error::other)?;
    let public_listener = TcpListener::bind(listen.public).await?;
    let gateway_listener = TcpListener::bind(listen.gateway).await?;
    let (public, gateway) = (public_listener.local_addr()?, gateway_listener.local_addr()?);
    state.hub.refresh_revocations(&app).await;
    let refresher = state.clone();
    let mut tasks = vec![
        listen::serve(public_listener, public_tls, router(state.clone()), None),
        listen::serve(
            gateway_listener,
            gateway_tls,
            gateway_router(state.clone()),
            Some(state.refusals.clone()),
        ),
        // Revocations made elsewhere (the `custody` command, another server) reach this
        // server's handshake and live links within a minute.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REVOCATIONS_EVERY);
            loop {
                every.tick().await;
                refresher.hub.refresh_revocations(&refresher.app).await;
            }
        }),
    ];
    tasks.extend(workers.spawn(app, &state.hub, &state.refusals));
    tracing::info!(%public, %gateway, "serving");
    Ok(Running { public, gateway, state, tasks })
}

/// How often the revoked device certificates are read again.
pub const REVOCATIONS_EVERY: Duration = Duration::from_mins(1);

/// How often the sweeper expires parcels, releases stale reservations and retries
/// notifications.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

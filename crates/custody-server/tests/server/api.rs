//! The HTTP API over real TLS: every route × every role, bad input, headers, cookies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::collections::BTreeSet;

use custody_server::routes::{Access, RouteInfo};
use custody_testkit::server::{METRICS_TOKEN, SignedIn};
use custody_testkit::{TestServer, TestStore, backends, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Every route and its class. A route added to the server without a line here fails
/// `every_route_is_classified`; the role matrix below follows from the class.
const EXPECTED: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
    ("GET", "/metrics", Access::Metrics),
    ("GET", "/api/v1/openapi.json", Access::Public),
    ("POST", "/api/v1/sessions", Access::Public),
    ("POST", "/api/v1/sessions/link", Access::Public),
    ("POST", "/api/v1/sessions/link/redeem", Access::Public),
    ("POST", "/api/v1/sessions/passkey/begin", Access::Public),
    ("POST", "/api/v1/sessions/passkey/finish", Access::Public),
    ("DELETE", "/api/v1/sessions/current", Access::AnySession),
    ("POST", "/api/v1/sessions/current/factor", Access::AnySession),
    ("POST", "/api/v1/sessions/current/passkey/begin", Access::AnySession),
    ("POST", "/api/v1/sessions/current/passkey/finish", Access::AnySession),
    ("GET", "/api/v1/sessions", Access::Person),
    ("DELETE", "/api/v1/sessions/{id}", Access::Person),
    ("POST", "/api/v1/sessions/end-others", Access::Person),
    ("GET", "/api/v1/me", Access::Person),
    ("GET", "/api/v1/me/factors", Access::AnySession),
    ("POST", "/api/v1/me/totp", Access::AnySession),
    ("POST", "/api/v1/me/passkeys/begin", Access::AnySession),
    ("POST", "/api/v1/me/passkeys/finish", Access::AnySession),
    ("POST", "/api/v1/me/totp/confirm", Access::AnySession),
    ("DELETE", "/api/v1/me/totp", Access::Person),
    ("POST", "/api/v1/me/recovery-codes", Access::Person),
    ("GET", "/api/v1/parcels", Access::Signed),
    ("POST", "/api/v1/parcels", Access::Carrier),
    ("GET", "/api/v1/parcels/{id}", Access::Signed),
    ("GET", "/api/v1/parcels/{id}/history", Access::Signed),
    ("POST", "/api/v1/parcels/{id}/deposit", Access::Carrier),
    ("POST", "/api/v1/parcels/{id}/deposit/confirm", Access::Carrier),
    ("POST", "/api/v1/parcels/{id}/deposit/cancel", Access::Carrier),
    ("POST", "/api/v1/parcels/{id}/return", Access::Carrier),
    ("POST", "/api/v1/parcels/{id}/retrieve", Access::Staff),
    ("POST", "/api/v1/parcels/{id}/recipient", Access::Staff),
    ("POST", "/portal/parcels/{id}/recipient", Access::Staff),
    ("GET", "/api/v1/sites/{id}/unaddressed-parcels", Access::StaffRead),
    ("POST", "/api/v1/compartments/{id}/open", Access::Staff),
    ("POST", "/api/v1/banks/{id}/bulk-open", Access::Staff),
    ("POST", "/api/v1/parcels/{id}/resend-code", Access::Person),
    ("GET", "/api/v1/parcels/{id}/pickup-qr", Access::Person),
    ("POST", "/api/v1/parcels/{id}/open", Access::Person),
    ("GET", "/api/v1/me/alert-subscriptions", Access::Person),
    ("POST", "/api/v1/me/alert-subscriptions", Access::Person),
    ("DELETE", "/api/v1/me/alert-subscriptions/{site}/{channel}", Access::Person),
    ("GET", "/api/v1/me/courier-code", Access::Person),
    ("GET", "/api/v1/banks/{id}/lockdown", Access::StaffRead),
    ("POST", "/api/v1/banks/{id}/lockdown", Access::Staff),
    ("POST", "/api/v1/banks/{id}/lockdown/lift", Access::Staff),
    ("GET", "/api/v1/banks/{id}/sensors", Access::StaffRead),
    ("POST", "/api/v1/banks/{id}/sensors", Access::Staff),
    ("GET", "/api/v1/sites/{id}/retention", Access::StaffRead),
    ("POST", "/api/v1/sites/{id}/retention", Access::Staff),
    ("POST", "/api/v1/breaches", Access::Staff),
    ("GET", "/api/v1/breaches/{id}", Access::StaffRead),
    ("GET", "/api/v1/sites/{id}/breaches", Access::StaffRead),
    ("POST", "/api/v1/breaches/{id}/notices", Access::Staff),
    ("POST", "/api/v1/breaches/{id}/steps", Access::Staff),
    ("GET", "/api/v1/sites/{id}/alert-endpoints", Access::StaffRead),
    ("POST", "/api/v1/sites/{id}/alert-endpoints", Access::Staff),
    ("DELETE", "/api/v1/alert-endpoints/{id}", Access::Staff),
    ("GET", "/api/v1/sites/{id}/alert-deliveries", Access::StaffRead),
    ("POST", "/api/v1/alert-deliveries/{id}/retry", Access::Staff),
    ("GET", "/api/v1/sites/{id}/lockdown-rules", Access::StaffRead),
    ("POST", "/api/v1/sites/{id}/lockdown-rules", Access::Staff),
    ("DELETE", "/api/v1/sites/{id}/lockdown-rules/{kind}", Access::Staff),
    ("GET", "/api/v1/sites/{id}/alerts", Access::StaffRead),
    ("GET", "/api/v1/alerts/{id}", Access::StaffRead),
    ("POST", "/api/v1/alerts/{id}/acknowledge", Access::Staff),
    ("POST", "/api/v1/alerts/{id}/notes", Access::Staff),
    ("POST", "/api/v1/alerts/{id}/resolve", Access::Staff),
    ("POST", "/api/v1/alerts/{id}/export", Access::StaffRead),
    ("GET", "/api/v1/banks/{id}/devices", Access::StaffRead),
    ("POST", "/api/v1/devices/{id}/revoke", Access::Staff),
    ("GET", "/api/v1/sites/{id}/badges", Access::StaffRead),
    ("POST", "/api/v1/sites/{id}/badges", Access::Staff),
    ("POST", "/api/v1/sites/{id}/badges/import", Access::Staff),
    ("POST", "/api/v1/badges/{id}/revoke", Access::Staff),
    ("GET", "/api/v1/sites", Access::StaffRead),
    ("POST", "/api/v1/sites", Access::Staff),
    ("GET", "/api/v1/sites/{id}", Access::StaffRead),
    ("POST", "/api/v1/sites/{id}/banks", Access::Staff),
    ("POST", "/api/v1/banks/{id}/compartments", Access::Staff),
    ("POST", "/api/v1/banks/{id}/enrolment-tokens", Access::Staff),
    ("POST", "/api/v1/people", Access::Staff),
    ("POST", "/api/v1/people/{id}/role", Access::Staff),
    ("POST", "/api/v1/people/{id}/disable", Access::Staff),
    ("GET", "/api/v1/people/{id}/personal-data", Access::Staff),
    ("GET", "/api/v1/me/personal-data", Access::Person),
    ("GET", "/api/v1/approvals", Access::Staff),
    ("POST", "/api/v1/approvals/{id}/approve", Access::Staff),
    ("POST", "/api/v1/approvals/{id}/reject", Access::Staff),
    ("POST", "/api/v1/carriers", Access::Staff),
    ("POST", "/api/v1/carriers/{id}/api-keys", Access::Staff),
    ("GET", "/api/v1/carriers/{id}/api-keys", Access::Staff),
    ("POST", "/api/v1/api-keys/{id}/rotate", Access::Staff),
    ("POST", "/api/v1/api-keys/{id}/revoke", Access::Staff),
    ("GET", "/api/v1/parcels/{id}/custody", Access::Signed),
    ("GET", "/api/v1/audit/key", Access::Public),
    ("GET", "/api/v1/audit/checkpoint", Access::StaffRead),
    ("GET", "/api/v1/audit/consistency", Access::StaffRead),
    ("POST", "/api/v1/audit/export", Access::StaffRead),
    ("POST", "/api/v1/devices/enrol", Access::Public),
    ("GET", "/", Access::Public),
    ("GET", "/static/custody.css", Access::Public),
    ("GET", "/static/passkey.js", Access::Public),
    ("GET", "/static/alerts.js", Access::Public),
    ("GET", "/portal/login", Access::Public),
    ("POST", "/portal/login", Access::Public),
    ("POST", "/portal/login/link", Access::Public),
    ("GET", "/portal/login/link", Access::Public),
    ("POST", "/portal/login/link/redeem", Access::Public),
    ("POST", "/portal/logout", Access::AnySession),
    ("GET", "/portal/second-factor", Access::AnySession),
    ("POST", "/portal/second-factor", Access::AnySession),
    ("GET", "/portal/account", Access::Person),
    ("POST", "/portal/account/totp", Access::AnySession),
    ("POST", "/portal/account/totp/confirm", Access::AnySession),
    ("POST", "/portal/account/totp/remove", Access::Person),
    ("POST", "/portal/account/recovery-codes", Access::Person),
    ("POST", "/portal/account/sessions/{id}/end", Access::Person),
    ("POST", "/portal/account/sessions/end-others", Access::Person),
    ("GET", "/portal/account/personal-data", Access::Person),
    ("GET", "/portal", Access::Person),
    ("GET", "/portal/sites/{id}", Access::StaffRead),
    ("GET", "/portal/sites/{id}/alerts", Access::StaffRead),
    ("GET", "/portal/sites/{id}/alerts/live", Access::StaffRead),
    ("GET", "/portal/alerts/{id}", Access::StaffRead),
    ("GET", "/portal/sites/{id}/breaches", Access::StaffRead),
    ("GET", "/portal/breaches/{id}", Access::StaffRead),
    ("POST", "/portal/alerts/{id}/acknowledge", Access::Staff),
    ("POST", "/portal/alerts/{id}/resolve", Access::Staff),
    ("GET", "/portal/parcels/{id}", Access::Person),
    ("POST", "/portal/parcels/{id}/open", Access::Person),
];

#[test]
fn every_route_is_classified() {
    let actual: BTreeSet<(String, String, String)> = custody_server::routes_table()
        .iter()
        .map(|r: &RouteInfo| (r.method.to_string(), r.path.to_owned(), format!("{:?}", r.access)))
        .collect();
    let expected: BTreeSet<(String, String, String)> = EXPECTED
        .iter()
        .map(|(m, p, a)| ((*m).to_owned(), (*p).to_owned(), format!("{a:?}")))
        .collect();
    let unclassified: Vec<_> = actual.difference(&expected).collect();
    let stale: Vec<_> = expected.difference(&actual).collect();
    assert!(
        unclassified.is_empty(),
        "routes without (or with a different) classification in EXPECTED: {unclassified:?}"
    );
    assert!(stale.is_empty(), "EXPECTED lists routes the server does not have: {stale:?}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Anonymous,
    Resident,
    Courier,
    CarrierKey,
    Auditor,
    Admin,
    SuperAdmin,
    /// An admin who signed in with the password and has not proven a second factor yet.
    AdminSecondFactorMissing,
}

const ROLES: [Role; 8] = [
    Role::Anonymous,
    Role::Resident,
    Role::Courier,
    Role::CarrierKey,
    Role::Auditor,
    Role::Admin,
    Role::SuperAdmin,
    Role::AdminSecondFactorMissing,
];

fn allowed(access: Access, role: Role) -> bool {
    use Role::*;
    match access {
        Access::Public => true,
        Access::AnySession => {
            matches!(role, Resident | Courier | Auditor | Admin | SuperAdmin)
                || role == AdminSecondFactorMissing
        }
        Access::Person => matches!(role, Resident | Courier | Auditor | Admin | SuperAdmin),
        Access::Signed => !matches!(role, Anonymous | AdminSecondFactorMissing),
        Access::StaffRead => matches!(role, Auditor | Admin | SuperAdmin),
        Access::Staff => matches!(role, Admin | SuperAdmin),
        Access::Carrier => matches!(role, Courier | CarrierKey),
        Access::Metrics => false,
    }
}

struct Caller {
    client: reqwest::Client,
    csrf: Option<String>,
    bearer: Option<String>,
}

async fn caller(server: &TestServer, role: Role) -> Caller {
    let env = &server.env;
    let person = match role {
        Role::Anonymous => return Caller { client: server.client(), csrf: None, bearer: None },
        Role::CarrierKey => {
            return Caller {
                client: server.client(),
                csrf: None,
                bearer: Some(env.carrier_token.to_string()),
            };
        }
        Role::Resident => &env.ann,
        Role::Courier => &env.courier,
        Role::Auditor => &env.auditor,
        Role::Admin => &env.admin,
        Role::SuperAdmin => &env.super_admin,
        Role::AdminSecondFactorMissing => {
            let (SignedIn { client, csrf }, pending) =
                server.sign_in_with_password(&env.admin).await;
            assert!(
                pending,
                "an admin's password alone leaves the session at the second-factor step"
            );
            return Caller { client, csrf: Some(csrf), bearer: None };
        }
    };
    let SignedIn { client, csrf } = server.sign_in(person).await;
    Caller { client, csrf: Some(csrf), bearer: None }
}

/// Fills `{id}` with a real id of the kind the path expects, so allowed callers reach the
/// handler's logic.
fn concrete(server: &TestServer, path: &str, parcel: &str) -> String {
    let env = &server.env;
    let id = if path.starts_with("/api/v1/parcels/") || path.starts_with("/portal/parcels/") {
        parcel.to_owned()
    } else if path.starts_with("/api/v1/compartments/") {
        env.compartments[0].id.to_string()
    } else if path.starts_with("/api/v1/banks/") {
        env.bank.to_string()
    } else if path.starts_with("/api/v1/carriers/") {
        env.carrier.to_string()
    } else {
        env.site.to_string()
    };
    path.replace("{id}", &id)
}

async fn call(server: &TestServer, c: &Caller, method: &str, path: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = c.client.request(method.clone(), server.url(path));
    if let Some(token) = &c.bearer {
        request = request.bearer_auth(token);
    }
    if let Some(csrf) = &c.csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if method == Method::POST {
        request = request.json(&json!({}));
    }
    request.send().await.unwrap()
}

backends!(route_by_role_matrix, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let carrier = server.env.carrier().await;
    let parcel = server
        .env
        .app
        .expect_parcel(
            &carrier,
            custody_app::parcels::ParcelSpec {
                site: server.env.site.clone(),
                carrier: server.env.carrier.clone(),
                recipient_email: "ann@harbour.example".into(),
                tracking_ref: "T-1".into(),
                size: custody_core::compartment::SizeClass::Small,
                accessible: false,
                refrigerated: false,
            },
        )
        .await
        .unwrap()
        .id
        .to_string();
    let mut failures = Vec::new();
    for role in ROLES {
        let mut c = caller(&server, role).await;
        for &(method, pattern, access) in EXPECTED {
            let path = concrete(&server, pattern, &parcel);
            let response = call(&server, &c, method, &path).await;
            let status = response.status();
            let location = response.headers().get("location").cloned();
            let to_login = status == StatusCode::SEE_OTHER
                && location.as_ref().is_some_and(|l| l == "/portal/login");
            let to_second_factor = status == StatusCode::SEE_OTHER
                && location.as_ref().is_some_and(|l| l == "/portal/second-factor");
            // A handler that was reached may still ask for a step-up: that is the use case
            // answering, not the route refusing the caller.
            // A live stream never ends by itself: its status is its answer.
            let streaming =
                response.headers().get("content-type").is_some_and(|v| v == "text/event-stream");
            let body =
                if streaming { String::new() } else { response.text().await.unwrap_or_default() };
            let step_up = status == StatusCode::FORBIDDEN && body.contains("\"step_up_required\"");
            let denied = status == StatusCode::UNAUTHORIZED
                || (status == StatusCode::FORBIDDEN && !step_up)
                || to_login
                || to_second_factor;
            if allowed(access, role) == denied {
                failures.push(format!(
                    "{role:?} {method} {path}: {status} (allowed: {})",
                    allowed(access, role)
                ));
            }
            if role == Role::AdminSecondFactorMissing
                && !allowed(access, role)
                && path.starts_with("/api/")
                && !body.contains("\"second_factor_required\"")
            {
                failures.push(format!(
                    "password-only admin {method} {path}: {status} {body}, expected 403 second_factor_required"
                ));
            }
            if role == Role::Anonymous
                && !allowed(access, role)
                && !(status == StatusCode::UNAUTHORIZED || to_login)
            {
                failures.push(format!(
                    "anonymous {method} {path}: {status}, expected 401 or a redirect to sign in"
                ));
            }
            if let Some(problem) = undocumented(method, pattern, status) {
                failures.push(format!("{role:?} {method} {path}: {problem}"));
            }
            // Signing out ends the session the next routes need: sign in again.
            if pattern == "/api/v1/sessions/current" && allowed(access, role) {
                c = caller(&server, role).await;
            }
        }
    }
    assert!(failures.is_empty(), "route × role mismatches:\n{}", failures.join("\n"));
});

/// Whether the API document lists `status` among `method pattern`'s answers (pages and static
/// files are not in the document).
fn undocumented(method: &str, pattern: &str, status: StatusCode) -> Option<String> {
    let table = custody_server::routes_table();
    let route = table.iter().find(|r| r.method.as_str() == method && r.path == pattern)?;
    if !custody_server::openapi::documented(route) {
        return None;
    }
    let code = status.as_u16();
    let listed = code == route.doc.status
        || custody_server::openapi::statuses(route).iter().any(|(s, _)| *s == code);
    (!listed).then(|| format!("answered {status}, which the API document does not list"))
}

backends!(a_malformed_id_is_a_documented_400, |t: TestStore| async move {
    // Every route that takes an id in its path, called with one that cannot be an id: the
    // answer is documented, and without a body to read first it is 400 `invalid_id` (or the
    // caller's lack of a right to ask).
    let server = TestServer::start(t).await;
    let c = caller(&server, Role::SuperAdmin).await;
    let mut failures = Vec::new();
    let with_id =
        |p: &str| p.starts_with("/api/") && p.matches('{').count() == 1 && p.contains("{id}");
    for &(method, pattern, _) in EXPECTED.iter().filter(|(_, p, _)| with_id(p)) {
        let path = pattern.replace("{id}", "not-an-id");
        let response = call(&server, &c, method, &path).await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if let Some(problem) = undocumented(method, pattern, status) {
            failures.push(format!("{method} {path}: {problem}"));
        }
        let refused = status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED;
        let invalid_id = status == StatusCode::BAD_REQUEST && body.contains("\"invalid_id\"");
        if method != "POST" && !refused && !invalid_id {
            failures.push(format!("{method} {path}: {status} {body}, expected 400 invalid_id"));
        }
    }
    assert!(failures.is_empty(), "malformed ids:\n{}", failures.join("\n"));
});

backends!(every_signed_in_portal_form_needs_its_csrf_token, |t: TestStore| async move {
    // Each form a signed-in person posts, with the session's cookie but a forged token, or
    // none: refused before anything happens, and the session still stands afterwards.
    let server = TestServer::start(t).await;
    let c = caller(&server, Role::SuperAdmin).await;
    let parcel = "prc_0000000000000000000000000000";
    let mut failures = Vec::new();
    for &(method, pattern, access) in EXPECTED {
        if method != "POST" || !pattern.starts_with("/portal/") || access == Access::Public {
            continue;
        }
        let url = server.url(&concrete(&server, pattern, parcel));
        for form in [vec![("csrf", "forged")], vec![]] {
            let response = c.client.post(&url).form(&form).send().await.unwrap();
            if response.status() != StatusCode::FORBIDDEN {
                failures.push(format!("{pattern} with {form:?}: {}", response.status()));
            }
        }
    }
    assert!(failures.is_empty(), "forms taken without their token:\n{}", failures.join("\n"));
    let me = c.client.get(server.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK, "nothing was done: not even signing out");
});

/// The sensitive routes, with a body that is otherwise right: each needs a step-up.
fn sensitive(server: &TestServer, n: usize) -> Vec<(&'static str, String, Value)> {
    let env = &server.env;
    vec![
        (
            "remote open",
            format!("/api/v1/compartments/{}/open", env.compartments[2].id),
            json!({"reason": "step-up table"}),
        ),
        (
            "granting a role with power",
            "/api/v1/people".into(),
            json!({"email": format!("auditor{n}@acme.example"), "name": "New Auditor", "role": "auditor", "reason": "quarterly audit"}),
        ),
        (
            "issuing a carrier key",
            format!("/api/v1/carriers/{}/api-keys", env.carrier),
            json!({"label": format!("Depot {n}"), "sites": [env.site.to_string()], "reason": "new depot"}),
        ),
        (
            "exporting audit entries",
            "/api/v1/audit/export".into(),
            json!({"site": env.site.to_string(), "reason": format!("review {n}")}),
        ),
    ]
}

backends!(sensitive_routes_need_a_step_up, |t: TestStore| async move {
    // The route x role table's "step-up missing" column: an admin whose second factor is more
    // than five minutes old is asked for a fresh one on every sensitive route, and gets
    // through once they prove it again.
    let server = TestServer::start(t).await;
    let _agent = server.agent().await;
    let SignedIn { client, csrf } = server.sign_in(&server.env.super_admin).await;
    server.env.clock.advance(custody_core::time::minutes(6));
    let post = |path: &str, csrf: &str, body: &Value| {
        client.post(server.url(path)).header("x-csrf-token", csrf).json(body)
    };
    for (what, path, body) in sensitive(&server, 1) {
        let response = post(&path, &csrf, &body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "step_up_required", "{what}: {error}");
    }
    // The super-admin's factor is a passkey: proving it again is the step-up.
    let SignedIn { client, csrf } =
        server.prove_factor(&server.env.super_admin, SignedIn { client, csrf }).await;
    let post = |path: &str, csrf: &str, body: &Value| {
        client.post(server.url(path)).header("x-csrf-token", csrf).json(body)
    };
    for (what, path, body) in sensitive(&server, 2) {
        let response = post(&path, &csrf, &body).send().await.unwrap();
        assert!(response.status().is_success(), "{what}: {}", response.status());
    }
});

backends!(bad_input_gets_a_clear_4xx_and_changes_nothing, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let key = server.env.carrier_token.to_string();
    let client = server.client();
    let audit_len = || async {
        server
            .env
            .app
            .store()
            .read(|tx| Box::pin(async move { tx.audit_from(0, 100_000).await }))
            .await
            .unwrap()
            .len()
    };
    let before = audit_len().await;
    let post = |path: &str| client.post(server.url(path)).bearer_auth(&key);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("malformed id", client.get(server.url("/api/v1/parcels/prc_nope")).bearer_auth(&key), StatusCode::BAD_REQUEST, "invalid_id"),
        ("id of another kind", client.get(server.url(&format!("/api/v1/parcels/{}", server.env.site))).bearer_auth(&key), StatusCode::BAD_REQUEST, "invalid_id"),
        ("unknown field", post("/api/v1/parcels").json(&json!({"site": server.env.site.to_string(), "recipient_email": "ann@harbour.example", "tracking_ref": "x", "size": "small", "open_all": true})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("wrong content type", post("/api/v1/parcels").header("content-type", "text/plain").body("{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("malformed json", post("/api/v1/parcels").header("content-type", "application/json").body("{\"site\":"), StatusCode::BAD_REQUEST, "invalid_json"),
        ("oversized body", post("/api/v1/parcels").header("content-type", "application/json").body(format!("{{\"site\": \"{}\"}}", "x".repeat(70 * 1024))), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("bad size", post("/api/v1/parcels").json(&json!({"site": server.env.site.to_string(), "recipient_email": "ann@harbour.example", "tracking_ref": "x", "size": "huge"})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        ("unknown route", client.get(server.url("/api/v1/nothing")), StatusCode::NOT_FOUND, "not_found"),
        ("wrong method", client.put(server.url("/api/v1/parcels")).bearer_auth(&key), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("bad api key", client.get(server.url("/api/v1/parcels")).bearer_auth("key_x.y"), StatusCode::UNAUTHORIZED, "unauthenticated"),
        ("no credentials", client.get(server.url("/api/v1/parcels")), StatusCode::UNAUTHORIZED, "unauthenticated"),
    ];
    for (what, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let body: Value =
            response.json().await.unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    }
    // Refused API keys are audited; nothing else was written.
    assert_eq!(audit_len().await, before + 1, "only the bad API key left a trace");
});

backends!(a_bad_return_address_is_refused_before_the_code_is_spent, |t: TestStore| async move {
    // A `next` that would split the `Location` header (CR/LF) or leave the portal is refused
    // with a 4xx before anything else: the code is not spent and the session not rotated.
    let server = TestServer::start(t).await;
    let env = &server.env;
    let (SignedIn { client, csrf }, pending) = server.sign_in_with_password(&env.admin).await;
    assert!(pending);
    let code = env.totp_code(&env.admin);
    let prove = |next: &'static str| {
        let form = [("csrf", csrf.as_str()), ("totp", code.as_str()), ("next", next)];
        client.post(server.url("/portal/second-factor")).form(&form).send()
    };
    for bad in ["/portal/account\r\nSet-Cookie: x=y", "https://evil.example/", "/portal/\u{7f}"] {
        let refused = prove(bad).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        assert!(refused.headers().get("set-cookie").is_none(), "the session stays as it was");
        assert!(refused.text().await.unwrap().contains("not a page of this portal"));
    }
    let asked = client
        .get(server.url("/portal/second-factor?next=%2Fportal%0D%0ALocation%3A%20x"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The same code still proves the factor: nothing was spent.
    let proven = prove("/portal/account").await.unwrap();
    assert_eq!(proven.status(), StatusCode::SEE_OTHER);
    assert_eq!(proven.headers()["location"], "/portal/account");
});

backends!(no_malformed_request_makes_a_server_error, |t: TestStore| async move {
    // Every route, as each kind of caller, with ids, queries and bodies no client should send:
    // each answer is a 4xx (or a success), never a 5xx, and nothing reaches a header as it came.
    let server = TestServer::start(t).await;
    let _agent = server.agent().await;
    let callers = [Role::Anonymous, Role::Resident, Role::CarrierKey, Role::Admin];
    let ids = ["%0D%0ASet-Cookie:%20x", "prc_%00", &"x".repeat(400), "..%2F..%2Fkeys"];
    let query = "?next=%2Fportal%0D%0ALocation%3A%20x&live=maybe&limit=-1&dead=2&since=%FF";
    let bodies = |csrf: &str| -> [(&str, String); 6] {
        [
        ("application/json", "{\"reason\": ".into()),
        ("application/json", json!({"reason": "\u{0}\r\nX: y", "next": "/portal\r\nX: y", "compartments": [0, 65535], "email": "\u{202e}@x", "size": [], "role": {}}).to_string()),
        ("application/x-www-form-urlencoded", "csrf=x&next=%2Fportal%0D%0ALocation%3A%20x&totp=%00&reason=%FF%FE".into()),
        ("application/json", "[]".into()),
        // A portal form with the session's own CSRF token, so the handler itself meets it.
        ("application/x-www-form-urlencoded", format!("csrf={csrf}&reason=&note=%20&totp=1&recovery_code=&next=%2Fportal%0A&channel=pigeon&severity=dire")),
        // … and with nothing else, so forms that take only the token reach their use case
        // (removing an admin's only authenticator app, say, which the use case refuses).
        ("application/x-www-form-urlencoded", format!("csrf={csrf}")),
    ]
    };
    let mut errors = Vec::new();
    for role in callers {
        let c = caller(&server, role).await;
        let bodies = bodies(c.csrf.as_deref().unwrap_or_default());
        for &(method, pattern, _) in EXPECTED {
            // Signing out would end the session the next routes need.
            if ["/api/v1/sessions/current", "/portal/logout"].contains(&pattern) {
                continue;
            }
            let mut requests = Vec::new();
            for id in ids {
                requests.push((format!("{}{query}", pattern.replace("{id}", id)), 0));
            }
            for n in 0..bodies.len() {
                requests.push((concrete(&server, pattern, "prc_0000000000000000000000000000"), n));
            }
            for (path, body) in requests {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let mut request = c.client.request(method.clone(), server.url(&path));
                if let Some(token) = &c.bearer {
                    request = request.bearer_auth(token);
                }
                if let Some(csrf) = &c.csrf {
                    request = request.header("x-csrf-token", csrf);
                }
                if method == Method::POST {
                    let (kind, text) = &bodies[body];
                    request = request.header("content-type", *kind).body(text.clone());
                }
                let response = request.send().await.unwrap();
                if response.status().is_server_error() {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    errors.push(format!("{role:?} {method} {path} body {body}: {status} {text}"));
                }
            }
        }
    }
    assert!(errors.is_empty(), "server errors:\n{}", errors.join("\n"));
});

backends!(sessions_need_csrf_and_end_when_idle, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let admin = server.sign_in(&server.env.admin).await;
    let open = format!("/api/v1/compartments/{}/open", server.env.compartments[0].id);
    let body = json!({"reason": "cleaning crew"});
    let response = admin.client.post(server.url(&open)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "csrf_failed");
    let response = admin
        .client
        .post(server.url(&open))
        .header("x-csrf-token", "forged")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // With the token the request reaches the use case; the bank's agent is offline here.
    let response = admin
        .client
        .post(server.url(&open))
        .header("x-csrf-token", &admin.csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "bank_offline");
    assert_eq!(
        admin.client.get(server.url("/api/v1/me")).send().await.unwrap().status(),
        StatusCode::OK
    );
    server.env.clock.advance(custody_core::time::minutes(31));
    let response = admin.client.get(server.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "idle session ended");
});

backends!(cookies_and_security_headers, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let response = server
        .client()
        .post(server.url("/api/v1/sessions"))
        .json(&json!({"email": "admin@acme.example", "password": custody_testkit::env::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for part in ["__Host-custody-session=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(part), "cookie lacks {part}: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "__Host- cookies carry no Domain");
    for path in ["/healthz", "/api/v1/nothing", "/portal/login"] {
        let r = server.client().get(server.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["strict-transport-security"], "max-age=31536000; includeSubDomains", "{path}");
        assert!(
            h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }
    let wrong_password = server
        .client()
        .post(server.url("/api/v1/sessions"))
        .json(&json!({"email": "admin@acme.example", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong_password.headers().get("set-cookie").is_none());
    let unknown = server
        .client()
        .post(server.url("/api/v1/sessions"))
        .json(&json!({"email": "nobody@acme.example", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.text().await.unwrap(),
        wrong_password.text().await.unwrap(),
        "same answer for unknown accounts"
    );
});

#[tokio::test]
async fn health_metrics_and_openapi() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let c = server.client();
    assert_eq!(c.get(server.url("/healthz")).send().await.unwrap().text().await.unwrap(), "ok\n");
    let ready = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // The cryptographic module's mode is said, FIPS or not, as the build is.
    let said = ready.text().await.unwrap();
    let mode = if custody_crypto::fips::BUILT { "FIPS mode on" } else { "FIPS mode off" };
    assert!(said.starts_with("ready\n") && said.contains(mode), "{said}");
    assert_eq!(
        c.get(server.url("/metrics")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get(server.url("/metrics")).bearer_auth("guess").send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let metrics = c.get(server.url("/metrics")).bearer_auth(METRICS_TOKEN).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let scraped = metrics.text().await.unwrap();
    assert!(scraped.contains("custody_http_requests_total"));
    let gauge = format!("custody_fips_mode {}", u8::from(custody_crypto::fips::BUILT));
    assert!(scraped.contains(&gauge), "{scraped}");

    let doc: Value =
        c.get(server.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    for route in
        custody_server::routes_table().iter().filter(|r| custody_server::openapi::documented(r))
    {
        let method = route.method.as_str().to_lowercase();
        assert!(
            doc["paths"][route.path][&method].is_object(),
            "OpenAPI lacks {method} {}",
            route.path
        );
    }
    for schema in ["ParcelView", "ErrorBody", "EnrolRequest", "ConflictCode"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    // Every operation has an id of its own, and lists its answers.
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }
    // A 409 names its codes: the document lists every conflict code the app can answer.
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["ConflictCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in custody_app::conflicts::ConflictCode::ALL {
        assert!(listed.contains(code.as_str()), "ConflictCode lacks {}", code.as_str());
    }
}

#[tokio::test]
async fn tls_12_is_refused_on_the_public_port() {
    let server = TestServer::start(custody_testkit::sqlite_store().await).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in custody_crypto::pki::certs_from_pem(&server.env.data.server_ca_pem().unwrap()).unwrap()
    {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(custody_crypto::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.running.public).await.unwrap();
    let result =
        connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await;
    assert!(result.is_err(), "a TLS 1.2 handshake succeeded");
}

backends!(a_recipient_checks_custody_proofs_on_their_own, |t: TestStore| async move {
    use custody_audit::checkpoint::NoteVerifier;
    use custody_audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
    use data_encoding::{BASE64, HEXLOWER};

    let server = TestServer::start(t).await;
    let env = &server.env;
    let carrier = env.carrier().await;
    let spec = |email: &str| custody_app::parcels::ParcelSpec {
        site: env.site.clone(),
        carrier: env.carrier.clone(),
        recipient_email: email.into(),
        tracking_ref: "T-9".into(),
        size: custody_core::compartment::SizeClass::Small,
        accessible: false,
        refrigerated: false,
    };
    let mine = env.app.expect_parcel(&carrier, spec("ann@harbour.example")).await.unwrap().id;
    let theirs = env.app.expect_parcel(&carrier, spec("bob@harbour.example")).await.unwrap().id;
    let hashes = |v: &Value| -> Vec<Hash> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                Hash::try_from(HEXLOWER.decode(h.as_str().unwrap().as_bytes()).unwrap()).unwrap()
            })
            .collect()
    };

    // The key is public; the recipient pins it and checks everything against it.
    let key = server.client().get(server.url("/api/v1/audit/key")).send().await.unwrap();
    assert_eq!(key.status(), StatusCode::OK);
    let verifier = NoteVerifier::parse(key.text().await.unwrap().trim()).unwrap();

    let ann = server.sign_in(&env.ann).await;
    let response = ann
        .client
        .get(server.url(&format!("/api/v1/parcels/{mine}/custody")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.unwrap();
    let checkpoint =
        verifier.open_checkpoint(view["checkpoint"].as_str().unwrap(), verifier.name()).unwrap();
    let events = view["events"].as_array().unwrap();
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e["verified"], true);
        let bytes = BASE64.decode(e["entry"].as_str().unwrap().as_bytes()).unwrap();
        let index = e["index"].as_u64().unwrap();
        verify_inclusion(
            &leaf_hash(&bytes),
            index,
            checkpoint.size,
            &hashes(&e["proof"]),
            &checkpoint.root,
        )
        .expect("the proof leads to the signed root");
        // A proof for a different entry fails: the check is not a formality.
        let mut forged = bytes.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(
            verify_inclusion(
                &leaf_hash(&forged),
                index,
                checkpoint.size,
                &hashes(&e["proof"]),
                &checkpoint.root
            )
            .is_err()
        );
    }

    // Someone else's parcel is not hers to see, proofs or not.
    let response = ann
        .client
        .get(server.url(&format!("/api/v1/parcels/{theirs}/custody")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // An auditor proves the log only grew between an old checkpoint and a new one.
    let auditor = server.sign_in(&env.auditor).await;
    let old = checkpoint;
    env.app.expect_parcel(&carrier, spec("ann@harbour.example")).await.unwrap();
    let note = auditor.client.get(server.url("/api/v1/audit/checkpoint")).send().await.unwrap();
    let new = verifier.open_checkpoint(&note.text().await.unwrap(), verifier.name()).unwrap();
    assert!(new.size > old.size);
    let url = format!("/api/v1/audit/consistency?old={}&new={}", old.size, new.size);
    let proof: Value =
        auditor.client.get(server.url(&url)).send().await.unwrap().json().await.unwrap();
    verify_consistency(old.size, new.size, &hashes(&proof["proof"]), &old.root, &new.root)
        .expect("the new checkpoint extends the old one");
    for (bad, code) in [
        ("old=0&new=1", "invalid_request"),
        ("old=5&new=2", "invalid_request"),
        ("old=1&new=999999", "invalid_request"),
        ("old=x&new=2", "invalid_query"),
        ("old=1", "invalid_query"),
    ] {
        let response = auditor
            .client
            .get(server.url(&format!("/api/v1/audit/consistency?{bad}")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{bad}: {}", response.status());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }
});

backends!(residents_sign_in_by_link_in_the_browser_that_asked, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let (phone, laptop) = (server.client(), server.client());
    let asked = phone
        .post(server.url("/api/v1/sessions/link"))
        .json(&json!({"email": "ann@harbour.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let stranger = laptop
        .post(server.url("/api/v1/sessions/link"))
        .json(&json!({"email": "nobody@harbour.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::ACCEPTED, "the same answer for any address");
    let env = &server.env;
    let mail = std::sync::Mutex::new(Vec::new());
    eventually("the link's e-mail", || async {
        let rows = env.app.lease_messages(10).await.unwrap();
        let mut mail = mail.lock().unwrap();
        mail.extend(rows.iter().map(|r| env.app.open_message(r).unwrap()));
        !mail.is_empty()
    })
    .await;
    let mail = mail.into_inner().unwrap();
    assert_eq!(mail.len(), 1, "only the resident gets mail");
    let line = mail[0].body.lines().find(|l| l.starts_with("Sign in: ")).unwrap().to_owned();
    let token = line.split_once("token=").unwrap().1.trim().to_owned();
    // Another browser cannot use the link.
    let redeem = |client: &reqwest::Client| {
        client.post(server.url("/api/v1/sessions/link/redeem")).json(&json!({"token": token}))
    };
    assert_eq!(redeem(&laptop).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let signed_in = redeem(&phone).send().await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let cookies: Vec<String> = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(cookies.iter().any(|c| c.starts_with("__Host-custody-device=")), "{cookies:?}");
    let me: Value = phone.get(server.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "ann@harbour.example");
    assert_eq!(redeem(&phone).send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "once");
});

backends!(an_admin_registers_a_passkey_and_signs_in_with_it, |t: TestStore| async move {
    use webauthn_authenticator_rs::WebauthnAuthenticator as _;
    let server = TestServer::start(t).await;
    // The relying party is the configured public URL, whatever port the test listens on.
    let origin = webauthn_rs::prelude::Url::parse(&server.env.app.config().public_url).unwrap();
    let mut phone = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let SignedIn { client, csrf } = server.sign_in(&server.env.admin).await;
    let post = |path: &str, csrf: &str, body: Value| {
        client.post(server.url(path)).header("x-csrf-token", csrf).json(&body)
    };
    let begun: Value = post("/api/v1/me/passkeys/begin", &csrf, json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let options = serde_json::from_value(begun["options"].clone()).unwrap();
    let credential = phone.do_registration(origin.clone(), options).unwrap();
    let body = json!({"ceremony": begun["ceremony"], "credential": credential});
    let registered = post("/api/v1/me/passkeys/finish", &csrf, body).send().await.unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    // Next time: the password, then the passkey instead of a code.
    let (SignedIn { client, csrf }, pending) =
        server.sign_in_with_password(&server.env.admin).await;
    assert!(pending);
    let post = |path: &str, csrf: &str, body: Value| {
        client.post(server.url(path)).header("x-csrf-token", csrf).json(&body)
    };
    let begun: Value = post("/api/v1/sessions/current/passkey/begin", &csrf, json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let options = serde_json::from_value(begun["options"].clone()).unwrap();
    let assertion = phone.do_authentication(origin, options).unwrap();
    let body = json!({"ceremony": begun["ceremony"], "credential": assertion});
    let proven = post("/api/v1/sessions/current/passkey/finish", &csrf, body).send().await.unwrap();
    assert_eq!(proven.status(), StatusCode::OK);
    let view: Value = proven.json().await.unwrap();
    assert_eq!(view["second_factor_required"], false);
    let sites = client.get(server.url("/api/v1/sites")).send().await.unwrap();
    assert_eq!(sites.status(), StatusCode::OK, "the session now reaches an admin's routes");
});

backends!(
    a_lockdown_over_the_api_refuses_opens_until_two_people_lift_it,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let env = &server.env;
        let admin = server.sign_in(&env.admin).await;
        let post = |who: &SignedIn, path: String, body: Value| {
            who.client.post(server.url(&path)).header("x-csrf-token", &who.csrf).json(&body).send()
        };
        let lockdown = format!("/api/v1/banks/{}/lockdown", env.bank);
        let engaged =
            post(&admin, lockdown.clone(), json!({"reason": "pry alarm at 03:12"})).await.unwrap();
        assert_eq!(engaged.status(), StatusCode::OK);
        let state: Value =
            admin.client.get(server.url(&lockdown)).send().await.unwrap().json().await.unwrap();
        assert_eq!(state["locked_down"], true);
        assert_eq!(state["engaged_by"], env.admin.id.as_str());
        eventually("the agent engages its interlock", || async { agent.handle.is_interlocked() })
            .await;

        let open = format!("/api/v1/compartments/{}/open", env.compartments[2].id);
        let refused = post(&admin, open.clone(), json!({"reason": "inspection"})).await.unwrap();
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "locked_down");

        // Lifting: a step-up first (the factor is six minutes old), then a request for a second
        // person.
        env.clock.advance(custody_core::time::minutes(6));
        let lift = format!("{lockdown}/lift");
        let stale = post(&admin, lift.clone(), json!({"reason": "checked on site"})).await.unwrap();
        assert_eq!(stale.status(), StatusCode::FORBIDDEN);
        assert_eq!(stale.json::<Value>().await.unwrap()["error"]["code"], "step_up_required");
        let admin = server.sign_in(&env.admin).await;
        let asked = post(&admin, lift, json!({"reason": "checked on site"})).await.unwrap();
        assert_eq!(asked.status(), StatusCode::ACCEPTED);
        let request: Value = asked.json().await.unwrap();
        let approve = format!("/api/v1/approvals/{}/approve", request["id"].as_str().unwrap());
        let root = server.sign_in(&env.super_admin).await;
        let approved = post(&root, approve, json!({})).await.unwrap();
        assert!(approved.status().is_success(), "{}", approved.status());
        let state: Value =
            admin.client.get(server.url(&lockdown)).send().await.unwrap().json().await.unwrap();
        assert_eq!(state["locked_down"], false);
        eventually("the agent releases its interlock", || async { !agent.handle.is_interlocked() })
            .await;
        let opened = post(&admin, open, json!({"reason": "inspection"})).await.unwrap();
        assert_eq!(opened.status(), StatusCode::OK);
    }
);

backends!(
    past_the_budget_a_remote_open_waits_for_a_second_person_over_the_api,
    |t: TestStore| async move {
        // DESIGN.md §4 invariant 11 over HTTPS: four doors alone, then 202 and a request; the
        // door opens at the bank only once another member of staff approves.
        let server = TestServer::start(t).await;
        let agent = server.agent().await;
        let env = &server.env;
        let post = |who: &SignedIn, path: String, body: Value| {
            who.client.post(server.url(&path)).header("x-csrf-token", &who.csrf).json(&body).send()
        };
        let admin = server.sign_in(&env.admin).await;
        let open = |n: usize| format!("/api/v1/compartments/{}/open", env.compartments[n].id);
        for n in 0..4 {
            let opened = post(&admin, open(n), json!({"reason": "jammed door"})).await.unwrap();
            assert_eq!(opened.status(), StatusCode::OK);
        }
        let held = post(&admin, open(4), json!({"reason": "jammed door"})).await.unwrap();
        assert_eq!(held.status(), StatusCode::ACCEPTED);
        let request: Value = held.json().await.unwrap();
        assert_eq!(request["kind"], "remote_open");
        let number = env.compartments[4].number.get();
        assert_eq!(agent.bank.unlocks(number), 0, "nothing opened for the request");
        let root = server.sign_in(&env.super_admin).await;
        let approve = format!("/api/v1/approvals/{}/approve", request["id"].as_str().unwrap());
        let approved = post(&root, approve, json!({})).await.unwrap();
        assert!(approved.status().is_success(), "{}", approved.status());
        eventually("the approved door opens", || async { agent.bank.unlocks(number) == 1 }).await;
    }
);

backends!(an_alert_is_taken_noted_and_resolved_over_the_api, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let env = &server.env;
    agent.handle.sensor(custody_core::alert::AlertKind::Pry, Some(3)).await;
    let admin = server.sign_in(&env.admin).await;
    let list = format!("/api/v1/sites/{}/alerts?live=true", env.site);
    let get = |path: String| {
        let request = admin.client.get(server.url(&path));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    eventually("the pry is listed", || async {
        get(list.clone()).await.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let alerts = get(list.clone()).await;
    let id = alerts[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(alerts[0]["kind"], "pry");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["compartment"], 3);
    let post = |path: String, body: Value| {
        admin.client.post(server.url(&path)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let taken = post(format!("/api/v1/alerts/{id}/acknowledge"), json!({})).await.unwrap();
    assert_eq!(taken.status(), StatusCode::OK);
    assert_eq!(taken.json::<Value>().await.unwrap()["owner"], env.admin.id.as_str());
    let noted = post(format!("/api/v1/alerts/{id}/notes"), json!({"note": "guard sent"})).await;
    assert_eq!(noted.unwrap().status(), StatusCode::OK);
    let empty = post(format!("/api/v1/alerts/{id}/resolve"), json!({"reason": ""})).await;
    assert_eq!(empty.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done =
        post(format!("/api/v1/alerts/{id}/resolve"), json!({"reason": "a bird on the sensor"}));
    assert_eq!(done.await.unwrap().json::<Value>().await.unwrap()["state"], "resolved");
    let detail = get(format!("/api/v1/alerts/{id}")).await;
    let steps: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["raised", "acknowledged", "note", "resolved"]);
    assert_eq!(get(list).await, json!([]));

    // A resident reaches none of it; a made-up id is a clear error.
    let ann = server.sign_in(&env.ann).await;
    let theirs = ann.client.get(server.url(&format!("/api/v1/alerts/{id}"))).send().await;
    assert_eq!(theirs.unwrap().status(), StatusCode::FORBIDDEN);
    let bad = admin.client.get(server.url("/api/v1/alerts/prc_x")).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
});

// A rule set over the API: the agent's next pry locks its bank down, at the agent at once and
// at the server as the reading arrives.
backends!(a_rule_locks_the_bank_down_when_its_agent_reads_a_pry, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let agent = server.agent().await;
    let env = &server.env;
    let admin = server.sign_in(&env.admin).await;
    let rules = format!("/api/v1/sites/{}/lockdown-rules", env.site);
    let set = |body: Value| {
        admin.client.post(server.url(&rules)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let wrong = set(json!({"kind": "pry", "min_severity": "dire", "scope": "bank"})).await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = set(json!({"kind": "ghost", "min_severity": "high", "scope": "bank"})).await;
    assert_eq!(unknown.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let set = set(json!({"kind": "pry", "min_severity": "high", "scope": "bank"})).await.unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let listed: Value =
        admin.client.get(server.url(&rules)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed, json!([{"kind": "pry", "min_severity": "high", "scope": "bank"}]));

    assert!(!agent.handle.is_interlocked());
    agent.handle.sensor(custody_core::alert::AlertKind::Pry, Some(2)).await;
    eventually("the agent locks down", || async { agent.handle.is_interlocked() }).await;
    let lockdown = format!("/api/v1/banks/{}/lockdown", env.bank);
    let read = || async {
        let answer = admin.client.get(server.url(&lockdown)).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    eventually("the server locks down by the same rule", || async {
        read().await["locked_down"] == true
    })
    .await;
    let state = read().await;
    assert!(state["engaged_by"].as_str().unwrap().starts_with("alert:alr_"), "{state}");

    // Removing the rule needs a step-up: the session's factor is old by now.
    env.clock.advance(custody_core::time::minutes(6));
    let remove = admin
        .client
        .delete(server.url(&format!("{rules}/pry")))
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(remove.status(), StatusCode::FORBIDDEN);
});

// A bank's sensor settings over the API: bad figures are refused with what to change, good
// ones are stored and read back, and a change needs a fresh second factor.
backends!(a_banks_sensor_settings_are_set_over_the_api, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    let admin = server.sign_in(&env.admin).await;
    let path = format!("/api/v1/banks/{}/sensors", env.bank);
    let set = |body: Value| {
        admin.client.post(server.url(&path)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let get = || async {
        let answer = admin.client.get(server.url(&path)).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    assert_eq!(get().await, json!({"rules": [], "door_left_open_after_secs": 180}));
    let rule = |kind: &str, threshold: u32| json!({"kind": kind, "threshold": threshold, "window_ms": 20000, "quiet_ms": 60000});
    for (body, says) in [
        (json!({"rules": [rule("impact", 0)], "door_left_open_after_secs": 180}), "threshold"),
        (json!({"rules": [rule("brute_force", 1)], "door_left_open_after_secs": 180}), "sensor"),
        (json!({"rules": [], "door_left_open_after_secs": 5}), "door_left_open_after"),
    ] {
        let refused = set(body).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let text = refused.text().await.unwrap();
        assert!(text.contains(says), "{text}");
    }
    let wanted = json!({"rules": [rule("impact", 5)], "door_left_open_after_secs": 600});
    let stored = set(wanted.clone()).await.unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.json::<Value>().await.unwrap(), wanted);
    assert_eq!(get().await, wanted);

    // A resident sees none of it; an old second factor changes nothing.
    let ann = server.sign_in(&env.ann).await;
    let theirs = ann.client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    env.clock.advance(custody_core::time::minutes(6));
    let stale = set(json!({"rules": [], "door_left_open_after_secs": 180})).await.unwrap();
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    assert_eq!(get().await, wanted);
});

// A site's retention over the API: the defaults until set, a figure out of bounds refused
// naming the field, a change needing a fresh second factor, residents shown nothing.
backends!(a_sites_retention_is_set_over_the_api, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    let admin = server.sign_in(&env.admin).await;
    let path = format!("/api/v1/sites/{}/retention", env.site);
    let set = |body: Value| {
        admin.client.post(server.url(&path)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let get = || async {
        let answer = admin.client.get(server.url(&path)).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    let defaults =
        json!({"parcel_days": 90, "session_days": 30, "delivery_days": 30, "evidence_days": 90});
    assert_eq!(get().await, defaults);
    let refused = set(
        json!({"parcel_days": 0, "session_days": 30, "delivery_days": 30, "evidence_days": 90}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text().await.unwrap().contains("parcel_days"));
    let wanted =
        json!({"parcel_days": 14, "session_days": 7, "delivery_days": 7, "evidence_days": 30});
    let stored = set(wanted.clone()).await.unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.json::<Value>().await.unwrap(), wanted);
    assert_eq!(get().await, wanted);

    let ann = server.sign_in(&env.ann).await;
    let theirs = ann.client.get(server.url(&path)).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    env.clock.advance(custody_core::time::minutes(6));
    let stale = set(defaults).await.unwrap();
    assert_eq!(stale.status(), StatusCode::FORBIDDEN);
    assert_eq!(get().await, wanted);
});

// Subject access from both doors: the API's document, and the same as a file from the
// portal's account page; staff reach another person's through the API; each is audited.
backends!(a_person_downloads_everything_held_about_them, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    env.delivered(env.ann.email.as_str()).await;
    let ann = server.sign_in(&env.ann).await;
    let page = ann.client.get(server.url("/portal/account")).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("href=\"/portal/account/personal-data\""));
    let file = ann.client.get(server.url("/portal/account/personal-data")).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let disposition = file.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"custody-personal-data-"),
        "{disposition}"
    );
    assert_eq!(file.headers()["cache-control"], "no-store");
    let from_portal: Value = file.json().await.unwrap();
    assert_eq!(from_portal["format"], "custody-personal-data/1");
    assert_eq!(from_portal["person"]["email"], env.ann.email.as_str());
    assert_eq!(from_portal["parcels"].as_array().unwrap().len(), 1);
    assert!(from_portal["parcels"][0]["tracking_ref"].is_string());
    let from_api: Value = ann
        .client
        .get(server.url("/api/v1/me/personal-data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(from_api["person"], from_portal["person"]);
    assert_eq!(from_api["parcels"], from_portal["parcels"]);
    // The log's entries about her parcel are hers to see: its deposit and her notification.
    let actions: Vec<&str> = from_api["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"parcel.deposit") && actions.contains(&"parcel.notify"),
        "{actions:?}"
    );

    let admin = server.sign_in(&env.admin).await;
    let theirs = admin
        .client
        .get(server.url(&format!("/api/v1/people/{}/personal-data", env.ann.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::OK);
    // Bob cannot reach Ann's.
    let bob = server.sign_in(&env.bob).await;
    let refused = bob
        .client
        .get(server.url(&format!("/api/v1/people/{}/personal-data", env.ann.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let exports = env
        .log()
        .await
        .iter()
        .filter(|r| r.event.action == custody_core::audit::AuditAction::PersonalDataExport)
        .count();
    assert_eq!(exports, 3);
});

// A breach over the API: declared with times in RFC 3339 (a bad one named), read with its
// deadlines, its notices drafted, its steps recorded once and in order; residents see nothing.
backends!(a_breach_is_declared_and_answered_over_the_api, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    let from = rfc3339_of(env.app.now());
    env.delivered(env.ann.email.as_str()).await;
    let to = rfc3339_of(env.app.now());
    let found = to.clone();
    let admin = server.sign_in(&env.admin).await;
    let post = |path: String, body: Value| {
        admin.client.post(server.url(&path)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let declare = |window_to: &str| {
        json!({"site": env.site.to_string(), "summary": "A tablet with the portal open was stolen.",
               "window_from": from, "window_to": window_to, "discovered_at": found})
    };
    let bad = post("/api/v1/breaches".into(), declare("yesterday")).await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("window_to"));
    let made = post("/api/v1/breaches".into(), declare(&to)).await.unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    // Ann, whose parcel came in the window, among whoever else the log shows at the site then
    // (the seeded site's staff set it up at the same instant).
    assert!(made["affected"].as_u64().unwrap() >= 1, "{made}");
    assert!(made["deadlines"]["authority"].as_str().unwrap().ends_with('Z'));
    let listed: Value = admin
        .client
        .get(server.url(&format!("/api/v1/sites/{}/breaches", env.site)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], id.as_str());

    let notices: Value = post(format!("/api/v1/breaches/{id}/notices"), json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let to = notices["individuals"].as_array().unwrap();
    assert_eq!(to.len() as u64, made["affected"].as_u64().unwrap());
    assert!(to.iter().any(|n| n["email"] == env.ann.email.as_str()), "{notices}");
    let step = |name: &str| post(format!("/api/v1/breaches/{id}/steps"), json!({"step": name}));
    assert_eq!(step("told_someone").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(step("closed").await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(step("authority_notified").await.unwrap().status(), StatusCode::OK);
    assert_eq!(step("authority_notified").await.unwrap().status(), StatusCode::CONFLICT);
    let read: Value = admin
        .client
        .get(server.url(&format!("/api/v1/breaches/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["steps"][0]["step"], "authority_notified");

    let ann = server.sign_in(&env.ann).await;
    let theirs =
        ann.client.get(server.url(&format!("/api/v1/breaches/{id}"))).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
});

/// `t` as the API writes times.
fn rfc3339_of(t: custody_core::Timestamp) -> String {
    let secs = t.as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

// Alert webhooks over the API: private addresses in every spelling are refused with what to
// do, a public one is added with its secret shown once, listed without it, and removed with a
// step-up.
backends!(
    alert_webhooks_are_added_over_the_api_never_to_private_addresses,
    |t: TestStore| async move {
        let server = TestServer::start(t).await;
        let env = &server.env;
        let admin = server.sign_in(&env.admin).await;
        let path = format!("/api/v1/sites/{}/alert-endpoints", env.site);
        let add = |target: &str| {
            let body = json!({"channel": "webhook", "target": target, "min_severity": "high"});
            admin
                .client
                .post(server.url(&path))
                .header("x-csrf-token", &admin.csrf)
                .json(&body)
                .send()
        };
        for target in [
            "https://127.0.0.1/hook",
            "https://2130706433/hook",
            "https://0x7f000001/hook",
            "https://0177.0.0.1/hook",
            "https://[::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/hook",
            "https://192.168.0.10/hook",
            "https://172.20.0.1/hook",
            "http://hooks.example.org/hook",
            "ftp://hooks.example.org/hook",
        ] {
            let refused = add(target).await.unwrap();
            assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{target}");
        }
        // Every refusal is on the record, under the admin who gave the target (DESIGN.md §4
        // invariant 13): the first of each reason at once, the rest counted when the window
        // ends.
        server.running.state.refusals.flush().await;
        let from = format!(":from:{}", env.admin.id);
        eventually("the refused targets are on the record", || async {
            let counted: u64 = env
                .site_log(500)
                .await
                .iter()
                .filter(|r| r.event.action == custody_core::audit::AuditAction::EgressRefused)
                .filter_map(|r| r.event.reason.clone())
                .filter(|r| r.contains(&from))
                .map(|r| r.rsplit(":repeated:").next().and_then(|n| n.parse().ok()).unwrap_or(1))
                .sum();
            counted == 12
        })
        .await;
        let added = add("https://hooks.example.org/custody").await.unwrap();
        assert_eq!(added.status(), StatusCode::CREATED);
        let added: Value = added.json().await.unwrap();
        assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
        let id = added["endpoint"]["id"].as_str().unwrap().to_owned();
        let listed: Value =
            admin.client.get(server.url(&path)).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed[0]["target"], "https://hooks.example.org/custody");
        assert!(!listed.to_string().contains("whsec_"), "the secret is shown once");

        let deliveries = format!("/api/v1/sites/{}/alert-deliveries?dead=true", env.site);
        let dead: Value =
            admin.client.get(server.url(&deliveries)).send().await.unwrap().json().await.unwrap();
        assert_eq!(dead, json!([]));

        env.clock.advance(custody_core::time::minutes(6));
        let remove = |who: &SignedIn| {
            who.client
                .delete(server.url(&format!("/api/v1/alert-endpoints/{id}")))
                .header("x-csrf-token", &who.csrf)
                .send()
        };
        assert_eq!(remove(&admin).await.unwrap().status(), StatusCode::FORBIDDEN, "a stale factor");
        let fresh = server.sign_in(&env.admin).await;
        let removed = remove(&fresh).await.unwrap();
        assert_eq!(removed.status(), StatusCode::OK);
        assert_eq!(removed.json::<Value>().await.unwrap(), json!([]));
    }
);

backends!(badges_are_imported_listed_and_revoked_over_the_api, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    let admin = server.sign_in(&env.admin).await;
    let post = |who: &SignedIn, path: String, body: Value| {
        who.client.post(server.url(&path)).header("x-csrf-token", &who.csrf).json(&body).send()
    };
    let import = format!("/api/v1/sites/{}/badges/import", env.site);

    // One bad line stops the import and the answer names it; nothing is registered.
    let csv = "email,badge\nann@harbour.example,04A2B3C4D5E6F7\nbob@harbour.example,1234\n";
    let refused = post(&admin, import.clone(), json!({ "csv": csv })).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "badge_import");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 3") && message.contains("48 bits"), "{message}");

    let csv =
        "email,badge\nann@harbour.example,04A2B3C4D5E6F7\nbob@harbour.example,04A2B3C4D5E6F8\n";
    let imported = post(&admin, import.clone(), json!({ "csv": csv })).await.unwrap();
    assert_eq!(imported.status(), StatusCode::CREATED);
    let rows: Vec<Value> = imported.json().await.unwrap();
    assert_eq!(rows.len(), 2);
    let listed: Vec<Value> = admin
        .client
        .get(server.url(&format!("/api/v1/sites/{}/badges", env.site)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    // The numbers never come back: only their last four digits.
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains("04A2B3C4D5E6F7") && text.contains("\"E6F7\""), "{text}");

    let revoke = format!("/api/v1/badges/{}/revoke", rows[0]["id"].as_str().unwrap());
    let revoked = post(&admin, revoke.clone(), json!({})).await.unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(revoked.json::<Value>().await.unwrap()["revoked_at"].is_string());
    let again = post(&admin, revoke, json!({})).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // Residents do not manage badges; ids are checked before anything else.
    let ann = server.sign_in(&env.ann).await;
    let one = json!({"email": "ann@harbour.example", "badge": "04A2B3C4D5E6F9"});
    let path = format!("/api/v1/sites/{}/badges", env.site);
    let forbidden = post(&ann, path, one.clone()).await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let bad_id = post(&admin, "/api/v1/badges/nonsense/revoke".into(), json!({})).await.unwrap();
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
});

/// The next server-sent event's data on `stream` (comments, as keep-alives are, skipped);
/// `None` once the server ends the stream.
async fn next_event(stream: &mut reqwest::Response, buffer: &mut String) -> Option<String> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if block.lines().any(|l| l == "event: alerts") {
                return Some(data.join("\n"));
            }
            continue;
        }
        // Guards against a hang only: each event is due at once.
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), stream.chunk());
        match chunk.await.expect("an event in time").expect("the stream") {
            Some(bytes) => buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => return None,
        }
    }
}

// The portal's live list: the rows as the page shows them, again at each change, with forms to
// acknowledge and resolve for admins only; a page left open keeps no idle session alive.
backends!(
    the_live_alert_list_streams_each_change_until_the_session_ends,
    |t: TestStore| async move {
        use custody_app::alerts::AlertAt;
        use custody_core::alert::AlertKind;
        let server = TestServer::start(t).await;
        let env = &server.env;
        let live = format!("/portal/sites/{}/alerts/live", env.site);
        let admin = server.sign_in(&env.admin).await;
        let mut stream = admin.client.get(server.url(&live)).send().await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        assert_eq!(stream.headers()["cache-control"], "no-store");
        let mut buffer = String::new();
        let rows = next_event(&mut stream, &mut buffer).await.unwrap();
        assert!(rows.contains("No live alerts."), "{rows}");

        let place =
            AlertAt { site: env.site.clone(), bank: Some(env.bank.clone()), compartment: None };
        let id = env.app.raise_alert(AlertKind::DeviceOffline, place.clone()).await.unwrap();
        let rows = next_event(&mut stream, &mut buffer).await.unwrap();
        assert!(rows.contains(&format!("id=\"alert-{id}\"")) && rows.contains("device offline"));
        assert!(rows.contains("Lobby") && rows.contains(">open<"), "{rows}");
        assert!(rows.contains("/acknowledge") && rows.contains("/resolve"), "an admin may act");

        // An auditor reads the same list, with nothing to act with, and may not act.
        let auditor = server.sign_in(&env.auditor).await;
        let mut watching = auditor.client.get(server.url(&live)).send().await.unwrap();
        let seen = next_event(&mut watching, &mut String::new()).await.unwrap();
        assert!(seen.contains(&format!("alert-{id}")) && !seen.contains("<form"), "{seen}");
        let form = [("csrf", auditor.csrf.as_str())];
        let tried = auditor.client.post(server.url(&format!("/portal/alerts/{id}/acknowledge")));
        assert_eq!(tried.form(&form).send().await.unwrap().status(), StatusCode::FORBIDDEN);

        // A form without the session's CSRF token changes nothing; with it, the alert is Ada's.
        let ack = format!("/portal/alerts/{id}/acknowledge");
        let forged = admin.client.post(server.url(&ack)).form(&[("csrf", "forged")]).send().await;
        assert_eq!(forged.unwrap().status(), StatusCode::FORBIDDEN);
        let form = [("csrf", admin.csrf.as_str())];
        let taken = admin.client.post(server.url(&ack)).form(&form).send().await.unwrap();
        assert_eq!(taken.status(), StatusCode::SEE_OTHER);
        assert_eq!(taken.headers()["location"], format!("/portal/sites/{}/alerts", env.site));
        let rows = next_event(&mut stream, &mut buffer).await.unwrap();
        assert!(rows.contains(">acknowledged<") && rows.contains("Ada Admin"), "{rows}");
        assert!(!rows.contains("/acknowledge"), "taken once");
        let again = admin.client.post(server.url(&ack)).form(&form).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::CONFLICT, "a second acknowledgement is refused");

        // Its page, where every notification links: the alert and its timeline.
        let page = admin.client.get(server.url(&format!("/portal/alerts/{id}"))).send().await;
        let page = page.unwrap().text().await.unwrap();
        assert!(page.contains("<strong>raised</strong>"), "{page}");
        assert!(page.contains("<strong>acknowledged</strong>") && page.contains("id=\"resolve\""));
        let ann = server.sign_in(&env.ann).await;
        let theirs = ann.client.get(server.url(&format!("/portal/alerts/{id}"))).send().await;
        assert_eq!(theirs.unwrap().status(), StatusCode::FORBIDDEN);

        // Resolving needs a reason; with one, the alert leaves the live list.
        let resolve = format!("/portal/alerts/{id}/resolve");
        let bare = admin.client.post(server.url(&resolve)).form(&form).send().await.unwrap();
        assert_eq!(bare.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bare.text().await.unwrap().contains("alert-notice"));
        let reasoned = [
            ("csrf", admin.csrf.as_str()),
            ("reason", "a cable cut by the builders"),
            ("back", "alert"),
        ];
        let done = admin.client.post(server.url(&resolve)).form(&reasoned).send().await.unwrap();
        assert_eq!(done.status(), StatusCode::SEE_OTHER);
        assert_eq!(done.headers()["location"], format!("/portal/alerts/{id}"));
        let page = admin.client.get(server.url(&format!("/portal/alerts/{id}"))).send().await;
        let page = page.unwrap().text().await.unwrap();
        assert!(page.contains("<dd id=\"alert-state\">resolved</dd>"), "{page}");
        assert!(page.contains("<dd>Ada Admin</dd>"), "a resolved alert's owner by name: {page}");
        assert!(!page.contains("id=\"resolve\""), "nothing left to do");
        let rows = next_event(&mut stream, &mut buffer).await.unwrap();
        assert!(rows.contains("No live alerts."), "{rows}");

        // Left open past the idle timeout, the page's stream ends at the next change, and the
        // session it looked at is over: watching is not activity.
        let idle = env.app.config().session_idle;
        env.clock.advance(idle * 2 / 3);
        env.app.raise_alert(AlertKind::DeviceOffline, place.clone()).await.unwrap();
        let rows = next_event(&mut stream, &mut buffer).await.unwrap();
        assert!(rows.contains("device offline"), "{rows}");
        env.clock.advance(idle * 2 / 3);
        env.app.raise_alert(AlertKind::BruteForce, place).await.unwrap();
        assert_eq!(next_event(&mut stream, &mut buffer).await, None, "the stream ended");
        let page = admin.client.get(server.url(&format!("/portal/sites/{}/alerts", env.site)));
        let page = page.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::SEE_OTHER);
        assert_eq!(page.headers()["location"], "/portal/login");
    }
);

// Rule 6 of docs/SECURITY.md over HTTP: a carrier's key gets the same answer whether or not an
// address belongs to a resident, and the site's staff name the resident afterwards.
backends!(an_unknown_address_is_accepted_and_left_to_staff, |t: TestStore| async move {
    let server = TestServer::start(t).await;
    let env = &server.env;
    let key = env.carrier_token.to_string();
    let client = server.client();
    let announce = |email: &'static str| {
        let body = json!({"site": env.site.to_string(), "recipient_email": email,
                          "tracking_ref": "1Z999AA10123456784", "size": "small"});
        client.post(server.url("/api/v1/parcels")).bearer_auth(&key).json(&body).send()
    };
    // What differs between any two parcels anyway (their ids and times) left out.
    let shape = |mut v: Value| {
        for field in ["id", "created_at"] {
            v[field] = Value::Null;
        }
        v
    };
    let mut seen = Vec::new();
    for email in ["ann@harbour.example", "nobody@harbour.example"] {
        let answer = announce(email).await.unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED, "{email}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["recipient"].is_null(), "a carrier never sees the recipient: {body}");
        let path = format!("/api/v1/parcels/{}", body["id"].as_str().unwrap());
        let again: Value = client
            .get(server.url(&path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.push((shape(body.clone()), shape(again), body["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!((&seen[0].0, &seen[0].1), (&seen[1].0, &seen[1].1));

    let admin = server.sign_in(&env.admin).await;
    let list: Vec<Value> = admin
        .client
        .get(server.url(&format!("/api/v1/sites/{}/unaddressed-parcels", env.site)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"].as_str(), Some(seen[1].2.as_str()));
    let name = format!("/api/v1/parcels/{}/recipient", seen[1].2);
    let by_carrier = client
        .post(server.url(&name))
        .bearer_auth(&key)
        .json(&json!({"email": "bob@harbour.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_carrier.status(), StatusCode::UNAUTHORIZED, "a key is no staff session");
    let named = admin
        .client
        .post(server.url(&name))
        .header("x-csrf-token", &admin.csrf)
        .json(&json!({"email": "bob@harbour.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
    let named: Value = named.json().await.unwrap();
    assert_eq!(named["recipient"].as_str(), Some(env.bob.id.as_str()));

    // In the portal: the site's page lists a held parcel for its staff, and a manager names
    // the resident from there; an auditor sees the list with nothing to act with.
    let held: Value = announce("carol@harbour.example").await.unwrap().json().await.unwrap();
    let held = held["id"].as_str().unwrap();
    let site_page = format!("/portal/sites/{}", env.site);
    let auditor = server.sign_in(&env.auditor).await;
    let page = auditor.client.get(server.url(&site_page)).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Held for you") && page.contains(held), "{page}");
    assert!(!page.contains(&format!("/portal/parcels/{held}/recipient")), "{page}");
    let page = admin.client.get(server.url(&site_page)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains(&format!("/portal/parcels/{held}/recipient")));
    let form = |csrf: &str| [("csrf", csrf.to_owned()), ("email", "ann@harbour.example".into())];
    let action = server.url(&format!("/portal/parcels/{held}/recipient"));
    let forged = admin.client.post(action.clone()).form(&form("forged")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let done = admin.client.post(action).form(&form(&admin.csrf)).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], site_page);
    let page = admin.client.get(server.url(&site_page)).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("Held for you"), "named, no longer held");
});

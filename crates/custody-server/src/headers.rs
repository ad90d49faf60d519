//! Security headers on every response (ASVS 3.4).

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

/// Adds the headers; each says why it is there.
pub(crate) fn secure<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let headers: [(HeaderName, &'static str); 9] = [
        // Browsers use HTTPS only for a year, subdomains included (ASVS 3.4.1).
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"),
        // Pages load nothing from elsewhere and run no inline script (only the passkey script
        // served from here, which calls back only here); no framing (ASVS 3.4.3, 3.4.6).
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        // Declared content types are final; no sniffing a JSON error into HTML.
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Older browsers without frame-ancestors.
        (header::X_FRAME_OPTIONS, "DENY"),
        // Parcel and site ids in URLs stay here.
        (header::REFERRER_POLICY, "no-referrer"),
        // No window.opener games with other origins.
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        // Other origins cannot embed our responses.
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
        // The portal needs none of these.
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
        // Answers hold personal data: no shared or browser caches.
        (header::CACHE_CONTROL, "no-store"),
    ];
    headers.into_iter().fold(router, |r, (name, value)| {
        r.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)))
    })
}

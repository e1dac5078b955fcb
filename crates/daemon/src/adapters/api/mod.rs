//! The admin API: JSON over HTTPS under `/api/v1`. Every change goes through a service with
//! the authenticated administrator as its actor, so the Configuration Log is the audit trail.
//! Errors are JSON `{"error": {"code", "message", "fields": [{"field", "message"}]}}` with
//! stable codes. One route table ([`routes`]) builds both the router and the OpenAPI
//! document, so they cannot drift apart.

mod body_reader;
mod error;
mod extract;
mod handlers;
pub mod openapi;
pub mod routes;

pub use body_reader::BodyReader;
pub use error::ApiError;
pub(crate) use handlers::backup_download;

use crate::services::App;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use std::sync::Arc;

/// Largest request body; the biggest legitimate one is a certificates record.
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Requests served at once; more wait in the kernel's accept queue.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;
pub const API_PREFIX: &str = "/api/v1";
/// The largest upgrade image accepted: a root file system slot and its header.
pub const UPGRADE_IMAGE_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024 + 64 * 1024;
/// The header carrying an encrypted backup's password on `POST /api/v1/restore`.
pub const PASSWORD_HEADER: &str = "x-baton-backup-password";

/// Content types a page of another site can send without asking (an HTML form, or `fetch`
/// without a preflight): a browser holding cached Basic credentials would send them along.
const CROSS_SITE_CONTENT_TYPES: [&str; 3] =
    ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"];

/// Refuses a state-changing request that another site's page could have made: a form content
/// type (415), or an `Origin` other than this server's (403). No API operation changes state
/// on such a request, so a browser's cached credentials cannot reboot the appliance.
async fn refuse_cross_site(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse as _;
    let reads = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let authority = request.uri().authority().map(|authority| authority.as_str().to_owned());
    match cross_site_refusal(request.headers(), authority.as_deref()) {
        Some(refusal) if !reads => refusal.into_response(),
        _ => next.run(request).await,
    }
}

/// `authority`: the request's own host (HTTP/2 carries it in the URI, not in `Host`).
fn cross_site_refusal(
    headers: &axum::http::HeaderMap,
    authority: Option<&str>,
) -> Option<ApiError> {
    use axum::http::header;
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let mime = text(header::CONTENT_TYPE)
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase());
    if mime.as_deref().is_some_and(|mime| CROSS_SITE_CONTENT_TYPES.contains(&mime)) {
        let message = "the API takes JSON (or application/octet-stream uploads), never form data";
        return Some(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        ));
    }
    let origin = text(header::ORIGIN)?;
    let host = text(header::HOST).or(authority).unwrap_or_default();
    (origin != format!("https://{host}")).then(|| {
        let message = "requests from another site's pages are refused";
        ApiError::new(StatusCode::FORBIDDEN, "foreign_origin", message)
    })
}

/// The API's router, built from the route table.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for route in routes::table() {
        let handler = route.handler.layer(axum::Extension(route.access));
        router = router.route(&route.path, handler);
    }
    router
        // Under the API's prefix a JSON 404; elsewhere (a browser) a page in the layout.
        .fallback(crate::adapters::web::not_found)
        .layer(axum::middleware::from_fn(refuse_cross_site))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower::limit::ConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        .with_state(app)
}

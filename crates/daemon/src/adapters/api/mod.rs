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

/// The API's router, built from the route table.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for route in routes::table() {
        router = router.route(&route.path, route.handler);
    }
    router
        // Under the API's prefix a JSON 404; elsewhere (a browser) a page in the layout.
        .fallback(crate::adapters::web::not_found)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(tower::limit::ConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX))
        .with_state(app)
}

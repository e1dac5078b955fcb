//! The VCS's routes to the policy service (`POST /baton/policy`, `GET /baton/policy/status`)
//! and the bridges' event notifications, on the admin HTTPS listener and optionally on plain
//! HTTP: the request in, [`PolicyService`] decides, CPL (or a status line) out.

use crate::services::policy::PolicyService;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use policy::Decision;
use std::sync::Arc;

use crate::services::policy::{BRIDGE_EVENTS_PATH, POLICY_PATH, STATUS_PATH};

pub fn router(service: Arc<PolicyService>) -> Router {
    Router::new()
        .route(BRIDGE_EVENTS_PATH, post(bridge_event))
        .route(POLICY_PATH, post(decide))
        .route(STATUS_PATH, get(status))
        .layer(axum::extract::DefaultBodyLimit::max(policy::request::REQUEST_BYTES_MAX))
        .with_state(service)
}

#[derive(serde::Deserialize)]
struct EventQuery {
    bridge: String,
    token: String,
}

async fn bridge_event(
    Extract(service): Extract<Arc<PolicyService>>,
    axum::extract::Query(query): axum::extract::Query<EventQuery>,
    body: Bytes,
) -> Response {
    match service.bridge_event(&query.bridge, &query.token, &body) {
        Ok(()) => {
            let answer = bridges::xmlrpc::encode_response(&bridges::xmlrpc::Value::Struct(
                Default::default(),
            ));
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], answer).into_response()
        }
        Err(reason) => (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response(),
    }
}

async fn status(Extract(service): Extract<Arc<PolicyService>>) -> Response {
    match service.unavailable().await {
        None => (StatusCode::OK, "OK\n").into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {reason}\n")).into_response()
        }
    }
}

async fn decide(
    Extract(service): Extract<Arc<PolicyService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "));
    let authorised = match credentials {
        Some(credentials) => service.authorised(credentials).await,
        None => Ok(false),
    };
    let Ok(authorised) = authorised else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many password checks at once; try again\n")
            .into_response();
    };
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"baton policy\"")],
            "policy service credentials required\n",
        )
            .into_response();
    }
    let request = match policy::request::parse(&body) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let Some(decision) = service.answer(&request).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let cpl = match &decision {
        Decision::Route { url, .. } => policy::cpl::route(url),
        Decision::Reject(reason) => policy::cpl::reject(reason.status(), reason.text()),
        // `PolicyService::decide` never leaves a creation undone.
        Decision::Create { .. } => policy::cpl::reject(500, "Internal error"),
    };
    tracing::debug!(
        destination = request.destination_alias.as_deref().unwrap_or(""),
        serial = request.call_serial.as_deref().unwrap_or(""),
        ?decision,
        "policy decision"
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, policy::cpl::CONTENT_TYPE)], cpl).into_response()
}

//! The API's extractors: the authenticated administrator (session token or Basic), query
//! parameters and JSON bodies, each refused with the API's JSON error.

use super::routes::Access;
use super::{ApiError, BODY_BYTES_MAX};
use crate::base::clock::now_ms;
use crate::services::{App, Error, Input, accounts};
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use base64::Engine as _;
use model::record::AdminRole;
use serde_json::Value;
use std::sync::Arc;

/// An authenticated administrator, who may still have to change the factory password, and
/// whose role allows the route's [`Access`] (a read-only account is refused every change).
pub(super) struct Admin {
    pub name: String,
    pub must_change_password: bool,
    pub token: Option<String>,
    pub role: AdminRole,
}

/// An authenticated administrator allowed to do anything.
pub(super) struct Ready(pub(super) Admin);

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, ApiError> {
        let admin = authenticate(parts, app).await?;
        // A route the router did not mark is treated as a change: the safe side.
        let access = parts.extensions.get::<Access>().copied().unwrap_or(Access::FullAdministrator);
        if access == Access::FullAdministrator && admin.role == AdminRole::ReadOnly {
            return Err(ApiError::read_only_account());
        }
        Ok(admin)
    }
}

/// The account the request's credentials name.
async fn authenticate(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, ApiError> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(ApiError::unauthenticated)?;
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        let name = app.sessions.user(token, now_ms()).ok_or_else(ApiError::unauthenticated)?;
        let admin = accounts::lookup_admin(app, &name).ok_or_else(ApiError::unauthenticated)?;
        return Ok(Admin {
            name,
            must_change_password: admin.must_change_password,
            token: Some(token.to_owned()),
            role: admin.role,
        });
    }
    if let Some(encoded) = authorization.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(ApiError::unauthenticated)?;
        let (name, password) = decoded.split_once(':').ok_or_else(ApiError::unauthenticated)?;
        let source = crate::adapters::Source::from_request_parts(parts, app).await;
        let source = source.map_or(crate::services::logins::SOURCE_UNKNOWN, |source| source.0);
        let admin =
            accounts::check_password(app, source, name, password, accounts::Via::Api).await?;
        return Ok(Admin {
            name: admin.name,
            must_change_password: admin.must_change_password,
            token: None,
            role: admin.role,
        });
    }
    Err(ApiError::unauthenticated())
}

impl FromRequestParts<Arc<App>> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Ready, ApiError> {
        let admin = Admin::from_request_parts(parts, app).await?;
        if admin.must_change_password {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "the factory default password must be changed first: POST /api/v1/password",
            ));
        }
        Ok(Ready(admin))
    }
}

/// Query parameters, refused with a JSON error (naming the parameter) when they do not parse.
pub(super) struct Query<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let field = text.split('`').nth(1).filter(|_| text.contains(" field `"));
                Err(match field {
                    Some(field) => Error::field(Input::Query, field, text.clone()).into(),
                    None => Error::invalid(Input::Query, text).into(),
                })
            }
        }
    }
}

/// A JSON request body, refused with a JSON error when too large, not JSON, or not an object.
pub(super) struct JsonBody(pub(super) serde_json::Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<JsonBody, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value.split(';').next().is_some_and(|mime| mime.trim() == "application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {BODY_BYTES_MAX} bytes"),
            )
        };
        let declared_bytes = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        if declared_bytes.is_some_and(|bytes| bytes > BODY_BYTES_MAX) {
            crate::adapters::drain_refused(&mut request.into_body()).await;
            return Err(too_large());
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonBody(map)),
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body must be a JSON object",
            )),
            Err(error) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {error}"),
            )),
        }
    }
}

//! The API's error: the one place where the services' errors become HTTP status codes and the
//! stable codes of `{"error": {"code", "message", "fields"}}`.

use crate::services::cluster_join::JoinError;
use crate::services::upgrades::UpgradeError;
use crate::services::{Error, Input};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{FieldError, Rejection};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError { status, code, message: message.into(), fields: Vec::new() }
    }

    pub(crate) fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in with an administrator account",
        )
    }

    /// A change asked by a read-only account (403, nothing changed).
    pub(crate) fn read_only_account() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only_account",
            crate::services::accounts::READ_ONLY_REFUSAL,
        )
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the Event Log",
        )
    }

    /// The status code, for the web pages, which answer errors as HTML with the API's status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn fields(&self) -> &[FieldError] {
        &self.fields
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = ::api::ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            fields: self.fields,
        };
        let mut response = (self.status, Json(::api::ErrorAnswer { error })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"baton\""),
            );
        }
        response
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let message = error.to_string();
        let (status, code) = match error {
            Error::Rejected(rejection) => return rejection.into(),
            Error::Invalid { input, message, fields } => {
                let (status, code) = match input {
                    Input::Fields => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_fields"),
                    Input::Body => (StatusCode::BAD_REQUEST, "invalid_body"),
                    Input::UnknownField => (StatusCode::BAD_REQUEST, "unknown_field"),
                    Input::Query => (StatusCode::BAD_REQUEST, "invalid_query"),
                    Input::Header => (StatusCode::BAD_REQUEST, "invalid_header"),
                };
                return ApiError { status, code, message, fields };
            }
            Error::WrongPassword => return ApiError::unauthenticated(),
            Error::PasswordChecksBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::LoginThrottled { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            Error::NoHardwareSerial(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_hardware_serial"),
            Error::DatabaseStopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_stopped"),
            Error::OperationInProgress => (StatusCode::CONFLICT, "operation_in_progress"),
            Error::RestoreClustered(_) => (StatusCode::CONFLICT, "restore_clustered"),
            Error::BackupTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "backup_too_large"),
            Error::Backup(error) => match backup_code(&error) {
                Some(code) => (StatusCode::UNPROCESSABLE_ENTITY, code),
                None => return ApiError::internal(error),
            },
            Error::Upgrade(error) => return upgrade_error(error),
            Error::Join(error) => return join_error(error),
            Error::Internal(error) => return ApiError::internal(error),
        };
        ApiError::new(status, code, message)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let message = rejection.to_string();
        let (status, code) = match rejection {
            Rejection::Invalid { errors } => {
                return ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: "invalid_fields",
                    message,
                    fields: errors,
                };
            }
            Rejection::AlreadyExists { .. } => {
                return ApiError {
                    status: StatusCode::CONFLICT,
                    code: "already_exists",
                    message: format!("name: {message}"),
                    fields: vec![FieldError { field: "name".to_owned(), message }],
                };
            }
            Rejection::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Rejection::InUse { .. } => (StatusCode::CONFLICT, "in_use"),
            Rejection::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        };
        ApiError::new(status, code, message)
    }
}

/// The stable code of a refused backup archive; `None` for a failure here.
fn backup_code(error: &backup::Error) -> Option<&'static str> {
    use backup::Error as E;
    Some(match error {
        E::UnknownFormat { .. } => "backup_unknown_format",
        E::FormatTooNew { .. } => "backup_format_too_new",
        E::PasswordRequired => "backup_password_required",
        E::WrongPasswordOrTampered => "backup_wrong_password",
        E::Corrupt { .. } | E::BadVersion { .. } => "backup_corrupt",
        E::Truncated => "backup_truncated",
        E::UnsafeMember { .. } | E::BadExtraFile { .. } => "backup_unsafe_member",
        E::WrongSerial { .. } => "backup_other_machine",
        E::NewerSoftware { .. } => "backup_newer_software",
        _ => return None,
    })
}

fn upgrade_error(error: UpgradeError) -> ApiError {
    match error {
        UpgradeError::Upgrade(error) if error.is_refusal() => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "upgrade_refused", error.to_string())
        }
        UpgradeError::Busy => {
            ApiError::new(StatusCode::CONFLICT, "upgrade_busy", UpgradeError::Busy.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// The API's answer to a join that did not happen or did not finish.
fn join_error(error: JoinError) -> ApiError {
    use JoinError as E;
    let (status, code) = match &error {
        E::BadUrl => (StatusCode::BAD_REQUEST, "invalid_member_url"),
        E::NoAddress => (StatusCode::CONFLICT, "no_ipv4_address"),
        E::AlreadyClustered => (StatusCode::CONFLICT, "already_clustered"),
        E::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "member_unreachable"),
        E::FingerprintChanged { .. } => (StatusCode::CONFLICT, "member_certificate_changed"),
        E::WrongPassword => (StatusCode::UNPROCESSABLE_ENTITY, "member_wrong_password"),
        E::Member(_) => (StatusCode::UNPROCESSABLE_ENTITY, "member_refused"),
        E::Local(_) => (StatusCode::UNPROCESSABLE_ENTITY, "join_settings_refused"),
        E::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "join_refused"),
        E::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "join_timeout"),
        E::OtherMember { .. } => (StatusCode::CONFLICT, "other_member_unavailable"),
        E::Update { .. } => (StatusCode::BAD_GATEWAY, "member_update_failed"),
        E::Tls(_) => return ApiError::internal(error),
    };
    ApiError::new(status, code, error.to_string())
}

impl From<crate::store::ReadError> for ApiError {
    fn from(error: crate::store::ReadError) -> ApiError {
        Error::from(error).into()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        Error::from(error).into()
    }
}

//! The services' error: business rejections (the request or the appliance's state refuses
//! it; nothing changed) apart from infrastructure failures. Each rejection is a typed reason;
//! the JSON API maps them to status codes and stable codes, the web to pages.

use crate::services::{cluster_join::JoinError, upgrades::UpgradeError};
use model::{FieldError, Rejection};

/// Which part of a request is wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Input {
    /// Well-formed, but field values break the rules (the API's `invalid_fields`).
    Fields,
    /// The body does not have the expected shape (`invalid_body`).
    Body,
    /// The body names a field that does not exist (`unknown_field`).
    UnknownField,
    /// A query parameter does not parse or does not apply (`invalid_query`).
    Query,
    /// A header does not parse (`invalid_header`).
    Header,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration rules refused a command (`model::State::decide`).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The request is wrong; `fields` names each wrong field when known.
    #[error("{message}")]
    Invalid { input: Input, message: String, fields: Vec<FieldError> },
    /// The user name or password is wrong (or the account does not exist).
    #[error("wrong user name or password")]
    WrongPassword,
    /// Too many password checks at once (`base::passwords`): nothing was checked.
    #[error(transparent)]
    PasswordChecksBusy(#[from] crate::base::passwords::Busy),
    /// Too many failed logins from this address (or of this account from it): nothing was
    /// checked. Never a lock of the account: other addresses are not affected.
    #[error("too many failed logins; try again in {} s", retry_after_ms.div_ceil(1000))]
    LoginThrottled { retry_after_ms: u64 },
    /// This machine's hardware serial is unknown, so backups and restores are unavailable.
    #[error("{0}")]
    NoHardwareSerial(String),
    /// A backup or restore is already running.
    #[error("a backup or restore is already running; see GET /api/v1/backups/progress")]
    OperationInProgress,
    /// A restore on a peer that is in a cluster.
    #[error("{0}")]
    RestoreClustered(String),
    /// A restore upload over the size limit.
    #[error("restore uploads are limited to {limit_bytes} bytes")]
    BackupTooLarge { limit_bytes: u64 },
    /// A backup archive refused (or a restore that failed): [`backup::Error::is_refusal`].
    #[error(transparent)]
    Backup(backup::Error),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    Join(#[from] JoinError),
    /// This peer's database takes no more changes: a failed fsync (the change may or may not
    /// survive a restart; the `database_stopped` alarm says restart, see `Writer::stopped`), or
    /// batond stopping.
    #[error("{0}")]
    DatabaseStopped(String),
    /// An infrastructure failure: logged, and reported without detail.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A wrong field.
    pub fn field(input: Input, field: &str, message: impl Into<String>) -> Error {
        let message = message.into();
        Error::Invalid {
            input,
            message: format!("{field}: {message}"),
            fields: vec![FieldError { field: field.to_owned(), message }],
        }
    }

    /// A wrong request, no field named.
    pub fn invalid(input: Input, message: impl Into<String>) -> Error {
        Error::Invalid { input, message: message.into(), fields: Vec::new() }
    }

    /// The wrong fields, when the rules or the request named them.
    pub fn fields(&self) -> &[FieldError] {
        match self {
            Error::Rejected(Rejection::Invalid { errors }) => errors,
            Error::Invalid { fields, .. } => fields,
            _ => &[],
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Error {
        Error::Internal(error.to_string())
    }

    /// A JSON body serde refused; serde names the offending field between backticks
    /// ("unknown field `x`, expected …").
    pub fn body(error: &serde_json::Error) -> Error {
        let text = error.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"));
        let input =
            if text.starts_with("unknown field") { Input::UnknownField } else { Input::Body };
        match field {
            Some(field) => Error::Invalid {
                input,
                message: text.clone(),
                fields: vec![FieldError { field: field.to_owned(), message: text }],
            },
            None => Error::invalid(input, text),
        }
    }

    /// Whether the request or the appliance's state refused it (nothing changed), rather than
    /// an infrastructure failure.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Internal(_) | Error::DatabaseStopped(_) => false,
            Error::Backup(error) => error.is_refusal(),
            Error::Upgrade(UpgradeError::Upgrade(error)) => error.is_refusal(),
            Error::Upgrade(UpgradeError::Busy) => true,
            Error::Upgrade(_) => false,
            Error::Join(error) => error.is_refusal(),
            _ => true,
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(error: crate::store::StoreError) -> Error {
        match error {
            crate::store::StoreError::Rejected(rejection) => Error::Rejected(rejection),
            error @ crate::store::StoreError::NotDurable(_) => {
                Error::DatabaseStopped(error.to_string())
            }
            crate::store::StoreError::WriterGone => Error::DatabaseStopped(
                "this peer's database takes no more changes (batond is stopping, or its disk \
                 failed: see the alarms); the change may not have been saved"
                    .to_owned(),
            ),
            other => Error::internal(other),
        }
    }
}

impl From<crate::store::ReadError> for Error {
    fn from(error: crate::store::ReadError) -> Error {
        Error::internal(error)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(error: tokio::task::JoinError) -> Error {
        Error::internal(error)
    }
}

//! Sessions and passwords: `POST /api/v1/sessions` (log in), `DELETE /api/v1/sessions/current`
//! (log out, 204) and `POST /api/v1/password` (change one's own password).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/sessions`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// The answer (201) to [`LoginRequest`]: a bearer token for the following requests.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LoginAnswer {
    pub token: String,
    pub user: String,
    pub must_change_password: bool,
    pub idle_timeout_s: u64,
}

/// `POST /api/v1/password`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// A plain confirmation: `{"message": "password changed"}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

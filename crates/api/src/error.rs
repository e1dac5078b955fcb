//! Every refused or failed request: `{"error": {"code", "message", "fields"}}` with the HTTP
//! status the code belongs to. Clients decide on the `code`, never on the message text.

use model::FieldError;
use serde::{Deserialize, Serialize};

/// The body of every 4xx/5xx answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable and machine-readable: one of [`codes`].
    pub code: String,
    /// For people; a single-field error reads `field: message`.
    pub message: String,
    /// Each field's problem (empty when the error concerns no field).
    #[serde(default)]
    pub fields: Vec<FieldError>,
}

/// The error codes the daemon answers with.
pub mod codes {
    // Authentication and sessions.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    pub const PASSWORD_CHANGE_REQUIRED: &str = "password_change_required";
    pub const NO_SESSION: &str = "no_session";
    // Bodies and queries.
    pub const INVALID_BODY: &str = "invalid_body";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const INVALID_JSON: &str = "invalid_json";
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const INVALID_QUERY: &str = "invalid_query";
    pub const INVALID_HEADER: &str = "invalid_header";
    // Records.
    pub const INVALID_FIELDS: &str = "invalid_fields";
    pub const NOT_FOUND: &str = "not_found";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const IN_USE: &str = "in_use";
    pub const FORBIDDEN: &str = "forbidden";
    // Backups and restores.
    pub const NO_HARDWARE_SERIAL: &str = "no_hardware_serial";
    pub const OPERATION_IN_PROGRESS: &str = "operation_in_progress";
    pub const RESTORE_CLUSTERED: &str = "restore_clustered";
    pub const BACKUP_TOO_LARGE: &str = "backup_too_large";
    pub const BACKUP_UNKNOWN_FORMAT: &str = "backup_unknown_format";
    pub const BACKUP_FORMAT_TOO_NEW: &str = "backup_format_too_new";
    pub const BACKUP_PASSWORD_REQUIRED: &str = "backup_password_required";
    pub const BACKUP_WRONG_PASSWORD: &str = "backup_wrong_password";
    pub const BACKUP_CORRUPT: &str = "backup_corrupt";
    pub const BACKUP_TRUNCATED: &str = "backup_truncated";
    pub const BACKUP_UNSAFE_MEMBER: &str = "backup_unsafe_member";
    pub const BACKUP_OTHER_MACHINE: &str = "backup_other_machine";
    pub const BACKUP_NEWER_SOFTWARE: &str = "backup_newer_software";
    // Upgrades.
    pub const UPGRADE_REFUSED: &str = "upgrade_refused";
    pub const UPGRADE_BUSY: &str = "upgrade_busy";
    // Joining a cluster.
    pub const INVALID_MEMBER_URL: &str = "invalid_member_url";
    pub const NO_IPV4_ADDRESS: &str = "no_ipv4_address";
    pub const ALREADY_CLUSTERED: &str = "already_clustered";
    pub const MEMBER_UNREACHABLE: &str = "member_unreachable";
    pub const MEMBER_CERTIFICATE_CHANGED: &str = "member_certificate_changed";
    pub const MEMBER_WRONG_PASSWORD: &str = "member_wrong_password";
    pub const MEMBER_REFUSED: &str = "member_refused";
    pub const JOIN_SETTINGS_REFUSED: &str = "join_settings_refused";
    pub const JOIN_REFUSED: &str = "join_refused";
    pub const JOIN_TIMEOUT: &str = "join_timeout";
    pub const OTHER_MEMBER_UNAVAILABLE: &str = "other_member_unavailable";
    pub const MEMBER_UPDATE_FAILED: &str = "member_update_failed";
    // The appliance itself.
    /// The database takes no more changes: its disk failed (see the `database_stopped` alarm),
    /// or batond is stopping.
    pub const DATABASE_STOPPED: &str = "database_stopped";
    // Anything else.
    pub const INTERNAL: &str = "internal";
}

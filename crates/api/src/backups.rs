//! Backups and restores: `POST /api/v1/backups` (optional [`BackupRequest`]; the answer is the
//! archive, not JSON), `GET /api/v1/backups/progress` and `POST /api/v1/restore` (the archive
//! as the body, the password of an encrypted one in `X-Baton-Backup-Password`).

use crate::required;
use serde::{Deserialize, Serialize};

/// The header that carries an encrypted archive's password on a restore.
pub const PASSWORD_HEADER: &str = "x-baton-backup-password";

/// The optional body of `POST /api/v1/backups`: a password encrypts the archive.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `GET /api/v1/backups/progress`: the running (or last) backup or restore, `null` when there
/// was none since the daemon started.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BackupProgress {
    #[serde(deserialize_with = "required")]
    pub operation: Option<OperationProgress>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OperationProgress {
    pub operation: OperationKind,
    pub running: bool,
    pub done_bytes: u64,
    /// Uncompressed bytes of the archive's members; 0 until known.
    pub total_bytes: u64,
    pub started_ms: u64,
    /// `ok`, or the error that ended it; `null` while running.
    #[serde(deserialize_with = "required")]
    pub outcome: Option<String>,
}

/// What an outcome of `ok` reads as.
pub const OUTCOME_OK: &str = "ok";

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Backup,
    /// A backup the `backup_schedule` record made.
    #[serde(rename = "scheduled backup")]
    ScheduledBackup,
    Restore,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Backup => "backup",
            OperationKind::ScheduledBackup => "scheduled backup",
            OperationKind::Restore => "restore",
        }
    }
}

/// The answer to an applied restore.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Restored {
    /// `restored`.
    pub message: String,
    pub manifest: BackupManifest,
    /// Where the database replaced by the restore is kept.
    pub safety_database: String,
    #[serde(deserialize_with = "required")]
    pub safety_files_dir: Option<String>,
    /// The files (TLS identity, …) the restore put in place.
    pub files: Vec<String>,
}

/// A backup archive's manifest, as the `backup` crate writes it (`manifest.json`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub product: String,
    pub software_version: String,
    pub hardware_serial: String,
    pub created_at_ms: u64,
    /// The identity of the peer whose log this is.
    pub peer_id: String,
    pub heads: Vec<ChainHead>,
    /// Every member but the manifest, in archive order.
    pub members: Vec<ArchiveMember>,
}

/// The last event of one (origin, stream) chain, hex-encoded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainHead {
    pub origin: String,
    /// `shared` or `local`.
    pub stream: String,
    pub seq: u64,
    pub hash: String,
}

/// One archive member besides the manifest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ArchiveMember {
    pub name: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the member's contents.
    pub sha256: String,
}

//! Backup archives of a peer and their restore. Owns the archive format (a gzip tar whose first
//! member is `manifest.json`, optionally wrapped in password-based AES-256-GCM STREAM
//! encryption), the checks that decide whether an archive may be restored on this machine, and
//! the crash-safe swap of the restored database and files into the data directory
//! ([`Staged::commit`], finished or undone at start-up by [`recover`]).
//!
//! Must not depend on tokio, the network or the daemon, and must not interpret event payloads:
//! the database is copied and verified through `eventlog` only. It never reads the clock (times
//! are passed in) and touches nothing outside the paths its caller names. Restoring while the
//! peer is part of a cluster, reloading projections and stopping the writer are the caller's
//! business.

mod archive;
mod crypto;
mod manifest;
mod restore;
mod swap;

use std::path::{Path, PathBuf};

pub use archive::{
    BackupOptions, EXTRA_FILE_SIZE_MAX_BYTES, EXTRA_FILES_DIR, EXTRA_FILES_MAX, ExtraFile,
    GZIP_LEVEL, MEMBER_NAME_LENGTH_MAX_BYTES, write_backup,
};
pub use crypto::{DecryptingReader, EncryptingWriter, KdfParams};
pub use manifest::{ChainHead, MANIFEST_FORMAT_VERSION, Manifest, Member, PRODUCT};
pub use restore::{
    DATABASE_SIZE_MAX_BYTES, MANIFEST_SIZE_MAX_BYTES, STAGED_SIZE_MAX_BYTES, Staged, StagingTarget,
    inspect, stage_restore, stage_restore_deriving,
};
pub use swap::{Committed, RESTORE_JOURNAL_FILE, Recovery, recover};

/// The database file inside the data directory, and its member name in an archive.
pub const DATABASE_FILE: &str = "baton.db";
/// Where the hardware serial is read from: what qemu's `-smbios type=1,serial=…` sets.
pub const DMI_SERIAL_PATH: &str = "/sys/class/dmi/id/product_serial";
/// Development only: replaces the DMI serial (containers and laptops have none worth using).
/// An appliance never sets it; it is read so that `cargo xtask run` and tests work anywhere.
pub const HARDWARE_SERIAL_ENV: &str = "BATON_HARDWARE_SERIAL";

/// Bytes done of a total, for long backups and restores. Counts the uncompressed bytes of the
/// archive's members, the only total known in advance on both sides.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Everything that can go wrong; [`Error::is_refusal`] separates the operator's mistakes and
/// bad archives from failures of the machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Refusals: the archive or the operator's request is wrong; nothing was changed and
    // retrying the same thing will not help.
    #[error("this is not a Baton backup ({reason})")]
    UnknownFormat { reason: String },
    #[error("this backup has format version {found}; this software reads up to {supported}")]
    FormatTooNew { found: u32, supported: u32 },
    #[error("this backup is encrypted; give its password")]
    PasswordRequired,
    // With an authenticated cipher a wrong key and a modified first chunk fail alike; we say
    // both rather than guess.
    #[error("the password is wrong, or the backup was modified")]
    WrongPasswordOrTampered,
    #[error("the backup is corrupted or was modified: {reason}")]
    Corrupt { reason: String },
    #[error("the backup is truncated")]
    Truncated,
    #[error("archive member {name:?} is refused: {reason}")]
    UnsafeMember { name: String, reason: String },
    #[error(
        "this backup was made on the machine with serial {archive:?}; this is {this_machine:?}"
    )]
    WrongSerial { archive: String, this_machine: String },
    #[error("this backup was made by software version {archive}, newer than this one ({running})")]
    NewerSoftware { archive: String, running: String },
    #[error("{version:?} is not a version of the form x.y.z")]
    BadVersion { version: String },

    // The machine or the caller's set-up is not as needed.
    #[error("no hardware serial: {reason}")]
    NoHardwareSerial { reason: String },
    #[error("the staging directory {path} already exists; remove it first")]
    StagingExists { path: PathBuf },
    #[error("the staging directory and the data directory must be on the same file system")]
    StagingOnOtherFileSystem,
    #[error("{path} already exists")]
    SafetyCopyExists { path: PathBuf },
    #[error("{name:?} cannot be backed up: {reason}")]
    BadExtraFile { name: String, reason: String },
    #[error("the restore journal {path} is unreadable: {reason}")]
    BadJournal { path: PathBuf, reason: String },

    // Infrastructure failures.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("event log: {0}")]
    EventLog(#[from] eventlog::Error),
    #[error("key derivation: {0}")]
    Kdf(String),
    #[error("no randomness: {0}")]
    Random(String),
}

impl Error {
    /// Whether the operator's input caused this (a 4xx), as opposed to a failure of the machine.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::UnknownFormat { .. }
                | Error::FormatTooNew { .. }
                | Error::PasswordRequired
                | Error::WrongPasswordOrTampered
                | Error::Corrupt { .. }
                | Error::Truncated
                | Error::UnsafeMember { .. }
                | Error::WrongSerial { .. }
                | Error::NewerSoftware { .. }
                | Error::BadVersion { .. }
                | Error::BadExtraFile { .. }
        )
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_error(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context: context(), source }
}

/// This machine's hardware serial: [`HARDWARE_SERIAL_ENV`] if set (development only), else the
/// DMI product serial. Reading the DMI file needs root.
pub fn hardware_serial() -> Result<String, Error> {
    hardware_serial_from(std::env::var(HARDWARE_SERIAL_ENV).ok(), Path::new(DMI_SERIAL_PATH))
}

fn hardware_serial_from(override_value: Option<String>, dmi_path: &Path) -> Result<String, Error> {
    if let Some(value) = override_value {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::NoHardwareSerial {
                reason: format!("{HARDWARE_SERIAL_ENV} is set but empty"),
            });
        }
        return Ok(value.to_owned());
    }
    let text = std::fs::read_to_string(dmi_path).map_err(|error| Error::NoHardwareSerial {
        reason: format!("cannot read {}: {error}", dmi_path.display()),
    })?;
    let serial = text.trim();
    if serial.is_empty() {
        return Err(Error::NoHardwareSerial { reason: format!("{} is empty", dmi_path.display()) });
    }
    Ok(serial.to_owned())
}

/// `<version>_<serial>_<YYYYMMDD>_<HHMMSS>_backup.tar.gz` (UTC), `.enc` appended when
/// encrypted. Characters of the version or serial that are unsafe in a file name (or are the
/// `_` separator) become `-`.
pub fn file_name(
    software_version: &str,
    hardware_serial: &str,
    created_at_ms: u64,
    encrypted: bool,
) -> String {
    let (date, time) = utc_date_time(created_at_ms);
    let extension = if encrypted { "tar.gz.enc" } else { "tar.gz" };
    format!(
        "{}_{}_{date}_{time}_backup.{extension}",
        file_name_safe(software_version),
        file_name_safe(hardware_serial)
    )
}

fn file_name_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect()
}

/// (`YYYYMMDD`, `HHMMSS`) in UTC for a unix time in milliseconds.
pub(crate) fn utc_date_time(unix_ms: u64) -> (String, String) {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!(
            "{:02}{:02}{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        ),
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `x.y.z` as numbers ([`model::Version`]), ignoring a pre-release or build suffix
/// (`1.2.3-dev`, `1.2.3+abc`) that a development build may have written.
pub fn parse_version(version: &str) -> Result<(u64, u64, u64), Error> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parsed: model::Version =
        core.parse().map_err(|_| Error::BadVersion { version: version.to_owned() })?;
    Ok((parsed.major.into(), parsed.minor.into(), parsed.patch.into()))
}

#[cfg(test)]
mod tests;

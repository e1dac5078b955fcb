//! The admin API's contract (`/api/v1/...`): the request and answer bodies the daemon, `batonctl`
//! and the tests share, so a renamed or missing field is a compile error on one side or a clear
//! decoding error on the other, never an empty cell.
//!
//! The types serialize to exactly the JSON the daemon sends: field names, `null`s and omitted
//! fields included. Fields the daemon always sends, even as `null`, are required ([`required`]),
//! so a renamed field is an error. Answers ignore unknown fields and a field a release adds is
//! optional (`#[serde(default)]`), so one `batonctl` reads peers of two releases, as the rolling
//! upgrade needs; requests refuse unknown fields (an operator's typo is an error, not ignored).
//! Records travel as
//! [`model::Record`] (`{"kind": …, fields…}`, secrets redacted); only what has no schema of its
//! own (a Configuration Log entry's record versions, which may predate today's record types)
//! stays JSON. Each module names the routes its types belong to.

pub mod alarms;
pub mod backups;
pub mod cluster;
pub mod config;
pub mod error;
pub mod policy;
pub mod session;
pub mod status;
pub mod upgrade;

pub use alarms::{Alarm, AlarmAcknowledge, Alarms};
pub use backups::{ArchiveMember, BackupManifest, BackupProgress, BackupRequest, ChainHead};
pub use backups::{OperationKind, OperationProgress, Restored};
pub use cluster::{ClusterMode, ClusterStatus, JoinRequest, Joined, MemberCertificate};
pub use cluster::{MemberQuery, PeerFailure, PeerLine, PeerRefusal, PeerState};
pub use config::{AtQuery, ConfigAnswer, ConfigDiff, ConfigLogEntry, DiffQuery, EventLogEntry};
pub use config::{LogLevel, LogOrigin, LogQuery, Page, RecordChange};
pub use error::{ErrorAnswer, ErrorBody, codes};
pub use policy::PinRequest;
pub use policy::{AliasTried, BridgeWeighed, ExistingConference, ExplainQuery, ExplainedDecision};
pub use policy::{BridgeHealth, Explanation, LiveBridge, LiveConference, LiveConferences};
pub use policy::{LiveParticipant, PolicyStatus, PoolWeighed};
pub use session::{LoginAnswer, LoginRequest, Message, PasswordChange};
pub use status::{ConcernResult, ConcernStatus, Health, LogVerification, PlatformStatus, Status};
pub use upgrade::{BootControl, BootOutcome, Fallback, InstallProgress, Installed};
pub use upgrade::{UpgradeQuery, UpgradeStatus};

/// The path prefix of every admin API route.
pub const API_PREFIX: &str = "/api/v1";

/// `#[serde(deserialize_with = "required")]` on an `Option` field the daemon always sends (as
/// `null` when empty): without it serde reads a missing (e.g. renamed) field as `None`.
pub fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer)
}

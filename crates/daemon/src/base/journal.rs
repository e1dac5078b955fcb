//! The Event Log's entry kinds, one enum, so that a kind is spelled once: the kind names are
//! what operators filter on (`batonctl logs events --kind backup.`) and must not drift.

use eventlog::{Level, NewJournalEntry};

/// What happened, as the Event Log names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntryKind {
    DaemonStarted,
    DaemonStopped,
    LoginSucceeded,
    LoginFailed,
    Logout,
    PasswordChanged,
    BackupCreated,
    BackupScheduled,
    BackupFailed,
    RestoreApplied,
    RestoreRefused,
    RestoreFailed,
    RestoreRecovered,
    UpgradeInstalled,
    UpgradeRefused,
    SystemReboot,
    SystemShutdown,
    ServiceRestart,
    BootFellBack,
    BootUnreadable,
    ClusterJoined,
    ClusterJoinFailed,
    ConferenceCreatedTwice,
    ConferenceMoved,
    ConferenceRefused,
    BridgeDown,
    BridgeUp,
    ConfigWriteFailed,
    PlatformApplied,
    PlatformFailed,
    AlarmRaised,
    AlarmCleared,
    AlarmAcknowledged,
}

impl EntryKind {
    /// The kind's name in the Event Log (a storage and API contract).
    pub const fn as_str(self) -> &'static str {
        use EntryKind as K;
        match self {
            K::DaemonStarted => "daemon.started",
            K::DaemonStopped => "daemon.stopped",
            K::LoginSucceeded => "login.succeeded",
            K::LoginFailed => "login.failed",
            K::Logout => "logout",
            K::PasswordChanged => "password.changed",
            K::BackupCreated => "backup.created",
            K::BackupScheduled => "backup.scheduled",
            K::BackupFailed => "backup.failed",
            K::RestoreApplied => "restore.applied",
            K::RestoreRefused => "restore.refused",
            K::RestoreFailed => "restore.failed",
            K::RestoreRecovered => "restore.recovered",
            K::UpgradeInstalled => "upgrade.installed",
            K::UpgradeRefused => "upgrade.refused",
            K::SystemReboot => "system.reboot",
            K::SystemShutdown => "system.shutdown",
            K::ServiceRestart => "service.restart",
            K::BootFellBack => "boot.fell_back",
            K::BootUnreadable => "boot.unreadable",
            K::ClusterJoined => "cluster.joined",
            K::ClusterJoinFailed => "cluster.join_failed",
            K::ConferenceCreatedTwice => "conference.created_twice",
            K::ConferenceMoved => "conference.moved",
            K::ConferenceRefused => "conference.refused",
            K::BridgeDown => "bridge.down",
            K::BridgeUp => "bridge.up",
            K::ConfigWriteFailed => "config.write_failed",
            K::PlatformApplied => "platform.applied",
            K::PlatformFailed => "platform.failed",
            K::AlarmRaised => "alarm.raised",
            K::AlarmCleared => "alarm.cleared",
            K::AlarmAcknowledged => "alarm.acknowledged",
        }
    }
}

/// An Event Log entry stamped now.
pub fn entry(
    level: Level,
    kind: EntryKind,
    actor: Option<&str>,
    message: impl Into<String>,
) -> NewJournalEntry {
    entry_at(super::clock::now_ms(), level, kind, actor, message)
}

/// An Event Log entry stamped `at_ms`.
pub fn entry_at(
    at_ms: u64,
    level: Level,
    kind: EntryKind,
    actor: Option<&str>,
    message: impl Into<String>,
) -> NewJournalEntry {
    NewJournalEntry {
        at_ms,
        level,
        kind: kind.as_str().to_owned(),
        actor: actor.map(str::to_owned),
        message: message.into(),
    }
}

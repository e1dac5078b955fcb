//! Alarms: every alarm the appliance raises is defined here ([`AlarmId::definition`]), and
//! which are active is a pure function of the facts ([`evaluate`]). The conditions raise and
//! clear an alarm, never the operator: an acknowledgement only silences it (it stays listed,
//! marked acknowledged, and leaves the header's count). Raising, clearing and acknowledging
//! are written to the Event Log. The task that gathers the facts is [`spawn`].
//!
//! The metrics endpoint exports `baton_alarm_active{id=…,severity=…}` for every alarm of the
//! table (`services::metrics`).

use crate::base::clock::now_ms;
use crate::base::journal::{self, EntryKind};
use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use eventlog::Level;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the facts are gathered again, besides on a change of the configuration.
pub const EVALUATE_EVERY_MS: u64 = 10_000;
/// Least time between two gatherings: changes arriving meanwhile are taken together. A
/// gathering walks every bridge and asks timedatectl, and a busy cluster changes its state
/// hundreds of times a second (once per change, it took a core of the replication bench).
pub const EVALUATE_SPACING_MS: u64 = 250;
/// A peer's round-trip latency above this raises [`AlarmId::PeerLatency`].
pub const PEER_LATENCY_MAX_MS: u64 = 30;
/// A bridge using more than this share of its ports raises [`AlarmId::BridgePortsHigh`].
pub const BRIDGE_PORTS_USED_MAX_PERCENT: u8 = 80;
/// A certificate expiring within this many days raises [`AlarmId::CertificateExpiring`].
pub const CERTIFICATE_EXPIRY_WARNING_DAYS: u64 = 30;
/// A data partition fuller than this raises [`AlarmId::DataPartitionFull`].
pub const DATA_PARTITION_USED_MAX_PERCENT: u8 = 90;
/// A warning not seen again within this long is no longer repeating.
pub const REPEATED_WARNING_WINDOW_MS: u64 = 60_000;
/// Identical warnings logged before the repeats become one alarm instead of more log lines.
pub const REPEATED_WARNING_COUNT: u32 = 3;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Severity {
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// Every alarm the appliance knows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum AlarmId {
    FactoryPassword,
    NtpUnsynchronised,
    PeerFailed,
    PeerLatency,
    PeerVersionMismatch,
    BridgeDown,
    BridgePortsHigh,
    CertificateExpiring,
    DataPartitionFull,
    BackupsFailing,
    UpgradeFellBack,
    OsSettingFailed,
    RepeatedWarning,
    DatabaseStopped,
}

/// What an operator reads about an alarm.
pub struct Definition {
    /// Stable: the API, `batonctl` and the Event Log name the alarm by it.
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub action: &'static str,
}

/// The one table of alarms, in [`AlarmId`]'s order (a test checks it): id, severity, title,
/// what to do.
const TABLE: &[(AlarmId, &str, Severity, &str, &str)] = &[
    (
        AlarmId::FactoryPassword,
        "factory_password",
        Severity::Critical,
        "The factory administrator password is unchanged",
        "Change the administrator password (the password page under the user name, or `batonctl password`).",
    ),
    (
        AlarmId::NtpUnsynchronised,
        "ntp_unsynchronised",
        Severity::Error,
        "Time is not synchronised (NTP)",
        "Configure reachable NTP servers (System > Time); peers cluster only with synchronised time.",
    ),
    (
        AlarmId::PeerFailed,
        "peer_failed",
        Severity::Error,
        "A cluster peer failed or is unreachable",
        "Check the peer is running and reachable on the cluster port, and that both peers have the same pre-shared key and peer list.",
    ),
    (
        AlarmId::PeerLatency,
        "peer_latency",
        Severity::Warning,
        "A cluster peer's round-trip latency is above 30 ms",
        "Check the network path between the peers; clustered peers should be within 30 ms of each other.",
    ),
    (
        AlarmId::PeerVersionMismatch,
        "peer_version_mismatch",
        Severity::Error,
        "A cluster peer runs another software version",
        "Upgrade every peer of the cluster to the same version.",
    ),
    (
        AlarmId::BridgeDown,
        "bridge_down",
        Severity::Error,
        "A conference bridge is down or fails TLS",
        "Check the bridge is running, reachable, and presents a certificate this peer trusts; calls go to the other bridges meanwhile.",
    ),
    (
        AlarmId::BridgePortsHigh,
        "bridge_ports_high",
        Severity::Warning,
        "A conference bridge uses more than 80% of its ports",
        "Add bridges to the pool or move conferences; new conferences go to the bridges with most free ports.",
    ),
    (
        AlarmId::CertificateExpiring,
        "certificate_expiring",
        Severity::Warning,
        "The HTTPS certificate expires within 30 days",
        "Install a new certificate (Maintenance > Security certificates).",
    ),
    (
        AlarmId::DataPartitionFull,
        "data_partition_full",
        Severity::Critical,
        "The data partition is more than 90% full",
        "Delete old scheduled backups or move them off the appliance.",
    ),
    (
        AlarmId::BackupsFailing,
        "backups_failing",
        Severity::Error,
        "Scheduled backups are failing",
        "Read the Event Log's backup.failed entries and fix the backup folder or its password.",
    ),
    (
        AlarmId::UpgradeFellBack,
        "upgrade_fell_back",
        Severity::Error,
        "The last upgrade fell back to the previous version",
        "Read Maintenance > Upgrade for why the new version did not start, then install it again or another.",
    ),
    (
        AlarmId::OsSettingFailed,
        "os_setting_failed",
        Severity::Error,
        "An operating-system setting could not be applied",
        "Read the Status page's platform results and correct the setting.",
    ),
    (
        AlarmId::RepeatedWarning,
        "repeated_warning",
        Severity::Warning,
        "The same warning keeps repeating",
        "Read the warning and fix its cause; it is shown once here instead of filling the Event Log.",
    ),
    (
        AlarmId::DatabaseStopped,
        "database_stopped",
        Severity::Critical,
        "This peer's database takes no more changes",
        "The data disk failed to keep a change, so this peer stopped writing rather than lose one: check the disk, then restart the appliance, which reads back what the disk holds. The other peers of a cluster keep serving meanwhile.",
    ),
];

impl AlarmId {
    pub const ALL: &'static [AlarmId] = &[
        AlarmId::FactoryPassword,
        AlarmId::NtpUnsynchronised,
        AlarmId::PeerFailed,
        AlarmId::PeerLatency,
        AlarmId::PeerVersionMismatch,
        AlarmId::BridgeDown,
        AlarmId::BridgePortsHigh,
        AlarmId::CertificateExpiring,
        AlarmId::DataPartitionFull,
        AlarmId::BackupsFailing,
        AlarmId::UpgradeFellBack,
        AlarmId::OsSettingFailed,
        AlarmId::RepeatedWarning,
        AlarmId::DatabaseStopped,
    ];

    /// What the operator reads about this alarm ([`TABLE`]).
    pub const fn definition(self) -> Definition {
        let (_, id, severity, title, action) = TABLE[self as usize];
        Definition { id, severity, title, action }
    }

    /// The alarm whose stable id is `id`.
    pub fn from_id(id: &str) -> Option<AlarmId> {
        AlarmId::ALL.iter().copied().find(|alarm| alarm.definition().id == id)
    }
}

/// A cluster peer as the alarms see it.
#[derive(Clone, Default, Debug)]
pub struct PeerFacts {
    pub address: String,
    /// Why it is not active, when it is not.
    pub failure: Option<String>,
    pub latency_ms: Option<u64>,
    /// Its software version, when it differs from ours.
    pub other_version: Option<String>,
}

/// A conference bridge as the alarms see it.
#[derive(Clone, Default, Debug)]
pub struct BridgeFacts {
    pub name: String,
    /// Why it is out of selection (down, TLS), when it is.
    pub problem: Option<String>,
    pub ports_used_percent: Option<u8>,
}

/// Everything the alarms are decided from. `None` is "not known", which raises nothing.
#[derive(Clone, Default, Debug)]
pub struct Facts {
    pub factory_password_unchanged: bool,
    /// Whether NTP says the clock is synchronised, or why it cannot tell.
    pub time_synchronised: Option<Result<bool, String>>,
    pub peers: Vec<PeerFacts>,
    pub bridges: Vec<BridgeFacts>,
    pub certificate_expires_in_days: Option<u64>,
    pub data_partition_used_percent: Option<u8>,
    /// The last scheduled backup's failure, while the latest attempt failed.
    pub backup_failure: Option<String>,
    /// How the last boot fell back, when it did.
    pub upgrade_fell_back: Option<String>,
    /// OS concern → why applying it failed.
    pub os_settings_failed: BTreeMap<String, String>,
    /// Warnings (source, text) repeated more than [`REPEATED_WARNING_COUNT`] times lately.
    pub repeated_warnings: Vec<(String, String)>,
    /// Why the store's writer stopped taking changes, if it did (`Writer::stopped`).
    pub database_stopped: Option<String>,
}

/// One active alarm: which, about what (a peer, a bridge, a concern; empty when the alarm is
/// about the appliance as a whole), and the detail the operator reads.
pub type Key = (AlarmId, String);

/// The alarms `facts` raise, keyed by (alarm, subject), with their detail.
pub fn evaluate(facts: &Facts) -> BTreeMap<Key, String> {
    let mut active = BTreeMap::new();
    let mut raise = |id, subject: &str, detail: String| {
        active.insert((id, subject.to_owned()), detail);
    };
    if facts.factory_password_unchanged {
        raise(
            AlarmId::FactoryPassword,
            "",
            "the admin account still has its factory password".into(),
        );
    }
    match &facts.time_synchronised {
        Some(Ok(false)) => {
            raise(AlarmId::NtpUnsynchronised, "", "NTP reports the clock unsynchronised".into())
        }
        Some(Err(why)) => {
            raise(AlarmId::NtpUnsynchronised, "", format!("synchronisation unknown: {why}"))
        }
        _ => {}
    }
    for peer in &facts.peers {
        if let Some(reason) = &peer.failure {
            raise(AlarmId::PeerFailed, &peer.address, reason.clone());
        }
        if let Some(latency_ms) = peer.latency_ms.filter(|&ms| ms > PEER_LATENCY_MAX_MS) {
            raise(AlarmId::PeerLatency, &peer.address, format!("round trip {latency_ms} ms"));
        }
        if let Some(version) = &peer.other_version {
            raise(AlarmId::PeerVersionMismatch, &peer.address, format!("runs {version}"));
        }
    }
    for bridge in &facts.bridges {
        if let Some(problem) = &bridge.problem {
            raise(AlarmId::BridgeDown, &bridge.name, problem.clone());
        }
        if let Some(used) = bridge.ports_used_percent.filter(|&p| p > BRIDGE_PORTS_USED_MAX_PERCENT)
        {
            raise(AlarmId::BridgePortsHigh, &bridge.name, format!("{used}% of its ports in use"));
        }
    }
    if let Some(days) =
        facts.certificate_expires_in_days.filter(|&d| d <= CERTIFICATE_EXPIRY_WARNING_DAYS)
    {
        raise(AlarmId::CertificateExpiring, "", format!("expires in {days} days"));
    }
    if let Some(used) =
        facts.data_partition_used_percent.filter(|&p| p > DATA_PARTITION_USED_MAX_PERCENT)
    {
        raise(AlarmId::DataPartitionFull, "", format!("{used}% used"));
    }
    if let Some(failure) = &facts.backup_failure {
        raise(AlarmId::BackupsFailing, "", failure.clone());
    }
    if let Some(how) = &facts.upgrade_fell_back {
        raise(AlarmId::UpgradeFellBack, "", how.clone());
    }
    for (concern, why) in &facts.os_settings_failed {
        raise(AlarmId::OsSettingFailed, concern, why.clone());
    }
    for (source, text) in &facts.repeated_warnings {
        raise(AlarmId::RepeatedWarning, source, text.clone());
    }
    if let Some(why) = &facts.database_stopped {
        raise(AlarmId::DatabaseStopped, "", why.clone());
    }
    active
}

/// An active alarm as the API and the pages show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveAlarm {
    pub id: AlarmId,
    pub subject: String,
    pub detail: String,
    pub raised_ms: u64,
    /// Who acknowledged it, if anyone: it stays listed but is silenced.
    pub acknowledged_by: Option<String>,
}

/// A warning seen recently: how often, and when last.
struct Seen {
    last_ms: u64,
    count: u32,
}

/// Warnings a service repeats (a bridge refusing the feedback receiver, every poll): the
/// first [`REPEATED_WARNING_COUNT`] go to the log; after that they are one
/// [`AlarmId::RepeatedWarning`] until they stop for [`REPEATED_WARNING_WINDOW_MS`].
#[derive(Default)]
pub struct Warnings {
    seen: Mutex<BTreeMap<(String, String), Seen>>,
}

impl Warnings {
    /// Logs `text` about `source`, unless it is a repeat the alarm now stands for.
    pub fn warn(&self, source: &str, text: &str) {
        if !self.note(source, text, now_ms()) {
            tracing::warn!(%source, "{text}");
        }
    }

    /// Counts a warning; true when it is a repeat to report as an alarm rather than as one
    /// more log line.
    pub fn note(&self, source: &str, text: &str, now_ms: u64) -> bool {
        let mut seen = lock(&self.seen);
        seen.retain(|_, seen| now_ms.saturating_sub(seen.last_ms) < REPEATED_WARNING_WINDOW_MS);
        let entry = seen
            .entry((source.to_owned(), text.to_owned()))
            .or_insert(Seen { last_ms: now_ms, count: 0 });
        entry.last_ms = now_ms;
        entry.count = entry.count.saturating_add(1);
        entry.count > REPEATED_WARNING_COUNT
    }

    /// (source, text) of the warnings still repeating, for [`Facts::repeated_warnings`].
    pub fn repeated(&self, now_ms: u64) -> Vec<(String, String)> {
        lock(&self.seen)
            .iter()
            .filter(|(_, seen)| seen.count > REPEATED_WARNING_COUNT)
            .filter(|(_, seen)| now_ms.saturating_sub(seen.last_ms) < REPEATED_WARNING_WINDOW_MS)
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// The active alarms and their acknowledgements.
#[derive(Default)]
pub struct Board {
    active: Mutex<BTreeMap<Key, ActiveAlarm>>,
    /// Facts reported by the services as they happen (backups), merged into the gathered ones.
    backup_failure: Mutex<Option<String>>,
    changed: tokio::sync::Notify,
}

/// What an update changed, for the Event Log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub raised: Vec<ActiveAlarm>,
    pub cleared: Vec<ActiveAlarm>,
}

impl Board {
    /// Makes `now` the active set: new keys are raised, missing ones cleared; an alarm still
    /// active keeps its acknowledgement and takes the latest detail.
    pub fn update(&self, now: BTreeMap<Key, String>, now_ms: u64) -> Changes {
        let mut active = lock(&self.active);
        let mut changes = Changes::default();
        active.retain(|key, alarm| {
            let stays = now.contains_key(key);
            if !stays {
                changes.cleared.push(alarm.clone());
            }
            stays
        });
        for ((id, subject), detail) in now {
            match active.get_mut(&(id, subject.clone())) {
                Some(alarm) => alarm.detail = detail,
                None => {
                    let alarm = ActiveAlarm {
                        id,
                        subject: subject.clone(),
                        detail,
                        raised_ms: now_ms,
                        acknowledged_by: None,
                    };
                    changes.raised.push(alarm.clone());
                    active.insert((id, subject), alarm);
                }
            }
        }
        changes
    }

    /// Every active alarm, most severe first.
    pub fn list(&self) -> Vec<ActiveAlarm> {
        let mut alarms: Vec<ActiveAlarm> = lock(&self.active).values().cloned().collect();
        alarms.sort_by_key(|alarm| (std::cmp::Reverse(alarm.id.definition().severity), alarm.id));
        alarms
    }

    /// Active alarms nobody acknowledged: the header's count.
    pub fn unacknowledged(&self) -> usize {
        lock(&self.active).values().filter(|alarm| alarm.acknowledged_by.is_none()).count()
    }

    /// Silences the active alarm (`id`, `subject`); false if it is not active.
    pub fn acknowledge(&self, id: AlarmId, subject: &str, by: &str) -> bool {
        match lock(&self.active).get_mut(&(id, subject.to_owned())) {
            Some(alarm) => {
                alarm.acknowledged_by = Some(by.to_owned());
                true
            }
            None => false,
        }
    }

    /// A scheduled backup's outcome: a failure raises [`AlarmId::BackupsFailing`] until one
    /// succeeds.
    pub fn backup_outcome(&self, outcome: Result<(), String>) {
        *lock(&self.backup_failure) = outcome.err();
        self.changed.notify_one();
    }

    /// Asks the task to evaluate again now (a state change).
    pub fn poke(&self) {
        self.changed.notify_one();
    }
}

/// The Event Log entries for `changes`.
pub fn journal_changes(app: &super::App, changes: &Changes) {
    for alarm in &changes.raised {
        let definition = alarm.id.definition();
        let level =
            if definition.severity == Severity::Warning { Level::Warning } else { Level::Error };
        let message = format!("{}: {}{}", definition.id, describe(alarm), "");
        app.writer.journal(journal::entry(level, EntryKind::AlarmRaised, None, message));
    }
    for alarm in &changes.cleared {
        let message = format!("{}: {} (cleared)", alarm.id.definition().id, describe(alarm));
        app.writer.journal(journal::entry(Level::Info, EntryKind::AlarmCleared, None, message));
    }
}

/// "title (subject): detail".
pub fn describe(alarm: &ActiveAlarm) -> String {
    let title = alarm.id.definition().title;
    match alarm.subject.as_str() {
        "" => format!("{title}: {}", alarm.detail),
        subject => format!("{title} ({subject}): {}", alarm.detail),
    }
}

/// The active alarms as the API (and the web page) show them.
pub fn view(app: &super::App) -> api::Alarms {
    let alarms = app.alarms.list().into_iter().map(|alarm| {
        let definition = alarm.id.definition();
        api::Alarm {
            id: definition.id.to_owned(),
            severity: definition.severity.as_str().to_owned(),
            title: definition.title.to_owned(),
            action: definition.action.to_owned(),
            subject: alarm.subject,
            detail: alarm.detail,
            raised: crate::base::clock::format_ms(alarm.raised_ms),
            acknowledged_by: alarm.acknowledged_by,
        }
    });
    api::Alarms { unacknowledged: app.alarms.unacknowledged(), alarms: alarms.collect() }
}

/// Acknowledges an active alarm as `actor`, in the Event Log.
pub fn acknowledge(
    app: &super::App,
    id: &str,
    subject: &str,
    actor: &str,
) -> Result<(), super::Error> {
    let input = super::Input::Fields;
    let alarm =
        AlarmId::from_id(id).ok_or_else(|| super::Error::field(input, "id", "is not an alarm"))?;
    if !app.alarms.acknowledge(alarm, subject, actor) {
        return Err(super::Error::field(input, "id", "this alarm is not active"));
    }
    let message =
        format!("{id}{}{subject} acknowledged", if subject.is_empty() { "" } else { " " });
    app.writer.journal(journal::entry(
        Level::Info,
        EntryKind::AlarmAcknowledged,
        Some(actor),
        message,
    ));
    Ok(())
}

/// Gathers the facts, evaluates them and journals the changes: every
/// [`EVALUATE_EVERY_MS`], on a configuration change and when a service pokes the board, but
/// never twice within [`EVALUATE_SPACING_MS`].
pub fn spawn(app: Arc<super::App>, tasks: &Tasks) {
    let mut state = app.writer.state_watch();
    let shutdown = tasks.shutdown().clone();
    tasks.spawn(async move {
        // The writer's end closes its watch: evaluated once more then (a writer that stopped on
        // a failed fsync raises `database_stopped`), and on the timer and pokes from then on.
        let mut writer_alive = true;
        loop {
            let facts = super::alarm_facts::gather(&app).await;
            let changes = app.alarms.update(evaluate(&facts), now_ms());
            journal_changes(&app, &changes);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(EVALUATE_SPACING_MS)) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(
                    EVALUATE_EVERY_MS - EVALUATE_SPACING_MS,
                )) => {}
                _ = app.alarms.changed.notified() => {}
                changed = state.changed(), if writer_alive => writer_alive = changed.is_ok(),
            }
        }
    });
}

impl Board {
    /// The facts services report as they happen (as opposed to gathered ones).
    pub fn reported(&self, facts: &mut Facts) {
        facts.backup_failure = lock(&self.backup_failure).clone();
    }
}

#[cfg(test)]
#[path = "alarms_tests.rs"]
mod tests;

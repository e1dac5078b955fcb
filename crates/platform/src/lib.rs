//! Applies this peer's local settings to the operating system: host name and domain, IPv4
//! addresses (systemd-networkd), DNS servers, NTP servers (timesyncd) and time zone, the SSH
//! service, the root password, remote syslog (rsyslog), the SNMP agent (snmpd), Ethernet
//! speed/duplex (a `.link` drop-in), the operator's trusted CA certificates (the OS trust
//! store, which rsyslog's TLS uses) and the front panel, shown on the consoles' login screens.
//!
//! One [`Concern`] is applied at a time through the [`Platform`] trait: [`SystemPlatform`]
//! writes files under a root directory and runs commands through a [`Runner`];
//! [`RecordingPlatform`] is the test double. Applying is idempotent: a file is written only
//! when its content changes, and only the service a change affects is restarted.
//!
//! Depends on `model` only (the record types). Knows nothing of the event log, the daemon or
//! tokio; the caller decides when to apply and keeps it off any latency-sensitive thread.
//! Secrets (root password hash, SNMP community) never appear in errors, outcomes or commands.

pub mod nic;
mod recording;
pub mod render;
mod system;

pub use nic::NetworkTarget;
pub use recording::RecordingPlatform;
pub use system::{COMMAND_TIMEOUT_MS, CommandOutput, ProcessRunner, Runner, SystemPlatform};

use model::record::{
    AdministrationAccess, Cluster, Dns, Ethernet, Ipv4, Maintenance, Ntp, RootPassword, Snmp,
    Syslog, SystemName, TimeZone,
};
use model::{Record, RecordKind};

/// One part of the operating system that a group of settings drives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Concern {
    HostName,
    Network,
    Dns,
    Ntp,
    TimeZone,
    Ssh,
    RootPassword,
    Syslog,
    Snmp,
    Ethernet,
    TrustedCa,
    Panel,
}

impl Concern {
    pub const ALL: &'static [Concern] = &[
        Concern::HostName,
        Concern::Network,
        Concern::Dns,
        Concern::Ntp,
        Concern::TimeZone,
        Concern::Ssh,
        Concern::RootPassword,
        Concern::Syslog,
        Concern::Snmp,
        Concern::Ethernet,
        Concern::TrustedCa,
        Concern::Panel,
    ];

    /// Stable snake_case name, used in the status API and the Event Log.
    pub fn as_str(self) -> &'static str {
        match self {
            Concern::HostName => "host_name",
            Concern::Network => "network",
            Concern::Dns => "dns",
            Concern::Ntp => "ntp",
            Concern::TimeZone => "time_zone",
            Concern::Ssh => "ssh",
            Concern::RootPassword => "root_password",
            Concern::Syslog => "syslog",
            Concern::Snmp => "snmp",
            Concern::Ethernet => "ethernet",
            Concern::TrustedCa => "trusted_ca",
            Concern::Panel => "panel",
        }
    }
}

impl std::fmt::Display for Concern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the front panel shows besides the settings: facts of the running peer.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PanelFacts {
    pub version: String,
    pub hardware_serial: String,
}

/// The peer-local settings the OS follows, as currently configured. `None` is "never set":
/// the image's factory default stands and nothing is changed for that concern.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Settings {
    pub system_name: Option<SystemName>,
    pub ipv4: Option<Ipv4>,
    pub dns: Option<Dns>,
    pub ntp: Option<Ntp>,
    pub time_zone: Option<TimeZone>,
    pub access: Option<AdministrationAccess>,
    pub root_password: Option<RootPassword>,
    pub syslog: Option<Syslog>,
    pub snmp: Option<Snmp>,
    pub ethernet: Option<Ethernet>,
    pub maintenance: Option<Maintenance>,
    pub cluster: Option<Cluster>,
    /// The operator's trusted CA certificates (PEM) from the `certificates` record; only this
    /// part of it (the server's private key is the daemon's business, never the OS's).
    pub trusted_ca_pem: Option<String>,
    pub panel: PanelFacts,
}

impl Settings {
    /// Collects the peer-local records among `records` (any others are ignored).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a Record>,
        panel: PanelFacts,
    ) -> Settings {
        let mut settings = Settings { panel, ..Settings::default() };
        for record in records {
            match record {
                Record::SystemName(r) => settings.system_name = Some(r.clone()),
                Record::Ipv4(r) => settings.ipv4 = Some(r.clone()),
                Record::Dns(r) => settings.dns = Some(r.clone()),
                Record::Ntp(r) => settings.ntp = Some(r.clone()),
                Record::TimeZone(r) => settings.time_zone = Some(r.clone()),
                Record::AdministrationAccess(r) => settings.access = Some(r.clone()),
                Record::RootPassword(r) => settings.root_password = Some(r.clone()),
                Record::Syslog(r) => settings.syslog = Some(r.clone()),
                Record::Snmp(r) => settings.snmp = Some(r.clone()),
                Record::Ethernet(r) => settings.ethernet = Some(r.clone()),
                Record::Maintenance(r) => settings.maintenance = Some(r.clone()),
                Record::Cluster(r) => settings.cluster = Some(r.clone()),
                Record::Certificates(r) => settings.trusted_ca_pem = Some(r.trusted_ca_pem.clone()),
                _ => {}
            }
        }
        settings
    }

    /// The record kinds whose records [`Settings::from_records`] reads.
    pub const KINDS: &'static [RecordKind] = &[
        RecordKind::SystemName,
        RecordKind::Ipv4,
        RecordKind::Dns,
        RecordKind::Ntp,
        RecordKind::TimeZone,
        RecordKind::AdministrationAccess,
        RecordKind::RootPassword,
        RecordKind::Syslog,
        RecordKind::Snmp,
        RecordKind::Ethernet,
        RecordKind::Maintenance,
        RecordKind::Cluster,
        RecordKind::Certificates,
    ];

    /// Whether the settings `concern` depends on differ between `self` and `other`: the caller
    /// applies a concern only when this is true (or on its first pass).
    pub fn differs_for(&self, other: &Settings, concern: Concern) -> bool {
        match concern {
            Concern::HostName => self.system_name != other.system_name,
            Concern::Network => self.ipv4 != other.ipv4,
            Concern::Dns => {
                self.dns != other.dns
                    || self.system_name.as_ref().map(|s| &s.domain)
                        != other.system_name.as_ref().map(|s| &s.domain)
            }
            Concern::Ntp => self.ntp != other.ntp,
            Concern::TimeZone => self.time_zone != other.time_zone,
            Concern::Ssh => {
                self.access.as_ref().map(|a| a.ssh_enabled)
                    != other.access.as_ref().map(|a| a.ssh_enabled)
            }
            Concern::RootPassword => self.root_password != other.root_password,
            Concern::Syslog => self.syslog != other.syslog,
            Concern::Snmp => self.snmp != other.snmp || self.system_name != other.system_name,
            Concern::Ethernet => self.ethernet != other.ethernet,
            Concern::TrustedCa => self.trusted_ca_pem != other.trusted_ca_pem,
            Concern::Panel => render::panel(self) != render::panel(other),
        }
    }

    /// Whether the front panel is shown: on unless the operator turned it off.
    pub fn panel_enabled(&self) -> bool {
        self.access.as_ref().is_none_or(|access| access.lcd_panel_enabled)
    }
}

/// What applying one concern did. Both lists empty: the OS already matched.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Outcome {
    /// Files written or removed, as absolute paths on the target system.
    pub files: Vec<String>,
    /// Commands run (program and arguments; never a secret).
    pub commands: Vec<String>,
}

impl Outcome {
    pub fn is_unchanged(&self) -> bool {
        self.files.is_empty() && self.commands.is_empty()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unchanged() {
            return f.write_str("already in effect");
        }
        let mut parts = Vec::new();
        if !self.files.is_empty() {
            parts.push(format!("wrote {}", self.files.join(", ")));
        }
        if !self.commands.is_empty() {
            parts.push(format!("ran {}", self.commands.join("; ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Why a concern could not be applied. The messages name the file or command at fault.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {detail}")]
    Command { command: String, status: String, detail: String },
    #[error("`{command}` did not finish within {timeout_ms} ms")]
    Timeout { command: String, timeout_ms: u64 },
    /// The settings cannot be expressed on this system (an unknown time zone, a password hash
    /// the OS cannot read, …).
    #[error("{0}")]
    Unsupported(String),
    /// From a test double told to fail.
    #[error("{0}")]
    Injected(String),
}

/// Applies one concern of the settings to an operating system.
pub trait Platform: Send + Sync + std::fmt::Debug {
    /// Makes the OS follow `settings` for `concern`; does nothing when it already does.
    fn apply(&self, concern: Concern, settings: &Settings) -> Result<Outcome, PlatformError>;
}

#[cfg(test)]
mod tests;

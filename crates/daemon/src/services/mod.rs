//! Layer 2, the services: what the appliance does, in its own terms (records, accounts and
//! sessions, history, backups, upgrades, cluster and join, policy, platform, journal). No HTTP
//! types: the adapters above turn requests into calls and answers into responses, and only
//! the API's error type knows status codes.

pub mod accounts;
pub mod alarm_facts;
pub mod alarms;
pub mod backups;
pub mod bridge_host;
pub mod cluster;
pub mod cluster_join;
pub mod cluster_key;
pub mod cluster_route;
mod error;
pub mod history;
pub mod logins;
pub mod metrics;
pub mod platform;
pub mod policy;
pub mod policy_credentials;
pub mod policy_views;
pub mod records;
pub mod restore;
pub mod syslog;
pub mod syslog_streams;
pub mod upgrades;

pub use error::{Error, Input};

use crate::base::{auth::Sessions, tls};
use crate::store::{Readers, Writer};
use std::sync::Arc;

/// The daemon's services, wired once at start (`daemon::start`) and shared by the adapters.
pub struct App {
    pub writer: Writer,
    pub readers: Readers,
    pub sessions: Sessions,
    /// Every login path's throttle and failure entries.
    pub logins: Arc<logins::Logins>,
    pub started_ms: u64,
    /// The live TLS configuration of the admin API, swapped when the certificates change.
    pub tls: tls::LiveTls,
    pub tls_files: tls::TlsFiles,
    pub cluster: Arc<cluster::Board>,
    pub upgrade: Arc<upgrades::UpgradeService>,
    /// For the web Status page: bridge health as the policy service sees it.
    pub policy: Arc<policy::PolicyService>,
    /// Holds the database, the TLS identity, safety copies and the restore staging folder.
    pub data_dir: std::path::PathBuf,
    /// This machine's hardware serial (`backup::hardware_serial`), or why it is unknown.
    pub hardware_serial: Result<String, String>,
    /// The backup or restore running, if any, and its progress.
    pub operations: backups::Operations,
    /// Peer-local settings applied to the operating system, and the latest results.
    pub platform: Arc<platform::PlatformService>,
    /// The active alarms (`alarms::spawn` keeps them current).
    pub alarms: alarms::Board,
}

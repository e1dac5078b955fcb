//! `GET /api/v1/status` (this peer at a glance) and `GET /api/v1/health` (the health gate's
//! probe, without credentials; 503 when unhealthy, with the same body).

use crate::cluster::ClusterStatus;
use crate::required;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Always `Baton`.
    pub product: String,
    pub version: String,
    pub peer_id: String,
    /// When the daemon started (RFC 3339): a reboot changes it.
    pub started: String,
    pub uptime_s: u64,
    pub log_position: u64,
    pub projections_position: u64,
    pub projections_current: bool,
    pub cluster: ClusterStatus,
    /// The machine's serial, which backups are bound to; or why it is unknown.
    #[serde(deserialize_with = "required")]
    pub hardware_serial: Option<String>,
    #[serde(deserialize_with = "required")]
    pub hardware_serial_problem: Option<String>,
    pub platform: PlatformStatus,
}

/// How the local settings were last applied to the operating system.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PlatformStatus {
    /// False on a development machine, where the OS is left alone.
    pub applies_settings: bool,
    /// The concerns whose last application failed.
    pub failed: Vec<String>,
    pub concerns: BTreeMap<String, ConcernStatus>,
}

/// The latest result of applying one concern (network, time, …).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ConcernStatus {
    pub result: ConcernResult,
    pub at: String,
    /// What was changed, or why it failed.
    pub detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcernResult {
    /// The OS was changed.
    Applied,
    /// It already matched.
    Unchanged,
    Failed,
}

/// `GET /api/v1/health`. When the event log does not open, only `healthy`, `version`,
/// `log_opens` and `problems` are sent.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub version: String,
    pub log_opens: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projections_position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projections_current: Option<bool>,
    pub problems: Vec<String>,
}

/// `GET /api/v1/logs/verify`: every hash chain of the event log walked from its first event,
/// each hash recomputed, on one consistent read. A broken chain is an answer (`intact` false
/// and where it breaks), not an error.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LogVerification {
    pub intact: bool,
    /// Events walked (when intact).
    pub events: u64,
    /// Where each chain ends (when intact).
    pub chains: Vec<crate::backups::ChainHead>,
    /// Where and why a chain breaks.
    #[serde(deserialize_with = "required")]
    pub problem: Option<String>,
}

//! `GET /api/v1/alarms` (the active alarms) and `POST /api/v1/alarms/acknowledge` (silence
//! one: it stays listed until its condition clears).

use crate::required;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Alarms {
    /// Active alarms nobody acknowledged: the count in the web pages' header.
    pub unacknowledged: usize,
    /// Most severe first.
    pub alarms: Vec<Alarm>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Alarm {
    /// Stable (`factory_password`, `peer_failed`, …).
    pub id: String,
    /// `warning`, `error` or `critical`.
    pub severity: String,
    pub title: String,
    /// What to do about it.
    pub action: String,
    /// What it is about (a peer's address, a bridge, an OS concern); empty for the appliance.
    pub subject: String,
    pub detail: String,
    /// When it was raised (RFC 3339).
    pub raised: String,
    #[serde(deserialize_with = "required")]
    pub acknowledged_by: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmAcknowledge {
    pub id: String,
    #[serde(default)]
    pub subject: String,
}

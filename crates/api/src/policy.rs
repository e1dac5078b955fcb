//! `GET /api/v1/policy/status`: the policy service on this peer as the operator sees it.

use crate::required;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Why this peer tells the VCS not to send calls, if it does.
    #[serde(deserialize_with = "required")]
    pub unavailable: Option<String>,
    /// In maintenance: how much longer calls that still arrive are decided (0 once drained).
    #[serde(deserialize_with = "required")]
    pub maintenance_drain_ms_left: Option<u64>,
    pub bridges: Vec<BridgeHealth>,
}

/// One bridge's health as this peer sees it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BridgeHealth {
    pub name: String,
    pub up: bool,
    #[serde(deserialize_with = "required")]
    pub problem: Option<String>,
    /// When the bridge last posted an event to this peer's feedback receiver.
    #[serde(deserialize_with = "required")]
    pub last_event_ms: Option<u64>,
    /// The SHA-256 fingerprint (`AB:CD:…`) of the certificate an `https` bridge presented at
    /// its last TLS handshake from this peer, accepted or not: what the operator compares and
    /// pins (`POST /api/v1/bridges/{name}/pin`). Optional: added after the first release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented_sha256: Option<String>,
}

/// `POST /api/v1/bridges/{name}/pin`: pins the certificate the bridge presents now.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// The fingerprint the operator compared; refused if the bridge now presents another.
    /// `None`: whatever the bridge presented last.
    #[serde(default)]
    pub sha256: Option<String>,
}

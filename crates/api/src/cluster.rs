//! Clustering: `GET /api/v1/cluster/status` (each listed peer as the operator sees it, also
//! inside `GET /api/v1/status`), `GET /api/v1/cluster/member-certificate?url=…` and
//! `POST /api/v1/cluster/join`. The cluster settings themselves are the `cluster` record.

use crate::required;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Whether this peer's settings list peers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    Standalone,
    Clustered,
}

impl ClusterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMode::Standalone => "standalone",
            ClusterMode::Clustered => "clustered",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub mode: ClusterMode,
    #[serde(deserialize_with = "required")]
    pub cluster_id: Option<String>,
    pub peer_id: String,
    /// What keeps this peer from clustering, if anything.
    pub problems: Vec<String>,
    pub peers: Vec<PeerLine>,
}

/// One address of the peer list and its state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PeerLine {
    pub address: Ipv4Addr,
    #[serde(flatten)]
    pub state: PeerState,
    /// Why a failed peer is not active, for programs (set only when `state` is `failed`):
    /// decide on it, never on the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<PeerFailure>,
    /// Which rule the peers refuse each other by (set only when they do, with `code`
    /// `refused`): decide on it, never on the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<PeerRefusal>,
    /// One line, as the web page shows it next to the address.
    pub text: String,
    pub warnings: Vec<String>,
}

/// A listed peer's state, tagged `state` beside the line's other fields.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PeerState {
    ThisSystem,
    Connecting,
    Active {
        host_name: String,
        peer_id: String,
        last_contact_ms: u64,
        #[serde(deserialize_with = "required")]
        latency_ms: Option<u64>,
        /// Its admin API's port and certificate, as it told this peer over the link.
        #[serde(deserialize_with = "required")]
        admin_port: Option<u16>,
        #[serde(deserialize_with = "required")]
        admin_certificate_sha256: Option<String>,
    },
    /// It is joining this cluster: its shared configuration will be replaced by ours.
    Joining {
        host_name: String,
    },
    Failed {
        reason: String,
    },
}

/// Why a listed peer is not active.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerFailure {
    /// No connection, or no answer in time: the peer may be down or cut off.
    Unreachable,
    /// A link that was up broke.
    ConnectionLost,
    /// The peers refuse each other (pre-shared key, version, peer list, cluster): a setting
    /// must change before they replicate.
    Refused,
}

/// The rule by which two peers refuse each other (the peering handshake's `Refusal`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRefusal {
    VersionMismatch,
    /// Each peer has its own licence; the peers of a cluster run one edition.
    EditionMismatch,
    PeerListMismatch,
    DifferentCluster,
    NoClusterYet,
    NotListed,
    SameIdentity,
    /// A refusal a newer release added.
    #[serde(other)]
    Other,
}

impl PeerFailure {
    /// Whether the peer may come back by itself (as opposed to a refusal).
    pub fn is_transient(self) -> bool {
        !matches!(self, PeerFailure::Refused)
    }
}

impl PeerState {
    /// The state's tag, as the JSON names it.
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerState::ThisSystem => "this_system",
            PeerState::Connecting => "connecting",
            PeerState::Active { .. } => "active",
            PeerState::Joining { .. } => "joining",
            PeerState::Failed { .. } => "failed",
        }
    }

    /// This peer itself, or a peer linked to it.
    pub fn is_up(&self) -> bool {
        matches!(self, PeerState::ThisSystem | PeerState::Active { .. })
    }
}

impl PeerLine {
    /// The measured round trip, when the link is active.
    pub fn latency_ms(&self) -> Option<u64> {
        match &self.state {
            PeerState::Active { latency_ms, .. } => *latency_ms,
            _ => None,
        }
    }
}

/// The query of `GET /api/v1/cluster/member-certificate`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    /// The member's admin URL, `https://address[:port]`.
    pub url: String,
}

/// The answer to [`MemberQuery`]: the certificate the member presents.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MemberCertificate {
    pub member_url: String,
    /// `AB:CD:…`, as browsers and the Status page show it.
    pub sha256: String,
}

/// `POST /api/v1/cluster/join`: what the operator gives to join.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The admin URL of a member of the cluster (`https://address[:port]`).
    pub member_url: String,
    /// The cluster's administrator password (user `admin`).
    pub password: String,
    pub pre_shared_key: String,
    /// The SHA-256 fingerprint of the member's certificate, as the operator confirmed it.
    pub member_certificate_sha256: String,
}

/// The answer to [`JoinRequest`] once every link is active.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Joined {
    /// The member was standalone and founded the cluster first.
    pub founded: bool,
    /// Peers of the list other than the member and this one, each of which now lists this
    /// peer too.
    pub other_members: Vec<String>,
    pub status: ClusterStatus,
}

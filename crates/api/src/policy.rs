//! `GET /api/v1/policy/status`, `/policy/explain` and `/policy/live-conferences`: the policy service
//! on this peer as the operator sees it, why a call would be decided as it would, and the
//! conferences the bridges host now.

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

/// `GET /api/v1/policy/explain?alias=<dialled alias>&source=<caller's alias>`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub alias: String,
    #[serde(default)]
    pub source: Option<String>,
}

/// What a call to `alias` would get now and why, decided by the same code as a real call but
/// with no side effect: no conference is created, nothing recorded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The destination as matched (scheme, parameters and case removed).
    #[serde(deserialize_with = "required")]
    pub alias: Option<String>,
    #[serde(deserialize_with = "required")]
    pub source_alias: Option<String>,
    /// Why this peer refuses calls now (maintenance once drained, no policy-service
    /// account, …): then the answer is that refusal, and the rest says what it would decide.
    #[serde(deserialize_with = "required")]
    pub refused: Option<String>,
    /// Conference aliases tried, by priority then name, up to the first that matched.
    pub aliases: Vec<AliasTried>,
    #[serde(deserialize_with = "required")]
    pub conference: Option<String>,
    #[serde(deserialize_with = "required")]
    pub template: Option<String>,
    /// `chair` or `guest`.
    #[serde(deserialize_with = "required")]
    pub role: Option<String>,
    /// The conference already recorded under that name, and whether the call follows it.
    #[serde(deserialize_with = "required")]
    pub existing: Option<ExistingConference>,
    #[serde(deserialize_with = "required")]
    pub ports_needed: Option<u32>,
    #[serde(deserialize_with = "required")]
    pub service_preference: Option<String>,
    /// The preference's pools in order, each bridge weighed.
    pub pools: Vec<PoolWeighed>,
    pub decision: ExplainedDecision,
    /// The CPL the VCS would get (for a conference to create: once created on the first
    /// candidate, as a real call would be).
    pub cpl: String,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AliasTried {
    pub name: String,
    pub pattern: String,
    pub priority: u32,
    pub outcome: AliasOutcome,
    /// The conference name the replace string made, when it matched.
    #[serde(deserialize_with = "required")]
    pub conference: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasOutcome {
    Matched,
    NoMatch,
    /// Matched, but the replace string made an empty name: the next alias was tried.
    EmptyName,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExistingConference {
    pub bridge: String,
    pub verdict: ExistingVerdict,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingVerdict {
    Followed,
    BridgeMissing,
    BridgeDisabled,
    BridgeDown,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PoolWeighed {
    pub name: String,
    /// False when the preference names a pool that is not configured.
    pub found: bool,
    pub bridges: Vec<BridgeWeighed>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BridgeWeighed {
    pub name: String,
    #[serde(deserialize_with = "required")]
    pub capacity_ports: Option<u32>,
    #[serde(deserialize_with = "required")]
    pub free_ports: Option<u32>,
    #[serde(deserialize_with = "required")]
    pub up: Option<bool>,
    pub verdict: BridgeVerdict,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeVerdict {
    Candidate,
    Missing,
    Disabled,
    ListedEarlier,
    TooFewPorts,
    Down,
}

/// The decision: `route` to a conference that exists, `create` it on the first of
/// `candidates` that accepts it (then route), or `reject`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ExplainedDecision {
    Route { conference: String, bridge: String, url: String },
    Create { conference: String, candidates: Vec<String>, url: String },
    Reject { status: u16, reason: String },
}

/// `GET /api/v1/policy/live-conferences`: the conferences the enabled bridges host now, from their
/// own enumerations.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LiveConferences {
    pub bridges: Vec<LiveBridge>,
}

/// One bridge's conferences, or why they could not be listed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LiveBridge {
    pub bridge: String,
    #[serde(deserialize_with = "required")]
    pub problem: Option<String>,
    pub conferences: Vec<LiveConference>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LiveConference {
    pub name: String,
    /// The bridge's own identifier (MCU: the name; TelePresence Server: `conferenceID`).
    pub bridge_conference_id: String,
    /// Whether Baton's conference table records it on this bridge.
    pub recorded: bool,
    pub participant_count: u32,
    /// At most `participants_listed_max` of them (the count is complete).
    pub participants: Vec<LiveParticipant>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LiveParticipant {
    /// MCU `participantName`; TelePresence Server `displayName`.
    pub name: String,
    /// Where the call comes from, when the bridge says (TelePresence Server `calls[].address`).
    #[serde(deserialize_with = "required")]
    pub address: Option<String>,
    /// TelePresence Server `accessLevel`: `chair` or `guest`.
    #[serde(deserialize_with = "required")]
    pub role: Option<String>,
    /// MCU `callState`, TelePresence Server `connectionState`.
    #[serde(deserialize_with = "required")]
    pub state: Option<String>,
}

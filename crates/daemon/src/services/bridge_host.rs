//! The policy service's view of bridges ([`ConferenceHost`]) over the `bridges` crate's
//! XML-RPC client: bridge errors sorted into "down" (take the bridge out of selection),
//! "duplicate" (adopt the existing conference) and "refused" (try the next bridge).

use crate::base::sync::lock;
use crate::services::policy::{
    ConferenceHost, ConferenceSpec, HostError, HostFuture, HostedConference,
};
use bridges::{BridgeClient, BridgeError, BridgeTarget};
use model::record::Bridge;
use model::{Record, RecordKey, RecordKind, State};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Each bridge call gives up after this long; a decision's calls together end at
/// `policy::DECISION_DEADLINE_MS` (the VCS waits 30 s for the whole decision).
pub const BRIDGE_CALL_TIMEOUT_MS: u64 = 5_000;

/// The bridge client, trusting for `https` bridges the operator's CAs (the `certificates`
/// record's `trusted_ca_pem`): rebuilt on the first call after they change, so a saved CA
/// applies at once, without a restart. The client checks the bridge's address against its
/// certificate (IP SAN or DNS name).
pub struct XmlRpcBridges {
    state: watch::Receiver<Arc<State>>,
    /// The trusted CAs the client was built with, and the client.
    client: Mutex<(String, BridgeClient)>,
}

impl XmlRpcBridges {
    pub fn new(state: watch::Receiver<Arc<State>>) -> Result<XmlRpcBridges, BridgeError> {
        let client = BridgeClient::new(BRIDGE_CALL_TIMEOUT_MS, None)?;
        Ok(XmlRpcBridges { state, client: Mutex::new((String::new(), client)) })
    }

    /// The client for the trusted CAs saved now.
    fn client(&self) -> BridgeClient {
        let trusted = match self.state.borrow().get(&RecordKey {
            kind: RecordKind::Certificates,
            name: RecordKind::Certificates.as_str().to_owned(),
        }) {
            Some(Record::Certificates(certificates)) => certificates.trusted_ca_pem.clone(),
            _ => String::new(),
        };
        let mut cached = lock(&self.client);
        if cached.0 != trusted {
            let pem = (!trusted.trim().is_empty()).then_some(trusted.as_str());
            let client = BridgeClient::new(BRIDGE_CALL_TIMEOUT_MS, pem).or_else(|error| {
                // Validation accepted them, so this is unexpected: trust no CA rather than old ones.
                tracing::error!(%error, "the trusted CAs could not be used for bridges");
                BridgeClient::new(BRIDGE_CALL_TIMEOUT_MS, None)
            });
            match client {
                Ok(client) => *cached = (trusted, client),
                Err(error) => tracing::error!(%error, "no bridge client; keeping the previous one"),
            }
        }
        cached.1.clone()
    }
}

fn sorted(error: BridgeError) -> HostError {
    match error {
        BridgeError::DuplicateName => HostError::Duplicate,
        BridgeError::TooManyConferences => HostError::Full,
        error if error.is_bridge_down() => HostError::Down(error.to_string()),
        error => HostError::Refused(error.to_string()),
    }
}

impl ConferenceHost for XmlRpcBridges {
    fn create<'a>(
        &'a self,
        bridge: &'a Bridge,
        spec: &'a ConferenceSpec,
    ) -> HostFuture<'a, String> {
        Box::pin(async move {
            let spec = bridges::ConferenceSpec {
                name: spec.name.clone(),
                chair_pin: spec.chair_pin.clone(),
                guest_pin: spec.guest_pin.clone(),
                // Where the policy service sends guests (see `policy::decide::route_url`).
                guest_uri: Some(format!("{}{}", spec.name, policy::decide::GUEST_SUFFIX)),
                max_participants: spec.max_participants,
            };
            let target = BridgeTarget::from_record(bridge);
            let created = self.client().create_conference(&target, &spec).await.map_err(sorted)?;
            Ok(created.id)
        })
    }

    fn find<'a>(&'a self, bridge: &'a Bridge, name: &'a str) -> HostFuture<'a, Option<String>> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            let conferences = self.client().enumerate_conferences(&target).await.map_err(sorted)?;
            Ok(conferences.into_iter().find(|conference| conference.name == name).map(|c| c.id))
        })
    }

    fn poll<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            self.client().status(&target).await.map(|_| ()).map_err(sorted)
        })
    }

    fn list<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, Vec<HostedConference>> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            let conferences = self.client().enumerate_conferences(&target).await.map_err(sorted)?;
            Ok(conferences
                .into_iter()
                .map(|c| HostedConference {
                    id: c.id,
                    name: c.name,
                    participants: c.participants,
                    participant_list: c
                        .participant_list
                        .into_iter()
                        .map(|p| ::api::LiveParticipant {
                            name: p.name,
                            address: p.address,
                            role: p.role,
                            state: p.state,
                        })
                        .collect(),
                })
                .collect())
        })
    }

    fn destroy<'a>(&'a self, bridge: &'a Bridge, id: &'a str) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            match self.client().destroy_conference(&target, id).await {
                Ok(()) | Err(BridgeError::NoSuchConference) => Ok(()),
                Err(error) => Err(sorted(error)),
            }
        })
    }

    fn configure_feedback<'a>(
        &'a self,
        bridge: &'a Bridge,
        receiver_uri: &'a str,
    ) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            self.client().configure_feedback(&target, receiver_uri).await.map_err(sorted)
        })
    }

    fn presented_fingerprint(&self, bridge: &Bridge) -> Option<String> {
        self.client().presented_fingerprint(&BridgeTarget::from_record(bridge))
    }
}

//! The policy service's view of bridges ([`ConferenceHost`]) over the `bridges` crate's
//! XML-RPC client: bridge errors sorted into "down" (take the bridge out of selection),
//! "duplicate" (adopt the existing conference) and "refused" (try the next bridge).

use crate::services::policy::{
    ConferenceHost, ConferenceSpec, HostError, HostFuture, HostedConference,
};
use bridges::{BridgeClient, BridgeError, BridgeTarget};
use model::record::Bridge;

/// Each bridge call gives up after this long; a decision's calls together end at
/// `policy::DECISION_DEADLINE_MS` (the VCS waits 30 s for the whole decision).
pub const BRIDGE_CALL_TIMEOUT_MS: u64 = 5_000;

pub struct XmlRpcBridges {
    client: BridgeClient,
}

impl XmlRpcBridges {
    pub fn new() -> Result<XmlRpcBridges, BridgeError> {
        Ok(XmlRpcBridges { client: BridgeClient::new(BRIDGE_CALL_TIMEOUT_MS, None)? })
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
            let created = self.client.create_conference(&target, &spec).await.map_err(sorted)?;
            Ok(created.id)
        })
    }

    fn find<'a>(&'a self, bridge: &'a Bridge, name: &'a str) -> HostFuture<'a, Option<String>> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            let conferences = self.client.enumerate_conferences(&target).await.map_err(sorted)?;
            Ok(conferences.into_iter().find(|conference| conference.name == name).map(|c| c.id))
        })
    }

    fn poll<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            self.client.status(&target).await.map(|_| ()).map_err(sorted)
        })
    }

    fn list<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, Vec<HostedConference>> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            let conferences = self.client.enumerate_conferences(&target).await.map_err(sorted)?;
            Ok(conferences
                .into_iter()
                .map(|c| HostedConference { id: c.id, name: c.name, participants: c.participants })
                .collect())
        })
    }

    fn destroy<'a>(&'a self, bridge: &'a Bridge, id: &'a str) -> HostFuture<'a, ()> {
        Box::pin(async move {
            let target = BridgeTarget::from_record(bridge);
            match self.client.destroy_conference(&target, id).await {
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
            self.client.configure_feedback(&target, receiver_uri).await.map_err(sorted)
        })
    }
}

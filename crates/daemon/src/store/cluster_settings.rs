//! The cluster facts the writer publishes and produces: this peer's cluster settings, read from
//! its records, and the replication messages it hands to the links. They live with the store
//! (not with the cluster service) so that the store depends on nothing above it.

use model::record::Edition;
use model::{ClusterId, PeerId, Record, RecordKind, State};
use std::net::Ipv4Addr;

/// A replication message for one peer, as the writer produces it.
pub type Outbound = (PeerId, replication::Message);

/// What the cluster layer reads from this peer's records.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClusterSettings {
    pub peer_id: PeerId,
    pub cluster_id: Option<ClusterId>,
    pub address: Option<Ipv4Addr>,
    pub host_name: String,
    pub pre_shared_key: String,
    /// Sorted, without duplicates; empty in standalone mode.
    pub peers: Vec<Ipv4Addr>,
    /// This peer's own licence's edition (essentials without one): greeted to the peers.
    pub edition: Edition,
}

impl ClusterSettings {
    pub fn from_state(state: &State, peer_id: PeerId, cluster_id: Option<ClusterId>) -> Self {
        let singleton = |kind: RecordKind| state.singleton(kind);
        let (pre_shared_key, mut peers) = match singleton(RecordKind::Cluster) {
            Some(Record::Cluster(cluster)) => {
                (cluster.pre_shared_key.clone(), cluster.peers.clone())
            }
            _ => (String::new(), Vec::new()),
        };
        peers.sort();
        peers.dedup();
        let address = match singleton(RecordKind::Ipv4) {
            Some(Record::Ipv4(ip)) => Some(ip.address),
            _ => None,
        };
        let host_name = match singleton(RecordKind::SystemName) {
            Some(Record::SystemName(name)) => name.host_name.clone(),
            _ => String::new(),
        };
        let edition = match singleton(RecordKind::Licence) {
            Some(Record::Licence(licence)) => licence.edition,
            _ => Edition::Essentials,
        };
        ClusterSettings { peer_id, cluster_id, address, host_name, pre_shared_key, peers, edition }
    }

    pub fn is_clustered(&self) -> bool {
        !self.peers.is_empty()
    }
}

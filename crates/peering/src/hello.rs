//! The greeting both peers send once the channel is up, the frames that follow it, and the
//! rule deciding whether two peers may exchange configuration. Pure: the daemon supplies both
//! greetings and acts on the [`Verdict`].

use model::record::Edition;
use model::{ClusterId, PeerId};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// What a peer says about itself, inside the encrypted channel.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub software_version: String,
    /// The sender's primary address, as it appears in peer lists.
    pub address: Ipv4Addr,
    pub host_name: String,
    pub peer_id: PeerId,
    /// `None`: the sender is clustered but has not joined a cluster yet.
    pub cluster_id: Option<ClusterId>,
    /// Sorted and without duplicates, so lists that differ only in order compare equal.
    pub peers: Vec<Ipv4Addr>,
    /// The edition of the sender's own licence: peers of one cluster run the same one. Last,
    /// so an older release reads the fields before it and refuses by version.
    pub edition: Edition,
}

/// The greeting of the releases before the edition was part of it, frozen: a newer peer
/// still reads it, to refuse by version as the older peer does.
#[derive(Deserialize)]
struct HelloV1 {
    software_version: String,
    address: Ipv4Addr,
    host_name: String,
    peer_id: PeerId,
    cluster_id: Option<ClusterId>,
    peers: Vec<Ipv4Addr>,
}

/// The first variant of [`Frame`] as those releases encoded it (same tag).
#[derive(Deserialize)]
enum FrameV1 {
    Hello(HelloV1),
}

/// Everything sent after the greeting travels as one of these.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Frame {
    Hello(Hello),
    /// The sender will not exchange configuration with the receiver, and why (as the sender
    /// sees it). The connection closes after it.
    Refused(Refusal),
    /// An encoded replication message (see the `replication` crate).
    Replication(Vec<u8>),
    Ping {
        sent_ms: u64,
    },
    Pong {
        sent_ms: u64,
    },
    /// Where the sender's admin API is and which certificate it presents, sent after the
    /// greeting once both sides replicate (and again when it changes). The pre-shared key
    /// authenticates it, so a joining peer may trust a certificate a member relays this way.
    /// Last of the variants and never in the greeting: a peer of an older release decodes the
    /// greeting and refuses by version before it could see this frame.
    AdminEndpoint(AdminEndpoint),
}

/// A peer's admin API as its cluster peers learn it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminEndpoint {
    /// TCP port of the admin API (HTTPS) on the peer's primary address.
    pub port: u16,
    /// SHA-256 of the certificate the admin API presents, `AB:CD:…`.
    pub certificate_sha256: String,
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain types into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads a frame; an older release's greeting reads as one without a licence, i.e. the
    /// essentials edition (it never matters: its version differs, which `check` sees first).
    pub fn decode(bytes: &[u8]) -> Result<Frame, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|error| match postcard::from_bytes(bytes) {
            Ok(FrameV1::Hello(v1)) => Ok(Frame::Hello(Hello {
                software_version: v1.software_version,
                address: v1.address,
                host_name: v1.host_name,
                peer_id: v1.peer_id,
                cluster_id: v1.cluster_id,
                peers: v1.peers,
                edition: Edition::Essentials,
            })),
            Err(_) => Err(error),
        })
    }
}

/// Why two peers must not exchange configuration. Shown to the operator as is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("version mismatch: it runs Baton {theirs}, this peer runs {ours}")]
    VersionMismatch { ours: String, theirs: String },
    #[error("peer list mismatch: it lists {}, this peer lists {}", list(.theirs), list(.ours))]
    PeerListMismatch { ours: Vec<Ipv4Addr>, theirs: Vec<Ipv4Addr> },
    #[error(
        "different cluster: it holds configuration of another cluster; place it in standalone \
         mode (clear its pre-shared key and peers) before it joins"
    )]
    DifferentCluster,
    #[error(
        "neither peer belongs to a cluster yet: found the cluster first on the peer whose \
         configuration should win, by listing only its own address"
    )]
    NoClusterYet,
    #[error("{address} is not in this peer's list")]
    NotListed { address: Ipv4Addr },
    #[error("it answers with this peer's own identity (a cloned disk?)")]
    SameIdentity,
    /// Each peer has its own licence; a cluster's peers run one edition. Last of the
    /// variants, so the older ones keep their tags.
    #[error(
        "edition mismatch: it runs the {} edition, this peer runs the {} edition",
        edition_name(*.theirs),
        edition_name(*.ours)
    )]
    EditionMismatch { ours: Edition, theirs: Edition },
}

fn edition_name(edition: Edition) -> &'static str {
    match edition {
        Edition::Full => "full",
        Edition::Select => "select",
        Edition::Essentials => "essentials",
    }
}

fn list(addresses: &[Ipv4Addr]) -> String {
    let texts: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
    format!("[{}]", texts.join(", "))
}

/// What `ours` should do about a peer that greeted with `theirs`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Same cluster: replicate.
    Replicate,
    /// We are joining and they belong to a cluster: replace our shared configuration with
    /// theirs by adopting their cluster, then reconnect.
    Adopt(ClusterId),
    /// They are joining our cluster: wait until they have adopted it and greet again; never
    /// take their configuration.
    AwaitJoin,
    Refuse(Refusal),
}

/// The whole compatibility rule, the same on both sides, so two peers always agree on whether
/// they are compatible (though not on who joins whom).
pub fn check(ours: &Hello, theirs: &Hello) -> Verdict {
    if !ours.peers.contains(&theirs.address) || theirs.address == ours.address {
        return Verdict::Refuse(Refusal::NotListed { address: theirs.address });
    }
    if theirs.peer_id == ours.peer_id {
        return Verdict::Refuse(Refusal::SameIdentity);
    }
    if theirs.software_version != ours.software_version {
        return Verdict::Refuse(Refusal::VersionMismatch {
            ours: ours.software_version.clone(),
            theirs: theirs.software_version.clone(),
        });
    }
    if theirs.edition != ours.edition {
        return Verdict::Refuse(Refusal::EditionMismatch {
            ours: ours.edition,
            theirs: theirs.edition,
        });
    }
    if theirs.peers != ours.peers {
        return Verdict::Refuse(Refusal::PeerListMismatch {
            ours: ours.peers.clone(),
            theirs: theirs.peers.clone(),
        });
    }
    match (ours.cluster_id, theirs.cluster_id) {
        (Some(a), Some(b)) if a == b => Verdict::Replicate,
        (Some(_), Some(_)) => Verdict::Refuse(Refusal::DifferentCluster),
        (None, Some(theirs)) => Verdict::Adopt(theirs),
        (Some(_), None) => Verdict::AwaitJoin,
        (None, None) => Verdict::Refuse(Refusal::NoClusterYet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(last: u8, cluster: Option<u8>) -> Hello {
        Hello {
            software_version: "1.0.0".to_owned(),
            address: Ipv4Addr::new(10, 0, 0, last),
            host_name: format!("peer{last}"),
            peer_id: PeerId([last; 16]),
            cluster_id: cluster.map(|id| ClusterId([id; 16])),
            peers: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
            edition: Edition::Full,
        }
    }

    #[test]
    fn peers_of_two_editions_refuse_each_other_on_both_sides() {
        let full = hello(1, Some(7));
        let select = Hello { edition: Edition::Select, ..hello(2, Some(7)) };
        assert_eq!(
            check(&full, &select),
            Verdict::Refuse(Refusal::EditionMismatch {
                ours: Edition::Full,
                theirs: Edition::Select
            })
        );
        let Verdict::Refuse(refusal) = check(&select, &full) else { panic!("accepted") };
        assert_eq!(
            refusal.to_string(),
            "edition mismatch: it runs the full edition, this peer runs the select edition"
        );
        // Joining is refused too: the joiner would otherwise take the cluster's configuration.
        let joining = Hello { edition: Edition::Select, ..hello(2, None) };
        assert!(matches!(check(&joining, &full), Verdict::Refuse(Refusal::EditionMismatch { .. })));
        let same = hello(2, Some(7));
        assert_eq!(check(&full, &same), Verdict::Replicate);
    }

    #[test]
    fn an_older_releases_greeting_is_read_and_refused_by_version() {
        #[derive(Serialize)]
        enum OldFrame {
            Hello(OldHello),
        }
        #[derive(Serialize)]
        struct OldHello {
            software_version: String,
            address: Ipv4Addr,
            host_name: String,
            peer_id: PeerId,
            cluster_id: Option<ClusterId>,
            peers: Vec<Ipv4Addr>,
        }
        let ours = hello(1, Some(7));
        let old = OldFrame::Hello(OldHello {
            software_version: "0.9.0".to_owned(),
            address: Ipv4Addr::new(10, 0, 0, 2),
            host_name: "peer2".to_owned(),
            peer_id: PeerId([2; 16]),
            cluster_id: Some(ClusterId([7; 16])),
            peers: ours.peers.clone(),
        });
        let Frame::Hello(theirs) =
            Frame::decode(&postcard::to_stdvec(&old).expect("encode")).expect("decode")
        else {
            panic!("not a greeting")
        };
        assert!(matches!(check(&ours, &theirs), Verdict::Refuse(Refusal::VersionMismatch { .. })));
    }

    #[test]
    fn the_rule_is_symmetric_about_compatibility() {
        let cases = [
            (hello(1, Some(7)), hello(2, Some(7))),
            (hello(1, Some(7)), hello(2, Some(8))),
            (hello(1, None), hello(2, Some(7))),
            (hello(1, None), hello(2, None)),
        ];
        let expected = [
            (Verdict::Replicate, Verdict::Replicate),
            (
                Verdict::Refuse(Refusal::DifferentCluster),
                Verdict::Refuse(Refusal::DifferentCluster),
            ),
            (Verdict::Adopt(ClusterId([7; 16])), Verdict::AwaitJoin),
            (Verdict::Refuse(Refusal::NoClusterYet), Verdict::Refuse(Refusal::NoClusterYet)),
        ];
        for ((a, b), (a_sees, b_sees)) in cases.iter().zip(expected) {
            assert_eq!(check(a, b), a_sees);
            assert_eq!(check(b, a), b_sees);
        }
    }

    #[test]
    fn mismatches_are_named() {
        let ours = hello(1, Some(7));
        let mut newer = hello(2, Some(7));
        newer.software_version = "1.1.0".to_owned();
        assert_eq!(
            check(&ours, &newer).clone(),
            Verdict::Refuse(Refusal::VersionMismatch {
                ours: "1.0.0".to_owned(),
                theirs: "1.1.0".to_owned()
            })
        );
        let mut other_list = hello(2, Some(7));
        other_list.peers.push(Ipv4Addr::new(10, 0, 0, 3));
        let Verdict::Refuse(refusal) = check(&ours, &other_list) else { panic!("accepted") };
        assert_eq!(
            refusal.to_string(),
            "peer list mismatch: it lists [10.0.0.1, 10.0.0.2, 10.0.0.3], this peer lists \
             [10.0.0.1, 10.0.0.2]"
        );
        let stranger = Hello { address: Ipv4Addr::new(10, 0, 0, 9), ..hello(2, Some(7)) };
        assert!(matches!(check(&ours, &stranger), Verdict::Refuse(Refusal::NotListed { .. })));
        let clone = Hello { peer_id: ours.peer_id, ..hello(2, Some(7)) };
        assert_eq!(check(&ours, &clone), Verdict::Refuse(Refusal::SameIdentity));
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frames = [
            Frame::Hello(hello(1, None)),
            Frame::Refused(Refusal::NoClusterYet),
            Frame::Replication(vec![1, 2, 3]),
            Frame::Ping { sent_ms: 5 },
            Frame::AdminEndpoint(AdminEndpoint {
                port: 8443,
                certificate_sha256: "AB:CD".to_owned(),
            }),
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()).expect("decode"), frame);
        }
        assert!(Frame::decode(&[200, 1]).is_err());
    }

    #[test]
    fn the_admin_endpoint_frame_keeps_the_older_variants_numbering() {
        // Older releases must still decode a greeting (to refuse by version): the new frame is
        // appended, so the earlier variants keep their tags.
        assert_eq!(Frame::Ping { sent_ms: 5 }.encode()[0], 3);
        let endpoint =
            Frame::AdminEndpoint(AdminEndpoint { port: 1, certificate_sha256: String::new() });
        assert_eq!(endpoint.encode()[0], 5);
    }
}

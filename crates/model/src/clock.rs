//! Identity of a peer and the hybrid logical clock that orders events across peers.
//!
//! Time is always passed in (`now_ms`), never read here, so the model stays deterministic.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identity of one Baton peer: 16 random bytes made when its event log is first created.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct PeerId(pub [u8; 16]);

impl PeerId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<PeerId> {
        let bytes = hex::decode(text).ok()?;
        Some(PeerId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", &self.to_hex()[..8])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Identity of one cluster: 16 random bytes made by the peer that founds it (the seed's
/// "initial peer"), adopted by every peer that joins. Two peers holding different identities
/// hold different configuration histories and must never merge them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", &self.to_hex()[..8])
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A hybrid logical clock timestamp: wall-clock milliseconds plus a counter that breaks ties
/// and keeps causality when clocks are skewed. Ties between peers are broken by `PeerId`
/// wherever a total order is needed (see [`Stamp`]).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default, Debug,
)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc { wall_ms: 0, counter: 0 };
}

/// A total order over every event in a cluster: the HLC, then the origin peer.
/// Last-writer-wins compares `Stamp`s, so every peer picks the same winner whatever the
/// order in which events reached it.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default, Debug,
)]
pub struct Stamp {
    pub hlc: Hlc,
    pub origin: PeerId,
}

/// Generates monotonic HLC timestamps for the local peer.
#[derive(Debug, Default, Clone)]
pub struct HybridClock {
    last: Hlc,
}

impl HybridClock {
    pub fn new(last: Hlc) -> HybridClock {
        HybridClock { last }
    }

    /// Timestamp for a local event at wall time `now_ms`; strictly greater than every
    /// timestamp issued or observed before, even if the wall clock stepped backwards.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.wall_ms {
            Hlc { wall_ms: now_ms, counter: 0 }
        } else {
            Hlc { wall_ms: self.last.wall_ms, counter: self.last.counter + 1 }
        };
        self.last
    }

    /// Folds in a timestamp seen on a remote event so later local ticks order after it.
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_monotonic_when_wall_clock_goes_backwards() {
        let mut clock = HybridClock::default();
        let a = clock.tick(1_000);
        let b = clock.tick(900);
        let c = clock.tick(1_000);
        let d = clock.tick(1_001);
        assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
        assert_eq!(d, Hlc { wall_ms: 1_001, counter: 0 });
    }

    #[test]
    fn observe_moves_the_clock_past_remote_time() {
        let mut clock = HybridClock::default();
        clock.tick(10);
        clock.observe(Hlc { wall_ms: 50, counter: 7 });
        assert_eq!(clock.tick(20), Hlc { wall_ms: 50, counter: 8 });
    }

    #[test]
    fn peer_id_hex_round_trips() {
        let id = PeerId([0xab; 16]);
        assert_eq!(PeerId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(PeerId::from_hex("zz"), None);
    }
}

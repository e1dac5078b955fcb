//! The link decisions of one peer, as a pure state machine with no I/O and no clock of its
//! own: whom to dial and when (backoff), when a link has been silent too long, which of two
//! connections from one peer to keep, what to do when the settings change, and what each
//! peer's line says. The daemon's cluster service drives it (it dials, greets, sends and
//! reports back); the seeded simulation in `links_sim.rs` drives three of them through loss,
//! delays, crashes, settings changes and partitions.
//!
//! Links are one-way for replication: each peer dials every other listed peer and sends on
//! that connection, and receives on the ones it accepted. So per ordered pair (A, B) there is
//! one link: A's dialled connection, which is B's accepted one.
//!
//! Fed [`Event`]s with the time they happen at, it answers [`Action`]s. `F` is the driver's
//! failure detail (a reason to show); the machine only passes it on to a peer's line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Redial delays: doubling from the first to the last.
pub const RETRY_FIRST_MS: u64 = 250;
pub const RETRY_MAX_MS: u64 = 4_000;
pub const PING_INTERVAL_MS: u64 = 1_000;
/// A link with no frame for this long is dead, even if TCP has not noticed (a silent partition).
pub const SILENCE_TIMEOUT_MS: u64 = 5_000;
/// How long the driver gets to connect (TCP).
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// A dial that has neither succeeded nor failed by then is abandoned: the driver's connect and
/// handshake timeouts, with a margin, so a lost report cannot stall a peer's link for ever.
pub const DIAL_TIMEOUT_MS: u64 =
    CONNECT_TIMEOUT_MS + 2 * crate::channel::HANDSHAKE_TIMEOUT_MS + 1_000;

/// One connection, as the machine names it: dialled ones are numbered by the machine (in its
/// [`Action::Dial`]), accepted ones by the driver. Numbers are never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Conn {
    Dialled(u64),
    Accepted(u64),
}

/// Who is in the cluster, as this peer's settings say, once clustering may start.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Members {
    /// This peer's address (never dialled).
    pub own: Ipv4Addr,
    /// Every peer of the list, this one included.
    pub peers: BTreeSet<Ipv4Addr>,
}

/// What happened, as the driver tells it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event<F> {
    /// The settings changed (`None`: not clustered, or a prerequisite is missing): every link
    /// restarts from them. Starts a new generation.
    Settings(Option<Members>),
    /// A dialled connection passed the handshake: replicate on it.
    Greeted { conn: Conn },
    /// A dial ended without a link; `Some` is what the peer's line shows, `None` means the
    /// driver has shown the peer's state itself (it is joining, or this peer is).
    DialFailed { conn: Conn, failure: Option<F> },
    /// A connection from `peer` passed the handshake in `generation` (see [`Links::generation`]).
    Accepted { peer: Ipv4Addr, conn: Conn, generation: u64 },
    /// A frame arrived on a connection.
    Heard { conn: Conn },
    /// A connection broke, or the peer refused on it; `failure` is what the line shows.
    Lost { conn: Conn, failure: F },
    /// Time passed (deadlines are checked at every event).
    Tick,
}

/// What the driver must do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action<F> {
    /// Connect to `peer` and greet it; report [`Event::Greeted`] or [`Event::DialFailed`].
    Dial { peer: Ipv4Addr, conn: Conn },
    /// Close a connection (report nothing more about it).
    Close { conn: Conn },
    /// Send a ping on a dialled link (the other side answers with a pong).
    Ping { conn: Conn },
    /// What the peer's line says now.
    Line { peer: Ipv4Addr, line: Line<F> },
}

/// A peer's line, as far as links decide it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Line<F> {
    Connecting,
    /// Replicating on this dialled connection.
    Active {
        conn: Conn,
    },
    Failed(Cause<F>),
}

/// Why a peer's line failed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Cause<F> {
    /// No frame for [`SILENCE_TIMEOUT_MS`] on an active link.
    Silent,
    /// The dial got no answer within [`DIAL_TIMEOUT_MS`].
    NoAnswer,
    /// What the driver reported.
    Reported(F),
}

/// The dialling side of one peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dialer {
    /// The next dial is due at this time.
    Waiting {
        at_ms: u64,
    },
    Dialling {
        conn: Conn,
        since_ms: u64,
    },
    Up {
        conn: Conn,
        last_heard_ms: u64,
        next_ping_ms: u64,
    },
}

/// One listed peer.
#[derive(Clone, Debug)]
struct Peer {
    dialer: Dialer,
    /// The delay before the next dial after a failed one.
    retry_ms: u64,
    /// The connection it dialled to this peer, and when a frame last came on it.
    accepted: Option<(Conn, u64)>,
}

/// The links of one peer.
#[derive(Clone, Debug)]
pub struct Links<F> {
    members: Option<Members>,
    peers: BTreeMap<Ipv4Addr, Peer>,
    generation: u64,
    next_dial: u64,
    actions: Vec<Action<F>>,
}

impl<F> Default for Links<F> {
    fn default() -> Links<F> {
        Links {
            members: None,
            peers: BTreeMap::new(),
            generation: 0,
            next_dial: 0,
            actions: Vec::new(),
        }
    }
}

impl<F: Clone> Links<F> {
    /// The current generation: accepted connections report it, so one accepted under older
    /// settings is closed rather than kept.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The earliest time a [`Event::Tick`] has something to do.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let dialers = self.peers.values().map(|peer| match peer.dialer {
            Dialer::Waiting { at_ms } => at_ms,
            Dialer::Dialling { since_ms, .. } => since_ms + DIAL_TIMEOUT_MS,
            Dialer::Up { last_heard_ms, next_ping_ms, .. } => {
                next_ping_ms.min(last_heard_ms + SILENCE_TIMEOUT_MS + 1)
            }
        });
        let accepted = self.peers.values().filter_map(|peer| {
            peer.accepted.map(|(_, heard_ms)| heard_ms + SILENCE_TIMEOUT_MS + 1)
        });
        dialers.chain(accepted).min()
    }

    /// The connection this peer replicates on towards `peer`, if any.
    pub fn dialled_link(&self, peer: Ipv4Addr) -> Option<Conn> {
        match self.peers.get(&peer)?.dialer {
            Dialer::Up { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// The connection `peer` replicates on towards this peer, if any.
    pub fn accepted_link(&self, peer: Ipv4Addr) -> Option<Conn> {
        self.peers.get(&peer)?.accepted.map(|(conn, _)| conn)
    }

    /// Feeds one event that happened at `now_ms`; the actions to take, in order.
    pub fn handle(&mut self, now_ms: u64, event: Event<F>) -> Vec<Action<F>> {
        match event {
            Event::Settings(members) => self.restart(now_ms, members),
            Event::Greeted { conn } => self.greeted(now_ms, conn),
            Event::DialFailed { conn, failure } => {
                self.dial_failed(now_ms, conn, failure.map(Cause::Reported))
            }
            Event::Accepted { peer, conn, generation } => {
                self.accepted(now_ms, peer, conn, generation)
            }
            Event::Heard { conn } => self.heard(now_ms, conn),
            Event::Lost { conn, failure } => self.lost(now_ms, conn, Cause::Reported(failure)),
            Event::Tick => {}
        }
        self.deadlines(now_ms);
        std::mem::take(&mut self.actions)
    }

    /// Closes every link and starts again from `members`.
    fn restart(&mut self, now_ms: u64, members: Option<Members>) {
        for peer in std::mem::take(&mut self.peers).into_values() {
            if let Dialer::Dialling { conn, .. } | Dialer::Up { conn, .. } = peer.dialer {
                self.actions.push(Action::Close { conn });
            }
            if let Some((conn, _)) = peer.accepted {
                self.actions.push(Action::Close { conn });
            }
        }
        self.generation += 1;
        if let Some(members) = &members {
            for address in members.peers.iter().filter(|address| **address != members.own) {
                let peer = Peer {
                    dialer: Dialer::Waiting { at_ms: now_ms },
                    retry_ms: RETRY_FIRST_MS,
                    accepted: None,
                };
                self.peers.insert(*address, peer);
                self.actions.push(Action::Line { peer: *address, line: Line::Connecting });
            }
        }
        self.members = members;
    }

    fn greeted(&mut self, now_ms: u64, conn: Conn) {
        let Some((address, peer)) = self.dialling(conn) else {
            // A dial this machine no longer waits for (the settings changed since).
            self.actions.push(Action::Close { conn });
            return;
        };
        peer.dialer =
            Dialer::Up { conn, last_heard_ms: now_ms, next_ping_ms: now_ms + PING_INTERVAL_MS };
        self.actions.push(Action::Line { peer: address, line: Line::Active { conn } });
    }

    fn dial_failed(&mut self, now_ms: u64, conn: Conn, cause: Option<Cause<F>>) {
        let Some((address, peer)) = self.dialling(conn) else { return };
        peer.dialer = Dialer::Waiting { at_ms: now_ms + peer.retry_ms };
        peer.retry_ms = (peer.retry_ms * 2).min(RETRY_MAX_MS);
        if let Some(cause) = cause {
            self.actions.push(Action::Line { peer: address, line: Line::Failed(cause) });
        }
    }

    /// The peer whose dial in flight is `conn`.
    fn dialling(&mut self, conn: Conn) -> Option<(Ipv4Addr, &mut Peer)> {
        self.peers.iter_mut().find_map(|(address, peer)| match peer.dialer {
            Dialer::Dialling { conn: dialling, .. } if dialling == conn => Some((*address, peer)),
            _ => None,
        })
    }

    /// The newest accepted connection from a peer wins: the peer dials one at a time, so an
    /// older one is a link it has already given up (its end may not have reached us yet).
    fn accepted(&mut self, now_ms: u64, address: Ipv4Addr, conn: Conn, generation: u64) {
        let listed = self.peers.get_mut(&address).filter(|_| generation == self.generation);
        let Some(peer) = listed else {
            self.actions.push(Action::Close { conn });
            return;
        };
        if let Some((old, _)) = peer.accepted.replace((conn, now_ms)) {
            self.actions.push(Action::Close { conn: old });
        }
        // The peer is back (it restarted, or the network healed): dial it now rather than at
        // the end of a backoff that grew while it was away, so what it missed meanwhile
        // reaches it at once (a peer sends only on links it dialled).
        if let Dialer::Waiting { at_ms } = &mut peer.dialer {
            *at_ms = (*at_ms).min(now_ms);
            peer.retry_ms = RETRY_FIRST_MS;
        }
    }

    fn heard(&mut self, now_ms: u64, conn: Conn) {
        for peer in self.peers.values_mut() {
            match &mut peer.dialer {
                Dialer::Up { conn: up, last_heard_ms, .. } if *up == conn => {
                    *last_heard_ms = now_ms;
                }
                _ => {}
            }
            if let Some((accepted, heard_ms)) = &mut peer.accepted
                && *accepted == conn
            {
                *heard_ms = now_ms;
            }
        }
    }

    /// A connection ended: an active link shows why and redials soon, from the first delay.
    fn lost(&mut self, now_ms: u64, conn: Conn, cause: Cause<F>) {
        if self.dialling(conn).is_some() {
            self.dial_failed(now_ms, conn, Some(cause));
            return;
        }
        for (address, peer) in &mut self.peers {
            if matches!(peer.dialer, Dialer::Up { conn: up, .. } if up == conn) {
                peer.retry_ms = (RETRY_FIRST_MS * 2).min(RETRY_MAX_MS);
                peer.dialer = Dialer::Waiting { at_ms: now_ms + RETRY_FIRST_MS };
                self.actions.push(Action::Line { peer: *address, line: Line::Failed(cause) });
                return;
            }
            if peer.accepted.is_some_and(|(accepted, _)| accepted == conn) {
                peer.accepted = None;
                return;
            }
        }
    }

    /// Dials that are due, pings that are due, and links silent for too long.
    fn deadlines(&mut self, now_ms: u64) {
        let mut silent = Vec::new();
        let mut no_answer = Vec::new();
        for (address, peer) in &mut self.peers {
            match &mut peer.dialer {
                Dialer::Waiting { at_ms } if *at_ms <= now_ms => {
                    let conn = Conn::Dialled(self.next_dial);
                    self.next_dial += 1;
                    peer.dialer = Dialer::Dialling { conn, since_ms: now_ms };
                    self.actions.push(Action::Dial { peer: *address, conn });
                }
                Dialer::Dialling { conn, since_ms } if *since_ms + DIAL_TIMEOUT_MS <= now_ms => {
                    no_answer.push(*conn);
                }
                Dialer::Up { conn, last_heard_ms, .. }
                    if now_ms > *last_heard_ms + SILENCE_TIMEOUT_MS =>
                {
                    silent.push(*conn);
                }
                Dialer::Up { conn, next_ping_ms, .. } if *next_ping_ms <= now_ms => {
                    *next_ping_ms = now_ms + PING_INTERVAL_MS;
                    self.actions.push(Action::Ping { conn: *conn });
                }
                _ => {}
            }
            if let Some((conn, heard_ms)) = peer.accepted
                && now_ms > heard_ms + SILENCE_TIMEOUT_MS
            {
                silent.push(conn);
            }
        }
        for conn in silent {
            self.actions.push(Action::Close { conn });
            self.lost(now_ms, conn, Cause::Silent);
        }
        for conn in no_answer {
            self.actions.push(Action::Close { conn });
            self.lost(now_ms, conn, Cause::NoAnswer);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Machine = Links<&'static str>;

    fn members(own: u8, peers: &[u8]) -> Option<Members> {
        let address = |last: u8| Ipv4Addr::new(10, 0, 0, last);
        Some(Members { own: address(own), peers: peers.iter().map(|p| address(*p)).collect() })
    }

    fn peer(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    /// The connection of the one dial among `actions`.
    fn dialled(actions: &[Action<&'static str>]) -> Conn {
        let dials: Vec<Conn> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Dial { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        assert_eq!(dials.len(), 1, "{actions:?}");
        dials[0]
    }

    // Goal: a peer's second accepted connection replaces the first, which is closed (the
    // peer has given it up), and one from under older settings is refused.
    #[test]
    fn the_newest_accepted_connection_is_kept() {
        let mut links = Machine::default();
        links.handle(0, Event::Settings(members(1, &[1, 2])));
        let generation = links.generation();
        let (old, new) = (Conn::Accepted(0), Conn::Accepted(1));
        links.handle(10, Event::Accepted { peer: peer(2), conn: old, generation });
        let actions = links.handle(20, Event::Accepted { peer: peer(2), conn: new, generation });
        assert!(actions.contains(&Action::Close { conn: old }), "{actions:?}");
        assert_eq!(links.accepted_link(peer(2)), Some(new));
        let stale = Conn::Accepted(2);
        let actions = links
            .handle(30, Event::Accepted { peer: peer(2), conn: stale, generation: generation - 1 });
        assert_eq!(actions, vec![Action::Close { conn: stale }]);
    }

    // Goal: failed dials back off from 250 ms doubling to 4 s; after an active link ends the
    // next dial comes 250 ms later again, and its line says why it failed.
    #[test]
    fn dials_back_off_and_start_again_after_an_active_link() {
        let mut links = Machine::default();
        let mut now_ms = 0;
        let mut conn = dialled(&links.handle(now_ms, Event::Settings(members(1, &[1, 2]))));
        let mut waits = Vec::new();
        for _ in 0..6 {
            links.handle(now_ms, Event::DialFailed { conn, failure: Some("refused") });
            let at_ms = links.next_deadline_ms().unwrap();
            waits.push(at_ms - now_ms);
            now_ms = at_ms;
            conn = dialled(&links.handle(now_ms, Event::Tick));
        }
        assert_eq!(waits, [250, 500, 1_000, 2_000, 4_000, 4_000]);
        let actions = links.handle(now_ms, Event::Greeted { conn });
        assert!(actions.contains(&Action::Line { peer: peer(2), line: Line::Active { conn } }));
        let actions = links.handle(now_ms, Event::Lost { conn, failure: "reset" });
        let failed = Line::Failed(Cause::Reported("reset"));
        assert_eq!(actions, vec![Action::Line { peer: peer(2), line: failed }]);
        assert_eq!(links.next_deadline_ms(), Some(now_ms + RETRY_FIRST_MS));
    }

    // Goal: a peer whose dials have backed off to the longest delay is dialled at once when a
    // connection from it arrives (it is back), not seconds later.
    #[test]
    fn a_peer_that_connects_is_dialled_back_at_once() {
        let mut links = Machine::default();
        let mut now_ms = 0;
        let mut conn = dialled(&links.handle(now_ms, Event::Settings(members(1, &[1, 2]))));
        for _ in 0..5 {
            links.handle(now_ms, Event::DialFailed { conn, failure: Some("refused") });
            now_ms = links.next_deadline_ms().unwrap();
            conn = dialled(&links.handle(now_ms, Event::Tick));
        }
        links.handle(now_ms, Event::DialFailed { conn, failure: Some("refused") });
        assert_eq!(links.next_deadline_ms(), Some(now_ms + RETRY_MAX_MS));
        let generation = links.generation();
        let from_peer = Conn::Accepted(0);
        let actions = links
            .handle(now_ms + 10, Event::Accepted { peer: peer(2), conn: from_peer, generation });
        let conn = dialled(&actions);
        links.handle(now_ms + 20, Event::DialFailed { conn, failure: Some("refused") });
        assert_eq!(links.next_deadline_ms(), Some(now_ms + 20 + RETRY_FIRST_MS));
    }

    // Goal: an active link that hears nothing for the silence timeout is closed and its line
    // fails as silent; pings go out meanwhile.
    #[test]
    fn a_silent_link_is_closed() {
        let mut links = Machine::default();
        let conn = dialled(&links.handle(0, Event::Settings(members(1, &[1, 2]))));
        links.handle(0, Event::Greeted { conn });
        let pinged = links.handle(PING_INTERVAL_MS, Event::Tick);
        assert_eq!(pinged, vec![Action::Ping { conn }]);
        let actions = links.handle(SILENCE_TIMEOUT_MS + 1, Event::Tick);
        assert!(actions.contains(&Action::Close { conn }), "{actions:?}");
        let silent = Line::Failed(Cause::Silent);
        assert!(actions.contains(&Action::Line { peer: peer(2), line: silent }), "{actions:?}");
        assert_eq!(links.dialled_link(peer(2)), None);
    }

    // Goal: new settings close every connection, and a peer taken off the list is never
    // dialled again.
    #[test]
    fn a_removed_peer_is_closed_and_never_dialled_again() {
        let mut links = Machine::default();
        let actions = links.handle(0, Event::Settings(members(1, &[1, 2, 3])));
        let dials = actions.iter().filter(|a| matches!(a, Action::Dial { .. })).count();
        assert_eq!(dials, 2);
        let to_3 = actions
            .iter()
            .find_map(|a| match a {
                Action::Dial { peer: p, conn } if *p == peer(3) => Some(*conn),
                _ => None,
            })
            .unwrap();
        links.handle(5, Event::Greeted { conn: to_3 });
        let actions = links.handle(10, Event::Settings(members(1, &[1, 2])));
        assert!(actions.contains(&Action::Close { conn: to_3 }), "{actions:?}");
        for now_ms in (10..60_000).step_by(100) {
            for action in links.handle(now_ms, Event::Tick) {
                if let Action::Dial { peer: p, conn } = action {
                    assert_ne!(p, peer(3), "dialled a removed peer");
                    links.handle(now_ms, Event::DialFailed { conn, failure: None });
                }
            }
        }
    }
}

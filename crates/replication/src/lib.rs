//! Replication of the shared event stream among cluster peers, as a deterministic state
//! machine: it is fed messages, local appends and the current time, and answers with messages
//! to send. It owns no sockets, threads or clocks, so a simulation can drive several peers
//! under seeded loss, duplication, reordering, partitions, crashes and clock skew (`sim.rs`)
//! and replay any failure from its seed.
//!
//! Protocol (anti-entropy): every peer periodically sends each other peer a [`Message::Summary`]
//! of how far it holds each origin's shared chain; a peer that holds more answers with the
//! missing [`Message::Events`], at most [`EVENTS_PER_MESSAGE_MAX`] at a time. Local appends
//! are also pushed at once. The log refuses anything that does not extend a chain exactly, so
//! a lost or reordered message costs at most one round, never a hole. Convergence of the
//! configuration follows from the model's last-writer-wins rule.
//!
//! Only the `Shared` stream ever leaves a peer: peer-local settings are filtered out here and
//! again checked before sending. Must not depend on tokio or the network; authentication,
//! encryption and transport belong to the layer that carries [`Message`]s.

use eventlog::{EventLog, StoredEvent, Stream};
use model::PeerId;
use std::collections::{BTreeMap, BTreeSet};

/// Events in one message: bounds message size and the work one message can cause.
pub const EVENTS_PER_MESSAGE_MAX: usize = 256;
/// How often a summary goes to every peer even when nothing happened, so a peer that missed
/// a push (lost message, partition, restart) catches up within about this long.
pub const SUMMARY_INTERVAL_MS: u64 = 1_000;

/// What peers send each other.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// The sender holds each origin's shared chain up to this sequence number.
    Summary { heads: BTreeMap<PeerId, u64> },
    /// Shared events, in chain order within each origin.
    Events { events: Vec<StoredEvent> },
}

/// Something the caller must do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    Send {
        to: PeerId,
        message: Message,
    },
    /// These events were new here and are now durable: fold them into the state.
    Applied {
        events: Vec<StoredEvent>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("message from {from}, which is not a peer of this cluster")]
    UnknownPeer { from: PeerId },
    #[error(transparent)]
    EventLog(#[from] eventlog::Error),
}

/// One peer's replication state. Everything in it is soft: after a crash a fresh
/// `Replicator` over the same log resumes correctly.
#[derive(Debug)]
pub struct Replicator {
    me: PeerId,
    peers: BTreeSet<PeerId>,
    next_summary_at_ms: u64,
}

impl Replicator {
    pub fn new(me: PeerId, peers: impl IntoIterator<Item = PeerId>) -> Replicator {
        let peers = peers.into_iter().filter(|peer| *peer != me).collect();
        Replicator { me, peers, next_summary_at_ms: 0 }
    }

    pub fn peers(&self) -> &BTreeSet<PeerId> {
        &self.peers
    }

    /// Changes who this peer replicates with (peers come and go as connections authenticate
    /// and fail). A summary goes to everyone at the next tick, so a newcomer catches up at once.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let me = self.me;
        self.peers = peers.into_iter().filter(|peer| *peer != me).collect();
        self.next_summary_at_ms = 0;
    }

    /// Sends summaries when they are due.
    pub fn tick(&mut self, now_ms: u64, log: &EventLog) -> Vec<Output> {
        if now_ms < self.next_summary_at_ms {
            return Vec::new();
        }
        self.next_summary_at_ms = now_ms + SUMMARY_INTERVAL_MS;
        let heads = shared_heads(log);
        self.peers
            .iter()
            .map(|&to| Output::Send { to, message: Message::Summary { heads: heads.clone() } })
            .collect()
    }

    /// Pushes events just appended on this peer to every peer (peer-local ones never leave).
    pub fn appended(&self, events: &[StoredEvent]) -> Vec<Output> {
        let shared: Vec<StoredEvent> =
            events.iter().filter(|e| e.stream == Stream::Shared).cloned().collect();
        if shared.is_empty() {
            return Vec::new();
        }
        self.peers
            .iter()
            .map(|&to| Output::Send { to, message: Message::Events { events: shared.clone() } })
            .collect()
    }

    pub fn receive(
        &mut self,
        from: PeerId,
        message: Message,
        log: &mut EventLog,
    ) -> Result<Vec<Output>, Error> {
        if !self.peers.contains(&from) {
            return Err(Error::UnknownPeer { from });
        }
        match message {
            Message::Summary { heads: theirs } => {
                let mut missing = Vec::new();
                for (origin, seq) in shared_heads(log) {
                    let their_seq = theirs.get(&origin).copied().unwrap_or(0);
                    if seq > their_seq && missing.len() < EVENTS_PER_MESSAGE_MAX {
                        let room = EVENTS_PER_MESSAGE_MAX - missing.len();
                        missing.extend(log.read_origin(origin, Stream::Shared, their_seq, room)?);
                    }
                }
                // They hold something we lack: ask by answering with our own summary.
                let mine = shared_heads(log);
                let behind = theirs
                    .iter()
                    .any(|(origin, seq)| mine.get(origin).copied().unwrap_or(0) < *seq);
                let mut outputs = Vec::new();
                if !missing.is_empty() {
                    outputs.push(Output::Send {
                        to: from,
                        message: Message::Events { events: missing },
                    });
                }
                if behind {
                    outputs
                        .push(Output::Send { to: from, message: Message::Summary { heads: mine } });
                }
                Ok(outputs)
            }
            Message::Events { events } => {
                // Never store our own events from elsewhere, nor a peer-local event that should
                // not have been sent.
                let events: Vec<StoredEvent> = events
                    .into_iter()
                    .filter(|e| e.stream == Stream::Shared && e.origin != self.me)
                    .collect();
                let full_batch = events.len() >= EVENTS_PER_MESSAGE_MAX;
                match log.append_remote(&events) {
                    Ok(applied) if applied.is_empty() => Ok(Vec::new()),
                    // A full batch means the sender probably holds more: ask again at once
                    // rather than at the next summary tick, so catching up runs at network
                    // speed instead of one batch per SUMMARY_INTERVAL_MS.
                    Ok(applied) if full_batch => Ok(vec![
                        Output::Applied { events: applied },
                        Output::Send {
                            to: from,
                            message: Message::Summary { heads: shared_heads(log) },
                        },
                    ]),
                    Ok(applied) => Ok(vec![Output::Applied { events: applied }]),
                    // A hole before these events (an earlier message was lost or overtaken):
                    // drop them and say how far we are, so the sender fills the hole in order.
                    Err(eventlog::Error::Gap { .. }) => Ok(vec![Output::Send {
                        to: from,
                        message: Message::Summary { heads: shared_heads(log) },
                    }]),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }
}

/// How far this log holds each origin's shared chain.
pub fn shared_heads(log: &EventLog) -> BTreeMap<PeerId, u64> {
    log.heads()
        .iter()
        .filter(|((_, stream), _)| *stream == Stream::Shared)
        .map(|((origin, _), head)| (*origin, head.seq))
        .collect()
}

#[cfg(test)]
mod sim;
mod wire;

pub use wire::{MESSAGE_BYTES_MAX, WireError};

//! Replication of the shared event stream among cluster peers, as a deterministic state
//! machine: it is fed messages, local appends and the current time, and answers with messages
//! to send. It owns no sockets, threads or clocks, so a simulation can drive several peers
//! under seeded loss, duplication, reordering, partitions, crashes and clock skew (`sim.rs`)
//! and replay any failure from its seed.
//!
//! Protocol (anti-entropy): every peer periodically sends each other peer a [`Message::Summary`]
//! of how far it holds each origin's shared chain; a peer that holds more answers with the
//! missing [`Message::Events`] in one batch of at most [`CATCH_UP_BATCH_BYTES_MAX`] bytes
//! (or [`EVENTS_PER_MESSAGE_MAX`] events). Flow control is by acknowledgement: the receiver of
//! a full batch answers with its summary once the batch is appended, which asks for the next;
//! the daemon sends that summary before its commit, so one batch is on its way while the
//! previous one is made durable, never more.
//! Local appends are pushed at once, pipelined (no acknowledgement awaited). The log refuses
//! anything that does not extend a chain exactly, so a lost or reordered push costs one round
//! (the receiver asks at the first gap it sees, once per position), never a hole; a transport
//! that had to drop pushes calls [`Replicator::resync`] to start that round itself rather than
//! leave it to the next summary. Convergence of the configuration follows from the model's
//! last-writer-wins rule.
//!
//! Only the `Shared` stream ever leaves a peer: peer-local settings are filtered out here and
//! again checked before sending. Must not depend on tokio or the network; authentication,
//! encryption and transport belong to the layer that carries [`Message`]s.

use eventlog::{EventLog, StoredEvent, Stream};
use model::PeerId;
use std::collections::{BTreeMap, BTreeSet};

/// Events in one catch-up batch at most: bounds the work one message can cause.
pub const EVENTS_PER_MESSAGE_MAX: usize = 4_096;
/// Bytes of events (as [`event_bytes`] counts them) in one catch-up batch: a batch stops at the
/// first event that reaches it, so a message stays far below [`MESSAGE_BYTES_MAX`] while
/// catching up moves about a mebibyte per round trip.
pub const CATCH_UP_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Events read from the log at a time while a catch-up batch is filled.
const CATCH_UP_READ_PAGE: usize = 512;
/// What [`event_bytes`] adds to an event's variable fields: origin, sequence, HLC, version and
/// the two hashes, about as postcard encodes them.
const EVENT_FIXED_BYTES: usize = 16 + 8 + 12 + 2 + 32 + 32;
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
    /// Per peer, the heads this peer last asked it to send from. While they have not moved, a
    /// further gap from that peer (the pushes that overtook the answer) asks nothing more:
    /// one answer fills them all. Forgotten at each summary, which asks anew.
    asked: BTreeMap<PeerId, BTreeMap<PeerId, u64>>,
    /// Per peer, the heads of its summary this peer last answered with events. The same heads
    /// asked again once are passed over: each answer is a batch read and sent, and two peers
    /// that link greet each other, so a peer that is behind asks with its greeting and again
    /// in answer to the other's. Forgotten then, at each summary tick, when the peer links anew
    /// and at a resync (the answer may have been dropped: no route yet, a full queue).
    answered: BTreeMap<PeerId, BTreeMap<PeerId, u64>>,
}

impl Replicator {
    pub fn new(me: PeerId, peers: impl IntoIterator<Item = PeerId>) -> Replicator {
        let peers = peers.into_iter().filter(|peer| *peer != me).collect();
        Replicator {
            me,
            peers,
            next_summary_at_ms: 0,
            asked: BTreeMap::new(),
            answered: BTreeMap::new(),
        }
    }

    pub fn peers(&self) -> &BTreeSet<PeerId> {
        &self.peers
    }

    /// Changes who this peer replicates with (peers come and go as connections authenticate
    /// and fail). A newcomer gets our summary at once rather than at the next tick, so a peer
    /// that comes back catches up (or this one does) as soon as its link is up.
    pub fn set_peers(
        &mut self,
        peers: impl IntoIterator<Item = PeerId>,
        log: &EventLog,
    ) -> Vec<Output> {
        let me = self.me;
        let peers: BTreeSet<PeerId> = peers.into_iter().filter(|peer| *peer != me).collect();
        let newcomers: Vec<PeerId> = peers.difference(&self.peers).copied().collect();
        self.peers = peers;
        for newcomer in &newcomers {
            self.answered.remove(newcomer);
        }
        if newcomers.is_empty() {
            return Vec::new();
        }
        let heads = shared_heads(log);
        newcomers
            .into_iter()
            .map(|to| Output::Send { to, message: Message::Summary { heads: heads.clone() } })
            .collect()
    }

    /// Sends summaries when they are due.
    pub fn tick(&mut self, now_ms: u64, log: &EventLog) -> Vec<Output> {
        if now_ms < self.next_summary_at_ms {
            return Vec::new();
        }
        self.next_summary_at_ms = now_ms + SUMMARY_INTERVAL_MS;
        self.asked.clear();
        self.answered.clear();
        let heads = shared_heads(log);
        self.peers
            .iter()
            .map(|&to| Output::Send { to, message: Message::Summary { heads: heads.clone() } })
            .collect()
    }

    /// Pushes events just appended on this peer (a whole group commit's) to every peer, in as
    /// few messages as the catch-up batch limits allow; peer-local ones never leave.
    pub fn appended(&self, events: &[StoredEvent]) -> Vec<Output> {
        let mut batches = vec![Batch::default()];
        for event in events.iter().filter(|e| e.stream == Stream::Shared) {
            if batches.last().is_some_and(Batch::is_full) {
                batches.push(Batch::default());
            }
            if let Some(batch) = batches.last_mut() {
                batch.push(event.clone());
            }
        }
        let batches = batches.into_iter().filter(|batch| !batch.events.is_empty());
        batches
            .flat_map(|batch| {
                self.peers.iter().map(move |&to| Output::Send {
                    to,
                    message: Message::Events { events: batch.events.clone() },
                })
            })
            .collect()
    }

    /// Starts a catch-up round with `peer` at once: for when pushes to it were dropped (its
    /// link's queue was full, or it had no route yet). Our summary makes a peer that lacks
    /// something answer with its own, which this peer answers with the missing events, streamed
    /// from the log, even if it answered the same heads before (that answer may be lost too).
    pub fn resync(&mut self, peer: PeerId, log: &EventLog) -> Vec<Output> {
        if !self.peers.contains(&peer) {
            return Vec::new();
        }
        self.answered.remove(&peer);
        vec![Output::Send { to: peer, message: Message::Summary { heads: shared_heads(log) } }]
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
            Message::Summary { heads: theirs } => self.answer_summary(from, theirs, log),
            Message::Events { events } => self.receive_events(from, events, log),
        }
    }

    fn receive_events(
        &mut self,
        from: PeerId,
        events: Vec<StoredEvent>,
        log: &mut EventLog,
    ) -> Result<Vec<Output>, Error> {
        // A full batch means the sender probably holds more: ask again at once rather than at
        // the next summary tick, so catching up runs at network speed, one batch per round
        // trip, each asked for only once the previous one is appended (the flow control).
        let full_batch = batch_is_full(&events);
        // Never store our own events from elsewhere, nor a peer-local event that should not
        // have been sent.
        let events: Vec<StoredEvent> = events
            .into_iter()
            .filter(|e| e.stream == Stream::Shared && e.origin != self.me)
            .collect();
        match log.append_remote(events) {
            Ok(applied) if applied.is_empty() => Ok(Vec::new()),
            Ok(applied) if full_batch => {
                let mut outputs = vec![Output::Applied { events: applied }];
                outputs.extend(self.ask(from, log));
                Ok(outputs)
            }
            Ok(applied) => Ok(vec![Output::Applied { events: applied }]),
            // A hole before these events (an earlier message was lost or overtaken): drop them
            // and say how far we are, so the sender fills the hole in order.
            Err(eventlog::Error::Gap { .. }) => Ok(self.ask(from, log).into_iter().collect()),
            Err(error) => Err(error.into()),
        }
    }

    /// What a peer's summary calls for: the events it lacks (one batch), unless these very heads
    /// were just answered, and our own summary if it holds something we lack.
    fn answer_summary(
        &mut self,
        from: PeerId,
        theirs: BTreeMap<PeerId, u64>,
        log: &EventLog,
    ) -> Result<Vec<Output>, Error> {
        let mine = shared_heads(log);
        let behind =
            theirs.iter().any(|(origin, seq)| mine.get(origin).copied().unwrap_or(0) < *seq);
        let mut outputs = Vec::new();
        if self.answered.get(&from) == Some(&theirs) {
            // Passed over once: a third ask from the same heads means the answer was lost on
            // the way or on the peer's side (its commit failed), and it is answered again.
            self.answered.remove(&from);
        } else {
            let missing = catch_up_batch(&theirs, log)?;
            if !missing.is_empty() {
                self.answered.insert(from, theirs);
                let message = Message::Events { events: missing };
                outputs.push(Output::Send { to: from, message });
            }
        }
        if behind {
            outputs.push(Output::Send { to: from, message: Message::Summary { heads: mine } });
        }
        Ok(outputs)
    }

    /// Our summary to `from`, which answers with what we lack; nothing if we already asked it
    /// from these very heads since the last summary.
    fn ask(&mut self, from: PeerId, log: &EventLog) -> Option<Output> {
        let mine = shared_heads(log);
        if self.asked.get(&from) == Some(&mine) {
            return None;
        }
        self.asked.insert(from, mine.clone());
        Some(Output::Send { to: from, message: Message::Summary { heads: mine } })
    }
}

/// The shared events this log holds beyond `theirs`, in chain order per origin, up to one
/// full [`Batch`].
fn catch_up_batch(
    theirs: &BTreeMap<PeerId, u64>,
    log: &EventLog,
) -> Result<Vec<StoredEvent>, Error> {
    let mut batch = Batch::default();
    for (origin, seq) in shared_heads(log) {
        let mut after_seq = theirs.get(&origin).copied().unwrap_or(0);
        while after_seq < seq {
            let room = EVENTS_PER_MESSAGE_MAX - batch.events.len();
            let page =
                log.read_origin(origin, Stream::Shared, after_seq, room.min(CATCH_UP_READ_PAGE))?;
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            for event in page {
                if batch.is_full() {
                    return Ok(batch.events);
                }
                batch.push(event);
            }
        }
    }
    Ok(batch.events)
}

/// The events of one message, cut as every batch is, pushed or caught up: at
/// [`EVENTS_PER_MESSAGE_MAX`] events or at the first event that brings it to
/// [`CATCH_UP_BATCH_BYTES_MAX`] bytes.
#[derive(Default)]
struct Batch {
    events: Vec<StoredEvent>,
    bytes: usize,
}

impl Batch {
    fn is_full(&self) -> bool {
        full(self.events.len(), self.bytes)
    }

    fn push(&mut self, event: StoredEvent) {
        self.bytes += event_bytes(&event);
        self.events.push(event);
    }
}

fn full(events: usize, bytes: usize) -> bool {
    events >= EVENTS_PER_MESSAGE_MAX || bytes >= CATCH_UP_BATCH_BYTES_MAX
}

/// Whether a received batch is as large as a [`Batch`] gets, so its sender may hold more.
pub fn batch_is_full(events: &[StoredEvent]) -> bool {
    full(events.len(), events.iter().map(event_bytes).sum())
}

/// About how many bytes an event takes in a message.
pub fn event_bytes(event: &StoredEvent) -> usize {
    EVENT_FIXED_BYTES + event.actor.len() + event.kind.len() + event.payload.len()
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
#[cfg(test)]
mod tests;
mod wire;

pub use wire::{MESSAGE_BYTES_MAX, WireError};

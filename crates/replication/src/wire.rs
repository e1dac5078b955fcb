//! The byte format of replication [`Message`]s between peers (postcard). Only shared events
//! have a wire form at all: [`WireEvent`] has no stream field, so a peer-local event cannot be
//! encoded by mistake, and decoding can only ever produce shared events.

use crate::Message;
use eventlog::{Hash, StoredEvent, Stream};
use model::{Hlc, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Upper bound on one encoded message; larger input is refused before decoding.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("replication message of {size_bytes} bytes exceeds the limit of {MESSAGE_BYTES_MAX}")]
    TooLarge { size_bytes: usize },
    #[error("malformed replication message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("a peer-local event cannot be sent to another peer")]
    LocalEvent,
}

#[derive(Serialize, Deserialize)]
enum WireMessage {
    Summary { heads: BTreeMap<PeerId, u64> },
    Events { events: Vec<WireEvent> },
}

/// A shared event as it travels. The receiver's log checks its hash and chain.
#[derive(Serialize, Deserialize)]
struct WireEvent {
    origin: PeerId,
    seq: u64,
    hlc: Hlc,
    actor: String,
    kind: String,
    version: u16,
    payload: Vec<u8>,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let wire = match self {
            Message::Summary { heads } => WireMessage::Summary { heads: heads.clone() },
            Message::Events { events } => WireMessage::Events {
                events: events.iter().map(WireEvent::from_stored).collect::<Result<_, _>>()?,
            },
        };
        let bytes = postcard::to_stdvec(&wire)?;
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(WireError::TooLarge { size_bytes: bytes.len() });
        }
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(WireError::TooLarge { size_bytes: bytes.len() });
        }
        Ok(match postcard::from_bytes(bytes)? {
            WireMessage::Summary { heads } => Message::Summary { heads },
            WireMessage::Events { events } => {
                Message::Events { events: events.into_iter().map(WireEvent::into_stored).collect() }
            }
        })
    }
}

impl WireEvent {
    fn from_stored(event: &StoredEvent) -> Result<WireEvent, WireError> {
        if event.stream != Stream::Shared {
            return Err(WireError::LocalEvent);
        }
        Ok(WireEvent {
            origin: event.origin,
            seq: event.seq,
            hlc: event.hlc,
            actor: event.actor.clone(),
            kind: event.kind.clone(),
            version: event.version,
            payload: event.payload.clone(),
            prev_hash: event.prev_hash.0,
            hash: event.hash.0,
        })
    }

    fn into_stored(self) -> StoredEvent {
        StoredEvent {
            // Positions are local to each log; the receiving log assigns its own.
            position: 0,
            origin: self.origin,
            stream: Stream::Shared,
            seq: self.seq,
            hlc: self.hlc,
            actor: self.actor,
            kind: self.kind,
            version: self.version,
            payload: self.payload,
            prev_hash: Hash(self.prev_hash),
            hash: Hash(self.hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: Stream) -> StoredEvent {
        StoredEvent {
            position: 12,
            origin: PeerId([1; 16]),
            stream,
            seq: 3,
            hlc: Hlc { wall_ms: 5, counter: 1 },
            actor: "admin".to_owned(),
            kind: "bridge.saved".to_owned(),
            version: 2,
            payload: vec![1, 2, 3],
            prev_hash: Hash([4; 32]),
            hash: Hash([5; 32]),
        }
    }

    #[test]
    fn messages_round_trip_without_local_positions() {
        let summary = Message::Summary { heads: BTreeMap::from([(PeerId([1; 16]), 9)]) };
        assert_eq!(Message::decode(&summary.encode().expect("encode")).expect("decode"), summary);
        let events = Message::Events { events: vec![event(Stream::Shared)] };
        let Message::Events { events: decoded } =
            Message::decode(&events.encode().expect("encode")).expect("decode")
        else {
            panic!("events decoded as something else");
        };
        assert_eq!(decoded, vec![StoredEvent { position: 0, ..event(Stream::Shared) }]);
    }

    #[test]
    fn local_events_have_no_wire_form() {
        let message = Message::Events { events: vec![event(Stream::Shared), event(Stream::Local)] };
        assert!(matches!(message.encode(), Err(WireError::LocalEvent)));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(Message::decode(&[9, 9, 9, 9]), Err(WireError::Malformed(_))));
        assert!(matches!(Message::decode(&[]), Err(WireError::Malformed(_))));
    }
}

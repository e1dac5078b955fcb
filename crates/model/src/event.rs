//! Events: what happened to the configuration, in the past tense, and their versioned encoding.
//!
//! On disk and on the wire an event is `(kind, version, payload)`: `kind` is
//! `"<record kind>.saved"` or `"<record kind>.removed"`, `version` is the payload's schema
//! version for that kind, and `payload` is postcard. Postcard is not self-describing, so a
//! payload can only be read by the exact schema that wrote it: when a record's shape changes,
//! its version goes up, the old shape stays here frozen, and [`Event::decode`] upcasts old
//! payloads to the current shape. A version newer than this build knows is refused, never
//! guessed at.

use crate::record::{
    AdminRole, Administrator, Bridge, BridgeType, Protocol, Record, RecordKey, RecordKind, Scope,
};
use serde::{Deserialize, Serialize};

/// A change to one record.
#[derive(Clone, PartialEq, Debug)]
pub enum Event {
    /// The record now has this value (created or replaced).
    Saved(Record),
    /// The record no longer exists.
    Removed(RecordKey),
}

/// An event in its storage form.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Encoded {
    pub kind: String,
    pub version: u16,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown event kind {kind:?}")]
    UnknownKind { kind: String },
    #[error(
        "event {kind:?} has version {version}, but this software reads at most version {supported}"
    )]
    VersionTooNew { kind: String, version: u16, supported: u16 },
    #[error("event {kind:?} version {version} has no decoder")]
    VersionUnknown { kind: String, version: u16 },
    #[error("event {kind:?} payload is malformed: {reason}")]
    Malformed { kind: String, reason: String },
}

const SAVED: &str = ".saved";
const REMOVED: &str = ".removed";

/// The current payload version of a record kind's `saved` event.
pub fn current_version(kind: RecordKind) -> u16 {
    match kind {
        // v2 added `protocol` (HTTP or HTTPS per bridge); v1 bridges were always HTTPS.
        // v3 added `pinned_sha256`; earlier bridges pinned nothing.
        RecordKind::Bridge => 3,
        // v2 added `role` (full or read-only); v1 accounts were all full administrators.
        RecordKind::Administrator => 2,
        _ => 1,
    }
}

/// Version of every `removed` event: its payload is only the record name.
pub const REMOVED_VERSION: u16 = 1;

impl Event {
    pub fn key(&self) -> RecordKey {
        match self {
            Event::Saved(record) => record.key(),
            Event::Removed(key) => key.clone(),
        }
    }

    /// The kind of record changed, without copying its name as `key` does.
    pub fn kind(&self) -> RecordKind {
        match self {
            Event::Saved(record) => record.kind(),
            Event::Removed(key) => key.kind,
        }
    }

    /// The name of the record changed, borrowed.
    pub fn name(&self) -> &str {
        match self {
            Event::Saved(record) => record.name(),
            Event::Removed(key) => &key.name,
        }
    }

    pub fn scope(&self) -> Scope {
        self.kind().scope()
    }

    pub fn encode(&self) -> Encoded {
        match self {
            Event::Saved(record) => Event::encode_saved(record),
            Event::Removed(key) => Encoded {
                kind: format!("{}{REMOVED}", key.kind.as_str()),
                version: REMOVED_VERSION,
                payload: postcard::to_stdvec(&key.name).expect("postcard encoding of a name"),
            },
        }
    }

    /// [`Event::encode`] of `Event::Saved(record)`, without a copy of the record.
    pub fn encode_saved(record: &Record) -> Encoded {
        Encoded {
            kind: format!("{}{SAVED}", record.kind().as_str()),
            version: current_version(record.kind()),
            payload: record.to_postcard(),
        }
    }

    pub fn decode(kind: &str, version: u16, payload: &[u8]) -> Result<Event, DecodeError> {
        let unknown = || DecodeError::UnknownKind { kind: kind.to_owned() };
        let malformed = |error: postcard::Error| DecodeError::Malformed {
            kind: kind.to_owned(),
            reason: error.to_string(),
        };
        if let Some(record_kind) = kind.strip_suffix(SAVED) {
            let record_kind = RecordKind::from_name(record_kind).ok_or_else(unknown)?;
            let supported = current_version(record_kind);
            if version > supported {
                return Err(DecodeError::VersionTooNew {
                    kind: kind.to_owned(),
                    version,
                    supported,
                });
            }
            if version == supported {
                return Record::from_postcard(record_kind, payload)
                    .map(Event::Saved)
                    .map_err(malformed);
            }
            return upcast(record_kind, version, payload)
                .ok_or_else(|| DecodeError::VersionUnknown { kind: kind.to_owned(), version })?
                .map(Event::Saved)
                .map_err(malformed);
        }
        if let Some(record_kind) = kind.strip_suffix(REMOVED) {
            let record_kind = RecordKind::from_name(record_kind).ok_or_else(unknown)?;
            if version != REMOVED_VERSION {
                return Err(DecodeError::VersionUnknown { kind: kind.to_owned(), version });
            }
            let name: String = postcard::from_bytes(payload).map_err(malformed)?;
            return Ok(Event::Removed(RecordKey { kind: record_kind, name }));
        }
        Err(unknown())
    }
}

/// Reads an old payload version into the current record shape; `None` if no such version.
fn upcast(
    kind: RecordKind,
    version: u16,
    payload: &[u8],
) -> Option<Result<Record, postcard::Error>> {
    match (kind, version) {
        (RecordKind::Bridge, 1) => Some(postcard::from_bytes::<BridgeV1>(payload).map(|v1| {
            Record::Bridge(Bridge {
                name: v1.name,
                bridge_type: v1.bridge_type,
                address: v1.address,
                protocol: Protocol::Https,
                username: v1.username,
                password: v1.password,
                capacity_ports: v1.capacity_ports,
                enabled: v1.enabled,
                pinned_sha256: None,
            })
        })),
        (RecordKind::Bridge, 2) => Some(postcard::from_bytes::<BridgeV2>(payload).map(|v2| {
            Record::Bridge(Bridge {
                name: v2.name,
                bridge_type: v2.bridge_type,
                address: v2.address,
                protocol: v2.protocol,
                username: v2.username,
                password: v2.password,
                capacity_ports: v2.capacity_ports,
                enabled: v2.enabled,
                pinned_sha256: None,
            })
        })),
        (RecordKind::Administrator, 1) => {
            Some(postcard::from_bytes::<AdministratorV1>(payload).map(|v1| {
                Record::Administrator(Administrator {
                    name: v1.name,
                    password_hash: v1.password_hash,
                    must_change_password: v1.must_change_password,
                    role: AdminRole::Full,
                })
            }))
        }
        _ => None,
    }
}

/// `administrator.saved` version 1, frozen: never change it, write a new version instead.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdministratorV1 {
    pub name: String,
    pub password_hash: String,
    pub must_change_password: bool,
}

/// `bridge.saved` version 1, frozen: never change it, write a new version instead.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BridgeV1 {
    pub name: String,
    pub bridge_type: BridgeType,
    pub address: String,
    pub username: String,
    pub password: String,
    pub capacity_ports: u32,
    pub enabled: bool,
}

/// `bridge.saved` version 2 (per-bridge protocol), frozen: never change it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BridgeV2 {
    pub name: String,
    pub bridge_type: BridgeType,
    pub address: String,
    pub protocol: Protocol,
    pub username: String,
    pub password: String,
    pub capacity_ports: u32,
    pub enabled: bool,
}

#[cfg(test)]
#[path = "event_tests.rs"]
pub(crate) mod tests;

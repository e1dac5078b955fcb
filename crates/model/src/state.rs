//! The configuration state: a fold of events, and the decisions that turn commands into events.
//!
//! Convergence rule: each record is a last-writer-wins register keyed by [`RecordKey`]. An event
//! replaces the record's slot only if its [`Stamp`] (HLC, then origin peer) is greater than the
//! slot's; removals leave a tombstone carrying their stamp. Applying the same set of events in
//! any order therefore yields the same state, which is what lets peers that received events in
//! different orders agree without coordination.

use crate::clock::Stamp;
use crate::event::{DecodeError, Encoded, Event};
use crate::record::{AdminRole, KeyParts, Record, RecordKey, RecordKind};
use crate::validate::{FieldError, validate};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// What an operator asks for.
#[derive(Clone, PartialEq, Debug)]
pub enum Command {
    /// Add a record that must not exist yet.
    Create(Record),
    /// Replace a record that must exist.
    Update(Record),
    /// Create or replace (singletons and peer-local settings are simply set).
    Save(Record),
    /// Remove a record that must exist and that nothing refers to.
    Remove(RecordKey),
}

/// Why a command was refused. These are the operator's mistakes, never infrastructure faults:
/// they map to 4xx answers and retrying the same command gives the same answer.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{} invalid field(s): {}", errors.len(), errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid { errors: Vec<FieldError> },
    #[error("{key} does not exist")]
    NotFound { key: RecordKey },
    #[error("{key} already exists")]
    AlreadyExists { key: RecordKey },
    #[error("{key} is still used by {}", by.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    InUse { key: RecordKey, by: Vec<RecordKey> },
    #[error("{reason}")]
    Forbidden { reason: String },
}

/// One record's register: its latest value (or tombstone) and the stamp that set it.
#[derive(Clone, PartialEq, Debug)]
pub struct Slot {
    pub stamp: Stamp,
    pub record: Option<Record>,
}

/// Cloning is cheap (a persistent map shares its nodes), which matters: the daemon hands every
/// new version of the state to its readers, and the policy service decides on those copies.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct State {
    slots: OrdMap<RecordKey, Slot>,
}

/// How one record differs between two states.
#[derive(Clone, PartialEq, Debug)]
pub struct Change {
    pub key: RecordKey,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

/// Version of the snapshot encoding below; a snapshot in another format is ignored and the
/// state is rebuilt from the log instead. Format 2: the licence is peer-local, so a format-1
/// snapshot may hold a licence folded from the shared stream.
pub const SNAPSHOT_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct SnapshotSlot {
    kind: RecordKind,
    name: String,
    stamp: Stamp,
    /// `(event kind, version, payload)` of the record, or `None` for a tombstone: snapshots
    /// reuse the event encoding so they upcast exactly as the log does.
    record: Option<(String, u16, Vec<u8>)>,
}

/// A [`SnapshotSlot`] borrowed from the state, encoded the same: a snapshot copies no record
/// on its way to the encoder (the copies were most of a snapshot's cost).
#[derive(Serialize)]
struct SnapshotSlotRef<'a> {
    kind: RecordKind,
    name: &'a str,
    stamp: Stamp,
    record: Option<(String, u16, Vec<u8>)>,
}

/// The state's slots, serialized in place as the sequence of [`SnapshotSlot`]s.
struct SnapshotSlots<'a>(&'a OrdMap<RecordKey, Slot>);

impl Serialize for SnapshotSlots<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut sequence = serializer.serialize_seq(Some(self.0.len()))?;
        for (key, slot) in self.0.iter() {
            sequence.serialize_element(&SnapshotSlotRef {
                kind: key.kind,
                name: &key.name,
                stamp: slot.stamp,
                record: slot.record.as_ref().map(|record| {
                    let Encoded { kind, version, payload } = Event::encode_saved(record);
                    (kind, version, payload)
                }),
            })?;
        }
        sequence.end()
    }
}

impl State {
    /// Folds one event in; returns whether it changed anything (false if an event with a
    /// greater stamp already decided this record).
    pub fn apply(&mut self, stamp: Stamp, event: &Event) -> bool {
        let key = event.key();
        if self.slots.get(&key).is_some_and(|slot| slot.stamp >= stamp) {
            return false;
        }
        let record = match event {
            Event::Saved(record) => Some(record.clone()),
            Event::Removed(_) => None,
        };
        self.slots.insert(key, Slot { stamp, record });
        true
    }

    pub fn get(&self, key: &RecordKey) -> Option<&Record> {
        self.slots.get(key)?.record.as_ref()
    }

    /// [`State::get`] by kind and a borrowed name.
    pub fn get_named(&self, kind: RecordKind, name: &str) -> Option<&Record> {
        let parts: &dyn KeyParts = &(kind, name);
        self.slots.get(parts)?.record.as_ref()
    }

    pub fn slot(&self, key: &RecordKey) -> Option<&Slot> {
        self.slots.get(key)
    }

    /// Live records of one kind, by name.
    pub fn list(&self, kind: RecordKind) -> impl Iterator<Item = &Record> {
        // Keys order by kind first: one kind's records are one range.
        self.slots
            .range(RecordKey { kind, name: String::new() }..)
            .take_while(move |(key, _)| key.kind == kind)
            .filter_map(|(_, slot)| slot.record.as_ref())
    }

    /// Records held, tombstones included: what a snapshot encodes.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every live record, by kind then name.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.slots.values().filter_map(|slot| slot.record.as_ref())
    }

    /// Turns a command into the events that carry it out, or says why it cannot be done.
    /// Saving a record unchanged yields no events, so the log records only real changes.
    pub fn decide(&self, command: &Command) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::Create(record) | Command::Update(record) | Command::Save(record) => {
                let key = record.key();
                let existing = self.get(&key);
                match (command, existing) {
                    (Command::Create(_), Some(_)) => return Err(Rejection::AlreadyExists { key }),
                    (Command::Update(_), None) => return Err(Rejection::NotFound { key }),
                    _ => {}
                }
                let mut errors = validate(record);
                errors.extend(self.check_references(record));
                errors.extend(self.check_cluster_rules(record));
                errors.extend(self.check_last_full_administrator(record));
                if !errors.is_empty() {
                    return Err(Rejection::Invalid { errors });
                }
                if existing == Some(record) {
                    return Ok(Vec::new());
                }
                Ok(vec![Event::Saved(record.clone())])
            }
            Command::Remove(key) => {
                if self.get(key).is_none() {
                    return Err(Rejection::NotFound { key: key.clone() });
                }
                let by: Vec<RecordKey> = self
                    .records()
                    .filter(|r| r.references().contains(key))
                    .map(Record::key)
                    .collect();
                if !by.is_empty() {
                    return Err(Rejection::InUse { key: key.clone(), by });
                }
                if matches!(key.kind, RecordKind::Licence | RecordKind::Ipv4)
                    && self.cluster().is_some()
                {
                    return Err(Rejection::Forbidden {
                        reason: format!(
                            "this peer is clustered: place it in standalone mode before clearing its {}",
                            key.kind.as_str()
                        ),
                    });
                }
                if key.kind == RecordKind::Administrator && self.is_last_full_administrator(key) {
                    return Err(Rejection::Forbidden {
                        reason: "the last full administrator account cannot be removed".to_owned(),
                    });
                }
                Ok(vec![Event::Removed(key.clone())])
            }
        }
    }

    /// Whether `key` names the only full administrator account: without one, nobody could
    /// change the configuration again.
    fn is_last_full_administrator(&self, key: &RecordKey) -> bool {
        let full = |record: &Record| matches!(record, Record::Administrator(admin) if admin.role == AdminRole::Full);
        self.get(key).is_some_and(full)
            && !self
                .list(RecordKind::Administrator)
                .any(|record| record.key() != *key && full(record))
    }

    /// The last full administrator cannot be made read-only.
    fn check_last_full_administrator(&self, record: &Record) -> Vec<FieldError> {
        match record {
            Record::Administrator(admin)
                if admin.role != AdminRole::Full
                    && self.is_last_full_administrator(&record.key()) =>
            {
                vec![FieldError {
                    field: "role".to_owned(),
                    message: "the last full administrator account cannot be made read-only"
                        .to_owned(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Referenced records must exist and, for pools and preferences, be of the same bridge type.
    fn check_references(&self, record: &Record) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let missing = |errors: &mut Vec<FieldError>, field: String, key: &RecordKey| {
            errors.push(FieldError {
                field,
                message: format!("no {} named {:?}", key.kind.as_str(), key.name),
            })
        };
        match record {
            Record::BridgePool(pool) => {
                for (index, name) in pool.bridges.iter().enumerate() {
                    let key = RecordKey { kind: RecordKind::Bridge, name: name.clone() };
                    match self.get(&key) {
                        None => missing(&mut errors, format!("bridges[{index}]"), &key),
                        Some(Record::Bridge(bridge)) if bridge.bridge_type != pool.bridge_type => {
                            errors.push(FieldError {
                                field: format!("bridges[{index}]"),
                                message: format!("{name:?} is not a {:?} bridge", pool.bridge_type),
                            })
                        }
                        Some(_) => {}
                    }
                }
            }
            Record::ServicePreference(preference) => {
                for (index, name) in preference.pools.iter().enumerate() {
                    let key = RecordKey { kind: RecordKind::BridgePool, name: name.clone() };
                    match self.get(&key) {
                        None => missing(&mut errors, format!("pools[{index}]"), &key),
                        Some(Record::BridgePool(pool))
                            if pool.bridge_type != preference.bridge_type =>
                        {
                            errors.push(FieldError {
                                field: format!("pools[{index}]"),
                                message: format!(
                                    "{name:?} is not a {:?} pool",
                                    preference.bridge_type
                                ),
                            })
                        }
                        Some(_) => {}
                    }
                }
            }
            Record::ConferenceTemplate(_) | Record::LocationAddresses(_) => {
                for key in record.references() {
                    if self.get(&key).is_none() {
                        let field = if key.kind == RecordKind::Location {
                            "location"
                        } else {
                            "service_preference"
                        };
                        missing(&mut errors, field.to_owned(), &key);
                    }
                }
            }
            Record::ConferenceAlias(alias) => {
                let key = RecordKey {
                    kind: RecordKind::ConferenceTemplate,
                    name: alias.template.clone(),
                };
                match self.get(&key) {
                    None => missing(&mut errors, "template".to_owned(), &key),
                    Some(Record::ConferenceTemplate(template))
                        if alias.role == crate::record::Role::Guest
                            && template.conference_type
                                == crate::record::ConferenceType::Meeting =>
                    {
                        errors.push(FieldError {
                            field: "role".to_owned(),
                            message: format!(
                                "template {:?} is a meeting, which has no guests",
                                alias.template
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
        errors
    }

    /// The singleton record of `kind`, if there is one.
    pub fn singleton(&self, kind: RecordKind) -> Option<&Record> {
        self.get(RecordKey::singleton(kind))
    }

    fn cluster(&self) -> Option<&crate::record::Cluster> {
        match self.singleton(RecordKind::Cluster) {
            Some(Record::Cluster(cluster)) if cluster.is_clustered() => Some(cluster),
            _ => None,
        }
    }

    fn edition(&self) -> crate::record::Edition {
        match self.singleton(RecordKind::Licence) {
            Some(Record::Licence(licence)) => licence.edition,
            _ => crate::record::Edition::Essentials,
        }
    }

    /// The clustering prerequisites that the configuration alone can decide: the edition
    /// allows the peer count, the list holds this peer's own primary address, and that
    /// address does not change while clustered.
    fn check_cluster_rules(&self, record: &Record) -> Vec<FieldError> {
        let error =
            |field: &str, message: String| vec![FieldError { field: field.to_owned(), message }];
        match record {
            Record::Cluster(cluster) if cluster.is_clustered() => {
                let edition = self.edition();
                if cluster.peers.len() > edition.max_peers() {
                    let message = match edition {
                        crate::record::Edition::Essentials => {
                            "clustering needs a release key for the full or select edition"
                                .to_owned()
                        }
                        other => format!(
                            "the {other:?} edition allows at most {} peers",
                            other.max_peers()
                        ),
                    };
                    return error("peers", message);
                }
                let missing = self.missing_cluster_prerequisites();
                if !missing.is_empty() {
                    return error("peers", format!("before clustering, {}", missing.join("; ")));
                }
                match self.singleton(RecordKind::Ipv4) {
                    Some(Record::Ipv4(ip)) if cluster.peers.contains(&ip.address) => Vec::new(),
                    Some(Record::Ipv4(ip)) => error(
                        "peers",
                        format!("must include this peer's own address {}", ip.address),
                    ),
                    _ => {
                        error("peers", "set this peer's IPv4 address before clustering".to_owned())
                    }
                }
            }
            Record::Ipv4(ip) => match (self.cluster(), self.singleton(RecordKind::Ipv4)) {
                (Some(_), Some(Record::Ipv4(old))) => ipv4_changes_while_clustered(old, ip),
                _ => Vec::new(),
            },
            Record::Licence(licence) => match self.cluster() {
                Some(cluster) if cluster.peers.len() > licence.edition.max_peers() => error(
                    "edition",
                    format!(
                        "this peer is clustered with {} peers; remove peers first",
                        cluster.peers.len()
                    ),
                ),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// The seed's checklist before a peer clusters, as far as configuration decides it (time
    /// synchronisation is a run-time fact, checked by the daemon).
    fn missing_cluster_prerequisites(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        match self.singleton(RecordKind::SystemName) {
            Some(Record::SystemName(name))
                if !name.host_name.is_empty() && !name.domain.is_empty() => {}
            _ => missing.push("set this peer's host name and domain (System > DNS)"),
        }
        match self.singleton(RecordKind::Dns) {
            Some(Record::Dns(dns)) if !dns.servers.is_empty() => {}
            _ => missing.push("configure at least one DNS server (System > DNS)"),
        }
        match self.singleton(RecordKind::Ntp) {
            Some(Record::Ntp(ntp)) if !ntp.servers.is_empty() => {}
            _ => missing.push("configure at least one NTP server (System > Time)"),
        }
        missing
    }

    /// Records that differ between `self` (before) and `after`, by key.
    pub fn diff(&self, after: &State) -> Vec<Change> {
        let mut keys: Vec<&RecordKey> = self.slots.keys().chain(after.slots.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|key| {
                let (before, after) = (self.get(key), after.get(key));
                (before != after).then(|| Change {
                    key: key.clone(),
                    before: before.cloned(),
                    after: after.cloned(),
                })
            })
            .collect()
    }

    pub fn to_snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(&SnapshotSlots(&self.slots)).expect("postcard encoding of a snapshot")
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<State, DecodeError> {
        let slots: Vec<SnapshotSlot> = postcard::from_bytes(bytes).map_err(|error| {
            DecodeError::Malformed { kind: "snapshot".to_owned(), reason: error.to_string() }
        })?;
        let mut state = State::default();
        for slot in slots {
            let record = match slot.record {
                None => None,
                Some((kind, version, payload)) => match Event::decode(&kind, version, &payload)? {
                    Event::Saved(record) => Some(record),
                    Event::Removed(_) => None,
                },
            };
            state.slots.insert(
                RecordKey { kind: slot.kind, name: slot.name },
                Slot { stamp: slot.stamp, record },
            );
        }
        Ok(state)
    }
}

/// The seed: "The only IP settings that can be changed when the system is part of a cluster
/// are the additional IPv4 addresses."
fn ipv4_changes_while_clustered(
    old: &crate::record::Ipv4,
    new: &crate::record::Ipv4,
) -> Vec<FieldError> {
    let message = "cannot change while clustered (only the additional IPv4 addresses can): \
                   place this peer in standalone mode first";
    [
        ("address", old.address == new.address),
        ("prefix_length", old.prefix_length == new.prefix_length),
        ("gateway", old.gateway == new.gateway),
    ]
    .into_iter()
    .filter(|(_, unchanged)| !unchanged)
    .map(|(field, _)| FieldError { field: field.to_owned(), message: message.to_owned() })
    .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Hlc, PeerId};

    // Goal: snapshots encoded in place are byte for byte the format-2 snapshots encoded from
    // owned slots before, so a snapshot saved by the previous release still loads (and one
    // saved now loads in it), tombstones included.
    #[test]
    fn a_snapshot_encoded_in_place_is_the_owned_encoding() {
        let mut state = State::default();
        let stamp = |wall_ms| Stamp { hlc: Hlc { wall_ms, counter: 2 }, origin: PeerId([5; 16]) };
        for (index, &kind) in RecordKind::ALL.iter().enumerate() {
            state.apply(stamp(index as u64), &Event::Saved(crate::event::tests::sample(kind)));
        }
        state.apply(
            stamp(100),
            &Event::Removed(crate::event::tests::sample(RecordKind::Bridge).key()),
        );
        let owned: Vec<SnapshotSlot> = state
            .slots
            .iter()
            .map(|(key, slot)| SnapshotSlot {
                kind: key.kind,
                name: key.name.clone(),
                stamp: slot.stamp,
                record: slot.record.clone().map(|record| {
                    let Encoded { kind, version, payload } = Event::Saved(record).encode();
                    (kind, version, payload)
                }),
            })
            .collect();
        assert!(owned.iter().any(|slot| slot.record.is_none()), "a tombstone is encoded");
        assert_eq!(state.to_snapshot(), postcard::to_stdvec(&owned).unwrap());
    }

    // Goal: a lookup by kind and borrowed name finds exactly what a lookup by key finds,
    // for names that sort next to each other and the same name under two kinds; a name
    // not there finds nothing (`KeyParts` must order as `RecordKey` does).
    #[test]
    fn a_lookup_by_borrowed_name_finds_what_a_lookup_by_key_finds() {
        let mut state = State::default();
        let stamp = Stamp { hlc: Hlc { wall_ms: 1, counter: 0 }, origin: PeerId([1; 16]) };
        for &kind in RecordKind::ALL {
            state.apply(stamp, &Event::Saved(crate::event::tests::sample(kind)));
        }
        for name in ["B", "a", "a b", "ab", "b", "é"] {
            let Record::Bridge(mut bridge) = crate::event::tests::sample(RecordKind::Bridge) else {
                unreachable!("a sample bridge is a bridge")
            };
            bridge.name = name.to_owned();
            state.apply(stamp, &Event::Saved(Record::Bridge(bridge)));
        }
        // The sample bridge is "b" already.
        assert_eq!(state.slots.len(), RecordKind::ALL.len() + 5);
        for key in state.slots.keys() {
            let found = state.get_named(key.kind, &key.name);
            assert!(found.is_some(), "{key:?}");
            assert_eq!(found, state.get(key), "{key:?}");
        }
        for name in ["", "A", "a c", "c", "e"] {
            assert_eq!(state.get_named(RecordKind::Bridge, name), None, "{name:?}");
        }
    }
}

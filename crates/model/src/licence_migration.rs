//! The licence was one shared record until each appliance carried its own. A log written
//! before then holds `licence` events in the shared stream, which the configuration no longer
//! counts (see the `eventlog` crate's `StoredEvent::in_its_stream`). So that no peer loses its
//! licence, a log with such events and no licence event in its own (local) stream adopts the
//! licence they decide, by the usual last-writer-wins rule: a clustered peer keeps the
//! cluster's licence, an old backup restores with the licence it was taken with. Once the
//! local stream holds a licence event (even a removal) there is nothing to adopt, so an
//! operator's removal is never undone.

use crate::clock::Stamp;
use crate::event::Event;
use crate::record::{Record, RecordKey, RecordKind};
use crate::state::State;

/// Fed a log's `licence` events (in any order), says which licence to adopt, if any.
#[derive(Default)]
pub struct LicenceMigration {
    shared: State,
    has_local: bool,
    noted_any: bool,
}

impl LicenceMigration {
    /// Notes one event; `in_its_stream` is whether it was stored in the local stream.
    /// Events of other kinds are ignored.
    pub fn note(&mut self, stamp: Stamp, event: &Event, in_its_stream: bool) {
        if event.kind() != RecordKind::Licence {
            return;
        }
        self.noted_any = true;
        if in_its_stream {
            self.has_local = true;
        } else {
            self.shared.apply(stamp, event);
        }
    }

    /// Whether any `licence` event was noted: without one, the events read had nothing to
    /// migrate, and need not be read again.
    pub fn noted_any(&self) -> bool {
        self.noted_any
    }

    /// The licence to write into the local stream, and the stamp that decided it.
    pub fn adopted(&self) -> Option<(Stamp, Record)> {
        if self.has_local {
            return None;
        }
        let slot = self.shared.slot(&licence_key())?;
        Some((slot.stamp, slot.record.clone()?))
    }
}

/// The licence singleton's key.
pub fn licence_key() -> RecordKey {
    RecordKey::singleton(RecordKind::Licence).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Hlc, PeerId};
    use crate::record::{Edition, Licence};

    fn licence(edition: Edition) -> Event {
        Event::Saved(Record::Licence(Licence {
            release_key: "KEY-1".to_owned(),
            edition,
            option_keys: Vec::new(),
        }))
    }

    fn stamp(wall_ms: u64, origin: u8) -> Stamp {
        Stamp { hlc: Hlc { wall_ms, counter: 0 }, origin: PeerId([origin; 16]) }
    }

    #[test]
    fn the_last_shared_licence_is_adopted_whatever_the_order() {
        let (older, newer) = (licence(Edition::Select), licence(Edition::Full));
        let mut forwards = LicenceMigration::default();
        forwards.note(stamp(1, 1), &older, false);
        forwards.note(stamp(2, 2), &newer, false);
        let mut backwards = LicenceMigration::default();
        backwards.note(stamp(2, 2), &newer, false);
        backwards.note(stamp(1, 1), &older, false);
        for migration in [forwards, backwards] {
            let (at, record) = migration.adopted().expect("a licence to adopt");
            assert_eq!((at, Event::Saved(record)), (stamp(2, 2), newer.clone()));
        }
    }

    #[test]
    fn a_local_licence_event_or_a_shared_removal_leaves_nothing_to_adopt() {
        let mut local = LicenceMigration::default();
        local.note(stamp(1, 1), &licence(Edition::Full), false);
        local.note(stamp(2, 1), &Event::Removed(licence_key()), true);
        assert!(local.adopted().is_none(), "the operator's removal stands");
        let mut removed = LicenceMigration::default();
        removed.note(stamp(1, 1), &licence(Edition::Full), false);
        removed.note(stamp(2, 2), &Event::Removed(licence_key()), false);
        assert!(removed.adopted().is_none());
        assert!(LicenceMigration::default().adopted().is_none());
    }
}

//! The licence became peer-local: a log written while it was shared keeps the licence it had
//! (the cluster's, on a peer that received it), shared `licence` events that arrive later
//! change nothing, and an operator's removal is never undone at the next start.

#![allow(clippy::unwrap_used)]

use super::*;
use model::record::{Edition, Licence};
use model::{Record, licence_migration::licence_key};

fn licence_saved(edition: Edition, wall_ms: u64) -> NewEvent {
    let record = Record::Licence(Licence {
        release_key: "KEY-1".to_owned(),
        edition,
        option_keys: Vec::new(),
    });
    let encoded = Event::Saved(record).encode();
    NewEvent {
        stream: Stream::Shared,
        hlc: model::Hlc { wall_ms, counter: 0 },
        actor: "admin".to_owned(),
        kind: encoded.kind,
        version: encoded.version,
        payload: encoded.payload,
    }
}

/// Events another peer wrote in its shared stream, as replication delivers them.
fn from_another_peer(other: &mut EventLog, events: &[NewEvent]) -> Vec<StoredEvent> {
    other.append(events).unwrap()
}

/// Where this peer's database goes, and the log of another peer to take events from.
fn database_and_another_peer() -> (tempfile::TempDir, PathBuf, EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    (dir, path, EventLog::open_in_memory(PeerId([9; 16])).unwrap())
}

/// The database at `path` receives `other`'s shared "full" licence, then a snapshot (of no
/// record) at its end: a start from it folds no event.
fn shared_licence_behind_a_snapshot(path: &Path, other: &mut EventLog) {
    let mut log = EventLog::open(path).unwrap();
    log.append_remote(from_another_peer(other, &[licence_saved(Edition::Full, 2_000)])).unwrap();
    let blob = State::default().to_snapshot();
    log.save_snapshot(log.last_position(), model::SNAPSHOT_FORMAT, &blob).unwrap();
}

fn edition(store: &Store) -> Option<Edition> {
    match store.state().get(&licence_key()) {
        Some(Record::Licence(licence)) => Some(licence.edition),
        _ => None,
    }
}

#[test]
fn a_shared_licence_of_before_becomes_this_peers_own_once() {
    let (_dir, path, mut other) = database_and_another_peer();
    {
        // Before: this peer saved "select", then the cluster's "full" arrived from a peer.
        let mut log = EventLog::open(&path).unwrap();
        log.append(&[licence_saved(Edition::Select, 1_000)]).unwrap();
        log.append_remote(from_another_peer(&mut other, &[licence_saved(Edition::Full, 2_000)]))
            .unwrap();
    }

    let (store, _) = Store::open(&path).unwrap();
    assert_eq!(edition(&store), Some(Edition::Full), "the licence the peer ran with is kept");
    let reader = eventlog::open_reader(&path).unwrap();
    let listed = projections::list(&reader, model::RecordKind::Licence).unwrap();
    assert_eq!(listed.len(), 1, "the records projection shows it too");
    let local = store.log.read_kinds(&["licence.saved"], 0).unwrap();
    assert_eq!(local.iter().filter(|stored| stored.stream == Stream::Local).count(), 1);
    drop(store);

    // A peer of the older release still sends shared licence events: they change nothing.
    {
        let mut log = EventLog::open(&path).unwrap();
        let late = from_another_peer(&mut other, &[licence_saved(Edition::Select, 9_000)]);
        log.append_remote(late).unwrap();
    }
    let (mut store, _) = Store::open(&path).unwrap();
    assert_eq!(edition(&store), Some(Edition::Full));
    let events = store.log.read_kinds(&["licence.saved"], 0).unwrap();
    assert_eq!(events.iter().filter(|stored| stored.stream == Stream::Local).count(), 1);

    // Removed by the operator (standalone): it stays removed.
    store.execute("admin", &Command::Remove(licence_key()), 10_000).unwrap();
    drop(store);
    let (store, _) = Store::open(&path).unwrap();
    assert_eq!(edition(&store), None);
}

#[test]
fn a_start_from_a_snapshot_reads_the_licence_events_it_did_not_fold() {
    let (_dir, path, mut other) = database_and_another_peer();
    // The shared licence lies before the snapshot, so the start-up fold never sees it.
    shared_licence_behind_a_snapshot(&path, &mut other);

    let (store, report) = Store::open(&path).unwrap();
    assert_eq!(report.events_replayed, 0, "the start began at the snapshot");
    assert_eq!(edition(&store), Some(Edition::Full), "the licence the peer ran with is kept");
}

#[test]
fn a_licence_saved_now_stays_in_the_local_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
    let licence = Licence {
        release_key: "KEY-2".to_owned(),
        edition: Edition::Select,
        option_keys: Vec::new(),
    };
    let stored = store.execute("admin", &Command::Save(Record::Licence(licence)), 1_000).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].stream, Stream::Local, "never sent to the peers");
}

// Goal: a start that finds no licence event notes how far it looked, so the next start from
// a snapshot reads only the events after that; a shared licence that arrives later (from a
// peer still writing the old format) is still adopted.
#[test]
fn a_start_reads_only_the_licence_events_after_the_last_check_that_found_none() {
    let (_dir, path, mut other) = database_and_another_peer();
    let bridge = Record::from_json(
        model::RecordKind::Bridge,
        serde_json::json!({"name": "b", "bridge_type": "mcu", "address": "127.0.0.1",
                           "username": "u", "capacity_ports": 10}),
    )
    .unwrap();
    let (mut store, _) = Store::open(&path).unwrap();
    store.execute("admin", &Command::Save(bridge), 1_000).unwrap();
    drop(store);
    let (store, _) = Store::open(&path).unwrap();
    let checked = store.log.migration_checked_through(LICENCE_MIGRATION).unwrap();
    assert_eq!(checked, store.log.last_position(), "no licence event up to the end");
    assert!(checked > 0);
    assert_eq!(edition(&store), None);
    drop(store);

    // Later, the old format's shared licence arrives, and a snapshot covers it.
    shared_licence_behind_a_snapshot(&path, &mut other);
    let (store, report) = Store::open(&path).unwrap();
    assert_eq!(report.events_replayed, 0, "the start began at the snapshot");
    assert_eq!(edition(&store), Some(Edition::Full), "a licence after the note is adopted");
}

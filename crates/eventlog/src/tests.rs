//! The log's contract: durable, append-only, hash-chained per (origin, stream), refusing
//! anything that would break a chain, with snapshots and a queryable journal.
#![allow(clippy::unwrap_used)]

use super::*;

fn event(stream: Stream, wall_ms: u64, payload: &[u8]) -> NewEvent {
    NewEvent {
        stream,
        hlc: Hlc { wall_ms, counter: 0 },
        actor: "admin".to_owned(),
        kind: "bridge.saved".to_owned(),
        version: 2,
        payload: payload.to_vec(),
    }
}

/// A shared event of `kind`, as a migration looks for.
fn of_kind(kind: &str, wall_ms: u64) -> NewEvent {
    NewEvent { kind: kind.to_owned(), ..event(Stream::Shared, wall_ms, b"x") }
}

type Mutation = Box<dyn Fn(&mut StoredEvent)>;

fn open(dir: &tempfile::TempDir, name: &str) -> EventLog {
    EventLog::open(&dir.path().join(name)).unwrap()
}

// Goal: what was appended is what a reopened log returns, with the same identity and heads.
#[test]
fn appended_events_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    let peer = log.peer_id();
    let first =
        log.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Shared, 2, b"two")]).unwrap();
    let second = log.append(&[event(Stream::Shared, 3, b"three")]).unwrap();
    assert_eq!(first.iter().map(|e| (e.position, e.seq)).collect::<Vec<_>>(), [(1, 1), (2, 2)]);
    assert_eq!(second[0].prev_hash, first[1].hash, "the chain continues across appends");
    assert_eq!(first[0].prev_hash, Hash::ZERO);
    drop(log);

    let log = open(&dir, "a.db");
    assert_eq!(log.peer_id(), peer, "the peer identity is stable");
    assert_eq!(log.last_position(), 3);
    let all = log.read_after(0, 100).unwrap();
    assert_eq!(all, [first, second].concat());
    assert_eq!(log.heads()[&(peer, Stream::Shared)], Head { seq: 3, hash: all[2].hash });
    assert_eq!(log.read_after(2, 100).unwrap().len(), 1);
    assert_eq!(log.max_hlc().unwrap(), Hlc { wall_ms: 3, counter: 0 });
    let report = log.verify().unwrap();
    assert_eq!(report.events, 3);
}

// Goal: shared and local events are numbered and chained independently.
#[test]
fn streams_have_independent_chains() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    let stored = log
        .append(&[
            event(Stream::Shared, 1, b"s1"),
            event(Stream::Local, 2, b"l1"),
            event(Stream::Shared, 3, b"s2"),
        ])
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| (e.stream, e.seq)).collect::<Vec<_>>(),
        [(Stream::Shared, 1), (Stream::Local, 1), (Stream::Shared, 2)]
    );
    assert_eq!(stored[2].prev_hash, stored[0].hash);
    assert_eq!(stored[1].prev_hash, Hash::ZERO);
    let shared = log.read_origin(log.peer_id(), Stream::Shared, 0, 10).unwrap();
    assert_eq!(shared.len(), 2);
    log.verify().unwrap();
}

// Goal: the hash covers every field, so changing any of them changes it.
#[test]
fn the_hash_covers_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    let base = log.append(&[event(Stream::Shared, 1, b"x")]).unwrap().remove(0);
    let mutations: Vec<Mutation> = vec![
        Box::new(|e| e.origin.0[0] ^= 1),
        Box::new(|e| e.stream = Stream::Local),
        Box::new(|e| e.seq += 1),
        Box::new(|e| e.hlc.wall_ms += 1),
        Box::new(|e| e.hlc.counter += 1),
        Box::new(|e| e.actor.push('x')),
        Box::new(|e| e.kind.push('x')),
        Box::new(|e| e.version += 1),
        Box::new(|e| e.payload.push(0)),
        Box::new(|e| e.prev_hash.0[0] ^= 1),
    ];
    for (index, mutate) in mutations.iter().enumerate() {
        let mut changed = base.clone();
        mutate(&mut changed);
        assert_ne!(changed.compute_hash(), base.hash, "mutation {index} left the hash unchanged");
    }
    let mut moved = base.clone();
    moved.position += 10;
    assert_eq!(moved.compute_hash(), base.hash, "the local position is not part of the hash");
}

// Goal: the events table refuses UPDATE and DELETE, even through raw SQL.
#[test]
fn events_cannot_be_rewritten_or_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 1, b"x")]).unwrap();
    let update = log.connection().execute("UPDATE events SET payload = x'00'", []);
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = log.connection().execute("DELETE FROM events", []);
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

// Goal: a byte changed behind the log's back is found by verify, at the right event.
#[test]
fn verify_finds_a_tampered_payload() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[
        event(Stream::Shared, 1, b"one"),
        event(Stream::Shared, 2, b"two"),
        event(Stream::Shared, 3, b"3"),
    ])
    .unwrap();
    log.connection().execute("DROP TRIGGER events_no_update", []).unwrap();
    log.connection().execute("UPDATE events SET payload = x'74776f21' WHERE seq = 2", []).unwrap();
    match log.verify() {
        Err(Error::Corrupt { seq: 2, reason, .. }) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("expected corruption at seq 2, got {other:?}"),
    }
}

// Goal: verify walks interleaved chains (read in position order, every chain at once) and
// reports a column of the wrong type as corruption at its event, not as a storage error; so
// does a read of the events.
#[test]
fn verify_walks_interleaved_chains_and_reports_a_malformed_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    for wall_ms in 1..=3 {
        log.append(&[event(Stream::Shared, wall_ms, b"s"), event(Stream::Local, wall_ms, b"l")])
            .unwrap();
    }
    let report = log.verify().unwrap();
    assert_eq!(report.events, 6);
    assert_eq!(report.heads, *log.heads());

    log.connection().execute("DROP TRIGGER events_no_update", []).unwrap();
    log.connection()
        .execute(
            "UPDATE events SET actor = x'ff' WHERE seq = 2 AND stream = ?1",
            [Stream::Local as i64],
        )
        .unwrap();
    match log.verify() {
        Err(Error::Corrupt { seq: 2, reason, .. }) => {
            assert!(reason.contains("malformed"), "{reason}")
        }
        other => panic!("expected corruption at seq 2, got {other:?}"),
    }
    // A read for the projections finds the same corruption.
    match log.read_after(0, 10) {
        Err(Error::Corrupt { seq: 2, reason, .. }) => {
            assert!(reason.contains("malformed"), "{reason}")
        }
        other => panic!("expected corruption at seq 2, got {other:?}"),
    }
}

// Goal: a batch is one transaction: if any event fails to insert, none is stored and the
// in-memory heads do not move.
#[test]
fn a_failed_batch_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 1, b"ok")]).unwrap();
    // Make the third insert of the next batch fail inside SQLite.
    log.connection()
        .execute_batch(
            "CREATE TRIGGER fail_third BEFORE INSERT ON events WHEN NEW.seq = 4
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let batch = [
        event(Stream::Shared, 2, b"a"),
        event(Stream::Shared, 3, b"b"),
        event(Stream::Shared, 4, b"c"),
    ];
    assert!(log.append(&batch).is_err());
    assert_eq!(log.last_position(), 1);
    assert_eq!(log.read_after(0, 10).unwrap().len(), 1);
    log.connection().execute("DROP TRIGGER fail_third", []).unwrap();
    let stored = log.append(&batch[..1]).unwrap();
    assert_eq!(
        (stored[0].position, stored[0].seq),
        (2, 2),
        "numbering continues as if nothing happened"
    );
    log.verify().unwrap();
}

// Goal: another peer's chain is accepted exactly, re-delivery is harmless, and every way of
// breaking a chain is refused with its own error, storing nothing.
#[test]
fn remote_events_must_extend_their_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir, "source.db");
    let events = source
        .append(&[
            event(Stream::Shared, 1, b"a"),
            event(Stream::Shared, 2, b"b"),
            event(Stream::Shared, 3, b"c"),
        ])
        .unwrap();
    let mut target = open(&dir, "target.db");
    target.append(&[event(Stream::Shared, 5, b"mine")]).unwrap();

    assert!(matches!(
        target.append_remote(events[1..].to_vec()),
        Err(Error::Gap { seq: 2, head: 0, .. })
    ));
    let mut tampered = events.clone();
    tampered[1].payload = b"B".to_vec();
    assert!(matches!(target.append_remote(tampered), Err(Error::BadHash { seq: 2, .. })));
    let mut rechained = events.clone();
    rechained[1].prev_hash = Hash([7; 32]);
    rechained[1].hash = rechained[1].compute_hash();
    assert!(matches!(target.append_remote(rechained), Err(Error::ChainMismatch { seq: 2, .. })));
    assert_eq!(target.last_position(), 1, "refused batches store nothing");

    let stored = target.append_remote(events[..2].to_vec()).unwrap();
    assert_eq!(stored.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 3]);
    let again = target.append_remote(events.clone()).unwrap();
    assert_eq!(again.len(), 1, "already-held events are skipped, the new one is stored");

    let mut forked = source.read_after(0, 1).unwrap();
    forked[0].payload = b"other history".to_vec();
    forked[0].hash = forked[0].compute_hash();
    assert!(matches!(target.append_remote(forked), Err(Error::Fork { seq: 1, .. })));

    let own = target.read_after(0, 1).unwrap();
    assert!(matches!(target.append_remote(own), Err(Error::OwnOrigin { .. })));
    let report = target.verify().unwrap();
    assert_eq!(report.events, 4);
    assert_eq!(report.heads[&(source.peer_id(), Stream::Shared)].hash, events[2].hash);
}

// Goal: only the newest snapshots are kept and the latest one is returned.
#[test]
fn snapshots_keep_the_newest_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    assert_eq!(log.latest_snapshot().unwrap(), None);
    for position in [10, 20, 30] {
        log.save_snapshot(position, 1, &position.to_be_bytes()).unwrap();
    }
    let latest = log.latest_snapshot().unwrap().unwrap();
    assert_eq!((latest.position, latest.blob), (30, 30u64.to_be_bytes().to_vec()));
    let count: i64 =
        log.connection().query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0)).unwrap();
    assert_eq!(count, SNAPSHOTS_KEPT);
}

// Goal: the Event Log filters by level, kind prefix and text, newest first, in pages.
#[test]
fn journal_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    let entry = |level, kind: &str, actor: Option<&str>, message: &str| NewJournalEntry {
        at_ms: 1,
        level,
        kind: kind.to_owned(),
        actor: actor.map(str::to_owned),
        message: message.to_owned(),
    };
    log.append_journal(&entry(Level::Info, "daemon.started", None, "Baton started")).unwrap();
    log.append_journal(&entry(Level::Warning, "login.failed", Some("eve"), "wrong password"))
        .unwrap();
    log.append_journal(&entry(Level::Info, "login.succeeded", Some("admin"), "logged in")).unwrap();
    log.append_journal(&entry(Level::Error, "daemon.failure", None, "disk full")).unwrap();

    let query = |q: JournalQuery| log.query_journal(&JournalQuery { limit: 10, ..q }).unwrap();
    let kinds =
        |entries: Vec<JournalEntry>| entries.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(query(JournalQuery::default())),
        ["daemon.failure", "login.succeeded", "login.failed", "daemon.started"]
    );
    assert_eq!(
        kinds(query(JournalQuery { level_min: Some(Level::Warning), ..Default::default() })),
        ["daemon.failure", "login.failed"]
    );
    assert_eq!(
        kinds(query(JournalQuery { kind_prefix: Some("login.".into()), ..Default::default() })),
        ["login.succeeded", "login.failed"]
    );
    assert_eq!(
        kinds(query(JournalQuery { text: Some("EVE".into()), ..Default::default() })),
        ["login.failed"]
    );
    let first_page = log.query_journal(&JournalQuery { limit: 2, ..Default::default() }).unwrap();
    let next = log.query_journal(&JournalQuery {
        limit: 2,
        before_id: Some(first_page[1].id),
        ..Default::default()
    });
    assert_eq!(kinds(next.unwrap()), ["login.failed", "daemon.started"]);
}

// Goal: files that are not Baton logs, or are from a newer version, are refused unchanged.
#[test]
fn foreign_and_newer_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x INTEGER);").unwrap();
    assert!(matches!(EventLog::open(&foreign), Err(Error::NotABatonLog { .. })));

    let newer = dir.path().join("newer.db");
    drop(EventLog::open(&newer).unwrap());
    Connection::open(&newer)
        .unwrap()
        .execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'", [])
        .unwrap();
    match EventLog::open(&newer) {
        Err(error @ Error::SchemaTooNew { found: 99, .. }) => {
            assert!(error.to_string().contains("99"))
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.err()),
    }
}

// Goal: readers see committed events through their own read-only connection.
#[test]
fn readers_see_committed_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    let reader = open_reader(log.path()).unwrap();
    assert_eq!(last_position(&reader).unwrap(), 0);
    log.append(&[event(Stream::Shared, 1, b"x")]).unwrap();
    assert_eq!(last_position(&reader).unwrap(), 1);
    assert_eq!(read_after(&reader, 0, 10).unwrap().len(), 1);
    assert!(
        reader
            .execute(
                "INSERT INTO journal (at_ms, level, kind, message) VALUES (1, 0, 'x', 'y')",
                []
            )
            .is_err()
    );
}

// Goal: removing the newest events behind the log's back is found, although what remains
// still chains correctly.
#[test]
fn verify_finds_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Shared, 2, b"two")]).unwrap();
    drop(log);
    let raw = Connection::open(dir.path().join("a.db")).unwrap();
    raw.execute_batch("DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 2;").unwrap();
    drop(raw);
    let log = open(&dir, "a.db");
    match log.verify() {
        Err(Error::Corrupt { seq: 2, reason, .. }) => {
            assert!(reason.contains("recorded head"), "{reason}")
        }
        other => panic!("expected a truncation to be found, got {other:?}"),
    }
}

// Goal: a reader (what the admin API's verify uses) finds the same truncation and counts the
// same events as the writer's handle.
#[test]
fn a_reader_verifies_the_chains_and_finds_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Shared, 2, b"two")]).unwrap();
    let reader = open_reader(&dir.path().join("a.db")).unwrap();
    let report = verify(&reader).unwrap();
    assert_eq!((report.events, report.heads.len()), (2, 1));
    drop(log);
    let raw = Connection::open(dir.path().join("a.db")).unwrap();
    raw.execute_batch("DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 2;").unwrap();
    drop(raw);
    match verify(&reader) {
        Err(Error::Corrupt { seq: 2, reason, .. }) => {
            assert!(reason.contains("recorded head"), "{reason}")
        }
        other => panic!("expected a truncation to be found, got {other:?}"),
    }
}

// Goal: the whole content changes at once, identity included, and a reader that was open
// sees the new content; with a reader open, a replace that asked to be alone still happens
// (through the WAL).
#[test]
fn replacing_the_content_swaps_identity_history_and_cluster_in_one_step() {
    for replace in [Replace::BesideReaders, Replace::Alone] {
        replace_beside_a_reader(replace);
    }
}

fn replace_beside_a_reader(replace: Replace) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.db");
    let mut log = EventLog::open(&path).expect("open");
    let old_peer = log.peer_id();
    log.append(&[event(Stream::Shared, 1, b"a")]).expect("append");
    log.set_cluster_id(Some(ClusterId([7; 16]))).expect("cluster id");
    assert_eq!(log.cluster_id().expect("read"), Some(ClusterId([7; 16])));
    let reader = open_reader(&path).expect("reader");

    let mut replacement = EventLog::open_in_memory(PeerId([9; 16])).expect("memory log");
    replacement
        .append(&[event(Stream::Local, 1, b"b"), event(Stream::Local, 2, b"c")])
        .expect("append");
    let safety = dir.path().join("before.db");
    log.replace_with(replacement, replace, &safety).expect("replace");

    assert_eq!(log.peer_id(), PeerId([9; 16]));
    assert_eq!(log.cluster_id().expect("read"), None);
    assert_eq!(log.last_position(), 2);
    assert!(log.heads().keys().all(|(origin, _)| *origin == PeerId([9; 16])));
    // A reader opened before the swap sees the new content too.
    assert_eq!(last_position(&reader).expect("reader position"), 2);
    log.verify().expect("replaced log verifies");
    // Nothing lost: the safety copy still holds the old history and identity.
    let old = EventLog::open(&safety).expect("open safety copy");
    assert_eq!(old.peer_id(), old_peer);
    assert_eq!(old.cluster_id().expect("read"), Some(ClusterId([7; 16])));
    assert_eq!(old.last_position(), 1);
}

const REPLACEMENT_EVENTS: u64 = 2_000;

/// A log of `REPLACEMENT_EVENTS` events of 2 KiB, in WAL (part of it still in the WAL file)
/// or in scratch mode, as a restore's.
fn replacement(dir: &tempfile::TempDir, name: &str, scratch: bool) -> EventLog {
    let mut log = open(dir, name);
    let payload = vec![7u8; 2_048];
    let events: Vec<NewEvent> =
        (1..=REPLACEMENT_EVENTS).map(|wall_ms| event(Stream::Shared, wall_ms, &payload)).collect();
    log.append(&events).unwrap();
    log.set_scratch(scratch).unwrap();
    log
}

fn inode(dir: &tempfile::TempDir, name: &str) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.path().join(name)).unwrap())
}

fn wal_bytes(dir: &tempfile::TempDir, name: &str) -> u64 {
    std::fs::metadata(dir.path().join(format!("{name}-wal"))).map_or(0, |wal| wal.len())
}

// Goal: a replace with no other connection open copies nothing: the replacement's file
// becomes the database and the old file is kept by its second name (the same files, by
// inode), in WAL mode, whole, readable by a reader opened afterwards.
#[test]
fn a_replace_alone_moves_the_new_file_in_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut alone = open(&dir, "alone.db");
    alone.append(&[event(Stream::Shared, 1, b"old")]).unwrap();
    let (old_peer, old_inode) = (alone.peer_id(), inode(&dir, "alone.db"));
    let new = replacement(&dir, "new.db", false);
    assert!(wal_bytes(&dir, "new.db") > 0);
    let (new_peer, new_inode) = (new.peer_id(), inode(&dir, "new.db"));
    alone.replace_with(new, Replace::Alone, &dir.path().join("alone-kept.db")).unwrap();
    assert_eq!(inode(&dir, "alone.db"), new_inode, "the replacement's file was copied");
    assert_eq!(inode(&dir, "alone-kept.db"), old_inode, "the old file was copied");
    assert!(!dir.path().join("new.db").exists());
    let mode: String =
        alone.conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!((alone.peer_id(), alone.last_position()), (new_peer, REPLACEMENT_EVENTS));
    alone.verify().unwrap();
    let reader = open_reader(&dir.path().join("alone.db")).unwrap();
    assert_eq!(last_position(&reader).unwrap(), REPLACEMENT_EVENTS);
    let kept = EventLog::open(&dir.path().join("alone-kept.db")).unwrap();
    assert_eq!((kept.peer_id(), kept.last_position()), (old_peer, 1));
}

// Goal: beside a reader, the new content goes through the WAL and the old is copied aside; a
// replacement someone else reads (its last pages may be in its WAL only) is copied whole; a
// safety copy's name already taken refuses the replace, changes nothing, and the log still
// takes appends.
#[test]
fn a_replace_that_cannot_move_the_file_copies_it_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut beside = open(&dir, "beside.db");
    let reading = open_reader(&dir.path().join("beside.db")).unwrap();
    // A connection holds the file once it has read.
    assert_eq!(last_position(&reading).unwrap(), 0);
    let old_inode = inode(&dir, "beside.db");
    let new = replacement(&dir, "new-2.db", true);
    let content_bytes = std::fs::metadata(dir.path().join("new-2.db")).unwrap().len();
    beside.replace_with(new, Replace::Alone, &dir.path().join("beside-kept.db")).unwrap();
    assert_eq!(inode(&dir, "beside.db"), old_inode);
    assert!(wal_bytes(&dir, "beside.db") >= content_bytes, "a reader was open: through the WAL");
    assert_eq!(beside.last_position(), REPLACEMENT_EVENTS);
    assert_eq!(last_position(&reading).unwrap(), REPLACEMENT_EVENTS);
    assert_eq!(EventLog::open(&dir.path().join("beside-kept.db")).unwrap().last_position(), 0);

    let mut taking = open(&dir, "taking.db");
    let old_inode = inode(&dir, "taking.db");
    let new = replacement(&dir, "new-3.db", false);
    let reading_new = open_reader(&dir.path().join("new-3.db")).unwrap();
    assert_eq!(last_position(&reading_new).unwrap(), REPLACEMENT_EVENTS);
    taking.replace_with(new, Replace::Alone, &dir.path().join("taking-kept.db")).unwrap();
    assert_eq!(inode(&dir, "taking.db"), old_inode);
    assert_eq!(taking.last_position(), REPLACEMENT_EVENTS);
    taking.verify().unwrap();

    let mut refusing = open(&dir, "refusing.db");
    refusing.append(&[event(Stream::Shared, 1, b"old")]).unwrap();
    let earlier = dir.path().join("refusing-kept.db");
    std::fs::write(&earlier, b"an earlier copy").unwrap();
    let new = replacement(&dir, "new-4.db", true);
    let refused = refusing.replace_with(new, Replace::Alone, &earlier);
    assert!(matches!(refused, Err(Error::SafetyCopyExists { path }) if path == earlier));
    assert_eq!(std::fs::read(&earlier).unwrap(), b"an earlier copy");
    assert_eq!(refusing.last_position(), 1);
    refusing.append(&[event(Stream::Shared, 2, b"after")]).unwrap();
    assert_eq!(refusing.verify().unwrap().events, 2);
}

// Goal: a replacement that cannot be written into the live file (another connection holds its
// write lock) leaves the content as it was, the log on its file, and no safety copy behind: a
// join retried after such failures left a copy of the database per attempt.
#[test]
fn a_failed_replacement_changes_nothing_and_keeps_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "busy.db");
    log.append(&[event(Stream::Shared, 1, b"old")]).unwrap();
    log.connection().busy_timeout(std::time::Duration::from_millis(20)).unwrap();
    let blocker = Connection::open(dir.path().join("busy.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let kept = dir.path().join("busy-kept.db");
    let new = replacement(&dir, "new-5.db", false);
    assert!(log.replace_with(new, Replace::BesideReaders, &kept).is_err());
    assert!(!kept.exists(), "a copy kept although nothing was replaced");
    assert!(!log.lost_its_file());

    blocker.execute_batch("ROLLBACK").unwrap();
    assert_eq!(log.last_position(), 1);
    log.append(&[event(Stream::Shared, 2, b"after")]).unwrap();
    assert_eq!(log.verify().unwrap().events, 2);
}

// Goal: when the swapped-in content cannot be opened again (here its schema is newer than this
// build's), the log says it lost its file, so its owner stops writing to the placeholder
// connection (nothing written there would be kept); a start then refuses the file plainly.
#[test]
fn a_replacement_that_cannot_be_read_back_says_the_log_lost_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "target.db");
    log.append(&[event(Stream::Shared, 1, b"old")]).unwrap();
    let newer = replacement(&dir, "newer.db", false);
    newer
        .connection()
        .execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'", [])
        .unwrap();

    let replaced = log.replace_with(newer, Replace::BesideReaders, &dir.path().join("kept.db"));
    assert!(matches!(replaced, Err(Error::SchemaTooNew { found: 99, .. })));
    assert!(log.lost_its_file());
    let reopened = EventLog::open(&dir.path().join("target.db"));
    assert!(matches!(reopened, Err(Error::SchemaTooNew { found: 99, .. })));
}

// Goal: a log rebuilt from a file keeps what the log proves or records (identity, events,
// heads, journal, cluster) and nothing else: no snapshot, no other table, no trigger; a file
// that is not a log, or a target that exists, is refused.
#[test]
fn a_rebuilt_log_keeps_only_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir, "source.db");
    source.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Local, 2, b"two")]).unwrap();
    source.save_snapshot(2, 1, b"forged state").unwrap();
    source.set_cluster_id(Some(ClusterId([7; 16]))).unwrap();
    let note = NewJournalEntry {
        at_ms: 5,
        level: Level::Warning,
        kind: "test.note".to_owned(),
        actor: None,
        message: "kept".to_owned(),
    };
    source.append_journal(&note).unwrap();
    source
        .connection()
        .execute_batch(
            "CREATE TABLE proj_forged (x); INSERT INTO proj_forged VALUES (1);
             CREATE TRIGGER forged AFTER INSERT ON events BEGIN INSERT INTO proj_forged VALUES (2); END;",
        )
        .unwrap();

    let target = dir.path().join("rebuilt.db");
    let (mut rebuilt, report) =
        EventLog::rebuild_from(&dir.path().join("source.db"), &target).unwrap();
    assert_eq!(rebuilt.peer_id(), source.peer_id());
    assert_eq!(rebuilt.heads(), source.heads());
    assert_eq!(rebuilt.read_after(0, 10).unwrap(), source.read_after(0, 10).unwrap());
    assert_eq!(rebuilt.verify().unwrap(), report);
    assert_eq!(report.heads, *source.heads());
    assert_eq!(report.events, 2);
    assert_eq!(rebuilt.cluster_id().unwrap(), Some(ClusterId([7; 16])));
    assert_eq!(
        rebuilt.query_journal(&JournalQuery { limit: 10, ..Default::default() }).unwrap().len(),
        1
    );
    assert!(rebuilt.latest_snapshot().unwrap().is_none());
    rebuilt.append(&[event(Stream::Shared, 3, b"three")]).unwrap();
    let forged: i64 = rebuilt
        .connection()
        .query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE '%forged%'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(forged, 0);

    assert!(matches!(
        EventLog::rebuild_from(&dir.path().join("source.db"), &target),
        Err(Error::RebuildTargetExists { .. })
    ));
    std::fs::write(dir.path().join("foreign.db"), b"not sqlite").unwrap();
    assert!(
        EventLog::rebuild_from(&dir.path().join("foreign.db"), &dir.path().join("x.db")).is_err()
    );
    Connection::open(dir.path().join("other.db"))
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    assert!(matches!(
        EventLog::rebuild_from(&dir.path().join("other.db"), &dir.path().join("y.db")),
        Err(Error::NotABatonLog { .. })
    ));
}

// Goal: a rebuild verifies the events it copies, as a walk of the copy would: a tampered
// event and a chain met out of order are each refused, a source whose events are a view (one
// that calls the rebuild's own check) is not a log, and the walk's report is the copy's.
#[test]
fn a_rebuild_refuses_events_that_do_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let source = |name: &str, sql: &str| {
        let mut log = open(&dir, name);
        log.append(&[
            event(Stream::Shared, 1, b"one"),
            event(Stream::Local, 2, b"two"),
            event(Stream::Shared, 3, b"three"),
        ])
        .unwrap();
        log.connection().execute_batch(sql).unwrap();
        dir.path().join(name)
    };
    let rebuild = |source: &Path| {
        let target = source.with_extension("rebuilt");
        EventLog::rebuild_from(source, &target).map(|(_, report)| report)
    };

    let whole = source("whole.db", "");
    let report = rebuild(&whole).unwrap();
    assert_eq!(report, open(&dir, "whole.db").verify().unwrap());
    assert_eq!(report.events, 3);

    let tampered = source(
        "tampered.db",
        "DROP TRIGGER events_no_update; UPDATE events SET payload = x'00' WHERE position = 3;",
    );
    match rebuild(&tampered) {
        Err(Error::Corrupt { seq: 2, reason, .. }) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("expected the tampered event refused, got {other:?}"),
    }

    // The shared chain's two events in swapped positions.
    let reordered = source(
        "reordered.db",
        "DROP TRIGGER events_no_update;
         UPDATE events SET position = 10 WHERE position = 1;
         UPDATE events SET position = 1 WHERE position = 3;
         UPDATE events SET position = 3 WHERE position = 10;",
    );
    match rebuild(&reordered) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("order"), "{reason}"),
        other => panic!("expected the reordered chain refused, got {other:?}"),
    }

    // A view standing for the events that feeds the check rows of its own choosing.
    let feeding = source(
        "feeding.db",
        "ALTER TABLE events RENAME TO real_events;
         CREATE VIEW events AS SELECT * FROM real_events
             WHERE baton_chain_step(position, origin, stream, seq, hlc_wall_ms, hlc_counter,
                 actor, kind, version, payload, prev_hash, hash);",
    );
    let error = rebuild(&feeding).unwrap_err();
    assert!(matches!(error, Error::NotABatonLog { .. }), "{error:?}");
}

/// A restore builds its staging database without a journal or an fsync; what it hands on must
/// be an ordinary durable log again, and scratch mode is refused while another connection
/// could be reading the file (leaving WAL would pull it from under that reader).
#[test]
fn a_rebuilt_log_and_a_log_leaving_scratch_mode_are_in_wal_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir, "source.db");
    source.append(&[event(Stream::Shared, 1, b"one")]).unwrap();
    let (mut rebuilt, _) =
        EventLog::rebuild_from(&dir.path().join("source.db"), &dir.path().join("rebuilt.db"))
            .unwrap();
    let modes = |log: &EventLog| -> (String, i64) {
        let conn = log.connection();
        (
            conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap(),
            conn.pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap(),
        )
    };
    assert_eq!(modes(&rebuilt), ("wal".to_owned(), 2));

    rebuilt.set_scratch(true).unwrap();
    assert_eq!(modes(&rebuilt), ("off".to_owned(), 0));
    rebuilt.append(&[event(Stream::Shared, 2, b"two")]).unwrap();
    rebuilt.set_scratch(false).unwrap();
    assert_eq!(modes(&rebuilt), ("wal".to_owned(), 2));
    assert_eq!(rebuilt.verify().unwrap().events, 2);

    let reader = open_reader(&dir.path().join("source.db")).unwrap();
    reader.query_row("SELECT count(*) FROM events", [], |row| row.get::<_, i64>(0)).unwrap();
    let _read = reader.unchecked_transaction().unwrap();
    reader.query_row("SELECT count(*) FROM events", [], |row| row.get::<_, i64>(0)).unwrap();
    let refused = source.set_scratch(true);
    assert!(refused.is_err(), "{refused:?}");
}

// Goal: a group committed without its fsync is visible to readers at once, survives reopening
// once synced, and leaves the connection synchronous for the next commit (a local change's).
#[test]
fn an_unsynced_group_is_read_at_once_and_the_next_commit_is_synchronous_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let mut log = EventLog::open(&path).unwrap();
    let reader = open_reader(&path).unwrap();
    let synchronous = |log: &EventLog| -> i64 {
        log.connection().pragma_query_value(None, "synchronous", |row| row.get(0)).unwrap()
    };
    log.begin_unsynced_group().unwrap();
    assert_eq!(synchronous(&log), 1, "NORMAL: no fsync at the commit");
    log.append(&[event(Stream::Shared, 1, b"replicated")]).unwrap();
    log.commit_group().unwrap();
    assert_eq!(last_position(&reader).unwrap(), 1);
    assert_eq!(synchronous(&log), 2, "FULL again");
    log.begin_unsynced_group().unwrap();
    assert_eq!(synchronous(&log), 1, "NORMAL again for the next one");
    log.append(&[event(Stream::Shared, 3, b"refused")]).unwrap();
    log.rollback_group();
    assert_eq!(synchronous(&log), 2, "FULL again after a rollback");
    log.sync().unwrap();
    log.append(&[event(Stream::Shared, 2, b"local")]).unwrap();
    drop((log, reader));
    let reopened = EventLog::open(&path).unwrap();
    assert_eq!(reopened.verify().unwrap().events, 2);
    EventLog::open_in_memory(PeerId([1; 16])).unwrap().sync().unwrap();
}

fn has_index(log: &EventLog, name: &str) -> bool {
    log.connection()
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap()
}

// Goal: the clock restarts above every HLC held, even one in the middle of a chain (a peer's
// clock that went back) or of a local chain, across reopening, without an index on the HLC.
#[test]
fn the_greatest_hlc_held_survives_reopening_wherever_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir, "source.db");
    let remote = source
        .append(&[
            event(Stream::Shared, 10, b"a"),
            event(Stream::Shared, 90, b"peak"),
            event(Stream::Shared, 20, b"back"),
        ])
        .unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Local, 50, b"mine")]).unwrap();
    log.append_remote(remote).unwrap();
    log.append(&[event(Stream::Local, 60, b"mine again")]).unwrap();
    assert_eq!(log.max_hlc().unwrap(), Hlc { wall_ms: 90, counter: 0 });
    drop(log);

    let log = open(&dir, "a.db");
    assert_eq!(log.max_hlc().unwrap(), Hlc { wall_ms: 90, counter: 0 });
    assert!(!has_index(&log, "events_hlc"), "no index on the events' HLC");
}

// Goal: a group rolled back leaves the greatest HLC as it was, in memory and on disk.
#[test]
fn a_rolled_back_group_leaves_the_greatest_hlc_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 5, b"kept")]).unwrap();
    log.begin_group().unwrap();
    log.append(&[event(Stream::Shared, 500, b"undone")]).unwrap();
    log.rollback_group();
    assert_eq!(log.max_hlc().unwrap(), Hlc { wall_ms: 5, counter: 0 });
    drop(log);
    assert_eq!(open(&dir, "a.db").max_hlc().unwrap(), Hlc { wall_ms: 5, counter: 0 });
}

// Goal: a log written before the heads carried the greatest HLC (with the index of earlier
// versions, or heads rewritten by an older version after a fallback) gets it from its events
// at open, and loses the index.
#[test]
fn a_log_of_an_earlier_version_gets_its_greatest_hlc_from_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "a.db");
    log.append(&[event(Stream::Shared, 7, b"one"), event(Stream::Local, 3, b"two")]).unwrap();
    log.connection()
        .execute_batch(
            "ALTER TABLE chain_heads DROP COLUMN max_hlc_wall_ms;
             ALTER TABLE chain_heads DROP COLUMN max_hlc_counter;
             CREATE INDEX events_hlc ON events (hlc_wall_ms, hlc_counter);",
        )
        .unwrap();
    drop(log);
    let mut log = open(&dir, "a.db");
    assert_eq!(log.max_hlc().unwrap(), Hlc { wall_ms: 7, counter: 0 });
    assert!(!has_index(&log, "events_hlc"), "the earlier index is dropped");

    // An older version rewrites a head without the column, after newer events.
    log.append(&[event(Stream::Local, 8, b"three")]).unwrap();
    log.connection()
        .execute_batch(
            "INSERT INTO events (position, origin, stream, seq, hlc_wall_ms, hlc_counter, actor,
                 kind, version, payload, prev_hash, hash)
             SELECT 4, origin, stream, seq + 1, 40, 0, actor, kind, version, payload, hash, hash
             FROM events WHERE position = 3;
             INSERT OR REPLACE INTO chain_heads (origin, stream, seq, hash)
             SELECT origin, stream, seq, hash FROM events WHERE position = 4;",
        )
        .unwrap();
    drop(log);
    assert_eq!(open(&dir, "a.db").max_hlc().unwrap(), Hlc { wall_ms: 40, counter: 0 });
}

// Goal: a log rebuilt from a file (a backup) takes its greatest HLC from the events copied,
// not from the figure the file's heads claim.
#[test]
fn a_rebuilt_log_derives_its_greatest_hlc_from_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = open(&dir, "source.db");
    source.append(&[event(Stream::Shared, 7, b"one")]).unwrap();
    source
        .connection()
        .execute_batch("UPDATE chain_heads SET max_hlc_wall_ms = 999999, max_hlc_counter = 9")
        .unwrap();
    drop(source);
    let target = dir.path().join("rebuilt.db");
    let (rebuilt, _) = EventLog::rebuild_from(&dir.path().join("source.db"), &target).unwrap();
    assert_eq!(rebuilt.max_hlc().unwrap(), Hlc { wall_ms: 7, counter: 0 });
}

// Goal: the values a rebuild checks are the values it writes, even when the source's `events`
// is a view whose columns SQLite evaluates once for the check and again for the insert (a
// flattened view with `random()`): no rebuild that succeeds holds an event that does not verify.
#[test]
fn a_rebuild_never_writes_values_other_than_those_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "source.db");
    log.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Shared, 2, b"two")]).unwrap();
    log.connection()
        .execute_batch(
            "ALTER TABLE events RENAME TO real_events;
             CREATE VIEW events AS SELECT position, origin, stream, seq, hlc_wall_ms,
                 hlc_counter, actor, kind, version,
                 CASE WHEN position = 2 AND random() % 2 = 0 THEN CAST('forged' AS BLOB)
                      ELSE payload END AS payload,
                 prev_hash, hash FROM real_events;",
        )
        .unwrap();
    drop(log);
    let mut forged = 0;
    for attempt in 0..64 {
        let target = dir.path().join(format!("rebuilt-{attempt}.db"));
        let Ok((rebuilt, _)) = EventLog::rebuild_from(&dir.path().join("source.db"), &target)
        else {
            continue;
        };
        if rebuilt.verify().is_err() {
            forged += 1;
        }
    }
    assert_eq!(forged, 0, "rebuilds that wrote an event their walk did not check");
}

// Goal: a rebuild whose source stores a chain in its order but numbers it backwards (its
// `events` not keyed by position, so storage order and position order differ, and a position
// could repeat) is refused, not copied with the chain reversed in position order.
#[test]
fn a_rebuild_refuses_a_chain_stored_in_order_but_positioned_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "source.db");
    log.append(&[
        event(Stream::Shared, 1, b"one"),
        event(Stream::Local, 2, b"two"),
        event(Stream::Shared, 3, b"three"),
    ])
    .unwrap();
    log.connection()
        .execute_batch(
            "ALTER TABLE events RENAME TO stored_events;
             CREATE TABLE events AS SELECT * FROM stored_events ORDER BY position;
             UPDATE events SET position = 4 - position;",
        )
        .unwrap();
    drop(log);
    let target = dir.path().join("rebuilt.db");
    match EventLog::rebuild_from(&dir.path().join("source.db"), &target) {
        Err(Error::NotABatonLog { .. }) => {}
        Err(other) => panic!("expected a source not keyed by position refused, got {other:?}"),
        Ok((rebuilt, _)) => panic!("rebuilt, and its own walk says {:?}", rebuilt.verify()),
    }
}

// Goal: a migration reads only the events of its kinds after the position it last found
// nothing up to, the note survives a reopen, a position with no event is not noted, and a
// log rebuilt from another file does not inherit it (a restored log is checked whole).
#[test]
fn a_migration_note_limits_the_next_read_and_is_not_copied_by_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "log.db");
    log.append(&[of_kind("licence.saved", 1), of_kind("bridge.saved", 2)]).unwrap();
    log.append(&[of_kind("licence.removed", 3), of_kind("licence.saved", 4)]).unwrap();
    let positions = |after: u64| -> Vec<u64> {
        log.read_kinds(&["licence.saved", "licence.removed"], after)
            .unwrap()
            .iter()
            .map(|stored| stored.position)
            .collect()
    };
    assert_eq!(positions(0), [1, 3, 4]);
    assert_eq!(positions(1), [3, 4]);
    assert_eq!(positions(4), Vec::<u64>::new());

    assert_eq!(log.migration_checked_through("licence").unwrap(), 0, "nothing noted yet");
    log.set_migration_checked_through("licence", 2).unwrap();
    log.set_migration_checked_through("other", 9).unwrap();
    drop(log);
    let log = open(&dir, "log.db");
    assert_eq!(log.migration_checked_through("licence").unwrap(), 2);
    assert_eq!(log.migration_checked_through("other").unwrap(), 0, "no event at 9: not noted");

    let (rebuilt, _) =
        EventLog::rebuild_from(&dir.path().join("log.db"), &dir.path().join("rebuilt.db")).unwrap();
    assert_eq!(rebuilt.migration_checked_through("licence").unwrap(), 0);
}

// Goal: a note that did not come with this content hides no event: one past the log's end,
// had it been kept, would have skipped the events appended up to it (found by the review of
// 64ed22d), and one whose event differs (another file's note) counts as none.
#[test]
fn a_migration_note_past_the_end_hides_no_event_appended_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir, "log.db");
    log.append(&[of_kind("bridge.saved", 1)]).unwrap();
    log.set_migration_checked_through("licence", 5).unwrap();
    log.append(&[of_kind("licence.saved", 2), of_kind("bridge.saved", 3)]).unwrap();
    log.append(&[of_kind("bridge.saved", 4), of_kind("bridge.saved", 5)]).unwrap();
    let checked = log.migration_checked_through("licence").unwrap();
    let found = log.read_kinds(&["licence.saved", "licence.removed"], checked).unwrap();
    assert_eq!(found.len(), 1, "the licence event at position 2 (checked through {checked})");

    let other = dir.path().join("other.db");
    let mut other_log = EventLog::open(&other).unwrap();
    other_log.append(&[of_kind("bridge.saved", 9)]).unwrap();
    other_log.set_migration_checked_through("licence", 1).unwrap();
    let note: Vec<u8> = other_log
        .connection()
        .query_row("SELECT value FROM meta WHERE key LIKE 'migration%'", [], |row| row.get(0))
        .unwrap();
    log.connection()
        .execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('migration_checked_through:licence', ?1)", [note])
        .unwrap();
    assert_eq!(log.migration_checked_through("licence").unwrap(), 0, "another log's note");
}

/// A source log of `count` shared events, appended in groups of 1,000.
fn source_of(dir: &tempfile::TempDir, count: u64) -> EventLog {
    let mut source = open(dir, "source.db");
    let events: Vec<NewEvent> =
        (1..=count).map(|n| event(Stream::Shared, n, n.to_string().as_bytes())).collect();
    for group in events.chunks(1_000) {
        source.append(group).unwrap();
    }
    source
}

// Goal: a deriving rebuild hands over every copied event once, in position order, across
// batches, with the new database, and what it writes there is committed with the copy.
#[test]
fn a_rebuild_hands_every_copied_event_once_in_order_and_keeps_what_was_derived() {
    let dir = tempfile::tempdir().unwrap();
    let count = REBUILD_COPY_BATCH_EVENTS as u64 * 2 + 3;
    let source = source_of(&dir, count);
    let mut handed = Vec::new();
    let mut batches = 0;
    let mut derive = |conn: &mut Connection, events: Vec<StoredEvent>| -> Result<(), DeriveError> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS derived (position INTEGER)")?;
        // Copied before it is handed over: the batch's last event is in the new log.
        let last = events.last().map_or(0, |stored| stored.position);
        let stored: u64 = conn.query_row("SELECT max(position) FROM events", [], |r| r.get(0))?;
        assert_eq!(stored, last, "a batch is handed over once copied");
        for stored in &events {
            conn.execute("INSERT INTO derived (position) VALUES (?1)", [stored.position])?;
        }
        handed.extend(events);
        batches += 1;
        Ok(())
    };
    let target = dir.path().join("rebuilt.db");
    let (rebuilt, report) =
        EventLog::rebuild_from_deriving(&dir.path().join("source.db"), &target, &mut derive)
            .unwrap();
    assert_eq!(report.events, count);
    assert_eq!(batches, 3);
    assert_eq!(handed, source.read_after(0, count as usize + 1).unwrap());
    let derived: (u64, u64) = rebuilt
        .connection()
        .query_row("SELECT count(*), max(position) FROM derived", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(derived, (count, count), "what was derived is committed with the copy");
}

// Goal: a derivation that fails fails the rebuild with its reason, and a broken chain is
// reported as such even when the derivation fails after it; nothing is handed over from
// past a broken event.
#[test]
fn a_failed_derivation_or_a_broken_chain_fails_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let count = REBUILD_COPY_BATCH_EVENTS as u64 + 10;
    drop(source_of(&dir, count));
    let source = dir.path().join("source.db");
    let mut refuse = |_: &mut Connection, _: Vec<StoredEvent>| -> Result<(), DeriveError> {
        Err("the payload is not an event".into())
    };
    match EventLog::rebuild_from_deriving(&source, &dir.path().join("a.db"), &mut refuse) {
        Err(Error::Derive(reason)) => assert_eq!(reason.to_string(), "the payload is not an event"),
        other => panic!("expected the derivation's failure, got {:?}", other.map(|(_, r)| r)),
    }
    let conn = Connection::open(&source).unwrap();
    // The last event's payload changes, so its hash no longer matches it.
    conn.execute("DROP TRIGGER IF EXISTS events_no_update", []).unwrap();
    conn.execute("UPDATE events SET payload = x'00' WHERE position = ?1", [count]).unwrap();
    drop(conn);
    let mut last_handed = 0;
    let mut keep = |_: &mut Connection, events: Vec<StoredEvent>| -> Result<(), DeriveError> {
        last_handed = events.last().map_or(last_handed, |stored| stored.position);
        Ok(())
    };
    match EventLog::rebuild_from_deriving(&source, &dir.path().join("b.db"), &mut keep) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("expected the broken chain refused, got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(last_handed, REBUILD_COPY_BATCH_EVENTS as u64, "only the verified batch");
}

// Goal: a rebuild copies the rows it verified, never rows an index of the source points at. A
// crafted file can make an index disagree with its table (here it maps each position to the
// other row) and steer the planner to it with its statistics: a position key kept in such an
// index (`INTEGER PRIMARY KEY DESC`) is refused as not a log, and an extra index on the
// positions of a proper table is not used by either read (SQLite's planner prefers the rowid
// here anyway; both reads say `NOT INDEXED` so that no statistics can change it).
#[test]
fn a_rebuild_copies_what_it_verified_when_an_index_of_the_source_lies() {
    let dir = tempfile::tempdir().unwrap();
    let source = |name: &str, table: &str| {
        let mut log = open(&dir, name);
        log.append(&[event(Stream::Shared, 1, b"one"), event(Stream::Shared, 2, b"two")]).unwrap();
        log.connection()
            .execute_batch(&format!(
                "ALTER TABLE events RENAME TO stored_events;
                 CREATE TABLE events (
                     position {table}, origin BLOB NOT NULL,
                     stream INTEGER NOT NULL, seq INTEGER NOT NULL, hlc_wall_ms INTEGER NOT NULL,
                     hlc_counter INTEGER NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL,
                     version INTEGER NOT NULL, payload BLOB NOT NULL, prev_hash BLOB NOT NULL,
                     hash BLOB NOT NULL, UNIQUE (origin, stream, seq));
                 INSERT INTO events (rowid, position, origin, stream, seq, hlc_wall_ms,
                         hlc_counter, actor, kind, version, payload, prev_hash, hash)
                     SELECT position, * FROM stored_events ORDER BY position;
                 DROP TABLE stored_events;
                 CREATE INDEX lying ON events (position);
                 -- The same index over rows numbered the other way round: 1 -> rowid 2.
                 CREATE TABLE decoy (position INTEGER, unused);
                 CREATE INDEX decoy_position ON decoy (position);
                 INSERT INTO decoy (rowid, position) VALUES (1, 2), (2, 1);
                 PRAGMA writable_schema = ON;
                 UPDATE sqlite_schema SET rootpage = (SELECT rootpage FROM sqlite_schema
                         WHERE name = 'decoy_position')
                     WHERE name IN ('lying', 'sqlite_autoindex_events_1')
                         AND '{table}' LIKE '%DESC%' = (name = 'sqlite_autoindex_events_1');
                 PRAGMA writable_schema = OFF;
                 ANALYZE;
                 DELETE FROM sqlite_stat1;
                 INSERT INTO sqlite_stat1 VALUES
                     ('events', 'sqlite_autoindex_events_1', '1000000 1 sz=250'),
                     ('events', 'lying', '1000000 1 sz=250'), ('events', NULL, '1000000 sz=1');"
            ))
            .unwrap();
        drop(log);
        dir.path().join(name)
    };
    let descending = source("descending.db", "INTEGER PRIMARY KEY DESC");
    let refused = EventLog::rebuild_from(&descending, &dir.path().join("a.db"));
    assert!(matches!(refused, Err(Error::NotABatonLog { .. })), "{:?}", refused.map(|(_, r)| r));

    let indexed = source("indexed.db", "INTEGER PRIMARY KEY");
    let (rebuilt, report) = EventLog::rebuild_from(&indexed, &dir.path().join("b.db")).unwrap();
    assert_eq!(report.events, 2);
    let copied: Vec<(i64, i64)> = rebuilt
        .connection()
        .prepare("SELECT position, seq FROM events ORDER BY position")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(copied, [(1, 1), (2, 2)], "copied rows other than those verified");
    rebuilt.verify().expect("a rebuilt log verifies");
}

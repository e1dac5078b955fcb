//! Group commit: changes that share a commit, a rejection inside a group, a failed group,
//! concurrent clients of the writer sharing commits, peers' messages in one commit; the cluster
//! settings published before an acknowledgement.

#![allow(clippy::unwrap_used)]

use super::*;
use model::{Record, RecordKey, RecordKind};

/// A bridge record named `name`; also the cluster router's tests' change.
pub(crate) fn bridge(name: &str) -> Record {
    Record::Bridge(model::record::Bridge {
        name: name.to_owned(),
        bridge_type: model::record::BridgeType::Mcu,
        address: format!("{name}.example.com"),
        protocol: model::record::Protocol::Https,
        username: "api".to_owned(),
        password: "secret".to_owned(),
        capacity_ports: 10,
        enabled: true,
        pinned_sha256: None,
    })
}

fn create(name: &str) -> Change {
    Change { actor: "admin".to_owned(), command: Command::Create(bridge(name)), now_ms: 1_000 }
}

/// The writer thread over `store`, with the queue its messages for peers go to.
fn spawn_writer(store: Store) -> (Writer, std::thread::JoinHandle<()>, mpsc::Receiver<Outbound>) {
    let (outbound, peers) = mpsc::channel(64);
    let (writer, thread) = Writer::spawn(store, outbound).unwrap();
    (writer, thread, peers)
}

fn key(name: &str) -> RecordKey {
    RecordKey { kind: RecordKind::Bridge, name: name.to_owned() }
}

#[test]
fn a_group_is_one_commit_and_each_change_sees_the_ones_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let (mut store, _) = Store::open(&path).unwrap();
    let commits_before = store.group_commits();

    // The second "a" is decided against the first one of the same group.
    let results = store.execute_group(&[create("a"), create("a"), create("b")]);

    assert_eq!(store.group_commits(), commits_before + 1, "one transaction, one fsync");
    assert!(results[0].as_ref().is_ok_and(|stored| stored.len() == 1));
    assert!(matches!(results[1], Err(StoreError::Rejected(Rejection::AlreadyExists { .. }))));
    assert!(results[2].as_ref().is_ok_and(|stored| stored.len() == 1));
    drop(store);
    // Durable, with the projection rows in the same commit.
    let (store, _) = Store::open(&path).unwrap();
    assert!(store.state().get(&key("a")).is_some() && store.state().get(&key("b")).is_some());
    let reader = eventlog::open_reader(&path).unwrap();
    assert_eq!(projections::list(&reader, RecordKind::Bridge).unwrap().len(), 2);
    assert_eq!(projections::position(&reader).unwrap(), store.last_position());
}

#[test]
fn a_failed_group_fails_every_change_and_keeps_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let (mut store, _) = Store::open(&path).unwrap();
    let position_before = store.last_position();
    // An infrastructure failure on the second change's insert, after the first one was
    // written in the same transaction.
    let saboteur = Connection::open(&path).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON events
             WHEN instr(NEW.payload, CAST('poison' AS BLOB)) > 0
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();

    let results = store.execute_group(&[create("a"), create("poison"), create("c")]);

    assert!(results.iter().all(|result| matches!(result, Err(StoreError::CommitFailed(_)))));
    assert_eq!(store.last_position(), position_before);
    assert!(store.state().get(&key("a")).is_none(), "nothing of the group is applied");
    saboteur.execute_batch("DROP TRIGGER poison").unwrap();
    // The log's chain heads were rolled back too: the next change appends cleanly.
    assert!(store.execute("admin", &Command::Create(bridge("a")), 2_000).is_ok());
    drop(store);
    let (store, _) = Store::open(&path).unwrap();
    assert!(store.state().get(&key("a")).is_some());
    assert!(store.state().get(&key("c")).is_none());
    assert_eq!(store.last_position(), position_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_commits() {
    const CLIENTS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
    let (writer, thread, _peers) = spawn_writer(store);
    let commits_before = writer.group_commits();

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer.execute("admin", Command::Create(bridge(&format!("b{index}"))), 1_000).await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }

    let commits = writer.group_commits() - commits_before;
    assert!(commits < CLIENTS as u64, "{CLIENTS} concurrent changes took {commits} commits");
    assert_eq!(writer.state_watch().borrow().list(RecordKind::Bridge).count(), CLIENTS);
    writer.stop().await;
    thread.join().unwrap();
}

/// Goal: when the log cannot be made durable, the change is answered as not durable, its
/// events never reach a peer, and the writer takes no more changes (a later fsync could
/// succeed without the pages the failed one lost). The write-ahead file is taken away, so the
/// fsync fails while SQLite goes on writing to its open descriptor.
#[tokio::test]
async fn a_failed_fsync_is_answered_not_durable_and_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let (mut store, _) = Store::open(&path).unwrap();
    let _ = store.set_replication_peers(vec![PeerId([9; 16])]);
    let (writer, thread, mut peers) = spawn_writer(store);
    let create = |name: &str| writer.execute("admin", Command::Create(bridge(name)), 1_000);

    assert!(create("a").await.is_ok());
    assert!(peers.try_recv().is_ok(), "a durable change is pushed");

    assert_eq!(writer.stopped(), None);
    std::fs::remove_file(format!("{}-wal", path.display())).unwrap();
    assert!(matches!(create("b").await, Err(StoreError::NotDurable(_))));
    // Said before any later request: the alarm and the health probe read it.
    let stopped = writer.stopped().expect("the writer says it stopped");
    assert!(stopped.contains("fsync"), "{stopped}");
    // A peer asking for everything gets nothing either.
    let summary = replication::Message::Summary { heads: Default::default() };
    let _ = writer.replicate(PeerId([9; 16]), summary).await;
    assert!(matches!(create("c").await, Err(StoreError::WriterGone)));
    thread.join().unwrap();
    assert!(peers.try_recv().is_err(), "a change that may be lost reached a peer");
}

/// Goal: changes still waiting for their fsync when the writer stops are answered saved and
/// are there after a restart: the syncer finishes before the database is closed (closing the
/// last connection removes the write-ahead file the syncer syncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_in_flight_at_a_stop_are_answered_saved_and_kept() {
    const CLIENTS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let (store, _) = Store::open(&path).unwrap();
    let (writer, thread, _peers) = spawn_writer(store);
    let commits_before = writer.group_commits();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|index| {
            let writer = writer.clone();
            let change = Command::Create(bridge(&format!("b{index}")));
            tokio::spawn(async move { writer.execute("admin", change, 1_000).await })
        })
        .collect();
    // Stopped right after the first group is committed: it, and those behind it, are still
    // with the syncer.
    while writer.group_commits() == commits_before {
        tokio::task::yield_now().await;
    }
    writer.stop().await;
    let mut saved = Vec::new();
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => saved.push(format!("b{index}")),
            Err(error) => assert!(matches!(error, StoreError::WriterGone), "b{index}: {error}"),
        }
    }
    thread.join().unwrap();
    assert!(!saved.is_empty(), "the committed group was not answered");

    let (reopened, _) = Store::open(&path).unwrap();
    for name in &saved {
        assert!(
            reopened.state().get(&key(name)).is_some(),
            "{name} was answered saved but is gone"
        );
    }
}

/// A change is visible in the published cluster settings (what the links, the restore's
/// "clustered?" check and the web read) by the time its author is told it is saved.
#[tokio::test]
async fn the_cluster_settings_are_published_before_the_change_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("baton.db")).unwrap();
    let (writer, thread, _peers) = spawn_writer(store);
    let settings = writer.cluster_settings();
    for round in 0..200 {
        let host_name = format!("peer-{round}");
        let name = model::record::SystemName {
            host_name: host_name.clone(),
            domain: "example.test".into(),
        };
        let command = Command::Save(Record::SystemName(name));
        writer.execute("test", command, 1_000 + round).await.unwrap();
        assert_eq!(settings.borrow().host_name, host_name, "round {round}");
    }
    writer.stop().await;
    thread.join().unwrap();
}

/// Two stores in their own directories: an origin, and a replica that replicates with it.
fn origin_and_replica() -> ([tempfile::TempDir; 2], Store, Store) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (origin, _) = Store::open(&dirs[0].path().join(DATABASE_FILE)).unwrap();
    let (mut replica, _) = Store::open(&dirs[1].path().join(DATABASE_FILE)).unwrap();
    let _ = replica.set_replication_peers(vec![origin.peer_id()]);
    (dirs, origin, replica)
}

#[test]
fn replicated_messages_share_one_commit_with_their_projection_rows() {
    let (dirs, mut origin, mut store) = origin_and_replica();
    let path = dirs[1].path().join(DATABASE_FILE);
    let mut messages = Vec::new();
    for name in ["a", "b", "c"] {
        let events = origin.execute_group(&[create(name)]).remove(0).unwrap();
        messages.push((origin.peer_id(), replication::Message::Events { events }));
    }
    // A message from a peer that is not ours is refused alone.
    let stranger = PeerId([7; 16]);
    messages.insert(1, (stranger, replication::Message::Events { events: Vec::new() }));
    let commits_before = store.group_commits();

    store.replicate_group(messages, &mut |_| {});

    assert_eq!(store.group_commits(), commits_before + 1, "one transaction, one fsync");
    for name in ["a", "b", "c"] {
        assert!(store.state().get(&key(name)).is_some(), "{name} applied");
    }
    // The projections were written in the same commit: a reader never sees them behind.
    let reader = eventlog::open_reader(&path).unwrap();
    assert_eq!(projections::list(&reader, RecordKind::Bridge).unwrap().len(), 3);
    assert_eq!(projections::position(&reader).unwrap(), store.last_position());
}

// Goal: pushes that arrive one after the other, each shown before the next comes, share
// fsyncs (at most one per `REPLICATED_SYNC_INTERVAL_MS`); a push whose fsync was held back
// gets it once the writer is idle. Syncing at every dry queue took one fsync per push.
#[tokio::test]
async fn pushes_in_a_stream_share_fsyncs_and_a_held_one_is_synced_once_idle() {
    const PUSHES: usize = 30;
    let interval = std::time::Duration::from_millis(REPLICATED_SYNC_INTERVAL_MS);
    let (_dirs, mut origin, replica) = origin_and_replica();
    let (writer, thread, _peers) = spawn_writer(replica);
    let mut push = |name: String| {
        let events = origin.execute_group(&[create(&name)]).remove(0).unwrap();
        let (writer, from) = (writer.clone(), origin.peer_id());
        async move {
            writer.replicate(from, replication::Message::Events { events }).await.unwrap();
            let shown = |state: &Arc<State>| state.get(&key(&name)).is_some();
            writer.state_watch().wait_for(shown).await.unwrap();
        }
    };
    let (syncs_before, started) = (writer.syncs(), Instant::now());
    for index in 0..PUSHES {
        push(format!("p{index}")).await;
    }
    let intervals = started.elapsed().as_millis() as u64 / REPLICATED_SYNC_INTERVAL_MS;
    let syncs = writer.syncs() - syncs_before;
    // One at the first push and one per interval after it.
    assert!(syncs <= intervals + 1, "{PUSHES} pushes in {intervals} intervals took {syncs} fsyncs");

    // Past any held sync: the next push is synced at once, the one right after it is held.
    // Each waits for its sync: a push shown but not yet synced could otherwise share the
    // next one's sync (the writer looks at its queue after publishing the state, and on a
    // loaded machine the next push can be there by then).
    tokio::time::sleep(3 * interval).await;
    let syncs_before = writer.syncs();
    let synced = |count: u64| {
        let writer = writer.clone();
        async move {
            let deadline = Instant::now() + 50 * interval;
            while writer.syncs() < count && Instant::now() < deadline {
                tokio::time::sleep(interval / 10).await;
            }
            writer.syncs()
        }
    };
    push("at-once".to_owned()).await;
    assert_eq!(synced(syncs_before + 1).await, syncs_before + 1, "synced at once");
    push("held".to_owned()).await;
    assert_eq!(synced(syncs_before + 2).await, syncs_before + 2, "the held push was never synced");
    writer.stop().await;
    thread.join().unwrap();
}

// Goal: a full catch-up batch asks its sender for the next one before it is committed, so the
// next batch is read and sent while this one is made durable; what else it answers waits for
// the commit.
#[test]
fn a_full_catch_up_batch_asks_for_the_next_before_its_commit() {
    let (dirs, mut origin, mut store) = origin_and_replica();
    let path = dirs[1].path().join(DATABASE_FILE);
    let changes: Vec<Change> =
        (0..replication::EVENTS_PER_MESSAGE_MAX).map(|n| create(&format!("b{n}"))).collect();
    let mut events = Vec::new();
    for group in changes.chunks(GROUP_COMMIT_COMMANDS_MAX) {
        for result in origin.execute_group(group) {
            events.extend(result.unwrap());
        }
    }
    let last_seq = events.last().unwrap().seq;
    let reader = eventlog::open_reader(&path).unwrap();
    let committed =
        || reader.query_row("SELECT count(*) FROM events", [], |row| row.get::<_, u64>(0));
    let before = committed().unwrap();
    let mut asked = Vec::new();

    let after_commit = store.replicate_group(
        vec![(origin.peer_id(), replication::Message::Events { events })],
        &mut |asks| asked.push((asks, committed().unwrap())),
    );

    let [(asks, committed_when_asked)] = asked.as_slice() else { panic!("asked once: {asked:?}") };
    assert_eq!(*committed_when_asked, before, "asked before the batch was committed");
    let [(to, replication::Message::Summary { heads })] = asks.as_slice() else {
        panic!("one summary: {asks:?}")
    };
    assert_eq!(*to, origin.peer_id());
    assert_eq!(heads.get(&origin.peer_id()), Some(&last_seq), "asks from after the batch");
    assert!(after_commit.is_empty(), "nothing else to send: {after_commit:?}");
    assert_eq!(committed().unwrap(), before + last_seq, "the batch is committed after");
}

/// Creates bridges `b<from>`.. up to `b<to - 1>`, in full groups, the writer idling between
/// two (as it does when one client sends them).
fn create_bridges(store: &mut Store, from: usize, to: usize) {
    for start in (from..to).step_by(GROUP_COMMIT_COMMANDS_MAX) {
        create_bridges_busy(store, start, (start + GROUP_COMMIT_COMMANDS_MAX).min(to));
        store.snapshot_when_idle();
    }
}

/// [`create_bridges`] with a writer whose queue never runs dry; returns the events.
fn create_bridges_busy(store: &mut Store, from: usize, to: usize) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    for start in (from..to).step_by(GROUP_COMMIT_COMMANDS_MAX) {
        let end = (start + GROUP_COMMIT_COMMANDS_MAX).min(to);
        let changes: Vec<Change> = (start..end).map(|i| create(&format!("b{i}"))).collect();
        for result in store.execute_group(&changes) {
            events.extend(result.unwrap());
        }
    }
    events
}

// Goal: a large state is not encoded again every `SNAPSHOT_INTERVAL_EVENTS` events but after
// as many events as the last snapshot holds records, so start-up replays no more events than
// the snapshot it loads holds records.
#[test]
fn snapshots_are_spaced_by_the_size_of_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let (mut store, _) = Store::open(&path).unwrap();
    create_bridges(&mut store, 0, 12_000);
    let LastSnapshot { position: first, records: first_records } = store.last_snapshot;
    // Positions end with full groups: the first snapshot holds a few records more than the
    // interval, so the gap below is longer than it.
    let gap = first_records - 1;
    assert!(first > 0 && gap >= SNAPSHOT_INTERVAL_EVENTS, "{first} {first_records}");

    // More than `SNAPSHOT_INTERVAL_EVENTS` events past it, fewer than it holds records.
    let created = usize::try_from(store.applied_position - first).unwrap() + 12_000;
    let next = 12_000 + usize::try_from(gap).unwrap() - (created - 12_000);
    create_bridges(&mut store, 12_000, next);
    assert_eq!(store.applied_position, first + gap);
    assert_eq!(store.last_snapshot.position, first, "not yet");
    drop(store);
    let (mut store, report) = Store::open(&path).unwrap();
    assert_eq!(report.snapshot_position, first);
    assert_eq!(report.events_replayed, gap);

    // Due at the next event.
    create_bridges(&mut store, next, next + 1);
    assert_eq!(store.last_snapshot.position, first + gap + 1);
}

// Goal: a due snapshot is written when the writer idles, not inside a group where it delays
// the changes behind it, and not in the pause between two batches of a catch-up; a writer
// that never idles still writes it once it is overdue, so start-up replay stays bounded.
#[test]
fn a_due_snapshot_waits_for_an_idle_writer_that_is_not_catching_up() {
    let (_dirs, mut origin, mut replica) = origin_and_replica();
    let overdue = SNAPSHOT_OVERDUE_FACTOR * SNAPSHOT_INTERVAL_EVENTS;
    let events = create_bridges_busy(&mut origin, 0, overdue as usize + 100);
    let first = origin.last_snapshot.position;
    assert!(first >= overdue && first < overdue + GROUP_COMMIT_COMMANDS_MAX as u64, "{first}");

    // Catching up past the due point in full batches, idling between them: no snapshot.
    let (full, rest) = events[..full_batches_past_due() + 500].split_at(full_batches_past_due());
    catch_up_in_full_batches(&origin, &mut replica, full);
    assert!(replica.events_since_snapshot() >= SNAPSHOT_INTERVAL_EVENTS, "due by now");
    assert_eq!(replica.last_snapshot.position, 0, "not while catching up");

    // The last batch is not full: the catch-up is over, and the idle writer saves it.
    let message = replication::Message::Events { events: rest.to_vec() };
    replica.replicate_group(vec![(origin.peer_id(), message)], &mut |_| {});
    assert_eq!(replica.last_snapshot.position, 0, "not inside the group");
    replica.snapshot_when_idle();
    assert_eq!(replica.last_snapshot.position, replica.last_position());
    let saved = replica.log.latest_snapshot().unwrap().unwrap();
    assert_eq!(State::from_snapshot(&saved.blob).unwrap(), *replica.state());
}

/// The events of the fewest full catch-up batches that bring a fresh replica's snapshot due.
fn full_batches_past_due() -> usize {
    let batch_max = replication::EVENTS_PER_MESSAGE_MAX;
    (SNAPSHOT_INTERVAL_EVENTS as usize).div_ceil(batch_max) * batch_max
}

/// Sends `events` from `origin` to `replica` in full batches, the replica's writer idling
/// between two: a catch-up under way.
fn catch_up_in_full_batches(origin: &Store, replica: &mut Store, events: &[StoredEvent]) {
    for batch in events.chunks(replication::EVENTS_PER_MESSAGE_MAX) {
        let message = replication::Message::Events { events: batch.to_vec() };
        replica.replicate_group(vec![(origin.peer_id(), message)], &mut |_| {});
        replica.snapshot_when_idle();
    }
}

// Goal: a catch-up cut short by a new peer list (its sender left the cluster, or the peer
// went standalone) does not hold the snapshot back until the next replicated message.
#[test]
fn a_new_peer_list_ends_a_catch_up_that_held_a_snapshot_back() {
    let (_dirs, mut origin, mut replica) = origin_and_replica();
    let events = create_bridges_busy(&mut origin, 0, full_batches_past_due());
    catch_up_in_full_batches(&origin, &mut replica, &events[..full_batches_past_due()]);
    assert_eq!(replica.last_snapshot.position, 0, "held back while catching up");

    let _ = replica.set_replication_peers(Vec::new());
    replica.snapshot_when_idle();
    assert_eq!(replica.last_snapshot.position, replica.last_position());
}

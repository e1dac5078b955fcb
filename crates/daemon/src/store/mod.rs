//! The write side: one thread owns the event log's write connection, decides commands against
//! the in-memory state, appends the resulting events durably, and brings the projections up to
//! date before it answers, so a client that got "saved" reads its own write.
//!
//! SQLite access never happens on the async runtime: writes go through a bounded queue to the
//! writer thread, reads run on the blocking pool with connections from [`Readers`].

mod cluster_settings;
mod fold;
#[cfg(test)]
mod licence_tests;
mod readers;
mod staging;
mod sync_pacing;
mod syncer;
#[cfg(test)]
pub(crate) mod tests;

pub use cluster_settings::{ClusterSettings, Outbound};
pub use eventlog::Replace;
pub use readers::{Paused, ReadError, Readers, state_at};
pub use staging::{stage_restore, staged_configuration};
pub use sync_pacing::REPLICATED_SYNC_INTERVAL_MS;

use crate::base::journal::EntryKind;
use eventlog::{EventLog, NewEvent, StoredEvent, Stream};
use model::{
    ClusterId, Command, Event, HybridClock, LicenceMigration, PeerId, Rejection, Scope, Stamp,
    State,
};
use replication::Replicator;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use sync_pacing::SyncPacing;
use tokio::sync::{mpsc, oneshot, watch};

/// Requests waiting for the writer; callers wait (back-pressure) when it is full.
pub const WRITER_QUEUE_MAX: usize = 256;
/// A snapshot of the state falls due after this many events, or after as many events as the
/// last snapshot holds records if that is more (see [`Store::snapshot_if_due`]).
pub const SNAPSHOT_INTERVAL_EVENTS: u64 = 10_000;
/// A due snapshot waits for the writer to be idle; a group writes it itself once this many
/// times its spacing has passed, so a queue that never empties still bounds start-up replay.
pub const SNAPSHOT_OVERDUE_FACTOR: u64 = 2;
/// Commands one group commit holds at most: one fsync amortised over many commands, while a
/// failed commit fails a bounded number of them.
pub const GROUP_COMMIT_COMMANDS_MAX: usize = 256;
/// Idle read connections kept open.
pub const READERS_IDLE_MAX: usize = 8;
/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "baton.db";
/// The licence migration's name among the log's notes of migrations checked.
const LICENCE_MIGRATION: &str = "licence";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operator asked for something the configuration rules refuse.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("event log: {0}")]
    EventLog(#[from] eventlog::Error),
    #[error("projections: {0}")]
    Projection(#[from] projections::Error),
    #[error("stored event cannot be read: {0}")]
    Decode(#[from] model::DecodeError),
    #[error("replication: {0}")]
    Replication(#[from] replication::Error),
    #[error("no randomness: {0}")]
    Random(String),
    #[error("this peer already belongs to a cluster")]
    AlreadyInCluster,
    /// A restore on a clustered peer would fork the cluster's history.
    #[error(
        "this peer is part of a cluster; put it in standalone mode first (a restored peer then \
         forms or joins a cluster by the normal rules)"
    )]
    Clustered,
    /// The transaction holding this change (and the others of its group commit) failed:
    /// nothing of the group was saved.
    #[error("the change could not be saved: {0}")]
    CommitFailed(String),
    #[error("the writer has stopped")]
    WriterGone,
    /// The change was committed, but the disk failed the fsync that makes it durable; this
    /// peer then takes no more changes (see `syncer`).
    #[error(
        "the change was written but the disk failed to make it durable ({0}); this peer takes \
         no more changes until batond is restarted"
    )]
    NotDurable(String),
    #[error("no thread to fold the state on: {0}")]
    NoThread(String),
}

/// The log, the state folded from it, the clock that stamps new events, and the replication
/// state machine that exchanges the shared stream with cluster peers.
pub struct Store {
    log: EventLog,
    state: State,
    clock: HybridClock,
    applied_position: u64,
    last_snapshot: LastSnapshot,
    replicator: Replicator,
    cluster_id: Option<ClusterId>,
    /// Counts changes to `state`, so readers are sent a new copy only when it changed.
    state_version: u64,
    /// A replicated group or an idle snapshot was committed without its fsync (see
    /// [`Store::sync_unsynced_commits`]).
    unsynced_commits: bool,
    /// The last replicated group applied events and asked for more: a catch-up is under way,
    /// so an idle moment is only the wait for its next batch.
    catching_up: bool,
    /// The database content was replaced but could not be read back: this store holds a
    /// placeholder, so the writer must stop rather than take changes it would lose.
    unusable: bool,
}

/// Where the last snapshot was taken and how many records it holds: when the next is due (see
/// [`Store::snapshot_if_due`]).
#[derive(Clone, Copy, Default)]
struct LastSnapshot {
    position: u64,
    records: u64,
}

/// One command to decide and save, with who asked and when.
pub struct Change {
    pub actor: String,
    pub command: Command,
    pub now_ms: u64,
}

/// When a group commit's changes become durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Durability {
    /// At the commit: its fsync.
    AtCommit,
    /// Once the log is synced ([`eventlog::WalSync`]) after the commit: the writer's syncer
    /// does it while the next group is written, and answers the changes only then.
    Deferred,
}

/// Results of a committed group, one per change, and whether the cluster record changed.
type GroupOutcome = (Vec<Result<Vec<StoredEvent>, StoreError>>, bool);

/// What a group restores in memory when its transaction fails.
struct Undo {
    state: State,
    applied_position: u64,
    last_snapshot: LastSnapshot,
    state_version: u64,
}

/// What start-up had to do, for the Event Log and the start-up benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenReport {
    pub snapshot_position: u64,
    pub events_replayed: u64,
    pub projection_events_applied: u64,
}

impl Store {
    pub fn open(path: &Path) -> Result<(Store, OpenReport), StoreError> {
        Store::from_log(EventLog::open(path)?)
    }

    fn from_log(mut log: EventLog) -> Result<(Store, OpenReport), StoreError> {
        let mut report = OpenReport::default();
        let mut state = State::default();
        let (mut position, mut last_snapshot) = (0, LastSnapshot::default());
        if let Some(snapshot) = log.latest_snapshot()? {
            // A snapshot in an older format is simply not used: replaying the log is always
            // correct, only slower.
            if snapshot.format == model::SNAPSHOT_FORMAT && snapshot.position <= log.last_position()
            {
                state = State::from_snapshot(&snapshot.blob)?;
                position = snapshot.position;
                last_snapshot = LastSnapshot { position, records: state.slot_count() as u64 };
                report.snapshot_position = position;
            }
        }
        let licence = (position == 0).then(LicenceMigration::default);
        let fold = fold::Fold { state, licence, position, replayed: 0 };
        let (applied, fold::Fold { state, licence, position, replayed }) =
            fold::catch_up_folding(&mut log, fold)?;
        report.projection_events_applied = applied;
        report.events_replayed = replayed;
        // For the writer's group commits from here on (see the method).
        log.set_temporary_files_in_memory()?;
        let clock = HybridClock::new(log.max_hlc()?);
        let cluster_id = log.cluster_id()?;
        let replicator = Replicator::new(log.peer_id(), []);
        let mut store = Store {
            log,
            state,
            clock,
            applied_position: position,
            last_snapshot,
            replicator,
            cluster_id,
            state_version: 0,
            unsynced_commits: false,
            catching_up: false,
            unusable: false,
        };
        store.make_licence_local(licence)?;
        store.snapshot_if_due()?;
        store.reconcile_cluster_id()?;
        Ok((store, report))
    }

    /// Adopts the licence of a log written while the licence was shared, once, into the local
    /// stream (see `model::licence_migration`). `noted` is the migration the start-up fold
    /// already fed with every event; without it, only the `licence` events are read.
    fn make_licence_local(&mut self, noted: Option<LicenceMigration>) -> Result<(), StoreError> {
        // A licence in the state came from the local stream: the usual start costs no scan.
        if self.state.get(&model::licence_migration::licence_key()).is_some() {
            return Ok(());
        }
        let checked = self.log.migration_checked_through(LICENCE_MIGRATION)?;
        let migration = match noted {
            Some(migration) => migration,
            None => self.read_licence_events(checked)?,
        };
        if !migration.noted_any() {
            // Read again from here next time: a start from a snapshot would otherwise read the
            // whole log for nothing (0.1 s per 10^6 events), and so would every restore.
            let last = self.log.last_position();
            if last > checked {
                self.log.set_migration_checked_through(LICENCE_MIGRATION, last)?;
            }
            return Ok(());
        }
        let Some((_, record)) = migration.adopted() else { return Ok(()) };
        let event = Event::Saved(record);
        let encoded = event.encode();
        let now_ms = self.clock.last().wall_ms;
        let new_event = NewEvent {
            stream: Stream::Local,
            hlc: self.clock.tick(now_ms),
            actor: "system".to_owned(),
            kind: encoded.kind,
            version: encoded.version,
            payload: encoded.payload,
        };
        for stored in self.log.append(&[new_event])? {
            self.state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
            self.applied_position = stored.position;
        }
        projections::catch_up(self.log.connection_mut())?;
        Ok(())
    }

    /// The licence events after `checked`, the last check that found none (see
    /// `EventLog::migration_checked_through`).
    fn read_licence_events(&self, checked: u64) -> Result<LicenceMigration, StoreError> {
        let licence = model::RecordKind::Licence.as_str();
        let mut migration = LicenceMigration::default();
        let (saved, removed) = (format!("{licence}.saved"), format!("{licence}.removed"));
        for stored in self.log.read_kinds(&[&saved, &removed], checked)? {
            let event = Event::decode(&stored.kind, stored.version, &stored.payload)?;
            let stamp = Stamp { hlc: stored.hlc, origin: stored.origin };
            migration.note(stamp, &event, stored.in_its_stream(&event));
        }
        Ok(migration)
    }

    /// The cluster identity follows the cluster record: a peer whose list holds only its own
    /// address founds a cluster (the seed's initial peer); standalone mode forgets the
    /// identity, so the peer's configuration is replaced when it joins again. A peer listing
    /// others without an identity is joining: it adopts the identity of the first compatible
    /// peer (see [`Store::join_cluster`]). Idempotent, so a crash between saving the record
    /// and this step is repaired at the next start.
    fn reconcile_cluster_id(&mut self) -> Result<(), StoreError> {
        let settings = self.cluster_settings();
        let wanted = match (&self.cluster_id, settings.is_clustered()) {
            (Some(_), false) => None,
            (None, true) if settings.peers == settings.address.into_iter().collect::<Vec<_>>() => {
                Some(ClusterId(random_bytes()?))
            }
            (current, _) => *current,
        };
        if wanted != self.cluster_id {
            self.log.set_cluster_id(wanted)?;
            self.cluster_id = wanted;
        }
        Ok(())
    }

    /// What the cluster layer needs to know, read from this peer's records.
    pub fn cluster_settings(&self) -> ClusterSettings {
        ClusterSettings::from_state(&self.state, self.peer_id(), self.cluster_id)
    }

    /// Joins `cluster`: the shared configuration held here is replaced by the cluster's (which
    /// then arrives by replication), this peer's own settings are kept, and the peer takes a
    /// new identity so its old shared history can never reach the cluster. The old database
    /// is kept beside the new one. Returns the path of that copy.
    pub fn join_cluster(&mut self, cluster: ClusterId, now_ms: u64) -> Result<PathBuf, StoreError> {
        // Two links may both decide to join; only the first replaces anything.
        if self.cluster_id.is_some() || !self.cluster_settings().is_clustered() {
            return Err(StoreError::AlreadyInCluster);
        }
        let kept = self.log.path().with_file_name(format!("baton-before-join-{now_ms}.db"));
        let mut fresh = EventLog::open_in_memory(PeerId(random_bytes()?))?;
        let mut clock = HybridClock::new(self.clock.last());
        let own_settings: Vec<NewEvent> = self
            .state
            .records()
            .filter(|record| record.kind().scope() == Scope::Local)
            .map(|record| {
                let encoded = Event::Saved(record.clone()).encode();
                NewEvent {
                    stream: Stream::Local,
                    hlc: clock.tick(now_ms),
                    actor: "system".to_owned(),
                    kind: encoded.kind,
                    version: encoded.version,
                    payload: encoded.payload,
                }
            })
            .collect();
        fresh.append(&own_settings)?;
        fresh.set_cluster_id(Some(cluster))?;
        fresh.append_journal(&eventlog::NewJournalEntry {
            at_ms: now_ms,
            level: eventlog::Level::Warning,
            kind: EntryKind::ClusterJoined.as_str().to_owned(),
            actor: None,
            message: format!(
                "joined cluster {cluster}: this peer's shared configuration is replaced by the \
                 cluster's; its own settings are kept; the previous database is kept at {}",
                kept.display()
            ),
        })?;
        projections::catch_up(fresh.connection_mut())?;
        self.replace_content(fresh, Replace::BesideReaders, &kept)?;
        Ok(kept)
    }

    /// Replaces this peer's whole database with the verified, staged one at `staged` (see
    /// `backup::stage_restore`), without a restart: the restored log is brought up to date
    /// (projections) and put in standalone mode if the backup was taken in a cluster, takes
    /// this peer's Event Log as it is (a restore never rewinds it), and `note` is added to it
    /// (it marks the restore as applied, see `crate::services::backups::recover`). Then the
    /// content is swapped in one step, so a crash leaves the old database or the new one, and
    /// the old one is kept beside it as `pre-restore-<now_ms>.db`. With [`Replace::Alone`]
    /// the staged file itself becomes the database. Returns the safety copy's path.
    pub fn restore_from(
        &mut self,
        staged: &Path,
        note: &eventlog::NewJournalEntry,
        now_ms: u64,
        replace: Replace,
    ) -> Result<PathBuf, StoreError> {
        if self.cluster_id.is_some() || self.cluster_settings().is_clustered() {
            return Err(StoreError::Clustered);
        }
        let kept = self.log.path().with_file_name(format!("pre-restore-{now_ms}.db"));
        // The staged file is discarded on any failure and made durable only once whole (see
        // `EventLog::replace_with`), so the projections and the snapshot derived from its
        // verified log are written without a journal or an fsync.
        let mut staged_log = EventLog::open(staged)?;
        staged_log.set_scratch(true)?;
        let (mut restored, _) = Store::from_log(staged_log)?;
        if restored.cluster_settings().is_clustered() {
            let standalone =
                model::record::Cluster { pre_shared_key: String::new(), peers: vec![] };
            restored.execute(
                "system",
                &Command::Save(model::Record::Cluster(standalone)),
                now_ms,
            )?;
        }
        // This peer's Event Log is its own: kept whole, plus the restore.
        restored.log.take_journal_of(&self.log)?;
        restored.log.append_journal(note)?;
        self.replace_content(restored.log, replace, &kept)?;
        Ok(kept)
    }

    /// Swaps this peer's database content for `source`'s in one step (see
    /// `EventLog::replace_with`), the old content kept at `kept`, and rebuilds the store from
    /// it. The state version moves on, so readers are handed the new state even when nothing
    /// had changed since start (a rebuilt store counts from zero). If the swapped content
    /// cannot be read back, the store is left unusable ([`Store::is_unusable`]): the writer
    /// stops, and a restart opens the new content.
    fn replace_content(
        &mut self,
        source: EventLog,
        replace: Replace,
        kept: &Path,
    ) -> Result<(), StoreError> {
        // The old file becomes the safety copy: what was committed unsynced goes to disk first.
        self.sync_unsynced_commits();
        if let Err(error) = self.log.replace_with(source, replace, kept) {
            self.unusable = self.log.lost_its_file();
            return Err(error.into());
        }
        let placeholder = EventLog::open_in_memory(self.peer_id())?;
        let log = std::mem::replace(&mut self.log, placeholder);
        // The new content is on the disk; a restart reads it again.
        let (mut store, _) = Store::from_log(log).inspect_err(|_| self.unusable = true)?;
        store.state_version = self.state_version + 1;
        *self = store;
        Ok(())
    }

    /// How many shared events this peer holds beyond `theirs` (a peer's summary of its heads).
    pub fn events_behind(&self, theirs: &std::collections::BTreeMap<PeerId, u64>) -> u64 {
        replication::shared_heads(&self.log)
            .into_iter()
            .map(|(origin, seq)| seq.saturating_sub(theirs.get(&origin).copied().unwrap_or(0)))
            .sum()
    }

    /// Who to replicate with: the peers whose greeting matched ours. Returns the summaries
    /// that start a newcomer's catch-up at once.
    pub fn set_replication_peers(&mut self, peers: Vec<PeerId>) -> Vec<Outbound> {
        // A new peer list ends a catch-up (its sender may be gone); the links' summaries start
        // another if one is needed. Otherwise idle snapshots would wait for a batch never sent.
        self.catching_up = false;
        sends(self.replicator.set_peers(peers, &self.log))
    }

    pub fn replication_tick(&mut self, now_ms: u64) -> Vec<Outbound> {
        sends(self.replicator.tick(now_ms, &self.log))
    }

    /// What starts a catch-up round with `peer` (see `Replicator::resync`).
    pub fn resync(&mut self, peer: PeerId) -> Vec<Outbound> {
        sends(self.replicator.resync(peer, &self.log))
    }

    /// Takes messages from peers in one group commit, like local commands: the events new
    /// here, their projection rows and any snapshot share one transaction, so a reader never
    /// sees the log ahead of the projections. A message refused (a gap, a fork, an unknown
    /// peer) is dropped alone; a failed commit drops them all (peers send again after their
    /// next summary). Summaries go to `ask` before the commit (see [`Store::write_replicated`]);
    /// returns the rest to send, once the group is committed.
    ///
    /// The commit does not wait for the disk: the events are durable on their origin, which
    /// acknowledged them, so here they show one fsync sooner. Call
    /// [`Store::sync_unsynced_commits`] soon after (the writer does once its queue is empty, and
    /// before a restore or a join); a synchronous commit in between syncs them too.
    pub fn replicate_group(
        &mut self,
        messages: Vec<(PeerId, replication::Message)>,
        ask: &mut dyn FnMut(Vec<Outbound>),
    ) -> Vec<Outbound> {
        let undo = self.undo_point();
        match self.write_replicated(messages, ask) {
            Ok(outputs) => sends(outputs),
            Err(error) => {
                tracing::error!(%error, "replicated events not saved; peers will send them again");
                self.roll_back_group(undo);
                Vec::new()
            }
        }
    }

    /// The replicated group's transaction; an `Err` leaves it open for the caller to roll back.
    fn write_replicated(
        &mut self,
        messages: Vec<(PeerId, replication::Message)>,
        ask: &mut dyn FnMut(Vec<Outbound>),
    ) -> Result<Vec<replication::Output>, StoreError> {
        self.log.begin_unsynced_group()?;
        let mut outputs = Vec::new();
        let mut applied_any = false;
        for (from, message) in messages {
            // Each message's appends are a savepoint: a refused one leaves the others.
            match self.replicator.receive(from, message, &mut self.log) {
                Ok(answer) => outputs.extend(answer),
                Err(error) => tracing::warn!(%error, peer = %from, "replication message refused"),
            }
        }
        // A summary only says how far this log is, which asks the peer for what follows: sent
        // before the commit, a catch-up's next batch is read and sent while this one is made
        // durable (a window of one batch). If the commit fails, that batch leaves a gap, and
        // the gap asks again from where the log really is: one round lost, never a hole.
        let (summaries, mut outputs): (Vec<_>, Vec<_>) = outputs.into_iter().partition(|output| {
            matches!(
                output,
                replication::Output::Send { message: replication::Message::Summary { .. }, .. }
            )
        });
        let asked_more = !summaries.is_empty();
        ask(sends(summaries));
        let mut appended = Appended::default();
        for output in &mut outputs {
            if let replication::Output::Applied { events } = output {
                appended.events.extend(self.fold(events)?);
                // Taken: applied outputs are not sent anywhere.
                appended.stored.append(events);
                applied_any = true;
            }
        }
        if applied_any {
            self.project_and_snapshot(&appended)?;
        }
        self.log.commit_group()?;
        self.unsynced_commits |= applied_any;
        self.catching_up = applied_any && asked_more;
        Ok(outputs)
    }

    /// Makes the replicated groups and idle snapshots committed since the last call durable
    /// (their fsync). A failure costs only this copy: it is logged, and the next commit syncs
    /// again. Returns whether an fsync was made.
    pub fn sync_unsynced_commits(&mut self) -> bool {
        if !std::mem::take(&mut self.unsynced_commits) {
            return false;
        }
        let synced = self.log.sync();
        if let Err(error) = &synced {
            tracing::error!(
                %error,
                "replicated events or a snapshot may not be durable here; peers hold the events"
            );
        }
        synced.is_ok()
    }

    /// Whether a failed replacement left this store without its database (see
    /// [`Store::restore_from`], [`Store::join_cluster`]): it must take no more changes.
    pub fn is_unusable(&self) -> bool {
        self.unusable
    }

    /// Whether a commit awaits [`Store::sync_unsynced_commits`].
    pub fn has_unsynced_commits(&self) -> bool {
        self.unsynced_commits
    }

    /// Two peers that could not see each other may both create a conference of one name, on
    /// different bridges. Last-writer-wins settles which one the cluster keeps, the same on
    /// every peer; this tells the operator it happened (the other copy is ended once empty).
    fn note_conference_race(&mut self, incoming: &Event, at_ms: u64) {
        let Event::Saved(model::Record::Conference(theirs)) = incoming else { return };
        let key =
            model::RecordKey { kind: model::RecordKind::Conference, name: theirs.name.clone() };
        let Some(model::Record::Conference(ours)) = self.state.get(&key) else { return };
        if ours.bridge == theirs.bridge {
            return;
        }
        let entry = eventlog::NewJournalEntry {
            at_ms,
            level: eventlog::Level::Warning,
            kind: EntryKind::ConferenceCreatedTwice.as_str().to_owned(),
            actor: None,
            message: format!(
                "conference {:?} was created on both {} and {} while peers could not reach each \
                 other; the cluster keeps the later one (last writer wins) and ends the other \
                 copy once it is empty",
                theirs.name, ours.bridge, theirs.bridge
            ),
        };
        if let Err(error) = self.log.append_journal(&entry) {
            tracing::error!(%error, "could not write to the Event Log");
        }
    }

    fn undo_point(&self) -> Undo {
        Undo {
            state: self.state.clone(),
            applied_position: self.applied_position,
            last_snapshot: self.last_snapshot,
            state_version: self.state_version,
        }
    }

    /// Undoes the open group, on disk and in memory.
    fn roll_back_group(&mut self, undo: Undo) {
        self.log.rollback_group();
        self.state = undo.state;
        self.applied_position = undo.applied_position;
        self.last_snapshot = undo.last_snapshot;
        self.state_version = undo.state_version;
    }

    /// What to push to peers after a local append.
    pub fn appended(&self, stored: &[StoredEvent]) -> Vec<Outbound> {
        sends(self.replicator.appended(stored))
    }

    /// Folds events appended from peers into the state; returns them decoded, in order.
    fn fold(&mut self, events: &[StoredEvent]) -> Result<Vec<Event>, StoreError> {
        let mut decoded = Vec::with_capacity(events.len());
        for stored in events {
            let event = Event::decode(&stored.kind, stored.version, &stored.payload)?;
            self.note_conference_race(&event, stored.hlc.wall_ms);
            self.clock.observe(stored.hlc);
            if stored.in_its_stream(&event) {
                self.state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
            }
            self.applied_position = self.applied_position.max(stored.position);
            decoded.push(event);
        }
        self.state_version += 1;
        Ok(decoded)
    }

    pub fn peer_id(&self) -> PeerId {
        self.log.peer_id()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    pub fn last_position(&self) -> u64 {
        self.log.last_position()
    }

    /// Decides `command`, appends its events durably, folds them into the state and the
    /// projections. On a rejection nothing is written. A group of one (see
    /// [`Store::execute_group`]).
    pub fn execute(
        &mut self,
        actor: &str,
        command: &Command,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let change = Change { actor: actor.to_owned(), command: command.clone(), now_ms };
        let mut results = self.execute_group(std::slice::from_ref(&change));
        results.pop().unwrap_or(Ok(Vec::new()))
    }

    /// Group commit: decides and appends `changes` (at most [`GROUP_COMMIT_COMMANDS_MAX`]) with
    /// their projection rows in one transaction and one fsync. Each change is decided against
    /// the state including the changes before it; a rejected change writes nothing and does not
    /// affect the others. If the transaction fails, every change fails with
    /// [`StoreError::CommitFailed`] and nothing of the group is stored or applied.
    pub fn execute_group(
        &mut self,
        changes: &[Change],
    ) -> Vec<Result<Vec<StoredEvent>, StoreError>> {
        self.execute_group_with(changes, Durability::AtCommit)
    }

    /// [`Store::execute_group`], durable as `durability` says.
    pub fn execute_group_with(
        &mut self,
        changes: &[Change],
        durability: Durability,
    ) -> Vec<Result<Vec<StoredEvent>, StoreError>> {
        let undo = self.undo_point();
        match self.write_group(changes, durability) {
            Ok((results, cluster_changed)) => {
                if cluster_changed && let Err(error) = self.reconcile_cluster_id() {
                    // The records are saved; the next write or start-up reconciles again.
                    tracing::error!(%error, "cluster identity not reconciled");
                }
                results
            }
            Err(error) => {
                self.roll_back_group(undo);
                let cause = error.to_string();
                changes.iter().map(|_| Err(StoreError::CommitFailed(cause.clone()))).collect()
            }
        }
    }

    /// The group's transaction; an `Err` leaves it open for the caller to roll back.
    fn write_group(
        &mut self,
        changes: &[Change],
        durability: Durability,
    ) -> Result<GroupOutcome, StoreError> {
        match durability {
            Durability::AtCommit => self.log.begin_group()?,
            Durability::Deferred => self.log.begin_unsynced_group()?,
        }
        let mut results = Vec::with_capacity(changes.len());
        let mut cluster_changed = false;
        let mut appended = Appended::default();
        for change in changes {
            match self.decide_and_append(change, &mut appended) {
                Ok((stored, touches_cluster)) => {
                    cluster_changed |= touches_cluster;
                    results.push(Ok(stored));
                }
                Err(StoreError::Rejected(rejection)) => {
                    results.push(Err(StoreError::Rejected(rejection)))
                }
                Err(error) => return Err(error),
            }
        }
        self.project_and_snapshot(&appended)?;
        self.log.commit_group()?;
        Ok((results, cluster_changed))
    }

    /// A group's projection rows and an overdue snapshot, in its open transaction. A projections
    /// failure rolls back only their savepoint: they catch up at the next write or start-up,
    /// and the group's events are still saved.
    fn project_and_snapshot(&mut self, appended: &Appended) -> Result<(), StoreError> {
        let conn = self.log.connection_mut();
        if let Err(error) = projections::catch_up_appended(conn, &appended.stored, &appended.events)
        {
            tracing::error!(%error, "projections did not catch up; they will retry");
        }
        self.snapshot_if_overdue()
    }

    /// Decides one change and appends its events (a savepoint in the open group), folding
    /// them into the state so the next change of the group is decided against them. Also
    /// says whether the change touched the cluster record.
    fn decide_and_append(
        &mut self,
        change: &Change,
        appended: &mut Appended,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let events = self.state.decide(&change.command)?;
        if events.is_empty() {
            return Ok((Vec::new(), false));
        }
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                let encoded = event.encode();
                NewEvent {
                    stream: Stream::of(event.scope()),
                    hlc: self.clock.tick(change.now_ms),
                    actor: change.actor.clone(),
                    kind: encoded.kind,
                    version: encoded.version,
                    payload: encoded.payload,
                }
            })
            .collect();
        let stored = self.log.append(&new_events)?;
        for (event, stored) in events.iter().zip(&stored) {
            self.state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, event);
            self.applied_position = stored.position;
        }
        self.state_version += 1;
        let cluster_changed = events.iter().any(|event| match event {
            Event::Saved(record) => record.kind() == model::RecordKind::Cluster,
            Event::Removed(key) => key.kind == model::RecordKind::Cluster,
        });
        appended.stored.extend_from_slice(&stored);
        appended.events.extend(events);
        Ok((stored, cluster_changed))
    }

    /// Group commits made since the store was opened (for tests and the benchmark).
    pub fn group_commits(&self) -> u64 {
        self.log.group_commits()
    }

    /// A snapshot encodes every record, so one per fixed count of events made a growing
    /// state's writes quadratic: a catch-up of 60,000 new records spent a fifth of its writer's
    /// time encoding snapshots. Spaced by the last snapshot's size too, snapshots cost a
    /// bounded number of records per event applied (a state that only grows doubles between
    /// two), and start-up replays at most as many events as the snapshot it loads holds
    /// records (or `SNAPSHOT_INTERVAL_EVENTS`), times [`SNAPSHOT_OVERDUE_FACTOR`] under a load
    /// that never lets the writer idle. Writes the snapshot if it is due; see
    /// [`Store::snapshot_when_idle`].
    fn snapshot_if_due(&mut self) -> Result<(), StoreError> {
        if self.events_since_snapshot() >= self.snapshot_spacing() {
            self.save_snapshot()?;
        }
        Ok(())
    }

    /// For a group: the snapshot waits for the writer to idle unless it is overdue.
    fn snapshot_if_overdue(&mut self) -> Result<(), StoreError> {
        if self.events_since_snapshot() >= SNAPSHOT_OVERDUE_FACTOR * self.snapshot_spacing() {
            self.save_snapshot()?;
        }
        Ok(())
    }

    /// Writes a due snapshot, in its own transaction, unless a catch-up is under way. The
    /// writer calls it when its queue runs dry: encoding and saving a large state took 41% of
    /// a catch-up's writer time when it fell due inside a group, delaying every change behind
    /// it. Its commit does not wait for the disk (a snapshot only shortens start-up), the next
    /// sync or synchronous commit covers it. A failure costs only the snapshot: it is logged.
    pub fn snapshot_when_idle(&mut self) {
        if self.catching_up || self.events_since_snapshot() < self.snapshot_spacing() {
            return;
        }
        let last_snapshot = self.last_snapshot;
        let saved = self.log.begin_unsynced_group().map_err(StoreError::from).and_then(|()| {
            self.save_snapshot()?;
            Ok(self.log.commit_group()?)
        });
        match saved {
            Ok(()) => self.unsynced_commits = true,
            Err(error) => {
                self.log.rollback_group();
                self.last_snapshot = last_snapshot;
                tracing::error!(%error, "the state's snapshot was not saved; start-up replays more");
            }
        }
    }

    fn snapshot_spacing(&self) -> u64 {
        SNAPSHOT_INTERVAL_EVENTS.max(self.last_snapshot.records)
    }

    fn events_since_snapshot(&self) -> u64 {
        self.applied_position.saturating_sub(self.last_snapshot.position)
    }

    fn save_snapshot(&mut self) -> Result<(), StoreError> {
        self.log.save_snapshot(
            self.applied_position,
            model::SNAPSHOT_FORMAT,
            &self.state.to_snapshot(),
        )?;
        self.last_snapshot = LastSnapshot {
            position: self.applied_position,
            records: self.state.slot_count() as u64,
        };
        Ok(())
    }

    pub fn journal(&mut self, entry: &eventlog::NewJournalEntry) -> Result<u64, StoreError> {
        Ok(self.log.append_journal(entry)?)
    }
}

/// See [`WriterThread::send`].
fn send(outbound: &mpsc::Sender<Outbound>, lost_pushes: &LostPushes, messages: Vec<Outbound>) {
    for message in messages {
        if let Err(mpsc::error::TrySendError::Full((peer, _))) = outbound.try_send(message) {
            crate::base::sync::lock(lost_pushes).insert(peer);
        }
    }
}

fn sends(outputs: Vec<replication::Output>) -> Vec<Outbound> {
    outputs
        .into_iter()
        .filter_map(|output| match output {
            replication::Output::Send { to, message } => Some((to, message)),
            replication::Output::Applied { .. } => None,
        })
        .collect()
}

fn random_bytes() -> Result<[u8; 16], StoreError> {
    crate::base::random::bytes().map_err(|error| StoreError::Random(error.to_string()))
}

enum Request {
    Execute {
        actor: String,
        command: Command,
        now_ms: u64,
        reply: oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
    },
    Journal {
        entry: eventlog::NewJournalEntry,
    },
    State {
        reply: oneshot::Sender<State>,
    },
    Replicate {
        from: PeerId,
        message: replication::Message,
    },
    ReplicationTick {
        now_ms: u64,
    },
    Resync {
        peer: PeerId,
    },
    ReplicationPeers {
        peers: Vec<PeerId>,
    },
    JoinCluster {
        cluster: ClusterId,
        now_ms: u64,
        reply: oneshot::Sender<Result<PathBuf, StoreError>>,
    },
    Restore {
        staged: PathBuf,
        note: eventlog::NewJournalEntry,
        now_ms: u64,
        /// The readers, paused until the restore is done; `None`: they may be reading.
        readers_paused: Option<Paused>,
        reply: oneshot::Sender<Result<PathBuf, StoreError>>,
    },
    /// Serve nothing after this (shutdown).
    Stop,
}

/// The events a group appended, as stored and decoded, for the projections.
#[derive(Default)]
struct Appended {
    stored: Vec<StoredEvent>,
    events: Vec<Event>,
}

/// A change waiting in the writer for its group's commit.
struct PendingChange {
    change: Change,
    reply: oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
}

/// Takes the changes already queued behind `first` (up to [`GROUP_COMMIT_COMMANDS_MAX`]) for
/// one group commit: the ones that arrived while the writer was busy. Stops at the first other
/// request, returned to be served after the group, so requests keep their order.
fn gather_group(
    first: PendingChange,
    requests: &mut mpsc::Receiver<Request>,
) -> (Vec<PendingChange>, Option<Request>) {
    let mut group = vec![first];
    while group.len() < GROUP_COMMIT_COMMANDS_MAX {
        match requests.try_recv() {
            Ok(Request::Execute { actor, command, now_ms, reply }) => {
                group.push(PendingChange { change: Change { actor, command, now_ms }, reply });
            }
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

/// Takes the peers' messages already queued behind `first` (up to
/// [`GROUP_COMMIT_COMMANDS_MAX`]) for one group commit, as [`gather_group`] does for commands.
fn gather_replicated(
    first: (PeerId, replication::Message),
    requests: &mut mpsc::Receiver<Request>,
) -> (Vec<(PeerId, replication::Message)>, Option<Request>) {
    let mut group = vec![first];
    while group.len() < GROUP_COMMIT_COMMANDS_MAX {
        match requests.try_recv() {
            Ok(Request::Replicate { from, message }) => group.push((from, message)),
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

/// The writer thread: owns the store, serves requests one at a time, publishes the state and
/// the cluster settings after each.
struct WriterThread {
    store: Store,
    outbound: mpsc::Sender<Outbound>,
    settings_tx: watch::Sender<ClusterSettings>,
    state_tx: watch::Sender<Arc<State>>,
    published_version: u64,
    /// Shared with [`Writer::group_commits`].
    group_commits: Arc<AtomicU64>,
    /// Shared with [`Writer::replication_lag`].
    lag: Arc<std::sync::Mutex<ReplicationLag>>,
    /// Shared with [`Writer::take_lost_pushes`].
    lost_pushes: LostPushes,
    /// Shared with [`Writer::syncs`].
    syncs: Arc<AtomicU64>,
    pacing: SyncPacing,
    /// Makes local groups durable, then answers them and pushes their events.
    syncer: syncer::Syncer,
    /// Set once the store is unusable; shared with [`Writer::stopped`].
    unusable: Arc<AtomicBool>,
}

/// Why a writer takes no more changes, if it must: its syncer's fsync failed, or its store
/// holds a database that could not be read back.
fn stop_reason(fsync_failed: bool, unusable: bool) -> Option<&'static str> {
    if fsync_failed {
        Some("an fsync of the event log failed, so committed changes may not be on the disk")
    } else if unusable {
        Some("the database was replaced but could not be read back")
    } else {
        None
    }
}

impl Drop for WriterThread {
    /// The syncer finishes before the store closes: closing the last connection removes the
    /// write-ahead file it syncs, and what it still held would be answered "not durable".
    fn drop(&mut self) {
        self.syncer.wait_released();
    }
}

/// Peer → shared events this peer holds that the peer did not, as of its last summary.
pub type ReplicationLag = std::collections::BTreeMap<PeerId, u64>;

impl WriterThread {
    /// Peers' messages in one group commit; a summary also tells how far behind its peer is.
    fn replicate(&mut self, group: Vec<(PeerId, replication::Message)>) {
        // An answer may carry this peer's own events from the log: only durable ones may leave
        // (after a failed fsync none is answered; the writer stops at its next request).
        if !self.syncer.wait_released() {
            return;
        }
        for (from, message) in &group {
            if let replication::Message::Summary { heads } = message {
                let behind = self.store.events_behind(heads);
                crate::base::sync::lock(&self.lag).insert(*from, behind);
            }
        }
        let (outbound, lost_pushes) = (&self.outbound, &self.lost_pushes);
        let messages =
            self.store.replicate_group(group, &mut |asks| send(outbound, lost_pushes, asks));
        self.send(messages);
        // Shown now; made durable once nothing is queued (see `next_request`).
        self.publish();
    }

    /// The request to serve next. Replicated groups are fsynced when the queue runs dry, and
    /// no sooner than [`REPLICATED_SYNC_INTERVAL_MS`] after the last fsync (`sync_pacing`):
    /// under a stream of pushes, one fsync covers every group committed meanwhile (a local
    /// command's commit, synchronous, covers them too). A due snapshot is written then too,
    /// behind every change already answered.
    fn next_request(&mut self, requests: &mut mpsc::Receiver<Request>) -> Option<Request> {
        if let Ok(request) = requests.try_recv() {
            return Some(request);
        }
        if self.store.has_unsynced_commits()
            && let Some(hold) = self.pacing.hold(Instant::now())
            && let Some(request) = self.pacing.next_within(requests, hold)
        {
            return request;
        }
        self.sync_unsynced_commits();
        self.store.snapshot_when_idle();
        requests.blocking_recv()
    }

    /// Why the writer must take no more changes, if it must.
    fn reason_to_stop(&self) -> Option<&'static str> {
        stop_reason(self.syncer.has_failed(), self.store.is_unusable())
    }

    /// Whether the writer must stop (see [`Writer::stopped`]); if so, says why.
    fn must_stop(&self) -> bool {
        let Some(reason) = self.reason_to_stop() else { return false };
        self.unusable.store(self.store.is_unusable(), Ordering::Release);
        // A restart reads back what the disk holds.
        tracing::error!("the writer stops: {reason}; restart batond");
        true
    }

    fn sync_unsynced_commits(&mut self) {
        if self.store.sync_unsynced_commits() {
            self.pacing.synced(Instant::now());
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut next = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match self.next_request(&mut requests) {
                    Some(request) => request,
                    None => return self.sync_unsynced_commits(),
                },
            };
            if self.must_stop() {
                return;
            }
            match request {
                Request::Stop => return self.sync_unsynced_commits(),
                Request::Execute { actor, command, now_ms, reply } => {
                    let first = PendingChange { change: Change { actor, command, now_ms }, reply };
                    let (group, after) = gather_group(first, &mut requests);
                    self.serve_group(group);
                    next = after;
                }
                Request::Replicate { from, message } => {
                    let (group, after) = gather_replicated((from, message), &mut requests);
                    self.replicate(group);
                    next = after;
                }
                other => self.serve(other),
            }
            self.publish();
            // Said at once (an alarm, the health probe), not at the next request.
            if self.must_stop() {
                return;
            }
        }
    }

    /// Hands readers the state and the cluster settings, if they changed.
    fn publish(&mut self) {
        let latest = self.store.cluster_settings();
        self.settings_tx.send_if_modified(|current| {
            let changed = *current != latest;
            *current = latest;
            changed
        });
        self.publish_state();
    }

    /// Saves a group of changes in one commit and has the syncer answer each once it is
    /// durable; the next group is written meanwhile.
    fn serve_group(&mut self, group: Vec<PendingChange>) {
        let (changes, replies): (Vec<Change>, Vec<_>) =
            group.into_iter().map(|pending| (pending.change, pending.reply)).unzip();
        let results = self.store.execute_group_with(&changes, Durability::Deferred);
        self.group_commits.store(self.store.group_commits(), Ordering::Relaxed);
        let mut failure_noted = false;
        let mut appended = Vec::new();
        for (change, result) in changes.iter().zip(&results) {
            match result {
                Ok(stored) => appended.extend_from_slice(stored),
                Err(StoreError::Rejected(_)) => {}
                // One Event Log entry per failed group: its changes share the cause.
                Err(error) if !failure_noted => {
                    failure_noted = true;
                    self.note_write_failure(change, error);
                }
                Err(_) => {}
            }
        }
        // The group's events leave together: one message per peer, not one per command.
        let pushes = self.store.appended(&appended);
        // Readers of the state (the policy service) and of the cluster settings see a change
        // before its author is told it is saved (and, by one fsync, before it is durable).
        self.publish();
        let replies = replies.into_iter().zip(results).collect();
        let wrote = !appended.is_empty();
        self.syncer.hand_over(syncer::UnsyncedGroup { replies, pushes, wrote });
    }

    /// Infrastructure failures go to the operator's Event Log too.
    fn note_write_failure(&mut self, change: &Change, error: &StoreError) {
        let actor = &change.actor;
        tracing::error!(%error, %actor, "configuration change failed");
        let message = format!("a configuration change could not be saved: {error}");
        let entry = crate::base::journal::entry_at(
            change.now_ms,
            eventlog::Level::Error,
            EntryKind::ConfigWriteFailed,
            Some(actor),
            message,
        );
        let _ = self.store.journal(&entry);
    }

    /// Never blocks on the network: a message that finds the outbound queue full is dropped,
    /// and its peer noted, to be caught up from the log as soon as the router has room.
    fn send(&self, messages: Vec<Outbound>) {
        send(&self.outbound, &self.lost_pushes, messages);
    }

    /// Hands readers the state if it changed since it was last published (cheap: the state's
    /// map is persistent).
    fn publish_state(&mut self) {
        if self.store.state_version() != self.published_version {
            self.published_version = self.store.state_version();
            self.state_tx.send_replace(Arc::new(self.store.state().clone()));
        }
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Execute { actor, command, now_ms, reply } => {
                let pending = PendingChange { change: Change { actor, command, now_ms }, reply };
                self.serve_group(vec![pending]);
            }
            Request::Journal { entry } => {
                if let Err(error) = self.store.journal(&entry) {
                    tracing::error!(%error, kind = %entry.kind, "could not write to the Event Log");
                }
            }
            Request::State { reply } => {
                let _ = reply.send(self.store.state().clone());
            }
            Request::Replicate { from, message } => {
                self.replicate(vec![(from, message)]);
            }
            Request::ReplicationTick { now_ms } => {
                let messages = self.store.replication_tick(now_ms);
                self.send(messages);
            }
            Request::Resync { peer } => {
                let messages = self.store.resync(peer);
                self.send(messages);
            }
            Request::ReplicationPeers { peers } => {
                // A peer no longer replicated with has no lag to report (and the map stays
                // bounded by the peer list).
                crate::base::sync::lock(&self.lag).retain(|peer, _| peers.contains(peer));
                let summaries = self.store.set_replication_peers(peers);
                self.send(summaries);
            }
            Request::JoinCluster { cluster, now_ms, reply } => {
                if !self.syncer.wait_released() {
                    let _ = reply.send(Err(StoreError::WriterGone));
                    return;
                }
                let joined = self.store.join_cluster(cluster, now_ms);
                self.publish_state();
                let _ = reply.send(joined);
            }
            Request::Restore { staged, note, now_ms, readers_paused, reply } => {
                if !self.syncer.wait_released() {
                    let _ = reply.send(Err(StoreError::WriterGone));
                    return;
                }
                let replace =
                    if readers_paused.is_some() { Replace::Alone } else { Replace::BesideReaders };
                let restored = self.store.restore_from(&staged, &note, now_ms, replace);
                drop(readers_paused);
                self.publish_state();
                let _ = reply.send(restored);
            }
            Request::Stop => {}
        }
    }
}

/// Handle to the writer thread. Cloning is cheap; the thread stops at [`Writer::stop`] or when
/// every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Request>,
    settings: watch::Receiver<ClusterSettings>,
    state: watch::Receiver<Arc<State>>,
    group_commits: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    lag: Arc<std::sync::Mutex<ReplicationLag>>,
    lost_pushes: LostPushes,
    /// The syncer's: set the moment an fsync fails, before the writer notices.
    fsync_failed: Arc<AtomicBool>,
    /// The writer thread's, once it stopped on an unusable store.
    unusable: Arc<AtomicBool>,
}

/// Peers a replication message was dropped for, the outbound queue being full: the router
/// takes them ([`Writer::take_lost_pushes`]) and has them caught up.
type LostPushes = Arc<std::sync::Mutex<BTreeSet<PeerId>>>;

impl Writer {
    /// Each peer's replication lag as of its last summary (about once a second while linked).
    pub fn replication_lag(&self) -> ReplicationLag {
        crate::base::sync::lock(&self.lag).clone()
    }

    /// Group commits (transactions, so fsyncs, holding changes) the writer made so far.
    pub fn group_commits(&self) -> u64 {
        self.group_commits.load(Ordering::Relaxed)
    }

    /// The fsyncs that made replicated groups (and idle snapshots) durable after their commit
    /// (see `sync_pacing`).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Peers that lost replication messages to a full outbound queue since the last call; the
    /// caller (the router) has them caught up with [`Writer::resync`].
    pub fn take_lost_pushes(&self) -> BTreeSet<PeerId> {
        std::mem::take(&mut *crate::base::sync::lock(&self.lost_pushes))
    }

    /// Starts the writer thread over an opened store. Replication messages for peers go to
    /// `outbound` (when it is full, the peer is noted in [`Writer::take_lost_pushes`]). The returned
    /// join handle finishes after [`Writer::stop`] (or once every `Writer` clone has been
    /// dropped), when the requests queued before have been served.
    pub fn spawn(
        store: Store,
        outbound: mpsc::Sender<Outbound>,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (queue, requests) = mpsc::channel(WRITER_QUEUE_MAX);
        let (settings_tx, settings) = watch::channel(store.cluster_settings());
        let (state_tx, state) = watch::channel(Arc::new(store.state().clone()));
        let group_commits = Arc::new(AtomicU64::new(store.group_commits()));
        let commits = Arc::clone(&group_commits);
        let lag = Arc::new(std::sync::Mutex::new(ReplicationLag::new()));
        let thread_lag = Arc::clone(&lag);
        let lost_pushes = LostPushes::default();
        let thread_lost = Arc::clone(&lost_pushes);
        let syncs = Arc::new(AtomicU64::new(0));
        let thread_syncs = Arc::clone(&syncs);
        let pacing = SyncPacing::new()?;
        let wal = store.log.wal_sync();
        let (pushes_out, pushes_lost) = (outbound.clone(), Arc::clone(&lost_pushes));
        let syncer = syncer::Syncer::spawn(
            Box::new(move || wal.sync()),
            Box::new(move |messages| send(&pushes_out, &pushes_lost, messages)),
        )?;
        let fsync_failed = syncer.failure_flag();
        let unusable = Arc::new(AtomicBool::new(false));
        let thread_unusable = Arc::clone(&unusable);
        let thread =
            std::thread::Builder::new().name("baton-writer".to_owned()).spawn(move || {
                let published_version = store.state_version();
                WriterThread {
                    store,
                    outbound,
                    settings_tx,
                    state_tx,
                    published_version,
                    group_commits: commits,
                    lag: thread_lag,
                    lost_pushes: thread_lost,
                    syncs: thread_syncs,
                    pacing,
                    syncer,
                    unusable: thread_unusable,
                }
                .run(requests)
            })?;
        let writer = Writer {
            queue,
            settings,
            state,
            group_commits,
            syncs,
            lag,
            lost_pushes,
            fsync_failed,
            unusable,
        };
        Ok((writer, thread))
    }

    /// Why this peer's writer takes no more changes, if it stopped on its own: an fsync
    /// failed, or a replaced database could not be read back. Only a restart resumes (it
    /// reads back what the disk holds). `None` while it works, and after an orderly stop.
    pub fn stopped(&self) -> Option<String> {
        let fsync_failed = self.fsync_failed.load(Ordering::Acquire);
        stop_reason(fsync_failed, self.unusable.load(Ordering::Acquire)).map(str::to_owned)
    }

    /// Stops the writer thread once the requests queued before this one are served; later
    /// requests fail with [`StoreError::WriterGone`].
    pub async fn stop(&self) {
        let _ = self.queue.send(Request::Stop).await;
    }

    /// This peer's identity (it changes when the peer joins a cluster).
    pub fn peer_id(&self) -> PeerId {
        self.settings.borrow().peer_id
    }

    /// The state as of the writer's last change, shared without copying: what the policy
    /// service decides on.
    pub fn state_watch(&self) -> watch::Receiver<Arc<State>> {
        self.state.clone()
    }

    /// The state as of the writer's last change, which a change reaches before its author is
    /// answered: what requests read records and accounts from.
    pub fn published_state(&self) -> Arc<State> {
        self.state.borrow().clone()
    }

    /// The cluster settings, updated after every change the writer makes.
    pub fn cluster_settings(&self) -> watch::Receiver<ClusterSettings> {
        self.settings.clone()
    }

    /// Hands a peer's message to the writer, waiting when its queue is full (back-pressure on
    /// the peer's connection).
    pub async fn replicate(
        &self,
        from: PeerId,
        message: replication::Message,
    ) -> Result<(), StoreError> {
        self.queue
            .send(Request::Replicate { from, message })
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Starts a catch-up round with `peer` at once (its pushes were dropped on the way).
    pub async fn resync(&self, peer: PeerId) -> Result<(), StoreError> {
        self.queue.send(Request::Resync { peer }).await.map_err(|_| StoreError::WriterGone)
    }

    /// Best effort: a tick lost to a full queue is followed by another.
    pub fn replication_tick(&self, now_ms: u64) {
        let _ = self.queue.try_send(Request::ReplicationTick { now_ms });
    }

    pub async fn set_replication_peers(&self, peers: Vec<PeerId>) -> Result<(), StoreError> {
        self.queue
            .send(Request::ReplicationPeers { peers })
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    pub async fn join_cluster(
        &self,
        cluster: ClusterId,
        now_ms: u64,
    ) -> Result<PathBuf, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::JoinCluster { cluster, now_ms, reply };
        self.queue.send(request).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// See [`Store::restore_from`]; returns the safety copy's path. With `readers_paused`,
    /// the staged file becomes the database and nothing is copied (see [`Replace::Alone`]).
    pub async fn restore(
        &self,
        staged: PathBuf,
        note: eventlog::NewJournalEntry,
        now_ms: u64,
        readers_paused: Option<Paused>,
    ) -> Result<PathBuf, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Restore { staged, note, now_ms, readers_paused, reply };
        self.queue.send(request).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn execute(
        &self,
        actor: &str,
        command: Command,
        now_ms: u64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Execute { actor: actor.to_owned(), command, now_ms, reply };
        self.queue.send(request).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Records a system event in this peer's Event Log. Best effort: a full queue or a stopped
    /// writer loses the entry (and says so in the process log) rather than blocking a request.
    pub fn journal(&self, entry: eventlog::NewJournalEntry) {
        if let Err(error) = self.queue.try_send(Request::Journal { entry }) {
            tracing::warn!(%error, "Event Log entry dropped");
        }
    }

    /// A copy of the current state, as the writer sees it.
    pub async fn state(&self) -> Result<State, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Request::State { reply }).await.map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)
    }
}

/// Folds the events after `after_position` that `keep` accepts into `state`, in batches.
/// Returns the last position read and how many events were folded.
pub(crate) fn fold_log<E>(
    conn: &Connection,
    state: &mut State,
    after_position: u64,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Result<(u64, u64), E>
where
    E: From<eventlog::Error> + From<model::DecodeError>,
{
    let (mut position, mut folded) = (after_position, 0);
    loop {
        let batch = eventlog::read_after(conn, position, projections::CATCH_UP_BATCH_EVENTS)?;
        let Some(last) = batch.last() else { return Ok((position, folded)) };
        position = last.position;
        for stored in batch.iter().filter(|stored| keep(stored)) {
            let event = Event::decode(&stored.kind, stored.version, &stored.payload)?;
            if stored.in_its_stream(&event) {
                state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
            }
            folded += 1;
        }
    }
}

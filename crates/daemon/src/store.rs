//! The write side: one thread owns the event log's write connection, decides commands against
//! the in-memory state, appends the resulting events durably, and brings the projections up to
//! date before it answers, so a client that got "saved" reads its own write.
//!
//! SQLite access never happens on the async runtime: writes go through a bounded queue to the
//! writer thread, reads run on the blocking pool with connections from [`Readers`].

use eventlog::{EventLog, NewEvent, Stream};
use model::{Command, Event, HybridClock, PeerId, Rejection, Scope, Stamp, State};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the writer; callers wait (back-pressure) when it is full.
pub const WRITER_QUEUE_MAX: usize = 256;
/// A snapshot of the state is written after this many events, so start-up replays at most
/// this many events whatever the length of the history.
pub const SNAPSHOT_INTERVAL_EVENTS: u64 = 10_000;
/// Idle read connections kept open.
pub const READERS_IDLE_MAX: usize = 8;
/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "baton.db";

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
    #[error("the writer has stopped")]
    WriterGone,
}

/// The log, the state folded from it, and the clock that stamps new events.
pub struct Store {
    log: EventLog,
    state: State,
    clock: HybridClock,
    applied_position: u64,
    snapshot_position: u64,
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
        let mut log = EventLog::open(path)?;
        let mut report = OpenReport::default();
        let mut state = State::default();
        let mut position = 0;
        if let Some(snapshot) = log.latest_snapshot()? {
            // A snapshot in an older format is simply not used: replaying the log is always
            // correct, only slower.
            if snapshot.format == model::SNAPSHOT_FORMAT && snapshot.position <= log.last_position()
            {
                state = State::from_snapshot(&snapshot.blob)?;
                position = snapshot.position;
                report.snapshot_position = position;
            }
        }
        let (last_position, replayed) =
            fold_log::<StoreError>(log.connection(), &mut state, position, |_| true)?;
        position = last_position;
        report.events_replayed = replayed;
        report.projection_events_applied = projections::catch_up(log.connection_mut())?;
        let clock = HybridClock::new(log.max_hlc()?);
        let mut store = Store {
            log,
            state,
            clock,
            applied_position: position,
            snapshot_position: report.snapshot_position,
        };
        store.snapshot_if_due()?;
        Ok((store, report))
    }

    pub fn peer_id(&self) -> PeerId {
        self.log.peer_id()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn last_position(&self) -> u64 {
        self.log.last_position()
    }

    /// Decides `command`, appends its events in one durable transaction, folds them into the
    /// state and the projections. On a rejection nothing is written.
    pub fn execute(
        &mut self,
        actor: &str,
        command: &Command,
        now_ms: u64,
    ) -> Result<Vec<eventlog::StoredEvent>, StoreError> {
        let events = self.state.decide(command)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                let encoded = event.encode();
                NewEvent {
                    stream: match event.scope() {
                        Scope::Shared => Stream::Shared,
                        Scope::Local => Stream::Local,
                    },
                    hlc: self.clock.tick(now_ms),
                    actor: actor.to_owned(),
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
        // The events are durable: if this fails the projections catch up at the next write
        // or start-up, so the client is still told the change was saved.
        if let Err(error) = projections::catch_up(self.log.connection_mut()) {
            tracing::error!(%error, "projections did not catch up; they will retry");
        }
        self.snapshot_if_due()?;
        Ok(stored)
    }

    fn snapshot_if_due(&mut self) -> Result<(), StoreError> {
        if self.applied_position >= self.snapshot_position + SNAPSHOT_INTERVAL_EVENTS {
            self.log.save_snapshot(
                self.applied_position,
                model::SNAPSHOT_FORMAT,
                &self.state.to_snapshot(),
            )?;
            self.snapshot_position = self.applied_position;
        }
        Ok(())
    }

    pub fn journal(&mut self, entry: &eventlog::NewJournalEntry) -> Result<u64, StoreError> {
        Ok(self.log.append_journal(entry)?)
    }
}

enum Request {
    Execute {
        actor: String,
        command: Command,
        now_ms: u64,
        reply: oneshot::Sender<Result<Vec<eventlog::StoredEvent>, StoreError>>,
    },
    Journal {
        entry: eventlog::NewJournalEntry,
    },
    State {
        reply: oneshot::Sender<State>,
    },
}

/// Handle to the writer thread. Cloning is cheap; the thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Request>,
    pub peer_id: PeerId,
}

impl Writer {
    /// Starts the writer thread over an opened store. The returned join handle finishes once
    /// every `Writer` clone has been dropped and the queue is drained.
    pub fn spawn(store: Store) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (queue, mut requests) = mpsc::channel(WRITER_QUEUE_MAX);
        let peer_id = store.peer_id();
        let thread = std::thread::Builder::new().name("baton-writer".to_owned()).spawn(move || {
            let mut store = store;
            while let Some(request) = requests.blocking_recv() {
                match request {
                    Request::Execute { actor, command, now_ms, reply } => {
                        let result = store.execute(&actor, &command, now_ms);
                        if let Err(error) = &result
                            && !matches!(error, StoreError::Rejected(_))
                        {
                            // Infrastructure failures go to the operator's Event Log too.
                            tracing::error!(%error, %actor, "configuration change failed");
                            let entry = eventlog::NewJournalEntry {
                                at_ms: now_ms,
                                level: eventlog::Level::Error,
                                kind: "config.write_failed".to_owned(),
                                actor: Some(actor.clone()),
                                message: format!("a configuration change could not be saved: {error}"),
                            };
                            let _ = store.journal(&entry);
                        }
                        let _ = reply.send(result);
                    }
                    Request::Journal { entry } => {
                        if let Err(error) = store.journal(&entry) {
                            tracing::error!(%error, kind = %entry.kind, "could not write to the Event Log");
                        }
                    }
                    Request::State { reply } => {
                        let _ = reply.send(store.state().clone());
                    }
                }
            }
        })?;
        Ok((Writer { queue, peer_id }, thread))
    }

    pub async fn execute(
        &self,
        actor: &str,
        command: Command,
        now_ms: u64,
    ) -> Result<Vec<eventlog::StoredEvent>, StoreError> {
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

/// Read-only connections to the database for the API, used on the blocking thread pool.
#[derive(Clone)]
pub struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Projection(#[from] projections::Error),
    #[error(transparent)]
    EventLog(#[from] eventlog::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Decode(#[from] model::DecodeError),
    #[error("read task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Readers {
    pub fn new(path: PathBuf) -> Readers {
        Readers { path, idle: Arc::new(Mutex::new(Vec::new())) }
    }

    pub async fn read<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => eventlog::open_reader(&readers.path)?,
            };
            let result = read(&conn);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < READERS_IDLE_MAX
            {
                idle.push(conn);
            }
            result
        })
        .await?
    }
}

/// The configuration as it was at `at_ms` (wall-clock milliseconds of the events' HLC):
/// every event stamped at or before that instant, folded by the usual rule.
pub fn state_at(conn: &Connection, at_ms: u64) -> Result<State, ReadError> {
    let mut state = State::default();
    fold_log::<ReadError>(conn, &mut state, 0, |stored| stored.hlc.wall_ms <= at_ms)?;
    Ok(state)
}

/// Folds the events after `after_position` that `keep` accepts into `state`, in batches.
/// Returns the last position read and how many events were folded.
fn fold_log<E>(
    conn: &Connection,
    state: &mut State,
    after_position: u64,
    keep: impl Fn(&eventlog::StoredEvent) -> bool,
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
            state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
            folded += 1;
        }
    }
}

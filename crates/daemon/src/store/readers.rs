//! The read side: read-only connections to the database, used on the blocking thread pool, and
//! the configuration as it was at an instant.

use super::{READERS_IDLE_MAX, fold_log};
use model::State;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

/// Read-only connections to the database for the API, used on the blocking thread pool.
#[derive(Clone)]
pub struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    /// Held shared by each read while it uses its connection; held alone by [`Paused`].
    gate: Arc<RwLock<()>>,
}

/// No read runs and no connection of [`Readers`] is open while this lives (see
/// [`Readers::pause`]); reads asked meanwhile wait for it to be dropped.
pub struct Paused {
    _gate: OwnedRwLockWriteGuard<()>,
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
        Readers { path, idle: Arc::default(), gate: Arc::default() }
    }

    /// Waits for the reads in flight to end (at most `wait_ms`; `None` past it), then closes
    /// every idle connection and holds new reads back until the returned [`Paused`] is
    /// dropped: so the writer can have the database file to itself for a moment.
    pub async fn pause(&self, wait_ms: u64) -> Option<Paused> {
        let wait = Duration::from_millis(wait_ms);
        let gate = tokio::time::timeout(wait, self.gate.clone().write_owned()).await.ok()?;
        self.idle.lock().map(|mut idle| idle.clear()).ok()?;
        Some(Paused { _gate: gate })
    }

    pub async fn read<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        let readers = self.clone();
        let open = self.gate.clone().read_owned().await;
        tokio::task::spawn_blocking(move || {
            let _open = open;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{DATABASE_FILE, Store};

    fn position(conn: &Connection) -> Result<u64, ReadError> {
        Ok(conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?)
    }

    // Goal: a pause waits for the reads in flight, leaves no connection of the readers open
    // (the writer may then leave WAL, which SQLite refuses beside another connection), holds
    // the reads asked meanwhile back until it ends, and gives up past its wait.
    #[tokio::test]
    async fn a_pause_closes_the_readers_and_holds_new_reads_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let (store, _) = Store::open(&path).unwrap();
        let readers = Readers::new(path.clone());
        readers.read(position).await.unwrap();
        let writer = store.log.connection();
        let leave_wal = || {
            writer.busy_timeout(Duration::ZERO).unwrap();
            let mode = writer.pragma_update_and_check(None, "journal_mode", "DELETE", |row| {
                row.get::<_, String>(0)
            });
            mode.is_ok_and(|mode| mode == "delete")
        };
        assert!(!leave_wal(), "a pooled reader holds the file");

        let paused = readers.pause(1_000).await.expect("no read in flight");
        assert!(leave_wal(), "no reader left open");
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        let held = tokio::spawn({
            let readers = readers.clone();
            async move { readers.read(position).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "a read waits while paused");
        drop(paused);
        assert_eq!(held.await.unwrap().unwrap(), 0);

        let (started_tx, started) = tokio::sync::oneshot::channel();
        let slow = tokio::spawn({
            let readers = readers.clone();
            async move {
                readers
                    .read(move |conn| {
                        let _ = started_tx.send(());
                        std::thread::sleep(Duration::from_millis(500));
                        position(conn)
                    })
                    .await
            }
        });
        started.await.unwrap();
        assert!(readers.pause(50).await.is_none(), "a read outlasting the wait");
        slow.await.unwrap().unwrap();
    }
}

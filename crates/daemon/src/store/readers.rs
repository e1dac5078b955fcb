//! The read side: read-only connections to the database, used on the blocking thread pool, and
//! the configuration as it was at an instant.

use super::{READERS_IDLE_MAX, fold_log};
use model::State;
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

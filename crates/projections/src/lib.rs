//! Read models derived from the event log: the current configuration (shared and this peer's
//! local settings) and the Configuration Log (who changed what, when). Each projection owns
//! its `proj_*` tables in the log's SQLite file and a checkpoint row written in the same
//! transaction as its rows, so a crash never leaves a projection ahead of or behind its
//! checkpoint. Bumping a projection's `VERSION` drops and rebuilds it from the first event.
//!
//! Must not write the log's own tables, must not depend on tokio or the network, and must
//! apply the model's convergence rule (last writer wins by stamp) exactly as `model::State`
//! does, so every peer's read model agrees whatever order events arrived in.

use eventlog::StoredEvent;
use model::{Event, Hlc, PeerId, Record, RecordKey, RecordKind, Stamp};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("event at position {position} cannot be read: {source}")]
    Decode { position: u64, source: model::DecodeError },
    #[error("reading the event log: {0}")]
    EventLog(#[from] eventlog::Error),
    #[error("projection storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record is malformed: {0}")]
    Json(#[from] serde_json::Error),
}

/// Events applied per transaction while catching up: large enough to amortise the commit,
/// small enough that a writer waiting behind a rebuild is not starved for long.
pub const CATCH_UP_BATCH_EVENTS: usize = 2_000;

/// One read model.
trait Projection {
    const NAME: &'static str;
    const VERSION: u32;
    /// Drops and recreates the projection's tables.
    fn reset(tx: &Connection) -> Result<(), Error>;
    /// What one catch-up batch remembers per record key (the row it last wrote), so a key
    /// rewritten in the batch is not looked up in the table again.
    type Memo: Default;
    fn apply(
        tx: &Connection,
        memo: &mut Self::Memo,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error>;
}

/// Current records, one row per record key, with tombstones for removed records.
struct Records;

impl Projection for Records {
    const NAME: &'static str = "records";
    /// 2: events outside their kind's stream (the shared licence of before) are not records.
    const VERSION: u32 = 2;
    type Memo = HashMap<RecordKey, Stamp>;

    fn reset(tx: &Connection) -> Result<(), Error> {
        tx.execute_batch(
            "DROP TABLE IF EXISTS proj_records;
             CREATE TABLE proj_records (
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 hlc_wall_ms INTEGER NOT NULL,
                 hlc_counter INTEGER NOT NULL,
                 origin BLOB NOT NULL,
                 body TEXT,            -- JSON of the record; NULL once removed (tombstone)
                 PRIMARY KEY (kind, name)
             ) WITHOUT ROWID;",
        )?;
        Ok(())
    }

    fn apply(
        tx: &Connection,
        memo: &mut Self::Memo,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error> {
        if !stored.in_its_stream(event) {
            return Ok(()); // the model ignores it too (`model::State` folds by the same rule)
        }
        let key = event.key();
        let stamp = stamp_of(stored);
        let current = match memo.get(&key) {
            Some(current) => Some(*current),
            None => current_stamp(tx, &key)?,
        };
        if current.is_some_and(|current| current >= stamp) {
            return Ok(()); // a later write already decided this record
        }
        let body = match event {
            Event::Saved(record) => Some(serde_json::to_string(record)?),
            Event::Removed(_) => None,
        };
        tx.prepare_cached(
            "INSERT OR REPLACE INTO proj_records (kind, name, hlc_wall_ms, hlc_counter, origin, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            key.kind.as_str(),
            key.name,
            stamp.hlc.wall_ms,
            stamp.hlc.counter,
            stamp.origin.0,
            body
        ])?;
        memo.insert(key, stamp);
        Ok(())
    }
}

fn current_stamp(tx: &Connection, key: &RecordKey) -> Result<Option<Stamp>, Error> {
    Ok(tx
            .prepare_cached("SELECT hlc_wall_ms, hlc_counter, origin FROM proj_records WHERE kind = ?1 AND name = ?2")?
            .query_row(params![key.kind.as_str(), key.name], |row| {
                Ok(Stamp {
                    hlc: Hlc { wall_ms: row.get(0)?, counter: row.get(1)? },
                    origin: PeerId(row.get(2)?),
                })
            })
            .optional()?)
}

/// Every change in arrival order, with the record before and after, for the Configuration
/// Log and record history. Secrets are redacted before they are written here.
struct ConfigLog;

impl Projection for ConfigLog {
    const NAME: &'static str = "config_log";
    const VERSION: u32 = 1;
    type Memo = HashMap<RecordKey, Option<String>>;

    fn reset(tx: &Connection) -> Result<(), Error> {
        tx.execute_batch(
            "DROP TABLE IF EXISTS proj_config_log;
             CREATE TABLE proj_config_log (
                 position INTEGER PRIMARY KEY,
                 at_ms INTEGER NOT NULL,
                 origin BLOB NOT NULL,
                 actor TEXT NOT NULL,
                 action TEXT NOT NULL,   -- 'saved' or 'removed'
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 before TEXT,            -- redacted JSON, NULL if the record did not exist
                 after TEXT              -- redacted JSON, NULL if removed
             );
             CREATE INDEX proj_config_log_record ON proj_config_log (kind, name, position);
             CREATE INDEX proj_config_log_actor ON proj_config_log (actor, position);",
        )?;
        Ok(())
    }

    fn apply(
        tx: &Connection,
        memo: &mut Self::Memo,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error> {
        let key = event.key();
        let before: Option<String> = match memo.remove(&key) {
            Some(before) => before,
            None => tx
                .prepare_cached(
                    "SELECT after FROM proj_config_log WHERE kind = ?1 AND name = ?2 ORDER BY position DESC LIMIT 1",
                )?
                .query_row(params![key.kind.as_str(), key.name], |row| row.get(0))
                .optional()?
                .flatten(),
        };
        let (action, after) = match event {
            Event::Saved(record) => ("saved", Some(serde_json::to_string(&record.redacted())?)),
            Event::Removed(_) => ("removed", None),
        };
        tx.prepare_cached(
            "INSERT INTO proj_config_log (position, at_ms, origin, actor, action, kind, name, before, after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            stored.position,
            stored.hlc.wall_ms,
            stored.origin.0,
            stored.actor,
            action,
            key.kind.as_str(),
            key.name,
            before,
            after
        ])?;
        memo.insert(key, after);
        Ok(())
    }
}

fn stamp_of(stored: &StoredEvent) -> Stamp {
    Stamp { hlc: stored.hlc, origin: stored.origin }
}

/// Brings every projection up to the log's end. Returns how many events were applied.
///
/// Call it after each append (the writer does) and at start-up; it is idempotent.
pub fn catch_up(conn: &mut Connection) -> Result<u64, Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS proj_checkpoints (
             name TEXT PRIMARY KEY,
             version INTEGER NOT NULL,
             position INTEGER NOT NULL
         );",
    )?;
    let mut applied = catch_up_one::<Records>(conn)?;
    applied += catch_up_one::<ConfigLog>(conn)?;
    Ok(applied)
}

fn checkpoint<P: Projection>(conn: &Connection) -> Result<Option<(u32, u64)>, Error> {
    Ok(conn
        .query_row(
            "SELECT version, position FROM proj_checkpoints WHERE name = ?1",
            [P::NAME],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

fn catch_up_one<P: Projection>(conn: &mut Connection) -> Result<u64, Error> {
    let mut position = match checkpoint::<P>(conn)? {
        Some((version, position)) if version == P::VERSION => position,
        _ => {
            let tx = conn.savepoint()?;
            P::reset(&tx)?;
            tx.execute(
                "INSERT OR REPLACE INTO proj_checkpoints (name, version, position) VALUES (?1, ?2, 0)",
                params![P::NAME, P::VERSION],
            )?;
            tx.commit()?;
            0
        }
    };
    let mut applied = 0;
    loop {
        let batch = eventlog::read_after(conn, position, CATCH_UP_BATCH_EVENTS)?;
        let Some(last) = batch.last() else { return Ok(applied) };
        let last_position = last.position;
        // A savepoint, so the rows join the writer's group commit when one is open.
        let tx = conn.savepoint()?;
        let mut memo = P::Memo::default();
        for stored in &batch {
            let event = Event::decode(&stored.kind, stored.version, &stored.payload)
                .map_err(|source| Error::Decode { position: stored.position, source })?;
            P::apply(&tx, &mut memo, stored, &event)?;
        }
        tx.execute(
            "UPDATE proj_checkpoints SET position = ?1 WHERE name = ?2",
            params![last_position, P::NAME],
        )?;
        tx.commit()?;
        applied += batch.len() as u64;
        position = last_position;
    }
}

/// The lowest position every projection has reached: reads are current up to here.
pub fn position(conn: &Connection) -> Result<u64, Error> {
    let records = checkpoint::<Records>(conn)?.map_or(0, |(_, position)| position);
    let log = checkpoint::<ConfigLog>(conn)?.map_or(0, |(_, position)| position);
    Ok(records.min(log))
}

// ---- queries -------------------------------------------------------------------------------

/// Live records of one kind, ordered by name.
pub fn list(conn: &Connection, kind: RecordKind) -> Result<Vec<Record>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT body FROM proj_records WHERE kind = ?1 AND body IS NOT NULL ORDER BY name",
    )?;
    let bodies = statement.query_map([kind.as_str()], |row| row.get::<_, String>(0))?;
    let mut records = Vec::new();
    for body in bodies {
        records.push(serde_json::from_str(&body?)?);
    }
    Ok(records)
}

pub fn get(conn: &Connection, key: &RecordKey) -> Result<Option<Record>, Error> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM proj_records WHERE kind = ?1 AND name = ?2")?
        .query_row(params![key.kind.as_str(), key.name], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(body.map(|body| serde_json::from_str(&body)).transpose()?)
}

/// One row of the Configuration Log.
#[derive(Clone, PartialEq, Debug, serde::Serialize)]
pub struct ConfigLogEntry {
    pub position: u64,
    pub at_ms: u64,
    pub origin: String,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Filters for reading the Configuration Log, newest first; page with `before_position`.
#[derive(Clone, Default, Debug)]
pub struct ConfigLogQuery {
    pub actor: Option<String>,
    pub kind: Option<RecordKind>,
    pub name: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub before_position: Option<u64>,
    /// Only changes made on this peer (`None`: from every peer).
    pub origin: Option<PeerId>,
    pub limit: usize,
}

/// Largest page of log rows a query may ask for.
pub const LOG_PAGE_MAX: usize = 1_000;

/// The columns [`config_log_entry`] reads, in its order.
const CONFIG_LOG_COLUMNS: &str =
    "position, at_ms, origin, actor, action, kind, name, before, after";

pub fn config_log(conn: &Connection, query: &ConfigLogQuery) -> Result<Vec<ConfigLogEntry>, Error> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {CONFIG_LOG_COLUMNS} FROM proj_config_log
         WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR name = ?3)
           AND (?4 IS NULL OR at_ms >= ?4) AND (?5 IS NULL OR at_ms <= ?5) AND (?6 IS NULL OR position < ?6)
           AND (?8 IS NULL OR origin = ?8)
         ORDER BY position DESC LIMIT ?7"
    ))?;
    let limit = query.limit.clamp(1, LOG_PAGE_MAX) as i64;
    let rows = statement.query_map(
        params![
            query.actor,
            query.kind.map(RecordKind::as_str),
            query.name,
            query.since_ms,
            query.until_ms,
            query.before_position,
            limit,
            query.origin.map(|origin| origin.0)
        ],
        config_log_entry,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One peer's Configuration Log rows after `after_position`, oldest first, at most `limit`:
/// for a reader that follows the log (the syslog forwarder).
pub fn config_log_after(
    conn: &Connection,
    origin: PeerId,
    after_position: u64,
    limit: usize,
) -> Result<Vec<ConfigLogEntry>, Error> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {CONFIG_LOG_COLUMNS} FROM proj_config_log
         WHERE origin = ?1 AND position > ?2 ORDER BY position LIMIT ?3"
    ))?;
    let rows =
        statement.query_map(params![origin.0, after_position, limit as i64], config_log_entry)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A row selected as [`CONFIG_LOG_COLUMNS`]; the redacted before/after are JSON text.
fn config_log_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConfigLogEntry> {
    let json = |index: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        let text: Option<String> = row.get(index)?;
        text.map(|text| serde_json::from_str(&text)).transpose().map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })
    };
    Ok(ConfigLogEntry {
        position: row.get(0)?,
        at_ms: row.get(1)?,
        origin: hex_of(&row.get::<_, Vec<u8>>(2)?),
        actor: row.get(3)?,
        action: row.get(4)?,
        kind: row.get(5)?,
        name: row.get(6)?,
        before: json(7)?,
        after: json(8)?,
    })
}

/// The Configuration Log's last position, 0 when empty.
pub fn config_log_last_position(conn: &Connection) -> Result<u64, Error> {
    Ok(conn.query_row("SELECT coalesce(max(position), 0) FROM proj_config_log", [], |row| {
        row.get(0)
    })?)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

//! Read models derived from the event log: the current configuration (shared and this peer's
//! local settings) and the Configuration Log (who changed what, when). Each projection owns
//! its `proj_*` tables in the log's SQLite file and a checkpoint row written in the same
//! transaction as its rows, so a crash never leaves a projection ahead of or behind its
//! checkpoint. Bumping a projection's `VERSION` drops and rebuilds it from the first event.
//!
//! Must not write the log's own tables, must not depend on tokio or the network, and must
//! apply the model's convergence rule (last writer wins by stamp) exactly as `model::State`
//! does, so every peer's read model agrees whatever order events arrived in.

use eventlog::{Savepoint, StoredEvent};
use model::{Event, PeerId, Record, RecordKey, RecordKind, Stamp};
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
    /// What one catch-up keeps between events. Current records: the newest stamp met per
    /// record key, so a key rewritten during the catch-up is written once per batch, not once
    /// per event (bounded by the configuration's size, not by the history's length). The
    /// Configuration Log: the batch's rows until its end (bounded by the batch).
    type Memo: Default;
    fn apply(
        tx: &Connection,
        memo: &mut Memo<Self::Memo>,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error>;
    /// Writes what `apply` kept back, at the end of each batch (before its checkpoint).
    fn flush(_tx: &Connection, _memo: &mut Memo<Self::Memo>) -> Result<(), Error> {
        Ok(())
    }
}

/// Current records, one row per record key, with tombstones for removed records. A row points
/// at the event that decided it (its `position` in `events`, which is append-only) rather than
/// holding a copy: a read decodes the record from that event, upcast as the log is, and a
/// catch-up writes a few integers per record instead of encoding it (the JSON copy was most of
/// a rebuild's work on this table).
struct Records;

impl Projection for Records {
    const NAME: &'static str = "records";
    /// 2: events outside their kind's stream (the shared licence of before) are not records.
    /// 3: the deciding event's position instead of a JSON copy of the record.
    const VERSION: u32 = 3;
    type Memo = RecordRows;

    fn reset(tx: &Connection) -> Result<(), Error> {
        tx.execute_batch(
            "DROP TABLE IF EXISTS proj_records;
             CREATE TABLE proj_records (
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 hlc_wall_ms INTEGER NOT NULL,
                 hlc_counter INTEGER NOT NULL,
                 origin BLOB NOT NULL,
                 position INTEGER NOT NULL,  -- of the deciding event, in `events`
                 live INTEGER NOT NULL,      -- 0 once removed (a tombstone)
                 PRIMARY KEY (kind, name)
             ) WITHOUT ROWID;",
        )?;
        Ok(())
    }

    fn apply(
        _tx: &Connection,
        memo: &mut Memo<Self::Memo>,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error> {
        if !stored.in_its_stream(event) {
            return Ok(()); // the model ignores it too (`model::State` folds by the same rule)
        }
        let key = event.key();
        let stamp = stamp_of(stored);
        // Only the newest stamp of this catch-up is compared here; the table's own row, which
        // may be newer still, is compared by the write in `flush`, so no key is looked up.
        if memo.rows.stamps.get(&key).is_some_and(|newest| *newest >= stamp) {
            return Ok(()); // a later write already decided this record
        }
        let live = matches!(event, Event::Saved(_));
        memo.rows.stamps.insert(key.clone(), stamp);
        memo.rows.unwritten.insert(key, RecordRow { position: stored.position, live });
        Ok(())
    }

    fn flush(tx: &Connection, memo: &mut Memo<Self::Memo>) -> Result<(), Error> {
        // A rebuild's memo holds every row's stamp, so its rows are written as they are (the
        // comparison below cost a restore of 10^6 events 5%). Otherwise a row already there
        // stays unless this one's stamp is newer: (wall, counter, origin) compared as `Stamp`
        // orders them (origin bytes as memcmp, as its array's `Ord`).
        let mut insert = tx.prepare_cached(if memo.rebuilding {
            "INSERT OR REPLACE INTO proj_records (kind, name, hlc_wall_ms, hlc_counter, origin, position, live)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        } else {
            "INSERT INTO proj_records (kind, name, hlc_wall_ms, hlc_counter, origin, position, live)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (kind, name) DO UPDATE SET
                 hlc_wall_ms = excluded.hlc_wall_ms, hlc_counter = excluded.hlc_counter,
                 origin = excluded.origin, position = excluded.position, live = excluded.live
             WHERE (excluded.hlc_wall_ms, excluded.hlc_counter, excluded.origin)
                 > (proj_records.hlc_wall_ms, proj_records.hlc_counter, proj_records.origin)"
        })?;
        for (key, row) in memo.rows.unwritten.drain() {
            let stamp = memo.rows.stamps[&key];
            insert.execute(params![
                key.kind.as_str(),
                key.name,
                stamp.hlc.wall_ms,
                stamp.hlc.counter,
                stamp.origin.0,
                row.position,
                row.live
            ])?;
        }
        Ok(())
    }
}

/// What a catch-up of [`Records`] remembers: the newest stamp it has met for each key (the
/// table's row may be newer: `flush` keeps whichever is), and the rows that changed since the
/// batch began, written once per batch (a record saved a thousand times in a
/// batch is one row write, not a thousand). One entry per record key at most.
#[derive(Default)]
struct RecordRows {
    stamps: HashMap<RecordKey, Stamp>,
    /// The winning event's row; its stamp is in `stamps`.
    unwritten: HashMap<RecordKey, RecordRow>,
}

struct RecordRow {
    position: u64,
    live: bool,
}

/// Every change in arrival order, for the Configuration Log and record history. A row is the
/// change's key and actor, and the position of the same key's previous row (the record
/// before); its time, origin and the records before and after it are read from the events at
/// query time (redacted then), so the projection is a small index over the log rather than a
/// second, larger copy of it: stored as JSON it was larger than the events and most of a
/// restore's rebuild. The log's filters are checked on a scan by position, newest first
/// (their `?n IS NULL OR` form uses no index), so the table has no index of its own.
///
/// The previous row is found as the rows are written, from `proj_config_log_keys` (each key's
/// newest row, one row per key): an index on (kind, name, position) found it at query time,
/// but building it was 13% of a restore of 10^6 events (0.65 s to sort their keys).
struct ConfigLog;

impl Projection for ConfigLog {
    const NAME: &'static str = "config_log";
    /// 2: no copies of the records (see above).
    /// 3: each row holds its key's previous row; no index.
    const VERSION: u32 = 3;
    /// The batch's rows, written together at its end.
    type Memo = ConfigRows;

    /// Dropping the table drops the indexes of earlier versions with it.
    fn reset(tx: &Connection) -> Result<(), Error> {
        tx.execute_batch(
            "DROP TABLE IF EXISTS proj_config_log;
             DROP TABLE IF EXISTS proj_config_log_keys;
             CREATE TABLE proj_config_log (
                 position INTEGER PRIMARY KEY,   -- the event's, in `events`
                 actor TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 previous INTEGER                -- the same key's previous row; NULL for its first
             );
             CREATE TABLE proj_config_log_keys (
                 kind TEXT NOT NULL,
                 name TEXT NOT NULL,
                 position INTEGER NOT NULL,      -- of the key's newest row
                 PRIMARY KEY (kind, name)
             ) WITHOUT ROWID;",
        )?;
        Ok(())
    }

    fn apply(
        _tx: &Connection,
        memo: &mut Memo<Self::Memo>,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), Error> {
        let rows = &mut memo.rows;
        let key = event.key();
        let previous = match rows.newest.get(&key) {
            Some(newest) => Previous::Row(newest.position),
            // A rebuild's memo has met every row the table holds, until it is trimmed.
            None if memo.rebuilding && !rows.trimmed => Previous::First,
            None => Previous::Unknown,
        };
        rows.push(stored.position, &stored.actor, event, previous);
        rows.note_newest(key, stored.position);
        Ok(())
    }

    /// The batch's rows, [`CONFIG_ROWS_PER_INSERT`] to a statement: one row per statement was
    /// 15% of a restore's time. The previous rows the catch-up did not meet are looked up
    /// first, [`CONFIG_KEYS_PER_STATEMENT`] keys to a statement (one statement per key cost a
    /// replica's catch-up of 20,000 new records a quarter of its time), but a row inserted on
    /// its own (a command's, or one of the last 63 of a batch) looks its up in its insert.
    /// Each key's newest row is written last, as many to a statement.
    fn flush(tx: &Connection, memo: &mut Memo<Self::Memo>) -> Result<(), Error> {
        let in_chunks = memo.rows.rows.len() / CONFIG_ROWS_PER_INSERT * CONFIG_ROWS_PER_INSERT;
        memo.rows.look_up_previous(tx, in_chunks)?;
        let rows = &memo.rows;
        let mut chunks = rows.rows.chunks_exact(CONFIG_ROWS_PER_INSERT);
        // A command's batch has a row or two: it does not look up the long statement.
        if chunks.len() > 0 {
            let mut insert = tx.prepare_cached(&CONFIG_ROWS_INSERT)?;
            for chunk in &mut chunks {
                insert.execute(rusqlite::params_from_iter(
                    chunk.iter().flat_map(|row| rows.values(row)),
                ))?;
            }
        }
        for row in chunks.remainder() {
            let mut insert_one = tx.prepare_cached(match row.previous {
                Previous::Unknown => {
                    "INSERT INTO proj_config_log (position, actor, kind, name, previous)
                     VALUES (?1, ?2, ?3, ?4, (SELECT position FROM proj_config_log_keys
                                              WHERE kind = ?3 AND name = ?4))"
                }
                _ => {
                    "INSERT INTO proj_config_log (position, actor, kind, name, previous)
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                }
            })?;
            let values = rows.values(row);
            let bound = if let Previous::Unknown = row.previous { 4 } else { values.len() };
            insert_one.execute(rusqlite::params_from_iter(values.into_iter().take(bound)))?;
        }
        memo.rows.write_newest(tx)?;
        memo.rows.clear();
        Ok(())
    }
}

/// Keys looked up, or written, by one statement of `proj_config_log_keys`.
const CONFIG_KEYS_PER_STATEMENT: usize = 64;

/// Keys whose newest row a catch-up keeps in memory at most: past it the memory is emptied
/// (every key in it is written by then) and keys are looked up again, so a rebuild over a
/// history of many records stays within bounds.
#[cfg(not(test))]
const CONFIG_KEYS_KEPT_MAX: usize = 100_000;
/// Small in tests, so a rebuild of a few batches empties its memory of keys.
#[cfg(test)]
const CONFIG_KEYS_KEPT_MAX: usize = 100;

/// A statement over `proj_config_log_keys` for one key and one for
/// [`CONFIG_KEYS_PER_STATEMENT`] keys: `head`, then a key's `each` as many times, then `tail`.
struct KeysStatements {
    one: String,
    many: String,
}

impl KeysStatements {
    fn new(head: &str, each: &str, tail: &str) -> KeysStatements {
        let over = |n: usize| format!("{head} {} {tail}", vec![each; n].join(", "));
        KeysStatements { one: over(1), many: over(CONFIG_KEYS_PER_STATEMENT) }
    }

    /// The statement for a chunk of `keys` keys, as [`for_key_chunks`] makes them.
    fn over(&self, keys: usize) -> &str {
        if keys == 1 { &self.one } else { &self.many }
    }
}

/// The newest row of some keys at once (a key given twice is harmless: a shorter list is
/// padded with its last key, so two statements serve all).
static KEYS_SELECT: std::sync::LazyLock<KeysStatements> = std::sync::LazyLock::new(|| {
    let head =
        "SELECT kind, name, position FROM proj_config_log_keys WHERE (kind, name) IN (VALUES";
    KeysStatements::new(head, "(?, ?)", ")")
});

/// Writes the newest row of some keys (padded as [`KEYS_SELECT`]); a key's row is updated
/// where it is, not deleted and inserted again as a replace does.
static KEYS_UPSERT: std::sync::LazyLock<KeysStatements> = std::sync::LazyLock::new(|| {
    let head = "INSERT INTO proj_config_log_keys (kind, name, position) VALUES";
    let tail = "ON CONFLICT (kind, name) DO UPDATE SET position = excluded.position";
    KeysStatements::new(head, "(?, ?, ?)", tail)
});

/// A shorter last chunk of keys is padded to [`CONFIG_KEYS_PER_STATEMENT`] from this many on;
/// below it each key has a statement of its own (padding a group commit's key or two to 64
/// cost the write path 8% of its changes per second).
const CONFIG_KEYS_PADDED_MIN: usize = 16;

/// `keys` in chunks of [`CONFIG_KEYS_PER_STATEMENT`], a last shorter chunk padded with its
/// last key; fewer than [`CONFIG_KEYS_PADDED_MIN`] left go one by one.
fn for_key_chunks<'k, T>(
    keys: &'k [T],
    mut each: impl FnMut(&[&'k T]) -> Result<(), Error>,
) -> Result<(), Error> {
    for chunk in keys.chunks(CONFIG_KEYS_PER_STATEMENT) {
        if chunk.len() < CONFIG_KEYS_PADDED_MIN {
            return chunk.iter().try_for_each(|key| each(&[key]));
        }
        let mut padded: Vec<&T> = chunk.iter().collect();
        let last = padded[padded.len() - 1];
        padded.resize(CONFIG_KEYS_PER_STATEMENT, last);
        each(&padded)?;
    }
    Ok(())
}

/// Rows of the Configuration Log written by one statement.
const CONFIG_ROWS_PER_INSERT: usize = 64;

/// `INSERT ... VALUES (?, ?, ?, ?, ?), ...` for [`CONFIG_ROWS_PER_INSERT`] rows.
static CONFIG_ROWS_INSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let values = vec!["(?, ?, ?, ?, ?)"; CONFIG_ROWS_PER_INSERT].join(", ");
    format!("INSERT INTO proj_config_log (position, actor, kind, name, previous) VALUES {values}")
});

/// The Configuration Log's rows of a batch, kept until its end: their text in one buffer, so
/// a row costs no allocation of its own. Also each key's newest row met in the catch-up (at
/// most [`CONFIG_KEYS_KEPT_MAX`]), so a key's previous row is looked up at most once.
#[derive(Default)]
struct ConfigRows {
    rows: Vec<ConfigRow>,
    text: String,
    newest: HashMap<RecordKey, NewestRow>,
    /// The keys whose newest row is not yet in `proj_config_log_keys`, each once.
    unwritten: Vec<RecordKey>,
    /// The batch's rows whose previous row is [`Previous::Unknown`], by index in `rows`.
    unknown: Vec<usize>,
    /// Whether `newest` was emptied during this catch-up (it then misses some keys).
    trimmed: bool,
}

/// A row's previous row, as far as the catch-up knows when it meets the row.
#[derive(Clone, Copy)]
enum Previous {
    Row(u64),
    /// The key's first row.
    First,
    /// To be looked up at the batch's end, in `proj_config_log_keys`.
    Unknown,
}

/// A row of the Configuration Log; its actor and name are ranges of [`ConfigRows::text`].
struct ConfigRow {
    position: u64,
    kind: RecordKind,
    actor: std::ops::Range<usize>,
    name: std::ops::Range<usize>,
    previous: Previous,
}

struct NewestRow {
    position: u64,
    written: bool,
}

impl ConfigRows {
    fn push(&mut self, position: u64, actor: &str, event: &Event, previous: Previous) {
        let mut text = |value: &str| {
            let start = self.text.len();
            self.text.push_str(value);
            start..self.text.len()
        };
        let (actor, name) = (text(actor), text(event.name()));
        if let Previous::Unknown = previous {
            self.unknown.push(self.rows.len());
        }
        self.rows.push(ConfigRow { position, kind: event.kind(), actor, name, previous });
    }

    fn note_newest(&mut self, key: RecordKey, position: u64) {
        use std::collections::hash_map::Entry;
        match self.newest.entry(key) {
            Entry::Vacant(vacant) => {
                self.unwritten.push(vacant.key().clone());
                vacant.insert(NewestRow { position, written: false });
            }
            Entry::Occupied(mut occupied) => {
                if occupied.get().written {
                    self.unwritten.push(occupied.key().clone());
                }
                *occupied.get_mut() = NewestRow { position, written: false };
            }
        }
    }

    /// The previous row of each of the first `rows` rows that has [`Previous::Unknown`], from
    /// the newest rows written before this batch. Each such row is its key's first of the
    /// batch (the others found it in `newest`).
    fn look_up_previous(&mut self, tx: &Connection, rows: usize) -> Result<(), Error> {
        let mut found: HashMap<(String, String), u64> = HashMap::new();
        let unknown_in = self.unknown.partition_point(|&index| index < rows);
        let unknown = &self.unknown[..unknown_in];
        let rows = &self.rows;
        for_key_chunks(unknown, |chunk| {
            let mut select = tx.prepare_cached(KEYS_SELECT.over(chunk.len()))?;
            let keys = chunk.iter().flat_map(|&&index| {
                let row = &rows[index];
                [row.kind.as_str(), &self.text[row.name.clone()]]
            });
            let mut answers = select.query(rusqlite::params_from_iter(keys))?;
            while let Some(answer) = answers.next()? {
                found.insert((answer.get(0)?, answer.get(1)?), answer.get(2)?);
            }
            Ok(())
        })?;
        for index in self.unknown.drain(..unknown_in) {
            let row = &mut self.rows[index];
            let key = (row.kind.as_str().to_owned(), self.text[row.name.clone()].to_owned());
            row.previous =
                found.get(&key).map_or(Previous::First, |&position| Previous::Row(position));
        }
        Ok(())
    }

    /// Each key's newest row of the batch into `proj_config_log_keys`; then, past
    /// [`CONFIG_KEYS_KEPT_MAX`] keys, forgets them all (each is in the table now).
    fn write_newest(&mut self, tx: &Connection) -> Result<(), Error> {
        let newest = &self.newest;
        let unwritten: Vec<(&RecordKey, u64)> = self
            .unwritten
            .iter()
            .filter_map(|key| newest.get(key).map(|row| (key, row.position)))
            .collect();
        for_key_chunks(&unwritten, |chunk| {
            let mut upsert = tx.prepare_cached(KEYS_UPSERT.over(chunk.len()))?;
            let values = chunk.iter().flat_map(|(key, position)| {
                use rusqlite::types::{ToSqlOutput, Value, ValueRef};
                [
                    ToSqlOutput::Borrowed(ValueRef::Text(key.kind.as_str().as_bytes())),
                    ToSqlOutput::Borrowed(ValueRef::Text(key.name.as_bytes())),
                    ToSqlOutput::Owned(Value::Integer(*position as i64)),
                ]
            });
            upsert.execute(rusqlite::params_from_iter(values))?;
            Ok(())
        })?;
        for key in self.unwritten.drain(..) {
            if let Some(newest) = self.newest.get_mut(&key) {
                newest.written = true;
            }
        }
        if self.newest.len() > CONFIG_KEYS_KEPT_MAX {
            self.newest = HashMap::new();
            self.trimmed = true;
        }
        Ok(())
    }

    /// The row's five values, as the insert binds them.
    fn values<'a>(&'a self, row: &'a ConfigRow) -> [rusqlite::types::ToSqlOutput<'a>; 5] {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        [
            ToSqlOutput::Owned(Value::Integer(row.position as i64)),
            ToSqlOutput::Borrowed(ValueRef::Text(self.text[row.actor.clone()].as_bytes())),
            ToSqlOutput::Borrowed(ValueRef::Text(row.kind.as_str().as_bytes())),
            ToSqlOutput::Borrowed(ValueRef::Text(self.text[row.name.clone()].as_bytes())),
            ToSqlOutput::Owned(match row.previous {
                Previous::Row(position) => Value::Integer(position as i64),
                Previous::First | Previous::Unknown => Value::Null,
            }),
        ]
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.text.clear();
        self.unknown.clear();
    }
}

/// A projection's [`Projection::Memo`] and whether its catch-up started from an empty
/// projection (a rebuild: then the memo knows every row the table holds).
struct Memo<T> {
    rows: T,
    rebuilding: bool,
}

fn stamp_of(stored: &StoredEvent) -> Stamp {
    Stamp { hlc: stored.hlc, origin: stored.origin }
}

/// Brings every projection up to the log's end. Returns how many events were applied (an
/// event applied to both projections counts twice).
///
/// Call it after each append (the writer does) and at start-up; it is idempotent. The log is
/// read once for both projections, each event decoded once.
pub fn catch_up(conn: &mut Connection) -> Result<u64, Error> {
    catch_up_pass(conn, u64::MAX, &mut |_, _| {})
}

/// [`catch_up`] at start-up, also handing `visit` every event after `visit_after` (decoded),
/// in order, in the same pass: the state is folded from the events the projections read
/// anyway. They come a batch at a time, once the batch is applied, and are `visit`'s to
/// keep: it may fold them on another thread while the next batch is read.
pub fn catch_up_visiting(
    conn: &mut Connection,
    visit_after: u64,
    visit: &mut dyn FnMut(Vec<StoredEvent>, Vec<Event>),
) -> Result<u64, Error> {
    catch_up_pass(conn, visit_after, visit)
}

/// [`catch_up`] for a writer holding the events it has just appended (`stored`, and each
/// decoded in `events`, in order): when they are exactly what follows both projections'
/// checkpoints, they are applied as they are instead of being read back from the log and
/// decoded again; otherwise (a projection left behind by an earlier failure) this is
/// [`catch_up`]. Events appended after them are applied by the next catch-up.
pub fn catch_up_appended(
    conn: &mut Connection,
    stored: &[StoredEvent],
    events: &[Event],
) -> Result<u64, Error> {
    let Some(first) = stored.first() else { return catch_up(conn) };
    let consecutive = stored.len() == events.len()
        && stored.iter().enumerate().all(|(index, s)| s.position == first.position + index as u64);
    let mut cursors = Cursors::open(conn)?;
    let next = first.position.checked_sub(1);
    if !consecutive || Some(cursors.position()) != next || cursors.rebuilding() {
        return catch_up(conn);
    }
    cursors.apply_batch(conn, stored, events)
}

/// Catches up both projections, visiting the events after `visit_after`. Returns how many
/// events were applied.
fn catch_up_pass(
    conn: &mut Connection,
    visit_after: u64,
    visit: &mut dyn FnMut(Vec<StoredEvent>, Vec<Event>),
) -> Result<u64, Error> {
    let mut cursors = Cursors::open(conn)?;
    let batch_events =
        if cursors.rebuilding() { REBUILD_BATCH_EVENTS } else { CATCH_UP_BATCH_EVENTS };
    let mut applied = 0;
    let mut from = cursors.position().min(visit_after);
    loop {
        let mut batch = eventlog::read_after(conn, from, batch_events)?;
        let Some(last) = batch.last() else { return Ok(applied) };
        let last_position = last.position;
        let mut events = decode_batch(&batch)?;
        applied += cursors.apply_batch(conn, &batch, &events)?;
        if last_position > visit_after {
            let first_visited = batch.partition_point(|stored| stored.position <= visit_after);
            visit(batch.split_off(first_visited), events.split_off(first_visited));
        }
        from = last_position;
    }
}

/// Both projections derived from events as they are copied into a new database (a
/// restore's rebuild, see `eventlog::EventLog::rebuild_from_deriving`), a batch at a time,
/// instead of being read back from the log once it is whole.
pub struct Derivation {
    cursors: Cursors,
}

impl Derivation {
    /// Starts both projections where their checkpoints stand (from the first event in a new
    /// database).
    pub fn start(conn: &mut Connection) -> Result<Derivation, Error> {
        Ok(Derivation { cursors: Cursors::open(conn)? })
    }

    /// Applies `stored`, the events that follow the previous batch, in position order;
    /// returns them decoded. An event that does not decode fails the batch.
    pub fn apply(
        &mut self,
        conn: &mut Connection,
        stored: &[StoredEvent],
    ) -> Result<Vec<Event>, Error> {
        let events = decode_batch(stored)?;
        self.cursors.apply_batch(conn, stored, &events)?;
        Ok(events)
    }
}

/// Both projections' cursors, moved together through one read of the log.
struct Cursors {
    records: Cursor<Records>,
    config_log: Cursor<ConfigLog>,
}

impl Cursors {
    fn open(conn: &mut Connection) -> Result<Cursors, Error> {
        // Cached: run at every group commit.
        conn.prepare_cached(
            "CREATE TABLE IF NOT EXISTS proj_checkpoints (
                 name TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 position INTEGER NOT NULL
             )",
        )?
        .execute([])?;
        Ok(Cursors { records: Cursor::open(conn)?, config_log: Cursor::open(conn)? })
    }

    /// The lowest checkpoint: every event after it is applied to one projection at least.
    fn position(&self) -> u64 {
        self.records.position.min(self.config_log.position)
    }

    /// Whether a projection starts from the first event.
    fn rebuilding(&self) -> bool {
        self.records.memo.rebuilding || self.config_log.memo.rebuilding
    }

    /// Applies one batch (`stored`, each decoded in `events`) in a savepoint, so the rows
    /// join the writer's group commit when one is open. Returns how many events were applied.
    fn apply_batch(
        &mut self,
        conn: &mut Connection,
        stored: &[StoredEvent],
        events: &[Event],
    ) -> Result<u64, Error> {
        let Some(last) = stored.last() else { return Ok(0) };
        let tx = Savepoint::begin(conn)?;
        let mut applied = 0;
        for (stored, event) in stored.iter().zip(events) {
            applied += self.records.apply(&tx, stored, event)?;
            applied += self.config_log.apply(&tx, stored, event)?;
        }
        self.records.finish_batch(&tx, last.position)?;
        self.config_log.finish_batch(&tx, last.position)?;
        tx.commit()?;
        Ok(applied)
    }
}

/// Events per transaction when a projection is rebuilt from the first event (at start-up,
/// where no writer waits): fewer, larger batches write each record's row fewer times.
const REBUILD_BATCH_EVENTS: usize = 20_000;

fn checkpoint<P: Projection>(conn: &Connection) -> Result<Option<(u32, u64)>, Error> {
    Ok(conn
        .prepare_cached("SELECT version, position FROM proj_checkpoints WHERE name = ?1")?
        .query_row([P::NAME], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// One projection's progress through a catch-up.
struct Cursor<P: Projection> {
    position: u64,
    memo: Memo<P::Memo>,
}

impl<P: Projection> Cursor<P> {
    /// Where the projection stands; reset to the first event when it is missing or of
    /// another version.
    fn open(conn: &mut Connection) -> Result<Cursor<P>, Error> {
        let position = match checkpoint::<P>(conn)? {
            Some((version, position)) if version == P::VERSION => position,
            _ => {
                let tx = Savepoint::begin(conn)?;
                P::reset(&tx)?;
                tx.execute(
                    "INSERT OR REPLACE INTO proj_checkpoints (name, version, position) VALUES (?1, ?2, 0)",
                    params![P::NAME, P::VERSION],
                )?;
                tx.commit()?;
                0
            }
        };
        // Kept across batches: an event older than one already met is dropped in memory.
        let memo = Memo { rows: P::Memo::default(), rebuilding: position == 0 };
        Ok(Cursor { position, memo })
    }

    /// Applies `stored` unless the projection already has it; 1 if applied.
    fn apply(
        &mut self,
        tx: &Connection,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<u64, Error> {
        if stored.position <= self.position {
            return Ok(0);
        }
        P::apply(tx, &mut self.memo, stored, event)?;
        Ok(1)
    }

    /// Writes the batch's rows and moves the checkpoint to `last_position`, in `tx`.
    fn finish_batch(&mut self, tx: &Connection, last_position: u64) -> Result<(), Error> {
        if last_position <= self.position {
            return Ok(());
        }
        P::flush(tx, &mut self.memo)?;
        // Cached: run twice in every group commit.
        tx.prepare_cached("UPDATE proj_checkpoints SET position = ?1 WHERE name = ?2")?
            .execute(params![last_position, P::NAME])?;
        self.position = last_position;
        Ok(())
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
        "SELECT e.position, e.kind, e.version, e.payload
         FROM proj_records AS r JOIN events AS e ON e.position = r.position
         WHERE r.kind = ?1 AND r.live ORDER BY r.name",
    )?;
    let rows = statement.query_map([kind.as_str()], read_event)?;
    let mut records = Vec::new();
    for row in rows {
        records.extend(record_of(row?)?);
    }
    Ok(records)
}

pub fn get(conn: &Connection, key: &RecordKey) -> Result<Option<Record>, Error> {
    let row = conn
        .prepare_cached(
            "SELECT e.position, e.kind, e.version, e.payload
             FROM proj_records AS r JOIN events AS e ON e.position = r.position
             WHERE r.kind = ?1 AND r.name = ?2 AND r.live",
        )?
        .query_row(params![key.kind.as_str(), key.name], read_event)
        .optional()?;
    Ok(row.map(record_of).transpose()?.flatten())
}

/// The event a record row points at: its position and its encoding.
fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, Encoded)> {
    Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
}

/// The record an event read by [`read_event`] saved (`None` if it removed one, which a live
/// row never points at).
fn record_of(
    (position, (kind, version, payload)): (u64, Encoded),
) -> Result<Option<Record>, Error> {
    match decode(position, &kind, version, &payload)? {
        Event::Saved(record) => Ok(Some(record)),
        Event::Removed(_) => Ok(None),
    }
}

/// An event of the log decoded, or which position could not be.
fn decode_batch(stored: &[StoredEvent]) -> Result<Vec<Event>, Error> {
    stored
        .iter()
        .map(|stored| decode(stored.position, &stored.kind, stored.version, &stored.payload))
        .collect()
}

fn decode(position: u64, kind: &str, version: u16, payload: &[u8]) -> Result<Event, Error> {
    Event::decode(kind, version, payload).map_err(|source| Error::Decode { position, source })
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

/// The columns [`ConfigLogRow::read`] reads, in its order, from `proj_config_log AS c` joined
/// with its event `e` and the event `b` of the key's previous row (the record before).
const CONFIG_LOG_COLUMNS: &str = "c.position, e.hlc_wall_ms, e.origin, c.actor, c.kind, c.name,
     e.kind, e.version, e.payload, b.position, b.kind, b.version, b.payload";
const CONFIG_LOG_FROM: &str = "proj_config_log AS c
     JOIN events AS e ON e.position = c.position
     LEFT JOIN events AS b ON b.position = c.previous";

pub fn config_log(conn: &Connection, query: &ConfigLogQuery) -> Result<Vec<ConfigLogEntry>, Error> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {CONFIG_LOG_COLUMNS} FROM {CONFIG_LOG_FROM}
         WHERE (?1 IS NULL OR c.actor = ?1) AND (?2 IS NULL OR c.kind = ?2) AND (?3 IS NULL OR c.name = ?3)
           AND (?4 IS NULL OR e.hlc_wall_ms >= ?4) AND (?5 IS NULL OR e.hlc_wall_ms <= ?5) AND (?6 IS NULL OR c.position < ?6)
           AND (?8 IS NULL OR e.origin = ?8)
         ORDER BY c.position DESC LIMIT ?7"
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
        ConfigLogRow::read,
    )?;
    rows.map(|row| row?.entry()).collect()
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
        "SELECT {CONFIG_LOG_COLUMNS} FROM {CONFIG_LOG_FROM}
         WHERE e.origin = ?1 AND c.position > ?2 ORDER BY c.position LIMIT ?3"
    ))?;
    let rows =
        statement.query_map(params![origin.0, after_position, limit as i64], ConfigLogRow::read)?;
    rows.map(|row| row?.entry()).collect()
}

/// An event as stored: its kind, version and payload.
type Encoded = (String, u16, Vec<u8>);

/// A row selected as [`CONFIG_LOG_COLUMNS`], its events still encoded.
struct ConfigLogRow {
    position: u64,
    at_ms: u64,
    origin: Vec<u8>,
    actor: String,
    kind: String,
    name: String,
    /// (kind, version, payload) of the change's event.
    change: Encoded,
    /// The position and the same of the key's previous change, if any.
    previous: Option<(u64, Encoded)>,
}

impl ConfigLogRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConfigLogRow> {
        let previous_position: Option<u64> = row.get(9)?;
        let previous = match previous_position {
            Some(position) => Some((position, (row.get(10)?, row.get(11)?, row.get(12)?))),
            None => None,
        };
        Ok(ConfigLogRow {
            position: row.get(0)?,
            at_ms: row.get(1)?,
            origin: row.get(2)?,
            actor: row.get(3)?,
            kind: row.get(4)?,
            name: row.get(5)?,
            change: (row.get(6)?, row.get(7)?, row.get(8)?),
            previous,
        })
    }

    /// Decodes the events: the records before and after, redacted, as JSON.
    fn entry(self) -> Result<ConfigLogEntry, Error> {
        let (action, after) = redacted(self.position, &self.change)?;
        let before = match &self.previous {
            Some((position, previous)) => redacted(*position, previous)?.1,
            None => None,
        };
        Ok(ConfigLogEntry {
            position: self.position,
            at_ms: self.at_ms,
            origin: hex_of(&self.origin),
            actor: self.actor,
            action: action.to_owned(),
            kind: self.kind,
            name: self.name,
            before,
            after,
        })
    }
}

/// The action of an encoded event and its record, redacted, as JSON (`None` once removed).
fn redacted(
    position: u64,
    (kind, version, payload): &Encoded,
) -> Result<(&'static str, Option<serde_json::Value>), Error> {
    let event = decode(position, kind, *version, payload)?;
    Ok(match event {
        Event::Saved(record) => ("saved", Some(serde_json::to_value(record.redacted())?)),
        Event::Removed(_) => ("removed", None),
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

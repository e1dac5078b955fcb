//! The append-only, hash-chained event log in SQLite. Owns the `events`, `snapshots`,
//! `journal` and `meta` tables of the database file; other crates may add their own tables to
//! the same file (projections do) but never write these.
//!
//! Must not depend on tokio or the network, and must not interpret payloads: an event's
//! payload is opaque bytes with a `kind` and `version` beside it.
//!
//! Durability: WAL with `synchronous=FULL`, one transaction per append call, so an append that
//! returned `Ok` survives `kill -9` and power loss; inside a group commit
//! ([`EventLog::begin_group`]) an append is a savepoint and is durable once
//! [`EventLog::commit_group`] returned `Ok`. Integrity: each (origin, stream) is a chain
//! where every event's hash covers the previous hash and all of the event's fields except its
//! local `position`; [`EventLog::verify`] walks every chain.

use model::{ClusterId, Event, Hlc, PeerId, Scope};
use rusqlite::types::{FromSql, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod replace;
mod transaction;

pub use replace::Replace;
pub use transaction::Savepoint;

/// Schema version this build writes and the highest it reads.
pub const SCHEMA_VERSION: i64 = 1;
/// Snapshots kept; older ones are deleted when a new one is saved.
pub const SNAPSHOTS_KEPT: i64 = 2;
/// The journal keeps at most this many rows; the oldest are trimmed now and then.
pub const JOURNAL_ROWS_MAX: i64 = 100_000;
/// How long a connection waits for a lock held by another connection.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
const APPLICATION_ID: i64 = 0x4241_544e; // "BATN"
const HASH_DOMAIN: &[u8] = b"baton.event.v1";

/// Shared events replicate to every cluster peer; local events (peer-only settings) never do.
/// Each (origin, stream) has its own sequence numbers and hash chain, so a peer can verify
/// another's shared chain without seeing its local events.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Stream {
    Shared = 0,
    Local = 1,
}

impl Stream {
    /// The stream that holds the events of records of `scope`.
    pub fn of(scope: Scope) -> Stream {
        match scope {
            Scope::Shared => Stream::Shared,
            Scope::Local => Stream::Local,
        }
    }

    fn from_i64(value: i64) -> Option<Stream> {
        match value {
            0 => Some(Stream::Shared),
            1 => Some(Stream::Local),
            _ => None,
        }
    }
}

/// SHA-256 digest linking an event to its predecessor.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The `prev_hash` of the first event of every chain.
    pub const ZERO: Hash = Hash([0; 32]);

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An event to append from this peer; the log assigns origin, seq, position and hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewEvent {
    pub stream: Stream,
    pub hlc: Hlc,
    pub actor: String,
    pub kind: String,
    pub version: u16,
    pub payload: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredEvent {
    /// Local insertion order, from 1; differs between peers and is not hashed.
    pub position: u64,
    pub origin: PeerId,
    pub stream: Stream,
    /// From 1 within (origin, stream).
    pub seq: u64,
    pub hlc: Hlc,
    pub actor: String,
    pub kind: String,
    pub version: u16,
    pub payload: Vec<u8>,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl StoredEvent {
    /// Whether this event, decoded as `event`, is in the stream its record kind's scope names.
    /// One that is not was written while its kind had the other scope (the licence was shared
    /// until it became peer-local): it stays in its chain, whose hashes cover it, but no
    /// configuration counts it.
    pub fn in_its_stream(&self, event: &Event) -> bool {
        self.stream == Stream::of(event.scope())
    }

    /// Recomputes this event's hash from its fields and `prev_hash`.
    pub fn compute_hash(&self) -> Hash {
        self.link().compute_hash()
    }

    fn link(&self) -> ChainLink<'_> {
        ChainLink {
            origin: self.origin,
            stream: self.stream,
            seq: self.seq,
            hlc: self.hlc,
            actor: &self.actor,
            kind: &self.kind,
            version: self.version,
            payload: &self.payload,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The hash contract, stable across versions and peers: SHA-256 over a domain tag and
/// length-prefixed, fixed-width fields, so no two different events encode alike.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: Hash,
    origin: PeerId,
    stream: Stream,
    seq: u64,
    hlc: Hlc,
    actor: &str,
    kind: &str,
    version: u16,
    payload: &[u8],
) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    hasher.update(prev_hash.0);
    hasher.update(origin.0);
    hasher.update([stream as u8]);
    hasher.update(seq.to_be_bytes());
    hasher.update(hlc.wall_ms.to_be_bytes());
    hasher.update(hlc.counter.to_be_bytes());
    for field in [actor.as_bytes(), kind.as_bytes()] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.update(version.to_be_bytes());
    hasher.update((payload.len() as u64).to_be_bytes());
    hasher.update(payload);
    Hash(hasher.finalize().into())
}

/// The last event of one chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifyReport {
    pub events: u64,
    pub heads: BTreeMap<(PeerId, Stream), Head>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    pub position: u64,
    pub format: u32,
    pub blob: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Info = 0,
    Warning = 1,
    Error = 2,
}

impl Level {
    fn from_i64(value: i64) -> Level {
        match value {
            0 => Level::Info,
            1 => Level::Warning,
            _ => Level::Error,
        }
    }
}

/// A system event of this peer for its Event Log (never replicated).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewJournalEntry {
    pub at_ms: u64,
    pub level: Level,
    /// Dotted, e.g. `daemon.started`, `login.failed`.
    pub kind: String,
    pub actor: Option<String>,
    pub message: String,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JournalEntry {
    pub id: u64,
    pub at_ms: u64,
    pub level: Level,
    pub kind: String,
    pub actor: Option<String>,
    pub message: String,
}

/// Journal filters; results are newest first, paged with `before_id`.
#[derive(Clone, Default, Debug)]
pub struct JournalQuery {
    pub level_min: Option<Level>,
    pub kind_prefix: Option<String>,
    pub text: Option<String>,
    pub before_id: Option<u64>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Integrity rejections: the input or the file is wrong, retrying will not help.
    #[error("{path} is not a Baton event log")]
    NotABatonLog { path: PathBuf },
    #[error("the event log has schema version {found}; this software reads up to {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("event {origin}/{stream:?}#{seq} does not follow head #{head}")]
    Gap { origin: PeerId, stream: Stream, seq: u64, head: u64 },
    #[error("event {origin}/{stream:?}#{seq} does not chain to the previous event's hash")]
    ChainMismatch { origin: PeerId, stream: Stream, seq: u64 },
    #[error("event {origin}/{stream:?}#{seq} has a hash that does not match its contents")]
    BadHash { origin: PeerId, stream: Stream, seq: u64 },
    #[error(
        "event {origin}/{stream:?}#{seq} differs from the one already stored: the histories forked"
    )]
    Fork { origin: PeerId, stream: Stream, seq: u64 },
    #[error("event {origin}/{stream:?}#{seq} claims to come from this peer")]
    OwnOrigin { origin: PeerId, stream: Stream, seq: u64 },
    #[error("event log is corrupt at {origin}/{stream:?}#{seq}: {reason}")]
    Corrupt { origin: PeerId, stream: Stream, seq: u64, reason: String },
    // Infrastructure failures.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("no randomness for the peer identity: {0}")]
    Random(String),
    #[error("the database is busy; its content was not replaced")]
    ReplaceBusy,
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("SQLite kept journal mode {applied} instead of {wanted} (another connection is open)")]
    JournalModeRefused { wanted: &'static str, applied: String },
    #[error("{path} already exists; the old database is never kept over an earlier copy")]
    SafetyCopyExists { path: PathBuf },
    #[error("{path} already exists; a log is rebuilt into a new file only")]
    RebuildTargetExists { path: PathBuf },
    /// What a rebuild's [`Derive`] said when it failed.
    #[error("deriving from the copied events: {0}")]
    Derive(DeriveError),
}

/// The writable log. One per process; readers use [`open_reader`].
pub struct EventLog {
    conn: Connection,
    path: PathBuf,
    peer_id: PeerId,
    heads: BTreeMap<(PeerId, Stream), Head>,
    last_position: u64,
    /// The greatest HLC of any event held.
    max_hlc: Hlc,
    journal_inserts: u64,
    /// What to restore when an open group commit rolls back.
    group: Option<GroupStart>,
    group_commits: u64,
}

/// The in-memory chain heads when a group commit began.
struct GroupStart {
    heads: BTreeMap<(PeerId, Stream), Head>,
    last_position: u64,
    max_hlc: Hlc,
    /// Opened by [`EventLog::begin_unsynced_group`]: its end puts `synchronous=FULL` back.
    unsynced: bool,
}

/// Makes a log's commits durable from any thread (see [`EventLog::wal_sync`]).
#[derive(Clone, Debug)]
pub struct WalSync {
    /// `None` for a log in memory, which has nothing to sync.
    wal: Option<PathBuf>,
}

impl WalSync {
    /// The fsync of the write-ahead log, where commits go: every commit made before this call
    /// is durable once it returns `Ok`.
    pub fn sync(&self) -> Result<(), Error> {
        let Some(wal) = &self.wal else { return Ok(()) };
        // Opened at each sync, not kept: leaving WAL (a restore) deletes the file, and a kept
        // descriptor would then sync a file nobody writes.
        let synced = std::fs::File::open(wal).and_then(|file| file.sync_data());
        synced.map_err(|source| Error::Io { context: format!("syncing {}", wal.display()), source })
    }
}

fn configure(conn: &Connection) -> Result<(), Error> {
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(transaction::PREPARED_STATEMENTS_CACHED);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// SQLite's page cache per connection: its default.
const CACHE_KIB: i64 = 2_000;
/// The page cache of a rebuild (a restore's staging database): with the default, each batch
/// of a projection's rebuild read and wrote the same pages through the kernel again.
const SCRATCH_CACHE_KIB: i64 = 16 * 1024;

/// See [`EventLog::set_scratch`]. Needs the only connection to the file (leaving WAL does).
fn set_scratch_pragmas(conn: &Connection, scratch: bool) -> Result<(), Error> {
    let (journal_mode, synchronous) = if scratch { ("OFF", "OFF") } else { ("WAL", "FULL") };
    set_journal_mode(conn, journal_mode)?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    let cache_kib = if scratch { SCRATCH_CACHE_KIB } else { CACHE_KIB };
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    Ok(())
}

/// Sets the journal mode; an error when SQLite keeps another (e.g. it cannot leave WAL while
/// another connection has the file open).
fn set_journal_mode(conn: &Connection, wanted: &'static str) -> Result<(), Error> {
    let applied: String =
        conn.pragma_update_and_check(None, "journal_mode", wanted, |row| row.get(0))?;
    if !applied.eq_ignore_ascii_case(wanted) {
        return Err(Error::JournalModeRefused { wanted, applied });
    }
    Ok(())
}

/// Creates the log's tables in an empty database, with its identity.
fn create_schema(tx: &Connection, peer: &[u8; 16]) -> Result<(), Error> {
    tx.execute_batch(SCHEMA)?;
    tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION])?;
    tx.execute("INSERT INTO meta (key, value) VALUES ('peer_id', ?1)", [peer.as_slice()])?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    origin BLOB NOT NULL,
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hlc_wall_ms INTEGER NOT NULL,
    hlc_counter INTEGER NOT NULL,
    actor TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    UNIQUE (origin, stream, seq)
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
-- The last event of each chain, written in the same transaction as the events, so opening
-- the log costs the same whatever the length of its history. Each row also carries the log's
-- greatest HLC when it was written (see `max_hlc_at_open`).
CREATE TABLE chain_heads (
    origin BLOB NOT NULL,
    stream INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    max_hlc_wall_ms INTEGER NOT NULL DEFAULT 0,
    max_hlc_counter INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, stream)
) WITHOUT ROWID;
CREATE TABLE snapshots (position INTEGER PRIMARY KEY, format INTEGER NOT NULL, blob BLOB NOT NULL);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    level INTEGER NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    message TEXT NOT NULL
);
";

impl EventLog {
    /// Opens (creating if absent) the log at `path`. A new log gets a random peer identity.
    pub fn open(path: &Path) -> Result<EventLog, Error> {
        EventLog::open_connection(Connection::open(path)?, path, None)
    }

    /// A log held in memory only, with a chosen identity: for simulations, where many peers
    /// must be created quickly and a seed must reproduce everything, peer ids included.
    pub fn open_in_memory(peer_id: PeerId) -> Result<EventLog, Error> {
        EventLog::open_connection(
            Connection::open_in_memory()?,
            Path::new(":memory:"),
            Some(peer_id),
        )
    }

    fn open_connection(
        conn: Connection,
        path: &Path,
        peer_id: Option<PeerId>,
    ) -> Result<EventLog, Error> {
        configure(&conn)?;
        EventLog::open_configured(conn, path, peer_id)
    }

    /// [`EventLog::open_connection`] for a connection already configured, whatever its
    /// journal mode.
    fn open_configured(
        mut conn: Connection,
        path: &Path,
        peer_id: Option<PeerId>,
    ) -> Result<EventLog, Error> {
        let application_id: i64 =
            conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
        let has_tables: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table'",
            [],
            |row| row.get(0),
        )?;
        if application_id == 0 && !has_tables {
            let peer = match peer_id {
                Some(PeerId(bytes)) => bytes,
                None => {
                    let mut bytes = [0u8; 16];
                    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
                    bytes
                }
            };
            let tx = conn.transaction()?;
            create_schema(&tx, &peer)?;
            tx.commit()?;
        } else if application_id != APPLICATION_ID {
            return Err(Error::NotABatonLog { path: path.to_path_buf() });
        }
        let found: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| {
                row.get(0)
            })?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        let peer: Vec<u8> =
            conn.query_row("SELECT value FROM meta WHERE key = 'peer_id'", [], |row| row.get(0))?;
        let peer_id =
            PeerId(peer.try_into().map_err(|_| Error::NotABatonLog { path: path.to_path_buf() })?);
        let heads = recorded_heads(&conn)?;
        let last_position = last_position(&conn)?;
        let max_hlc = max_hlc_at_open(&mut conn)?;
        Ok(EventLog {
            conn,
            path: path.to_path_buf(),
            peer_id,
            heads,
            last_position,
            max_hlc,
            journal_inserts: 0,
            group: None,
            group_commits: 0,
        })
    }

    /// Writes a new database at `target` (which must not exist) holding only the log's own
    /// content read from the database file at `source`: events, chain heads, journal, identity
    /// and cluster id. Nothing else of `source` is carried over — snapshots, projection
    /// tables, views, triggers, indexes — so a file from outside (a backup) cannot bring state
    /// its events do not prove: whatever is derived is derived again from the copy. `source` is
    /// read as data only.
    ///
    /// Every event is verified as it is copied, as [`EventLog::verify`] would walk the copy
    /// (which it no longer needs): the report is the copy's. The log's greatest HLC is taken
    /// from the events copied, never from the figure `source` claims.
    pub fn rebuild_from(source: &Path, target: &Path) -> Result<(EventLog, VerifyReport), Error> {
        EventLog::rebuild_from_deriving(source, target, &mut |_, _| Ok(()))
    }

    /// [`EventLog::rebuild_from`], handing `derive` each batch of events once they are
    /// verified and copied, in position order, on the new database inside the rebuild's
    /// transaction: what it writes from them (projections) is committed with them, and they
    /// are never read back. The events are read and verified on a thread of their own while
    /// the previous batch is written and derived. A failed `derive` fails the rebuild.
    pub fn rebuild_from_deriving(
        source: &Path,
        target: &Path,
        derive: &mut Derive<'_>,
    ) -> Result<(EventLog, VerifyReport), Error> {
        let not_a_log = || Error::NotABatonLog { path: source.to_path_buf() };
        if target.exists() {
            return Err(Error::RebuildTargetExists { path: target.to_path_buf() });
        }
        let source_name = source.to_str().ok_or_else(not_a_log)?;
        let mut conn = Connection::open(target)?;
        configure(&conn)?;
        // Built without a journal or an fsync: the target is new and the caller discards it on
        // failure (so a failure leaves its transaction open); it goes back to WAL and full
        // sync below, and the caller fsyncs it once.
        set_scratch_pragmas(&conn, true)?;
        // Views and triggers of the source run no function with side effects.
        conn.pragma_update(None, "trusted_schema", "OFF")?;
        conn.execute("ATTACH DATABASE ?1 AS source", [source_name])?;
        let peer = check_rebuild_source(&conn, source)?;
        conn.execute_batch("BEGIN")?;
        create_schema(&conn, &peer)?;
        let walk = copy_verified_events(&mut conn, source, derive)?;
        conn.execute_batch(
            "INSERT INTO main.chain_heads (origin, stream, seq, hash)
                 SELECT origin, stream, seq, hash FROM source.chain_heads;
             INSERT INTO main.journal (id, at_ms, level, kind, actor, message)
                 SELECT id, at_ms, level, kind, actor, message FROM source.journal ORDER BY id;
             INSERT INTO main.meta (key, value)
                 SELECT key, value FROM source.meta WHERE key = 'cluster_id';",
        )?;
        // Read at every open from the heads (see `max_hlc_at_open`), which would otherwise
        // scan the events for it.
        conn.execute(
            "UPDATE main.chain_heads SET max_hlc_wall_ms = ?1, max_hlc_counter = ?2",
            params![walk.max_hlc.wall_ms, walk.max_hlc.counter],
        )?;
        let report = walk.finish(&recorded_heads(&conn)?)?;
        conn.execute_batch("COMMIT")?;
        conn.execute("DETACH DATABASE source", [])?;
        set_scratch_pragmas(&conn, false)?;
        Ok((EventLog::open_connection(conn, target, None)?, report))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn in_memory(&self) -> bool {
        self.path == Path::new(":memory:")
    }

    /// Whether a failed [`EventLog::replace_with`] left this log on the placeholder connection
    /// it holds while its file is swapped, not on its file: nothing written then is kept.
    pub fn lost_its_file(&self) -> bool {
        !self.in_memory() && self.conn.path().is_none_or(str::is_empty)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// For projections, which keep their own tables in this file.
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn heads(&self) -> &BTreeMap<(PeerId, Stream), Head> {
        &self.heads
    }

    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    /// The cluster whose configuration history this log's shared stream belongs to; `None`
    /// for a peer that has never clustered or was placed in standalone mode.
    pub fn cluster_id(&self) -> Result<Option<ClusterId>, Error> {
        let value: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'cluster_id'", [], |row| row.get(0))
            .optional()?;
        value
            .map(|bytes| bytes.try_into().map(ClusterId).map_err(|_| corrupt_row("cluster_id")))
            .transpose()
    }

    pub fn set_cluster_id(&mut self, cluster: Option<ClusterId>) -> Result<(), Error> {
        match cluster {
            Some(ClusterId(bytes)) => self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('cluster_id', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [bytes.as_slice()],
            )?,
            None => self.conn.execute("DELETE FROM meta WHERE key = 'cluster_id'", [])?,
        };
        Ok(())
    }

    /// Writes a consistent copy of the whole database to `path` (which must not exist), while
    /// this connection stays usable: the safety copy kept before the content is replaced.
    pub fn copy_to(&self, path: &Path) -> Result<(), Error> {
        let target = path.to_str().ok_or_else(|| Error::NotABatonLog { path: path.into() })?;
        self.conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    /// Scratch mode (`true`) drops the rollback journal and every fsync, for a file that is
    /// discarded on any failure (a restore's staging database while it is built): a rebuild
    /// then writes each page once instead of to the WAL and again at the checkpoint, and pays
    /// no fsync per batch. `false` puts back WAL and full sync; make the file durable afterwards
    /// (fsync it) if it must survive a crash.
    pub fn set_scratch(&mut self, scratch: bool) -> Result<(), Error> {
        set_scratch_pragmas(&self.conn, scratch)
    }

    /// Keeps SQLite's temporary files in memory. The one that matters is the sub-journal: the
    /// first change of a page inside a savepoint (every append and projection batch of a
    /// group commit is one) copies the page there, which was a write to a temporary file, and
    /// the kernel zeroing its pages, for every page of every commit. It holds at most the pages
    /// one group changes. Not for a connection that builds indexes over a long history: their
    /// sort files would be in memory too.
    pub fn set_temporary_files_in_memory(&mut self) -> Result<(), Error> {
        self.conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(())
    }

    /// Opens a group commit: the appends, snapshots and projection rows written until
    /// [`EventLog::commit_group`] share one transaction and one fsync. Each append inside it
    /// is a savepoint, so it is still all or nothing, but nothing is durable before the group
    /// commits.
    pub fn begin_group(&mut self) -> Result<(), Error> {
        transaction::run(&self.conn, "BEGIN IMMEDIATE")?;
        self.group = Some(self.group_start(false));
        Ok(())
    }

    /// [`EventLog::begin_group`] for a group whose commit does not wait for the disk: readers
    /// see it at once, and it is durable once [`EventLog::sync`] returned `Ok`. For events
    /// another peer already holds durably (replicated ones), so they show here one fsync
    /// sooner. A crash before the sync loses a suffix of such groups, never a part of one (the
    /// WAL's frames are checksummed). The group's end makes the connection synchronous again.
    pub fn begin_unsynced_group(&mut self) -> Result<(), Error> {
        // SQLite refuses to change it inside a transaction.
        transaction::run(&self.conn, "PRAGMA synchronous = NORMAL")?;
        if let Err(error) = transaction::run(&self.conn, "BEGIN IMMEDIATE") {
            let _ = transaction::run(&self.conn, "PRAGMA synchronous = FULL");
            return Err(error.into());
        }
        self.group = Some(self.group_start(true));
        Ok(())
    }

    fn group_start(&self, unsynced: bool) -> GroupStart {
        let (heads, last_position, max_hlc) =
            (self.heads.clone(), self.last_position, self.max_hlc);
        GroupStart { heads, last_position, max_hlc, unsynced }
    }

    /// Ends the open group's bookkeeping; the synchronous setting goes back to FULL if the
    /// group had lowered it.
    fn end_group(&mut self) -> Option<GroupStart> {
        let start = self.group.take()?;
        if start.unsynced {
            // Refused only if SQLite cannot run a pragma at all; the next open sets it again.
            let _ = transaction::run(&self.conn, "PRAGMA synchronous = FULL");
        }
        Some(start)
    }

    /// Commits the open group (the fsync). On failure the group is rolled back and the log is
    /// as it was before [`EventLog::begin_group`].
    pub fn commit_group(&mut self) -> Result<(), Error> {
        match transaction::run(&self.conn, "COMMIT") {
            Ok(()) => {
                self.end_group();
                self.group_commits += 1;
                Ok(())
            }
            Err(error) => {
                self.rollback_group();
                Err(error.into())
            }
        }
    }

    /// Makes every commit so far durable: the fsync an unsynced group's commit left out (of
    /// the write-ahead log, where commits go).
    pub fn sync(&self) -> Result<(), Error> {
        self.wal_sync().sync()
    }

    /// What [`EventLog::sync`] does, for another thread: the writer's commits are made durable
    /// while it writes the next group.
    pub fn wal_sync(&self) -> WalSync {
        let wal =
            (!self.in_memory()).then(|| PathBuf::from(format!("{}-wal", self.path.display())));
        WalSync { wal }
    }

    /// Undoes everything written since [`EventLog::begin_group`], on disk and in memory.
    pub fn rollback_group(&mut self) {
        // An error means SQLite already rolled back (e.g. after an I/O error): nothing to undo.
        let _ = transaction::run(&self.conn, "ROLLBACK");
        if let Some(start) = self.end_group() {
            self.heads = start.heads;
            self.last_position = start.last_position;
            self.max_hlc = start.max_hlc;
        }
    }

    /// Group commits made through this handle (for tests and the benchmark).
    pub fn group_commits(&self) -> u64 {
        self.group_commits
    }

    /// Appends events from this peer in one transaction (a savepoint inside a group): all or
    /// none are stored.
    pub fn append(&mut self, events: &[NewEvent]) -> Result<Vec<StoredEvent>, Error> {
        let mut heads = self.heads.clone();
        let mut stored = Vec::with_capacity(events.len());
        let tx = Savepoint::begin(&self.conn)?;
        for (offset, event) in events.iter().enumerate() {
            let head = heads.entry((self.peer_id, event.stream)).or_default();
            let mut record = StoredEvent {
                position: self.last_position + 1 + offset as u64,
                origin: self.peer_id,
                stream: event.stream,
                seq: head.seq + 1,
                hlc: event.hlc,
                actor: event.actor.clone(),
                kind: event.kind.clone(),
                version: event.version,
                payload: event.payload.clone(),
                prev_hash: head.hash,
                hash: Hash::ZERO,
            };
            record.hash = record.compute_hash();
            assert_eq!(record.seq, head.seq + 1, "sequence numbers are contiguous");
            assert_eq!(record.prev_hash, head.hash, "each event chains to its head");
            insert(&tx, &record)?;
            *head = Head { seq: record.seq, hash: record.hash };
            stored.push(record);
        }
        let max_hlc = greatest_hlc(self.max_hlc, &stored);
        write_changed_heads(&tx, &self.heads, &heads, max_hlc)?;
        tx.commit()?;
        self.heads = heads;
        self.last_position += events.len() as u64;
        self.max_hlc = max_hlc;
        Ok(stored)
    }

    /// Stores events that other peers originated (replication). Each must extend its chain
    /// exactly; events already held are skipped. All or none are stored.
    pub fn append_remote(&mut self, events: Vec<StoredEvent>) -> Result<Vec<StoredEvent>, Error> {
        let mut heads = self.heads.clone();
        let mut stored = Vec::with_capacity(events.len());
        let tx = Savepoint::begin(&self.conn)?;
        for mut event in events {
            let (origin, stream, seq) = (event.origin, event.stream, event.seq);
            if origin == self.peer_id {
                return Err(Error::OwnOrigin { origin, stream, seq });
            }
            if event.compute_hash() != event.hash {
                return Err(Error::BadHash { origin, stream, seq });
            }
            let head = heads.entry((origin, stream)).or_default();
            if seq <= head.seq {
                let held: Option<Vec<u8>> = tx
                    .prepare_cached(
                        "SELECT hash FROM events WHERE origin = ?1 AND stream = ?2 AND seq = ?3",
                    )?
                    .query_row(params![origin.0, stream as i64, seq], |row| row.get(0))
                    .optional()?;
                if held.as_deref() == Some(event.hash.0.as_slice()) {
                    continue;
                }
                return Err(Error::Fork { origin, stream, seq });
            }
            if seq != head.seq + 1 {
                return Err(Error::Gap { origin, stream, seq, head: head.seq });
            }
            if event.prev_hash != head.hash {
                return Err(Error::ChainMismatch { origin, stream, seq });
            }
            event.position = self.last_position + 1 + stored.len() as u64;
            insert(&tx, &event)?;
            *head = Head { seq, hash: event.hash };
            stored.push(event);
        }
        let max_hlc = greatest_hlc(self.max_hlc, &stored);
        write_changed_heads(&tx, &self.heads, &heads, max_hlc)?;
        tx.commit()?;
        self.heads = heads;
        self.last_position += stored.len() as u64;
        self.max_hlc = max_hlc;
        Ok(stored)
    }

    pub fn read_after(&self, after_position: u64, limit: usize) -> Result<Vec<StoredEvent>, Error> {
        read_after(&self.conn, after_position, limit)
    }

    /// Every event of the given event kinds (`"licence.saved"`) after `after_position`, in
    /// position order, in one pass over that part of the log: for the rare migrations that
    /// look for a few kinds (see [`EventLog::migration_checked_through`]).
    pub fn read_kinds(
        &self,
        kinds: &[&str],
        after_position: u64,
    ) -> Result<Vec<StoredEvent>, Error> {
        let placeholders = vec!["?"; kinds.len()].join(", ");
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ? AND kind IN ({placeholders})
             ORDER BY position"
        ))?;
        let after: &dyn rusqlite::ToSql = &after_position;
        let kinds = kinds.iter().map(|kind| kind as &dyn rusqlite::ToSql);
        let rows = statement.query_map(
            rusqlite::params_from_iter(std::iter::once(after).chain(kinds)),
            row_to_event,
        )?;
        collect(rows)
    }

    /// How far the migration `name` has found nothing to do: no event at or before this
    /// position concerns it (0: nothing noted). The note holds the hash of the event at its
    /// position, so a note that did not come with this content (a log shorter when it was
    /// written, a file swapped in) matches no event and counts as none.
    pub fn migration_checked_through(&self, name: &str) -> Result<u64, Error> {
        let noted: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [migration_key(name)], |row| {
                row.get(0)
            })
            .optional()?;
        let Some((position, hash)) = noted.as_deref().and_then(|note| note.split_first_chunk())
        else {
            return Ok(0);
        };
        let position = u64::from_be_bytes(*position);
        Ok(if self.hash_at(position)?.as_deref() == Some(hash) { position } else { 0 })
    }

    /// Notes that no event up to `position` concerns the migration `name`, so its next check
    /// reads only the events after it; a position with no event is not noted. Kept in
    /// `meta`, which a rebuild from another file does not copy: a restored log is checked
    /// whole once.
    pub fn set_migration_checked_through(
        &mut self,
        name: &str,
        position: u64,
    ) -> Result<(), Error> {
        let Some(hash) = self.hash_at(position)? else { return Ok(()) };
        let note = [position.to_be_bytes().as_slice(), &hash].concat();
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![migration_key(name), note],
        )?;
        Ok(())
    }

    /// The hash of the event at `position`, if there is one.
    fn hash_at(&self, position: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .conn
            .prepare_cached("SELECT hash FROM events WHERE position = ?1")?
            .query_row([position], |row| row.get(0))
            .optional()?)
    }

    /// One chain's events after `after_seq`, in order (for catch-up between peers).
    pub fn read_origin(
        &self,
        origin: PeerId,
        stream: Stream,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Error> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE origin = ?1 AND stream = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"
        ))?;
        let rows = statement
            .query_map(params![origin.0, stream as i64, after_seq, limit as i64], row_to_event)?;
        collect(rows)
    }

    /// Walks every chain from its first event, recomputing every hash.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        walk_chains(&self.conn, &self.heads)
    }

    /// The greatest HLC in the log, so the clock never issues a smaller one after a restart.
    pub fn max_hlc(&self) -> Result<Hlc, Error> {
        Ok(self.max_hlc)
    }

    pub fn save_snapshot(&mut self, position: u64, format: u32, blob: &[u8]) -> Result<(), Error> {
        let tx = Savepoint::begin(&self.conn)?;
        tx.execute(
            "INSERT OR REPLACE INTO snapshots (position, format, blob) VALUES (?1, ?2, ?3)",
            params![position, format, blob],
        )?;
        tx.execute(
            "DELETE FROM snapshots WHERE position NOT IN (SELECT position FROM snapshots ORDER BY position DESC LIMIT ?1)",
            [SNAPSHOTS_KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn latest_snapshot(&self) -> Result<Option<Snapshot>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT position, format, blob FROM snapshots ORDER BY position DESC LIMIT 1",
                [],
                |row| {
                    Ok(Snapshot { position: row.get(0)?, format: row.get(1)?, blob: row.get(2)? })
                },
            )
            .optional()?)
    }

    /// Replaces this log's journal (the Event Log) with `source`'s, rows and ids as they are,
    /// in one transaction. A restore keeps the peer's own Event Log: "log files are not
    /// included in the system backup file", and what happened on this peer stays on record.
    pub fn take_journal_of(&mut self, source: &EventLog) -> Result<(), Error> {
        let mut select = source
            .conn
            .prepare("SELECT id, at_ms, level, kind, actor, message FROM journal ORDER BY id")?;
        let rows = select.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, String>(5)?,
            ))
        })?;
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM journal", [])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO journal (id, at_ms, level, kind, actor, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for row in rows {
                let (id, at_ms, level, kind, actor, message) = row?;
                insert.execute(params![id, at_ms, level, kind, actor, message])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn append_journal(&mut self, entry: &NewJournalEntry) -> Result<u64, Error> {
        self.conn
            .prepare_cached("INSERT INTO journal (at_ms, level, kind, actor, message) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![entry.at_ms, entry.level as i64, entry.kind, entry.actor, entry.message])?;
        let id = self.conn.last_insert_rowid() as u64;
        self.journal_inserts += 1;
        // Trimming on every insert would cost a scan each time; every thousandth is plenty.
        if self.journal_inserts.is_multiple_of(1_000) {
            self.conn
                .execute("DELETE FROM journal WHERE id <= ?1", [id as i64 - JOURNAL_ROWS_MAX])?;
        }
        Ok(id)
    }

    pub fn query_journal(&self, query: &JournalQuery) -> Result<Vec<JournalEntry>, Error> {
        query_journal(&self.conn, query)
    }
}

const COLUMNS: &str = "position, origin, stream, seq, hlc_wall_ms, hlc_counter, actor, kind, version, payload, prev_hash, hash";
/// How many [`COLUMNS`] there are.
const COLUMN_COUNT: usize = 12;

/// Records the chains whose head moved, inside the appending transaction, each with the log's
/// greatest HLC: every commit that appends moves a head, so the greatest over the rows is
/// always the log's (see [`max_hlc_at_open`]).
fn write_changed_heads(
    tx: &Connection,
    before: &BTreeMap<(PeerId, Stream), Head>,
    after: &BTreeMap<(PeerId, Stream), Head>,
    max_hlc: Hlc,
) -> Result<(), Error> {
    for ((origin, stream), head) in after {
        if before.get(&(*origin, *stream)) != Some(head) {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO chain_heads
                     (origin, stream, seq, hash, max_hlc_wall_ms, max_hlc_counter)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                origin.0,
                *stream as i64,
                head.seq,
                head.hash.0,
                max_hlc.wall_ms,
                max_hlc.counter
            ])?;
        }
    }
    Ok(())
}

/// `max_hlc`, or the greatest HLC of `events` if greater.
fn greatest_hlc(max_hlc: Hlc, events: &[StoredEvent]) -> Hlc {
    events.iter().map(|event| event.hlc).fold(max_hlc, Ord::max)
}

/// The log's greatest HLC, read from the chain heads: an index on the events' HLC would find
/// it too, but its upkeep cost a b-tree page in every commit. A log whose heads do not carry
/// it (written before they did, by an older version after a fallback, or rebuilt from a
/// backup, whose own figures are not trusted) gets it from its events once, and the index of
/// earlier versions is dropped.
fn max_hlc_at_open(conn: &mut Connection) -> Result<Hlc, Error> {
    let tx = conn.transaction()?;
    let has_columns: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('chain_heads') WHERE name = 'max_hlc_wall_ms'",
        [],
        |row| row.get(0),
    )?;
    if !has_columns {
        tx.execute_batch(
            "ALTER TABLE chain_heads ADD COLUMN max_hlc_wall_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE chain_heads ADD COLUMN max_hlc_counter INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    let unset: bool = tx.query_row(
        "SELECT count(*) > 0 FROM chain_heads WHERE max_hlc_wall_ms = 0 AND max_hlc_counter = 0",
        [],
        |row| row.get(0),
    )?;
    if unset {
        let events_max: Option<(u64, u32)> = tx
            .query_row(
                "SELECT hlc_wall_ms, hlc_counter FROM events
                 ORDER BY hlc_wall_ms DESC, hlc_counter DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((wall_ms, counter)) = events_max {
            tx.execute(
                "UPDATE chain_heads SET max_hlc_wall_ms = ?1, max_hlc_counter = ?2",
                params![wall_ms, counter],
            )?;
        }
    }
    tx.execute_batch("DROP INDEX IF EXISTS events_hlc")?;
    let max_hlc = tx
        .query_row(
            "SELECT max_hlc_wall_ms, max_hlc_counter FROM chain_heads
             ORDER BY max_hlc_wall_ms DESC, max_hlc_counter DESC LIMIT 1",
            [],
            |row| Ok(Hlc { wall_ms: row.get(0)?, counter: row.get(1)? }),
        )
        .optional()?
        .unwrap_or(Hlc::ZERO);
    tx.commit()?;
    Ok(max_hlc)
}

fn corrupt_row(what: &str) -> Error {
    Error::Corrupt {
        origin: PeerId::default(),
        stream: Stream::Shared,
        seq: 0,
        reason: format!("malformed {what}"),
    }
}

fn insert(tx: &Connection, event: &StoredEvent) -> Result<(), Error> {
    tx.prepare_cached(
        "INSERT INTO events (position, origin, stream, seq, hlc_wall_ms, hlc_counter, actor, kind, version,
                             payload, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        event.position,
        event.origin.0,
        event.stream as i64,
        event.seq,
        event.hlc.wall_ms,
        event.hlc.counter,
        event.actor,
        event.kind,
        event.version,
        event.payload,
        event.prev_hash.0,
        event.hash.0
    ])?;
    Ok(())
}

/// An event's fields as the hash covers them, borrowed from a row selected as [`COLUMNS`].
struct ChainLink<'row> {
    origin: PeerId,
    stream: Stream,
    seq: u64,
    hlc: Hlc,
    actor: &'row str,
    kind: &'row str,
    version: u16,
    payload: &'row [u8],
    prev_hash: Hash,
    hash: Hash,
}

impl<'row> ChainLink<'row> {
    /// A malformed row is corruption rather than a SQLite error.
    fn read(row: &'row rusqlite::Row<'_>) -> Result<ChainLink<'row>, Error> {
        let value = |index: usize| row.get_ref(index).unwrap_or(ValueRef::Null);
        ChainLink::from_values(&std::array::from_fn(value))
    }

    /// From the values of [`COLUMNS`], in its order, as a row or a function call holds them.
    fn from_values(values: &[ValueRef<'row>; COLUMN_COUNT]) -> Result<ChainLink<'row>, Error> {
        let seq = u64::column_result(values[3]).unwrap_or(0);
        let malformed = || Error::Corrupt {
            origin: PeerId::default(),
            stream: Stream::Shared,
            seq,
            reason: "malformed sequence, origin, stream, stamp, version, hash or text".to_owned(),
        };
        let blob = |index: usize| values[index].as_blob().ok();
        let hash = |index: usize| blob(index).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
        let text = |index: usize| values[index].as_str().ok();
        let link = || {
            Some(ChainLink {
                origin: PeerId(blob(1).and_then(|bytes| bytes.try_into().ok())?),
                stream: Stream::from_i64(i64::column_result(values[2]).ok()?)?,
                seq: u64::column_result(values[3]).ok()?,
                hlc: Hlc {
                    wall_ms: u64::column_result(values[4]).ok()?,
                    counter: u32::column_result(values[5]).ok()?,
                },
                actor: text(6)?,
                kind: text(7)?,
                version: u16::column_result(values[8]).ok()?,
                payload: blob(9)?,
                prev_hash: Hash(hash(10)?),
                hash: Hash(hash(11)?),
            })
        };
        link().ok_or_else(malformed)
    }

    fn into_stored(self, position: u64) -> StoredEvent {
        StoredEvent {
            position,
            origin: self.origin,
            stream: self.stream,
            seq: self.seq,
            hlc: self.hlc,
            actor: self.actor.to_owned(),
            kind: self.kind.to_owned(),
            version: self.version,
            payload: self.payload.to_vec(),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }

    fn compute_hash(&self) -> Hash {
        event_hash(
            self.prev_hash,
            self.origin,
            self.stream,
            self.seq,
            self.hlc,
            self.actor,
            self.kind,
            self.version,
            self.payload,
        )
    }
}

/// The `meta` key of a migration's note (see [`EventLog::migration_checked_through`]).
fn migration_key(name: &str) -> String {
    format!("migration_checked_through:{name}")
}

/// Reads a row; a malformed row is reported as corruption rather than a SQLite error. Only
/// the texts and the payload are copied out of the row.
fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredEvent, Error>> {
    let position = row.get(0)?;
    Ok(ChainLink::read(row).map(|link| link.into_stored(position)))
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<Result<StoredEvent, Error>>>,
) -> Result<Vec<StoredEvent>, Error> {
    let mut events = Vec::new();
    for row in rows {
        events.push(row??);
    }
    Ok(events)
}

/// Whether the attached `source`'s `events` is a stored table (not a view, whose
/// expressions, `random()`, would give other values at each read) keyed by position alone:
/// a rebuild reads it twice, once to verify and once to copy, by ranges of positions.
fn source_events_are_stored(conn: &Connection) -> Result<bool, Error> {
    let stored: bool = conn.query_row(
        "SELECT count(*) = 1 FROM source.sqlite_schema WHERE name = 'events' COLLATE NOCASE
             AND type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'",
        [],
        |row| row.get(0),
    )?;
    if !stored {
        return Ok(false);
    }
    let keyed_by_position: bool = conn.query_row(
        "SELECT count(*) = 1 AND sum(name = 'position' AND upper(type) = 'INTEGER') = 1
             FROM pragma_table_info('events', 'source') WHERE pk > 0",
        [],
        |row| row.get(0),
    )?;
    // A key kept in an index of its own (`INTEGER PRIMARY KEY DESC`, `WITHOUT ROWID`) is not
    // the rowid: the index, which a crafted file can make disagree with the table, could
    // serve one read and not the other.
    let key_is_rowid: bool = conn.query_row(
        "SELECT count(*) = 0 FROM pragma_index_list('events', 'source') WHERE origin = 'pk'",
        [],
        |row| row.get(0),
    )?;
    Ok(keyed_by_position && key_is_rowid)
}

/// Checks that the database attached as `source` is a log this software reads, with its
/// events in a stored table; returns its peer identity.
fn check_rebuild_source(conn: &Connection, path: &Path) -> Result<[u8; 16], Error> {
    let not_a_log = || Error::NotABatonLog { path: path.to_path_buf() };
    let application_id: i64 = conn.pragma_query_value(
        Some(rusqlite::DatabaseName::Attached("source")),
        "application_id",
        |row| row.get(0),
    )?;
    if application_id != APPLICATION_ID {
        return Err(not_a_log());
    }
    // A wrong type or a missing row means the file is not a log of ours.
    let found: i64 = conn
        .query_row("SELECT value FROM source.meta WHERE key = 'schema_version'", [], |row| {
            row.get(0)
        })
        .map_err(|_| not_a_log())?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
    }
    let peer: Vec<u8> = conn
        .query_row("SELECT value FROM source.meta WHERE key = 'peer_id'", [], |row| row.get(0))
        .map_err(|_| not_a_log())?;
    let peer: [u8; 16] = peer.try_into().map_err(|_| not_a_log())?;
    if !source_events_are_stored(conn)? {
        return Err(not_a_log());
    }
    Ok(peer)
}

/// What a rebuild hands each batch of copied events to (see
/// [`EventLog::rebuild_from_deriving`]), with the new database's connection.
pub type Derive<'a> = dyn FnMut(&mut Connection, Vec<StoredEvent>) -> Result<(), DeriveError> + 'a;
/// Why a [`Derive`] failed: its own error, reported as [`Error::Derive`].
pub type DeriveError = Box<dyn std::error::Error + Send + Sync>;

/// Events a rebuild reads, verifies and hands over at a time: large, since a rebuild's
/// projections write each record's row once per batch.
const REBUILD_COPY_BATCH_EVENTS: usize = 16_384;
/// Verified batches waiting to be copied, at most: none, since the reader fills the next
/// batch while the copy works on the last, and a queued batch only held memory.
const REBUILD_COPY_QUEUE_BATCHES: usize = 0;

/// Copies `source`'s events into the new database open on `conn` (inside its transaction),
/// handing each batch to `derive` once inserted. A thread of its own reads and verifies them
/// (a [`ChainWalk`]: the values checked are the values copied) while this one writes the
/// previous batch, so the hashing and the reading overlap the writing.
fn copy_verified_events(
    conn: &mut Connection,
    source: &Path,
    derive: &mut Derive<'_>,
) -> Result<ChainWalk, Error> {
    std::thread::scope(|scope| {
        let (sender, batches) = std::sync::mpsc::sync_channel(REBUILD_COPY_QUEUE_BATCHES);
        let reader = std::thread::Builder::new()
            .name("baton-copy".to_owned())
            .spawn_scoped(scope, move || read_verified_events(source, &sender))
            .map_err(|error| Error::Io {
                context: "starting the rebuild's reader".to_owned(),
                source: error,
            })?;
        // Returning drops `batches`: a reader still sending stops at once.
        let copied = insert_and_derive(conn, batches, derive);
        let walk = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A broken chain is reported first: it is the archive's fault, whatever else failed.
        let walk = walk?;
        copied?;
        Ok(walk)
    })
}

/// Copies each verified batch (SQLite copies the rows of its positions from `source`, the
/// reader's checked values: a stored table keyed by position reads the same twice) and hands
/// it to `derive`.
fn insert_and_derive(
    conn: &mut Connection,
    batches: std::sync::mpsc::Receiver<Vec<StoredEvent>>,
    derive: &mut Derive<'_>,
) -> Result<(), Error> {
    for batch in batches {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { continue };
        let copied = conn
            .prepare_cached(&format!(
                "INSERT INTO main.events ({COLUMNS}) SELECT {COLUMNS} FROM source.events NOT INDEXED
                     WHERE position BETWEEN ?1 AND ?2 ORDER BY position"
            ))?
            .execute([first.position, last.position])?;
        if copied != batch.len() {
            return Err(Error::Corrupt {
                origin: first.origin,
                stream: first.stream,
                seq: first.seq,
                reason: "the events copied differ from the events verified".to_owned(),
            });
        }
        derive(conn, batch).map_err(Error::Derive)?;
    }
    Ok(())
}

/// Reads `source`'s events in position order on a connection of its own, walking their
/// chains, and sends them on in batches. Stops early, with the walk so far, when nobody
/// receives any more.
fn read_verified_events(
    source: &Path,
    batches: &std::sync::mpsc::SyncSender<Vec<StoredEvent>>,
) -> Result<ChainWalk, Error> {
    let conn = open_reader(source)?;
    conn.pragma_update(None, "trusted_schema", "OFF")?;
    let mut walk = ChainWalk::default();
    // Both reads go through the table itself, by rowid, never through an index of the file.
    let mut statement =
        conn.prepare(&format!("SELECT {COLUMNS} FROM events NOT INDEXED ORDER BY position"))?;
    let mut rows = statement.query([])?;
    let mut batch = Vec::with_capacity(REBUILD_COPY_BATCH_EVENTS);
    while let Some(row) = rows.next()? {
        // Not a number: 0, which the walk refuses as out of order.
        let position = row.get_ref(0).ok().and_then(|value| i64::column_result(value).ok());
        let position = position.unwrap_or(0);
        let link = ChainLink::read(row)?;
        walk.step(position, &link)?;
        // The walk refuses positions that are not above the previous one, so from 1.
        batch.push(link.into_stored(position.unsigned_abs()));
        if batch.len() == REBUILD_COPY_BATCH_EVENTS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(REBUILD_COPY_BATCH_EVENTS));
            if batches.send(full).is_err() {
                return Ok(walk);
            }
        }
    }
    if !batch.is_empty() {
        // Unreceived only when the copy failed, which it reports.
        let _ = batches.send(batch);
    }
    Ok(walk)
}

/// Walks every chain of the database open on `conn` (a reader) from its first event,
/// recomputing every hash, in one read transaction so a concurrent write cannot look like a
/// broken chain.
pub fn verify(conn: &Connection) -> Result<VerifyReport, Error> {
    let read = conn.unchecked_transaction()?;
    let report = walk_chains(&read, &recorded_heads(&read)?)?;
    read.finish()?;
    Ok(report)
}

/// The chain heads as the database records them.
fn recorded_heads(conn: &Connection) -> Result<BTreeMap<(PeerId, Stream), Head>, Error> {
    let mut heads = BTreeMap::new();
    {
        let mut statement = conn.prepare("SELECT origin, stream, seq, hash FROM chain_heads")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, u64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        for row in rows {
            let (origin, stream, seq, hash) = row?;
            let origin = PeerId(origin.try_into().map_err(|_| corrupt_row("origin"))?);
            let stream = Stream::from_i64(stream).ok_or_else(|| corrupt_row("stream"))?;
            heads.insert(
                (origin, stream),
                Head { seq, hash: Hash(hash.try_into().map_err(|_| corrupt_row("hash"))?) },
            );
        }
    }
    Ok(heads)
}

/// Every chain from its first event against `recorded`, the heads where they must end.
///
/// Reads the table in position order, every chain at once: a chain's events are appended in
/// sequence, so each is met in order, and the table is read front to back instead of through
/// the chain index (a lookup per event). Columns are hashed where SQLite holds them, not copied.
fn walk_chains(
    conn: &Connection,
    recorded: &BTreeMap<(PeerId, Stream), Head>,
) -> Result<VerifyReport, Error> {
    let mut walk = ChainWalk::default();
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM events ORDER BY position"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        walk.step(row.get(0)?, &ChainLink::read(row)?)?;
    }
    walk.finish(recorded)
}

/// Every chain checked event by event, in position order: what [`walk_chains`] reads, and
/// what [`EventLog::rebuild_from`] checks as it copies.
#[derive(Default)]
struct ChainWalk {
    heads: BTreeMap<(PeerId, Stream), Head>,
    events: u64,
    last_position: i64,
    max_hlc: Hlc,
}

impl ChainWalk {
    fn step(&mut self, position: i64, link: &ChainLink<'_>) -> Result<(), Error> {
        let head = self.heads.entry((link.origin, link.stream)).or_default();
        let fail = |reason: &str| Error::Corrupt {
            origin: link.origin,
            stream: link.stream,
            seq: link.seq,
            reason: reason.to_owned(),
        };
        // Only a rebuild's source could hold two rows at one position (its `events` need not
        // be keyed by it); a chain met in another order than the positions is refused too.
        if position <= self.last_position {
            return Err(fail("events out of position order"));
        }
        if link.seq != head.seq + 1 {
            return Err(fail("sequence number out of order"));
        }
        if link.prev_hash != head.hash {
            return Err(fail("does not chain to the previous event"));
        }
        if link.compute_hash() != link.hash {
            return Err(fail("contents do not match the stored hash"));
        }
        *head = Head { seq: link.seq, hash: link.hash };
        self.events += 1;
        self.last_position = position;
        self.max_hlc = self.max_hlc.max(link.hlc);
        Ok(())
    }

    /// The recorded heads must be exactly where the chains end: a missing tail is corruption
    /// even if what remains chains correctly.
    fn finish(self, recorded: &BTreeMap<(PeerId, Stream), Head>) -> Result<VerifyReport, Error> {
        for ((origin, stream), expected) in recorded {
            if self.heads.get(&(*origin, *stream)) != Some(expected) {
                return Err(Error::Corrupt {
                    origin: *origin,
                    stream: *stream,
                    seq: expected.seq,
                    reason: "the chain ends before its recorded head".to_owned(),
                });
            }
        }
        Ok(VerifyReport { events: self.events, heads: self.heads })
    }
}

/// Opens a read-only connection for concurrent readers (WAL lets them read while the writer
/// appends).
pub fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

/// Events after `after_position`, in position order, at most `limit`.
pub fn read_after(
    conn: &Connection,
    after_position: u64,
    limit: usize,
) -> Result<Vec<StoredEvent>, Error> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
    ))?;
    let rows = statement.query_map(params![after_position, limit as i64], row_to_event)?;
    collect(rows)
}

pub fn last_position(conn: &Connection) -> Result<u64, Error> {
    Ok(conn.query_row("SELECT coalesce(max(position), 0) FROM events", [], |row| row.get(0))?)
}

/// Journal rows after `after_id`, oldest first, at most `limit`: for a reader that follows
/// the journal (the syslog forwarder).
pub fn journal_after(
    conn: &Connection,
    after_id: u64,
    limit: usize,
) -> Result<Vec<JournalEntry>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT id, at_ms, level, kind, actor, message FROM journal WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![after_id, limit as i64], journal_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest journal row's id, 0 when empty.
pub fn last_journal_id(conn: &Connection) -> Result<u64, Error> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM journal", [], |row| row.get(0))?)
}

fn journal_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JournalEntry> {
    Ok(JournalEntry {
        id: row.get(0)?,
        at_ms: row.get(1)?,
        level: Level::from_i64(row.get(2)?),
        kind: row.get(3)?,
        actor: row.get(4)?,
        message: row.get(5)?,
    })
}

pub fn query_journal(conn: &Connection, query: &JournalQuery) -> Result<Vec<JournalEntry>, Error> {
    let mut statement = conn.prepare_cached(
        "SELECT id, at_ms, level, kind, actor, message FROM journal
         WHERE level >= ?1 AND (?2 IS NULL OR substr(kind, 1, length(?2)) = ?2)
           AND (?3 IS NULL OR instr(lower(message), lower(?3)) > 0 OR instr(lower(coalesce(actor, '')), lower(?3)) > 0)
           AND (?4 IS NULL OR id < ?4)
         ORDER BY id DESC LIMIT ?5",
    )?;
    let rows = statement.query_map(
        params![
            query.level_min.unwrap_or(Level::Info) as i64,
            query.kind_prefix,
            query.text,
            query.before_id,
            query.limit.max(1) as i64
        ],
        journal_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests;

//! Backups and restores of this peer through the admin API, over the `backup` crate.
//!
//! A backup is copied from a read connection (the writer keeps serving) and streamed to the
//! client as it is produced. A restore is streamed in, staged and verified aside
//! (`backup::stage_restore`: refusals change nothing), then applied in the running daemon:
//!
//! 1. the replaced TLS files are copied to `pre-restore-<ms>.files/`, the restored ones are
//!    moved out of the staging directory to `restore-files/`, and `restore-pending` (a small
//!    journal naming the restore and its files) is written and renamed into place;
//! 2. the writer swaps the database content in one step (`Store::restore_from`), the old one
//!    kept as `pre-restore-<ms>.db`; with the readers paused, the staged file is renamed over
//!    the database and nothing is copied; the restored Event Log holds a `restore.applied`
//!    entry naming the restore — **the commit point**;
//! 3. each restored TLS file is renamed over the current one, then `restore-pending`,
//!    `restore-files/` and the staging directory go, and the listener's TLS identity is
//!    reloaded.
//!
//! At start-up [`recover`] finishes or forgets an interrupted restore: with `restore-pending`
//! present, the files are moved in if the database holds that restore's `restore.applied`
//! entry (after the commit point), and left as they were otherwise. Either way the peer has the
//! old state or the new one, never a mix.

use crate::base::journal::EntryKind;
use crate::store::{Readers, StoreError, Writer};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a restore waits for the reads in flight to end before it copies the restored
/// content beside them instead (see `Readers::pause`).
pub const READERS_PAUSE_WAIT_MS: u64 = 1_000;
/// Where a restore is staged inside the data directory (same file system, so renames work).
pub const STAGING_DIR: &str = "restore-staging";
/// Where the web's Backup page keeps an uploaded backup, verified and unpacked, until the
/// operator confirms the restore.
pub const PREVIEW_DIR: &str = "restore-preview";
/// Present only while a verified restore is being applied; see the module documentation.
pub const PENDING_FILE: &str = "restore-pending";
/// The restored extra files wait here (taken out of the staging directory, which the backup
/// crate removes when its `Staged` is dropped) until they are moved into place.
pub const FILES_DIR: &str = "restore-files";
/// Folder of the data directory whose files (the TLS identity) go into every backup.
pub const TLS_DIR: &str = "tls";
/// The start of the scratch folders `backup::write_backup` makes in the data directory.
const BACKUP_SCRATCH_PREFIX: &str = "baton-backup-";
/// Bytes per chunk of a streamed backup.
pub const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks of a streamed backup waiting for the client; the backup pauses while it is full.
pub const STREAM_QUEUE_CHUNKS: usize = 16;
/// Largest restore upload: the largest database the backup crate accepts plus every extra
/// file (an archive is compressed, so it is never larger than this in practice).
pub const RESTORE_BODY_BYTES_MAX: u64 = backup::DATABASE_SIZE_MAX_BYTES
    + backup::EXTRA_FILES_MAX as u64 * backup::EXTRA_FILE_SIZE_MAX_BYTES;

/// The one backup or restore that may run at a time, and its progress for the API.
#[derive(Default)]
pub struct Operations {
    running: Arc<tokio::sync::Mutex<()>>,
    progress: Arc<Mutex<Option<OperationProgress>>>,
    /// How the last backup (by hand or scheduled) ended, kept past a later restore.
    last_backup: Arc<Mutex<Option<BackupResult>>>,
}

/// How a backup ended, for the metrics endpoint.
#[derive(Clone, Copy, Debug)]
pub struct BackupResult {
    pub succeeded: bool,
    pub finished_ms: u64,
}

pub use ::api::{OperationKind, OperationProgress};

/// Proof that this caller holds the single operation slot; reports progress while it runs.
pub struct Operation {
    _slot: tokio::sync::OwnedMutexGuard<()>,
    progress: Arc<Mutex<Option<OperationProgress>>>,
    last_backup: Arc<Mutex<Option<BackupResult>>>,
}

impl Operations {
    /// Starts `operation` unless another one runs.
    pub fn begin(&self, operation: OperationKind, now_ms: u64) -> Option<Operation> {
        let slot = self.running.clone().try_lock_owned().ok()?;
        let started = OperationProgress {
            operation,
            running: true,
            done_bytes: 0,
            total_bytes: 0,
            started_ms: now_ms,
            outcome: None,
        };
        *crate::base::sync::lock(&self.progress) = Some(started);
        let (progress, last_backup) = (self.progress.clone(), self.last_backup.clone());
        Some(Operation { _slot: slot, progress, last_backup })
    }

    pub fn progress(&self) -> Option<OperationProgress> {
        crate::base::sync::lock(&self.progress).clone()
    }

    pub fn last_backup(&self) -> Option<BackupResult> {
        *crate::base::sync::lock(&self.last_backup)
    }
}

impl Operation {
    pub fn report(&self, progress: backup::Progress) {
        if let Some(current) = crate::base::sync::lock(&self.progress).as_mut() {
            current.done_bytes = progress.done_bytes;
            current.total_bytes = progress.total_bytes;
        }
    }

    pub fn finish(self, outcome: Result<(), String>) {
        if let Some(current) = crate::base::sync::lock(&self.progress).as_mut() {
            if current.operation != OperationKind::Restore {
                let finished_ms = crate::base::clock::now_ms();
                let result = BackupResult { succeeded: outcome.is_ok(), finished_ms };
                *crate::base::sync::lock(&self.last_backup) = Some(result);
            }
            current.running = false;
            current.outcome = Some(outcome.err().unwrap_or_else(|| "ok".to_owned()));
        }
    }
}

/// The TLS directory's regular files, as extra files of a backup.
pub fn tls_extra_files(data_dir: &Path) -> io::Result<Vec<backup::ExtraFile>> {
    let mut files = Vec::new();
    let dir = data_dir.join(TLS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        files.push(backup::ExtraFile { name: format!("{TLS_DIR}/{name}"), source: entry.path() });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Writes a backup of the running daemon's data directory into `output`: the database copied
/// from a read connection (the writer keeps serving) and the TLS files. Blocking.
pub fn write_backup_of(
    data_dir: &Path,
    serial: &str,
    created_at_ms: u64,
    password: Option<&str>,
    output: impl Write,
    operation: &Operation,
) -> Result<backup::Manifest, String> {
    let extra_files = tls_extra_files(data_dir).map_err(|e| format!("TLS files: {e}"))?;
    let conn = eventlog::open_reader(&data_dir.join(crate::store::DATABASE_FILE))
        .map_err(|e| e.to_string())?;
    let options = backup::BackupOptions {
        software_version: crate::base::version::software_version(),
        hardware_serial: serial,
        created_at_ms,
        extra_files: &extra_files,
        password,
        kdf: backup::KdfParams::RECOMMENDED,
        scratch_dir: data_dir,
    };
    let (manifest, _) = backup::write_backup(&conn, &options, output, &mut |p| operation.report(p))
        .map_err(|e| e.to_string())?;
    Ok(manifest)
}

// ---- scheduled backups ---------------------------------------------------------------------

/// How often the scheduler checks whether a backup is due.
pub const SCHEDULE_POLL_MS: u64 = 5_000;
/// After a failed scheduled backup, the next attempt waits this long (not every poll).
pub const SCHEDULE_RETRY_MS: u64 = 15 * 60 * 1000;

/// Runs the `backup_schedule` record: when enabled and the newest backup of this machine in
/// its folder is older than `interval_hours` (or there is none), writes a new one (aside, then
/// renamed) and deletes the oldest beyond `keep_count`. Only files named as backups of this
/// machine are ever counted or deleted.
pub fn spawn_scheduler(app: Arc<super::App>, tasks: &crate::base::tasks::Tasks) {
    let shutdown = tasks.shutdown().clone();
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(SCHEDULE_POLL_MS));
        let mut failed_at_ms: Option<u64> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now_ms = crate::base::clock::now_ms();
            if failed_at_ms.is_some_and(|at| now_ms.saturating_sub(at) < SCHEDULE_RETRY_MS) {
                continue;
            }
            let round = tokio::task::spawn_blocking({
                let app = app.clone();
                move || scheduled_backup(&app, now_ms)
            })
            .await;
            let outcome = match round {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!(%error, "the backup scheduler panicked");
                    continue;
                }
            };
            match outcome {
                Ok(None) => failed_at_ms = None,
                Ok(Some((name, removed))) => {
                    failed_at_ms = None;
                    app.alarms.backup_outcome(Ok(()));
                    app.writer.journal(scheduler_entry(
                        eventlog::Level::Info,
                        EntryKind::BackupScheduled,
                        format!("scheduled backup {name} written; {removed} older ones removed"),
                    ));
                }
                Err(message) => {
                    failed_at_ms = Some(now_ms);
                    tracing::error!(%message, "scheduled backup failed");
                    app.alarms.backup_outcome(Err(message.clone()));
                    app.writer.journal(scheduler_entry(
                        eventlog::Level::Error,
                        EntryKind::BackupFailed,
                        format!("scheduled backup failed (next attempt in 15 minutes): {message}"),
                    ));
                }
            }
        }
    });
}

fn scheduler_entry(
    level: eventlog::Level,
    kind: EntryKind,
    message: String,
) -> eventlog::NewJournalEntry {
    crate::base::journal::entry(level, kind, Some("scheduler"), message)
}

/// One check; `Ok(Some((file name, backups removed)))` when a backup was written.
fn scheduled_backup(app: &super::App, now_ms: u64) -> Result<Option<(String, usize)>, String> {
    let key = model::RecordKey::singleton(model::RecordKind::BackupSchedule);
    let Some(model::Record::BackupSchedule(schedule)) = super::records::current(app, key) else {
        return Ok(None);
    };
    if !schedule.enabled {
        return Ok(None);
    }
    let serial = app.hardware_serial.clone()?;
    let folder = PathBuf::from(&schedule.folder);
    let interval_ms = u64::from(schedule.interval_hours) * 3_600_000;
    let existing = scheduled_backups(&folder, &serial)?;
    if existing.first().is_some_and(|(_, at_ms)| now_ms.saturating_sub(*at_ms) < interval_ms) {
        return Ok(None);
    }
    let Some(operation) = app.operations.begin(OperationKind::ScheduledBackup, now_ms) else {
        return Ok(None);
    };
    let password = Some(schedule.password.as_str()).filter(|p| !p.is_empty());
    let name = backup::file_name(
        crate::base::version::software_version(),
        &serial,
        now_ms,
        password.is_some(),
    );
    let written = std::fs::create_dir_all(&folder)
        .map_err(|e| format!("creating {}: {e}", folder.display()))
        .and_then(|()| {
            crate::base::durable::replace_with(&folder.join(&name), |output| {
                write_backup_of(&app.data_dir, &serial, now_ms, password, output, &operation)
                    .map_err(io::Error::other)
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
    operation.finish(written.clone());
    written?;
    let keep_count = usize::try_from(schedule.keep_count).unwrap_or(usize::MAX);
    let mut removed = 0;
    for (path, _) in scheduled_backups(&folder, &serial)?.into_iter().skip(keep_count) {
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        removed += 1;
    }
    Ok(Some((name, removed)))
}

/// This machine's backups in `folder` (by their file names), newest first by modification time.
pub fn scheduled_backups(folder: &Path, serial: &str) -> Result<Vec<(PathBuf, u64)>, String> {
    // The serial as `backup::file_name` writes it (unsafe characters replaced).
    let sample = backup::file_name("0", serial, 0, false);
    let serial_part = sample.split('_').nth(1).unwrap_or_default();
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("reading {}: {error}", folder.display())),
    };
    let mut backups = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.split('_').nth(1) == Some(serial_part)
            && (name.ends_with("_backup.tar.gz") || name.ends_with("_backup.tar.gz.enc"));
        let Ok(metadata) = entry.metadata() else { continue };
        if !ours || !metadata.is_file() {
            continue;
        }
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        backups.push((entry.path(), modified_ms));
    }
    backups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    Ok(backups)
}

// ---- streaming -----------------------------------------------------------------------------

/// A blocking `Write` that hands chunks to an async response body. When the client goes away
/// the next write fails, which ends the backup.
pub struct ChannelWriter {
    queue: mpsc::Sender<io::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(queue: mpsc::Sender<io::Result<Vec<u8>>>) -> ChannelWriter {
        ChannelWriter { queue, buffer: Vec::with_capacity(STREAM_CHUNK_BYTES) }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(STREAM_CHUNK_BYTES));
        self.queue
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the stream with an error, so the client sees a failed download, not a short file.
    pub fn fail(self, message: String) {
        let _ = self.queue.blocking_send(Err(io::Error::other(message)));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = STREAM_CHUNK_BYTES - self.buffer.len();
        let taken = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..taken]);
        if self.buffer.len() == STREAM_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

// ---- applying a restore --------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
struct Pending {
    restore_id: String,
    /// Extra files' names relative to the data directory; staged under `<staging>/files/`.
    files: Vec<String>,
}

/// What a successful restore did, for the API answer and the Event Log.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub safety_database: PathBuf,
    pub safety_files_dir: Option<PathBuf>,
    pub files: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> ApplyError {
    let context = context.into();
    move |source| ApplyError::Io { context, source }
}

/// Test hook: `BATON_TEST_CRASH_AT=<point>` aborts the process at that point of a restore, as a
/// power cut would. Never set on an appliance.
pub const TEST_CRASH_ENV: &str = "BATON_TEST_CRASH_AT";

fn crash_point(point: &str) {
    if std::env::var(TEST_CRASH_ENV).is_ok_and(|wanted| wanted == point) {
        eprintln!("{TEST_CRASH_ENV}={point}: aborting");
        std::process::abort();
    }
}

/// Applies a verified, staged restore to the running daemon (steps 1–3 of the module
/// documentation). On an error before the commit point nothing changed but the safety copies.
pub async fn apply(
    writer: &Writer,
    readers: &Readers,
    data_dir: &Path,
    staged: &backup::Staged,
    actor: &str,
    now_ms: u64,
) -> Result<Applied, ApplyError> {
    let restore_id = format!(
        "{now_ms}-{}",
        hex::encode(
            // Only makes the restore's name unique; the time already nearly does.
            crate::base::random::bytes::<8>().unwrap_or_default(),
        )
    );
    let files = staged.extra_files();
    crash_point("staged");

    // 1. safety copies of the files about to be replaced, then the pending journal.
    let safety_files_dir = data_dir.join(format!("pre-restore-{now_ms}.files"));
    let copied_any = copy_aside(data_dir, &files, &safety_files_dir)?;
    let files_dir = data_dir.join(FILES_DIR);
    if files_dir.exists() {
        std::fs::remove_dir_all(&files_dir)
            .map_err(io_context(format!("removing {}", files_dir.display())))?;
    }
    let staged_files = staged.staging_dir().join("files");
    if staged_files.exists() {
        std::fs::rename(&staged_files, &files_dir)
            .map_err(io_context(format!("moving {}", staged_files.display())))?;
    }
    let pending = Pending { restore_id: restore_id.clone(), files: files.clone() };
    let pending_json = serde_json::to_vec(&pending).map_err(|error| ApplyError::Io {
        context: "encoding the restore journal".to_owned(),
        source: error.into(),
    })?;
    write_durably(&data_dir.join(PENDING_FILE), &pending_json)?;
    crash_point("pending");

    // 2. the database, in one step: the commit point.
    let note = applied_entry(staged, actor, &restore_id, now_ms);
    let staged_database = staged.staging_dir().join(backup::DATABASE_FILE);
    // The readers step aside for the swap, so the staged file is renamed in and nothing is
    // copied; reads asked meanwhile wait for it. A read that does not end in time only costs
    // the slower copy.
    let readers_paused = readers.pause(READERS_PAUSE_WAIT_MS).await;
    let restored = writer.restore(staged_database, note, now_ms, readers_paused).await;
    let safety_database = match restored {
        Ok(path) => path,
        Err(error) => {
            // Before the commit point: forget the pending restore.
            let _ = std::fs::remove_file(data_dir.join(PENDING_FILE));
            let _ = std::fs::remove_dir_all(&files_dir);
            return Err(error.into());
        }
    };
    crash_point("database");

    // 3. the files, then the cleanup.
    // An error from here on leaves `restore-pending` for the next start-up to finish.
    move_staged_files(&files_dir, data_dir, &files)?;
    crash_point("files");
    std::fs::remove_file(data_dir.join(PENDING_FILE))
        .map_err(io_context("removing the restore journal"))?;
    sync_dir(data_dir)?;
    let _ = std::fs::remove_dir_all(&files_dir);
    Ok(Applied { safety_database, safety_files_dir: copied_any.then_some(safety_files_dir), files })
}

/// Copies the files a restore is about to replace into `safety_dir`; whether there were any.
fn copy_aside(data_dir: &Path, files: &[String], safety_dir: &Path) -> Result<bool, ApplyError> {
    let mut copied_any = false;
    for name in files {
        let current = data_dir.join(name);
        if current.exists() {
            let target = safety_dir.join(name);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_context("creating the safety folder"))?;
            }
            std::fs::copy(&current, &target)
                .map_err(io_context(format!("copying {}", current.display())))?;
            copied_any = true;
        }
    }
    Ok(copied_any)
}

/// The restored Event Log's `restore.applied` entry: the restore's commit point.
fn applied_entry(
    staged: &backup::Staged,
    actor: &str,
    restore_id: &str,
    now_ms: u64,
) -> eventlog::NewJournalEntry {
    let manifest = staged.manifest();
    let message = format!(
        "restored the backup made by {} on serial {} at {} ms (restore {restore_id}); the \
         previous database is kept as pre-restore-{now_ms}.db",
        manifest.software_version, manifest.hardware_serial, manifest.created_at_ms
    );
    let level = eventlog::Level::Warning;
    crate::base::journal::entry_at(now_ms, level, EntryKind::RestoreApplied, Some(actor), message)
}

/// Renames each restored extra file (in `files_dir`) over its current one (atomic per file),
/// then syncs the folders. Files already moved (a recovery running again) are skipped.
fn move_staged_files(
    files_dir: &Path,
    data_dir: &Path,
    files: &[String],
) -> Result<(), ApplyError> {
    for name in files {
        let source = files_dir.join(name);
        if !source.exists() {
            continue;
        }
        let target = data_dir.join(name);
        let parent = target.parent().unwrap_or(data_dir);
        std::fs::create_dir_all(parent)
            .map_err(io_context(format!("creating {}", parent.display())))?;
        std::fs::rename(&source, &target)
            .map_err(io_context(format!("moving {} into place", target.display())))?;
        sync_dir(parent)?;
    }
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ApplyError> {
    crate::base::durable::write(path, bytes)
        .map_err(io_context(format!("writing {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), ApplyError> {
    crate::base::durable::sync_dir(dir).map_err(io_context(format!("syncing {}", dir.display())))
}

/// What [`recover`] did at start-up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recovered {
    Nothing,
    /// An interrupted restore had reached its commit point; its files were put in place.
    Finished,
    /// An interrupted restore had not reached its commit point; the old state stays.
    Abandoned,
}

/// Runs before the log is opened: `backup::recover` for an interrupted offline swap, then the
/// daemon's own pending restore (see the module documentation), then removes a leftover
/// staging directory (a crash while staging) and backup scratch folders.
pub fn recover(data_dir: &Path) -> Result<Recovered, ApplyError> {
    match backup::recover(data_dir) {
        Ok(outcome) => {
            if outcome != backup::Recovery::Nothing {
                tracing::warn!(?outcome, "finished an interrupted offline restore");
            }
        }
        Err(error) => {
            return Err(ApplyError::Io {
                context: "recovering an interrupted restore".to_owned(),
                source: io::Error::other(error.to_string()),
            });
        }
    }
    let staging_dir = data_dir.join(STAGING_DIR);
    let pending_path = data_dir.join(PENDING_FILE);
    let mut outcome = Recovered::Nothing;
    match std::fs::read(&pending_path) {
        Ok(bytes) => {
            let pending: Pending =
                serde_json::from_slice(&bytes).map_err(|error| ApplyError::Io {
                    context: format!("reading {}", pending_path.display()),
                    source: error.into(),
                })?;
            if restore_applied(data_dir, &pending.restore_id)? {
                move_staged_files(&data_dir.join(FILES_DIR), data_dir, &pending.files)?;
                outcome = Recovered::Finished;
            } else {
                outcome = Recovered::Abandoned;
            }
            std::fs::remove_file(&pending_path)
                .map_err(io_context("removing the restore journal"))?;
            sync_dir(data_dir)?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_context("reading the restore journal")(error)),
    }
    let _ = std::fs::remove_file(pending_path.with_extension("partial"));
    // Scratch folders of backups a crash interrupted (`backup::write_backup` names them so).
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(BACKUP_SCRATCH_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    // The web page's verified upload waiting for confirmation does not outlive the daemon.
    let preview_dir = data_dir.join(PREVIEW_DIR);
    for leftover in [staging_dir, data_dir.join(FILES_DIR), preview_dir] {
        if leftover.exists() {
            std::fs::remove_dir_all(&leftover)
                .map_err(io_context(format!("removing {}", leftover.display())))?;
        }
    }
    Ok(outcome)
}

/// Whether the database's Event Log holds the `restore.applied` entry of `restore_id`.
fn restore_applied(data_dir: &Path, restore_id: &str) -> Result<bool, ApplyError> {
    let database = data_dir.join(crate::store::DATABASE_FILE);
    if !database.exists() {
        return Ok(false);
    }
    let failed = |error: eventlog::Error| ApplyError::Io {
        context: "reading the Event Log".to_owned(),
        source: io::Error::other(error.to_string()),
    };
    // A writable connection: it replays a WAL left by the crash.
    let log = eventlog::EventLog::open(&database).map_err(failed)?;
    let entries = log
        .query_journal(&eventlog::JournalQuery {
            level_min: None,
            kind_prefix: Some(EntryKind::RestoreApplied.as_str().to_owned()),
            text: Some(restore_id.to_owned()),
            before_id: None,
            limit: 1,
        })
        .map_err(failed)?;
    Ok(!entries.is_empty())
}

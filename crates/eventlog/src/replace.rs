//! Replacing a log's whole content (a restore, a join): by moving the new file in when this
//! connection is alone on the old one, else by copying every page through the WAL.

use super::{Error, EventLog, set_journal_mode, set_scratch_pragmas};
use rusqlite::Connection;
use std::path::Path;

/// How [`EventLog::replace_with`] may write: beside readers, or alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Replace {
    /// Other connections may be reading: every page is copied through the WAL.
    BesideReaders,
    /// The caller has closed or paused its other connections: if the file is indeed not open
    /// elsewhere, the source's file is renamed over it and no page is copied; else as
    /// [`Replace::BesideReaders`].
    Alone,
}

impl EventLog {
    /// Replaces this database's entire content (events, projections, journal, identity) with
    /// `source`'s, keeping the old content at `keep_as` (which must not exist): readers and a
    /// crash see the old content or the new, never a mix. Used when a peer joins a cluster
    /// and its shared history is replaced by the cluster's, and by a restore. On an error the
    /// content is the old one.
    ///
    /// Through the WAL, the new content is written twice (to the WAL, then by the checkpoint)
    /// and the old one copied once more to `keep_as`. Alone, the old file is kept by a second
    /// name and `source`'s file is renamed over it: nothing is copied (`cargo xtask bench
    /// backup` measures a restore both ways).
    pub fn replace_with(
        &mut self,
        mut source: EventLog,
        replace: Replace,
        keep_as: &Path,
    ) -> Result<(), Error> {
        if keep_as.exists() {
            return Err(Error::SafetyCopyExists { path: keep_as.to_path_buf() });
        }
        let alone = replace == Replace::Alone && self.can_take_file_of(&source);
        if alone && source.leave_wal() && self.leave_wal() {
            return self.move_in(source, keep_as);
        }
        self.copy_to(keep_as)?;
        if let Err(error) = self.copy_in(&source) {
            // The content in place is unchanged (one transaction), so the copy kept of it is
            // not needed: a join retried after such failures left one copy per attempt.
            let _ = std::fs::remove_file(keep_as);
            return Err(error);
        }
        let conn = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        let path = self.path.clone();
        *self = EventLog::open_connection(conn, &path, None)?;
        Ok(())
    }

    /// Writes `source`'s every page over this log's file, in one transaction.
    fn copy_in(&mut self, source: &EventLog) -> Result<(), Error> {
        if !source.in_memory() {
            // A file in scratch mode goes back to WAL, so the copied header says so.
            set_scratch_pragmas(&source.conn, false)?;
        }
        copy_every_page(source, &mut self.conn)
    }

    /// Whether `source`'s file can be renamed over this one's: both on one file system.
    fn can_take_file_of(&self, source: &EventLog) -> bool {
        use std::os::unix::fs::MetadataExt;
        let device = |path: &Path| std::fs::metadata(path).map(|metadata| metadata.dev()).ok();
        !self.in_memory() && !source.in_memory() && {
            let here = device(&self.path);
            here.is_some() && here == device(&source.path)
        }
    }

    /// Leaves WAL for a rollback journal if no other connection has the file open (SQLite
    /// needs it alone to leave WAL, and holds no WAL after): whether it did. Asked without
    /// waiting, so a busy file costs nothing but the slower copy.
    fn leave_wal(&mut self) -> bool {
        let busy_timeout = std::time::Duration::from_millis(super::BUSY_TIMEOUT_MS);
        if self.conn.busy_timeout(std::time::Duration::ZERO).is_err() {
            return false;
        }
        let left = set_journal_mode(&self.conn, "DELETE").is_ok();
        let _ = self.conn.busy_timeout(busy_timeout);
        left
    }

    /// Alone on the file and out of WAL: both files are closed, moved (see [`move_file_in`])
    /// and this log opened again, in WAL, on the new content or, on an error, the old.
    fn move_in(&mut self, source: EventLog, keep_as: &Path) -> Result<(), Error> {
        let (from, to) = (source.path.clone(), self.path.clone());
        drop(source);
        drop(std::mem::replace(&mut self.conn, Connection::open_in_memory()?));
        let moved = move_file_in(&from, &to, keep_as);
        *self = EventLog::open(&to)?;
        moved.map_err(|source| Error::Io {
            context: format!("moving {} to {}", from.display(), to.display()),
            source,
        })
    }
}

/// The old file `to` gets the name `kept` too (a hard link; a copy where links are refused),
/// `from` (written without an fsync, in scratch mode) is made durable and renamed over `to`,
/// and the folder synced: the rename is the commit point. If the folder cannot be synced,
/// the old file is put back, so the content in place is the old one whenever this fails.
fn move_file_in(from: &Path, to: &Path, kept: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(to, kept) {
        Ok(()) => {}
        // Never over an earlier safety copy.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Err(error),
        Err(_) => {
            std::fs::copy(to, kept)?;
        }
    }
    std::fs::File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    let folder = to.parent().unwrap_or(Path::new("."));
    let synced = std::fs::File::open(folder).and_then(|folder| folder.sync_all());
    if synced.is_err() {
        let _ = std::fs::rename(kept, to);
    }
    synced
}

/// Copies every page of `source` into `target` in one transaction (SQLite's backup API).
fn copy_every_page(source: &EventLog, target: &mut Connection) -> Result<(), Error> {
    let backup = rusqlite::backup::Backup::new(&source.conn, target)?;
    // -1: every page in one step, i.e. one transaction on the destination.
    if backup.step(-1)? != rusqlite::backup::StepResult::Done {
        return Err(Error::ReplaceBusy);
    }
    Ok(())
}

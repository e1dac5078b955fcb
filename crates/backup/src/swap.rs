//! The swap of a staged restore into the data directory, and its recovery after a crash.
//!
//! Every step is a `rename` (atomic on one file system) followed by an fsync of the
//! directories involved, and a journal file written before the first step names everything
//! the swap moves. The order of the steps:
//!
//! 1. write `restore-journal` (to a temporary name, fsync, rename, fsync the directory);
//! 2. move the current database aside as `pre-restore-<UTC time>.db`, then its `-wal` and
//!    `-shm` if present (a WAL left beside the new database would be replayed into it);
//! 3. move each current extra file that the archive replaces into `pre-restore-<time>.files/`;
//! 4. move each staged extra file into place;
//! 5. move the staged database into place — **the commit point**;
//! 6. remove the staging directory, then the journal.
//!
//! States [`recover`] can find, decided by the journal and whether the staged database is
//! still in the staging directory:
//! - no journal: no swap was under way (a leftover temporary journal is deleted) → nothing;
//! - journal, staged database still staged (crash within steps 1–4): every move made is undone
//!   by name (extra files back to the staging directory, old files back from the safety
//!   names), the journal is rewritten as `rolled_back`, then the staging directory and the
//!   journal go → the old state;
//! - journal marked `rolled_back` (crash during that cleanup): cleanup only → the old state;
//! - journal, staged database gone (crash after step 5): cleanup only → the new state.
//!
//! Each undo and cleanup step checks what exists first, so recovery interrupted by another
//! crash is simply run again; a file or link found where an undo needs a folder is moved
//! aside to `pre-restore-<time>.in-the-way/`, so an undo never fails on it at every start.
//! Before the first step, [`Staged::check_targets`] refuses a swap whose extra files could
//! not be put in place. The safety copies stay after a successful restore; removing
//! them is the operator's decision.

use crate::restore::Staged;
use crate::{DATABASE_FILE, Error, io_error, utc_date_time};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Present in the data directory only while a swap is under way or was interrupted.
pub const RESTORE_JOURNAL_FILE: &str = "restore-journal";
/// Names of the safety copies of the replaced database and files start with this.
pub(crate) const SAFETY_PREFIX: &str = "pre-restore-";
const JOURNAL_VERSION: u32 = 1;
/// SQLite's companions of a WAL-mode database file.
const DATABASE_SIDECAR_SUFFIXES: [&str; 2] = ["-wal", "-shm"];

#[derive(Serialize, Deserialize, Debug)]
struct Journal {
    version: u32,
    staging_dir: PathBuf,
    /// `pre-restore-<time>`: the database goes to `<stem>.db`, extra files under `<stem>.files/`.
    safety_stem: String,
    /// Extra files' names relative to the data directory.
    extra_files: Vec<String>,
    /// Set once a recovery has undone every move: only cleanup is left, and it must not be
    /// mistaken for the cleanup after the commit point when the staging directory is gone.
    #[serde(default)]
    rolled_back: bool,
}

/// What [`recover`] found and did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recovery {
    /// No swap was under way.
    Nothing,
    /// A swap was interrupted before its commit point and was undone: the old state is back.
    RolledBack,
    /// A swap was interrupted after its commit point and was finished: the new state stays.
    RolledForward,
}

/// Where a commit put the replaced state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Committed {
    /// The previous database, if there was one.
    pub safety_database: Option<PathBuf>,
    /// The directory holding the replaced extra files (absent if none was replaced).
    pub safety_files_dir: PathBuf,
}

impl Staged {
    /// Swaps the staged database and extra files into `data_dir`, keeping the replaced ones as
    /// `pre-restore-<now, UTC>.db` and `pre-restore-<now>.files/`. Every connection to the
    /// database must be closed first. A crash at any point leaves the old or the new state for
    /// [`recover`], which the daemon runs before opening the log.
    pub fn commit(self, data_dir: &Path, now_ms: u64) -> Result<Committed, Error> {
        self.commit_until(data_dir, now_ms, None)
    }

    /// [`Staged::commit`], stopping as if the process died after `stop_after_steps` steps
    /// (for the crash tests).
    pub(crate) fn commit_until(
        mut self,
        data_dir: &Path,
        now_ms: u64,
        stop_after_steps: Option<usize>,
    ) -> Result<Committed, Error> {
        let journal_path = data_dir.join(RESTORE_JOURNAL_FILE);
        if journal_path.exists() {
            return Err(Error::BadJournal {
                path: journal_path,
                reason: "an interrupted restore must be recovered first".to_owned(),
            });
        }
        check_same_file_system(&self.dir, data_dir)?;
        self.check_targets(data_dir)?;
        let (date, time) = utc_date_time(now_ms);
        let safety_stem = format!("{SAFETY_PREFIX}{date}-{time}");
        let safety_database = data_dir.join(format!("{safety_stem}.db"));
        let safety_files_dir = data_dir.join(format!("{safety_stem}.files"));
        for path in [&safety_database, &safety_files_dir] {
            if path.exists() {
                return Err(Error::SafetyCopyExists { path: path.clone() });
            }
        }
        let staging_dir = std::path::absolute(&self.dir)
            .map_err(io_error(|| format!("resolving {}", self.dir.display())))?;
        let journal = Journal {
            version: JOURNAL_VERSION,
            staging_dir,
            safety_stem,
            extra_files: self.extra_files(),
            rolled_back: false,
        };
        let had_database = data_dir.join(DATABASE_FILE).exists();
        // From the first step on, the staging directory belongs to the swap.
        self.remove_on_drop = false;
        let result = run_steps(data_dir, &journal, stop_after_steps);
        if let Err(error) = result {
            // A real failure (not a simulated crash): put the old state back now.
            let _ = recover(data_dir);
            return Err(error);
        }
        Ok(Committed { safety_database: had_database.then_some(safety_database), safety_files_dir })
    }
}

impl Staged {
    /// Refuses, before anything is moved, an extra file whose place in `data_dir` is taken by
    /// something that is not a regular file, or below something that is not a plain folder (a
    /// file, a link): its rename would fail half-way through the swap, or leave the data
    /// directory through a link.
    pub fn check_targets(&self, data_dir: &Path) -> Result<(), Error> {
        for name in self.extra_files() {
            let blocked = |path: &Path, what: &str| Error::UnsafeMember {
                name: format!("{}{name}", crate::manifest::FILES_PREFIX),
                reason: format!("{} is {what}", path.display()),
            };
            let mut path = data_dir.to_path_buf();
            let components: Vec<&str> = name.split('/').collect();
            for (index, component) in components.iter().enumerate() {
                path.push(component);
                let file_type = match std::fs::symlink_metadata(&path) {
                    Ok(metadata) => metadata.file_type(),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                    Err(error) => {
                        return Err(Error::Io {
                            context: format!("inspecting {}", path.display()),
                            source: error,
                        });
                    }
                };
                let last = index + 1 == components.len();
                if last && !file_type.is_file() {
                    return Err(blocked(&path, "in the way and not a regular file"));
                }
                if !last && !file_type.is_dir() {
                    return Err(blocked(&path, "in the way and not a folder"));
                }
            }
        }
        Ok(())
    }
}

/// One rename of the swap.
struct Move {
    from: PathBuf,
    to: PathBuf,
}

fn planned_moves(data_dir: &Path, journal: &Journal) -> Vec<Move> {
    let staging = &journal.staging_dir;
    let safety_database = data_dir.join(format!("{}.db", journal.safety_stem));
    let safety_files = data_dir.join(format!("{}.files", journal.safety_stem));
    let mut moves = Vec::new();
    for suffix in std::iter::once("").chain(DATABASE_SIDECAR_SUFFIXES) {
        moves.push(Move {
            from: data_dir.join(format!("{DATABASE_FILE}{suffix}")),
            to: PathBuf::from(format!("{}{suffix}", safety_database.display())),
        });
    }
    for name in &journal.extra_files {
        moves.push(Move { from: data_dir.join(name), to: safety_files.join(name) });
    }
    for name in &journal.extra_files {
        moves.push(Move {
            from: staging.join(crate::manifest::FILES_PREFIX).join(name),
            to: data_dir.join(name),
        });
    }
    moves.push(Move { from: staging.join(DATABASE_FILE), to: data_dir.join(DATABASE_FILE) });
    moves
}

/// Runs the swap; `stop_after_steps` simulates a crash. Steps: the journal, each planned move
/// (moves of files that do not exist are skipped but still count), removing the staging
/// directory, removing the journal.
fn run_steps(
    data_dir: &Path,
    journal: &Journal,
    stop_after_steps: Option<usize>,
) -> Result<(), Error> {
    let mut steps_done = 0;
    let mut stop = || {
        steps_done += 1;
        stop_after_steps.is_some_and(|limit| steps_done >= limit)
    };
    if stop_after_steps == Some(0) {
        return Ok(());
    }
    write_journal(data_dir, journal)?;
    if stop() {
        return Ok(());
    }
    for planned in planned_moves(data_dir, journal) {
        if planned.from.exists() {
            rename_durably(&planned.from, &planned.to)?;
        }
        if stop() {
            return Ok(());
        }
    }
    remove_staging(&journal.staging_dir)?;
    if stop() {
        return Ok(());
    }
    remove_journal(data_dir)
}

/// Finishes or undoes a swap that a crash interrupted; see the module documentation for the
/// states. Call it before opening the log, with no other process using the data directory.
pub fn recover(data_dir: &Path) -> Result<Recovery, Error> {
    let journal_path = data_dir.join(RESTORE_JOURNAL_FILE);
    let temporary = journal_temporary_path(data_dir);
    if !journal_path.exists() {
        if temporary.exists() {
            // The journal never became visible, so no step after it ran.
            std::fs::remove_file(&temporary)
                .map_err(io_error(|| format!("removing {}", temporary.display())))?;
            sync_path(data_dir)?;
        }
        return Ok(Recovery::Nothing);
    }
    let bad = |reason: String| Error::BadJournal { path: journal_path.clone(), reason };
    let text = std::fs::read(&journal_path)
        .map_err(io_error(|| format!("reading {}", journal_path.display())))?;
    let mut journal: Journal =
        serde_json::from_slice(&text).map_err(|error| bad(error.to_string()))?;
    if journal.version != JOURNAL_VERSION {
        return Err(bad(format!("unknown journal version {}", journal.version)));
    }
    // The journal came from us, but its names are still checked before being renamed.
    for name in &journal.extra_files {
        crate::archive::check_extra_name(name).map_err(&bad)?;
    }
    if !journal.safety_stem.starts_with(SAFETY_PREFIX) || journal.safety_stem.contains('/') {
        return Err(bad("bad safety name".to_owned()));
    }

    let staged_database = journal.staging_dir.join(DATABASE_FILE);
    let outcome = if journal.rolled_back {
        Recovery::RolledBack
    } else if staged_database.exists() {
        // Before the commit point: undo the moves in reverse order. A move is undone only if
        // its target holds the file and its source is free, which makes this idempotent.
        for planned in planned_moves(data_dir, &journal).iter().rev() {
            if planned.to.exists() && !planned.from.exists() {
                clear_the_way(data_dir, &journal, &planned.from)?;
                rename_durably(&planned.to, &planned.from)?;
            }
        }
        let safety_files = data_dir.join(format!("{}.files", journal.safety_stem));
        if safety_files.exists() {
            // Only directories we created are left in it: every file was moved back.
            std::fs::remove_dir_all(&safety_files)
                .map_err(io_error(|| format!("removing {}", safety_files.display())))?;
        }
        journal.rolled_back = true;
        write_journal(data_dir, &journal)?;
        Recovery::RolledBack
    } else {
        if !data_dir.join(DATABASE_FILE).exists() {
            return Err(bad(
                "the staged database is gone but none is in place; the previous one is kept as \
                 the pre-restore copy"
                    .to_owned(),
            ));
        }
        Recovery::RolledForward
    };
    remove_staging(&journal.staging_dir)?;
    remove_journal(data_dir)?;
    Ok(outcome)
}

/// Moves aside whatever is not a folder where a folder on the way to `path` must be (a file
/// or a link that appeared after the swap began), so an undo can always put a file back
/// ("File exists", "Not a directory" otherwise, at every start). Nothing is deleted: the
/// blocker goes to `<safety stem>.in-the-way/` under the same relative name.
fn clear_the_way(data_dir: &Path, journal: &Journal, path: &Path) -> Result<(), Error> {
    let base: &Path =
        if path.starts_with(&journal.staging_dir) { &journal.staging_dir } else { data_dir };
    let Ok(relative) = path.strip_prefix(base) else { return Ok(()) };
    let aside = data_dir.join(format!("{}.in-the-way", journal.safety_stem));
    let mut ancestor = base.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    for component in components.iter().take(components.len().saturating_sub(1)) {
        ancestor.push(component);
        match std::fs::symlink_metadata(&ancestor) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                let target = aside.join(ancestor.strip_prefix(base).unwrap_or(&ancestor));
                rename_durably(&ancestor, &target)?;
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn journal_temporary_path(data_dir: &Path) -> PathBuf {
    data_dir.join(format!("{RESTORE_JOURNAL_FILE}.tmp"))
}

fn write_journal(data_dir: &Path, journal: &Journal) -> Result<(), Error> {
    let temporary = journal_temporary_path(data_dir);
    let bytes = serde_json::to_vec_pretty(journal).map_err(|error| Error::Io {
        context: "encoding the journal".to_owned(),
        source: error.into(),
    })?;
    std::fs::write(&temporary, bytes)
        .map_err(io_error(|| format!("writing {}", temporary.display())))?;
    sync_path(&temporary)?;
    rename_durably(&temporary, &data_dir.join(RESTORE_JOURNAL_FILE))
}

fn remove_journal(data_dir: &Path) -> Result<(), Error> {
    let path = data_dir.join(RESTORE_JOURNAL_FILE);
    std::fs::remove_file(&path).map_err(io_error(|| format!("removing {}", path.display())))?;
    sync_path(data_dir)
}

fn remove_staging(staging_dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(staging_dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Error::Io {
                context: format!("removing {}", staging_dir.display()),
                source: error,
            });
        }
    }
    if let Some(parent) = staging_dir.parent() {
        sync_path(parent)?;
    }
    Ok(())
}

/// Renames `from` to `to` (creating `to`'s parent directories) and fsyncs both directories,
/// so the rename survives a power cut.
fn rename_durably(from: &Path, to: &Path) -> Result<(), Error> {
    let target_dir = to.parent().unwrap_or(Path::new("."));
    if !target_dir.exists() {
        std::fs::create_dir_all(target_dir)
            .map_err(io_error(|| format!("creating {}", target_dir.display())))?;
        if let Some(grandparent) = target_dir.parent() {
            sync_path(grandparent)?;
        }
    }
    std::fs::rename(from, to)
        .map_err(io_error(|| format!("renaming {} to {}", from.display(), to.display())))?;
    sync_path(target_dir)?;
    if let Some(source_dir) = from.parent()
        && source_dir != target_dir
    {
        sync_path(source_dir)?;
    }
    Ok(())
}

/// fsync of a file or a directory.
pub(crate) fn sync_path(path: &Path) -> Result<(), Error> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io_error(|| format!("syncing {}", path.display())))
}

/// Renames only work within one file system; checked before the first step so a swap never
/// fails half-way for that reason.
fn check_same_file_system(staging_dir: &Path, data_dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let device = |path: &Path| {
        std::fs::metadata(path)
            .map(|metadata| metadata.dev())
            .map_err(io_error(|| format!("inspecting {}", path.display())))
    };
    if device(staging_dir)? != device(data_dir)? {
        return Err(Error::StagingOnOtherFileSystem);
    }
    Ok(())
}

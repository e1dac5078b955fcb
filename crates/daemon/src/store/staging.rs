//! A restore's staging with the store's derived data made as the archive's log is rebuilt:
//! the projections are written in the rebuild's transaction, batch by batch, and the state is
//! folded on a thread of its own, then saved as the staged log's snapshot. Applying the
//! restore (`Store::restore_from`) then opens the staged log without reading it back: at
//! 10^6 events that read and its decoding were a third of a restore.

use super::LICENCE_MIGRATION;
use super::fold::{FOLD_QUEUE_BATCHES, Fold};
use eventlog::{EventLog, StoredEvent};
use model::licence_migration::LicenceMigration;
use model::{Event, State};
use std::io::Read;

/// `backup::stage_restore`, with the staged log's projections and state derived as its
/// events are copied, and the state saved as its snapshot.
pub fn stage_restore(
    reader: impl Read,
    password: Option<&str>,
    target: &backup::StagingTarget<'_>,
    progress: &mut dyn FnMut(backup::Progress),
) -> Result<backup::Staged, backup::Error> {
    let fold = Fold {
        state: State::default(),
        licence: Some(LicenceMigration::default()),
        position: 0,
        replayed: 0,
    };
    let (staged, fold) = std::thread::scope(|scope| {
        let (batches, received) =
            std::sync::mpsc::sync_channel::<(Vec<StoredEvent>, Vec<Event>)>(FOLD_QUEUE_BATCHES);
        let folder = std::thread::Builder::new()
            .name("baton-fold".to_owned())
            .spawn_scoped(scope, move || fold.fold_all(received))
            .map_err(|error| backup::Error::Io {
                context: "starting the restore's fold".to_owned(),
                source: error,
            })?;
        let mut projections = None;
        let mut derive = move |conn: &mut rusqlite::Connection, stored: Vec<StoredEvent>| {
            let derivation = match &mut projections {
                Some(derivation) => derivation,
                None => projections.insert(projections::Derivation::start(conn)?),
            };
            let events = derivation.apply(conn, &stored)?;
            // Fails only when the fold's thread is gone, which its join reports.
            let _ = batches.send((stored, events));
            Ok::<(), eventlog::DeriveError>(())
        };
        let staged =
            backup::stage_restore_deriving(reader, password, target, progress, &mut derive);
        // Dropping the closure drops the fold's sender: the fold ends with the last batch.
        drop(derive);
        let fold = folder.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok::<_, backup::Error>((staged?, fold))
    })?;
    save_fold(&staged, fold)?;
    Ok(staged)
}

/// Saves the folded state as the staged log's snapshot, and notes that the licence
/// migration found nothing when it did not (see `Store::make_licence_local`).
fn save_fold(staged: &backup::Staged, fold: Fold) -> Result<(), eventlog::Error> {
    let path = staged.staging_dir().join(backup::DATABASE_FILE);
    let mut log = EventLog::open(&path)?;
    log.save_snapshot(fold.position, model::SNAPSHOT_FORMAT, &fold.state.to_snapshot())?;
    if fold.licence.is_some_and(|licence| !licence.noted_any()) {
        log.set_migration_checked_through(LICENCE_MIGRATION, fold.position)?;
    }
    Ok(())
}

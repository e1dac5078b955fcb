//! A restore's staging with the store's derived data made as the archive's log is rebuilt:
//! the projections are written in the rebuild's transaction, batch by batch, and the state is
//! folded on a thread of its own, then saved as the staged log's snapshot. Applying the
//! restore (`Store::restore_from`) then opens the staged log without reading it back: at
//! 10^6 events that read and its decoding were a third of a restore.

use super::LICENCE_MIGRATION;
use super::fold::{Fold, folding_alongside};
use eventlog::{EventLog, StoredEvent};
use model::State;
use model::licence_migration::LicenceMigration;
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
    let (staged, fold) = folding_alongside(fold, |visit| {
        let mut projections = None;
        let mut derive = |conn: &mut rusqlite::Connection, stored: Vec<StoredEvent>| {
            let derivation = match &mut projections {
                Some(derivation) => derivation,
                None => projections.insert(projections::Derivation::start(conn)?),
            };
            let events = derivation.apply(conn, &stored)?;
            visit(stored, events);
            Ok::<(), eventlog::DeriveError>(())
        };
        backup::stage_restore_deriving(reader, password, target, progress, &mut derive)
    })
    .map_err(|error| backup::Error::Io {
        context: "starting the restore's fold".to_owned(),
        source: error,
    })?;
    let staged = staged?;
    save_fold(&staged, fold)?;
    Ok(staged)
}

/// The configuration a staged restore holds, for its preview: its snapshot, when staging
/// saved one at its last event and met no licence to adopt; otherwise folded from its events
/// (`backup::Staged::configuration`, a second of work at 10^6 events).
pub fn staged_configuration(staged: &backup::Staged) -> Result<State, backup::Error> {
    let log = EventLog::open(&staged.staging_dir().join(backup::DATABASE_FILE))?;
    let last = log.last_position();
    let complete = log.migration_checked_through(LICENCE_MIGRATION)? == last;
    match log.latest_snapshot()? {
        Some(snapshot)
            if complete
                && snapshot.position == last
                && snapshot.format == model::SNAPSHOT_FORMAT =>
        {
            State::from_snapshot(&snapshot.blob)
                .map_err(|error| backup::Error::Corrupt { reason: error.to_string() })
        }
        _ => staged.configuration(),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::tests::bridge;
    use crate::store::{Change, Store};
    use model::Command;
    use rusqlite::Connection;

    const SERIAL: &str = "STAGING-TEST";

    /// Every row of every projection table, each table's rows sorted.
    fn projection_rows(path: &std::path::Path) -> Vec<(String, Vec<String>)> {
        let conn = Connection::open(path).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'proj_%'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rows = |table: &str| -> Vec<String> {
            let mut statement = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = statement.column_count();
            let mut rows: Vec<String> = statement
                .query_map([], |row| {
                    let values: Vec<rusqlite::types::Value> =
                        (0..columns).map(|index| row.get(index)).collect::<Result<_, _>>()?;
                    Ok(format!("{values:?}"))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            rows
        };
        let mut all: Vec<(String, Vec<String>)> =
            tables.iter().map(|table| (table.clone(), rows(table))).collect();
        all.sort();
        all
    }

    /// Creates, updates and removes over `keys` bridges, `events` in all, in groups.
    fn history(store: &mut Store, keys: usize, events: usize) {
        let changes: Vec<Change> = (0..events)
            .map(|index| {
                let name = format!("b{}", index % keys);
                let command = match (index / keys) % 3 {
                    0 => Command::Create(bridge(&name)),
                    1 => Command::Update(bridge(&name)),
                    _ => {
                        Command::Remove(model::RecordKey { kind: model::RecordKind::Bridge, name })
                    }
                };
                Change { actor: "admin".to_owned(), command, now_ms: 1_000 + index as u64 }
            })
            .collect();
        for group in changes.chunks(250) {
            for result in store.execute_group(group) {
                result.unwrap();
            }
        }
    }

    // Goal: a staged restore holds the projections and the snapshot a full catch-up of its
    // log would give, derived as its events were copied (more than one batch of them), so
    // applying it reads nothing back, and notes that it met no licence event; its preview,
    // read from the snapshot, is the configuration its events fold to. (A staged log
    // that holds one is not noted: `backup::an_old_backups_shared_licence_is_restored_as_this_
    // peers_own` restores its licence.)
    #[test]
    fn a_staged_restore_holds_what_a_catch_up_derives_and_opens_without_reading_back() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("source.db");
        let (mut source, _) = Store::open(&source_path).unwrap();
        history(&mut source, 300, 20_000);
        let archive = {
            let conn = eventlog::open_reader(&source_path).unwrap();
            let options = backup::BackupOptions {
                software_version: crate::base::version::software_version(),
                hardware_serial: SERIAL,
                created_at_ms: 1_800_000_000_000,
                extra_files: &[],
                password: None,
                kdf: backup::KdfParams::RECOMMENDED,
                scratch_dir: dir.path(),
            };
            backup::write_backup(&conn, &options, Vec::new(), &mut |_| {}).unwrap().1
        };
        let staging_dir = dir.path().join("staging");
        let target = backup::StagingTarget {
            expected_serial: SERIAL,
            running_version: crate::base::version::software_version(),
            staging_dir: &staging_dir,
        };
        let staged = stage_restore(&archive[..], None, &target, &mut |_| {}).unwrap();
        let staged_path = staged.staging_dir().join(backup::DATABASE_FILE);
        assert_eq!(projection_rows(&staged_path), projection_rows(&source_path));
        // No licence event anywhere: staging notes the migration's check as done to the end
        // (before the store opens, which would note it too).
        let staged_log = EventLog::open(&staged_path).unwrap();
        let checked = staged_log.migration_checked_through(LICENCE_MIGRATION).unwrap();
        assert_eq!(checked, source.last_position());
        drop(staged_log);
        assert_eq!(&staged_configuration(&staged).unwrap(), source.state(), "the preview");
        assert_eq!(&staged.configuration().unwrap(), source.state());
        let (restored, report) = Store::open(&staged_path).unwrap();
        assert_eq!(
            (report.events_replayed, report.projection_events_applied),
            (0, 0),
            "nothing read back"
        );
        assert_eq!(report.snapshot_position, source.last_position());
        assert_eq!(restored.state(), source.state());
    }
}

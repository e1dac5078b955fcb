//! The database inside a backup archive: a crafted SQLite file (views or wrong types where the
//! log's tables should be, forged snapshots, triggers) goes through what a restore does with
//! it — `EventLog::rebuild_from` into a fresh file, which walks the chains as it copies — and
//! must give an error or a log that verifies as the rebuild reported, never a panic. (The
//! archive's digests are not in the way here: a crafted archive carries whatever database its
//! manifest digests.)
#![no_main]

use libfuzzer_sys::fuzz_target;

/// In memory where the machine has it: SQLite's fsyncs would otherwise set the pace.
const SCRATCH_DIR: &str = "/dev/shm";

fuzz_target!(|database: &[u8]| {
    let scratch = std::path::Path::new(SCRATCH_DIR);
    let dir = if scratch.is_dir() { tempfile::tempdir_in(scratch) } else { tempfile::tempdir() };
    let Ok(dir) = dir else { return };
    let archived = dir.path().join("archived.db");
    if std::fs::write(&archived, database).is_err() {
        return;
    }
    let rebuilt = eventlog::EventLog::rebuild_from(&archived, &dir.path().join("baton.db"));
    if let Ok((log, report)) = rebuilt {
        // The rebuild walked the chains as it copied them: what it wrote must verify as it
        // checked it.
        assert_eq!(log.verify().ok(), Some(report));
        let _ = log.read_after(0, 100);
    }
});

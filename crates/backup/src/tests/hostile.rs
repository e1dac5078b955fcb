//! Crafted archives (issue 19): derived tables that disagree with the log, members outside
//! the allow-list, targets blocked in the data directory, and gzip bombs. Each is refused
//! before anything is swapped, or restored as its verified log alone.

use super::*;
use model::{Event, Record, RecordKind, Stamp, State};

fn administrator(name: &str) -> Record {
    Record::Administrator(model::record::Administrator {
        name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
            .to_owned(),
        must_change_password: false,
        role: model::record::AdminRole::Full,
    })
}

fn administrator_names(records: impl Iterator<Item = Record>) -> Vec<String> {
    records
        .filter(|record| record.kind() == RecordKind::Administrator)
        .map(|record| record.name().to_owned())
        .collect()
}

/// A source data directory whose log saves the administrator `ops` only, but whose
/// snapshot, projection tables and schema also claim an `intruder`, as a crafted backup
/// would: none of it is proven by the log.
fn populate_with_forged_derived_tables(data_dir: &Path) {
    std::fs::create_dir_all(data_dir.join("tls")).unwrap();
    for name in EXTRA_NAMES {
        std::fs::write(data_dir.join(name), name).unwrap();
    }
    let mut log = EventLog::open(&data_dir.join(DATABASE_FILE)).unwrap();
    let encoded = Event::Saved(administrator("ops")).encode();
    let stored = log
        .append(&[NewEvent {
            stream: Stream::Shared,
            hlc: Hlc { wall_ms: 1, counter: 0 },
            actor: "ops".to_owned(),
            kind: encoded.kind,
            version: encoded.version,
            payload: encoded.payload,
        }])
        .unwrap();
    // The projection table as the projections crate makes it (its columns), holding a row
    // the log does not prove.
    log.connection()
        .execute_batch(
            "CREATE TABLE proj_records (kind TEXT NOT NULL, name TEXT NOT NULL,
                 hlc_wall_ms INTEGER NOT NULL, hlc_counter INTEGER NOT NULL, origin BLOB NOT NULL,
                 position INTEGER NOT NULL, live INTEGER NOT NULL, PRIMARY KEY (kind, name))
                 WITHOUT ROWID;",
        )
        .unwrap();

    let mut forged = State::default();
    let stamp = Stamp { hlc: Hlc { wall_ms: 1, counter: 0 }, origin: log.peer_id() };
    for name in ["ops", "intruder"] {
        forged.apply(stamp, &Event::Saved(administrator(name)));
    }
    log.save_snapshot(stored[0].position, model::SNAPSHOT_FORMAT, &forged.to_snapshot()).unwrap();
    // A row that claims `ops`'s event decided an `intruder`.
    log.connection()
        .execute(
            "INSERT INTO proj_records (kind, name, hlc_wall_ms, hlc_counter, origin, position, live)
             VALUES ('administrator', 'intruder', 1, 0, ?1, ?2, 1)",
            rusqlite::params![log.peer_id().0.as_slice(), stored[0].position],
        )
        .unwrap();
    log.connection()
        .execute_batch(
            "CREATE TRIGGER backdoor AFTER INSERT ON events BEGIN
                 INSERT INTO proj_records (kind, name, hlc_wall_ms, hlc_counter, origin, position, live)
                 VALUES ('administrator', 'intruder2', 1, 0, x'00', NEW.position, 1);
             END;",
        )
        .unwrap();
}

// Goal (defect 3): a backup whose snapshot and projection tables hold an administrator its
// log never saved restores without it; the preview (`Staged::configuration`) shows exactly
// what is live after the commit, and nothing but the log's own tables comes along.
#[test]
fn derived_tables_in_an_archive_are_rebuilt_from_its_log() {
    let fixture = fixture();
    std::fs::remove_dir_all(&fixture.source_dir).unwrap();
    populate_with_forged_derived_tables(&fixture.source_dir);
    let archive = fixture.backup(None);

    let staged = fixture.stage(&archive, None).unwrap();
    let preview = administrator_names(staged.configuration().unwrap().records().cloned());
    assert_eq!(preview, ["ops"]);
    let staged_database =
        rusqlite::Connection::open(staged.staging_dir().join(DATABASE_FILE)).unwrap();
    let foreign: Vec<String> = staged_database
        .prepare(
            "SELECT name FROM sqlite_master WHERE name NOT IN ('meta', 'events', 'events_hlc',
                 'events_no_update', 'events_no_delete', 'chain_heads', 'snapshots', 'journal')
                 AND name NOT LIKE 'sqlite_autoindex_%'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(foreign, Vec::<String>::new(), "derived tables or triggers came along");
    drop(staged_database);
    staged.commit(&fixture.target_dir, NOW_MS).unwrap();

    // The live database holds the log alone: the daemon opening it finds no snapshot and no
    // projection, so it folds and projects the verified events, which is the preview.
    let mut live = EventLog::open(&fixture.target_dir.join(DATABASE_FILE)).unwrap();
    assert!(live.latest_snapshot().unwrap().is_none(), "the archive's snapshot was kept");
    let objects = |log: &EventLog| -> Vec<String> {
        log.connection()
            .prepare("SELECT name FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = objects(&live);
    assert!(
        !before.iter().any(|name| name.starts_with("proj_") || name == "backdoor"),
        "{before:?}"
    );
    live.append(&[event(Stream::Local, 5, "after the restore")]).unwrap();
    assert_eq!(objects(&live), before, "a trigger came along");
    let mut folded = State::default();
    for stored in live.read_after(0, 100).unwrap() {
        if let Ok(event) = Event::decode(&stored.kind, stored.version, &stored.payload) {
            folded.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
        }
    }
    assert_eq!(administrator_names(folded.records().cloned()), preview);
}

// Goal: an archive whose log had an event changed behind its back, its member digests and
// manifest made to agree with the file (the crate's own backup refuses such a log, so a
// crafter writes the archive by hand), is refused as corrupt, naming the chain, and nothing
// is swapped.
#[test]
fn an_archive_whose_log_was_tampered_with_is_refused() {
    let fixture = fixture();
    let real = fixture_manifest(&fixture);
    let source = rusqlite::Connection::open(fixture.source_dir.join(DATABASE_FILE)).unwrap();
    source
        .execute_batch(
            "DROP TRIGGER events_no_update;
             UPDATE events SET payload = CAST('changed' AS BLOB) WHERE position = 7;",
        )
        .unwrap();
    drop(source);
    let files: Vec<(String, Vec<u8>)> = real
        .members
        .iter()
        .map(|member| {
            let file = member.name.strip_prefix(manifest::FILES_PREFIX).unwrap_or(&member.name);
            (member.name.clone(), std::fs::read(fixture.source_dir.join(file)).unwrap())
        })
        .collect();
    let members = files
        .iter()
        .map(|(name, data)| Member {
            name: name.clone(),
            size_bytes: data.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(data)),
        })
        .collect();
    let json = serde_json::to_vec(&Manifest { members, ..real }).unwrap();
    let mut entries = vec![("manifest.json", json.as_slice(), tar::EntryType::Regular)];
    entries.extend(
        files.iter().map(|(name, data)| (name.as_str(), data.as_slice(), tar::EntryType::Regular)),
    );

    let error = fixture.assert_refused(&tar_gz(&entries), None, "a tampered event");
    match &error {
        Error::Corrupt { reason } => {
            assert!(reason.contains("does not verify") && reason.contains("hash"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// An archive with the fixture's database and one extra member `name` holding `data`.
fn archive_with_member(fixture: &Fixture, name: &str, data: &[u8]) -> Vec<u8> {
    let real = fixture_manifest(fixture);
    let database = std::fs::read(fixture.source_dir.join(DATABASE_FILE)).unwrap();
    let member = |name: &str, data: &[u8]| Member {
        name: name.to_owned(),
        size_bytes: data.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(data)),
    };
    let manifest =
        Manifest { members: vec![member("baton.db", &database), member(name, data)], ..real };
    let json = serde_json::to_vec(&manifest).unwrap();
    tar_gz(&[
        ("manifest.json", &json, tar::EntryType::Regular),
        ("baton.db", &database, tar::EntryType::Regular),
        (name, data, tar::EntryType::Regular),
    ])
}

// Goal (defects 4 and 5): a member that a backup of this format cannot hold (anything but a
// file directly in `tls/`) is refused while staging, before anything is swapped, and nothing
// is written in the data directory.
#[test]
fn members_outside_the_allow_list_are_refused() {
    let fixture = fixture();
    std::fs::write(fixture.target_dir.join("admin-url"), "https://baton.example/").unwrap();
    for name in
        ["files/admin-url/x", "files/boot/loader.conf", "files/tls/keys/x", "files/tls", "files/x"]
    {
        let error =
            fixture.assert_refused(&archive_with_member(&fixture, name, b"evil"), None, name);
        assert!(
            matches!(&error, Error::UnsafeMember { name: refused, .. } if refused == name),
            "{name}: {error:?}"
        );
        assert!(error.to_string().contains("tls/"), "{name}: {error}");
    }
    let accepted = archive_with_member(&fixture, "files/tls/other.pem", b"fine");
    drop(fixture.stage(&accepted, None).unwrap());
}

// Goal (defect 4): an extra file whose place in the data directory is taken by a file or a
// link (`tls` is a file: renaming into it fails with "File exists" half-way) is refused by
// the commit before its first step, and the data directory is untouched.
#[test]
fn a_blocked_target_is_refused_before_the_swap() {
    let fixture = fixture();
    let archive = fixture.backup(None);
    for blocker in ["file", "link"] {
        let tls = fixture.target_dir.join("tls");
        if tls.is_dir() && !tls.is_symlink() {
            std::fs::remove_dir_all(&tls).unwrap();
        } else {
            std::fs::remove_file(&tls).unwrap();
        }
        match blocker {
            "file" => std::fs::write(&tls, "not a folder").unwrap(),
            _ => std::os::unix::fs::symlink(fixture.source_dir.join("tls"), &tls).unwrap(),
        }
        let before = tree_digest(&fixture.target_dir);
        let staged = fixture.stage(&archive, None).unwrap();
        let error = staged.commit(&fixture.target_dir, NOW_MS).unwrap_err();
        assert!(matches!(error, Error::UnsafeMember { .. }), "{blocker}: {error:?}");
        assert!(error.is_refusal(), "{blocker}");
        assert!(!fixture.target_dir.join(RESTORE_JOURNAL_FILE).exists(), "{blocker}");
        assert!(!fixture.staging_dir.exists(), "{blocker}: staging left behind");
        assert_eq!(tree_digest(&fixture.target_dir), before, "{blocker}: data changed");
        assert_eq!(recover(&fixture.target_dir).unwrap(), Recovery::Nothing);
    }
}

/// Counts what a restore reads of its source and fails past `limit_bytes`, so a test of a
/// bomb fails quickly rather than inflating gigabytes when the bomb is not stopped.
struct CountingReader<R> {
    inner: R,
    read_bytes: u64,
    limit_bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read_bytes > self.limit_bytes {
            return Err(std::io::Error::other("the bomb was not stopped"));
        }
        let length = self.inner.read(buf)?;
        self.read_bytes += length as u64;
        Ok(length)
    }
}

/// A gzip bomb: a manifest declaring a database of `declared_bytes`, then that many zeros,
/// compressed as it is read (about 1,000:1, so 4 GiB is 4 MiB of archive).
fn gzip_bomb(fixture: &Fixture, declared_bytes: u64) -> CountingReader<impl Read> {
    let real = fixture_manifest(fixture);
    let database = Member {
        name: DATABASE_FILE.to_owned(),
        size_bytes: declared_bytes,
        sha256: "00".repeat(32),
    };
    let manifest = Manifest { members: vec![database], ..real };
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut prefix = Vec::new();
    for (name, size) in [("manifest.json", json.len() as u64), (DATABASE_FILE, declared_bytes)] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o600);
        header.set_cksum();
        prefix.extend_from_slice(header.as_bytes());
        if name == "manifest.json" {
            prefix.extend_from_slice(&json);
            prefix.resize(prefix.len().div_ceil(512) * 512, 0);
        }
    }
    let tar = std::io::Cursor::new(prefix).chain(std::io::repeat(0).take(declared_bytes));
    let gzip = archive::gzip_builder().read(tar, flate2::Compression::default());
    CountingReader { inner: gzip, read_bytes: 0, limit_bytes: 1024 * 1024 }
}

// Goal (weakness: gzip bomb): a 4 GiB database declared by a few MiB of archive is refused
// from its manifest, by staging and by `inspect`, having read a few KiB and written nothing.
#[test]
fn a_gzip_bomb_is_refused_before_it_is_inflated() {
    let fixture = fixture();
    let declared_bytes = 4 * 1024 * 1024 * 1024;
    let mut bomb = gzip_bomb(&fixture, declared_bytes);
    let error = stage_restore(&mut bomb, None, SERIAL, VERSION, &fixture.staging_dir, &mut |_| {})
        .unwrap_err();
    assert!(matches!(error, Error::UnsafeMember { .. }), "{error:?}");
    assert!(bomb.read_bytes < 64 * 1024, "read {} bytes of the bomb", bomb.read_bytes);
    assert!(!fixture.staging_dir.exists());

    let mut bomb = gzip_bomb(&fixture, declared_bytes);
    let error = inspect(&mut bomb, None).unwrap_err();
    assert!(matches!(error, Error::UnsafeMember { .. }), "{error:?}");
    assert!(bomb.read_bytes < 64 * 1024, "inspect read {} bytes", bomb.read_bytes);

    // Declared sizes that overflow when added up are refused too, not a panic.
    let real = fixture_manifest(&fixture);
    let member = |name: &str| Member {
        name: name.to_owned(),
        size_bytes: u64::MAX / 2 + 1,
        sha256: "00".repeat(32),
    };
    let manifest = Manifest {
        members: vec![member("baton.db"), member("files/tls/a"), member("files/tls/b")],
        ..real
    };
    let json = serde_json::to_vec(&manifest).unwrap();
    let archive = tar_gz(&[("manifest.json", &json, tar::EntryType::Regular)]);
    fixture.assert_refused(&archive, None, "overflowing sizes");
}

// Goal (defect 4): recovery can undo a swap even when, after the crash, a file stands where a
// folder it must restore into was ("Not a directory" / "File exists" at every start before):
// the old state comes back whole and the file in the way is kept aside, not deleted.
#[test]
fn recovery_undoes_a_swap_whose_folder_was_replaced_by_a_file() {
    let mut fixture = fixture();
    let archive = fixture.backup(None);
    fixture.source_heads = inspect(archive.as_slice(), None).unwrap().log_heads().unwrap();
    let staged = fixture.stage(&archive, None).unwrap();
    // The journal, the three database moves and the two current TLS files set aside.
    staged.commit_until(&fixture.target_dir, NOW_MS, Some(6)).unwrap();
    let tls = fixture.target_dir.join("tls");
    assert_eq!(std::fs::read_dir(&tls).unwrap().count(), 0, "the old files were set aside");
    std::fs::remove_dir(&tls).unwrap();
    std::fs::write(&tls, "in the way").unwrap();

    assert_eq!(recover(&fixture.target_dir).unwrap(), Recovery::RolledBack);
    assert_eq!(state_of(&fixture), "old");
    let kept = fixture.target_dir.join("pre-restore-20240229-130405.in-the-way/tls");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "in the way");
    assert_eq!(recover(&fixture.target_dir).unwrap(), Recovery::Nothing);
}

// Goal (gzip bomb, within the size limit): an archive whose members, with the rebuilt
// database, would not fit in the staging file system's free space is refused from its
// manifest; one that fits is not.
#[test]
fn an_archive_larger_than_the_free_space_is_refused_from_its_manifest() {
    let fixture = fixture();
    let stats = rustix::fs::statvfs(&fixture.target_dir).unwrap();
    let available_bytes = stats.f_bavail * stats.f_frsize;
    let mut manifest = fixture_manifest(&fixture);
    manifest.members[0].size_bytes = available_bytes / 2;
    let error = restore::check_staging_space(&fixture.target_dir, &manifest).unwrap_err();
    assert!(matches!(error, Error::UnsafeMember { .. }), "{error:?}");
    assert!(error.to_string().contains("free"), "{error}");
    manifest.members[0].size_bytes = 1024 * 1024;
    restore::check_staging_space(&fixture.target_dir, &manifest).unwrap();
}

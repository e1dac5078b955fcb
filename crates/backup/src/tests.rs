//! The backup contract: what is backed up is what a restore brings back; every archive that is
//! not exactly ours, for this machine and this or an older version, is refused without
//! touching the data directory; a swap interrupted at any step recovers to the old or the new
//! state, never a mix.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::crypto::{CHUNK_SIZE_BYTES, HEADER_SIZE_BYTES};
use eventlog::{EventLog, Head, NewEvent, Stream};
use model::{Hlc, PeerId};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{Read, Write};

const SERIAL: &str = "VM-SERIAL-42";
const VERSION: &str = "1.2.3";
const NOW_MS: u64 = 1_709_211_845_000; // 2024-02-29 13:04:05 UTC
const PASSWORD: &str = "correct horse battery staple";
/// Cheap parameters: the tests decrypt hundreds of archives.
const FAST_KDF: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
/// Extra files: a small one and one that does not compress, so encrypted archives span
/// several chunks.
const EXTRA_NAMES: [&str; 2] = ["tls/server.pem", "tls/noise.bin"];

type Heads = BTreeMap<(PeerId, Stream), Head>;

fn event(stream: Stream, wall_ms: u64, payload: &str) -> NewEvent {
    NewEvent {
        stream,
        hlc: Hlc { wall_ms, counter: 0 },
        actor: "admin".to_owned(),
        kind: "bridge.saved".to_owned(),
        version: 1,
        payload: payload.as_bytes().to_vec(),
    }
}

/// Deterministic bytes that gzip cannot shrink (xorshift).
fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A data directory with a log (`events` appends of each stream) and the extra files;
/// `label` makes the contents differ between the old and the new state.
fn populate(data_dir: &Path, label: &str, events: u64) -> Heads {
    std::fs::create_dir_all(data_dir.join("tls")).unwrap();
    std::fs::write(data_dir.join(EXTRA_NAMES[0]), format!("certificate {label}")).unwrap();
    std::fs::write(data_dir.join(EXTRA_NAMES[1]), noise(200_000, label.len() as u64)).unwrap();
    let mut log = EventLog::open(&data_dir.join(DATABASE_FILE)).unwrap();
    for index in 0..events {
        log.append(&[
            event(Stream::Shared, index + 1, &format!("{label} shared {index}")),
            event(Stream::Local, index + 1, &format!("{label} local {index}")),
        ])
        .unwrap();
    }
    log.heads().clone()
}

fn extra_files(data_dir: &Path) -> Vec<ExtraFile> {
    EXTRA_NAMES
        .iter()
        .map(|name| ExtraFile { name: (*name).to_owned(), source: data_dir.join(name) })
        .collect()
}

/// Backs up `data_dir` while its log is open for writing, as in the daemon.
fn make_backup(
    data_dir: &Path,
    scratch_dir: &Path,
    version: &str,
    password: Option<&str>,
) -> (Vec<u8>, Manifest) {
    let reader = eventlog::open_reader(&data_dir.join(DATABASE_FILE)).unwrap();
    let options = BackupOptions {
        software_version: version,
        hardware_serial: SERIAL,
        created_at_ms: NOW_MS,
        extra_files: &extra_files(data_dir),
        password,
        kdf: FAST_KDF,
        scratch_dir,
    };
    let mut last = None;
    let (manifest, bytes) =
        write_backup(&reader, &options, Vec::new(), &mut |progress| last = Some(progress)).unwrap();
    let last = last.unwrap();
    assert_eq!(last.done_bytes, last.total_bytes, "progress reaches the total");
    assert!(std::fs::read_dir(scratch_dir).unwrap().next().is_none(), "scratch is cleaned");
    (bytes, manifest)
}

/// Every file under `dir` with its contents' digest: equal before and after means untouched.
fn tree_digest(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.insert(path.clone(), "dir".to_owned());
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path, hex::encode(sha2::Sha256::digest(&bytes)));
            }
        }
    }
    files
}

/// A source peer with a backup, and a target peer (same machine) holding other data.
struct Fixture {
    _root: tempfile::TempDir,
    source_dir: PathBuf,
    target_dir: PathBuf,
    staging_dir: PathBuf,
    source_heads: Heads,
    target_heads: Heads,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let source_dir = root.path().join("source");
    let target_dir = root.path().join("target");
    let source_heads = populate(&source_dir, "new", 30);
    let target_heads = populate(&target_dir, "old", 5);
    std::fs::create_dir(root.path().join("scratch")).unwrap();
    let staging_dir = target_dir.join("restore-staging");
    Fixture { source_dir, target_dir, staging_dir, source_heads, target_heads, _root: root }
}

impl Fixture {
    fn backup(&self, password: Option<&str>) -> Vec<u8> {
        self.backup_as(VERSION, password)
    }

    fn backup_as(&self, version: &str, password: Option<&str>) -> Vec<u8> {
        make_backup(&self.source_dir, &self._root.path().join("scratch"), version, password).0
    }

    fn stage(&self, archive: &[u8], password: Option<&str>) -> Result<Staged, Error> {
        stage_restore(archive, password, SERIAL, VERSION, &self.staging_dir, &mut |_| {})
    }

    /// Asserts that a refused restore left everything as it was.
    fn assert_refused(&self, archive: &[u8], password: Option<&str>, what: &str) -> Error {
        let before = tree_digest(&self.target_dir);
        let error = match self.stage(archive, password) {
            Ok(_) => panic!("{what}: accepted"),
            Err(error) => error,
        };
        assert!(error.is_refusal(), "{what}: {error:?} is not a refusal");
        assert!(!self.staging_dir.exists(), "{what}: staging directory left behind");
        assert_eq!(tree_digest(&self.target_dir), before, "{what}: data directory changed");
        error
    }
}

/// Which state a data directory holds, after checking it is whole: the log verifies and the
/// extra files belong to the same state as the log.
fn state_of(fixture: &Fixture) -> &'static str {
    let log = EventLog::open(&fixture.target_dir.join(DATABASE_FILE)).unwrap();
    let report = log.verify().unwrap();
    let certificate = std::fs::read_to_string(fixture.target_dir.join(EXTRA_NAMES[0])).unwrap();
    let state = if report.heads == fixture.source_heads {
        "new"
    } else if report.heads == fixture.target_heads {
        "old"
    } else {
        panic!("the log is neither the old nor the new one: {:?}", report.heads)
    };
    assert_eq!(certificate, format!("certificate {state}"), "files and log from different states");
    let noise_file = std::fs::read(fixture.target_dir.join(EXTRA_NAMES[1])).unwrap();
    assert_eq!(noise_file, noise(200_000, state.len() as u64));
    assert!(!fixture.target_dir.join(RESTORE_JOURNAL_FILE).exists());
    state
}

// Goal: a plain and an encrypted backup restore the log (same heads, verifying chains,
// same identity) and the extra files, keep the old database as a safety copy, and clean up.
#[test]
fn round_trip_plain_and_encrypted() {
    for password in [None, Some(PASSWORD)] {
        let fixture = fixture();
        let archive = fixture.backup(password);
        let manifest = inspect(archive.as_slice(), password).unwrap();
        assert_eq!(manifest.hardware_serial, SERIAL);
        assert_eq!(manifest.software_version, VERSION);
        assert_eq!(manifest.created_at_ms, NOW_MS);
        assert_eq!(manifest.log_heads().unwrap(), fixture.source_heads);
        assert_eq!(
            manifest.members.iter().map(|member| member.name.as_str()).collect::<Vec<_>>(),
            ["baton.db", "files/tls/server.pem", "files/tls/noise.bin"]
        );

        let mut progress = Vec::new();
        let staged = stage_restore(
            archive.as_slice(),
            password,
            SERIAL,
            VERSION,
            &fixture.staging_dir,
            &mut |step| progress.push(step),
        )
        .unwrap();
        let last = progress.last().unwrap();
        assert_eq!(
            (last.done_bytes, last.total_bytes),
            (manifest.members_size_bytes(), last.total_bytes)
        );
        assert_eq!(staged.manifest(), &manifest);
        let committed = staged.commit(&fixture.target_dir, NOW_MS).unwrap();

        assert_eq!(state_of(&fixture), "new");
        assert!(!fixture.staging_dir.exists());
        let source_peer =
            EventLog::open(&fixture.source_dir.join(DATABASE_FILE)).unwrap().peer_id();
        let restored = EventLog::open(&fixture.target_dir.join(DATABASE_FILE)).unwrap();
        assert_eq!(restored.peer_id(), source_peer);
        let safety = committed.safety_database.unwrap();
        assert_eq!(safety, fixture.target_dir.join("pre-restore-20240229-130405.db"));
        assert_eq!(EventLog::open(&safety).unwrap().heads(), &fixture.target_heads);
        assert_eq!(
            std::fs::read_to_string(committed.safety_files_dir.join(EXTRA_NAMES[0])).unwrap(),
            "certificate old"
        );
        assert_eq!(recover(&fixture.target_dir).unwrap(), Recovery::Nothing);
    }
}

// Goal: the file name follows the documented pattern, in UTC, with unsafe characters replaced.
#[test]
fn file_names() {
    assert_eq!(
        file_name("1.2.3", "VM-SERIAL-42", NOW_MS, false),
        "1.2.3_VM-SERIAL-42_20240229_130405_backup.tar.gz"
    );
    assert_eq!(
        file_name("1.2.3-dev+x", "VMware-56 4d_ab/..", 0, true),
        "1.2.3-dev-x_VMware-56-4d-ab-.._19700101_000000_backup.tar.gz.enc"
    );
}

// Goal: the serial comes from the override or the DMI file, trimmed; absence is an error.
#[test]
fn hardware_serial_sources() {
    let dir = tempfile::tempdir().unwrap();
    let dmi = dir.path().join("product_serial");
    assert!(matches!(hardware_serial_from(None, &dmi), Err(Error::NoHardwareSerial { .. })));
    std::fs::write(&dmi, " \n").unwrap();
    assert!(matches!(hardware_serial_from(None, &dmi), Err(Error::NoHardwareSerial { .. })));
    std::fs::write(&dmi, "ABC123 \n").unwrap();
    assert_eq!(hardware_serial_from(None, &dmi).unwrap(), "ABC123");
    assert_eq!(hardware_serial_from(Some(" dev-1 ".to_owned()), &dmi).unwrap(), "dev-1");
    assert!(matches!(
        hardware_serial_from(Some(String::new()), &dmi),
        Err(Error::NoHardwareSerial { .. })
    ));
}

// Goal: versions compare as numbers, suffixes ignored, anything else is refused.
#[test]
fn versions() {
    assert_eq!(parse_version("1.10.0").unwrap(), (1, 10, 0));
    assert!(parse_version("1.10.0").unwrap() > parse_version("1.9.9").unwrap());
    assert_eq!(parse_version("2.0.1-rc.1").unwrap(), (2, 0, 1));
    for bad in ["", "1.2", "1.2.3.4", "a.b.c", "1..3"] {
        assert!(matches!(parse_version(bad), Err(Error::BadVersion { .. })), "{bad}");
    }
}

// Goal: a byte changed anywhere in a plain or an encrypted archive is refused.
#[test]
fn flipped_bytes_are_refused() {
    let fixture = fixture();
    for password in [None, Some(PASSWORD)] {
        let archive = fixture.backup(password);
        let mut positions: Vec<usize> = (0..64).collect();
        positions.extend((0..archive.len()).step_by(archive.len() / 97));
        positions.extend(archive.len() - 64..archive.len());
        for position in positions {
            let mut damaged = archive.clone();
            damaged[position] ^= 0xff;
            fixture.assert_refused(&damaged, password, &format!("flip at {position}"));
        }
    }
}

// Goal: an archive cut short anywhere is refused, including exactly at a chunk boundary of
// an encrypted one.
#[test]
fn truncated_archives_are_refused() {
    let fixture = fixture();
    for password in [None, Some(PASSWORD)] {
        let archive = fixture.backup(password);
        let mut lengths: Vec<usize> = vec![0, 1, 2, 7, 9, 10, 11, 44, 45, 46];
        lengths.extend((0..archive.len()).step_by(archive.len() / 61));
        lengths.extend(archive.len() - 20..archive.len());
        if password.is_some() {
            let full_chunk = CHUNK_SIZE_BYTES + 16;
            assert!(archive.len() > HEADER_SIZE_BYTES + 2 * full_chunk, "spans chunks");
            lengths.extend([HEADER_SIZE_BYTES + full_chunk, HEADER_SIZE_BYTES + 2 * full_chunk]);
            let error = fixture.assert_refused(
                &archive[..HEADER_SIZE_BYTES + 2 * full_chunk],
                password,
                "cut at a chunk boundary",
            );
            assert!(matches!(error, Error::Truncated), "{error:?}");
        }
        for length in lengths {
            fixture.assert_refused(&archive[..length], password, &format!("cut at {length}"));
        }
        let mut longer = archive.clone();
        longer.push(0);
        fixture.assert_refused(&longer, password, "one byte appended");
    }
}

// Goal: chunks of an encrypted archive cannot be reordered or dropped.
#[test]
fn reordered_chunks_are_refused() {
    let fixture = fixture();
    let archive = fixture.backup(Some(PASSWORD));
    let full_chunk = CHUNK_SIZE_BYTES + 16;
    let chunk = |index: usize| {
        &archive
            [HEADER_SIZE_BYTES + index * full_chunk..HEADER_SIZE_BYTES + (index + 1) * full_chunk]
    };
    let rest = &archive[HEADER_SIZE_BYTES + 2 * full_chunk..];
    let swapped = [&archive[..HEADER_SIZE_BYTES], chunk(1), chunk(0), rest].concat();
    fixture.assert_refused(&swapped, Some(PASSWORD), "first two chunks swapped");
    let dropped = [&archive[..HEADER_SIZE_BYTES], chunk(0), rest].concat();
    let error = fixture.assert_refused(&dropped, Some(PASSWORD), "second chunk dropped");
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
}

// Goal: a wrong or missing password is refused and says what it can know.
#[test]
fn wrong_password_is_refused() {
    let fixture = fixture();
    let archive = fixture.backup(Some(PASSWORD));
    let error = fixture.assert_refused(&archive, Some("wrong"), "wrong password");
    assert!(matches!(error, Error::WrongPasswordOrTampered), "{error:?}");
    let error = fixture.assert_refused(&archive, None, "no password");
    assert!(matches!(error, Error::PasswordRequired), "{error:?}");
    assert!(matches!(
        inspect(archive.as_slice(), Some("wrong")),
        Err(Error::WrongPasswordOrTampered)
    ));
}

// Goal: a backup from another machine is refused.
#[test]
fn other_serial_is_refused() {
    let fixture = fixture();
    let archive = fixture.backup(None);
    let before = tree_digest(&fixture.target_dir);
    let result = stage_restore(
        archive.as_slice(),
        None,
        "OTHER",
        VERSION,
        &fixture.staging_dir,
        &mut |_| {},
    );
    let error = result.unwrap_err();
    assert!(matches!(&error, Error::WrongSerial { archive, .. } if archive == SERIAL), "{error:?}");
    assert!(!fixture.staging_dir.exists());
    assert_eq!(tree_digest(&fixture.target_dir), before);
}

// Goal: a backup from newer software is refused; the same or an older one is accepted.
#[test]
fn newer_version_is_refused() {
    let fixture = fixture();
    let archive = fixture.backup_as("1.10.0", None);
    let before = tree_digest(&fixture.target_dir);
    for running in ["1.9.9", "0.99.0", "1.2.3"] {
        let result = stage_restore(
            archive.as_slice(),
            None,
            SERIAL,
            running,
            &fixture.staging_dir,
            &mut |_| {},
        );
        assert!(matches!(result, Err(Error::NewerSoftware { .. })), "{running}: {result:?}");
        assert!(!fixture.staging_dir.exists());
    }
    assert_eq!(tree_digest(&fixture.target_dir), before);
    for running in ["1.10.0", "1.10.1-dev", "2.0.0"] {
        let staged = stage_restore(
            archive.as_slice(),
            None,
            SERIAL,
            running,
            &fixture.staging_dir,
            &mut |_| {},
        )
        .unwrap();
        drop(staged);
        assert!(!fixture.staging_dir.exists(), "an uncommitted stage is removed on drop");
    }
}

// Goal: random bytes, an empty file, a foreign tar.gz, a newer archive format and a newer
// encryption format are refused as such.
#[test]
fn unknown_formats_are_refused() {
    let fixture = fixture();
    let error = fixture.assert_refused(&noise(5_000, 7), None, "random bytes");
    assert!(matches!(error, Error::UnknownFormat { .. }), "{error:?}");
    let error = fixture.assert_refused(&[], None, "empty");
    assert!(matches!(error, Error::UnknownFormat { .. }), "{error:?}");

    let foreign = tar_gz(&[("README", b"hello".as_slice(), tar::EntryType::Regular)]);
    let error = fixture.assert_refused(&foreign, None, "foreign tar.gz");
    assert!(matches!(error, Error::UnknownFormat { .. }), "{error:?}");

    let mut manifest = fixture_manifest(&fixture);
    manifest.format = MANIFEST_FORMAT_VERSION + 1;
    let json = serde_json::to_vec(&manifest).unwrap();
    let newer = tar_gz(&[("manifest.json", json.as_slice(), tar::EntryType::Regular)]);
    let error = fixture.assert_refused(&newer, None, "newer manifest format");
    assert!(matches!(error, Error::FormatTooNew { .. }), "{error:?}");

    let mut encrypted = fixture.backup(Some(PASSWORD));
    encrypted[9] += 1; // the encryption format version's low byte
    let error = fixture.assert_refused(&encrypted, Some(PASSWORD), "newer encryption format");
    assert!(matches!(error, Error::FormatTooNew { .. }), "{error:?}");
}

fn fixture_manifest(fixture: &Fixture) -> Manifest {
    inspect(fixture.backup(None).as_slice(), None).unwrap()
}

/// (raw name, contents, type) of a member written by [`tar_gz`].
type TarEntry<'a> = (&'a str, &'a [u8], tar::EntryType);

/// A tar.gz in our gzip framing with raw member names (the tar crate refuses to write `..`).
fn tar_gz(members: &[TarEntry<'_>]) -> Vec<u8> {
    let gzip = archive::gzip_builder().write(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gzip);
    for (name, data, entry_type) in members {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        if *entry_type == tar::EntryType::Symlink {
            header.set_link_name("/etc/passwd").unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

// Goal: members with absolute or `..` paths, links, or names the manifest does not list are
// refused, and nothing is written outside the staging directory.
#[test]
fn unsafe_members_are_refused() {
    let fixture = fixture();
    let real = fixture_manifest(&fixture);
    let database = std::fs::read(fixture.source_dir.join(DATABASE_FILE)).unwrap();
    let member = |name: &str, data: &[u8]| Member {
        name: name.to_owned(),
        size_bytes: data.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(data)),
    };
    let evil = b"evil".as_slice();
    let cases: Vec<(&str, Vec<Member>, Vec<TarEntry<'_>>)> = vec![
        (
            "`..` in the manifest",
            vec![member("baton.db", &database), member("files/../../evil", evil)],
            vec![("baton.db", &database, tar::EntryType::Regular)],
        ),
        (
            "`..` in the tar",
            vec![member("baton.db", &database), member("files/tls/x", evil)],
            vec![
                ("baton.db", &database, tar::EntryType::Regular),
                ("../../evil", evil, tar::EntryType::Regular),
            ],
        ),
        (
            "absolute path",
            vec![member("baton.db", &database), member("files/tls/x", evil)],
            vec![
                ("baton.db", &database, tar::EntryType::Regular),
                ("/tmp/evil", evil, tar::EntryType::Regular),
            ],
        ),
        (
            "symbolic link",
            vec![member("baton.db", &database), member("files/tls/x", b"")],
            vec![
                ("baton.db", &database, tar::EntryType::Regular),
                ("files/tls/x", b"", tar::EntryType::Symlink),
            ],
        ),
        (
            "extra file over the database",
            vec![member("baton.db", &database), member("files/baton.db", evil)],
            vec![
                ("baton.db", &database, tar::EntryType::Regular),
                ("files/baton.db", evil, tar::EntryType::Regular),
            ],
        ),
        (
            "unlisted member",
            vec![member("baton.db", &database)],
            vec![
                ("baton.db", &database, tar::EntryType::Regular),
                ("files/tls/x", evil, tar::EntryType::Regular),
            ],
        ),
    ];
    for (what, members, entries) in cases {
        let manifest = Manifest { members, ..real.clone() };
        let json = serde_json::to_vec(&manifest).unwrap();
        let mut all = vec![("manifest.json", json.as_slice(), tar::EntryType::Regular)];
        all.extend(entries);
        fixture.assert_refused(&tar_gz(&all), None, what);
        let root = fixture.target_dir.parent().unwrap();
        assert!(!root.join("evil").exists() && !Path::new("/tmp/evil").exists(), "{what}");
    }
}

// Goal: a swap stopped after any of its steps (a crash) and then recovered leaves either the
// whole old state or the whole new state, including when the old database still had a WAL;
// recovery run again changes nothing.
#[test]
fn crash_at_every_step_of_the_swap_recovers_old_or_new() {
    let archive = fixture().backup(None);
    let mut outcomes = Vec::new();
    for stop_after in 0.. {
        let mut fixture = fixture();
        // This fixture's source is not the one the archive was made from: take its heads.
        fixture.source_heads = inspect(archive.as_slice(), None).unwrap().log_heads().unwrap();
        // Leave the old log with events only in its WAL, as after a crash of the daemon.
        let mut log = EventLog::open(&fixture.target_dir.join(DATABASE_FILE)).unwrap();
        log.append(&[event(Stream::Shared, 99, "only in the WAL")]).unwrap();
        fixture.target_heads = log.heads().clone();
        let wal = fixture.target_dir.join(format!("{DATABASE_FILE}-wal"));
        std::mem::forget(log);
        assert!(wal.exists());

        let staged = fixture.stage(&archive, None).unwrap();
        staged.commit_until(&fixture.target_dir, NOW_MS, Some(stop_after)).unwrap();
        let finished = !fixture.target_dir.join(RESTORE_JOURNAL_FILE).exists()
            && !fixture.staging_dir.exists();
        let recovery = recover(&fixture.target_dir).unwrap();
        if stop_after == 0 {
            // Before the journal exists recovery cannot know the staging directory; the
            // caller removes its own (stage_restore refuses to reuse one).
            assert!(fixture.staging_dir.exists());
            std::fs::remove_dir_all(&fixture.staging_dir).unwrap();
        }
        assert!(!fixture.staging_dir.exists(), "step {stop_after}: staging left behind");
        let state = state_of(&fixture);
        assert_eq!(recover(&fixture.target_dir).unwrap(), Recovery::Nothing);
        assert_eq!(state_of(&fixture), state);
        match recovery {
            Recovery::RolledBack => assert_eq!(state, "old", "step {stop_after}"),
            Recovery::RolledForward => assert_eq!(state, "new", "step {stop_after}"),
            Recovery::Nothing => {}
        }
        outcomes.push((stop_after, recovery, state));
        if finished {
            assert_eq!(state, "new");
            break;
        }
    }
    assert_eq!(outcomes.first().map(|o| o.2), Some("old"));
    assert!(outcomes.iter().any(|o| o.1 == Recovery::RolledBack), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o.1 == Recovery::RolledForward), "{outcomes:?}");
    // Stopping after 0 to 11 steps: the journal, 3 database files, 2 × 2 extra file moves,
    // the database, removing the staging directory, removing the journal.
    assert_eq!(outcomes.len(), 12, "{outcomes:?}");
}

// Goal: the streaming cipher round-trips every size around the chunk size, written in
// arbitrary pieces, and refuses a stream missing its last chunk.
#[test]
fn streaming_cipher_round_trip() {
    for length in
        [0, 1, CHUNK_SIZE_BYTES - 1, CHUNK_SIZE_BYTES, CHUNK_SIZE_BYTES + 1, 3 * CHUNK_SIZE_BYTES]
    {
        let plaintext = noise(length, length as u64);
        let mut writer = EncryptingWriter::new(Vec::new(), PASSWORD, FAST_KDF).unwrap();
        for piece in plaintext.chunks(1000) {
            writer.write_all(piece).unwrap();
        }
        let sealed = writer.finish().unwrap();
        let mut opened = Vec::new();
        DecryptingReader::new(sealed.as_slice(), PASSWORD)
            .unwrap()
            .read_to_end(&mut opened)
            .unwrap();
        assert_eq!(opened, plaintext, "{length}");
        // Without its last chunk (what a writer dropped before `finish` leaves).
        let unfinished = &sealed[..sealed.len() - (length % CHUNK_SIZE_BYTES) - 16];
        let mut reader = DecryptingReader::new(unfinished, PASSWORD).unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).is_err(), "{length}: missing last chunk");
        assert!(reader.read(&mut [0; 16]).is_err(), "{length}: the failure sticks");
    }
}

/// Fails like a broken disk after `remaining` bytes.
struct FailingReader<'a> {
    data: &'a [u8],
    remaining: usize,
}

impl Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Err(std::io::Error::other("disk on fire"));
        }
        let length = buf.len().min(self.remaining).min(self.data.len());
        buf[..length].copy_from_slice(&self.data[..length]);
        self.data = &self.data[length..];
        self.remaining -= length;
        Ok(length)
    }
}

// Goal: a failure of the reader is reported as an I/O failure, not as a damaged archive, and
// still leaves nothing behind.
#[test]
fn reader_failures_are_io_errors() {
    let fixture = fixture();
    for password in [None, Some(PASSWORD)] {
        let archive = fixture.backup(password);
        for remaining in [0, 30, archive.len() / 2, archive.len() - 1] {
            let reader = FailingReader { data: &archive, remaining };
            let result =
                stage_restore(reader, password, SERIAL, VERSION, &fixture.staging_dir, &mut |_| {});
            let error = result.unwrap_err();
            assert!(matches!(error, Error::Io { .. }), "{remaining}: {error:?}");
            assert!(!error.is_refusal());
            assert!(!fixture.staging_dir.exists());
        }
    }
}

// Goal: a backup taken while another connection keeps appending is a consistent state of the
// log: it restores, verifies, and holds a prefix of what was written.
#[test]
fn backup_while_the_log_is_written() {
    let fixture = fixture();
    let database = fixture.source_dir.join(DATABASE_FILE);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (database, stop) = (database.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut log = EventLog::open(&database).unwrap();
            let mut appended = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || appended < 20 {
                log.append(&[event(Stream::Shared, 1_000 + appended, "during the backup")])
                    .unwrap();
                appended += 1;
            }
            log.heads().clone()
        })
    };
    let archive = fixture.backup(None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let final_heads = writer.join().unwrap();
    let staged = fixture.stage(&archive, None).unwrap();
    staged.commit(&fixture.target_dir, NOW_MS).unwrap();
    let restored = EventLog::open(&fixture.target_dir.join(DATABASE_FILE)).unwrap();
    let report = restored.verify().unwrap();
    for (chain, head) in &report.heads {
        assert!(head.seq <= final_heads[chain].seq, "the backup holds a prefix of the log");
    }
}

mod hostile;

// Goal: a rebuild that fails because this machine's disk is full (or a file operation failed)
// is reported as the machine's failure, not as a corrupt archive; what the archive's database
// makes SQLite say otherwise is a refusal of the archive.
#[test]
fn a_full_disk_during_the_rebuild_is_not_blamed_on_the_archive() {
    let sqlite = |code: i32| {
        eventlog::Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    };
    let full = restore::rebuild_error(sqlite(rusqlite::ffi::SQLITE_FULL));
    assert!(!full.is_refusal(), "{full}");
    assert!(full.to_string().contains("full"), "{full}");
    let io =
        eventlog::Error::Io { context: "starting".to_owned(), source: std::io::Error::other("x") };
    assert!(!restore::rebuild_error(io).is_refusal());
    let malformed = restore::rebuild_error(sqlite(rusqlite::ffi::SQLITE_CORRUPT));
    assert!(matches!(malformed, Error::Corrupt { .. }), "{malformed}");
    let not_a_log = eventlog::Error::NotABatonLog { path: "archived.db".into() };
    assert!(restore::rebuild_error(not_a_log).is_refusal());
}

// Goal: a member's bytes are hashed and staged whole on the digest's thread (the digest is
// their SHA-256, the file holds them all, across many buffers), and a staged file that cannot
// be written stops the reading with an I/O failure naming the member, not a hang or a panic.
#[test]
fn a_member_is_digested_and_staged_whole_and_a_failed_write_is_an_io_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..10 * 64 * 1024 + 7).map(|index| (index % 251) as u8).collect();
    let mut progress = |_: Progress| {};
    let mut counter =
        archive::ProgressCounter { done_bytes: 0, total_bytes: 0, progress: &mut progress };
    let staged = std::fs::File::create(dir.path().join("member")).unwrap();
    let (sha256, size_bytes, _) =
        restore::digest_and_stage(&data[..], Some(staged), "member", &mut counter).unwrap();
    assert_eq!(sha256, hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(size_bytes, data.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("member")).unwrap(), data);
    assert_eq!(counter.done_bytes, data.len() as u64);

    let read_only = std::fs::File::open(dir.path().join("member")).unwrap();
    let error =
        restore::digest_and_stage(&data[..], Some(read_only), "other", &mut counter).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("writing the staged other"), "{error}");
}

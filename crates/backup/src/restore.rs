//! Reading an archive: recognising its format, decrypting, checking the manifest and every
//! member against it, and staging the members in a directory beside the data directory,
//! where the database is opened and its hash chains verified. Nothing outside the staging
//! directory is touched until [`Staged::commit`].

use crate::archive::{self, EXTRA_FILE_SIZE_MAX_BYTES, check_relative_path, check_restorable_name};
use crate::crypto::{DecryptFailure, DecryptingReader, MAGIC, read_full};
use crate::manifest::{
    FILES_PREFIX, MANIFEST_FORMAT_VERSION, MANIFEST_NAME, Manifest, Member, PRODUCT,
};
use crate::{DATABASE_FILE, Error, Progress, io_error, parse_version};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Largest manifest read; a real one is a few KiB.
pub const MANIFEST_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Most a restore stages or inflates, all members together, whatever the manifest declares:
/// a gzip bomb is refused from its manifest, before its data is read. (The appliance's data
/// partition is 256 MiB; development machines hold larger test logs.)
pub const STAGED_SIZE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Largest database accepted.
pub const DATABASE_SIZE_MAX_BYTES: u64 = STAGED_SIZE_MAX_BYTES;
/// Left free on the staging file system besides the staged members and the rebuilt database
/// (its write-ahead log, the restore journal).
const STAGING_FREE_RESERVE_BYTES: u64 = 16 * 1024 * 1024;
/// The archive's database file is renamed to this in the staging directory while the
/// database that will be restored is rebuilt from its log alone.
const ARCHIVED_DATABASE_FILE: &str = "archived.db";
/// Decompressed bytes allowed after the tar's last member (its end blocks and padding).
const TRAILER_SIZE_MAX_BYTES: u64 = 1024 * 1024;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const READ_BUFFER_SIZE_BYTES: usize = 64 * 1024;
/// Events read at a time when folding a staged database into its configuration.
const FOLD_BATCH_EVENTS: usize = 4096;

/// Reads and checks a whole archive without writing anything: format, decryption, the
/// manifest, and every member's presence, size and digest. Does not open the database (that
/// needs a staged copy; see [`stage_restore`]).
pub fn inspect(reader: impl Read, password: Option<&str>) -> Result<Manifest, Error> {
    read_archive(reader, password, &mut |_| Ok(()), &mut |_| Ok(None), &mut |_| {})
}

/// Checks an archive and stages it in `staging_dir` (created here; it must not exist and must
/// be on the data directory's file system) for [`Staged::commit`]. Refuses an archive from
/// another machine (`expected_serial`), from newer software than `running_version`, a wrong
/// password, and anything corrupted, truncated or unknown; on any error the staging directory
/// is removed and nothing else was touched.
///
/// Use one fixed staging path (e.g. `<data_dir>/restore-staging`) and remove it at start-up
/// after [`crate::recover`]: a crash while staging, or before a commit wrote its journal,
/// leaves it behind, and nothing else knows it.
pub fn stage_restore(
    reader: impl Read,
    password: Option<&str>,
    expected_serial: &str,
    running_version: &str,
    staging_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Staged, Error> {
    let target = StagingTarget { expected_serial, running_version, staging_dir };
    stage_restore_deriving(reader, password, &target, progress, &mut |_, _| Ok(()))
}

/// Where [`stage_restore_deriving`] stages an archive, and what it must match.
pub struct StagingTarget<'a> {
    pub expected_serial: &'a str,
    pub running_version: &'a str,
    pub staging_dir: &'a Path,
}

/// [`stage_restore`], handing `derive` the archive's events as its database is rebuilt
/// from them (see `eventlog::EventLog::rebuild_from_deriving`): what it derives is written in
/// the staged database with them. A failed `derive` refuses the archive as unreadable.
pub fn stage_restore_deriving(
    reader: impl Read,
    password: Option<&str>,
    target: &StagingTarget<'_>,
    progress: &mut dyn FnMut(Progress),
    derive: &mut eventlog::Derive<'_>,
) -> Result<Staged, Error> {
    let StagingTarget { expected_serial, running_version, staging_dir } = *target;
    let running = parse_version(running_version)?;
    match std::fs::create_dir(staging_dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::StagingExists { path: staging_dir.to_path_buf() });
        }
        Err(error) => {
            return Err(Error::Io {
                context: format!("creating {}", staging_dir.display()),
                source: error,
            });
        }
    }
    // From here on, dropping `staged` (any early return) removes the staging directory.
    let mut staged =
        Staged { dir: staging_dir.to_path_buf(), manifest: empty_manifest(), remove_on_drop: true };
    let mut check_manifest = |manifest: &Manifest| {
        if manifest.hardware_serial != expected_serial {
            return Err(Error::WrongSerial {
                archive: manifest.hardware_serial.clone(),
                this_machine: expected_serial.to_owned(),
            });
        }
        let archive_version =
            parse_version(&manifest.software_version).map_err(|_| Error::Corrupt {
                reason: format!("bad software version {:?}", manifest.software_version),
            })?;
        if archive_version > running {
            return Err(Error::NewerSoftware {
                archive: manifest.software_version.clone(),
                running: running_version.to_owned(),
            });
        }
        check_staging_space(staging_dir, manifest)
    };
    let mut open_member = |member: &Member| {
        let path = staging_dir.join(&member.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_error(|| format!("creating {}", parent.display())))?;
        }
        let file = std::fs::File::create_new(&path)
            .map_err(io_error(|| format!("creating {}", path.display())))?;
        Ok(Some(file))
    };
    let manifest = read_archive(reader, password, &mut check_manifest, &mut open_member, progress)?;
    let (log, report) = rebuild_staged_database(staging_dir, derive)?;
    check_staged_database(&log, &manifest, &report)?;
    drop(log);
    sync_tree(staging_dir)?;
    staged.manifest = manifest;
    Ok(staged)
}

/// A verified archive, unpacked in its staging directory: the database as `baton.db` and the
/// extra files under `files/`. Dropping it without committing removes the directory.
#[derive(Debug)]
pub struct Staged {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Manifest,
    /// False once a commit has started: from then on the staging directory belongs to the
    /// swap, which may need it to roll back.
    pub(crate) remove_on_drop: bool,
}

impl Staged {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn staging_dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the staged database holds: its events folded by the model's rule, so
    /// a restore can be previewed (`batonctl backup inspect`, the web Backup page).
    pub fn configuration(&self) -> Result<model::State, Error> {
        let conn = eventlog::open_reader(&self.dir.join(DATABASE_FILE))?;
        let mut state = model::State::default();
        // A backup taken while the licence was shared restores with it (the store adopts it
        // the same way when the restore goes live).
        let mut migration = model::LicenceMigration::default();
        let mut position = 0;
        loop {
            let batch = eventlog::read_after(&conn, position, FOLD_BATCH_EVENTS)?;
            let Some(last) = batch.last() else {
                if let Some((stamp, licence)) = migration.adopted() {
                    state.apply(stamp, &model::Event::Saved(licence));
                }
                return Ok(state);
            };
            position = last.position;
            for stored in &batch {
                let event = model::Event::decode(&stored.kind, stored.version, &stored.payload)
                    .map_err(|error| Error::Corrupt {
                        reason: format!("event at position {}: {error}", stored.position),
                    })?;
                let stamp = model::Stamp { hlc: stored.hlc, origin: stored.origin };
                migration.note(stamp, &event, stored.in_its_stream(&event));
                if stored.in_its_stream(&event) {
                    state.apply(stamp, &event);
                }
            }
        }
    }

    /// Names (relative to the data directory) of the extra files a commit puts in place.
    pub fn extra_files(&self) -> Vec<String> {
        self.manifest
            .members
            .iter()
            .filter_map(|member| member.name.strip_prefix(FILES_PREFIX).map(str::to_owned))
            .collect()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Best effort: a leftover staging directory is refused by the next stage_restore,
            // which names it, so it cannot be used by mistake.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn empty_manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT_VERSION,
        product: PRODUCT.to_owned(),
        software_version: String::new(),
        hardware_serial: String::new(),
        created_at_ms: 0,
        peer_id: String::new(),
        heads: Vec::new(),
        members: Vec::new(),
    }
}

/// Refuses an archive whose members, with the database rebuilt beside them, would not fit
/// on the staging file system: checked from the manifest, before anything is written.
pub(crate) fn check_staging_space(staging_dir: &Path, manifest: &Manifest) -> Result<(), Error> {
    let database_size_bytes = manifest.members.first().map_or(0, |member| member.size_bytes);
    let needed_bytes = manifest
        .members_size_bytes()
        .saturating_add(database_size_bytes)
        .saturating_add(STAGING_FREE_RESERVE_BYTES);
    let stats = rustix::fs::statvfs(staging_dir).map_err(|error| Error::Io {
        context: format!("measuring the free space of {}", staging_dir.display()),
        source: error.into(),
    })?;
    let available_bytes = stats.f_bavail.saturating_mul(stats.f_frsize);
    if needed_bytes > available_bytes {
        return Err(Error::UnsafeMember {
            name: MANIFEST_NAME.to_owned(),
            reason: format!(
                "restoring it needs {needed_bytes} bytes; the data partition has \
                 {available_bytes} free"
            ),
        });
    }
    Ok(())
}

/// Replaces the archive's database by one rebuilt from its log alone (events, chain heads,
/// journal, identity): snapshots, projection tables and anything else the file held are
/// derived data a crafted archive could fake, so they are dropped here and derived again
/// from the verified events by whoever opens the restored log. Both the offline swap and
/// the daemon's live restore take the database from the staging directory, so both get
/// the rebuilt one. Every chain is walked as its events are copied (the report): a broken
/// one fails the rebuild. The member digests already matched, so a chain that does not
/// verify means the archive was made from a damaged log or crafted; either way it is refused.
fn rebuild_staged_database(
    staging_dir: &Path,
    derive: &mut eventlog::Derive<'_>,
) -> Result<(eventlog::EventLog, eventlog::VerifyReport), Error> {
    let staged = staging_dir.join(DATABASE_FILE);
    let archived = staging_dir.join(ARCHIVED_DATABASE_FILE);
    std::fs::rename(&staged, &archived)
        .map_err(io_error(|| format!("renaming {}", staged.display())))?;
    let rebuilt = eventlog::EventLog::rebuild_from_deriving(&archived, &staged, derive);
    let rebuilt = rebuilt.map_err(rebuild_error)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = PathBuf::from(format!("{}{suffix}", archived.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::Io {
                    context: format!("removing {}", path.display()),
                    source: error,
                });
            }
        }
    }
    Ok(rebuilt)
}

/// Why a rebuild failed: a full disk or a file operation that failed is this machine's
/// failure, whatever else the archive's database made SQLite say is the archive's (a crafted
/// file can make SQLite report many things, but not that our disk is full).
pub(crate) fn rebuild_error(error: eventlog::Error) -> Error {
    let full = rusqlite::ErrorCode::DiskFull;
    match error {
        eventlog::Error::Io { .. } => Error::EventLog(error),
        eventlog::Error::Sqlite(rusqlite::Error::SqliteFailure(ref failure, _))
            if failure.code == full =>
        {
            Error::EventLog(error)
        }
        eventlog::Error::Corrupt { .. } => Error::Corrupt {
            reason: format!("the database in the backup does not verify: {error}"),
        },
        _ => {
            Error::Corrupt { reason: format!("the database in the backup cannot be read: {error}") }
        }
    }
}

/// Compares the rebuilt log's identity, its heads and those its chains were walked to
/// (`report`) with the manifest's.
fn check_staged_database(
    log: &eventlog::EventLog,
    manifest: &Manifest,
    report: &eventlog::VerifyReport,
) -> Result<(), Error> {
    let corrupt = |reason: String| Error::Corrupt { reason };
    let expected = manifest.log_heads()?;
    if &expected != log.heads() || expected != report.heads {
        return Err(corrupt("the database's chain heads differ from the manifest's".to_owned()));
    }
    if log.peer_id().to_hex() != manifest.peer_id {
        return Err(corrupt("the database's peer identity differs from the manifest's".to_owned()));
    }
    Ok(())
}

/// fsyncs every file and directory under `root`, and `root` itself, so a commit swaps in
/// data that is on disk.
fn sync_tree(root: &Path) -> Result<(), Error> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(io_error(|| format!("reading {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_error(|| format!("reading {}", dir.display())))?;
            let path = entry.path();
            let file_type =
                entry.file_type().map_err(io_error(|| format!("inspecting {}", path.display())))?;
            if file_type.is_dir() {
                pending.push(path);
            } else {
                crate::swap::sync_path(&path)?;
            }
        }
        crate::swap::sync_path(&dir)?;
    }
    Ok(())
}

type MemberOpener<'a> = dyn FnMut(&Member) -> Result<Option<std::fs::File>, Error> + 'a;

/// The one reading path: `check_manifest` runs as soon as the manifest is read (so a wrong
/// serial is refused before anything is extracted), `open_member` says where each member goes
/// (`None`: only digested).
fn read_archive(
    reader: impl Read,
    password: Option<&str>,
    check_manifest: &mut dyn FnMut(&Manifest) -> Result<(), Error>,
    open_member: &mut MemberOpener<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Manifest, Error> {
    let mut source = SourceReader(reader);
    let mut prefix = [0u8; MAGIC.len()];
    let prefix_length = read_full(&mut source, &mut prefix).map_err(classify)?;
    let prefix = &prefix[..prefix_length];
    let input = io::Cursor::new(prefix.to_vec()).chain(source);
    let plaintext: Box<dyn Read + '_> = if prefix.starts_with(&GZIP_MAGIC) {
        Box::new(input)
    } else if prefix == MAGIC {
        let password = password.ok_or(Error::PasswordRequired)?;
        Box::new(DecryptingReader::new(input, password)?)
    } else if prefix_length < MAGIC.len() && !prefix.is_empty() && MAGIC.starts_with(prefix) {
        return Err(Error::Truncated);
    } else {
        return Err(Error::UnknownFormat {
            reason: "neither a gzip archive nor an encrypted Baton backup".to_owned(),
        });
    };

    // Only the gzip header's fields outside its CRC are compared here; the rest of the stream
    // is checked by gzip's CRC and length, the manifest digests and (if encrypted) the tags.
    let mut plaintext = BufReader::with_capacity(READ_BUFFER_SIZE_BYTES, plaintext);
    let expected_header = archive::expected_gzip_header()
        .map_err(io_error(|| "preparing the gzip header".to_owned()))?;
    let mut header = vec![0u8; expected_header.len()];
    let header_length = read_full(&mut plaintext, &mut header).map_err(classify)?;
    if header_length < header.len() {
        return Err(Error::Truncated);
    }
    if header != expected_header {
        return Err(Error::Corrupt { reason: "unexpected gzip header".to_owned() });
    }
    let gzip =
        flate2::bufread::GzDecoder::new(BufReader::new(io::Cursor::new(header).chain(plaintext)));
    let mut tar = tar::Archive::new(gzip);
    let manifest = {
        let mut entries = tar.entries().map_err(classify)?;
        let manifest = read_manifest(entries.next())?;
        check_manifest(&manifest)?;
        let mut counter = archive::ProgressCounter {
            done_bytes: 0,
            total_bytes: manifest.members_size_bytes(),
            progress,
        };
        for member in &manifest.members {
            let Some(entry) = entries.next() else {
                return Err(Error::Corrupt {
                    reason: format!("member {} is missing", member.name),
                });
            };
            read_member(entry.map_err(classify)?, member, open_member, &mut counter)?;
        }
        if let Some(entry) = entries.next() {
            let entry = entry.map_err(classify)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            return Err(Error::Corrupt { reason: format!("unexpected member {name}") });
        }
        manifest
    };

    // Read to the very end, so gzip's CRC and length and the encryption's last chunk are
    // checked: until then a truncated or modified tail would go unnoticed.
    let mut gzip = tar.into_inner();
    let trailer_bytes =
        io::copy(&mut (&mut gzip).take(TRAILER_SIZE_MAX_BYTES + 1), &mut io::sink())
            .map_err(classify)?;
    if trailer_bytes > TRAILER_SIZE_MAX_BYTES {
        return Err(Error::Corrupt { reason: "data after the last member".to_owned() });
    }
    let mut rest = gzip.into_inner();
    if !rest.fill_buf().map_err(classify)?.is_empty() {
        return Err(Error::Corrupt { reason: "data after the end of the archive".to_owned() });
    }
    Ok(manifest)
}

fn read_manifest<R: Read>(entry: Option<io::Result<tar::Entry<'_, R>>>) -> Result<Manifest, Error> {
    let Some(entry) = entry else { return Err(Error::Truncated) };
    let entry = entry.map_err(classify)?;
    let name = check_entry(&entry)?;
    if name != MANIFEST_NAME {
        return Err(Error::UnknownFormat { reason: format!("the first member is {name}") });
    }
    if entry.size() > MANIFEST_SIZE_MAX_BYTES {
        return Err(Error::Corrupt { reason: "the manifest is too large".to_owned() });
    }
    let mut bytes = Vec::new();
    entry.take(MANIFEST_SIZE_MAX_BYTES).read_to_end(&mut bytes).map_err(classify)?;
    // Format and product first, so a newer format says so rather than failing to parse.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|error| Error::Corrupt { reason: format!("manifest: {error}") })?;
    if value["product"] != PRODUCT {
        return Err(Error::UnknownFormat { reason: "the manifest is not Baton's".to_owned() });
    }
    let format = value["format"].as_u64().ok_or_else(|| Error::UnknownFormat {
        reason: "the manifest has no format version".to_owned(),
    })?;
    if format > u64::from(MANIFEST_FORMAT_VERSION) {
        return Err(Error::FormatTooNew {
            found: u32::try_from(format).unwrap_or(u32::MAX),
            supported: MANIFEST_FORMAT_VERSION,
        });
    }
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|error| Error::Corrupt { reason: format!("manifest: {error}") })?;
    check_members(&manifest)?;
    Ok(manifest)
}

/// The member list must be the database first, then extra files with safe, distinct names,
/// all within the size limits: this bounds what staging may write.
fn check_members(manifest: &Manifest) -> Result<(), Error> {
    let corrupt = |reason: String| Error::Corrupt { reason: format!("manifest: {reason}") };
    let Some((database, extras)) = manifest.members.split_first() else {
        return Err(corrupt("no members".to_owned()));
    };
    if database.name != DATABASE_FILE {
        return Err(corrupt(format!("the first member must be {DATABASE_FILE}")));
    }
    let too_large = |member: &Member, limit_bytes: u64| Error::UnsafeMember {
        name: member.name.clone(),
        reason: format!(
            "it declares {} bytes; a restore takes at most {limit_bytes}",
            member.size_bytes
        ),
    };
    if database.size_bytes > DATABASE_SIZE_MAX_BYTES {
        return Err(too_large(database, DATABASE_SIZE_MAX_BYTES));
    }
    if extras.len() > archive::EXTRA_FILES_MAX {
        return Err(corrupt("too many members".to_owned()));
    }
    let mut names = BTreeSet::new();
    for member in extras {
        let Some(name) = member.name.strip_prefix(FILES_PREFIX) else {
            return Err(corrupt(format!("unexpected member {}", member.name)));
        };
        check_restorable_name(name)
            .map_err(|reason| Error::UnsafeMember { name: member.name.clone(), reason })?;
        if member.size_bytes > EXTRA_FILE_SIZE_MAX_BYTES {
            return Err(too_large(member, EXTRA_FILE_SIZE_MAX_BYTES));
        }
        if !names.insert(name) {
            return Err(corrupt(format!("{} is listed twice", member.name)));
        }
    }
    if manifest.members_size_bytes() > STAGED_SIZE_MAX_BYTES {
        return Err(Error::UnsafeMember {
            name: MANIFEST_NAME.to_owned(),
            reason: format!(
                "the members total {} bytes; a restore takes at most {STAGED_SIZE_MAX_BYTES}",
                manifest.members_size_bytes()
            ),
        });
    }
    // A file and a directory of the same name cannot both be restored.
    for name in &names {
        let mut prefix = String::new();
        for component in name.split('/') {
            if names.contains(prefix.trim_end_matches('/')) {
                return Err(corrupt(format!("{name} is inside another member")));
            }
            prefix.push_str(component);
            prefix.push('/');
        }
    }
    Ok(())
}

/// Refuses anything but a regular file with a safe relative name; returns the name.
fn check_entry<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, Error> {
    let raw_name = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw_name).into_owned();
    let unsafe_member = |reason: String| Error::UnsafeMember { name: name.clone(), reason };
    if std::str::from_utf8(&raw_name).is_err() {
        return Err(unsafe_member("the name is not UTF-8".to_owned()));
    }
    check_relative_path(&name).map_err(unsafe_member)?;
    let entry_type = entry.header().entry_type();
    if entry_type != tar::EntryType::Regular {
        return Err(unsafe_member(format!(
            "only regular files are accepted, this is {entry_type:?} (links, directories and devices are refused)"
        )));
    }
    Ok(name)
}

fn read_member<R: Read>(
    entry: tar::Entry<'_, R>,
    member: &Member,
    open_member: &mut MemberOpener<'_>,
    counter: &mut archive::ProgressCounter<'_>,
) -> Result<(), Error> {
    let name = check_entry(&entry)?;
    if name != member.name {
        return Err(Error::Corrupt {
            reason: format!("expected member {}, found {name}", member.name),
        });
    }
    if entry.size() != member.size_bytes {
        return Err(Error::Corrupt { reason: format!("member {name} has the wrong size") });
    }
    let file = open_member(member)?;
    let (sha256, size_bytes, file) =
        digest_and_stage(entry.take(member.size_bytes), file, &name, counter)?;
    if size_bytes != member.size_bytes {
        return Err(Error::Truncated);
    }
    if sha256 != member.sha256 {
        return Err(Error::Corrupt { reason: format!("member {name} does not match its digest") });
    }
    // The database member is only read, rebuilt into a new file and deleted: syncing it would
    // wait for all of its bytes to reach the disk for nothing. The rebuilt database and the
    // extra files are synced before a commit can use them (`sync_tree`).
    if let Some(file) = file.filter(|_| name != DATABASE_FILE) {
        file.sync_all().map_err(io_error(|| format!("syncing the staged {name}")))?;
    }
    Ok(())
}

/// Buffers of a member's bytes inflated ahead of the digest: two keep the inflating busy.
const DIGEST_QUEUE_BUFFERS: usize = 2;

/// Reads `reader` to its end, hashing (SHA-256, hex) and writing to `file` what it read on a
/// thread of its own, so the hashing overlaps the inflating of the next bytes. Returns the
/// digest, the size read and the file.
pub(crate) fn digest_and_stage(
    mut reader: impl Read,
    file: Option<std::fs::File>,
    name: &str,
    counter: &mut archive::ProgressCounter<'_>,
) -> Result<(String, u64, Option<std::fs::File>), Error> {
    std::thread::scope(|scope| {
        let (full, filled) = std::sync::mpsc::sync_channel::<Vec<u8>>(DIGEST_QUEUE_BUFFERS);
        let (empty, emptied) = std::sync::mpsc::channel::<Vec<u8>>();
        for _ in 0..DIGEST_QUEUE_BUFFERS + 2 {
            let _ = empty.send(vec![0u8; READ_BUFFER_SIZE_BYTES]);
        }
        let digester = std::thread::Builder::new()
            .name("baton-digest".to_owned())
            .spawn_scoped(scope, move || digest_and_write(&filled, &empty, file))
            .map_err(io_error(|| "starting the restore's digest".to_owned()))?;
        let mut size_bytes = 0u64;
        let mut failure = None;
        // Ends when the digester stops taking or returning buffers: its error says why.
        while let Ok(mut buffer) = emptied.recv() {
            buffer.resize(READ_BUFFER_SIZE_BYTES, 0);
            let length = match read_retrying(&mut reader, &mut buffer) {
                Ok(0) => break,
                Ok(length) => length,
                Err(error) => {
                    failure = Some(classify(error));
                    break;
                }
            };
            buffer.truncate(length);
            size_bytes += length as u64;
            counter.add(length as u64);
            if full.send(buffer).is_err() {
                break;
            }
        }
        drop(full);
        let digested = digester.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Some(error) = failure {
            return Err(error);
        }
        let (sha256, file) = digested.map_err(io_error(|| format!("writing the staged {name}")))?;
        Ok((sha256, size_bytes, file))
    })
}

fn read_retrying(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buffer) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            read => return read,
        }
    }
}

/// The digest's thread: hashes and writes each buffer `filled` brings, and hands it back.
fn digest_and_write(
    filled: &std::sync::mpsc::Receiver<Vec<u8>>,
    empty: &std::sync::mpsc::Sender<Vec<u8>>,
    mut file: Option<std::fs::File>,
) -> io::Result<(String, Option<std::fs::File>)> {
    let mut hasher = Sha256::new();
    for buffer in filled {
        hasher.update(&buffer);
        if let Some(file) = file.as_mut() {
            file.write_all(&buffer)?;
        }
        // Refused only once the reading has stopped.
        let _ = empty.send(buffer);
    }
    Ok((hex::encode(hasher.finalize()), file))
}

/// Marks errors of the caller's reader, so they are reported as I/O failures rather than as a
/// damaged archive.
struct SourceReader<R>(R);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SourceFailure(io::Error);

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|error| {
            if error.kind() == io::ErrorKind::Interrupted {
                error
            } else {
                io::Error::new(error.kind(), SourceFailure(error))
            }
        })
    }
}

/// Turns an I/O error from the decoding stack into what went wrong: the source failed, the
/// decryption refused, or the data itself is damaged (gzip, tar) or cut short.
fn classify(error: io::Error) -> Error {
    let mut failure: Option<DecryptFailure> = None;
    let mut source_failure: Option<(io::ErrorKind, String)> = None;
    {
        let mut current: Option<&(dyn std::error::Error + 'static)> =
            error.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
        while let Some(node) = current {
            if let Some(found) = node.downcast_ref::<DecryptFailure>() {
                failure = Some(*found);
                break;
            }
            if let Some(found) = node.downcast_ref::<SourceFailure>() {
                source_failure = Some((found.0.kind(), found.0.to_string()));
                break;
            }
            current = match node.downcast_ref::<io::Error>() {
                Some(io_error) => io_error.get_ref().map(|inner| inner as _),
                None => node.source(),
            };
        }
    }
    if let Some(failure) = failure {
        return failure.into();
    }
    if let Some((kind, message)) = source_failure {
        return Error::Io {
            context: "reading the backup".to_owned(),
            source: io::Error::new(kind, message),
        };
    }
    if error.kind() == io::ErrorKind::UnexpectedEof {
        return Error::Truncated;
    }
    Error::Corrupt { reason: error.to_string() }
}

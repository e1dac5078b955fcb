//! Writing an archive: a consistent copy of the database (SQLite's online backup API, so the
//! daemon keeps writing meanwhile) and the extra files are staged in a scratch directory and
//! digested, then streamed as a gzip tar — manifest first — through optional encryption into
//! any `Write`. Only one read buffer of the data is in memory at a time.

use crate::crypto::{EncryptingWriter, KdfParams};
use crate::manifest::{
    self, FILES_PREFIX, MANIFEST_FORMAT_VERSION, MANIFEST_NAME, Manifest, Member,
};
use crate::{DATABASE_FILE, Error, Progress, io_error};
use eventlog::EventLog;
use flate2::{Compression, GzBuilder};
use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest extra file accepted (certificates and keys are a few KiB).
pub const EXTRA_FILE_SIZE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Most extra files in one archive.
pub const EXTRA_FILES_MAX: usize = 256;
/// The one folder of the data directory whose files a backup of this format holds (the TLS
/// certificate and key, directly in it): the allow-list a restore checks every member against,
/// so a crafted archive cannot put a file anywhere else in the data directory.
pub const EXTRA_FILES_DIR: &str = "tls";
/// Longest member name, in bytes.
pub const MEMBER_NAME_LENGTH_MAX_BYTES: usize = 1024;
/// The online backup retries while the source is locked for a moment (a checkpoint) at most
/// this many times, `BACKUP_BUSY_PAUSE_MS` apart.
const BACKUP_BUSY_RETRIES_MAX: u32 = 500;
const BACKUP_BUSY_PAUSE_MS: u64 = 10;
/// The deflate level of every archive, chosen by measurement (`cargo xtask bench backup` prints
/// each level beside `gzip -6`; 10^5 events, 21.5 MiB database): level 2 took 0.21× gzip's time
/// for 1.04× its size, level 6 0.56× for 1.02×, level 1 0.10× for 1.13×. Levels 2–8 share the
/// gzip header (its `XFL` byte is 0), so archives written at any of them read the same.
pub const GZIP_LEVEL: u32 = 2;
/// gzip header fields we fix so the header is byte-for-byte predictable: a reader refuses any
/// other, which keeps bytes that gzip's CRC does not cover from going unchecked.
pub(crate) const GZIP_OS_UNKNOWN: u8 = 255;

/// A file of the data directory to include, e.g. a TLS key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExtraFile {
    /// Path relative to the data directory, `/`-separated (`tls/server.key`); a restore puts
    /// the file back there.
    pub name: String,
    /// Where to read it now.
    pub source: PathBuf,
}

/// What to back up besides the database, and how.
pub struct BackupOptions<'a> {
    pub software_version: &'a str,
    pub hardware_serial: &'a str,
    pub created_at_ms: u64,
    pub extra_files: &'a [ExtraFile],
    /// Encrypts the archive when given.
    pub password: Option<&'a str>,
    pub kdf: KdfParams,
    /// Where the database copy and the extra files are staged (a private subdirectory, removed
    /// afterwards); needs room for one more copy of the database.
    pub scratch_dir: &'a Path,
}

/// Writes a backup of `database` and the extra files into `output`, and returns the manifest
/// written and `output`. `progress` is called as members are written. Pass a read connection
/// (`eventlog::open_reader`): the copy is one read transaction, which under WAL does not hold
/// up the writer. Blocking; the daemon runs it off the async runtime.
pub fn write_backup<W: Write>(
    database: &Connection,
    options: &BackupOptions<'_>,
    output: W,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Manifest, W), Error> {
    check_extra_files(options.extra_files)?;
    let scratch =
        tempfile::Builder::new().prefix("baton-backup-").tempdir_in(options.scratch_dir).map_err(
            io_error(|| format!("creating a directory in {}", options.scratch_dir.display())),
        )?;

    let database_copy = scratch.path().join(DATABASE_FILE);
    copy_database(database, &database_copy)?;
    // Heads and identity come from the copy itself, so they match what the archive holds even
    // though the live log moved on. Verifying here means a broken log is found now, not when
    // its backup is needed.
    let (peer_id, heads) = {
        let log = EventLog::open(&database_copy)?;
        log.verify()?;
        (log.peer_id(), log.heads().clone())
    };

    // (member name, staged file) in archive order.
    let mut staged = vec![(DATABASE_FILE.to_owned(), database_copy)];
    for (index, extra) in options.extra_files.iter().enumerate() {
        let target = scratch.path().join(format!("extra-{index}"));
        copy_limited(&extra.source, &target, EXTRA_FILE_SIZE_MAX_BYTES, &extra.name)?;
        staged.push((format!("{FILES_PREFIX}{}", extra.name), target));
    }
    let mut members = Vec::with_capacity(staged.len());
    for (name, path) in &staged {
        let (size_bytes, sha256) = digest_file(path)?;
        members.push(Member { name: name.clone(), size_bytes, sha256 });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT_VERSION,
        product: manifest::PRODUCT.to_owned(),
        software_version: options.software_version.to_owned(),
        hardware_serial: options.hardware_serial.to_owned(),
        created_at_ms: options.created_at_ms,
        peer_id: peer_id.to_hex(),
        heads: manifest::chain_heads(&heads),
        members,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|error| Error::Io {
        context: "encoding the manifest".to_owned(),
        source: error.into(),
    })?;

    let sink = match options.password {
        Some(password) => {
            Sink::Encrypted(Box::new(EncryptingWriter::new(output, password, options.kdf)?))
        }
        None => Sink::Plain(output),
    };
    let gzip = gzip_builder().write(sink, Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(gzip);
    let mtime_s = options.created_at_ms / 1000;
    let total_bytes = manifest_json.len() as u64 + manifest.members_size_bytes();
    let mut counter = ProgressCounter { done_bytes: 0, total_bytes, progress };

    let mut header = member_header(manifest_json.len() as u64, mtime_s);
    tar.append_data(&mut header, MANIFEST_NAME, manifest_json.as_slice()).map_err(writing_error)?;
    counter.add(manifest_json.len() as u64);
    for (member, (_, path)) in manifest.members.iter().zip(&staged) {
        let file = std::fs::File::open(path)
            .map_err(io_error(|| format!("opening the staged {}", member.name)))?;
        let mut header = member_header(member.size_bytes, mtime_s);
        let reader = CountingReader { inner: file, counter: &mut counter };
        // `take` keeps the tar entry exactly as long as its header says, whatever happens.
        tar.append_data(&mut header, &member.name, reader.take(member.size_bytes))
            .map_err(writing_error)?;
    }
    let gzip = tar.into_inner().map_err(writing_error)?;
    let sink = gzip.finish().map_err(writing_error)?;
    let mut output = match sink {
        Sink::Plain(output) => output,
        Sink::Encrypted(writer) => writer.finish().map_err(writing_error)?,
    };
    output.flush().map_err(writing_error)?;
    Ok((manifest, output))
}

fn writing_error(source: io::Error) -> Error {
    Error::Io { context: "writing the backup".to_owned(), source }
}

/// The gzip framing every archive uses; see [`GZIP_OS_UNKNOWN`].
pub(crate) fn gzip_builder() -> GzBuilder {
    GzBuilder::new().mtime(0).operating_system(GZIP_OS_UNKNOWN)
}

/// The exact 10-byte gzip header [`write_backup`] produces.
pub(crate) fn expected_gzip_header() -> io::Result<Vec<u8>> {
    let mut encoder = gzip_builder().write(Vec::new(), Compression::new(GZIP_LEVEL));
    encoder.flush()?;
    let mut bytes = encoder.finish()?;
    bytes.truncate(10);
    Ok(bytes)
}

fn member_header(size_bytes: u64, mtime_s: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size_bytes);
    header.set_mode(0o600);
    header.set_mtime(mtime_s);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Where the gzip stream goes: straight out, or through encryption.
enum Sink<W: Write> {
    Plain(W),
    // Boxed: the cipher state is a kilobyte and only one sink exists per backup.
    Encrypted(Box<EncryptingWriter<W>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(writer) => writer.write(buf),
            Sink::Encrypted(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(writer) => writer.flush(),
            Sink::Encrypted(writer) => writer.flush(),
        }
    }
}

pub(crate) struct ProgressCounter<'a> {
    pub(crate) done_bytes: u64,
    pub(crate) total_bytes: u64,
    pub(crate) progress: &'a mut dyn FnMut(Progress),
}

impl ProgressCounter<'_> {
    pub(crate) fn add(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        (self.progress)(Progress { done_bytes: self.done_bytes, total_bytes: self.total_bytes });
    }
}

struct CountingReader<'a, 'b, R> {
    inner: R,
    counter: &'a mut ProgressCounter<'b>,
}

impl<R: Read> Read for CountingReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let length = self.inner.read(buf)?;
        self.counter.add(length as u64);
        Ok(length)
    }
}

/// Copies the database through SQLite's online backup API into a new file at `target`.
fn copy_database(source: &Connection, target: &Path) -> Result<(), Error> {
    let mut destination = Connection::open(target)?;
    let backup = Backup::new(source, &mut destination)?;
    let mut busy_retries = 0;
    loop {
        // All pages in one step: one read transaction, hence one consistent state. Under WAL
        // it does not block the writer; stepping in parts would restart whenever it commits.
        match backup.step(-1)? {
            StepResult::Done => break,
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                busy_retries += 1;
                if busy_retries > BACKUP_BUSY_RETRIES_MAX {
                    return Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some("the database stayed locked during the backup".to_owned()),
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(BACKUP_BUSY_PAUSE_MS));
            }
            // `StepResult` is non-exhaustive; anything new is retried like a busy step.
            _ => {}
        }
    }
    Ok(())
}

/// Copies a regular file of at most `limit_bytes`.
fn copy_limited(source: &Path, target: &Path, limit_bytes: u64, name: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::BadExtraFile { name: name.to_owned(), reason };
    let file = std::fs::File::open(source)
        .map_err(|error| bad(format!("cannot open {}: {error}", source.display())))?;
    let metadata =
        file.metadata().map_err(io_error(|| format!("inspecting {}", source.display())))?;
    if !metadata.is_file() {
        return Err(bad(format!("{} is not a regular file", source.display())));
    }
    let mut output = std::fs::File::create(target)
        .map_err(io_error(|| format!("creating {}", target.display())))?;
    let copied = io::copy(&mut file.take(limit_bytes + 1), &mut output)
        .map_err(io_error(|| format!("copying {}", source.display())))?;
    if copied > limit_bytes {
        return Err(bad(format!("larger than {limit_bytes} bytes")));
    }
    Ok(())
}

/// (size, hex SHA-256) of a file.
fn digest_file(path: &Path) -> Result<(u64, String), Error> {
    let mut file =
        std::fs::File::open(path).map_err(io_error(|| format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let size_bytes = io::copy(&mut file, &mut hasher)
        .map_err(io_error(|| format!("reading {}", path.display())))?;
    Ok((size_bytes, hex::encode(hasher.finalize())))
}

fn check_extra_files(extra_files: &[ExtraFile]) -> Result<(), Error> {
    if extra_files.len() > EXTRA_FILES_MAX {
        return Err(Error::BadExtraFile {
            name: String::new(),
            reason: format!("more than {EXTRA_FILES_MAX} extra files"),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for extra in extra_files {
        let bad = |reason: String| Error::BadExtraFile { name: extra.name.clone(), reason };
        check_restorable_name(&extra.name).map_err(bad)?;
        if !seen.insert(extra.name.as_str()) {
            return Err(bad("listed twice".to_owned()));
        }
    }
    Ok(())
}

/// An extra file's name must be a plain relative path that cannot land on the database, the
/// restore journal or a safety copy when restored.
pub(crate) fn check_extra_name(name: &str) -> Result<(), String> {
    check_relative_path(name)?;
    let first = name.split('/').next().unwrap_or_default();
    let reserved = [DATABASE_FILE, crate::swap::RESTORE_JOURNAL_FILE];
    if reserved.iter().any(|reserved| first.starts_with(reserved))
        || first.starts_with(crate::swap::SAFETY_PREFIX)
    {
        return Err(format!("{first:?} is reserved for the database and the restore"));
    }
    Ok(())
}

/// What a backup of this format may restore: a file directly in [`EXTRA_FILES_DIR`].
pub(crate) fn check_restorable_name(name: &str) -> Result<(), String> {
    check_extra_name(name)?;
    match name.split_once('/') {
        Some((EXTRA_FILES_DIR, file)) if !file.contains('/') => Ok(()),
        _ => Err(format!("a backup restores only files directly in {EXTRA_FILES_DIR}/")),
    }
}

/// A relative, `/`-separated path of normal components: no absolute path, `..`, `.`, empty
/// component, backslash or NUL.
pub(crate) fn check_relative_path(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MEMBER_NAME_LENGTH_MAX_BYTES {
        return Err(format!("names are 1 to {MEMBER_NAME_LENGTH_MAX_BYTES} bytes long"));
    }
    if name.starts_with('/') {
        return Err("absolute paths are refused".to_owned());
    }
    if name.contains('\\') || name.contains('\0') {
        return Err("backslashes and NUL are refused".to_owned());
    }
    for component in name.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err("empty, `.` and `..` components are refused".to_owned());
        }
    }
    Ok(())
}

//! The one way the daemon replaces a file so that a crash leaves the old content or the new,
//! never a mix: write aside (`<name>.partial`), fsync, rename over, fsync the directory.

use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where a file is written before it is renamed into place: its name plus `.partial`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Replaces `path` with what `write` writes, durably. On any failure the partial file is
/// removed and `path` is untouched.
pub fn replace_with<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> io::Result<T>,
) -> io::Result<T> {
    replace_with_mode(path, 0o666, write)
}

/// [`replace_with`] for a file created with permission bits `mode` (less the umask); the
/// partial file has them from its creation, so a secret is never readable by others.
pub fn replace_with_mode<T>(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> io::Result<T>,
) -> io::Result<T> {
    let partial = partial_path(path);
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)?;
        let mut output = BufWriter::new(file);
        let value = write(&mut output)?;
        let file = output.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Replaces `path` with `bytes`, durably (see [`replace_with`]).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, |output| output.write_all(bytes))
}

/// Replaces `path` with `bytes` readable by its owner only (mode 0600), durably.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with_mode(path, 0o600, |output| output.write_all(bytes))
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir).and_then(|file| file.sync_all())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_partial() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("settings");
        super::write(&path, b"old").expect("writing");
        let failed: std::io::Result<()> = super::replace_with(&path, |output| {
            std::io::Write::write_all(output, b"new")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).expect("reading"), b"old");
        assert!(!super::partial_path(&path).exists());
        super::write(&path, b"new").expect("writing");
        assert_eq!(std::fs::read(&path).expect("reading"), b"new");
    }
}

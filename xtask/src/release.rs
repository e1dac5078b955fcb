//! Release keys and signed upgrade images: `cargo xtask keygen --out DIR` makes an ed25519 key
//! pair outside the repository, `cargo xtask upgrade-image ...` signs a payload (the root file
//! system image of a slot) into an upgrade image. The format is the `upgrade` crate's
//! (`image/UPGRADE-FORMAT.md`); nothing here touches the bytes by hand.

use crate::workspace_root;
use anyhow::Context;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use upgrade::{Manifest, TrustedKeys, Version};

/// The key pair's file names inside `--out`.
pub(crate) const PRIVATE_KEY_FILE: &str = "baton-release.key";
pub(crate) const PUBLIC_KEY_FILE: &str = "baton-release.pub";

pub(crate) fn keygen(out_dir: &Path) -> anyhow::Result<()> {
    refuse_inside_repository(out_dir)?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let key = upgrade::generate_signing_key()?;
    let private_path = out_dir.join(PRIVATE_KEY_FILE);
    let public_path = out_dir.join(PUBLIC_KEY_FILE);
    // Never overwrite a key: a lost release key strands every appliance that trusts it.
    for path in [&private_path, &public_path] {
        anyhow::ensure!(!path.exists(), "{} exists; refusing to overwrite a key", path.display());
    }
    write_new(&private_path, upgrade::signing_key_to_text(&key).as_bytes(), 0o600)?;
    write_new(&public_path, upgrade::public_key_to_text(&key.verifying_key()).as_bytes(), 0o644)?;
    println!("private key: {} (mode 0600; keep it offline)", private_path.display());
    println!("public key:  {}", public_path.display());
    println!("key id:      {}", upgrade::KeyId::of(&key.verifying_key()));
    println!(
        "embed it into a firmware build with {}=\"$(cat {})\"",
        upgrade::TRUSTED_KEYS_ENV,
        public_path.display()
    );
    Ok(())
}

/// What `cargo xtask upgrade-image` is given.
pub(crate) struct ImageRequest {
    pub(crate) key: PathBuf,
    pub(crate) payload: PathBuf,
    pub(crate) version: String,
    pub(crate) arch: String,
    pub(crate) min_from: String,
    pub(crate) out: PathBuf,
}

pub(crate) fn upgrade_image(request: &ImageRequest) -> anyhow::Result<()> {
    let key_text = fs::read_to_string(&request.key)
        .with_context(|| format!("reading the private key {}", request.key.display()))?;
    let key = upgrade::signing_key_from_text(&key_text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} is not a release key", request.key.display()))?;
    let version: Version =
        request.version.parse().map_err(anyhow::Error::msg).context("--version")?;
    let min_from_version: Version =
        request.min_from.parse().map_err(anyhow::Error::msg).context("--min-from")?;
    anyhow::ensure!(
        min_from_version <= version,
        "--min-from {min_from_version} is newer than --version {version}"
    );

    // A root file system payload says its version itself (batond reads it): stamp a copy,
    // so the manifest and what the appliance reports after the upgrade cannot differ.
    let stamped = stamp_version_into_payload(&request.payload, &version, &request.out)?;
    let payload_path = stamped.as_ref().map_or(request.payload.as_path(), |s| s.path.as_path());
    let open_payload = || {
        File::open(payload_path)
            .map(BufReader::new)
            .with_context(|| format!("opening the payload {}", payload_path.display()))
    };
    let (payload_size_bytes, payload_sha256) = upgrade::digest_payload(&mut open_payload()?)
        .with_context(|| format!("reading the payload {}", request.payload.display()))?;
    let manifest = Manifest {
        format_version: upgrade::FORMAT_VERSION,
        product: upgrade::PRODUCT.to_owned(),
        version,
        architecture: request.arch.clone(),
        payload_size_bytes,
        payload_sha256,
        min_from_version,
        created_at_unix_s: created_at_unix_s()?,
    };

    // Written aside and renamed, so a failed build never leaves a plausible-looking image.
    let mut temporary = request.out.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let result = (|| -> anyhow::Result<()> {
        let mut out = BufWriter::new(
            File::create(&temporary)
                .with_context(|| format!("creating {}", temporary.display()))?,
        );
        upgrade::write_image(&mut out, &manifest, &key, &mut open_payload()?)?;
        let file = out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temporary);
        return Err(error.context(format!("writing {}", request.out.display())));
    }
    // Read back what was written as a device would, with only the public key.
    let trusted = TrustedKeys::new([key.verifying_key()]);
    let header = upgrade::read_header(&mut BufReader::new(File::open(&temporary)?), &trusted)
        .context("the image just written does not verify")?;
    anyhow::ensure!(header.manifest == manifest, "the image just written reads back differently");
    fs::rename(&temporary, &request.out)
        .with_context(|| format!("renaming {} into place", temporary.display()))?;

    println!("{}: Baton {version} for {}", request.out.display(), request.arch);
    println!("  payload {payload_size_bytes} bytes, sha256 {}", manifest.payload_sha256);
    println!("  installs over {min_from_version} or later; signed by key {}", header.key_id);
    Ok(())
}

/// A file or folder beside the output (the stamped payload, its unpacked tree), removed when
/// dropped.
struct RemovedOnDrop {
    path: PathBuf,
}

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if self.path.is_dir() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The ext4 superblock's magic number, at byte 1080 of the file system.
const EXT4_MAGIC_OFFSET: usize = 1080;
const EXT4_MAGIC: [u8; 2] = [0x53, 0xef];
/// A squashfs file system (the image's slot payload) starts with "hsqs".
const SQUASHFS_MAGIC: [u8; 4] = *b"hsqs";

/// When `payload` is a root file system (squashfs, or ext4 as images before carried), a copy
/// of it with `version` written to `upgrade::VERSION_FILE`, read back to be sure. Any other
/// payload is signed as it is (`None`).
fn stamp_version_into_payload(
    payload: &Path,
    version: &Version,
    out: &Path,
) -> anyhow::Result<Option<RemovedOnDrop>> {
    let mut head = [0u8; EXT4_MAGIC_OFFSET + 2];
    let read = File::open(payload)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut head))
        .is_ok();
    let is_squashfs = read && head[..SQUASHFS_MAGIC.len()] == SQUASHFS_MAGIC;
    let is_ext4 = read && head[EXT4_MAGIC_OFFSET..] == EXT4_MAGIC;
    if !is_squashfs && !is_ext4 {
        return Ok(None);
    }
    let mut path = out.as_os_str().to_owned();
    path.push(".payload.partial");
    let stamped = RemovedOnDrop { path: PathBuf::from(path) };
    let read_back = if is_squashfs {
        stamp_squashfs(payload, version, &stamped.path)?
    } else {
        stamp_ext4(payload, version, &stamped.path)?
    };
    anyhow::ensure!(
        read_back.trim() == version.to_string(),
        "the payload's {} does not read back as {version}",
        upgrade::VERSION_FILE
    );
    println!("stamped version {version} into the payload's {}", upgrade::VERSION_FILE);
    Ok(Some(stamped))
}

/// A squashfs is read-only: unpacked, stamped and packed again (as root, which keeps owners).
/// Returns the version file as read back from `stamped`.
fn stamp_squashfs(payload: &Path, version: &Version, stamped: &Path) -> anyhow::Result<String> {
    let mut tree = stamped.as_os_str().to_owned();
    tree.push(".tree");
    let tree = RemovedOnDrop { path: PathBuf::from(tree) };
    if tree.path.exists() {
        fs::remove_dir_all(&tree.path)?;
    }
    crate::image::run(
        std::process::Command::new("unsquashfs")
            .args(["-no-progress", "-quiet", "-dest"])
            .arg(&tree.path)
            .arg(payload),
        "unsquashfs (payload)",
    )?;
    let file = tree.path.join(upgrade::VERSION_FILE.trim_start_matches('/'));
    fs::create_dir_all(file.parent().context("version file without a directory")?)?;
    fs::write(&file, format!("{version}\n"))?;
    crate::image::squashfs(&tree.path, stamped)?;
    let read_back = std::process::Command::new("unsquashfs")
        .arg("-cat")
        .arg(stamped)
        .arg(upgrade::VERSION_FILE)
        .output()
        .context("running unsquashfs (squashfs-tools)")?;
    Ok(String::from_utf8_lossy(&read_back.stdout).into_owned())
}

/// An ext4 payload is stamped in place by debugfs (no mount, no loop device). Returns the
/// version file as read back from `stamped`.
fn stamp_ext4(payload: &Path, version: &Version, stamped: &Path) -> anyhow::Result<String> {
    crate::image::run(
        std::process::Command::new("cp").arg("--sparse=always").arg(payload).arg(stamped),
        "cp (payload)",
    )?;
    let mut version_text = stamped.as_os_str().to_owned();
    version_text.push(".version");
    let version_text = PathBuf::from(version_text);
    fs::write(&version_text, format!("{version}\n"))?;
    let file = upgrade::VERSION_FILE;
    let dir = Path::new(file).parent().context("version file without a directory")?;
    // debugfs goes on after a failed request (mkdir of an existing directory, rm of a missing
    // file): the read-back is what proves the stamp.
    let commands =
        format!("mkdir {}\nrm {file}\nwrite {} {file}\n", dir.display(), version_text.display());
    let mut command_file = version_text.clone().into_os_string();
    command_file.push(".debugfs");
    let command_file = PathBuf::from(command_file);
    fs::write(&command_file, commands)?;
    let written = std::process::Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&command_file)
        .arg(stamped)
        .output()
        .context("running debugfs (e2fsprogs)");
    let _ = fs::remove_file(&command_file);
    let _ = fs::remove_file(&version_text);
    anyhow::ensure!(written?.status.success(), "debugfs could not write {file} into the payload");
    let read_back = std::process::Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(stamped)
        .output()
        .context("running debugfs (e2fsprogs)")?;
    Ok(String::from_utf8_lossy(&read_back.stdout).into_owned())
}

/// The image's creation time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
fn created_at_unix_s() -> anyhow::Result<u64> {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let epoch = epoch.to_string_lossy();
        return epoch.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?}"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs())
}

/// Private keys never go into the repository, where one `git add -A` would publish them.
fn refuse_inside_repository(out_dir: &Path) -> anyhow::Result<()> {
    let repository = workspace_root()
        .canonicalize()
        .with_context(|| format!("resolving {}", workspace_root().display()))?;
    let target = resolve(out_dir)?;
    anyhow::ensure!(
        !target.starts_with(&repository),
        "{} is inside the repository {}; keep release keys outside it",
        out_dir.display(),
        repository.display()
    );
    Ok(())
}

/// `path` made absolute with symbolic links resolved, even if its last parts do not exist yet.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().context("reading the current directory")?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(resolved) => {
                let mut resolved = resolved;
                for part in missing.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(_) => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    anyhow::bail!("cannot resolve {}", path.display());
                };
                missing.push(name.to_owned());
                existing = parent;
            }
        }
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the secret is never readable by others even for a moment.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("syncing {}", path.display()))
}

#[cfg(test)]
mod tests {
    //! keygen and upgrade-image end to end, in temporary directories outside the repository.

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-release-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn keygen_refuses_the_repository_and_makes_a_private_key_only_its_owner_reads() {
        let inside = workspace_root().join("target").join("keys-that-must-not-exist");
        let error = keygen(&inside).expect_err("inside the repository");
        assert!(error.to_string().contains("inside the repository"), "{error:#}");
        assert!(!inside.exists());

        let dir = scratch("keygen");
        keygen(&dir).expect("keygen");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(PRIVATE_KEY_FILE)).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let error = keygen(&dir).expect_err("second keygen into the same place");
        assert!(error.to_string().contains("refusing to overwrite"), "{error:#}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_image_built_by_xtask_installs_with_the_generated_public_key() {
        let dir = scratch("image");
        keygen(&dir).expect("keygen");
        let payload: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();
        fs::write(dir.join("rootfs.img"), &payload).expect("payload");
        let request = ImageRequest {
            key: dir.join(PRIVATE_KEY_FILE),
            payload: dir.join("rootfs.img"),
            version: "0.2.0".to_owned(),
            arch: "x86_64".to_owned(),
            min_from: "0.1.0".to_owned(),
            out: dir.join("baton-0.2.0.upgrade"),
        };
        upgrade_image(&request).expect("upgrade-image");

        let trusted = TrustedKeys::from_text(
            &fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).expect("public key"),
        )
        .expect("public key parses");
        let machine = dir.join("machine");
        let boot =
            upgrade::FileBootControl::create(&machine, "0.1.0", b"old", 1 << 20).expect("machine");
        let mut writer = boot.inactive_slot_writer().expect("writer");
        let running = upgrade::RunningSystem {
            version: "0.1.0".parse().expect("version"),
            architecture: "x86_64".to_owned(),
            active_slot: upgrade::Slot::A,
        };
        let installed = upgrade::install(
            &mut File::open(&request.out).expect("image"),
            &trusted,
            &running,
            upgrade::InstallOptions::default(),
            &mut writer,
            &mut |_| {},
        )
        .expect("install");
        assert_eq!(installed.manifest.version.to_string(), "0.2.0");
        assert_eq!(fs::read(boot.slot_path(upgrade::Slot::B)).expect("slot"), payload);

        let bad = ImageRequest { min_from: "0.3.0".to_owned(), ..request };
        assert!(upgrade_image(&bad).is_err());
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A root file system payload carries the manifest's version where batond reads it, and
    /// the payload file given is left as it was: squashfs, the image's slot payload.
    #[test]
    fn a_squashfs_payload_gets_the_version_stamped_into_a_copy() {
        payload_gets_the_version_stamped(
            "stamp-squashfs",
            |tree, payload| {
                std::process::Command::new("mksquashfs")
                    .arg(tree)
                    .arg(payload)
                    .args(["-noappend", "-quiet", "-no-progress"])
                    .status()
                    .expect("mksquashfs (squashfs-tools)")
            },
            |slot| {
                std::process::Command::new("unsquashfs")
                    .arg("-cat")
                    .arg(slot)
                    .arg(upgrade::VERSION_FILE)
                    .output()
                    .expect("unsquashfs")
            },
        );
    }

    /// The same for an ext4 payload, as images before squashfs carried it.
    #[test]
    fn an_ext4_payload_gets_the_version_stamped_into_a_copy() {
        payload_gets_the_version_stamped(
            "stamp-ext4",
            |tree, payload| {
                std::process::Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-d"])
                    .arg(tree)
                    .arg(payload)
                    .arg("4M")
                    .status()
                    .expect("mkfs.ext4 (e2fsprogs)")
            },
            |slot| {
                std::process::Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("cat {}", upgrade::VERSION_FILE))
                    .arg(slot)
                    .output()
                    .expect("debugfs")
            },
        );
    }

    /// Makes a root file system payload of version 0.1.0 with `make`, signs it as 0.3.1,
    /// installs it into a file-backed slot and reads the version back with `read`.
    fn payload_gets_the_version_stamped(
        name: &str,
        make: impl Fn(&Path, &Path) -> std::process::ExitStatus,
        read: impl Fn(&Path) -> std::process::Output,
    ) {
        let dir = scratch(name);
        keygen(&dir).expect("keygen");
        let tree = dir.join("tree/usr/lib/baton");
        fs::create_dir_all(&tree).expect("tree");
        fs::write(tree.join("version"), "0.1.0\n").expect("old version");
        let payload = dir.join("root.fs");
        assert!(make(&dir.join("tree"), &payload).success(), "making the payload failed");
        let before = fs::read(&payload).expect("payload");
        let request = ImageRequest {
            key: dir.join(PRIVATE_KEY_FILE),
            payload: payload.clone(),
            version: "0.3.1".to_owned(),
            arch: "x86_64".to_owned(),
            min_from: "0.1.0".to_owned(),
            out: dir.join("baton-0.3.1.upgrade"),
        };
        upgrade_image(&request).expect("upgrade-image");
        assert_eq!(fs::read(&payload).expect("payload"), before, "the given payload changed");

        // Install it into a file-backed slot and read the version back out of the slot.
        let key = fs::read_to_string(dir.join(PUBLIC_KEY_FILE)).expect("public key");
        let trusted = TrustedKeys::from_text(&key).expect("public key parses");
        let machine = dir.join("machine");
        let boot =
            upgrade::FileBootControl::create(&machine, "0.1.0", b"old", 8 << 20).expect("machine");
        let running = upgrade::RunningSystem {
            version: "0.1.0".parse().expect("version"),
            architecture: "x86_64".to_owned(),
            active_slot: upgrade::Slot::A,
        };
        upgrade::install(
            &mut File::open(&request.out).expect("image"),
            &trusted,
            &running,
            upgrade::InstallOptions::default(),
            &mut boot.inactive_slot_writer().expect("writer"),
            &mut |_| {},
        )
        .expect("install");
        let version = read(&boot.slot_path(upgrade::Slot::B));
        assert_eq!(String::from_utf8_lossy(&version.stdout), "0.3.1\n");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

//! `cargo xtask image`: the appliance's bootable A/B disk. Builds `batond` and `batonctl`
//! (release), makes a minimal Debian bookworm root file system with mmdebstrap (cached under
//! `<target>/image/cache/`, keyed by everything that goes into it), adds the binaries, the
//! `rootfs/` overlay and the `systemd/` units, and assembles a GPT disk without loop devices or
//! mounts: `mksquashfs` for the read-only root, `mkfs.ext4` for the data file system,
//! `mkfs.vfat` + mtools for the ESP, `sfdisk` on the disk file, `dd conv=notrunc` to place each
//! partition. Writes `<target>/image/baton.raw`, `baton.qcow2` and `baton-root.squashfs` (the
//! slot payload an upgrade image carries). The layout is documented in `image/README.md`; keep
//! the two in step.

use crate::{cargo, run_checked, target_dir, workspace_root};
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Debian release of the root file system.
const SUITE: &str = "bookworm";
/// Packages on top of mmdebstrap's `minbase` variant. systemd-boot brings `systemd-bless-boot`
/// and the boot loader copied onto the ESP (so the loader matches the rootfs, not the build
/// host); dbus lets systemd-logind run, which turns ACPI power-button presses (a hypervisor's
/// "power off") into a clean shutdown; curl is the health gate's probe; iproute2 is for an
/// operator at the console. The peer-local settings batond applies need: openssh-server (SSH
/// access), rsyslog and rsyslog-gnutls (remote syslog, TLS included), snmpd (the SNMP agent),
/// tzdata (time zones); qemu-guest-agent lets a hypervisor (and the slow VM test) look inside.
/// busybox gives the initramfs the tools its root script uses (`image/initramfs/`), lz4 packs
/// the initramfs; squashfs-tools lets an upgrade read the kernel out of a written slot.
const PACKAGES: &[&str] = &[
    "busybox",
    "lz4",
    "squashfs-tools",
    "openssh-server",
    "rsyslog",
    "rsyslog-gnutls",
    "snmpd",
    "tzdata",
    "qemu-guest-agent",
    "systemd",
    "systemd-sysv",
    "systemd-boot",
    "systemd-timesyncd",
    "udev",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "curl",
    "ca-certificates",
    "iproute2",
    "dbus",
];
/// Options handed to mmdebstrap besides the package list: no recommends, no docs, man pages or
/// translations (they are half the size of a minimal system and nobody reads them on a VM).
const MMDEBSTRAP_OPTIONS: &[&str] = &[
    "--variant=minbase",
    "--aptopt=APT::Install-Recommends \"false\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
];
/// The host's own apt sources, handed to mmdebstrap as its mirror argument: the image uses
/// whatever mirror this machine is configured for, and no host name is written down here.
const HOST_APT_SOURCES: &[&str] =
    &["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"];
/// Files laid over the rootfs before its initramfs is rebuilt (part of the rootfs cache key):
/// the hook and script that mount the read-only slot under a writable layer.
const INITRAMFS_TREE: &str = "image/initramfs";
/// The slot payload's compression: lz4 (high compression), because an emulated CPU unpacks
/// every file the boot reads. Measured with `cargo xtask bench boot` under TCG: zstd (level 19)
/// packed the root into 103 MiB, and the bare boot took 61.2 s to its login prompt; lz4 into
/// 138 MiB, and 52.6 s (the ext4 slot before: 1 GiB).
const SQUASHFS_OPTIONS: &[&str] = &["-comp", "lz4", "-Xhc", "-noappend", "-quiet", "-no-progress"];

/// Partition sizes and the first partition's offset, in MiB. GPT needs 1 MiB at each end.
const ALIGN_MIB: u64 = 1;
const ESP_MIB: u64 = 256;
const ROOT_MIB: u64 = 1024;
/// The data partition also holds each slot's writable OS layer (journal, `/etc` changes).
const DATA_MIB: u64 = 512;

/// GPT partition type GUIDs: EFI System; Linux root (x86-64) per the Discoverable Partitions
/// Specification; Linux file system data (generic: a /var type would be bound to machine-id).
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4C83-A5C5-5D47C1AE4A25";
const TYPE_LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Partition labels: the boot entries and fstab name partitions by these, never by number.
pub(crate) const LABEL_ESP: &str = "baton-esp";
pub(crate) const LABEL_ROOT_A: &str = "baton-root-a";
pub(crate) const LABEL_ROOT_B: &str = "baton-root-b";
pub(crate) const LABEL_DATA: &str = "baton-data";

/// How long the boot waits for the ESP to show before it gives up.
const DEVICE_TIMEOUT: &str = "x-systemd.device-timeout=600s";
/// Where the initramfs mounted the data partition, after checking it (the root's overlay
/// lives on it): `/var/lib/baton` is a bind of that mount, not a second mount of the partition.
const INITRAMFS_DATA_MOUNT: &str = "/run/baton/data";

/// The systemd units of `systemd/` enabled in the image (besides those Debian enables itself).
const ENABLED_UNITS: &[&str] = &[
    "batond.service",
    "baton-health-gate.service",
    "baton-console-status.service",
    "systemd-networkd.service",
    "baton-ssh-host-keys.service",
];
/// Units Debian enables that stay off until the operator turns them on through Baton.
const DISABLED_UNITS: &[&str] = &["ssh.service", "snmpd.service"];
/// Units an appliance never needs, masked: each costs seconds of a boot's single emulated CPU
/// (or wakes up to fetch packages from nowhere). apt's and dpkg's timers (no package manager
/// is used on an appliance; upgrades are images), ext4's scrubbing (the root is read-only;
/// the data partition is checked at boot), and kernel file systems for debugging, tracing,
/// FUSE, configfs, POSIX message queues and huge pages, with the module loads they pull in
/// (and device mapper, loop devices and EFI pstore, which nothing here uses).
const MASKED_UNITS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-config.mount",
    "dev-mqueue.mount",
    "dev-hugepages.mount",
    "modprobe@drm.service",
    "modprobe@fuse.service",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
    "modprobe@efi_pstore.service",
    "modprobe@loop.service",
];

/// The image's files under the target directory.
pub(crate) struct ImagePaths {
    pub(crate) dir: PathBuf,
    pub(crate) raw: PathBuf,
    pub(crate) qcow2: PathBuf,
    pub(crate) root_fs: PathBuf,
}

pub(crate) fn paths() -> ImagePaths {
    let dir = target_dir().join("image");
    ImagePaths {
        raw: dir.join("baton.raw"),
        qcow2: dir.join("baton.qcow2"),
        root_fs: dir.join("baton-root.squashfs"),
        dir,
    }
}

pub(crate) fn image() -> anyhow::Result<()> {
    image_with_version(None)
}

/// The image, with `version` (default: the workspace's) stamped into the root file system.
pub(crate) fn image_with_version(version: Option<&str>) -> anyhow::Result<()> {
    let version: upgrade::Version = version
        .unwrap_or(env!("CARGO_PKG_VERSION"))
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--version")?;
    let started = Instant::now();
    let paths = paths();
    let work = paths.dir.join("work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let step = Instant::now();
    run_checked(
        cargo(&[
            "build",
            "--release",
            "-p",
            "daemon",
            "--bin",
            "batond",
            "-p",
            "ctl",
            "--bin",
            "batonctl",
        ]),
        "`cargo build --release` of batond and batonctl",
    )?;
    let build_s = step.elapsed().as_secs_f64();

    let step = Instant::now();
    let (base, cached) = rootfs(&paths.dir.join("cache"))?;
    let rootfs_s = step.elapsed().as_secs_f64();

    let step = Instant::now();
    let staging = work.join("root");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    // `cp -a` keeps owners, modes, device nodes and hard links, which std::fs would not.
    run(Command::new("cp").arg("-a").arg("--reflink=auto").arg(&base).arg(&staging), "cp -a")?;
    customise(&staging, &target_dir().join("release"))?;
    stamp_version(&staging, &version)?;
    let assemble = assemble(&staging, &work, &paths)?;
    let disk_s = step.elapsed().as_secs_f64();

    let step = Instant::now();
    let _ = fs::remove_file(&paths.qcow2);
    run(
        Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&paths.raw).arg(&paths.qcow2),
        "qemu-img convert",
    )?;
    let qcow2_s = step.elapsed().as_secs_f64();

    println!();
    println!(
        "image:  {} ({} MiB allocated of {} MiB)",
        paths.raw.display(),
        allocated_mib(&paths.raw)?,
        assemble.disk_mib
    );
    println!("        {} ({} MiB)", paths.qcow2.display(), allocated_mib(&paths.qcow2)?);
    println!(
        "slot payload (for `cargo xtask upgrade-image --payload`): {}",
        paths.root_fs.display()
    );
    println!(
        "times:  release build {build_s:.1}s, rootfs {rootfs_s:.1}s ({}), disk assembly {disk_s:.1}s, qcow2 {qcow2_s:.1}s, total {:.1}s",
        if cached { "cached" } else { "mmdebstrap" },
        started.elapsed().as_secs_f64()
    );
    println!("boot it: cargo xtask vm [--peers N]");
    Ok(())
}

/// The cached mmdebstrap output for the current package list, made when missing. Returns the
/// directory and whether it came from the cache.
fn rootfs(cache: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let sources = HOST_APT_SOURCES
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .context("no apt sources file on this host (looked for /etc/apt/sources.list.d/debian.sources and /etc/apt/sources.list)")?;
    let initramfs = workspace_root().join(INITRAMFS_TREE);
    let mut hasher = Sha256::new();
    for part in [SUITE].iter().chain(MMDEBSTRAP_OPTIONS).chain(PACKAGES) {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hash_tree(&initramfs, &mut hasher)?;
    let key = hex::encode(&hasher.finalize()[..8]);
    let dir = cache.join(format!("rootfs-{key}"));
    // Written last, so a build cut short is never taken for a finished one.
    let complete = cache.join(format!("rootfs-{key}.complete"));
    if complete.exists() && dir.is_dir() {
        println!("rootfs: cached {}", dir.display());
        return Ok((dir, true));
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    println!("rootfs: mmdebstrap {SUITE} into {} (mirror: {})", dir.display(), sources.display());
    let mut command = Command::new("mmdebstrap");
    command
        .args(MMDEBSTRAP_OPTIONS)
        .arg(format!("--include={}", PACKAGES.join(",")))
        // Debian built the initramfs before our hook was there: add it and build it again.
        .arg(format!("--customize-hook=sync-in {} /", initramfs.display()))
        .arg("--customize-hook=chroot \"$1\" update-initramfs -u -k all")
        .arg(SUITE)
        .arg(&dir)
        .arg(sources);
    run(&mut command, "mmdebstrap")?;
    fs::write(&complete, PACKAGES.join("\n"))
        .with_context(|| format!("writing {}", complete.display()))?;
    Ok((dir, false))
}

/// Feeds the names, modes and contents of the files under `dir` to `hasher`, in name order.
fn hash_tree(dir: &Path, hasher: &mut Sha256) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        hasher.update(entry.file_name().as_encoded_bytes());
        hasher.update([0]);
        if entry.file_type()?.is_dir() {
            hash_tree(&path, hasher)?;
        } else {
            hasher.update(entry.metadata()?.permissions().mode().to_le_bytes());
            hasher.update(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(())
}

/// Adds Baton to the root file system: binaries, overlay, units, machine-id, fstab.
fn customise(root: &Path, release: &Path) -> anyhow::Result<()> {
    for binary in ["batond", "batonctl"] {
        let to = root.join("usr/bin").join(binary);
        fs::copy(release.join(binary), &to)
            .with_context(|| format!("copying {binary} from {}", release.display()))?;
        set_mode(&to, 0o755)?;
        // Debug information is most of an unstripped binary's size (83 MB for batond).
        run(Command::new("strip").arg(&to), &format!("strip {binary}"))?;
    }
    overlay(root)?;
    let units = root.join("usr/lib/systemd/system");
    for entry in fs::read_dir(workspace_root().join("systemd")).context("reading systemd/")? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().context("unit without a name")?;
            fs::copy(&path, units.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    run(
        Command::new("systemctl").arg("--root").arg(root).arg("enable").args(ENABLED_UNITS),
        "systemctl --root enable",
    )?;
    run(
        Command::new("systemctl").arg("--root").arg(root).arg("disable").args(DISABLED_UNITS),
        "systemctl --root disable",
    )?;
    run(
        Command::new("systemctl").arg("--root").arg(root).arg("mask").args(MASKED_UNITS),
        "systemctl --root mask",
    )?;
    // openssh-server made host keys while the rootfs was built: every appliance would share
    // them. baton-ssh-host-keys.service makes this appliance's own on the data partition.
    for entry in fs::read_dir(root.join("etc/ssh")).context("reading /etc/ssh")? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ssh_host_")) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }

    // Empty, not absent: systemd then treats the first boot as first boot (ConditionFirstBoot)
    // and makes a machine id of its own, so no two appliances share one.
    fs::write(root.join("etc/machine-id"), "").context("blanking machine-id")?;
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
    fs::write(root.join("etc/hostname"), "baton\n").context("writing hostname")?;
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tbaton\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    .context("writing hosts")?;
    // The root file system is named on the kernel command line (per slot), so it has no line.
    // The initramfs checks and mounts the data partition (it holds the root's writable layer);
    // /var/lib/baton binds that mount. The ESP is not `nofail`: that loses the ordering that
    // has it mounted for systemd-bless-boot. systemd's default 90 s for its device to show is
    // too short for udev in a guest emulated on a loaded machine (three TCG VMs on two busy
    // cores ended in emergency mode).
    fs::write(
        root.join("etc/fstab"),
        format!(
            "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n\
             PARTLABEL={LABEL_ESP}\t/efi\tvfat\tumask=0077,noatime,{DEVICE_TIMEOUT}\t0\t2\n\
             {INITRAMFS_DATA_MOUNT}\t/var/lib/baton\tnone\tbind\t0\t0\n"
        ),
    )
    .context("writing fstab")?;
    for dir in ["efi", "var/lib/baton"] {
        fs::create_dir_all(root.join(dir)).with_context(|| format!("creating /{dir}"))?;
    }
    Ok(())
}

/// What the factory image has instead of the build host's resolver (which mmdebstrap leaves
/// in `/etc/resolv.conf`): no name server at all until the operator sets some.
pub(crate) const FACTORY_RESOLV_CONF: &str =
    "# No DNS servers until the operator sets them (System > DNS); batond writes this file.\n";

/// The `rootfs/` overlay and the factory files made here, over the root file system at `root`.
pub(crate) fn overlay(root: &Path) -> anyhow::Result<()> {
    copy_tree(&workspace_root().join("rootfs"), root, true)?;
    quiet_defaults(root)
}

/// The appliance talks to no server its operator did not configure: no name server from the
/// build host. (No fallback NTP pool and no DNS or NTP from DHCP come from `rootfs/`.)
fn quiet_defaults(root: &Path) -> anyhow::Result<()> {
    let resolv_conf = root.join("etc/resolv.conf");
    // A symbolic link (to a resolver's stub file) would be followed by a write: replace it.
    let _ = fs::remove_file(&resolv_conf);
    fs::write(&resolv_conf, FACTORY_RESOLV_CONF).context("writing /etc/resolv.conf")?;
    set_mode(&resolv_conf, 0o644)
}

/// Writes the software version where batond reads it (`upgrade::VERSION_FILE`).
fn stamp_version(root: &Path, version: &upgrade::Version) -> anyhow::Result<()> {
    let file = root.join(upgrade::VERSION_FILE.trim_start_matches('/'));
    let dir = file.parent().context("version file without a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(&file, format!("{version}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    println!("version: {version} (in {})", upgrade::VERSION_FILE);
    Ok(())
}

struct Assembled {
    disk_mib: u64,
}

/// Makes the partition images and places them into a fresh GPT disk file.
fn assemble(root: &Path, work: &Path, paths: &ImagePaths) -> anyhow::Result<Assembled> {
    let kernel = find_in(&root.join("boot"), "vmlinuz-")?;
    let initrd = find_in(&root.join("boot"), "initrd.img-")?;

    // Root: one read-only file system image, written to both slots (slot B starts as a copy,
    // so the factory disk can already fall back), and kept as the payload of an upgrade image.
    squashfs(root, &paths.root_fs)?;
    let root_mib = fs::metadata(&paths.root_fs)?.len().div_ceil(1 << 20);
    anyhow::ensure!(
        root_mib <= ROOT_MIB,
        "the root file system ({root_mib} MiB) does not fit a slot ({ROOT_MIB} MiB)"
    );
    let data = work.join("data.ext4");
    let _ = fs::remove_file(&data);
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", LABEL_DATA])
            .arg(&data)
            .arg(format!("{DATA_MIB}M")),
        "mkfs.ext4 (data)",
    )?;

    let esp = work.join("esp.vfat");
    let _ = fs::remove_file(&esp);
    run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "BATON-ESP", "-C"])
            .arg(&esp)
            .arg((ESP_MIB * 1024).to_string()),
        "mkfs.vfat",
    )?;
    let boot_loader = root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    mtools(
        &esp,
        "mmd",
        &[
            "::/EFI",
            "::/EFI/BOOT",
            "::/EFI/systemd",
            "::/loader",
            "::/loader/entries",
            "::/slot-a",
            "::/slot-b",
        ],
    )?;
    // BOOTX64.EFI is the removable-media path firmware boots with no NVRAM entry (a new VM).
    mcopy(&esp, &boot_loader, "::/EFI/BOOT/BOOTX64.EFI")?;
    mcopy(&esp, &boot_loader, "::/EFI/systemd/systemd-bootx64.efi")?;
    let loader_conf = work.join("loader.conf");
    // No `default`: pinning it to a counted entry breaks the rename by blessing; the newest
    // slot wins by its higher `version`, and an entry at +0 tries sorts last by itself.
    fs::write(&loader_conf, "timeout 0\neditor no\nconsole-mode keep\n")?;
    mcopy(&esp, &loader_conf, "::/loader/loader.conf")?;
    for (slot, label, version) in [("a", LABEL_ROOT_A, 1), ("b", LABEL_ROOT_B, 0)] {
        mcopy(&esp, &kernel, &format!("::/slot-{slot}/vmlinuz"))?;
        mcopy(&esp, &initrd, &format!("::/slot-{slot}/initrd.img"))?;
        let entry = work.join(format!("slot-{slot}.conf"));
        fs::write(&entry, boot_entry(slot, label, version))?;
        mcopy(&esp, &entry, &format!("::/loader/entries/slot-{slot}.conf"))?;
    }

    let disk_mib = ALIGN_MIB + ESP_MIB + 2 * ROOT_MIB + DATA_MIB + ALIGN_MIB;
    let _ = fs::remove_file(&paths.raw);
    let disk = fs::File::create(&paths.raw)
        .with_context(|| format!("creating {}", paths.raw.display()))?;
    disk.set_len(disk_mib << 20).context("sizing the disk file")?;
    drop(disk);
    let partitions = [
        (ESP_MIB, TYPE_ESP, LABEL_ESP, &esp),
        (ROOT_MIB, TYPE_ROOT_X86_64, LABEL_ROOT_A, &paths.root_fs),
        (ROOT_MIB, TYPE_ROOT_X86_64, LABEL_ROOT_B, &paths.root_fs),
        (DATA_MIB, TYPE_LINUX_DATA, LABEL_DATA, &data),
    ];
    let mut script = String::from("label: gpt\nunit: sectors\n");
    let mut start_mib = ALIGN_MIB;
    for (size_mib, type_guid, label, _) in partitions {
        script.push_str(&format!(
            "start={}, size={}, type={type_guid}, name=\"{label}\"\n",
            start_mib << 11,
            size_mib << 11
        ));
        start_mib += size_mib;
    }
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&paths.raw)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting sfdisk")?;
    sfdisk.stdin.take().context("sfdisk stdin")?.write_all(script.as_bytes())?;
    let status = sfdisk.wait()?;
    anyhow::ensure!(status.success(), "sfdisk failed ({status})");

    let mut start_mib = ALIGN_MIB;
    for (size_mib, _, label, file) in partitions {
        // conv=sparse keeps the disk file sparse where the file system image is zero.
        run(
            Command::new("dd")
                .arg(format!("if={}", file.display()))
                .arg(format!("of={}", paths.raw.display()))
                .args([
                    "bs=1M",
                    &format!("seek={start_mib}"),
                    "conv=notrunc,sparse",
                    "status=none",
                ]),
            &format!("dd ({label})"),
        )?;
        start_mib += size_mib;
    }
    Ok(Assembled { disk_mib })
}

/// Packs the tree at `root` into a fresh squashfs at `out` (the slot payload's format).
pub(crate) fn squashfs(root: &Path, out: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_file(out);
    run(Command::new("mksquashfs").arg(root).arg(out).args(SQUASHFS_OPTIONS), "mksquashfs")
}

/// A systemd-boot entry for one slot. An upgrade that fills slot B writes the same text with
/// `version` one above the newest entry's to `slot-b+3.conf` (three tries): the firmware
/// counts down, `systemd-bless-boot` renames it `slot-b.conf` once the health gate passed.
/// The text is the upgrade crate's (`upgrade::entry_text`), so the factory entries and those an
/// upgrade writes on the appliance cannot drift apart.
pub(crate) fn boot_entry(slot: &str, label: &str, version: u32) -> String {
    let slot = if slot == "a" { upgrade::Slot::A } else { upgrade::Slot::B };
    debug_assert_eq!(
        label,
        format!("{}{}", upgrade::ROOT_LABEL_PREFIX, slot.to_string().to_lowercase())
    );
    upgrade::entry_text(slot, u64::from(version), "")
}

fn find_in(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.pop().with_context(|| format!("no {prefix}* in {}", dir.display()))
}

fn mtools(image: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(tool).env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(image).args(args), tool)
}

fn mcopy(image: &Path, from: &Path, to: &str) -> anyhow::Result<()> {
    run(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-o")
            .arg("-i")
            .arg(image)
            .arg(from)
            .arg(to),
        "mcopy",
    )
}

/// Copies `from` over `to` recursively (the overlay); `skip_readme` leaves out the top-level
/// README.md that documents the overlay itself.
fn copy_tree(from: &Path, to: &Path, skip_readme: bool) -> anyhow::Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let path = entry.path();
        if skip_readme && entry.file_name() == "README.md" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            copy_tree(&path, &target, false)?;
        } else {
            fs::copy(&path, &target).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn allocated_mib(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let metadata = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((metadata.blocks() * 512) >> 20)
}

/// Runs a tool to completion; an error naming it if it fails.
pub(crate) fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| {
        format!("could not start {what} (is it installed? `.ci/run` installs it)")
    })?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

//! [`BootControl`] on the appliance: systemd-boot with boot counting (image/README.md,
//! image/UPGRADE-FORMAT.md). The mapping is thin; the state machine is the one `boot.rs`
//! models and tests with files:
//!
//! - entries are the ESP's `loader/entries/slot-a.conf`, `slot-b+3.conf`, … (one per slot);
//! - slots are the partitions labelled `baton-root-a`/`-b` (`/dev/disk/by-partlabel/…`);
//! - the booted slot is what the firmware says it booted (`LoaderEntrySelected`, and
//!   `LoaderBootCountPath` for a counted entry, under `/sys/firmware/efi/efivars`), checked
//!   against the kernel command line's `baton.slot=`;
//! - the next boot is the other slot's entry written as `slot-x+3.conf` with a `version` above
//!   every other entry's (systemd-boot prefers the highest; `default` is never pinned), after
//!   its kernel and initramfs were copied from the freshly written slot onto the ESP (read out
//!   of the unmounted file system, squashfs with `unsquashfs` or ext4 with `debugfs`, so no
//!   mount and no privilege is needed);
//! - good and bad are `systemd-bless-boot good|bad`, which rename the booted entry.
//!
//! A slot being written has no entry and carries a `slot-x/install-incomplete` marker on the
//! ESP until its write finished, so it is never bootable and never made the next boot.

use crate::Error;
use crate::boot::{
    BootControl, Entry, LastBoot, Slot, last_boot_of, read_entries, remove_entries_of, sync_dir,
    write_atomically, write_trial_entry,
};
use crate::install::SlotWriter;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// systemd-boot's vendor GUID for its EFI variables (the Boot Loader Interface).
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The root partitions' labels are this followed by the slot letter.
pub const ROOT_LABEL_PREFIX: &str = "baton-root-";
/// On the ESP, in a slot's kernel directory: present while the slot is being written or after
/// a write failed (holds the reason).
const INCOMPLETE_MARKER: &str = "install-incomplete";
/// A squashfs file system starts with these bytes ("hsqs").
const SQUASHFS_MAGIC: [u8; 4] = *b"hsqs";

/// A slot's loader entry, as the image writes it and as an upgrade writes it for the next boot.
/// `generation` is the `version` line: the highest among entries with tries left boots.
/// `no_timer_check` skips the kernel's IO-APIC timer test, which an emulated CPU starved by its
/// host can fail ("IO-APIC + timer doesn't work", a panic seen on three TCG guests on two
/// cores); cloud images pass it for the same reason.
pub fn entry_text(slot: Slot, generation: u64, label: &str) -> String {
    let lower = slot.lower();
    let title = if label.is_empty() {
        format!("Baton (slot {slot})")
    } else {
        format!("Baton {label} (slot {slot})")
    };
    format!(
        "title      {title}\n\
         sort-key   baton\n\
         version    {generation}\n\
         linux      /slot-{lower}/vmlinuz\n\
         initrd     /slot-{lower}/initrd.img\n\
         options    root=PARTLABEL={ROOT_LABEL_PREFIX}{lower} rw console=tty1 console=ttyS0,115200 quiet no_timer_check baton.slot={lower}\n"
    )
}

/// Where the appliance's boot state lives; tests point these at a fake ESP and efivars.
#[derive(Clone, Debug)]
pub struct SystemdBootPaths {
    /// The mounted ESP (`/efi`).
    pub esp: PathBuf,
    /// `/sys/firmware/efi/efivars`.
    pub efivars: PathBuf,
    /// `/proc/cmdline`.
    pub cmdline: PathBuf,
    /// Where the slots' partitions appear by label (`/dev/disk/by-partlabel`).
    pub partitions: PathBuf,
    /// `systemd-bless-boot`, run with `good` or `bad`.
    pub bless_boot: PathBuf,
    /// `unsquashfs` (squashfs-tools), which reads a squashfs slot's `/boot` without mounting it.
    pub unsquashfs: PathBuf,
    /// `debugfs` (e2fsprogs), the same for an ext4 slot (images from before squashfs).
    pub debugfs: PathBuf,
}

impl SystemdBootPaths {
    /// The appliance's own paths.
    pub fn appliance() -> SystemdBootPaths {
        SystemdBootPaths {
            esp: PathBuf::from("/efi"),
            efivars: PathBuf::from("/sys/firmware/efi/efivars"),
            cmdline: PathBuf::from("/proc/cmdline"),
            partitions: PathBuf::from("/dev/disk/by-partlabel"),
            bless_boot: PathBuf::from("/usr/lib/systemd/systemd-bless-boot"),
            unsquashfs: PathBuf::from("/usr/bin/unsquashfs"),
            debugfs: PathBuf::from("/usr/sbin/debugfs"),
        }
    }
}

/// [`BootControl`] over systemd-boot; see the module comment.
#[derive(Clone, Debug)]
pub struct SystemdBootControl {
    paths: SystemdBootPaths,
}

impl SystemdBootControl {
    pub fn new(paths: SystemdBootPaths) -> SystemdBootControl {
        SystemdBootControl { paths }
    }

    /// The partition (block device) holding a slot.
    pub fn slot_device(&self, slot: Slot) -> PathBuf {
        self.paths.partitions.join(format!("{ROOT_LABEL_PREFIX}{}", slot.lower()))
    }

    /// Every loader entry on the ESP, in systemd-boot's boot order.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        read_entries(&self.entries_dir())
    }

    /// A writer for the slot that is not running.
    pub fn inactive_slot_writer(&self) -> Result<BlockSlotWriter, Error> {
        let slot = self.active_slot()?.other();
        BlockSlotWriter::open(&self.paths.esp, slot, &self.slot_device(slot))
    }

    /// Why the slot's last write did not finish, if it did not.
    pub fn incomplete_reason(&self, slot: Slot) -> Result<Option<String>, Error> {
        let marker = slot_dir(&self.paths.esp, slot).join(INCOMPLETE_MARKER);
        match fs::read_to_string(&marker) {
            Ok(reason) => Ok(Some(reason.trim().to_owned())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => {
                Err(Error::Io { context: format!("reading {}", marker.display()), source })
            }
        }
    }

    fn entries_dir(&self) -> PathBuf {
        self.paths.esp.join("loader/entries")
    }

    /// An EFI variable of the boot loader as text (UTF-16LE after 4 attribute bytes), or
    /// `None` when the firmware did not set it.
    fn loader_variable(&self, name: &str) -> Result<Option<String>, Error> {
        let path = self.paths.efivars.join(format!("{name}-{LOADER_GUID}"));
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io { context: format!("reading {}", path.display()), source });
            }
        };
        let Some(value) = bytes.get(4..).filter(|value| value.len() % 2 == 0) else {
            return Err(self.inconsistent(format!("{} is not an EFI string", path.display())));
        };
        let units: Vec<u16> =
            value.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
        let text = String::from_utf16(&units)
            .map_err(|_| self.inconsistent(format!("{} is not UTF-16", path.display())))?;
        Ok(Some(text.trim_end_matches('\0').to_owned()))
    }

    /// The slot `baton.slot=` on the kernel command line names, if any.
    fn cmdline_slot(&self) -> Result<Option<Slot>, Error> {
        let path = &self.paths.cmdline;
        let text =
            fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
        let Some(value) = text.split_whitespace().find_map(|word| word.strip_prefix("baton.slot="))
        else {
            return Ok(None);
        };
        parse_slot(value)
            .map(Some)
            .ok_or_else(|| self.inconsistent(format!("{path:?} names slot {value:?}")))
    }

    /// The booted slot's entry on the ESP as it is now (counted down, or blessed since).
    fn booted_entry(&self) -> Result<Entry, Error> {
        let slot = self.active_slot()?;
        self.entries()?.into_iter().find(|entry| entry.slot == slot).ok_or_else(|| {
            self.inconsistent(format!("the running slot {slot} has no entry on the ESP"))
        })
    }

    /// Copies the kernel and initramfs of the (written, unmounted) slot onto the ESP, where
    /// its entry points: newest `vmlinuz-*`/`initrd.img-*` of its `/boot`.
    fn copy_boot_files(&self, slot: Slot) -> Result<(), Error> {
        let dir = slot_dir(&self.paths.esp, slot);
        let scratch = dir.join("extract.tmp");
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .map_err(Error::io(format!("removing {}", scratch.display())))?;
        }
        fs::create_dir_all(&scratch)
            .map_err(Error::io(format!("creating {}", scratch.display())))?;
        let device = self.slot_device(slot);
        let output = self.extract_boot(&device, &scratch)?;
        // Neither tool's exit status is the evidence (debugfs exits 0 when a request fails,
        // unsquashfs non-zero for a file it could not chown): what it extracted is.
        let boot = scratch.join("boot");
        let result = (|| {
            for (prefix, name) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
                let found = newest_with_prefix(&boot, prefix).ok_or_else(|| {
                    self.inconsistent(format!(
                        "slot {slot} ({}) has no /boot/{prefix}*: {}",
                        device.display(),
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                })?;
                let bytes =
                    fs::read(&found).map_err(Error::io(format!("reading {}", found.display())))?;
                write_atomically(&dir.join(name), &bytes)?;
            }
            Ok(())
        })();
        let _ = fs::remove_dir_all(&scratch);
        result
    }

    /// Extracts `/boot` of the file system on `device` into `scratch/boot`, by the tool for
    /// its type (read from its magic number).
    fn extract_boot(&self, device: &Path, scratch: &Path) -> Result<std::process::Output, Error> {
        let mut magic = [0u8; SQUASHFS_MAGIC.len()];
        File::open(device)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
            .map_err(Error::io(format!("reading {}", device.display())))?;
        let mut command = if magic == SQUASHFS_MAGIC {
            let mut command = Command::new(&self.paths.unsquashfs);
            command
                // Into `scratch`, which exists: unsquashfs puts `/boot` at `scratch/boot`.
                .args(["-no-progress", "-no-xattrs", "-quiet", "-force", "-dest"])
                .arg(scratch)
                .arg(device)
                .arg("/boot");
            command
        } else {
            let mut command = Command::new(&self.paths.debugfs);
            command.arg("-R").arg(format!("rdump /boot {}", scratch.display())).arg(device);
            command
        };
        let program = command.get_program().to_owned();
        command.output().map_err(Error::io(format!("running {}", Path::new(&program).display())))
    }

    fn bless(&self, verdict: &str) -> Result<(), Error> {
        let program = &self.paths.bless_boot;
        let output = Command::new(program)
            .arg(verdict)
            .output()
            .map_err(Error::io(format!("running {}", program.display())))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(self.inconsistent(format!(
                "{} {verdict} failed ({}): {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    fn inconsistent(&self, reason: String) -> Error {
        Error::BootState { path: self.paths.esp.display().to_string(), reason }
    }
}

impl BootControl for SystemdBootControl {
    fn active_slot(&self) -> Result<Slot, Error> {
        let from_cmdline = self.cmdline_slot()?;
        // LoaderEntrySelected names the entry; LoaderBootCountPath, set for a counted entry,
        // its file after the firmware counted the try. Both must agree when both are there.
        let mut from_firmware = None;
        for variable in ["LoaderEntrySelected", "LoaderBootCountPath"] {
            let Some(id) = self.loader_variable(variable)? else { continue };
            let slot = entry_slot(&id).ok_or_else(|| {
                self.inconsistent(format!("{variable} is {id:?}, not a slot's entry"))
            })?;
            if from_firmware.is_some_and(|earlier| earlier != slot) {
                return Err(self.inconsistent(format!(
                    "LoaderEntrySelected and LoaderBootCountPath name different slots ({id:?})"
                )));
            }
            from_firmware = Some(slot);
        }
        match (from_firmware, from_cmdline) {
            (Some(firmware), Some(cmdline)) if firmware != cmdline => Err(self.inconsistent(
                format!(
                    "the firmware booted slot {firmware}'s entry but the kernel command line says slot {cmdline}"
                ),
            )),
            (Some(slot), _) | (None, Some(slot)) => Ok(slot),
            (None, None) => Err(self.inconsistent(
                "neither LoaderEntrySelected nor baton.slot= on the kernel command line names the booted slot"
                    .to_owned(),
            )),
        }
    }

    fn set_next_boot(&mut self, slot: Slot, tries: u32, label: &str) -> Result<(), Error> {
        if slot == self.active_slot()? {
            return Err(self.inconsistent(format!("slot {slot} is running; it is not a next boot")));
        }
        if let Some(reason) = self.incomplete_reason(slot)? {
            return Err(self.inconsistent(format!("slot {slot} is marked bad ({reason})")));
        }
        if tries == 0 {
            return Err(self.inconsistent("a next boot needs at least one try".to_owned()));
        }
        self.copy_boot_files(slot)?;
        write_trial_entry(&self.entries_dir(), &self.entries()?, slot, tries, label, |entry| {
            entry_text(slot, entry.generation, label)
        })
    }

    fn mark_good(&mut self) -> Result<(), Error> {
        self.bless("good")
    }

    fn mark_bad(&mut self) -> Result<(), Error> {
        self.bless("bad")
    }

    fn last_boot(&self) -> Result<LastBoot, Error> {
        Ok(last_boot_of(&self.booted_entry()?, &self.entries()?))
    }
}

/// [`SlotWriter`] onto a slot's partition, keeping the ESP's view of the slot in step.
#[derive(Debug)]
pub struct BlockSlotWriter {
    esp: PathBuf,
    slot: Slot,
    device: PathBuf,
    capacity_bytes: u64,
    file: Option<File>,
}

impl BlockSlotWriter {
    /// Opens nothing for writing yet; measures the partition.
    pub fn open(esp: &Path, slot: Slot, device: &Path) -> Result<BlockSlotWriter, Error> {
        let capacity_bytes =
            File::open(device).and_then(|mut file| file.seek(SeekFrom::End(0))).map_err(
                Error::io(format!("measuring slot {slot}'s partition {}", device.display())),
            )?;
        Ok(BlockSlotWriter {
            esp: esp.to_path_buf(),
            slot,
            device: device.to_path_buf(),
            capacity_bytes,
            file: None,
        })
    }

    fn mark(&self, reason: &str) -> std::io::Result<()> {
        let dir = slot_dir(&self.esp, self.slot);
        fs::create_dir_all(&dir)?;
        write_atomically(&dir.join(INCOMPLETE_MARKER), reason.as_bytes())
            .map_err(std::io::Error::other)
    }
}

impl SlotWriter for BlockSlotWriter {
    fn slot(&self) -> Slot {
        self.slot
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn begin(&mut self, _payload_size_bytes: u64) -> std::io::Result<()> {
        // Unbootable first, durably (SlotWriter's contract): no entry, and a marker that keeps
        // set_next_boot from choosing it until the write finished.
        self.mark("install started and did not finish")?;
        remove_entries_of(&self.esp.join("loader/entries"), self.slot)?;
        self.file = Some(OpenOptions::new().write(true).open(&self.device)?);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(std::io::Error::other("slot write before begin")),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file.take() else {
            return Err(std::io::Error::other("slot finish before begin"));
        };
        file.sync_all()?;
        let marker = slot_dir(&self.esp, self.slot).join(INCOMPLETE_MARKER);
        fs::remove_file(&marker)?;
        sync_dir(&slot_dir(&self.esp, self.slot)).map_err(std::io::Error::other)
    }

    fn mark_bad(&mut self, reason: &str) -> std::io::Result<()> {
        self.file = None;
        self.mark(reason)
    }
}

/// The ESP directory holding a slot's kernel and initramfs.
fn slot_dir(esp: &Path, slot: Slot) -> PathBuf {
    esp.join(format!("slot-{}", slot.lower()))
}

fn parse_slot(text: &str) -> Option<Slot> {
    match text {
        "a" => Some(Slot::A),
        "b" => Some(Slot::B),
        _ => None,
    }
}

/// The slot of an entry id or path as the firmware reports it (`slot-b+2-1.conf`,
/// `\loader\entries\slot-b.conf`, or the id without the counter).
fn entry_slot(id: &str) -> Option<Slot> {
    let name = id.rsplit(['\\', '/']).next()?;
    let rest = name.strip_prefix("slot-")?;
    parse_slot(rest.get(..1)?).filter(|_| {
        rest[1..].is_empty() || rest[1..].starts_with('+') || rest[1..].starts_with('.')
    })
}

fn newest_with_prefix(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|item| item.ok().map(|item| item.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(prefix))
        })
        .collect();
    found.sort();
    found.pop()
}

//! Boot control: which slot runs, which boots next, and blessing or rejecting a new slot.
//!
//! The model is systemd-boot's boot counting, so the real implementation (the appliance-image
//! issue) is a thin mapping and this file's state machine is what the tests prove:
//!
//! - Each bootable slot has one loader entry, `loader/entries/slot-a.conf` or `slot-b.conf`.
//!   A new slot's entry is written as `slot-b+3.conf`: three tries left. The entry's `version`
//!   line holds a generation number, one more than any other entry's, so the newest install
//!   sorts first (systemd-boot prefers the highest version; `default` in loader.conf is never
//!   pinned to a counted entry).
//! - At each boot the firmware picks the first entry in that order, skipping entries with no
//!   tries left (`+0`, sorted last), and, if the entry is counted, renames it first: `+3` →
//!   `+2-1` → `+1-2` → `+0-3`. systemd-boot does exactly this, and records the renamed path in
//!   the `LoaderBootCountPath` EFI variable.
//! - When the health gate passes, `systemd-bless-boot good` renames the booted entry to
//!   `slot-b.conf` (blessed, never counted again); `systemd-bless-boot bad` sets it to `+0`.
//! - A slot that boots three times without being blessed reaches `+0`, and the next boot picks
//!   the other slot's entry by itself: the fallback needs no running software.
//! - Starting to write a slot first deletes its entry, so a half-written slot is never
//!   bootable, whatever happens during the write.
//!
//! [`FileBootControl`] keeps the entries as real files in a directory, the slots as files
//! `slot-a.img`/`slot-b.img`, and the firmware's memory of what it booted in `state.json`;
//! [`FileBootControl::firmware_boot`] plays systemd-boot. On the appliance, the entries live on
//! the ESP, the slots are partitions, and "what was booted" is `LoaderBootCountPath`/
//! `LoaderEntrySelected`, read through `/sys/firmware/efi/efivars`.

use crate::Error;
use crate::install::SlotWriter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many boots a new slot gets to prove itself before the firmware falls back.
pub const DEFAULT_BOOT_TRIES: u32 = 3;

const ENTRIES_DIR: &str = "loader/entries";
const STATE_FILE: &str = "state.json";

/// One of the two root filesystem slots.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub(crate) fn lower(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// What the last boot did, for the operator: the interesting case is a fallback.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LastBoot {
    /// The running slot is blessed and nothing newer failed.
    Normal { slot: Slot },
    /// The running slot is on trial: not yet marked good, `tries_left` more boots after this.
    Trying { slot: Slot, tries_left: u32 },
    /// A newer slot used up its tries (or was marked bad) and the firmware booted the other.
    FellBack { from: Slot, failed_tries: u32, to: Slot },
}

impl fmt::Display for LastBoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastBoot::Normal { slot } => write!(f, "booted slot {slot}"),
            LastBoot::Trying { slot, tries_left } => {
                write!(f, "booted new slot {slot} on trial ({tries_left} tries left)")
            }
            LastBoot::FellBack { from, failed_tries, to } => {
                let tries = if *failed_tries == 1 { "try" } else { "tries" };
                write!(f, "fell back from {from} after {failed_tries} failed {tries}; running {to}")
            }
        }
    }
}

/// The platform's boot selection, as the upgrade and the health gate need it.
pub trait BootControl {
    /// The slot the running system booted from.
    fn active_slot(&self) -> Result<Slot, Error>;
    /// Makes `slot` (freshly installed, never the active one) the next boot, with `tries` boots
    /// to be marked good before the firmware falls back; `label` names its software version.
    fn set_next_boot(&mut self, slot: Slot, tries: u32, label: &str) -> Result<(), Error>;
    /// The running slot passed the health gate: boot it from now on (`systemd-bless-boot good`).
    fn mark_good(&mut self) -> Result<(), Error>;
    /// The running slot failed the health gate: fall back at the next boot
    /// (`systemd-bless-boot bad`).
    fn mark_bad(&mut self) -> Result<(), Error>;
    /// What happened at the last boot.
    fn last_boot(&self) -> Result<LastBoot, Error>;
}

/// A loader entry, named as systemd-boot names them: `slot-b+2-1.conf`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    pub slot: Slot,
    /// `None` for a blessed entry, which is never counted.
    pub tries_left: Option<u32>,
    pub tries_done: u32,
    /// Orders entries: the newest install has the highest.
    pub generation: u64,
    /// The software version, for people.
    pub label: String,
}

impl Entry {
    pub fn file_name(&self) -> String {
        let slot = self.slot.lower();
        match (self.tries_left, self.tries_done) {
            (None, _) => format!("slot-{slot}.conf"),
            (Some(left), 0) => format!("slot-{slot}+{left}.conf"),
            (Some(left), done) => format!("slot-{slot}+{left}-{done}.conf"),
        }
    }

    /// The slot and counters a file name carries, if it is one of ours.
    pub(crate) fn parse_name(name: &str) -> Option<(Slot, Option<u32>, u32)> {
        let stem = name.strip_suffix(".conf")?;
        let rest = stem.strip_prefix("slot-")?;
        let (slot, counter) = match rest.split_once('+') {
            Some((slot, counter)) => (slot, Some(counter)),
            None => (rest, None),
        };
        let slot = match slot {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => return None,
        };
        let Some(counter) = counter else { return Some((slot, None, 0)) };
        let (left, done) = match counter.split_once('-') {
            Some((left, done)) => (left.parse().ok()?, done.parse().ok()?),
            None => (counter.parse().ok()?, 0),
        };
        Some((slot, Some(left), done))
    }

    fn contents(&self) -> String {
        // The lines systemd-boot reads; `linux`/`options` come with the image issue.
        format!("title Baton {}\nversion {}\nsort-key baton\n", self.label, self.generation)
    }

    /// systemd-boot's order: entries with tries left (or blessed) first, newest first.
    pub(crate) fn boot_order_key(&self) -> (bool, std::cmp::Reverse<u64>) {
        (self.tries_left == Some(0), std::cmp::Reverse(self.generation))
    }
}

/// What the file-backed firmware remembers between boots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The slot booted last and its entry's name after counting (`LoaderBootCountPath`).
    booted: Option<(Slot, String)>,
    /// Slots whose last write failed, and why; cleared when the slot is written successfully.
    bad: BTreeMap<Slot, String>,
}

/// [`BootControl`] on a directory: entries as files, slots as files, firmware state as JSON.
/// See the module comment for the layout and how it maps onto systemd-boot.
#[derive(Debug)]
pub struct FileBootControl {
    dir: PathBuf,
    slot_capacity_bytes: u64,
}

impl FileBootControl {
    /// A fresh machine: slot A holds `initial_payload` labelled `label`, blessed, and booted.
    pub fn create(
        dir: &Path,
        label: &str,
        initial_payload: &[u8],
        slot_capacity_bytes: u64,
    ) -> Result<FileBootControl, Error> {
        fs::create_dir_all(dir.join(ENTRIES_DIR))
            .map_err(Error::io(format!("creating {}", dir.display())))?;
        let control = FileBootControl { dir: dir.to_path_buf(), slot_capacity_bytes };
        write_atomically(&control.slot_path(Slot::A), initial_payload)?;
        let entry = Entry {
            slot: Slot::A,
            tries_left: None,
            tries_done: 0,
            generation: 1,
            label: label.to_owned(),
        };
        write_atomically(
            &control.entries_dir().join(entry.file_name()),
            entry.contents().as_bytes(),
        )?;
        control.write_state(&State {
            booted: Some((Slot::A, entry.file_name())),
            ..State::default()
        })?;
        Ok(control)
    }

    /// An existing machine made by [`FileBootControl::create`].
    pub fn open(dir: &Path, slot_capacity_bytes: u64) -> FileBootControl {
        FileBootControl { dir: dir.to_path_buf(), slot_capacity_bytes }
    }

    /// The file holding a slot's contents.
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        self.dir.join(format!("slot-{}.img", slot.lower()))
    }

    /// A writer for the slot that is not running.
    pub fn inactive_slot_writer(&self) -> Result<FileSlotWriter, Error> {
        let slot = self.active_slot()?.other();
        Ok(FileSlotWriter::new(&self.dir, slot, self.slot_capacity_bytes))
    }

    /// Why the slot's last write failed, if it did.
    pub fn bad_reason(&self, slot: Slot) -> Result<Option<String>, Error> {
        Ok(self.read_state()?.bad.get(&slot).cloned())
    }

    /// Every loader entry, in systemd-boot's boot order.
    pub fn entries(&self) -> Result<Vec<Entry>, Error> {
        read_entries(&self.entries_dir())
    }

    /// Plays the firmware (systemd-boot) at power-on: picks the first entry in boot order,
    /// counts a try if it is counted, and remembers what it booted. Returns the booted slot.
    pub fn firmware_boot(&mut self) -> Result<Slot, Error> {
        let entries = self.entries()?;
        let Some(chosen) = entries.first() else {
            return Err(self.inconsistent("no bootable entry".to_owned()));
        };
        let mut booted = chosen.clone();
        if let Some(left) = chosen.tries_left.filter(|left| *left > 0) {
            booted.tries_left = Some(left - 1);
            booted.tries_done = chosen.tries_done + 1;
            self.rename_entry(chosen, &booted)?;
        }
        let mut state = self.read_state()?;
        state.booted = Some((booted.slot, booted.file_name()));
        self.write_state(&state)?;
        Ok(booted.slot)
    }

    fn booted_entry(&self) -> Result<Entry, Error> {
        let state = self.read_state()?;
        let Some((slot, name)) = state.booted else {
            return Err(self.inconsistent("nothing was booted".to_owned()));
        };
        let entries = self.entries()?;
        entries.into_iter().find(|entry| entry.file_name() == name).ok_or_else(|| {
            self.inconsistent(format!("the booted entry {name} of slot {slot} is gone"))
        })
    }

    fn rename_entry(&self, from: &Entry, to: &Entry) -> Result<(), Error> {
        let dir = self.entries_dir();
        let (from, to) = (dir.join(from.file_name()), dir.join(to.file_name()));
        fs::rename(&from, &to).map_err(Error::io(format!(
            "renaming {} to {}",
            from.display(),
            to.display()
        )))?;
        sync_dir(&dir)
    }

    fn entries_dir(&self) -> PathBuf {
        self.dir.join(ENTRIES_DIR)
    }

    fn read_state(&self) -> Result<State, Error> {
        read_state(&self.dir)
    }

    fn write_state(&self, state: &State) -> Result<(), Error> {
        write_state(&self.dir, state)
    }

    fn inconsistent(&self, reason: String) -> Error {
        Error::BootState { path: self.dir.display().to_string(), reason }
    }
}

impl BootControl for FileBootControl {
    fn active_slot(&self) -> Result<Slot, Error> {
        match self.read_state()?.booted {
            Some((slot, _)) => Ok(slot),
            None => Err(self.inconsistent("nothing was booted".to_owned())),
        }
    }

    fn set_next_boot(&mut self, slot: Slot, tries: u32, label: &str) -> Result<(), Error> {
        if slot == self.active_slot()? {
            return Err(self.inconsistent(format!("slot {slot} is running; it is not a next boot")));
        }
        if let Some(reason) = self.bad_reason(slot)? {
            return Err(self.inconsistent(format!("slot {slot} is marked bad ({reason})")));
        }
        // Zero tries would make an entry the firmware skips at once: the request is a mistake.
        if tries == 0 {
            return Err(self.inconsistent("a next boot needs at least one try".to_owned()));
        }
        write_trial_entry(
            &self.entries_dir(),
            &self.entries()?,
            slot,
            tries,
            label,
            Entry::contents,
        )
    }

    fn mark_good(&mut self) -> Result<(), Error> {
        let booted = self.booted_entry()?;
        if booted.tries_left.is_none() {
            return Ok(()); // Already blessed: marking good again is harmless.
        }
        let blessed = Entry { tries_left: None, tries_done: 0, ..booted.clone() };
        self.rename_entry(&booted, &blessed)?;
        let mut state = self.read_state()?;
        state.booted = Some((blessed.slot, blessed.file_name()));
        self.write_state(&state)
    }

    fn mark_bad(&mut self) -> Result<(), Error> {
        let booted = self.booted_entry()?;
        let rejected = Entry { tries_left: Some(0), ..booted.clone() };
        if rejected == booted {
            return Ok(());
        }
        self.rename_entry(&booted, &rejected)?;
        let mut state = self.read_state()?;
        state.booted = Some((rejected.slot, rejected.file_name()));
        self.write_state(&state)
    }

    fn last_boot(&self) -> Result<LastBoot, Error> {
        Ok(last_boot_of(&self.booted_entry()?, &self.entries()?))
    }
}

/// What the last boot did, judged from the entry it booted and every entry there is (the same
/// rule for every [`BootControl`]): a newer entry of the other slot with no tries left is one
/// the firmware passed over for this one.
pub(crate) fn last_boot_of(booted: &Entry, entries: &[Entry]) -> LastBoot {
    let failed = entries.iter().find(|entry| {
        entry.slot != booted.slot
            && entry.generation > booted.generation
            && entry.tries_left == Some(0)
    });
    match (failed, booted.tries_left) {
        (Some(failed), _) => LastBoot::FellBack {
            from: failed.slot,
            failed_tries: failed.tries_done,
            to: booted.slot,
        },
        (None, Some(tries_left)) => LastBoot::Trying { slot: booted.slot, tries_left },
        (None, None) => LastBoot::Normal { slot: booted.slot },
    }
}

/// The loader entries of `dir` that name a slot, in systemd-boot's boot order. The `version`
/// line is the generation; the title's text after "Baton " is the label.
pub(crate) fn read_entries(dir: &Path) -> Result<Vec<Entry>, Error> {
    let listing = fs::read_dir(dir).map_err(Error::io(format!("listing {}", dir.display())))?;
    let mut entries = Vec::new();
    for item in listing {
        let item = item.map_err(Error::io(format!("listing {}", dir.display())))?;
        let name = item.file_name();
        let Some((slot, tries_left, tries_done)) = name.to_str().and_then(Entry::parse_name) else {
            continue; // Temporary files of an interrupted write, or not ours.
        };
        let path = item.path();
        let text =
            fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|line| {
                    let (name, value) = line.trim().split_once(char::is_whitespace)?;
                    (name == key).then(|| value.trim())
                })
                .unwrap_or("")
        };
        let generation = field("version").parse().map_err(|_| Error::BootState {
            path: path.display().to_string(),
            reason: "no numeric version line".to_owned(),
        })?;
        let label = field("title").strip_prefix("Baton ").unwrap_or("").to_owned();
        entries.push(Entry { slot, tries_left, tries_done, generation, label });
    }
    entries.sort_by_key(Entry::boot_order_key);
    Ok(entries)
}

/// [`SlotWriter`] for a slot file of a [`FileBootControl`] directory.
#[derive(Debug)]
pub struct FileSlotWriter {
    dir: PathBuf,
    slot: Slot,
    capacity_bytes: u64,
    file: Option<File>,
}

impl FileSlotWriter {
    /// A writer for any slot, the running one included: [`crate::install`] is what refuses it.
    pub fn new(dir: &Path, slot: Slot, capacity_bytes: u64) -> FileSlotWriter {
        FileSlotWriter { dir: dir.to_path_buf(), slot, capacity_bytes, file: None }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("slot-{}.img", self.slot.lower()))
    }

    fn record_bad(&self, reason: Option<&str>) -> std::io::Result<()> {
        let mut state = read_state(&self.dir).map_err(std::io::Error::other)?;
        match reason {
            Some(reason) => state.bad.insert(self.slot, reason.to_owned()),
            None => state.bad.remove(&self.slot),
        };
        write_state(&self.dir, &state).map_err(std::io::Error::other)
    }
}

impl SlotWriter for FileSlotWriter {
    fn slot(&self) -> Slot {
        self.slot
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    fn begin(&mut self, _payload_size_bytes: u64) -> std::io::Result<()> {
        // First make the slot unbootable (see SlotWriter's contract), durably, and note that it
        // is incomplete: only then may its bytes change.
        remove_entries_of(&self.dir.join(ENTRIES_DIR), self.slot)?;
        self.record_bad(Some("install started and did not finish"))?;
        self.file =
            Some(OpenOptions::new().write(true).create(true).truncate(true).open(self.path())?);
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
        self.record_bad(None)
    }

    fn mark_bad(&mut self, reason: &str) -> std::io::Result<()> {
        self.file = None;
        self.record_bad(Some(reason))
    }
}

fn read_state(dir: &Path) -> Result<State, Error> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(Error::Io { context: format!("reading {}", path.display()), source });
        }
    };
    serde_json::from_slice(&bytes).map_err(|error| Error::BootState {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

fn write_state(dir: &Path, state: &State) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|error| Error::BootState {
        path: dir.display().to_string(),
        reason: error.to_string(),
    })?;
    write_atomically(&dir.join(STATE_FILE), &bytes)
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new contents: write a
/// temporary file beside it, fsync it, rename it over, fsync the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let context = || format!("writing {}", temporary.display());
    let mut file = File::create(&temporary).map_err(Error::io(context()))?;
    file.write_all(bytes).map_err(Error::io(context()))?;
    file.sync_all().map_err(Error::io(context()))?;
    drop(file);
    fs::rename(&temporary, path)
        .map_err(Error::io(format!("renaming {} into place", temporary.display())))?;
    sync_dir(dir)
}

/// Writes `slot`'s entry on trial (`tries` boots left, a generation above every one of
/// `entries`, so the firmware tries it first) with the text `contents` makes of it. The new
/// entry is complete on disk before any older entry of the slot goes: a crash in between leaves
/// two entries for one slot, and the newer one wins as it should.
pub(crate) fn write_trial_entry(
    dir: &Path,
    entries: &[Entry],
    slot: Slot,
    tries: u32,
    label: &str,
    contents: impl FnOnce(&Entry) -> String,
) -> Result<(), Error> {
    let generation = entries.iter().map(|entry| entry.generation).max().unwrap_or(0) + 1;
    let entry =
        Entry { slot, tries_left: Some(tries), tries_done: 0, generation, label: label.to_owned() };
    write_atomically(&dir.join(entry.file_name()), contents(&entry).as_bytes())?;
    for old in entries.iter().filter(|old| old.slot == slot && old.file_name() != entry.file_name())
    {
        let path = dir.join(old.file_name());
        fs::remove_file(&path).map_err(Error::io(format!("removing {}", path.display())))?;
    }
    sync_dir(dir)
}

/// Deletes `slot`'s boot entries (any tries counter) from `entries_dir`, durably: the first
/// step of writing a slot, so that a half-written slot is never bootable.
pub(crate) fn remove_entries_of(entries_dir: &Path, slot: Slot) -> std::io::Result<()> {
    for item in fs::read_dir(entries_dir)? {
        let item = item?;
        let name = item.file_name();
        if name.to_str().and_then(Entry::parse_name).is_some_and(|(of, ..)| of == slot) {
            fs::remove_file(item.path())?;
        }
    }
    sync_dir(entries_dir).map_err(std::io::Error::other)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|opened| opened.sync_all())
        .map_err(Error::io(format!("syncing directory {}", dir.display())))
}

//! The streaming install: verify the header, check the image against the running system, then
//! copy the payload into the inactive slot while hashing it, through one fixed buffer so memory
//! does not grow with the image. Any refusal before the payload leaves both slots untouched;
//! any failure after the first payload byte leaves the target slot marked bad.

use crate::boot::Slot;
use crate::format::{Manifest, PRODUCT, read_up_to};
use crate::keys::{KeyId, TrustedKeys};
use crate::{Error, format};
use model::Version;
use sha2::{Digest, Sha256};
use std::io::Read;

/// The copy buffer: large enough that per-call overhead vanishes beside hashing, small enough
/// to be irrelevant to the appliance's memory. The only allocation that scales with nothing.
pub const PAYLOAD_CHUNK_BYTES: usize = 1 << 20;

/// What the image is checked against: the software and machine doing the install.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RunningSystem {
    pub version: Version,
    /// As `std::env::consts::ARCH` names it.
    pub architecture: String,
    /// The slot the running system booted from, which must never be written.
    pub active_slot: Slot,
}

/// The operator's explicit overrides.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct InstallOptions {
    /// Install an image older than the running version.
    pub allow_downgrade: bool,
}

/// Payload bytes written so far out of the manifest's total.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Progress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// A completed install: the slot now holds the verified payload (made durable by
/// [`SlotWriter::finish`]); making it the next boot is the caller's step
/// ([`crate::BootControl::set_next_boot`]).
#[derive(Clone, Debug)]
pub struct Installed {
    pub slot: Slot,
    pub key_id: KeyId,
    pub manifest: Manifest,
}

/// Where a payload goes: one slot, never the running one.
///
/// Contract: after [`SlotWriter::begin`] returns, the slot must not be bootable until a later
/// [`crate::BootControl::set_next_boot`]; so a crash or power cut anywhere during the write
/// leaves the old slot as the only choice, whether or not [`SlotWriter::mark_bad`] ran.
pub trait SlotWriter {
    /// The slot this writer writes.
    fn slot(&self) -> Slot;
    /// The most payload bytes the slot holds.
    fn capacity_bytes(&self) -> u64;
    /// Called once, after every check passed and before the first payload byte.
    fn begin(&mut self, payload_size_bytes: u64) -> std::io::Result<()>;
    /// The next bytes of the payload, in order.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Every byte was written and the digest matched: make the slot's contents durable.
    fn finish(&mut self) -> std::io::Result<()>;
    /// The payload turned out bad or could not be written; record why. The slot stays
    /// unbootable either way (see the trait's contract).
    fn mark_bad(&mut self, reason: &str) -> std::io::Result<()>;
}

/// Installs the image read from `image` into `slot_writer`'s slot if it is signed by one of
/// `trusted_keys` and may replace `running`; see the module comment for what is written when.
pub fn install(
    image: &mut dyn Read,
    trusted_keys: &TrustedKeys,
    running: &RunningSystem,
    options: InstallOptions,
    slot_writer: &mut dyn SlotWriter,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, Error> {
    let slot = slot_writer.slot();
    if slot == running.active_slot {
        return Err(Error::TargetIsActive { slot });
    }
    let header = format::read_header(image, trusted_keys)?;
    check(&header.manifest, running, options)?;
    let payload_size_bytes = header.manifest.payload_size_bytes;
    let capacity_bytes = slot_writer.capacity_bytes();
    if payload_size_bytes > capacity_bytes {
        return Err(Error::PayloadTooLarge { payload_bytes: payload_size_bytes, capacity_bytes });
    }

    // Past this point the target slot is being changed: every error must leave it marked bad.
    slot_writer.begin(payload_size_bytes).map_err(|source| Error::SlotWrite { slot, source })?;
    match copy_payload(image, &header.manifest, slot_writer, progress) {
        Ok(()) => {}
        Err(error) => {
            // The slot is already unbootable (SlotWriter contract); a failure to also record
            // the reason must not hide the error that matters.
            let _ = slot_writer.mark_bad(&error.to_string());
            return Err(error);
        }
    }
    if let Err(source) = slot_writer.finish() {
        let _ = slot_writer.mark_bad(&source.to_string());
        return Err(Error::SlotWrite { slot, source });
    }
    Ok(Installed { slot, key_id: header.key_id, manifest: header.manifest })
}

/// The refusals that need the running system: product, architecture, downgrade, source version.
fn check(
    manifest: &Manifest,
    running: &RunningSystem,
    options: InstallOptions,
) -> Result<(), Error> {
    if manifest.product != PRODUCT {
        return Err(Error::WrongProduct { found: manifest.product.clone() });
    }
    if manifest.architecture != running.architecture {
        return Err(Error::WrongArchitecture {
            image: manifest.architecture.clone(),
            running: running.architecture.clone(),
        });
    }
    // Reinstalling the same version is allowed: it repairs a slot without an override.
    if manifest.version < running.version && !options.allow_downgrade {
        return Err(Error::Downgrade { image: manifest.version, running: running.version });
    }
    if running.version < manifest.min_from_version {
        return Err(Error::SourceTooOld {
            running: running.version,
            minimum: manifest.min_from_version,
        });
    }
    Ok(())
}

/// Streams exactly the manifest's payload size into the slot while hashing, then requires the
/// end of the image and the manifest's digest.
fn copy_payload(
    image: &mut dyn Read,
    manifest: &Manifest,
    slot_writer: &mut dyn SlotWriter,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), Error> {
    let slot = slot_writer.slot();
    let total_bytes = manifest.payload_size_bytes;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; PAYLOAD_CHUNK_BYTES];
    let mut done_bytes = 0u64;
    while done_bytes < total_bytes {
        let wanted = usize::try_from(total_bytes - done_bytes)
            .map_or(PAYLOAD_CHUNK_BYTES, |left| left.min(PAYLOAD_CHUNK_BYTES));
        let read = read_up_to(image, &mut buffer[..wanted])?;
        if read == 0 {
            return Err(Error::Truncated {
                expected_bytes: total_bytes,
                received_bytes: done_bytes,
            });
        }
        let chunk = &buffer[..read];
        hasher.update(chunk);
        slot_writer.write(chunk).map_err(|source| Error::SlotWrite { slot, source })?;
        done_bytes += read as u64;
        progress(Progress { done_bytes, total_bytes });
    }
    let mut extra = [0u8; 1];
    if read_up_to(image, &mut extra)? != 0 {
        return Err(Error::TrailingData);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != manifest.payload_sha256 {
        return Err(Error::DigestMismatch { expected: manifest.payload_sha256.clone(), actual });
    }
    Ok(())
}

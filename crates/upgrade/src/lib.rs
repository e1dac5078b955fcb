//! Signed upgrade images and the A/B slots they are installed into. Owns the image format
//! (`image/UPGRADE-FORMAT.md`: magic, manifest, ed25519 signature, payload), the checks that
//! refuse an image before a byte of payload is written, the streaming install into the
//! inactive slot while hashing, the boot-control interface ([`BootControl`], modelled on
//! systemd-boot boot counting) with a file-backed implementation for tests and the appliance's systemd-boot one
//! ([`SystemdBootControl`]: ESP entries, partitions by label, EFI variables), and the health gate
//! that decides whether a freshly booted slot may be blessed.
//!
//! Must not depend on tokio, the network, the daemon or storage: bytes come in through
//! [`std::io::Read`], slots are written through [`SlotWriter`], and time is passed in. It never
//! touches the running slot: [`install`] checks that its writer targets the other one.

mod boot;
mod format;
mod health;
mod install;
mod keys;
mod systemd_boot;

#[cfg(test)]
mod tests;

pub use boot::{
    BootControl, DEFAULT_BOOT_TRIES, Entry, FileBootControl, FileSlotWriter, LastBoot, Slot,
};
pub use format::{
    FORMAT_VERSION, HEADER_FIXED_BYTES, Header, MAGIC, MANIFEST_SIZE_MAX_BYTES, Manifest, PRODUCT,
    digest_payload, read_header, write_image,
};
pub use health::{HealthDecision, HealthObservation, decide_health};
pub use install::{
    InstallOptions, Installed, PAYLOAD_CHUNK_BYTES, Progress, RunningSystem, SlotWriter, install,
};
pub use keys::{
    KeyId, SigningKey, TRUSTED_KEYS_ENV, TrustedKeys, VerifyingKey, generate_signing_key,
    public_key_to_text, signing_key_from_text, signing_key_to_text,
};
pub use model::Version;
pub use systemd_boot::{
    BlockSlotWriter, ROOT_LABEL_PREFIX, SystemdBootControl, SystemdBootPaths, entry_text,
};

/// Where an image's root file system holds its Baton version (`MAJOR.MINOR.PATCH`): stamped by
/// `cargo xtask image --version` and `cargo xtask upgrade-image`, read by `batond` at start.
pub const VERSION_FILE: &str = "/usr/lib/baton/version";

/// Everything that can go wrong; [`Error::is_refusal`] separates bad images and forbidden
/// upgrades (the operator's business, 4xx) from failures of the machine (5xx).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Refusals: the image or the request is wrong; retrying the same image will not help.
    #[error("this is not a Baton upgrade image ({reason})")]
    UnknownFormat { reason: String },
    #[error("this upgrade image has format version {found}; this software reads up to {supported}")]
    FormatTooNew { found: u32, supported: u32 },
    #[error("the image's manifest is invalid: {reason}")]
    InvalidManifest { reason: String },
    #[error("the image is signed by key {key_id}, which this software does not trust")]
    UnknownKey { key_id: KeyId },
    #[error("the image's signature does not verify with trusted key {key_id}")]
    BadSignature { key_id: KeyId },
    #[error("the image is for product {found:?}, not {PRODUCT:?}")]
    WrongProduct { found: String },
    #[error("the image is for architecture {image}, this machine runs {running}")]
    WrongArchitecture { image: String, running: String },
    #[error(
        "the image holds version {image}, older than the running {running}; downgrading needs an explicit override"
    )]
    Downgrade { image: Version, running: Version },
    #[error("the image upgrades from {minimum} or later; this machine runs {running}")]
    SourceTooOld { running: Version, minimum: Version },
    #[error("the payload is {payload_bytes} bytes; the slot holds only {capacity_bytes}")]
    PayloadTooLarge { payload_bytes: u64, capacity_bytes: u64 },
    #[error(
        "the payload's SHA-256 is {actual}, the manifest says {expected}; the slot was marked bad"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error(
        "the image ends after {received_bytes} of {expected_bytes} payload bytes; the slot was marked bad"
    )]
    Truncated { expected_bytes: u64, received_bytes: u64 },
    #[error("the image has bytes after its payload; the slot was marked bad")]
    TrailingData,

    // Failures of this machine or of the transfer: the image may be fine.
    #[error("reading the image: {source}")]
    Read { source: std::io::Error },
    #[error("writing slot {slot}: {source}")]
    SlotWrite { slot: Slot, source: std::io::Error },
    #[error("the slot writer targets slot {slot}, the running slot; refusing to overwrite it")]
    TargetIsActive { slot: Slot },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("no random numbers from the operating system: {0}")]
    Random(String),
    #[error("a trusted public key is malformed: {reason}")]
    InvalidTrustedKey { reason: String },
    #[error("boot state in {path} is inconsistent: {reason}")]
    BootState { path: String, reason: String },
}

impl Error {
    /// Whether the image or the request was refused (nothing is wrong with this machine), as
    /// opposed to a failure that may go away by itself.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::UnknownFormat { .. }
                | Error::FormatTooNew { .. }
                | Error::InvalidManifest { .. }
                | Error::UnknownKey { .. }
                | Error::BadSignature { .. }
                | Error::WrongProduct { .. }
                | Error::WrongArchitecture { .. }
                | Error::Downgrade { .. }
                | Error::SourceTooOld { .. }
                | Error::PayloadTooLarge { .. }
                | Error::DigestMismatch { .. }
                | Error::Truncated { .. }
                | Error::TrailingData
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

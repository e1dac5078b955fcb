//! The upgrade image format (`image/UPGRADE-FORMAT.md`): a fixed header (magic, format
//! version, manifest length, signing key id, ed25519 signature), the JSON manifest the
//! signature covers byte for byte, then the payload. Everything needed to refuse an image
//! comes before the payload, so a refusal never costs a written byte.

use crate::keys::{KeyId, SigningKey, TrustedKeys};
use crate::{Error, install::PAYLOAD_CHUNK_BYTES};
use ed25519_dalek::{Signature, Signer};
use model::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

/// The first bytes of every image.
pub const MAGIC: [u8; 8] = *b"BATONUPG";
/// The format this software writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The product every Baton image names; anything else is refused.
pub const PRODUCT: &str = "baton";
/// Magic, format version, manifest length, key id and signature: the bytes before the manifest.
pub const HEADER_FIXED_BYTES: usize = 8 + 4 + 4 + 8 + SIGNATURE_BYTES;
/// A manifest is a few hundred bytes; the bound keeps a hostile length from allocating much
/// before the signature has been checked.
pub const MANIFEST_SIZE_MAX_BYTES: u32 = 64 * 1024;

const SIGNATURE_BYTES: usize = 64;

/// What an image claims about its payload, signed by a release key.
///
/// Unknown fields are refused rather than ignored: a field this software does not understand
/// could be a constraint it would silently break.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Repeats the header's format version inside the signed bytes, so it cannot be altered.
    pub format_version: u32,
    /// Always [`PRODUCT`].
    pub product: String,
    /// The version of the software in the payload.
    pub version: Version,
    /// As `std::env::consts::ARCH` names it on the target (`x86_64`, `aarch64`).
    pub architecture: String,
    /// The exact length of the payload that follows the manifest.
    pub payload_size_bytes: u64,
    /// SHA-256 of the payload, lower-case hex.
    pub payload_sha256: String,
    /// The oldest running version this image may be installed over.
    pub min_from_version: Version,
    /// When the image was built (seconds since the Unix epoch); informational only.
    pub created_at_unix_s: u64,
}

/// A parsed image header whose signature has been verified with a trusted key.
#[derive(Clone, Debug)]
pub struct Header {
    pub key_id: KeyId,
    pub manifest: Manifest,
}

/// Size and SHA-256 (hex) of everything `payload` yields: the first pass of building an image.
pub fn digest_payload(payload: &mut dyn Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; PAYLOAD_CHUNK_BYTES];
    let mut size_bytes = 0u64;
    loop {
        let read = match payload.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        size_bytes += read as u64;
    }
    Ok((size_bytes, hex::encode(hasher.finalize())))
}

/// Writes a signed image: header, `manifest`, and exactly `manifest.payload_size_bytes` from
/// `payload`, whose SHA-256 must match the manifest (checked again while copying, so a payload
/// that changed since it was digested makes an error, not a broken image).
pub fn write_image(
    out: &mut dyn Write,
    manifest: &Manifest,
    key: &SigningKey,
    payload: &mut dyn Read,
) -> Result<(), Error> {
    let manifest_bytes = serde_json::to_vec(manifest).map_err(|error| Error::InvalidManifest {
        reason: format!("cannot be encoded: {error}"),
    })?;
    let manifest_length = u32::try_from(manifest_bytes.len())
        .ok()
        .filter(|length| *length <= MANIFEST_SIZE_MAX_BYTES)
        .ok_or_else(|| Error::InvalidManifest {
            reason: format!("{} bytes, more than {MANIFEST_SIZE_MAX_BYTES}", manifest_bytes.len()),
        })?;
    let signature = key.sign(&manifest_bytes);

    let write_context = "writing the image";
    out.write_all(&MAGIC).map_err(Error::io(write_context))?;
    out.write_all(&manifest.format_version.to_le_bytes()).map_err(Error::io(write_context))?;
    out.write_all(&manifest_length.to_le_bytes()).map_err(Error::io(write_context))?;
    out.write_all(&KeyId::of(&key.verifying_key()).0).map_err(Error::io(write_context))?;
    out.write_all(&signature.to_bytes()).map_err(Error::io(write_context))?;
    out.write_all(&manifest_bytes).map_err(Error::io(write_context))?;

    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; PAYLOAD_CHUNK_BYTES];
    let mut copied_bytes = 0u64;
    loop {
        let read = match payload.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Read { source }),
        };
        hasher.update(&buffer[..read]);
        copied_bytes += read as u64;
        out.write_all(&buffer[..read]).map_err(Error::io(write_context))?;
    }
    let actual = hex::encode(hasher.finalize());
    if copied_bytes != manifest.payload_size_bytes {
        return Err(Error::Truncated {
            expected_bytes: manifest.payload_size_bytes,
            received_bytes: copied_bytes,
        });
    }
    if actual != manifest.payload_sha256 {
        return Err(Error::DigestMismatch { expected: manifest.payload_sha256.clone(), actual });
    }
    out.flush().map_err(Error::io(write_context))
}

/// Reads the header and manifest from `image` and verifies the signature with the trusted
/// key the header names. Consumes exactly the bytes before the payload. Checks nothing about
/// the running system (see [`crate::install`]).
pub fn read_header(image: &mut dyn Read, trusted_keys: &TrustedKeys) -> Result<Header, Error> {
    let mut fixed = [0u8; HEADER_FIXED_BYTES];
    let fixed_read = read_up_to(image, &mut fixed)?;
    if fixed_read < MAGIC.len() || fixed[..MAGIC.len()] != MAGIC {
        return Err(Error::UnknownFormat { reason: "it does not start with BATONUPG".to_owned() });
    }
    let format_version = u32_at(&fixed, 8);
    // The format version is looked at before anything else a later format might move.
    if fixed_read >= 12 && format_version > FORMAT_VERSION {
        return Err(Error::FormatTooNew { found: format_version, supported: FORMAT_VERSION });
    }
    if fixed_read < HEADER_FIXED_BYTES {
        return Err(Error::UnknownFormat { reason: "it ends inside its header".to_owned() });
    }
    if format_version == 0 {
        return Err(Error::UnknownFormat { reason: "format version 0".to_owned() });
    }
    let manifest_length = u32_at(&fixed, 12);
    if manifest_length > MANIFEST_SIZE_MAX_BYTES {
        return Err(Error::UnknownFormat {
            reason: format!(
                "a manifest of {manifest_length} bytes, more than {MANIFEST_SIZE_MAX_BYTES}"
            ),
        });
    }
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&fixed[16..24]);
    let key_id = KeyId(key_id);
    let mut signature = [0u8; SIGNATURE_BYTES];
    signature.copy_from_slice(&fixed[24..24 + SIGNATURE_BYTES]);
    let signature = Signature::from_bytes(&signature);

    // Lossless: bounded by MANIFEST_SIZE_MAX_BYTES above.
    let mut manifest_bytes = vec![0u8; manifest_length as usize];
    if read_up_to(image, &mut manifest_bytes)? < manifest_bytes.len() {
        return Err(Error::UnknownFormat { reason: "it ends inside its manifest".to_owned() });
    }

    // The signature is checked before the manifest is parsed: nothing unsigned is interpreted.
    let key = trusted_keys.find(key_id).ok_or(Error::UnknownKey { key_id })?;
    key.verify_strict(&manifest_bytes, &signature).map_err(|_| Error::BadSignature { key_id })?;

    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| Error::InvalidManifest { reason: error.to_string() })?;
    if manifest.format_version != format_version {
        return Err(Error::InvalidManifest {
            reason: format!(
                "it says format version {}, the header {format_version}",
                manifest.format_version
            ),
        });
    }
    let digest_ok = manifest.payload_sha256.len() == 64
        && manifest.payload_sha256.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !digest_ok {
        return Err(Error::InvalidManifest {
            reason: "payload_sha256 is not 64 lower-case hex digits".to_owned(),
        });
    }
    Ok(Header { key_id, manifest })
}

/// Fills `buffer` as far as `reader` goes; the count read (short only at end of input).
pub(crate) fn read_up_to(reader: &mut dyn Read, buffer: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Read { source }),
        }
    }
    Ok(filled)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

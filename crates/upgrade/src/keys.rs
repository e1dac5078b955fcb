//! Release keys: ed25519 key pairs (ed25519-dalek), their text files, their short ids, and the
//! set of public keys a firmware build trusts. Key files are one line of hex: the 32-byte
//! secret seed (`*.key`, mode 0600, never in the repository) or the 32-byte public key
//! (`*.pub`).
//!
//! The trusted keys are embedded at build time by [`trusted_keys_from_env!`](crate::trusted_keys_from_env):
//! the firmware build sets [`TRUSTED_KEYS_ENV`] to the public key lines; tests make throwaway
//! keys with [`generate_signing_key`] instead, so no key of any kind is committed.

use crate::Error;
use sha2::{Digest, Sha256};
use std::fmt;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// The build-time environment variable holding the trusted public keys (hex, one per line or
/// separated by commas or spaces) that [`trusted_keys_from_env!`](crate::trusted_keys_from_env)
/// embeds.
pub const TRUSTED_KEYS_ENV: &str = "BATON_UPGRADE_TRUSTED_KEYS";

/// The public keys an image may be signed with, embedded in the calling crate at build time
/// from [`TRUSTED_KEYS_ENV`]; an error if a key in it is malformed. An unset variable gives an
/// empty set, which refuses every image: a development build cannot be upgraded by accident.
#[macro_export]
macro_rules! trusted_keys_from_env {
    () => {
        $crate::TrustedKeys::from_text(
            ::core::option_env!("BATON_UPGRADE_TRUSTED_KEYS").unwrap_or(""),
        )
    };
}

/// The first 8 bytes of SHA-256 of a public key: names the key in the image header, so that
/// the device can say "unknown key" apart from "bad signature" and pick the key to try.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(public_key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(public_key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The public keys this software accepts upgrade images from.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, VerifyingKey)>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> TrustedKeys {
        TrustedKeys { keys: keys.into_iter().map(|key| (KeyId::of(&key), key)).collect() }
    }

    /// Parses public keys in hex separated by white space or commas (a `*.pub` file, several
    /// concatenated, or the build-time variable).
    pub fn from_text(text: &str) -> Result<TrustedKeys, Error> {
        let keys = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|word| !word.is_empty())
            .map(public_key_from_hex)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys::new(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn find(&self, key_id: KeyId) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(id, _)| *id == key_id).map(|(_, key)| key)
    }
}

/// A new key pair from the operating system's random numbers.
pub fn generate_signing_key() -> Result<SigningKey, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| Error::Random(error.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The text of a `*.key` file: the secret seed in hex and a newline.
pub fn signing_key_to_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Reads a `*.key` file's text.
pub fn signing_key_from_text(text: &str) -> Result<SigningKey, String> {
    let seed: [u8; 32] = hex::decode(text.trim())
        .map_err(|error| format!("not hex: {error}"))?
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("{} bytes, an ed25519 secret key has 32", bytes.len()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The text of a `*.pub` file: the public key in hex and a newline.
pub fn public_key_to_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.as_bytes()))
}

fn public_key_from_hex(word: &str) -> Result<VerifyingKey, Error> {
    let invalid = |reason: String| Error::InvalidTrustedKey {
        reason: format!("{word:?} is not an ed25519 public key: {reason}"),
    };
    let bytes: [u8; 32] = hex::decode(word)
        .map_err(|error| invalid(error.to_string()))?
        .try_into()
        .map_err(|bytes: Vec<u8>| invalid(format!("{} bytes instead of 32", bytes.len())))?;
    VerifyingKey::from_bytes(&bytes).map_err(|error| invalid(error.to_string()))
}

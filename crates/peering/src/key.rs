//! The channel key, derived from the operator's pre-shared key.

use argon2::{Algorithm, Argon2, Params, Version};

/// Domain separation: the same passphrase used elsewhere yields an unrelated key here.
const KEY_SALT: &[u8] = b"baton cluster pre-shared key v1";
/// argon2id cost: an attacker who records a handshake must pay this per guessed passphrase.
/// Derived once per configuration change, not per connection.
const KEY_MEMORY_KIB: u32 = 64 * 1024;
const KEY_ITERATIONS: u32 = 3;

/// 32 bytes for Noise's PSK slot. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub(crate) [u8; 32]);

impl ClusterKey {
    /// Slow on purpose (tens of milliseconds): call it off the async runtime. Fails only for
    /// out-of-range parameters, which are constants; never falls back to a weaker key.
    pub fn derive(passphrase: &str) -> Result<ClusterKey, argon2::Error> {
        let mut key = [0u8; 32];
        let params = Params::new(KEY_MEMORY_KIB, KEY_ITERATIONS, 1, Some(32))?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password_into(
            passphrase.as_bytes(),
            KEY_SALT,
            &mut key,
        )?;
        Ok(ClusterKey(key))
    }

    /// What the key depends on besides the passphrase: a copy of a derived key is valid only
    /// with the same (the daemon keeps one, so a restart need not derive again).
    pub fn derivation() -> String {
        let salt = String::from_utf8_lossy(KEY_SALT);
        format!("argon2id v19 m={KEY_MEMORY_KIB} t={KEY_ITERATIONS} p=1 salt={salt}")
    }

    /// The key's bytes, to keep a copy beside the passphrase it was derived from.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// A key kept by [`ClusterKey::to_bytes`], for the same passphrase and
    /// [`ClusterKey::derivation`].
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(********)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_passphrase_and_never_print() {
        let derive = |passphrase| ClusterKey::derive(passphrase).expect("valid parameters");
        let a = derive("correct horse");
        assert_eq!(a, derive("correct horse"));
        assert_ne!(a, derive("correct horse."));
        assert_eq!(format!("{a:?}"), "ClusterKey(********)");
    }
}

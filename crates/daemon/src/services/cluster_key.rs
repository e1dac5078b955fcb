//! The cluster key, derived from the pre-shared key once per passphrase on this peer, not at
//! every start. argon2id is slow on purpose (about 150 ms here, more on a busy machine), and
//! until a restarted peer has the key it cannot dial its peers nor answer them, so the catch-up
//! after a restart waited for it. The derived key is kept in the data directory, mode 0600,
//! beside the database that holds the passphrase itself (a local, never replicated record), so
//! the file tells nothing the database does not; backups do not take it.

use peering::ClusterKey;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The copy of the derived key, in the data directory.
pub const KEY_CACHE_FILE: &str = "cluster-key";
const DOMAIN: &[u8] = b"baton cluster key cache v1";
const TAG_BYTES: usize = 32;
const KEY_BYTES: usize = 32;

/// The key for `passphrase`: the kept copy if it was derived from that passphrase with this
/// release's parameters, else `derive(passphrase)`, then kept. Blocking (file I/O, argon2id).
/// A copy that cannot be written only costs the next start a derivation.
pub fn derive_cached(
    file: &Path,
    passphrase: &str,
    derive: impl FnOnce(&str) -> Result<ClusterKey, String>,
) -> Result<ClusterKey, String> {
    let tag = tag(passphrase);
    if let Some(key) = read(file, &tag) {
        return Ok(key);
    }
    let key = derive(passphrase)?;
    let mut kept = Vec::with_capacity(TAG_BYTES + KEY_BYTES);
    kept.extend_from_slice(&tag);
    kept.extend_from_slice(&key.to_bytes());
    if let Err(error) = crate::base::durable::write_private(file, &kept) {
        tracing::warn!(%error, file = %file.display(), "could not keep the derived cluster key; the next start derives it again");
    }
    Ok(key)
}

/// Names the passphrase and the derivation, so a copy is never used for another of either.
fn tag(passphrase: &str) -> [u8; TAG_BYTES] {
    let mut hash = Sha256::new();
    for part in [DOMAIN, ClusterKey::derivation().as_bytes(), passphrase.as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// The kept key if the file holds one for `tag`; a missing, short or foreign file is none.
fn read(file: &Path, tag: &[u8; TAG_BYTES]) -> Option<ClusterKey> {
    let kept = std::fs::read(file).ok()?;
    let (kept_tag, key) = kept.split_at_checked(TAG_BYTES)?;
    if kept_tag != tag {
        return None;
    }
    Some(ClusterKey::from_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::cell::Cell;

    // Goal: the key is derived once per passphrase and kept; another passphrase, or a damaged
    // copy, derives again; the copy is readable by its owner only.
    #[test]
    fn the_key_is_derived_once_per_passphrase_and_kept_privately() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(KEY_CACHE_FILE);
        let derivations = Cell::new(0);
        let derive = |passphrase: &str| {
            derivations.set(derivations.get() + 1);
            let mut bytes = [0u8; 32];
            bytes[..passphrase.len()].copy_from_slice(passphrase.as_bytes());
            Ok(ClusterKey::from_bytes(bytes))
        };
        let first = derive_cached(&file, "first", derive).unwrap();
        assert_eq!(derivations.get(), 1);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(derive_cached(&file, "first", derive).unwrap(), first);
        assert_eq!(derivations.get(), 1, "kept, not derived again");

        let second = derive_cached(&file, "second", derive).unwrap();
        assert_ne!(second, first);
        assert_eq!(derivations.get(), 2, "another passphrase is derived");
        assert_eq!(derive_cached(&file, "second", derive).unwrap(), second);
        assert_eq!(derivations.get(), 2);

        let mut damaged = std::fs::read(&file).unwrap();
        damaged[0] ^= 1;
        std::fs::write(&file, &damaged).unwrap();
        assert_eq!(derive_cached(&file, "second", derive).unwrap(), second);
        std::fs::write(&file, b"short").unwrap();
        assert_eq!(derive_cached(&file, "second", derive).unwrap(), second);
        assert_eq!(derivations.get(), 4, "a damaged or short copy is derived again");
    }

    // Goal: a failed derivation keeps nothing and says why; a copy that cannot be written
    // still gives the key.
    #[test]
    fn a_failed_derivation_keeps_nothing_and_an_unwritable_copy_costs_only_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(KEY_CACHE_FILE);
        let failed = derive_cached(&file, "p", |_| Err("out of memory".to_owned()));
        assert_eq!(failed.err().as_deref(), Some("out of memory"));
        assert!(!file.exists());
        let unwritable = dir.path().join("missing-dir").join(KEY_CACHE_FILE);
        let key = derive_cached(&unwritable, "p", |_| Ok(ClusterKey::from_bytes([7; 32])));
        assert_eq!(key.unwrap(), ClusterKey::from_bytes([7; 32]));
    }
}

//! The policy service's memory of credentials it verified, so the VCS's calls and status polls
//! cost a keyed hash instead of an argon2 check. An entry is an HMAC-SHA256, under a random key
//! made at start and never stored, of the `Authorization` header and the account it was checked
//! against: a memory dump gives no fast offline guess of the password, and a changed account
//! matches no entry. Each entry lasts [`CREDENTIALS_CACHED_MS`], after which the password is
//! checked again.

use crate::base::sync::lock;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// Verified credentials remembered at most.
pub const CREDENTIALS_CACHED_MAX: usize = 64;
/// How long a verified credential is trusted before its password is checked again.
pub const CREDENTIALS_CACHED_MS: u64 = 10 * 60 * 1_000;

/// An entry's identity: HMAC-SHA256 of the header and the account under the process's key.
pub type Fingerprint = [u8; 32];

/// Verified credentials, each with when it was verified.
pub struct VerifiedCredentials {
    /// The HMAC keyed once: each fingerprint clones it rather than hashing the key again. It
    /// never changes, so it is outside the lock and the listener threads hash their headers
    /// side by side. `None` when the random source failed at start: nothing is remembered
    /// (every call is checked), rather than keying the entries with something guessable.
    key: Option<Hmac<Sha256>>,
    /// Fingerprint → wall-clock ms at which its password was verified.
    verified_at_ms: Mutex<HashMap<Fingerprint, u64>>,
}

impl VerifiedCredentials {
    /// A cache keyed with fresh random bytes.
    pub fn new() -> VerifiedCredentials {
        let key = crate::base::random::bytes::<32>();
        if let Err(error) = &key {
            tracing::warn!(%error, "no randomness for the credential cache; every policy call checks its password");
        }
        let key = key.ok().and_then(|key| Hmac::<Sha256>::new_from_slice(&key).ok());
        VerifiedCredentials { key, verified_at_ms: Mutex::new(HashMap::new()) }
    }

    /// The fingerprint of `basic_credentials` checked against the account (`username`,
    /// `password_hash`); `None` when nothing can be remembered. Each part is length-prefixed,
    /// so no two different triples share an input.
    pub fn fingerprint(
        &self,
        basic_credentials: &str,
        username: &str,
        password_hash: &str,
    ) -> Option<Fingerprint> {
        let mut mac = self.key.clone()?;
        for part in [basic_credentials, username, password_hash] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether `fingerprint` was verified less than [`CREDENTIALS_CACHED_MS`] before `now_ms`;
    /// an expired entry is forgotten.
    pub fn contains(&self, fingerprint: &Fingerprint, now_ms: u64) -> bool {
        let mut verified_at_ms = lock(&self.verified_at_ms);
        match verified_at_ms.get(fingerprint) {
            Some(&at_ms) if now_ms.saturating_sub(at_ms) < CREDENTIALS_CACHED_MS => true,
            Some(_) => {
                verified_at_ms.remove(fingerprint);
                false
            }
            None => false,
        }
    }

    /// When `fingerprint` was verified, if it is remembered (expired or not).
    pub fn verified_at_ms(&self, fingerprint: &Fingerprint) -> Option<u64> {
        lock(&self.verified_at_ms).get(fingerprint).copied()
    }

    /// Remembers `fingerprint` as verified at `now_ms`; when full, the oldest entry makes room.
    pub fn insert(&self, fingerprint: Fingerprint, now_ms: u64) {
        let mut verified_at_ms = lock(&self.verified_at_ms);
        if verified_at_ms.len() >= CREDENTIALS_CACHED_MAX
            && !verified_at_ms.contains_key(&fingerprint)
        {
            let oldest = verified_at_ms.iter().min_by_key(|(_, at_ms)| **at_ms);
            if let Some((&oldest, _)) = oldest {
                verified_at_ms.remove(&oldest);
            }
        }
        verified_at_ms.insert(fingerprint, now_ms);
    }
}

/// How long a check waits for the one before it (see [`check`]) before going ahead.
pub const CHECKING_WAIT_MAX_MS: u64 = crate::base::passwords::CHECK_WAIT_MAX_MS;

/// The account credentials are checked against.
pub struct Account<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
}

/// Whether `basic_credentials` (the base64 of an HTTP Basic `Authorization`) are `account`'s
/// at `now_ms`: remembered, or else `verify_password(password)` (the argon2 check), run
/// whatever the name so timing does not tell whether the name is right. Only a success is
/// remembered.
pub async fn check<Verify, Checked, E>(
    cache: &VerifiedCredentials,
    checking: &tokio::sync::Mutex<()>,
    account: Account<'_>,
    basic_credentials: &str,
    now_ms: u64,
    verify_password: Verify,
) -> Result<bool, E>
where
    Verify: FnOnce(String) -> Checked,
    Checked: Future<Output = Result<bool, E>>,
{
    let encoded = basic_credentials.trim();
    let fingerprint = cache.fingerprint(encoded, account.username, account.password_hash);
    if let Some(fingerprint) = &fingerprint
        && cache.contains(fingerprint, now_ms)
    {
        return Ok(true);
    }
    // Boxed: the password check's future is large, and a remembered call would carry it.
    Box::pin(async move {
        // One check at a time per cache: calls that arrive together with the same new
        // credentials (a VCS's first calls) cost one password check, the others find it
        // remembered. The wait is bounded; past it the check goes ahead (the password pool
        // has its own bounds).
        let _one =
            tokio::time::timeout(Duration::from_millis(CHECKING_WAIT_MAX_MS), checking.lock())
                .await
                .ok();
        if let Some(fingerprint) = &fingerprint
            && cache.contains(fingerprint, now_ms)
        {
            return Ok(true);
        }
        let Some((user, password)) = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        else {
            return Ok(false);
        };
        let good = verify_password(password).await? && user == account.username;
        if good && let Some(fingerprint) = fingerprint {
            cache.insert(fingerprint, now_ms);
        }
        Ok(good)
    })
    .await
}

impl Default for VerifiedCredentials {
    fn default() -> Self {
        VerifiedCredentials::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEADER: &str = "cG9saWN5OnNlY3JldA==";
    const T0_MS: u64 = 1_700_000_000_000;

    /// Checks `header` against the account `policy` / `hash` at `now_ms`, the password being
    /// `secret`; counts the password checks made.
    fn check_at(
        cache: &VerifiedCredentials,
        hash: &str,
        header: &str,
        now_ms: u64,
        password_checks: &std::cell::Cell<u32>,
    ) -> bool {
        let account = Account { username: "policy", password_hash: hash };
        let verify = |password: String| {
            password_checks.set(password_checks.get() + 1);
            std::future::ready(Ok::<_, ()>(password == "secret"))
        };
        let checking = tokio::sync::Mutex::new(());
        let checked = check(cache, &checking, account, header, now_ms, verify);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(checked).unwrap()
    }

    #[test]
    fn an_expired_entry_has_its_password_checked_again() {
        let cache = VerifiedCredentials::new();
        let checks = std::cell::Cell::new(0);
        assert!(check_at(&cache, "h", HEADER, T0_MS, &checks));
        assert!(check_at(&cache, "h", HEADER, T0_MS + CREDENTIALS_CACHED_MS - 1, &checks));
        assert_eq!(checks.get(), 1, "remembered within the time limit");
        assert!(check_at(&cache, "h", HEADER, T0_MS + CREDENTIALS_CACHED_MS, &checks));
        assert_eq!(checks.get(), 2, "checked again once the entry expired");
    }

    #[test]
    fn a_changed_account_has_its_password_checked_again_and_wrong_ones_are_not_kept() {
        let cache = VerifiedCredentials::new();
        let checks = std::cell::Cell::new(0);
        assert!(check_at(&cache, "h", HEADER, T0_MS, &checks));
        assert!(check_at(&cache, "h2", HEADER, T0_MS + 1, &checks));
        assert_eq!(checks.get(), 2, "a new password hash matched no entry");
        // "policy:wrong", twice: refused both times, each time checked.
        let wrong = "cG9saWN5Ondyb25n";
        assert!(!check_at(&cache, "h", wrong, T0_MS + 2, &checks));
        assert!(!check_at(&cache, "h", wrong, T0_MS + 3, &checks));
        assert_eq!(checks.get(), 4);
    }

    #[test]
    fn an_entry_is_trusted_until_its_time_limit_then_checked_again() {
        let cache = VerifiedCredentials::new();
        let fingerprint = cache.fingerprint(HEADER, "policy", "$argon2id$a").unwrap();
        cache.insert(fingerprint, T0_MS);
        assert!(cache.contains(&fingerprint, T0_MS + CREDENTIALS_CACHED_MS - 1));
        assert!(!cache.contains(&fingerprint, T0_MS + CREDENTIALS_CACHED_MS));
        // Forgotten, not merely hidden: verifying again starts a new period.
        assert!(!cache.contains(&fingerprint, T0_MS));
        cache.insert(fingerprint, T0_MS + CREDENTIALS_CACHED_MS);
        assert!(cache.contains(&fingerprint, T0_MS + CREDENTIALS_CACHED_MS + 1));
    }

    #[test]
    fn a_changed_account_matches_no_entry() {
        let cache = VerifiedCredentials::new();
        let fingerprint = cache.fingerprint(HEADER, "policy", "$argon2id$a").unwrap();
        cache.insert(fingerprint, T0_MS);
        let new_password = cache.fingerprint(HEADER, "policy", "$argon2id$b").unwrap();
        let new_name = cache.fingerprint(HEADER, "vcs", "$argon2id$a").unwrap();
        assert!(!cache.contains(&new_password, T0_MS));
        assert!(!cache.contains(&new_name, T0_MS));
    }

    #[test]
    fn entries_are_keyed_per_process_not_a_plain_hash() {
        let one = VerifiedCredentials::new();
        let other = VerifiedCredentials::new();
        let plain: [u8; 32] = {
            use sha2::Digest;
            Sha256::new().chain_update(HEADER).finalize().into()
        };
        let fingerprint = one.fingerprint(HEADER, "policy", "h").unwrap();
        assert_ne!(Some(fingerprint), other.fingerprint(HEADER, "policy", "h"));
        assert_ne!(fingerprint, plain);
    }

    #[test]
    fn a_full_cache_drops_its_oldest_entry() {
        let cache = VerifiedCredentials::new();
        let fingerprints: Vec<Fingerprint> = (0..=CREDENTIALS_CACHED_MAX)
            .map(|n| cache.fingerprint(&format!("header{n}"), "policy", "h").unwrap())
            .collect();
        for (n, fingerprint) in fingerprints.iter().enumerate() {
            cache.insert(*fingerprint, T0_MS + n as u64);
        }
        assert!(!cache.contains(&fingerprints[0], T0_MS + 100));
        assert!(fingerprints[1..].iter().all(|f| cache.contains(f, T0_MS + 100)));
    }
}

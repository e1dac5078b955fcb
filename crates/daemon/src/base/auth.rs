//! Administrator authentication: argon2id password hashes, HTTP Basic for automation, and
//! bearer-token sessions with an idle timeout for interactive use.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::collections::HashMap;
use std::sync::Mutex;

/// Name and password of the factory default account, as on the reference appliance. The
/// account is marked so that nothing but changing its password is allowed until that happens.
pub const FACTORY_ADMIN_NAME: &str = "admin";
pub const FACTORY_ADMIN_PASSWORD: &str = "TANDBERG";
pub const PASSWORD_LENGTH_MIN: usize = 10;
pub const PASSWORD_LENGTH_MAX: usize = 128;
/// Sessions end after this long without a request.
pub const SESSION_IDLE_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Open sessions kept; the least recently used is ended beyond this.
pub const SESSIONS_MAX: usize = 256;

/// Hashes a password with argon2id and a fresh random salt (slow on purpose: call it off the
/// async runtime).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt =
        crate::base::random::bytes::<16>().map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// SHA-512-crypt rounds for the root password: 20 times crypt's default, still well under a
/// second on the appliance.
pub const ROOT_PASSWORD_ROUNDS: usize = 100_000;
/// crypt(3)'s salt alphabet: exactly 64 characters, so a random byte's low six bits pick one
/// without bias.
const CRYPT_SALT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CRYPT_SALT_LENGTH: usize = 16;

/// The root password as the OS's crypt(3) reads it (`$6$rounds=…$salt$hash`, SHA-512-crypt):
/// the OS checks it at the console and over SSH, and libxcrypt cannot read argon2id.
pub fn hash_root_password(password: &str) -> Result<String, String> {
    let random = crate::base::random::bytes::<CRYPT_SALT_LENGTH>()
        .map_err(|error| format!("no randomness for a salt: {error}"))?;
    let salt: String =
        random.iter().map(|byte| char::from(CRYPT_SALT_ALPHABET[usize::from(byte & 63)])).collect();
    crypt_sha512(password, &salt, ROOT_PASSWORD_ROUNDS)
}

fn crypt_sha512(password: &str, salt: &str, rounds: usize) -> Result<String, String> {
    let params = sha_crypt::Sha512Params::new(rounds)
        .map_err(|error| format!("SHA-512-crypt rounds: {error:?}"))?;
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .map_err(|error| format!("SHA-512-crypt: {error:?}"))?;
    Ok(format!("$6$rounds={rounds}${salt}${hash}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    })
}

/// Why a new password is not acceptable, or `None`.
pub fn password_problem(password: &str) -> Option<String> {
    if password.chars().count() < PASSWORD_LENGTH_MIN {
        return Some(format!("must be at least {PASSWORD_LENGTH_MIN} characters"));
    }
    if password.len() > PASSWORD_LENGTH_MAX {
        return Some(format!("must be at most {PASSWORD_LENGTH_MAX} bytes"));
    }
    if password == FACTORY_ADMIN_PASSWORD {
        return Some("must not be the factory default password".to_owned());
    }
    if password.chars().any(char::is_control) {
        return Some("must not contain control characters".to_owned());
    }
    None
}

struct Session {
    user: String,
    last_used_ms: u64,
    /// Random per session; the web pages put it in every form and refuse a POST without it,
    /// so another site cannot make the operator's browser submit a change.
    csrf_token: String,
}

/// Open sessions by token. Tokens are 32 random bytes, hex-encoded.
#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn open(&self, user: &str, now_ms: u64) -> Option<String> {
        let token = crate::base::random::hex_token::<32>()?;
        let csrf_token = crate::base::random::hex_token::<32>()?;
        let mut sessions = self.by_token.lock().ok()?;
        sessions.retain(|_, session| {
            now_ms.saturating_sub(session.last_used_ms) < SESSION_IDLE_TIMEOUT_MS
        });
        if sessions.len() >= SESSIONS_MAX {
            let oldest =
                sessions.iter().min_by_key(|(_, s)| s.last_used_ms).map(|(token, _)| token.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token.clone(),
            Session { user: user.to_owned(), last_used_ms: now_ms, csrf_token },
        );
        Some(token)
    }

    /// The user of a live session, refreshing its idle timer.
    pub fn user(&self, token: &str, now_ms: u64) -> Option<String> {
        self.user_and_csrf(token, now_ms).map(|(user, _)| user)
    }

    /// The user and CSRF token of a live session, refreshing its idle timer.
    pub fn user_and_csrf(&self, token: &str, now_ms: u64) -> Option<(String, String)> {
        let mut sessions = self.by_token.lock().ok()?;
        let session = sessions.get_mut(token)?;
        if now_ms.saturating_sub(session.last_used_ms) >= SESSION_IDLE_TIMEOUT_MS {
            sessions.remove(token);
            return None;
        }
        session.last_used_ms = now_ms;
        Some((session.user.clone(), session.csrf_token.clone()))
    }

    pub fn close(&self, token: &str) {
        if let Ok(mut sessions) = self.by_token.lock() {
            sessions.remove(token);
        }
    }

    /// Ends every session of `user` (password changed elsewhere, account removed).
    pub fn close_user(&self, user: &str, except_token: Option<&str>) {
        if let Ok(mut sessions) = self.by_token.lock() {
            sessions.retain(|token, session| {
                session.user != user || Some(token.as_str()) == except_token
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_the_right_password() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn sessions_expire_when_idle_and_close_per_user() {
        let sessions = Sessions::default();
        let token = sessions.open("admin", 0).expect("token");
        assert_eq!(sessions.user(&token, SESSION_IDLE_TIMEOUT_MS - 1).as_deref(), Some("admin"));
        // The previous request refreshed the timer.
        assert_eq!(
            sessions.user(&token, 2 * SESSION_IDLE_TIMEOUT_MS - 2).as_deref(),
            Some("admin")
        );
        assert_eq!(sessions.user(&token, 4 * SESSION_IDLE_TIMEOUT_MS), None);
        let a = sessions.open("admin", 0).expect("token");
        let b = sessions.open("admin", 0).expect("token");
        sessions.close_user("admin", Some(&b));
        assert_eq!(sessions.user(&a, 1), None);
        assert_eq!(sessions.user(&b, 1).as_deref(), Some("admin"));
    }

    #[test]
    fn password_rules() {
        assert!(password_problem("short").is_some());
        assert!(password_problem(FACTORY_ADMIN_PASSWORD).is_some());
        assert!(password_problem("a much longer passphrase").is_none());
    }

    #[test]
    fn root_password_hash_matches_the_sha_crypt_reference_vector() {
        // From the SHA-crypt specification (the salt is cut to 16 characters).
        assert_eq!(
            crypt_sha512("Hello world!", "saltstringsaltst", 10_000).as_deref(),
            Ok(
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
            )
        );
        let hash = hash_root_password("correct horse").unwrap_or_default();
        assert!(hash.starts_with("$6$rounds=100000$"), "{hash}");
        let fresh = hash_root_password("correct horse").unwrap_or_default();
        assert_ne!(hash, fresh, "each hash has its own salt");
    }
}

//! Every argon2id password check and hash of the daemon, on ONE dedicated thread of lower
//! CPU priority ([`CHECKER_NICE`]), off the async workers. A check costs ~19 MiB and tens of
//! milliseconds of a core: on a 2-core appliance a login flood checking on both cores slowed
//! policy answers 77-fold (issue #19), so checks run one at a time, at a priority the
//! scheduler gives way from, and the policy path keeps a core. The thread reuses one block
//! buffer, never freed (freed buffers stay with glibc's per-thread arenas, so checks
//! allocating their own let a flood grow the daemon by gigabytes). More checks wait at most
//! [`CHECK_WAIT_MAX_MS`] (and at most [`CHECKS_WAITING_MAX`] wait), then are refused as
//! [`Busy`], so a flood costs neither memory nor the runtime's workers.
//!
//! The checker is process-wide: CPU and memory are the process's, whichever listener a check
//! came from.

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Password checks (and hashes) running at once: one, on the checker thread.
pub const CHECKS_IN_FLIGHT_MAX: usize = 1;
/// Checks waiting for a turn; more are refused at once.
pub const CHECKS_WAITING_MAX: usize = 64;
/// How long a check waits for a turn before it is refused.
pub const CHECK_WAIT_MAX_MS: u64 = 2_000;
/// The largest argon2 memory cost verified (KiB): a stored hash asking for more is refused
/// rather than allocated. The daemon's own hashes use argon2's default (19 MiB).
pub const MEMORY_COST_MAX_KIB: u32 = 64 * 1024;
/// Added to the daemon's nice value for the checker thread, so a flood of checks takes what
/// CPU the decisions leave.
pub const CHECKER_NICE: i32 = 10;
/// The lowest priority Linux has.
const NICE_LOWEST: i32 = 19;

/// Too many password checks at once: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again in a few seconds")]
pub struct Busy;

/// A job for the checker thread, given its block buffer.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

struct Pool {
    turns: Semaphore,
    waiting: AtomicUsize,
    /// The checker thread's queue; `None` when the thread could not be started.
    jobs: Option<SyncSender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(CHECKS_IN_FLIGHT_MAX);
        let thread =
            std::thread::Builder::new().name("baton-passwords".to_owned()).spawn(|| checker(queue));
        if let Err(error) = &thread {
            tracing::error!(%error, "cannot start the password checker; every login is refused");
        }
        Pool {
            turns: Semaphore::new(CHECKS_IN_FLIGHT_MAX),
            waiting: AtomicUsize::new(0),
            jobs: thread.ok().map(|_| jobs),
        }
    })
}

/// The checker thread: lowers its own priority, then runs the jobs one by one with the one
/// block buffer it keeps.
fn checker(queue: Receiver<Job>) {
    let thread = rustix::thread::gettid();
    // Relative to the daemon's own nice value (the thread starts with it); 19 is the lowest.
    let daemon_nice = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
    let nice = daemon_nice.saturating_add(CHECKER_NICE).min(NICE_LOWEST);
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::warn!(%error, "password checks keep the daemon's CPU priority");
    }
    let mut buffer = Vec::new();
    for job in queue {
        // A job that panicked answers nothing (its caller sees `Busy`); the thread goes on.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut buffer)));
        if ran.is_err() {
            tracing::error!("a password check panicked");
        }
    }
}

/// Runs `job` on the checker thread with its block buffer, once a turn is free.
async fn run<T: Send + 'static>(
    job: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, Busy> {
    let pool = pool();
    let jobs = pool.jobs.as_ref().ok_or(Busy)?;
    if pool.waiting.fetch_add(1, Ordering::SeqCst) >= CHECKS_WAITING_MAX {
        pool.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(Busy);
    }
    let turn =
        tokio::time::timeout(Duration::from_millis(CHECK_WAIT_MAX_MS), pool.turns.acquire()).await;
    pool.waiting.fetch_sub(1, Ordering::SeqCst);
    let Ok(Ok(_turn)) = turn else { return Err(Busy) };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |buffer| {
        let _ = answer.send(job(buffer));
    });
    // Never blocks a worker: a queue still full (a cancelled caller's job not yet run) is Busy.
    match jobs.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(Busy),
    }
    answered.await.map_err(|_| Busy)
}

/// Whether `password` matches the argon2 PHC string `hash`. An unparsable hash never matches.
pub async fn verify(password: String, hash: String) -> Result<bool, Busy> {
    run(move |buffer| verify_with(password.as_bytes(), &hash, buffer)).await
}

/// An argon2id hash of a new password, with a fresh salt.
pub async fn hash(password: String) -> Result<Result<String, argon2::password_hash::Error>, Busy> {
    run(move |_| crate::base::auth::hash_password(&password)).await
}

/// Verifies with the caller's block buffer (grown once to the hash's memory cost, then reused).
pub(crate) fn verify_with(password: &[u8], hash: &str, buffer: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed))
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    if params.m_cost() > MEMORY_COST_MAX_KIB {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    if buffer.len() < params.block_count() {
        buffer.resize(params.block_count(), Block::default());
    }
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let blocks = &mut buffer[..params.block_count()];
    if argon2.hash_password_into_with_memory(password, salt, &mut output, blocks).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&output).is_ok_and(|output| output == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reused_buffer_verifies_only_the_right_password() {
        let hash = crate::base::auth::hash_password("correct horse").expect("hash");
        let mut buffer = Vec::new();
        assert!(verify_with(b"correct horse", &hash, &mut buffer));
        let grown = buffer.len();
        assert!(!verify_with(b"wrong horse", &hash, &mut buffer));
        assert!(!verify_with(b"correct horse", "not a hash", &mut buffer));
        assert_eq!(buffer.len(), grown, "the buffer is reused, not re-grown");
    }

    #[tokio::test]
    async fn checks_run_at_a_lower_priority_than_the_daemon() {
        let own = rustix::process::getpriority_process(None).expect("own priority");
        let checker = run(|_| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .expect("a turn")
            .expect("the checker's priority");
        let expected = (own + CHECKER_NICE).min(NICE_LOWEST);
        assert_eq!(checker, expected, "the checker gives way to decisions");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn excess_checks_are_refused_not_queued_without_bound() {
        let hash = crate::base::auth::hash_password("correct horse").expect("hash");
        let checks: Vec<_> = (0..CHECKS_WAITING_MAX + 100)
            .map(|_| tokio::spawn(verify("wrong".to_owned(), hash.clone())))
            .collect();
        let mut busy = 0;
        for check in checks {
            if check.await.expect("join") == Err(Busy) {
                busy += 1;
            }
        }
        assert!(busy >= 20, "{busy} refused");
        assert_eq!(verify("correct horse".to_owned(), hash).await, Ok(true));
    }
}

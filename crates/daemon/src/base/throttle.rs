//! Login throttling, pure (the time is passed in): a short exponential back-off per (source
//! address, account) after a few failures, and a budget of attempts per source address and
//! window. Never a lock of the account itself: an attacker elsewhere cannot keep the real
//! administrator out, and from the same address the wait is at most [`WINDOW_MS`]. It also
//! decides which failures the Event Log gets one entry each for, and summarises the rest per
//! source and window, so a flood cannot push real entries out of the capped log.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failures in a row of one account from one address before the back-off starts.
pub const PAIR_FAILURES_FREE: u32 = 3;
/// The first back-off; each further failure doubles it, up to [`BACKOFF_MAX_MS`].
pub const BACKOFF_BASE_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 8_000;
/// The per-source window: attempts counted, failures summarised.
pub const WINDOW_MS: u64 = 60_000;
/// Failures one source may have per window; then its attempts wait for the next window. Only
/// failures count, so automation logging in on every request is never throttled; how many
/// checks run at once is bounded by `base::passwords`.
pub const SOURCE_FAILURES_PER_WINDOW: u32 = 30;
/// Failures per source and window with an Event Log entry each; the rest are summarised.
pub const FAILURES_JOURNALED_PER_WINDOW: u32 = 3;
/// Sources and (source, account) pairs remembered; the stalest is forgotten beyond this.
pub const TRACKED_MAX: usize = 4_096;
/// A pair with no failure for this long is forgotten.
pub const PAIR_FORGET_MS: u64 = 15 * 60 * 1000;

/// An attempt refused without checking the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_ms: u64,
}

/// Whether a failure gets its own Event Log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    Entry,
    Summarised,
}

/// A finished window in which a source failed more often than was journaled one by one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub source: IpAddr,
    /// Failed and refused attempts in the window.
    pub attempts: u32,
    pub window_ms: u64,
}

#[derive(Default)]
struct Pair {
    failures: u32,
    blocked_until_ms: u64,
    last_ms: u64,
}

struct Window {
    start_ms: u64,
    failures: u32,
    refused: u32,
    journaled: u32,
}

#[derive(Default)]
pub struct LoginThrottle {
    pairs: HashMap<(IpAddr, String), Pair>,
    sources: HashMap<IpAddr, Window>,
}

impl LoginThrottle {
    /// Admits an attempt, or says how long to wait.
    pub fn admit(&mut self, source: IpAddr, account: &str, now_ms: u64) -> Result<(), Throttled> {
        let window_end_ms = self.window(source, now_ms).start_ms + WINDOW_MS;
        // No key is built while no pair failed (every policy call's case).
        let pair_blocked_until_ms = if self.pairs.is_empty() {
            0
        } else {
            self.pairs.get(&(source, account.to_owned())).map_or(0, |pair| pair.blocked_until_ms)
        };
        let window = self.window(source, now_ms);
        let wait_until_ms = if window.failures >= SOURCE_FAILURES_PER_WINDOW {
            window_end_ms
        } else {
            pair_blocked_until_ms
        };
        if wait_until_ms > now_ms {
            window.refused += 1;
            return Err(Throttled { retry_after_ms: wait_until_ms - now_ms });
        }
        Ok(())
    }

    /// Records a wrong password: the pair's back-off grows.
    pub fn failed(&mut self, source: IpAddr, account: &str, now_ms: u64) -> Journal {
        if self.pairs.len() >= TRACKED_MAX && !self.pairs.contains_key(&(source, account.into())) {
            self.forget_stalest_pair();
        }
        let pair = self.pairs.entry((source, account.to_owned())).or_default();
        pair.failures += 1;
        pair.last_ms = now_ms;
        if pair.failures > PAIR_FAILURES_FREE {
            let doublings = (pair.failures - PAIR_FAILURES_FREE - 1).min(16);
            let backoff_ms = (BACKOFF_BASE_MS << doublings).min(BACKOFF_MAX_MS);
            pair.blocked_until_ms = now_ms + backoff_ms;
        }
        let window = self.window(source, now_ms);
        window.failures += 1;
        if window.journaled < FAILURES_JOURNALED_PER_WINDOW {
            window.journaled += 1;
            Journal::Entry
        } else {
            Journal::Summarised
        }
    }

    /// Records a right password: the pair starts afresh.
    pub fn succeeded(&mut self, source: IpAddr, account: &str) {
        // The usual case, and each policy call's: nothing to forget, no key to build.
        if self.pairs.is_empty() {
            return;
        }
        self.pairs.remove(&(source, account.to_owned()));
    }

    /// Closes the windows that ended, returning those to summarise; forgets stale pairs.
    pub fn sweep(&mut self, now_ms: u64) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.sources.retain(|source, window| {
            let open = now_ms < window.start_ms + WINDOW_MS;
            if !open && let Some(summary) = summary_of(*source, window) {
                summaries.push(summary);
            }
            open
        });
        self.pairs.retain(|_, pair| now_ms.saturating_sub(pair.last_ms) < PAIR_FORGET_MS);
        summaries
    }

    fn window(&mut self, source: IpAddr, now_ms: u64) -> &mut Window {
        if self.sources.len() >= TRACKED_MAX && !self.sources.contains_key(&source) {
            let stalest = self.sources.iter().min_by_key(|(_, w)| w.start_ms).map(|(s, _)| *s);
            if let Some(stalest) = stalest {
                self.sources.remove(&stalest);
            }
        }
        self.sources.entry(source).or_insert(Window {
            start_ms: now_ms,
            failures: 0,
            refused: 0,
            journaled: 0,
        })
    }

    fn forget_stalest_pair(&mut self) {
        let stalest =
            self.pairs.iter().min_by_key(|(_, pair)| pair.last_ms).map(|(k, _)| k.clone());
        if let Some(stalest) = stalest {
            self.pairs.remove(&stalest);
        }
    }
}

fn summary_of(source: IpAddr, window: &Window) -> Option<Summary> {
    let attempts = window.failures + window.refused;
    (attempts > window.journaled).then_some(Summary { source, attempts, window_ms: WINDOW_MS })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OPERATOR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn one_pair_backs_off_exponentially_and_a_success_resets_it() {
        let mut throttle = LoginThrottle::default();
        let mut now_ms = 0;
        for _ in 0..PAIR_FAILURES_FREE {
            assert_eq!(throttle.admit(ATTACKER, "admin", now_ms), Ok(()));
            throttle.failed(ATTACKER, "admin", now_ms);
        }
        let mut waits = Vec::new();
        for _ in 0..4 {
            assert_eq!(throttle.admit(ATTACKER, "admin", now_ms), Ok(()));
            throttle.failed(ATTACKER, "admin", now_ms);
            let Err(Throttled { retry_after_ms }) = throttle.admit(ATTACKER, "admin", now_ms)
            else {
                panic!("not throttled")
            };
            waits.push(retry_after_ms);
            now_ms += retry_after_ms;
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
        // The same account from elsewhere is not affected: no account lock.
        assert_eq!(throttle.admit(OPERATOR, "admin", now_ms - 1), Ok(()));
        throttle.succeeded(ATTACKER, "admin");
        assert_eq!(throttle.admit(ATTACKER, "admin", now_ms), Ok(()));
    }

    #[test]
    fn a_source_has_a_budget_per_window_and_its_flood_is_summarised() {
        let mut throttle = LoginThrottle::default();
        let mut journaled = 0;
        for attempt in 0..SOURCE_FAILURES_PER_WINDOW {
            let account = format!("guess{attempt}");
            assert_eq!(throttle.admit(ATTACKER, &account, 0), Ok(()));
            if throttle.failed(ATTACKER, &account, 0) == Journal::Entry {
                journaled += 1;
            }
        }
        assert_eq!(journaled, FAILURES_JOURNALED_PER_WINDOW);
        assert_eq!(
            throttle.admit(ATTACKER, "another", 10),
            Err(Throttled { retry_after_ms: WINDOW_MS - 10 })
        );
        assert_eq!(throttle.admit(OPERATOR, "admin", 10), Ok(()));
        throttle.succeeded(OPERATOR, "admin");
        assert_eq!(throttle.sweep(WINDOW_MS - 1), []);
        assert_eq!(
            throttle.sweep(WINDOW_MS),
            [Summary {
                source: ATTACKER,
                attempts: SOURCE_FAILURES_PER_WINDOW + 1,
                window_ms: WINDOW_MS
            }]
        );
        assert_eq!(throttle.admit(ATTACKER, "another", WINDOW_MS), Ok(()));
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut throttle = LoginThrottle::default();
        for index in 0..(TRACKED_MAX as u32 + 10) {
            let source = IpAddr::V6(std::net::Ipv6Addr::from(u128::from(index)));
            let _ = throttle.admit(source, "admin", u64::from(index));
            throttle.failed(source, "admin", u64::from(index));
        }
        assert!(throttle.sources.len() <= TRACKED_MAX);
        assert!(throttle.pairs.len() <= TRACKED_MAX);
    }
}

//! Every login path's throttle and its Event Log entries (API sessions, API Basic, the web
//! login, the policy service's Basic credentials): `base::throttle` decides, this journals.
//! A throttled attempt is refused before its password is checked.

use super::Error;
use crate::base::clock::now_ms;
use crate::base::journal::{self, EntryKind};
use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use crate::base::throttle::{self, Journal, LoginThrottle};
use crate::store::Writer;
use eventlog::Level;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The source of a request whose peer address is unknown (an in-process call).
pub const SOURCE_UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Which login path an attempt came by, as its Event Log entry says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    Api,
    Web,
    PolicyService,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Api => "API",
            Path::Web => "web",
            Path::PolicyService => "policy service",
        }
    }
}

/// How often an attempt closes the windows that ended (the summaries' task does too, every
/// quarter window): at most once a second, so neither each policy call nor each attempt of a
/// flood from thousands of sources walks every tracked source.
pub const SWEEP_INTERVAL_MS: u64 = 1_000;

pub struct Logins {
    throttle: Mutex<LoginThrottle>,
    writer: Writer,
    /// Wall-clock ms from which an attempt sweeps again.
    next_sweep_ms: AtomicU64,
}

impl Logins {
    pub fn new(writer: Writer) -> Arc<Logins> {
        Arc::new(Logins { throttle: Mutex::default(), writer, next_sweep_ms: AtomicU64::new(0) })
    }

    /// Admits an attempt of `account` from `source`, or refuses it as
    /// [`Error::LoginThrottled`] without checking anything.
    pub fn admit(&self, source: IpAddr, account: &str) -> Result<(), Error> {
        let now_ms = now_ms();
        let due_ms = self.next_sweep_ms.load(Ordering::Relaxed);
        // One of the attempts arriving together sweeps.
        let next_ms = now_ms + SWEEP_INTERVAL_MS;
        if now_ms >= due_ms
            && self
                .next_sweep_ms
                .compare_exchange(due_ms, next_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.journal_summaries(now_ms);
        }
        lock(&self.throttle)
            .admit(source, account, now_ms)
            .map_err(|throttled| Error::LoginThrottled { retry_after_ms: throttled.retry_after_ms })
    }

    /// Records a wrong user name or password: one Event Log entry, or counted in the source's
    /// summary once it failed often in the window.
    pub fn failed(&self, source: IpAddr, account: &str, path: Path) {
        if lock(&self.throttle).failed(source, account, now_ms()) == Journal::Entry {
            let message =
                format!("wrong user name or password ({} login from {source})", path.name());
            self.writer.journal(journal::entry(
                Level::Warning,
                EntryKind::LoginFailed,
                Some(account),
                message,
            ));
        }
    }

    pub fn succeeded(&self, source: IpAddr, account: &str) {
        lock(&self.throttle).succeeded(source, account);
    }

    /// One entry per source and window that failed more often than was journaled one by one.
    fn journal_summaries(&self, now_ms: u64) {
        let summaries = lock(&self.throttle).sweep(now_ms);
        for summary in summaries {
            let message = format!(
                "{} failed logins from {} in the last {} s",
                summary.attempts,
                summary.source,
                summary.window_ms / 1000
            );
            self.writer.journal(journal::entry(
                Level::Warning,
                EntryKind::LoginFailed,
                None,
                message,
            ));
        }
    }

    /// Writes the summaries of windows that ended even when no further attempt comes.
    pub fn spawn_summaries(self: &Arc<Logins>, tasks: &Tasks) {
        let (logins, stop) = (self.clone(), tasks.shutdown().clone());
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(throttle::WINDOW_MS / 4));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => logins.journal_summaries(now_ms()),
                }
            }
        });
    }
}

//! When the writer fsyncs the groups it committed without waiting for the disk (replicated
//! ones, see `Store::replicate_group`): once its queue runs dry, but at most once per
//! [`REPLICATED_SYNC_INTERVAL_MS`]. Each pushed group is still committed, and shown, as it
//! comes; one fsync covers every group of an interval. Syncing at every dry queue meant one
//! fsync per pushed group on every other peer, and on one disk each of those (its pages'
//! writeback and the device's cache flush) queues ahead of the origin's own: at 3 peers the
//! origin acknowledged 15% fewer changes per second (`cargo xtask bench cluster --peers 3`,
//! five alternating runs each: 2,627–2,922/s, against 3,123–3,304/s with the pacing).

use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest a replicated group waits for its fsync once the writer is idle: what a power cut
/// can take back of it here (its origin holds it durably, and the next summary asks again).
pub const REPLICATED_SYNC_INTERVAL_MS: u64 = 10;

pub(super) struct SyncPacing {
    last_sync: Option<Instant>,
    /// The writer is a plain thread: this waits for its queue with a deadline.
    timer: tokio::runtime::Runtime,
}

impl SyncPacing {
    pub(super) fn new() -> std::io::Result<SyncPacing> {
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        Ok(SyncPacing { last_sync: None, timer })
    }

    /// How long a sync due at `now` is held back: until the interval since the last one has
    /// passed. `None`: sync now.
    pub(super) fn hold(&self, now: Instant) -> Option<Duration> {
        let due = self.last_sync? + Duration::from_millis(REPLICATED_SYNC_INTERVAL_MS);
        due.checked_duration_since(now).filter(|hold| !hold.is_zero())
    }

    pub(super) fn synced(&mut self, at: Instant) {
        self.last_sync = Some(at);
    }

    /// The queue's next request if one comes within `hold` (`None` inside: the queue is
    /// closed); `None` once `hold` has passed without one.
    pub(super) fn next_within<T>(
        &self,
        requests: &mut mpsc::Receiver<T>,
        hold: Duration,
    ) -> Option<Option<T>> {
        // The timeout is made inside: its timer needs the runtime's context.
        self.timer.block_on(async { tokio::time::timeout(hold, requests.recv()).await }).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const INTERVAL: Duration = Duration::from_millis(REPLICATED_SYNC_INTERVAL_MS);

    // Goal: the first sync is never held; later ones only until an interval after the last.
    #[test]
    fn a_sync_is_held_only_within_an_interval_of_the_last() {
        let mut pacing = SyncPacing::new().unwrap();
        let start = Instant::now();
        assert_eq!(pacing.hold(start), None, "no sync yet");
        pacing.synced(start);
        assert_eq!(pacing.hold(start + INTERVAL / 4), Some(INTERVAL * 3 / 4));
        assert_eq!(pacing.hold(start + INTERVAL), None);
        assert_eq!(pacing.hold(start + INTERVAL * 3), None);
    }

    #[test]
    fn a_held_sync_gives_way_to_a_request_or_to_the_deadline() {
        let pacing = SyncPacing::new().unwrap();
        let (queue, mut requests) = mpsc::channel(4);
        queue.try_send(7).unwrap();
        assert_eq!(pacing.next_within(&mut requests, INTERVAL), Some(Some(7)));
        let waited = Instant::now();
        assert_eq!(pacing.next_within(&mut requests, INTERVAL), None, "nothing came");
        assert!(waited.elapsed() >= INTERVAL);
        drop(queue);
        assert_eq!(pacing.next_within(&mut requests, INTERVAL), Some(None), "closed");
    }
}

//! The syncer thread: makes the writer's local group commits durable, and only then answers
//! their authors and pushes their events to peers. The writer commits a group without waiting
//! for the disk and hands it here, so one group's fsync overlaps the deciding and writing of
//! the next, and one fsync covers every group handed over meanwhile. An acknowledgement still
//! means durable, and a peer never holds an event its origin could lose in a crash (that
//! origin would reuse the sequence number: a fork).
//!
//! A failed fsync is final: the groups it covered are committed but may not be on the disk
//! (Linux may have dropped their pages), so they are answered with
//! [`StoreError::NotDurable`], their events are not pushed, and the writer stops taking
//! changes (see `WriterThread::run`); a restart reads back what the disk really holds.

use super::{Outbound, StoreError};
use eventlog::StoredEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Groups handed over and not yet released, at most; the writer waits beyond (back-pressure).
pub(super) const SYNCER_QUEUE_MAX: usize = 64;

pub(super) type Reply = oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>;
type Handled = Result<Vec<StoredEvent>, StoreError>;

/// A group committed without its fsync: its authors' answers and its events for peers.
pub(super) struct UnsyncedGroup {
    pub replies: Vec<(Reply, Handled)>,
    pub pushes: Vec<Outbound>,
    /// False when the group wrote nothing (every change rejected or a no-op): it waits for the
    /// groups before it, whose effects its answers may rest on, but needs no fsync itself.
    pub wrote: bool,
}

enum Handed {
    Group(UnsyncedGroup),
    /// Answered once every group handed over before it is released.
    Barrier(std::sync::mpsc::SyncSender<()>),
}

/// The fsync of the log's write-ahead file (`eventlog::WalSync::sync`), injectable for tests.
pub(super) type SyncFn = Box<dyn FnMut() -> Result<(), eventlog::Error> + Send>;
/// Where released pushes go (the writer's outbound queue).
pub(super) type PushFn = Box<dyn FnMut(Vec<Outbound>) + Send>;

pub(super) struct Syncer {
    queue: Option<std::sync::mpsc::SyncSender<Handed>>,
    failed: Arc<AtomicBool>,
    /// Groups handed over, and released by the thread: equal when nothing is pending.
    handed: u64,
    released: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn spawn(sync: SyncFn, push: PushFn) -> std::io::Result<Syncer> {
        let (queue, handed) = std::sync::mpsc::sync_channel(SYNCER_QUEUE_MAX);
        let failed = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicU64::new(0));
        let counts = Counts { failed: Arc::clone(&failed), released: Arc::clone(&released) };
        let thread = std::thread::Builder::new()
            .name("baton-syncer".to_owned())
            .spawn(move || run(handed, sync, push, &counts))?;
        Ok(Syncer { queue: Some(queue), failed, handed: 0, released, thread: Some(thread) })
    }

    /// Hands a committed group over; waits while [`SYNCER_QUEUE_MAX`] groups are pending.
    pub(super) fn hand_over(&mut self, group: UnsyncedGroup) {
        // Only fails if the thread is gone: the dropped replies then tell their authors.
        if let Some(queue) = &self.queue
            && queue.send(Handed::Group(group)).is_ok()
        {
            self.handed += 1;
        }
    }

    /// Waits until every group handed over so far is released: before the log is read for
    /// peers, replaced, or closed. Free when none is pending (a peer that only replicates asks
    /// before every pushed group). Returns false if an fsync failed.
    pub(super) fn wait_released(&self) -> bool {
        if self.released.load(Ordering::Acquire) < self.handed {
            let (done_tx, done) = std::sync::mpsc::sync_channel(1);
            if let Some(queue) = &self.queue
                && queue.send(Handed::Barrier(done_tx)).is_ok()
            {
                let _ = done.recv();
            }
        }
        !self.has_failed()
    }

    /// Whether an fsync failed (see the module's documentation).
    pub(super) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The flag behind [`Syncer::has_failed`], for those who watch the writer from outside.
    pub(super) fn failure_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failed)
    }
}

impl Drop for Syncer {
    /// Releases what is pending before the writer goes.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the thread shares with its [`Syncer`].
struct Counts {
    failed: Arc<AtomicBool>,
    released: Arc<AtomicU64>,
}

fn run(
    handed: std::sync::mpsc::Receiver<Handed>,
    mut sync: SyncFn,
    mut push: PushFn,
    counts: &Counts,
) {
    while let Ok(first) = handed.recv() {
        let mut batch = vec![first];
        batch.extend(handed.try_iter().take(SYNCER_QUEUE_MAX));
        let synced = sync_batch(&batch, &mut sync, &counts.failed);
        for handed in batch {
            let group = matches!(handed, Handed::Group(_));
            release(handed, &synced, &mut push);
            if group {
                counts.released.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// One fsync for the whole batch, if any of its groups wrote; an error once one failed.
fn sync_batch(batch: &[Handed], sync: &mut SyncFn, failed: &AtomicBool) -> Result<(), String> {
    if failed.load(Ordering::Acquire) {
        return Err("an earlier fsync of the log failed".to_owned());
    }
    if !batch.iter().any(|handed| matches!(handed, Handed::Group(group) if group.wrote)) {
        return Ok(());
    }
    sync().map_err(|error| {
        failed.store(true, Ordering::Release);
        tracing::error!(
            %error,
            "the disk failed an fsync of the event log: changes may not be durable, so this \
             peer takes no more changes; restart batond to read back what the disk holds"
        );
        error.to_string()
    })
}

fn release(handed: Handed, synced: &Result<(), String>, push: &mut PushFn) {
    match handed {
        Handed::Barrier(done) => {
            let _ = done.send(());
        }
        Handed::Group(group) => {
            if let Err(cause) = synced {
                for (reply, handled) in group.replies {
                    // A rejection wrote nothing: it stands whatever the disk did.
                    let _ = reply.send(handled.and(Err(StoreError::NotDurable(cause.clone()))));
                }
                return;
            }
            push(group.pushes);
            for (reply, handled) in group.replies {
                let _ = reply.send(handled);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use model::{PeerId, Rejection};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    struct Harness {
        syncer: Syncer,
        syncs: Arc<AtomicU64>,
        pushed: Arc<Mutex<Vec<Outbound>>>,
    }

    /// A syncer whose fsyncs are counted, fail when `fail` says so, and wait for `gate`.
    fn harness(fail: bool, gate: Option<std::sync::mpsc::Receiver<()>>) -> Harness {
        let (syncs, pushed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (counted, gate) = (Arc::clone(&syncs), Mutex::new(gate));
        let sync: SyncFn = Box::new(move || {
            if let Some(gate) = &*gate.lock().unwrap() {
                gate.recv().unwrap();
            }
            counted.fetch_add(1, Ordering::SeqCst);
            if fail {
                let source = std::io::Error::other("injected EIO");
                return Err(eventlog::Error::Io { context: "syncing".to_owned(), source });
            }
            Ok(())
        });
        let sink = Arc::clone(&pushed);
        let push: PushFn = Box::new(move |messages| sink.lock().unwrap().extend(messages));
        Harness { syncer: Syncer::spawn(sync, push).unwrap(), syncs, pushed }
    }

    fn group(wrote: bool, handled: Handled) -> (UnsyncedGroup, oneshot::Receiver<Handled>) {
        let (reply, answer) = oneshot::channel();
        let summary = replication::Message::Summary { heads: Default::default() };
        let pushes = vec![(PeerId([7; 16]), summary)];
        (UnsyncedGroup { replies: vec![(reply, handled)], pushes, wrote }, answer)
    }

    // Goal: no author is answered and no event leaves before the fsync that covers its group,
    // and groups handed over while an fsync runs share the next one.
    #[test]
    fn answers_and_pushes_wait_for_the_fsync_that_covers_them() {
        let (open_gate, gate) = std::sync::mpsc::channel();
        let mut h = harness(false, Some(gate));
        let (first, mut first_answer) = group(true, Ok(Vec::new()));
        h.syncer.hand_over(first);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (second, mut second_answer) = group(true, Ok(Vec::new()));
        let (third, mut third_answer) = group(true, Ok(Vec::new()));
        h.syncer.hand_over(second);
        h.syncer.hand_over(third);
        assert!(first_answer.try_recv().is_err(), "answered before its fsync");
        assert!(h.pushed.lock().unwrap().is_empty(), "pushed before its fsync");

        open_gate.send(()).unwrap();
        open_gate.send(()).unwrap();
        assert!(h.syncer.wait_released());
        for answer in [&mut first_answer, &mut second_answer, &mut third_answer] {
            assert!(answer.try_recv().unwrap().is_ok());
        }
        assert_eq!(h.syncs.load(Ordering::SeqCst), 2, "the two later groups shared an fsync");
        assert_eq!(h.pushed.lock().unwrap().len(), 3);
    }

    // Goal: a group that wrote nothing costs no fsync, and a rejection is answered as one.
    #[test]
    fn a_group_that_wrote_nothing_needs_no_fsync() {
        let mut h = harness(false, None);
        let rejection = Rejection::Forbidden { reason: "refused".to_owned() };
        let (rejected, answer) = group(false, Err(StoreError::Rejected(rejection)));
        h.syncer.hand_over(rejected);
        assert!(h.syncer.wait_released());
        assert!(matches!(answer.blocking_recv().unwrap(), Err(StoreError::Rejected(_))));
        assert_eq!(h.syncs.load(Ordering::SeqCst), 0);
    }

    // Goal: after a failed fsync, the groups it covered and every later one are answered as
    // not durable, none of their events reaches a peer, and no fsync is tried again (it could
    // succeed without the lost pages).
    #[test]
    fn a_failed_fsync_answers_not_durable_and_pushes_nothing() {
        let mut h = harness(true, None);
        let (first, first_answer) = group(true, Ok(Vec::new()));
        h.syncer.hand_over(first);
        assert!(!h.syncer.wait_released(), "the failure is reported");
        let (later, later_answer) = group(true, Ok(Vec::new()));
        h.syncer.hand_over(later);
        assert!(!h.syncer.wait_released());

        for answer in [first_answer, later_answer] {
            assert!(matches!(answer.blocking_recv().unwrap(), Err(StoreError::NotDurable(_))));
        }
        assert!(h.pushed.lock().unwrap().is_empty());
        assert_eq!(h.syncs.load(Ordering::SeqCst), 1);
        assert!(h.syncer.has_failed());
    }
}

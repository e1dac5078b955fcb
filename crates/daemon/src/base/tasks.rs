//! The daemon's background tasks: every one is spawned through [`Tasks`], so shutdown can
//! cancel them all and wait until they have ended, bounded by a named timeout, instead of
//! hoping each drops what it holds.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for the background tasks once they are told to stop.
pub const TASKS_STOP_TIMEOUT_MS: u64 = 5_000;

/// Spawns and tracks the daemon's tasks; they watch [`Tasks::shutdown`] to stop.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The daemon's runtime, where every task runs wherever it is spawned from: a request
    /// served on a listener thread's own runtime may start work that must outlive that
    /// thread, which ends at shutdown before the tasks are stopped.
    runtime: tokio::runtime::Handle,
}

impl Tasks {
    /// Must be called on the daemon's runtime.
    pub fn new(shutdown: CancellationToken) -> Tasks {
        Tasks { tracker: TaskTracker::new(), shutdown, runtime: tokio::runtime::Handle::current() }
    }

    /// Cancelled when the daemon stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task` on the daemon's runtime, tracked.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, &self.runtime)
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels every task and waits until they have ended, at most `timeout_ms`. Returns how
    /// many were still running when the wait gave up (0: all stopped).
    pub async fn stop(&self, timeout_ms: u64) -> usize {
        self.shutdown.cancel();
        self.tracker.close();
        let waited =
            tokio::time::timeout(Duration::from_millis(timeout_ms), self.tracker.wait()).await;
        if waited.is_ok() { 0 } else { self.tracker.len() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::Tasks;
    use tokio_util::sync::CancellationToken;

    // Goal: stopping cancels the tasks that watch the token and waits for them; a task that
    // ignores it is reported, not waited for forever.
    #[tokio::test]
    async fn stop_waits_for_the_tasks_and_reports_one_that_does_not_end() {
        let tasks = Tasks::new(CancellationToken::new());
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (token, done) = (tasks.shutdown().clone(), finished.clone());
        tasks.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(tasks.stop(1_000).await, 0);
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));

        let stubborn = Tasks::new(CancellationToken::new());
        stubborn.spawn(std::future::pending::<()>());
        assert_eq!(stubborn.stop(50).await, 1);
    }

    // Goal: a task spawned from another runtime's thread (a listener's) runs on the daemon's
    // runtime, so it outlives that thread and its runtime, and is still stopped with the rest.
    #[tokio::test]
    async fn a_task_spawned_from_a_listener_thread_outlives_it_and_stops_with_the_daemon() {
        let tasks = Tasks::new(CancellationToken::new());
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        let spawner = tasks.clone();
        std::thread::spawn(move || {
            let listener = tokio::runtime::Builder::new_current_thread().enable_all().build();
            listener.unwrap().block_on(async move {
                let token = spawner.shutdown().clone();
                spawner.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let _ = started_tx.send(std::thread::current().id());
                    token.cancelled().await;
                    drop(stopped_tx);
                });
            });
        })
        .join()
        .unwrap();
        let thread = started.await.expect("the task ran after its spawner's runtime ended");
        assert_eq!(thread, std::thread::current().id(), "it ran on the daemon's runtime");
        assert_eq!(tasks.stop(1_000).await, 0);
        assert!(stopped.await.is_err(), "the task ended at the stop");
    }
}

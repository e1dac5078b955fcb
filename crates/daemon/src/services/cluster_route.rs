//! Puts the writer's replication messages on the peers' links, pipelined: a push leaves as
//! soon as its commit returned, never waiting for an acknowledgement or a summary tick. The
//! queues on the way are bounded, so a peer that cannot keep up does lose pushes, but never
//! silently: a push dropped because its link's queue (or the writer's outbound queue) is full
//! marks that peer behind, and as soon as its link has room again the writer starts a
//! catch-up round with it (`Writer::resync`), which streams what it lacks from the log in
//! large batches. Until then its later pushes are dropped too: they could only find a gap.

use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use crate::store::{Outbound, Writer};
use model::PeerId;
use peering::Frame;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where frames for each peer go: its dialled link's queue.
pub type Routes = Mutex<HashMap<PeerId, mpsc::Sender<Frame>>>;

/// Routes the writer's output until shutdown (or until the writer is gone).
pub struct Router {
    pub writer: Writer,
    pub routes: Arc<Routes>,
    pub tasks: Tasks,
    /// Peers behind: pushes to them were dropped and their catch-up is not yet asked for.
    pub behind: Arc<Mutex<HashSet<PeerId>>>,
    /// Pushes dropped on a full link queue, over the daemon's life.
    pub dropped: Arc<AtomicU64>,
}

impl Router {
    pub fn new(writer: Writer, routes: Arc<Routes>, tasks: Tasks) -> Router {
        Router { writer, routes, tasks, behind: Arc::default(), dropped: Arc::default() }
    }

    pub async fn run(self, mut outbound: mpsc::Receiver<Outbound>, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = outbound.recv() => next,
            };
            let Some((to, message)) = next else { return };
            // Pushes the writer could not even queue (its outbound queue was full).
            for peer in self.writer.take_lost_pushes() {
                self.fall_behind(peer);
            }
            self.forward(to, message);
        }
    }

    fn forward(&self, to: PeerId, message: replication::Message) {
        let Some(link) = lock(&self.routes).get(&to).cloned() else { return };
        if lock(&self.behind).contains(&to) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bytes = match message.encode() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "replication message not sent");
                return;
            }
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = link.try_send(Frame::Replication(bytes)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.fall_behind(to);
        }
    }

    /// Marks `peer` behind and, once its link has room again, has the writer catch it up.
    fn fall_behind(&self, peer: PeerId) {
        if !lock(&self.behind).insert(peer) {
            return; // its catch-up is already waiting for room
        }
        tracing::info!(
            %peer, dropped_total = self.dropped.load(Ordering::Relaxed),
            "replication pushes dropped (the peer's queue is full); catching it up from the log"
        );
        let link = lock(&self.routes).get(&peer).cloned();
        let (writer, behind) = (self.writer.clone(), self.behind.clone());
        self.tasks.spawn(async move {
            // Room for the catch-up round's first message; a closed link needs none (the next
            // link starts with a summary round anyway).
            if let Some(link) = link {
                let _ = link.reserve().await;
            }
            // Unmarked first: a push dropped from now on is covered by a later round.
            lock(&behind).remove(&peer);
            let _ = writer.resync(peer).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{DATABASE_FILE, Store};
    use model::{Command, RecordKind};
    use std::time::Duration;

    /// More pushes than fit in the writer's outbound queue or in the link's.
    const BURST_CHANGES: usize = 40;
    const OUTBOUND_QUEUE: usize = 4;
    const LINK_QUEUE: usize = 2;
    /// Far shorter than a summary interval: only the push and catch-up path can deliver.
    const DELIVERY_TIMEOUT_MS: u64 = 5_000;

    struct Peer {
        writer: Writer,
        outbound: mpsc::Receiver<Outbound>,
        _dir: tempfile::TempDir,
    }

    fn peer(outbound_queue: usize) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
        let (outbound_tx, outbound) = mpsc::channel(outbound_queue);
        let (writer, _thread) = Writer::spawn(store, outbound_tx).unwrap();
        Peer { writer, outbound, _dir: dir }
    }

    /// Hands each frame of a link to the receiving peer's writer, as an accepted link does.
    async fn deliver(mut link: mpsc::Receiver<Frame>, from: PeerId, to: Writer) {
        while let Some(Frame::Replication(bytes)) = link.recv().await {
            let message = replication::Message::decode(&bytes).unwrap();
            let _ = to.replicate(from, message).await;
        }
    }

    /// Writes a burst on A while its router or its link to B is stalled, then lets them run,
    /// with no summary tick at all: B must end up with every change.
    async fn burst_reaches_the_peer(router_runs_during_the_burst: bool) {
        let (a, mut b) = (peer(OUTBOUND_QUEUE), peer(1_024));
        let (a_id, b_id) = (a.writer.peer_id(), b.writer.peer_id());
        a.writer.set_replication_peers(vec![b_id]).await.unwrap();
        b.writer.set_replication_peers(vec![a_id]).await.unwrap();
        let (link_tx, link_rx) = mpsc::channel(LINK_QUEUE);
        let routes = Arc::new(Routes::default());
        lock(&routes).insert(b_id, link_tx);
        let tasks = Tasks::new(CancellationToken::new());
        let router = Router::new(a.writer.clone(), routes, tasks.clone());
        let dropped = router.dropped.clone();
        let mut run = Some(router.run(a.outbound, tasks.shutdown().clone()));
        if router_runs_during_the_burst {
            tasks.spawn(run.take().unwrap());
        }
        for index in 0..BURST_CHANGES {
            let command = Command::Create(crate::store::tests::bridge(&format!("b{index}")));
            a.writer.execute("admin", command, 1_000 + index as u64).await.unwrap();
        }
        if let Some(run) = run {
            tasks.spawn(run);
        }
        // B's answers go straight to A's writer (B's own link is not what is tested here).
        let a_writer = a.writer.clone();
        tasks.spawn(async move {
            while let Some((_, message)) = b.outbound.recv().await {
                let _ = a_writer.replicate(b_id, message).await;
            }
        });
        tasks.spawn(deliver(link_rx, a_id, b.writer.clone()));

        let mut state = b.writer.state_watch();
        let all_there =
            state.wait_for(|state| state.list(RecordKind::Bridge).count() == BURST_CHANGES);
        let waited =
            tokio::time::timeout(Duration::from_millis(DELIVERY_TIMEOUT_MS), all_there).await;
        let held = b.writer.state_watch().borrow().list(RecordKind::Bridge).count();
        assert!(waited.is_ok(), "B holds {held} of {BURST_CHANGES} changes without a tick");
        if router_runs_during_the_burst {
            assert!(dropped.load(Ordering::Relaxed) > 0, "the link queue never overflowed");
        }
        tasks.shutdown().cancel();
    }

    // Goal: pushes lost to a full link queue are streamed from the log at once, not left to
    // the next summary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_larger_than_the_link_queue_reaches_the_peer_without_a_tick() {
        burst_reaches_the_peer(true).await;
    }

    // Goal: the same when the writer's own outbound queue overflowed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_larger_than_the_outbound_queue_reaches_the_peer_without_a_tick() {
        burst_reaches_the_peer(false).await;
    }
}

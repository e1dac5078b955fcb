//! The state folded from the log when a store opens (at start-up, after a snapshot; with no
//! snapshot, from the first event), in the projections' catch-up pass: each event is read and
//! decoded once for both. The fold runs on a thread of its own while the pass reads and
//! projects the next batch: in a restore of 10^6 events it was 8.6% of the time, spent on
//! the thread that also reads and writes the projections. A restore's staging folds the same
//! way from the events it copies (`super::staging`).

use super::StoreError;
use eventlog::{EventLog, StoredEvent};
use model::licence_migration::LicenceMigration;
use model::{Event, Stamp, State};

/// What a fold has reached.
pub(super) struct Fold {
    pub state: State,
    /// Fed with every event when the fold starts from the first one, sparing the licence
    /// migration its own scan.
    pub licence: Option<LicenceMigration>,
    /// The last event folded (the snapshot's, if none was).
    pub position: u64,
    pub replayed: u64,
}

impl Fold {
    /// Folds every batch `received` until its sender is dropped.
    pub(super) fn fold_all(
        mut self,
        received: std::sync::mpsc::Receiver<(Vec<StoredEvent>, Vec<Event>)>,
    ) -> Fold {
        for (stored, events) in received {
            self.batch(&stored, &events);
        }
        self
    }

    fn batch(&mut self, stored: &[StoredEvent], events: &[Event]) {
        for (stored, event) in stored.iter().zip(events) {
            let stamp = Stamp { hlc: stored.hlc, origin: stored.origin };
            let in_its_stream = stored.in_its_stream(event);
            if in_its_stream {
                self.state.apply(stamp, event);
            }
            if let Some(licence) = &mut self.licence {
                licence.note(stamp, event, in_its_stream);
            }
            self.position = stored.position;
            self.replayed += 1;
        }
    }
}

/// Batches handed to the fold's thread and not folded yet, at most: each is a catch-up batch
/// of up to 20,000 events, so one keeps the pass busy without a long history in memory.
pub(super) const FOLD_QUEUE_BATCHES: usize = 1;

/// Catches up the projections of `log` and folds the events after `fold.position` into
/// `fold` in the same pass. Returns how many events the projections applied, and the fold.
pub(super) fn catch_up_folding(log: &mut EventLog, fold: Fold) -> Result<(u64, Fold), StoreError> {
    let fold_after = fold.position;
    let (applied, fold) = folding_alongside(fold, |visit| {
        projections::catch_up_visiting(log.connection_mut(), fold_after, visit)
    })
    .map_err(|error| StoreError::NoThread(error.to_string()))?;
    Ok((applied?, fold))
}

/// Runs `body` with a `visit` that hands each batch of decoded events to `fold` on a thread
/// of its own, so they are folded while `body` reads and writes the next; returns what
/// `body` returned and the fold once every batch is folded.
pub(super) fn folding_alongside<T>(
    fold: Fold,
    body: impl FnOnce(&mut dyn FnMut(Vec<StoredEvent>, Vec<Event>)) -> T,
) -> std::io::Result<(T, Fold)> {
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel(FOLD_QUEUE_BATCHES);
        let folder = std::thread::Builder::new()
            .name("baton-fold".to_owned())
            .spawn_scoped(scope, move || fold.fold_all(received))?;
        // Fails only when the fold's thread is gone, which its join reports.
        let result = body(&mut |stored, events| {
            let _ = batches.send((stored, events));
        });
        // The fold ends with the last batch once its sender is gone.
        drop(batches);
        let fold = folder.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((result, fold))
    })
}

//! Acting on `policy::overbooking`: when the replicated conference table shows a bridge over its
//! capacity (peers that decided from their own replicas at the same moment), this peer moves
//! or ends the losing conferences it created, and writes an Event Log entry for each. Every
//! peer computes the same losers and each acts only on its own, so exactly one peer acts on a
//! conference and no coordinator is needed.

use super::{ConferenceSpec, PolicyService};
use crate::base::journal::{EntryKind, entry};
use model::record::{Bridge, Conference};
use model::{Command, Record, RecordKey, RecordKind};
use policy::Engine;
use policy::overbooking::{Overbooked, Settlement};
use std::sync::Arc;
use std::time::Duration;

/// How often the check runs besides after every change of the state (a settlement whose
/// bridge calls failed is tried again then).
pub const OVERBOOKING_RECHECK_MS: u64 = 5_000;
/// Checks are at least this far apart: changes in between are looked at together (the check
/// walks every conference, and a busy peer changes its state many times a second).
pub const OVERBOOKING_CHECK_SPACING_MS: u64 = 250;

impl PolicyService {
    /// Settles overbooked bridges after changes of the state (at most every
    /// [`OVERBOOKING_CHECK_SPACING_MS`]) and every [`OVERBOOKING_RECHECK_MS`], until
    /// shutdown; one settlement at a time.
    pub fn spawn_overbooking_settlement(self: &Arc<Self>, tasks: &crate::base::tasks::Tasks) {
        let service = self.clone();
        let mut state = self.state.clone();
        let shutdown = tasks.shutdown().clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(OVERBOOKING_RECHECK_MS));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                    changed = state.changed() => if changed.is_err() { return },
                }
                service.settle_overbooking().await;
                let spacing = Duration::from_millis(OVERBOOKING_CHECK_SPACING_MS);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(spacing) => {}
                }
            }
        });
    }

    /// Moves or ends each losing conference this peer created, per the settling rule.
    async fn settle_overbooking(&self) {
        let engine = self.engine();
        let health =
            |name: &str| engine.bridge(name).is_some_and(|bridge| self.health.is_up(bridge));
        let me = self.writer.peer_id().to_hex();
        for overbooked in policy::overbooking::overbooked(&engine, &health) {
            if overbooked.created_by == me {
                self.settle(&engine, &overbooked).await;
            }
        }
    }

    async fn settle(&self, engine: &Engine, overbooked: &Overbooked) {
        let key = RecordKey { kind: RecordKind::Conference, name: overbooked.conference.clone() };
        let (Some(Record::Conference(conference)), Some(from)) =
            (engine.state().get(&key), engine.bridge(&overbooked.bridge))
        else {
            return;
        };
        let why = format!(
            "bridge {} was booked beyond its capacity ({} ports reserved of {}) by peers deciding \
             at the same moment, and conference {:?} was placed there last",
            from.name, overbooked.reserved_ports, overbooked.capacity_ports, conference.name
        );
        if let Settlement::Move { bridge: to } = &overbooked.settlement {
            match self.move_to(engine, conference, from, to).await {
                Ok(()) => {
                    let message = format!("{why}: moved to bridge {to}");
                    self.journal_settlement(
                        eventlog::Level::Warning,
                        EntryKind::ConferenceMoved,
                        message,
                    );
                    return;
                }
                Err(problem) => {
                    tracing::warn!(conference = %conference.name, %to, %problem, "could not move an overbooked conference; ending it");
                }
            }
        }
        if let Err(problem) = self.host.destroy(from, &conference.bridge_conference_id).await {
            tracing::warn!(conference = %conference.name, bridge = %from.name, %problem, "could not end an overbooked conference; trying again later");
            return;
        }
        self.forget(&conference.name, "refused: its bridge was overbooked").await;
        let message = format!("{why}: no bridge of its pools had room, so it was ended");
        self.journal_settlement(eventlog::Level::Warning, EntryKind::ConferenceRefused, message);
    }

    /// Creates `conference` on bridge `to`, records it there, then ends it on `from`.
    async fn move_to(
        &self,
        engine: &Engine,
        conference: &Conference,
        from: &Bridge,
        to: &str,
    ) -> Result<(), String> {
        let template = engine.template(&conference.template).ok_or("its template is gone")?;
        let bridge = engine.bridge(to).ok_or("the bridge is gone")?;
        let ports = Engine::ports_needed(template);
        // Counted with this peer's first calls in flight, so a move cannot overbook `to`.
        let _reservation = self.reserve(to, ports).ok_or("no ports left once reserved")?;
        let spec = ConferenceSpec::new(&conference.name, template);
        let deadline = Duration::from_millis(policy::DECISION_DEADLINE_MS);
        let id = match tokio::time::timeout(deadline, self.create_on(bridge, &spec)).await {
            Ok(Ok(id)) => id,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("no answer before the deadline".to_owned()),
        };
        let moved = Record::Conference(Conference {
            bridge: to.to_owned(),
            bridge_conference_id: id,
            ..conference.clone()
        });
        self.writer
            .execute("policy-service", Command::Save(moved), crate::base::clock::now_ms())
            .await
            .map_err(|error| format!("created on {to} but not recorded: {error}"))?;
        // Once recorded elsewhere, the copy left behind (if this fails) is the kind the
        // cleanup ends once it is empty.
        if let Err(error) = self.host.destroy(from, &conference.bridge_conference_id).await {
            tracing::warn!(conference = %conference.name, bridge = %from.name, %error, "moved, but not yet ended on the overbooked bridge");
        }
        Ok(())
    }

    fn journal_settlement(&self, level: eventlog::Level, kind: EntryKind, message: String) {
        tracing::warn!(%message, "overbooked bridge settled");
        self.writer.journal(entry(level, kind, Some("policy-service"), message));
    }
}

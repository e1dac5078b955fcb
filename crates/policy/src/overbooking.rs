//! Settling a bridge that peers overbooked together. Each peer reserves ports from its own
//! replica, so two peers deciding in the same window (a bridge's create plus one replication
//! hop, or a whole partition) can both place a conference on a bridge's last ports. Once the
//! replicated conference table shows a bridge over its capacity, every peer computes the same
//! losers from the same state, with no coordinator: the bridge's conferences in creation order
//! (their records' stamps: HLC, then origin peer) keep their ports while they fit, and every
//! conference from the first that does not fit on is a loser. A loser is moved to another
//! bridge of its template's pools with room (as a first call would choose, counting the
//! losers already placed), or refused (ended) when none has room. Only the peer that created a
//! loser acts on it (the daemon), so exactly one peer does.
//!
//! Which conferences lose depends only on the state; where a loser goes also depends on the
//! acting peer's view of bridge health, which only that peer needs.

use crate::decide::{BridgeHealth, Engine, PORTS_RESERVED_WITHOUT_LIMIT, key, template};
use model::record::{Bridge, Conference};
use model::{Record, RecordKind, Stamp};
use std::collections::{BTreeMap, HashMap};

/// A conference that must leave its overbooked bridge, and where to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Overbooked {
    pub conference: String,
    /// The overbooked bridge it is on now.
    pub bridge: String,
    /// The peer (id in hex) that created it: the one that acts.
    pub created_by: String,
    /// The bridge's capacity and the ports its conferences reserve, for the Event Log.
    pub capacity_ports: u32,
    pub reserved_ports: u32,
    pub settlement: Settlement,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Settlement {
    /// Create it on `bridge` (which has room), then end it on the overbooked one.
    Move { bridge: String },
    /// No bridge of its pools has room: end it.
    Refuse,
}

/// A conference on a bridge as the rule sees it.
struct Placed<'a> {
    stamp: Stamp,
    conference: &'a Conference,
    ports: u32,
}

/// Every conference that must leave an overbooked bridge in `engine`'s state, oldest first.
pub fn overbooked(engine: &Engine, health: &dyn BridgeHealth) -> Vec<Overbooked> {
    // The common case, from the engine's own counts: nothing to order.
    let any_overbooked = engine.state().list(RecordKind::Bridge).any(|record| {
        matches!(record, Record::Bridge(bridge) if engine.reserved_ports(&bridge.name) > bridge.capacity_ports)
    });
    if !any_overbooked {
        return Vec::new();
    }
    let losers = losers(engine);
    if losers.is_empty() {
        return Vec::new();
    }
    // Ports reserved per bridge once the losers have left, plus those placed elsewhere.
    let mut reserved: HashMap<String, u32> = HashMap::new();
    for placed in placed_by_bridge(engine).values().flatten() {
        *reserved.entry(placed.conference.bridge.clone()).or_default() += placed.ports;
    }
    for (loser, _, _) in &losers {
        if let Some(ports) = reserved.get_mut(&loser.conference.bridge) {
            *ports = ports.saturating_sub(loser.ports);
        }
    }
    let mut settled = Vec::with_capacity(losers.len());
    for (loser, capacity_ports, reserved_ports) in losers {
        let settlement = match destination(engine, &loser, health, &reserved) {
            Some(bridge) => {
                *reserved.entry(bridge.clone()).or_default() += loser.ports;
                Settlement::Move { bridge }
            }
            None => Settlement::Refuse,
        };
        settled.push(Overbooked {
            conference: loser.conference.name.clone(),
            bridge: loser.conference.bridge.clone(),
            created_by: loser.conference.created_by.clone(),
            capacity_ports,
            reserved_ports,
            settlement,
        });
    }
    settled
}

/// The conferences beyond their bridge's capacity in creation order, each with its bridge's
/// capacity and reserved ports; all of them in creation order across bridges.
fn losers(engine: &Engine) -> Vec<(Placed<'_>, u32, u32)> {
    let mut losers = Vec::new();
    for (bridge_name, mut placed) in placed_by_bridge(engine) {
        let Some(bridge) = engine.bridge(bridge_name) else { continue };
        let reserved_ports: u32 = placed.iter().map(|p| p.ports).sum();
        if reserved_ports <= bridge.capacity_ports {
            continue;
        }
        placed.sort_by_key(|p| p.stamp);
        let mut kept_ports = 0u32;
        let mut beyond = false;
        for conference in placed {
            beyond = beyond || kept_ports.saturating_add(conference.ports) > bridge.capacity_ports;
            if beyond {
                losers.push((conference, bridge.capacity_ports, reserved_ports));
            } else {
                kept_ports += conference.ports;
            }
        }
    }
    losers.sort_by_key(|(placed, _, _)| placed.stamp);
    losers
}

/// Every recorded conference by bridge name, with its stamp and the ports it reserves.
fn placed_by_bridge(engine: &Engine) -> BTreeMap<&str, Vec<Placed<'_>>> {
    let state = engine.state();
    let mut by_bridge: BTreeMap<&str, Vec<Placed<'_>>> = BTreeMap::new();
    for record in state.list(RecordKind::Conference) {
        let Record::Conference(conference) = record else { continue };
        let Some(slot) = state.slot(&key(RecordKind::Conference, &conference.name)) else {
            continue;
        };
        let ports = template(state, &conference.template)
            .map_or(PORTS_RESERVED_WITHOUT_LIMIT, Engine::ports_needed);
        by_bridge.entry(conference.bridge.as_str()).or_default().push(Placed {
            stamp: slot.stamp,
            conference,
            ports,
        });
    }
    by_bridge
}

/// The bridge a first call for `loser` would now be created on, its own bridge excluded.
fn destination(
    engine: &Engine,
    loser: &Placed<'_>,
    health: &dyn BridgeHealth,
    reserved: &HashMap<String, u32>,
) -> Option<String> {
    let template = template(engine.state(), &loser.conference.template)?;
    let free_ports = |bridge: &Bridge| {
        let used = reserved.get(&bridge.name).copied().unwrap_or(0);
        bridge.capacity_ports.saturating_sub(used)
    };
    let (candidates, _) =
        engine.candidates(&template.service_preference, loser.ports, health, &free_ports);
    candidates.into_iter().find(|name| *name != loser.conference.bridge)
}

#[cfg(test)]
mod tests;

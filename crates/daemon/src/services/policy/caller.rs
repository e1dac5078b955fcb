//! What a VCS's kept connection remembers between its calls, so that a call to a conference
//! that exists costs a lookup rather than a decision, and proven credentials cost a comparison
//! rather than a keyed hash and the login throttle's locks. A VCS sends each participant of a
//! conference through the same few kept connections, with the same credentials each time.
//!
//! Nothing remembered outlives what it was decided on: all of it is forgotten when the
//! published state changes (the account, an alias, a conference or a bridge may have), and the
//! routes also when this peer's view of bridge health changes. The maintenance refusal, which
//! also depends on the time, is still checked on every call.

use super::PolicyService;
use crate::services::policy_credentials::CREDENTIALS_CACHED_MS;
use bytes::Bytes;
use model::State;
use policy::{Decision, Engine, PolicyRequest, PolicyType};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

/// Routes one connection remembers; past it they are all forgotten and remembered afresh.
pub const ROUTES_REMEMBERED_MAX: usize = 64;

/// A call's answer: its decision (for the metrics and the log) and its CPL.
#[derive(Clone, Debug)]
pub struct Answer {
    pub decision: Arc<Decision>,
    pub cpl: Bytes,
}

impl Answer {
    pub fn of(decision: Decision) -> Answer {
        let cpl = Bytes::from(policy::cpl::answer(&decision));
        Answer { decision: Arc::new(decision), cpl }
    }
}

/// One connection's memory (see the module's doc); made by [`PolicyService::caller`].
pub struct Caller {
    /// Tells, with one load, whether the state changed since `engine` was taken.
    state: watch::Receiver<Arc<State>>,
    engine: Arc<Engine>,
    health_changes: u64,
    /// The Basic credentials proven on this connection, and the wall-clock ms they were.
    proved: Option<(Box<[u8]>, u64)>,
    /// Destination alias → the route a search or admin call to it got.
    routes: HashMap<Box<str>, Answer>,
}

impl PolicyService {
    /// A memory for a new connection.
    pub fn caller(&self) -> Caller {
        let mut state = self.state.clone();
        state.borrow_and_update();
        Caller {
            state,
            engine: self.engine(),
            health_changes: self.health.changes(),
            proved: None,
            routes: HashMap::new(),
        }
    }

    /// Forgets what the state or the bridges' health no longer back.
    pub fn refresh(&self, caller: &mut Caller) {
        if caller.state.has_changed().unwrap_or(true) {
            caller.state.borrow_and_update();
            caller.engine = self.engine();
            caller.proved = None;
            caller.routes.clear();
        }
        let health_changes = self.health.changes();
        if caller.health_changes != health_changes {
            caller.health_changes = health_changes;
            caller.routes.clear();
        }
    }

    /// [`PolicyService::answer`] for a call on `caller`'s connection, if it has a memory: a
    /// route it got before is given again, and a route decided now is remembered. (One await,
    /// whichever way: the hyper path's future stays within `front::POLICY_FUTURE_BYTES_MAX`.)
    pub async fn answer_for(
        &self,
        caller: Option<&mut Caller>,
        request: &PolicyRequest<'_>,
    ) -> Option<Answer> {
        // The alias is all a search or admin call is decided on (see `Engine::decide`).
        let alias = match (request.policy_type, &request.destination_alias) {
            (PolicyType::Search | PolicyType::Admin, Some(alias)) => Some(alias.as_ref()),
            _ => None,
        };
        if let (Some(caller), Some(alias)) = (caller.as_deref(), alias)
            && let Some(remembered) = caller.routes.get(alias)
            && self.refusal_in(caller.engine.state()).is_none()
        {
            return Some(remembered.clone());
        }
        let engine = caller.as_deref().map_or_else(|| self.engine(), |c| c.engine.clone());
        let answer = Answer::of(self.answer_with(engine, request).await?);
        if let (Some(caller), Some(alias)) = (caller, alias)
            && let Decision::Route { .. } = *answer.decision
        {
            if caller.routes.len() >= ROUTES_REMEMBERED_MAX {
                caller.routes.clear();
            }
            caller.routes.insert(alias.into(), answer.clone());
        }
        Some(answer)
    }
}

impl Caller {
    /// Whether `basic_credentials` were proven on this connection, in the same state, less than
    /// [`CREDENTIALS_CACHED_MS`] before `now_ms` (as long as the service trusts a check).
    pub fn proved(&self, basic_credentials: &str, now_ms: u64) -> bool {
        self.proved.as_ref().is_some_and(|(proved, at_ms)| {
            now_ms.saturating_sub(*at_ms) < CREDENTIALS_CACHED_MS
                && bool::from(proved.ct_eq(basic_credentials.as_bytes()))
        })
    }

    /// Remembers `basic_credentials` as proven at `now_ms`.
    pub fn prove(&mut self, basic_credentials: &str, now_ms: u64) {
        self.proved = Some((basic_credentials.as_bytes().into(), now_ms));
    }
}

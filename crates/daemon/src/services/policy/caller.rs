//! What a VCS's kept connection remembers between its calls, so that a call to a conference
//! that exists costs a lookup rather than a decision, and proven credentials cost a comparison
//! rather than a keyed hash and the login throttle's locks. A VCS sends each participant of a
//! conference through the same few kept connections, with the same credentials each time.
//!
//! Nothing remembered outlives what it was decided on: all of it is forgotten when the
//! published state changes (the account, an alias, a conference or a bridge may have), and the
//! routes also when this peer's view of bridge health changes. That calls are not refused is
//! remembered too, until the state or the cluster settings change, but never in maintenance:
//! its drain ends on the clock, so a remembered route is then checked on every call.

use super::{PolicyService, unavailable_apart_from_maintenance_in};
use crate::services::policy_credentials::CREDENTIALS_CACHED_MS;
use crate::store::ClusterSettings;
use bytes::Bytes;
use model::State;
use policy::{Decision, Engine, PolicyRequest, PolicyType};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

/// Routes one connection remembers; past it they are all forgotten and remembered afresh. With
/// aliases up to `policy::request::VALUE_BYTES_MAX` and their CPL, at most about 128 KiB per
/// connection, and only on one that proved the policy service's credentials.
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
    /// This peer's cluster settings, which refuse calls while it joins a cluster. The writer
    /// publishes them before the state they come with, so a change of them is seen with the
    /// state's; this receiver keeps `open` right without relying on that order.
    settings: watch::Receiver<ClusterSettings>,
    /// Calls are not refused in `engine`'s state and `settings`, whatever the time (false in
    /// maintenance, whose refusal waits for its drain).
    open: bool,
    health_changes: u64,
    proved: Option<Proved>,
    /// Destination alias → the route a search or admin call to it got.
    routes: HashMap<Box<str>, Answer>,
}

/// The Basic credentials proven on a connection.
struct Proved {
    credentials: Box<[u8]>,
    /// When their password was checked (not when this connection first sent them: a check
    /// remembered by the service counts from its own time).
    verified_at_ms: u64,
}

impl PolicyService {
    /// A memory for a new connection.
    pub fn caller(&self) -> Caller {
        let mut state = self.state.clone();
        state.borrow_and_update();
        let mut settings = self.writer.cluster_settings();
        settings.borrow_and_update();
        let engine = self.engine();
        let open = self.open_whatever_the_time(engine.state(), &settings.borrow());
        Caller {
            state,
            engine,
            settings,
            open,
            health_changes: self.health.changes(),
            proved: None,
            routes: HashMap::new(),
        }
    }

    /// Whether `state` and `settings` refuse no call, and cannot start to with the time.
    fn open_whatever_the_time(&self, state: &State, settings: &ClusterSettings) -> bool {
        self.maintenance_drain_ms_left(state).is_none()
            && unavailable_apart_from_maintenance_in(state, settings).is_none()
    }

    /// Forgets what the state or the bridges' health no longer back.
    pub fn refresh(&self, caller: &mut Caller) {
        let state_changed = caller.state.has_changed().unwrap_or(true);
        if state_changed {
            caller.state.borrow_and_update();
            caller.engine = self.engine();
            caller.proved = None;
            caller.routes.clear();
        }
        let settings_changed = caller.settings.has_changed().unwrap_or(true);
        if state_changed || settings_changed {
            let settings = caller.settings.borrow_and_update();
            caller.open = self.open_whatever_the_time(caller.engine.state(), &settings);
        }
        let health_changes = self.health.changes();
        if caller.health_changes != health_changes {
            caller.health_changes = health_changes;
            caller.routes.clear();
        }
    }

    /// Answers one call (see `PolicyService::answer_with`), with `caller`'s memory if it comes
    /// on a connection that has one: a route it got before is given again, and a route decided
    /// now is remembered. (One await, whichever way: the hyper path's future stays within
    /// `front::POLICY_FUTURE_BYTES_MAX`.)
    pub async fn answer_for(
        &self,
        mut caller: Option<&mut Caller>,
        request: &PolicyRequest<'_>,
    ) -> Option<Answer> {
        // Again: the state or the health may have changed while the credentials were checked.
        if let Some(caller) = caller.as_deref_mut() {
            self.refresh(caller);
        }
        // The alias is all a search or admin call is decided on (see `Engine::decide`).
        let alias = match (request.policy_type, &request.destination_alias) {
            (PolicyType::Search | PolicyType::Admin, Some(alias)) => Some(alias.as_ref()),
            _ => None,
        };
        if let (Some(caller), Some(alias)) = (caller.as_deref(), alias)
            && let Some(remembered) = caller.routes.get(alias)
            && (caller.open || self.refusal_in(caller.engine.state()).is_none())
        {
            return Some(remembered.clone());
        }
        let engine = caller.as_deref().map_or_else(|| self.engine(), |c| c.engine.clone());
        let answer = Answer::of(self.answer_with(engine, request).await?);
        if let (Some(caller), Some(alias)) = (caller, alias)
            && let Decision::Route { .. } = *answer.decision
        {
            caller.remember(alias, answer.clone());
        }
        Some(answer)
    }

    /// When `basic_credentials` were last verified against the account, if the service
    /// remembers it (see `policy_credentials`).
    pub fn verified_at_ms(&self, basic_credentials: &str) -> Option<u64> {
        let state = self.state_now();
        let Some(model::Record::PolicyService(account)) =
            state.singleton(model::RecordKind::PolicyService)
        else {
            return None;
        };
        let (username, hash) = (&account.username, &account.password_hash);
        let fingerprint = self.verified.fingerprint(basic_credentials.trim(), username, hash)?;
        self.verified.verified_at_ms(&fingerprint)
    }
}

impl Caller {
    /// Whether `basic_credentials` were proven on this connection, in the same state, and
    /// their password checked less than [`CREDENTIALS_CACHED_MS`] before `now_ms` (as long as
    /// the service trusts a check).
    pub fn proved(&self, basic_credentials: &str, now_ms: u64) -> bool {
        self.proved.as_ref().is_some_and(|proved| {
            now_ms.saturating_sub(proved.verified_at_ms) < CREDENTIALS_CACHED_MS
                && bool::from(proved.credentials.ct_eq(basic_credentials.as_bytes()))
        })
    }

    /// Remembers `basic_credentials` as proven, their password checked at `verified_at_ms`.
    pub fn prove(&mut self, basic_credentials: &str, verified_at_ms: u64) {
        let credentials = basic_credentials.as_bytes().into();
        self.proved = Some(Proved { credentials, verified_at_ms });
    }

    /// Remembers the route to `alias`, within [`ROUTES_REMEMBERED_MAX`].
    fn remember(&mut self, alias: &str, answer: Answer) {
        if self.routes.len() >= ROUTES_REMEMBERED_MAX {
            self.routes.clear();
        }
        self.routes.insert(alias.into(), answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        let state = Arc::new(State::default());
        let settings = ClusterSettings::from_state(&state, model::PeerId([1; 16]), None);
        Caller {
            state: watch::channel(state.clone()).1,
            engine: Arc::new(Engine::new(state, None)),
            settings: watch::channel(settings).1,
            open: false,
            health_changes: 0,
            proved: None,
            routes: HashMap::new(),
        }
    }

    // Goal: proven credentials are the same bytes only, and only until the password check
    // they rest on is as old as the service's own memory of it allows.
    #[test]
    fn credentials_are_proven_byte_for_byte_until_their_check_is_too_old() {
        let mut caller = caller();
        assert!(!caller.proved("dmNzOnB3", 1_000), "nothing proven yet");
        caller.prove("dmNzOnB3", 1_000);
        assert!(caller.proved("dmNzOnB3", 1_000 + CREDENTIALS_CACHED_MS - 1));
        assert!(!caller.proved("dmNzOnB3", 1_000 + CREDENTIALS_CACHED_MS), "expired");
        assert!(!caller.proved("dmNzOnB4", 1_001), "other bytes");
        assert!(!caller.proved("dmNzOnB", 1_001), "a prefix");
    }

    // Goal: a connection remembers at most ROUTES_REMEMBERED_MAX routes.
    #[test]
    fn routes_are_remembered_within_the_bound() {
        let mut caller = caller();
        let answer = Answer::of(Decision::Reject(policy::RejectReason::NoCapacity));
        for index in 0..ROUTES_REMEMBERED_MAX * 3 + 1 {
            caller.remember(&format!("room{index}@example.com"), answer.clone());
            assert!(caller.routes.len() <= ROUTES_REMEMBERED_MAX);
        }
        assert!(caller.routes.contains_key("room192@example.com"), "the newest is kept");
    }
}

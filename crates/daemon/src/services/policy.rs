//! The policy service a VCS calls: `POST /<path>` with the call's parameters, answered with
//! CPL; `GET /<status path>`, answered 200 only when this peer should get calls. Decisions come
//! from `policy::Engine` over the replicated state; creating a conference on a bridge and
//! recording it (a shared event, so every peer routes the next participant the same way) is
//! done here, once per conference name even when its first calls arrive together.
//!
//! Paths to enter on the VCS (Configuration > Dial plan > Policy services): Path
//! [`POLICY_PATH`], Status path [`STATUS_PATH`], with the policy-service account's username
//! and password (HTTP Basic), protocol HTTPS (or HTTP when `--policy-http-listen` is used).

use super::policy_credentials::{Account, VerifiedCredentials, check};
mod caller;
mod overbooking;
pub use caller::{Answer, Caller, ROUTES_REMEMBERED_MAX};
pub use overbooking::{OVERBOOKING_CHECK_SPACING_MS, OVERBOOKING_RECHECK_MS};

use crate::base::journal::EntryKind;
use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use crate::store::{ClusterSettings, Readers, Writer};
use model::record::{Bridge, Conference};
use model::{Command, Record, RecordKey, RecordKind, State};
use policy::{Decision, Engine, RejectReason, Role};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What the VCS's "Path" field holds.
pub const POLICY_PATH: &str = "/baton/policy";
/// What the VCS's "Status path" field holds.
pub const STATUS_PATH: &str = "/baton/policy/status";
/// How often each bridge's health is polled.
pub const BRIDGE_POLL_INTERVAL_MS: u64 = 5_000;
/// Each bridge's health query gives up after this; below the interval, so a round of polls
/// (made at once) is over before the next.
pub const BRIDGE_POLL_TIMEOUT_MS: u64 = 4_000;
const _: () = assert!(BRIDGE_POLL_TIMEOUT_MS < BRIDGE_POLL_INTERVAL_MS);
/// Health polls running at once. Each holds a connection (a descriptor) until it answers or
/// times out: polling thousands of bridges at once exhausted the descriptors, and SQLite then
/// could not open its files. More bridges than this are polled as earlier polls finish.
pub const BRIDGE_POLLS_IN_FLIGHT_MAX: usize = 32;
/// How long a conference may stay empty before it is ended (its first participant may still
/// be on the way when it is created).
pub const CONFERENCE_IDLE_MS_DEFAULT: u64 = 120_000;
/// Where bridges post their events (`eventNotification`), under the policy listeners.
pub const BRIDGE_EVENTS_PATH: &str = "/baton/bridge-events";
/// Requests decided at once; more wait (the VCS gives each attempt 30 s).
pub const DECISIONS_IN_FLIGHT_MAX: usize = 256;
/// How long a peer put in maintenance keeps deciding the calls that still reach it: the status
/// path says 503 at once, but a VCS only notices at its next status poll (about a minute), and
/// refusing the calls it sends meanwhile would fail them although another peer could serve.
/// For as long after maintenance is switched on or off, a conference unknown to this peer is
/// looked for by name on the bridges before it is made (see `PolicyService::create`).
pub const MAINTENANCE_DRAIN_MS_DEFAULT: u64 = 60_000;

/// What a conference needs from the bridge that will host it.
#[derive(Clone, Debug)]
pub struct ConferenceSpec {
    pub name: String,
    pub chair_pin: Option<String>,
    pub guest_pin: Option<String>,
    pub max_participants: Option<u32>,
}

impl ConferenceSpec {
    /// Conference `name` made from `template`.
    pub fn new(name: &str, template: &model::record::ConferenceTemplate) -> ConferenceSpec {
        ConferenceSpec {
            name: name.to_owned(),
            chair_pin: template.chair_pin.clone(),
            guest_pin: template.guest_pin.clone(),
            max_participants: template.max_participants,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The bridge is down or unreachable: take it out of selection.
    #[error("{0}")]
    Down(String),
    /// A conference of that name already exists there.
    #[error("a conference of that name already exists on the bridge")]
    Duplicate,
    /// The bridge hosts as many conferences as it can.
    #[error("the bridge is full")]
    Full,
    /// The bridge is up but refuses (full, credentials, …).
    #[error("bridge refused: {0}")]
    Refused(String),
}

pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HostError>> + Send + 'a>>;

/// The bridges' API as the policy service uses it (see the `bridges` crate).
pub trait ConferenceHost: Send + Sync + 'static {
    /// Creates the conference; returns the bridge's own identifier for it.
    fn create<'a>(&'a self, bridge: &'a Bridge, spec: &'a ConferenceSpec)
    -> HostFuture<'a, String>;
    /// The identifier of an existing conference of this name, if any.
    fn find<'a>(&'a self, bridge: &'a Bridge, name: &'a str) -> HostFuture<'a, Option<String>>;
    /// Succeeds when the bridge answers its health query.
    fn poll<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, ()>;
    /// Every conference on the bridge.
    fn list<'a>(&'a self, bridge: &'a Bridge) -> HostFuture<'a, Vec<HostedConference>>;
    /// Ends a conference (by the bridge's identifier); gone already counts as done.
    fn destroy<'a>(&'a self, bridge: &'a Bridge, id: &'a str) -> HostFuture<'a, ()>;
    /// Asks the bridge to post its events (`eventNotification`) to `receiver_uri`.
    fn configure_feedback<'a>(
        &'a self,
        bridge: &'a Bridge,
        receiver_uri: &'a str,
    ) -> HostFuture<'a, ()>;
    /// The SHA-256 fingerprint of the certificate an `https` bridge presented last, accepted
    /// or not (`None`: no TLS handshake with it yet, or not a TLS bridge).
    fn presented_fingerprint(&self, _bridge: &Bridge) -> Option<String> {
        None
    }
}

/// A conference as a bridge lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedConference {
    pub id: String,
    pub name: String,
    pub participants: u32,
    /// As many of them as the bridge's enumeration lists (`bridges::PARTICIPANTS_LISTED_MAX`).
    pub participant_list: Vec<::api::LiveParticipant>,
}

/// Bridge health as this peer sees it: a bridge not polled yet counts as up, and so does one
/// whose address or pinned certificate changed since it was found down (it is reached
/// differently now, so the next call tries it at once).
#[derive(Default)]
pub struct Health {
    /// Bridge name → (how it was reached when found down, why).
    down: Mutex<HashMap<String, (ReachedAs, String)>>,
    /// Counts the changes to `down`, so a remembered route (see [`Caller`]) can tell, with one
    /// load, that the health it was decided with still holds.
    changes: std::sync::atomic::AtomicU64,
}

/// What makes a bridge another one for [`Health`]: its address and its pinned certificate.
type ReachedAs = (String, Option<String>);

fn reached_as(bridge: &Bridge) -> ReachedAs {
    (bridge.address.clone(), bridge.pinned_sha256.clone())
}

impl Health {
    pub fn is_up(&self, bridge: &Bridge) -> bool {
        lock(&self.down).get(&bridge.name).is_none_or(|(reached, _)| *reached != reached_as(bridge))
    }

    /// Records `bridge` as up (`None`) or down and why; says whether that changed.
    fn mark(&self, bridge: &Bridge, problem: Option<String>) -> bool {
        let mut down = lock(&self.down);
        let changed = match problem {
            Some(problem) => {
                let entry = (reached_as(bridge), problem);
                down.insert(bridge.name.clone(), entry.clone()).as_ref() != Some(&entry)
            }
            None => down.remove(&bridge.name).is_some(),
        };
        if changed {
            self.changes.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// How many times the health changed since the start.
    fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Bridges out of selection and why.
    pub fn problems(&self) -> HashMap<String, String> {
        lock(&self.down)
            .iter()
            .map(|(name, (_, problem))| (name.clone(), problem.clone()))
            .collect()
    }
}

pub struct PolicyService {
    writer: Writer,
    state: watch::Receiver<Arc<State>>,
    engine: Mutex<Arc<Engine>>,
    host: Arc<dyn ConferenceHost>,
    pub health: Health,
    /// Bridge name → ports reserved by this peer's creations not yet in the state.
    ports_in_flight: Mutex<HashMap<String, u32>>,
    /// One lock per conference being created, so concurrent first calls create it once.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Credentials verified lately (see `policy_credentials`).
    verified: VerifiedCredentials,
    /// Held while a password is checked (see `policy_credentials::check`).
    checking: tokio::sync::Mutex<()>,
    decisions: tokio::sync::Semaphore,
    /// For the status check that projections are current.
    readers: Readers,
    /// Base URL bridges can reach this peer's policy listener at (`http://10.0.0.5:8080`);
    /// without it no feedback receiver is registered.
    feedback_base_url: Option<String>,
    feedback: Mutex<Feedback>,
    /// See [`MAINTENANCE_DRAIN_MS_DEFAULT`].
    maintenance_drain_ms: u64,
    /// Warnings repeated every poll (a bridge refusing the feedback receiver): an alarm once
    /// they repeat, instead of a log line every [`BRIDGE_POLL_INTERVAL_MS`].
    pub warnings: super::alarms::Warnings,
    /// Requests, latency and creations, for the metrics endpoint (atomics only).
    pub metrics: super::metrics::PolicyMetrics,
}

/// A bridge's health and ports as this peer sees them, for the metrics endpoint.
pub struct BridgePorts {
    pub name: String,
    pub up: bool,
    pub capacity_ports: u32,
    pub free_ports: u32,
}

/// The conference a call needs created.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    conference: &'a str,
    template: &'a str,
    role: Role,
}

/// When a decision starting now must be answered by.
fn decision_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(policy::DECISION_DEADLINE_MS)
}

/// Ports reserved on a bridge for one creation in flight; released when dropped (created and
/// recorded, failed, or abandoned at the decision's deadline).
struct Reservation<'a> {
    ports_in_flight: &'a Mutex<HashMap<String, u32>>,
    bridge: String,
    ports: u32,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(self.ports_in_flight);
        if let Some(reserved) = in_flight.get_mut(&self.bridge) {
            *reserved = reserved.saturating_sub(self.ports);
            if *reserved == 0 {
                in_flight.remove(&self.bridge);
            }
        }
    }
}

/// Feedback receivers registered on bridges, and the events they sent.
#[derive(Default)]
struct Feedback {
    /// Bridge name → (its address when registered, the token in its receiver URI).
    registered: HashMap<String, (String, String)>,
    /// Bridge name → wall-clock ms of its last event.
    last_event_ms: HashMap<String, u64>,
}

/// The policy service as the operator sees it: the API's contract types.
pub use ::api::{BridgeHealth, PolicyStatus};

impl PolicyService {
    pub fn new(
        writer: Writer,
        host: Arc<dyn ConferenceHost>,
        readers: Readers,
        feedback_base_url: Option<String>,
        maintenance_drain_ms: u64,
    ) -> Arc<PolicyService> {
        let state = writer.state_watch();
        let engine = Arc::new(Engine::new(state.borrow().clone(), None));
        Arc::new(PolicyService {
            writer,
            state,
            engine: Mutex::new(engine),
            host,
            health: Health::default(),
            ports_in_flight: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashMap::new()),
            verified: VerifiedCredentials::new(),
            checking: tokio::sync::Mutex::new(()),
            decisions: tokio::sync::Semaphore::new(DECISIONS_IN_FLIGHT_MAX),
            readers,
            feedback_base_url,
            feedback: Mutex::new(Feedback::default()),
            maintenance_drain_ms,
            warnings: super::alarms::Warnings::default(),
            metrics: super::metrics::PolicyMetrics::default(),
        })
    }

    /// The engine for the newest state, rebuilt only when the state changed.
    pub(super) fn engine(&self) -> Arc<Engine> {
        let state = self.state.borrow().clone();
        let mut cached = lock(&self.engine);
        // The engine holds its state, so pointer equality cannot be fooled by a reused address.
        if !Arc::ptr_eq(cached.state(), &state) {
            *cached = Arc::new(Engine::new(state, Some(&cached)));
        }
        cached.clone()
    }

    /// Why this peer should not get calls now, if it should not.
    pub async fn unavailable(&self) -> Option<String> {
        if let Some(reason) = self.unavailable_by_state(&self.state_now()) {
            return Some(reason);
        }
        // Every write, local or replicated, appends and projects in one transaction: a reader
        // sees the projections behind the log only while they are really catching up (a rebuild
        // after an upgrade, or a catch-up that failed and waits for the next write).
        let positions = self
            .readers
            .read(|conn| Ok((eventlog::last_position(conn)?, projections::position(conn)?)))
            .await;
        match positions {
            Ok((log, projected)) if log == projected => None,
            Ok(_) => Some("projections are catching up with the log".to_owned()),
            Err(error) => Some(format!("the event log cannot be read: {error}")),
        }
    }

    /// In maintenance mode: the milliseconds left of its drain (0 once drained); `None` when
    /// not in maintenance.
    fn maintenance_drain_ms_left(&self, state: &State) -> Option<u64> {
        let slot = state.slot(RecordKey::singleton(RecordKind::Maintenance))?;
        match &slot.record {
            Some(Record::Maintenance(maintenance)) if maintenance.enabled => {
                let ends_ms = slot.stamp.hlc.wall_ms.saturating_add(self.maintenance_drain_ms);
                Some(ends_ms.saturating_sub(crate::base::clock::now_ms()))
            }
            _ => None,
        }
    }

    /// The newest published state.
    pub(super) fn state_now(&self) -> Arc<State> {
        self.state.borrow().clone()
    }

    pub(super) fn host(&self) -> &dyn ConferenceHost {
        self.host.as_ref()
    }

    /// Why calls that reach this peer are refused now, if they are: as the status path says,
    /// except that a peer put in maintenance keeps deciding them while it drains.
    pub(super) fn refusal(&self) -> Option<String> {
        self.refusal_in(&self.state_now())
    }

    /// [`Self::refusal`] in `state`: the decision path passes the state it decides on, so each
    /// call reads the published state once.
    fn refusal_in(&self, state: &State) -> Option<String> {
        let reason = self.unavailable_by_state(state)?;
        if self.maintenance_drain_ms_left(state).is_some_and(|left| left > 0) {
            // Still draining: only a reason other than maintenance refuses calls.
            return self.unavailable_apart_from_maintenance(state);
        }
        Some(reason)
    }

    /// The checks the decision path makes on every call (no I/O).
    fn unavailable_by_state(&self, state: &State) -> Option<String> {
        if let Some(Record::Maintenance(maintenance)) = state.singleton(RecordKind::Maintenance)
            && maintenance.enabled
        {
            return Some("in maintenance mode".to_owned());
        }
        self.unavailable_apart_from_maintenance(state)
    }

    fn unavailable_apart_from_maintenance(&self, state: &State) -> Option<String> {
        // Looked at in place: the settings hold strings.
        let settings = self.writer.cluster_settings();
        let settings = settings.borrow();
        unavailable_apart_from_maintenance_in(state, &settings)
    }

    /// Whether the policy-service account exists (else no credentials can be right).
    pub fn account_configured(&self) -> bool {
        self.state.borrow().singleton(RecordKind::PolicyService).is_some()
    }

    /// Whether `basic_credentials` (the base64 of an HTTP Basic `Authorization`) are the
    /// policy-service account's. The password check runs on `base::passwords`' bounded pool.
    pub async fn authorised(
        &self,
        basic_credentials: &str,
    ) -> Result<bool, crate::base::passwords::Busy> {
        let state = self.state.borrow().clone();
        let Some(Record::PolicyService(account)) = state.singleton(RecordKind::PolicyService)
        else {
            return Ok(false);
        };
        // The hash is copied only when a password is checked, not on a remembered call.
        let verify = |password: String| {
            crate::base::passwords::verify(password, account.password_hash.clone())
        };
        let account =
            Account { username: &account.username, password_hash: &account.password_hash };
        let now_ms = crate::base::clock::now_ms();
        check(&self.verified, &self.checking, account, basic_credentials, now_ms, verify).await
    }

    /// Answers one call as the VCS asked, first with `engine` (one engine for the refusal and
    /// the first decision: the state is read once): refused in maintenance (once the drain is
    /// over), otherwise decided within the bound on decisions in flight, by
    /// [`policy::DECISION_DEADLINE_MS`] at the latest. `None`: shutting down. (See
    /// [`PolicyService::answer_for`], the way in.)
    async fn answer_with(
        &self,
        engine: Arc<Engine>,
        request: &policy::PolicyRequest<'_>,
    ) -> Option<Decision> {
        if self.refusal_in(engine.state()).is_some() {
            return Some(Decision::Reject(RejectReason::Maintenance));
        }
        let deadline = decision_deadline();
        // A free slot is taken at once; only a wait for one arms a timer.
        let permit = match self.decisions.try_acquire() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Boxed: a wait is rare, and its timer would take room in every call's future.
                let waiting = Box::pin(tokio::time::timeout_at(deadline, self.decisions.acquire()));
                let Ok(permit) = waiting.await else {
                    tracing::warn!("no decision slot free before the deadline");
                    return Some(Decision::Reject(RejectReason::BridgeFailure));
                };
                permit.ok()?
            }
        };
        let _permit = permit;
        Some(self.decide_by(engine, request, deadline).await)
    }

    /// Decides one call by `deadline`, first with `engine`: every bridge call it makes shares
    /// the deadline, and the per-name creation lock is given up at it.
    async fn decide_by(
        &self,
        engine: Arc<Engine>,
        request: &policy::PolicyRequest<'_>,
        deadline: tokio::time::Instant,
    ) -> Decision {
        let conference = match self.decide_with(engine, request) {
            (Decision::Create { conference, .. }, _) => conference,
            (decided, _) => return decided,
        };
        // Boxed: the bridge calls of a creation make a future of kilobytes that every call
        // would otherwise allocate and copy, though most follow an existing conference.
        Box::pin(self.decide_creating(conference, request, deadline)).await
    }

    /// [`PolicyService::decide_by`] for a call whose conference must first be created.
    async fn decide_creating(
        &self,
        conference: String,
        request: &policy::PolicyRequest<'_>,
        deadline: tokio::time::Instant,
    ) -> Decision {
        let creation = {
            let mut creating = lock(&self.creating);
            creating.entry(conference.clone()).or_default().clone()
        };
        // Only the wait for the lock and the bridge calls are cut at the deadline: recording a
        // conference made is never abandoned half-way (its port reservation is released once
        // the record is in the state).
        let decided = match tokio::time::timeout_at(deadline, creation.lock()).await {
            Ok(_only_one) => {
                // Decide again on the newest state: the conference may exist by now.
                match self.decide_with(self.engine(), request) {
                    (Decision::Create { conference, template, role, candidates }, engine) => {
                        let wanted = Wanted { conference: &conference, template: &template, role };
                        let created = self.create(&engine, &wanted, &candidates, deadline).await;
                        if let Decision::Reject(
                            RejectReason::BridgeFailure | RejectReason::NoCapacity,
                        ) = created
                        {
                            self.metrics
                                .conference_creation_failures
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        created
                    }
                    (other, _) => other,
                }
            }
            Err(_) => {
                tracing::warn!(%conference, "no decision before the deadline");
                Decision::Reject(RejectReason::BridgeFailure)
            }
        };
        let mut creating = lock(&self.creating);
        if Arc::strong_count(&creation) <= 2 {
            creating.remove(&conference);
        }
        decided
    }

    /// One decision with `engine` (the newest state's, or one just read for the same call),
    /// with this peer's view of bridge health; also returns the engine, so a creation uses the
    /// same configuration.
    fn decide_with(
        &self,
        engine: Arc<Engine>,
        request: &policy::PolicyRequest<'_>,
    ) -> (Decision, Arc<Engine>) {
        let health =
            |name: &str| engine.bridge(name).is_some_and(|bridge| self.health.is_up(bridge));
        let decision = engine.decide(request, &health);
        (decision, engine)
    }

    async fn create(
        &self,
        engine: &Engine,
        wanted: &Wanted<'_>,
        candidates: &[String],
        deadline: tokio::time::Instant,
    ) -> Decision {
        let Wanted { conference, template: template_name, role } = *wanted;
        let Some(template) = engine.template(template_name) else {
            return Decision::Reject(RejectReason::NoMatchingAlias);
        };
        let spec = ConferenceSpec::new(conference, template);
        // Around a maintenance change the VCS may split calls between this peer and another
        // that does not replicate with it (a rolling upgrade's switch) until its next status
        // poll: a conference unknown here may exist already, made there moments ago.
        if self.maintenance_changed_within_drain() {
            for name in candidates {
                let Some(bridge) = engine.bridge(name) else { continue };
                let found = tokio::time::timeout_at(deadline, self.host.find(bridge, conference));
                if let Ok(Ok(Some(id))) = found.await {
                    tracing::info!(bridge = %bridge.name, %conference, "adopted a conference made elsewhere around a maintenance change");
                    return self.record(engine, conference, template_name, role, bridge, id).await;
                }
            }
        }
        // Only when every bridge said it was full is this a lack of capacity.
        let ports = Engine::ports_needed(template);
        let mut failed = false;
        for name in candidates {
            let Some(bridge) = engine.bridge(name) else { continue };
            // Held until the conference is in the published state, or released on failure.
            let Some(_reservation) = self.reserve(name, ports) else {
                tracing::info!(bridge = %name, %conference, "no ports left once reserved; trying the next");
                continue;
            };
            let Ok(created) =
                tokio::time::timeout_at(deadline, self.create_on(bridge, &spec)).await
            else {
                self.mark(bridge, Some("no answer before the decision's deadline".into()));
                return Decision::Reject(RejectReason::BridgeFailure);
            };
            match created {
                Ok(id) => {
                    return self.record(engine, conference, template_name, role, bridge, id).await;
                }
                Err(HostError::Down(problem)) => {
                    failed = true;
                    self.mark(bridge, Some(problem));
                }
                Err(HostError::Full) => {
                    tracing::info!(bridge = %bridge.name, %conference, "bridge full; trying the next");
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(bridge = %bridge.name, %conference, %error, "conference not created; trying the next bridge");
                }
            }
        }
        Decision::Reject(if failed {
            RejectReason::BridgeFailure
        } else {
            RejectReason::NoCapacity
        })
    }

    /// Creates the conference on `bridge`, adopting one of the same name already there: made by
    /// an earlier attempt whose record was lost, or by another peer during a partition.
    async fn create_on(&self, bridge: &Bridge, spec: &ConferenceSpec) -> Result<String, HostError> {
        match self.host.create(bridge, spec).await {
            Err(HostError::Duplicate) => match self.host.find(bridge, &spec.name).await? {
                Some(id) => Ok(id),
                None => Err(HostError::Refused("duplicate name, but not listed".to_owned())),
            },
            created => created,
        }
    }

    /// Reserves `ports` on the bridge `name` if it has them free. The state's conferences and
    /// this peer's creations in flight are counted under one lock, and a reservation is
    /// released only once its conference is in the published state (the writer publishes
    /// before it answers), so a conference is counted at least once and no interleaving of
    /// calls overbooks a bridge.
    fn reserve(&self, name: &str, ports: u32) -> Option<Reservation<'_>> {
        let mut in_flight = lock(&self.ports_in_flight);
        let engine = self.engine();
        let bridge = engine.bridge(name)?;
        let pending = in_flight.get(name).copied().unwrap_or(0);
        if engine.free_ports(bridge).saturating_sub(pending) < ports {
            return None;
        }
        *in_flight.entry(name.to_owned()).or_default() += ports;
        Some(Reservation { ports_in_flight: &self.ports_in_flight, bridge: name.to_owned(), ports })
    }

    /// Records a conference made (or found) on `bridge` and routes the call to it.
    async fn record(
        &self,
        engine: &Engine,
        conference: &str,
        template_name: &str,
        role: Role,
        bridge: &Bridge,
        id: String,
    ) -> Decision {
        let record = Record::Conference(Conference {
            name: conference.to_owned(),
            bridge: bridge.name.clone(),
            bridge_conference_id: id,
            template: template_name.to_owned(),
            created_by: self.writer.peer_id().to_hex(),
        });
        let saved = self
            .writer
            .execute("policy-service", Command::Save(record), crate::base::clock::now_ms())
            .await;
        match saved {
            Ok(_) => {
                self.metrics.conferences_created.fetch_add(1, Ordering::Relaxed);
            }
            // The bridge has it; the next call adopts it through `Duplicate`.
            Err(error) => {
                tracing::error!(%error, %conference, "conference created but not recorded")
            }
        }
        Decision::Route {
            url: engine.route_url(conference, template_name, role, bridge),
            conference: conference.to_owned(),
            bridge: bridge.name.clone(),
        }
    }

    /// Whether maintenance mode was switched (on or off) less than a drain ago.
    fn maintenance_changed_within_drain(&self) -> bool {
        let state = self.state.borrow().clone();
        state.slot(RecordKey::singleton(RecordKind::Maintenance)).is_some_and(|slot| {
            crate::base::clock::now_ms().saturating_sub(slot.stamp.hlc.wall_ms)
                < self.maintenance_drain_ms
        })
    }

    /// Takes `bridge` out of selection (`Some(why)`) or puts it back; a change (a new reason
    /// too, such as a certificate refused for another cause) goes to the Event Log.
    fn mark(&self, bridge: &Bridge, problem: Option<String>) {
        let (level, kind, message) = match &problem {
            Some(why) => (
                eventlog::Level::Warning,
                EntryKind::BridgeDown,
                format!("bridge {} taken out of selection: {why}", bridge.name),
            ),
            None => (
                eventlog::Level::Info,
                EntryKind::BridgeUp,
                format!("bridge {} back in selection", bridge.name),
            ),
        };
        if self.health.mark(bridge, problem) {
            tracing::info!(bridge = %bridge.name, %message);
            self.writer.journal(crate::base::journal::entry(
                level,
                kind,
                Some("policy-service"),
                message,
            ));
        }
    }

    /// Polls every enabled bridge, [`BRIDGE_POLLS_IN_FLIGHT_MAX`] at a time, every
    /// [`BRIDGE_POLL_INTERVAL_MS`] until shutdown.
    pub fn spawn_health_polling(self: &Arc<Self>, tasks: &Tasks) {
        let service = self.clone();
        let shutdown = tasks.shutdown().clone();
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(BRIDGE_POLL_INTERVAL_MS));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let state = service.state.borrow().clone();
                let bridges: Vec<Bridge> = state
                    .list(RecordKind::Bridge)
                    .filter_map(|record| match record {
                        Record::Bridge(bridge) if bridge.enabled => Some(bridge.clone()),
                        _ => None,
                    })
                    .collect();
                // Each with its own deadline, below the interval: a slow bridge delays no other
                // beyond it.
                futures_util::StreamExt::for_each_concurrent(
                    futures_util::stream::iter(&bridges),
                    BRIDGE_POLLS_IN_FLIGHT_MAX,
                    |bridge| service.poll_one(bridge),
                )
                .await;
            }
        });
    }

    /// Polls one bridge's health (and registers the feedback receiver of one that is up),
    /// giving up after [`BRIDGE_POLL_TIMEOUT_MS`].
    async fn poll_one(&self, bridge: &Bridge) {
        let timeout = Duration::from_millis(BRIDGE_POLL_TIMEOUT_MS);
        let problem = match tokio::time::timeout(timeout, self.host.poll(bridge)).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => {
                Some(format!("no answer to the health query within {BRIDGE_POLL_TIMEOUT_MS} ms"))
            }
        };
        let up = problem.is_none();
        self.mark(bridge, problem);
        if up && tokio::time::timeout(timeout, self.register_feedback(bridge)).await.is_err() {
            tracing::warn!(bridge = %bridge.name, "feedback receiver not registered: no answer in time");
        }
    }
}

impl PolicyService {
    /// Registers this peer's feedback receiver on a TelePresence Server (once per address), so
    /// its keep-alives and events arrive between polls.
    async fn register_feedback(&self, bridge: &Bridge) {
        let Some(base) = &self.feedback_base_url else { return };
        if bridge.bridge_type != model::record::BridgeType::TelepresenceServer {
            return;
        }
        let token = {
            let feedback = lock(&self.feedback);
            match feedback.registered.get(&bridge.name) {
                Some((address, _)) if *address == bridge.address => return,
                _ => match crate::base::random::hex_token::<16>() {
                    Some(token) => token,
                    None => {
                        tracing::warn!(bridge = %bridge.name, "no randomness for a feedback token; not registering");
                        return;
                    }
                },
            }
        };
        let uri = format!("{base}{BRIDGE_EVENTS_PATH}?bridge={}&token={token}", bridge.name);
        match self.host.configure_feedback(bridge, &uri).await {
            Ok(()) => {
                lock(&self.feedback)
                    .registered
                    .insert(bridge.name.clone(), (bridge.address.clone(), token));
            }
            Err(error) => {
                let warning = format!("feedback receiver not registered: {error}");
                self.warnings.warn(&bridge.name, &warning);
            }
        }
    }

    /// An `eventNotification` from a bridge: proof of life, recorded. The token in the URI we
    /// registered is what makes a stranger's post count for nothing.
    pub fn bridge_event(&self, bridge_name: &str, token: &str, body: &[u8]) -> Result<(), String> {
        let registered =
            lock(&self.feedback).registered.get(bridge_name).map(|(_, token)| token.clone());
        if registered.as_deref() != Some(token) {
            return Err("unknown bridge or token".to_owned());
        }
        let notification =
            bridges::parse_event_notification(body).map_err(|error| error.to_string())?;
        tracing::debug!(bridge = %bridge_name, events = ?notification.events, "bridge event");
        lock(&self.feedback)
            .last_event_ms
            .insert(bridge_name.to_owned(), crate::base::clock::now_ms());
        let engine = self.engine();
        if let Some(bridge) = engine.bridge(bridge_name) {
            self.mark(bridge, None);
        }
        Ok(())
    }

    /// The fingerprint of the certificate `bridge` presented to this peer last.
    pub fn presented_fingerprint(&self, bridge: &Bridge) -> Option<String> {
        self.host.presented_fingerprint(bridge)
    }

    /// Every bridge's health and ports (free ones as counted from the state's conferences).
    pub fn bridge_ports(&self) -> Vec<BridgePorts> {
        let engine = self.engine();
        let state = engine.state().clone();
        state
            .list(RecordKind::Bridge)
            .filter_map(|record| match record {
                Record::Bridge(bridge) => Some(BridgePorts {
                    name: bridge.name.clone(),
                    up: self.health.is_up(bridge),
                    capacity_ports: bridge.capacity_ports,
                    free_ports: engine.free_ports(bridge),
                }),
                _ => None,
            })
            .collect()
    }

    pub async fn status(&self) -> PolicyStatus {
        let state = self.state.borrow().clone();
        let problems = self.health.problems();
        let last_event_ms = lock(&self.feedback).last_event_ms.clone();
        let bridges = state
            .list(RecordKind::Bridge)
            .filter_map(|record| match record {
                Record::Bridge(bridge) => Some(BridgeHealth {
                    name: bridge.name.clone(),
                    up: self.health.is_up(bridge),
                    problem: problems.get(&bridge.name).cloned(),
                    last_event_ms: last_event_ms.get(&bridge.name).copied(),
                    presented_sha256: self.host.presented_fingerprint(bridge),
                }),
                _ => None,
            })
            .collect();
        PolicyStatus {
            unavailable: self.unavailable().await,
            maintenance_drain_ms_left: self.maintenance_drain_ms_left(&self.state_now()),
            bridges,
        }
    }

    /// Ends conferences nobody uses, until shutdown. Runs on every peer, each ending only what
    /// it created (so peers do not race), plus any copy of a conference left on the wrong
    /// bridge when two peers created it during a partition (ending it is idempotent):
    /// - a conference it created that has been empty for `idle_ms`: ended on the bridge, its
    ///   record removed;
    /// - a conference it created that its bridge no longer lists (restarted): record removed;
    /// - a conference of a known name on a bridge other than the recorded one, empty for
    ///   `idle_ms`: the losing copy of a partition race, ended.
    ///
    /// Conferences Baton does not know are never touched.
    pub fn spawn_conference_cleanup(self: &Arc<Self>, idle_ms: u64, tasks: &Tasks) {
        let service = self.clone();
        let interval_ms = (idle_ms / 4).clamp(100, BRIDGE_POLL_INTERVAL_MS);
        let shutdown = tasks.shutdown().clone();
        tasks.spawn(async move {
            let mut empty_since_ms: HashMap<(String, String), u64> = HashMap::new();
            let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                service.clean_up_once(idle_ms, &mut empty_since_ms).await;
            }
        });
    }

    async fn clean_up_once(
        &self,
        idle_ms: u64,
        empty_since_ms: &mut HashMap<(String, String), u64>,
    ) {
        let state = self.state.borrow().clone();
        let me = self.writer.peer_id().to_hex();
        let now_ms = crate::base::clock::now_ms();
        let conferences: HashMap<&str, &Conference> = state
            .list(RecordKind::Conference)
            .filter_map(|record| match record {
                Record::Conference(conference) => Some((conference.name.as_str(), conference)),
                _ => None,
            })
            .collect();
        let mut seen = HashSet::new();
        for record in state.list(RecordKind::Bridge) {
            let Record::Bridge(bridge) = record else { continue };
            if !bridge.enabled {
                continue;
            }
            let Ok(hosted) = self.host.list(bridge).await else { continue };
            for conference in &hosted {
                let Some(known) = conferences.get(conference.name.as_str()) else { continue };
                let ours = known.bridge == bridge.name;
                if ours {
                    seen.insert(known.name.clone());
                }
                if (ours && known.created_by != me) || conference.participants > 0 {
                    empty_since_ms.remove(&(bridge.name.clone(), conference.name.clone()));
                    continue;
                }
                let since = *empty_since_ms
                    .entry((bridge.name.clone(), conference.name.clone()))
                    .or_insert(now_ms);
                if now_ms.saturating_sub(since) < idle_ms {
                    continue;
                }
                empty_since_ms.remove(&(bridge.name.clone(), conference.name.clone()));
                if let Err(error) = self.host.destroy(bridge, &conference.id).await {
                    tracing::warn!(bridge = %bridge.name, conference = %conference.name, %error, "could not end an empty conference");
                    continue;
                }
                if ours {
                    self.forget(&known.name, "ended on its bridge after being empty").await;
                } else {
                    tracing::warn!(
                        bridge = %bridge.name, conference = %conference.name, kept_on = %known.bridge,
                        "ended the copy of a conference created twice while peers were apart"
                    );
                }
            }
            // Records of ours the bridge no longer lists: it lost them (restart, operator).
            for known in
                conferences.values().filter(|c| c.bridge == bridge.name && c.created_by == me)
            {
                if !seen.contains(&known.name) {
                    self.forget(&known.name, "its bridge no longer lists it").await;
                }
            }
        }
    }

    async fn forget(&self, conference: &str, why: &str) {
        let key = RecordKey { kind: RecordKind::Conference, name: conference.to_owned() };
        match self
            .writer
            .execute("policy-service", Command::Remove(key), crate::base::clock::now_ms())
            .await
        {
            Ok(_) => tracing::info!(%conference, %why, "conference removed"),
            Err(error) => {
                tracing::warn!(%conference, %error, "could not remove a conference record")
            }
        }
    }
}

/// Why calls are refused in `state` with these cluster `settings`, maintenance aside: a
/// reason that does not depend on the time.
fn unavailable_apart_from_maintenance_in(
    state: &State,
    settings: &ClusterSettings,
) -> Option<String> {
    if state.singleton(RecordKind::PolicyService).is_none() {
        return Some("the policy service account is not configured".to_owned());
    }
    if settings.is_clustered() && settings.cluster_id.is_none() {
        return Some("joining a cluster: its configuration has not arrived yet".to_owned());
    }
    None
}

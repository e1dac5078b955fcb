//! Cluster membership at run time: listens for peers and dials them over the `peering`
//! channel, checks each greeting, feeds replication messages to the writer and sends its
//! answers, measures latency, and keeps the per-peer status the operator sees.
//!
//! Everything restarts from the settings whenever they change (key, peer list, address, host
//! name, identity), so a change applies live and a restart gives the same outcome. Links are
//! one-way for replication: each peer sends on the connection it dialled and receives on the
//! ones it accepted, so a dead peer costs one failing dialer and nothing else.
//!
//! What to do with links (dial whom and when, silence, duplicates, settings changes, the
//! lines' states) is decided by the pure machine `peering::links::Links`, which one task here
//! (`supervise`) feeds with what the connections' tasks report and whose actions it carries
//! out; the seeded simulation of that machine is `peering/src/links_sim.rs`.

use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use crate::services::cluster_key;
use crate::services::cluster_route::{Router, Routes};
use crate::store::{ClusterSettings, Outbound, Writer};
use model::{ClusterId, PeerId};
use peering::links::{Action, Cause, Conn, Event, Line, Links, Members};
use peering::{AdminEndpoint, Channel, ClusterKey, Frame, Hello, Verdict};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// TCP port peers listen on, on their primary address. The same on every peer, since peer
/// lists hold addresses only.
pub const CLUSTER_PORT_DEFAULT: u16 = 4370;
/// The links' timing is the link machine's (`peering::links`), which decides with it.
pub use peering::links::{
    CONNECT_TIMEOUT_MS, PING_INTERVAL_MS, RETRY_FIRST_MS, RETRY_MAX_MS, SILENCE_TIMEOUT_MS,
};
/// The seed's limit for round-trip time between peers; above it the status warns.
pub const LATENCY_WARNING_MS: u64 = 30;
pub const REPLICATION_TICK_MS: u64 = 200;
/// After a failed join, how long until the next attempt. Every member's greeting asks for the
/// join, and a peer that connects is dialled back at once, so a join that kept failing was
/// tried again within milliseconds, each attempt keeping a copy of the database beside it
/// (147,605 copies, 9.9 GB, in 50 minutes).
pub const JOIN_RETRY_PAUSE_MS: u64 = 30_000;
/// Writer output waiting to be routed; overflow marks the peer behind (`cluster_route`).
pub const OUTBOUND_QUEUE_MAX: usize = 1_024;
/// Frames waiting for one peer's link; overflow marks the peer behind (`cluster_route`).
pub const LINK_QUEUE_MAX: usize = 64;
/// Frames decoded ahead of their handler on one connection.
pub const RECEIVE_QUEUE_MAX: usize = 16;
/// How often clustering re-checks its prerequisites (time synchronisation) while blocked.
pub const PREREQUISITE_RECHECK_MS: u64 = 5_000;
/// Reports from the links' tasks waiting for the link machine.
pub const REPORT_QUEUE_MAX: usize = 256;
/// A link reports that it hears its peer at most this often (the silence timeout is 20 times
/// longer), so replication traffic does not flood the machine.
pub const HEARD_REPORT_INTERVAL_MS: u64 = 250;
/// Pings waiting for one dialled link (one is enough: the next comes a second later).
const PING_QUEUE_MAX: usize = 1;

/// Network facts that are not configuration records.
#[derive(Clone, Debug)]
pub struct Network {
    pub port: u16,
    /// Dial these instead of `<peer address>:<port>` (a NAT, or a test's fault-injecting proxy).
    pub connect_via: BTreeMap<Ipv4Addr, SocketAddr>,
    /// Skips the NTP check. Only for tests on machines without time synchronisation.
    pub assume_time_synchronised: bool,
}

/// A peer line, the cluster's status and a failed peer's typed reason are the API's
/// contract types (`api::cluster`).
pub use ::api::{ClusterMode, ClusterStatus, PeerFailure, PeerLine, PeerRefusal, PeerState};

/// A peer's state as the board keeps it: the line's state, why it failed when it did, and the
/// refusal when the peers refuse each other (its version, when it runs another one, is what
/// the version alarm shows).
#[derive(Clone)]
struct PeerStatus {
    state: PeerState,
    code: Option<PeerFailure>,
    refusal: Option<peering::Refusal>,
    /// The dialled connection an active line shows; only it may update the line.
    link: Option<Conn>,
}

/// A failed link: its typed cause and the reason the operator reads.
#[derive(Clone, Debug)]
struct Failure {
    code: PeerFailure,
    reason: String,
    refusal: Option<peering::Refusal>,
}

impl Failure {
    fn unreachable(detail: impl std::fmt::Display) -> Failure {
        let reason = format!("unreachable: {detail}");
        Failure { code: PeerFailure::Unreachable, reason, refusal: None }
    }

    fn lost(detail: Option<&dyn std::fmt::Display>) -> Failure {
        let reason = match detail {
            Some(detail) => format!("connection lost: {detail}"),
            None => "connection lost".to_owned(),
        };
        Failure { code: PeerFailure::ConnectionLost, reason, refusal: None }
    }

    fn refused(reason: impl Into<String>) -> Failure {
        Failure { code: PeerFailure::Refused, reason: reason.into(), refusal: None }
    }

    /// A typed refusal, by this peer (`ours` true) or by the other one.
    fn refusal(refusal: &peering::Refusal, ours: bool) -> Failure {
        let reason =
            if ours { refusal.to_string() } else { format!("the peer refuses: {refusal}") };
        // The other side's refusal names the versions from its side: swapped here.
        let refusal = match refusal {
            peering::Refusal::VersionMismatch { ours: mine, theirs } if !ours => {
                peering::Refusal::VersionMismatch { ours: theirs.clone(), theirs: mine.clone() }
            }
            peering::Refusal::EditionMismatch { ours: mine, theirs } if !ours => {
                peering::Refusal::EditionMismatch { ours: *theirs, theirs: *mine }
            }
            refusal => refusal.clone(),
        };
        Failure { refusal: Some(refusal), ..Failure::refused(reason) }
    }

    /// What the link machine's cause of a failed line means for the operator.
    fn of(cause: Cause<Failure>) -> Failure {
        match cause {
            Cause::Silent => Failure::unreachable(format!("silent for {SILENCE_TIMEOUT_MS} ms")),
            Cause::NoAnswer => Failure::unreachable(format!(
                "no answer within {} ms",
                peering::links::DIAL_TIMEOUT_MS
            )),
            Cause::Reported(failure) => failure,
        }
    }

    fn state(self) -> PeerStatus {
        PeerStatus {
            state: PeerState::Failed { reason: self.reason },
            code: Some(self.code),
            refusal: self.refusal,
            link: None,
        }
    }
}

impl PeerStatus {
    /// The peer's version, as this peer sees it, when they refuse each other over versions.
    fn other_version(&self) -> Option<String> {
        match &self.refusal {
            Some(peering::Refusal::VersionMismatch { theirs, .. }) => Some(theirs.clone()),
            _ => None,
        }
    }
}

/// The API's name for a refusal, which programs decide on.
fn refusal_code(refusal: &peering::Refusal) -> PeerRefusal {
    match refusal {
        peering::Refusal::VersionMismatch { .. } => PeerRefusal::VersionMismatch,
        peering::Refusal::PeerListMismatch { .. } => PeerRefusal::PeerListMismatch,
        peering::Refusal::DifferentCluster => PeerRefusal::DifferentCluster,
        peering::Refusal::NoClusterYet => PeerRefusal::NoClusterYet,
        peering::Refusal::NotListed { .. } => PeerRefusal::NotListed,
        peering::Refusal::SameIdentity => PeerRefusal::SameIdentity,
        peering::Refusal::EditionMismatch { .. } => PeerRefusal::EditionMismatch,
    }
}

/// What an active line shows besides the greeting, as its link learns it.
#[derive(Clone, Default)]
struct LinkDetails {
    latency_ms: Option<u64>,
    admin: Option<AdminEndpoint>,
}

/// Shared run-time state of the cluster layer.
pub struct Board {
    writer: Writer,
    network: Network,
    settings: Mutex<ClusterSettings>,
    problems: Mutex<Vec<String>>,
    states: Mutex<BTreeMap<Ipv4Addr, PeerStatus>>,
    /// Live links whose greeting matched: who the writer replicates with.
    links: Mutex<BTreeMap<Conn, PeerId>>,
    /// Numbers the accepted connections (the link machine numbers the dialled ones).
    next_accepted: std::sync::atomic::AtomicU64,
    /// Where to put frames for a peer: its dialled link (shared with the `Router`).
    routes: Arc<Routes>,
    /// This peer's admin API, told to every peer that dials it (again when it changes).
    admin: tokio::sync::watch::Sender<Option<AdminEndpoint>>,
    started: Instant,
    /// Where the links' tasks are spawned and tracked.
    tasks: Tasks,
    /// The derived cluster key's copy (see `cluster_key`).
    key_cache_file: std::path::PathBuf,
    /// When a join last failed (see [`JOIN_RETRY_PAUSE_MS`]).
    join_failed_at: Mutex<Option<Instant>>,
}

impl Board {
    fn new(
        network: Network,
        data_dir: &std::path::Path,
        writer: Writer,
        tasks: &Tasks,
    ) -> Arc<Board> {
        let settings = writer.cluster_settings().borrow().clone();
        Arc::new(Board {
            writer,
            network,
            settings: Mutex::new(settings),
            problems: Mutex::new(Vec::new()),
            states: Mutex::new(BTreeMap::new()),
            links: Mutex::new(BTreeMap::new()),
            next_accepted: std::sync::atomic::AtomicU64::new(0),
            routes: Arc::default(),
            admin: tokio::sync::watch::Sender::new(None),
            started: Instant::now(),
            tasks: tasks.clone(),
            key_cache_file: data_dir.join(cluster_key::KEY_CACHE_FILE),
            join_failed_at: Mutex::new(None),
        })
    }

    /// Whether NTP checks are skipped (tests on machines without time synchronisation).
    pub fn assumes_time_synchronised(&self) -> bool {
        self.network.assume_time_synchronised
    }

    pub fn status(&self) -> ClusterStatus {
        let settings = lock(&self.settings).clone();
        let states = lock(&self.states).clone();
        let peers = settings
            .peers
            .iter()
            .map(|address| {
                let (state, code, refusal) = if Some(*address) == settings.address {
                    (PeerState::ThisSystem, None, None)
                } else {
                    states
                        .get(address)
                        .map(|status| {
                            let refusal = status.refusal.as_ref().map(refusal_code);
                            (status.state.clone(), status.code, refusal)
                        })
                        .unwrap_or((PeerState::Connecting, None, None))
                };
                let mut line = line(*address, state, code);
                line.refusal = refusal;
                line
            })
            .collect();
        ClusterStatus {
            mode: if settings.is_clustered() {
                ClusterMode::Clustered
            } else {
                ClusterMode::Standalone
            },
            cluster_id: settings.cluster_id.map(|id| id.to_hex()),
            peer_id: settings.peer_id.to_hex(),
            problems: lock(&self.problems).clone(),
            peers,
        }
    }

    /// The version of each listed peer refused for running another version than this one.
    pub fn other_versions(&self) -> BTreeMap<Ipv4Addr, String> {
        lock(&self.states)
            .iter()
            .filter_map(|(address, status)| Some((*address, status.other_version()?)))
            .collect()
    }

    /// Where this peer's admin API listens and the certificate it presents, for its peers.
    pub fn set_admin_endpoint(&self, endpoint: AdminEndpoint) {
        self.admin.send_replace(Some(endpoint));
    }

    /// The admin API presents another certificate (the operator's, or the built-in one again).
    pub fn set_admin_certificate(&self, certificate_sha256: String) {
        self.admin.send_if_modified(|admin| match admin {
            Some(endpoint) if endpoint.certificate_sha256 != certificate_sha256 => {
                endpoint.certificate_sha256 = certificate_sha256;
                true
            }
            _ => false,
        });
    }

    fn set_state(&self, address: Ipv4Addr, state: PeerState) {
        let status = PeerStatus { state, code: None, refusal: None, link: None };
        lock(&self.states).insert(address, status);
    }

    /// Shows `address` active on its dialled connection `conn`.
    fn set_active(&self, address: Ipv4Addr, conn: Conn, theirs: &Hello, details: &LinkDetails) {
        let state = PeerState::Active {
            host_name: theirs.host_name.clone(),
            peer_id: theirs.peer_id.to_hex(),
            last_contact_ms: crate::base::clock::now_ms(),
            latency_ms: details.latency_ms,
            admin_port: details.admin.as_ref().map(|admin| admin.port),
            admin_certificate_sha256: details
                .admin
                .as_ref()
                .map(|admin| admin.certificate_sha256.clone()),
        };
        let status = PeerStatus { state, code: None, refusal: None, link: Some(conn) };
        lock(&self.states).insert(address, status);
    }

    /// Updates an active line with what its link learnt, if the line still shows that link.
    fn refresh_active(&self, address: Ipv4Addr, conn: Conn, theirs: &Hello, details: &LinkDetails) {
        let shown = lock(&self.states).get(&address).and_then(|status| status.link);
        if shown == Some(conn) {
            self.set_active(address, conn, theirs, details);
        }
    }

    fn set_failed(&self, address: Ipv4Addr, failure: Failure) {
        lock(&self.states).insert(address, failure.state());
    }

    fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant of a `monotonic_ms` time (the link machine's deadlines).
    fn instant_at(&self, at_ms: u64) -> Instant {
        self.started + Duration::from_millis(at_ms)
    }

    /// Registers a live link; a dialled one is also where frames for `peer` go (`route`).
    fn link(
        self: &Arc<Self>,
        conn: Conn,
        peer: PeerId,
        route: Option<mpsc::Sender<Frame>>,
    ) -> LinkGuard {
        // Checked and inserted under one lock: of two links to one peer landing together, the
        // second sees the first.
        let linked_before = {
            let mut links = lock(&self.links);
            let linked_before = links.values().any(|linked| *linked == peer);
            links.insert(conn, peer);
            linked_before
        };
        if let Some(route) = &route {
            lock(&self.routes).insert(peer, route.clone());
        }
        // A new peer gets the writer's summary anyway. A new route to a peer linked before
        // (its own link came up first and asked) starts a catch-up round: what the writer
        // answered it found no route and was dropped, and nothing else would ask again until
        // the next summary tick.
        let resync = route.is_some() && linked_before;
        self.publish_peers(resync.then_some(peer));
        LinkGuard { board: self.clone(), conn, peer, route }
    }

    /// Tells the writer which peers have a link, then starts a catch-up round with `resync`.
    fn publish_peers(self: &Arc<Self>, resync: Option<PeerId>) {
        let peers: BTreeSet<PeerId> = lock(&self.links).values().copied().collect();
        let writer = self.writer.clone();
        self.tasks.spawn(async move {
            let _ = writer.set_replication_peers(peers.into_iter().collect()).await;
            if let Some(peer) = resync {
                let _ = writer.resync(peer).await;
            }
        });
    }
}

/// Unregisters a link when its task ends, however it ends (error, cancellation, panic).
struct LinkGuard {
    board: Arc<Board>,
    conn: Conn,
    peer: PeerId,
    route: Option<mpsc::Sender<Frame>>,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        lock(&self.board.links).remove(&self.conn);
        if let Some(route) = &self.route {
            // Only its own route: a newer link to the peer may have replaced it already.
            let mut routes = lock(&self.board.routes);
            if routes.get(&self.peer).is_some_and(|current| current.same_channel(route)) {
                routes.remove(&self.peer);
            }
        }
        self.board.publish_peers(None);
    }
}

fn line(address: Ipv4Addr, state: PeerState, code: Option<PeerFailure>) -> PeerLine {
    let mut warnings = Vec::new();
    let text = match &state {
        PeerState::ThisSystem => "This system".to_owned(),
        PeerState::Connecting => "Connecting".to_owned(),
        PeerState::Active { host_name, latency_ms, .. } => {
            if let Some(latency_ms) = latency_ms
                && *latency_ms > LATENCY_WARNING_MS
            {
                warnings.push(format!(
                    "round-trip time {latency_ms} ms is above the {LATENCY_WARNING_MS} ms peers need"
                ));
            }
            format!("Active as {host_name}")
        }
        PeerState::Joining { host_name } => {
            format!("Joining: {host_name} is taking this cluster's configuration")
        }
        PeerState::Failed { reason } => format!("Failed: {reason}"),
    };
    PeerLine { address, state, code, refusal: None, text, warnings }
}

/// Starts the cluster layer for the daemon's lifetime. `data_dir` keeps the derived cluster
/// key (see `cluster_key`).
pub fn spawn(
    network: Network,
    data_dir: &std::path::Path,
    writer: Writer,
    outbound: mpsc::Receiver<Outbound>,
    tasks: &Tasks,
) -> Arc<Board> {
    let board = Board::new(network, data_dir, writer.clone(), tasks);
    let shutdown = tasks.shutdown();
    // The router holds a writer handle; it stops at shutdown, since the writer thread ends
    // only when every handle is gone.
    let router = Router::new(writer.clone(), board.routes.clone(), tasks.clone());
    tasks.spawn(router.run(outbound, shutdown.clone()));
    tasks.spawn(tick(writer.clone(), shutdown.clone()));
    tasks.spawn(supervise(board.clone(), shutdown.clone()));
    board
}

async fn tick(writer: Writer, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_millis(REPLICATION_TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => writer.replication_tick(crate::base::clock::now_ms()),
        }
    }
}

/// What a link's task tells the supervisor.
enum Report {
    /// A dialled connection greeted: what it said, where to put its pings, and what it learns.
    Greeted {
        conn: Conn,
        theirs: Hello,
        pings: mpsc::Sender<()>,
        details: Arc<Mutex<LinkDetails>>,
    },
    /// A connection from `peer` greeted under `generation`; cancelling `cancel` ends it.
    Accepted {
        peer: Ipv4Addr,
        conn: Conn,
        generation: u64,
        cancel: CancellationToken,
    },
    Event(Event<Failure>),
}

type Reports = mpsc::Sender<Report>;

/// A connection the supervisor knows: how to end it, and for a dialled one that greeted, its
/// pings and what its line shows.
struct Handle {
    cancel: CancellationToken,
    greeted: Option<Greeted>,
}

struct Greeted {
    theirs: Hello,
    pings: mpsc::Sender<()>,
    details: Arc<Mutex<LinkDetails>>,
}

/// What dialling needs once clustering may start.
struct Ready {
    address: Ipv4Addr,
    key: Arc<ClusterKey>,
    hello: Arc<Hello>,
}

/// The supervisor's state: the link machine and the connections its actions name.
struct Driver {
    board: Arc<Board>,
    links: Links<Failure>,
    handles: HashMap<Conn, Handle>,
    reports: Reports,
    shutdown: CancellationToken,
    /// Cancelled at every settings change: ends the listener and every connection.
    generation: CancellationToken,
    /// The current generation's accept loop, which holds the peers' listener.
    accepting: Option<tokio::task::JoinHandle<()>>,
    ready: Option<Ready>,
}

/// How long a settings change waits for the previous generation's listener to close before
/// binding the port again.
const LISTENER_HANDOFF_TIMEOUT_MS: u64 = 1_000;

/// Runs the link machine for the daemon's lifetime: feeds it the settings, the reports of the
/// links' tasks and the passing time, and carries out its actions.
async fn supervise(board: Arc<Board>, shutdown: CancellationToken) {
    let (reports, mut inbox) = mpsc::channel(REPORT_QUEUE_MAX);
    let mut settings_rx = board.writer.cluster_settings();
    let mut driver = Driver {
        board: board.clone(),
        links: Links::default(),
        handles: HashMap::new(),
        reports,
        generation: shutdown.child_token(),
        shutdown: shutdown.clone(),
        accepting: None,
        ready: None,
    };
    let settings = settings_rx.borrow_and_update().clone();
    let mut recheck_at = driver.restart(settings).await;
    loop {
        let deadline = driver.links.next_deadline_ms().map(|at_ms| board.instant_at(at_ms));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = settings_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let settings = settings_rx.borrow_and_update().clone();
                recheck_at = driver.restart(settings).await;
            }
            _ = sleep_until(recheck_at) => {
                let settings = settings_rx.borrow().clone();
                recheck_at = driver.restart(settings).await;
            }
            report = inbox.recv() => match report {
                Some(report) => driver.report(report),
                None => break,
            },
            _ = sleep_until(deadline) => driver.feed(Event::Tick),
        }
    }
    driver.generation.cancel();
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Ends every link and starts again from `settings`. When clustering is blocked by a
    /// prerequisite that may come true by itself, when to check again.
    async fn restart(&mut self, settings: ClusterSettings) -> Option<Instant> {
        *lock(&self.board.settings) = settings.clone();
        lock(&self.board.states).clear();
        self.generation.cancel();
        self.generation = self.shutdown.child_token();
        // A listening socket is exclusive (SO_REUSEADDR or not): until the old accept loop
        // has dropped it, binding the port again fails and leaves this peer deaf to its
        // peers' dials until the next settings change.
        if let Some(accepting) = self.accepting.take() {
            let handoff = Duration::from_millis(LISTENER_HANDOFF_TIMEOUT_MS);
            let _ = tokio::time::timeout(handoff, accepting).await;
        }
        let (ready, listener, recheck) = match start(&self.board, &settings).await {
            Ok((ready, listener)) => (Some(ready), listener, false),
            Err(recheck) => (None, None, recheck),
        };
        let members = ready.as_ref().map(|ready| Members {
            own: ready.address,
            peers: settings.peers.iter().copied().collect(),
        });
        self.ready = ready;
        self.feed(Event::Settings(members));
        if let (Some(ready), Some(listener)) = (&self.ready, listener) {
            let listening = Listening {
                key: ready.key.clone(),
                hello: ready.hello.clone(),
                generation: self.links.generation(),
                reports: self.reports.clone(),
            };
            let accepting =
                accept_loop(self.board.clone(), listener, listening, self.generation.clone());
            self.accepting = Some(self.board.tasks.spawn(accepting));
        }
        recheck.then(|| Instant::now() + Duration::from_millis(PREREQUISITE_RECHECK_MS))
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Greeted { conn, theirs, pings, details } => {
                if let Some(handle) = self.handles.get_mut(&conn) {
                    handle.greeted = Some(Greeted { theirs, pings, details });
                }
                self.feed(Event::Greeted { conn });
            }
            Report::Accepted { peer, conn, generation, cancel } => {
                self.handles.insert(conn, Handle { cancel, greeted: None });
                self.feed(Event::Accepted { peer, conn, generation });
            }
            Report::Event(event) => {
                if let Event::Lost { conn, .. } | Event::DialFailed { conn, .. } = &event {
                    self.handles.remove(conn);
                }
                self.feed(event);
            }
        }
    }

    fn feed(&mut self, event: Event<Failure>) {
        let actions = self.links.handle(self.board.monotonic_ms(), event);
        for action in actions {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action<Failure>) {
        match action {
            Action::Dial { peer, conn } => self.dial(peer, conn),
            Action::Close { conn } => {
                if let Some(handle) = self.handles.remove(&conn) {
                    handle.cancel.cancel();
                }
            }
            Action::Ping { conn } => {
                if let Some(greeted) = self.handles.get(&conn).and_then(|h| h.greeted.as_ref()) {
                    let _ = greeted.pings.try_send(());
                }
            }
            Action::Line { peer, line } => self.show(peer, line),
        }
    }

    fn show(&self, peer: Ipv4Addr, line: Line<Failure>) {
        match line {
            Line::Connecting => self.board.set_state(peer, PeerState::Connecting),
            Line::Active { conn } => {
                if let Some(greeted) = self.handles.get(&conn).and_then(|h| h.greeted.as_ref()) {
                    let details = lock(&greeted.details).clone();
                    self.board.set_active(peer, conn, &greeted.theirs, &details);
                    tracing::info!(peer = %peer, host = %greeted.theirs.host_name, "cluster peer active");
                }
            }
            Line::Failed(cause) => self.board.set_failed(peer, Failure::of(cause)),
        }
    }

    /// Dials in a task of its own, ended when the machine closes the connection.
    fn dial(&mut self, peer: Ipv4Addr, conn: Conn) {
        let Some(ready) = &self.ready else {
            // The machine dials only with members, which come with `ready`.
            return;
        };
        let cancel = self.generation.child_token();
        self.handles.insert(conn, Handle { cancel: cancel.clone(), greeted: None });
        let dialling = dial(
            self.board.clone(),
            peer,
            conn,
            (ready.key.clone(), ready.hello.clone()),
            self.reports.clone(),
        );
        self.board.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = dialling => {}
            }
        });
    }
}

/// Checks the prerequisites, makes this peer's greeting and binds the peers' listener. `Err`
/// says whether to check again later (a prerequisite may come true by itself).
async fn start(
    board: &Arc<Board>,
    settings: &ClusterSettings,
) -> Result<(Ready, Option<TcpListener>), bool> {
    let (address, key) = prerequisites(board, settings).await?;
    let mut problems = Vec::new();
    let hello = Arc::new(Hello {
        software_version: crate::base::version::software_version().to_owned(),
        address,
        host_name: settings.host_name.clone(),
        peer_id: settings.peer_id,
        cluster_id: settings.cluster_id,
        peers: settings.peers.clone(),
        edition: settings.edition,
    });
    let listen = SocketAddr::from((address, board.network.port));
    let listener = match bind_freely(listen) {
        Ok(listener) => Some(listener),
        Err(error) => {
            problems.push(format!("cannot listen for peers on {listen}: {error}"));
            None
        }
    };
    if settings.cluster_id.is_none() {
        problems.push(
            "joining: this peer's shared configuration will be replaced by the cluster's when a \
             peer of the cluster answers"
                .to_owned(),
        );
    }
    *lock(&board.problems) = problems;
    Ok((Ready { address, key, hello }, listener))
}

/// Listens on `address` even before it is up on a NIC (`IP_FREEBIND`): batond starts without
/// waiting for the network to be configured, and a failed bind is not retried (only a settings
/// change starts the listener again), so peers would find this one deaf until then.
fn bind_freely(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Connections from peers waiting to be accepted: there are at most two peers.
const LISTEN_BACKLOG: i32 = 16;

/// This peer's address and the cluster key, once clustering is configured and its
/// prerequisites hold; otherwise the problems are on the board and `Err` says whether to check
/// again later (a prerequisite may come true by itself).
async fn prerequisites(
    board: &Arc<Board>,
    settings: &ClusterSettings,
) -> Result<(Ipv4Addr, Arc<ClusterKey>), bool> {
    let blocked = |problem: Option<String>, recheck: bool| {
        *lock(&board.problems) = problem.into_iter().collect();
        recheck
    };
    if !settings.is_clustered() {
        return Err(blocked(None, false));
    }
    let Some(address) = settings.address else {
        return Err(blocked(Some("this peer has no IPv4 address".to_owned()), false));
    };
    let synchronised = board.network.assume_time_synchronised || time_synchronised().await;
    if !synchronised {
        let problem = "time is not synchronised (NTP): peers must agree on time before they \
                       cluster; check System > Time";
        return Err(blocked(Some(problem.to_owned()), true));
    }
    let (passphrase, file) = (settings.pre_shared_key.clone(), board.key_cache_file.clone());
    let derived = tokio::task::spawn_blocking(move || {
        cluster_key::derive_cached(&file, &passphrase, |passphrase| {
            ClusterKey::derive(passphrase).map_err(|error| error.to_string())
        })
    })
    .await;
    match derived.map_err(|error| error.to_string()).and_then(|key| key) {
        Ok(key) => Ok((address, Arc::new(key))),
        Err(error) => {
            Err(blocked(Some(format!("could not derive the cluster key: {error}")), true))
        }
    }
}

/// NTP state as systemd reports it. Without systemd (a development machine) time counts as
/// not synchronised, which is why tests pass `--assume-time-synchronised`.
async fn time_synchronised() -> bool {
    matches!(ntp_synchronised().await, Ok(true))
}

/// How long `timedatectl` gets to answer (it asks systemd-timedated over D-Bus).
const NTP_QUERY_TIMEOUT_MS: u64 = 3_000;

/// Whether `timedatectl` says the clock is synchronised by NTP, or why it cannot tell.
pub(crate) async fn ntp_synchronised() -> Result<bool, String> {
    let query = tokio::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_millis(NTP_QUERY_TIMEOUT_MS), query)
        .await
        .map_err(|_| format!("timedatectl did not answer within {NTP_QUERY_TIMEOUT_MS} ms"))?
        .map_err(|error| format!("timedatectl: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("timedatectl: {}", stderr.trim()));
    }
    Ok(output.stdout.starts_with(b"yes"))
}

/// One dial, then the link until it ends; tells the supervisor how it ended.
async fn dial(
    board: Arc<Board>,
    address: Ipv4Addr,
    conn: Conn,
    (key, hello): (Arc<ClusterKey>, Arc<Hello>),
    reports: Reports,
) {
    let event = match dial_once(&board, address, conn, (&key, &hello), &reports).await {
        Ended::Failed(failure) => Event::DialFailed { conn, failure: Some(failure) },
        Ended::Quiet => Event::DialFailed { conn, failure: None },
        Ended::AfterActive(failure) => Event::Lost { conn, failure },
    };
    let _ = reports.send(Report::Event(event)).await;
}

enum Ended {
    /// Never became active; the reason is the status to show.
    Failed(Failure),
    /// Was active and the link broke.
    AfterActive(Failure),
    /// The state was already set (joining, waiting for a joiner).
    Quiet,
}

/// One connection to a peer: dialled, greeted, then replicated on until it ends.
async fn dial_once(
    board: &Arc<Board>,
    address: Ipv4Addr,
    conn: Conn,
    (key, hello): (&ClusterKey, &Hello),
    reports: &Reports,
) -> Ended {
    let target = board
        .network
        .connect_via
        .get(&address)
        .copied()
        .unwrap_or(SocketAddr::from((address, board.network.port)));
    let connect =
        tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(target));
    let stream = match connect.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Ended::Failed(Failure::unreachable(error)),
        Err(_) => {
            let detail = format!("no answer within {CONNECT_TIMEOUT_MS} ms");
            return Ended::Failed(Failure::unreachable(detail));
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, frames, theirs, _reader) = match greet(board, address, stream, key, hello).await {
        Ok(greeted) => greeted,
        Err(ended) => return ended,
    };
    serve_dialled(board, conn, DialledLink { sender, frames, theirs }, reports).await
}

type Frames = mpsc::Receiver<Result<Frame, String>>;

/// The handshake on a dialled connection: the channel, both greetings and the verdict. Only
/// a peer to replicate with is handed back.
async fn greet(
    board: &Arc<Board>,
    address: Ipv4Addr,
    stream: TcpStream,
    key: &ClusterKey,
    hello: &Hello,
) -> Result<(peering::Sender<TcpStream>, Frames, Hello, AbortOnDrop), Ended> {
    let channel = match Channel::connect(stream, key).await {
        Ok(channel) => channel,
        Err(peering::ChannelError::AuthenticationFailed) => {
            let reason = "authentication failed: the pre-shared keys differ";
            return Err(Ended::Failed(Failure::refused(reason)));
        }
        Err(error) => return Err(Ended::Failed(Failure::unreachable(error))),
    };
    let (mut sender, receiver) = channel.split();
    let (mut frames, reader) = spawn_reader(&board.tasks, receiver);
    if let Err(error) = sender.send(&Frame::Hello(hello.clone()).encode()).await {
        return Err(Ended::Failed(Failure::unreachable(error)));
    }
    let theirs = match first_hello(&mut frames).await {
        Ok(theirs) => theirs,
        Err(failure) => return Err(Ended::Failed(failure)),
    };
    match peering::check(hello, &theirs) {
        Verdict::Refuse(refusal) => {
            let _ = sender.send(&Frame::Refused(refusal.clone()).encode()).await;
            return Err(Ended::Failed(Failure::refusal(&refusal, true)));
        }
        Verdict::Adopt(cluster) => {
            adopt(board, cluster, &theirs).await;
            return Err(Ended::Quiet);
        }
        Verdict::AwaitJoin => {
            board.set_state(address, PeerState::Joining { host_name: theirs.host_name.clone() });
            return Err(Ended::Quiet);
        }
        Verdict::Replicate => {}
    }
    Ok((sender, frames, theirs, reader))
}

/// A dialled connection that greeted.
struct DialledLink {
    sender: peering::Sender<TcpStream>,
    frames: Frames,
    theirs: Hello,
}

/// Tells the supervisor a link hears its peer, at most every `HEARD_REPORT_INTERVAL_MS`.
struct Hearing {
    conn: Conn,
    reported: Option<Instant>,
}

impl Hearing {
    async fn heard(&mut self, reports: &Reports) {
        let due = self
            .reported
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(HEARD_REPORT_INTERVAL_MS));
        if due {
            self.reported = Some(Instant::now());
            let _ = reports.send(Report::Event(Event::Heard { conn: self.conn })).await;
        }
    }
}

/// Replicates on a dialled link until it breaks, sending the pings the supervisor asks for
/// and keeping what its line shows up to date.
async fn serve_dialled(
    board: &Arc<Board>,
    conn: Conn,
    link: DialledLink,
    reports: &Reports,
) -> Ended {
    let DialledLink { mut sender, mut frames, theirs } = link;
    let (link_tx, mut link_rx) = mpsc::channel(LINK_QUEUE_MAX);
    let (pings, mut ping_rx) = mpsc::channel(PING_QUEUE_MAX);
    let details = Arc::new(Mutex::new(LinkDetails::default()));
    let _guard = board.link(conn, theirs.peer_id, Some(link_tx));
    let greeted = Report::Greeted { conn, theirs: theirs.clone(), pings, details: details.clone() };
    if reports.send(greeted).await.is_err() {
        return Ended::Quiet;
    }
    let mut hearing = Hearing { conn, reported: None };
    loop {
        let outgoing = tokio::select! {
            frame = frames.recv() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(reason)) => return Ended::AfterActive(Failure::lost(Some(&reason))),
                    None => return Ended::AfterActive(Failure::lost(None)),
                };
                hearing.heard(reports).await;
                match frame {
                    Frame::Pong { sent_ms } => {
                        lock(&details).latency_ms =
                            Some(board.monotonic_ms().saturating_sub(sent_ms));
                    }
                    Frame::AdminEndpoint(endpoint) => lock(&details).admin = Some(endpoint),
                    Frame::Refused(refusal) => {
                        return Ended::AfterActive(Failure::refusal(&refusal, false));
                    }
                    _ => continue,
                }
                let details = lock(&details).clone();
                board.refresh_active(theirs.address, conn, &theirs, &details);
                continue;
            }
            frame = link_rx.recv() => frame,
            ping = ping_rx.recv() => ping.map(|()| Frame::Ping { sent_ms: board.monotonic_ms() }),
        };
        let Some(frame) = outgoing else {
            return Ended::AfterActive(Failure::lost(None));
        };
        if let Err(error) = sender.send(&frame.encode()).await {
            return Ended::AfterActive(Failure::lost(Some(&error)));
        }
    }
}

/// What the accepted connections of one generation need.
#[derive(Clone)]
struct Listening {
    key: Arc<ClusterKey>,
    hello: Arc<Hello>,
    generation: u64,
    reports: Reports,
}

async fn accept_loop(
    board: Arc<Board>,
    listener: TcpListener,
    listening: Listening,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let serve =
                    serve_accepted(board.clone(), stream, from, listening.clone(), cancel.clone());
                let cancel = cancel.clone();
                board.tasks.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = serve => {}
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a peer connection failed");
                // Still ends at once with its generation, which waits for it to free the port.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(RETRY_FIRST_MS)) => {}
                }
            }
        }
    }
}

/// Refused cluster connections are logged once per source per interval (with how many were
/// not), so a flood on the cluster port cannot flood the journal.
static REFUSALS_LOGGED: std::sync::LazyLock<crate::base::log_limit::LogLimit> =
    std::sync::LazyLock::new(Default::default);

async fn serve_accepted(
    board: Arc<Board>,
    stream: TcpStream,
    from: SocketAddr,
    listening: Listening,
    generation: CancellationToken,
) {
    let Listening { key, hello, reports, .. } = &listening;
    let Some((mut sender, frames, theirs, _reader)) = greeted(&board, stream, from, key).await
    else {
        return;
    };
    let verdict = peering::check(hello, &theirs);
    // A link is reported before this peer greets back, so the supervisor hears of it before
    // the dialler can give it up and dial again (the newest accepted link is the one kept).
    let link = match &verdict {
        Verdict::Replicate => {
            let number = board.next_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (conn, cancel) = (Conn::Accepted(number), generation.child_token());
            let peer = theirs.address;
            let accepted = Report::Accepted {
                peer,
                conn,
                generation: listening.generation,
                cancel: cancel.clone(),
            };
            if reports.send(accepted).await.is_err() {
                return;
            }
            Some((conn, cancel))
        }
        _ => None,
    };
    if sender.send(&Frame::Hello(hello.as_ref().clone()).encode()).await.is_err() {
        return;
    }
    match verdict {
        Verdict::Refuse(refusal) => {
            tracing::warn!(%from, peer = %theirs.address, %refusal, "cluster peer refused");
            let _ = sender.send(&Frame::Refused(refusal).encode()).await;
            return;
        }
        Verdict::Adopt(cluster) => {
            adopt(&board, cluster, &theirs).await;
            return;
        }
        Verdict::AwaitJoin | Verdict::Replicate => {}
    }
    let Some((conn, cancel)) = link else { return };
    let link = AcceptedLink { from, conn, sender, frames };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = serve_accepted_link(&board, link, &theirs, reports) => {}
    }
}

/// The handshake on an accepted connection, up to the dialler's greeting; failures are
/// logged (rate-limited) and end the connection.
async fn greeted(
    board: &Board,
    stream: TcpStream,
    from: SocketAddr,
    key: &ClusterKey,
) -> Option<(peering::Sender<TcpStream>, Frames, Hello, AbortOnDrop)> {
    let channel = match Channel::accept(stream, key).await {
        Ok(channel) => channel,
        Err(error) => {
            if let Some(suppressed) = REFUSALS_LOGGED.allow(from.ip(), crate::base::clock::now_ms())
            {
                tracing::warn!(%from, %error, suppressed, "cluster connection refused");
            }
            return None;
        }
    };
    let (sender, receiver) = channel.split();
    let (mut frames, reader) = spawn_reader(&board.tasks, receiver);
    match first_hello(&mut frames).await {
        Ok(theirs) => Some((sender, frames, theirs, reader)),
        Err(failure) => {
            let reason = failure.reason;
            if let Some(suppressed) = REFUSALS_LOGGED.allow(from.ip(), crate::base::clock::now_ms())
            {
                tracing::warn!(%from, %reason, suppressed, "cluster connection without a greeting");
            }
            None
        }
    }
}

/// An accepted connection that greeted.
struct AcceptedLink {
    from: SocketAddr,
    conn: Conn,
    sender: peering::Sender<TcpStream>,
    frames: Frames,
}

/// Receives on an accepted link until it breaks or the supervisor closes it: replication
/// messages go to the writer, pings are answered, and the dialler is told where this peer's
/// admin API is.
async fn serve_accepted_link(
    board: &Arc<Board>,
    link: AcceptedLink,
    theirs: &Hello,
    reports: &Reports,
) {
    let AcceptedLink { from, conn, mut sender, mut frames } = link;
    let peer = theirs.peer_id;
    let _guard = board.link(conn, peer, None);
    // The dialler shows this peer's line, so it is told where this peer's admin API is.
    let mut admin = board.admin.subscribe();
    admin.mark_changed();
    let mut hearing = Hearing { conn, reported: None };
    let failure = loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            changed = admin.changed() => {
                // The board owns the sender, so it outlives this link; an error is unreachable.
                if changed.is_err() {
                    break Failure::lost(None);
                }
                let endpoint = admin.borrow_and_update().clone();
                if let Some(endpoint) = endpoint
                    && let Err(error) = sender.send(&Frame::AdminEndpoint(endpoint).encode()).await
                {
                    break Failure::lost(Some(&error));
                }
                continue;
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(reason)) => {
                tracing::info!(%from, %reason, "cluster link closed");
                break Failure::lost(Some(&reason));
            }
            None => break Failure::lost(None),
        };
        hearing.heard(reports).await;
        if !answer_frame(board, from, peer, &mut sender, frame).await {
            break Failure::lost(None);
        }
    };
    let _ = reports.send(Report::Event(Event::Lost { conn, failure })).await;
}

/// Handles one frame on an accepted link; `false` ends the link.
async fn answer_frame(
    board: &Board,
    from: SocketAddr,
    peer: PeerId,
    sender: &mut peering::Sender<TcpStream>,
    frame: Frame,
) -> bool {
    match frame {
        Frame::Replication(bytes) => match replication::Message::decode(&bytes) {
            Ok(message) => board.writer.replicate(peer, message).await.is_ok(),
            Err(error) => {
                tracing::warn!(%from, %error, "malformed replication message; closing the link");
                false
            }
        },
        Frame::Ping { sent_ms } => sender.send(&Frame::Pong { sent_ms }.encode()).await.is_ok(),
        Frame::Refused(refusal) => {
            tracing::warn!(%from, %refusal, "cluster peer refuses this peer");
            false
        }
        Frame::Hello(_) | Frame::Pong { .. } | Frame::AdminEndpoint(_) => true,
    }
}

/// Replaces this peer's shared configuration with the cluster's (see `Store::join_cluster`).
/// The settings then change, so every link restarts with the new identity.
/// After a failure, the next attempt waits [`JOIN_RETRY_PAUSE_MS`].
async fn adopt(board: &Arc<Board>, cluster: ClusterId, member: &Hello) {
    if !join_may_start(*lock(&board.join_failed_at), Instant::now()) {
        return;
    }
    match board.writer.join_cluster(cluster, crate::base::clock::now_ms()).await {
        Ok(kept) => tracing::warn!(
            %cluster, via = %member.address, kept = %kept.display(),
            "joined the cluster; shared configuration replaced by the cluster's"
        ),
        Err(crate::store::StoreError::AlreadyInCluster) => {}
        Err(error) => {
            *lock(&board.join_failed_at) = Some(Instant::now());
            tracing::error!(%error, retry_in_ms = JOIN_RETRY_PAUSE_MS, "joining the cluster failed");
        }
    }
}

/// Whether a join may be tried at `now`, the last one having failed at `failed_at`.
fn join_may_start(failed_at: Option<Instant>, now: Instant) -> bool {
    let pause = Duration::from_millis(JOIN_RETRY_PAUSE_MS);
    failed_at.is_none_or(|failed_at| now.saturating_duration_since(failed_at) >= pause)
}

async fn first_hello(frames: &mut mpsc::Receiver<Result<Frame, String>>) -> Result<Hello, Failure> {
    let first = tokio::time::timeout(
        Duration::from_millis(peering::channel::HANDSHAKE_TIMEOUT_MS),
        frames.recv(),
    )
    .await;
    match first {
        Ok(Some(Ok(Frame::Hello(hello)))) => Ok(hello),
        Ok(Some(Ok(Frame::Refused(refusal)))) => Err(Failure::refusal(&refusal, false)),
        Ok(Some(Ok(_))) => Err(Failure::refused("the peer did not greet first")),
        Ok(Some(Err(reason))) => Err(Failure::unreachable(reason)),
        Ok(None) => Err(Failure::unreachable("connection closed during the greeting")),
        Err(_) => Err(Failure::unreachable("no greeting in time")),
    }
}

/// Aborts the reading task when the connection's handler ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads and decodes frames in a task of its own (receiving is not cancel-safe).
fn spawn_reader(
    tasks: &Tasks,
    mut receiver: peering::Receiver<TcpStream>,
) -> (mpsc::Receiver<Result<Frame, String>>, AbortOnDrop) {
    let (tx, rx) = mpsc::channel(RECEIVE_QUEUE_MAX);
    let task = tasks.spawn(async move {
        loop {
            let frame = match receiver.recv().await {
                Ok(bytes) => {
                    Frame::decode(&bytes).map_err(|error| format!("malformed frame: {error}"))
                }
                Err(error) => Err(error.to_string()),
            };
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

#[cfg(test)]
mod tests {
    use super::{Failure, JOIN_RETRY_PAUSE_MS, PeerFailure, bind_freely, join_may_start, line};
    use std::time::{Duration, Instant};

    // Goal: a failed join is not tried again before the pause, however often members greet;
    // the first join, and one after the pause, go ahead.
    #[test]
    fn a_failed_join_waits_a_pause_before_the_next_attempt() {
        let failed_at = Instant::now();
        let pause = Duration::from_millis(JOIN_RETRY_PAUSE_MS);
        assert!(join_may_start(None, failed_at));
        assert!(!join_may_start(Some(failed_at), failed_at + Duration::from_millis(3)));
        assert!(!join_may_start(Some(failed_at), failed_at + pause - Duration::from_millis(1)));
        assert!(join_may_start(Some(failed_at), failed_at + pause));
    }

    // Goal: the peers' listener binds the operator's cluster address even while that address
    // is not yet on a NIC (batond starts before the network is configured); a plain bind
    // fails there with "cannot assign requested address".
    #[tokio::test]
    async fn the_peers_listener_binds_an_address_not_yet_on_this_machine() {
        // TEST-NET-1: on no NIC of a test machine.
        let absent = std::net::SocketAddr::from(([192, 0, 2, 77], 0));
        assert!(std::net::TcpListener::bind(absent).is_err(), "192.0.2.77 is on this machine");
        let listener = bind_freely(absent).expect("bound with IP_FREEBIND");
        assert_eq!(listener.local_addr().expect("address").ip(), absent.ip());
    }

    // Goal: a version refusal, by either side, names the other peer's version (what the
    // version-mismatch alarm shows); other refusals name none.
    #[test]
    fn a_version_refusal_names_the_other_peers_version() {
        let refusal =
            peering::Refusal::VersionMismatch { ours: "1.0.0".into(), theirs: "2.0.0".into() };
        let other = |failure: Failure| failure.state().other_version();
        assert_eq!(other(Failure::refusal(&refusal, true)).as_deref(), Some("2.0.0"));
        assert_eq!(other(Failure::refusal(&refusal, false)).as_deref(), Some("1.0.0"));
        assert_eq!(other(Failure::refusal(&peering::Refusal::DifferentCluster, false)), None);
    }

    // Goal: a failed peer's line carries a typed code beside its text, and only a refusal
    // counts as one that will not clear by itself (what the join and the rolling upgrade ask).
    #[test]
    fn failed_peer_lines_carry_a_typed_code() {
        let address = std::net::Ipv4Addr::new(127, 0, 0, 2);
        let cases = [
            (Failure::unreachable("connection refused"), "unreachable", true),
            (Failure::lost(None), "connection_lost", true),
            (Failure::refused("the peer refuses: different cluster"), "refused", false),
        ];
        for (failure, code, transient) in cases {
            assert_eq!(failure.code.is_transient(), transient, "{code}");
            let status = failure.state();
            let shown =
                serde_json::to_value(line(address, status.state, status.code)).expect("JSON");
            assert_eq!(shown["state"], "failed");
            assert_eq!(shown["code"], code);
            assert!(shown["text"].as_str().is_some_and(|text| text.starts_with("Failed: ")));
        }
        assert!(!PeerFailure::Refused.is_transient());
    }

    mod link_order {
        #![allow(clippy::unwrap_used)]

        use super::super::{Board, Conn, Network, Router};
        use crate::base::tasks::Tasks;
        use crate::store::{DATABASE_FILE, Outbound, Store, Writer};
        use model::{Command, RecordKind};
        use peering::Frame;
        use std::time::Duration;
        use tokio::sync::mpsc;
        use tokio_util::sync::CancellationToken;

        const CHANGES: usize = 30;
        /// No summary tick runs here: only a catch-up round can deliver.
        const DELIVERY_TIMEOUT_MS: u64 = 5_000;

        fn writer(dir: &tempfile::TempDir) -> (Writer, mpsc::Receiver<Outbound>) {
            let (store, _) = Store::open(&dir.path().join(DATABASE_FILE)).unwrap();
            let (outbound_tx, outbound) = mpsc::channel(1_024);
            let (writer, _thread) = Writer::spawn(store, outbound_tx).unwrap();
            (writer, outbound)
        }

        // Goal: a restarted peer behind is caught up at once when its own link came up before
        // the other peer's dial back: the answer to its first summary found no route and was
        // dropped, and without a summary tick nothing else would ask again.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_peer_whose_link_came_up_first_is_caught_up_when_the_dial_back_lands() {
            let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let ((a, mut a_outbound), (b, mut b_outbound)) = (writer(&dir_a), writer(&dir_b));
            let (a_id, b_id) = (a.peer_id(), b.peer_id());
            for index in 0..CHANGES {
                let command = Command::Create(crate::store::tests::bridge(&format!("b{index}")));
                a.execute("admin", command, 1_000 + index as u64).await.unwrap();
            }
            let tasks = Tasks::new(CancellationToken::new());
            let network = Network {
                port: 0,
                connect_via: Default::default(),
                assume_time_synchronised: true,
            };
            let board = Board::new(network, dir_a.path(), a.clone(), &tasks);

            // B's link to A comes up first: A accepts it, and B sends its summary on it.
            let _accepted = board.link(Conn::Accepted(1), b_id, None);
            // The board tells the writer from a task of its own: queued here, A knows B before
            // B's summary arrives.
            a.set_replication_peers(vec![b_id]).await.unwrap();
            b.set_replication_peers(vec![a_id]).await.unwrap();
            let (_, summary) = b_outbound.recv().await.unwrap();
            a.replicate(b_id, summary).await.unwrap();
            // A answers before its own link to B exists: what the router does with no route.
            while let Ok(Some(_dropped)) =
                tokio::time::timeout(Duration::from_millis(100), a_outbound.recv()).await
            {
            }

            // A's dial back lands: from now on A's messages reach B, B's reach A.
            let (link_tx, mut link_rx) = mpsc::channel(64);
            let router = Router::new(a.clone(), board.routes.clone(), tasks.clone());
            tasks.spawn(router.run(a_outbound, tasks.shutdown().clone()));
            let b_writer = b.clone();
            tasks.spawn(async move {
                while let Some(Frame::Replication(bytes)) = link_rx.recv().await {
                    let message = replication::Message::decode(&bytes).unwrap();
                    let _ = b_writer.replicate(a_id, message).await;
                }
            });
            let a_writer = a.clone();
            tasks.spawn(async move {
                while let Some((_, message)) = b_outbound.recv().await {
                    let _ = a_writer.replicate(b_id, message).await;
                }
            });
            let _link = board.link(Conn::Dialled(1), b_id, Some(link_tx));

            let mut state = b.state_watch();
            let all_there =
                state.wait_for(|state| state.list(RecordKind::Bridge).count() == CHANGES);
            let waited =
                tokio::time::timeout(Duration::from_millis(DELIVERY_TIMEOUT_MS), all_there).await;
            let held = b.state_watch().borrow().list(RecordKind::Bridge).count();
            assert!(waited.is_ok(), "B holds {held} of {CHANGES} changes without a tick");
            tasks.shutdown().cancel();
        }
    }
}

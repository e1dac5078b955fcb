//! Deterministic simulation of three peers replicating through [`Replicator`], on real
//! (in-memory) event logs. A seed decides everything: writes, message loss, duplication and
//! delay (hence reordering), partitions, crashes and restarts, and each peer's clock skew.
//! After a chaotic phase the network heals; then every peer must hold every acknowledged
//! shared event, verify its chains, and fold to the same shared configuration, and no
//! peer-local event may ever have been sent.
//!
//! A failure prints `BATON_SIM_SEED=<seed>`; run with that variable set to replay exactly that
//! run. `BATON_SIM_SEEDS=<n>` runs more seeds (CI's slow run uses 3,000). Seeds run on every
//! core, each seed alone on one thread, so a seed replays the same whatever the parallelism.
#![allow(clippy::unwrap_used)]

use super::*;
use eventlog::NewEvent;
use model::record::{Location, Ntp};
use model::rng::SeededRng as Rng;
use model::{Command, Event, HybridClock, Record, RecordKey, RecordKind, Scope, Stamp, State};

const PEERS: u8 = 3;
const CHAOS_STEPS: u64 = 400;
const STEP_MS: u64 = 5;
const HEAL_MS: u64 = 20 * SUMMARY_INTERVAL_MS;
/// Seeds of the default run (`cargo xtask test`): about 5 s on one core of a small machine.
const SEEDS_DEFAULT: u64 = 300;
/// Seeds of the slow run (`cargo xtask test --slow`, CI): about 64 s on a 2-core machine beside
/// the other tests. 10,000 took about 8 minutes of CI's 90 beside the other simulation and
/// has found no failure.
const SEEDS_SLOW: u64 = 3_000;
/// Threads the seeds are shared among, at most.
const SIM_THREADS_MAX: usize = 8;

struct Node {
    id: PeerId,
    log: EventLog,
    state: State,
    clock: HybridClock,
    replicator: Replicator,
    up: bool,
    skew_ms: u64,
}

fn peer(index: u8) -> PeerId {
    PeerId([index + 1; 16])
}

impl Node {
    fn new(index: u8, skew_ms: u64) -> Node {
        let id = peer(index);
        Node {
            id,
            log: EventLog::open_in_memory(id).unwrap(),
            state: State::default(),
            clock: HybridClock::default(),
            replicator: Replicator::new(id, (0..PEERS).map(peer)),
            up: true,
            skew_ms,
        }
    }

    /// A restart: soft state is rebuilt from the durable log.
    fn restart(&mut self) {
        self.state = fold(&self.log);
        self.clock = HybridClock::new(self.log.max_hlc().unwrap());
        self.replicator = Replicator::new(self.id, (0..PEERS).map(peer));
        self.up = true;
    }

    fn apply(&mut self, events: &[StoredEvent]) {
        for stored in events {
            let event = Event::decode(&stored.kind, stored.version, &stored.payload).unwrap();
            self.state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
            self.clock.observe(stored.hlc);
        }
    }
}

fn fold(log: &EventLog) -> State {
    let mut state = State::default();
    for stored in log.read_after(0, usize::MAX).unwrap() {
        let event = Event::decode(&stored.kind, stored.version, &stored.payload).unwrap();
        state.apply(Stamp { hlc: stored.hlc, origin: stored.origin }, &event);
    }
    state
}

fn shared_records(state: &State) -> Vec<Record> {
    state.records().filter(|r| r.kind().scope() == Scope::Shared).cloned().collect()
}

struct InFlight {
    deliver_at_ms: u64,
    from: PeerId,
    to: PeerId,
    message: Message,
}

struct Sim {
    rng: Rng,
    now_ms: u64,
    nodes: Vec<Node>,
    network: Vec<InFlight>,
    /// Nodes cut off from the others, if any.
    isolated: Option<PeerId>,
    chaos: bool,
    acknowledged: Vec<(PeerId, u64)>,
    sent_messages: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        // Up to two seconds of skew: HLCs must keep causality anyway.
        let nodes = (0..PEERS).map(|i| Node::new(i, rng.below(2_000))).collect();
        Sim {
            rng,
            now_ms: 1_000_000,
            nodes,
            network: Vec::new(),
            isolated: None,
            chaos: true,
            acknowledged: Vec::new(),
            sent_messages: 0,
        }
    }

    fn index(&self, id: PeerId) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    fn send(&mut self, from: PeerId, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, message } => {
                    if let Message::Events { events } = &message {
                        assert!(
                            events.iter().all(|e| e.stream == Stream::Shared),
                            "a peer-local event was sent"
                        );
                    }
                    self.sent_messages += 1;
                    let copies = if self.chaos && self.rng.chance(5) { 2 } else { 1 };
                    for _ in 0..copies {
                        if self.chaos && self.rng.chance(10) {
                            continue; // lost
                        }
                        let delay_ms =
                            if self.chaos { 1 + self.rng.below(60) } else { 1 + self.rng.below(5) };
                        self.network.push(InFlight {
                            deliver_at_ms: self.now_ms + delay_ms,
                            from,
                            to,
                            message: message.clone(),
                        });
                    }
                }
                Output::Applied { events } => {
                    let index = self.index(from);
                    self.nodes[index].apply(&events);
                }
            }
        }
    }

    fn write(&mut self, index: usize) {
        let name = format!("room-{}", self.rng.below(4));
        let command = match self.rng.below(10) {
            0 => Command::Remove(RecordKey { kind: RecordKind::Location, name }),
            1 => Command::Save(Record::Ntp(Ntp {
                servers: vec![format!("ntp{}.example.com", self.rng.below(9))],
            })),
            _ => Command::Save(Record::Location(Location {
                name,
                description: format!("v{}", self.rng.below(1_000)),
            })),
        };
        let node = &mut self.nodes[index];
        let Ok(events) = node.state.decide(&command) else { return };
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                let encoded = event.encode();
                NewEvent {
                    stream: if event.scope() == Scope::Shared {
                        Stream::Shared
                    } else {
                        Stream::Local
                    },
                    hlc: node.clock.tick(self.now_ms + node.skew_ms),
                    actor: "sim".to_owned(),
                    kind: encoded.kind,
                    version: encoded.version,
                    payload: encoded.payload,
                }
            })
            .collect();
        let stored = node.log.append(&new_events).unwrap();
        node.apply(&stored);
        let id = node.id;
        self.acknowledged.extend(
            stored.iter().filter(|e| e.stream == Stream::Shared).map(|e| (e.origin, e.seq)),
        );
        let outputs = self.nodes[index].replicator.appended(&stored);
        self.send(id, outputs);
    }

    fn step(&mut self) {
        self.now_ms += STEP_MS;
        if self.chaos {
            if self.rng.chance(2) {
                self.isolated = if self.rng.chance(50) {
                    Some(peer(self.rng.below(PEERS as u64) as u8))
                } else {
                    None
                };
            }
            let index = self.rng.below(PEERS as u64) as usize;
            if self.nodes[index].up && self.rng.chance(1) {
                self.nodes[index].up = false; // crash: in-flight messages to it are lost
            } else if !self.nodes[index].up && self.rng.chance(10) {
                self.nodes[index].restart();
            }
            for index in 0..self.nodes.len() {
                if self.nodes[index].up && self.rng.chance(15) {
                    self.write(index);
                }
            }
        }
        // Deliver what is due, in a seeded order among equals.
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| m.deliver_at_ms <= self.now_ms);
        self.network = later;
        for message in due {
            let (from, to) = (self.index(message.from), self.index(message.to));
            let cut = self
                .isolated
                .is_some_and(|isolated| (message.from == isolated) != (message.to == isolated));
            if !self.nodes[to].up || !self.nodes[from].up || cut {
                continue;
            }
            let node = &mut self.nodes[to];
            let outputs =
                node.replicator.receive(message.from, message.message, &mut node.log).unwrap();
            let id = node.id;
            self.send(id, outputs);
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].up {
                let node = &mut self.nodes[index];
                let outputs = node.replicator.tick(self.now_ms + node.skew_ms, &node.log);
                let id = node.id;
                self.send(id, outputs);
            }
        }
    }

    fn heal(&mut self) {
        self.chaos = false;
        self.isolated = None;
        for node in &mut self.nodes {
            if !node.up {
                node.restart();
            }
        }
        let until = self.now_ms + HEAL_MS;
        while self.now_ms < until {
            self.step();
        }
    }

    fn check(&self) -> Result<(), String> {
        let reference = shared_records(&self.nodes[0].state);
        for node in &self.nodes {
            node.log.verify().map_err(|e| format!("{:?}: chain does not verify: {e}", node.id))?;
            let heads = shared_heads(&node.log);
            for (origin, seq) in &self.acknowledged {
                if heads.get(origin).copied().unwrap_or(0) < *seq {
                    return Err(format!("{:?} lacks acknowledged event {origin:?}#{seq}", node.id));
                }
            }
            if heads != shared_heads(&self.nodes[0].log) {
                return Err(format!(
                    "heads differ: {:?} vs {:?}",
                    heads,
                    shared_heads(&self.nodes[0].log)
                ));
            }
            if shared_records(&node.state) != reference {
                return Err(format!("{:?} folded to a different configuration", node.id));
            }
            if shared_records(&fold(&node.log)) != reference {
                return Err(format!(
                    "{:?}: its log folds to something else than its live state",
                    node.id
                ));
            }
            let foreign_local = node
                .log
                .heads()
                .keys()
                .any(|(origin, stream)| *stream == Stream::Local && *origin != node.id);
            if foreign_local {
                return Err(format!("{:?} holds another peer's local events", node.id));
            }
        }
        Ok(())
    }
}

fn run(seed: u64) -> Result<(u64, u64), String> {
    let mut sim = Sim::new(seed);
    for _ in 0..CHAOS_STEPS {
        sim.step();
    }
    sim.heal();
    sim.check()?;
    Ok((sim.acknowledged.len() as u64, sim.sent_messages))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("BATON_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let default =
        if std::env::var_os("BATON_SLOW_TESTS").is_some() { SEEDS_SLOW } else { SEEDS_DEFAULT };
    let count =
        std::env::var("BATON_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    (1..=count).collect()
}

// Goal: whatever the chaos, once the network heals all peers hold every acknowledged change
// and agree on the shared configuration; local settings never travel.
#[test]
fn peers_converge_after_loss_reordering_partitions_crashes_and_skew() {
    let seeds = seeds();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let writes = std::sync::atomic::AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(SIM_THREADS_MAX);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&seed) =
                    seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    match run(seed) {
                        Ok((acknowledged, _)) => {
                            writes.fetch_add(acknowledged, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(problem) => failures.lock().unwrap().push((seed, problem)),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some((seed, problem)) = failures.first() {
        panic!(
            "simulation failed for {} of {} seeds; the first: {problem}\nreplay with \
             BATON_SIM_SEED={seed}",
            failures.len(),
            seeds.len()
        );
    }
    assert!(writes.into_inner() > 0, "the simulation made no writes");
}

// Goal: a seed replays exactly (same writes, same traffic), so a printed seed is a repro.
#[test]
fn a_seed_replays_exactly() {
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

// Goal: a message from a peer outside the cluster is refused and stores nothing.
#[test]
fn strangers_are_refused() {
    let mut node = Node::new(0, 0);
    let stranger = PeerId([99; 16]);
    let error = node
        .replicator
        .receive(stranger, Message::Summary { heads: BTreeMap::new() }, &mut node.log)
        .unwrap_err();
    assert!(matches!(error, Error::UnknownPeer { .. }));
    assert_eq!(node.log.last_position(), 0);
}

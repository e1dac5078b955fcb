//! Metrics for a monitoring system, in the Prometheus text exposition format (version 0.0.4).
//!
//! The policy path only bumps atomics ([`PolicyMetrics`]): a fixed table of counters by
//! decision and HTTP status and a fixed-bucket latency histogram, so a call takes no lock for
//! them; each thread bumps its own shard of them, summed when scraped. Everything else (bridges, ports, peers, the log, backups, upgrades, alarms) is read
//! when scraped ([`render`]). The format is written here rather than through a registry crate
//! because the per-request counters must stay lock-free and the gauges are read from the
//! services at scrape time; [`Exposition`] escapes label values and help text as the format
//! requires, and a test runs `promtool check metrics` on a live daemon's output.

use super::App;
use super::alarms::AlarmId;
use policy::{Decision, RejectReason};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `decision` label of a policy request: what Baton answered, or `none` when the request
/// got no decision (refused credentials, unreadable request, shutting down).
pub const DECISIONS: [&str; 10] = [
    "route",
    "not_handled",
    "no_matching_alias",
    "no_capacity",
    "bridge_failure",
    "maintenance",
    "conference_name_too_long",
    "invalid_conference_name",
    "internal",
    "none",
];

/// The `status` label: the HTTP statuses the policy path answers, then anything else.
pub const STATUSES: [u16; 6] = [200, 400, 401, 429, 503, 0];

/// Upper bounds of the decision latency histogram's buckets, in microseconds (1 ms to the
/// decision deadline of 10 s).
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// Shards of the per-call counters. A thread bumps its own shard: two threads answering calls
/// at once would otherwise take each other's cache lines on every call (three atomic adds).
/// Shards go to threads in the order of their first call, whichever listener they serve, so
/// with more threads than shards two busy ones may share one: that only costs that again.
const SHARDS: usize = 8;

/// Counters the policy service bumps on every call, without a lock.
#[derive(Default)]
pub struct PolicyMetrics {
    shards: [Shard; SHARDS],
    /// Conferences created (or adopted) on a bridge and recorded.
    pub conferences_created: AtomicU64,
    /// Creations that found no bridge to host the conference.
    pub conference_creation_failures: AtomicU64,
}

/// One thread's counters, on cache lines of its own (128 bytes: adjacent lines are fetched in
/// pairs).
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUSES.len()]; DECISIONS.len()],
    /// Requests whose latency fell in each bucket (not cumulative; summed when rendered).
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// This thread's shard: each thread takes the next at its first call.
fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

/// The `decision` label's index for an answer (`None`: no decision).
pub fn decision_index(decision: Option<&Decision>) -> usize {
    let label = match decision {
        None => "none",
        Some(Decision::Route { .. }) => "route",
        Some(Decision::Create { .. }) => "internal",
        Some(Decision::Reject(reason)) => match reason {
            RejectReason::NotHandled => "not_handled",
            RejectReason::NoMatchingAlias => "no_matching_alias",
            RejectReason::NoCapacity => "no_capacity",
            RejectReason::BridgeFailure => "bridge_failure",
            RejectReason::Maintenance => "maintenance",
            RejectReason::ConferenceNameTooLong => "conference_name_too_long",
            RejectReason::InvalidConferenceName => "invalid_conference_name",
        },
    };
    DECISIONS.iter().position(|known| *known == label).unwrap_or(DECISIONS.len() - 1)
}

impl PolicyMetrics {
    /// Counts one policy request: its decision (see [`decision_index`]), the HTTP status
    /// answered and how long it took.
    pub fn observe(&self, decision: usize, status: u16, elapsed_us: u64) {
        let shard = &self.shards[shard_index()];
        let status =
            STATUSES.iter().position(|known| *known == status).unwrap_or(STATUSES.len() - 1);
        if let Some(row) = shard.requests.get(decision) {
            row[status].fetch_add(1, Ordering::Relaxed);
        }
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| elapsed_us <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        shard.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.latency_sum_us.fetch_add(elapsed_us, Ordering::Relaxed);
    }

    /// A counter's sum over the shards.
    fn total(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|shard| counter(shard).load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut Exposition) {
        out.family(
            "baton_policy_requests_total",
            "counter",
            "Policy requests from the VCS, by decision and HTTP status",
        );
        for (decision_index, decision) in DECISIONS.iter().enumerate() {
            for (status_index, status) in STATUSES.iter().enumerate() {
                let count = self.total(|shard| &shard.requests[decision_index][status_index]);
                let status = if *status == 0 { "other".to_owned() } else { status.to_string() };
                let labels = [("decision", *decision), ("status", status.as_str())];
                out.sample("baton_policy_requests_total", &labels, count);
            }
        }
        let name = "baton_policy_decision_duration_seconds";
        out.family(name, "histogram", "Time from a policy request to its answer");
        let mut cumulative = 0;
        for index in 0..=LATENCY_BUCKETS_US.len() {
            cumulative += self.total(|shard| &shard.latency_buckets[index]);
            let bound =
                LATENCY_BUCKETS_US.get(index).map_or_else(|| "+Inf".to_owned(), |us| seconds(*us));
            out.sample(&format!("{name}_bucket"), &[("le", bound.as_str())], cumulative);
        }
        let sum = seconds(self.total(|shard| &shard.latency_sum_us));
        out.line(&format!("{name}_sum"), &[], &sum);
        out.sample(&format!("{name}_count"), &[], cumulative);
        out.counter(
            "baton_conferences_created_total",
            "Conferences this peer created (or adopted) on a bridge",
            self.conferences_created.load(Ordering::Relaxed),
        );
        out.counter(
            "baton_conference_creation_failures_total",
            "Conferences this peer could not create on any bridge",
            self.conference_creation_failures.load(Ordering::Relaxed),
        );
    }
}

/// Microseconds as seconds, exactly (no float rounding).
fn seconds(us: u64) -> String {
    let fraction = format!("{:06}", us % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", us / 1_000_000)
    } else {
        format!("{}.{fraction}", us / 1_000_000)
    }
}

/// Text being written in the exposition format.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a metric family; its samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line with an already formatted value.
    pub fn line(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                let separator = if index == 0 { "" } else { "," };
                let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{separator}{label}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.line(name, labels, &value.to_string());
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Every metric, as a scrape answers them.
pub async fn render(app: &App) -> Result<String, super::Error> {
    let mut out = Exposition::default();
    app.policy.metrics.render(&mut out);
    render_bridges(app, &mut out);
    render_peers(app, &mut out);
    let position = app.readers.read(|conn| Ok(eventlog::last_position(conn)?)).await?;
    out.gauge(
        "baton_event_log_position",
        "Position of the newest event in this peer's configuration log",
        position,
    );
    render_backup(app, &mut out);
    render_upgrade(app, &mut out);
    render_alarms(app, &mut out);
    Ok(out.finish())
}

fn render_bridges(app: &App, out: &mut Exposition) {
    let bridges = app.policy.bridge_ports();
    out.family("baton_bridge_up", "gauge", "Whether a bridge answers its health checks (1) or not");
    for bridge in &bridges {
        out.sample("baton_bridge_up", &[("bridge", &bridge.name)], u64::from(bridge.up));
    }
    out.family("baton_bridge_ports_used", "gauge", "Ports of a bridge its conferences reserve");
    for bridge in &bridges {
        let used = bridge.capacity_ports.saturating_sub(bridge.free_ports);
        out.sample("baton_bridge_ports_used", &[("bridge", &bridge.name)], u64::from(used));
    }
    out.family("baton_bridge_ports_free", "gauge", "Ports of a bridge still free for conferences");
    for bridge in &bridges {
        let free = u64::from(bridge.free_ports);
        out.sample("baton_bridge_ports_free", &[("bridge", &bridge.name)], free);
    }
}

fn render_peers(app: &App, out: &mut Exposition) {
    use ::api::PeerState;
    let status = app.cluster.status();
    let lag = app.writer.replication_lag();
    out.family(
        "baton_peer_link_up",
        "gauge",
        "Whether the link to a listed cluster peer is active (1) or not",
    );
    for line in &status.peers {
        if line.state == PeerState::ThisSystem {
            continue;
        }
        let (address, state) = (line.address.to_string(), line.state.as_str());
        let active = u64::from(matches!(line.state, PeerState::Active { .. }));
        out.sample("baton_peer_link_up", &[("peer", &address), ("state", state)], active);
    }
    out.family(
        "baton_peer_replication_lag_events",
        "gauge",
        "Shared configuration events this peer holds that an active peer did not, as of its last summary",
    );
    for line in &status.peers {
        let PeerState::Active { peer_id, .. } = &line.state else { continue };
        let behind = lag.iter().find(|(id, _)| id.to_hex() == *peer_id).map_or(0, |(_, n)| *n);
        out.sample(
            "baton_peer_replication_lag_events",
            &[("peer", &line.address.to_string())],
            behind,
        );
    }
}

fn render_backup(app: &App, out: &mut Exposition) {
    let Some(last) = app.operations.last_backup() else { return };
    out.gauge(
        "baton_backup_last_success",
        "Whether the last backup (taken by hand or scheduled) succeeded (1) or failed (0)",
        u64::from(last.succeeded),
    );
    out.gauge(
        "baton_backup_last_finished_timestamp_seconds",
        "When the last backup finished, in seconds since the Unix epoch",
        last.finished_ms / 1_000,
    );
}

fn render_upgrade(app: &App, out: &mut Exposition) {
    use ::api::BootOutcome;
    let Ok(status) = app.upgrade.status() else { return };
    out.family(
        "baton_upgrade_last_boot",
        "gauge",
        "How this peer last booted: normal, trying an upgrade, or fell back from a failed one (the current outcome is 1)",
    );
    let outcomes = [
        (BootOutcome::Normal, "normal"),
        (BootOutcome::Trying, "trying"),
        (BootOutcome::FellBack, "fell_back"),
    ];
    for (outcome, label) in outcomes {
        let current = u64::from(status.last_boot_outcome == outcome);
        out.sample("baton_upgrade_last_boot", &[("outcome", label)], current);
    }
}

fn render_alarms(app: &App, out: &mut Exposition) {
    let active = app.alarms.list();
    out.family(
        "baton_alarm_active",
        "gauge",
        "Whether an alarm is active (1) or not, for every alarm the appliance defines",
    );
    for &alarm in AlarmId::ALL {
        let definition = alarm.definition();
        let raised = u64::from(active.iter().any(|active| active.id == alarm));
        let labels = [("id", definition.id), ("severity", definition.severity.as_str())];
        out.sample("baton_alarm_active", &labels, raised);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: label values and help text are escaped as the format requires, so a bridge named
    // with a quote or a backslash cannot break the exposition.
    #[test]
    fn labels_and_help_are_escaped() {
        let mut out = Exposition::default();
        out.family("m", "gauge", "a \\ b\nc");
        out.sample("m", &[("bridge", "say \"hi\"\\\n")], 1);
        assert_eq!(
            out.finish(),
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{bridge=\"say \\\"hi\\\"\\\\\\n\"} 1\n"
        );
    }

    // Goal: a request lands in its decision and status, and in every bucket at or above its
    // latency (cumulative), with the sum in seconds.
    #[test]
    fn requests_are_counted_by_decision_status_and_latency() {
        let metrics = PolicyMetrics::default();
        let route = decision_index(Some(&Decision::Route {
            conference: "c".into(),
            bridge: "b".into(),
            url: "sip:c@b".into(),
        }));
        metrics.observe(route, 200, 3_000);
        metrics.observe(decision_index(None), 401, 20);
        let mut out = Exposition::default();
        metrics.render(&mut out);
        let text = out.finish();
        for line in [
            "baton_policy_requests_total{decision=\"route\",status=\"200\"} 1",
            "baton_policy_requests_total{decision=\"none\",status=\"401\"} 1",
            "baton_policy_requests_total{decision=\"route\",status=\"401\"} 0",
            "baton_policy_decision_duration_seconds_bucket{le=\"0.001\"} 1",
            "baton_policy_decision_duration_seconds_bucket{le=\"0.0025\"} 1",
            "baton_policy_decision_duration_seconds_bucket{le=\"0.005\"} 2",
            "baton_policy_decision_duration_seconds_bucket{le=\"+Inf\"} 2",
            "baton_policy_decision_duration_seconds_sum 0.00302",
            "baton_policy_decision_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|got| got == line), "missing {line:?} in\n{text}");
        }
    }

    // Goal: calls counted on many threads (more than there are shards, so some share one) are
    // all in the scrape. (It checks the sums, not that threads get shards of their own: the
    // shards only save contention, which no assertion here could see.)
    #[test]
    fn calls_counted_on_every_thread_are_summed() {
        let metrics = PolicyMetrics::default();
        let threads = 2 * SHARDS + 1;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..100 {
                        metrics.observe(decision_index(None), 401, 10);
                    }
                });
            }
        });
        let mut out = Exposition::default();
        metrics.render(&mut out);
        let text = out.finish();
        let total = 100 * threads;
        for line in [
            format!("baton_policy_requests_total{{decision=\"none\",status=\"401\"}} {total}"),
            format!("baton_policy_decision_duration_seconds_count {total}"),
            format!("baton_policy_decision_duration_seconds_sum {}", seconds(10 * total as u64)),
        ] {
            assert!(text.lines().any(|got| got == line), "missing {line:?} in\n{text}");
        }
    }
}

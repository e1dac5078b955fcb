//! `batond`, the Baton daemon: wires the event log, projections and admin API together and
//! runs them until told to stop. [`run`] is what the binary and the tests both call, with the
//! shutdown signal as a parameter.
//!
//! Owns process concerns (configuration, TLS identity, tracing, systemd notification,
//! shutdown). Business rules belong in `model`, storage in `eventlog`/`projections`; this crate
//! must not grow its own.
//!
//! The modules are layers, each importing only its own or lower ones (checked by
//! `xtask/src/layers.rs`): `base` < `store` < `services` < `adapters` < `startup` and this root.

pub mod adapters;
pub mod base;
pub mod services;
mod startup;
pub mod store;

use anyhow::Context;
use services::{cluster, policy, upgrades};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish once shutdown starts.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// How long shutdown waits for the writer to save what is queued and stop.
pub const WRITER_STOP_TIMEOUT_MS: u64 = 10_000;
/// File in the data directory holding the admin API's URL once the daemon listens, so tools
/// and tests find a daemon started on port 0.
pub const ADMIN_URL_FILE: &str = "admin-url";

#[derive(Clone, Debug)]
pub struct Config {
    /// Holds the database, the TLS identity and run-time files.
    pub data_dir: PathBuf,
    pub admin_listen: SocketAddr,
    /// Also serve the policy service over plain HTTP here (for a VCS set to HTTP). It is
    /// always served over HTTPS on the admin listener.
    pub policy_http_listen: Option<SocketAddr>,
    /// Conferences empty for this long are ended.
    pub conference_idle_ms: u64,
    /// How long a peer put in maintenance keeps deciding calls that still reach it.
    pub maintenance_drain_ms: u64,
    /// Base URL bridges reach this peer's policy listener at, for their event notifications
    /// (default: the plain HTTP policy listener, if any).
    pub bridge_feedback_url: Option<String>,
    pub cluster: cluster::Network,
    pub upgrade: upgrades::UpgradeConfig,
    /// Applies the peer-local settings to the operating system (`batond --apply-os` on the
    /// appliance). `None`: the host is never touched.
    pub platform: Option<Arc<dyn platform::Platform>>,
    /// What each listener lets clients hold (connections, deadlines).
    pub admin_limits: adapters::listener::Limits,
    pub policy_limits: adapters::listener::Limits,
}

impl Config {
    /// Embedded defaults for running on a workstation.
    pub fn local(data_dir: PathBuf) -> Config {
        Config {
            upgrade: upgrades::UpgradeConfig::for_data_dir(&data_dir),
            data_dir,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            policy_http_listen: None,
            conference_idle_ms: policy::CONFERENCE_IDLE_MS_DEFAULT,
            // No VCS polls a workstation's daemon: maintenance refuses calls at once.
            maintenance_drain_ms: 0,
            bridge_feedback_url: None,
            cluster: cluster::Network {
                port: cluster::CLUSTER_PORT_DEFAULT,
                connect_via: Default::default(),
                assume_time_synchronised: false,
            },
            platform: None,
            admin_limits: adapters::listener::Limits::ADMIN,
            policy_limits: adapters::listener::Limits::POLICY,
        }
    }
}

/// A started daemon.
pub struct Daemon {
    pub admin_addr: SocketAddr,
    pub peer_id: model::PeerId,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Waits until the daemon has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("daemon task panicked")?
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Opens the store, binds the admin API and returns once it accepts connections. A start
/// that fails stops what it had started.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    // A child token: a failed start stops its own tasks without cancelling the caller's token.
    let tasks = base::tasks::Tasks::new(shutdown.child_token());
    let started = start_with(config, tasks.clone()).await;
    if started.is_err() {
        tasks.stop(base::tasks::TASKS_STOP_TIMEOUT_MS).await;
    }
    started
}

/// The start-up steps, in order (see `startup.rs`).
async fn start_with(config: Config, tasks: base::tasks::Tasks) -> anyhow::Result<Daemon> {
    let started_ms = base::clock::now_ms();
    let recovered = startup::prepare_data_dir(&config.data_dir).await?;
    let hardware_serial = startup::hardware_serial();
    let store = startup::open_store(&config.data_dir).await?;
    let certificates = startup::stored_certificates(&store);
    let (writer, writer_thread, outbound) = startup::start_writer(store).await?;
    let (tls_files, tls) = startup::admin_tls(&config, certificates.as_ref())?;
    let admin = startup::bind_admin(&config)?;
    let readers = store::Readers::new(config.data_dir.join(store::DATABASE_FILE));
    let logins = services::logins::Logins::new(writer.clone());
    logins.spawn_summaries(&tasks);
    let policy = startup::start_policy(&config, &writer, &readers, &logins, &tasks).await?;
    let parts = startup::Parts {
        started_ms,
        readers,
        hardware_serial,
        tls,
        tls_files,
        policy,
        logins,
        outbound,
    };
    let app = startup::compose(&config, &writer, parts, &tasks)?;
    let admin_addr = admin.local_addr();
    startup::announce_admin_endpoint(&app, admin_addr.port(), certificates.as_ref());
    let server = startup::serve_admin(admin, &app, config.admin_limits, tasks.shutdown().clone())?;
    services::backups::spawn_scheduler(app.clone(), &tasks);
    services::alarms::spawn(app.clone(), &tasks);
    services::syslog::spawn(app.clone(), &tasks).await;
    startup::journal_start(&app, recovered).await;
    tracing::info!(admin_url = %format!("https://{admin_addr}"), peer_id = %writer.peer_id(), "admin API listening");
    startup::notify_systemd(&[sd_notify::NotifyState::Ready]);
    startup::spawn_watchdog(&tasks);
    let peer_id = writer.peer_id();
    drop(app);
    let task = tokio::spawn(startup::run_until_stopped(server, tasks, writer, writer_thread));
    Ok(Daemon { admin_addr, peer_id, task })
}

#[cfg(test)]
mod tests {
    use super::{Config, start};
    use tokio_util::sync::CancellationToken;

    // Goal: a start that fails (the admin port is taken) says why, stops what it had started
    // without cancelling the caller's token, and leaves the data directory usable by the next
    // start, which serves and stops cleanly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_start_stops_what_it_started() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let mut config = Config::local(dir.path().to_path_buf());
        config.admin_listen = taken.local_addr().expect("its address");
        config.cluster.assume_time_synchronised = true;
        let shutdown = CancellationToken::new();
        let error = start(config.clone(), shutdown.clone()).await.err().expect("a refused start");
        assert!(format!("{error:#}").contains("binding the admin API"), "{error:#}");
        assert!(!shutdown.is_cancelled());

        config.admin_listen = "127.0.0.1:0".parse().expect("an address");
        let daemon = start(config, shutdown.clone()).await.expect("a start");
        shutdown.cancel();
        daemon.wait().await.expect("a clean stop");
    }
}

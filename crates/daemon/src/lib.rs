//! `batond`, the Baton daemon: wires the event log, projections and admin API together and
//! runs them until told to stop. [`run`] is what the binary and the tests both call, with the
//! shutdown signal as a parameter.
//!
//! Owns process concerns (configuration, TLS identity, tracing, systemd notification,
//! shutdown). Business rules belong in `model`, storage in `eventlog`/`projections`; this crate
//! must not grow its own.

pub mod adapters;
pub mod base;
pub mod services;
pub mod store;

use adapters::{api as http, web};
use base::journal::EntryKind;
use base::{auth, tls, version};
use services::{
    backups, bridge_host, cluster, platform as platform_service, policy as policy_service,
    upgrades as upgrade_service,
};

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish once shutdown starts.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
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
    pub upgrade: upgrade_service::UpgradeConfig,
    /// Applies the peer-local settings to the operating system (`batond --apply-os` on the
    /// appliance). `None`: the host is never touched.
    pub platform: Option<Arc<dyn platform::Platform>>,
}

impl Config {
    /// Embedded defaults for running on a workstation.
    pub fn local(data_dir: PathBuf) -> Config {
        Config {
            upgrade: upgrade_service::UpgradeConfig::for_data_dir(&data_dir),
            data_dir,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            policy_http_listen: None,
            conference_idle_ms: policy_service::CONFERENCE_IDLE_MS_DEFAULT,
            // No VCS polls a workstation's daemon: maintenance refuses calls at once.
            maintenance_drain_ms: 0,
            bridge_feedback_url: None,
            cluster: cluster::Network {
                port: cluster::CLUSTER_PORT_DEFAULT,
                connect_via: Default::default(),
                assume_time_synchronised: false,
            },
            platform: None,
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

/// Opens the store, binds the admin API and returns once it accepts connections.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    let started_ms = base::clock::now_ms();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let database = config.data_dir.join(store::DATABASE_FILE);
    // Before the log is opened: finish or forget a restore a crash interrupted.
    let recovered = tokio::task::spawn_blocking({
        let data_dir = config.data_dir.clone();
        move || backups::recover(&data_dir)
    })
    .await
    .context("recovering an interrupted restore panicked")?
    .context("recovering an interrupted restore")?;
    if recovered != backups::Recovered::Nothing {
        tracing::warn!(?recovered, "an interrupted restore was recovered");
    }
    let hardware_serial = backup::hardware_serial().map_err(|error| error.to_string());
    if let Err(problem) = &hardware_serial {
        tracing::warn!(%problem, "no hardware serial: backups and restores are unavailable");
    }

    let opened_at = std::time::Instant::now();
    let (store, report) = tokio::task::spawn_blocking({
        let database = database.clone();
        move || store::Store::open(&database)
    })
    .await
    .context("opening the store panicked")?
    .with_context(|| format!("opening {}", database.display()))?;
    tracing::info!(
        snapshot_position = report.snapshot_position,
        events_replayed = report.events_replayed,
        projection_events_applied = report.projection_events_applied,
        open_ms = opened_at.elapsed().as_millis() as u64,
        "event log opened"
    );
    // Only a brand-new log gets the factory account: a peer that has just joined a cluster has
    // no administrator until the cluster's arrive, and must not invent one for the cluster.
    let factory_account_needed = store.last_position() == 0;
    let certificates = match store.state().list(model::RecordKind::Certificates).next() {
        Some(model::Record::Certificates(certificates)) => Some(certificates.clone()),
        _ => None,
    };
    let (outbound_tx, outbound_rx) = tokio::sync::mpsc::channel(cluster::OUTBOUND_QUEUE_MAX);
    let (writer, writer_thread) =
        store::Writer::spawn(store, outbound_tx).context("starting the writer thread")?;
    if factory_account_needed {
        create_factory_account(&writer).await?;
    }

    let tls_files = tls::TlsFiles { dir: config.data_dir.join("tls") };
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !config.admin_listen.ip().is_unspecified() {
        names.push(config.admin_listen.ip().to_string());
    }
    if tls::ensure_identity(&tls_files, &names)? {
        tracing::info!(ca = %tls_files.ca().display(), "made a TLS identity for the admin API");
    }
    let tls_config = match tls::configured_identity(&tls_files, certificates.as_ref()) {
        Ok(config) => config,
        Err(error) => {
            // A stored certificate that no longer loads must not lock the operator out.
            tracing::error!(error = %format!("{error:#}"), "stored server certificate unusable; using the built-in one");
            tls::server_config(&tls_files)?
        }
    };
    let tls_live = tls::LiveTls::new(tls_config);

    let listener = std::net::TcpListener::bind(config.admin_listen)
        .with_context(|| format!("binding the admin API to {}", config.admin_listen))?;
    listener.set_nonblocking(true).context("making the admin socket non-blocking")?;
    let admin_addr = listener.local_addr().context("reading the admin address")?;
    let admin_url = format!("https://{admin_addr}");
    // Written aside and renamed, so a reader never sees it half-written.
    base::durable::write(&config.data_dir.join(ADMIN_URL_FILE), admin_url.as_bytes())
        .context("writing the admin URL file")?;

    let readers = store::Readers::new(database);
    let policy = policy_service::PolicyService::new(
        writer.clone(),
        Arc::new(bridge_host::XmlRpcBridges::new().context("setting up the bridge API client")?),
        readers.clone(),
        config
            .bridge_feedback_url
            .clone()
            .or_else(|| config.policy_http_listen.map(|listen| format!("http://{listen}"))),
        config.maintenance_drain_ms,
    );
    policy.spawn_health_polling(shutdown.clone());
    policy.spawn_conference_cleanup(config.conference_idle_ms, shutdown.clone());
    if let Some(listen) = config.policy_http_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the HTTP policy service to {listen}"))?;
        let router = adapters::vcs::router(policy.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP policy service failed");
            }
        });
        tracing::info!(%listen, "policy service also on plain HTTP");
    }
    let upgrades = Arc::new(
        upgrade_service::UpgradeService::new(config.upgrade.clone())
            .context("setting up upgrades")?,
    );
    let boot_report = tokio::task::spawn_blocking({
        let upgrades = upgrades.clone();
        move || upgrades.status()
    })
    .await
    .context("reading the boot state panicked")?;
    let panel_facts = platform::PanelFacts {
        version: version::software_version().to_owned(),
        hardware_serial: hardware_serial.clone().unwrap_or_else(|_| "unknown".to_owned()),
    };
    let app = Arc::new(services::App {
        writer: writer.clone(),
        readers,
        sessions: auth::Sessions::default(),
        started_ms,
        password_checks: tokio::sync::Semaphore::new(services::PASSWORD_CHECKS_IN_FLIGHT_MAX),
        tls: tls_live.clone(),
        tls_files,
        cluster: cluster::spawn(
            config.cluster.clone(),
            writer.clone(),
            outbound_rx,
            shutdown.clone(),
        ),
        upgrade: upgrades,
        policy: policy.clone(),
        data_dir: config.data_dir.clone(),
        hardware_serial,
        operations: backups::Operations::default(),
        platform: platform_service::spawn(
            config.platform.clone(),
            writer.clone(),
            panel_facts,
            shutdown.clone(),
        ),
    });
    // Peers learn where this admin API is and which certificate it presents, so a peer joining
    // through another member can reach this one too (see `cluster_join`).
    match tls::presented_fingerprint(&app.tls_files, certificates.as_ref()) {
        Ok(certificate_sha256) => app.cluster.set_admin_endpoint(peering::AdminEndpoint {
            port: admin_addr.port(),
            certificate_sha256,
        }),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the admin certificate's fingerprint is unknown; peers cannot tell a joining peer")
        }
    }
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls_live.listener_config())
        .handle(handle.clone())
        .serve(
            http::router(app.clone())
                .merge(web::router(app.clone()))
                .merge(adapters::vcs::router(policy))
                .into_make_service(),
        );
    let scheduler = backups::spawn_scheduler(app, shutdown.clone());

    match recovered {
        backups::Recovered::Nothing => {}
        backups::Recovered::Finished => writer.journal(journal(
            eventlog::Level::Warning,
            EntryKind::RestoreRecovered,
            "a restore interrupted after its database was swapped was finished at start-up"
                .to_owned(),
        )),
        backups::Recovered::Abandoned => writer.journal(journal(
            eventlog::Level::Warning,
            EntryKind::RestoreRecovered,
            "a restore interrupted before its database was swapped was abandoned at start-up; \
             the configuration is unchanged"
                .to_owned(),
        )),
    }
    writer.journal(journal(
        eventlog::Level::Info,
        EntryKind::DaemonStarted,
        format!("Baton {} started", version::software_version()),
    ));
    // What the last boot did belongs in the Event Log too, where the operator looks first. A
    // fallback is repeated at every start until the next install replaces the failed entry.
    match boot_report {
        Ok(report) if report.fell_back.is_some() => {
            tracing::warn!(last_boot = %report.last_boot, "the last upgrade fell back");
            writer.journal(journal(
                eventlog::Level::Warning,
                EntryKind::BootFellBack,
                report.last_boot,
            ));
        }
        Ok(report) => tracing::info!(last_boot = %report.last_boot, "boot state"),
        Err(error) => {
            tracing::error!(%error, "the boot state is unreadable; upgrades will fail");
            writer.journal(journal(
                eventlog::Level::Error,
                EntryKind::BootUnreadable,
                format!("the boot state is unreadable, so upgrades will fail: {error}"),
            ));
        }
    }
    tracing::info!(%admin_url, peer_id = %writer.peer_id(), "admin API listening");
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = spawn_watchdog(shutdown.clone());

    let peer_id = writer.peer_id();
    let task = tokio::spawn(async move {
        let stopper = {
            let handle = handle.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                notify_systemd(&[sd_notify::NotifyState::Stopping]);
                handle.graceful_shutdown(Some(Duration::from_millis(SHUTDOWN_GRACE_MS)));
            })
        };
        let served = server.await.context("admin API server failed");
        stopper.abort();
        watchdog.abort();
        scheduler.abort();
        writer.journal(journal(
            eventlog::Level::Info,
            EntryKind::DaemonStopped,
            "Baton stopped".to_owned(),
        ));
        drop(writer);
        // The writer drains its queue and exits once the last handle (held by the server's
        // router, now dropped) is gone.
        tokio::task::spawn_blocking(move || writer_thread.join())
            .await
            .context("joining the writer")?
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        tracing::info!("stopped");
        served
    });
    Ok(Daemon { admin_addr, peer_id, task })
}

async fn create_factory_account(writer: &store::Writer) -> anyhow::Result<()> {
    let hash = tokio::task::spawn_blocking(|| auth::hash_password(auth::FACTORY_ADMIN_PASSWORD))
        .await
        .context("hashing the factory password panicked")?
        .map_err(|error| anyhow::anyhow!("hashing the factory password: {error}"))?;
    let account = model::record::Administrator {
        name: auth::FACTORY_ADMIN_NAME.to_owned(),
        password_hash: hash,
        must_change_password: true,
    };
    writer
        .execute(
            "system",
            model::Command::Create(model::Record::Administrator(account)),
            base::clock::now_ms(),
        )
        .await
        .context("creating the factory administrator account")?;
    tracing::warn!(
        user = auth::FACTORY_ADMIN_NAME,
        "created the factory administrator account; its password must be changed before anything else"
    );
    Ok(())
}

fn journal(level: eventlog::Level, kind: EntryKind, message: String) -> eventlog::NewJournalEntry {
    base::journal::entry(level, kind, None, message)
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "could not notify systemd");
    }
}

/// Pets the systemd watchdog at half its interval while the runtime is responsive.
fn spawn_watchdog(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval_us = 0;
        if !sd_notify::watchdog_enabled(false, &mut interval_us) || interval_us == 0 {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_micros(interval_us / 2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    })
}

//! The daemon's start-up, step by step (`daemon::start` calls them in order), and its
//! shutdown: the composition root, the one place that knows every layer.

use crate::adapters::front::Front;
use crate::adapters::listener::Limits;
use crate::adapters::{api, vcs, web, workers};
use crate::base::journal::{self, EntryKind};
use crate::base::tasks::{TASKS_STOP_TIMEOUT_MS, Tasks};
use crate::base::{auth, clock, tls, version};
use crate::services::logins::Logins;
use crate::services::{App, backups, bridge_host, cluster, platform, policy, upgrades};
use crate::store::{self, Outbound, Writer};
use crate::{ADMIN_URL_FILE, Config, SHUTDOWN_GRACE_MS, WRITER_STOP_TIMEOUT_MS};
use anyhow::Context;
use axum_server::tls_rustls::RustlsAcceptor;
use eventlog::Level;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Creates the data directory and, before the log is opened, finishes or forgets a restore
/// that a crash interrupted.
pub(crate) async fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<backups::Recovered> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let data_dir = data_dir.to_owned();
    let recovered = tokio::task::spawn_blocking(move || backups::recover(&data_dir))
        .await
        .context("recovering an interrupted restore panicked")?
        .context("recovering an interrupted restore")?;
    if recovered != backups::Recovered::Nothing {
        tracing::warn!(?recovered, "an interrupted restore was recovered");
    }
    Ok(recovered)
}

/// This machine's hardware serial, or why backups and restores are unavailable.
pub(crate) fn hardware_serial() -> Result<String, String> {
    let serial = backup::hardware_serial().map_err(|error| error.to_string());
    if let Err(problem) = &serial {
        tracing::warn!(%problem, "no hardware serial: backups and restores are unavailable");
    }
    serial
}

/// Opens the event log: the state from the newest snapshot, the events after it replayed.
pub(crate) async fn open_store(data_dir: &Path) -> anyhow::Result<store::Store> {
    let database = data_dir.join(store::DATABASE_FILE);
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
    Ok(store)
}

/// The operator's server certificate, if one is configured.
pub(crate) fn stored_certificates(store: &store::Store) -> Option<model::record::Certificates> {
    match store.state().list(model::RecordKind::Certificates).next() {
        Some(model::Record::Certificates(certificates)) => Some(certificates.clone()),
        _ => None,
    }
}

/// Starts the writer thread, and gives a brand-new log its factory administrator.
pub(crate) async fn start_writer(
    store: store::Store,
) -> anyhow::Result<(Writer, std::thread::JoinHandle<()>, mpsc::Receiver<Outbound>)> {
    // Only a brand-new log gets the factory account: a peer that has just joined a cluster has
    // no administrator until the cluster's arrive, and must not invent one for the cluster.
    let factory_account_needed = store.last_position() == 0;
    let (outbound_tx, outbound_rx) = mpsc::channel(cluster::OUTBOUND_QUEUE_MAX);
    let (writer, writer_thread) =
        Writer::spawn(store, outbound_tx).context("starting the writer thread")?;
    if factory_account_needed {
        create_factory_account(&writer).await?;
    }
    Ok((writer, writer_thread, outbound_rx))
}

async fn create_factory_account(writer: &Writer) -> anyhow::Result<()> {
    let hash = tokio::task::spawn_blocking(|| auth::hash_password(auth::FACTORY_ADMIN_PASSWORD))
        .await
        .context("hashing the factory password panicked")?
        .map_err(|error| anyhow::anyhow!("hashing the factory password: {error}"))?;
    let account = model::record::Administrator {
        name: auth::FACTORY_ADMIN_NAME.to_owned(),
        password_hash: hash,
        must_change_password: true,
        role: model::record::AdminRole::Full,
    };
    let command = model::Command::Create(model::Record::Administrator(account));
    writer
        .execute("system", command, clock::now_ms())
        .await
        .context("creating the factory administrator account")?;
    tracing::warn!(
        user = auth::FACTORY_ADMIN_NAME,
        "created the factory administrator account; its password must be changed before anything else"
    );
    Ok(())
}

/// The admin API's TLS identity: made on first start, replaced by the operator's certificate
/// when one is configured and loads.
pub(crate) fn admin_tls(
    config: &Config,
    certificates: Option<&model::record::Certificates>,
) -> anyhow::Result<(tls::TlsFiles, tls::LiveTls)> {
    let tls_files = tls::TlsFiles { dir: config.data_dir.join(backups::TLS_DIR) };
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !config.admin_listen.ip().is_unspecified() {
        names.push(config.admin_listen.ip().to_string());
    }
    if tls::ensure_identity(&tls_files, &names)? {
        tracing::info!(ca = %tls_files.ca().display(), "made a TLS identity for the admin API");
    }
    let tls_config = match tls::configured_identity(&tls_files, certificates) {
        Ok(config) => config,
        Err(error) => {
            // A stored certificate that no longer loads must not lock the operator out.
            tracing::error!(error = %format!("{error:#}"), "stored server certificate unusable; using the built-in one");
            tls::server_config(&tls_files)?
        }
    };
    Ok((tls_files, tls::LiveTls::new(tls_config)))
}

/// Binds the admin listener and writes its URL where tools and tests look for it.
pub(crate) fn bind_admin(config: &Config) -> anyhow::Result<workers::Bound> {
    let bound = workers::bind(config.admin_listen)
        .with_context(|| format!("binding the admin API to {}", config.admin_listen))?;
    // Written aside and renamed, so a reader never sees it half-written.
    let url = format!("https://{}", bound.local_addr());
    crate::base::durable::write(&config.data_dir.join(ADMIN_URL_FILE), url.as_bytes())
        .context("writing the admin URL file")?;
    Ok(bound)
}

/// Starts the policy service (bridge health polling, idle conference cleanup) and, if asked,
/// its plain HTTP listener.
pub(crate) async fn start_policy(
    config: &Config,
    writer: &Writer,
    readers: &store::Readers,
    logins: &Arc<Logins>,
    tasks: &Tasks,
) -> anyhow::Result<Arc<policy::PolicyService>> {
    let bridges = bridge_host::XmlRpcBridges::new(writer.state_watch())
        .context("setting up the bridge API client")?;
    let feedback_url = config
        .bridge_feedback_url
        .clone()
        .or_else(|| config.policy_http_listen.map(|listen| format!("http://{listen}")));
    let service = policy::PolicyService::new(
        writer.clone(),
        Arc::new(bridges),
        readers.clone(),
        feedback_url,
        config.maintenance_drain_ms,
    );
    service.spawn_health_polling(tasks);
    service.spawn_conference_cleanup(config.conference_idle_ms, tasks);
    service.spawn_overbooking_settlement(tasks);
    if let Some(listen) = config.policy_http_listen {
        let bound = workers::bind(listen)
            .with_context(|| format!("binding the HTTP policy service to {listen}"))?;
        let threads = bound.workers();
        let listener = workers::Listener {
            name: "policy-http",
            front: Front::with_policy(
                vcs::router(service.clone(), logins.clone()),
                vcs::Vcs { service: service.clone(), logins: logins.clone() },
                |_| {},
            ),
            acceptor: axum_server::accept::DefaultAcceptor,
            limits: config.policy_limits,
        };
        let shutdown = tasks.shutdown().clone();
        let served = workers::serve(bound, listener, shutdown, SHUTDOWN_GRACE_MS)
            .context("starting the HTTP policy service's threads")?;
        tasks.spawn(served);
        tracing::info!(%listen, threads, "policy service also on plain HTTP");
    }
    Ok(service)
}

/// What the earlier steps made, for [`compose`].
pub(crate) struct Parts {
    pub(crate) started_ms: u64,
    pub(crate) readers: store::Readers,
    pub(crate) hardware_serial: Result<String, String>,
    pub(crate) tls: tls::LiveTls,
    pub(crate) tls_files: tls::TlsFiles,
    pub(crate) policy: Arc<policy::PolicyService>,
    pub(crate) logins: Arc<Logins>,
    pub(crate) outbound: mpsc::Receiver<Outbound>,
}

/// Wires the services together: the upgrade service, clustering and the OS settings start
/// here.
pub(crate) fn compose(
    config: &Config,
    writer: &Writer,
    parts: Parts,
    tasks: &Tasks,
) -> anyhow::Result<Arc<App>> {
    let upgrade =
        upgrades::UpgradeService::new(config.upgrade.clone()).context("setting up upgrades")?;
    let panel_facts = ::platform::PanelFacts {
        version: version::software_version().to_owned(),
        hardware_serial: parts.hardware_serial.clone().unwrap_or_else(|_| "unknown".to_owned()),
    };
    Ok(Arc::new(App {
        writer: writer.clone(),
        readers: parts.readers,
        sessions: auth::Sessions::default(),
        logins: parts.logins,
        started_ms: parts.started_ms,
        tls: parts.tls,
        tls_files: parts.tls_files,
        cluster: cluster::spawn(
            config.cluster.clone(),
            &config.data_dir,
            writer.clone(),
            parts.outbound,
            tasks,
        ),
        upgrade: Arc::new(upgrade),
        policy: parts.policy,
        data_dir: config.data_dir.clone(),
        hardware_serial: parts.hardware_serial,
        operations: backups::Operations::default(),
        platform: platform::spawn(config.platform.clone(), writer.clone(), panel_facts, tasks),
        alarms: crate::services::alarms::Board::default(),
    }))
}

/// Peers learn where this admin API is and which certificate it presents, so a peer joining
/// through another member can reach this one too (see `cluster_join`).
pub(crate) fn announce_admin_endpoint(
    app: &App,
    port: u16,
    certificates: Option<&model::record::Certificates>,
) {
    match tls::presented_fingerprint(&app.tls_files, certificates) {
        Ok(certificate_sha256) => {
            app.cluster.set_admin_endpoint(peering::AdminEndpoint { port, certificate_sha256 })
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "the admin certificate's fingerprint is unknown; peers cannot tell a joining peer")
        }
    }
}

/// The admin listener serving the API, the web pages and the VCS's routes over TLS, on its
/// own threads (see `adapters::workers`); resolves once they have all stopped.
pub(crate) struct AdminServer {
    serving: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Serves until the tasks' shutdown, then gives the requests in flight [`SHUTDOWN_GRACE_MS`].
pub(crate) fn serve_admin(
    bound: workers::Bound,
    app: &Arc<App>,
    limits: Limits,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<AdminServer> {
    let router = api::router(app.clone())
        .merge(web::router(app.clone()))
        .merge(vcs::router(app.policy.clone(), app.logins.clone()))
        .layer(axum::middleware::from_fn(crate::adapters::security_headers));
    let acceptor = RustlsAcceptor::new(app.tls.listener_config());
    let policy = vcs::Vcs { service: app.policy.clone(), logins: app.logins.clone() };
    let front = Front::with_policy(router, policy, crate::adapters::add_security_headers);
    let listener = workers::Listener { name: "admin-https", front, acceptor, limits };
    let serving = workers::serve(bound, listener, shutdown, SHUTDOWN_GRACE_MS)
        .context("starting the admin listener's threads")?;
    Ok(AdminServer { serving: Box::pin(serving) })
}

/// The Event Log's start entries: a restore recovered, the start itself, and what the last
/// boot did (a fallback is repeated at every start until the next install replaces it).
pub(crate) async fn journal_start(app: &App, recovered: backups::Recovered) {
    let note = |level, kind, message: &str| journal::entry(level, kind, None, message);
    match recovered {
        backups::Recovered::Nothing => {}
        backups::Recovered::Finished => app.writer.journal(note(
            Level::Warning,
            EntryKind::RestoreRecovered,
            "a restore interrupted after its database was swapped was finished at start-up",
        )),
        backups::Recovered::Abandoned => app.writer.journal(note(
            Level::Warning,
            EntryKind::RestoreRecovered,
            "a restore interrupted before its database was swapped was abandoned at start-up; \
             the configuration is unchanged",
        )),
    }
    let started = format!("Baton {} started", version::software_version());
    app.writer.journal(note(Level::Info, EntryKind::DaemonStarted, &started));
    match upgrades::status_of(app).await {
        Ok(report) if report.fell_back.is_some() => {
            tracing::warn!(last_boot = %report.last_boot, "the last upgrade fell back");
            app.writer.journal(note(Level::Warning, EntryKind::BootFellBack, &report.last_boot));
        }
        Ok(report) => tracing::info!(last_boot = %report.last_boot, "boot state"),
        Err(error) => {
            tracing::error!(%error, "the boot state is unreadable; upgrades will fail");
            let message = format!("the boot state is unreadable, so upgrades will fail: {error}");
            app.writer.journal(note(Level::Error, EntryKind::BootUnreadable, &message));
        }
    }
}

pub(crate) fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::warn!(%error, "could not notify systemd");
    }
}

/// Pets the systemd watchdog at half its interval while the runtime is responsive.
pub(crate) fn spawn_watchdog(tasks: &Tasks) {
    let shutdown = tasks.shutdown().clone();
    tasks.spawn(async move {
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
    });
}

/// Serves until shutdown, then stops in order, each step bounded: the listener (in-flight
/// requests get [`SHUTDOWN_GRACE_MS`]), every background task ([`TASKS_STOP_TIMEOUT_MS`]),
/// then the writer once it has saved what was queued ([`WRITER_STOP_TIMEOUT_MS`]).
pub(crate) async fn run_until_stopped(
    server: AdminServer,
    tasks: Tasks,
    writer: Writer,
    writer_thread: std::thread::JoinHandle<()>,
) -> anyhow::Result<()> {
    let AdminServer { mut serving } = server;
    let shutdown = tasks.shutdown().clone();
    // The listener's threads end by themselves only if every one failed (each said why).
    // The threads also stop once the shutdown is cancelled: that comes first if both are done.
    let served = tokio::select! {
        biased;
        () = shutdown.cancelled() => {
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            serving.await;
            Ok(())
        }
        () = &mut serving => Err(anyhow::anyhow!("every admin listener thread failed")),
    };
    let still_running = tasks.stop(TASKS_STOP_TIMEOUT_MS).await;
    if still_running > 0 {
        tracing::warn!(still_running, "background tasks did not stop in time; stopping anyway");
    }
    let stopped = journal::entry(Level::Info, EntryKind::DaemonStopped, None, "Baton stopped");
    writer.journal(stopped);
    writer.stop().await;
    let joined = tokio::time::timeout(
        Duration::from_millis(WRITER_STOP_TIMEOUT_MS),
        tokio::task::spawn_blocking(move || writer_thread.join()),
    )
    .await
    .context("the writer did not stop in time")?
    .context("joining the writer")?;
    joined.map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    tracing::info!("stopped");
    served
}

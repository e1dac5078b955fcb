//! Gathers the facts the alarms are decided from ([`super::alarms::Facts`]) out of the
//! services: accounts, NTP, cluster links, bridge health, the admin HTTPS certificate's expiry,
//! the data partition, the last boot, the OS settings and the database writer. Kept apart from the pure evaluation so that one is tested alone.

use super::App;
use super::alarms::{BridgeFacts, Facts, PeerFacts};
use super::cluster::PeerState;
use crate::base::clock::now_ms;
use model::{Record, RecordKey, RecordKind};
use std::path::Path;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The facts now.
pub async fn gather(app: &App) -> Facts {
    let mut facts = Facts {
        factory_password_unchanged: factory_password_unchanged(app),
        time_synchronised: Some(time_synchronised(app).await),
        peers: peers(app),
        bridges: bridges(app),
        os_settings_failed: app.platform.failures(),
        database_stopped: app.writer.stopped(),
        ..Facts::default()
    };
    let data_dir = app.data_dir.clone();
    facts.data_partition_used_percent =
        tokio::task::spawn_blocking(move || used_percent(&data_dir)).await.ok().flatten();
    facts.certificate_expires_in_days = certificate_expires_in_days(app).await;
    facts.upgrade_fell_back = match super::upgrades::status_of(app).await {
        Ok(report) if report.fell_back.is_some() => Some(report.last_boot),
        _ => None,
    };
    app.alarms.reported(&mut facts);
    facts.repeated_warnings = app.policy.warnings.repeated(now_ms());
    facts
}

/// An administrator account still waiting for its forced password change is the factory one.
fn factory_password_unchanged(app: &App) -> bool {
    let state = app.writer.published_state();
    state.list(RecordKind::Administrator).any(|record| match record {
        Record::Administrator(admin) => admin.must_change_password,
        _ => false,
    })
}

async fn time_synchronised(app: &App) -> Result<bool, String> {
    if app.cluster.assumes_time_synchronised() {
        return Ok(true);
    }
    super::cluster::ntp_synchronised().await
}

fn peers(app: &App) -> Vec<PeerFacts> {
    let status = app.cluster.status();
    let other_versions = app.cluster.other_versions();
    status
        .peers
        .into_iter()
        .filter_map(|line| {
            let other_version = other_versions.get(&line.address).cloned();
            let address = line.address.to_string();
            match line.state {
                PeerState::Failed { reason } => Some(PeerFacts {
                    address,
                    failure: Some(reason),
                    other_version,
                    ..PeerFacts::default()
                }),
                PeerState::Active { latency_ms, .. } => {
                    Some(PeerFacts { address, latency_ms, ..PeerFacts::default() })
                }
                _ => None,
            }
        })
        .collect()
}

/// Each enabled bridge: why it is out of selection, and the share of its ports the
/// conferences placed on it reserve (counted as the policy decisions count them).
fn bridges(app: &App) -> Vec<BridgeFacts> {
    let state = app.writer.published_state();
    let engine = policy::Engine::new(state.clone(), None);
    let mut problems = app.policy.health.problems();
    state
        .list(RecordKind::Bridge)
        .filter_map(|record| match record {
            Record::Bridge(bridge) if bridge.enabled => Some(bridge),
            _ => None,
        })
        .map(|bridge| {
            let reserved = u64::from(engine.reserved_ports(&bridge.name));
            let capacity = u64::from(bridge.capacity_ports);
            let used = (capacity > 0).then(|| reserved.saturating_mul(100) / capacity);
            BridgeFacts {
                name: bridge.name.clone(),
                problem: problems.remove(&bridge.name),
                ports_used_percent: used.map(|percent| u8::try_from(percent).unwrap_or(u8::MAX)),
            }
        })
        .collect()
}

/// Whole days until the certificate the admin listener presents expires (0 once it has);
/// `None` when it cannot be read, which raises nothing.
async fn certificate_expires_in_days(app: &App) -> Option<u64> {
    let key = RecordKey::singleton(RecordKind::Certificates);
    let certificates = match super::records::current(app, key) {
        Some(Record::Certificates(certificates)) => Some(certificates),
        _ => None,
    };
    let files = app.tls_files.clone();
    // Reads the first-start certificate from disk when no operator certificate is saved.
    let not_after_ms = tokio::task::spawn_blocking(move || {
        let der = crate::base::tls::presented_certificate(&files, certificates.as_ref())?;
        crate::base::tls::not_after_ms(&der)
    })
    .await
    .ok()?;
    match not_after_ms {
        Ok(not_after_ms) => Some(days_left(not_after_ms, now_ms())),
        Err(error) => {
            // Gathered every 10 s: at debug, so an unreadable file does not flood the log.
            tracing::debug!(error = %format!("{error:#}"), "the HTTPS certificate's expiry is unknown");
            None
        }
    }
}

/// Whole days from `now_ms` until `not_after_ms`, 0 once it has passed.
pub fn days_left(not_after_ms: u64, now_ms: u64) -> u64 {
    not_after_ms.saturating_sub(now_ms) / DAY_MS
}

/// How full the file system holding `path` is, as `df` counts it (blocks reserved for root
/// count as unavailable); `None` when it cannot tell.
pub fn used_percent(path: &Path) -> Option<u8> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let used = stats.blocks().saturating_sub(stats.blocks_free());
    let usable = used.saturating_add(stats.blocks_available());
    if usable == 0 {
        return None;
    }
    u8::try_from(used.saturating_mul(100).div_ceil(usable)).ok()
}

//! Keeps the operating system in step with this peer's local settings (crate `platform`): once
//! at start and whenever the writer publishes a state in which a concern's settings changed.
//! Each apply runs on the blocking pool from one task, one concern at a time, so neither the
//! writer nor a policy request ever waits for a service restart. Every change and every
//! failure goes to the Event Log; the latest result per concern is in `/api/v1/status`.
//!
//! Without a platform (developers' machines, tests that do not ask for one) nothing is applied
//! and the status says so.

use crate::base::clock::{format_ms, now_ms};
use crate::base::journal::EntryKind;
use crate::base::sync::lock;
use crate::base::tasks::Tasks;
use crate::store::Writer;
use platform::{Concern, PanelFacts, Platform, Settings};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use ::api::{ConcernResult, ConcernStatus, PlatformStatus};

#[derive(Debug, Default)]
pub struct PlatformService {
    enabled: bool,
    concerns: Mutex<BTreeMap<&'static str, ConcernStatus>>,
}

impl PlatformService {
    /// The status API's view: whether settings are applied here, and each concern's result.
    pub fn status(&self) -> PlatformStatus {
        let concerns = lock(&self.concerns);
        let failed = concerns
            .iter()
            .filter(|(_, status)| status.result == ConcernResult::Failed)
            .map(|(name, _)| (*name).to_owned())
            .collect();
        PlatformStatus {
            applies_settings: self.enabled,
            failed,
            concerns: concerns
                .iter()
                .map(|(name, status)| ((*name).to_owned(), status.clone()))
                .collect(),
        }
    }

    /// Concern → why, for each concern whose last application failed.
    pub fn failures(&self) -> BTreeMap<String, String> {
        lock(&self.concerns)
            .iter()
            .filter(|(_, status)| status.result == ConcernResult::Failed)
            .map(|(name, status)| ((*name).to_owned(), status.detail.clone()))
            .collect()
    }

    fn record(&self, concern: Concern, status: ConcernStatus) {
        lock(&self.concerns).insert(concern.as_str(), status);
    }
}

/// Starts applying settings with `platform`, or only reports that nothing is applied.
pub fn spawn(
    platform: Option<Arc<dyn Platform>>,
    writer: Writer,
    facts: PanelFacts,
    tasks: &Tasks,
) -> Arc<PlatformService> {
    let service =
        Arc::new(PlatformService { enabled: platform.is_some(), concerns: Mutex::default() });
    let Some(platform) = platform else { return service };
    let status = service.clone();
    let shutdown = tasks.shutdown().clone();
    tasks.spawn(async move {
        let mut states = writer.state_watch();
        let mut applied: Option<Settings> = None;
        loop {
            let state = states.borrow_and_update().clone();
            let records = Settings::KINDS.iter().flat_map(|kind| state.list(*kind));
            let settings = Settings::from_records(records, facts.clone());
            drop(state);
            if applied.as_ref() != Some(&settings) {
                for &concern in Concern::ALL {
                    let changed = applied
                        .as_ref()
                        .is_none_or(|before| before.differs_for(&settings, concern));
                    if changed {
                        apply(&platform, concern, &settings, &writer, &status).await;
                    }
                }
                // A failed concern is tried again when its settings change or at next start,
                // not on every unrelated change (which would flood the Event Log).
                applied = Some(settings);
            }
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
    });
    service
}

async fn apply(
    platform: &Arc<dyn Platform>,
    concern: Concern,
    settings: &Settings,
    writer: &Writer,
    status: &PlatformService,
) {
    let result = tokio::task::spawn_blocking({
        let platform = platform.clone();
        let settings = settings.clone();
        move || platform.apply(concern, &settings)
    })
    .await;
    let at = format_ms(now_ms());
    let entry =
        |level, kind, message: String| crate::base::journal::entry(level, kind, None, message);
    match result {
        Ok(Ok(outcome)) if outcome.is_unchanged() => {
            status.record(
                concern,
                ConcernStatus { result: ConcernResult::Unchanged, at, detail: outcome.to_string() },
            );
        }
        Ok(Ok(outcome)) => {
            tracing::info!(%concern, %outcome, "applied a setting to the system");
            writer.journal(entry(
                eventlog::Level::Info,
                EntryKind::PlatformApplied,
                format!("{concern} applied to the system: {outcome}"),
            ));
            status.record(
                concern,
                ConcernStatus { result: ConcernResult::Applied, at, detail: outcome.to_string() },
            );
        }
        Ok(Err(error)) => {
            tracing::error!(%concern, %error, "could not apply a setting to the system");
            writer.journal(entry(
                eventlog::Level::Error,
                EntryKind::PlatformFailed,
                format!("{concern} not applied to the system (the setting is saved): {error}"),
            ));
            status.record(
                concern,
                ConcernStatus { result: ConcernResult::Failed, at, detail: error.to_string() },
            );
        }
        Err(panicked) => {
            tracing::error!(%concern, error = %panicked, "applying a setting panicked");
            writer.journal(entry(
                eventlog::Level::Error,
                EntryKind::PlatformFailed,
                format!(
                    "{concern} not applied to the system (the setting is saved): internal error"
                ),
            ));
            status.record(
                concern,
                ConcernStatus {
                    result: ConcernResult::Failed,
                    at,
                    detail: "internal error".to_owned(),
                },
            );
        }
    }
}

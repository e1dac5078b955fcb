//! [`RecordingPlatform`], the test double: remembers every apply and fails on request, so the
//! daemon's tests check what would reach the OS without touching one.

use crate::{Concern, Outcome, Platform, PlatformError, Settings};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Records `(concern, settings)` for every apply. Clones share the record.
#[derive(Clone, Debug, Default)]
pub struct RecordingPlatform {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    applied: Vec<(Concern, Settings)>,
    failures: BTreeMap<Concern, String>,
}

impl RecordingPlatform {
    pub fn new() -> RecordingPlatform {
        RecordingPlatform::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every apply so far, in order (failed ones included).
    pub fn applied(&self) -> Vec<(Concern, Settings)> {
        self.lock().applied.clone()
    }

    /// The settings of the latest apply of `concern`.
    pub fn last(&self, concern: Concern) -> Option<Settings> {
        self.lock()
            .applied
            .iter()
            .rev()
            .find(|(applied, _)| *applied == concern)
            .map(|(_, settings)| settings.clone())
    }

    /// From now on, applying `concern` fails with `message`.
    pub fn fail(&self, concern: Concern, message: &str) {
        self.lock().failures.insert(concern, message.to_owned());
    }

    /// From now on, applying `concern` succeeds again.
    pub fn succeed(&self, concern: Concern) {
        self.lock().failures.remove(&concern);
    }
}

impl Platform for RecordingPlatform {
    fn apply(&self, concern: Concern, settings: &Settings) -> Result<Outcome, PlatformError> {
        let mut recorded = self.lock();
        recorded.applied.push((concern, settings.clone()));
        match recorded.failures.get(&concern) {
            Some(message) => Err(PlatformError::Injected(message.clone())),
            None => {
                Ok(Outcome { files: vec![format!("(recorded {concern})")], commands: Vec::new() })
            }
        }
    }
}

//! The health gate's decision, as a pure function: given what the gate observed of a freshly
//! booted system and how long it has waited, bless the slot, keep waiting, or reject it. The
//! gate unit (appliance-image issue) gathers the observation and applies the decision through
//! [`crate::BootControl`]; keeping the decision here makes every case testable without a boot.

/// What the health gate saw of the running system.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HealthObservation {
    /// `batond` reported ready to systemd (`READY=1`).
    pub daemon_ready: bool,
    /// The event log opened and its hash chains verified.
    pub log_opens: bool,
    /// Events the log holds that the projections have not applied yet.
    pub projections_behind_events: u64,
    /// Whether the slot being judged is on trial (a counted entry). A blessed slot is never
    /// rejected by the gate: falling back from it would go to an older, unproven install.
    pub on_trial: bool,
}

/// What to do with the running slot.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HealthDecision {
    /// Healthy: mark the slot good.
    MarkGood,
    /// Not yet healthy, still within the allowed time: look again later.
    Wait { reasons: Vec<&'static str> },
    /// Not healthy in time: mark the slot bad so the next boot falls back.
    MarkBad { reasons: Vec<&'static str> },
    /// The slot is already blessed: nothing to decide.
    NothingToDo,
}

/// Decides on the running slot after waiting `waited_ms` of at most `timeout_ms`.
pub fn decide_health(
    observation: &HealthObservation,
    waited_ms: u64,
    timeout_ms: u64,
) -> HealthDecision {
    if !observation.on_trial {
        return HealthDecision::NothingToDo;
    }
    let mut reasons = Vec::new();
    if !observation.daemon_ready {
        reasons.push("batond is not ready");
    }
    if !observation.log_opens {
        reasons.push("the event log does not open");
    }
    if observation.projections_behind_events > 0 {
        reasons.push("the projections are behind the event log");
    }
    if reasons.is_empty() {
        HealthDecision::MarkGood
    } else if waited_ms < timeout_ms {
        HealthDecision::Wait { reasons }
    } else {
        HealthDecision::MarkBad { reasons }
    }
}

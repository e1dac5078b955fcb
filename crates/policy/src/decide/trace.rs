//! Why a decision came out as it did: what [`Engine::decide`](super::Engine::decide) looked
//! at, in the order it looked, written down by the decision itself as it goes (see
//! [`Engine::explain`](super::Engine::explain)), so an explanation cannot drift from the rules.
//! A decision that is not explained records nothing and allocates nothing for it.

use super::Role;

/// What one decision looked at. Fields stay empty (`None`, `[]`) past the step that decided.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Trace {
    /// The destination alias as matched (scheme, parameters and case removed).
    pub alias: Option<String>,
    /// The caller's alias, as the request gave it (no rule decides on it).
    pub source_alias: Option<String>,
    /// Conference aliases tried, by priority then name, up to the first that matched.
    pub aliases: Vec<AliasCheck>,
    /// The conference the matching alias names, its template and the caller's role.
    pub conference: Option<String>,
    pub template: Option<String>,
    pub role: Option<Role>,
    /// The conference record already there, and whether the call could follow it.
    pub existing: Option<ExistingCheck>,
    /// Ports a new conference of the template reserves.
    pub ports_needed: Option<u32>,
    /// The template's service preference, and whether it exists.
    pub service_preference: Option<String>,
    /// Pools of the preference, in order, with each bridge weighed.
    pub pools: Vec<PoolCheck>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AliasCheck {
    pub name: String,
    pub pattern: String,
    pub priority: u32,
    pub outcome: AliasOutcome,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AliasOutcome {
    /// The pattern matched the whole alias; the replace string made this name.
    Matched { conference: String },
    /// The pattern does not match the whole alias.
    NoMatch,
    /// The pattern matched but the replace string made an empty name: the next alias is tried.
    EmptyName,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExistingCheck {
    pub bridge: String,
    pub verdict: ExistingVerdict,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExistingVerdict {
    /// The call follows the conference to its bridge.
    Followed,
    /// Its bridge is no longer configured, disabled or down: the conference is placed again.
    BridgeMissing,
    BridgeDisabled,
    BridgeDown,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PoolCheck {
    pub name: String,
    /// False when the preference names a pool that is not configured (skipped).
    pub found: bool,
    /// The pool's bridges in its own order (candidates are ordered by free ports after).
    pub bridges: Vec<BridgeCheck>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BridgeCheck {
    pub name: String,
    /// Unknown when the pool names a bridge that is not configured.
    pub capacity_ports: Option<u32>,
    pub free_ports: Option<u32>,
    /// This peer's view of its health (unknown for a bridge not configured).
    pub up: Option<bool>,
    pub verdict: BridgeVerdict,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BridgeVerdict {
    /// In the candidate list (the decision's order says which is tried first).
    Candidate,
    /// Named by the pool but not configured.
    Missing,
    Disabled,
    /// Already a candidate through an earlier pool.
    ListedEarlier,
    /// Fewer free ports than the template reserves.
    TooFewPorts,
    Down,
}

/// Where a decision writes its trace: nowhere (the VCS's calls) or into a [`Trace`].
pub(super) struct Tracer<'a>(pub(super) Option<&'a mut Trace>);

impl Tracer<'_> {
    /// Runs `write` on the trace, only when one is kept.
    pub(super) fn note(&mut self, write: impl FnOnce(&mut Trace)) {
        if let Some(trace) = self.0.as_deref_mut() {
            write(trace);
        }
    }

    pub(super) fn on(&self) -> bool {
        self.0.is_some()
    }
}

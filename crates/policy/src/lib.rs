//! The policy service's decisions: what a VCS asks (a form-encoded request), which conference
//! the dialled alias means, which bridge hosts or should host it, and the CPL answer. Pure and
//! deterministic: every input — the replicated configuration and conference table (a
//! `model::State`), bridge health as this peer sees it — is passed in, so any peer given the
//! same state answers the same way, which is what makes fail-over seamless.
//!
//! Must not do I/O: creating conferences on bridges and recording them belongs to the daemon.

pub mod alias;
pub mod cpl;
pub mod decide;
pub mod overbooking;
pub mod request;

/// Every decision is answered within this, whatever the bridges do: the VCS gives an attempt
/// 30 s (not configurable) and then applies its Default CPL. All the bridge calls a decision
/// makes share it.
pub const DECISION_DEADLINE_MS: u64 = 10_000;

pub use decide::{BridgeHealth, Decision, Engine, RejectReason, Role, Trace};
pub use request::{PolicyRequest, PolicyType, RequestError};

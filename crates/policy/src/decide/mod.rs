//! From a dialled alias to a decision: match conference aliases by priority, name the
//! conference with the alias's replace string, then route to the bridge already hosting it or
//! pick bridges to create it on, by the template's service preference (pools in order) and
//! free capacity.
//!
//! Capacity is counted from the replicated conference table, not from the bridges, so every
//! peer computes the same free ports: each conference reserves its template's
//! `max_participants` (or [`PORTS_RESERVED_WITHOUT_LIMIT`]) on its bridge.

use crate::request::{PolicyRequest, PolicyType};
pub use model::record::Role;
use model::record::{Bridge, ConferenceTemplate, ConferenceType};
use model::{Record, RecordKey, RecordKind, State};
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;
use trace::Tracer;
pub use trace::{
    AliasCheck, AliasOutcome, BridgeCheck, BridgeVerdict, ExistingCheck, ExistingVerdict,
    PoolCheck, Trace,
};

mod trace;

/// Ports a conference reserves when its template sets no participant limit.
pub const PORTS_RESERVED_WITHOUT_LIMIT: u32 = 10;
/// Compiled patterns may not grow beyond this (the same limit validation uses).
const PATTERN_SIZE_BYTES_MAX: usize = model::validate::PATTERN_SIZE_BYTES_MAX;
/// Appended to a conference's name to form the address guests dial into on the bridge.
pub const GUEST_SUFFIX: &str = ".guest";

/// What this peer knows of a bridge's health, from its own polling.
pub trait BridgeHealth {
    fn is_up(&self, bridge: &str) -> bool;
}

impl<F: Fn(&str) -> bool> BridgeHealth for F {
    fn is_up(&self, bridge: &str) -> bool {
        self(bridge)
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decision {
    /// The conference lives on `bridge`: send the call to `url`.
    Route {
        conference: String,
        bridge: String,
        url: String,
    },
    /// Create the conference on the first of `candidates` that accepts it, then route.
    Create {
        conference: String,
        template: String,
        role: Role,
        candidates: Vec<String>,
    },
    Reject(RejectReason),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RejectReason {
    /// Not a call this service decides (registration, no destination).
    NotHandled,
    NoMatchingAlias,
    NoCapacity,
    BridgeFailure,
    Maintenance,
    /// The alias's replace string made a conference name longer than a record (and a
    /// bridge) takes: refused before any bridge is asked, or it would be created there but
    /// never recorded, so never ended nor counted.
    ConferenceNameTooLong,
    /// The conference name made is not a valid record name otherwise (spaces around it,
    /// control characters, `/`), refused for the same reason.
    InvalidConferenceName,
}

impl RejectReason {
    /// The SIP-style status the CPL `reject` carries.
    pub fn status(&self) -> u16 {
        match self {
            RejectReason::NotHandled => 403,
            RejectReason::NoMatchingAlias => 404,
            RejectReason::NoCapacity | RejectReason::Maintenance => 503,
            RejectReason::BridgeFailure => 502,
            // SIP's "Request-URI Too Long": the dialled alias made too long a name.
            RejectReason::ConferenceNameTooLong => 414,
            RejectReason::InvalidConferenceName => 484,
        }
    }

    /// Distinct per cause, so the VCS's logs say why.
    pub fn text(&self) -> &'static str {
        match self {
            RejectReason::NotHandled => "Not a conference call",
            RejectReason::NoMatchingAlias => "No conference alias matches",
            RejectReason::NoCapacity => "No conference bridge has capacity",
            RejectReason::BridgeFailure => "Conference bridge failure",
            RejectReason::Maintenance => "Conference service in maintenance",
            RejectReason::ConferenceNameTooLong => {
                "Conference name longer than 64 characters (the bridges' limit)"
            }
            RejectReason::InvalidConferenceName => {
                "Conference name with spaces around it, control characters or '/'"
            }
        }
    }
}

// `RejectReason::text` names the limit.
const _: () = assert!(model::validate::NAME_LENGTH_MAX == 64);

struct CompiledAlias {
    name: String,
    pattern: String,
    priority: u32,
    regex: Regex,
    conference_name: String,
    template: String,
    role: Role,
}

/// The configuration compiled for decisions; rebuilt whenever the state changes.
pub struct Engine {
    state: Arc<State>,
    aliases: Vec<CompiledAlias>,
    /// Ports reserved on each bridge by the conferences it hosts.
    reserved_ports: HashMap<String, u32>,
}

impl Engine {
    /// Compiles `state`'s aliases, reusing `previous`'s compiled patterns where unchanged
    /// (conferences come and go far more often than aliases).
    pub fn new(state: Arc<State>, previous: Option<&Engine>) -> Engine {
        let mut cache: HashMap<&str, &Regex> = HashMap::new();
        if let Some(previous) = previous {
            for alias in &previous.aliases {
                cache.insert(&alias.pattern, &alias.regex);
            }
        }
        let mut aliases: Vec<(u32, CompiledAlias)> = state
            .list(RecordKind::ConferenceAlias)
            .filter_map(|record| match record {
                Record::ConferenceAlias(alias) => Some(alias),
                _ => None,
            })
            .filter_map(|alias| {
                let regex = match cache.get(alias.pattern.as_str()) {
                    Some(regex) => (*regex).clone(),
                    None => regex::RegexBuilder::new(&format!("^(?:{})$", alias.pattern))
                        .size_limit(PATTERN_SIZE_BYTES_MAX)
                        .build()
                        .ok()?,
                };
                Some((
                    alias.priority,
                    CompiledAlias {
                        name: alias.name.clone(),
                        pattern: alias.pattern.clone(),
                        priority: alias.priority,
                        regex,
                        conference_name: alias.conference_name.clone(),
                        template: alias.template.clone(),
                        role: alias.role,
                    },
                ))
            })
            .collect();
        aliases.sort_by(|(a_priority, a), (b_priority, b)| {
            a_priority.cmp(b_priority).then_with(|| a.name.cmp(&b.name))
        });
        let mut reserved_ports: HashMap<String, u32> = HashMap::new();
        for record in state.list(RecordKind::Conference) {
            if let Record::Conference(conference) = record {
                let ports = template(&state, &conference.template)
                    .map_or(PORTS_RESERVED_WITHOUT_LIMIT, |template| {
                        template.max_participants.unwrap_or(PORTS_RESERVED_WITHOUT_LIMIT)
                    });
                *reserved_ports.entry(conference.bridge.clone()).or_default() += ports;
            }
        }
        Engine {
            state,
            aliases: aliases.into_iter().map(|(_, alias)| alias).collect(),
            reserved_ports,
        }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    pub fn template(&self, name: &str) -> Option<&ConferenceTemplate> {
        template(&self.state, name)
    }

    /// Ports the conferences placed on bridge `name` reserve (what its free ports are
    /// counted from).
    pub fn reserved_ports(&self, name: &str) -> u32 {
        self.reserved_ports.get(name).copied().unwrap_or(0)
    }

    pub fn bridge(&self, name: &str) -> Option<&Bridge> {
        match self.state.get_named(RecordKind::Bridge, name)? {
            Record::Bridge(bridge) => Some(bridge),
            _ => None,
        }
    }

    /// Ports on `bridge` not reserved by the conferences this state records there.
    pub fn free_ports(&self, bridge: &Bridge) -> u32 {
        let reserved = self.reserved_ports.get(&bridge.name).copied().unwrap_or(0);
        bridge.capacity_ports.saturating_sub(reserved)
    }

    /// Ports a conference of `template` reserves on its bridge.
    pub fn ports_needed(template: &ConferenceTemplate) -> u32 {
        template.max_participants.unwrap_or(PORTS_RESERVED_WITHOUT_LIMIT)
    }

    pub fn decide(&self, request: &PolicyRequest<'_>, health: &dyn BridgeHealth) -> Decision {
        self.decide_traced(request, health, &mut Tracer(None))
    }

    /// The same decision as [`Engine::decide`], made by the same code, with what it looked at
    /// and why: for the operator's "explain", which must never differ from a real call.
    pub fn explain(
        &self,
        request: &PolicyRequest<'_>,
        health: &dyn BridgeHealth,
    ) -> (Decision, Trace) {
        let mut trace = Trace::default();
        let decision = self.decide_traced(request, health, &mut Tracer(Some(&mut trace)));
        (decision, trace)
    }

    fn decide_traced(
        &self,
        request: &PolicyRequest<'_>,
        health: &dyn BridgeHealth,
        tracer: &mut Tracer<'_>,
    ) -> Decision {
        tracer
            .note(|trace| trace.source_alias = request.source_alias.as_deref().map(str::to_owned));
        if !matches!(request.policy_type, PolicyType::Search | PolicyType::Admin) {
            return Decision::Reject(RejectReason::NotHandled);
        }
        let Some(destination) = request.destination_alias.as_deref() else {
            return Decision::Reject(RejectReason::NotHandled);
        };
        let alias = crate::alias::normalise(destination);
        tracer.note(|trace| trace.alias = Some(alias.to_string()));
        let Some((conference, template_name, role)) = self.match_alias(&alias, tracer) else {
            return Decision::Reject(RejectReason::NoMatchingAlias);
        };
        tracer.note(|trace| {
            trace.conference = Some(conference.clone());
            trace.template = Some(template_name.to_owned());
            trace.role = Some(role);
        });
        match model::validate::check_name(&conference) {
            Ok(()) => {}
            Err(model::validate::NameProblem::TooLong) => {
                return Decision::Reject(RejectReason::ConferenceNameTooLong);
            }
            Err(_) => return Decision::Reject(RejectReason::InvalidConferenceName),
        }
        let Some(template) = self.template(template_name) else {
            // A dangling reference after a concurrent removal: as if the alias did not exist.
            return Decision::Reject(RejectReason::NoMatchingAlias);
        };
        let guest = role == Role::Guest && template.conference_type == ConferenceType::Lecture;
        if let Some((url, bridge)) = self.follow_existing(&conference, guest, health, tracer) {
            return Decision::Route { url, conference, bridge };
        }
        let needed_ports = Engine::ports_needed(template);
        tracer.note(|trace| {
            trace.ports_needed = Some(needed_ports);
            trace.service_preference = Some(template.service_preference.clone());
        });
        let free_ports = |bridge: &Bridge| self.free_ports(bridge);
        let preference = &template.service_preference;
        let (candidates, any_down) =
            self.candidates_traced(preference, needed_ports, health, &free_ports, tracer);
        if candidates.is_empty() {
            let reason =
                if any_down { RejectReason::BridgeFailure } else { RejectReason::NoCapacity };
            return Decision::Reject(reason);
        }
        Decision::Create { conference, template: template_name.to_owned(), role, candidates }
    }

    /// The route (its URL and bridge) to the conference's bridge when it exists there and
    /// that bridge can take the call; otherwise `None` (it is placed again).
    fn follow_existing(
        &self,
        conference: &str,
        guest: bool,
        health: &dyn BridgeHealth,
        tracer: &mut Tracer<'_>,
    ) -> Option<(String, String)> {
        let Some(Record::Conference(existing)) =
            self.state.get_named(RecordKind::Conference, conference)
        else {
            return None;
        };
        let bridge = self.bridge(&existing.bridge);
        let verdict = match bridge {
            None => ExistingVerdict::BridgeMissing,
            Some(bridge) if !bridge.enabled => ExistingVerdict::BridgeDisabled,
            Some(bridge) if !health.is_up(&bridge.name) => ExistingVerdict::BridgeDown,
            Some(_) => ExistingVerdict::Followed,
        };
        tracer.note(|trace| {
            trace.existing = Some(ExistingCheck { bridge: existing.bridge.clone(), verdict });
        });
        let bridge = bridge.filter(|_| verdict == ExistingVerdict::Followed)?;
        Some((route_url(conference, guest, &bridge.address), bridge.name.clone()))
    }

    /// The address a participant in `role` of `conference` on `bridge` is sent to.
    pub fn route_url(
        &self,
        conference: &str,
        template: &str,
        role: Role,
        bridge: &Bridge,
    ) -> String {
        let guest = role == Role::Guest
            && self
                .template(template)
                .is_some_and(|t| t.conference_type == ConferenceType::Lecture);
        route_url(conference, guest, &bridge.address)
    }

    /// The first alias (by priority, then name) whose pattern matches the whole alias, and the
    /// conference name its replace string makes.
    fn match_alias(&self, alias: &str, tracer: &mut Tracer<'_>) -> Option<(String, &str, Role)> {
        self.aliases.iter().find_map(|compiled| {
            let Some(captures) = compiled.regex.captures(alias) else {
                tracer.note(|trace| trace.aliases.push(compiled.check(AliasOutcome::NoMatch)));
                return None;
            };
            let mut conference = String::new();
            captures.expand(&compiled.conference_name, &mut conference);
            tracer.note(|trace| {
                let outcome = if conference.is_empty() {
                    AliasOutcome::EmptyName
                } else {
                    AliasOutcome::Matched { conference: conference.clone() }
                };
                trace.aliases.push(compiled.check(outcome));
            });
            (!conference.is_empty()).then_some((
                conference,
                compiled.template.as_str(),
                compiled.role,
            ))
        })
    }

    /// Bridges able to host a conference needing `needed_ports`, pools in preference order,
    /// within a pool the most free capacity first (ties by name, so every peer agrees), free
    /// ports as `free_ports` counts them. Also says whether some bridge was left out only
    /// because it is down.
    pub(crate) fn candidates(
        &self,
        preference: &str,
        needed_ports: u32,
        health: &dyn BridgeHealth,
        free_ports: &dyn Fn(&Bridge) -> u32,
    ) -> (Vec<String>, bool) {
        self.candidates_traced(preference, needed_ports, health, free_ports, &mut Tracer(None))
    }

    /// [`Engine::candidates`], noting each pool and bridge weighed in the trace.
    fn candidates_traced(
        &self,
        preference: &str,
        needed_ports: u32,
        health: &dyn BridgeHealth,
        free_ports: &dyn Fn(&Bridge) -> u32,
        tracer: &mut Tracer<'_>,
    ) -> (Vec<String>, bool) {
        let Some(Record::ServicePreference(preference)) =
            self.state.get_named(RecordKind::ServicePreference, preference)
        else {
            return (Vec::new(), false);
        };
        let mut candidates = Vec::new();
        let mut any_down = false;
        for pool in &preference.pools {
            let Some(Record::BridgePool(pool)) = self.state.get_named(RecordKind::BridgePool, pool)
            else {
                tracer.note(|trace| {
                    let check = PoolCheck { name: pool.clone(), found: false, bridges: Vec::new() };
                    trace.pools.push(check);
                });
                continue;
            };
            let mut in_pool: Vec<(u32, &str)> = Vec::new();
            let mut checks = Vec::new();
            for name in &pool.bridges {
                let verdict = self.weigh(name, &candidates, needed_ports, health, free_ports);
                match verdict {
                    BridgeVerdict::Candidate => {
                        let free_ports = self.bridge(name).map_or(0, free_ports);
                        in_pool.push((free_ports, name));
                    }
                    BridgeVerdict::Down => any_down = true,
                    _ => {}
                }
                if tracer.on() {
                    checks.push(self.bridge_check(name, verdict, health));
                }
            }
            tracer.note(|trace| {
                let check = PoolCheck { name: pool.name.clone(), found: true, bridges: checks };
                trace.pools.push(check);
            });
            in_pool.sort_by(|(a_free, a), (b_free, b)| b_free.cmp(a_free).then_with(|| a.cmp(b)));
            candidates.extend(in_pool.into_iter().map(|(_, name)| name.to_owned()));
        }
        (candidates, any_down)
    }

    /// Whether bridge `name` can be a candidate, and if not why: checked in this order.
    fn weigh(
        &self,
        name: &str,
        candidates: &[String],
        needed_ports: u32,
        health: &dyn BridgeHealth,
        free_ports: &dyn Fn(&Bridge) -> u32,
    ) -> BridgeVerdict {
        let Some(bridge) = self.bridge(name) else { return BridgeVerdict::Missing };
        if !bridge.enabled {
            BridgeVerdict::Disabled
        } else if candidates.iter().any(|candidate| candidate == name) {
            BridgeVerdict::ListedEarlier
        } else if free_ports(bridge) < needed_ports {
            BridgeVerdict::TooFewPorts
        } else if !health.is_up(name) {
            BridgeVerdict::Down
        } else {
            BridgeVerdict::Candidate
        }
    }

    /// One bridge as an explanation shows it: its capacity, free ports and health.
    fn bridge_check(
        &self,
        name: &str,
        verdict: BridgeVerdict,
        health: &dyn BridgeHealth,
    ) -> BridgeCheck {
        let bridge = self.bridge(name);
        BridgeCheck {
            name: name.to_owned(),
            capacity_ports: bridge.map(|bridge| bridge.capacity_ports),
            free_ports: bridge.map(|bridge| self.free_ports(bridge)),
            up: bridge.map(|bridge| health.is_up(&bridge.name)),
            verdict,
        }
    }
}

impl CompiledAlias {
    fn check(&self, outcome: AliasOutcome) -> AliasCheck {
        AliasCheck {
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            priority: self.priority,
            outcome,
        }
    }
}

pub(crate) fn key(kind: RecordKind, name: &str) -> RecordKey {
    RecordKey { kind, name: name.to_owned() }
}

pub(crate) fn template<'a>(state: &'a State, name: &str) -> Option<&'a ConferenceTemplate> {
    match state.get_named(RecordKind::ConferenceTemplate, name)? {
        Record::ConferenceTemplate(template) => Some(template),
        _ => None,
    }
}

/// `<conference>[.guest]@<bridge host>`: the bridge's address without its API port.
fn route_url(conference: &str, guest: bool, bridge_address: &str) -> String {
    let host = match bridge_address.rsplit_once(':') {
        // One colon: host:port. More: an IPv6 address, kept whole.
        Some((host, _)) if !host.contains(':') => host,
        _ => bridge_address,
    };
    let suffix = if guest { GUEST_SUFFIX } else { "" };
    // `concat` allocates it at its length; `format!` starts such a string empty and grows it.
    [conference, suffix, "@", host].concat()
}

#[cfg(test)]
mod tests;

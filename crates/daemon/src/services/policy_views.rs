//! The policy service as the operator looks into it, with no side effect on calls, bridges or
//! either log:
//! - [`PolicyService::explain`]: what a call to an alias would get now and why, from
//!   `policy::Engine::explain` (the decision's own trace) on the state and bridge health a real
//!   call would be decided on. Nothing is created on a bridge nor recorded. For a conference
//!   to create it names the first candidate; a real call may still land on a later one if this
//!   peer's creations in flight take that bridge's last ports first, the bridge refuses, or
//!   (around a maintenance switch) another peer made the conference moments ago.
//! - [`PolicyService::live_conferences`]: each enabled bridge's conferences and participants,
//!   from its own enumeration (bounded as every enumeration is: the `bridges` crate's limits,
//!   plus [`LIVE_ENUMERATION_TIMEOUT_MS`] per bridge, all bridges at once). TelePresence Server
//!   feedback events (`configureAck`, `flexAlive`) carry no participants, so the enumeration
//!   is the one source.

use super::policy::PolicyService;
use super::{Error, Input};
use model::record::Bridge;
use model::{Record, RecordKind};
use policy::decide::{self, Trace};
use policy::{Decision, PolicyRequest, RejectReason, Role};
use std::collections::HashMap;
use std::time::Duration;

/// One bridge's enumeration for the live view gives up after this (the others go on).
pub const LIVE_ENUMERATION_TIMEOUT_MS: u64 = 4_000;

impl PolicyService {
    /// What a SIP call from `source` to `alias` would be answered now, and why. Refused (not
    /// decided) when the alias is empty or longer than a VCS may send.
    pub fn explain(&self, alias: &str, source: Option<&str>) -> Result<::api::Explanation, Error> {
        check_alias("alias", alias)?;
        if let Some(source) = source {
            check_alias("source", source)?;
        }
        let request = PolicyRequest::invite(alias.trim(), source.map(str::trim));
        let engine = self.engine();
        let health =
            |name: &str| engine.bridge(name).is_some_and(|bridge| self.health.is_up(bridge));
        let (decided, trace) = engine.explain(&request, &health);
        let refused = self.refusal();
        let decision = match (&refused, decided) {
            (Some(_), _) => Decision::Reject(RejectReason::Maintenance),
            (None, decided) => decided,
        };
        let (decision, cpl) = explained(decision, &engine);
        Ok(explanation(trace, refused, decision, cpl))
    }

    /// Each enabled bridge's conferences with their participants, all bridges asked at once.
    pub async fn live_conferences(&self) -> ::api::LiveConferences {
        let state = self.state_now();
        let bridges: Vec<&Bridge> = state
            .list(RecordKind::Bridge)
            .filter_map(|record| match record {
                Record::Bridge(bridge) if bridge.enabled => Some(bridge),
                _ => None,
            })
            .collect();
        let recorded: HashMap<&str, &str> = state
            .list(RecordKind::Conference)
            .filter_map(|record| match record {
                Record::Conference(c) => Some((c.name.as_str(), c.bridge.as_str())),
                _ => None,
            })
            .collect();
        let timeout = Duration::from_millis(LIVE_ENUMERATION_TIMEOUT_MS);
        let listed = futures_util::future::join_all(
            bridges.iter().map(|bridge| tokio::time::timeout(timeout, self.host().list(bridge))),
        )
        .await;
        let bridges = bridges
            .iter()
            .zip(listed)
            .map(|(bridge, listed)| {
                let (conferences, problem) = match listed {
                    Ok(Ok(conferences)) => (conferences, None),
                    Ok(Err(error)) => (Vec::new(), Some(error.to_string())),
                    Err(_) => (
                        Vec::new(),
                        Some(format!("no answer within {LIVE_ENUMERATION_TIMEOUT_MS} ms")),
                    ),
                };
                let conferences = conferences
                    .into_iter()
                    .map(|hosted| ::api::LiveConference {
                        recorded: recorded.get(hosted.name.as_str()) == Some(&bridge.name.as_str()),
                        name: hosted.name,
                        bridge_conference_id: hosted.id,
                        participant_count: hosted.participants,
                        participants: hosted.participant_list,
                    })
                    .collect();
                ::api::LiveBridge { bridge: bridge.name.clone(), problem, conferences }
            })
            .collect();
        ::api::LiveConferences { bridges }
    }
}

/// The limit a VCS's own parameters have (`policy::request::VALUE_BYTES_MAX`).
fn check_alias(field: &str, alias: &str) -> Result<(), Error> {
    if alias.trim().is_empty() {
        return Err(Error::field(Input::Query, field, "an alias is required"));
    }
    if alias.len() > policy::request::VALUE_BYTES_MAX {
        let limit = policy::request::VALUE_BYTES_MAX;
        return Err(Error::field(Input::Query, field, format!("longer than {limit} bytes")));
    }
    Ok(())
}

/// The decision as shown, and the CPL it gives the VCS. A conference to create is routed to
/// as a real call would be once it is made on the first candidate that accepts it.
fn explained(decision: Decision, engine: &policy::Engine) -> (::api::ExplainedDecision, String) {
    match decision {
        Decision::Create { conference, template, role, candidates } => {
            let first = candidates.first().and_then(|name| engine.bridge(name));
            let url = first
                .map(|bridge| engine.route_url(&conference, &template, role, bridge))
                .unwrap_or_default();
            let cpl = policy::cpl::route(&url);
            (::api::ExplainedDecision::Create { conference, candidates, url }, cpl)
        }
        Decision::Route { conference, bridge, url } => {
            let cpl = policy::cpl::route(&url);
            (::api::ExplainedDecision::Route { conference, bridge, url }, cpl)
        }
        Decision::Reject(reason) => {
            let cpl = policy::cpl::reject(reason.status(), reason.text());
            let shown = ::api::ExplainedDecision::Reject {
                status: reason.status(),
                reason: reason.text().to_owned(),
            };
            (shown, cpl)
        }
    }
}

/// The trace in the API's terms.
fn explanation(
    trace: Trace,
    refused: Option<String>,
    decision: ::api::ExplainedDecision,
    cpl: String,
) -> ::api::Explanation {
    ::api::Explanation {
        alias: trace.alias,
        source_alias: trace.source_alias,
        refused,
        aliases: trace.aliases.into_iter().map(alias_tried).collect(),
        conference: trace.conference,
        template: trace.template,
        role: trace.role.map(|role| match role {
            Role::Chair => "chair".to_owned(),
            Role::Guest => "guest".to_owned(),
        }),
        existing: trace.existing.map(|existing| ::api::ExistingConference {
            bridge: existing.bridge,
            verdict: match existing.verdict {
                decide::ExistingVerdict::Followed => ::api::policy::ExistingVerdict::Followed,
                decide::ExistingVerdict::BridgeMissing => {
                    ::api::policy::ExistingVerdict::BridgeMissing
                }
                decide::ExistingVerdict::BridgeDisabled => {
                    ::api::policy::ExistingVerdict::BridgeDisabled
                }
                decide::ExistingVerdict::BridgeDown => ::api::policy::ExistingVerdict::BridgeDown,
            },
        }),
        ports_needed: trace.ports_needed,
        service_preference: trace.service_preference,
        pools: trace.pools.into_iter().map(pool_weighed).collect(),
        decision,
        cpl,
    }
}

fn alias_tried(check: decide::AliasCheck) -> ::api::AliasTried {
    use ::api::policy::AliasOutcome as Shown;
    let (outcome, conference) = match check.outcome {
        decide::AliasOutcome::Matched { conference } => (Shown::Matched, Some(conference)),
        decide::AliasOutcome::NoMatch => (Shown::NoMatch, None),
        decide::AliasOutcome::EmptyName => (Shown::EmptyName, None),
    };
    ::api::AliasTried {
        name: check.name,
        pattern: check.pattern,
        priority: check.priority,
        outcome,
        conference,
    }
}

fn pool_weighed(pool: decide::PoolCheck) -> ::api::PoolWeighed {
    use ::api::policy::BridgeVerdict as Shown;
    let bridges = pool
        .bridges
        .into_iter()
        .map(|bridge| ::api::BridgeWeighed {
            name: bridge.name,
            capacity_ports: bridge.capacity_ports,
            free_ports: bridge.free_ports,
            up: bridge.up,
            verdict: match bridge.verdict {
                decide::BridgeVerdict::Candidate => Shown::Candidate,
                decide::BridgeVerdict::Missing => Shown::Missing,
                decide::BridgeVerdict::Disabled => Shown::Disabled,
                decide::BridgeVerdict::ListedEarlier => Shown::ListedEarlier,
                decide::BridgeVerdict::TooFewPorts => Shown::TooFewPorts,
                decide::BridgeVerdict::Down => Shown::Down,
            },
        })
        .collect();
    ::api::PoolWeighed { name: pool.name, found: pool.found, bridges }
}

//! `batonctl policy status`, `batonctl policy explain <alias> [--source <alias>]` (what a call would get now and why, with
//! no side effect) and `batonctl conferences [live]` (what the bridges host now, with their
//! participants).

use crate::client::{self, Client};
use crate::output::Output;
use crate::render;
use api::policy::{AliasOutcome, BridgeVerdict, ExistingVerdict};
use api::{ExplainedDecision, Explanation, LiveConferences, PolicyStatus};
use std::fmt::Write as _;

pub(crate) fn explain(
    client: &Client,
    out: Output,
    alias: String,
    source: Option<String>,
) -> anyhow::Result<()> {
    let query = client::query(&[("alias", Some(alias)), ("source", source)]);
    let explanation: Explanation = client.get(&format!("/api/v1/policy/explain{query}"))?;
    out.emit(&explanation, explanation_text)
}

pub(crate) fn status(client: &Client, out: Output) -> anyhow::Result<()> {
    let status: PolicyStatus = client.get("/api/v1/policy/status")?;
    out.emit(&status, |status| {
        let mut text = match &status.unavailable {
            None => "serving: yes\n".to_owned(),
            Some(reason) => format!("serving: no ({reason})\n"),
        };
        let rows: Vec<Vec<String>> = status
            .bridges
            .iter()
            .map(|bridge| {
                let health = if bridge.up { "up" } else { "down" };
                vec![
                    bridge.name.clone(),
                    health.to_owned(),
                    bridge.problem.clone().unwrap_or_default(),
                ]
            })
            .collect();
        text.push_str(&render::columns(&["bridge", "health", "problem"], &rows));
        text
    })
}

pub(crate) fn live(client: &Client, out: Output) -> anyhow::Result<()> {
    let live: LiveConferences = client.get("/api/v1/policy/live-conferences")?;
    out.emit(&live, live_text)
}

fn explanation_text(explanation: &Explanation) -> String {
    let mut text = String::new();
    if let Some(refused) = &explanation.refused {
        let _ = writeln!(text, "refused: this peer refuses calls now ({refused}); otherwise:");
    }
    let decision = match &explanation.decision {
        ExplainedDecision::Route { conference, bridge, url } => {
            format!("route to conference {conference} on {bridge}: {url}")
        }
        ExplainedDecision::Create { conference, candidates, url } => format!(
            "create conference {conference} on the first of [{}] that accepts it, then route: {url}",
            candidates.join(", ")
        ),
        ExplainedDecision::Reject { status, reason } => format!("reject {status}: {reason}"),
    };
    let _ = writeln!(text, "decision: {decision}");
    let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let _ = writeln!(text, "alias: {}", shown(&explanation.alias));
    if explanation.source_alias.is_some() {
        let _ = writeln!(text, "caller: {}", shown(&explanation.source_alias));
    }
    let _ = writeln!(
        text,
        "conference: {}  template: {}  role: {}",
        shown(&explanation.conference),
        shown(&explanation.template),
        shown(&explanation.role)
    );
    if let Some(existing) = &explanation.existing {
        let verdict = match existing.verdict {
            ExistingVerdict::Followed => "followed",
            ExistingVerdict::BridgeMissing => "its bridge is not configured: placed again",
            ExistingVerdict::BridgeDisabled => "its bridge is disabled: placed again",
            ExistingVerdict::BridgeDown => "its bridge is down: placed again",
        };
        let _ = writeln!(text, "recorded on: {} ({verdict})", existing.bridge);
    }
    text.push_str("\naliases tried:\n");
    let rows: Vec<Vec<String>> = explanation
        .aliases
        .iter()
        .map(|alias| {
            let outcome = match alias.outcome {
                AliasOutcome::Matched => format!("matched: {}", shown(&alias.conference)),
                AliasOutcome::NoMatch => "no match".to_owned(),
                AliasOutcome::EmptyName => "empty name".to_owned(),
            };
            vec![alias.priority.to_string(), alias.name.clone(), alias.pattern.clone(), outcome]
        })
        .collect();
    text.push_str(&render::columns(&["priority", "alias", "pattern", "outcome"], &rows));
    if !explanation.pools.is_empty() {
        let _ = writeln!(
            text,
            "\nbridges weighed (service preference {}, {} ports needed):",
            shown(&explanation.service_preference),
            explanation.ports_needed.unwrap_or(0)
        );
        text.push_str(&bridges_table(explanation));
    }
    let _ = write!(text, "\ncpl:\n{}\n", explanation.cpl);
    text
}

fn bridges_table(explanation: &Explanation) -> String {
    let number = |value: Option<u32>| value.map_or("-".to_owned(), |value| value.to_string());
    let mut rows = Vec::new();
    for pool in &explanation.pools {
        if !pool.found {
            rows.push(vec![
                pool.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "no such pool".into(),
            ]);
        }
        for bridge in &pool.bridges {
            let verdict = match bridge.verdict {
                BridgeVerdict::Candidate => "candidate",
                BridgeVerdict::Missing => "not configured",
                BridgeVerdict::Disabled => "disabled",
                BridgeVerdict::ListedEarlier => "already a candidate",
                BridgeVerdict::TooFewPorts => "too few free ports",
                BridgeVerdict::Down => "down",
            };
            let health = match bridge.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "-",
            };
            rows.push(vec![
                pool.name.clone(),
                bridge.name.clone(),
                format!("{}/{}", number(bridge.free_ports), number(bridge.capacity_ports)),
                health.to_owned(),
                verdict.to_owned(),
            ]);
        }
    }
    render::columns(&["pool", "bridge", "free/capacity", "health", "verdict"], &rows)
}

fn live_text(live: &LiveConferences) -> String {
    let mut rows = Vec::new();
    let mut problems = String::new();
    for bridge in &live.bridges {
        if let Some(problem) = &bridge.problem {
            let _ = writeln!(problems, "{}: not listed: {problem}", bridge.bridge);
        }
        for conference in &bridge.conferences {
            let who: Vec<String> = conference
                .participants
                .iter()
                .map(|p| match &p.address {
                    Some(address) if *address != p.name => format!("{} ({address})", p.name),
                    _ => p.name.clone(),
                })
                .collect();
            let name = if conference.recorded {
                conference.name.clone()
            } else {
                format!("{} (not recorded)", conference.name)
            };
            rows.push(vec![
                name,
                bridge.bridge.clone(),
                conference.participant_count.to_string(),
                who.join(", "),
            ]);
        }
    }
    if rows.is_empty() && problems.is_empty() {
        return "no conferences on the bridges\n".to_owned();
    }
    render::columns(&["conference", "bridge", "participants", "who"], &rows) + &problems
}

//! Status > Explain a call and Status > Live conferences: the policy service's two views for
//! the operator (`services::policy_views`). The explain form is a GET (it changes nothing, so
//! it needs no CSRF token and its result has an address to share).

use super::{Operator, error_note, esc, page};
use crate::adapters::api::ApiError;
use crate::services::App;
use ::api::policy::{AliasOutcome, BridgeVerdict, ExistingVerdict};
use ::api::{ExplainedDecision, Explanation, LiveBridge};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/status/explain", get(explain_page))
        .route("/status/live-conferences", get(live_page))
}

type Pairs = Vec<(String, String)>;

fn pair<'a>(pairs: &'a Pairs, name: &str) -> &'a str {
    pairs.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
}

async fn explain_page(
    Operator(user): Operator,
    State(app): State<Arc<App>>,
    Query(pairs): Query<Pairs>,
) -> Response {
    let (alias, source) = (pair(&pairs, "alias"), pair(&pairs, "source"));
    let mut body = format!(
        "<p>What a call would get now, and why, decided as a real call is but with no side \
         effect: no conference is created on any bridge and nothing is recorded.</p>\
         <form method=\"get\" action=\"/status/explain\" class=\"filter\">\
         <label>Dialled alias <input name=\"alias\" value=\"{}\" required \
         placeholder=\"meet.alice@example.com\"></label> \
         <label>Caller's alias (optional) <input name=\"source\" value=\"{}\"></label> \
         <button type=\"submit\">Explain</button></form>",
        esc(alias),
        esc(source)
    );
    if pairs.iter().any(|(key, _)| key == "alias") {
        let source = (!source.trim().is_empty()).then_some(source);
        match app.policy.explain(alias, source) {
            Ok(explanation) => body.push_str(&explanation_html(&explanation)),
            Err(error) => {
                let error = ApiError::from(error);
                body.push_str(&error_note(error.message()));
                let mut response = page("Explain a call", Some(&user), &body).into_response();
                *response.status_mut() = error.status();
                return response;
            }
        }
    }
    page("Explain a call", Some(&user), &body).into_response()
}

fn explanation_html(explanation: &Explanation) -> String {
    let mut body = String::from("<section id=\"explanation\"><h2>Decision</h2>");
    if let Some(refused) = &explanation.refused {
        let _ = write!(
            body,
            "<p class=\"bad\">This peer refuses calls now: {}. Otherwise it would decide as \
             below.</p>",
            esc(refused)
        );
    }
    let decision = match &explanation.decision {
        ExplainedDecision::Route { conference, bridge, url } => format!(
            "Route to conference <b>{}</b> on bridge <b>{}</b> at <code>{}</code>",
            esc(conference),
            esc(bridge),
            esc(url)
        ),
        ExplainedDecision::Create { conference, candidates, url } => format!(
            "Create conference <b>{}</b> on the first of {} that accepts it, then route to \
             <code>{}</code>",
            esc(conference),
            esc(&candidates.join(", ")),
            esc(url)
        ),
        ExplainedDecision::Reject { status, reason } => {
            format!("Reject: {status} {}", esc(reason))
        }
    };
    let _ = write!(body, "<p id=\"decision\">{decision}</p>");
    facts_table(&mut body, explanation);
    aliases_table(&mut body, explanation);
    pools_table(&mut body, explanation);
    let _ = write!(
        body,
        "<h3>CPL the VCS would get</h3><pre id=\"cpl\">{}</pre></section>",
        esc(&explanation.cpl)
    );
    body
}

fn facts_table(body: &mut String, explanation: &Explanation) {
    let unset = || "-".to_owned();
    let existing = explanation.existing.as_ref().map_or("none".to_owned(), |existing| {
        let verdict = match existing.verdict {
            ExistingVerdict::Followed => "the call follows it",
            ExistingVerdict::BridgeMissing => "its bridge is not configured: placed again",
            ExistingVerdict::BridgeDisabled => "its bridge is disabled: placed again",
            ExistingVerdict::BridgeDown => "its bridge is down: placed again",
        };
        format!("on {} ({verdict})", existing.bridge)
    });
    let rows = [
        ("Alias as matched", explanation.alias.clone().unwrap_or_else(unset)),
        ("Caller", explanation.source_alias.clone().unwrap_or_else(unset)),
        ("Conference", explanation.conference.clone().unwrap_or_else(unset)),
        ("Template", explanation.template.clone().unwrap_or_else(unset)),
        ("Role", explanation.role.clone().unwrap_or_else(unset)),
        ("Conference already recorded", existing),
        ("Service preference", explanation.service_preference.clone().unwrap_or_else(unset)),
        (
            "Ports a new conference reserves",
            explanation.ports_needed.map_or_else(unset, |p| p.to_string()),
        ),
    ];
    body.push_str("<table><tbody>");
    for (label, value) in rows {
        let _ = write!(body, "<tr><th scope=\"row\">{label}</th><td>{}</td></tr>", esc(&value));
    }
    body.push_str("</tbody></table>");
}

fn aliases_table(body: &mut String, explanation: &Explanation) {
    body.push_str(
        "<h3>Conference aliases tried</h3><table id=\"aliases\"><thead><tr><th scope=\"col\">\
         Priority</th><th scope=\"col\">Alias</th><th scope=\"col\">Pattern</th>\
         <th scope=\"col\">Outcome</th></tr></thead><tbody>",
    );
    for alias in &explanation.aliases {
        let outcome = match (alias.outcome, &alias.conference) {
            (AliasOutcome::Matched, Some(conference)) => {
                format!("matched: conference {conference}")
            }
            (AliasOutcome::Matched, None) => "matched".to_owned(),
            (AliasOutcome::NoMatch, _) => "no match".to_owned(),
            (AliasOutcome::EmptyName, _) => "matched, but made an empty name".to_owned(),
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            alias.priority,
            esc(&alias.name),
            esc(&alias.pattern),
            esc(&outcome)
        );
    }
    body.push_str("</tbody></table>");
}

fn pools_table(body: &mut String, explanation: &Explanation) {
    if explanation.pools.is_empty() {
        return;
    }
    body.push_str(
        "<h3>Pools and bridges weighed</h3><table id=\"bridges\"><thead><tr>\
         <th scope=\"col\">Pool</th><th scope=\"col\">Bridge</th><th scope=\"col\">Free ports</th>\
         <th scope=\"col\">Health</th><th scope=\"col\">Verdict</th></tr></thead><tbody>",
    );
    let number = |value: Option<u32>| value.map_or("-".to_owned(), |value| value.to_string());
    for pool in &explanation.pools {
        if !pool.found {
            let _ = write!(
                body,
                "<tr><td>{}</td><td colspan=\"4\">not configured</td></tr>",
                esc(&pool.name)
            );
        }
        for bridge in &pool.bridges {
            let health = match bridge.up {
                Some(true) => "<span class=\"ok\">up</span>",
                Some(false) => "<span class=\"bad\">down</span>",
                None => "-",
            };
            let verdict = match bridge.verdict {
                BridgeVerdict::Candidate => "candidate",
                BridgeVerdict::Missing => "not configured",
                BridgeVerdict::Disabled => "disabled",
                BridgeVerdict::ListedEarlier => "already a candidate",
                BridgeVerdict::TooFewPorts => "too few free ports",
                BridgeVerdict::Down => "down",
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{} of {}</td><td>{health}</td><td>{verdict}</td></tr>",
                esc(&pool.name),
                esc(&bridge.name),
                number(bridge.free_ports),
                number(bridge.capacity_ports)
            );
        }
    }
    body.push_str("</tbody></table>");
}

async fn live_page(Operator(user): Operator, State(app): State<Arc<App>>) -> Response {
    let live = app.policy.live_conferences().await;
    let mut body = String::from(
        "<p>The conferences each enabled bridge hosts now and who is in them, as the bridges \
         list them. <a href=\"/conferences\">Conferences Baton recorded</a></p>",
    );
    if live.bridges.is_empty() {
        body.push_str("<p>No enabled bridges.</p>");
    }
    for bridge in &live.bridges {
        live_bridge(&mut body, bridge);
    }
    page("Live conferences", Some(&user), &body).into_response()
}

fn live_bridge(body: &mut String, bridge: &LiveBridge) {
    let _ = write!(body, "<h2>{}</h2>", esc(&bridge.bridge));
    if let Some(problem) = &bridge.problem {
        let _ = write!(body, "<p class=\"bad\">Not listed: {}</p>", esc(problem));
        return;
    }
    if bridge.conferences.is_empty() {
        body.push_str("<p>No conferences.</p>");
        return;
    }
    body.push_str(
        "<table class=\"live\"><thead><tr><th scope=\"col\">Conference</th>\
         <th scope=\"col\">Participants</th><th scope=\"col\">Who</th></tr></thead><tbody>",
    );
    for conference in &bridge.conferences {
        let mut who = String::new();
        for participant in &conference.participants {
            let detail: Vec<&str> = [&participant.address, &participant.role, &participant.state]
                .into_iter()
                .filter_map(|value| value.as_deref())
                .collect();
            let _ = write!(
                who,
                "<li>{} <small>{}</small></li>",
                esc(&participant.name),
                esc(&detail.join(", "))
            );
        }
        let recorded =
            if conference.recorded { "" } else { " <small>(not recorded by Baton)</small>" };
        let _ = write!(
            body,
            "<tr><td>{}{recorded}</td><td>{}</td><td><ul>{who}</ul></td></tr>",
            esc(&conference.name),
            conference.participant_count
        );
    }
    body.push_str("</tbody></table>");
}

//! The API's route table: every served route with its description. [`super::router`] serves
//! it and [`super::openapi::document`] describes it, so a route cannot be served without
//! being described; [`undescribed`] is the check the tests run on both.

use super::extract::{JsonBody, Ready};
use super::handlers as h;
use super::openapi::{self, Doc};
use super::{API_PREFIX, UPGRADE_IMAGE_BYTES_MAX};
use crate::services::{App, backups};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{MethodRouter, delete, get, post, put};
use model::RecordKind;
use serde_json::Value;
use std::sync::Arc;

/// An HTTP method the API serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// The name the OpenAPI document uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// Which accounts may call a route. The router gives it to the route's requests and the
/// [`super::extract::Admin`] extractor enforces it, so a route cannot forget the check.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Every account, read-only ones included: reads, and one's own session and password.
    AnyAccount,
    /// Full administrators only: everything that changes something.
    FullAdministrator,
}

/// One served route: where, how it is answered, and how it is described.
pub struct Route {
    pub method: Method,
    /// The path, with `{parameter}` segments as both axum and OpenAPI write them.
    pub path: String,
    pub doc: Doc,
    pub access: Access,
    pub handler: MethodRouter<Arc<App>>,
}

/// A route whose access follows from its method: a read for every account, anything else for
/// full administrators only.
fn route(method: Method, path: &str, doc: Doc, handler: MethodRouter<Arc<App>>) -> Route {
    let access = if method == Method::Get { Access::AnyAccount } else { Access::FullAdministrator };
    Route { method, path: format!("{API_PREFIX}{path}"), doc, access, handler }
}

/// A route that changes only the calling account's own session or password, which a
/// read-only account may do too.
fn own_account_route(
    method: Method,
    path: &str,
    doc: Doc,
    handler: MethodRouter<Arc<App>>,
) -> Route {
    Route { access: Access::AnyAccount, ..route(method, path, doc, handler) }
}

/// Every route the API serves.
pub fn table() -> Vec<Route> {
    let mut routes = account_routes();
    routes.extend(system_routes());
    routes.extend(policy_routes());
    routes.extend(bridge_routes());
    routes.extend(alarm_routes());
    routes.extend(monitoring_routes());
    routes.extend(power_routes());
    routes.extend(upgrade_routes());
    routes.extend(history_routes());
    routes.extend(backup_routes());
    for &kind in RecordKind::ALL {
        routes.extend(record_routes(kind));
    }
    routes
}

/// Logging in and out, and one's own password.
fn account_routes() -> Vec<Route> {
    use Method::{Delete, Post};
    vec![
        own_account_route(
            Post,
            "/sessions",
            openapi::doc(
                "Log in: {username, password} → {token}; send it as `Authorization: Bearer`",
                "201",
                true,
            ),
            post(h::login),
        ),
        own_account_route(
            Delete,
            "/sessions/current",
            openapi::doc("Log out this session", "204", false),
            delete(h::logout),
        ),
        own_account_route(
            Post,
            "/password",
            openapi::doc(
                "Change your own password: {current_password, new_password}. Allowed before the factory password is changed",
                "200",
                true,
            ),
            post(h::change_password),
        ),
    ]
}

/// The peer's status and health, and its cluster.
fn system_routes() -> Vec<Route> {
    use Method::{Get, Post};
    vec![
        route(
            Get,
            "/status",
            openapi::doc(
                "Version, peer identity, hardware serial, uptime, log and projection positions, cluster, and the OS settings applied (platform: each concern's latest result)",
                "200",
                false,
            ),
            get(h::status),
        ),
        route(
            Get,
            "/health",
            openapi::doc(
                "The health gate's probe, without credentials: 200 when the daemon answers, its event log opens and the projections are current; 503 with the reasons otherwise",
                "200",
                false,
            ),
            get(h::health),
        ),
        route(
            Get,
            "/cluster/status",
            openapi::doc(
                "Each peer of this peer's list as the operator sees it (`state`, a `code` saying why a failed peer is not active: `unreachable`, `connection_lost` or `refused`; for a refusal, `refusal` names the rule, e.g. `edition_mismatch`; and the line `text`), the cluster mode and what keeps this peer from clustering",
                "200",
                false,
            ),
            get(h::cluster_status),
        ),
        route(
            Get,
            "/cluster/member-certificate",
            openapi::doc(
                "`?url=https://member`: the SHA-256 fingerprint of the certificate a cluster member presents, `{member_url, sha256}`, to check against its Status page before joining through it",
                "200",
                false,
            ),
            get(h::member_certificate),
        ),
        route(
            Post,
            "/cluster/join",
            openapi::doc(
                "This peer joins the cluster of a member: `{member_url, password, pre_shared_key, member_certificate_sha256}` (the cluster's administrator password; only that certificate is accepted from the member). A standalone member founds the cluster first; the other members (which must be active) list the new peer too, each reached through the admin port and certificate fingerprint the member shows on its peer line. Answers `{founded, other_members, status}` once every link is active; refusals (`member_certificate_changed`, `member_wrong_password`, `other_member_unavailable`, `member_update_failed`, `join_refused`, …) name the reason",
                "200",
                true,
            ),
            post(h::cluster_join),
        ),
    ]
}

/// The policy service on this peer: its status, an explained decision, the live conferences.
fn policy_routes() -> Vec<Route> {
    use Method::Get;
    vec![
        route(
            Get,
            "/policy/status",
            openapi::doc(
                "The policy service on this peer: whether it serves the VCS (and why not), and each bridge's health as seen here, with the certificate fingerprint each https bridge presented",
                "200",
                false,
            ),
            get(h::policy_status),
        ),
        route(
            Get,
            "/policy/explain",
            openapi::doc(
                "`?alias=<dialled alias>&source=<caller's alias>`: what a call would get now and why, decided by the same code as a real call with no side effect (no conference created, nothing recorded): the aliases tried (pattern, outcome), the conference and template, the conference already recorded and whether the call follows it, each pool's bridges with capacity, free ports, health and verdict, the `decision` (`route`, `create` with the candidates in order, `reject` with status and reason), `refused` when this peer refuses calls, and the `cpl` the VCS would get",
                "200",
                false,
            ),
            get(h::policy_explain),
        ),
        route(
            Get,
            "/policy/live-conferences",
            openapi::doc(
                "The conferences each enabled bridge hosts now, from its own enumeration: per bridge `{bridge, problem, conferences: [{name, bridge_conference_id, recorded, participant_count, participants: [{name, address, role, state}]}]}` (each bridge asked at once, with its own deadline)",
                "200",
                false,
            ),
            get(h::live_conferences),
        ),
    ]
}

/// A bridge's certificate: pinning the one it presents.
fn bridge_routes() -> Vec<Route> {
    vec![route(
        Method::Post,
        "/bridges/{name}/pin",
        openapi::doc(
            "Pin the certificate the https bridge presented to this peer last (`presented_sha256` in /policy/status): from then on exactly that certificate is accepted, without CA or name check. Body `{sha256}` (optional): the fingerprint the operator compared, refused (422) if the bridge now presents another. Answers the bridge",
            "200",
            true,
        ),
        post(h::pin_bridge_certificate),
    )]
}

/// What a monitoring system scrapes.
fn monitoring_routes() -> Vec<Route> {
    vec![route(
        Method::Get,
        "/metrics",
        openapi::doc(
            "Prometheus text format (0.0.4): policy requests by decision and status, decision latency, conference creations and failures, bridge health and ports, peer links and replication lag, event-log position, last backup and boot outcome, and `baton_alarm_active` for every defined alarm. A read-only account may scrape it",
            "200",
            false,
        ),
        get(h::metrics),
    )]
}

/// The active alarms and their acknowledgement.
fn alarm_routes() -> Vec<Route> {
    use Method::{Get, Post};
    vec![
        route(
            Get,
            "/alarms",
            openapi::doc(
                "The active alarms, most severe first: each with its stable id, severity, title, what to do, subject (peer, bridge, OS concern), detail, when raised and who acknowledged it; and the count nobody acknowledged",
                "200",
                false,
            ),
            get(h::alarms),
        ),
        route(
            Post,
            "/alarms/acknowledge",
            openapi::doc(
                "Silence an active alarm: `{id, subject}` (the subject as listed; empty for the appliance). It stays listed until its condition clears; the acknowledgement is in the Event Log",
                "204",
                true,
            ),
            post(h::acknowledge_alarm),
        ),
    ]
}

/// Maintenance > Restart options: the service, the machine, power off.
fn power_routes() -> Vec<Route> {
    use crate::services::upgrades::Power;
    let summaries = [
        (
            Power::RestartService,
            "Restart the Baton service on this peer (not the machine); configuration changes never need it",
        ),
        (
            Power::Reboot,
            "Reboot this peer (into the slot on trial after an install); the same as /upgrade/reboot",
        ),
        (Power::Shutdown, "Power this peer off; it stays off until someone powers it on"),
    ];
    summaries
        .into_iter()
        .map(|(power, summary)| {
            let path = format!("/system/{}", power.as_str());
            let handler = post(move |a: Ready, s: State<Arc<App>>| h::power(a, s, power));
            route(Method::Post, &path, openapi::doc(summary, "202", false), handler)
        })
        .collect()
}

/// Installing an upgrade and rebooting into it.
fn upgrade_routes() -> Vec<Route> {
    use Method::{Get, Post};
    vec![
        route(
            Get,
            "/upgrade",
            openapi::doc(
                "The A/B slots, the running and next boot, the last boot's outcome (a fallback included) and an install in progress",
                "200",
                false,
            ),
            get(h::upgrade_status),
        ),
        route(
            Post,
            "/upgrade",
            openapi::upgrade_install(),
            post(h::upgrade_install).layer(DefaultBodyLimit::max(UPGRADE_IMAGE_BYTES_MAX)),
        ),
        route(
            Post,
            "/upgrade/reboot",
            openapi::doc("Reboot now (into the slot on trial after an install)", "202", false),
            post(h::upgrade_reboot),
        ),
    ]
}

/// The configuration at an instant, its changes, both logs, and this document.
fn history_routes() -> Vec<Route> {
    use Method::Get;
    vec![
        route(
            Get,
            "/config",
            openapi::doc(
                "The whole configuration now, or `?at=<RFC 3339 time>` as it was then",
                "200",
                false,
            ),
            get(h::config),
        ),
        route(
            Get,
            "/config/diff",
            openapi::doc("What changed between `?from=` and `?to=` (default now)", "200", false),
            get(h::config_diff),
        ),
        route(
            Get,
            "/history/{kind}/{name}",
            openapi::doc(
                "Every change to one record, newest first; `kind` is a record kind or collection, e.g. bridges",
                "200",
                false,
            ),
            get(h::record_history),
        ),
        route(
            Get,
            "/logs/configuration",
            openapi::doc(
                "Configuration Log, the changes made on this peer (`origin=all_peers` adds the other peers'; each row's `origin_name`): `actor`, `kind`, `name`, `since`, `until`, `origin`, `before`, `limit`",
                "200",
                false,
            ),
            get(h::configuration_log),
        ),
        route(
            Get,
            "/logs/verify",
            openapi::doc(
                "Walk every hash chain of the event log, recomputing each hash: `intact`, the events walked and where each chain ends, or where and why one breaks",
                "200",
                false,
            ),
            get(h::verify_log),
        ),
        route(
            Get,
            "/logs/events",
            openapi::doc(
                "Event Log of this peer: `level`, `kind` (prefix), `text`, `before`, `limit`",
                "200",
                false,
            ),
            get(h::event_log),
        ),
        route(
            Get,
            "/openapi.json",
            openapi::doc("This document", "200", false),
            get(|| async { axum::Json(openapi::document(&table())) }),
        ),
    ]
}

/// Backups and restores, streamed.
fn backup_routes() -> Vec<Route> {
    use Method::{Get, Post};
    let restore_limit = usize::try_from(backups::RESTORE_BODY_BYTES_MAX).unwrap_or(usize::MAX);
    vec![
        route(Post, "/backups", openapi::backup(), post(h::create_backup)),
        route(
            Get,
            "/backups/progress",
            openapi::doc(
                "The running (or last) backup or restore: `{operation: {operation, running, done_bytes, total_bytes, started_ms, outcome}}`",
                "200",
                false,
            ),
            get(h::backup_progress),
        ),
        // The archive is streamed, never buffered; the limit is enforced while reading.
        route(
            Post,
            "/restore",
            openapi::restore(),
            post(h::restore).layer(DefaultBodyLimit::max(restore_limit)),
        ),
    ]
}

/// The routes of one record kind's collection (or singleton).
fn record_routes(kind: RecordKind) -> Vec<Route> {
    use Method::{Delete, Get, Post, Put};
    type S = State<Arc<App>>;
    let collection = format!("/{}", kind.collection());
    let docs = openapi::RecordDocs::of(kind);
    if kind.is_singleton() {
        let name = move || kind.as_str().to_owned();
        return vec![
            route(
                Get,
                &collection,
                docs.show,
                get(move |a: Ready, s: S| h::read_one(a, s, kind, name())),
            ),
            route(
                Put,
                &collection,
                docs.set,
                put(move |a: Ready, s: S, b: JsonBody| h::save(a, s, kind, None, b)),
            ),
            route(
                Delete,
                &collection,
                docs.clear,
                delete(move |a: Ready, s: S| h::remove(a, s, kind, name())),
            ),
        ];
    }
    let one = format!("{collection}/{{name}}");
    vec![
        route(Get, &collection, docs.list, get(move |a: Ready, s: S| h::list(a, s, kind))),
        route(
            Post,
            &collection,
            docs.create,
            post(move |a: Ready, s: S, b: JsonBody| h::create(a, s, kind, b)),
        ),
        route(
            Get,
            &one,
            docs.show,
            get(move |a: Ready, s: S, Path(n): Path<String>| h::read_one(a, s, kind, n)),
        ),
        route(
            Put,
            &one,
            docs.set,
            put(move |a: Ready, s: S, Path(n): Path<String>, b: JsonBody| {
                h::save(a, s, kind, Some(n), b)
            }),
        ),
        route(
            Delete,
            &one,
            docs.clear,
            delete(move |a: Ready, s: S, Path(n): Path<String>| h::remove(a, s, kind, n)),
        ),
    ]
}

/// Routes of `routes` that `document` does not describe (no operation with a summary for
/// the method, or a path parameter not declared), each as `METHOD path: problem`.
pub fn undescribed(routes: &[Route], document: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for route in routes {
        let method = route.method.as_str();
        let path = &document["paths"][&route.path];
        let summary = path[method]["summary"].as_str().unwrap_or_default();
        if summary.is_empty() {
            problems.push(format!("{} {}: not described", method.to_uppercase(), route.path));
            continue;
        }
        let declared: Vec<&str> = path["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "path")
            .filter_map(|parameter| parameter["name"].as_str())
            .collect();
        for parameter in path_parameters(&route.path) {
            if !declared.contains(&parameter) {
                problems.push(format!(
                    "{} {}: path parameter `{parameter}` not declared",
                    method.to_uppercase(),
                    route.path
                ));
            }
        }
    }
    problems
}

/// The `{parameter}` names of a path, in order.
pub fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every route the API serves is in its OpenAPI document, with its path parameters
    // named as the router names them.
    #[test]
    fn every_served_route_is_described() {
        let routes = table();
        let document = openapi::document(&routes);
        assert_eq!(undescribed(&routes, &document), Vec::<String>::new());
        for path in [
            "/upgrade",
            "/upgrade/reboot",
            "/policy/status",
            "/policy/explain",
            "/policy/live-conferences",
            "/cluster/status",
            "/openapi.json",
        ] {
            assert!(document["paths"][format!("{API_PREFIX}{path}")].is_object(), "{path}");
        }
        let history = &document["paths"]["/api/v1/history/{kind}/{name}"]["parameters"];
        assert_eq!(history[0]["name"], "kind");
    }

    // Goal: the check fails on a route served without a description, or described under a
    // path parameter the router does not use.
    #[test]
    fn an_undescribed_route_fails_the_check() {
        let mut routes = table();
        let mut document = openapi::document(&routes);
        routes.push(route(Method::Get, "/secret", Doc::default(), get(|| async {})));
        document["paths"]["/api/v1/history/{kind}/{name}"]["parameters"][0]["name"] =
            "collection".into();
        assert_eq!(
            undescribed(&routes, &document),
            [
                "GET /api/v1/history/{kind}/{name}: path parameter `kind` not declared",
                "GET /api/v1/secret: not described",
            ]
        );
    }
}

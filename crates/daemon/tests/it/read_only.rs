//! A read-only administrator account, route by route from the API's own route table: it reads
//! everything a full administrator reads and is refused every change with 403, so a route
//! added later is covered without editing this test.

use crate::{NEW_PASSWORD, TestDaemon};
use daemon::adapters::api::routes::{self, Access, Method as RouteMethod};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const AUDITOR: &str = "auditor";
const AUDITOR_PASSWORD: &str = "auditor password 1";

/// One record of every collection, so that every `{name}` route has something to show.
async fn add_one_of_each(daemon: &TestDaemon) {
    crate::api::add_conference_chain(daemon).await;
    for (path, body) in [
        ("/api/v1/locations", json!({"name": "loc"})),
        (
            "/api/v1/location-addresses",
            json!({"location": "loc", "ad_hoc_address": "127.0.0.1", "rendezvous_address": "127.0.0.2"}),
        ),
        (
            "/api/v1/conferences",
            json!({"name": "meeting-1", "bridge": "ts1", "bridge_conference_id": "1", "template": "meeting"}),
        ),
        (
            "/api/v1/administrators",
            json!({"name": AUDITOR, "password": AUDITOR_PASSWORD, "role": "read_only"}),
        ),
    ] {
        let (status, response) = daemon.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {response}");
    }
}

/// The route's path with its parameters and required query filled in.
fn concrete(daemon: &TestDaemon, path: &str) -> String {
    let name_of = |collection: &str| match collection {
        "administrators" => "admin",
        "bridges" => "ts1",
        "bridge-pools" => "pool-a",
        "service-preferences" => "pref-a",
        "conference-templates" => "meeting",
        "conference-aliases" => "meet",
        "locations" | "location-addresses" => "loc",
        "conferences" => "meeting-1",
        other => panic!("no sample record for {other}"),
    };
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let filled = match segment {
            "{kind}" => "administrators".to_owned(),
            "{name}" if path.contains("{kind}") => "admin".to_owned(),
            "{name}" => name_of(segments.last().unwrap()).to_owned(),
            literal => literal.to_owned(),
        };
        segments.push(filled);
    }
    let query = match path {
        "/api/v1/cluster/member-certificate" => format!("?url={}", daemon.url),
        "/api/v1/config/diff" => "?from=2020-01-01T00:00:00Z".to_owned(),
        "/api/v1/policy/explain" => "?alias=meet.room@example.com".to_owned(),
        _ => String::new(),
    };
    format!("{}{query}", segments.join("/"))
}

fn method(route: RouteMethod) -> Method {
    match route {
        RouteMethod::Get => Method::GET,
        RouteMethod::Post => Method::POST,
        RouteMethod::Put => Method::PUT,
        RouteMethod::Delete => Method::DELETE,
    }
}

/// A record kind's route: its answer does not change from one call to the next.
fn is_record_route(path: &str) -> bool {
    model::RecordKind::ALL.iter().any(|kind| {
        let collection = format!("/api/v1/{}", kind.collection());
        path == collection || path.starts_with(&format!("{collection}/"))
    })
}

/// Singletons nobody set answer 404 to everyone; every other read answers 200.
fn unset_singleton(path: &str) -> bool {
    model::RecordKind::ALL
        .iter()
        .any(|kind| kind.is_singleton() && path == format!("/api/v1/{}", kind.collection()))
}

// Goal: a read-only account gets what a full administrator gets from every read of the route
// table (200, the same body) and 403 `read_only_account` from every change, and its attempts
// change nothing; it may still change its own password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_account_reads_every_route_and_changes_nothing() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    add_one_of_each(&daemon).await;
    let auditor = Some((AUDITOR, AUDITOR_PASSWORD));
    let (_, config_before) = daemon.call(Method::GET, "/api/v1/config", None).await;
    let (mut reads, mut changes) = (0, 0);
    for route in routes::table() {
        let path = concrete(&daemon, &route.path);
        let (access, method) = (route.access, method(route.method));
        if access == Access::AnyAccount && method != Method::GET {
            continue; // Logging in and out and one's own password: below.
        }
        let body = (method != Method::GET).then(|| json!({}));
        let (status, answer) = daemon.call_as(auditor, method.clone(), &path, body).await;
        if method == Method::GET {
            reads += 1;
            let (admin_status, admin_answer) = daemon.call(Method::GET, &path, None).await;
            let expected =
                if unset_singleton(&route.path) { StatusCode::NOT_FOUND } else { StatusCode::OK };
            assert_eq!((status, admin_status), (expected, expected), "GET {path}: {answer}");
            if is_record_route(&route.path) {
                assert_eq!(answer, admin_answer, "GET {path}");
            }
        } else {
            changes += 1;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "read_only_account", "{method} {path}");
            assert!(answer["error"]["message"].as_str().unwrap().contains("read-only"));
        }
    }
    assert!(reads >= 25 && changes >= 40, "{reads} reads, {changes} changes");
    let (_, config_after) = daemon.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(
        config_before["records"], config_after["records"],
        "a refused change changed the configuration"
    );

    let (status, body) = daemon
        .call_as(
            auditor,
            Method::POST,
            "/api/v1/password",
            Some(
                json!({"current_password": AUDITOR_PASSWORD, "new_password": "auditor password 2"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, listed) = daemon.call(Method::GET, "/api/v1/administrators", None).await;
    assert_eq!(status, StatusCode::OK);
    let roles: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|admin| (admin["name"].as_str().unwrap(), admin["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("admin", "full"), (AUDITOR, "read_only")]);
    daemon.stop().await;
}

// Goal: the last full administrator can be neither demoted nor removed through the API, and a
// demoted account loses its rights at once (same session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_full_administrator_stays_and_a_demotion_applies_at_once() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let (status, body) = daemon
        .call(Method::PUT, "/api/v1/administrators/admin", Some(json!({"role": "read_only"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "role");
    let (status, body) = daemon.call(Method::DELETE, "/api/v1/administrators/admin", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let second = json!({"name": "second", "password": NEW_PASSWORD, "role": "full"});
    let (status, body) = daemon.call(Method::POST, "/api/v1/administrators", Some(second)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = daemon
        .call(Method::PUT, "/api/v1/administrators/admin", Some(json!({"role": "read_only"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        daemon.call(Method::POST, "/api/v1/locations", Some(json!({"name": "x"}))).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, Value::from("read_only_account"))
    );
    daemon.stop().await;
}

//! What an operator or a script sees from the admin API: authentication, the forced password
//! change, CRUD with field-level errors, refusals that change nothing, logs and history.

use crate::{NEW_PASSWORD, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

fn error_fields(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|fields| fields.iter().map(|f| f["field"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A TelePresence Server bridge record named `name` (nothing answers at its address).
pub(crate) fn telepresence_server(name: &str) -> Value {
    json!({"name": name, "bridge_type": "telepresence_server", "address": "127.0.0.1:8080",
           "protocol": "http", "username": "api", "password": "bridge-secret", "capacity_ports": 48})
}

pub(crate) async fn add_conference_chain(daemon: &TestDaemon) {
    for (path, body) in [
        ("/api/v1/bridges", telepresence_server("ts1")),
        (
            "/api/v1/bridge-pools",
            json!({"name": "pool-a", "bridge_type": "telepresence_server", "bridges": ["ts1"]}),
        ),
        (
            "/api/v1/service-preferences",
            json!({"name": "pref-a", "bridge_type": "telepresence_server", "pools": ["pool-a"]}),
        ),
        (
            "/api/v1/conference-templates",
            json!({"name": "meeting", "conference_type": "meeting", "service_preference": "pref-a"}),
        ),
        (
            "/api/v1/conference-aliases",
            json!({"name": "meet", "pattern": "meet\\.(.+)@example\\.com", "conference_name": "meeting-$1",
                   "template": "meeting", "priority": 10}),
        ),
    ] {
        let (status, response) = daemon.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_valid_credentials_get_401_and_failures_are_logged() {
    let daemon = TestDaemon::start().await;
    let (status, body) = daemon.call_as(None, Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthenticated");
    let (status, _) =
        daemon.call_as(Some(("admin", "wrong")), Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        daemon.call_as(Some(("nobody", "TANDBERG")), Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = daemon
        .client
        .get(format!("{}/api/v1/status", daemon.url))
        .bearer_auth("not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));

    daemon.change_factory_password().await;
    let (status, log) =
        daemon.call(Method::GET, "/api/v1/logs/events?kind=login.failed", None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let failures = log["entries"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{log}");
    assert!(failures.iter().any(|entry| entry["actor"] == "nobody"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_password_must_be_changed_before_anything_else() {
    let daemon = TestDaemon::start().await;
    let factory = Some(("admin", "TANDBERG"));
    let (status, body) = daemon.call_as(factory, Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "password_change_required");
    let bridge = json!({"name": "m1", "bridge_type": "mcu", "address": "127.0.0.1", "username": "u", "capacity_ports": 10});
    let (status, _) = daemon.call_as(factory, Method::POST, "/api/v1/bridges", Some(bridge)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) = daemon
        .call_as(factory, Method::POST, "/api/v1/password", Some(change("nope", NEW_PASSWORD)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), ["current_password"]);
    let (status, body) = daemon
        .call_as(factory, Method::POST, "/api/v1/password", Some(change("TANDBERG", "short")))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), ["new_password"]);

    daemon.change_factory_password().await;
    let (status, _) = daemon.call_as(factory, Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password no longer works");
    let (status, body) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["projections_current"], true);

    // The change is durable and the factory account is not recreated on restart.
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir).await;
    let (status, _) = daemon.call_as(factory, Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_clearly_and_change_nothing() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    add_conference_chain(&daemon).await;
    let (_, config_before) = daemon.call(Method::GET, "/api/v1/config", None).await;
    let (_, status_before) = daemon.call(Method::GET, "/api/v1/status", None).await;

    let raw = |body: &'static str, content_type: &'static str| {
        daemon
            .client
            .post(format!("{}/api/v1/bridges", daemon.url))
            .basic_auth("admin", Some(NEW_PASSWORD))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = raw("{\"name\": \"x\",", "application/json").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response.json().await.unwrap()), "invalid_json");
    let response = raw("[1, 2]", "application/json").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = raw("{}", "text/plain").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&response.json().await.unwrap()), "unsupported_media_type");

    // Well over the limit: the client is still sending when the answer is ready, and must
    // get it rather than a reset connection.
    let huge = json!({"name": "big", "bridge_type": "mcu", "address": "x".repeat(900 * 1024),
                      "username": "u", "capacity_ports": 1});
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "body_too_large");

    let unknown = json!({"name": "m1", "bridge_type": "mcu", "address": "127.0.0.1", "username": "u",
                         "capacity_ports": 10, "colour": "blue"});
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(unknown)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "unknown_field");
    assert_eq!(error_fields(&body), ["colour"]);

    let wrong_type = json!({"name": "m1", "bridge_type": "mcu", "address": "127.0.0.1", "username": "u", "capacity_ports": "ten"});
    let (status, _) = daemon.call(Method::POST, "/api/v1/bridges", Some(wrong_type)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every invalid field is reported at once, by name.
    let invalid = json!({"name": "", "bridge_type": "mcu", "address": "not a host", "username": "u", "capacity_ports": 0});
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(invalid)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_fields");
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["address", "capacity_ports", "name"]);

    let dangling = json!({"name": "pool-b", "bridge_type": "telepresence_server", "bridges": ["ts1", "ghost"]});
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridge-pools", Some(dangling)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_fields(&body), ["bridges[1]"]);

    let (status, body) = daemon.call(Method::DELETE, "/api/v1/bridges/ts1", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "in_use");
    let (status, body) = daemon.call(Method::DELETE, "/api/v1/administrators/admin", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let duplicate = json!({"name": "ts1", "bridge_type": "mcu", "address": "127.0.0.1", "username": "u", "capacity_ports": 1});
    let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(duplicate)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "already_exists");
    let renamed = json!({"name": "ts2"});
    let (status, body) = daemon.call(Method::PUT, "/api/v1/bridges/ts1", Some(renamed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_fields(&body), ["name"]);
    let (status, body) = daemon.call(Method::GET, "/api/v1/bridges/ghost", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = daemon.call(Method::GET, "/api/v1/logs/events?level=loud", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_fields(&body), ["level"]);

    let (status, body) = daemon.call(Method::GET, "/api/v1/config/diff", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"), "{body}");
    assert_eq!(error_fields(&body), ["from"]);
    let (status, body) = daemon.call(Method::GET, "/api/v1/logs/events?limit=many", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_query"), "{body}");
    let (status, body) = daemon.call(Method::GET, "/api/v1/config?at=yesterday", None).await;
    assert_eq!(
        (status, error_fields(&body)),
        (StatusCode::BAD_REQUEST, vec!["at".to_owned()]),
        "{body}"
    );

    let (_, config_after) = daemon.call(Method::GET, "/api/v1/config", None).await;
    let (_, status_after) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(config_before["records"], config_after["records"]);
    assert_eq!(
        status_before["log_position"], status_after["log_position"],
        "no event was appended"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_with_secrets_hidden_and_changes_audited() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let (_, status) = daemon.call(Method::GET, "/api/v1/status", None).await;
    let before_ms = {
        // Everything before this instant is the factory state.
        std::thread::sleep(std::time::Duration::from_millis(5));
        daemon::base::clock::now_ms()
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(status["peer_id"].as_str().unwrap().len() == 32);
    add_conference_chain(&daemon).await;

    let (status, bridge) = daemon.call(Method::GET, "/api/v1/bridges/ts1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bridge["password"], "********", "secrets are never returned");
    assert_eq!(bridge["capacity_ports"], 48);
    assert_eq!(bridge["enabled"], true, "defaults are filled in");

    // Editing one field with the redacted secret sent back keeps the stored password.
    let mut edited = bridge.clone();
    edited.as_object_mut().unwrap().remove("kind");
    edited["capacity_ports"] = json!(96);
    let (status, body) = daemon.call(Method::PUT, "/api/v1/bridges/ts1", Some(edited)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges.as_array().unwrap().len(), 1);
    assert_eq!(bridges[0]["capacity_ports"], 96);

    // Peer-local settings are singletons.
    let (status, body) = daemon
        .call(
            Method::PUT,
            "/api/v1/system-name",
            Some(json!({"host_name": "baton1", "domain": "example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = daemon.call(Method::GET, "/api/v1/system-name", None).await;
    assert_eq!((status, body["host_name"].as_str()), (StatusCode::OK, Some("baton1")));
    let (status, _) = daemon.call(Method::GET, "/api/v1/snmp", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unset singletons are 404");

    // The Configuration Log shows who changed what, newest first, with secrets redacted.
    let (_, log) =
        daemon.call(Method::GET, "/api/v1/logs/configuration?kind=bridges&name=ts1", None).await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["before"]["capacity_ports"], 48);
    assert_eq!(entries[0]["after"]["capacity_ports"], 96);
    assert_eq!(entries[1]["before"], Value::Null);
    assert!(!log.to_string().contains("bridge-secret"));
    let (_, page) = daemon.call(Method::GET, "/api/v1/logs/configuration?limit=2", None).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_u64().unwrap();
    let (_, older) = daemon
        .call(Method::GET, &format!("/api/v1/logs/configuration?limit=2&before={next}"), None)
        .await;
    assert!(older["entries"][0]["position"].as_u64().unwrap() < next);

    let (_, history) = daemon.call(Method::GET, "/api/v1/history/bridges/ts1", None).await;
    assert_eq!(history["entries"].as_array().unwrap().len(), 2);

    // The configuration as it was before the chain was added, and the difference since.
    let (_, then) = daemon.call(Method::GET, &format!("/api/v1/config?at={before_ms}"), None).await;
    let kinds: Vec<&str> =
        then["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["administrator"], "{then}");
    let (_, diff) =
        daemon.call(Method::GET, &format!("/api/v1/config/diff?from={before_ms}"), None).await;
    let changed: Vec<&str> =
        diff["changes"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(changed, ["ts1", "pool-a", "pref-a", "meeting", "meet", "system_name"], "{diff}");

    // Removing in dependency order works.
    for path in [
        "conference-aliases/meet",
        "conference-templates/meeting",
        "service-preferences/pref-a",
        "bridge-pools/pool-a",
        "bridges/ts1",
    ] {
        let (status, body) = daemon.call(Method::DELETE, &format!("/api/v1/{path}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}: {body}");
    }
    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges, json!([]));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_log_in_and_out_and_the_openapi_document_is_served() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let (status, session) = daemon
        .call_as(
            None,
            Method::POST,
            "/api/v1/sessions",
            Some(json!({"username": "admin", "password": NEW_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let token = session["token"].as_str().unwrap();
    let get = |token: String| {
        daemon.client.get(format!("{}/api/v1/status", daemon.url)).bearer_auth(token).send()
    };
    assert_eq!(get(token.to_owned()).await.unwrap().status(), StatusCode::OK);
    let logout = daemon
        .client
        .delete(format!("{}/api/v1/sessions/current", daemon.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(token.to_owned()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let (status, wrong) = daemon
        .call_as(
            None,
            Method::POST,
            "/api/v1/sessions",
            Some(json!({"username": "admin", "password": "x"})),
        )
        .await;
    assert_eq!((status, error_code(&wrong)), (StatusCode::UNAUTHORIZED, "unauthenticated"));

    let (status, openapi) = daemon.call_as(None, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(openapi["paths"]["/api/v1/bridges/{name}"]["put"].is_object());
    assert!(
        openapi["paths"]["/api/v1/ntp"]["get"]["summary"]
            .as_str()
            .unwrap()
            .contains("this peer only")
    );
    // Field schemas come from the model's own types, with nested types inlined.
    let bridge = &openapi["components"]["schemas"]["bridge"];
    assert_eq!(bridge["properties"]["capacity_ports"]["type"], "integer", "{bridge}");
    assert!(bridge["required"].as_array().unwrap().contains(&json!("address")));
    assert!(bridge["properties"]["bridge_type"].to_string().contains("telepresence_server"));
    let admin_input = &openapi["components"]["schemas"]["administrator_input"];
    assert!(admin_input["properties"]["password"].is_object());
    assert!(admin_input["properties"]["password_hash"].is_null());
    assert!(!openapi.to_string().contains("#/$defs/"), "no dangling references");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_are_created_with_hashed_passwords() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/administrators",
            Some(json!({"name": "ops", "password_hash": "$argon2id$fake"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "hashes cannot be injected: {body}");
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/administrators",
            Some(json!({"name": "ops", "password": "short"})),
        )
        .await;
    assert_eq!(
        (status, error_fields(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["password".to_owned()])
    );
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/administrators",
            Some(json!({"name": "ops", "password": "ops password 1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["password_hash"], "********");
    let (status, _) =
        daemon.call_as(Some(("ops", "ops password 1")), Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = daemon.call(Method::DELETE, "/api/v1/administrators/ops", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) =
        daemon.call_as(Some(("ops", "ops password 1")), Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    daemon.stop().await;
}

/// An HTTPS client that trusts only `ca_pem`, with no pooled connections from before.
fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .build()
        .unwrap()
}

async fn status_with(
    client: &reqwest::Client,
    daemon: &TestDaemon,
) -> Result<StatusCode, reqwest::Error> {
    let response = client
        .get(format!("{}/api/v1/status", daemon.url))
        .basic_auth("admin", Some(NEW_PASSWORD))
        .send()
        .await?;
    Ok(response.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_takes_effect_without_a_restart() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let built_in_ca = std::fs::read(daemon.data_dir().join("tls/ca.pem")).unwrap();

    // The operator's own CA and a server certificate for this address.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();

    // A key that does not belong to the certificate is refused, and nothing changes.
    let wrong_key = rcgen::KeyPair::generate().unwrap();
    let mismatched = json!({"server_certificate_pem": server.pem(), "server_private_key_pem": wrong_key.serialize_pem()});
    let (status, body) = daemon.call(Method::PUT, "/api/v1/certificates", Some(mismatched)).await;
    assert_eq!(
        (status, error_fields(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["server_certificate_pem".to_owned()])
    );
    assert_eq!(status_with(&client_trusting(&built_in_ca), &daemon).await.unwrap(), StatusCode::OK);
    let (status, _) = daemon.call(Method::GET, "/api/v1/certificates", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was saved");

    let good = json!({"server_certificate_pem": server.pem(), "server_private_key_pem": server_key.serialize_pem(),
                      "trusted_ca_pem": ca.pem()});
    let (status, body) = daemon.call(Method::PUT, "/api/v1/certificates", Some(good)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_private_key_pem"], "********");

    // New connections see the operator's certificate at once; no restart.
    let operator = client_trusting(ca.pem().as_bytes());
    assert_eq!(status_with(&operator, &daemon).await.unwrap(), StatusCode::OK);
    assert!(
        status_with(&client_trusting(&built_in_ca), &daemon).await.is_err(),
        "the old identity is gone"
    );

    // It survives a restart.
    let dir = daemon.stop().await;
    let daemon = TestDaemon::start_in(dir).await;
    assert_eq!(status_with(&operator, &daemon).await.unwrap(), StatusCode::OK);

    // Clearing the record brings back the identity made on first start.
    let response = operator
        .delete(format!("{}/api/v1/certificates", daemon.url))
        .basic_auth("admin", Some(NEW_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_with(&client_trusting(&built_in_ca), &daemon).await.unwrap(), StatusCode::OK);
    daemon.stop().await;
}

/// The active alarms' ids and the count nobody acknowledged.
async fn alarm_ids(daemon: &TestDaemon) -> (Vec<String>, u64) {
    let (status, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alarms: api::Alarms = serde_json::from_value(body).unwrap();
    let ids = alarms.alarms.iter().map(|alarm| alarm.id.clone()).collect();
    (ids, alarms.unacknowledged as u64)
}

/// A certificate for 127.0.0.1 that `ca` signed, valid until `days` from now, and its key, as
/// the `certificates` record takes them.
fn certificate_expiring_in(days: i64, ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let certificate = params.signed_by(&key, ca, ca_key).unwrap();
    json!({"server_certificate_pem": certificate.pem(), "server_private_key_pem": key.serialize_pem()})
}

/// Waits until the alarm `id` is active (`true`) or not, as the alarms' task gathers it.
async fn alarm_becomes(daemon: &TestDaemon, id: &str, active: bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ids, _) = alarm_ids(daemon).await;
        if ids.iter().any(|listed| listed == id) == active {
            return ids;
        }
        assert!(std::time::Instant::now() < deadline, "{id} active: {active}? {ids:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

// Goal: the certificate-expiring alarm reads the HTTPS certificate the admin listener presents:
// the first-start one (years left) raises nothing, an operator certificate expiring in 10 days
// raises it with the days left, one expiring in 90 days clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_certificate_expiring_within_30_days_raises_an_alarm() {
    let mut daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    alarm_becomes(&daemon, "factory_password", false).await;
    assert!(!alarm_ids(&daemon).await.0.contains(&"certificate_expiring".to_owned()));
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let built_in_ca = std::fs::read(daemon.data_dir().join("tls/ca.pem")).unwrap();
    // New connections meet the operator's certificate once it is saved.
    daemon.client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&built_in_ca).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();

    let body = certificate_expiring_in(10, &ca, &ca_key);
    let (status, answer) = daemon.call(Method::PUT, "/api/v1/certificates", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    alarm_becomes(&daemon, "certificate_expiring", true).await;
    let (_, alarms) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
    let alarms: api::Alarms = serde_json::from_value(alarms).unwrap();
    let raised = alarms.alarms.iter().find(|alarm| alarm.id == "certificate_expiring").unwrap();
    assert!(
        ["expires in 9 days", "expires in 10 days"].contains(&raised.detail.as_str()),
        "{raised:?}"
    );

    let body = certificate_expiring_in(90, &ca, &ca_key);
    let (status, answer) = daemon.call(Method::PUT, "/api/v1/certificates", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    alarm_becomes(&daemon, "certificate_expiring", false).await;
    daemon.stop().await;
}

// Goal: a fresh daemon raises the factory password alarm, changing the password clears it by
// itself, and both are in the Event Log; acknowledging an alarm that is not active is refused (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_factory_password_alarm_is_raised_then_cleared_by_the_change() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alarm_ids(&daemon).await.0.contains(&"factory_password".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "the alarm was not cleared");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut lines: Vec<(String, String)> = Vec::new();
    for kind in ["alarm.raised", "alarm.cleared"] {
        // The Event Log is written behind the answer.
        while !lines.iter().any(|(k, m)| k == kind && m.starts_with("factory_password:")) {
            assert!(std::time::Instant::now() < deadline, "{kind} missing: {lines:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let (status, body) =
                daemon.call(Method::GET, "/api/v1/logs/events?kind=alarm.&limit=100", None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            lines = body["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (e["kind"].as_str().unwrap().into(), e["message"].as_str().unwrap().into())
                })
                .collect();
        }
    }
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/alarms/acknowledge",
            Some(json!({"id": "factory_password", "subject": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), ["id"]);
    let (status, body) = daemon
        .call(Method::POST, "/api/v1/alarms/acknowledge", Some(json!({"id": "no_such"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    daemon.stop().await;
}

// Goal: Restart options through the API: each runs its own configured command (recorded
// here by `touch`) and is written to the Event Log under its own kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reboot_and_shutdown_run_their_commands_and_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let touch = |name: &str| vec!["touch".to_owned(), marks.join(name).display().to_string()];
    let (restart, reboot, shutdown) = (touch("restart"), touch("reboot"), touch("shutdown"));
    let daemon = TestDaemon::start_with(dir, move |config| {
        config.upgrade.restart_command = restart;
        config.upgrade.reboot_command = reboot;
        config.upgrade.shutdown_command = shutdown;
    })
    .await;
    daemon.change_factory_password().await;
    let marks = daemon.data_dir().join("marks");
    for (word, kind) in [
        ("restart", "service.restart"),
        ("reboot", "system.reboot"),
        ("shutdown", "system.shutdown"),
    ] {
        assert!(!marks.join(word).exists());
        let (status, body) =
            daemon.call(Method::POST, &format!("/api/v1/system/{word}"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{word}: {body}");
        assert!(marks.join(word).exists(), "{word}: its command did not run");
        // The Event Log is written behind the answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let path = format!("/api/v1/logs/events?kind={kind}");
            let (_, log) = daemon.call(Method::GET, &path, None).await;
            let entries = log["entries"].as_array().unwrap();
            if entries.len() == 1 {
                assert_eq!(entries[0]["actor"], "admin", "{log}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{kind}: {log}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let others: Vec<_> = std::fs::read_dir(&marks).unwrap().collect();
    assert_eq!(others.len(), 3, "each ran its own command once");
    daemon.stop().await;
}

// Goal: a bridge whose conferences reserve more than 80% of its ports raises an alarm about
// it (ports counted as the policy decisions count them), cleared when a conference ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_above_80_percent_of_its_ports_raises_an_alarm() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    add_conference_chain(&daemon).await;
    // ts1 has 48 ports; a conference of the template without a limit reserves 10.
    for n in 0..4 {
        let conference = json!({"name": format!("meeting-{n}"), "bridge": "ts1",
                                "bridge_conference_id": format!("{n}"), "template": "meeting"});
        let (status, body) =
            daemon.call(Method::POST, "/api/v1/conferences", Some(conference)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let ports_alarm = |body: &Value| {
        body["alarms"].as_array().unwrap().iter().find(|a| a["id"] == "bridge_ports_high").cloned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    let alarm = loop {
        let (_, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
        if let Some(alarm) = ports_alarm(&body) {
            break alarm;
        }
        assert!(std::time::Instant::now() < deadline, "no ports alarm: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(alarm["subject"], "ts1");
    assert_eq!(alarm["detail"], "83% of its ports in use");
    let (status, body) = daemon.call(Method::DELETE, "/api/v1/conferences/meeting-0", None).await;
    assert!(status.is_success(), "{body}");
    loop {
        let (_, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
        if ports_alarm(&body).is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "62% still raises it: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.stop().await;
}

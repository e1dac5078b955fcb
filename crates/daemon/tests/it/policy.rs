//! The policy service as a VCS sees it: Basic credentials, form-encoded calls answered with
//! CPL in the VCS dialect, the status path telling the VCS whether to send calls here.

use crate::TestDaemon;
use policy::request::REQUEST_BYTES_MAX;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VCS_USER: &str = "vcs";
const VCS_PASSWORD: &str = "policy service password";

async fn configured() -> TestDaemon {
    configured_with(TestDaemon::start().await).await
}

async fn configured_with(daemon: TestDaemon) -> TestDaemon {
    daemon.change_factory_password().await;
    let records: [(&str, Value); 7] = [
        ("policy-service", json!({"username": VCS_USER, "password": VCS_PASSWORD})),
        (
            "bridges",
            json!({"name": "mcu1", "bridge_type": "mcu", "address": "192.0.2.50:8080",
                            "username": "api", "password": "pw", "capacity_ports": 40}),
        ),
        ("bridge-pools", json!({"name": "main", "bridge_type": "mcu", "bridges": ["mcu1"]})),
        (
            "service-preferences",
            json!({"name": "mcu-first", "bridge_type": "mcu", "pools": ["main"]}),
        ),
        (
            "conference-templates",
            json!({"name": "meeting", "conference_type": "meeting",
                                         "service_preference": "mcu-first", "max_participants": 10}),
        ),
        (
            "conference-aliases",
            json!({"name": "meet", "pattern": r"meet\.(?P<room>[a-z]+)@example\.com",
                                       "conference_name": "${room}", "template": "meeting", "priority": 1}),
        ),
        (
            "conferences",
            json!({"name": "alice", "bridge": "mcu1", "bridge_conference_id": "alice",
                               "template": "meeting"}),
        ),
    ];
    for (collection, body) in records {
        let method = if collection == "policy-service" { Method::PUT } else { Method::POST };
        let (status, answer) =
            daemon.call(method, &format!("/api/v1/{collection}"), Some(body)).await;
        assert!(status.is_success(), "{collection}: {status} {answer}");
    }
    daemon
}

/// A configured daemon that also serves the policy service on plain HTTP, and that address.
async fn configured_with_plain_http() -> (TestDaemon, std::net::SocketAddr) {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start_with(dir, |config| config.policy_http_listen = Some(plain));
    (configured_with(daemon.await).await, plain)
}

async fn policy_call(
    daemon: &TestDaemon,
    credentials: (&str, &str),
    body: &str,
) -> (StatusCode, String) {
    let response = daemon
        .client
        .post(format!("{}/baton/policy", daemon.url))
        .basic_auth(credentials.0, Some(credentials.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The VCS's status poll, with the policy service's credentials.
async fn status_path(daemon: &TestDaemon) -> StatusCode {
    status_path_as(daemon, Some((VCS_USER, VCS_PASSWORD))).await.0
}

async fn status_path_as(
    daemon: &TestDaemon,
    credentials: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let mut request = daemon.client.get(format!("{}/baton/policy/status", daemon.url));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn search(alias: &str) -> String {
    format!(
        "POLICY_TYPE=SEARCH&METHOD=INVITE&PROTOCOL=SIP&DESTINATION_ALIAS={}&GLOBAL_CALL-SERIAL_NUMBER=1",
        alias.replace('@', "%40")
    )
}

#[tokio::test]
async fn calls_are_routed_or_rejected_in_cpl_the_vcs_accepts() {
    let daemon = configured().await;
    let vcs = (VCS_USER, VCS_PASSWORD);
    assert_eq!(status_path(&daemon).await, StatusCode::OK);

    let (status, cpl) = policy_call(&daemon, vcs, &search("sip:Meet.Alice@example.com")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        policy::cpl::interpret(&cpl),
        Ok(policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] })
    );
    let (_, cpl) = policy_call(&daemon, vcs, &search("nobody@example.org")).await;
    assert_eq!(
        policy::cpl::interpret(&cpl),
        Ok(policy::cpl::Outcome::Reject {
            status: 404,
            reason: "No conference alias matches".to_owned()
        })
    );
    // A new conference whose only bridge cannot be reached here: a bridge failure, said so.
    let (_, cpl) = policy_call(&daemon, vcs, &search("meet.bob@example.com")).await;
    assert!(
        matches!(
            policy::cpl::interpret(&cpl),
            Ok(policy::cpl::Outcome::Reject { status: 502 | 503, .. })
        ),
        "{cpl}"
    );
}

#[tokio::test]
async fn bad_credentials_and_bad_requests_change_nothing() {
    let daemon = configured().await;
    let (_, before) = daemon.call(Method::GET, "/api/v1/status", None).await;
    let (status, _) =
        policy_call(&daemon, (VCS_USER, "wrong"), &search("meet.alice@example.com")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        policy_call(&daemon, ("admin", crate::NEW_PASSWORD), &search("meet.alice@example.com"))
            .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "administrators are not the VCS");
    let (status, text) = policy_call(&daemon, (VCS_USER, VCS_PASSWORD), "POLICY_TYPE=BOGUS").await;
    assert_eq!(
        (status, text.trim()),
        (StatusCode::BAD_REQUEST, "parameter POLICY_TYPE has an unknown value \"BOGUS\"")
    );
    let (status, _) = policy_call(&daemon, (VCS_USER, VCS_PASSWORD), "DESTINATION_ALIAS=%zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, after) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(before["log_position"], after["log_position"]);
}

#[tokio::test]
async fn maintenance_mode_moves_the_vcs_away_and_back() {
    let daemon = configured().await;
    let (status, _) =
        daemon.call(Method::PUT, "/api/v1/maintenance", Some(json!({"enabled": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status_path(&daemon).await, StatusCode::SERVICE_UNAVAILABLE);
    let (_, cpl) =
        policy_call(&daemon, (VCS_USER, VCS_PASSWORD), &search("meet.alice@example.com")).await;
    assert_eq!(
        policy::cpl::interpret(&cpl),
        Ok(policy::cpl::Outcome::Reject {
            status: 503,
            reason: "Conference service in maintenance".to_owned()
        })
    );
    daemon.call(Method::PUT, "/api/v1/maintenance", Some(json!({"enabled": false}))).await;
    assert_eq!(status_path(&daemon).await, StatusCode::OK);
}

/// A peer put in maintenance tells the VCS at once (503 on the status path) but keeps deciding
/// the calls that still reach it until the VCS's next poll (the drain), then refuses them.
#[tokio::test]
async fn maintenance_drains_the_calls_sent_before_the_vcs_noticed() {
    const DRAIN_MS: u64 = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let started = TestDaemon::start_with(dir, |config| config.maintenance_drain_ms = DRAIN_MS);
    let daemon = configured_with(started.await).await;
    let vcs = (VCS_USER, VCS_PASSWORD);
    daemon.call(Method::PUT, "/api/v1/maintenance", Some(json!({"enabled": true}))).await;
    assert_eq!(status_path(&daemon).await, StatusCode::SERVICE_UNAVAILABLE);
    let (_, cpl) = policy_call(&daemon, vcs, &search("meet.alice@example.com")).await;
    assert_eq!(
        policy::cpl::interpret(&cpl),
        Ok(policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] }),
        "still draining"
    );
    let (_, status) = daemon.call(Method::GET, "/api/v1/policy/status", None).await;
    let left_ms = status["maintenance_drain_ms_left"].as_u64().unwrap();
    assert!(left_ms > 0 && left_ms <= DRAIN_MS, "{status}");

    tokio::time::sleep(std::time::Duration::from_millis(left_ms + 100)).await;
    let (_, status) = daemon.call(Method::GET, "/api/v1/policy/status", None).await;
    assert_eq!(status["maintenance_drain_ms_left"], 0, "{status}");
    let (_, cpl) = policy_call(&daemon, vcs, &search("meet.alice@example.com")).await;
    assert_eq!(
        policy::cpl::interpret(&cpl),
        Ok(policy::cpl::Outcome::Reject {
            status: 503,
            reason: "Conference service in maintenance".to_owned()
        })
    );
    // Out of maintenance: no drain, serving again.
    daemon.call(Method::PUT, "/api/v1/maintenance", Some(json!({"enabled": false}))).await;
    let (_, status) = daemon.call(Method::GET, "/api/v1/policy/status", None).await;
    assert_eq!(status["maintenance_drain_ms_left"], Value::Null, "{status}");
    assert_eq!(status_path(&daemon).await, StatusCode::OK);
}

#[tokio::test]
async fn an_unconfigured_peer_tells_the_vcs_it_cannot_serve() {
    let daemon = TestDaemon::start().await;
    let (status, text) = status_path_as(&daemon, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("not configured"), "{text}");
}

/// The VCS shows the policy service as Active only with the right credentials, so wrong ones
/// are found at the status poll, not at the first call.
#[tokio::test]
async fn the_status_path_checks_the_vcs_credentials() {
    let daemon = configured().await;
    assert_eq!(status_path_as(&daemon, None).await.0, StatusCode::UNAUTHORIZED);
    let wrong = status_path_as(&daemon, Some((VCS_USER, "wrong"))).await.0;
    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
    let admin = status_path_as(&daemon, Some(("admin", crate::NEW_PASSWORD))).await.0;
    assert_eq!(admin, StatusCode::UNAUTHORIZED, "administrators are not the VCS");
    assert_eq!(status_path(&daemon).await, StatusCode::OK);
    // Polls after the first cost no password check: a hundred answer at once.
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(status_path(&daemon).await, StatusCode::OK);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    // Renaming the account invalidates what was remembered.
    let rename = json!({"username": "vcs2", "password": VCS_PASSWORD});
    let (status, _) = daemon.call(Method::PUT, "/api/v1/policy-service", Some(rename)).await;
    assert!(status.is_success());
    assert_eq!(status_path(&daemon).await, StatusCode::UNAUTHORIZED);
    let renamed = status_path_as(&daemon, Some(("vcs2", VCS_PASSWORD))).await.0;
    assert_eq!(renamed, StatusCode::OK);
    // Right credentials in maintenance: 503 with the reason.
    daemon.call(Method::PUT, "/api/v1/maintenance", Some(json!({"enabled": true}))).await;
    let (status, text) = status_path_as(&daemon, Some(("vcs2", VCS_PASSWORD))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("maintenance"), "{text}");
}

/// A wrong user name costs the same password check as a wrong password, so timing does not
/// tell whether the name exists (each path tried 3 times, below the login throttle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_logins_take_as_long_whether_the_user_exists_or_not() {
    let daemon = configured().await;
    let mut slowest_unknown_ms = 0;
    let mut fastest_known_ms = u128::MAX;
    for attempt in 0..3 {
        let started = std::time::Instant::now();
        let user = format!("nobody{attempt}");
        let (status, _) = policy_call(&daemon, (&user, VCS_PASSWORD), "POLICY_TYPE=SEARCH").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        slowest_unknown_ms = slowest_unknown_ms.max(started.elapsed().as_millis());
        let started = std::time::Instant::now();
        let (status, _) = policy_call(&daemon, (VCS_USER, "wrong"), "POLICY_TYPE=SEARCH").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        fastest_known_ms = fastest_known_ms.min(started.elapsed().as_millis());
    }
    // An argon2 check takes tens of milliseconds; a skipped one a few.
    assert!(
        slowest_unknown_ms * 2 >= fastest_known_ms,
        "unknown user {slowest_unknown_ms} ms, known user {fastest_known_ms} ms"
    );
}

// Goal: the policy POST, answered without the router on both listeners, answers as the rest
// of its listener does: over HTTPS with the admin listener's security headers; a body past the
// bound refused with 413 and nothing changed; any other method on the path still the router's
// (405); and the same decision over plain HTTP.
#[tokio::test]
async fn the_policy_path_answers_as_the_rest_of_its_listener() {
    let (daemon, plain) = configured_with_plain_http().await;
    let vcs = (VCS_USER, VCS_PASSWORD);
    let (_, before) = daemon.call(Method::GET, "/api/v1/status", None).await;

    let https = format!("{}/baton/policy", daemon.url);
    let http = format!("http://{plain}/baton/policy");
    for url in [&https, &http] {
        let call = daemon.client.post(url.as_str()).basic_auth(vcs.0, Some(vcs.1));
        let response = call.body(search("meet.alice@example.com")).send().await.unwrap();
        let over_tls = url.starts_with("https");
        let framing = response.headers().get("x-frame-options").cloned();
        assert_eq!(framing.is_some(), over_tls, "{url}: security headers only over HTTPS");
        if over_tls {
            assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000");
            assert_eq!(response.headers()["cache-control"], "no-store");
        }
        let cpl = response.text().await.unwrap();
        assert_eq!(
            policy::cpl::interpret(&cpl),
            Ok(policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] }),
            "{url}"
        );

        // Just past the bound, and well past it: what is left is drained before the answer,
        // so a client still sending gets the 413 too, not a reset.
        for filler_bytes in [REQUEST_BYTES_MAX, 16 * REQUEST_BYTES_MAX] {
            let filler = "a".repeat(filler_bytes);
            let oversized = format!("{}&SOURCE_ALIAS={filler}", search("meet.carol@example.com"));
            let call = daemon.client.post(url.as_str()).basic_auth(vcs.0, Some(vcs.1));
            let response = call.body(oversized).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{url}");
        }

        let response = daemon.client.get(url.as_str()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{url}");
    }
    let (_, after) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(before["log_position"], after["log_position"], "no conference was made");
}

/// Reads `count` HTTP/1.1 answers from `stream`, framed by their `content-length`: each
/// answer's status, header lines but the date (sorted), and body.
async fn read_answers(
    stream: &mut tokio::net::TcpStream,
    count: usize,
) -> Vec<(u16, Vec<String>, String)> {
    use tokio::io::AsyncReadExt as _;
    let (mut read, mut answers) = (Vec::new(), Vec::new());
    while answers.len() < count {
        let text = String::from_utf8_lossy(&read).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let field = |name: &str| {
                head.lines()
                    .find_map(|line| line.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_owned()
            };
            let length: usize = field("content-length").parse().expect("a content-length");
            if rest.len() >= length {
                let status = head[9..12].parse().unwrap();
                let mut fields: Vec<String> = head.lines().skip(1).map(str::to_lowercase).collect();
                fields.retain(|line| !line.starts_with("date: "));
                fields.sort();
                answers.push((status, fields, rest[..length].to_owned()));
                read.drain(..head.len() + 4 + length);
                continue;
            }
        }
        let mut buf = [0; 8192];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("answers within 10 s")
            .unwrap();
        assert_ne!(n, 0, "closed after {} answers: {text:?}", answers.len());
        read.extend_from_slice(&buf[..n]);
    }
    answers
}

// Goal: on one kept connection, pipelined as a VCS may, a call framed as a VCS frames it (the
// fast path's), a wrong password, the same call chunked (hyper's, from the hand-over on), the
// status poll and the call again get the answers the VCS expects, in order: the same answer,
// headers and CPL, for the same call whichever server answered it.
#[tokio::test]
async fn a_kept_connection_gets_the_same_answers_whichever_way_a_call_is_framed() {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt as _;
    let (_daemon, plain) = configured_with_plain_http().await;
    let basic = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{VCS_USER}:{password}"))
    };
    let body = search("meet.alice@example.com");
    let head = |password: &str| {
        format!(
            "POST /baton/policy HTTP/1.1\r\nhost: baton\r\nauthorization: Basic {}\r\n\
             content-type: application/x-www-form-urlencoded\r\n",
            basic(password)
        )
    };
    let call =
        |password: &str| format!("{}content-length: {}\r\n\r\n{body}", head(password), body.len());
    let chunked = format!(
        "{}transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        head(VCS_PASSWORD),
        body.len()
    );
    let status = format!(
        "GET /baton/policy/status HTTP/1.1\r\nhost: baton\r\nauthorization: Basic {}\r\n\r\n",
        basic(VCS_PASSWORD)
    );
    let pipelined =
        [call(VCS_PASSWORD), call("wrong"), chunked, status, call(VCS_PASSWORD)].concat();
    let mut stream = tokio::net::TcpStream::connect(plain).await.unwrap();
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let answers = read_answers(&mut stream, 5).await;

    let statuses: Vec<u16> = answers.iter().map(|answer| answer.0).collect();
    assert_eq!(statuses, [200, 401, 200, 200, 200], "{answers:?}");
    let routed = policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] };
    assert_eq!(policy::cpl::interpret(&answers[0].2), Ok(routed));
    let content_type = format!("content-type: {}", policy::cpl::CONTENT_TYPE);
    assert!(answers[0].1.contains(&content_type), "{:?}", answers[0].1);
    for same in [&answers[2], &answers[4]] {
        assert_eq!((&same.1, &same.2), (&answers[0].1, &answers[0].2), "the same answer");
    }
    assert_eq!(answers[1].2, "policy service credentials required\n");
    assert_eq!(answers[3].2, "OK\n");
}

/// One call on a kept connection (not pipelined): its status and its body.
async fn call_on(stream: &mut tokio::net::TcpStream, password: &str) -> (u16, String) {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{VCS_USER}:{password}"));
    let body = search("meet.alice@example.com");
    let call = format!(
        "POST /baton/policy HTTP/1.1\r\nhost: baton\r\nauthorization: Basic {basic}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(call.as_bytes()).await.unwrap();
    let (status, _, body) = read_answers(stream, 1).await.remove(0);
    (status, body)
}

// Goal: what a kept connection remembers between calls (the credentials it proved, the routes
// it got) never outlives what backs it: on the same connection, a moved bridge's calls go to
// its new address at once, the old password is refused as soon as it changes, and calls stop
// going to a bridge once it is found down.
#[tokio::test]
async fn a_kept_connection_follows_a_moved_bridge_a_new_password_and_a_bridge_found_down() {
    let (daemon, plain) = configured_with_plain_http().await;
    let sim_config = bridges::sim::SimConfig::new(bridges::BridgeKind::Mcu);
    let sim = bridges::sim::SimBridge::start("127.0.0.1:0".parse().unwrap(), sim_config);
    let sim = sim.await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(plain).await.unwrap();
    let route = |url: String| Ok(policy::cpl::Outcome::Route { urls: vec![url] });
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, route("alice@192.0.2.50".into())));

    let moved = json!({"name": "mcu1", "bridge_type": "mcu", "address": sim.address().to_string(),
                       "username": "admin", "password": "", "capacity_ports": 40});
    let (status, body) = daemon.call(Method::PUT, "/api/v1/bridges/mcu1", Some(moved)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_sim = format!("alice@{}", sim.address().ip());
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, route(on_sim.clone())));

    let account = json!({"username": VCS_USER, "password": "a new password"});
    let (status, body) = daemon.call(Method::PUT, "/api/v1/policy-service", Some(account)).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(call_on(&mut stream, VCS_PASSWORD).await.0, 401, "the old password");
    let (status, cpl) = call_on(&mut stream, "a new password").await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, route(on_sim)));

    let fail_all = bridges::xmlrpc::Value::Struct(
        [("failAll".to_owned(), bridges::xmlrpc::Value::Bool(true))].into_iter().collect(),
    );
    let configure = bridges::xmlrpc::encode_call("sim.configure", &[fail_all]);
    let sim_url = format!("http://{}/RPC2", sim.address());
    reqwest::Client::new().post(sim_url).body(configure).send().await.unwrap();
    let limit =
        std::time::Duration::from_millis(3 * daemon::services::policy::BRIDGE_POLL_INTERVAL_MS);
    let started = std::time::Instant::now();
    let refused = loop {
        let (status, cpl) = call_on(&mut stream, "a new password").await;
        assert_eq!(status, 200);
        match policy::cpl::interpret(&cpl).unwrap() {
            policy::cpl::Outcome::Route { .. } if started.elapsed() < limit => {}
            outcome => break outcome,
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let bridge_failure = policy::cpl::Outcome::Reject {
        status: 502,
        reason: policy::RejectReason::BridgeFailure.text().to_owned(),
    };
    assert_eq!(refused, bridge_failure, "no route to a bridge found down");
    let (_, status) = daemon.call(Method::GET, "/api/v1/policy/status", None).await;
    assert_eq!(status["bridges"][0]["up"], false, "{status}");
}

// Goal: a route a kept connection got during maintenance's drain is refused once the drain
// ends, though nothing in the state changed since (the refusal depends on the time, and the
// connection remembers the route), also when the connection was open to calls before.
#[tokio::test]
async fn a_kept_connection_is_refused_once_the_maintenance_drain_ends() {
    const DRAIN_MS: u64 = 1_500;
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = TestDaemon::start_with(dir, |config| {
        config.policy_http_listen = Some(plain);
        config.maintenance_drain_ms = DRAIN_MS;
    });
    let daemon = configured_with(started.await).await;
    let mut stream = tokio::net::TcpStream::connect(plain).await.unwrap();
    let routed = policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] };
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(routed.clone())), "open");
    let enabled = json!({"enabled": true});
    let (status, _) = daemon.call(Method::PUT, "/api/v1/maintenance", Some(enabled)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(routed)), "still draining");

    tokio::time::sleep(std::time::Duration::from_millis(DRAIN_MS + 100)).await;
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    let refused = policy::cpl::Outcome::Reject {
        status: 503,
        reason: policy::RejectReason::Maintenance.text().to_owned(),
    };
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(refused)), "drained");
}

// Goal: a peer listing other peers but not yet holding its cluster's identity (joining: its
// configuration is about to be replaced by the cluster's) refuses calls, on a kept connection
// that was routed before too, and its status path says why; back to standalone, it routes
// them again on that connection.
#[tokio::test]
async fn a_peer_joining_a_cluster_refuses_calls_until_its_configuration_arrives() {
    let (daemon, plain) = configured_with_plain_http().await;
    let mut stream = tokio::net::TcpStream::connect(plain).await.unwrap();
    let routed = policy::cpl::Outcome::Route { urls: vec!["alice@192.0.2.50".to_owned()] };
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(routed.clone())), "standalone");

    // What clustering needs first (the seed's prerequisites), then a cluster of this peer and
    // another, which is never reached: this peer stays joining.
    let address = json!({"address": "127.0.0.1", "prefix_length": 8, "gateway": "127.0.0.254"});
    let key = "a long pre-shared key";
    let joining = json!({"pre_shared_key": key, "peers": ["127.0.0.1", "127.0.0.2"]});
    for (path, body) in [
        ("/api/v1/ipv4", address),
        ("/api/v1/system-name", json!({"host_name": "peer-1", "domain": "example.test"})),
        ("/api/v1/dns", json!({"servers": ["127.0.0.53"]})),
        ("/api/v1/ntp", json!({"servers": ["127.0.0.123"]})),
        ("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"})),
        ("/api/v1/cluster", joining),
    ] {
        let (status, answer) = daemon.call(Method::PUT, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
    }
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    let refused = policy::cpl::Outcome::Reject {
        status: 503,
        reason: policy::RejectReason::Maintenance.text().to_owned(),
    };
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(refused)), "joining");
    let (status, text) = status_path_as(&daemon, Some((VCS_USER, VCS_PASSWORD))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("joining a cluster: its configuration has not arrived yet"), "{text}");

    let standalone = json!({"pre_shared_key": "", "peers": []});
    let (status, answer) = daemon.call(Method::PUT, "/api/v1/cluster", Some(standalone)).await;
    assert!(status.is_success(), "{status} {answer}");
    let (status, cpl) = call_on(&mut stream, VCS_PASSWORD).await;
    assert_eq!((status, policy::cpl::interpret(&cpl)), (200, Ok(routed)), "standalone again");
}

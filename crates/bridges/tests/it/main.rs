//! End-to-end tests of `BridgeClient` against the simulated bridge, both personalities, over
//! real sockets on 127.0.0.1: conference life cycle, paging, capacity and credential faults,
//! injected faults, transport failures, timeouts, feedback, and the `baton-simbridge` binary.
#![allow(clippy::unwrap_used)]

use bridges::sim::{SimBridge, SimConfig};
use bridges::xmlrpc::{self, Struct, Value};
use bridges::{
    BridgeClient, BridgeError, BridgeKind, BridgeStatus, BridgeTarget, ConferenceSpec,
    EventNotification, parse_event_notification,
};
use std::time::Duration;

const PASSWORD: &str = "s3cret & <sure>";
const TIMEOUT_MS: u64 = 3000;
const KINDS: [BridgeKind; 2] = [BridgeKind::Mcu, BridgeKind::TelepresenceServer];

/// A simulated bridge of `kind`, changed by `adjust`, and a target with its credentials.
async fn start(kind: BridgeKind, adjust: impl FnOnce(&mut SimConfig)) -> (SimBridge, BridgeTarget) {
    let mut config = SimConfig { password: PASSWORD.to_owned(), ..SimConfig::new(kind) };
    adjust(&mut config);
    let username = config.username.clone();
    let bridge = SimBridge::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let target = BridgeTarget {
        kind,
        base_url: bridge.base_url(),
        username,
        password: PASSWORD.to_owned(),
        pinned_sha256: None,
    };
    (bridge, target)
}

fn client() -> BridgeClient {
    BridgeClient::new(TIMEOUT_MS, None).unwrap()
}

fn spec(name: &str) -> ConferenceSpec {
    ConferenceSpec { name: name.to_owned(), ..ConferenceSpec::default() }
}

fn params(pairs: &[(&str, Value)]) -> Struct {
    pairs.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect()
}

async fn sim_configure(target: &BridgeTarget, pairs: &[(&str, Value)]) {
    client().call(target, "sim.configure", params(pairs)).await.unwrap();
}

async fn set_participants(target: &BridgeTarget, id: &str, count: i32) {
    let key = match target.kind {
        BridgeKind::Mcu => "conferenceName",
        BridgeKind::TelepresenceServer => "conferenceID",
    };
    let pairs = [(key, Value::from(id)), ("count", Value::Int(count))];
    client().call(target, "sim.participants", params(&pairs)).await.unwrap();
}

#[tokio::test]
async fn a_conference_is_created_listed_and_destroyed_on_both_personalities() {
    for kind in KINDS {
        let (_bridge, target) = start(kind, |_| {}).await;
        let client = client();
        let spec = ConferenceSpec {
            name: "meet.alice@example.com".to_owned(),
            chair_pin: Some("1234".to_owned()),
            guest_pin: Some("5678".to_owned()),
            guest_uri: Some("meet.alice.guest@example.com".to_owned()),
            max_participants: Some(12),
        };
        let created = client.create_conference(&target, &spec).await.unwrap();
        assert_eq!(created.name, spec.name, "{kind:?}");
        assert_eq!(created.participants, 0);
        match kind {
            BridgeKind::Mcu => assert_eq!(created.id, spec.name),
            BridgeKind::TelepresenceServer => assert_ne!(created.id, spec.name),
        }

        let again = client.create_conference(&target, &spec).await;
        assert_eq!(again, Err(BridgeError::DuplicateName), "{kind:?}");
        let bad_pin = ConferenceSpec { guest_pin: Some("12a".to_owned()), ..self::spec("other") };
        let refused = client.create_conference(&target, &bad_pin).await.unwrap_err();
        assert_eq!(refused.fault_code(), Some(bridges::fault::INVALID_PIN), "{kind:?}");

        let listed = client.enumerate_conferences(&target).await.unwrap();
        assert_eq!(listed, vec![created.clone()], "{kind:?}");
        let status = client.status(&target).await.unwrap();
        assert_eq!(status, BridgeStatus { conferences: 1, max_conferences: None });

        client.destroy_conference(&target, &created.id).await.unwrap();
        let gone = client.destroy_conference(&target, &created.id).await;
        assert_eq!(gone, Err(BridgeError::NoSuchConference), "{kind:?}");
        assert!(!gone.unwrap_err().is_bridge_down());
        assert_eq!(client.enumerate_conferences(&target).await.unwrap(), Vec::new());
    }
}

#[tokio::test]
async fn enumeration_follows_pages_and_counts_participants() {
    for kind in KINDS {
        let (_bridge, target) = start(kind, |config| config.page_size = 4).await;
        let client = client();
        let mut created = Vec::new();
        for number in 0..11 {
            let name = format!("conference-{number:02}");
            created.push(client.create_conference(&target, &spec(&name)).await.unwrap());
        }
        // Nine participants: more than two pages of them too.
        set_participants(&target, &created[0].id, 3).await;
        set_participants(&target, &created[9].id, 5).await;
        set_participants(&target, &created[10].id, 1).await;

        let listed = client.enumerate_conferences(&target).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|conference| conference.name.as_str()).collect();
        let expected: Vec<&str> =
            created.iter().map(|conference| conference.name.as_str()).collect();
        assert_eq!(names, expected, "{kind:?}");
        let counts: Vec<u32> = listed.iter().map(|conference| conference.participants).collect();
        assert_eq!(counts, [3, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1], "{kind:?}");
        assert_eq!(client.status(&target).await.unwrap().conferences, 11);
    }
}

#[tokio::test]
async fn enumeration_lists_the_participants_calls_brought_with_their_address_and_role() {
    for kind in KINDS {
        let (_bridge, target) = start(kind, |config| config.page_size = 2).await;
        let client = client();
        let spec = ConferenceSpec { guest_uri: Some("room.guest".to_owned()), ..spec("room") };
        client.create_conference(&target, &spec).await.unwrap();
        client.create_conference(&target, &self::spec("empty")).await.unwrap();
        for (uri, caller) in [
            ("room@127.0.0.1", "sip:alice@example.com"),
            ("room.guest@127.0.0.1", "sip:bob@example.com"),
            ("room@127.0.0.1", "sip:carol@example.com"),
        ] {
            let pairs = [("uri", Value::from(uri)), ("caller", Value::from(caller))];
            client.call(&target, "sim.call", params(&pairs)).await.unwrap();
        }
        let listed = client.enumerate_conferences(&target).await.unwrap();
        assert_eq!(listed[0].participants, 3, "{kind:?}");
        assert!(listed[1].participant_list.is_empty());
        let seen: Vec<(Option<&str>, Option<&str>, Option<&str>)> = listed[0]
            .participant_list
            .iter()
            .map(|p| (p.address.as_deref(), p.role.as_deref(), p.state.as_deref()))
            .collect();
        let role = |role| (kind == BridgeKind::TelepresenceServer).then_some(role);
        assert_eq!(
            seen,
            [
                (Some("sip:alice@example.com"), role("chair"), Some("connected")),
                (Some("sip:bob@example.com"), role("guest"), Some("connected")),
                (Some("sip:carol@example.com"), role("chair"), Some("connected")),
            ],
            "{kind:?}"
        );
        // A call for a conference the bridge does not host is refused.
        let pairs = [("uri", Value::from("nobody@127.0.0.1")), ("caller", Value::from("x"))];
        assert!(client.call(&target, "sim.call", params(&pairs)).await.is_err());
    }
}

#[tokio::test]
async fn a_bridge_reporting_more_participants_than_are_listed_is_counted_but_cut() {
    let (_bridge, target) = start(BridgeKind::TelepresenceServer, |config| {
        config.page_size = 1000;
    })
    .await;
    let created = client().create_conference(&target, &spec("huge")).await.unwrap();
    let count = bridges::PARTICIPANTS_LISTED_MAX + 3;
    set_participants(&target, &created.id, i32::try_from(count).unwrap()).await;
    let listed = client().enumerate_conferences(&target).await.unwrap();
    assert_eq!(listed[0].participants as usize, count);
    assert_eq!(listed[0].participant_list.len(), bridges::PARTICIPANTS_LISTED_MAX);
}

#[tokio::test]
async fn participants_join_and_leave_through_the_bridge_methods() {
    // MCU: participant.add / participant.remove by name.
    let (_mcu, target) = start(BridgeKind::Mcu, |_| {}).await;
    let client = client();
    client.create_conference(&target, &spec("room")).await.unwrap();
    let participant =
        params(&[("conferenceName", "room".into()), ("participantName", "bob".into())]);
    client.call(&target, "participant.add", participant.clone()).await.unwrap();
    let duplicate = client.call(&target, "participant.add", participant.clone()).await;
    assert_eq!(
        duplicate.unwrap_err().fault_code(),
        Some(bridges::fault::DUPLICATE_PARTICIPANT_NAME)
    );
    assert_eq!(client.enumerate_conferences(&target).await.unwrap()[0].participants, 1);
    client.call(&target, "participant.remove", participant).await.unwrap();
    assert_eq!(client.enumerate_conferences(&target).await.unwrap()[0].participants, 0);

    // TS: flex.participant.create / destroy by id, enumerate filtered by conference.
    let (_ts, target) = start(BridgeKind::TelepresenceServer, |_| {}).await;
    let room = client.create_conference(&target, &spec("room")).await.unwrap();
    let other = client.create_conference(&target, &spec("other")).await.unwrap();
    let create = params(&[("conferenceID", room.id.as_str().into())]);
    let answer = client.call(&target, "flex.participant.create", create).await.unwrap();
    let participant_id = answer["participantID"].clone();
    set_participants(&target, &other.id, 2).await;
    let filter = params(&[("conferenceID", room.id.as_str().into())]);
    let answer = client.call(&target, "flex.participant.enumerate", filter).await.unwrap();
    assert_eq!(answer["participants"].as_array().unwrap().len(), 1);
    assert_eq!(answer["moreAvailable"], Value::Bool(false));
    let destroy = params(&[("participantID", participant_id)]);
    client.call(&target, "flex.participant.destroy", destroy).await.unwrap();
    let listed = client.enumerate_conferences(&target).await.unwrap();
    let counts: Vec<u32> = listed.iter().map(|conference| conference.participants).collect();
    assert_eq!(counts, [0, 2]);
}

#[tokio::test]
async fn a_full_bridge_refuses_with_too_many_conferences() {
    for kind in KINDS {
        let (_bridge, target) = start(kind, |config| config.max_conferences = Some(2)).await;
        let client = client();
        client.create_conference(&target, &spec("one")).await.unwrap();
        client.create_conference(&target, &spec("two")).await.unwrap();
        let refused = client.create_conference(&target, &spec("three")).await;
        assert_eq!(refused, Err(BridgeError::TooManyConferences), "{kind:?}");
        let status = client.status(&target).await.unwrap();
        assert_eq!(status, BridgeStatus { conferences: 2, max_conferences: Some(2) });

        // Capacity raised at run time.
        sim_configure(&target, &[("maxConferences", Value::Int(3))]).await;
        client.create_conference(&target, &spec("three")).await.unwrap();
        sim_configure(&target, &[("maxConferences", Value::Int(0))]).await;
        assert_eq!(client.status(&target).await.unwrap().max_conferences, None);
    }
}

#[tokio::test]
async fn bad_or_missing_credentials_are_refused() {
    for kind in KINDS {
        let (bridge, target) = start(kind, |_| {}).await;
        let wrong = BridgeTarget { password: "guess".to_owned(), ..target.clone() };
        let refused = client().create_conference(&wrong, &spec("x")).await;
        assert_eq!(refused, Err(BridgeError::Unauthorised), "{kind:?}");
        let wrong_user = BridgeTarget { username: "Admin".to_owned(), ..target.clone() };
        assert_eq!(client().status(&wrong_user).await, Err(BridgeError::Unauthorised));

        // Without the credential members at all: fault 101, missing parameter.
        let body = xmlrpc::encode_call("device.query", &[Value::Struct(Struct::new())]);
        let answer = reqwest::Client::new()
            .post(format!("{}/RPC2", bridge.base_url()))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let fault = xmlrpc::decode_response(&answer.bytes().await.unwrap()).unwrap().unwrap_err();
        assert_eq!(fault.code, bridges::fault::MISSING_PARAMETER);
        assert_eq!(fault.message, "missing parameter - authenticationUser");
    }
}

#[tokio::test]
async fn injected_faults_are_business_errors_and_fail_all_means_down() {
    for kind in KINDS {
        let (_bridge, target) = start(kind, |_| {}).await;
        let client = client();

        sim_configure(&target, &[("faultCode", Value::Int(201))]).await;
        let fault = client.create_conference(&target, &spec("x")).await.unwrap_err();
        assert_eq!(fault.fault_code(), Some(201), "{kind:?}");
        assert!(matches!(fault, BridgeError::Fault { code: 201, .. }));
        assert!(!fault.is_bridge_down());
        sim_configure(&target, &[("faultCode", Value::Int(14))]).await;
        assert_eq!(client.status(&target).await, Err(BridgeError::Unauthorised));
        sim_configure(&target, &[("faultCode", Value::Int(0))]).await;
        client.status(&target).await.unwrap();

        sim_configure(&target, &[("failAll", Value::Bool(true))]).await;
        let down = client.status(&target).await.unwrap_err();
        assert!(matches!(down, BridgeError::Transport(_)), "{down:?}");
        assert!(down.is_bridge_down());
        sim_configure(&target, &[("failAll", Value::Bool(false))]).await;
        client.status(&target).await.unwrap();
    }
}

#[tokio::test]
async fn a_slow_bridge_times_out() {
    let (_bridge, target) = start(BridgeKind::Mcu, |config| config.latency_ms = 1000).await;
    let impatient = BridgeClient::new(150, None).unwrap();
    let error = impatient.status(&target).await.unwrap_err();
    assert_eq!(error, BridgeError::Timeout { timeout_ms: 150 });
    assert!(error.is_bridge_down());

    // Latency changed at run time.
    sim_configure(&target, &[("latencyMs", Value::Int(0))]).await;
    impatient.status(&target).await.unwrap();
    sim_configure(&target, &[("latencyMs", Value::Int(1000))]).await;
    let error = impatient.create_conference(&target, &spec("late")).await.unwrap_err();
    assert_eq!(error, BridgeError::Timeout { timeout_ms: 150 });
}

#[tokio::test]
async fn an_unreachable_bridge_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let target = BridgeTarget {
        kind: BridgeKind::TelepresenceServer,
        base_url: format!("http://{address}"),
        username: "admin".to_owned(),
        password: String::new(),
        pinned_sha256: None,
    };
    let error = client().status(&target).await.unwrap_err();
    assert!(matches!(error, BridgeError::Transport(_)), "{error:?}");
    assert!(error.is_bridge_down());
}

/// Serves `body` with HTTP 200 to every POST /RPC2: something that is not a bridge.
async fn not_a_bridge(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router =
        axum::Router::new().route("/RPC2", axum::routing::post(move || async move { body }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn answers_that_are_not_xml_rpc_or_too_long_are_refused() {
    let oversized = "x".repeat(bridges::RESPONSE_BYTES_MAX + 1);
    let target = BridgeTarget {
        kind: BridgeKind::Mcu,
        base_url: not_a_bridge(oversized).await,
        username: "admin".to_owned(),
        password: String::new(),
        pinned_sha256: None,
    };
    let error = client().status(&target).await.unwrap_err();
    assert!(matches!(error, BridgeError::AnswerTooLarge { .. }), "{error:?}");
    assert!(error.is_bridge_down());
    let not_a_struct = xmlrpc::encode_response(&Value::Int(1));
    for body in ["<html>It works!</html>".to_owned(), not_a_struct] {
        let target = BridgeTarget {
            kind: BridgeKind::Mcu,
            base_url: not_a_bridge(body).await,
            username: "admin".to_owned(),
            password: String::new(),
            pinned_sha256: None,
        };
        let error = client().status(&target).await.unwrap_err();
        assert!(matches!(error, BridgeError::Malformed(_)), "{error:?}");
        assert!(error.is_bridge_down());
    }
}

/// A feedback receiver: forwards every notification it is sent.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<EventNotification>) {
    let (sender, notifications) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handler = move |body: axum::body::Bytes| async move {
        let _ = sender.send(parse_event_notification(&body).unwrap());
        xmlrpc::encode_response(&Value::Struct(Struct::new()))
    };
    let router = axum::Router::new().route("/feedback", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}/feedback"), notifications)
}

async fn next(
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<EventNotification>,
) -> EventNotification {
    tokio::time::timeout(Duration::from_secs(5), notifications.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_feedback_receiver_gets_event_notifications() {
    let (_ts, target) =
        start(BridgeKind::TelepresenceServer, |config| config.feedback_interval_ms = 100).await;
    let (uri, mut notifications) = receiver().await;
    client().configure_feedback(&target, &uri).await.unwrap();
    let first = next(&mut notifications).await;
    assert_eq!(first.events.first().map(String::as_str), Some("configureAck"), "{first:?}");
    assert_eq!(first.source_identifier, "baton-simbridge");
    // Keep-alives follow on the interval.
    for _ in 0..2 {
        let alive = next(&mut notifications).await;
        assert!(alive.events.iter().any(|event| event == "flexAlive"), "{alive:?}");
    }

    // The MCU acknowledges the configuration too.
    let (_mcu, target) = start(BridgeKind::Mcu, |_| {}).await;
    let (uri, mut notifications) = receiver().await;
    client().configure_feedback(&target, &uri).await.unwrap();
    assert_eq!(next(&mut notifications).await.events, ["configureAck"]);
}

#[tokio::test]
async fn the_binary_serves_the_configured_personality() {
    let directory = std::env::temp_dir().join(format!("baton-simbridge-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let address_file = directory.join("address");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_baton-simbridge"))
        .args(["--listen", "127.0.0.1:0", "--personality", "telepresence-server"])
        .args(["--username", "ops", "--password", "pw", "--max-conferences", "1"])
        .arg("--address-file")
        .arg(&address_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut address = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            address = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let address = address.expect("the simulator never wrote its address");
    let target = BridgeTarget {
        kind: BridgeKind::TelepresenceServer,
        base_url: format!("http://{address}"),
        username: "ops".to_owned(),
        password: "pw".to_owned(),
        pinned_sha256: None,
    };
    let result = async {
        client().create_conference(&target, &spec("only")).await?;
        let full = client().create_conference(&target, &spec("second")).await;
        assert_eq!(full, Err(BridgeError::TooManyConferences));
        client().status(&target).await
    }
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
    assert_eq!(result, Ok(BridgeStatus { conferences: 1, max_conferences: Some(1) }));
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM: (CA, certificate, key).
fn certificate_authority() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

#[tokio::test]
async fn https_bridges_are_trusted_only_through_the_given_ca_and_for_their_address() {
    let (ca, certificate, key) = certificate_authority();
    let identity = bridges::sim::tls_identity(&certificate, &key).unwrap();
    let config = SimConfig { password: PASSWORD.to_owned(), ..SimConfig::new(BridgeKind::Mcu) };
    let bridge =
        SimBridge::start_tls("127.0.0.1:0".parse().unwrap(), config, identity).await.unwrap();
    assert!(bridge.base_url().starts_with("https://"), "{}", bridge.base_url());
    let target = BridgeTarget {
        kind: BridgeKind::Mcu,
        base_url: bridge.base_url(),
        username: "admin".to_owned(),
        password: PASSWORD.to_owned(),
        pinned_sha256: None,
    };

    let trusting = BridgeClient::new(TIMEOUT_MS, Some(&ca)).unwrap();
    trusting.create_conference(&target, &spec("secure")).await.unwrap();

    // No CA given, or another CA: the issuer is unknown, so the bridge is unusable, and why.
    let error = client().status(&target).await.unwrap_err();
    assert_eq!(error, BridgeError::Tls(bridges::TlsProblem::UnknownIssuer));
    assert!(error.is_bridge_down());
    let (other_ca, _, _) = certificate_authority();
    let error = BridgeClient::new(TIMEOUT_MS, Some(&other_ca)).unwrap().status(&target).await;
    assert_eq!(error, Err(BridgeError::Tls(bridges::TlsProblem::UnknownIssuer)));

    // The right CA, but the certificate is for 127.0.0.1 and the bridge reached as localhost.
    let port = bridge.base_url().rsplit(':').next().unwrap().to_owned();
    let by_name = BridgeTarget { base_url: format!("https://localhost:{port}"), ..target };
    let error = trusting.status(&by_name).await;
    assert_eq!(error, Err(BridgeError::Tls(bridges::TlsProblem::NameMismatch)));
}

/// A bridge with a self-signed certificate for another name: refused as of unknown issuer, with
/// the fingerprint it presented recorded; pinned by that fingerprint it is used (reached by any
/// name, no CA given); pinned by another it is refused, naming what it presented.
#[tokio::test]
async fn a_pinned_bridge_is_accepted_by_its_fingerprint_alone() {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["mcu.invalid".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let presented = bridges::fingerprint(certificate.der());
    let identity = bridges::sim::tls_identity(&certificate.pem(), &key.serialize_pem()).unwrap();
    let config = SimConfig { password: PASSWORD.to_owned(), ..SimConfig::new(BridgeKind::Mcu) };
    let bridge =
        SimBridge::start_tls("127.0.0.1:0".parse().unwrap(), config, identity).await.unwrap();
    let port = bridge.base_url().rsplit(':').next().unwrap().to_owned();
    let target = BridgeTarget {
        kind: BridgeKind::Mcu,
        base_url: format!("https://localhost:{port}"),
        username: "admin".to_owned(),
        password: PASSWORD.to_owned(),
        pinned_sha256: None,
    };
    let client = client();
    assert_eq!(client.presented_fingerprint(&target), None);
    let error = client.status(&target).await;
    assert_eq!(error, Err(BridgeError::Tls(bridges::TlsProblem::UnknownIssuer)));
    assert_eq!(client.presented_fingerprint(&target).as_deref(), Some(presented.as_str()));

    let pin = model::validate::sha256_fingerprint(&presented).unwrap();
    let pinned = BridgeTarget { pinned_sha256: Some(pin), ..target.clone() };
    client.create_conference(&pinned, &spec("pinned")).await.unwrap();
    let names: Vec<String> =
        client.enumerate_conferences(&pinned).await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["pinned"]);

    let mut other = pin;
    other[0] ^= 1;
    let wrong = BridgeTarget { pinned_sha256: Some(other), ..target };
    let error = client.status(&wrong).await.unwrap_err();
    assert_eq!(
        error,
        BridgeError::Tls(bridges::TlsProblem::FingerprintMismatch { presented: presented.clone() })
    );
    assert!(error.is_bridge_down());
    assert!(
        error
            .to_string()
            .contains(&format!("fingerprint mismatch (the bridge presented {presented}")),
        "{error}"
    );
}

/// A hostile bridge: answers every enumeration with a page of `page_bytes` of conferences and
/// "more available", forever. Returns its URL, the count of pages it served and their size.
async fn endless_pages(
    page_bytes: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, usize) {
    let entry = |index: usize| {
        Value::Struct(params(&[
            ("conferenceName", Value::from(format!("conference-{index:08}").as_str())),
            ("conferenceID", Value::from(format!("{index}").as_str())),
        ]))
    };
    let entry_bytes = xmlrpc::encode_response(&entry(0)).len();
    let page = xmlrpc::encode_response(&Value::Struct(params(&[
        ("conferences", Value::Array((0..page_bytes / entry_bytes).map(entry).collect())),
        ("enumerateID", Value::from("next")),
        ("moreAvailable", Value::Bool(true)),
        ("cookie", Value::from("next")),
    ])));
    let page_length = page.len();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handler = move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let page = page.clone();
        async move { page }
    };
    let router = axum::Router::new().route("/RPC2", axum::routing::post(handler));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), served, page_length)
}

// Goal (issue 19, defect 6): a bridge that answers every enumeration with another large
// page gets a clear BridgeError once one operation has read its byte budget (or its page
// limit), having read a bounded amount: a few MiB, not gigabytes.
#[tokio::test]
async fn a_bridge_with_endless_pages_is_cut_off_with_a_clear_error() {
    for kind in KINDS {
        // Just under the limit of one answer, as the hostile bridge of the issue did.
        let (base_url, served, page_bytes) =
            endless_pages(bridges::RESPONSE_BYTES_MAX - 64 * 1024).await;
        assert!(
            page_bytes > bridges::RESPONSE_BYTES_MAX / 2
                && page_bytes <= bridges::RESPONSE_BYTES_MAX
        );
        let target = BridgeTarget {
            kind,
            base_url,
            username: "admin".to_owned(),
            password: String::new(),
            pinned_sha256: None,
        };
        let client = client();
        let operation = client.enumerate_conferences(&target);
        let error = tokio::time::timeout(Duration::from_secs(30), operation)
            .await
            .expect("the enumeration was not cut off")
            .unwrap_err();
        assert!(matches!(error, BridgeError::OperationTooLarge { .. }), "{kind:?}: {error:?}");
        assert!(error.is_bridge_down());
        assert!(error.to_string().contains("bytes in one operation"), "{error}");
        let pages = served.load(std::sync::atomic::Ordering::SeqCst);
        let pages_max = bridges::OPERATION_RESPONSE_BYTES_MAX / page_bytes + 1;
        assert!(pages <= pages_max, "{kind:?}: {pages} pages of {page_bytes} bytes read");

        // Small pages: the page limit stops it.
        let (base_url, served, _) = endless_pages(1024).await;
        let target = BridgeTarget {
            kind,
            base_url,
            username: "admin".to_owned(),
            password: String::new(),
            pinned_sha256: None,
        };
        let error = client.enumerate_conferences(&target).await.unwrap_err();
        assert!(matches!(error, BridgeError::TooManyPages { .. }), "{kind:?}: {error:?}");
        let pages = served.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(pages, bridges::ENUMERATION_PAGES_MAX, "{kind:?}");
    }
}

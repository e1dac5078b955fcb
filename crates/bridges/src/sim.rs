//! A simulated bridge: an HTTP server answering `POST /RPC2` as a TelePresence MCU or a
//! TelePresence Server in remotely managed mode would, on the same wire format, with knobs for
//! capacity, latency and faults. The `baton-simbridge` binary wraps it; tests start it
//! in-process with [`SimBridge::start`].
//!
//! Beyond the bridges' own methods it answers two of its own, so tests and demos can change it
//! while it runs (both need the credentials, and neither is subject to the faults they set):
//! - `sim.configure {failAll?, faultCode?, maxConferences?, latencyMs?}`: `failAll` answers
//!   every other call with HTTP 500; a non-zero `faultCode` answers every other call with that
//!   fault (0 clears it); `maxConferences` (0 or less: no limit); `latencyMs` before each answer.
//! - `sim.participants {conferenceName | conferenceID, count}`: sets how many participants a
//!   conference has, as if calls had joined or left.
//! - `sim.call {uri, caller}`: a call arrives for `uri` (what a VCS does with the policy
//!   service's route, `<conference>[.guest]@<host>`): `caller` joins that conference, as a
//!   guest when it dialled the guest address. Answers `{participantID}`.
//!
//! After `feedbackReceiver.configure` it posts `eventNotification` to the receiver: first
//! `configureAck`, then (TelePresence Server) `flexAlive` every `feedback_interval_ms`; the
//! receiver must be `http` (the simulator trusts no certificate authority).
//! Everything lives in memory and is lost when it stops.

use crate::client::BridgeKind;
use crate::fault;
use crate::xmlrpc::{self, Fault, Struct, Value};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Entries per enumeration page unless configured otherwise: small, so paging is exercised.
pub const PAGE_SIZE_DEFAULT: usize = 10;
/// How often a TelePresence Server personality sends `flexAlive` to its feedback receivers.
pub const FEEDBACK_INTERVAL_MS_DEFAULT: u64 = 5000;
/// Limit of one feedback POST, so a dead receiver does not stall the others for long.
const FEEDBACK_POST_TIMEOUT_MS: u64 = 2000;
/// Ends the address guests dial (Baton's policy service sends them to `<conference>.guest`;
/// this crate may not depend on its crate).
const GUEST_SUFFIX: &str = ".guest";
/// Feedback receivers kept at most (real bridges have a handful of slots).
const RECEIVERS_MAX: usize = 20;

/// How a simulated bridge starts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SimConfig {
    pub kind: BridgeKind,
    pub username: String,
    pub password: String,
    /// `None`: no limit.
    pub max_conferences: Option<u32>,
    pub latency_ms: u64,
    pub page_size: usize,
    pub feedback_interval_ms: u64,
}

impl SimConfig {
    /// User `admin`, empty password, no limits, no latency.
    pub fn new(kind: BridgeKind) -> SimConfig {
        SimConfig {
            kind,
            username: "admin".to_owned(),
            password: String::new(),
            max_conferences: None,
            latency_ms: 0,
            page_size: PAGE_SIZE_DEFAULT,
            feedback_interval_ms: FEEDBACK_INTERVAL_MS_DEFAULT,
        }
    }
}

/// A running simulated bridge; stops when dropped.
#[derive(Debug)]
pub struct SimBridge {
    address: SocketAddr,
    scheme: &'static str,
    server: JoinHandle<()>,
    feedback: JoinHandle<()>,
}

impl SimBridge {
    /// Binds `listen` (port 0 picks a free port) and serves HTTP until dropped.
    pub async fn start(listen: SocketAddr, config: SimConfig) -> std::io::Result<SimBridge> {
        SimBridge::serve(listen, config, None).await
    }

    /// Like [`SimBridge::start`], but serves HTTPS with the given identity.
    pub async fn start_tls(
        listen: SocketAddr,
        config: SimConfig,
        tls: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<SimBridge> {
        SimBridge::serve(listen, config, Some(tls)).await
    }

    async fn serve(
        listen: SocketAddr,
        config: SimConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<SimBridge> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(FEEDBACK_POST_TIMEOUT_MS))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState {
                max_conferences: config.max_conferences,
                latency_ms: config.latency_ms,
                ..SimState::default()
            }),
            config,
            receivers_changed: Notify::new(),
            http,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let feedback = tokio::spawn(send_feedback(Arc::clone(&shared)));
        let service =
            Router::new().route("/RPC2", post(rpc)).with_state(shared).into_make_service();
        let server = match tls {
            None => {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::spawn(async move {
                    if let Err(error) = axum::serve(listener, service).await {
                        tracing::error!(%error, "simulated bridge stopped");
                    }
                })
            }
            Some(tls) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                let server = axum_server::from_tcp_rustls(listener, tls);
                tokio::spawn(async move {
                    if let Err(error) = server.serve(service).await {
                        tracing::error!(%error, "simulated bridge stopped");
                    }
                })
            }
        };
        Ok(SimBridge { address, scheme, server, feedback })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>` (or `https://`), the base URL a client targets.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }
}

impl Drop for SimBridge {
    fn drop(&mut self) {
        self.server.abort();
        self.feedback.abort();
    }
}

/// A TLS server identity from PEM text: the certificate chain (leaf first) and its private key.
pub fn tls_identity(
    certificate_pem: &str,
    key_pem: &str,
) -> std::io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| invalid("the certificate is not PEM"))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate in the PEM text"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| invalid("the private key is not PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| invalid(&format!("certificate and key: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Shared {
    config: SimConfig,
    state: Mutex<SimState>,
    receivers_changed: Notify,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // The state stays consistent between statements, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct SimState {
    max_conferences: Option<u32>,
    latency_ms: u64,
    fail_all: bool,
    fault_code: Option<i32>,
    /// In creation order, which is the enumeration order.
    conferences: Vec<Conference>,
    /// Source of conference and participant ids.
    next_id: u64,
    receivers: Vec<Receiver>,
}

impl SimState {
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:06}", self.next_id)
    }
}

struct Conference {
    /// MCU: the name; TS: a generated `conferenceID`.
    id: String,
    name: String,
    participants: Vec<Participant>,
}

struct Participant {
    id: String,
    name: String,
    /// Where the call came from (`sim.call`); none for participants made up by count.
    address: Option<String>,
    access_level: &'static str,
}

impl Participant {
    fn made_up(id: String, name: String) -> Participant {
        Participant { id, name, address: None, access_level: "chair" }
    }
}

struct Receiver {
    uri: String,
    index: i32,
    source_identifier: String,
    acknowledged: bool,
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn fault_response(fault: &Fault) -> Response {
    xml(StatusCode::OK, xmlrpc::encode_fault(fault))
}

async fn rpc(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let call = match xmlrpc::decode_call(&body) {
        Ok(call) => call,
        Err(error) => {
            return fault_response(&Fault {
                code: fault::MALFORMED_PARAMETER,
                message: format!("malformed request: {error}"),
            });
        }
    };
    let params = match call.params.as_slice() {
        [Value::Struct(members)] => members.clone(),
        [] => Struct::new(),
        _ => {
            return fault_response(&Fault {
                code: fault::INVALID_PARAMETER,
                message: "invalid parameter - expected one struct".to_owned(),
            });
        }
    };
    if call.method.starts_with("sim.") {
        let answer = authenticate(&shared.config, &params)
            .and_then(|()| simulator_method(&shared, &call.method, &params));
        return answer_with(answer);
    }

    let latency_ms = shared.lock().latency_ms;
    if latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
    }
    let (fail_all, injected) = {
        let state = shared.lock();
        (state.fail_all, state.fault_code)
    };
    if fail_all {
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response();
    }
    if let Some(code) = injected {
        return fault_response(&Fault { code, message: format!("injected fault {code}") });
    }
    let answer = authenticate(&shared.config, &params)
        .and_then(|()| bridge_method(&shared, &call.method, &params));
    answer_with(answer)
}

fn answer_with(answer: Result<Struct, Fault>) -> Response {
    match answer {
        Ok(mut members) => {
            members.insert("status".to_owned(), Value::from("operation successful"));
            xml(StatusCode::OK, xmlrpc::encode_response(&Value::Struct(members)))
        }
        Err(fault) => fault_response(&fault),
    }
}

fn authenticate(config: &SimConfig, params: &Struct) -> Result<(), Fault> {
    let user = required_str(params, "authenticationUser")?;
    let password = required_str(params, "authenticationPassword")?;
    if user == config.username && password == config.password {
        Ok(())
    } else {
        Err(Fault {
            code: fault::INSUFFICIENT_PRIVILEGES,
            message: "insufficient privileges".into(),
        })
    }
}

fn simulator_method(shared: &Shared, method: &str, params: &Struct) -> Result<Struct, Fault> {
    let mut state = shared.lock();
    match method {
        "sim.configure" => {
            if let Some(fail_all) = params.get("failAll").and_then(Value::as_bool) {
                state.fail_all = fail_all;
            }
            if let Some(code) = optional_int(params, "faultCode")? {
                state.fault_code = (code != 0).then_some(code);
            }
            if let Some(limit) = optional_int(params, "maxConferences")? {
                state.max_conferences = u32::try_from(limit).ok().filter(|limit| *limit > 0);
            }
            if let Some(latency_ms) = optional_int(params, "latencyMs")? {
                state.latency_ms = u64::try_from(latency_ms).unwrap_or(0);
            }
            Ok(Struct::new())
        }
        "sim.participants" => {
            let count = required_int(params, "count")?;
            let count = usize::try_from(count).map_err(|_| invalid("count"))?;
            let index = if let Some(id) = params.get("conferenceID").and_then(Value::as_str) {
                state.conferences.iter().position(|conference| conference.id == id)
            } else {
                let name = required_str(params, "conferenceName")?;
                state.conferences.iter().position(|conference| conference.name == name)
            };
            let index = index.ok_or_else(no_such_conference)?;
            while state.conferences[index].participants.len() < count {
                let id = state.new_id("p");
                let name = format!("sim-{id}");
                state.conferences[index].participants.push(Participant::made_up(id, name));
            }
            state.conferences[index].participants.truncate(count);
            Ok(Struct::new())
        }
        "sim.call" => incoming_call(&mut state, params),
        _ => Err(method_not_supported(method)),
    }
}

fn bridge_method(shared: &Shared, method: &str, params: &Struct) -> Result<Struct, Fault> {
    let config = &shared.config;
    let mut state = shared.lock();
    let page_size = config.page_size.max(1);
    match (config.kind, method) {
        (_, "device.query") => {
            let model = match config.kind {
                BridgeKind::Mcu => "Baton simulated MCU",
                BridgeKind::TelepresenceServer => "Baton simulated TelePresence Server",
            };
            let mut answer = members([
                ("model", Value::from(model)),
                ("serial", Value::from("SIM00001")),
                ("softwareVersion", Value::from("sim")),
                ("apiVersion", Value::from("2.9")),
            ]);
            if let Some(limit) = state.max_conferences {
                answer.insert("maxConferences".into(), Value::Int(saturate(limit as usize)));
            }
            Ok(answer)
        }
        (_, "device.health.query") => Ok(members([
            ("temperatureStatus", Value::from("ok")),
            ("voltagesStatus", Value::from("ok")),
            ("operationalStatus", Value::from("active")),
        ])),
        (_, "feedbackReceiver.configure") => {
            let uri = required_str(params, "receiverURI")?.to_owned();
            let index = optional_int(params, "receiverIndex")?.unwrap_or(1);
            let source_identifier = params
                .get("sourceIdentifier")
                .and_then(Value::as_str)
                .unwrap_or("baton-simbridge")
                .to_owned();
            state.receivers.retain(|receiver| receiver.index != index);
            if state.receivers.len() >= RECEIVERS_MAX {
                return Err(Fault {
                    code: fault::OPERATION_FAILED,
                    message: "no free slot".into(),
                });
            }
            state.receivers.push(Receiver { uri, index, source_identifier, acknowledged: false });
            shared.receivers_changed.notify_one();
            Ok(members([("receiverIndex", Value::Int(index))]))
        }

        (BridgeKind::Mcu, "conference.create") => {
            let name = conference_name(params)?;
            for key in ["pin", "guestPin"] {
                check_pin(params.get(key))?;
            }
            create(&mut state, name.clone(), name).map(|_| Struct::new())
        }
        (BridgeKind::Mcu, "conference.destroy") => {
            destroy(&mut state, &conference_name(params)?).map(|()| Struct::new())
        }
        (BridgeKind::Mcu, "conference.status") => {
            let name = conference_name(params)?;
            let conference = find(&state, &name)?;
            Ok(members([
                ("conferenceName", Value::from(conference.name.as_str())),
                ("conferenceActive", Value::Bool(!conference.participants.is_empty())),
                ("participantCount", Value::Int(saturate(conference.participants.len()))),
            ]))
        }
        (BridgeKind::Mcu, "conference.enumerate") => {
            let start = mcu_position(params)?;
            let conferences: Vec<Value> = state
                .conferences
                .iter()
                .map(|conference| {
                    Value::Struct(members([
                        ("conferenceName", Value::from(conference.name.as_str())),
                        ("conferenceType", Value::from("scheduled")),
                    ]))
                })
                .collect();
            Ok(mcu_page("conferences", conferences, start, page_size))
        }
        (BridgeKind::Mcu, "participant.add") => {
            let name = conference_name(params)?;
            let participant = required_str(params, "participantName")?.to_owned();
            let id = state.new_id("p");
            let conference = find_mut(&mut state, &name)?;
            if conference.participants.iter().any(|existing| existing.name == participant) {
                return Err(Fault {
                    code: fault::DUPLICATE_PARTICIPANT_NAME,
                    message: "duplicate participant name".into(),
                });
            }
            conference.participants.push(Participant::made_up(id, participant));
            Ok(Struct::new())
        }
        (BridgeKind::Mcu, "participant.remove") => {
            let name = conference_name(params)?;
            let participant = required_str(params, "participantName")?;
            let conference = find_mut(&mut state, &name)?;
            let before = conference.participants.len();
            conference.participants.retain(|existing| existing.name != participant);
            if conference.participants.len() == before {
                return Err(no_such_participant());
            }
            Ok(Struct::new())
        }
        (BridgeKind::Mcu, "participant.enumerate") => {
            let start = mcu_position(params)?;
            let participants: Vec<Value> = state
                .conferences
                .iter()
                .flat_map(|conference| {
                    conference.participants.iter().map(|participant| {
                        let mut entry = members([
                            ("conferenceName", Value::from(conference.name.as_str())),
                            ("participantName", Value::from(participant.name.as_str())),
                            ("participantProtocol", Value::from("sip")),
                            ("participantType", Value::from("by_address")),
                            ("callState", Value::from("connected")),
                        ]);
                        if let Some(address) = &participant.address {
                            entry.insert("address".into(), Value::from(address.as_str()));
                        }
                        Value::Struct(entry)
                    })
                })
                .collect();
            Ok(mcu_page("participants", participants, start, page_size))
        }

        (BridgeKind::TelepresenceServer, "flex.conference.create") => {
            let name = conference_name(params)?;
            let uris = params.get("URIs").and_then(Value::as_array).unwrap_or_default();
            for uri in uris {
                check_pin(uri.as_struct().and_then(|uri| uri.get("PIN")))?;
            }
            let id = state.new_id("conf-");
            create(&mut state, id.clone(), name)?;
            Ok(members([("conferenceID", Value::from(id))]))
        }
        (BridgeKind::TelepresenceServer, "flex.conference.destroy") => {
            destroy(&mut state, required_str(params, "conferenceID")?).map(|()| Struct::new())
        }
        (BridgeKind::TelepresenceServer, "flex.conference.enumerate") => {
            let conferences: Vec<Value> = state
                .conferences
                .iter()
                .map(|conference| {
                    Value::Struct(members([
                        ("conferenceID", Value::from(conference.id.as_str())),
                        ("conferenceName", Value::from(conference.name.as_str())),
                    ]))
                })
                .collect();
            flex_page(params, "conferences", conferences, page_size)
        }
        (BridgeKind::TelepresenceServer, "flex.participant.create") => {
            let conference_id = required_str(params, "conferenceID")?.to_owned();
            let id = state.new_id("p");
            let conference = find_mut(&mut state, &conference_id)?;
            let name = format!("participant {id}");
            conference.participants.push(Participant::made_up(id.clone(), name));
            Ok(members([("participantID", Value::from(id))]))
        }
        (BridgeKind::TelepresenceServer, "flex.participant.destroy") => {
            let id = required_str(params, "participantID")?;
            for conference in &mut state.conferences {
                if let Some(index) = conference.participants.iter().position(|p| p.id == id) {
                    conference.participants.remove(index);
                    return Ok(Struct::new());
                }
            }
            Err(no_such_participant())
        }
        (BridgeKind::TelepresenceServer, "flex.participant.enumerate") => {
            let filter = params.get("conferenceID").and_then(Value::as_str);
            let participants: Vec<Value> = state
                .conferences
                .iter()
                .filter(|conference| filter.is_none_or(|id| id == conference.id))
                .flat_map(|conference| {
                    conference.participants.iter().map(|participant| {
                        let mut entry = members([
                            ("participantID", Value::from(participant.id.as_str())),
                            ("conferenceID", Value::from(conference.id.as_str())),
                            ("accessLevel", Value::from(participant.access_level)),
                            ("displayName", Value::from(participant.name.as_str())),
                            ("connectionState", Value::from("connected")),
                        ]);
                        if let Some(address) = &participant.address {
                            let call = members([
                                ("callID", Value::from(format!("call-{}", participant.id))),
                                ("incoming", Value::Bool(true)),
                                ("address", Value::from(address.as_str())),
                            ]);
                            entry.insert("calls".into(), Value::Array(vec![Value::Struct(call)]));
                        }
                        Value::Struct(entry)
                    })
                })
                .collect();
            flex_page(params, "participants", participants, page_size)
        }
        _ => Err(method_not_supported(method)),
    }
}

/// `sim.call`: the caller joins the conference the dialled URI names.
fn incoming_call(state: &mut SimState, params: &Struct) -> Result<Struct, Fault> {
    let uri = required_str(params, "uri")?;
    let caller = required_str(params, "caller")?.to_owned();
    let local = uri.split_once('@').map_or(uri, |(local, _)| local);
    let exact = state.conferences.iter().position(|conference| conference.name == local);
    let (index, access_level) = match (exact, local.strip_suffix(GUEST_SUFFIX)) {
        (Some(index), _) => (Some(index), "chair"),
        (None, Some(name)) => {
            (state.conferences.iter().position(|conference| conference.name == name), "guest")
        }
        (None, None) => (None, "chair"),
    };
    let index = index.ok_or_else(no_such_conference)?;
    let id = state.new_id("p");
    let participant =
        Participant { id: id.clone(), name: caller.clone(), address: Some(caller), access_level };
    state.conferences[index].participants.push(participant);
    Ok(members([("participantID", Value::from(id))]))
}

fn create(state: &mut SimState, id: String, name: String) -> Result<(), Fault> {
    if state.conferences.iter().any(|conference| conference.name == name) {
        return Err(Fault {
            code: fault::DUPLICATE_CONFERENCE_NAME,
            message: "duplicate conference name".into(),
        });
    }
    if state.max_conferences.is_some_and(|limit| state.conferences.len() >= limit as usize) {
        return Err(Fault {
            code: fault::TOO_MANY_CONFERENCES,
            message: "too many conferences".into(),
        });
    }
    state.conferences.push(Conference { id, name, participants: Vec::new() });
    Ok(())
}

fn destroy(state: &mut SimState, id: &str) -> Result<(), Fault> {
    let index = state
        .conferences
        .iter()
        .position(|conference| conference.id == id)
        .ok_or_else(no_such_conference)?;
    state.conferences.remove(index);
    Ok(())
}

fn find<'a>(state: &'a SimState, id: &str) -> Result<&'a Conference, Fault> {
    state.conferences.iter().find(|conference| conference.id == id).ok_or_else(no_such_conference)
}

fn find_mut<'a>(state: &'a mut SimState, id: &str) -> Result<&'a mut Conference, Fault> {
    state
        .conferences
        .iter_mut()
        .find(|conference| conference.id == id)
        .ok_or_else(no_such_conference)
}

/// MCU paging: `enumerateID` is where the next page starts; absent in the last page.
fn mcu_position(params: &Struct) -> Result<usize, Fault> {
    match params.get("enumerateID") {
        None => Ok(0),
        Some(id) => id.as_str().and_then(|id| id.parse().ok()).ok_or_else(invalid_enumerate_id),
    }
}

fn mcu_page(key: &str, items: Vec<Value>, start: usize, page_size: usize) -> Struct {
    let end = start.saturating_add(page_size).min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    let mut answer = members([(key, Value::Array(page))]);
    if end < items.len() {
        answer.insert("enumerateID".into(), Value::from(end.to_string()));
    }
    answer
}

/// TS paging: `cookie` is where the next page starts, `max` shrinks the page.
fn flex_page(
    params: &Struct,
    key: &str,
    items: Vec<Value>,
    page_size: usize,
) -> Result<Struct, Fault> {
    let start: usize = match params.get("cookie") {
        None => 0,
        Some(cookie) => cookie
            .as_str()
            .and_then(|cookie| cookie.parse().ok())
            .ok_or_else(invalid_enumerate_id)?,
    };
    let page_size = match optional_int(params, "max")? {
        Some(max) if max > 0 => page_size.min(max as usize),
        _ => page_size,
    };
    let end = start.saturating_add(page_size).min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    Ok(members([
        (key, Value::Array(page)),
        ("moreAvailable", Value::Bool(end < items.len())),
        ("cookie", Value::from(end.to_string())),
    ]))
}

/// Posts pending acknowledgements at once and keep-alives on the interval, outside the lock.
async fn send_feedback(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.feedback_interval_ms.max(1));
    let mut next_alive = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = shared.receivers_changed.notified() => {}
            () = tokio::time::sleep_until(next_alive) => {}
        }
        let alive_due = tokio::time::Instant::now() >= next_alive;
        if alive_due {
            next_alive += interval;
        }
        let posts: Vec<(String, String)> = {
            let mut state = shared.lock();
            state
                .receivers
                .iter_mut()
                .filter_map(|receiver| {
                    let mut events = Vec::new();
                    if !receiver.acknowledged {
                        receiver.acknowledged = true;
                        events.push(Value::from("configureAck"));
                    }
                    if alive_due && shared.config.kind == BridgeKind::TelepresenceServer {
                        events.push(Value::from("flexAlive"));
                    }
                    if events.is_empty() {
                        return None;
                    }
                    let notification = members([
                        ("sourceIdentifier", Value::from(receiver.source_identifier.as_str())),
                        ("events", Value::Array(events)),
                    ]);
                    let body =
                        xmlrpc::encode_call("eventNotification", &[Value::Struct(notification)]);
                    Some((receiver.uri.clone(), body))
                })
                .collect()
        };
        for (uri, body) in posts {
            let sent = shared
                .http
                .post(&uri)
                .header(header::CONTENT_TYPE, "text/xml")
                .body(body)
                .send()
                .await;
            if let Err(error) = sent {
                tracing::debug!(%uri, %error, "feedback receiver unreachable");
            }
        }
    }
}

/// A PIN, when given, is a string of digits.
fn check_pin(pin: Option<&Value>) -> Result<(), Fault> {
    match pin {
        None => Ok(()),
        Some(Value::String(digits)) if digits.chars().all(|c| c.is_ascii_digit()) => Ok(()),
        Some(_) => Err(Fault { code: fault::INVALID_PIN, message: "invalid PIN".into() }),
    }
}

fn members<const N: usize>(pairs: [(&str, Value); N]) -> Struct {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

fn saturate(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

fn conference_name(params: &Struct) -> Result<String, Fault> {
    match params.get("conferenceName").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(Fault {
            code: fault::NO_CONFERENCE_NAME,
            message: "no conference name or auto attendant id supplied".into(),
        }),
    }
}

fn required_str<'a>(params: &'a Struct, key: &str) -> Result<&'a str, Fault> {
    match params.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(invalid(key)),
        None => Err(Fault {
            code: fault::MISSING_PARAMETER,
            message: format!("missing parameter - {key}"),
        }),
    }
}

fn required_int(params: &Struct, key: &str) -> Result<i32, Fault> {
    optional_int(params, key)?.ok_or_else(|| Fault {
        code: fault::MISSING_PARAMETER,
        message: format!("missing parameter - {key}"),
    })
}

fn optional_int(params: &Struct, key: &str) -> Result<Option<i32>, Fault> {
    match params.get(key) {
        None => Ok(None),
        Some(Value::Int(number)) => Ok(Some(*number)),
        Some(_) => Err(invalid(key)),
    }
}

fn invalid(key: &str) -> Fault {
    Fault { code: fault::INVALID_PARAMETER, message: format!("invalid parameter - {key}") }
}

fn invalid_enumerate_id() -> Fault {
    Fault { code: fault::INVALID_ENUMERATE_ID, message: "invalid enumerateID".into() }
}

fn no_such_conference() -> Fault {
    Fault {
        code: fault::NO_SUCH_CONFERENCE,
        message: "no such conference or auto attendant".into(),
    }
}

fn no_such_participant() -> Fault {
    Fault { code: fault::NO_SUCH_PARTICIPANT, message: "no such participant".into() }
}

fn method_not_supported(method: &str) -> Fault {
    Fault { code: fault::METHOD_NOT_SUPPORTED, message: format!("method not supported: {method}") }
}

//! The bridge client: one HTTP(S) client shared by every bridge, the per-call envelope
//! (credentials in the struct, `/RPC2`, bounded answer, timeout) and each operation in its MCU
//! and TelePresence Server (flex) form.

use crate::BridgeError;
use crate::error::TlsProblem;
use crate::tls::{self, Roots};
use crate::xmlrpc::{self, Struct, Value};
use model::record::{Bridge, BridgeType, Protocol};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The longest answer accepted from a bridge ([`BridgeError::AnswerTooLarge`]). A real
/// enumeration page is a few KiB.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Enumeration pages followed at most in one listing ([`BridgeError::TooManyPages`]), so a
/// bridge that keeps answering "more available" cannot hold a caller forever.
pub const ENUMERATION_PAGES_MAX: usize = 100;
/// Participants kept per conference for listing (all are counted): a bridge's largest
/// conference is well below it, and a hostile one cannot make the list grow past it.
pub const PARTICIPANTS_LISTED_MAX: usize = 500;
/// Answer bytes read at most for one operation, all its calls and pages together
/// ([`BridgeError::OperationTooLarge`]): what a hostile bridge can make a caller read and hold.
pub const OPERATION_RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// `https` bridges (address and pin) a client keeps a connection pool for; past it the pools
/// are dropped and rebuilt on use, so edited addresses cannot grow the cache without bound.
pub const SECURE_TARGETS_MAX: usize = 256;
/// I/O errors looked into, nested, for a TLS refusal (hyper wraps it twice).
const IO_ERROR_NESTING_MAX: usize = 4;
/// The `status` member of a successful answer.
const STATUS_OK: &str = "operation successful";

/// Which API a bridge speaks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BridgeKind {
    /// TelePresence MCU, API 2.x (`conference.*`, `participant.*`).
    Mcu,
    /// TelePresence Server in remotely managed mode (`flex.conference.*`, `flex.participant.*`).
    TelepresenceServer,
}

impl From<BridgeType> for BridgeKind {
    fn from(bridge_type: BridgeType) -> BridgeKind {
        match bridge_type {
            BridgeType::Mcu => BridgeKind::Mcu,
            BridgeType::TelepresenceServer => BridgeKind::TelepresenceServer,
        }
    }
}

/// Where and how to reach one bridge. Its `Debug` form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BridgeTarget {
    pub kind: BridgeKind,
    /// Scheme, host and optional port, without a path: `http://127.0.0.1:8080`.
    pub base_url: String,
    pub username: String,
    pub password: String,
    /// For `https`: the SHA-256 of the only certificate accepted (no CA or name check then).
    pub pinned_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for BridgeTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BridgeTarget")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("pinned_sha256", &self.pinned_sha256.as_ref().map(tls::fingerprint_text))
            .finish()
    }
}

impl BridgeTarget {
    /// The target for a configured bridge: its address (`host`, `host:port`, an IPv6 address
    /// bare or in brackets) under the scheme its protocol names.
    pub fn from_record(bridge: &Bridge) -> BridgeTarget {
        let scheme = match bridge.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
        };
        let address = bridge.address.trim();
        // A bare IPv6 address has more than one colon and needs brackets in a URL.
        let host = if address.matches(':').count() > 1 && !address.starts_with('[') {
            format!("[{address}]")
        } else {
            address.to_owned()
        };
        BridgeTarget {
            kind: bridge.bridge_type.into(),
            base_url: format!("{scheme}://{host}"),
            username: bridge.username.clone(),
            password: bridge.password.clone(),
            // Validation admits only well-formed pins; anything else matches no certificate.
            pinned_sha256: bridge
                .pinned_sha256
                .as_deref()
                .map(|pin| model::validate::sha256_fingerprint(pin).unwrap_or([0; 32])),
        }
    }

    fn is_https(&self) -> bool {
        self.base_url.starts_with("https://")
    }

    fn rpc_url(&self) -> String {
        format!("{}/RPC2", self.base_url.trim_end_matches('/'))
    }
}

/// What to create.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ConferenceSpec {
    pub name: String,
    pub chair_pin: Option<String>,
    pub guest_pin: Option<String>,
    /// TelePresence Server: the URI guests dial (chairs dial `name`); `None` gives guests the
    /// conference's name too.
    pub guest_uri: Option<String>,
    /// MCU: `maximumVideoPorts`. Not sent to a TelePresence Server (its parameter for this is
    /// not confirmed).
    pub max_participants: Option<u32>,
}

/// A conference as the bridge reports it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BridgeConference {
    /// What identifies the conference in later calls: MCU `conferenceName`, TS `conferenceID`.
    pub id: String,
    pub name: String,
    pub participants: u32,
    /// The first [`PARTICIPANTS_LISTED_MAX`] participants (`participants` counts them all).
    pub participant_list: Vec<BridgeParticipant>,
}

/// A participant as the bridge's enumeration reports it; what a bridge leaves out is `None`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct BridgeParticipant {
    /// MCU `participantName`; TS `displayName`.
    pub name: String,
    /// MCU `address`; TS the first `calls[].address`.
    pub address: Option<String>,
    /// TS `accessLevel` (`chair`, `guest`).
    pub role: Option<String>,
    /// MCU `callState`; TS `connectionState`.
    pub state: Option<String>,
}

/// The health poll's answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BridgeStatus {
    pub conferences: u32,
    /// From `device.query`'s `maxConferences` when the bridge reports it (the simulator does;
    /// real bridges are not known to).
    pub max_conferences: Option<u32>,
}

/// An `eventNotification` a bridge posted to a feedback receiver.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EventNotification {
    pub source_identifier: String,
    /// Event names, such as `configureAck` and `flexAlive`.
    pub events: Vec<String>,
}

/// Decodes the body of a feedback receiver's POST. Answer it with
/// `xmlrpc::encode_response` of an empty struct.
pub fn parse_event_notification(body: &[u8]) -> Result<EventNotification, BridgeError> {
    let call = xmlrpc::decode_call(body)?;
    if call.method != "eventNotification" {
        return Err(BridgeError::Malformed(format!("unexpected method {}", call.method)));
    }
    let param = match call.params.first() {
        Some(Value::Struct(members)) => members,
        _ => return Err(BridgeError::Malformed("eventNotification without a struct".to_owned())),
    };
    let source_identifier = param.get("sourceIdentifier").and_then(Value::as_str).unwrap_or("");
    // Events are strings on the bridges seen so far; a struct event is named by its `type`.
    let events = param
        .get("events")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(|event| match event {
            Value::String(name) => Some(name.clone()),
            Value::Struct(members) => {
                members.get("type").and_then(Value::as_str).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    Ok(EventNotification { source_identifier: source_identifier.to_owned(), events })
}

/// How to build a [`BridgeClient`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BridgeClientOptions {
    /// The limit for one whole call: connect, send, and read the answer.
    pub timeout_ms: u64,
    /// PEM certificates (one or more) trusted for `https` bridges; with none, no `https`
    /// bridge is trusted. There is deliberately no "do not verify" option: anyone on the path
    /// could read the bridge credentials.
    pub trusted_ca_pem: Option<String>,
}

/// A client for any number of bridges; cheap to clone (the connection pools are shared).
/// `http` bridges share one pool; each `https` bridge has its own, whose TLS configuration
/// checks that bridge's certificate (pinned or by the CAs) and records what it presented.
#[derive(Clone, Debug)]
pub struct BridgeClient {
    http: reqwest::Client,
    timeout_ms: u64,
    roots: Roots,
    secure: Arc<Mutex<SecureClients>>,
}

/// The `https` bridges' clients by (base URL, pin), and the fingerprint each base URL
/// presented last (kept across pin changes, so the page shows it while the pin is edited).
#[derive(Debug, Default)]
struct SecureClients {
    clients: HashMap<(String, Option<[u8; 32]>), reqwest::Client>,
    presented: HashMap<String, Arc<Mutex<Option<String>>>>,
}

impl BridgeClient {
    /// A client with a per-call timeout, trusting the given CA certificates for `https`.
    pub fn new(timeout_ms: u64, trusted_ca_pem: Option<&str>) -> Result<BridgeClient, BridgeError> {
        BridgeClient::with_options(&BridgeClientOptions {
            timeout_ms,
            trusted_ca_pem: trusted_ca_pem.map(str::to_owned),
        })
    }

    pub fn with_options(options: &BridgeClientOptions) -> Result<BridgeClient, BridgeError> {
        let roots = match &options.trusted_ca_pem {
            Some(pem) => Some(Arc::new(tls::roots_from_pem(pem).map_err(BridgeError::Transport)?)),
            None => None,
        };
        let http = builder(options.timeout_ms)
            .build()
            .map_err(|error| BridgeError::Transport(format!("building the client: {error}")))?;
        Ok(BridgeClient {
            http,
            timeout_ms: options.timeout_ms,
            roots,
            secure: Arc::new(Mutex::new(SecureClients::default())),
        })
    }

    /// The SHA-256 fingerprint (`AB:CD:…`) of the certificate `target` presented at its last
    /// TLS handshake through this client, whether it was accepted or not.
    pub fn presented_fingerprint(&self, target: &BridgeTarget) -> Option<String> {
        let secure = self.secure.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = secure.presented.get(&target.base_url)?;
        slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The HTTP client for `target`: the shared one, or its own for `https`.
    fn http_for(&self, target: &BridgeTarget) -> Result<reqwest::Client, BridgeError> {
        if !target.is_https() {
            return Ok(self.http.clone());
        }
        let mut secure = self.secure.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (target.base_url.clone(), target.pinned_sha256);
        if let Some(client) = secure.clients.get(&key) {
            return Ok(client.clone());
        }
        if secure.clients.len() >= SECURE_TARGETS_MAX {
            *secure = SecureClients::default();
        }
        let presented = secure.presented.entry(target.base_url.clone()).or_default().clone();
        let config = tls::client_config(&self.roots, target.pinned_sha256, presented)
            .map_err(BridgeError::Transport)?;
        let client = builder(self.timeout_ms)
            .use_preconfigured_tls(config)
            .build()
            .map_err(|error| BridgeError::Transport(format!("building the client: {error}")))?;
        secure.clients.insert(key, client.clone());
        Ok(client)
    }

    /// Calls any method with the credentials added to its struct; returns the answer's struct.
    /// The operations below are built on this; use it for the API's other methods.
    pub async fn call(
        &self,
        target: &BridgeTarget,
        method: &str,
        params: Struct,
    ) -> Result<Struct, BridgeError> {
        let mut budget = AnswerBudget::new();
        self.call_within(target, method, params, &mut budget).await
    }

    /// [`BridgeClient::call`], counting the answer against `budget`.
    async fn call_within(
        &self,
        target: &BridgeTarget,
        method: &str,
        mut params: Struct,
        budget: &mut AnswerBudget,
    ) -> Result<Struct, BridgeError> {
        params.insert("authenticationUser".to_owned(), Value::from(target.username.as_str()));
        params.insert("authenticationPassword".to_owned(), Value::from(target.password.as_str()));
        let body = xmlrpc::encode_call(method, &[Value::Struct(params)]);
        let timeout = Duration::from_millis(self.timeout_ms);
        let answer = tokio::time::timeout(timeout, self.post(target, body))
            .await
            .map_err(|_| BridgeError::Timeout { timeout_ms: self.timeout_ms })??;
        budget.spend(method, answer.len())?;
        match xmlrpc::decode_response(&answer)? {
            Ok(Value::Struct(members)) => Ok(members),
            Ok(other) => Err(BridgeError::Malformed(format!("{method} answered {other:?}"))),
            Err(fault) => Err(BridgeError::from_fault(fault.code, fault.message)),
        }
    }

    /// Posts one document and reads the whole answer, refusing one over [`RESPONSE_BYTES_MAX`].
    async fn post(&self, target: &BridgeTarget, body: String) -> Result<Vec<u8>, BridgeError> {
        let url = target.rpc_url();
        let mut response = self
            .http_for(target)?
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(BridgeError::Transport(format!("{url} answered {}", response.status())));
        }
        let too_long = || BridgeError::AnswerTooLarge { limit_bytes: RESPONSE_BYTES_MAX };
        if response.content_length().is_some_and(|length| length > RESPONSE_BYTES_MAX as u64) {
            return Err(too_long());
        }
        let mut answer = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|error| self.transport_error(error))?
        {
            if answer.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(too_long());
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(answer)
    }

    fn transport_error(&self, error: reqwest::Error) -> BridgeError {
        if error.is_timeout() {
            BridgeError::Timeout { timeout_ms: self.timeout_ms }
        } else if let Some(problem) = tls_problem(&error) {
            BridgeError::Tls(problem)
        } else {
            // The chain of sources says why (refused, TLS, reset); the top level rarely does.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            BridgeError::Transport(message)
        }
    }

    /// Creates a conference. MCU: `conference.create`; TS: `flex.conference.create`, whose
    /// `conferenceID` becomes the conference's id.
    pub async fn create_conference(
        &self,
        target: &BridgeTarget,
        spec: &ConferenceSpec,
    ) -> Result<BridgeConference, BridgeError> {
        let mut params = Struct::new();
        params.insert("conferenceName".to_owned(), Value::from(spec.name.as_str()));
        match target.kind {
            BridgeKind::Mcu => {
                if let Some(pin) = &spec.chair_pin {
                    params.insert("pin".to_owned(), Value::from(pin.as_str()));
                }
                if let Some(pin) = &spec.guest_pin {
                    params.insert("guestPin".to_owned(), Value::from(pin.as_str()));
                }
                if let Some(ports) = spec.max_participants {
                    let ports = i32::try_from(ports).unwrap_or(i32::MAX);
                    params.insert("maximumVideoPorts".to_owned(), Value::Int(ports));
                }
                self.call(target, "conference.create", params).await?;
                Ok(BridgeConference {
                    id: spec.name.clone(),
                    name: spec.name.clone(),
                    participants: 0,
                    participant_list: Vec::new(),
                })
            }
            BridgeKind::TelepresenceServer => {
                // The conference is reached at its name as URI; the PINs ride on the URIs,
                // with the access level each grants.
                let uri = |pin: &Option<String>, access_level: &str| {
                    let mut members = Struct::new();
                    let address = match access_level {
                        "guest" => spec.guest_uri.as_deref().unwrap_or(&spec.name),
                        _ => spec.name.as_str(),
                    };
                    members.insert("URI".to_owned(), Value::from(address));
                    members.insert("accessLevel".to_owned(), Value::from(access_level));
                    if let Some(pin) = pin {
                        members.insert("PIN".to_owned(), Value::from(pin.as_str()));
                    }
                    Value::Struct(members)
                };
                let mut uris = vec![uri(&spec.chair_pin, "chair")];
                if spec.guest_pin.is_some() {
                    uris.push(uri(&spec.guest_pin, "guest"));
                }
                params.insert("URIs".to_owned(), Value::Array(uris));
                let answer = self.call(target, "flex.conference.create", params).await?;
                let id = required_str(&answer, "conferenceID", "flex.conference.create")?;
                Ok(BridgeConference {
                    id,
                    name: spec.name.clone(),
                    participants: 0,
                    participant_list: Vec::new(),
                })
            }
        }
    }

    /// Destroys a conference by its id. MCU: `conference.destroy`; TS: `flex.conference.destroy`.
    pub async fn destroy_conference(
        &self,
        target: &BridgeTarget,
        id: &str,
    ) -> Result<(), BridgeError> {
        let (method, key) = match target.kind {
            BridgeKind::Mcu => ("conference.destroy", "conferenceName"),
            BridgeKind::TelepresenceServer => ("flex.conference.destroy", "conferenceID"),
        };
        let params = Struct::from([(key.to_owned(), Value::from(id))]);
        self.call(target, method, params).await.map(drop)
    }

    /// Every conference on the bridge with its participant count, following the bridge's
    /// paging (MCU `enumerateID`, TS `cookie`/`moreAvailable`). Participants are counted from
    /// one paged `participant.enumerate` / `flex.participant.enumerate` over the whole bridge.
    pub async fn enumerate_conferences(
        &self,
        target: &BridgeTarget,
    ) -> Result<Vec<BridgeConference>, BridgeError> {
        let mut budget = AnswerBudget::new();
        let mut conferences = self.list_conferences(target, &mut budget).await?;
        let mut participants = self.list_participants(target, &mut budget).await?;
        for conference in &mut conferences {
            if let Some((count, list)) = participants.remove(&conference.id) {
                conference.participants = count;
                conference.participant_list = list;
            }
        }
        Ok(conferences)
    }

    /// The health poll: `device.query` answers, and the number of conferences.
    pub async fn status(&self, target: &BridgeTarget) -> Result<BridgeStatus, BridgeError> {
        let mut budget = AnswerBudget::new();
        let device = self.call_within(target, "device.query", Struct::new(), &mut budget).await?;
        let max_conferences = device
            .get("maxConferences")
            .and_then(Value::as_i32)
            .and_then(|limit| u32::try_from(limit).ok());
        let conferences = self.list_conferences(target, &mut budget).await?;
        let conferences = u32::try_from(conferences.len()).unwrap_or(u32::MAX);
        Ok(BridgeStatus { conferences, max_conferences })
    }

    /// Asks the bridge to post its events (`eventNotification`) to `receiver_uri`, in receiver
    /// slot 1, through `feedbackReceiver.configure` (the same method on both kinds).
    pub async fn configure_feedback(
        &self,
        target: &BridgeTarget,
        receiver_uri: &str,
    ) -> Result<(), BridgeError> {
        let params = Struct::from([
            ("receiverURI".to_owned(), Value::from(receiver_uri)),
            ("receiverIndex".to_owned(), Value::Int(1)),
        ]);
        self.call(target, "feedbackReceiver.configure", params).await.map(drop)
    }

    /// The conferences without participant counts.
    async fn list_conferences(
        &self,
        target: &BridgeTarget,
        budget: &mut AnswerBudget,
    ) -> Result<Vec<BridgeConference>, BridgeError> {
        let (method, id_key) = match target.kind {
            BridgeKind::Mcu => ("conference.enumerate", "conferenceName"),
            BridgeKind::TelepresenceServer => ("flex.conference.enumerate", "conferenceID"),
        };
        let mut conferences = Vec::new();
        self.paged(target, method, "conferences", budget, |conference| {
            let name = required_str(conference, "conferenceName", method)?;
            let id = required_str(conference, id_key, method)?;
            conferences.push(BridgeConference {
                id,
                name,
                participants: 0,
                participant_list: Vec::new(),
            });
            Ok(())
        })
        .await?;
        Ok(conferences)
    }

    /// Participants per conference id: their count, and the first
    /// [`PARTICIPANTS_LISTED_MAX`] of them.
    async fn list_participants(
        &self,
        target: &BridgeTarget,
        budget: &mut AnswerBudget,
    ) -> Result<BTreeMap<String, (u32, Vec<BridgeParticipant>)>, BridgeError> {
        let (method, id_key) = match target.kind {
            BridgeKind::Mcu => ("participant.enumerate", "conferenceName"),
            BridgeKind::TelepresenceServer => ("flex.participant.enumerate", "conferenceID"),
        };
        let mut participants: BTreeMap<String, (u32, Vec<BridgeParticipant>)> = BTreeMap::new();
        self.paged(target, method, "participants", budget, |participant| {
            // Participants outside a conference (an auto attendant's) have no id; skip them.
            if let Some(id) = participant.get(id_key).and_then(Value::as_str) {
                let (count, list) = participants.entry(id.to_owned()).or_default();
                *count = count.saturating_add(1);
                if list.len() < PARTICIPANTS_LISTED_MAX {
                    list.push(participant_of(target.kind, participant));
                }
            }
            Ok(())
        })
        .await?;
        Ok(participants)
    }

    /// Calls an enumeration method page by page, handing each item of `list_key` to `item`.
    /// MCU pages continue while the answer carries an `enumerateID`; TS pages while
    /// `moreAvailable` is true, passing the `cookie` back.
    async fn paged(
        &self,
        target: &BridgeTarget,
        method: &str,
        list_key: &str,
        budget: &mut AnswerBudget,
        mut item: impl FnMut(&Struct) -> Result<(), BridgeError>,
    ) -> Result<(), BridgeError> {
        let mut params = Struct::new();
        for _ in 0..ENUMERATION_PAGES_MAX {
            let answer = self.call_within(target, method, params.clone(), budget).await?;
            check_status(&answer, method)?;
            // A missing list is an empty page (MCUs omit it when there is nothing).
            for entry in answer.get(list_key).and_then(Value::as_array).unwrap_or_default() {
                let entry = entry.as_struct().ok_or_else(|| {
                    BridgeError::Malformed(format!(
                        "{method}: an entry of {list_key} is not a struct"
                    ))
                })?;
                item(entry)?;
            }
            let next = match target.kind {
                BridgeKind::Mcu => answer.get("enumerateID").map(|id| ("enumerateID", id.clone())),
                BridgeKind::TelepresenceServer if more(&answer) => {
                    let cookie = answer.get("cookie").cloned().ok_or_else(|| {
                        BridgeError::Malformed(format!("{method}: moreAvailable without a cookie"))
                    })?;
                    Some(("cookie", cookie))
                }
                BridgeKind::TelepresenceServer => None,
            };
            match next {
                Some((key, value)) => {
                    params.insert(key.to_owned(), value);
                }
                None => return Ok(()),
            }
        }
        Err(BridgeError::TooManyPages {
            method: method.to_owned(),
            pages_max: ENUMERATION_PAGES_MAX,
        })
    }
}

/// The answer bytes one operation may still read ([`OPERATION_RESPONSE_BYTES_MAX`]).
struct AnswerBudget {
    remaining_bytes: usize,
}

impl AnswerBudget {
    fn new() -> AnswerBudget {
        AnswerBudget { remaining_bytes: OPERATION_RESPONSE_BYTES_MAX }
    }

    fn spend(&mut self, method: &str, answer_bytes: usize) -> Result<(), BridgeError> {
        self.remaining_bytes = self.remaining_bytes.checked_sub(answer_bytes).ok_or_else(|| {
            BridgeError::OperationTooLarge {
                method: method.to_owned(),
                limit_bytes: OPERATION_RESPONSE_BYTES_MAX,
            }
        })?;
        Ok(())
    }
}

/// A participant from an enumeration entry; members a bridge leaves out stay `None`.
fn participant_of(kind: BridgeKind, entry: &Struct) -> BridgeParticipant {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
    match kind {
        BridgeKind::Mcu => BridgeParticipant {
            name: text("participantName").unwrap_or_default(),
            address: text("address"),
            role: None,
            state: text("callState"),
        },
        BridgeKind::TelepresenceServer => BridgeParticipant {
            name: text("displayName").unwrap_or_default(),
            address: entry
                .get("calls")
                .and_then(Value::as_array)
                .and_then(|calls| calls.first())
                .and_then(Value::as_struct)
                .and_then(|call| call.get("address"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            role: text("accessLevel"),
            state: text("connectionState"),
        },
    }
}

fn more(answer: &Struct) -> bool {
    answer.get("moreAvailable").and_then(Value::as_bool).unwrap_or(false)
}

/// Refuses an answer whose `status`, when present, is not the success string.
fn check_status(answer: &Struct, method: &str) -> Result<(), BridgeError> {
    match answer.get("status").and_then(Value::as_str) {
        Some(status) if status != STATUS_OK => {
            Err(BridgeError::Malformed(format!("{method} answered status {status:?}")))
        }
        _ => Ok(()),
    }
}

/// A string member the answer must have; an integer is accepted as its decimal text (some
/// bridges send ids as `int`).
fn required_str(members: &Struct, key: &str, method: &str) -> Result<String, BridgeError> {
    match members.get(key) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Int(number)) => Ok(number.to_string()),
        _ => Err(BridgeError::Malformed(format!("{method} answered without {key}"))),
    }
}

/// The settings every client shares: timeouts, no redirects, who is calling.
fn builder(timeout_ms: u64) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
}

/// The TLS refusal somewhere in `error`'s chain of sources, if any. An I/O error carries its
/// inner error (itself an I/O error, or the TLS library's) where `source()` does not look.
fn tls_problem(error: &reqwest::Error) -> Option<TlsProblem> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        let mut inner: &(dyn std::error::Error + 'static) = cause;
        for _ in 0..IO_ERROR_NESTING_MAX {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return TlsProblem::of(tls);
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(next) => inner = next,
                None => break,
            }
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    //! Unit tests of what needs no bridge: targets from records and fault mapping.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bridge(address: &str, protocol: Protocol, bridge_type: BridgeType) -> Bridge {
        Bridge {
            name: "b1".to_owned(),
            bridge_type,
            address: address.to_owned(),
            protocol,
            username: "admin".to_owned(),
            password: "secret".to_owned(),
            capacity_ports: 10,
            enabled: true,
            pinned_sha256: None,
        }
    }

    #[test]
    fn targets_take_the_scheme_from_the_protocol_and_keep_the_port() {
        let target =
            BridgeTarget::from_record(&bridge("10.0.0.5:8080", Protocol::Http, BridgeType::Mcu));
        assert_eq!(target.base_url, "http://10.0.0.5:8080");
        assert_eq!(target.kind, BridgeKind::Mcu);
        assert_eq!((target.username.as_str(), target.password.as_str()), ("admin", "secret"));
        assert_eq!(target.rpc_url(), "http://10.0.0.5:8080/RPC2");

        let target = BridgeTarget::from_record(&bridge(
            "ts.example.com",
            Protocol::Https,
            BridgeType::TelepresenceServer,
        ));
        assert_eq!(target.base_url, "https://ts.example.com");
        assert_eq!(target.kind, BridgeKind::TelepresenceServer);

        let bare = BridgeTarget::from_record(&bridge("fd00::1", Protocol::Https, BridgeType::Mcu));
        assert_eq!(bare.base_url, "https://[fd00::1]");
        let bracketed =
            BridgeTarget::from_record(&bridge("[fd00::1]:444", Protocol::Https, BridgeType::Mcu));
        assert_eq!(bracketed.base_url, "https://[fd00::1]:444");
        assert!(!format!("{bracketed:?}").contains("secret"), "{bracketed:?}");
    }

    #[test]
    fn faults_map_to_their_variants_and_only_transport_problems_mean_down() {
        assert_eq!(BridgeError::from_fault(14, "x"), BridgeError::Unauthorised);
        assert_eq!(BridgeError::from_fault(15, "x"), BridgeError::Unauthorised);
        assert_eq!(BridgeError::from_fault(2, "x"), BridgeError::DuplicateName);
        assert_eq!(BridgeError::from_fault(6, "x"), BridgeError::TooManyConferences);
        assert_eq!(BridgeError::from_fault(4, "x"), BridgeError::NoSuchConference);
        let other = BridgeError::from_fault(201, "operation failed");
        assert_eq!(other, BridgeError::Fault { code: 201, message: "operation failed".to_owned() });
        assert_eq!(other.fault_code(), Some(201));
        assert!(!other.is_bridge_down());
        assert!(!BridgeError::Unauthorised.is_bridge_down());
        assert!(BridgeError::Transport("refused".to_owned()).is_bridge_down());
        assert!(BridgeError::Timeout { timeout_ms: 5 }.is_bridge_down());
        assert!(BridgeError::Malformed("html".to_owned()).is_bridge_down());
    }

    #[test]
    fn bad_ca_certificates_are_refused() {
        let result = BridgeClient::new(1000, Some("-----BEGIN CERTIFICATE-----\nnope\n"));
        assert!(matches!(result, Err(BridgeError::Transport(_))), "{result:?}");
    }
}

//! Joining a cluster in one step, from the new peer: given the admin URL of one member, the
//! cluster's administrator password and the pre-shared key, this peer does what the seed's
//! Tasks 3–5 do on every peer (and what `batonctl cluster join` does from a workstation): the
//! member lists the new peer (founding the cluster on it first if it is standalone), this peer
//! takes the key and the list, and the join waits until every link is active or says what
//! refuses it.
//!
//! The member's HTTPS certificate comes from its own private CA, which this peer does not
//! trust. Verification is never skipped: the operator is shown the SHA-256 fingerprint of the
//! certificate the member presents ([`member_fingerprint`]), compares it with the one on the
//! member's Status page, and the join's calls accept that certificate only (pinned).
//!
//! The cluster's other members are listed on the new peer too, with no second confirmation:
//! each tells its peers its admin port and certificate fingerprint over the link the
//! pre-shared key authenticates (`peering::AdminEndpoint`), the pinned member shows them on
//! its peer lines, and the join accepts from each other member that certificate only. Every
//! member must be active and reachable before anything changes; a failure while they are
//! updated puts the lists back and says which could not be.

use super::App;
use super::records;
use crate::base::clock::now_ms;
use crate::base::journal::EntryKind;
use crate::services::cluster::{ClusterStatus, PeerState};
use model::RecordKind;
use model::record::REDACTED;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the join waits for every link to come up (as `batonctl cluster join`).
pub const JOIN_TIMEOUT_MS: u64 = 20_000;
const JOIN_POLL_MS: u64 = 500;
/// A refusal seen sooner than this after the settings were saved may be the previous
/// attempt's (the links restart with the new settings asynchronously), so it is not final yet.
const JOIN_REFUSAL_SETTLE_MS: u64 = 3_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// A link that has just come up shows "Active" a moment before the peer's admin endpoint
/// arrives on it; the join reads the member's peer lines again for this long.
const ADMIN_ENDPOINT_WAIT_MS: u64 = 3_000;
const ENDPOINT_UNKNOWN: &str =
    "the member has not learned its admin port and certificate yet (try again in a few seconds)";
const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// The administrator account the cluster shares.
const ADMIN_NAME: &str = crate::base::auth::FACTORY_ADMIN_NAME;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the member URL must look like https://address[:port]")]
    BadUrl,
    #[error("this peer has no IPv4 address yet: set it on System > IP first")]
    NoAddress,
    #[error("this peer is already in a cluster: take it out (standalone mode) first")]
    AlreadyClustered,
    #[error("the member at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the member now presents a certificate with SHA-256 fingerprint {seen}, not the {confirmed} you confirmed; nothing was changed"
    )]
    FingerprintChanged { seen: String, confirmed: String },
    #[error("the member refused the cluster's administrator password")]
    WrongPassword,
    #[error("the member refused: {0}")]
    Member(String),
    #[error("this peer refused the cluster settings: {0}")]
    Local(String),
    #[error(
        "the new peer was refused: {0}. Its cluster settings are kept: correct them on the Clustering page, or clear them to be standalone again"
    )]
    Refused(String),
    #[error(
        "not every peer is active after {JOIN_TIMEOUT_MS} ms: {0}. The settings are kept; the links may still come up"
    )]
    Timeout(String),
    #[error(
        "the cluster's other member {address} cannot be updated: {reason}; nothing was changed"
    )]
    OtherMember { address: String, reason: String },
    #[error("listing this peer on {address} failed: {reason}; {undone}")]
    Update { address: String, reason: String, undone: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
}

impl JoinError {
    /// Whether the operator's input or the cluster's state caused it (a 4xx in the API).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, JoinError::Tls(_))
    }
}

/// What the operator gives to join, and what a successful join did: the API's contract.
pub use ::api::{JoinRequest, Joined};

/// `AB:CD:…` or `abcd…`, the same fingerprint compared.
fn normalised(fingerprint: &str) -> String {
    fingerprint.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_uppercase()).collect()
}

fn member_base(url: &str) -> Result<String, JoinError> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").ok_or(JoinError::BadUrl)?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(JoinError::BadUrl);
    }
    Ok(trimmed.to_owned())
}

/// An HTTPS client that accepts only the certificate `confirmed` (none: accepts nothing, but
/// records what was presented in `seen`).
fn pinned_client(
    confirmed: Option<&str>,
    seen: Arc<Mutex<Option<String>>>,
) -> Result<reqwest::Client, JoinError> {
    let pinned = confirmed.and_then(model::validate::sha256_fingerprint);
    let config = bridges::pinned_client_config(pinned, seen).map_err(JoinError::Tls)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("batond/", env!("CARGO_PKG_VERSION"), " (cluster join)"))
        .build()
        .map_err(|error| JoinError::Tls(error.to_string()))
}

/// The SHA-256 fingerprint of the certificate the member at `member_url` presents, for the
/// operator to compare with the member's Status page. Sends nothing but a TLS handshake.
pub async fn member_fingerprint(member_url: &str) -> Result<String, JoinError> {
    let base = member_base(member_url)?;
    let seen = Arc::new(Mutex::new(None));
    let client = pinned_client(None, seen.clone())?;
    let attempt = client.get(format!("{base}/api/v1/status")).send().await;
    let fingerprint = crate::base::sync::lock(&seen).clone();
    match (fingerprint, attempt) {
        (Some(fingerprint), _) => Ok(fingerprint),
        (None, Err(error)) => {
            Err(JoinError::Unreachable { url: base, reason: error_chain(&error) })
        }
        (None, Ok(_)) => Err(JoinError::Tls("the member presented no certificate".to_owned())),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The member's admin API, through the pinned certificate, as the cluster's administrator.
struct Member {
    client: reqwest::Client,
    base: String,
    password: String,
    seen: Arc<Mutex<Option<String>>>,
    confirmed: String,
}

impl Member {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), JoinError> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(ADMIN_NAME, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let seen = crate::base::sync::lock(&self.seen).clone();
                if let Some(seen) = seen.filter(|s| normalised(s) != normalised(&self.confirmed)) {
                    return Err(JoinError::FingerprintChanged {
                        seen,
                        confirmed: self.confirmed.clone(),
                    });
                }
                return Err(JoinError::Unreachable {
                    url: self.base.clone(),
                    reason: error_chain(&error),
                });
            }
        };
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        if status == 401 {
            return Err(JoinError::WrongPassword);
        }
        Ok((status, body))
    }

    fn refusal(body: &Value) -> JoinError {
        let message = body["error"]["message"].as_str().unwrap_or("an unexpected answer");
        JoinError::Member(message.to_owned())
    }

    /// The address of a standalone member, which founds the cluster with it.
    async fn own_address(&self) -> Result<String, JoinError> {
        let (status, ipv4) = self.call(reqwest::Method::GET, "/api/v1/ipv4", None).await?;
        let address = ipv4["address"].as_str().unwrap_or_default().to_owned();
        if status != 200 || address.is_empty() {
            return Err(JoinError::Member(
                "it has no IPv4 address set (System > IP on the member)".to_owned(),
            ));
        }
        Ok(address)
    }

    async fn peers(&self) -> Result<Vec<String>, JoinError> {
        let (status, body) = self.call(reqwest::Method::GET, "/api/v1/cluster", None).await?;
        match status {
            200 => Ok(addresses(&body["peers"])),
            404 => Ok(Vec::new()),
            _ => Err(Member::refusal(&body)),
        }
    }

    async fn set_cluster(&self, key: &str, peers: &[String]) -> Result<(), JoinError> {
        let body = json!({"pre_shared_key": key, "peers": peers});
        let (status, answer) =
            self.call(reqwest::Method::PUT, "/api/v1/cluster", Some(body)).await?;
        if status == 200 { Ok(()) } else { Err(Member::refusal(&answer)) }
    }
}

fn addresses(list: &Value) -> Vec<String> {
    let mut peers: Vec<String> = list
        .as_array()
        .map(|peers| peers.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    peers.sort();
    peers
}

/// Joins the cluster of the member named in `request` (see the module documentation).
/// Nothing is changed before the member's certificate matched the confirmed fingerprint, the
/// member accepted the password and this peer's model accepted the new settings.
pub async fn join(app: &App, actor: &str, request: &JoinRequest) -> Result<Joined, JoinError> {
    let base = member_base(&request.member_url)?;
    // A peer still joining (settings saved, no cluster yet: e.g. a mistyped key) may try again.
    if app.cluster.status().cluster_id.is_some() {
        return Err(JoinError::AlreadyClustered);
    }
    let own_address = own_address(app)?;
    let seen = Arc::new(Mutex::new(None));
    let member = Member {
        client: pinned_client(Some(&request.member_certificate_sha256), seen.clone())?,
        base,
        password: request.password.clone(),
        seen,
        confirmed: request.member_certificate_sha256.clone(),
    };
    // Read first: the member's list, or its address if it is standalone.
    let list = member.peers().await?;
    let founded = list.is_empty();
    let previous = if founded { vec![member.own_address().await?] } else { list };
    let mut peers = previous.clone();
    if !peers.contains(&own_address) {
        peers.push(own_address.clone());
    }
    peers.sort();
    let others = if founded { Vec::new() } else { other_members(&member, &own_address).await? };
    check_other_lists(&others, &previous, &peers).await?;
    // This peer's rules (prerequisites, edition, its own address listed) are checked before
    // the member is touched, so a refusal here changes nothing anywhere.
    precheck(app, &request.pre_shared_key, &peers).await?;
    // Task 2 if needed: a standalone member founds the cluster with only its own address.
    if founded {
        member.set_cluster(&request.pre_shared_key, &previous).await?;
    }
    let member_address = member.base.trim_start_matches("https://").to_owned();
    let mut targets: Vec<(&str, &Member)> = vec![(&member_address, &member)];
    targets.extend(others.iter().map(|(address, other)| (address.as_str(), other)));
    let updated = list_on_members(&targets, &previous, &peers, founded).await?;
    if let Err(error) = take_settings(app, actor, request, &peers).await {
        // Take the new peer off the members' lists again, so the cluster is as it was.
        let _ = undo(&updated, &previous).await;
        return Err(error);
    }
    let other_members = others.into_iter().map(|(address, _)| address).collect();
    let status = wait_for_links(app).await?;
    Ok(Joined { founded, other_members, status })
}

/// This peer's primary address, which the cluster will list.
fn own_address(app: &App) -> Result<String, JoinError> {
    match records::current(app, model::RecordKey::singleton(RecordKind::Ipv4)) {
        Some(model::Record::Ipv4(ipv4)) => Ok(ipv4.address.to_string()),
        _ => Err(JoinError::NoAddress),
    }
}

/// The other members, each reached through the certificate the member relays, are checked
/// (reachable, the password, the same list) before anything changes anywhere.
async fn check_other_lists(
    others: &[(String, Member)],
    previous: &[String],
    peers: &[String],
) -> Result<(), JoinError> {
    for (address, other) in others {
        let fail = |error: JoinError| JoinError::OtherMember {
            address: address.clone(),
            reason: error.to_string(),
        };
        let their_list = other.peers().await.map_err(fail)?;
        if their_list != previous && their_list != peers {
            return Err(JoinError::OtherMember {
                address: address.clone(),
                reason: format!(
                    "it lists {their_list:?}, the member lists {previous:?}: the cluster must agree \
                     before it grows"
                ),
            });
        }
    }
    Ok(())
}

/// Task 3 on every member: each lists the new peer; each keeps its key (sent back redacted),
/// so a mistyped key cannot break the cluster. The lists differ between members only while
/// this runs (their links wait meanwhile). On a failure the members updated are put back.
async fn list_on_members<'a>(
    targets: &[(&'a str, &'a Member)],
    previous: &[String],
    peers: &[String],
    founded: bool,
) -> Result<Vec<(&'a str, &'a Member)>, JoinError> {
    let mut updated: Vec<(&str, &Member)> = Vec::new();
    for &(address, target) in targets {
        let listed = match target.peers().await {
            Ok(list) if list == peers => Ok(()),
            Ok(_) => target.set_cluster(REDACTED, peers).await,
            Err(error) => Err(error),
        };
        if let Err(error) = listed {
            let mut undone = undo(&updated, previous).await;
            if founded {
                undone.push_str(" (the member keeps the cluster it founded, with only itself)");
            }
            return Err(JoinError::Update {
                address: address.to_owned(),
                reason: error.to_string(),
                undone,
            });
        }
        updated.push((address, target));
    }
    Ok(updated)
}

/// Tasks 4–5: this peer takes the key and the list; its shared configuration is replaced by
/// the cluster's when it meets the member.
async fn take_settings(
    app: &App,
    actor: &str,
    request: &JoinRequest,
    peers: &[String],
) -> Result<(), JoinError> {
    let mut body = serde_json::Map::new();
    body.insert("pre_shared_key".to_owned(), Value::String(request.pre_shared_key.clone()));
    body.insert("peers".to_owned(), json!(peers));
    records::save(app, actor, None, RecordKind::Cluster, None, body).await.map(|_| ()).map_err(
        |error| {
            let fields: Vec<String> =
                error.fields().iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
            let message = if fields.is_empty() { error.to_string() } else { fields.join("; ") };
            JoinError::Local(message)
        },
    )
}

/// The members of the pinned member's cluster other than it and this peer, each with a client
/// that accepts only the certificate the member learned from it over the cluster link.
async fn other_members(
    member: &Member,
    own_address: &str,
) -> Result<Vec<(String, Member)>, JoinError> {
    let started_ms = now_ms();
    loop {
        match other_members_once(member, own_address).await {
            Err(JoinError::OtherMember { reason, .. })
                if reason == ENDPOINT_UNKNOWN
                    && now_ms().saturating_sub(started_ms) < ADMIN_ENDPOINT_WAIT_MS =>
            {
                tokio::time::sleep(Duration::from_millis(JOIN_POLL_MS)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn other_members_once(
    member: &Member,
    own_address: &str,
) -> Result<Vec<(String, Member)>, JoinError> {
    let (status, body) = member.call(reqwest::Method::GET, "/api/v1/cluster/status", None).await?;
    if status != 200 {
        return Err(Member::refusal(&body));
    }
    let mut others = Vec::new();
    for line in body["peers"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let address = line["address"].as_str().unwrap_or_default().to_owned();
        if address == own_address || line["state"] == "this_system" {
            continue;
        }
        let text = line["text"].as_str().unwrap_or("no status");
        if line["state"] != "active" {
            return Err(JoinError::OtherMember {
                address,
                reason: format!(
                    "the member sees it as \"{text}\", and every member must be active first"
                ),
            });
        }
        let (Some(port), Some(fingerprint)) =
            (line["admin_port"].as_u64(), line["admin_certificate_sha256"].as_str())
        else {
            return Err(JoinError::OtherMember { address, reason: ENDPOINT_UNKNOWN.to_owned() });
        };
        // Only an address of the list goes into the URL.
        if address.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(JoinError::Member(format!("it lists {address:?}, not an IPv4 address")));
        }
        let seen = Arc::new(Mutex::new(None));
        let other = Member {
            client: pinned_client(Some(fingerprint), seen.clone())?,
            base: format!("https://{address}:{port}"),
            password: member.password.clone(),
            seen,
            confirmed: fingerprint.to_owned(),
        };
        others.push((address, other));
    }
    Ok(others)
}

/// Puts the previous list back on the members already updated; says what it did.
async fn undo(updated: &[(&str, &Member)], previous: &[String]) -> String {
    if updated.is_empty() {
        return "nothing was changed".to_owned();
    }
    let mut restored = Vec::new();
    let mut failed = Vec::new();
    for (address, target) in updated {
        match target.set_cluster(REDACTED, previous).await {
            Ok(()) => restored.push(*address),
            Err(error) => failed.push(format!("{address} ({error})")),
        }
    }
    let mut text = String::new();
    if !restored.is_empty() {
        text = format!("the previous list was put back on {}", restored.join(", "));
    }
    if !failed.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&format!(
            "these still list this peer: remove it from their Clustering pages: {}",
            failed.join(", ")
        ));
    }
    text
}

/// Whether this peer's model would take these cluster settings, without saving them.
async fn precheck(app: &App, key: &str, peers: &[String]) -> Result<(), JoinError> {
    let record = model::Record::from_json(
        RecordKind::Cluster,
        json!({"pre_shared_key": key, "peers": peers}),
    )
    .map_err(|error| JoinError::Local(error.to_string()))?;
    let state = app.writer.state().await.map_err(|error| JoinError::Local(error.to_string()))?;
    match state.decide(&model::Command::Save(record)) {
        Ok(_) => Ok(()),
        Err(model::Rejection::Invalid { errors }) => Err(JoinError::Local(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        )),
        Err(rejection) => Err(JoinError::Local(rejection.to_string())),
    }
}

/// Waits until every line of this peer is "This system" or "Active", or a refusal that will
/// not cure itself.
async fn wait_for_links(app: &App) -> Result<ClusterStatus, JoinError> {
    let started_ms = now_ms();
    loop {
        let status = app.cluster.status();
        let waiting: Vec<_> = status
            .peers
            .iter()
            .filter(|line| !matches!(line.state, PeerState::ThisSystem | PeerState::Active { .. }))
            .collect();
        if !status.peers.is_empty() && waiting.is_empty() {
            return Ok(status);
        }
        let describe = |status: &ClusterStatus| {
            let mut lines: Vec<String> = status
                .peers
                .iter()
                .map(|line| format!("{}: {}", line.address, line.text))
                .collect();
            lines.extend(status.problems.iter().cloned());
            lines.join("; ")
        };
        let refused = waiting.iter().any(|line| line.code.is_some_and(|code| !code.is_transient()));
        let settled = now_ms().saturating_sub(started_ms) >= JOIN_REFUSAL_SETTLE_MS;
        if refused && settled {
            return Err(JoinError::Refused(describe(&status)));
        }
        if now_ms().saturating_sub(started_ms) > JOIN_TIMEOUT_MS {
            return Err(JoinError::Timeout(describe(&status)));
        }
        tokio::time::sleep(Duration::from_millis(JOIN_POLL_MS)).await;
    }
}

/// A join as the API and the web page run it, with its outcome in the Event Log.
pub async fn run(app: &App, actor: &str, request: &JoinRequest) -> Result<Joined, JoinError> {
    let joined = join(app, actor, request).await;
    let (level, kind, message) = match &joined {
        Ok(_) => (
            eventlog::Level::Info,
            EntryKind::ClusterJoined,
            format!("joined the cluster through {}", request.member_url),
        ),
        Err(error) => (
            eventlog::Level::Warning,
            EntryKind::ClusterJoinFailed,
            format!("joining through {} failed: {error}", request.member_url),
        ),
    };
    app.writer.journal(crate::base::journal::entry(level, kind, Some(actor), message));
    joined
}

//! Both logs to the remote syslog servers of this peer's `syslog` record, as RFC 5424 messages
//! with structured data: every Event Log entry, and every Configuration Log change made on this
//! peer (each peer sends its own, so the servers see the whole cluster once, as the seed's
//! "global view of activity across all peers").
//!
//! batond sends them itself over UDP (RFC 5426) rather than through the local rsyslog: the
//! message and its structured data are built here, it works wherever batond runs (the tests
//! included), and a follower task reads the logs after they are committed, so sending never
//! delays a command. Bounded: at most [`BATCH_ROWS_MAX`] rows per log per poll, messages cut
//! at [`MESSAGE_BYTES_MAX`], a name resolution waits at most [`RESOLVE_TIMEOUT_MS`], and a
//! datagram that cannot be sent at once is dropped (UDP promises no more). Servers set to
//! TCP or TLS get them over one kept connection each (`syslog_streams`).

use super::App;
use super::syslog_streams::{StreamServer, Streams};
use crate::base::clock::format_ms;
use crate::base::tasks::Tasks;
use model::record::{Syslog, SyslogTransport};
use model::{Record, RecordKey, RecordKind, State};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// How often the logs are read for new rows.
pub const POLL_INTERVAL_MS: u64 = 500;
/// Rows read per log per poll; more wait for the next poll.
pub const BATCH_ROWS_MAX: usize = 256;
/// Largest message sent: what every receiver must accept (RFC 5426 §3.2).
pub const MESSAGE_BYTES_MAX: usize = 2_048;
/// How long resolving a server's name may take before the poll goes on without it.
pub const RESOLVE_TIMEOUT_MS: u64 = 2_000;
/// Port when the server names none (RFC 5426).
pub const SYSLOG_UDP_PORT_DEFAULT: u16 = 514;
/// The structured data's SD-ID: `baton` under the enterprise number RFC 5612 reserves for
/// documentation, as no number of Baton's own is registered.
pub const SD_ID: &str = "baton@32473";
/// Facility local0 (RFC 5424 §6.2.1).
const FACILITY_LOCAL0: u8 = 16;

/// Where each log has been read up to.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    journal_id: u64,
    config_position: u64,
}

/// Starts the follower. What was logged before the start is not sent again (it was when it
/// happened, or no server was configured then).
pub async fn spawn(app: Arc<App>, tasks: &Tasks) {
    let mut cursor = match end_of_logs(&app).await {
        Ok(cursor) => cursor,
        Err(error) => {
            tracing::error!(%error, "syslog forwarding starts from the beginning of the logs");
            Cursor::default()
        }
    };
    let shutdown = tasks.shutdown().clone();
    tasks.spawn(async move {
        let socket = match UdpSocket::bind("0.0.0.0:0").await {
            Ok(socket) => socket,
            Err(error) => return tracing::error!(%error, "no socket for syslog forwarding"),
        };
        let mut streams = Streams::default();
        let mut ticker = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            cursor = forward(&app, &socket, &mut streams, cursor).await;
        }
    });
}

/// Where both logs end now.
async fn end_of_logs(app: &App) -> Result<Cursor, crate::store::ReadError> {
    app.readers
        .read(|conn| {
            Ok(Cursor {
                journal_id: eventlog::last_journal_id(conn)?,
                config_position: projections::config_log_last_position(conn)?,
            })
        })
        .await
}

/// Sends the rows logged since `cursor` to every server; returns the new cursor.
async fn forward(app: &App, socket: &UdpSocket, streams: &mut Streams, cursor: Cursor) -> Cursor {
    let state = app.writer.published_state();
    let servers = udp_servers(&state);
    let stream_servers = stream_servers(&state);
    if servers.is_empty() && stream_servers.is_empty() {
        // Nothing is read and dropped (under sustained writes, that read and decoded every
        // change with its record before); a server set later gets what is logged after.
        return end_of_logs(app).await.unwrap_or(cursor);
    }
    let this_peer = app.writer.peer_id();
    let read = app
        .readers
        .read(move |conn| {
            let journal = eventlog::journal_after(conn, cursor.journal_id, BATCH_ROWS_MAX)?;
            // Read first, so every row up to it is in `changes` unless the batch is full:
            // the cursor then moves past the other peers' rows too.
            let last = projections::config_log_last_position(conn)?;
            let changes = projections::config_log_after(
                conn,
                this_peer,
                cursor.config_position,
                BATCH_ROWS_MAX,
            )?;
            Ok((journal, changes, last))
        })
        .await;
    let (journal, changes, last_position) = match read {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "syslog forwarding could not read the logs");
            return cursor;
        }
    };
    let next = Cursor {
        journal_id: journal.last().map_or(cursor.journal_id, |entry| entry.id),
        config_position: match changes.last() {
            Some(entry) if changes.len() == BATCH_ROWS_MAX => entry.position,
            Some(entry) => entry.position.max(last_position),
            None => last_position.max(cursor.config_position),
        },
    };
    if journal.is_empty() && changes.is_empty() {
        return next;
    }
    let host = Host { name: host_name(&state), pid: std::process::id() };
    let mut messages: Vec<String> =
        journal.iter().map(|entry| event_message(&host, entry)).collect();
    messages.extend(changes.iter().map(|entry| config_message(&host, entry)));
    for server in resolve(&servers).await {
        for message in &messages {
            if let Err(error) = socket.try_send_to(message.as_bytes(), server) {
                tracing::debug!(%server, %error, "syslog message dropped");
            }
        }
    }
    streams.send(&stream_servers, &trusted_ca_pem(&state), &messages).await;
    next
}

fn syslog_record(state: &State) -> Option<&Syslog> {
    match state.singleton(RecordKind::Syslog) {
        Some(Record::Syslog(syslog)) => Some(syslog),
        _ => None,
    }
}

/// The configured servers that take TCP or TLS.
fn stream_servers(state: &State) -> Vec<StreamServer> {
    let Some(syslog) = syslog_record(state) else { return Vec::new() };
    syslog
        .servers
        .iter()
        .filter_map(|server| StreamServer::of(&server.host, server.port, server.transport))
        .collect()
}

/// The CAs a TLS server is verified against: the `certificates` record's, as for bridges.
fn trusted_ca_pem(state: &State) -> String {
    let key = RecordKey {
        kind: RecordKind::Certificates,
        name: RecordKind::Certificates.as_str().to_owned(),
    };
    match state.get(&key) {
        Some(Record::Certificates(certificates)) => certificates.trusted_ca_pem.clone(),
        _ => String::new(),
    }
}

/// The configured servers that take UDP, as `host:port`.
fn udp_servers(state: &State) -> Vec<String> {
    let Some(Syslog { servers }) = syslog_record(state) else { return Vec::new() };
    servers
        .iter()
        .filter(|server| server.transport == SyslogTransport::Udp)
        .map(|server| {
            let port = server.port.unwrap_or(SYSLOG_UDP_PORT_DEFAULT);
            match server.host.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => format!("[{v6}]:{port}"),
                Err(_) => format!("{}:{port}", server.host),
            }
        })
        .collect()
}

/// Each server's first IPv4 address (the socket is IPv4), each resolution bounded in time.
async fn resolve(servers: &[String]) -> Vec<SocketAddr> {
    let mut addresses = Vec::new();
    for server in servers {
        let lookup = tokio::net::lookup_host(server.as_str());
        match tokio::time::timeout(Duration::from_millis(RESOLVE_TIMEOUT_MS), lookup).await {
            Ok(Ok(mut found)) => addresses.extend(found.find(SocketAddr::is_ipv4)),
            Ok(Err(error)) => tracing::debug!(%server, %error, "syslog server not resolved"),
            Err(_) => tracing::debug!(%server, "syslog server not resolved in time"),
        }
    }
    addresses
}

fn host_name(state: &State) -> String {
    let key = RecordKey {
        kind: RecordKind::SystemName,
        name: RecordKind::SystemName.as_str().to_owned(),
    };
    match state.get(&key) {
        Some(Record::SystemName(name)) if !name.domain.is_empty() => {
            format!("{}.{}", name.host_name, name.domain)
        }
        Some(Record::SystemName(name)) if !name.host_name.is_empty() => name.host_name.clone(),
        _ => "-".to_owned(),
    }
}

/// The sender, as every message's header names it.
struct Host {
    name: String,
    pid: u32,
}

/// An Event Log entry: severity by its level, MSGID `event`.
fn event_message(host: &Host, entry: &eventlog::JournalEntry) -> String {
    let severity = match entry.level {
        eventlog::Level::Info => 6,
        eventlog::Level::Warning => 4,
        eventlog::Level::Error => 3,
    };
    let level = format!("{:?}", entry.level).to_lowercase();
    let params = [
        ("log", "event"),
        ("id", &entry.id.to_string()),
        ("kind", &entry.kind),
        ("level", &level),
        ("actor", entry.actor.as_deref().unwrap_or("")),
    ];
    message(host, severity, entry.at_ms, "event", &params, &entry.message)
}

/// A Configuration Log change: severity notice, MSGID `config`.
fn config_message(host: &Host, entry: &projections::ConfigLogEntry) -> String {
    let params = [
        ("log", "configuration"),
        ("position", &entry.position.to_string()),
        ("origin", &entry.origin),
        ("actor", &entry.actor),
        ("action", &entry.action),
        ("kind", &entry.kind),
        ("name", &entry.name),
    ];
    let text = format!("{} {} {} {:?}", entry.actor, entry.action, entry.kind, entry.name);
    message(host, 5, entry.at_ms, "config", &params, &text)
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG` (RFC 5424 §6), cut at
/// [`MESSAGE_BYTES_MAX`] on a character boundary.
fn message(
    host: &Host,
    severity: u8,
    at_ms: u64,
    message_id: &str,
    params: &[(&str, &str)],
    text: &str,
) -> String {
    let priority = u16::from(FACILITY_LOCAL0) * 8 + u16::from(severity);
    let mut data = format!("[{SD_ID}");
    for (name, value) in params {
        data.push_str(&format!(" {name}=\"{}\"", escape_param(value)));
    }
    data.push(']');
    let header_host = printable(&host.name, 255);
    let mut line = format!(
        "<{priority}>1 {} {header_host} baton {} {message_id} {data} {}",
        format_ms(at_ms),
        host.pid,
        text.replace(['\n', '\r'], " ")
    );
    if line.len() > MESSAGE_BYTES_MAX {
        let mut end = MESSAGE_BYTES_MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3).
fn escape_param(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(if c.is_control() { ' ' } else { c });
    }
    escaped
}

/// A header field: printable US-ASCII only, at most `max` characters, `-` when empty.
fn printable(text: &str, max: usize) -> String {
    let field: String = text.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if field.is_empty() { "-".to_owned() } else { field }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { name: "peer-1.example.com".to_owned(), pid: 42 }
    }

    #[test]
    fn an_event_log_entry_is_an_rfc_5424_message_with_structured_data() {
        let entry = eventlog::JournalEntry {
            id: 7,
            at_ms: 1_764_670_000_123,
            level: eventlog::Level::Warning,
            kind: "login.failed".to_owned(),
            actor: Some("ad\"m]in".to_owned()),
            message: "wrong password\nfor admin".to_owned(),
        };
        assert_eq!(
            event_message(&host(), &entry),
            "<132>1 2025-12-02T10:06:40.123Z peer-1.example.com baton 42 event \
             [baton@32473 log=\"event\" id=\"7\" kind=\"login.failed\" level=\"warning\" \
             actor=\"ad\\\"m\\]in\"] wrong password for admin"
        );
    }

    #[test]
    fn a_configuration_change_names_its_origin_and_a_long_message_is_cut() {
        let entry = projections::ConfigLogEntry {
            position: 3,
            at_ms: 0,
            origin: "ab".repeat(16),
            actor: "admin".to_owned(),
            action: "saved".to_owned(),
            kind: "bridge".to_owned(),
            name: "é".repeat(MESSAGE_BYTES_MAX),
            before: None,
            after: None,
        };
        let line = config_message(&Host { name: String::new(), pid: 1 }, &entry);
        assert!(line.starts_with("<133>1 1970-01-01T00:00:00.000Z - baton 1 config "), "{line}");
        assert!(line.contains(&format!("origin=\"{}\"", "ab".repeat(16))));
        assert!(line.len() <= MESSAGE_BYTES_MAX && line.len() > MESSAGE_BYTES_MAX - 4);
    }
}

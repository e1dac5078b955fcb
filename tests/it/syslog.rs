//! Both logs reach a remote syslog server: a UDP receiver on loopback, configured as the
//! peer's syslog server, gets Event Log entries and this peer's Configuration Log changes as
//! RFC 5424 messages with Baton's structured data.

use baton_tests::{Peer, free_port};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// One RFC 5424 message, as read by [`parse`].
#[derive(Debug)]
struct Message {
    priority: u8,
    host_name: String,
    app_name: String,
    message_id: String,
    /// The `baton@32473` element's parameters.
    params: BTreeMap<String, String>,
    text: String,
}

/// A strict reader of RFC 5424 §6: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
fn parse(line: &str) -> Result<Message, String> {
    let rest = line.strip_prefix('<').ok_or("no PRI")?;
    let (priority, rest) = rest.split_once('>').ok_or("no PRI end")?;
    let priority: u8 = priority.parse().map_err(|_| "PRI is not a number")?;
    if priority > 191 {
        return Err("PRI above 191".into());
    }
    let mut fields = rest.splitn(7, ' ');
    let mut next = |what: &str| fields.next().ok_or(format!("no {what}"));
    if next("VERSION")? != "1" {
        return Err("VERSION is not 1".into());
    }
    let timestamp = next("TIMESTAMP")?;
    humantime::parse_rfc3339(timestamp).map_err(|error| format!("TIMESTAMP: {error}"))?;
    let host_name = next("HOSTNAME")?.to_owned();
    let app_name = next("APP-NAME")?.to_owned();
    let _process_id = next("PROCID")?;
    let message_id = next("MSGID")?.to_owned();
    let rest = next("SD")?;
    for field in [&host_name, &app_name, &message_id] {
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!("header field {field:?} is not PRINTUSASCII"));
        }
    }
    let (params, text) = structured_data(rest)?;
    Ok(Message { priority, host_name, app_name, message_id, params, text })
}

/// One SD-ELEMENT `[baton@32473 name="value" …]` (values with `\"`, `\\`, `\]` escapes),
/// then the MSG after a space.
fn structured_data(text: &str) -> Result<(BTreeMap<String, String>, String), String> {
    let rest = text.strip_prefix("[baton@32473").ok_or(format!("no baton SD-ELEMENT: {text}"))?;
    let mut chars = rest.chars().peekable();
    let mut params = BTreeMap::new();
    loop {
        match chars.next() {
            Some(']') => break,
            Some(' ') => {}
            other => return Err(format!("unexpected {other:?} in SD")),
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || name.len() > 32 || chars.next() != Some('"') {
            return Err(format!("bad SD-PARAM {name:?}"));
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated PARAM-VALUE")? {
                '\\' => value.push(chars.next().ok_or("dangling escape")?),
                '"' => break,
                ']' => return Err("unescaped ] in PARAM-VALUE".into()),
                c => value.push(c),
            }
        }
        params.insert(name, value);
    }
    let rest: String = chars.collect();
    let text = rest.strip_prefix(' ').ok_or("no space before MSG")?.to_owned();
    Ok((params, text))
}

/// A Configuration Log change (the bridge `sent-to-syslog`) and an Event Log entry (a failed
/// login): what each test waits for on its servers.
fn log_one_of_each(peer: &Peer) {
    peer.create_bridge("sent-to-syslog").unwrap();
    let refused = peer
        .daemon
        .client()
        .unwrap()
        .get(format!("{}/api/v1/bridges", peer.daemon.url))
        .basic_auth("admin", Some("not the password"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

#[test]
fn both_logs_reach_a_remote_syslog_server_as_rfc_5424() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = receiver.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "127.0.0.1", free_port().unwrap(), &[]).unwrap();
    // Logged while no server is set, and polls have passed (batond's syslog `POLL_INTERVAL_MS`
    // is 500): the server set later does not get the history before it.
    peer.create_bridge("before-syslog").unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let server = json!({"servers": [{"host": "127.0.0.1", "port": port, "transport": "udp"}]});
    peer.save("/api/v1/syslog", server).unwrap();
    log_one_of_each(&peer);

    let (mut change, mut event) = (None, None);
    let deadline = Instant::now() + Duration::from_millis(baton_tests::SETTLE_TIMEOUT_MS);
    let mut buffer = [0u8; 4096];
    while (change.is_none() || event.is_none()) && Instant::now() < deadline {
        let Ok(length) = receiver.recv(&mut buffer) else { continue };
        let line = std::str::from_utf8(&buffer[..length]).unwrap();
        let message = parse(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert_eq!(
            (message.app_name.as_str(), message.host_name.as_str()),
            ("baton", "peer-1.example.test"),
            "{line}"
        );
        match message.params.get("log").map(String::as_str) {
            Some("configuration") if message.params["name"] == "sent-to-syslog" => {
                change = Some(message)
            }
            Some("configuration") if message.params["name"] == "before-syslog" => {
                panic!("a change made before any server was set was sent: {line}")
            }
            Some("event") if message.params["kind"] == "login.failed" => event = Some(message),
            Some("configuration" | "event") => {}
            other => panic!("unknown log {other:?}: {line}"),
        }
    }
    let change = change.expect("the bridge's creation reached the syslog server");
    assert_eq!(change.message_id, "config");
    assert_eq!(change.priority, 16 * 8 + 5, "local0.notice");
    assert_eq!(change.params["action"], "saved");
    assert_eq!(change.params["kind"], "bridge");
    assert_eq!(change.params["origin"], peer.cluster_status().unwrap().peer_id);
    let event = event.expect("the failed login reached the syslog server");
    assert_eq!(event.message_id, "event");
    assert_eq!(event.params["level"], "warning");
    assert_eq!(event.priority, 16 * 8 + 4, "local0.warning");
    assert!(!event.text.is_empty());
}

/// Syslog servers set to TCP and to TLS (verified by the saved CA, by address) get both logs
/// too, each message framed by its length (RFC 6587 octet counting; RFC 5425 over TLS).
#[test]
fn tcp_and_tls_syslog_servers_get_both_logs_framed_by_octet_counting() {
    let (ca, certificate, key) = crate::policy::foreign_ca_and_bridge_certificate();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = (tcp.local_addr().unwrap().port(), tls.local_addr().unwrap().port());
    let tls_config = tls_server_config(&certificate, &key);
    let tcp_reader = std::thread::spawn(move || both_logs_from(accepted(&tcp)));
    let tls_reader = std::thread::spawn(move || {
        let connection = rustls::ServerConnection::new(tls_config).unwrap();
        both_logs_from(rustls::StreamOwned::new(connection, accepted(&tls)))
    });
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "127.0.0.1", free_port().unwrap(), &[]).unwrap();
    peer.save("/api/v1/certificates", json!({"trusted_ca_pem": ca})).unwrap();
    let servers = json!({"servers": [
        {"host": "127.0.0.1", "port": ports.0, "transport": "tcp"},
        {"host": "127.0.0.1", "port": ports.1, "transport": "tls"},
    ]});
    peer.save("/api/v1/syslog", servers).unwrap();
    log_one_of_each(&peer);

    for (transport, reader) in [("tcp", tcp_reader), ("tls", tls_reader)] {
        let (change, event) = reader.join().unwrap();
        assert!(change, "over {transport}: the bridge's creation arrived");
        assert!(event, "over {transport}: the failed login arrived");
    }
}

/// The first connection to `listener` within the settle time (a daemon that never connects
/// fails the test instead of hanging it), with a read timeout so a reader can give up.
fn accepted(listener: &TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_millis(baton_tests::SETTLE_TIMEOUT_MS);
    let socket = loop {
        match listener.accept() {
            Ok((socket, _)) => break socket,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("batond never connected to the syslog server: {error}"),
        }
    };
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    socket
}

fn tls_server_config(certificate_pem: &str, key_pem: &str) -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let certificates: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    std::sync::Arc::new(config)
}

/// Reads octet-counted messages until the bridge's creation and the failed login arrived (or
/// the settle time passed): whether each arrived. Every message must parse as RFC 5424.
fn both_logs_from(mut stream: impl Read) -> (bool, bool) {
    let (mut change, mut event) = (false, false);
    let deadline = Instant::now() + Duration::from_millis(baton_tests::SETTLE_TIMEOUT_MS);
    let (mut pending, mut chunk) = (Vec::new(), [0u8; 4096]);
    while !(change && event) && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(length) => pending.extend_from_slice(&chunk[..length]),
            Err(_) => continue,
        }
        while let Some(message) = next_frame(&mut pending) {
            let message = parse(&message).unwrap_or_else(|error| panic!("{error}: {message}"));
            match message.params.get("log").map(String::as_str) {
                Some("configuration") => change |= message.params["name"] == "sent-to-syslog",
                Some("event") => event |= message.params["kind"] == "login.failed",
                other => panic!("unknown log {other:?}"),
            }
        }
    }
    (change, event)
}

/// Takes one `LEN SP MSG` frame off the front of `pending`, once it is whole.
fn next_frame(pending: &mut Vec<u8>) -> Option<String> {
    let space = pending.iter().position(|byte| *byte == b' ')?;
    let length: usize = std::str::from_utf8(&pending[..space]).ok()?.parse().ok()?;
    if pending.len() < space + 1 + length {
        return None;
    }
    let frame: Vec<u8> = pending.drain(..space + 1 + length).skip(space + 1).collect();
    Some(String::from_utf8(frame).unwrap())
}

//! Syslog over TCP (RFC 6587, octet counting) and TLS (RFC 5425): one connection per server,
//! kept between polls and opened again at the next poll after a failure. Connecting and
//! writing each wait at most a named time, so an unreachable server delays only the follower
//! task, never a command. A TLS server is verified against the CAs of the `certificates`
//! record, by its name, as the bridges are; without trusted CAs nothing is sent to it.

use model::record::SyslogTransport;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long opening a connection (and its TLS handshake) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long writing one poll's messages to one server may take.
pub const WRITE_TIMEOUT_MS: u64 = 2_000;
/// Port when a TCP server names none (what rsyslog and syslog-ng listen on by default).
pub const SYSLOG_TCP_PORT_DEFAULT: u16 = 514;
/// Port when a TLS server names none (RFC 5425).
pub const SYSLOG_TLS_PORT_DEFAULT: u16 = 6514;

/// A server that takes a stream: where, and how.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StreamServer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl StreamServer {
    /// The server of a record's entry, or `None` for UDP.
    pub fn of(host: &str, port: Option<u16>, transport: SyslogTransport) -> Option<StreamServer> {
        let (tls, default_port) = match transport {
            SyslogTransport::Udp => return None,
            SyslogTransport::Tcp => (false, SYSLOG_TCP_PORT_DEFAULT),
            SyslogTransport::Tls => (true, SYSLOG_TLS_PORT_DEFAULT),
        };
        Some(StreamServer { host: host.to_owned(), port: port.unwrap_or(default_port), tls })
    }
}

type Connection = Box<dyn AsyncWrite + Send + Unpin>;

/// The open connections, and the TLS settings for the trusted CAs they were made with.
#[derive(Default)]
pub struct Streams {
    open: HashMap<StreamServer, Connection>,
    tls: Option<(String, Arc<rustls::ClientConfig>)>,
}

impl Streams {
    /// Sends `messages` to each server; a server that fails loses this poll's messages and is
    /// connected to again at the next. Connections to servers no longer listed are closed.
    pub async fn send(
        &mut self,
        servers: &[StreamServer],
        trusted_ca_pem: &str,
        messages: &[String],
    ) {
        self.open.retain(|server, _| servers.contains(server));
        if servers.is_empty() {
            return;
        }
        let frame = octet_counted(messages);
        for server in servers {
            if !self.open.contains_key(server) {
                match self.connect(server, trusted_ca_pem).await {
                    Ok(connection) => {
                        self.open.insert(server.clone(), connection);
                    }
                    Err(problem) => {
                        tracing::debug!(host = %server.host, port = server.port, %problem, "syslog server not reached");
                        continue;
                    }
                }
            }
            let Some(connection) = self.open.get_mut(server) else { continue };
            let write = async {
                connection.write_all(&frame).await?;
                connection.flush().await
            };
            let written =
                tokio::time::timeout(Duration::from_millis(WRITE_TIMEOUT_MS), write).await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::debug!(host = %server.host, port = server.port, "syslog messages dropped: the connection failed");
                self.open.remove(server);
            }
        }
    }

    async fn connect(
        &mut self,
        server: &StreamServer,
        trusted_ca_pem: &str,
    ) -> Result<Connection, String> {
        let tls = match server.tls {
            true => Some(self.tls_config(trusted_ca_pem)?),
            false => None,
        };
        let connect = async {
            let tcp = TcpStream::connect((server.host.as_str(), server.port))
                .await
                .map_err(|error| error.to_string())?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls else { return Ok(Box::new(tcp) as Connection) };
            let name = rustls::pki_types::ServerName::try_from(server.host.clone())
                .map_err(|error| error.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|error| error.to_string())?;
            Ok(Box::new(stream) as Connection)
        };
        tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect)
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT_MS} ms")))
    }

    /// TLS settings trusting the saved CAs, rebuilt only when they change.
    fn tls_config(&mut self, trusted_ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some((pem, config)) = &self.tls
            && pem == trusted_ca_pem
        {
            return Ok(config.clone());
        }
        if trusted_ca_pem.trim().is_empty() {
            return Err("no trusted CA to verify a TLS syslog server with".to_owned());
        }
        let mut roots = rustls::RootCertStore::empty();
        for certificate in
            rustls::pki_types::CertificateDer::pem_slice_iter(trusted_ca_pem.as_bytes())
        {
            let certificate = certificate.map_err(|error| error.to_string())?;
            roots.add(certificate).map_err(|error| error.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let config = Arc::new(config);
        self.tls = Some((trusted_ca_pem.to_owned(), config.clone()));
        Ok(config)
    }
}

/// RFC 6587 §3.4.1: each message preceded by its length in bytes and a space.
fn octet_counted(messages: &[String]) -> Vec<u8> {
    let mut frame = Vec::new();
    for message in messages {
        frame.extend_from_slice(format!("{} ", message.len()).as_bytes());
        frame.extend_from_slice(message.as_bytes());
    }
    frame
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_by_their_length_in_bytes() {
        let frame = octet_counted(&["<134>1 a".to_owned(), "é".to_owned()]);
        assert_eq!(frame, "8 <134>1 a2 é".as_bytes());
    }

    #[test]
    fn udp_entries_are_not_streams_and_ports_default_by_transport() {
        assert_eq!(StreamServer::of("h", None, SyslogTransport::Udp), None);
        assert_eq!(StreamServer::of("h", None, SyslogTransport::Tcp).unwrap().port, 514);
        let tls = StreamServer::of("h", Some(7000), SyslogTransport::Tls).unwrap();
        assert_eq!((tls.port, tls.tls), (7000, true));
    }
}

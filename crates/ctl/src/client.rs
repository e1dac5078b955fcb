//! HTTPS access to the admin API: TLS trust, credentials, and JSON errors turned into
//! [`ApiError`]s.

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Where `cargo xtask run` keeps the development daemon's CA.
const DEV_CA: &str = ".baton-dev/tls/ca.pem";

#[derive(clap::Args)]
pub(crate) struct Connection {
    /// The admin API of the peer to manage.
    #[arg(long, env = "BATON_URL", default_value = "https://127.0.0.1:8443", global = true)]
    url: String,
    /// Administrator account.
    #[arg(long, env = "BATON_USER", default_value = "admin", global = true)]
    user: String,
    /// Read the password from the first line of stdin (otherwise from BATON_PASSWORD).
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Trust this CA certificate (the daemon's `<data dir>/tls/ca.pem`).
    #[arg(long, env = "BATON_CA", global = true)]
    ca: Option<PathBuf>,
    /// Do not verify the daemon's certificate (prints a warning).
    #[arg(long, global = true)]
    insecure: bool,
}

/// An error answer of the API.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) fields: Vec<(String, String)>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

pub(crate) struct Client {
    http: reqwest::blocking::Client,
    url: String,
    user: String,
    password: Option<String>,
}

impl Client {
    pub(crate) fn new(connection: &Connection) -> anyhow::Result<Client> {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
        let ca = connection
            .ca
            .clone()
            .or_else(|| Some(PathBuf::from(DEV_CA)).filter(|path| path.exists()));
        if connection.insecure {
            eprintln!("warning: --insecure: the daemon's certificate is not verified");
            builder = builder.danger_accept_invalid_certs(true);
        } else if let Some(ca) = ca {
            let pem = std::fs::read(&ca)
                .with_context(|| format!("reading CA certificate {}", ca.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("parsing the CA certificate")?,
            );
        }
        let password = if connection.password_stdin {
            Some(read_line("password")?)
        } else {
            std::env::var("BATON_PASSWORD").ok()
        };
        Ok(Client {
            http: builder.build().context("building the HTTPS client")?,
            url: connection.url.trim_end_matches('/').to_owned(),
            user: connection.user.clone(),
            password,
        })
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send("GET", path, None, None)
    }

    /// Sends a request; `password` overrides the configured one (for `password`).
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        password: Option<&str>,
    ) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).context("HTTP method")?;
        let password = password.or(self.password.as_deref());
        let Some(password) = password else {
            bail!("no password: set BATON_PASSWORD or pass --password-stdin");
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(&self.user, Some(password));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status().as_u16();
        let text = response.text().context("reading the answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let error = &value["error"];
            let fields = error["fields"]
                .as_array()
                .map(|fields| {
                    fields
                        .iter()
                        .map(|f| {
                            (
                                f["field"].as_str().unwrap_or("").to_owned(),
                                f["message"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            return Err(ApiError {
                status,
                code: error["code"].as_str().unwrap_or("http_error").to_owned(),
                message: error["message"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_owned),
                fields,
            }
            .into());
        }
        Ok(value)
    }
}

fn read_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no {what} on stdin");
    }
    Ok(line)
}

/// Current and new password for `batonctl password`.
pub(crate) fn read_password_change() -> anyhow::Result<(String, String)> {
    let current = match std::env::var("BATON_PASSWORD") {
        Ok(current) => current,
        Err(_) => read_line("current password")?,
    };
    let new = match std::env::var("BATON_NEW_PASSWORD") {
        Ok(new) => new,
        Err(_) => read_line("new password")?,
    };
    Ok((current, new))
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?a=1&b=2` from the pairs that have a value.
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|value| format!("{key}={}", encode(value))))
        .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn encoding_and_queries() {
        assert_eq!(super::encode("a b/c:1"), "a%20b%2Fc%3A1");
        assert_eq!(
            super::query(&[("a", Some("1".into())), ("b", None), ("c", Some("x y".into()))]),
            "?a=1&c=x%20y"
        );
        assert_eq!(super::query(&[("a", None)]), "");
    }
}

//! HTTPS access to the admin API: TLS trust, HTTP Basic credentials on every request, answers
//! read as the `api` crate's types (an answer that does not match them is an error naming the
//! request, never an empty value), and error answers turned into [`ApiError`]s.

use crate::cli::Globals;
use anyhow::{Context, bail};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Where `cargo xtask run` keeps the development daemon's CA, relative to the working directory.
pub(crate) const DEV_CA: &str = ".baton-dev/tls/ca.pem";

/// An error answer of the API: `{"error": {"code", "message", "fields"}}`.
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

impl ApiError {
    /// Reads an error answer (`api::ErrorAnswer`); anything else (a proxy's HTML page) becomes
    /// its HTTP status.
    pub(crate) fn from_answer(status: u16, body: &str) -> ApiError {
        match serde_json::from_str::<api::ErrorAnswer>(body) {
            Ok(answer) => ApiError {
                status,
                code: answer.error.code,
                message: answer.error.message,
                fields: answer
                    .error
                    .fields
                    .into_iter()
                    .map(|field| (field.field, field.message))
                    .collect(),
            },
            Err(_) => ApiError {
                status,
                code: "http_error".to_owned(),
                message: format!("the daemon answered HTTP {status}"),
                fields: Vec::new(),
            },
        }
    }
}

/// Whether `error` is the API saying the record does not exist.
pub(crate) fn is_not_found(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ApiError>().is_some_and(|error| error.status == 404)
}

pub(crate) struct Client {
    http: reqwest::blocking::Client,
    url: String,
    user: String,
    password: String,
}

impl Client {
    pub(crate) fn new(globals: &Globals, password: String) -> anyhow::Result<Client> {
        let url = globals.url.trim_end_matches('/').to_owned();
        if !url.starts_with("https://") {
            bail!("--url must start with https:// (the password is sent with every request)");
        }
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tls_info(true)
            .user_agent(concat!("batonctl/", env!("CARGO_PKG_VERSION")));
        if globals.insecure {
            eprintln!("warning: --insecure: the daemon's certificate is not verified");
            builder = builder.danger_accept_invalid_certs(true);
        } else {
            let Some(ca) = ca_file(globals.ca.as_deref(), Path::new(DEV_CA).exists()) else {
                bail!(
                    "no CA to verify the daemon with: pass --ca <data dir>/tls/ca.pem (or set \
                     BATON_CA), or --insecure"
                );
            };
            let pem = std::fs::read(&ca)
                .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            if certificates.is_empty() {
                bail!("{} holds no PEM certificate", ca.display());
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Client {
            http: builder.build().context("setting up HTTPS")?,
            url,
            user: globals.user.clone(),
            password,
        })
    }

    /// The SHA-256 fingerprint (`AB:CD:…`) of the certificate the daemon presented, after the
    /// usual verification against the trusted CA.
    pub(crate) fn certificate_sha256(&self) -> anyhow::Result<String> {
        use sha2::Digest as _;
        let response = self
            .http
            .get(format!("{}/api/v1/status", self.url))
            .send()
            .with_context(|| format!("cannot reach {}", self.url))?;
        let info = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec))
            .with_context(|| format!("{} presented no certificate", self.url))?;
        let digest = sha2::Sha256::digest(&info);
        Ok(digest.iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":"))
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(Method::GET, path, None::<&()>)
    }

    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(Method::POST, path, Some(body))
    }

    pub(crate) fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.send(Method::PUT, path, Some(body))
    }

    /// A DELETE, answered with no body (204).
    pub(crate) fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(Method::DELETE, path, None::<&()>)
    }

    /// A request with the credentials, for bodies and answers that are not JSON (backups).
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .basic_auth(&self.user, Some(&self.password))
    }

    /// Sends a request made by [`Client::request`]; a 4xx/5xx answer becomes an [`ApiError`],
    /// anything else is returned unread.
    pub(crate) fn send_raw(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let response = request.send().with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.text().context("reading the answer")?;
            return Err(ApiError::from_answer(status, &text).into());
        }
        Ok(response)
    }

    /// Sends one request; a 4xx/5xx answer becomes an [`ApiError`].
    fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().with_context(|| format!("cannot reach {}", self.url))?;
        answer(response).with_context(|| format!("{method} {path}"))
    }
}

/// Reads an answer as `T` (an empty body reads as JSON `null`, so `()` takes a 202 or 204);
/// a 4xx/5xx becomes an [`ApiError`].
pub(crate) fn answer<T: DeserializeOwned>(
    response: reqwest::blocking::Response,
) -> anyhow::Result<T> {
    let status = response.status().as_u16();
    let text = response.text().context("reading the answer")?;
    if status >= 400 {
        return Err(ApiError::from_answer(status, &text).into());
    }
    decode(&text)
}

/// Longest excerpt of a mismatched answer quoted in the error.
const EXCERPT_CHARS_MAX: usize = 300;

/// `text` as `T`, or an error saying the daemon and this batonctl disagree on the answer.
fn decode<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    let json = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(json).map_err(|error| {
        let excerpt: String = text.chars().take(EXCERPT_CHARS_MAX).collect();
        anyhow::anyhow!(
            "the daemon's answer does not have the form this batonctl ({}) expects: {error}; \
             the answer begins {excerpt:?}",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// The CA to trust: `--ca`/BATON_CA, else the development CA when it exists.
fn ca_file(given: Option<&Path>, dev_ca_exists: bool) -> Option<PathBuf> {
    given.map(Path::to_path_buf).or_else(|| dev_ca_exists.then(|| PathBuf::from(DEV_CA)))
}

/// Advice for a failed connection, from its error chain.
pub(crate) fn hint(error: &str) -> Option<&'static str> {
    if error.contains("NotValidForName") {
        Some("the daemon's certificate does not name the host in --url")
    } else if error.contains("invalid peer certificate") || error.contains("UnknownIssuer") {
        Some("the daemon's certificate is not signed by the CA given (see --ca)")
    } else if error.contains("Connection refused") {
        Some("is batond running, and is --url right?")
    } else {
        None
    }
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
    use super::*;
    use serde_json::json;

    #[test]
    fn encoding_and_queries() {
        assert_eq!(encode("a b/c:1é"), "a%20b%2Fc%3A1%C3%A9");
        assert_eq!(
            query(&[("a", Some("1".into())), ("b", None), ("c", Some("x y".into()))]),
            "?a=1&c=x%20y"
        );
        assert_eq!(query(&[("a", None)]), "");
    }

    #[test]
    fn error_answers_keep_their_fields() {
        let body = json!({"error": {"code": "invalid_fields", "message": "2 invalid", "fields": [
            {"field": "name", "message": "must not be empty"},
        ]}});
        let error = ApiError::from_answer(422, &body.to_string());
        assert_eq!((error.code.as_str(), error.message.as_str()), ("invalid_fields", "2 invalid"));
        assert_eq!(error.fields, vec![("name".to_owned(), "must not be empty".to_owned())]);
        let error = ApiError::from_answer(502, "<html>bad gateway</html>");
        assert_eq!(error.message, "the daemon answered HTTP 502");
        assert!(error.fields.is_empty());
        let not_found = anyhow::Error::new(ApiError::from_answer(404, ""));
        assert!(is_not_found(&not_found.context("reading")));
    }

    #[test]
    fn answers_that_do_not_match_the_contract_are_errors_naming_the_field() {
        let renamed = r#"{"unavailable": null, "maintenance_drain_left_ms": 0, "bridges": []}"#;
        let error = decode::<api::PolicyStatus>(renamed).unwrap_err().to_string();
        assert!(error.contains("does not have the form"), "{error}");
        assert!(error.contains("maintenance_drain_left_ms"), "{error}");
        let missing = r#"{"unavailable": null, "bridges": []}"#;
        let error = decode::<api::PolicyStatus>(missing).unwrap_err().to_string();
        assert!(error.contains("missing field `maintenance_drain_ms_left`"), "{error}");
        // No body (a 202 or 204) is what `()` expects.
        decode::<()>("").unwrap();
        assert!(decode::<api::PolicyStatus>("").is_err());
    }

    #[test]
    fn the_ca_is_the_given_one_else_the_development_one() {
        let given = Path::new("/etc/baton/ca.pem");
        assert_eq!(ca_file(Some(given), true).unwrap(), given);
        assert_eq!(ca_file(None, true).unwrap(), Path::new(DEV_CA));
        assert_eq!(ca_file(None, false), None);
    }

    #[test]
    fn connection_failures_get_advice() {
        assert!(hint("invalid peer certificate: UnknownIssuer").unwrap().contains("--ca"));
        assert!(hint("tcp connect error: Connection refused (os error 111)").is_some());
        assert_eq!(hint("timed out"), None);
    }
}

//! Admin API tests against a real daemon started in-process on 127.0.0.1:0 over HTTPS.
#![allow(clippy::unwrap_used)]

mod api;
mod connections;
mod disk;
mod flood;
mod headers;
mod platform;
mod policy;
mod read_only;
mod web;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub const NEW_PASSWORD: &str = "correct horse battery";

/// A daemon running in this test process, with an HTTPS client that trusts its CA.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub client: Client,
    pub shutdown: CancellationToken,
    pub daemon: Option<daemon::Daemon>,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        TestDaemon::start_in(tempfile::tempdir().unwrap()).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestDaemon {
        TestDaemon::start_with(dir, |_| {}).await
    }

    /// Starts a daemon with the local defaults changed by `adjust`.
    pub async fn start_with(
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut daemon::Config),
    ) -> TestDaemon {
        let mut config = daemon::Config {
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..daemon::Config::local(dir.path().to_path_buf())
        };
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let daemon = daemon::start(config, shutdown.clone()).await.unwrap();
        let url = format!("https://{}", daemon.admin_addr);
        let ca = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        let client = Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        TestDaemon { dir, url, client, shutdown, daemon: Some(daemon) }
    }

    /// Stops the daemon and returns its data directory, to start it again.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.daemon.take().unwrap().wait().await.unwrap();
        self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Sends a request as `user:password` (Basic) and returns status and JSON body (or Null).
    pub async fn call_as(
        &self,
        auth: Option<(&str, &str)>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// As the administrator after the factory password was changed.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(Some(("admin", NEW_PASSWORD)), method, path, body).await
    }

    pub async fn change_factory_password(&self) {
        let (status, body) = self
            .call_as(
                Some(("admin", "TANDBERG")),
                Method::POST,
                "/api/v1/password",
                Some(json!({"current_password": "TANDBERG", "new_password": NEW_PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

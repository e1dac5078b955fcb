//! What a browser is told and what another site's page cannot make it do: security headers on
//! every page and answer, and no state change from a cross-site form or a foreign `Origin`.

use crate::TestDaemon;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_answers_carry_the_security_headers() {
    let daemon = TestDaemon::start().await;
    for path in ["/login", "/style.css", "/maintenance.js", "/api/v1/health", "/api/v1/status"] {
        let response = daemon.client.get(format!("{}{path}", daemon.url)).send().await.unwrap();
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
        };
        assert_eq!(header("content-security-policy"), "default-src 'self'; frame-ancestors 'none'");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(header("strict-transport-security").starts_with("max-age="), "{path}");
        if !path.ends_with(".css") && !path.ends_with(".js") {
            assert_eq!(header("cache-control"), "no-store", "{path}");
        }
    }
}

/// The cached-Basic-credentials CSRF: another site's form posting to the API with the
/// browser's credentials must not reboot the appliance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_or_origin_changes_nothing() {
    let daemon = TestDaemon::start().await;
    daemon.change_factory_password().await;
    let reboot = format!("{}/api/v1/upgrade/reboot", daemon.url);
    let post = || daemon.client.post(&reboot).basic_auth("admin", Some(crate::NEW_PASSWORD));
    let form = post()
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body("a=b")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let plain = post().header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let foreign = post().header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let (_, log) =
        daemon.call(reqwest::Method::GET, "/api/v1/logs/events?kind=system.reboot", None).await;
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(0), "{log}");
}

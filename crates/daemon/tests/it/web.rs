//! The web pages at the HTTP level, as a browser without JavaScript uses them: log in, the
//! forced password change, a bridge added through its form, a refused form that keeps the
//! operator's input, CSRF refusals that change nothing, and logout.

use crate::{NEW_PASSWORD, TestDaemon};
use reqwest::{Method, StatusCode, redirect};
use serde_json::{Value, json};

/// A cookie-keeping client that does not follow redirects, so each step is visible.
struct Browser {
    client: reqwest::Client,
    url: String,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(daemon: &TestDaemon) -> Browser {
        let ca = std::fs::read(daemon.dir.path().join("tls/ca.pem")).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Browser { client, url: daemon.url.clone(), cookie: None }
    }

    async fn send(&mut self, method: Method, path: &str, form: &[(&str, &str)]) -> Page {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.url));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if method == Method::POST {
            let body: Vec<String> = form
                .iter()
                .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                .collect();
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"));
        }
        let response = request.send().await.unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap().to_owned();
            assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
            self.cookie = if pair.ends_with('=') { None } else { Some(pair) };
        }
        let status = response.status();
        let location =
            response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
        Page { status, location, body: response.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, &[]).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, form).await
    }

    async fn post_pairs(&mut self, path: &str, form: &[(String, String)]) -> Page {
        let pairs: Vec<(&str, &str)> =
            form.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        self.send(Method::POST, path, &pairs).await
    }

    /// The CSRF token of the page at `path`.
    async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        let marker = "name=\"csrf\" value=\"";
        let start = page.body.find(marker).expect("a CSRF field") + marker.len();
        page.body[start..].split('"').next().unwrap().to_owned()
    }

    async fn log_in(&mut self, password: &str) -> Page {
        self.post("/login", &[("username", "admin"), ("password", password)]).await
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_forces_the_password_change_then_logout_ends_the_session() {
    let daemon = TestDaemon::start().await;
    let mut browser = Browser::new(&daemon);
    // Signed out, pages lead to the login page.
    let page = browser.get("/status").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/login"));
    let page = browser.get("/login").await;
    assert!(page.body.contains("<label for=\"username\">"), "{}", page.body);

    let page = browser.log_in("wrong password").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(browser.cookie.is_none());

    let page = browser.log_in("TANDBERG").await;
    assert_eq!(page.location.as_deref(), Some("/password"));
    // Until the factory password is changed, every page leads to the password page.
    let page = browser.get("/configuration/bridges").await;
    assert_eq!(page.location.as_deref(), Some("/password"));

    let csrf = browser.csrf("/password").await;
    let page = browser
        .post(
            "/password",
            &[("csrf", &csrf), ("current_password", "TANDBERG"), ("new_password", "short")],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("at least 10 characters"), "{}", page.body);
    let page = browser
        .post(
            "/password",
            &[("csrf", &csrf), ("current_password", "TANDBERG"), ("new_password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Saved"));
    let page = browser.get("/status").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Version"), "{}", page.body);
    // The API takes the new password too: it is the same account.
    let (status, _) = daemon.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);

    let csrf = browser.csrf("/status").await;
    let cookie = browser.cookie.clone();
    let page = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.location.as_deref(), Some("/login"));
    // The old cookie no longer opens anything.
    browser.cookie = cookie;
    let page = browser.get("/status").await;
    assert_eq!(page.location.as_deref(), Some("/login"));
}

async fn signed_in(daemon: &TestDaemon) -> Browser {
    daemon.change_factory_password().await;
    let mut browser = Browser::new(daemon);
    let page = browser.log_in(NEW_PASSWORD).await;
    assert_eq!(page.location.as_deref(), Some("/status"));
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_added_through_its_form_is_saved_and_a_refused_form_keeps_the_input() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let csrf = browser.csrf("/configuration/bridges").await;
    let page = browser.get("/configuration/bridges").await;
    assert!(page.body.contains("apply to the whole cluster"), "{}", page.body);
    // Every input has a label.
    for id in ["field-name", "field-address", "field-capacity_ports", "field-password"] {
        assert!(page.body.contains(&format!("<label for=\"{id}\"")), "{id}");
    }

    // A capacity that is not a number and a missing address: refused, input kept.
    let page = browser
        .post(
            "/configuration/bridges",
            &[
                ("csrf", &csrf),
                ("name", "mcu-typed-name"),
                ("bridge_type", "mcu"),
                ("protocol", "https"),
                ("username", "api"),
                ("capacity_ports", "many"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", page.body);
    assert!(page.body.contains("must be a whole number"), "{}", page.body);
    assert!(page.body.contains("value=\"mcu-typed-name\""), "input lost: {}", page.body);
    assert!(page.body.contains("value=\"many\""), "input lost");
    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges, Value::Array(vec![]));

    // A model rule (capacity at least 1), refused by the model as through the API.
    let page = browser
        .post(
            "/configuration/bridges",
            &[
                ("csrf", &csrf),
                ("name", "mcu-1"),
                ("bridge_type", "mcu"),
                ("address", "127.0.0.9"),
                ("protocol", "https"),
                ("username", "api"),
                ("capacity_ports", "0"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", page.body);
    assert!(page.body.contains("class=\"field invalid\""), "{}", page.body);
    assert!(page.body.contains("value=\"127.0.0.9\""), "input lost");

    let page = browser
        .post(
            "/configuration/bridges",
            &[
                ("csrf", &csrf),
                ("name", "mcu-1"),
                ("bridge_type", "mcu"),
                ("address", "127.0.0.9"),
                ("protocol", "https"),
                ("username", "api"),
                ("password", "bridge secret"),
                ("capacity_ports", "20"),
                ("enabled", "true"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let location = page.location.unwrap();
    let page = browser.get(&location).await;
    assert!(page.body.contains("Saved: mcu-1 saved."), "{}", page.body);
    let (status, bridge) = daemon.call(Method::GET, "/api/v1/bridges/mcu-1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bridge["capacity_ports"], 20);
    assert_eq!(bridge["password"], "********");

    // Editing without retyping the write-only password keeps it.
    let page = browser.get("/configuration/bridges/mcu-1").await;
    assert!(!page.body.contains("bridge secret"));
    let page = browser
        .post(
            "/configuration/bridges/mcu-1",
            &[
                ("csrf", &csrf),
                ("name", "mcu-1"),
                ("bridge_type", "mcu"),
                ("address", "127.0.0.10"),
                ("protocol", "https"),
                ("username", "api"),
                ("password", ""),
                ("capacity_ports", "20"),
                ("enabled", "true"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, log) = daemon.call(Method::GET, "/api/v1/logs/configuration?kind=bridge", None).await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(entries[0]["actor"], "admin");
    // The password did not change: the before and after values are both the placeholder,
    // and the API still holds a stored one.
    assert_eq!(entries[0]["before"]["password"], entries[0]["after"]["password"]);
    let page = browser.get("/logs/configuration?kind=bridge").await;
    assert!(page.body.contains("127.0.0.10"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_without_the_sessions_csrf_token_are_refused_and_change_nothing() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let bridge = [
        ("name", "mcu-1"),
        ("bridge_type", "mcu"),
        ("address", "127.0.0.9"),
        ("username", "api"),
        ("capacity_ports", "20"),
    ];
    let page = browser.post("/configuration/bridges", &bridge).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let mut wrong = bridge.to_vec();
    wrong.push(("csrf", "0000"));
    let page = browser.post("/configuration/bridges", &wrong).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // Another session's token is wrong for this one.
    let mut other = Browser::new(&daemon);
    other.log_in(NEW_PASSWORD).await;
    let other_csrf = other.csrf("/status").await;
    let mut foreign = bridge.to_vec();
    foreign.push(("csrf", &other_csrf));
    let page = browser.post("/configuration/bridges", &foreign).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser.post("/system/dns", &[("servers", "192.0.2.53")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser.post("/logout", &[]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges, Value::Array(vec![]));
    let (status, _) = daemon.call(Method::GET, "/api/v1/dns", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Still signed in: the refused logout did nothing either.
    let page = browser.get("/status").await;
    assert_eq!(page.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_local_pages_say_so_and_the_clustering_page_shows_this_system() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let csrf = browser.csrf("/system/ipv4").await;
    let page = browser.get("/system/ipv4").await;
    assert!(page.body.contains("apply to this peer only"), "{}", page.body);
    let page = browser
        .post(
            "/system/ipv4",
            &[
                ("csrf", &csrf),
                ("address", "127.0.0.1"),
                ("prefix_length", "8"),
                ("gateway", "127.0.0.254"),
                ("additional_addresses", "[]"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page =
        browser.post("/system/clustering", &[("csrf", &csrf), ("peer_1", "not an address")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("value=\"not an address\""), "{}", page.body);
    let page = browser.get("/system/clustering").await;
    assert!(page.body.contains("Cluster pre-shared key"), "{}", page.body);
    assert!(page.body.contains("Peer 3 IP address"));
    let page = browser.get("/history").await;
    assert!(page.body.contains("Show configuration at this time"), "{}", page.body);
    let page = browser.get("/logs/events?level=warning").await;
    assert_eq!(page.status, StatusCode::OK);
    let page = browser.get("/logs/events?level=loud").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_are_chosen_from_existing_records_in_order() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    // Without bridges the pool form says to add one first.
    let page = browser.get("/configuration/bridge-pools").await;
    assert!(page.body.contains("There are no bridges yet"), "{}", page.body);
    for name in ["mcu-1", "mcu-2"] {
        let bridge = serde_json::json!({
            "name": name, "bridge_type": "mcu", "address": "127.0.0.9", "username": "api",
            "capacity_ports": 20,
        });
        let (status, body) = daemon.call(Method::POST, "/api/v1/bridges", Some(bridge)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let page = browser.get("/configuration/bridge-pools").await;
    assert!(
        page.body.contains("<label for=\"field-bridges-1\">Bridge 1</label><select id=\"field-bridges-1\" name=\"bridges\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("<option value=\"mcu-2\">mcu-2</option>"), "{}", page.body);

    // The order of the selects is the list's order; empty ones are left out.
    let csrf = browser.csrf("/configuration/bridge-pools").await;
    let page = browser
        .post(
            "/configuration/bridge-pools",
            &[
                ("csrf", &csrf),
                ("name", "pool-1"),
                ("bridge_type", "mcu"),
                ("bridges", "mcu-2"),
                ("bridges", ""),
                ("bridges", "mcu-1"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let (_, pool) = daemon.call(Method::GET, "/api/v1/bridge-pools/pool-1", None).await;
    assert_eq!(pool["bridges"], serde_json::json!(["mcu-2", "mcu-1"]));
    let page = browser.get("/configuration/bridge-pools/pool-1").await;
    assert!(page.body.contains("<option value=\"mcu-2\" selected>"), "{}", page.body);
    // Two spare selects after the chosen entries, to add more.
    assert!(page.body.contains("id=\"field-bridges-4\""), "{}", page.body);

    // A single reference: the template's service preference.
    let (status, body) = daemon
        .call(
            Method::POST,
            "/api/v1/service-preferences",
            Some(serde_json::json!({"name": "pref-1", "bridge_type": "mcu", "pools": ["pool-1"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let page = browser.get("/configuration/conference-templates").await;
    assert!(
        page.body.contains("<select id=\"field-service_preference\" name=\"service_preference\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("<option value=\"pref-1\">pref-1</option>"), "{}", page.body);
    // A name that is not a record is still refused by the model (the select is no rule).
    let page = browser
        .post(
            "/configuration/conference-templates",
            &[
                ("csrf", &csrf),
                ("name", "meeting"),
                ("conference_type", "meeting"),
                ("service_preference", "no-such-preference"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", page.body);
    assert!(page.body.contains("no-such-preference (no longer exists)"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_form_shows_the_members_fingerprint_and_a_refused_join_changes_nothing() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let page = browser.get("/system/clustering").await;
    for id in ["join-member-url", "join-password", "join-key"] {
        assert!(page.body.contains(&format!("<label for=\"{id}\">")), "{id} has no label");
    }
    let csrf = browser.csrf("/system/clustering").await;
    let join = |url: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("member_url".to_owned(), url.to_owned()),
            ("password".to_owned(), NEW_PASSWORD.to_owned()),
            ("pre_shared_key".to_owned(), "a long pre-shared key".to_owned()),
        ]
    };
    let page = browser.post_pairs("/system/clustering/join", &join("http://127.0.0.1")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("must look like https://"), "{}", page.body);
    let page = browser.post_pairs("/system/clustering/join", &join("https://127.0.0.1:1")).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("cannot be reached"), "{}", page.body);

    // This daemon stands in for the member: the page shows the fingerprint Status shows.
    let status = browser.get("/status").await.body;
    let marker = "<code id=\"certificate-fingerprint\">";
    let start = status.find(marker).unwrap() + marker.len();
    let fingerprint = status[start..].split('<').next().unwrap().to_owned();
    let page = browser.post_pairs("/system/clustering/join", &join(&daemon.url)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(&format!(
            "<code id=\"member-fingerprint\" class=\"fingerprint\">{fingerprint}</code>"
        )),
        "{}",
        page.body
    );
    let marker = "name=\"id\" value=\"";
    let start = page.body.find(marker).unwrap() + marker.len();
    let id = page.body[start..].split('"').next().unwrap().to_owned();
    let confirm =
        |id: &str| vec![("csrf".to_owned(), csrf.clone()), ("id".to_owned(), id.to_owned())];
    let page = browser.post_pairs("/system/clustering/join/confirm", &confirm("not-the-id")).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    // Confirmed, but this peer has no IPv4 address: refused before anything is changed.
    let page = browser.post_pairs("/system/clustering/join/confirm", &confirm(&id)).await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    assert!(page.body.contains("Not joined: this peer has no IPv4 address yet"), "{}", page.body);
    let (status, _) = daemon.call(Method::GET, "/api/v1/cluster", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The check is used up.
    let page = browser.post_pairs("/system/clustering/join/confirm", &confirm(&id)).await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("no longer waiting"), "{}", page.body);
}

/// Every visible form control on the main pages has a label naming it (`<label for=id>`), so
/// screen readers announce it and a click on the label reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_control_has_a_label() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let pages = [
        "/status",
        "/password",
        "/system/clustering",
        "/system/ntp",
        "/system/certificates",
        "/configuration/bridges",
        "/configuration/bridge-pools",
        "/configuration/service-preferences",
        "/configuration/conference-templates",
        "/configuration/conference-aliases",
        "/maintenance/backup",
        "/maintenance/upgrade",
        "/maintenance/restart",
        "/maintenance/reboot",
        "/logs/events",
        "/logs/configuration",
        "/history",
    ];
    for path in pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        let mut controls = 0;
        for tag in ["<input", "<select", "<textarea"] {
            for (start, _) in page.body.match_indices(tag) {
                let element = &page.body[start..];
                let element = &element[..element.find('>').unwrap()];
                if element.contains("type=\"hidden\"") {
                    continue;
                }
                controls += 1;
                let id = element
                    .split("id=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_else(|| panic!("{path}: a control without an id: {element}"));
                assert!(
                    page.body.contains(&format!("<label for=\"{id}\"")),
                    "{path}: no label for {element}"
                );
            }
        }
        let forms_expected =
            !matches!(path, "/status" | "/maintenance/restart" | "/maintenance/reboot");
        assert!(controls > 0 || !forms_expected, "{path} has no form controls");
    }
}

/// The seed: take a backup before joining; and when a peer leaves a cluster, delete its
/// conference bridge entries so that two systems do not drive the same bridges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clustering_page_recommends_a_backup_and_can_leave_without_the_bridges() {
    let daemon = TestDaemon::start().await;
    let mut browser = signed_in(&daemon).await;
    let page = browser.get("/system/clustering").await;
    assert!(page.body.contains("take a backup of this peer before adding it to a cluster"));
    assert!(page.body.contains("href=\"/maintenance/backup\""), "{}", page.body);
    assert!(!page.body.contains("delete_bridges"), "offered while standalone");

    for (path, body) in [
        (
            "/api/v1/ipv4",
            json!({"address": "127.0.0.1", "prefix_length": 8, "gateway": "127.0.0.254"}),
        ),
        ("/api/v1/system-name", json!({"host_name": "peer-1", "domain": "example.test"})),
        ("/api/v1/dns", json!({"servers": ["127.0.0.53"]})),
        ("/api/v1/ntp", json!({"servers": ["127.0.0.123"]})),
        ("/api/v1/licence", json!({"release_key": "ABCD-1234-EFGH", "edition": "full"})),
        (
            "/api/v1/cluster",
            json!({"pre_shared_key": "a long pre-shared key", "peers": ["127.0.0.1"]}),
        ),
    ] {
        let (status, answer) = daemon.call(Method::PUT, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
    }
    let bridge = json!({"name": "mcu1", "bridge_type": "mcu", "address": "127.0.0.9",
                        "username": "api", "password": "secret", "capacity_ports": 10});
    let (status, _) = daemon.call(Method::POST, "/api/v1/bridges", Some(bridge)).await;
    assert_eq!(status, StatusCode::CREATED);

    let csrf = browser.csrf("/system/clustering").await;
    let page = browser.get("/system/clustering").await;
    assert!(page.body.contains("name=\"delete_bridges\""), "{}", page.body);
    // Still clustered after the save: nothing is deleted (it would replicate).
    let still = [("csrf", csrf.as_str()), ("peer_1", "127.0.0.1"), ("delete_bridges", "1")];
    let page = browser.post("/system/clustering", &still).await;
    assert_eq!(page.location.as_deref(), Some("/system/clustering?saved=1"), "{}", page.body);
    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges.as_array().map(Vec::len), Some(1));

    let leave = [("csrf", csrf.as_str()), ("clear_pre_shared_key", "1"), ("delete_bridges", "1")];
    let page = browser.post("/system/clustering", &leave).await;
    let location = page.location.clone().unwrap_or_default();
    assert_eq!(location, "/system/clustering?saved=1&bridges_deleted=1", "{}", page.body);
    let (_, bridges) = daemon.call(Method::GET, "/api/v1/bridges", None).await;
    assert_eq!(bridges, Value::Array(vec![]));
    let page = browser.get(&location).await;
    assert!(page.body.contains("its 1 conference bridge entries were deleted"), "{}", page.body);
}

/// The count in the header's alarms link ("3 alarms").
fn header_alarm_count(page: &Page) -> u64 {
    let marker = "href=\"/status/alarms\">";
    let start = page.body.find(marker).expect("the header's alarms link") + marker.len();
    page.body[start..].split(' ').next().unwrap().parse().unwrap()
}

// Goal: every page's header counts the unacknowledged alarms and links to Status > Alarms,
// which lists each with what to do; acknowledging one there (CSRF-checked) lowers the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_counts_alarms_and_the_alarms_page_acknowledges_them() {
    let recording = platform::RecordingPlatform::new();
    recording.fail(platform::Concern::Ntp, "chronyc refused the servers");
    let daemon = TestDaemon::start_with(tempfile::tempdir().unwrap(), |config| {
        config.platform = Some(std::sync::Arc::new(recording.clone()))
    })
    .await;
    // The factory account's own pages show the alarm about its password.
    let mut factory = Browser::new(&daemon);
    factory.log_in("TANDBERG").await;
    // The first evaluation runs right after the start, behind the listener.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    while header_alarm_count(&factory.get("/password").await) == 0 {
        assert!(std::time::Instant::now() < deadline, "no alarm about the factory password");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let mut browser = signed_in(&daemon).await;
    let expected = loop {
        let (_, body) = daemon.call(Method::GET, "/api/v1/alarms", None).await;
        let ids: Vec<&str> =
            body["alarms"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        if ids.contains(&"os_setting_failed") && !ids.contains(&"factory_password") {
            break body["unacknowledged"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "alarms never settled: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for path in ["/status", "/configuration/bridges", "/logs/events"] {
        assert_eq!(header_alarm_count(&browser.get(path).await), expected, "{path}");
    }
    let page = browser.get("/status/alarms").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("An operating-system setting could not be applied"),
        "{}",
        page.body
    );
    assert!(page.body.contains("chronyc refused the servers"));
    let csrf = browser.csrf("/status/alarms").await;
    let form = [("csrf", csrf.as_str()), ("id", "os_setting_failed"), ("subject", "ntp")];
    let page = browser.post("/status/alarms/acknowledge", &form).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = browser.get("/status/alarms").await;
    assert_eq!(header_alarm_count(&page), expected - 1);
    assert!(page.body.contains("Acknowledged by admin"), "{}", page.body);
    daemon.stop().await;
}

// Goal: Maintenance > Restart options says configuration changes never need a restart, offers
// Restart, Reboot and Shutdown, and runs one only once confirmed (CSRF-checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_options_are_confirmed_before_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("shutdown-requested");
    let command = vec!["touch".to_owned(), mark.display().to_string()];
    let daemon = TestDaemon::start_with(dir, move |config| {
        config.upgrade.shutdown_command = command;
    })
    .await;
    let mut browser = signed_in(&daemon).await;
    let page = browser.get("/maintenance/restart").await;
    assert!(
        page.body.contains("Configuration changes never need a restart, a reboot or a shutdown"),
        "{}",
        page.body
    );
    for action in ["/maintenance/restart-service", "/maintenance/reboot", "/maintenance/shutdown"] {
        assert!(page.body.contains(&format!("action=\"{action}\"")), "{action}");
    }
    let question = browser.get("/maintenance/shutdown").await;
    assert!(question.body.contains("Shut this peer down now?"), "{}", question.body);
    assert!(!mark.exists(), "asking runs nothing");
    let refused = browser.post("/maintenance/shutdown", &[("confirm", "yes")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!mark.exists(), "a form without the CSRF token runs nothing");
    let csrf = browser.csrf("/maintenance/shutdown").await;
    let done = browser.post("/maintenance/shutdown", &[("csrf", &csrf), ("confirm", "yes")]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Shutting down"), "{}", done.body);
    assert!(mark.exists(), "the shutdown command ran");
    daemon.stop().await;
}

// Goal: an unknown page answers a 404 page inside the layout (a browser never sees the API's
// raw JSON), while an unknown API path keeps its JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pages_answer_an_html_404_in_the_layout() {
    let daemon = TestDaemon::start().await;
    let mut anonymous = Browser::new(&daemon);
    let page = anonymous.get("/no/such/page").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.starts_with("<!doctype html>"), "{}", page.body);
    assert!(page.body.contains("There is no page at this address"), "{}", page.body);
    let mut browser = signed_in(&daemon).await;
    let page = browser.get("/status/nothing-here").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("<nav aria-label=\"Main\">"), "signed in: the navigation");
    let (status, body) = daemon.call(Method::GET, "/api/v1/no-such-thing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    daemon.stop().await;
}

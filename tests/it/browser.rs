//! The web interface in a real browser (headless Chromium through chromedriver) against real
//! `batond` processes: log in, change the factory password, add a bridge and the chain up to a
//! template and an alias (references picked from dropdowns), see them in the Configuration
//! Log, a refused form, a form without its CSRF token, keyboard reachability, the serial on
//! Status, a backup downloaded and restored through the Backup page after its preview, an
//! upgrade image refused with a clear message, and a two-peer cluster formed by the one-flow
//! join from the new peer's Clustering page (the member's certificate fingerprint compared
//! with its Status page) with both peers showing "Active", and the Status page and a bridge's
//! page fitting a 1280-pixel window. Screenshots of the main pages go to
//! `target/screenshots/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). On a
//! workstation without them the tests say so and pass; under CI they must be there.

use crate::cluster::{KEY, Peer, SETTLE_TIMEOUT_MS};
use baton_tests::webdriver::{self, Browser, TAB};
use baton_tests::{Batond, TEST_PASSWORD, free_port};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn browser() -> Option<Browser> {
    match webdriver::chromium_installed() {
        Some((driver, chromium)) => Some(Browser::start(&driver, &chromium).unwrap()),
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium and chromium-driver must be installed under CI (.ci/run does it)")
        }
        None => {
            eprintln!("skipped: /usr/bin/chromium and /usr/bin/chromedriver are not installed");
            None
        }
    }
}

/// The size of the upgrade image uploaded with its progress shown, and the upload speed.
const UPLOAD_BYTES: usize = 3 * 1024 * 1024;
const UPLOAD_BYTES_PER_S: u64 = 1024 * 1024;

/// The hardware serial the first test's daemon is given.
const SERIAL: &str = "BROWSER-SERIAL-1";

fn shots() -> PathBuf {
    webdriver::screenshot_dir().unwrap()
}

fn log_in(browser: &Browser, url: &str, password: &str) {
    browser.goto(&format!("{url}/login")).unwrap();
    browser.fill("#username", "admin").unwrap();
    browser.fill("#password", password).unwrap();
    browser.click("main button[type=submit]").unwrap();
    // Signed in once the header names the user (the next navigation would cut the login short).
    assert_page_has(browser, "Signed in as admin");
}

/// Waits for the page (which may still be loading after a click) to contain `text`.
fn assert_page_has(browser: &Browser, text: &str) {
    let deadline = Instant::now() + Duration::from_millis(webdriver::FIND_TIMEOUT_MS);
    loop {
        let source = browser.source().unwrap_or_default();
        if source.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "page lacks {text:?}:\n{source}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for a finished download (not Chromium's `.crdownload`) in `dir`.
fn downloaded(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + Duration::from_millis(webdriver::FIND_TIMEOUT_MS);
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| !path.to_string_lossy().ends_with(".crdownload"))
            .collect();
        if let [file] = files.as_slice() {
            return file.clone();
        }
        assert!(Instant::now() < deadline, "no download in {}: {files:?}", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fills the add form of a configuration page: text fields, then selects, then submits.
fn add(
    browser: &Browser,
    url: &str,
    collection: &str,
    texts: &[(&str, &str)],
    selects: &[(&str, &str)],
) {
    browser.goto(&format!("{url}/configuration/{collection}")).unwrap();
    for (field, value) in texts {
        browser.fill(&format!("#field-{field}"), value).unwrap();
    }
    for (field, value) in selects {
        browser.select(&format!("#field-{field}"), value).unwrap();
    }
    browser.click("form.record button[type=submit]").unwrap();
}

#[test]
fn an_operator_configures_a_peer_in_the_browser() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    let trusted = upgrade::generate_signing_key().unwrap();
    let keys = dir.path().join("trusted.pub");
    std::fs::write(&keys, upgrade::public_key_to_text(&trusted.verifying_key())).unwrap();
    let args = ["--upgrade-trusted-keys-file".to_owned(), keys.display().to_string()];
    let daemon =
        Batond::start_with_env(&data, "127.0.0.1", &args, &[("BATON_HARDWARE_SERIAL", SERIAL)])
            .unwrap();
    let url = daemon.url.clone();
    let shots = shots();

    // The login page is usable from the keyboard: Tab moves from field to field to the button.
    browser.goto(&format!("{url}/login")).unwrap();
    browser.screenshot(&shots, "01-login").unwrap();
    browser.click("#username").unwrap();
    browser.keys(TAB).unwrap();
    assert_eq!(browser.focused_attribute("id").unwrap(), "password");
    browser.keys(TAB).unwrap();
    assert_eq!(browser.focused_attribute("type").unwrap(), "submit");

    log_in(&browser, &url, "TANDBERG");
    assert_page_has(&browser, "factory default password");
    browser.screenshot(&shots, "02-password-change").unwrap();
    browser.fill("#current_password", "TANDBERG").unwrap();
    browser.fill("#new_password", TEST_PASSWORD).unwrap();
    browser.click("main button[type=submit]").unwrap();
    assert_page_has(&browser, "Saved: password changed");

    add(
        &browser,
        &url,
        "bridges",
        &[
            ("name", "mcu-1"),
            ("address", "127.0.0.9"),
            ("username", "api"),
            ("password", "bridge secret"),
            ("capacity_ports", "20"),
        ],
        &[("bridge_type", "mcu")],
    );
    assert_page_has(&browser, "Saved: mcu-1 saved.");
    browser.screenshot(&shots, "03-bridges").unwrap();

    // A refused form (the model's rule: capacity at least 1): the error is next to the field
    // and the typed values stay.
    add(
        &browser,
        &url,
        "bridges",
        &[
            ("name", "mcu-2"),
            ("address", "127.0.0.10"),
            ("username", "api"),
            ("capacity_ports", "0"),
        ],
        &[("bridge_type", "mcu")],
    );
    assert_page_has(&browser, "Not saved: correct the fields marked below.");
    assert_page_has(&browser, "<div class=\"field invalid\"><label for=\"field-capacity_ports\">");
    assert_page_has(&browser, "value=\"mcu-2\"");
    assert_page_has(&browser, "value=\"127.0.0.10\"");
    browser.screenshot(&shots, "04-form-error").unwrap();

    // References are picked from dropdowns of the existing records.
    add(
        &browser,
        &url,
        "bridge-pools",
        &[("name", "pool-1")],
        &[("bridge_type", "mcu"), ("bridges-1", "mcu-1")],
    );
    assert_page_has(&browser, "Saved: pool-1 saved.");
    add(
        &browser,
        &url,
        "service-preferences",
        &[("name", "pref-1")],
        &[("bridge_type", "mcu"), ("pools-1", "pool-1")],
    );
    assert_page_has(&browser, "Saved: pref-1 saved.");
    browser.goto(&format!("{url}/configuration/conference-templates")).unwrap();
    browser.screenshot(&shots, "05-template-dropdown").unwrap();
    add(
        &browser,
        &url,
        "conference-templates",
        &[("name", "meeting"), ("max_participants", "10")],
        &[("conference_type", "meeting"), ("service_preference", "pref-1")],
    );
    assert_page_has(&browser, "Saved: meeting saved.");
    assert_page_has(&browser, "<td>meeting</td><td>pref-1</td><td>10</td>");
    browser.screenshot(&shots, "05-templates").unwrap();
    add(
        &browser,
        &url,
        "conference-aliases",
        &[
            ("name", "meet"),
            ("pattern", r"meet\.(.+)@example\.com"),
            ("conference_name", "meeting-$1"),
            ("priority", "10"),
        ],
        &[("role", "chair"), ("template", "meeting")],
    );
    assert_page_has(&browser, "Saved: meet saved.");

    // The form without its CSRF token is refused and adds nothing.
    browser.goto(&format!("{url}/configuration/locations")).unwrap();
    browser.fill("#field-name", "oslo").unwrap();
    browser.execute("document.querySelector('form.record input[name=csrf]').remove()").unwrap();
    browser.click("form.record button[type=submit]").unwrap();
    assert_page_has(&browser, "security token");
    browser.goto(&format!("{url}/configuration/locations")).unwrap();
    assert_page_has(&browser, "None yet.");

    browser.goto(&format!("{url}/logs/configuration")).unwrap();
    for name in ["mcu-1", "pool-1", "pref-1", "meeting", "meet"] {
        assert_page_has(&browser, &format!("<td>{name}</td>"));
    }
    browser.screenshot(&shots, "06-configuration-log").unwrap();
    browser.goto(&format!("{url}/logs/configuration?kind=conference_alias")).unwrap();
    // Read once the page is there (a source read too early can come back empty).
    assert_page_has(&browser, "<td>meet</td>");
    let source = browser.source().unwrap();
    assert!(!source.contains("<td>mcu-1</td>"), "{source}");

    browser.goto(&format!("{url}/status")).unwrap();
    assert_page_has(&browser, &format!("<td>{SERIAL}</td>"));
    for (path, name) in [
        ("/status", "07-status"),
        ("/logs/events", "08-event-log"),
        ("/history", "09-history"),
        ("/system/ntp", "10-time"),
        ("/system/clustering", "11-clustering-standalone"),
        ("/maintenance/upgrade", "16-upgrade"),
        ("/maintenance/restart", "17-restart-options"),
    ] {
        browser.goto(&format!("{url}{path}")).unwrap();
        browser.screenshot(&shots, name).unwrap();
    }
    assert_page_has(&browser, "Configuration changes never need a restart");
    browser.goto(&format!("{url}/system/clustering")).unwrap();
    assert_page_has(&browser, "apply to this peer only");
    browser.goto(&format!("{url}/system/ntp")).unwrap();
    assert_page_has(&browser, "NTP synchronisation:");

    // A backup downloaded from the Backup page...
    browser.allow_downloads(&downloads).unwrap();
    browser.goto(&format!("{url}/maintenance/backup")).unwrap();
    browser.screenshot(&shots, "18-backup").unwrap();
    browser.click("form[action=\"/maintenance/backup/download\"] button").unwrap();
    let backup = downloaded(&downloads);
    assert!(backup.to_string_lossy().ends_with("_backup.tar.gz"), "{}", backup.display());
    // ...the alias deleted after it...
    browser.goto(&format!("{url}/configuration/conference-aliases")).unwrap();
    browser.click("button[aria-label=\"Delete meet\"]").unwrap();
    assert_page_has(&browser, "Saved: meet deleted.");
    // ...and the backup uploaded (with the script's progress bar): the page says what would
    // change, and only the confirmation restores it.
    browser.goto(&format!("{url}/maintenance/backup")).unwrap();
    browser.choose_file("#restore-file", &backup).unwrap();
    browser.click("form[action=\"/maintenance/restore\"] button[type=submit]").unwrap();
    assert_page_has(&browser, "What the restore would change");
    assert_page_has(&browser, "<td>conference_alias</td><td>meet</td><td>added: ");
    browser.screenshot(&shots, "19-restore-preview").unwrap();
    let aliases = || {
        let response = daemon
            .client()
            .unwrap()
            .get(format!("{url}/api/v1/conference-aliases"))
            .basic_auth("admin", Some(TEST_PASSWORD))
            .send()
            .unwrap();
        response.json::<serde_json::Value>().unwrap().as_array().unwrap().len()
    };
    assert_eq!(aliases(), 0, "the preview changed the configuration");
    browser.click("#confirm-restore").unwrap();
    assert_page_has(&browser, "Saved: backup restored");
    browser.screenshot(&shots, "20-restored").unwrap();
    assert_eq!(aliases(), 1);

    // An image signed by a key this peer does not trust is refused, saying why. The upload is
    // slowed down so its progress bar can be seen moving.
    let image = dir.path().join("foreign.img");
    std::fs::write(&image, crate::web_maintenance::foreign_image_of(UPLOAD_BYTES)).unwrap();
    browser.goto(&format!("{url}/maintenance/upgrade")).unwrap();
    browser.choose_file("#upgrade-file", &image).unwrap();
    browser.throttle_uploads(Some(UPLOAD_BYTES_PER_S)).unwrap();
    browser.click("form[action=\"/maintenance/upgrade\"] button[type=submit]").unwrap();
    let deadline = Instant::now() + Duration::from_millis(webdriver::FIND_TIMEOUT_MS);
    loop {
        let shown = browser
            .execute(
                "const bar = document.querySelector('.upload-progress progress'); \
                 return bar && !bar.closest('.upload-progress').hidden ? bar.value / bar.max : -1;",
            )
            .unwrap();
        let fraction = shown.as_f64().unwrap_or(-1.0);
        if fraction > 0.0 && fraction < 1.0 {
            assert_page_has(&browser, "% uploaded");
            browser.screenshot(&shots, "22-upgrade-upload-progress").unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "no upload progress shown ({shown})");
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.throttle_uploads(None).unwrap();
    assert_page_has(&browser, "Upgrade refused: the image is signed by key");
    assert_page_has(&browser, "which this software does not trust");
    browser.screenshot(&shots, "21-upgrade-refused").unwrap();
}

/// Reloads the Clustering page of `url` until it shows `text`, logging in again if a join
/// briefly left the peer without the cluster's administrator.
/// The width the Status page must fit without horizontal scrolling.
const WINDOW_WIDTH_PX: u32 = 1280;

/// The Status page fits a 1280-pixel window even with its longest values: the certificate
/// fingerprint, and a bridge with a long name and address refused for its certificate.
#[test]
fn the_status_page_fits_a_1280_pixel_window() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Batond::start(dir.path()).unwrap();
    daemon.change_factory_password().unwrap();
    let long_name = "bridge-with-a-rather-long-name-in-the-east-wing-datacentre-rk42";
    let bridge = serde_json::json!({"name": long_name, "bridge_type": "mcu",
        "address": "mcu-east-wing-datacentre-rack-42.conferencing.example.com:65000",
        "username": "api", "capacity_ports": 40,
        "pinned_sha256": (["AB"; 32].join(":"))});
    let answer = daemon
        .client()
        .unwrap()
        .post(format!("{}/api/v1/bridges", daemon.url))
        .basic_auth("admin", Some(TEST_PASSWORD))
        .json(&bridge)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().unwrap());
    log_in(&browser, &daemon.url, TEST_PASSWORD);
    browser.set_window_size(WINDOW_WIDTH_PX, 1024).unwrap();
    for path in ["/status", &format!("/configuration/bridges/{long_name}")] {
        browser.goto(&format!("{}{path}", daemon.url)).unwrap();
        assert_page_has(&browser, "</main>");
        let inner = browser.execute("return window.innerWidth").unwrap();
        let scroll = browser.execute("return document.documentElement.scrollWidth").unwrap();
        let scroll = scroll.as_u64().unwrap();
        assert!(inner.as_u64().unwrap() <= u64::from(WINDOW_WIDTH_PX), "{path}: viewport {inner}");
        assert!(scroll <= u64::from(WINDOW_WIDTH_PX), "{path} is {scroll} px wide");
    }
    browser.goto(&format!("{}/status", daemon.url)).unwrap();
    browser.screenshot(&shots(), "18-status-1280").unwrap();
}

fn wait_for_line(browser: &Browser, url: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    loop {
        browser.goto(&format!("{url}/system/clustering")).unwrap();
        let source = browser.source().unwrap();
        if source.contains(text) {
            return;
        }
        if source.contains("id=\"username\"") {
            log_in(browser, url, TEST_PASSWORD);
        }
        assert!(Instant::now() < deadline, "{url} never showed {text:?}:\n{source}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_two_peer_cluster_formed_by_the_one_flow_join_shows_both_active() {
    let Some(browser) = browser() else { return };
    let port = free_port().unwrap();
    let (dir_1, dir_2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Each peer is prepared as the seed's Task 1 asks (through the API, which the other test
    // shows the pages share): password, IPv4, system name, DNS, NTP, licence.
    let first = Peer::start(dir_1.path(), "127.0.0.1", port, &[]).unwrap();
    let second = Peer::start(dir_2.path(), "127.0.0.2", port, &[]).unwrap();
    let (url_1, url_2) = (first.daemon.url.clone(), second.daemon.url.clone());

    // The operator reads the member's certificate fingerprint on its Status page...
    log_in(&browser, &url_1, TEST_PASSWORD);
    browser.goto(&format!("{url_1}/status")).unwrap();
    let member_fingerprint = browser.text("#certificate-fingerprint").unwrap();
    assert_eq!(member_fingerprint.len(), 32 * 3 - 1, "{member_fingerprint}");

    // ...and joins from the new peer in one flow. A wrong-looking address is refused first.
    log_in(&browser, &url_2, TEST_PASSWORD);
    browser.goto(&format!("{url_2}/system/clustering")).unwrap();
    browser.fill("#join-member-url", "http://127.0.0.1").unwrap();
    browser.fill("#join-password", TEST_PASSWORD).unwrap();
    browser.fill("#join-key", KEY).unwrap();
    browser.click("form[action=\"/system/clustering/join\"] button").unwrap();
    assert_page_has(&browser, "the member URL must look like https://address[:port]");
    browser.fill("#join-member-url", &url_1).unwrap();
    browser.fill("#join-password", TEST_PASSWORD).unwrap();
    browser.fill("#join-key", KEY).unwrap();
    browser.screenshot(&shots(), "12-join-form").unwrap();
    browser.click("form[action=\"/system/clustering/join\"] button").unwrap();
    assert_page_has(&browser, "presents a certificate with this SHA-256 fingerprint");
    assert_eq!(browser.text("#member-fingerprint").unwrap(), member_fingerprint);
    browser.screenshot(&shots(), "13-join-check-fingerprint").unwrap();
    browser.click("#confirm-join").unwrap();
    let deadline = Instant::now() + Duration::from_millis(SETTLE_TIMEOUT_MS);
    loop {
        let source = browser.source().unwrap_or_default();
        if source.contains("Saved: this peer joined the cluster") {
            break;
        }
        assert!(!source.contains("Not joined"), "{source}");
        assert!(Instant::now() < deadline, "no answer:\n{source}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_page_has(&browser, "The member was standalone: the cluster was founded on it first.");
    assert_page_has(&browser, "<span class=\"ok\">Active as peer-1</span>");
    browser.screenshot(&shots(), "14-joined").unwrap();

    wait_for_line(&browser, &url_1, "Active as peer-2");
    assert_page_has(&browser, "<span class=\"ok\">This system</span>");
    browser.screenshot(&shots(), "15-clustering-peer-1").unwrap();
    wait_for_line(&browser, &url_2, "Active as peer-1");
    browser.goto(&format!("{url_2}/status")).unwrap();
    assert_page_has(&browser, "Active as peer-1");
    browser.screenshot(&shots(), "15-status-clustered").unwrap();
    // A clustered peer offers no join form, and its Backup page says restores are refused.
    browser.goto(&format!("{url_2}/system/clustering")).unwrap();
    assert!(!browser.source().unwrap().contains("id=\"join-member-url\""));
    browser.goto(&format!("{url_2}/maintenance/backup")).unwrap();
    assert_page_has(&browser, "This peer is in a cluster: a restore is refused");
}

fn log_in_as(browser: &Browser, url: &str, user: &str, password: &str) {
    browser.goto(&format!("{url}/login")).unwrap();
    browser.fill("#username", user).unwrap();
    browser.fill("#password", password).unwrap();
    browser.click("main button[type=submit]").unwrap();
    assert_page_has(browser, &format!("Signed in as {user}"));
}

// Goal: Users > Administrator accounts adds a read-only account, which then sees the pages
// but has every form refused with a clear message; the last full administrator cannot be
// made read-only; an account is removed from its row.
#[test]
fn administrator_accounts_and_a_read_only_one_in_the_browser() {
    let Some(browser) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Batond::start_with_env(dir.path(), "127.0.0.1", &[], &[]).unwrap();
    let url = daemon.url.clone();
    log_in(&browser, &url, "TANDBERG");
    browser.fill("#current_password", "TANDBERG").unwrap();
    browser.fill("#new_password", TEST_PASSWORD).unwrap();
    browser.click("main button[type=submit]").unwrap();
    assert_page_has(&browser, "Saved: password changed");

    browser.goto(&format!("{url}/users/administrators")).unwrap();
    browser.fill("#new-name", "auditor").unwrap();
    browser.fill("#new-password", "auditor password").unwrap();
    browser.select("#new-role", "read_only").unwrap();
    browser.click("form.record button[type=submit]").unwrap();
    assert_page_has(&browser, "Saved: auditor added.");
    assert_page_has(&browser, "<td>auditor</td><td>Read-only");
    browser.screenshot(&shots(), "20-administrator-accounts").unwrap();
    browser.select("#role-admin", "read_only").unwrap();
    browser.click("form[action='/users/administrators/admin'] button").unwrap();
    assert_page_has(&browser, "cannot be made read-only");
    browser.click("form.logout button").unwrap();

    log_in_as(&browser, &url, "auditor", "auditor password");
    assert_page_has(&browser, "Signed in as auditor (read-only)");
    add(&browser, &url, "locations", &[("name", "nowhere")], &[]);
    assert_page_has(&browser, "Refused: this account is read-only");
    browser.goto(&format!("{url}/configuration/locations")).unwrap();
    assert_page_has(&browser, "None yet.");
    browser.click("form.logout button").unwrap();

    log_in(&browser, &url, TEST_PASSWORD);
    browser.goto(&format!("{url}/users/administrators")).unwrap();
    browser.click("form[action='/users/administrators/auditor/delete'] button").unwrap();
    assert_page_has(&browser, "Saved: auditor removed.");
    assert!(!browser.source().unwrap().contains("<td>auditor</td>"), "auditor still listed");
}

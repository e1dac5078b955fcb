//! The web interface in a real browser (headless Chromium through chromedriver) against real
//! `batond` processes: log in, change the factory password, add a bridge and the chain up to a
//! template and an alias, see them in the Configuration Log, a refused form, a form without
//! its CSRF token, keyboard reachability, and a two-peer cluster formed from the Clustering
//! pages with both peers showing "Active". Screenshots of the main pages go to
//! `target/screenshots/`.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). On a
//! workstation without them the tests say so and pass; under CI they must be there.

use crate::cluster::{KEY, Peer, SETTLE_TIMEOUT_MS};
use baton_tests::webdriver::{self, Browser, TAB};
use baton_tests::{Batond, TEST_PASSWORD, free_port};
use std::path::PathBuf;
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

fn shots() -> PathBuf {
    webdriver::screenshot_dir().unwrap()
}

fn log_in(browser: &Browser, url: &str, password: &str) {
    browser.goto(&format!("{url}/login")).unwrap();
    browser.fill("#username", "admin").unwrap();
    browser.fill("#password", password).unwrap();
    browser.click("main button[type=submit]").unwrap();
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
    let daemon = Batond::start(dir.path()).unwrap();
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

    add(
        &browser,
        &url,
        "bridge-pools",
        &[("name", "pool-1"), ("bridges", "mcu-1")],
        &[("bridge_type", "mcu")],
    );
    assert_page_has(&browser, "Saved: pool-1 saved.");
    add(
        &browser,
        &url,
        "service-preferences",
        &[("name", "pref-1"), ("pools", "pool-1")],
        &[("bridge_type", "mcu")],
    );
    assert_page_has(&browser, "Saved: pref-1 saved.");
    add(
        &browser,
        &url,
        "conference-templates",
        &[("name", "meeting"), ("max_participants", "10"), ("service_preference", "pref-1")],
        &[("conference_type", "meeting")],
    );
    assert_page_has(&browser, "Saved: meeting saved.");
    browser.screenshot(&shots, "05-templates").unwrap();
    add(
        &browser,
        &url,
        "conference-aliases",
        &[
            ("name", "meet"),
            ("pattern", r"meet\.(.+)@example\.com"),
            ("conference_name", "meeting-$1"),
            ("template", "meeting"),
            ("priority", "10"),
        ],
        &[("role", "chair")],
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
    let source = browser.source().unwrap();
    assert!(source.contains("<td>meet</td>") && !source.contains("<td>mcu-1</td>"), "{source}");

    for (path, name) in [
        ("/status", "07-status"),
        ("/logs/events", "08-event-log"),
        ("/history", "09-history"),
        ("/system/ntp", "10-time"),
        ("/system/clustering", "11-clustering-standalone"),
    ] {
        browser.goto(&format!("{url}{path}")).unwrap();
        browser.screenshot(&shots, name).unwrap();
    }
    assert_page_has(&browser, "apply to this peer only");
}

/// Submits the Clustering page of the peer at `url`.
fn cluster_from_the_page(browser: &Browser, url: &str, peers: &[&str]) {
    browser.goto(&format!("{url}/system/clustering")).unwrap();
    browser.fill("#field-pre_shared_key", KEY).unwrap();
    for (index, peer) in peers.iter().enumerate() {
        browser.fill(&format!("#field-peer_{}", index + 1), peer).unwrap();
    }
    browser.click("form.record button[type=submit]").unwrap();
    // A joining peer may briefly have no administrator (the cluster's has not arrived yet),
    // which sends the browser to the login page instead of the saved page.
    let deadline = Instant::now() + Duration::from_millis(webdriver::FIND_TIMEOUT_MS);
    loop {
        let source = browser.source().unwrap_or_default();
        if source.contains("Saved: Saved peer addresses and key.")
            || source.contains("id=\"username\"")
        {
            return;
        }
        assert!(Instant::now() < deadline, "not saved:\n{source}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reloads the Clustering page of `url` until it shows `text`, logging in again if a join
/// briefly left the peer without the cluster's administrator.
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
fn a_two_peer_cluster_formed_from_the_clustering_pages_shows_both_active() {
    let Some(browser) = browser() else { return };
    let port = free_port().unwrap();
    let (dir_1, dir_2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Each peer is prepared as the seed's Task 1 asks (through the API, which the other test
    // shows the pages share): password, IPv4, system name, DNS, NTP, licence.
    let first = Peer::start(dir_1.path(), "127.0.0.1", port, &[]).unwrap();
    let second = Peer::start(dir_2.path(), "127.0.0.2", port, &[]).unwrap();
    let (url_1, url_2) = (first.daemon.url.clone(), second.daemon.url.clone());

    // As the seed's Task 2: the initial peer founds the cluster with only its own address.
    log_in(&browser, &url_1, TEST_PASSWORD);
    cluster_from_the_page(&browser, &url_1, &["127.0.0.1"]);
    wait_for_line(&browser, &url_1, "This system");
    browser.screenshot(&shots(), "12-clustering-founded").unwrap();
    // Task 3: it accepts the new peer; Task 5: the new peer joins with the same list.
    cluster_from_the_page(&browser, &url_1, &["127.0.0.1", "127.0.0.2"]);
    log_in(&browser, &url_2, TEST_PASSWORD);
    cluster_from_the_page(&browser, &url_2, &["127.0.0.1", "127.0.0.2"]);

    wait_for_line(&browser, &url_1, "Active as peer-2");
    browser.screenshot(&shots(), "13-clustering-peer-1").unwrap();
    wait_for_line(&browser, &url_2, "Active as peer-1");
    assert_page_has(&browser, "<span class=\"ok\">This system</span>");
    assert_page_has(&browser, "<span class=\"ok\">Active as peer-1</span>");
    browser.screenshot(&shots(), "14-clustering-peer-2").unwrap();
    browser.goto(&format!("{url_2}/status")).unwrap();
    assert_page_has(&browser, "Active as peer-1");
    browser.screenshot(&shots(), "15-status-clustered").unwrap();
}

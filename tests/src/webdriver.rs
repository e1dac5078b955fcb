//! A small W3C WebDriver client for the browser tests: starts the system's `chromedriver`,
//! opens a headless Chromium session and offers the few commands the tests use (navigate,
//! find, type, click, read the page, screenshots, the focused element).
//!
//! Written over the blocking `reqwest` client the tests already use rather than pulling in a
//! WebDriver crate and its async HTTP stack: the protocol is a handful of JSON requests.

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver assigns to element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver gets to answer its status check.
pub const DRIVER_START_TIMEOUT_MS: u64 = 20_000;
/// How long to wait for an element to appear.
pub const FIND_TIMEOUT_MS: u64 = 10_000;
/// The Tab key, in WebDriver's key encoding.
pub const TAB: &str = "\u{E004}";

/// The system's chromedriver and chromium, if both are installed (Debian `chromium-driver`).
pub fn chromium_installed() -> Option<(PathBuf, PathBuf)> {
    let driver = PathBuf::from("/usr/bin/chromedriver");
    let browser = PathBuf::from("/usr/bin/chromium");
    (driver.exists() && browser.exists()).then_some((driver, browser))
}

/// A chromedriver process with one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

/// A reference to an element of the current page.
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium that accepts the daemon's
    /// self-signed certificate.
    pub fn start(driver: &Path, chromium: &Path) -> anyhow::Result<Browser> {
        let port = crate::free_port()?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the WebDriver client")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver: child, base, session: String::new(), http };
        let deadline = Instant::now() + Duration::from_millis(DRIVER_START_TIMEOUT_MS);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .ok()
                .and_then(|response| response.json::<Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready within {DRIVER_START_TIMEOUT_MS} ms");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1024"],
            },
        }}});
        let created = browser.command(reqwest::Method::POST, "/session", Some(capabilities))?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id in the new-session answer")?
            .to_owned();
        Ok(browser)
    }

    fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if method == reqwest::Method::POST {
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        let response = request.send().with_context(|| format!("WebDriver {path}"))?;
        let status = response.status();
        let answer: Value = response.json().with_context(|| format!("WebDriver {path} answer"))?;
        if !status.is_success() {
            bail!("WebDriver {path}: {status} {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    fn session_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_command(reqwest::Method::POST, "/url", Some(json!({"url": url})))?;
        Ok(())
    }

    /// The element matching a CSS selector, waiting for it to appear.
    pub fn find(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + Duration::from_millis(FIND_TIMEOUT_MS);
        loop {
            let found = self.session_command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            );
            match found {
                Ok(value) => {
                    let id = value[ELEMENT_KEY].as_str().context("no element reference")?;
                    return Ok(Element(id.to_owned()));
                }
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(format!("finding {css:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Replaces the text of the input matching `css`.
    pub fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        let path = format!("/element/{}", element.0);
        self.session_command(reqwest::Method::POST, &format!("{path}/clear"), None)?;
        self.session_command(
            reqwest::Method::POST,
            &format!("{path}/value"),
            Some(json!({"text": text})),
        )?;
        Ok(())
    }

    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            None,
        )?;
        Ok(())
    }

    /// Chooses `value` in the select matching `css`.
    pub fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.click(&format!("{css} option[value=\"{value}\"]"))
    }

    /// Types keys into whatever has the focus.
    pub fn keys(&self, text: &str) -> anyhow::Result<()> {
        let active = self.session_command(reqwest::Method::GET, "/element/active", None)?;
        let id = active[ELEMENT_KEY].as_str().context("nothing has the focus")?;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )?;
        Ok(())
    }

    /// An attribute of the focused element (`id`, `name`, …).
    pub fn focused_attribute(&self, name: &str) -> anyhow::Result<String> {
        let active = self.session_command(reqwest::Method::GET, "/element/active", None)?;
        let id = active[ELEMENT_KEY].as_str().context("nothing has the focus")?;
        let value = self.session_command(
            reqwest::Method::GET,
            &format!("/element/{id}/attribute/{name}"),
            None,
        )?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    pub fn source(&self) -> anyhow::Result<String> {
        let value = self.session_command(reqwest::Method::GET, "/source", None)?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Sends a file's path to a file input (as choosing it in the file dialog would).
    pub fn choose_file(&self, css: &str, path: &Path) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.session_command(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": path.display().to_string()})),
        )?;
        Ok(())
    }

    /// Lets downloads land in `dir` without asking (Chromium's DevTools command, through
    /// chromedriver).
    pub fn allow_downloads(&self, dir: &Path) -> anyhow::Result<()> {
        self.session_command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Browser.setDownloadBehavior", "params": {
                "behavior": "allow", "downloadPath": dir.display().to_string(),
            }})),
        )?;
        Ok(())
    }

    /// Limits the page's upload speed (DevTools network emulation), so progress can be seen;
    /// `None` lifts the limit.
    pub fn throttle_uploads(&self, bytes_per_s: Option<u64>) -> anyhow::Result<()> {
        let throughput = bytes_per_s.map_or(-1.0, |rate| rate as f64);
        // Emulation applies only with the Network domain enabled.
        self.session_command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Network.enable", "params": {}})),
        )?;
        self.session_command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Network.emulateNetworkConditions", "params": {
                "offline": false, "latency": 0,
                "downloadThroughput": -1.0, "uploadThroughput": throughput,
            }})),
        )?;
        Ok(())
    }

    /// The text of the element matching `css`.
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.find(css)?;
        let value = self.session_command(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Sets the browser window's outer size in CSS pixels.
    pub fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let rect = json!({"width": width, "height": height});
        self.session_command(reqwest::Method::POST, "/window/rect", Some(rect))?;
        Ok(())
    }

    /// Runs a script in the page (the pages need none; tests use it to tamper with forms).
    pub fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.session_command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Saves a PNG screenshot of the window as `dir/name.png`.
    pub fn screenshot(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let value = self.session_command(reqwest::Method::GET, "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().context("screenshot is not text")?)
            .context("decoding the screenshot")?;
        std::fs::create_dir_all(dir).context("creating the screenshot directory")?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.session_command(reqwest::Method::DELETE, "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/screenshots`, beside the profile directories, for test artifacts.
pub fn screenshot_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .context("test executable is not under a target directory")?;
    Ok(target.join("screenshots"))
}

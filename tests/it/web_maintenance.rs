//! The web interface's Maintenance and Status pages at the HTTP level, against real `batond`
//! processes given a hardware serial, as a browser without JavaScript uses them: a backup
//! downloaded from the Backup page and restored through it after the preview of its changes,
//! refusals (wrong password, tampered file, another machine's backup) that change nothing, an
//! upgrade image refused with a clear message and a good one installed, the reboot that asks
//! first, the serial and certificate fingerprint on Status and the NTP state on the Time page.

use baton_tests::{Batond, TEST_PASSWORD};
use serde_json::{Value, json};

const SERIAL: &str = "WEB-SERIAL-0001";
const BACKUP_PASSWORD: &str = "backup passphrase";

/// A cookie-keeping form client that does not follow redirects.
struct Forms {
    http: reqwest::blocking::Client,
    api: reqwest::blocking::Client,
    url: String,
    cookie: Option<String>,
}

struct Answer {
    status: u16,
    location: Option<String>,
    disposition: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One part of a `multipart/form-data` body: a text field, or a file.
enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

impl Forms {
    fn signed_in(daemon: &Batond) -> Forms {
        let ca = std::fs::read(daemon.data_dir.join("tls/ca.pem")).unwrap();
        let http = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap();
        let mut forms =
            Forms { http, api: daemon.client().unwrap(), url: daemon.url.clone(), cookie: None };
        daemon.change_factory_password().unwrap();
        let answer = forms.post("/login", &[("username", "admin"), ("password", TEST_PASSWORD)]);
        assert_eq!(answer.location.as_deref(), Some("/status"), "{}", answer.text());
        forms
    }

    fn send(&mut self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let request = match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = request.send().unwrap();
        if let Some(set) = response.headers().get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        let header = |name: &str| {
            response.headers().get(name).map(|value| value.to_str().unwrap().to_owned())
        };
        let (location, disposition) = (header("location"), header("content-disposition"));
        Answer {
            status: response.status().as_u16(),
            location,
            disposition,
            body: response.bytes().unwrap().to_vec(),
        }
    }

    fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.url));
        self.send(request)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(format!("{}{path}", self.url)).form(form);
        self.send(request)
    }

    fn post_multipart(&mut self, path: &str, parts: &[Part<'_>]) -> Answer {
        const BOUNDARY: &str = "----baton-test-boundary-7d3f";
        let mut body = Vec::new();
        for part in parts {
            body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match part {
                Part::Text(name, value) => {
                    body.extend_from_slice(
                        format!(
                            "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                        )
                        .as_bytes(),
                    );
                }
                Part::File(name, file_name, bytes) => {
                    body.extend_from_slice(
                        format!(
                            "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                             Content-Type: application/octet-stream\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    body.extend_from_slice(bytes);
                    body.extend_from_slice(b"\r\n");
                }
            }
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(body);
        self.send(request)
    }

    /// The CSRF token of the page at `path`.
    fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).text();
        let marker = "name=\"csrf\" value=\"";
        let start = page.find(marker).expect("a CSRF field") + marker.len();
        page[start..].split('"').next().unwrap().to_owned()
    }

    /// A hidden field's value on a page's text.
    fn hidden(page: &str, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start =
            page.find(&marker).unwrap_or_else(|| panic!("no {name}: {page}")) + marker.len();
        page[start..].split('"').next().unwrap().to_owned()
    }

    fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .api
            .request(method, format!("{}{path}", self.url))
            .basic_auth("admin", Some(TEST_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn names(&self, collection: &str) -> Vec<String> {
        let (status, list) = self.api(reqwest::Method::GET, &format!("/api/v1/{collection}"), None);
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .map(|record| record["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn location(name: &str) -> Value {
    json!({"name": name, "description": "test"})
}

#[test]
fn a_backup_downloaded_from_the_page_is_restored_after_its_preview_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon =
        Batond::start_with_env(dir.path(), "127.0.0.1", &[], &[("BATON_HARDWARE_SERIAL", SERIAL)])
            .unwrap();
    let mut forms = Forms::signed_in(&daemon);
    let (status, _) = forms.api(reqwest::Method::POST, "/api/v1/locations", Some(location("oslo")));
    assert_eq!(status, 201);

    let page = forms.get("/maintenance/backup").text();
    assert!(page.contains(SERIAL), "{page}");
    for id in ["backup-password", "restore-password", "restore-file"] {
        assert!(page.contains(&format!("<label for=\"{id}\">")), "{id} has no label");
    }
    let csrf = forms.csrf("/maintenance/backup");
    let download = forms
        .post("/maintenance/backup/download", &[("csrf", &csrf), ("password", BACKUP_PASSWORD)]);
    assert_eq!(download.status, 200, "{}", download.text());
    let disposition = download.disposition.clone().unwrap();
    assert!(disposition.contains(SERIAL) && disposition.ends_with(".enc\""), "{disposition}");
    let archive = download.body;

    // The configuration moves on: oslo goes, bergen comes.
    let (status, _) = forms.api(reqwest::Method::DELETE, "/api/v1/locations/oslo", None);
    assert_eq!(status, 204);
    let (status, _) =
        forms.api(reqwest::Method::POST, "/api/v1/locations", Some(location("bergen")));
    assert_eq!(status, 201);
    let position = |forms: &Forms| {
        forms.api(reqwest::Method::GET, "/api/v1/status", None).1["log_position"].clone()
    };
    let before = position(&forms);

    let mut tampered = archive.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let foreign = {
        let other_dir = tempfile::tempdir().unwrap();
        let other = Batond::start_with_env(
            other_dir.path(),
            "127.0.0.1",
            &[],
            &[("BATON_HARDWARE_SERIAL", "WEB-SERIAL-OTHER")],
        )
        .unwrap();
        let mut other_forms = Forms::signed_in(&other);
        let csrf = other_forms.csrf("/maintenance/backup");
        other_forms.post("/maintenance/backup/download", &[("csrf", &csrf)]).body
    };
    let refusals: [(&str, &str, &[u8], &str); 4] = [
        ("wrong password", "not the password", &archive, "the password is wrong"),
        ("no password", "", &archive, "this backup is encrypted; give its password"),
        ("tampered", BACKUP_PASSWORD, &tampered, "Restore refused:"),
        ("another machine", "", &foreign, "WEB-SERIAL-OTHER"),
    ];
    for (what, password, bytes, message) in refusals {
        let answer = forms.post_multipart(
            "/maintenance/restore",
            &[
                Part::Text("csrf", &csrf),
                Part::Text("password", password),
                Part::File("backup", "backup.tar.gz.enc", bytes),
            ],
        );
        let text = answer.text();
        assert_eq!(answer.status, 422, "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
        assert!(text.contains("Nothing was changed."), "{what}: {text}");
        assert_eq!(forms.names("locations"), ["bergen"], "{what} changed the configuration");
    }
    // Without the session's token the upload is refused before it is read.
    let answer = forms.post_multipart(
        "/maintenance/restore",
        &[Part::Text("password", BACKUP_PASSWORD), Part::File("backup", "b", &archive)],
    );
    assert_eq!(answer.status, 403);

    // The right password: the page shows what would change and changes nothing yet.
    let answer = forms.post_multipart(
        "/maintenance/restore",
        &[
            Part::Text("csrf", &csrf),
            Part::Text("password", BACKUP_PASSWORD),
            Part::File("backup", "backup.tar.gz.enc", &archive),
        ],
    );
    let preview = answer.text();
    assert_eq!(answer.status, 200, "{preview}");
    assert!(preview.contains("<td>location</td><td>oslo</td><td>added: "), "{preview}");
    assert!(preview.contains("<td>location</td><td>bergen</td><td>removed: "), "{preview}");
    assert!(preview.contains(SERIAL), "{preview}");
    assert_eq!(forms.names("locations"), ["bergen"]);
    assert_eq!(position(&forms), before, "the preview wrote to the log");

    // The refusals were journaled (the restore replaces the Event Log with the backup's).
    assert_eq!(event_kinds(&forms, "restore.refused").len(), 4);

    // Another session cannot confirm it.
    let mut other = Forms::signed_in_again(&forms);
    other.post("/login", &[("username", "admin"), ("password", TEST_PASSWORD)]);
    let other_csrf = other.csrf("/maintenance/backup");
    let id = Forms::hidden(&preview, "id");
    let answer = other.post("/maintenance/restore/confirm", &[("csrf", &other_csrf), ("id", &id)]);
    assert_eq!(answer.status, 409, "{}", answer.text());
    assert_eq!(forms.names("locations"), ["bergen"]);

    let answer = forms.post("/maintenance/restore/confirm", &[("csrf", &csrf), ("id", &id)]);
    let text = answer.text();
    assert_eq!(answer.status, 200, "{text}");
    assert!(text.contains("Saved: backup restored"), "{text}");
    assert_eq!(forms.names("locations"), ["oslo"]);
    // Confirming twice does nothing more.
    let answer = forms.post("/maintenance/restore/confirm", &[("csrf", &csrf), ("id", &id)]);
    assert_eq!(answer.status, 409);
    assert_eq!(event_kinds(&forms, "restore.applied"), ["restore.applied"]);
}

fn event_kinds(forms: &Forms, kind: &str) -> Vec<String> {
    let (_, events) =
        forms.api(reqwest::Method::GET, &format!("/api/v1/logs/events?kind={kind}"), None);
    events["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap().to_owned())
        .collect()
}

impl Forms {
    /// Another client of the same daemon, not signed in.
    fn signed_in_again(forms: &Forms) -> Forms {
        Forms {
            http: forms.http.clone(),
            api: forms.api.clone(),
            url: forms.url.clone(),
            cookie: None,
        }
    }
}

fn image(key: &upgrade::SigningKey, version: &str, payload: &[u8]) -> Vec<u8> {
    let (size, digest) = upgrade::digest_payload(&mut &payload[..]).unwrap();
    let manifest = upgrade::Manifest {
        format_version: upgrade::FORMAT_VERSION,
        product: upgrade::PRODUCT.to_owned(),
        version: version.parse().unwrap(),
        architecture: std::env::consts::ARCH.to_owned(),
        payload_size_bytes: size,
        payload_sha256: digest,
        min_from_version: "0.0.0".parse().unwrap(),
        created_at_unix_s: 0,
    };
    let mut out = Vec::new();
    upgrade::write_image(&mut out, &manifest, key, &mut &payload[..]).unwrap();
    out
}

/// Starts a daemon trusting a fresh release key, rebooting by touching a file.
pub(crate) fn upgradable_daemon(
    dir: &std::path::Path,
) -> (Batond, upgrade::SigningKey, std::path::PathBuf) {
    let trusted = upgrade::generate_signing_key().unwrap();
    let keys = dir.join("trusted.pub");
    std::fs::write(&keys, upgrade::public_key_to_text(&trusted.verifying_key())).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rebooted = dir.join("rebooted");
    let args = [
        "--upgrade-trusted-keys-file".to_owned(),
        keys.display().to_string(),
        "--reboot-command".to_owned(),
        "touch".to_owned(),
        rebooted.display().to_string(),
    ];
    let env = [("BATON_HARDWARE_SERIAL", SERIAL)];
    (Batond::start_with_env(&data, "127.0.0.1", &args, &env).unwrap(), trusted, rebooted)
}

pub(crate) fn foreign_image() -> Vec<u8> {
    foreign_image_of(64 * 1024)
}

/// An image of `payload_bytes` signed by a key no daemon trusts.
pub(crate) fn foreign_image_of(payload_bytes: usize) -> Vec<u8> {
    let stranger = upgrade::generate_signing_key().unwrap();
    image(&stranger, "9.9.9", &vec![1u8; payload_bytes])
}

#[test]
fn the_upgrade_page_refuses_bad_images_clearly_installs_a_good_one_and_reboots_when_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, trusted, rebooted) = upgradable_daemon(dir.path());
    let mut forms = Forms::signed_in(&daemon);
    let page = forms.get("/maintenance/upgrade").text();
    for expected in ["Active slot", "<td>A</td>", "Last boot", "booted slot A", "slot-a"] {
        assert!(page.contains(expected), "{expected}: {page}");
    }
    assert!(page.contains("<label for=\"upgrade-file\">"), "{page}");
    let csrf = forms.csrf("/maintenance/upgrade");
    // A text field beside the file is bounded, whatever the file's own limit.
    let long = "x".repeat(100 * 1024);
    let answer = forms.post_multipart(
        "/maintenance/upgrade",
        &[Part::Text("csrf", &long), Part::File("image", "baton.img", b"")],
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("a form field is longer than"), "{}", answer.text());
    let payload = vec![7u8; 256 * 1024];
    let good = image(&trusted, "9.9.9", &payload);
    let refusals = [
        ("foreign key", foreign_image(), "which this software does not trust"),
        ("downgrade", image(&trusted, "0.0.1", &payload), "older than the running"),
        ("truncated", good[..good.len() / 2].to_vec(), "Upgrade refused:"),
    ];
    for (what, bytes, message) in refusals {
        let answer = forms.post_multipart(
            "/maintenance/upgrade",
            &[Part::Text("csrf", &csrf), Part::File("image", "baton.img", &bytes)],
        );
        let text = answer.text();
        assert_eq!(answer.status, 422, "{what}: {text}");
        assert!(text.contains("Upgrade refused:"), "{what}: {text}");
        assert!(text.contains(message), "{what}: {text}");
        assert!(text.contains("boot order are unchanged"), "{what}: {text}");
        let (_, status) = forms.api(reqwest::Method::GET, "/api/v1/upgrade", None);
        assert_eq!(status["boot_entries"], json!(["slot-a.conf"]), "{what}: {status}");
    }
    let answer = forms.post_multipart(
        "/maintenance/upgrade",
        &[Part::Text("csrf", &csrf), Part::File("image", "baton.img", &good)],
    );
    let text = answer.text();
    assert_eq!(answer.status, 200, "{text}");
    assert!(text.contains("version 9.9.9 installed in slot B"), "{text}");
    assert!(text.contains("slot-b+3.conf"), "the new boot entry is shown: {text}");

    // Rebooting asks first; only the confirmed form reboots.
    let question = forms.get("/maintenance/reboot").text();
    assert!(question.contains("Reboot this peer now?"), "{question}");
    assert!(question.contains("slot-b+3.conf"), "{question}");
    let answer = forms.post("/maintenance/reboot", &[("csrf", &csrf)]);
    assert_eq!(answer.status, 303);
    assert!(!rebooted.exists());
    let answer = forms.post("/maintenance/reboot", &[("confirm", "yes")]);
    assert_eq!(answer.status, 403, "no CSRF token");
    assert!(!rebooted.exists());
    let answer = forms.post("/maintenance/reboot", &[("csrf", &csrf), ("confirm", "yes")]);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(rebooted.exists(), "the reboot command did not run");
    let restart = forms.get("/maintenance/restart").text();
    assert!(restart.contains("Configuration changes never need a restart"), "{restart}");
}

#[test]
fn status_shows_the_serial_and_certificate_fingerprint_and_the_time_page_the_ntp_state() {
    let dir = tempfile::tempdir().unwrap();
    let daemon =
        Batond::start_with_env(dir.path(), "127.0.0.1", &[], &[("BATON_HARDWARE_SERIAL", SERIAL)])
            .unwrap();
    let mut forms = Forms::signed_in(&daemon);
    let status = forms.get("/status").text();
    assert!(status.contains(&format!("<td>{SERIAL}</td>")), "{status}");
    // The fingerprint of the certificate the listener presents, as a browser would show it.
    let pem = std::fs::read(daemon.data_dir.join("tls/server.pem")).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|der: rustls::pki_types::CertificateDer<'_>| der.to_vec())
        .unwrap();
    let expected = baton_tests::sha256_fingerprint(&der);
    assert_eq!(expected.len(), 32 * 3 - 1);
    assert!(status.contains(&expected), "{expected} not in {status}");
    let time = forms.get("/system/ntp").text();
    assert!(time.contains("NTP synchronisation: <span"), "{time}");
}

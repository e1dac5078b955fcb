//! Upgrades through a live `batond`: a signed image streamed to the admin API lands in the
//! inactive slot and becomes the next boot on trial; bad, foreign or downgrading images are
//! refused with the running slot and the boot order untouched. `batonctl upgrade` does the same
//! as an operator would, against a daemon whose version comes from a stamped version file, and
//! the status reports a fallback.

use baton_tests::{Batond, TEST_PASSWORD, binary};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use upgrade::{FORMAT_VERSION, Manifest, PRODUCT, SigningKey};

pub(crate) fn image(key: &SigningKey, version: &str, payload: &[u8]) -> Vec<u8> {
    let (size, digest) = upgrade::digest_payload(&mut &payload[..]).unwrap();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        product: PRODUCT.to_owned(),
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

/// A daemon's upgrade set-up in `dir`: a trusted and a foreign release key, the data folder, a
/// reboot command that leaves `rebooted` behind, and the flags that say so (plus a stamped
/// version file when `version` is given).
struct Rig {
    trusted: SigningKey,
    stranger: SigningKey,
    data: PathBuf,
    rebooted: PathBuf,
    args: Vec<String>,
}

impl Rig {
    fn new(dir: &Path, version: Option<&str>) -> Rig {
        let trusted = upgrade::generate_signing_key().unwrap();
        let stranger = upgrade::generate_signing_key().unwrap();
        let keys = dir.join("trusted.pub");
        std::fs::write(&keys, upgrade::public_key_to_text(&trusted.verifying_key())).unwrap();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let rebooted = dir.join("rebooted");
        let mut args = vec!["--upgrade-trusted-keys-file".to_owned(), keys.display().to_string()];
        if let Some(version) = version {
            let version_file = dir.join("version");
            std::fs::write(&version_file, format!("{version}\n")).unwrap();
            args.extend(["--version-file".to_owned(), version_file.display().to_string()]);
        }
        args.extend(["--reboot-command".to_owned(), "touch".to_owned()]);
        args.push(rebooted.display().to_string());
        Rig { trusted, stranger, data, rebooted, args }
    }
}

struct Daemon {
    batond: Batond,
    http: reqwest::blocking::Client,
}

impl Daemon {
    fn upload(&self, image: Vec<u8>, query: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/upgrade{query}", self.batond.url))
            .basic_auth("admin", Some(TEST_PASSWORD))
            .body(image)
            .send()
            .unwrap();
        (response.status().as_u16(), response.json().unwrap_or(Value::Null))
    }

    fn status(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/upgrade", self.batond.url))
            .basic_auth("admin", Some(TEST_PASSWORD))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

#[test]
fn a_signed_image_goes_to_the_other_slot_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Rig { trusted, stranger, data, rebooted, args } = Rig::new(dir.path(), None);
    let batond = Batond::start_with(&data, "127.0.0.1", &args).unwrap();
    let http = batond.client().unwrap();
    batond.change_factory_password().unwrap();
    let daemon = Daemon { batond, http };
    let before = daemon.status();
    assert_eq!(before["active_slot"], "A");
    let slot_b = data.join("boot/slot-b.img");
    let payload = vec![7u8; 3 * 1024 * 1024 + 5];

    let refusals = [
        ("foreign key", image(&stranger, "9.9.9", &payload), ""),
        ("downgrade", image(&trusted, "0.0.1", &payload), ""),
        ("truncated", image(&trusted, "9.9.9", &payload)[..1_000_000].to_vec(), ""),
        ("garbage", b"not an image at all".to_vec(), ""),
    ];
    for (what, bytes, query) in refusals {
        let (status, answer) = daemon.upload(bytes, query);
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("upgrade_refused")),
            "{what}: {answer}"
        );
        let now = daemon.status();
        assert_eq!(now["boot_entries"], before["boot_entries"], "{what} changed the boot order");
        assert_eq!(now["active_slot"], "A");
    }
    // Refused before the payload: the other slot was never written.
    assert!(!slot_b.exists() || std::fs::metadata(&slot_b).unwrap().len() < payload.len() as u64);
    let mut tampered = image(&trusted, "9.9.9", &payload);
    let last = tampered.len() - 10;
    tampered[last] ^= 1;
    let (status, answer) = daemon.upload(tampered, "");
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("SHA-256"), "{answer}");
    assert_eq!(daemon.status()["boot_entries"], before["boot_entries"]);

    // A good image: into slot B, next boot on trial, and a reboot when asked.
    let (status, answer) = daemon.upload(image(&trusted, "9.9.9", &payload), "?reboot=true");
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["version"].as_str(), answer["slot"].as_str()), (Some("9.9.9"), Some("B")));
    assert_eq!(std::fs::read(&slot_b).unwrap(), payload);
    let after = daemon.status();
    let entries: Vec<&str> =
        after["boot_entries"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(entries.iter().any(|entry| entry.starts_with("slot-b+")), "{entries:?}");
    assert_eq!(after["active_slot"], "A", "still running the old slot until the reboot");
    assert!(rebooted.exists(), "the reboot command ran");
    // The downgrade override works when asked for explicitly.
    let (status, answer) =
        daemon.upload(image(&trusted, "0.0.1", &payload), "?allow_downgrade=true");
    assert_eq!(status, 200, "{answer}");
}

/// `batonctl upgrade` against a live daemon whose version is stamped (as the image build does):
/// the version reaches the status, health and upgrade answers; refusals are clear and change
/// nothing; an install shows the next boot; a fallback is reported with its numbers.
#[test]
fn batonctl_installs_an_upgrade_over_the_stamped_version_and_reports_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let Rig { trusted, stranger, data, rebooted, args } = Rig::new(dir.path(), Some("0.5.0"));
    let batond = Batond::start_with(&data, "127.0.0.1", &args).unwrap();
    let http = batond.client().unwrap();

    // The health probe needs no credentials (the gate has none) and says what it checked.
    let health = http.get(format!("{}/api/v1/health", batond.url)).send().unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().unwrap();
    assert_eq!(
        (&health["healthy"], &health["log_opens"], &health["projections_current"]),
        (&json!(true), &json!(true), &json!(true)),
        "{health}"
    );
    assert_eq!(health["version"], "0.5.0");

    batond.change_factory_password().unwrap();
    let status: Value = http
        .get(format!("{}/api/v1/status", batond.url))
        .basic_auth("admin", Some(TEST_PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["version"], "0.5.0", "the stamped version, not the crate's");

    let ctl = |args: &[&str]| {
        std::process::Command::new(binary("batonctl").unwrap())
            .args(["--url", &batond.url, "--ca"])
            .arg(data.join("tls/ca.pem"))
            .args(args)
            .env("BATON_PASSWORD", TEST_PASSWORD)
            .output()
            .unwrap()
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let shown = ctl(&["upgrade", "status"]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown = text(&shown);
    assert!(shown.contains("0.5.0") && shown.contains("booted slot A"), "{shown}");
    assert!(shown.contains("slot-a.conf"), "{shown}");

    // Large enough that a refusal at the header comes long before the upload ends.
    let payload = vec![9u8; 24 * 1024 * 1024 + 3];
    let files = dir.path().join("images");
    std::fs::create_dir_all(&files).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = files.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let refusals = [
        (
            "garbage",
            write("garbage", b"this is a text file".repeat(100)),
            "is not a Baton upgrade image",
        ),
        (
            "downgrade",
            write("old", image(&trusted, "0.4.0", &payload)),
            "older than the running 0.5.0",
        ),
        ("foreign key", write("foreign", image(&stranger, "0.6.0", &payload)), "does not trust"),
    ];
    let before = ctl(&["--json", "upgrade", "status"]);
    let before: Value = serde_json::from_slice(&before.stdout).unwrap();
    for (what, path, expected) in &refusals {
        let refused = ctl(&["upgrade", "install", path]);
        assert_eq!(refused.status.code(), Some(1), "{what}: {}", text(&refused));
        assert!(text(&refused).contains(expected), "{what}: {}", text(&refused));
        let now: Value =
            serde_json::from_slice(&ctl(&["--json", "upgrade", "status"]).stdout).unwrap();
        assert_eq!(now["boot_entries"], before["boot_entries"], "{what} changed the boot order");
    }
    assert!(text(&ctl(&["upgrade", "install", &refusals[0].1])).contains("nothing was sent"));

    let good = write("good", image(&trusted, "0.6.0", &payload));
    let installed = ctl(&["upgrade", "install", &good]);
    assert!(installed.status.success(), "{}", text(&installed));
    assert!(text(&installed).contains("installed Baton 0.6.0 into slot B"), "{}", text(&installed));
    assert!(!rebooted.exists(), "no reboot without --reboot");
    let status: Value =
        serde_json::from_slice(&ctl(&["--json", "upgrade", "status"]).stdout).unwrap();
    assert_eq!(status["boot_entries"], json!(["slot-b+3.conf", "slot-a.conf"]), "{status}");
    assert_eq!(status["running_version"], "0.5.0");
    let reboot = ctl(&["upgrade", "reboot"]);
    assert!(reboot.status.success(), "{}", text(&reboot));
    assert!(rebooted.exists(), "the reboot command ran");

    // Slot B used up its tries (as the firmware leaves it) and A booted again: reported.
    let entries = data.join("boot/loader/entries");
    std::fs::rename(entries.join("slot-b+3.conf"), entries.join("slot-b+0-3.conf")).unwrap();
    let status: Value =
        serde_json::from_slice(&ctl(&["--json", "upgrade", "status"]).stdout).unwrap();
    assert_eq!(status["last_boot"], "fell back from B after 3 failed tries; running A");
    assert_eq!(status["last_boot_outcome"], "fell_back");
    assert_eq!(status["fell_back"], json!({"from_slot": "B", "failed_tries": 3}));
    assert_eq!(status["boot_control"], "file");
    let shown = text(&ctl(&["upgrade", "status"]));
    assert!(shown.contains("fell back from B after 3 failed tries"), "{shown}");
    // The daemon starting after such a boot says so in the Event Log.
    batond.stop().unwrap();
    let batond = Batond::start_with(&data, "127.0.0.1", &args).unwrap();
    let events: Value = batond
        .client()
        .unwrap()
        .get(format!("{}/api/v1/logs/events?kind=boot", batond.url))
        .basic_auth("admin", Some(TEST_PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entries = events["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{events}");
    assert_eq!(entries[0]["kind"], "boot.fell_back");
    assert_eq!(entries[0]["level"], "warning");
    assert_eq!(entries[0]["message"], "fell back from B after 3 failed tries; running A");
    let ctl = |args: &[&str]| {
        std::process::Command::new(binary("batonctl").unwrap())
            .args(["--url", &batond.url, "--ca"])
            .arg(data.join("tls/ca.pem"))
            .args(args)
            .env("BATON_PASSWORD", TEST_PASSWORD)
            .output()
            .unwrap()
    };

    // The override installs an older image when asked for explicitly.
    let old = &refusals[1].1;
    let downgraded = ctl(&["upgrade", "install", old, "--allow-downgrade"]);
    assert!(downgraded.status.success(), "{}", text(&downgraded));
    assert!(text(&downgraded).contains("installed Baton 0.4.0"), "{}", text(&downgraded));
}

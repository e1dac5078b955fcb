//! Upgrades through a live `batond`: a signed image streamed to the admin API lands in the
//! inactive slot and becomes the next boot on trial; bad, foreign or downgrading images are
//! refused with the running slot and the boot order untouched.

use baton_tests::{Batond, TEST_PASSWORD};
use serde_json::{Value, json};
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
    let trusted = upgrade::generate_signing_key().unwrap();
    let stranger = upgrade::generate_signing_key().unwrap();
    let keys = dir.path().join("trusted.pub");
    std::fs::write(&keys, upgrade::public_key_to_text(&trusted.verifying_key())).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rebooted = dir.path().join("rebooted");
    let args = [
        "--upgrade-trusted-keys-file".to_owned(),
        keys.display().to_string(),
        "--reboot-command".to_owned(),
        "touch".to_owned(),
        rebooted.display().to_string(),
    ];
    let batond = Batond::start_with(&data, "127.0.0.1", &args).unwrap();
    let http = batond.client().unwrap();
    let changed = http
        .post(format!("{}/api/v1/password", batond.url))
        .basic_auth("admin", Some("TANDBERG"))
        .json(&json!({"current_password": "TANDBERG", "new_password": TEST_PASSWORD}))
        .send()
        .unwrap();
    assert_eq!(changed.status(), 200);
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

//! A/B upgrades: `GET /api/v1/upgrade` (the slots and the last boot), `POST /api/v1/upgrade`
//! (the image as the body, streamed; [`UpgradeQuery`]) and `POST /api/v1/upgrade/reboot`
//! (202, no body).

use crate::required;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct UpgradeStatus {
    pub running_version: String,
    pub active_slot: String,
    /// The last boot for people: "booted slot A", "fell back from B after 3 failed tries; …".
    pub last_boot: String,
    /// The same for programs.
    pub last_boot_outcome: BootOutcome,
    /// Set when the firmware fell back: the slot that failed and how many boots it tried.
    #[serde(deserialize_with = "required")]
    pub fell_back: Option<Fallback>,
    /// Boots the running slot has left to be marked good (only while `trying`).
    #[serde(deserialize_with = "required")]
    pub tries_left: Option<u32>,
    pub boot_control: BootControl,
    /// The entries as the boot loader will try them.
    pub boot_entries: Vec<String>,
    #[serde(deserialize_with = "required")]
    pub installing: Option<InstallProgress>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootOutcome {
    Normal,
    Trying,
    FellBack,
}

/// How the next boot is chosen.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum BootControl {
    #[serde(rename = "file")]
    File,
    #[serde(rename = "systemd-boot")]
    SystemdBoot,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Fallback {
    pub from_slot: String,
    pub failed_tries: u32,
}

/// An install under way.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InstallProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// The query of `POST /api/v1/upgrade`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeQuery {
    /// Install an image older than the running software.
    #[serde(default)]
    pub allow_downgrade: Option<bool>,
    /// Reboot into the new slot as soon as it is installed.
    #[serde(default)]
    pub reboot: Option<bool>,
}

/// The answer to an install: what boots next, on trial.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Installed {
    pub version: String,
    pub slot: String,
    pub next_boot: String,
    pub reboot_required: bool,
}

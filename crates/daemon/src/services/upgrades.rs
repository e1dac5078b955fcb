//! Upgrades through the admin API: an uploaded image is streamed through `upgrade::install`
//! (signature and manifest checked before a byte is written, payload hashed while it goes into
//! the inactive slot), the slot becomes the next boot with boot counting, and the peer reboots
//! when the operator says so. Progress and the last boot's outcome (including a fallback) are
//! readable at any time.
//!
//! Boot control is file-backed by default (`upgrade::FileBootControl` under `<data>/boot`, for
//! development and tests); the appliance's `batond.service` selects systemd-boot's
//! (`upgrade::SystemdBootControl`: partitions by label, entries on the ESP). Trusted keys are
//! embedded at build time (`BATON_UPGRADE_TRUSTED_KEYS`); a development or test build may name
//! a key file.

use crate::base::journal::{self, EntryKind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use upgrade::{
    BootControl, FileBootControl, InstallOptions, RunningSystem, SlotWriter, SystemdBootControl,
    SystemdBootPaths, TrustedKeys,
};

/// Largest slot image accepted (also the file-backed slots' capacity).
pub const SLOT_CAPACITY_BYTES_DEFAULT: u64 = 4 * 1024 * 1024 * 1024;

/// Which [`BootControl`] upgrades go through.
#[derive(Clone, Debug)]
pub enum BootControlKind {
    /// Slots and entries as files under [`UpgradeConfig::boot_dir`].
    File,
    /// The appliance: systemd-boot on the ESP, root slots as partitions.
    SystemdBoot(SystemdBootPaths),
}

#[derive(Clone, Debug)]
pub struct UpgradeConfig {
    pub boot_control: BootControlKind,
    /// Where the file-backed boot control keeps slots and entries.
    pub boot_dir: PathBuf,
    pub slot_capacity_bytes: u64,
    /// Trusted public keys from a file instead of the build's. Development and tests only.
    pub trusted_keys_file: Option<PathBuf>,
    /// Run to reboot the machine (`systemctl reboot` on the appliance).
    pub reboot_command: Vec<String>,
    /// Run to power the machine off (`systemctl poweroff`).
    pub shutdown_command: Vec<String>,
    /// Run to restart the Baton service only (`systemctl --no-block restart batond`: the
    /// command must not wait for the service it stops, which is its own parent).
    pub restart_command: Vec<String>,
}

/// What Maintenance > Restart options can do to this peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Power {
    /// The Baton service only; the machine keeps running.
    RestartService,
    Reboot,
    Shutdown,
}

impl Power {
    /// The Event Log's kind for it.
    pub fn entry_kind(self) -> EntryKind {
        match self {
            Power::RestartService => EntryKind::ServiceRestart,
            Power::Reboot => EntryKind::SystemReboot,
            Power::Shutdown => EntryKind::SystemShutdown,
        }
    }

    /// "restart", "reboot", "shutdown": the API's path segment and `batonctl`'s word.
    pub fn as_str(self) -> &'static str {
        match self {
            Power::RestartService => "restart",
            Power::Reboot => "reboot",
            Power::Shutdown => "shutdown",
        }
    }
}

impl UpgradeConfig {
    pub fn for_data_dir(data_dir: &std::path::Path) -> UpgradeConfig {
        UpgradeConfig {
            boot_control: BootControlKind::File,
            boot_dir: data_dir.join("boot"),
            slot_capacity_bytes: SLOT_CAPACITY_BYTES_DEFAULT,
            trusted_keys_file: None,
            reboot_command: vec!["systemctl".to_owned(), "reboot".to_owned()],
            shutdown_command: vec!["systemctl".to_owned(), "poweroff".to_owned()],
            restart_command: ["systemctl", "--no-block", "restart", "batond"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Upgrade(#[from] upgrade::Error),
    #[error("an upgrade is already being installed")]
    Busy,
    #[error("trusted keys: {0}")]
    Keys(String),
    #[error("the install task failed: {0}")]
    Task(String),
    #[error("reboot command failed: {0}")]
    Reboot(String),
}

pub struct UpgradeService {
    config: UpgradeConfig,
    keys: TrustedKeys,
    /// Held for the whole install: one at a time.
    installing: Mutex<()>,
    progress: Arc<Mutex<Option<upgrade::Progress>>>,
}

/// What the upgrade service reports and answers: the API's contract types.
pub use ::api::{BootOutcome, Fallback, InstallProgress, Installed, UpgradeStatus};

impl UpgradeService {
    pub fn new(config: UpgradeConfig) -> Result<UpgradeService, UpgradeError> {
        let keys = match &config.trusted_keys_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| UpgradeError::Keys(format!("{}: {error}", path.display())))?;
                TrustedKeys::from_text(&text)
                    .map_err(|error| UpgradeError::Keys(error.to_string()))?
            }
            None => upgrade::trusted_keys_from_env!()
                .map_err(|error| UpgradeError::Keys(error.to_string()))?,
        };
        if matches!(config.boot_control, BootControlKind::File)
            && !config.boot_dir.join("state.json").exists()
        {
            // A new machine: the running software is slot A's, blessed.
            FileBootControl::create(
                &config.boot_dir,
                &crate::base::version::upgrade_version().to_string(),
                b"",
                config.slot_capacity_bytes,
            )?;
        }
        Ok(UpgradeService {
            config,
            keys,
            installing: Mutex::new(()),
            progress: Arc::new(Mutex::new(None)),
        })
    }

    fn boot(&self) -> Boot {
        match &self.config.boot_control {
            BootControlKind::File => Boot::File(FileBootControl::open(
                &self.config.boot_dir,
                self.config.slot_capacity_bytes,
            )),
            BootControlKind::SystemdBoot(paths) => {
                Boot::SystemdBoot(SystemdBootControl::new(paths.clone()))
            }
        }
    }

    pub fn status(&self) -> Result<UpgradeStatus, UpgradeError> {
        let boot = self.boot();
        let progress = *crate::base::sync::lock(&self.progress);
        let last_boot = boot.control().last_boot()?;
        let (outcome, fell_back, tries_left) = match &last_boot {
            upgrade::LastBoot::Normal { .. } => (BootOutcome::Normal, None, None),
            upgrade::LastBoot::Trying { tries_left, .. } => {
                (BootOutcome::Trying, None, Some(*tries_left))
            }
            upgrade::LastBoot::FellBack { from, failed_tries, .. } => (
                BootOutcome::FellBack,
                Some(Fallback { from_slot: from.to_string(), failed_tries: *failed_tries }),
                None,
            ),
        };
        Ok(UpgradeStatus {
            running_version: crate::base::version::upgrade_version().to_string(),
            active_slot: boot.control().active_slot()?.to_string(),
            last_boot: last_boot.to_string(),
            last_boot_outcome: outcome,
            fell_back,
            tries_left,
            boot_control: match boot {
                Boot::File(_) => ::api::BootControl::File,
                Boot::SystemdBoot(_) => ::api::BootControl::SystemdBoot,
            },
            boot_entries: boot.entries()?.iter().map(|entry| entry.file_name()).collect(),
            installing: progress
                .map(|p| InstallProgress { done_bytes: p.done_bytes, total_bytes: p.total_bytes }),
        })
    }

    /// Installs the image read from `image` (blocking: call it off the async runtime).
    pub fn install(
        &self,
        image: &mut dyn std::io::Read,
        allow_downgrade: bool,
    ) -> Result<Installed, UpgradeError> {
        let _only_one = self.installing.try_lock().map_err(|_| UpgradeError::Busy)?;
        let mut boot = self.boot();
        let running = RunningSystem {
            version: crate::base::version::upgrade_version(),
            architecture: std::env::consts::ARCH.to_owned(),
            active_slot: boot.control().active_slot()?,
        };
        let mut writer = boot.inactive_slot_writer()?;
        let progress = self.progress.clone();
        let mut report = |now: upgrade::Progress| {
            *crate::base::sync::lock(&progress) = Some(now);
        };
        let installed = upgrade::install(
            image,
            &self.keys,
            &running,
            InstallOptions { allow_downgrade },
            writer.as_mut(),
            &mut report,
        );
        *crate::base::sync::lock(&self.progress) = None;
        let installed = installed?;
        let label = installed.manifest.version.to_string();
        boot.control_mut().set_next_boot(installed.slot, upgrade::DEFAULT_BOOT_TRIES, &label)?;
        Ok(Installed {
            version: label,
            slot: installed.slot.to_string(),
            next_boot: installed.slot.to_string(),
            reboot_required: true,
        })
    }

    /// Runs the configured command for `power` and waits for it.
    pub fn run_power(&self, power: Power) -> Result<(), UpgradeError> {
        let command = match power {
            Power::RestartService => &self.config.restart_command,
            Power::Reboot => &self.config.reboot_command,
            Power::Shutdown => &self.config.shutdown_command,
        };
        let Some((program, args)) = command.split_first() else {
            let message = format!("no {} command configured", power.as_str());
            return Err(UpgradeError::Reboot(message));
        };
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|error| UpgradeError::Reboot(format!("{program}: {error}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(UpgradeError::Reboot(format!("{program}: {status}")))
        }
    }
}

/// The configured boot control, with the inherent parts the trait does not cover.
enum Boot {
    File(FileBootControl),
    SystemdBoot(SystemdBootControl),
}

impl Boot {
    fn control(&self) -> &dyn BootControl {
        match self {
            Boot::File(boot) => boot,
            Boot::SystemdBoot(boot) => boot,
        }
    }

    fn control_mut(&mut self) -> &mut dyn BootControl {
        match self {
            Boot::File(boot) => boot,
            Boot::SystemdBoot(boot) => boot,
        }
    }

    fn entries(&self) -> Result<Vec<upgrade::Entry>, upgrade::Error> {
        match self {
            Boot::File(boot) => boot.entries(),
            Boot::SystemdBoot(boot) => boot.entries(),
        }
    }

    fn inactive_slot_writer(&self) -> Result<Box<dyn SlotWriter>, upgrade::Error> {
        Ok(match self {
            Boot::File(boot) => Box::new(boot.inactive_slot_writer()?),
            Boot::SystemdBoot(boot) => Box::new(boot.inactive_slot_writer()?),
        })
    }
}

// ---- as the operator runs them (API and web) ------------------------------------------------

/// The upgrade service's status, read off the async runtime (boot entries are files).
pub async fn status_of(app: &super::App) -> Result<UpgradeStatus, super::Error> {
    let service = app.upgrade.clone();
    Ok(tokio::task::spawn_blocking(move || service.status()).await??)
}

/// Installs the image read from `image` into the inactive slot, journaling the outcome; a
/// refusal wrote nothing.
pub async fn install(
    app: &super::App,
    actor: &str,
    mut image: impl std::io::Read + Send + 'static,
    allow_downgrade: bool,
) -> Result<Installed, super::Error> {
    let service = app.upgrade.clone();
    let installed = tokio::task::spawn_blocking(move || {
        let installed = service.install(&mut image, allow_downgrade);
        if installed.is_err() {
            // Most refusals come after the header, long before the body ends. Answering then
            // would close the connection under a client still sending, which sees a broken
            // upload instead of the reason: read the rest (bounded by the body limit) first.
            let _ = std::io::copy(&mut image, &mut std::io::sink());
        }
        installed
    })
    .await?;
    let (level, kind, message) = match &installed {
        Ok(installed) => (
            eventlog::Level::Info,
            EntryKind::UpgradeInstalled,
            format!(
                "version {} installed in slot {}; it boots next, on trial",
                installed.version, installed.slot
            ),
        ),
        Err(error) => (
            eventlog::Level::Warning,
            EntryKind::UpgradeRefused,
            format!("upgrade image refused: {error}"),
        ),
    };
    app.writer.journal(journal::entry(level, kind, Some(actor), message));
    Ok(installed?)
}

/// Runs the reboot command, after saying so in the Event Log.
pub async fn reboot(app: &super::App, actor: &str) -> Result<(), super::Error> {
    power(app, actor, Power::Reboot).await
}

/// Runs the command for `power` (restart the service, reboot, shut down), after saying so in
/// the Event Log: once it runs, this daemon may not live to write it.
pub async fn power(app: &super::App, actor: &str, power: Power) -> Result<(), super::Error> {
    app.writer.journal(journal::entry(
        eventlog::Level::Warning,
        power.entry_kind(),
        Some(actor),
        format!("{} requested", power.as_str()),
    ));
    let service = app.upgrade.clone();
    Ok(tokio::task::spawn_blocking(move || service.run_power(power)).await??)
}

//! The appliance's software version, as every part of the daemon reports it: the status API,
//! the cluster greeting (peers must run the same version), backup manifests and the restore's
//! version check, upgrades' downgrade check, the journal and the web pages.
//!
//! The image build stamps the version into the root file system (`/usr/lib/baton/version`, see
//! image/README.md), so an upgrade image can carry a newer version than the running one from
//! the same binaries; without that file (development, tests) it is the crate's version.

use std::path::Path;
use std::sync::OnceLock;

/// Where the image build writes the version, in each slot's root file system.
pub const VERSION_FILE_DEFAULT: &str = upgrade::VERSION_FILE;

static STAMPED: OnceLock<String> = OnceLock::new();

/// The running software's version: the stamped one once [`load`] found it, else the crate's.
pub fn software_version() -> &'static str {
    STAMPED.get().map(String::as_str).unwrap_or(env!("CARGO_PKG_VERSION"))
}

/// The version as the upgrade checks compare it.
pub fn upgrade_version() -> upgrade::Version {
    // Both sources are validated (`load`, and the crate version by the tests), so the fallback
    // is only a guard.
    software_version().parse().unwrap_or(upgrade::Version::new(0, 0, 0))
}

/// Reads the version file once, at start-up. A missing file keeps the crate's version; a file
/// that is there but not `MAJOR.MINOR.PATCH` is an error (a broken image build must not start
/// as some other version). A second call in the same process keeps the first value.
pub fn load(path: &Path) -> Result<&'static str, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(software_version());
        }
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let version: upgrade::Version =
        text.trim().parse().map_err(|error| format!("{}: {error}", path.display()))?;
    let _ = STAMPED.set(version.to_string());
    Ok(software_version())
}

/// For tests only (`batond --announce-version`): run as `version`, so that a test can play
/// another release with this build. Call before [`load`]; every part then reports and compares
/// this one version, as it would the stamped one.
pub fn play(version: &str) -> Result<&'static str, String> {
    let version: upgrade::Version = version.parse()?;
    let _ = STAMPED.set(version.to_string());
    Ok(software_version())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crate_version_is_a_valid_upgrade_version() {
        let parsed: Result<upgrade::Version, _> = env!("CARGO_PKG_VERSION").parse();
        assert_eq!(parsed.map(|v| v.to_string()), Ok(env!("CARGO_PKG_VERSION").to_owned()));
    }
}

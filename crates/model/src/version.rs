//! Software versions, the one parser of them: `MAJOR.MINOR.PATCH`, compared numerically, as
//! upgrade manifests, backups and the cluster greeting carry them. Deliberately no pre-release
//! or build suffixes: downgrade and minimum-source checks must have one obvious order, and
//! release builds are the only thing ever signed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A release version; ordered by (major, minor, patch).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version { major, minor, patch }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{text:?} is not a version MAJOR.MINOR.PATCH");
        let mut parts = text.split('.');
        let mut next = || -> Result<u32, String> {
            let part = parts.next().ok_or_else(invalid)?;
            // `u32::from_str` accepts a leading `+`; a version never has one.
            if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse().map_err(|_| invalid())
        };
        let version = Version { major: next()?, minor: next()?, patch: next()? };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(version)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

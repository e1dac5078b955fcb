//! `manifest.json`, the first member of every archive: what the archive is, where it came
//! from, the log's chain heads at the time, and the digest of every other member.

use crate::Error;
use eventlog::{Hash, Head, Stream};
use model::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `product` of every Baton archive; anything else is not ours.
pub const PRODUCT: &str = "baton";
/// Version of the archive layout and manifest this build writes and the highest it reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// The manifest's member name; always the first member.
pub(crate) const MANIFEST_NAME: &str = "manifest.json";
/// Members that are extra files live under this folder of the archive.
pub(crate) const FILES_PREFIX: &str = "files/";

/// What an archive holds and where it came from; the checks of a restore start here.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub product: String,
    pub software_version: String,
    pub hardware_serial: String,
    pub created_at_ms: u64,
    /// The identity of the peer whose log this is.
    pub peer_id: String,
    pub heads: Vec<ChainHead>,
    /// Every member but the manifest, in archive order.
    pub members: Vec<Member>,
}

/// The last event of one (origin, stream) chain, hex-encoded.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub origin: String,
    /// `shared` or `local`.
    pub stream: String,
    pub seq: u64,
    pub hash: String,
}

/// One archive member besides the manifest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the member's contents.
    pub sha256: String,
}

impl Manifest {
    /// The heads in the form eventlog reports them, for comparing with a restored log.
    pub fn log_heads(&self) -> Result<BTreeMap<(PeerId, Stream), Head>, Error> {
        let corrupt = |reason: &str| Error::Corrupt { reason: format!("manifest: {reason}") };
        let mut heads = BTreeMap::new();
        for head in &self.heads {
            let origin = PeerId::from_hex(&head.origin).ok_or_else(|| corrupt("bad origin"))?;
            let stream = match head.stream.as_str() {
                "shared" => Stream::Shared,
                "local" => Stream::Local,
                _ => return Err(corrupt("bad stream")),
            };
            let hash: [u8; 32] = hex::decode(&head.hash)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| corrupt("bad hash"))?;
            if heads.insert((origin, stream), Head { seq: head.seq, hash: Hash(hash) }).is_some() {
                return Err(corrupt("a chain is listed twice"));
            }
        }
        Ok(heads)
    }

    /// The sum of the members' sizes (the manifest excluded); saturates, as a crafted
    /// manifest may declare sizes that overflow.
    pub fn members_size_bytes(&self) -> u64 {
        self.members.iter().fold(0u64, |total, member| total.saturating_add(member.size_bytes))
    }
}

pub(crate) fn chain_heads(heads: &BTreeMap<(PeerId, Stream), Head>) -> Vec<ChainHead> {
    heads
        .iter()
        .map(|((origin, stream), head)| ChainHead {
            origin: origin.to_hex(),
            stream: match stream {
                Stream::Shared => "shared",
                Stream::Local => "local",
            }
            .to_owned(),
            seq: head.seq,
            hash: head.hash.to_hex(),
        })
        .collect()
}

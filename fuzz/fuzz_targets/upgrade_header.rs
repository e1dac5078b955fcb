//! The upgrade image header: on raw bytes (magic, version, lengths, key id, signature), and —
//! when the first byte is odd — the rest of the input as a manifest correctly signed by a
//! trusted key, so the manifest's parsing and checks are reached past the signature.
#![no_main]

use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use upgrade::{FORMAT_VERSION, KeyId, MAGIC, SigningKey, TrustedKeys};

fn key() -> &'static (SigningKey, TrustedKeys) {
    static KEY: OnceLock<(SigningKey, TrustedKeys)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = SigningKey::from_bytes(&[7; 32]);
        let trusted = TrustedKeys::new([key.verifying_key()]);
        (key, trusted)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, trusted) = key();
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let _ = upgrade::read_header(&mut &rest[..], trusted);
        return;
    }
    let mut image = Vec::new();
    image.extend_from_slice(&MAGIC);
    image.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    image.extend_from_slice(&(rest.len() as u32).to_le_bytes());
    image.extend_from_slice(&KeyId::of(&key.verifying_key()).0);
    image.extend_from_slice(&key.sign(rest).to_bytes());
    image.extend_from_slice(rest);
    let _ = upgrade::read_header(&mut image.as_slice(), trusted);
});

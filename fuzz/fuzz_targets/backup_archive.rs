//! The backup archive reader (`backup::inspect`: format detection, gzip, tar, the manifest and
//! every member against it) on arbitrary bytes: a manifest or a typed refusal, never a panic,
//! and never more inflated than the manifest's bounded sizes allow. Encrypted archives stop
//! at the password check (a password would run argon2 on every input).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|archive: &[u8]| {
    let _ = backup::inspect(archive, None);
});

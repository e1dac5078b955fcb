//! Random identifiers and tokens from the operating system's source, in one place so every
//! caller handles its failure the same way (a token is never made guessable to carry on).

/// `N` bytes from the operating system's random source.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// `N` random bytes, hex-encoded; `None` when the random source fails.
pub(crate) fn hex_token<const N: usize>() -> Option<String> {
    bytes::<N>().ok().map(hex::encode)
}

//! The one wall-clock read of the daemon ([`now_ms`]) and how instants are shown. Everything
//! below the daemon takes time as a parameter.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// An instant as RFC 3339 with milliseconds, in UTC.
pub fn format_ms(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Accepts RFC 3339 (`2026-11-24T10:00:00Z`) or milliseconds since the epoch.
pub fn parse_ms(text: &str) -> Option<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Some(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let since_epoch = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Some(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

//! The wall-clock reads of the daemon ([`now_ms`], and [`coarse_now_ms`] on the policy path)
//! and how instants are shown. Everything below the daemon takes time as a parameter.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let since_epoch =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch at the kernel's last tick: up to a tick (4 ms at this
/// kernel's 250 Hz) behind [`now_ms`], for what every policy call reads and a tick cannot
/// change (the `Date` header, a credentials check remembered for minutes). The kernel serves
/// it without reading the hardware clock: 7 ns against 29 ns a read in this appliance's VM.
pub fn coarse_now_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let ms = i128::from(now.tv_sec) * 1_000 + i128::from(now.tv_nsec) / 1_000_000;
    u64::try_from(ms).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the coarse clock is the wall clock in milliseconds, never ahead of it: a `Date`
    // header and a remembered credentials check read it as they read `now_ms`. Its readings
    // move on by the tick, not by the second, over 100 ms. (The bounds are loose so that a
    // test thread put off for a while cannot fail them; a wrong clock or unit is off by far
    // more.)
    #[test]
    fn the_coarse_clock_is_the_wall_clock_in_milliseconds_never_ahead() {
        let started = std::time::Instant::now();
        let mut readings_ms = std::collections::BTreeSet::new();
        while started.elapsed() < std::time::Duration::from_millis(100) {
            let coarse_ms = coarse_now_ms();
            let fine_ms = now_ms();
            assert!(coarse_ms <= fine_ms && fine_ms - coarse_ms < 1_000, "{coarse_ms} {fine_ms}");
            readings_ms.insert(coarse_ms);
        }
        assert!(readings_ms.len() >= 5, "{readings_ms:?}");
    }
}

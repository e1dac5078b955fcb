//! Warnings about what outsiders do (a refused cluster connection) logged at most once per
//! source and interval, with the count of lines suppressed since: a flood of refused
//! connections must not flood the journal (5,116 lines in 25 s before this).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// One warning per source per this long.
pub const LOG_INTERVAL_MS: u64 = 60_000;
/// Sources remembered; beyond this the memory is cleared (a few more lines, never more memory).
pub const SOURCES_TRACKED_MAX: usize = 1_024;

struct Source {
    logged_ms: u64,
    suppressed: u64,
}

#[derive(Default)]
pub struct LogLimit {
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl LogLimit {
    /// `Some(suppressed)`: log now, saying how many lines were suppressed since the last one;
    /// `None`: suppress this line.
    pub fn allow(&self, source: IpAddr, now_ms: u64) -> Option<u64> {
        let mut sources = crate::base::sync::lock(&self.sources);
        if sources.len() >= SOURCES_TRACKED_MAX && !sources.contains_key(&source) {
            sources.clear();
        }
        match sources.get_mut(&source) {
            Some(entry) if now_ms.saturating_sub(entry.logged_ms) < LOG_INTERVAL_MS => {
                entry.suppressed += 1;
                None
            }
            Some(entry) => {
                let suppressed = std::mem::take(&mut entry.suppressed);
                entry.logged_ms = now_ms;
                Some(suppressed)
            }
            None => {
                sources.insert(source, Source { logged_ms: now_ms, suppressed: 0 });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_and_interval_with_the_count_suppressed() {
        let limit = LogLimit::default();
        let (flooder, other) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        let logged = (0..5_000).filter(|i| limit.allow(flooder, *i).is_some()).count();
        assert_eq!(logged, 1);
        assert_eq!(limit.allow(other, 10), Some(0), "other sources are still logged");
        assert_eq!(limit.allow(flooder, LOG_INTERVAL_MS), Some(4_999));
        assert_eq!(limit.allow(flooder, LOG_INTERVAL_MS + 1), None);
    }
}

//! Clock skew: events stamped ahead of the time they were received.
//!
//! A source whose clock runs ahead (or an attacker who writes a future
//! date) cannot blind correlation: the rule engine correlates every event
//! at no later than its receive time (`rules::EngineConfig::max_ahead`).
//! What remains is to tell someone. An event stamped more than
//! `alert_after` ahead is counted for its org, and its source (reporter
//! address) gets a *clock-skew system event*: an RFC 5424 line written by
//! vigil, parsed like any other and stored in the source's org with
//! `event_type = vigil.clock_skew`, at most once per `every` per source, so
//! a skewed source costs one event per period, not one per line. The table
//! of sources is bounded; when it is full of recent alerts, further
//! sources are still counted but not announced until entries expire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parsers::{EventTime, OrgId};

/// Clock-skew detection settings.
#[derive(Clone, Debug)]
pub struct SkewConfig {
    /// Events stamped further than this ahead of their receive time are skewed.
    pub alert_after: Duration,
    /// A source is announced at most this often.
    pub every: Duration,
    /// Sources remembered at most.
    pub max_sources: usize,
}

impl Default for SkewConfig {
    fn default() -> SkewConfig {
        SkewConfig { alert_after: Duration::from_secs(2), every: Duration::from_secs(600), max_sources: 4096 }
    }
}

/// Per-org counts and per-source announcements.
#[derive(Debug, Default)]
pub(crate) struct SkewWatch {
    /// Skewed events accepted, per org.
    pub counts: HashMap<OrgId, u64>,
    /// When each source was last announced (unix nanos of receive time).
    announced: HashMap<IpAddr, i128>,
}

impl SkewWatch {
    /// Whether `source` should be announced now (and notes that it is).
    pub fn announce(&mut self, source: IpAddr, now: EventTime, config: &SkewConfig) -> bool {
        let now = now.unix_nanos();
        let every = i128::try_from(config.every.as_nanos()).unwrap_or(i128::MAX);
        if let Some(last) = self.announced.get(&source)
            && now.saturating_sub(*last) < every
        {
            return false;
        }
        if !self.announced.contains_key(&source) && self.announced.len() >= config.max_sources {
            self.announced.retain(|_, last| now.saturating_sub(*last) < every);
            if self.announced.len() >= config.max_sources {
                return false;
            }
        }
        self.announced.insert(source, now);
        true
    }
}

/// How far `time` is ahead of `received_at`, when it is further than
/// `alert_after`.
pub(crate) fn ahead(time: EventTime, received_at: EventTime, config: &SkewConfig) -> Option<Duration> {
    let diff = time.unix_nanos().saturating_sub(received_at.unix_nanos());
    let limit = i128::try_from(config.alert_after.as_nanos()).unwrap_or(i128::MAX);
    (diff > limit).then(|| Duration::from_nanos(u64::try_from(diff).unwrap_or(u64::MAX)))
}

/// The system event's line: RFC 5424, facility syslog (5), warning (4).
pub(crate) fn line(collector: &str, source: IpAddr, ahead: Duration, received_at: EventTime) -> String {
    let secs = ahead.as_secs_f64();
    // RFC 5424 HOSTNAME: 1-255 printable ASCII characters.
    let collector: String = collector.chars().take(255).map(|c| if c.is_ascii_graphic() { c } else { '-' }).collect();
    let collector = if collector.is_empty() { "-".to_owned() } else { collector };
    format!(
        "<44>1 {received_at} {collector} vigil - clock-skew [vigil@32473 reporter=\"{source}\" ahead_secs=\"{secs:.3}\"] \
         events from {source} are stamped {secs:.0} s ahead of their receive time; rules correlate them at their receive time"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_announced_once_per_period_and_the_table_is_bounded() {
        let config = SkewConfig { max_sources: 2, ..SkewConfig::default() };
        let mut watch = SkewWatch::default();
        let t = |s: i64| EventTime::from_unix(s, 0, 0);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        assert!(watch.announce(ip(1), t(0), &config));
        assert!(!watch.announce(ip(1), t(599), &config));
        assert!(watch.announce(ip(2), t(10), &config));
        assert!(!watch.announce(ip(3), t(20), &config), "the table is full of recent alerts");
        assert!(watch.announce(ip(1), t(600), &config), "a period later");
        assert!(watch.announce(ip(3), t(611), &config), "an expired entry makes room");
    }

    #[test]
    fn skew_is_measured_against_the_receive_time() {
        let config = SkewConfig::default();
        let t = |s: i64| EventTime::from_unix(s, 0, 0);
        assert_eq!(ahead(t(102), t(100), &config), None, "within the tolerance");
        assert_eq!(ahead(t(390), t(100), &config), Some(Duration::from_secs(290)));
        assert_eq!(ahead(t(0), t(100), &config), None);
    }
}

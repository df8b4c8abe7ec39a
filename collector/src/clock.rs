//! Time as a parameter: components that wait or window take a [`Clock`],
//! so tests run on virtual time ([`ManualClock`]) and replay is
//! deterministic, while production uses [`SystemClock`].

use std::time::Duration;

use parsers::EventTime;
pub use parsers::protocol::{Clock, ManualClock};

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EventTime {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        EventTime::from_unix(i64::try_from(since.as_secs()).unwrap_or(i64::MAX), since.subsec_nanos(), 0)
    }

    fn sleep_until(&self, deadline: EventTime) {
        let now = self.now();
        let nanos = deadline.unix_nanos() - now.unix_nanos();
        if nanos > 0 {
            std::thread::sleep(Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().unix_secs() > 1_577_836_800);
    }
}

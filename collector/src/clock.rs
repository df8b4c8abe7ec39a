//! Time as a parameter: components that wait or window take a [`Clock`],
//! so tests run on virtual time ([`ManualClock`]) and replay is
//! deterministic, while production uses [`SystemClock`].

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use parsers::EventTime;

/// A source of "now" that can also wait.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> EventTime;

    /// Blocks until `deadline` (or returns at once if it has passed).
    fn sleep_until(&self, deadline: EventTime);
}

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

/// A clock that moves only when told to: `sleep_until` blocks until another
/// thread advances the clock past the deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<(Mutex<EventTime>, Condvar)>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: EventTime) -> ManualClock {
        ManualClock { inner: Arc::new((Mutex::new(start), Condvar::new())) }
    }

    /// Moves the clock to `t` (never backwards) and wakes sleepers.
    pub fn set(&self, t: EventTime) {
        let (lock, cvar) = &*self.inner;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if t > *now {
            *now = t;
        }
        cvar.notify_all();
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        let now = self.now();
        self.set(now.add_secs(secs));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> EventTime {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(&self, deadline: EventTime) {
        let (lock, cvar) = &*self.inner;
        let mut now = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while now.unix_nanos() < deadline.unix_nanos() {
            now = cvar.wait(now).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::new(EventTime::from_unix(1000, 0, 0));
        let sleeper = clock.clone();
        let handle = std::thread::spawn(move || {
            sleeper.sleep_until(EventTime::from_unix(1180, 0, 0));
            sleeper.now()
        });
        clock.advance(100);
        clock.advance(100);
        assert_eq!(handle.join().unwrap().unix_secs(), 1200);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().unix_secs() > 1_577_836_800);
    }
}

//! What one user may take of the extension socket: connection slots, and visits per minute.
//!
//! The rate is kept per user for as long as its window lasts, apart from the connections, so
//! closing and reopening a connection does not start a new minute. Over the rate, a visit is
//! not refused (the extension would drop it for good, and a queue resent after an outage is
//! legitimately large): the connection waits for the next window, which slows only that user.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Users whose windows have ended are forgotten once this many are kept.
const PRUNE_AT: usize = 1024;

/// Keyed by the user's account (`K`: a uid on Unix, a SID on Windows).
pub struct Limits<K> {
    max_connections: usize,
    max_per_user: usize,
    max_visits: u32,
    window: Duration,
    slots: Mutex<HashMap<K, usize>>,
    rates: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq + Clone> Limits<K> {
    pub fn new(max_connections: usize, max_per_user: usize, max_visits: u32) -> Self {
        Self::with_window(max_connections, max_per_user, max_visits, RATE_WINDOW)
    }

    fn with_window(
        max_connections: usize,
        max_per_user: usize,
        max_visits: u32,
        window: Duration,
    ) -> Self {
        Self {
            max_connections,
            max_per_user,
            max_visits,
            window,
            slots: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a connection slot for `user`, or says why not.
    pub fn admit(&self, user: &K) -> Result<(), &'static str> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = slots.values().sum();
        if total >= self.max_connections {
            return Err("too many browser connections to the agent");
        }
        let mine = slots.entry(user.clone()).or_default();
        if *mine >= self.max_per_user {
            return Err("too many browser connections for this user");
        }
        *mine += 1;
        Ok(())
    }

    pub fn release(&self, user: &K) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = slots.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                slots.remove(user);
            }
        }
    }

    /// Counts a visit against the user's rate: Ok, or how long until the next window.
    pub fn take_visit(&self, user: &K, now: Instant) -> Result<(), Duration> {
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        if rates.len() >= PRUNE_AT {
            rates.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let (start, visits) = rates.entry(user.clone()).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *visits = 0;
        }
        if *visits >= self.max_visits {
            return Err(self.window.saturating_sub(now.duration_since(*start)));
        }
        *visits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_user_and_in_all() {
        let l = Limits::<u32>::new(3, 2, 10);
        assert!(l.admit(&1).is_ok() && l.admit(&1).is_ok());
        assert_eq!(
            l.admit(&1),
            Err("too many browser connections for this user")
        );
        assert!(l.admit(&2).is_ok());
        assert_eq!(
            l.admit(&3),
            Err("too many browser connections to the agent")
        );
        l.release(&1);
        assert!(l.admit(&3).is_ok());
    }

    #[test]
    fn the_rate_outlives_the_connection_and_says_how_long_to_wait() {
        let l = Limits::<u32>::with_window(8, 8, 2, Duration::from_secs(60));
        let t = Instant::now();
        assert!(l.admit(&7).is_ok());
        assert!(l.take_visit(&7, t).is_ok() && l.take_visit(&7, t).is_ok());
        // Reconnecting does not start a new minute.
        l.release(&7);
        assert!(l.admit(&7).is_ok());
        let wait = l.take_visit(&7, t + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(l.take_visit(&8, t).is_ok(), "another user is not held");
        assert!(l.take_visit(&7, t + Duration::from_secs(60)).is_ok());
    }
}

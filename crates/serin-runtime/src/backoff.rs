//! Per-object retry delays: exponential from 1 s to 5 min with jitter, reset once the object
//! reconciles again (backon's exponential backoff, one per object). Pure apart from the clock
//! backon's jitter reads.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first retry delay.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5 * 60);

/// The retry delays of the objects whose last reconcile failed.
#[derive(Debug, Default)]
pub struct Backoffs {
    failing: Mutex<HashMap<String, ExponentialBackoff>>,
}

fn builder() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

impl Backoffs {
    /// The delay before retrying `key` after one more failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing
            .entry(key.to_owned())
            .or_insert_with(|| builder().build())
            .next()
            .unwrap_or(MAX_DELAY)
    }

    /// `key` reconciled: its next failure starts again from [`MIN_DELAY`].
    pub fn reset(&self, key: &str) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_five_minutes_and_reset_on_success() {
        let b = Backoffs::default();
        let delays: Vec<Duration> = (0..12).map(|_| b.next("a")).collect();
        // Jitter adds up to one more delay's worth on top of 1 s, 2 s, 4 s...
        assert!(delays[0] >= MIN_DELAY && delays[0] <= 2 * MIN_DELAY, "{delays:?}");
        assert!(delays[3] >= Duration::from_secs(8), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * MAX_DELAY), "{delays:?}");
        assert!(delays[11] >= MAX_DELAY, "{delays:?}");
        assert!(b.next("b") <= 2 * MIN_DELAY, "per object");
        b.reset("a");
        assert!(b.next("a") <= 2 * MIN_DELAY, "reset on success");
    }
}

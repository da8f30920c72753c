//! An anytime-valid sign test on paired windows, for a MetricTemplate compared with the primary:
//! the template's query is evaluated for the canary and for the primary over the same window,
//! and each window where both have a value is one trial, "the canary is worse" or not. Pure.
//!
//! When the canary is no worse than the primary, the canary's value is worse in a window with
//! probability `θ ≤ 1/2` (ties count as not worse). The test mixes, equally weighted, the
//! likelihood ratios of the alternatives `θj` of [`GRID`] against `θ = 1/2`:
//!
//! ```text
//! E = Σj wj · (2θj)^s · (2(1 − θj))^(n − s)      (s worse windows of n)
//! ```
//!
//! Each factor has expectation `2θ(θj − 1/2) + 2(1 − θj) ≤ 1` for `θ ≤ 1/2`, so `E` is a
//! non-negative supermartingale starting at 1 and `P(E ever reaches 1/α) ≤ α` (Ville's
//! inequality): it may be looked at after every window. The test uses only the sign of each
//! difference, so one extreme window (a burst) counts once. It assumes that, for a canary as good
//! as the primary, each side is as likely to be the worse one in a window: with very different
//! traffic the smaller side's value is noisier, which for rates and quantiles of few requests
//! mostly makes it look better (fewer errors seen, a lower top bucket), not worse.

pub use crate::api::canary::Paired;

/// The alternatives (the probability that the canary is worse in a window) the test mixes.
pub const GRID: [f64; 5] = [0.6, 0.7, 0.8, 0.9, 0.95];

/// Which values of a metric are worse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worse {
    Higher,
    Lower,
}

impl Worse {
    /// `higher` (the default: error rates, latencies) or `lower`.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("lower") => Self::Lower,
            _ => Self::Higher,
        }
    }
}

/// `ln E` after `worse` worse windows of `windows`.
pub fn log_evidence(windows: u32, worse: u32) -> f64 {
    let (n, s) = (f64::from(windows), f64::from(worse.min(windows)));
    let terms: Vec<f64> = GRID
        .iter()
        .map(|t| s * (2.0 * t).ln() + (n - s) * (2.0 * (1.0 - t)).ln())
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + (terms.iter().map(|t| (t - max).exp()).sum::<f64>() / GRID.len() as f64).ln()
}

/// The fewest windows, all worse, that reach `1/α`: no rollback can come sooner.
pub fn windows_needed(alpha: f64) -> u32 {
    let bound = (1.0 / alpha).ln();
    (1..=10_000)
        .find(|n| log_evidence(*n, *n) >= bound)
        .unwrap_or(10_000)
}

impl Paired {
    /// Adds one window: the canary's and the primary's value (`None`: no value). The canary is
    /// worse when it is beyond the primary's value by more than `tolerance` times (higher) or
    /// below it by more than that (lower).
    pub fn add(&mut self, canary: Option<f64>, primary: Option<f64>, worse: Worse, tolerance: f64) {
        let (Some(c), Some(p)) = (
            canary.filter(|v| v.is_finite()),
            primary.filter(|v| v.is_finite()),
        ) else {
            self.skipped += 1;
            return;
        };
        let slack = p.abs() * (tolerance.max(1.0) - 1.0);
        let is_worse = match worse {
            Worse::Higher => c > p + slack,
            Worse::Lower => c < p - slack,
        };
        self.windows += 1;
        self.worse += u32::from(is_worse);
        self.canary = Some(c);
        self.primary = Some(p);
        self.max_log_evidence = self.max_log_evidence.max(self.log_evidence());
    }

    /// `ln E` now.
    pub fn log_evidence(&self) -> f64 {
        log_evidence(self.windows, self.worse)
    }

    /// Whether the evidence has reached `1/α`: the canary is worse.
    pub fn shown_worse(&self, alpha: f64) -> bool {
        self.max_log_evidence >= (1.0 / alpha).ln()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn evidence_grows_with_worse_windows_only() {
        assert_eq!(log_evidence(0, 0), 0.0);
        assert!(
            log_evidence(10, 5) < 0.0,
            "as many worse as not is evidence for the canary"
        );
        assert!(log_evidence(10, 9) > log_evidence(10, 8));
        // All worse: 6 windows at α = 0.05, 9 at α = 0.01, 13 at α = 0.001.
        assert_eq!(windows_needed(0.05), 6);
        assert_eq!(windows_needed(0.01), 9);
        assert_eq!(windows_needed(0.001), 13);
    }

    #[test]
    fn a_window_without_a_value_is_skipped_and_ties_are_not_worse() {
        let mut p = Paired::default();
        p.add(None, Some(1.0), Worse::Higher, 1.0);
        p.add(Some(f64::NAN), Some(1.0), Worse::Higher, 1.0);
        p.add(Some(1.0), Some(1.0), Worse::Higher, 1.0);
        p.add(Some(1.15), Some(1.0), Worse::Higher, 1.2);
        p.add(Some(1.3), Some(1.0), Worse::Higher, 1.2);
        p.add(Some(0.7), Some(1.0), Worse::Lower, 1.2);
        assert_eq!((p.windows, p.worse, p.skipped), (4, 2, 2));
        assert_eq!((p.canary, p.primary), (Some(0.7), Some(1.0)));
    }

    #[test]
    fn identical_sides_rarely_roll_back_and_a_worse_canary_does_soon() {
        let mut rng = StdRng::seed_from_u64(7);
        let runs = 4_000;
        let alpha = 0.05;
        // A/A: both sides drawn from one distribution, 60 windows each (30 minutes at 30 s).
        let mut false_alarms = 0;
        for _ in 0..runs {
            let mut p = Paired::default();
            for _ in 0..60 {
                let level: f64 = rng.random_range(50.0..150.0);
                let c = level * rng.random_range(0.8..1.2);
                let q = level * rng.random_range(0.8..1.2);
                p.add(Some(c), Some(q), Worse::Higher, 1.0);
            }
            false_alarms += usize::from(p.shown_worse(alpha));
        }
        let rate = false_alarms as f64 / f64::from(runs);
        assert!(rate <= alpha, "false alarms {rate}");
        // The canary 30 % slower: found in every run, in 12 windows or fewer in most.
        let mut times = Vec::new();
        for _ in 0..200 {
            let mut p = Paired::default();
            let mut found = None;
            for w in 0..60 {
                let level: f64 = rng.random_range(50.0..150.0);
                let c = 1.3 * level * rng.random_range(0.8..1.2);
                let q = level * rng.random_range(0.8..1.2);
                p.add(Some(c), Some(q), Worse::Higher, 1.0);
                if p.shown_worse(alpha) {
                    found = Some(w + 1);
                    break;
                }
            }
            times.push(found.unwrap_or_else(|| panic!("not found in 60 windows: {p:?}")));
        }
        times.sort_unstable();
        assert!(times[times.len() / 2] <= 12, "median {times:?}");
    }
}

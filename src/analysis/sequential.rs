//! An anytime-valid comparison of the canary's and the primary's bad-event counts (errors, or
//! requests slower than a fixed bound), however the traffic split changes. Pure.
//!
//! Per analysis interval `t` the canary serves `m` requests of which `a` are bad, the primary
//! `k` and `b`. With bad events arriving as Poisson processes whose per-request rates are
//! `λc = ρ·λp` (λp free to drift), the canary's share of the bad events given their total
//! `n = a + b` is binomial: `a | n ~ Bin(n, ρq / (ρq + 1 − q))` with `q = m / (m + k)`, the
//! canary's share of the requests. The hypothesis "the canary is no worse than the primary by
//! more than a factor δ" (`ρ ≤ δ`) is tested with a mixture of likelihood ratios over a fixed
//! grid of alternatives `ρj = δ·gj`:
//!
//! ```text
//! ℓj += a·ln(ρj/δ) − n·[ln(1 + (ρj − 1)q) − ln(1 + (δ − 1)q)]
//! ln E = ln Σj wj·exp(ℓj)
//! ```
//!
//! `E` is a non-negative supermartingale under the hypothesis, starting at 1, so by Ville's
//! inequality `P(E ever reaches 1/α) ≤ α`: the test may be looked at after every interval and
//! the rollout stopped the moment it crosses, with false alarms still below α (Lindon & Malek,
//! "Anytime-valid inference for multinomial count data", NeurIPS 2022). The anytime p-value is
//! `1 / max E`. The effect `ρ` is estimated by conditional maximum likelihood, with an
//! anytime-valid confidence sequence: the `r` not rejected by the same test run against
//! `ρ = r` with a two-sided grid.
//!
//! The binomial model assumes bad events arrive independently. Errors in clumps (a retry storm,
//! one bad pod) make a plain count test raise false alarms. The evidence keeps every interval's
//! raw counts; at each look it estimates how clumped bad events are (the Pearson dispersion φ
//! of each side's counts against that side's constant rate, pooled: 1 when independent, about
//! the clump size otherwise) and divides the log likelihood ratios by φ, which is the test on
//! clump counts. No verdict is given before [`MIN_INTERVALS_WITH_BAD`] intervals had bad
//! events, so that a single clump cannot decide before φ can be estimated.

pub use crate::api::canary::{Counts, Evidence, Scrape};

impl Counts {
    /// Canary requests and bad ones, primary requests and bad ones.
    pub fn new(canary_requests: f64, canary_bad: f64, primary_requests: f64, primary_bad: f64) -> Self {
        Self {
            canary_requests,
            canary_bad,
            primary_requests,
            primary_bad,
        }
    }

    /// The canary's share of the requests, when both sides served some.
    fn share(&self) -> Option<f64> {
        (self.canary_requests > 0.0 && self.primary_requests > 0.0)
            .then(|| self.canary_requests / (self.canary_requests + self.primary_requests))
    }

    /// Whether the counts are usable: finite, not negative, no more bad events than requests.
    pub fn valid(&self) -> bool {
        let all = [
            self.canary_requests,
            self.canary_bad,
            self.primary_requests,
            self.primary_bad,
        ];
        all.iter().all(|v| v.is_finite() && *v >= 0.0)
            && self.canary_bad <= self.canary_requests
            && self.primary_bad <= self.primary_requests
    }
}

/// The alternatives the one-sided test mixes, as multiples of the tolerance δ, equally
/// weighted: the evidence is at most `ln 6` below that of the best of them.
pub const GRID: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// The settings of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// The false-alarm bound (0 < α < 1).
    pub alpha: f64,
    /// How much worse than the primary the canary may be (δ ≥ 1): the hypothesis is `ρ ≤ δ`.
    pub tolerance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            tolerance: 1.0,
        }
    }
}

/// Intervals with bad events (on either side) before the test gives a verdict.
pub const MIN_INTERVALS_WITH_BAD: usize = 6;

/// What the test says now.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// `ln E`: the evidence that the canary is worse than δ times the primary.
    pub log_evidence: f64,
    /// The anytime-valid p-value.
    pub p_value: f64,
    /// Whether the evidence crossed `ln(1/α)`: the canary is worse, roll back.
    pub worse: bool,
    /// Whether a verdict is allowed yet (enough intervals with bad events).
    pub decidable: bool,
    /// The dispersion the counts were divided by.
    pub dispersion: f64,
    /// The estimated ratio of the canary's rate to the primary's (`None` without bad events).
    pub ratio: Option<f64>,
    /// The confidence sequence for the ratio at level 1 − α (bounds 0.01 and 100 mean
    /// unbounded on that side).
    pub interval: (f64, f64),
}

impl Evidence {
    /// Adds an interval's counts and looks: returns whether the canary is now shown worse. An
    /// interval in which one side served no request says nothing and is skipped; one without
    /// bad events adds nothing to the evidence but counts for the dispersion.
    pub fn add(&mut self, settings: &Settings, counts: &Counts) -> bool {
        if self.log_ratios.len() != GRID.len() {
            self.log_ratios = vec![0.0; GRID.len()];
        }
        let Some(q) = counts.share().filter(|_| counts.valid()) else {
            self.skipped += 1;
            return self.shown_worse(settings);
        };
        let (a, n) = (counts.canary_bad, counts.canary_bad + counts.primary_bad);
        let delta = settings.tolerance.max(1.0);
        let null = ((delta - 1.0) * q).ln_1p();
        for (l, g) in self.log_ratios.iter_mut().zip(GRID) {
            let rho = delta * g;
            *l += a * g.ln() - n * (((rho - 1.0) * q).ln_1p() - null);
        }
        self.intervals.push(Scrape {
            q,
            m: counts.canary_requests,
            a,
            k: counts.primary_requests,
            b: counts.primary_bad,
        });
        self.totals.canary_requests += counts.canary_requests;
        self.totals.canary_bad += counts.canary_bad;
        self.totals.primary_requests += counts.primary_requests;
        self.totals.primary_bad += counts.primary_bad;
        if self.decidable() {
            self.max_log_evidence = self.max_log_evidence.max(self.log_evidence());
        }
        self.shown_worse(settings)
    }

    fn shown_worse(&self, settings: &Settings) -> bool {
        self.decidable() && self.max_log_evidence >= (1.0 / settings.alpha).ln()
    }

    /// Whether enough intervals had bad events for a verdict.
    pub fn decidable(&self) -> bool {
        self.intervals.iter().filter(|s| s.a + s.b > 0.0).count() >= MIN_INTERVALS_WITH_BAD
    }

    /// How clumped the bad events are: the pooled Pearson dispersion of each side's counts
    /// against its own constant rate per request; at least 1, and 1 while fewer than
    /// [`MIN_INTERVALS_WITH_BAD`] intervals had bad events. A drifting rate raises it too,
    /// which only makes the test more cautious.
    pub fn dispersion(&self) -> f64 {
        if !self.decidable() {
            return 1.0;
        }
        let side = |requests: fn(&Scrape) -> f64, bad: fn(&Scrape) -> f64| -> (f64, f64) {
            let total: f64 = self.intervals.iter().map(bad).sum();
            let exposure: f64 = self.intervals.iter().map(requests).sum();
            let used: Vec<&Scrape> = self.intervals.iter().filter(|s| requests(s) > 0.0).collect();
            if total <= 0.0 || used.len() < 2 {
                return (0.0, 0.0);
            }
            let rate = total / exposure;
            let chi2 = used
                .iter()
                .map(|s| {
                    let expected = requests(s) * rate;
                    (bad(s) - expected).powi(2) / expected
                })
                .sum();
            (chi2, used.len() as f64 - 1.0)
        };
        let (cc, cd) = side(|s| s.m, |s| s.a);
        let (pc, pd) = side(|s| s.k, |s| s.b);
        if cd + pd <= 0.0 {
            return 1.0;
        }
        ((cc + pc) / (cd + pd)).max(1.0)
    }

    /// `ln E` now, the counts divided by the dispersion (0 before any interval).
    pub fn log_evidence(&self) -> f64 {
        if self.log_ratios.is_empty() {
            return 0.0;
        }
        let phi = self.dispersion();
        let scaled: Vec<f64> = self.log_ratios.iter().map(|l| l / phi).collect();
        log_sum_exp(&scaled) - (GRID.len() as f64).ln()
    }

    /// The judgement at level α.
    pub fn judge(&self, settings: &Settings) -> Judgement {
        Judgement {
            log_evidence: self.log_evidence(),
            p_value: (-self.max_log_evidence.max(0.0)).exp().min(1.0),
            worse: self.shown_worse(settings),
            decidable: self.decidable(),
            dispersion: self.dispersion(),
            ratio: self.estimate(),
            interval: self.confidence_sequence(settings.alpha),
        }
    }

    /// The conditional maximum-likelihood ratio: the `ρ` at which the canary's expected share
    /// of the bad events, interval by interval, adds up to its observed bad events.
    fn estimate(&self) -> Option<f64> {
        let observed: f64 = self.intervals.iter().map(|s| s.a).sum();
        let total: f64 = self.intervals.iter().map(|s| s.a + s.b).sum();
        if total <= 0.0 {
            return None;
        }
        let expected = |rho: f64| -> f64 {
            self.intervals
                .iter()
                .map(|s| (s.a + s.b) * rho * s.q / (rho * s.q + 1.0 - s.q))
                .sum()
        };
        // Increasing in ρ; bisected on ln ρ over [1e-3, 1e3].
        let (mut lo, mut hi) = (-3.0 * std::f64::consts::LN_10, 3.0 * std::f64::consts::LN_10);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if expected(mid.exp()) < observed {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(((lo + hi) / 2.0).exp())
    }

    /// `ln E` of the test of `ρ = r` against the two-sided grid `r·gj`, `r/gj`, the counts
    /// divided by `phi`.
    fn log_evidence_at(&self, r: f64, phi: f64) -> f64 {
        let alternatives: Vec<f64> = GRID.iter().flat_map(|g| [r * g, r / g]).collect();
        let ratios: Vec<f64> = alternatives
            .iter()
            .map(|rho| {
                self.intervals
                    .iter()
                    .map(|s| {
                        s.a * (rho / r).ln()
                            - (s.a + s.b) * (((rho - 1.0) * s.q).ln_1p() - ((r - 1.0) * s.q).ln_1p())
                    })
                    .sum::<f64>()
                    / phi
            })
            .collect();
        log_sum_exp(&ratios) - (alternatives.len() as f64).ln()
    }

    /// The ratios not rejected at level α, as their hull on a log grid from 0.01 to 100.
    fn confidence_sequence(&self, alpha: f64) -> (f64, f64) {
        let bound = (1.0 / alpha).ln();
        let phi = self.dispersion();
        let kept: Vec<f64> = (0..=400)
            .map(|i| 10f64.powf(-2.0 + f64::from(i) / 100.0))
            .filter(|r| self.log_evidence_at(*r, phi) < bound)
            .collect();
        match (kept.first(), kept.last()) {
            (Some(lo), Some(hi)) => (*lo, *hi),
            // Everything rejected cannot happen for a coherent test; say "unknown".
            _ => (0.01, 100.0),
        }
    }
}

fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(m: f64, a: f64, k: f64, b: f64) -> Counts {
        Counts::new(m, a, k, b)
    }

    /// The counts split over `parts` equal intervals (the evidence of a constant split is the
    /// same however its intervals are cut).
    fn split(evidence: &mut Evidence, settings: &Settings, c: Counts, parts: usize) -> bool {
        let p = parts as f64;
        let mut worse = false;
        for _ in 0..parts {
            worse = evidence.add(
                settings,
                &counts(
                    c.canary_requests / p,
                    c.canary_bad / p,
                    c.primary_requests / p,
                    c.primary_bad / p,
                ),
            );
        }
        worse
    }

    #[test]
    fn the_worked_example_fails_the_canary() {
        // 30 min at 10 %: canary 12,000 requests and 30 errors, primary 108,000 and 130.
        let settings = Settings::default();
        let mut evidence = Evidence::default();
        let worse = split(
            &mut evidence,
            &settings,
            counts(12_000.0, 30.0, 108_000.0, 130.0),
            MIN_INTERVALS_WITH_BAD,
        );
        let j = evidence.judge(&settings);
        assert!(worse && j.worse, "ln E above ln 20 = 2.996: {j:?}");
        assert_eq!(j.dispersion, 1.0, "steady errors");
        assert!((j.log_evidence - 4.184).abs() < 0.01, "{j:?}");
        assert!((j.p_value - (-4.184f64).exp()).abs() < 1e-3);
        let ratio = j.ratio.expect("errors seen");
        assert!((ratio - 2.08).abs() < 0.01, "{ratio}");
        assert!((j.interval.0 - 1.04).abs() < 0.03, "{:?}", j.interval);
        assert!((j.interval.1 - 3.77).abs() < 0.1, "{:?}", j.interval);
    }

    #[test]
    fn no_verdict_before_enough_intervals_with_errors() {
        let settings = Settings::default();
        let mut evidence = Evidence::default();
        // One clump of 50 errors on the canary: overwhelming for an independent-errors test.
        assert!(!evidence.add(&settings, &counts(1_000.0, 50.0, 9_000.0, 0.0)));
        assert!(!evidence.add(&settings, &counts(1_000.0, 0.0, 9_000.0, 0.0)));
        let j = evidence.judge(&settings);
        assert!(!j.decidable && !j.worse, "{j:?}");
        assert_eq!(j.p_value, 1.0, "nothing counted before a verdict is allowed");
    }

    #[test]
    fn a_zero_baseline_fails_at_three_canary_errors_not_two() {
        // 5 % weight, no primary error: 3 canary errors give E = 72 (fail), 2 give 13.
        let settings = Settings::default();
        let parts = MIN_INTERVALS_WITH_BAD;
        let mut three = Evidence::default();
        assert!(split(
            &mut three,
            &settings,
            counts(1_500.0, 3.0, 28_500.0, 0.0),
            parts
        ));
        let mut two = Evidence::default();
        split(&mut two, &settings, counts(1_500.0, 2.0, 28_500.0, 0.0), parts);
        let j = two.judge(&settings);
        assert!(!j.worse, "{j:?}");
        assert!(j.log_evidence > 1.5 && j.log_evidence < 2.996, "{j:?}");
    }

    #[test]
    fn no_traffic_and_no_errors_are_no_evidence() {
        let settings = Settings::default();
        let mut evidence = Evidence::default();
        evidence.add(&settings, &counts(0.0, 0.0, 1_000.0, 3.0));
        evidence.add(&settings, &counts(f64::NAN, 0.0, 1_000.0, 3.0));
        evidence.add(&settings, &counts(10.0, 11.0, 1_000.0, 3.0));
        assert_eq!(evidence.skipped, 3);
        for _ in 0..5 {
            evidence.add(&settings, &counts(100.0, 0.0, 900.0, 0.0));
        }
        let j = evidence.judge(&settings);
        assert_eq!(j.log_evidence, 0.0);
        assert_eq!(j.p_value, 1.0);
        assert_eq!(j.ratio, None);
        assert!(!j.worse && !j.decidable);
    }

    #[test]
    fn an_identical_canary_gathers_no_evidence_and_a_better_one_less() {
        let settings = Settings::default();
        let mut same = Evidence::default();
        let mut better = Evidence::default();
        for _ in 0..30 {
            same.add(&settings, &counts(1_000.0, 10.0, 9_000.0, 90.0));
            better.add(&settings, &counts(1_000.0, 2.0, 9_000.0, 90.0));
        }
        let j = same.judge(&settings);
        assert!(!j.worse);
        assert!(j.log_evidence < 0.0, "{j:?}");
        assert!((j.ratio.expect("errors") - 1.0).abs() < 1e-6);
        assert!(j.interval.0 < 1.0 && j.interval.1 > 1.0, "{j:?}");
        assert!(better.log_evidence() < same.log_evidence());
    }

    #[test]
    fn a_tolerance_forgives_a_canary_within_it() {
        let lenient = Settings {
            alpha: 0.05,
            tolerance: 3.0,
        };
        let mut evidence = Evidence::default();
        let worse = split(
            &mut evidence,
            &lenient,
            counts(12_000.0, 30.0, 108_000.0, 130.0),
            MIN_INTERVALS_WITH_BAD,
        );
        assert!(!worse, "twice the primary is within 3x");
    }

    #[test]
    fn clumped_errors_are_discounted_by_their_dispersion() {
        let settings = Settings::default();
        let mut steady = Evidence::default();
        let mut clumped = Evidence::default();
        for i in 0..20 {
            let even = i % 2 == 0;
            steady.add(
                &settings,
                &counts(1_000.0, 10.0, 9_000.0, if even { 85.0 } else { 95.0 }),
            );
            // The same totals, in clumps: all or nothing on each side, alternately.
            clumped.add(
                &settings,
                &counts(
                    1_000.0,
                    if even { 20.0 } else { 0.0 },
                    9_000.0,
                    if even { 0.0 } else { 180.0 },
                ),
            );
        }
        assert!(steady.dispersion() < 1.1, "{}", steady.dispersion());
        assert!(clumped.dispersion() > 10.0, "{}", clumped.dispersion());
        assert!(clumped.log_evidence() < 1.0, "{}", clumped.log_evidence());
        assert!(!clumped.judge(&settings).worse);
    }
}

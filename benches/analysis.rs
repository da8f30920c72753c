//! The canary analysis simulator: synthetic request streams through serin's sequential
//! comparison with the primary (`serin::analysis::sequential`) and through Flagger's fixed
//! threshold checks, side by side on the same streams. No cluster. `make analysis-bench` runs
//! it and writes the tables into docs/analysis.md (between its `figures` markers);
//! `SERIN_ANALYSIS_RUNS` sets the runs per row (default 1,000), `SERIN_ANALYSIS_WRITE=0`
//! prints without writing.
//!
//! A run is one rollout: `stepWeight: 10`, `maxWeight: 50`, `interval: 1m`, `threshold: 5`
//! (Flagger's documented example). Requests arrive as Poisson processes; errors are per request
//! (independent), or in clumps of 10 on one side at a time (a retry storm, one bad pod). Every
//! 10 s scrape feeds the sequential test, which rolls back the moment its evidence crosses
//! 1/α; Flagger's method checks the canary's success rate over each 1-minute interval against
//! its bound, and rolls back at the fifth failed check. Both promote when the weights run out.
//!
//! A MetricTemplate (here Istio's P99 latency query) compared with the primary runs the sign
//! test of `serin::analysis::paired` on each 30 s window's P99 of each side, computed from
//! log-normal latencies; Flagger's method checks the canary's P99 of each interval against a
//! fixed bound.

use std::fmt::Write as _;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serin::analysis::{
    paired::{Paired, Worse},
    sequential::{Counts, Evidence, Settings},
};

const SCRAPE_SECONDS: f64 = 10.0;
const SCRAPES_PER_INTERVAL: usize = 6;
const WEIGHTS: [f64; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];
const THRESHOLD: u32 = 5;
/// The sequential test's least canary requests before its verdict counts (the no-data policy:
/// hold until then).
const MIN_REQUESTS: f64 = 100.0;
const CLUMP: f64 = 10.0;

fn poisson(rng: &mut StdRng, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 50.0 {
        // Knuth: count uniforms until their product falls below e^-λ.
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0.0, rng.random::<f64>());
        while p > limit {
            k += 1.0;
            p *= rng.random::<f64>();
        }
        return k;
    }
    (lambda + lambda.sqrt() * normal(rng)).round().max(0.0)
}

fn normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Bad requests among `n`, each bad with probability `p`: exact (geometric gaps) while few are
/// expected, normal beyond.
fn binomial(rng: &mut StdRng, n: f64, p: f64) -> f64 {
    if n <= 0.0 || p <= 0.0 {
        return 0.0;
    }
    if n * p < 50.0 {
        let log_q = (-p).ln_1p();
        let (mut count, mut at) = (0.0, 0.0);
        loop {
            at += (rng.random::<f64>().max(f64::MIN_POSITIVE).ln() / log_q).floor() + 1.0;
            if at > n {
                return count;
            }
            count += 1.0;
        }
    }
    (n * p + (n * p * (1.0 - p)).sqrt() * normal(rng))
        .round()
        .clamp(0.0, n)
}

/// Bad requests among `n` at rate `p`, independent or in clumps.
fn bad(rng: &mut StdRng, n: f64, p: f64, clumped: bool) -> f64 {
    if clumped {
        (CLUMP * poisson(rng, n * p / CLUMP)).min(n)
    } else {
        binomial(rng, n, p)
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    rps: f64,
    /// The primary's bad-request rate, and the canary's as a multiple of it.
    base: f64,
    factor: f64,
    clumped: bool,
    /// Flagger's bound on the canary's share of bad requests in an interval (a success rate of
    /// `100·(1 − bound)`).
    flagger_bound: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Promoted,
    RolledBack,
}

/// One scrape's counts at canary weight `w`.
fn scrape(rng: &mut StdRng, s: &Scenario, w: f64) -> Counts {
    let m = poisson(rng, s.rps * SCRAPE_SECONDS * w);
    let k = poisson(rng, s.rps * SCRAPE_SECONDS * (1.0 - w));
    Counts {
        canary_requests: m,
        canary_bad: bad(rng, m, (s.base * s.factor).min(1.0), s.clumped),
        primary_requests: k,
        primary_bad: bad(rng, k, s.base, s.clumped),
    }
}

/// A rollout judged by serin's sequential test: its outcome and the seconds it took.
fn sequential(rng: &mut StdRng, s: &Scenario, alpha: f64) -> (Outcome, f64) {
    let settings = Settings {
        alpha,
        tolerance: 1.0,
    };
    let mut evidence = Evidence::default();
    let (mut step, mut canary_seen, mut t) = (0, 0.0, 0.0);
    loop {
        for _ in 0..SCRAPES_PER_INTERVAL {
            let counts = scrape(rng, s, WEIGHTS[step]);
            t += SCRAPE_SECONDS;
            let worse = evidence.add(&settings, &counts);
            canary_seen += counts.canary_requests;
            // Rolled back the moment the evidence crosses, once the minimum is served.
            if canary_seen >= MIN_REQUESTS && worse {
                return (Outcome::RolledBack, t);
            }
        }
        // The no-data policy `hold`: no step while the canary has served fewer than the
        // minimum, for at most ten minutes (the progress deadline), then on.
        if canary_seen >= MIN_REQUESTS || t >= 600.0 {
            step += 1;
            if step == WEIGHTS.len() {
                return (Outcome::Promoted, t);
            }
        }
    }
}

/// A rollout judged by Flagger's method on the canary's success rate: its outcome and the
/// seconds it took.
fn flagger(rng: &mut StdRng, s: &Scenario) -> (Outcome, f64) {
    let (mut step, mut failed, mut t) = (0, 0, 0.0);
    loop {
        let (mut requests, mut bad) = (0.0, 0.0);
        for _ in 0..SCRAPES_PER_INTERVAL {
            let counts = scrape(rng, s, WEIGHTS[step]);
            t += SCRAPE_SECONDS;
            requests += counts.canary_requests;
            bad += counts.canary_bad;
        }
        // No request: Flagger's "no values found" fails the check.
        if requests > 0.0 && bad / requests <= s.flagger_bound {
            step += 1;
            if step == WEIGHTS.len() {
                return (Outcome::Promoted, t);
            }
        } else {
            failed += 1;
            if failed >= THRESHOLD {
                return (Outcome::RolledBack, t);
            }
        }
    }
}

/// The P99 of `n` log-normal latencies (median 100 ms × `factor`, σ = 0.5), by linear
/// interpolation between order statistics; `None` without requests (no value).
fn p99(rng: &mut StdRng, n: f64, factor: f64) -> Option<f64> {
    let n = n as usize;
    if n == 0 {
        return None;
    }
    let mut v: Vec<f64> = (0..n)
        .map(|_| 100.0 * factor * (0.5 * normal(rng)).exp())
        .collect();
    v.sort_by(f64::total_cmp);
    let rank = 0.99 * (n - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// The seconds of a MetricTemplate comparison's window.
const WINDOW_SECONDS: f64 = 30.0;

/// A rollout whose P99 template is compared with the primary's by serin's sign test, a look
/// per window: its outcome and the seconds it took.
fn template_sign_test(rng: &mut StdRng, rps: f64, factor: f64, alpha: f64) -> (Outcome, f64) {
    let mut paired = Paired::default();
    let mut t = 0.0;
    let windows = (SCRAPE_SECONDS * SCRAPES_PER_INTERVAL as f64 / WINDOW_SECONDS) as usize;
    for w in WEIGHTS {
        for _ in 0..windows {
            let (m, k) = (
                poisson(rng, rps * WINDOW_SECONDS * w),
                poisson(rng, rps * WINDOW_SECONDS * (1.0 - w)),
            );
            let canary = p99(rng, m, factor);
            let primary = p99(rng, k, 1.0);
            paired.add(canary, primary, Worse::Higher, 1.0);
            t += WINDOW_SECONDS;
            if paired.shown_worse(alpha) {
                return (Outcome::RolledBack, t);
            }
        }
    }
    (Outcome::Promoted, t)
}

/// The same rollout judged by Flagger's method: the canary's P99 over each interval against
/// `bound` ms, rolled back at the fifth failed check.
fn template_flagger(rng: &mut StdRng, rps: f64, factor: f64, bound: f64) -> (Outcome, f64) {
    let (mut step, mut failed, mut t) = (0, 0, 0.0);
    let interval = SCRAPE_SECONDS * SCRAPES_PER_INTERVAL as f64;
    loop {
        t += interval;
        let requests = poisson(rng, rps * interval * WEIGHTS[step]);
        match p99(rng, requests, factor) {
            Some(value) if value <= bound => {
                step += 1;
                if step == WEIGHTS.len() {
                    return (Outcome::Promoted, t);
                }
            }
            _ => {
                failed += 1;
                if failed >= THRESHOLD {
                    return (Outcome::RolledBack, t);
                }
            }
        }
    }
}

struct Row {
    seq_rollbacks: usize,
    fl_rollbacks: usize,
    seq_times: Vec<f64>,
    fl_times: Vec<f64>,
    runs: usize,
}

fn simulate(s: &Scenario, runs: usize, alpha: f64, seed: u64) -> Row {
    let mut row = Row {
        seq_rollbacks: 0,
        fl_rollbacks: 0,
        seq_times: Vec::new(),
        fl_times: Vec::new(),
        runs,
    };
    for i in 0..runs as u64 {
        // The same stream for both methods (the same random draws while their weights agree).
        let stream = || StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
        let (so, st) = sequential(&mut stream(), s, alpha);
        let (fo, ft) = flagger(&mut stream(), s);
        if so == Outcome::RolledBack {
            row.seq_rollbacks += 1;
            row.seq_times.push(st);
        }
        if fo == Outcome::RolledBack {
            row.fl_rollbacks += 1;
            row.fl_times.push(ft);
        }
    }
    row
}

/// A rate with its 95 % Wilson interval, in percent.
fn rate(hits: usize, runs: usize) -> String {
    let (n, p) = (runs as f64, hits as f64 / runs as f64);
    let z = 1.96;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    format!(
        "{:.1} % [{:.1}, {:.1}]",
        p * 100.0,
        (centre - half).max(0.0) * 100.0,
        (centre + half).min(1.0) * 100.0
    )
}

fn median(times: &mut [f64]) -> String {
    if times.is_empty() {
        return "–".into();
    }
    times.sort_by(f64::total_cmp);
    format!("{:.0} s", times[times.len() / 2])
}

fn main() {
    let runs: usize = std::env::var("SERIN_ANALYSIS_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    let alpha = 0.05;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{runs} runs per row, α = {alpha}; rates with their 95 % interval. Flagger's method at two bounds: the common `min: 99` success rate, and an error budget of twice the base rate.\n"
    );

    let _ = writeln!(
        out,
        "### A/A: the canary identical to the primary (false rollbacks)\n"
    );
    let _ = writeln!(
        out,
        "| base error rate | traffic | errors | serin (sequential) | Flagger `min: 99` | Flagger, budget 2×base |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut seed = 1;
    for base in [0.001, 0.01, 0.05] {
        for rps in [50.0, 200.0, 2000.0] {
            for clumped in [false, true] {
                let scenario = |bound| Scenario {
                    rps,
                    base,
                    factor: 1.0,
                    clumped,
                    flagger_bound: bound,
                };
                seed += 1;
                let common = simulate(&scenario(0.01), runs, alpha, seed);
                let budget = simulate(&scenario(2.0 * base), runs, alpha, seed);
                let _ = writeln!(
                    out,
                    "| {}% | {rps} rps | {} | {} | {} | {} |",
                    base * 100.0,
                    if clumped { "clumps of 10" } else { "independent" },
                    rate(common.seq_rollbacks, runs),
                    rate(common.fl_rollbacks, runs),
                    rate(budget.fl_rollbacks, runs),
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "\n### Regressions: detection rate and median time to rollback (base 1 %, 200 rps)\n"
    );
    let _ = writeln!(
        out,
        "| canary | serin detects | serin's median time | Flagger (budget 2×base) detects | Flagger's median time |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    // Latency as the share of requests slower than the primary's p99 (a fixed bucket bound):
    // with log-normal latencies (σ = 0.5), P99 +20 % makes that share 2.5 %, +100 % 17.4 %.
    for (label, base, factor) in [
        ("error rate ×1.5", 0.01, 1.5),
        ("error rate ×2", 0.01, 2.0),
        ("error rate ×3", 0.01, 3.0),
        ("error rate ×5", 0.01, 5.0),
        ("P99 +20 % (slow share 1 % → 2.5 %)", 0.01, 2.5),
        ("P99 +100 % (slow share 1 % → 17.4 %)", 0.01, 17.4),
    ] {
        seed += 1;
        let mut row = simulate(
            &Scenario {
                rps: 200.0,
                base,
                factor,
                clumped: false,
                flagger_bound: 2.0 * base,
            },
            runs,
            alpha,
            seed,
        );
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            rate(row.seq_rollbacks, row.runs),
            median(&mut row.seq_times),
            rate(row.fl_rollbacks, row.runs),
            median(&mut row.fl_times),
        );
    }

    let _ = writeln!(out, "\n### Low traffic: 1 request a second\n");
    let _ = writeln!(
        out,
        "| canary | serin rolls back | Flagger `min: 99` rolls back | Flagger, budget 2×base, rolls back |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for (label, factor) in [("identical (1 % errors)", 1.0), ("error rate ×5", 5.0)] {
        seed += 1;
        let scenario = |bound| Scenario {
            rps: 1.0,
            base: 0.01,
            factor,
            clumped: false,
            flagger_bound: bound,
        };
        let common = simulate(&scenario(0.01), runs, alpha, seed);
        let budget = simulate(&scenario(0.02), runs, alpha, seed);
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            rate(common.seq_rollbacks, runs),
            rate(common.fl_rollbacks, runs),
            rate(budget.fl_rollbacks, runs),
        );
    }
    // The true P99 of the primary's latencies: 100 ms · e^(0.5 · 2.326).
    let true_p99 = 100.0 * (0.5f64 * 2.326).exp();
    let _ = writeln!(
        out,
        "\n### MetricTemplate: P99 latency compared by the sign test (30 s windows)\n"
    );
    let _ = writeln!(
        out,
        "Log-normal latencies (median 100 ms, σ = 0.5, true P99 {true_p99:.0} ms); Flagger's bound at 1.5 × the primary's P99 ({:.0} ms).\n",
        1.5 * true_p99
    );
    let _ = writeln!(
        out,
        "| canary | traffic | serin rolls back | serin's median time | Flagger rolls back | Flagger's median time |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (label, rps, factor) in [
        ("identical", 20.0, 1.0),
        ("identical", 200.0, 1.0),
        ("P99 +20 %", 200.0, 1.2),
        ("P99 +100 %", 200.0, 2.0),
    ] {
        seed += 1;
        let (mut serin_times, mut flagger_times) = (Vec::new(), Vec::new());
        for i in 0..runs as u64 {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
            if let (Outcome::RolledBack, t) = template_sign_test(&mut rng, rps, factor, alpha) {
                serin_times.push(t);
            }
            if let (Outcome::RolledBack, t) = template_flagger(&mut rng, rps, factor, 1.5 * true_p99) {
                flagger_times.push(t);
            }
        }
        let _ = writeln!(
            out,
            "| {label} | {rps} rps | {} | {} | {} | {} |",
            rate(serin_times.len(), runs),
            median(&mut serin_times),
            rate(flagger_times.len(), runs),
            median(&mut flagger_times),
        );
    }
    print!("{out}");

    if std::env::var("SERIN_ANALYSIS_WRITE").as_deref() != Ok("0") {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/analysis.md");
        let doc = std::fs::read_to_string(path).expect("docs/analysis.md");
        let (begin, end) = ("<!-- figures:begin -->\n", "<!-- figures:end -->");
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            panic!("docs/analysis.md has no figures markers");
        };
        let updated = format!("{}{begin}{out}{}", &doc[..b], &doc[e..]);
        std::fs::write(path, updated).expect("write docs/analysis.md");
        println!("wrote the figures into {path}");
    }
}

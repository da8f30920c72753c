//! The fault campaign: rollouts of good and bad revisions while the API server answers about 5%
//! of requests with 409, 429, 500 or a slow answer, watches close, Prometheus goes away and
//! comes back, and serin is killed with SIGKILL at random moments (with leader election for part
//! of the campaign). Every good rollout must end Succeeded with the new primary, every bad one
//! Failed with the old primary untouched, no weight step may be taken twice, no panic may appear
//! in the logs, and a leader hand-over must complete within the lease duration plus one renewal.
//!
//! `make test` runs a short campaign; `make chaos` a long one (SERIN_CHAOS_ROLLOUTS,
//! SERIN_CHAOS_KILLS) that writes its figures to SERIN_CHAOS_REPORT. Faults need the API
//! emulator, so the campaign runs on it whatever SERIN_TESTBED_CLUSTER says.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::Api;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serin::api::CanaryPhase;
use serin_testbed::{ClusterKind, TestbedOptions, apiserver::server::Fault};

use crate::support::{NS, Scenario, phase, repo};

/// A Lease's validity plus one renewal (client-go's 15 s and 2 s, serin's defaults).
const HAND_OVER_LIMIT: Duration = Duration::from_secs(17);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn primary_image(deployments: &Api<Deployment>) -> String {
    deployments
        .get("podinfo-primary")
        .await
        .ok()
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

/// The writes serin makes at every step, which faults are injected into (one at a time: a fault
/// waits for the next matching request, so piling them up would make a long outage). The test's
/// own requests are left alone, and so is the Lease: a hand-over is measured against the Lease's
/// timing, not against faults.
const FAULTED: &[(&str, &str)] = &[
    ("patch", "canaries"),
    ("patch", "virtualservices"),
    ("patch", "services"),
    ("patch", "destinationrules"),
    ("create", "events"),
    ("patch", "events"),
];

/// One fault: an error (409, 429, 500) or an answer three seconds late.
fn fault(rng: &mut StdRng) -> Fault {
    let (verb, resource) = FAULTED[rng.random_range(0..FAULTED.len())];
    let late = rng.random_range(0..5) == 0;
    Fault {
        verb: verb.into(),
        resource: resource.into(),
        count: 1,
        status: if late {
            0
        } else {
            [409, 429, 500][rng.random_range(0..3)]
        },
        delay_ms: if late { 3_000 } else { 0 },
    }
}

/// Patches the target, retrying what an injected fault refused.
fn patch_target(s: &Scenario, patch: &str) {
    for attempt in 0.. {
        let out =
            s.tb.kubectl()
                .args(["-n", NS, "patch", "deploy", "podinfo", "-p", patch])
                .output()
                .expect("kubectl runs");
        if out.status.success() {
            return;
        }
        assert!(attempt < 50, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many times each "Advance ... weight N" step has been recorded so far.
fn steps(s: &Scenario) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in s.events() {
        if e.starts_with("Advance podinfo.test canary weight") {
            *out.entry(e).or_default() += 1;
        }
    }
    out
}

/// Waits until the failed revision's errors have left the window of the builtin success rate
/// (30 s in the example): the next revision runs on the same workload name, so its first checks
/// would otherwise count them, and fail as they should (Flagger's analysis does the same). The
/// query is 1 once the workload's 5xx counter has not moved for 40 s, or has no series at all.
async fn errors_out_of_window(s: &Scenario) {
    let errors = format!(
        r#"istio_requests_total{{reporter="destination",destination_workload_namespace="{NS}",destination_workload="podinfo",response_code=~"5.."}}"#
    );
    let clean = format!("count(sum(increase({errors}[40s])) == 0) or absent({errors})");
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.prometheus_sum(&clean).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed revision's errors never left the window"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const LEADER_FLAGS: [&str; 3] = ["--leader-elect", "--leader-election-namespace", "default"];

/// Starts two replicas that elect a leader.
fn start_pair(s: &mut Scenario) {
    s.start_serin_with(&LEADER_FLAGS);
    s.start_serin_with(&LEADER_FLAGS);
}

/// The replica holding the Lease, and when it acquired it.
async fn holder(leases: &Api<Lease>) -> Option<(String, jiff::Timestamp)> {
    let spec = leases.get_opt(serin::cli::run::LEASE_NAME).await.ok()??.spec?;
    // Identities are the replica's POD_NAME, `_` and a random suffix.
    let name = spec.holder_identity?.split('_').next()?.to_owned();
    Some((name, spec.acquire_time?.0))
}

/// Kills serin at a random moment of a rollout. With two replicas electing a leader, the leader
/// is killed and the standby must take over within the Lease's duration plus one renewal
/// (measured from the kill to the new holder's acquire time); every third kill switches between
/// that and one replica without leader election (whose successor pair waits out the Lease the
/// last leader left behind).
async fn kill(s: &mut Scenario, leases: &Api<Lease>, figures: &mut Figures) {
    figures.kills += 1;
    let pair_next = (figures.kills / 3).is_multiple_of(2);
    let leading = if s.replicas().len() == 2 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((name, _)) = holder(leases).await
                && s.replicas().contains(&name)
            {
                break Some(name);
            }
            assert!(Instant::now() < deadline, "no replica holds the Lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        None
    };
    let killed = jiff::Timestamp::now();
    match leading {
        Some(leader) if pair_next => {
            s.kill_replica(&leader);
            let standby = s.replicas();
            let deadline = Instant::now() + Duration::from_secs(60);
            let acquired = loop {
                if let Some((name, at)) = holder(leases).await
                    && standby.contains(&name)
                {
                    break at;
                }
                assert!(
                    Instant::now() < deadline,
                    "the standby never took over from {leader}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            figures
                .hand_overs
                .push(Duration::try_from(acquired.duration_since(killed)).unwrap_or_default());
            s.start_serin_with(&LEADER_FLAGS);
        }
        _ => {
            s.kill_serin();
            if pair_next {
                let before = holder(leases).await;
                start_pair(s);
                let deadline = Instant::now() + Duration::from_secs(60);
                let acquired = loop {
                    if let Some((name, at)) = holder(leases).await
                        && Some(&name) != before.as_ref().map(|(n, _)| n)
                        && s.replicas().contains(&name)
                    {
                        break at;
                    }
                    assert!(Instant::now() < deadline, "no replica became leader");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                figures
                    .hand_overs
                    .push(Duration::try_from(acquired.duration_since(killed)).unwrap_or_default());
            } else {
                s.start_serin();
            }
        }
    }
}

#[derive(Default)]
struct Figures {
    rollouts: usize,
    good: usize,
    bad: usize,
    lost: Vec<String>,
    faults: usize,
    watch_closes: usize,
    prometheus_outages: usize,
    kills: usize,
    hand_overs: Vec<Duration>,
    longest_rollout: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_survive_api_faults_and_kills() {
    let rollouts = env_usize("SERIN_CHAOS_ROLLOUTS", 3);
    let kills_wanted = env_usize("SERIN_CHAOS_KILLS", 3);
    let mut rng = StdRng::seed_from_u64(env_usize("SERIN_CHAOS_SEED", 7) as u64);
    let mut s = Scenario::start_with(TestbedOptions {
        cluster: Some(ClusterKind::Emulator),
        ..TestbedOptions::full()
    })
    .await;
    let rules = std::fs::read_to_string(repo().join("charts/serin/files/rbac/leader-election.yaml"))
        .expect("the chart's leader election rules");
    s.tb.bind_cluster_role("serin-leader-election", &rules, "istio-system", "serin")
        .await
        .expect("leader election RBAC");
    s.apply(&repo().join("examples/canary"));
    // The campaign starts with two replicas electing a leader, and switches between that and
    // one replica without leader election every third kill.
    start_pair(&mut s);
    s.wait_canary("Initialized", Duration::from_secs(90), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;

    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "default");
    let mut figures = Figures::default();
    for i in 0..rollouts {
        let good = i % 3 != 2;
        let before = primary_image(&deployments).await;
        let image = format!("ghcr.io/stefanprodan/podinfo:6.{}.{i}", if good { 1 } else { 9 });
        let error_rate = if good { "null" } else { "\"0.5\"" };
        let last_applied = s
            .canaries()
            .get("podinfo")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|st| st.last_applied_spec);
        let steps_before = steps(&s);
        patch_target(
            &s,
            &format!(
                r#"{{"spec":{{"template":{{"metadata":{{"annotations":{{"testbed.serin.dev/error-rate":{error_rate}}}}},"spec":{{"containers":[{{"name":"podinfod","image":"{image}"}}]}}}}}}}}"#
            ),
        );
        let started = Instant::now();
        // Kills at random moments of this rollout, spread over the campaign.
        let kills_here = (kills_wanted - figures.kills).div_ceil(rollouts - i);
        let mut kill_at: Vec<Duration> = (0..kills_here)
            .map(|_| Duration::from_millis(rng.random_range(500..12_000)))
            .collect();
        kill_at.sort();
        let prometheus_outage = rng.random_range(0..3) == 0;
        let mut outage_done = false;
        let deadline = started + Duration::from_secs(300);
        let outcome = loop {
            let c = s.canaries().get("podinfo").await.ok();
            let st = c.as_ref().and_then(|c| c.status.clone()).unwrap_or_default();
            let moved_on = st.last_applied_spec != last_applied;
            if moved_on && matches!(st.phase, CanaryPhase::Succeeded | CanaryPhase::Failed) {
                break Some(st.phase);
            }
            if Instant::now() > deadline {
                break None;
            }
            // About one request of serin's in twenty fails or answers late; now and then every
            // watch closes.
            // One fault at a time: the next is injected once serin has met the previous one.
            if rng.random_range(0..4) == 0
                && s.tb.pending_faults().await.is_ok_and(|n| n == 0)
                && s.tb.inject_fault(&fault(&mut rng)).await.is_ok()
            {
                figures.faults += 1;
            }
            if rng.random_range(0..40) == 0 && s.tb.close_watches().await.is_ok() {
                figures.watch_closes += 1;
            }
            if kill_at.first().is_some_and(|at| started.elapsed() >= *at) {
                kill_at.remove(0);
                kill(&mut s, &leases, &mut figures).await;
            }
            // One outage per rollout at most: a failed query is a failed check (as in
            // Flagger), and two would reach the threshold of 2 and roll a good revision back.
            if prometheus_outage && !outage_done && started.elapsed() > Duration::from_secs(5) {
                outage_done = true;
                s.tb.set_prometheus_reachable(false);
                tokio::time::sleep(Duration::from_secs(5)).await;
                s.tb.set_prometheus_reachable(true);
                figures.prometheus_outages += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let took = started.elapsed();
        figures.longest_rollout = figures.longest_rollout.max(took);
        figures.rollouts += 1;
        let after = primary_image(&deployments).await;
        let kept = match (good, outcome) {
            (true, Some(CanaryPhase::Succeeded)) => after == image,
            (false, Some(CanaryPhase::Failed)) => after == before,
            _ => false,
        };
        if good {
            figures.good += 1;
        } else {
            figures.bad += 1;
        }
        if !kept {
            figures.lost.push(format!(
                "rollout {i} ({}): {outcome:?}, primary {after:?} (before {before:?}, new {image:?})",
                if good { "good" } else { "bad" }
            ));
        }
        if !good && i + 1 < rollouts {
            errors_out_of_window(&s).await;
        }
        // Each weight step once per rollout.
        for (step, count) in steps(&s) {
            let earlier = steps_before.get(&step).copied().unwrap_or(0);
            let taken = count.saturating_sub(earlier);
            assert!(taken <= 1, "rollout {i}: {step} taken {taken} times");
        }
    }
    s.tb.set_prometheus_reachable(true);

    let log = s.log();
    let panics = log.matches("panicked").count();
    let longest_hand_over = figures.hand_overs.iter().max().copied().unwrap_or_default();
    let report = format!(
        "| rollouts (good / bad) | API faults injected | watches closed | Prometheus outages | SIGKILLs | leader hand-overs (longest) | rollouts lost | panics | longest rollout |\n|---|---|---|---|---|---|---|---|---|\n| {} ({} / {}) | {} | {} | {} | {} | {} ({:.1} s) | {} | {} | {:.0} s |\n",
        figures.rollouts,
        figures.good,
        figures.bad,
        figures.faults,
        figures.watch_closes,
        figures.prometheus_outages,
        figures.kills,
        figures.hand_overs.len(),
        longest_hand_over.as_secs_f64(),
        figures.lost.len(),
        panics,
        figures.longest_rollout.as_secs_f64(),
    );
    println!("{report}");
    if let Ok(path) = std::env::var("SERIN_CHAOS_REPORT") {
        std::fs::write(&path, &report).expect("the report");
    }
    assert!(
        figures.lost.is_empty(),
        "rollouts lost: {:#?}\n{}",
        figures.lost,
        crate::support::tail(&log, 60)
    );
    assert_eq!(panics, 0, "{}", crate::support::tail(&log, 60));
    assert!(
        longest_hand_over <= HAND_OVER_LIMIT,
        "a hand-over took {longest_hand_over:?} (limit {HAND_OVER_LIMIT:?})"
    );
    assert!(
        figures.kills >= kills_wanted.min(rollouts * 3),
        "{} kills",
        figures.kills
    );
}

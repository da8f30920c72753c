//! `serin simulate` replays what the controller did: after a rollout rolled back (and one
//! promoted), a replay of the same time range from the test bed's real Prometheus takes the
//! same decisions, step by step; its recording replays to the same result without Prometheus.

use std::time::Duration;

use serin::api::CanaryPhase;

use crate::support::{NS, Scenario, phase, repo};

/// The controller's decisions of a run, as events say them: each weight, each failed check, the
/// rollback or the promotion.
fn decisions<'a>(events: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| {
            if e.starts_with("Advance podinfo.test canary weight")
                || e.starts_with("Rolling back podinfo.test failed checks threshold")
                || e.starts_with("Promotion completed!")
            {
                Some(e.to_owned())
            } else if e.starts_with("Halt") {
                Some("a failed check".to_owned())
            } else {
                None
            }
        })
        .collect()
}

impl Scenario {
    /// The first time (Unix seconds) an event on the Canary said `message`.
    fn event_time(&self, message: &str) -> i64 {
        let out = self.kubectl(&["-n", NS, "get", "events", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let times: Vec<i64> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["kind"] == "Canary" && e["message"] == message)
            .filter_map(|e| e["lastTimestamp"].as_str().or(e["eventTime"].as_str()))
            .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .collect();
        *times
            .iter()
            .max()
            .unwrap_or_else(|| panic!("no event {message:?}"))
    }

    /// The Canary's events last recorded at or after `from` (Unix seconds), oldest first, each
    /// once: a later run raises the count of an earlier run's Event of the same text.
    fn events_since(&self, from: i64) -> Vec<String> {
        let out = self.kubectl(&["-n", NS, "get", "events", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let mut items: Vec<(u64, String)> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["involvedObject"]["kind"] == "Canary")
            .filter(|e| {
                e["lastTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t.as_second() >= from)
            })
            .map(|e| {
                (
                    e["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .unwrap_or(0),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, m)| m).collect()
    }

    /// The controller's events from the first run's start on, each as many times as it happened.
    fn events_of_first_run(&self) -> Vec<String> {
        let events = self.events();
        let start = events
            .iter()
            .position(|e| e.starts_with("New revision detected!"))
            .expect("a run started");
        events[start..].to_vec()
    }

    /// `serin simulate` of the example over `from..to`: the replay as JSON, and a replay of the
    /// recording it wrote (without Prometheus) as JSON.
    fn simulate(&self, from: i64, to: i64) -> (serde_json::Value, serde_json::Value) {
        let recording =
            std::env::temp_dir().join(format!("serin-e2e-recording-{}-{from}.yaml", std::process::id()));
        let (from, to) = (from.to_string(), to.to_string());
        let canary = repo().join("examples/canary");
        let run = |args: &[&str], proxied: bool| {
            let mut command = if proxied {
                self.serin_command(&["simulate"])
            } else {
                let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_serin"));
                c.arg("simulate");
                c
            };
            let out = command.args(args).output().expect("serin simulate runs");
            assert!(
                out.status.success(),
                "serin simulate {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        };
        let live = run(
            &[
                canary.to_str().expect("utf8"),
                "-n",
                NS,
                "--prometheus",
                "http://prometheus.istio-system:9090",
                "--from",
                &from,
                "--to",
                &to,
                "--record",
                recording.to_str().expect("utf8"),
                "-o",
                "json",
            ],
            true,
        );
        let replayed = run(
            &[
                canary.to_str().expect("utf8"),
                "-n",
                NS,
                "--recorded",
                recording.to_str().expect("utf8"),
                "-o",
                "json",
            ],
            false,
        );
        let _ = std::fs::remove_file(recording);
        (live, replayed)
    }
}

fn replayed_events(replay: &serde_json::Value) -> Vec<String> {
    replay["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_recorded_metrics_takes_the_controllers_decisions() {
    let s = crate::initialized().await;

    // A revision answering half its requests with errors, rolled back by the controller.
    s.push_failing_revision();
    s.wait_failed(Duration::from_secs(120)).await;
    let controller = decisions(s.events_of_first_run().iter().map(String::as_str));
    assert!(
        controller.iter().any(|d| d.starts_with("Rolling back")),
        "{controller:?}"
    );
    let from = s.event_time("Starting canary analysis for podinfo.test");
    let to = s.event_time("Canary failed! Scaling down podinfo.test") + 30;
    let (live, recorded) = s.simulate(from, to);
    assert_eq!(live["outcome"], "rolled back", "{live:#}");
    assert_eq!(
        decisions(replayed_events(&live).iter().map(String::as_str)),
        controller,
        "{live:#}"
    );
    assert_eq!(recorded, live, "the recording replays to the same result");
    let failing = live["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|s| s["checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["metric"] == "request-success-rate")
        .map(|c| c["value"].as_f64().unwrap_or(f64::NAN))
        .collect::<Vec<_>>();
    assert!(
        !failing.is_empty() && failing.iter().all(|v| *v < 99.0),
        "the replay saw the errors the controller saw: {failing:?}"
    );

    // A good revision, promoted by the controller: the replay promotes through the same weights.
    // First the failed revision's errors leave the metrics' 30s window.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while s
        .prometheus_sum(
            r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo",response_code=~"5.*"}[30s]))"#,
        )
        .await
        > 0.0
    {
        assert!(std::time::Instant::now() < deadline, "the failed revision's errors never left the window");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.patch_target(
        r#"{"spec":{"template":{"metadata":{"annotations":{"testbed.serin.dev/error-rate":"0"}},"spec":{"containers":[{"name":"podinfod","image":"ghcr.io/stefanprodan/podinfo:6.0.3"}]}}}}"#,
    );
    s.wait_canary("Succeeded", Duration::from_secs(150), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let from = s.event_time("Starting canary analysis for podinfo.test");
    let controller = decisions(s.events_since(from).iter().map(String::as_str));
    assert!(controller.len() >= 4, "{controller:?}");
    let to = s.event_time("Promotion completed! Scaling down podinfo.test") + 30;
    let (live, recorded) = s.simulate(from, to);
    assert_eq!(live["outcome"], "promoted", "{live:#}");
    assert_eq!(
        decisions(replayed_events(&live).iter().map(String::as_str)),
        controller,
        "{live:#}"
    );
    assert_eq!(recorded, live);
}

//! People operating rollouts with `kubectl serin promote|abort|retry|pause|resume` through real
//! kubectl: each action carried out once, named after who asked, surviving a re-apply of the
//! unchanged Canary manifest (as a GitOps sync does) without being undone or repeated; an action
//! for an old revision ignored with an event; the answered requests kept to the last 20.

use std::time::{Duration, Instant};

use kube::{Api, api::ListParams};
use serin::api::{CanaryAction, CanaryPhase};

use crate::support::{NS, Scenario, phase, repo};

/// The example's Canary with ten steps of 5 % (100 s of analysis at `interval: 10s`), written
/// to a file to apply as Git would hold it.
fn manifest() -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/canary/canary.yaml")).expect("canary.yaml");
    let slow = text.replace(
        "maxWeight: 30\n    stepWeight: 10",
        "maxWeight: 50\n    stepWeight: 5",
    );
    assert_ne!(slow, text, "the example's steps changed: update this test");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = std::env::temp_dir().join(format!("serin-e2e-operate-{}-{nanos}.yaml", std::process::id()));
    std::fs::write(&path, slow).expect("write the manifest");
    path
}

impl Scenario {
    /// Applies the Canary manifest again, unchanged, twice: with kubectl's client-side apply,
    /// and with a server-side apply under another field manager, as Flux's kustomize-controller
    /// applies (the Canary changes owner, so serin reconciles it).
    fn reapply(&self, manifest: &std::path::Path) {
        let file = manifest.to_str().expect("utf8");
        self.kubectl(&["-n", NS, "apply", "-f", file]);
        self.kubectl(&[
            "-n",
            NS,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kustomize-controller",
            "-f",
            file,
        ]);
    }

    /// `kubectl serin ARGS` expected to fail: its standard error.
    fn kubectl_serin_fails(&self, args: &[&str]) -> String {
        let output = self.kubectl_serin_command(args).output().expect("kubectl runs");
        assert!(
            !output.status.success(),
            "kubectl serin {} succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn count_events(&self, prefix: &str) -> usize {
        self.events().iter().filter(|e| e.starts_with(prefix)).count()
    }

    async fn actions(&self) -> Vec<CanaryAction> {
        let api: Api<CanaryAction> = Api::namespaced(self.client.clone(), NS);
        api.list(&ListParams::default())
            .await
            .expect("list CanaryActions")
            .items
    }
}

/// The answered requests serin keeps per Canary.
const KEEP: usize = 20;

fn weight(c: &serin::api::Canary) -> i32 {
    c.status.as_ref().map_or(0, |s| s.canary_weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_pause_resume_abort_retry_and_promote_and_a_gitops_reapply_neither_undoes_nor_repeats_it() {
    let mut s = Scenario::start().await;
    let manifest = manifest();
    for file in [
        "deployment.yaml",
        "secret.yaml",
        "hpa.yaml",
        "metrictemplate.yaml",
    ] {
        s.apply(&repo().join("examples/canary").join(file));
    }
    s.apply(&manifest);
    s.start_serin();
    s.wait_canary("Initialized", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Initialized
    })
    .await;
    let me = s
        .kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .trim()
        .to_owned();
    assert!(!me.is_empty(), "kubectl auth whoami names the user");

    // A run in progress, paused.
    s.set_image("6.0.1");
    let c = s
        .wait_canary("the first step", Duration::from_secs(90), |c| {
            phase(c) == CanaryPhase::Progressing && weight(c) >= 5
        })
        .await;
    let revision = c
        .status
        .clone()
        .unwrap_or_default()
        .last_applied_spec
        .expect("revision");
    let out = s.kubectl_serin(&["-n", NS, "pause", "podinfo"]);
    assert_eq!(
        out.trim(),
        format!("Paused podinfo.test as asked by {me}: no step and no analysis until it is resumed")
    );
    s.reapply(&manifest);
    let held = s.canaries().get("podinfo").await.expect("canary");
    let held_weight = weight(&held);
    assert!(
        s.kubectl_serin(&["-n", NS, "get", "podinfo"])
            .contains("Progressing (paused)"),
        "get shows the pause"
    );
    // Two intervals and more pass without a step or a status write.
    let last_write = held.status.clone().unwrap_or_default().last_transition_time;
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let c = s.canaries().get("podinfo").await.expect("canary");
        assert_eq!(weight(&c), held_weight, "a paused run takes no step");
        assert_eq!(
            c.status.clone().unwrap_or_default().last_transition_time,
            last_write
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        s.kubectl_serin(&["-n", NS, "explain", "canary/podinfo"])
            .contains(&format!(
                "Paused by {me}: no step and no analysis until `kubectl serin resume podinfo`"
            )),
        "explain says who paused it"
    );

    // Resumed: the steps go on.
    let out = s.kubectl_serin(&["-n", NS, "resume", "podinfo"]);
    assert_eq!(out.trim(), format!("Resumed podinfo.test as asked by {me}"));
    s.wait_canary("a step after the resume", Duration::from_secs(60), |c| {
        weight(c) > held_weight
    })
    .await;

    // Aborted: rolled back at once, and a re-apply neither undoes nor repeats it.
    let out = s.kubectl_serin(&["-n", NS, "abort", "podinfo"]);
    assert_eq!(out.trim(), format!("Rolling back podinfo.test as asked by {me}"));
    s.wait_failed(Duration::from_secs(30)).await;
    s.reapply(&manifest);
    let err = s.kubectl_serin_fails(&["-n", NS, "pause", "podinfo"]);
    assert!(err.contains("no analysis is running (phase Failed)"), "{err}");
    assert_eq!(
        phase(&s.canaries().get("podinfo").await.expect("canary")),
        CanaryPhase::Failed
    );
    assert_eq!(s.count_events("Rolling back podinfo.test as asked by"), 1);

    // Retried: the same revision runs again without a commit; promoted once its analysis passes.
    let out = s.kubectl_serin(&["-n", NS, "retry", "podinfo"]);
    assert_eq!(
        out.trim(),
        format!("Retrying revision {revision} of podinfo.test as asked by {me}")
    );
    s.wait_canary("the retried run's second step", Duration::from_secs(90), |c| {
        phase(c) == CanaryPhase::Progressing && weight(c) >= 10
    })
    .await;
    let out = s.kubectl_serin(&["-n", NS, "promote", "podinfo"]);
    assert_eq!(
        out.trim(),
        format!(
            "Promoting podinfo.test as asked by {me}: the analysis passed, the remaining steps are skipped"
        )
    );
    s.wait_canary("Succeeded", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    s.reapply(&manifest);
    assert_eq!(
        s.count_events("Retrying revision"),
        1,
        "the retry is not repeated"
    );
    assert_eq!(s.count_events("Promoting podinfo.test as asked by"), 1);
    assert_eq!(
        phase(&s.canaries().get("podinfo").await.expect("canary")),
        CanaryPhase::Succeeded
    );

    // A new revision, promoted at once without the analysis; an action for the old revision is
    // ignored with an event naming who asked.
    s.set_image("6.0.3");
    // Its first step: the canary is ready (a promotion waits for that).
    s.wait_canary("the new revision's first step", Duration::from_secs(90), |c| {
        phase(c) == CanaryPhase::Progressing
            && weight(c) >= 5
            && c.status.as_ref().and_then(|s| s.last_applied_spec.as_deref()) != Some(revision.as_str())
    })
    .await;
    let err = s.kubectl_serin_fails(&["-n", NS, "abort", "podinfo", "--revision", &revision]);
    let ignored =
        format!("Ignored abort of podinfo.test asked by {me}: revision {revision} is no longer current");
    assert!(err.contains(&ignored), "{err}");
    assert_eq!(s.count_events(&ignored), 1, "{:#?}", s.events());
    let out = s.kubectl_serin(&["-n", NS, "promote", "podinfo", "--full"]);
    assert_eq!(
        out.trim(),
        format!("Promoting podinfo.test as asked by {me}, without the analysis")
    );
    s.wait_canary("the new revision promoted", Duration::from_secs(60), |c| {
        phase(c) == CanaryPhase::Succeeded
    })
    .await;
    let explained = s.kubectl_serin(&["-n", NS, "explain", "podinfo"]);
    assert!(explained.contains("Requests:"), "{explained}");
    assert!(explained.contains("promote --full for revision"), "{explained}");

    // Answered requests are kept to the last 20 per Canary.
    let many: String = (0..22)
        .map(|_| {
            format!(
                "apiVersion: serin.dev/v1alpha1\nkind: CanaryAction\nmetadata:\n  generateName: podinfo-resume-\nspec:\n  canary: podinfo\n  action: resume\n  revision: {revision}\n  requestedBy: {me:?}\n---\n"
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("serin-e2e-requests-{}.yaml", std::process::id()));
    std::fs::write(&file, many).expect("write");
    s.kubectl(&["-n", NS, "create", "-f", file.to_str().expect("utf8")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let actions = s.actions().await;
        if actions.len() == KEEP && actions.iter().all(CanaryAction::handled) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} requests, {} answered\n{}",
            actions.len(),
            actions.iter().filter(|a| a.handled()).count(),
            crate::support::tail(&s.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(manifest);
}

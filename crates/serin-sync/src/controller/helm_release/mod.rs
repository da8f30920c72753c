//! The HelmRelease reconciler, as Flux's helm-controller: the HelmChart made from `chart.spec`
//! (or named by `chartRef`), `dependsOn`, the values (`valuesFrom` then `values`), then one
//! Helm action chosen by [`plan`] from the release Helm keeps (install, upgrade, rollback or
//! uninstall as remediation, or nothing), run with the `helm` program; the conditions
//! (`Ready`, `Released`, `Remediated`, `Stalled`), `status.history` and Flux's events. Deleting a
//! HelmRelease uninstalls its release and deletes the HelmChart it made. Does I/O.

pub mod cluster;
pub mod plan;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use super::{
    Context, Error, events, finalizer,
    status::{self, ConditionStatus, Progress},
};
use crate::{
    api::{
        REQUESTED_AT_ANNOTATION,
        helm::{HelmChart, HelmRelease, HelmReleaseSpec, HelmReleaseStatus, ReleaseSnapshot},
    },
    helm::Release,
};
use plan::{Desired, Failures, Latest, Step};

/// The component name of the events, Flux's.
pub const COMPONENT: &str = "helm-controller";
/// The field manager of the HelmCharts a HelmRelease makes.
pub const FIELD_MANAGER: &str = "helm-controller";
/// Default timeout of every Helm action.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Condition types of a HelmRelease.
pub const RELEASED: &str = "Released";
pub const REMEDIATED: &str = "Remediated";
pub const TEST_SUCCESS: &str = "TestSuccess";

/// Where a HelmRelease's release lives.
#[derive(Clone, Debug)]
pub struct Target {
    pub release: String,
    pub namespace: String,
}

fn target(hr: &HelmRelease) -> Target {
    let ns = hr.namespace().unwrap_or_default();
    Target {
        release: plan::release_name(&hr.spec, &hr.name_any()),
        namespace: hr
            .spec
            .target_namespace
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or(ns),
    }
}

fn impersonation(hr: &HelmRelease) -> Option<String> {
    hr.spec.service_account_name.as_ref().map(|sa| {
        format!(
            "system:serviceaccount:{}:{sa}",
            hr.namespace().unwrap_or_default()
        )
    })
}

/// The HelmChart a HelmRelease uses: `(namespace, name)`.
fn chart_ref(hr: &HelmRelease) -> Option<(String, String)> {
    let ns = hr.namespace().unwrap_or_default();
    if let Some(template) = &hr.spec.chart {
        let source_ns = template
            .spec
            .source_ref
            .namespace
            .clone()
            .unwrap_or_else(|| ns.clone());
        return Some((source_ns, format!("{ns}-{}", hr.name_any())));
    }
    hr.spec
        .chart_ref
        .as_ref()
        .filter(|r| r.kind == "HelmChart")
        .map(|r| (r.namespace.clone().unwrap_or(ns), r.name.clone()))
}

/// Whether the HelmRelease releases the HelmChart `namespace/name`.
pub fn uses_chart(hr: &HelmRelease, namespace: &str, name: &str) -> bool {
    chart_ref(hr).is_some_and(|(ns, n)| ns == namespace && n == name)
}

/// Reconciles one HelmRelease.
pub async fn reconcile(hr: Arc<HelmRelease>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = hr.namespace().unwrap_or_default();
    let name = hr.name_any();
    let api: Api<HelmRelease> = Api::namespaced(ctx.client.clone(), &ns);
    let reference = hr.object_ref(&());
    let cleanup = || async {
        uninstall_on_deletion(&ctx, &hr).await;
    };
    if let Some(action) = finalizer::preamble(&*hr, &api, hr.spec.suspend == Some(true), cleanup).await? {
        return Ok(action);
    }
    let interval = status::parse_duration(&hr.spec.interval).unwrap_or(Duration::from_secs(600));
    let generation = hr.meta().generation;
    let mut st = hr.status.clone().unwrap_or_default();
    st.last_handled_reconcile_at = hr
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .cloned()
        .or(st.last_handled_reconcile_at.take());
    let now = jiff::Timestamp::now();
    if let Some(message) = unsupported_field(&hr) {
        Progress::new(&mut st.conditions, generation, now).stalled(status::UNSUPPORTED_REASON, &message);
        st.observed_generation = generation;
        patch_status(&api, &name, &st).await?;
        events::record(
            &ctx.client,
            &reference,
            COMPONENT,
            true,
            status::UNSUPPORTED_REASON,
            &message,
        )
        .await;
        return Ok(Action::await_change());
    }
    status::remove_condition(&mut st.conditions, status::STALLED);

    // Dependencies, then the chart.
    if let Some(message) = dependency_not_ready(&ctx, &hr).await {
        return not_ready(
            &ctx,
            &api,
            &hr,
            st,
            "DependencyNotReady",
            &message,
            ctx.config.requeue_dependency,
        )
        .await;
    }
    let Some((chart_ns, chart_name)) = chart_ref(&hr) else {
        let message = "spec.chart or spec.chartRef (kind HelmChart) is required".to_owned();
        return not_ready(&ctx, &api, &hr, st, "InvalidChartReference", &message, interval).await;
    };
    if hr.spec.chart.is_some()
        && let Err(e) = apply_chart(&ctx, &hr, &chart_ns, &chart_name).await
    {
        let message = format!("failed to create HelmChart '{chart_ns}/{chart_name}': {e}");
        return not_ready(
            &ctx,
            &api,
            &hr,
            st,
            "HelmChartCreateFailed",
            &message,
            ctx.config.retry_cap,
        )
        .await;
    }
    st.helm_chart = Some(format!("{chart_ns}/{chart_name}"));
    let charts: Api<HelmChart> = Api::namespaced(ctx.client.clone(), &chart_ns);
    let chart = charts.get_opt(&chart_name).await.map_err(Error::Kube)?;
    let ready_chart = chart.as_ref().and_then(|c| {
        let s = c.status.as_ref()?;
        let ready = status::condition(&s.conditions, status::READY).is_some_and(|r| r.status == "True");
        let current = s.observed_generation == c.meta().generation;
        (ready && current).then(|| s.clone())
    });
    let Some(chart_status) = ready_chart.and_then(|s| s.artifact.clone().map(|a| (s, a))) else {
        let why = chart
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| status::condition(&s.conditions, status::READY))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "no artifact yet".into());
        let message = format!("HelmChart '{chart_ns}/{chart_name}' is not ready: {why}");
        return not_ready(
            &ctx,
            &api,
            &hr,
            st,
            "SourceNotReady",
            &message,
            ctx.config.requeue_dependency,
        )
        .await;
    };
    let (chart_status, artifact) = chart_status;
    let chart_name_text = chart_status.observed_chart_name.clone().unwrap_or_default();
    let chart_path = ctx.config.storage_dir.join(&artifact.path);

    // The values.
    let values = match compose_values(&ctx, &hr).await {
        Ok(v) => v,
        Err(message) => return not_ready(&ctx, &api, &hr, st, "ValuesError", &message, interval).await,
    };
    let desired = Desired {
        chart_version: artifact.revision.clone(),
        config_digest: plan::digest(&values),
    };
    // Failures count against one desired state: a new generation, chart or values start over.
    let same_attempt = st.last_attempted_generation == generation
        && st.last_attempted_revision.as_deref() == Some(desired.chart_version.as_str())
        && st.last_attempted_config_digest.as_deref() == Some(desired.config_digest.as_str());
    if !same_attempt {
        st.install_failures = None;
        st.upgrade_failures = None;
    }
    let failures = Failures {
        install: st.install_failures.unwrap_or(0),
        upgrade: st.upgrade_failures.unwrap_or(0),
    };
    let t = target(&hr);
    let impersonate = impersonation(&hr);
    let helm = &ctx.config.helm;
    let history = match helm
        .history(&t.release, &t.namespace, impersonate.as_deref())
        .await
    {
        Ok(h) => h,
        Err(e) => {
            let message = format!("failed to read the release history: {e}");
            return not_ready(
                &ctx,
                &api,
                &hr,
                st,
                "ReconcileError",
                &message,
                ctx.config.retry_cap,
            )
            .await;
        }
    };
    let latest = match history.last() {
        Some(rev) => {
            let config_digest = match helm
                .values(&t.release, &t.namespace, rev.revision, impersonate.as_deref())
                .await
            {
                Ok(v) => plan::digest(&v),
                Err(_) => String::new(),
            };
            let previous_deployed = history
                .iter()
                .rev()
                .skip(1)
                .find(|r| r.status == "superseded" || r.status == "deployed")
                .map(|r| r.revision);
            let tests_failed = tests_count(&hr.spec, rev.revision == 1)
                && st
                    .history
                    .iter()
                    .find(|h| h.version == rev.revision)
                    .and_then(|h| h.test_hooks.as_ref())
                    .is_some_and(|hooks| hooks.values().any(|h| h.phase.as_deref() == Some("Failed")));
            Some(Latest {
                revision: rev.revision,
                status: if tests_failed {
                    "failed".to_owned()
                } else {
                    rev.status.clone()
                },
                chart_version: rev.chart_name_version().1,
                config_digest,
                previous_deployed,
            })
        }
        None => None,
    };
    let mut step = plan::plan(&hr.spec, latest.as_ref(), &desired, failures);
    // A change of the post-renderers re-renders the release.
    let post_renderers_digest = post_renderers_digest(&hr.spec);
    if step == Step::InSync && st.observed_post_renderers_digest != post_renderers_digest {
        step = Step::Upgrade;
    }
    let in_sync = step == Step::InSync;
    let chart_text = format!("{chart_name_text}@{}", desired.chart_version);
    let release_ref = |version: Option<i64>| match version {
        Some(v) => format!("{}/{}.v{v}", t.namespace, t.release),
        None => format!("{}/{}", t.namespace, t.release),
    };
    let mut requeue = super::jitter(interval);
    let mut progress_message = None;
    // The revision Helm's tests ran on in this reconcile, and whether they passed.
    let mut tested: Option<(i64, bool)> = None;
    match step {
        Step::InSync => {}
        Step::Stall(message) => {
            Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
                .stalled("RetriesExceeded", &message);
            st.observed_generation = generation;
            refresh_history(&ctx, &hr, &t, &mut st, impersonate.as_deref()).await;
            patch_status(&api, &name, &st).await?;
            return Ok(Action::await_change());
        }
        Step::Install | Step::Upgrade => {
            let install = step == Step::Install;
            let action = if install { "install" } else { "upgrade" };
            let timeout = action_timeout(&hr.spec, install);
            Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).mark_progressing(
                false,
                &format!(
                    "Running '{action}' action with timeout of {}",
                    status::format_duration(timeout)
                ),
            );
            patch_status(&api, &name, &st).await?;
            st.last_attempted_generation = generation;
            st.last_attempted_revision = Some(desired.chart_version.clone());
            st.last_attempted_config_digest = Some(desired.config_digest.clone());
            st.last_attempted_release_action = Some(action.to_owned());
            let values_file = write_values(&ctx, &values).map_err(|e| {
                tracing::warn!(error = %e, "writing the values failed");
                e
            });
            let post_render_plan = write_post_render_plan(&ctx, &hr.spec, &t.namespace);
            let result = match (&values_file, &post_render_plan) {
                (Ok(file), Ok(plan_file)) => {
                    let mut release = release_options(
                        &hr.spec,
                        &t,
                        &chart_path,
                        file.path(),
                        install,
                        impersonate.clone(),
                    );
                    release.post_renderer = post_renderer(&ctx, plan_file.path());
                    if release.post_renderer.is_none() && post_renderers_digest.is_some() {
                        Err(crate::helm::HelmError(
                            "spec.postRenderers, spec.commonMetadata: serin-sync does not know its own program to post-render with".into(),
                        ))
                    } else if install {
                        helm.install(&release).await
                    } else {
                        helm.upgrade(&release).await
                    }
                }
                (Err(e), _) => Err(crate::helm::HelmError(format!("writing the values: {e}"))),
                (_, Err(e)) => Err(crate::helm::HelmError(format!(
                    "writing the post-renderer's plan: {e}"
                ))),
            };
            let (succeeded_reason, failed_reason) = if install {
                ("InstallSucceeded", "InstallFailed")
            } else {
                ("UpgradeSucceeded", "UpgradeFailed")
            };
            match result {
                Ok(()) => {
                    let version = helm
                        .history(&t.release, &t.namespace, impersonate.as_deref())
                        .await
                        .ok()
                        .and_then(|h| h.last().map(|r| r.revision));
                    let message = format!(
                        "Helm {action} succeeded for release {} with chart {chart_text}",
                        release_ref(version)
                    );
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
                        .set(RELEASED, ConditionStatus::True, succeeded_reason, &message)
                        .remove(REMEDIATED);
                    st.install_failures = None;
                    st.upgrade_failures = None;
                    st.observed_post_renderers_digest = post_renderers_digest.clone();
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        false,
                        succeeded_reason,
                        &message,
                    )
                    .await;
                    // Helm's tests, when enabled: a failure that counts is a failure of the
                    // action (remediated as one).
                    tested = match version {
                        Some(v) => {
                            run_tests(&ctx, &hr, &t, &mut st, v, &chart_text, impersonate.as_deref()).await
                        }
                        None => None,
                    };
                    if tested.as_ref().is_some_and(|(_, passed)| !passed) && tests_count(&hr.spec, install) {
                        if install {
                            st.install_failures = Some(failures.install + 1);
                        } else {
                            st.upgrade_failures = Some(failures.upgrade + 1);
                        }
                        requeue = Duration::from_secs(1);
                    }
                }
                Err(err) => {
                    let message = format!(
                        "Helm {action} failed for release {} with chart {chart_text}: {err}",
                        release_ref(None)
                    );
                    if install {
                        st.install_failures = Some(failures.install + 1);
                    } else {
                        st.upgrade_failures = Some(failures.upgrade + 1);
                    }
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
                        RELEASED,
                        ConditionStatus::False,
                        failed_reason,
                        &message,
                    );
                    events::record(&ctx.client, &reference, COMPONENT, true, failed_reason, &message).await;
                    // Remediation (or the stall) follows at once.
                    requeue = Duration::from_secs(1);
                    progress_message = Some(message);
                }
            }
        }
        Step::Rollback(to) => {
            let timeout = hr
                .spec
                .rollback
                .as_ref()
                .and_then(|r| r.timeout.as_deref())
                .and_then(|t| status::parse_duration(t).ok())
                .unwrap_or_else(|| spec_timeout(&hr.spec));
            let wait = !hr
                .spec
                .rollback
                .as_ref()
                .and_then(|r| r.disable_wait)
                .unwrap_or(false);
            match helm
                .rollback(
                    &t.release,
                    &t.namespace,
                    Some(to),
                    timeout,
                    wait,
                    Some(hr.spec.max_history.unwrap_or(5)).filter(|m| *m > 0),
                    impersonate.as_deref(),
                )
                .await
            {
                Ok(()) => {
                    let message = format!(
                        "Helm rollback to previous release {} with chart {chart_text} succeeded",
                        release_ref(Some(to))
                    );
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
                        REMEDIATED,
                        ConditionStatus::True,
                        "RollbackSucceeded",
                        &message,
                    );
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        false,
                        "RollbackSucceeded",
                        &message,
                    )
                    .await;
                }
                Err(err) => {
                    let message = format!(
                        "Helm rollback to previous release {} failed: {err}",
                        release_ref(Some(to))
                    );
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
                        REMEDIATED,
                        ConditionStatus::False,
                        "RollbackFailed",
                        &message,
                    );
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        true,
                        "RollbackFailed",
                        &message,
                    )
                    .await;
                }
            }
            requeue = Duration::from_secs(1);
        }
        Step::Uninstall => {
            let (keep, hooks, timeout) = uninstall_options(&hr.spec);
            match helm
                .uninstall(
                    &t.release,
                    &t.namespace,
                    keep,
                    hooks,
                    timeout,
                    impersonate.as_deref(),
                )
                .await
            {
                Ok(()) => {
                    let message = format!(
                        "Helm uninstall succeeded for release {} with chart {chart_text}",
                        release_ref(latest.as_ref().map(|l| l.revision))
                    );
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
                        REMEDIATED,
                        ConditionStatus::True,
                        "UninstallSucceeded",
                        &message,
                    );
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        false,
                        "UninstallSucceeded",
                        &message,
                    )
                    .await;
                }
                Err(err) => {
                    let message = format!("Helm uninstall failed for release {}: {err}", release_ref(None));
                    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
                        REMEDIATED,
                        ConditionStatus::False,
                        "UninstallFailed",
                        &message,
                    );
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        true,
                        "UninstallFailed",
                        &message,
                    )
                    .await;
                }
            }
            requeue = Duration::from_secs(1);
        }
    }
    refresh_history(&ctx, &hr, &t, &mut st, impersonate.as_deref()).await;
    if let Some((version, passed)) = tested
        && let Some(snapshot) = st.history.iter_mut().find(|h| h.version == version)
    {
        let phase = if passed { "Succeeded" } else { "Failed" };
        let now = jiff::Timestamp::now().to_string();
        snapshot.test_hooks = Some(std::collections::BTreeMap::from([(
            "helm test".to_owned(),
            crate::api::helm::TestHookStatus {
                last_started: None,
                last_completed: Some(now),
                phase: Some(phase.to_owned()),
            },
        )]));
    }
    // Ready: a remediation forces it False; then failed tests that count; else the release's
    // outcome.
    let now = jiff::Timestamp::now();
    let mut progress = Progress::new(&mut st.conditions, generation, now);
    progress.remove(status::RECONCILING);
    let conditions_snapshot = progress_conditions(
        &st,
        &t,
        &chart_text,
        &desired,
        tests_count(&hr.spec, st.history.first().is_none_or(|h| h.version == 1)),
    );
    let mut progress = Progress::new(&mut st.conditions, generation, now);
    match conditions_snapshot {
        ReadyFrom::Remediated(reason, message) => {
            progress.set(status::READY, ConditionStatus::False, &reason, &message);
        }
        ReadyFrom::Released(true, reason, message) => {
            progress.set(status::READY, ConditionStatus::True, &reason, &message);
        }
        ReadyFrom::Released(false, reason, message) => {
            progress.set(status::READY, ConditionStatus::False, &reason, &message);
            progress.retrying();
        }
    }
    if let Some(message) = progress_message {
        tracing::debug!(helmrelease = %format!("{ns}/{name}"), "{message}");
    }
    let released = status::condition(&st.conditions, status::READY).is_some_and(|c| c.status == "True");
    if released && let Some(after) = follow_release(&ctx, &hr, &t, &mut st, in_sync).await {
        requeue = requeue.min(after);
    }
    st.observed_generation = generation;
    st.storage_namespace = Some(t.namespace.clone());
    patch_status(&api, &name, &st).await?;
    Ok(Action::requeue(requeue))
}

/// After a release in its desired state: drift (detected, reported or corrected, when the
/// release was in sync) and the health of its Canaries, which Ready then follows. The retry
/// delay when something is still to come.
async fn follow_release(
    ctx: &Context,
    hr: &HelmRelease,
    t: &Target,
    st: &mut HelmReleaseStatus,
    in_sync: bool,
) -> Option<Duration> {
    let ns = hr.namespace().unwrap_or_default();
    let client = match ctx.client_as(&ns, hr.spec.service_account_name.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the release's objects");
            return Some(ctx.config.retry_cap);
        }
    };
    let mut resources = crate::apply::manager::ResourceManager::new(client.clone());
    let impersonate = impersonation(hr);
    let objects = match cluster::release_objects(&ctx.config.helm, &mut resources, t, impersonate.as_deref())
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, release = %format!("{}/{}", t.namespace, t.release), "cannot check the release's objects");
            return Some(ctx.config.retry_cap);
        }
    };
    let ids: Vec<_> = objects.iter().map(crate::apply::order::ObjectId::of).collect();
    st.inventory = Some(crate::api::kustomization::ResourceInventory {
        entries: crate::apply::order::inventory(&ids),
    });
    let reference = hr.object_ref(&());
    let version = st.history.first().map(|h| h.version).unwrap_or(1);
    let release = format!("{}/{}.v{version}", t.namespace, t.release);
    let mode = cluster::drift_mode(&hr.spec);
    let mut retry = None;
    if in_sync && mode != cluster::DriftMode::Disabled {
        let targets = super::kustomization::canary_targets(&client).await;
        let options = cluster::drift_options(&hr.spec, targets);
        match cluster::drifted(&mut resources, &objects, &options).await {
            Ok(drifted) if drifted.is_empty() => {}
            Ok(drifted) if mode == cluster::DriftMode::Warn => {
                let changes: Vec<_> = drifted.iter().map(|(_, c)| c.clone()).collect();
                let message = format!(
                    "Cluster state of release {release} has drifted from the desired state:\n{}",
                    cluster::summary(&changes)
                );
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    true,
                    "DriftDetected",
                    &message,
                )
                .await;
            }
            Ok(drifted) => match cluster::correct(&mut resources, drifted, &options).await {
                Ok(done) => {
                    let message = format!(
                        "Cluster state of release {release} has been corrected:\n{}",
                        cluster::summary(&done)
                    );
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        false,
                        "DriftCorrected",
                        &message,
                    )
                    .await;
                }
                Err((e, done)) => {
                    let mut message =
                        format!("Failed to partially correct cluster state of release {release}: {e}");
                    if !done.is_empty() {
                        message.push_str(&format!("\n{}", cluster::summary(&done)));
                    }
                    events::record(
                        &ctx.client,
                        &reference,
                        COMPONENT,
                        true,
                        "DriftCorrectionFailed",
                        &message,
                    )
                    .await;
                    retry = Some(ctx.config.retry_cap);
                }
            },
            Err(e) => {
                let message = format!("Failed to detect drift of release {release}: {e}");
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    true,
                    "DriftDetectionFailed",
                    &message,
                )
                .await;
                retry = Some(ctx.config.retry_cap);
            }
        }
    }
    let generation = hr.meta().generation;
    let mut progress = Progress::new(&mut st.conditions, generation, jiff::Timestamp::now());
    match cluster::canary_health(&client, &mut resources, &objects).await {
        cluster::CanaryHealth::Healthy => retry,
        // Reconciling and Stalled make kstatus (a Kustomization's health check) see the same.
        cluster::CanaryHealth::Progressing(message) => {
            progress
                .set(status::READY, ConditionStatus::Unknown, "Progressing", &message)
                .set(
                    status::RECONCILING,
                    ConditionStatus::True,
                    "Progressing",
                    &message,
                );
            Some(ctx.config.health_interval)
        }
        cluster::CanaryHealth::Failed(message) => {
            progress
                .set(
                    status::READY,
                    ConditionStatus::False,
                    "HealthCheckFailed",
                    &message,
                )
                .set(
                    status::STALLED,
                    ConditionStatus::True,
                    "HealthCheckFailed",
                    &message,
                );
            Some(ctx.config.health_interval)
        }
    }
}

/// Whether failed Helm tests count as a failure of the release (`test.enable` without
/// `test.ignoreFailures` nor the action's `remediation.ignoreTestFailures`).
fn tests_count(spec: &HelmReleaseSpec, install: bool) -> bool {
    let Some(test) = spec.test.as_ref().filter(|t| t.enable == Some(true)) else {
        return false;
    };
    let remediation = if install {
        spec.install.as_ref().and_then(|i| i.remediation.as_ref())
    } else {
        spec.upgrade.as_ref().and_then(|u| u.remediation.as_ref())
    };
    test.ignore_failures != Some(true) && remediation.and_then(|r| r.ignore_test_failures) != Some(true)
}

/// Runs Helm's tests of release revision `version` when `test.enable`: `TestSuccess` and an
/// event with Flux's texts; whether they passed (`None` when tests are off).
async fn run_tests(
    ctx: &Context,
    hr: &HelmRelease,
    t: &Target,
    st: &mut HelmReleaseStatus,
    version: i64,
    chart: &str,
    impersonate: Option<&str>,
) -> Option<(i64, bool)> {
    let generation = hr.meta().generation;
    let Some(test) = hr.spec.test.as_ref().filter(|t| t.enable == Some(true)) else {
        status::remove_condition(&mut st.conditions, TEST_SUCCESS);
        return None;
    };
    let timeout = test
        .timeout
        .as_deref()
        .and_then(|t| status::parse_duration(t).ok())
        .unwrap_or_else(|| spec_timeout(&hr.spec));
    let release = format!("{}/{}.v{version}", t.namespace, t.release);
    let reference = hr.object_ref(&());
    let outcome = ctx
        .config
        .helm
        .test(&t.release, &t.namespace, timeout, impersonate)
        .await;
    let (passed, reason, message) = match outcome {
        Ok(hooks) => (
            true,
            "TestSucceeded",
            format!(
                "Helm test succeeded for release {release} with chart {chart}: {hooks} test hooks completed successfully"
            ),
        ),
        Err(e) => (
            false,
            "TestFailed",
            format!("Helm test failed for release {release} with chart {chart}: {e}"),
        ),
    };
    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now()).set(
        TEST_SUCCESS,
        if passed {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason,
        &message,
    );
    events::record(&ctx.client, &reference, COMPONENT, !passed, reason, &message).await;
    Some((version, passed))
}

/// The digest of what the post-renderer applies: `spec.postRenderers` and `spec.commonMetadata`
/// (none without either).
fn post_renderers_digest(spec: &HelmReleaseSpec) -> Option<String> {
    match (spec.post_renderers.is_empty(), &spec.common_metadata) {
        (true, None) => None,
        (_, None) => Some(plan::digest(
            &serde_json::to_value(&spec.post_renderers).unwrap_or_default(),
        )),
        (_, Some(metadata)) => Some(plan::digest(&json!({
            "postRenderers": spec.post_renderers,
            "commonMetadata": metadata,
        }))),
    }
}

/// The post-renderer's plan, in a file it is given.
fn write_post_render_plan(
    ctx: &Context,
    spec: &HelmReleaseSpec,
    namespace: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    let plan = crate::helm::post_render::Plan {
        namespace: namespace.to_owned(),
        kustomize: spec
            .post_renderers
            .iter()
            .filter_map(|p| p.kustomize.clone())
            .collect(),
        common_metadata: spec.common_metadata.clone(),
    };
    let dir = ctx.config.storage_dir.join("tmp");
    std::fs::create_dir_all(&dir)?;
    let mut file = tempfile::Builder::new()
        .prefix("post-render-")
        .suffix(".json")
        .tempfile_in(dir)?;
    use std::io::Write;
    file.write_all(serde_json::to_string(&plan).unwrap_or_default().as_bytes())?;
    Ok(file)
}

/// `--post-renderer serin-sync --post-renderer-args post-render ...`, when serin-sync knows
/// its program.
fn post_renderer(ctx: &Context, plan: &std::path::Path) -> Option<(std::path::PathBuf, Vec<String>)> {
    let program = ctx.config.post_renderer.clone()?;
    let mut args = vec![
        "post-render".to_owned(),
        "--plan".to_owned(),
        plan.display().to_string(),
    ];
    if let Some(kubeconfig) = &ctx.config.helm.kubeconfig {
        args.push("--kubeconfig".into());
        args.push(kubeconfig.display().to_string());
    }
    Some((program, args))
}

enum ReadyFrom {
    Remediated(String, String),
    Released(bool, String, String),
}

/// Where Ready comes from: a remediation of the current attempt, else the release's outcome
/// (a release in sync that no condition describes yet reads as installed).
fn progress_conditions(
    st: &HelmReleaseStatus,
    t: &Target,
    chart: &str,
    desired: &Desired,
    tests_count: bool,
) -> ReadyFrom {
    let tests_failed =
        tests_count && status::condition(&st.conditions, TEST_SUCCESS).is_some_and(|c| c.status == "False");
    if let Some(r) = status::condition(&st.conditions, REMEDIATED).filter(|_| {
        tests_failed || status::condition(&st.conditions, RELEASED).is_some_and(|c| c.status != "True")
    }) {
        return ReadyFrom::Remediated(r.reason.clone(), r.message.clone());
    }
    if let Some(c) = status::condition(&st.conditions, TEST_SUCCESS).filter(|_| tests_count) {
        return ReadyFrom::Released(c.status == "True", c.reason.clone(), c.message.clone());
    }
    match status::condition(&st.conditions, RELEASED) {
        Some(c) => ReadyFrom::Released(c.status == "True", c.reason.clone(), c.message.clone()),
        None => {
            let version = st.history.first().map(|h| h.version).unwrap_or(1);
            ReadyFrom::Released(
                true,
                "InstallSucceeded".into(),
                format!(
                    "Helm install succeeded for release {}/{}.v{version} with chart {chart} ({})",
                    t.namespace, t.release, desired.chart_version
                ),
            )
        }
    }
}

/// `status.history` from Helm's storage, newest first (as many as `maxHistory`, default 5),
/// with the values digest of each revision serin-sync knows it for.
async fn refresh_history(
    ctx: &Context,
    hr: &HelmRelease,
    t: &Target,
    st: &mut HelmReleaseStatus,
    impersonate: Option<&str>,
) {
    let Ok(history) = ctx
        .config
        .helm
        .history(&t.release, &t.namespace, impersonate)
        .await
    else {
        return;
    };
    let keep = match hr.spec.max_history {
        Some(0) => usize::MAX,
        Some(n) if n > 0 => n as usize,
        _ => 5,
    };
    let mut snapshots = Vec::new();
    for rev in history.iter().rev().take(keep) {
        let (chart_name, chart_version) = rev.chart_name_version();
        let previous = st.history.iter().find(|h| h.version == rev.revision);
        let test_hooks = previous.and_then(|h| h.test_hooks.clone());
        let known = previous
            .map(|h| h.config_digest.clone())
            .filter(|d| !d.is_empty());
        let config_digest = match known {
            Some(d) => d,
            None => ctx
                .config
                .helm
                .values(&t.release, &t.namespace, rev.revision, impersonate)
                .await
                .map(|v| plan::digest(&v))
                .unwrap_or_default(),
        };
        snapshots.push(ReleaseSnapshot {
            digest: None,
            name: t.release.clone(),
            namespace: t.namespace.clone(),
            version: rev.revision,
            status: rev.status.clone(),
            chart_name,
            chart_version,
            app_version: Some(rev.app_version.clone()).filter(|a| !a.is_empty()),
            config_digest,
            first_deployed: None,
            last_deployed: Some(rev.updated.clone()).filter(|u| !u.is_empty()),
            deleted: None,
            test_hooks,
        });
    }
    st.history = snapshots;
}

/// Ready=False with `reason` and the message (also an event), retried after `after`.
async fn not_ready(
    ctx: &Context,
    api: &Api<HelmRelease>,
    hr: &HelmRelease,
    mut st: HelmReleaseStatus,
    reason: &str,
    message: &str,
    after: Duration,
) -> Result<Action, Error> {
    let generation = hr.meta().generation;
    let was = status::condition(&st.conditions, status::READY).map(|c| c.message.clone());
    Progress::new(&mut st.conditions, generation, jiff::Timestamp::now())
        .set(status::READY, ConditionStatus::False, reason, message)
        .retrying();
    st.observed_generation = generation;
    patch_status(api, &hr.name_any(), &st).await?;
    if was.as_deref() != Some(message) {
        events::record(
            &ctx.client,
            &hr.object_ref(&()),
            COMPONENT,
            // Waiting on a dependency or the chart is progress, not an error.
            !matches!(reason, "DependencyNotReady" | "SourceNotReady"),
            reason,
            message,
        )
        .await;
    }
    Ok(Action::requeue(after))
}

/// What serin-sync does not implement on a HelmRelease (or what it cannot be: both or neither
/// of `chart` and `chartRef`), naming the field.
pub fn unsupported_field(hr: &HelmRelease) -> Option<String> {
    let spec = &hr.spec;
    let ns = hr.namespace().unwrap_or_default();
    let named = |field: &str| Some(format!("{field} is not supported by serin-sync"));
    if spec.kube_config.is_some() {
        return named("spec.kubeConfig");
    }
    if spec.chart.is_some() == spec.chart_ref.is_some() {
        return Some("spec.chart, spec.chartRef: exactly one of them must be set".into());
    }
    if let Some(r) = &spec.chart_ref
        && r.kind != "HelmChart"
    {
        return Some(format!(
            "spec.chartRef.kind {:?} is not supported by serin-sync (HelmChart)",
            r.kind
        ));
    }
    if spec.chart.as_ref().is_some_and(|c| c.spec.verify.is_some()) {
        return named("spec.chart.spec.verify");
    }
    if spec.chart.as_ref().is_some_and(|c| {
        !matches!(
            c.spec.source_ref.kind.as_str(),
            "HelmRepository" | "GitRepository"
        )
    }) {
        return Some(format!(
            "spec.chart.spec.sourceRef.kind {:?} is not supported by serin-sync (HelmRepository, GitRepository)",
            spec.chart
                .as_ref()
                .map(|c| c.spec.source_ref.kind.clone())
                .unwrap_or_default()
        ));
    }
    if spec
        .test
        .as_ref()
        .and_then(|t| t.filters.as_ref())
        .is_some_and(|f| f.as_array().is_some_and(|a| !a.is_empty()))
    {
        return named("spec.test.filters");
    }
    if spec.install.as_ref().is_some_and(|i| i.strategy.is_some())
        || spec.upgrade.as_ref().is_some_and(|u| u.strategy.is_some())
    {
        return named("spec.install.strategy and spec.upgrade.strategy");
    }
    let target = spec
        .target_namespace
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| ns.clone());
    let storage = spec
        .storage_namespace
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or(ns);
    if storage != target {
        return Some(format!(
            "spec.storageNamespace ({storage}) other than the target namespace ({target}) is not supported by serin-sync: \
             it releases through the helm program, which keeps a release in its target namespace; set spec.storageNamespace: {target}"
        ));
    }
    None
}

/// The first dependency that is not Ready at its current generation.
async fn dependency_not_ready(ctx: &Context, hr: &HelmRelease) -> Option<String> {
    let ns = hr.namespace().unwrap_or_default();
    for dep in &hr.spec.depends_on {
        let dep_ns = dep.namespace.clone().unwrap_or_else(|| ns.clone());
        let api: Api<HelmRelease> = Api::namespaced(ctx.client.clone(), &dep_ns);
        let ready = match api.get_opt(&dep.name).await {
            Ok(Some(d)) => d.status.as_ref().is_some_and(|s| {
                s.observed_generation == d.meta().generation
                    && status::condition(&s.conditions, status::READY).is_some_and(|c| c.status == "True")
            }),
            _ => false,
        };
        if !ready {
            return Some(format!("dependency '{dep_ns}/{}' is not ready", dep.name));
        }
    }
    None
}

/// Creates or updates the HelmChart of `spec.chart`.
async fn apply_chart(
    ctx: &Context,
    hr: &HelmRelease,
    chart_ns: &str,
    chart_name: &str,
) -> Result<(), String> {
    let Some(template) = &hr.spec.chart else {
        return Ok(());
    };
    let spec = &template.spec;
    let mut chart_spec = json!({
        "chart": spec.chart,
        "version": spec.version.clone().unwrap_or_else(|| "*".into()),
        "sourceRef": {"kind": spec.source_ref.kind, "name": spec.source_ref.name},
        "interval": spec.interval.clone().unwrap_or_else(|| hr.spec.interval.clone()),
        "reconcileStrategy": spec.reconcile_strategy.clone().unwrap_or_else(|| "ChartVersion".into()),
    });
    if !spec.values_files.is_empty() {
        chart_spec["valuesFiles"] = json!(spec.values_files);
    }
    if let Some(ignore) = spec.ignore_missing_values_files {
        chart_spec["ignoreMissingValuesFiles"] = json!(ignore);
    }
    let object = json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmChart",
        "metadata": {
            "name": chart_name,
            "namespace": chart_ns,
            "labels": {
                "helm.toolkit.fluxcd.io/name": hr.name_any(),
                "helm.toolkit.fluxcd.io/namespace": hr.namespace().unwrap_or_default(),
            },
        },
        "spec": chart_spec,
    });
    let api: Api<HelmChart> = Api::namespaced(ctx.client.clone(), chart_ns);
    api.patch(
        chart_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map(|_| ())
    .map_err(|e| super::api_message(&e))
}

/// The values: each `valuesFrom` entry merged in order (a `targetPath` sets its key's text at
/// that path), then `values`.
async fn compose_values(ctx: &Context, hr: &HelmRelease) -> Result<Value, String> {
    let ns = hr.namespace().unwrap_or_default();
    let mut values = json!({});
    for from in &hr.spec.values_from {
        let key = from.values_key.clone().unwrap_or_else(|| "values.yaml".into());
        let optional = from.optional == Some(true);
        let data = match from.kind.as_str() {
            "ConfigMap" => {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                api.get_opt(&from.name)
                    .await
                    .map_err(|e| {
                        format!(
                            "could not get ConfigMap '{ns}/{}': {}",
                            from.name,
                            super::api_message(&e)
                        )
                    })?
                    .map(|cm| cm.data.unwrap_or_default().get(&key).cloned())
            }
            "Secret" => {
                let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
                api.get_opt(&from.name)
                    .await
                    .map_err(|e| {
                        format!(
                            "could not get Secret '{ns}/{}': {}",
                            from.name,
                            super::api_message(&e)
                        )
                    })?
                    .map(|s| {
                        s.data
                            .unwrap_or_default()
                            .get(&key)
                            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    })
            }
            other => return Err(format!("unsupported ValuesReference kind '{other}'")),
        };
        let text = match data {
            None if optional => continue,
            None => return Err(format!("could not find {} '{ns}/{}'", from.kind, from.name)),
            Some(None) if optional => continue,
            Some(None) => {
                return Err(format!(
                    "missing key '{key}' in {} '{ns}/{}'",
                    from.kind, from.name
                ));
            }
            Some(Some(text)) => text,
        };
        match &from.target_path {
            Some(path) if !path.is_empty() => plan::set_path(
                &mut values,
                path,
                text.trim_end_matches('\n'),
                false,
            )
            .map_err(|e| {
                format!(
                    "unable to merge value from key '{key}' in {} '{ns}/{}' into target path '{path}': {e}",
                    from.kind, from.name
                )
            })?,
            _ => {
                let parsed: Value = serde_yaml::from_str(&text).map_err(|e| {
                    format!(
                        "unable to read values from key '{key}' in {} '{ns}/{}': {e}",
                        from.kind, from.name
                    )
                })?;
                if !parsed.is_null() {
                    plan::merge(&mut values, parsed);
                }
            }
        }
    }
    if let Some(inline) = &hr.spec.values {
        plan::merge(&mut values, inline.clone());
    }
    Ok(values)
}

fn write_values(ctx: &Context, values: &Value) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = ctx.config.storage_dir.join("tmp");
    std::fs::create_dir_all(&dir)?;
    let mut file = tempfile::Builder::new()
        .prefix("values-")
        .suffix(".json")
        .tempfile_in(dir)?;
    use std::io::Write;
    file.write_all(serde_json::to_string(values).unwrap_or_default().as_bytes())?;
    Ok(file)
}

fn spec_timeout(spec: &HelmReleaseSpec) -> Duration {
    spec.timeout
        .as_deref()
        .and_then(|t| status::parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn action_timeout(spec: &HelmReleaseSpec, install: bool) -> Duration {
    let own = if install {
        spec.install.as_ref().and_then(|i| i.timeout.as_deref())
    } else {
        spec.upgrade.as_ref().and_then(|u| u.timeout.as_deref())
    };
    own.and_then(|t| status::parse_duration(t).ok())
        .unwrap_or_else(|| spec_timeout(spec))
}

fn release_options<'a>(
    spec: &HelmReleaseSpec,
    t: &'a Target,
    chart: &'a std::path::Path,
    values: &'a std::path::Path,
    install: bool,
    impersonate: Option<String>,
) -> Release<'a> {
    let i = spec.install.clone().unwrap_or_default();
    let u = spec.upgrade.clone().unwrap_or_default();
    let crds = if install {
        i.crds.clone().unwrap_or_else(|| {
            if i.skip_crds == Some(true) {
                "Skip".into()
            } else {
                "Create".into()
            }
        })
    } else {
        u.crds.clone().unwrap_or_else(|| "Skip".into())
    };
    let (disable_wait, wait_for_jobs, hooks, openapi) = if install {
        (
            i.disable_wait,
            i.disable_wait_for_jobs,
            i.disable_hooks,
            i.disable_openapi_validation,
        )
    } else {
        (
            u.disable_wait,
            u.disable_wait_for_jobs,
            u.disable_hooks,
            u.disable_openapi_validation,
        )
    };
    Release {
        name: &t.release,
        namespace: &t.namespace,
        chart,
        values,
        timeout: action_timeout(spec, install),
        wait: disable_wait != Some(true),
        wait_for_jobs: wait_for_jobs != Some(true),
        disable_hooks: hooks == Some(true),
        disable_openapi_validation: openapi == Some(true),
        skip_crds: crds == "Skip",
        create_namespace: install && i.create_namespace == Some(true),
        force: !install && u.force == Some(true),
        cleanup_on_fail: !install && u.cleanup_on_fail == Some(true),
        max_history: Some(spec.max_history.unwrap_or(5)).filter(|m| *m > 0),
        impersonate,
        post_renderer: None,
    }
}

fn uninstall_options(spec: &HelmReleaseSpec) -> (bool, bool, Duration) {
    let u = spec.uninstall.clone().unwrap_or_default();
    let timeout = u
        .timeout
        .as_deref()
        .and_then(|t| status::parse_duration(t).ok())
        .unwrap_or_else(|| spec_timeout(spec));
    (
        u.keep_history == Some(true),
        u.disable_hooks == Some(true),
        timeout,
    )
}

/// On deletion: the release is uninstalled and the HelmChart made for it deleted. Failures are
/// logged (the finalizer goes regardless, as the object is gone for the user).
async fn uninstall_on_deletion(ctx: &Context, hr: &HelmRelease) {
    let t = target(hr);
    let impersonate = impersonation(hr);
    let (keep, hooks, timeout) = uninstall_options(&hr.spec);
    let exists = ctx
        .config
        .helm
        .history(&t.release, &t.namespace, impersonate.as_deref())
        .await
        .map(|h| h.last().is_some_and(|r| r.status != "uninstalled"))
        .unwrap_or(false);
    let reference = hr.object_ref(&());
    if exists && hr.spec.suspend != Some(true) {
        match ctx
            .config
            .helm
            .uninstall(
                &t.release,
                &t.namespace,
                keep,
                hooks,
                timeout,
                impersonate.as_deref(),
            )
            .await
        {
            Ok(()) => {
                let message = format!(
                    "Helm uninstall succeeded for release {}/{}",
                    t.namespace, t.release
                );
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    false,
                    "UninstallSucceeded",
                    &message,
                )
                .await;
            }
            Err(e) => {
                let message = format!(
                    "Helm uninstall failed for release {}/{}: {e}",
                    t.namespace, t.release
                );
                events::record(
                    &ctx.client,
                    &reference,
                    COMPONENT,
                    true,
                    "UninstallFailed",
                    &message,
                )
                .await;
            }
        }
    }
    if hr.spec.chart.is_some()
        && let Some((chart_ns, chart_name)) = chart_ref(hr)
    {
        let api: Api<HelmChart> = Api::namespaced(ctx.client.clone(), &chart_ns);
        if let Err(e) = api.delete(&chart_name, &DeleteParams::default()).await
            && serin_runtime::api_error::Kind::of(&e) != serin_runtime::api_error::Kind::NotFound
        {
            tracing::warn!(error = %e, chart = %format!("{chart_ns}/{chart_name}"), "deleting the HelmChart failed");
        }
    }
}

async fn patch_status(api: &Api<HelmRelease>, name: &str, st: &HelmReleaseStatus) -> Result<(), Error> {
    let body = json!({ "status": st });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
        .map_err(Error::Kube)
}

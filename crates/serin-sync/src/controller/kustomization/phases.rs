//! One run of a Kustomization up to Ready=True, as Flux's kustomize-controller runs it, phase by
//! phase: source, dependencies, build, apply, prune, health. Each phase returns what the next
//! needs or the [`Failure`] that ends the run; the status is written as the run progresses.
//! Does I/O.

use std::time::{Duration, Instant};

use kube::{Api, Client, Resource, ResourceExt};

use super::{
    CANARY_TARGETS_CONDITION, COMPONENT, Failure, canary_targets, desired_objects, patch_status,
    post_build_vars,
};
use crate::{
    api::{
        GitRepository, Kustomization, KustomizationStatus, git_repository::Artifact,
        kustomization::ResourceInventory,
    },
    apply::{
        manager::{self, ApplyOptions, CanaryTargets, Change, ResourceManager},
        order::{self, ObjectId},
    },
    build::{self, Built},
    controller::{
        Context, events,
        status::{self, ConditionStatus, Progress},
    },
};

/// One run: the Kustomization, the status it writes, and the run's fixed facts.
struct Run<'a> {
    ks: &'a Kustomization,
    ctx: &'a Context,
    api: &'a Api<Kustomization>,
    st: &'a mut KustomizationStatus,
    name: String,
    ns: String,
    generation: Option<i64>,
    timeout: Duration,
    started: Instant,
}

/// One run up to Ready=True; returns the applied revision.
pub(super) async fn run(
    ks: &Kustomization,
    ctx: &Context,
    api: &Api<Kustomization>,
    st: &mut KustomizationStatus,
) -> Result<String, Failure> {
    let mut run = Run {
        ks,
        ctx,
        api,
        st,
        name: ks.name_any(),
        ns: ks.namespace().unwrap_or_default(),
        generation: ks.meta().generation,
        timeout: status::kustomization_timeout(&ks.spec),
        started: Instant::now(),
    };
    let (artifact, source_ns) = run.source().await?;
    let revision = artifact.revision.clone();
    run.dependencies(&source_ns, &revision).await?;
    run.fetching(&revision).await;
    let (client, built) = run.build(&artifact, &revision).await?;
    let mut rm = ResourceManager::new(client.clone());
    let changes = match run.apply(&client, &mut rm, &built, &revision).await {
        Ok(changes) => changes,
        Err(failure) => return Err(run.failed(failure, &built, &revision)),
    };
    if let Err(failure) = run.prune(&mut rm, &changes).await {
        return Err(run.failed(failure, &built, &revision));
    }
    if let Err(failure) = run.health(&mut rm, &changes, &revision).await {
        return Err(run.failed(failure, &built, &revision));
    }
    run.st.last_applied_revision = Some(revision.clone());
    run.history(&built, &revision, "ReconciliationSucceeded");
    Ok(revision)
}

impl Run<'_> {
    /// The conditions, written now.
    fn progress(&mut self) -> Progress<'_> {
        Progress::new(&mut self.st.conditions, self.generation, jiff::Timestamp::now())
    }

    /// Writes the status as it is so far (a failed write is left to the run's final one).
    async fn write(&self) {
        let _ = patch_status(self.api, &self.name, self.st).await;
    }

    /// Reconciling with what the run does now, written at once.
    async fn doing(&mut self, what: &str, revision: &str) {
        let t = status::format_duration(self.timeout);
        self.progress()
            .reconciling(&format!("{what} for revision {revision} with a timeout of {t}"));
        self.write().await;
    }

    /// Records the run in the history; returns the failure to end it with.
    fn failed(&mut self, failure: Failure, built: &Built, revision: &str) -> Failure {
        self.history(built, revision, failure.reason);
        failure
    }

    fn history(&mut self, built: &Built, revision: &str, reason: &str) {
        status::upsert_history(
            &mut self.st.history,
            &built.digest,
            reason,
            revision,
            self.started.elapsed(),
            &jiff::Timestamp::now().to_string(),
        );
    }

    /// The source's artifact, and the source's namespace.
    async fn source(&self) -> Result<(Artifact, String), Failure> {
        let source_ref = &self.ks.spec.source_ref;
        let source_ns = source_ref.namespace.clone().unwrap_or_else(|| self.ns.clone());
        let sources: Api<GitRepository> = Api::namespaced(self.ctx.client.clone(), &source_ns);
        let source = match sources.get_opt(&source_ref.name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Failure::new(
                    "ArtifactFailed",
                    format!(
                        "Source '{}/{}/{}' not found",
                        source_ref.kind, source_ns, source_ref.name
                    ),
                ));
            }
            Err(e) => return Err(Failure::new("ArtifactFailed", crate::controller::api_message(&e))),
        };
        let Some(artifact) = source.status.as_ref().and_then(|s| s.artifact.clone()) else {
            return Err(Failure {
                requeue: Some(self.ctx.config.requeue_dependency),
                ..Failure::new("ArtifactFailed", "Source artifact not found, retrying in 30s")
            });
        };
        Ok((artifact, source_ns))
    }

    /// Every `dependsOn` Kustomization is Ready at its generation, and has applied `revision`
    /// when it shares the source.
    async fn dependencies(&self, source_ns: &str, revision: &str) -> Result<(), Failure> {
        let not_ready = |m: String| Failure {
            requeue: Some(self.ctx.config.requeue_dependency),
            ..Failure::new("DependencyNotReady", m)
        };
        for dep in &self.ks.spec.depends_on {
            let dep_ns = dep.namespace.clone().unwrap_or_else(|| self.ns.clone());
            let deps: Api<Kustomization> = Api::namespaced(self.ctx.client.clone(), &dep_ns);
            let d = match deps.get_opt(&dep.name).await {
                Ok(Some(d)) => d,
                Ok(None) => return Err(not_ready(format!("dependency '{dep_ns}/{}' not found", dep.name))),
                Err(e) => {
                    return Err(not_ready(format!(
                        "dependency '{dep_ns}/{}' not found: {}",
                        dep.name,
                        crate::controller::api_message(&e)
                    )));
                }
            };
            let ds = d.status.clone().unwrap_or_default();
            let ready = d.meta().generation == ds.observed_generation
                && status::condition(&ds.conditions, status::READY).is_some_and(|c| c.status == "True");
            if !ready {
                return Err(not_ready(format!(
                    "dependency '{dep_ns}/{}' is not ready",
                    dep.name
                )));
            }
            let theirs = &d.spec.source_ref;
            let ours = &self.ks.spec.source_ref;
            let same_source = theirs.kind == ours.kind
                && theirs.name == ours.name
                && theirs.namespace.clone().unwrap_or_else(|| dep_ns.clone()) == source_ns;
            if same_source && ds.last_applied_revision.as_deref() != Some(revision) {
                return Err(not_ready(format!(
                    "dependency '{dep_ns}/{}' revision is not up to date",
                    dep.name
                )));
            }
        }
        Ok(())
    }

    /// Ready=Unknown while the run fetches the revision's manifests.
    async fn fetching(&mut self, revision: &str) {
        self.progress().set(
            status::READY,
            ConditionStatus::Unknown,
            status::PROGRESSING,
            "Reconciliation in progress",
        );
        self.doing("Fetching manifests", revision).await;
    }

    /// The built objects of the artifact at the spec's path, and the client (impersonating the
    /// spec's service account) the later phases use.
    async fn build(&mut self, artifact: &Artifact, revision: &str) -> Result<(Client, Built), Failure> {
        let artifact_dir = self.ctx.config.storage_dir.join(&artifact.path);
        if !artifact_dir.is_dir() {
            return Err(Failure {
                requeue: Some(self.ctx.config.requeue_dependency),
                ..Failure::new(
                    "ArtifactFailed",
                    "Source is not ready, artifact not found, retrying in 30s",
                )
            });
        }
        let path = self
            .ks
            .spec
            .path
            .as_deref()
            .unwrap_or("")
            .trim_start_matches("./");
        if artifact_dir.join(path).is_dir() {
            self.st.last_attempted_revision = Some(revision.to_owned());
        }
        self.doing("Building manifests", revision).await;
        let client = self
            .ctx
            .client_for(self.ks)
            .map_err(|e| Failure::new("ReconciliationFailed", e))?;
        let vars = post_build_vars(self.ks, &client).await?;
        let built = build::build(&artifact_dir, &self.ks.spec, vars.as_ref())
            .await
            .map_err(|e| Failure::new(e.reason(), e.to_string()))?;
        Ok((client, built))
    }

    /// Staged server-side apply of the built objects, keeping the replicas of Canary targets;
    /// the changes are reported as events, and become the inventory.
    async fn apply(
        &mut self,
        client: &Client,
        rm: &mut ResourceManager,
        built: &Built,
        revision: &str,
    ) -> Result<Vec<Change>, Failure> {
        self.doing("Detecting drift", revision).await;
        let targets = canary_targets(client).await;
        let reference = self.ks.object_ref(&());
        match &targets {
            CanaryTargets::Unknown(reason) => {
                let message = format!(
                    "cannot list Canaries ({reason}): the replicas of every Deployment are left as they are"
                );
                self.progress().set(
                    CANARY_TARGETS_CONDITION,
                    ConditionStatus::False,
                    "ListFailed",
                    &message,
                );
                events::record(
                    &self.ctx.client,
                    &reference,
                    COMPONENT,
                    true,
                    "CanaryTargetsUnknown",
                    &message,
                )
                .await;
            }
            CanaryTargets::Known(_) => {
                self.progress().remove(CANARY_TARGETS_CONDITION);
            }
        }
        let options = ApplyOptions {
            force: self.ks.spec.force == Some(true),
            ignore: self.ks.spec.ignore.clone(),
            canary_targets: targets,
            stage_timeout: self.ctx.config.stage_timeout,
            poll_interval: self.ctx.config.poll_interval,
            ..ApplyOptions::default()
        };
        let desired = desired_objects(self.ks, built.objects.clone());
        match rm.apply_all_staged(desired, &options).await {
            Ok(changes) => {
                super::report_changes(self.ctx, &reference, &changes).await;
                Ok(changes)
            }
            Err(err) => {
                super::report_changes(self.ctx, &reference, &err.changes).await;
                Err(Failure::new("ReconciliationFailed", err.message))
            }
        }
    }

    /// The new inventory; with `prune`, deletes what the previous one held and this one does
    /// not (objects whose deletion failed stay in the inventory, to be retried).
    async fn prune(&mut self, rm: &mut ResourceManager, changes: &[Change]) -> Result<(), Failure> {
        let old = self
            .st
            .inventory
            .as_ref()
            .map(|i| i.entries.clone())
            .unwrap_or_default();
        let new = order::inventory(&changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        self.st.inventory = Some(ResourceInventory { entries: new.clone() });
        if !self.ks.spec.prune {
            return Ok(());
        }
        let stale = order::stale(&old, &new);
        if stale.is_empty() {
            return Ok(());
        }
        let (deleted, errors) = rm.delete_all(&stale, &manager::owner(&self.name, &self.ns)).await;
        let lines: Vec<String> = deleted
            .iter()
            .filter(|c| c.action == manager::Action::Deleted)
            .map(ToString::to_string)
            .collect();
        if !lines.is_empty() {
            let reference = self.ks.object_ref(&());
            events::record(
                &self.ctx.client,
                &reference,
                COMPONENT,
                false,
                "Progressing",
                &lines.join("\n"),
            )
            .await;
        }
        if errors.is_empty() {
            return Ok(());
        }
        let mut entries = new;
        let failed: Vec<ObjectId> = stale
            .iter()
            .filter(|id| !deleted.iter().any(|c| &c.id == *id))
            .cloned()
            .collect();
        entries.extend(order::inventory(&failed));
        entries.sort();
        self.st.inventory = Some(ResourceInventory { entries });
        Err(Failure::new(
            "PruneFailed",
            format!("delete failed, errors: {};", errors.join(";")),
        ))
    }

    /// What the health checks cover: every applied object with `wait`, else `healthChecks`;
    /// never the Kustomization itself.
    fn health_checks(&self, changes: &[Change]) -> Vec<ObjectId> {
        let checks: Vec<ObjectId> = if self.ks.spec.wait == Some(true) {
            changes
                .iter()
                .filter(|c| c.action != manager::Action::Skipped)
                .map(|c| c.id.clone())
                .collect()
        } else {
            self.ks
                .spec
                .health_checks
                .iter()
                .map(|h| {
                    let api_version = h.api_version.clone().unwrap_or_else(|| "apps/v1".into());
                    let (group, version) = api_version
                        .rsplit_once('/')
                        .map_or((String::new(), api_version.clone()), |(g, v)| {
                            (g.to_owned(), v.to_owned())
                        });
                    ObjectId {
                        group,
                        version,
                        kind: h.kind.clone(),
                        namespace: h.namespace.clone().unwrap_or_else(|| self.ns.clone()),
                        name: h.name.clone(),
                    }
                })
                .collect()
        };
        checks
            .into_iter()
            .filter(|id| {
                !(id.kind == "Kustomization"
                    && id.group == crate::api::kustomization::GROUP
                    && id.name == self.name
                    && id.namespace == self.ns)
            })
            .collect()
    }

    /// Waits until the checked objects are healthy (kstatus), within the timeout: Healthy.
    async fn health(
        &mut self,
        rm: &mut ResourceManager,
        changes: &[Change],
        revision: &str,
    ) -> Result<(), Failure> {
        let checks = self.health_checks(changes);
        if checks.is_empty() {
            self.progress().remove(status::HEALTHY);
            return Ok(());
        }
        let was_healthy =
            status::condition(&self.st.conditions, status::HEALTHY).is_some_and(|c| c.status == "True");
        let t = status::format_duration(self.timeout);
        let message = format!("Running health checks for revision {revision} with a timeout of {t}");
        self.progress().reconciling(&message).set(
            status::HEALTHY,
            ConditionStatus::Unknown,
            status::PROGRESSING,
            &message,
        );
        self.write().await;
        let started = Instant::now();
        if let Err(e) = rm
            .wait_for(&checks, self.timeout, self.ctx.config.health_interval)
            .await
        {
            let message = format!(
                "health check failed after {}: {e}",
                status::format_duration(started.elapsed())
            );
            self.progress().set(
                status::HEALTHY,
                ConditionStatus::False,
                "HealthCheckFailed",
                &message,
            );
            return Err(Failure::new("HealthCheckFailed", message));
        }
        let message = format!(
            "Health check passed in {}",
            status::format_duration(started.elapsed())
        );
        self.progress().set(
            status::HEALTHY,
            ConditionStatus::True,
            status::SUCCEEDED_REASON,
            &message,
        );
        let drifted = changes
            .iter()
            .any(|c| matches!(c.action, manager::Action::Created | manager::Action::Configured));
        if !was_healthy || drifted {
            let reference = self.ks.object_ref(&());
            events::record(
                &self.ctx.client,
                &reference,
                COMPONENT,
                false,
                "Progressing",
                &message,
            )
            .await;
        }
        Ok(())
    }
}

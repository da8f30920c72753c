//! `kubectl serin promote|abort|retry|pause|resume`: a request to serin as a `CanaryAction`
//! naming the Canary, the action, the revision it applies to and who asks; then serin's answer.
//! The Canary itself is never written. Does I/O (Kubernetes API).

use std::time::Duration;

use k8s_openapi::{
    api::authentication::v1::SelfSubjectReview,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::wait::{Condition, await_condition},
};

use super::{Output, print};
use crate::api::{Canary, CanaryAction, CanaryActionSpec};

/// The arguments every action takes.
#[derive(clap::Args, Debug)]
pub struct AskArgs {
    /// The Canary (`NAME` or `canary/NAME`).
    pub canary: String,
    /// The revision the action applies to (default: the Canary's current one,
    /// `status.lastAppliedSpec`). An action for a revision that is no longer current is ignored.
    #[arg(long)]
    pub revision: Option<String>,
    /// How long to wait for serin's answer (`0s`: do not wait).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the request with serin's answer (`json` or `yaml`) instead of the answer alone.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    serin_runtime::duration::parse(text).map_err(|e| format!("{text:?}: {e}"))
}

/// Asks serin to act on a Canary and waits for the answer. `Err` when serin ignored it, did not
/// answer in time, or the request could not be made.
pub async fn ask(
    client: Client,
    namespace: &str,
    action: &str,
    full: bool,
    args: &AskArgs,
) -> Result<(), String> {
    let name = args
        .canary
        .strip_prefix("canary/")
        .or_else(|| args.canary.strip_prefix("canaries/"))
        .unwrap_or(&args.canary);
    let canaries: Api<Canary> = Api::namespaced(client.clone(), namespace);
    let canary = canaries
        .get_opt(name)
        .await
        .map_err(|e| format!("reading canary {name}: {e}"))?
        .ok_or_else(|| format!("canary {name:?} not found in namespace {namespace:?}"))?;
    let revision = match &args.revision {
        Some(r) => r.clone(),
        None => canary
            .status
            .as_ref()
            .and_then(|s| s.last_applied_spec.clone())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("canary {name} has no revision yet: it is not initialised"))?,
    };
    let requested_by = whoami(client.clone()).await;
    let request = CanaryAction {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-{action}-")),
            namespace: Some(namespace.to_owned()),
            // Deleted with the Canary.
            owner_references: Some(vec![OwnerReference {
                api_version: Canary::api_version(&()).into_owned(),
                kind: Canary::kind(&()).into_owned(),
                name: name.to_owned(),
                uid: canary.metadata.uid.clone().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: CanaryActionSpec {
            canary: name.to_owned(),
            action: action.to_owned(),
            full,
            revision,
            requested_by,
        },
        status: None,
    };
    let actions: Api<CanaryAction> = Api::namespaced(client, namespace);
    let created = actions
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| format!("asking serin to {action} {name}: {e}"))?;
    let created_name = created.metadata.name.clone().unwrap_or_default();
    if args.timeout.is_zero() {
        return match args.output {
            Some(output) => print(&created, output),
            None => {
                println!("canaryaction.serin.dev/{created_name} created; serin answers in its status");
                Ok(())
            }
        };
    }
    let answered = tokio::time::timeout(
        args.timeout,
        await_condition(actions, &created_name, is_answered()),
    )
    .await;
    let answered = match answered {
        Ok(Ok(Some(a))) if a.handled() => a,
        Ok(Ok(_)) => {
            return Err(format!(
                "canaryaction {created_name} was deleted before serin answered"
            ));
        }
        Ok(Err(e)) => return Err(format!("waiting for serin's answer to {created_name}: {e}")),
        Err(_) => {
            return Err(format!(
                "serin has not answered canaryaction {created_name} within {}; it stays asked \
                 (kubectl get canaryaction {created_name} -n {namespace}): is serin running?",
                super::view::duration(args.timeout.as_secs() as i64)
            ));
        }
    };
    if let Some(output) = args.output {
        print(&answered, output)?;
    }
    match super::view::answer(&answered) {
        Some(Ok(done)) => {
            if args.output.is_none() {
                println!("{done}");
            }
            Ok(())
        }
        Some(Err(ignored)) => Err(ignored),
        None => Err(format!("canaryaction {created_name} has no answer")),
    }
}

fn is_answered() -> impl Condition<CanaryAction> {
    |a: Option<&CanaryAction>| a.is_none_or(CanaryAction::handled)
}

/// The user name the API server knows this client as (`kubectl auth whoami`), when it says.
async fn whoami(client: Client) -> Option<String> {
    let reviews: Api<SelfSubjectReview> = Api::all(client);
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

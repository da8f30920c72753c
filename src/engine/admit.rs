//! The gates a Canary passes before [`decide`](super::decide) runs: a spec that validates, a
//! provider and target kind serin implements, no other Canary managing the same target, caches
//! that hold their first list, and a cached status that is not older than serin's last write.
//! Pure: the controller observes the facts and carries out the answer.

use std::time::Duration;

use crate::{api::canary::CanarySpec, validate};

/// How soon to look again while the caches fill after a start.
pub const CACHES_RETRY: Duration = Duration::from_millis(250);
/// How soon to look again when the cached Canary does not show serin's last status write yet.
pub const STALE_RETRY: Duration = Duration::from_millis(100);

/// The facts the gates read.
#[derive(Clone, Copy, Debug)]
pub struct Admission<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a CanarySpec,
    /// The controller's mesh provider (`--mesh-provider`), for a Canary without `spec.provider`.
    pub default_provider: &'a str,
    /// The names of the Canaries of the namespace that target the same workload (this one
    /// included or not).
    pub same_target: &'a [String],
    /// Whether the Deployment, ConfigMap, Secret and VirtualService caches hold their first list.
    pub caches_filled: bool,
    /// Whether the cached Canary does not show the status serin wrote last, or the cached
    /// VirtualService the routes serin wrote last.
    pub status_stale: bool,
}

/// The gates' answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go on to observe and decide.
    Decide,
    /// Stop with this Warning event until the Canary (or another Canary) changes.
    Refuse(String),
    /// Not yet: look again after this long, without an event.
    Retry(Duration),
}

/// Which of the Canaries that target one workload manages it: the first by name (the others
/// are reported and left alone, so they never fight over the target).
pub fn target_owner<'a>(this: &'a str, same_target: &'a [String]) -> Option<&'a str> {
    same_target
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(this))
        .min()
}

/// Runs the gates in order; the first that does not pass answers.
pub fn admit(a: &Admission) -> Admit {
    let name = format!("{}.{}", a.name, a.namespace);
    let errors: Vec<String> = validate::canary(a.spec, a.default_provider)
        .into_iter()
        .filter(validate::Finding::blocks_run)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        return Admit::Refuse(format!("invalid canary spec: {}", errors.join("; ")));
    }
    let provider = a.spec.provider.as_deref().unwrap_or(a.default_provider);
    if provider != "istio" || a.spec.target_ref.kind != "Deployment" {
        return Admit::Refuse(format!(
            "{name}: provider {provider:?} with target kind {:?} is not implemented by serin (it implements istio with Deployment)",
            a.spec.target_ref.kind
        ));
    }
    if let Some(first) = target_owner(a.name, a.same_target).filter(|owner| *owner != a.name) {
        return Admit::Refuse(format!(
            "Canary {name} targets Deployment {}.{} like Canary {first}; only {first} manages it (delete one of them)",
            a.spec.target_ref.name, a.namespace
        ));
    }
    // Decisions need complete caches: a VirtualService missing only from a cache still filling
    // after a restart would otherwise look deleted and be recreated at 100/0.
    if !a.caches_filled {
        return Admit::Retry(CACHES_RETRY);
    }
    // A change to another object (the VirtualService serin just wrote) can arrive before the
    // Canary's own status update: deciding on the older status would take a step twice. And the
    // Canary's status can arrive before the VirtualService: its older weights would look like
    // traffic moved back by someone else.
    if a.status_stale {
        return Admit::Retry(STALE_RETRY);
    }
    Admit::Decide
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::spec;

    fn admission<'a>(spec: &'a CanarySpec, same_target: &'a [String]) -> Admission<'a> {
        Admission {
            name: "podinfo",
            namespace: "test",
            spec,
            default_provider: "istio",
            same_target,
            caches_filled: true,
            status_stale: false,
        }
    }

    #[test]
    fn the_first_canary_by_name_owns_a_shared_target() {
        let others = vec!["podinfo".to_owned(), "second-for-podinfo".to_owned()];
        assert_eq!(target_owner("second-for-podinfo", &others), Some("podinfo"));
        assert_eq!(target_owner("podinfo", &others), Some("podinfo"));
        assert_eq!(target_owner("alone", &[]), Some("alone"));
    }

    #[test]
    fn each_gate_answers_in_order() {
        let good = spec();
        let none: Vec<String> = Vec::new();
        assert_eq!(admit(&admission(&good, &none)), Admit::Decide);

        let mut invalid = spec();
        invalid.analysis.as_mut().expect("analysis").threshold = None;
        let Admit::Refuse(message) = admit(&admission(&invalid, &none)) else {
            panic!("an invalid spec is refused");
        };
        assert_eq!(
            message,
            "invalid canary spec: spec.analysis.threshold: Required value"
        );

        let mut linkerd = spec();
        linkerd.provider = Some("linkerd".into());
        assert_eq!(
            admit(&admission(&linkerd, &none)),
            Admit::Refuse("podinfo.test: provider \"linkerd\" with target kind \"Deployment\" is not implemented by serin (it implements istio with Deployment)".into())
        );

        let others = vec!["a-first".to_owned(), "podinfo".to_owned()];
        assert_eq!(
            admit(&admission(&good, &others)),
            Admit::Refuse("Canary podinfo.test targets Deployment podinfo.test like Canary a-first; only a-first manages it (delete one of them)".into())
        );
        let later = vec!["podinfo".to_owned(), "z-later".to_owned()];
        assert_eq!(
            admit(&admission(&good, &later)),
            Admit::Decide,
            "the first by name manages it"
        );

        let filling = Admission {
            caches_filled: false,
            status_stale: true,
            ..admission(&good, &none)
        };
        assert_eq!(admit(&filling), Admit::Retry(CACHES_RETRY), "caches first");
        let stale = Admission {
            status_stale: true,
            ..admission(&good, &none)
        };
        assert_eq!(admit(&stale), Admit::Retry(STALE_RETRY));
        // A refusal wins over waiting: nothing to wait for.
        let refused = Admission {
            caches_filled: false,
            ..admission(&invalid, &none)
        };
        assert!(matches!(admit(&refused), Admit::Refuse(_)));
    }
}

//! Session affinity (Flagger's `getSessionAffinityRouteRules`): the cookies that keep a user on
//! the canary once routed there. Pure.

use super::*;

/// Session affinity (Flagger's `getSessionAffinityRouteRules`): a canary cookie (and a primary
/// one with `primaryCookieName`) is chosen when traffic first reaches the canary and kept in the
/// status; when the canary weight returns to 0 the cookie becomes the previous one, which the
/// VirtualService then expires.
pub(super) fn with_session_affinity(input: &Input, mut d: Decision) -> Decision {
    let Some(affinity) = input
        .spec
        .analysis
        .as_ref()
        .and_then(|a| a.session_affinity.as_ref())
    else {
        return d;
    };
    if input.spec.deployment_strategy() == DeploymentStrategy::AbTesting {
        return d;
    }
    let Some(routes) = d.actions.iter().rev().find_map(|a| match a {
        Action::SetRoutes(r) => Some(*r),
        _ => None,
    }) else {
        return d;
    };
    let status = input.status;
    let current = status
        .session_affinity_cookie
        .as_deref()
        .filter(|c| !c.is_empty());
    let had_status = d.status.is_some();
    let mut update = d.status.take().unwrap_or_default();
    let letters = |i: usize| {
        input
            .observed
            .random
            .get(i * 10..(i + 1) * 10)
            .unwrap_or("serinserin")
            .to_owned()
    };
    if routes.canary != 0 {
        if current.is_none() {
            update.session_affinity_cookie = Some(format!("{}={}", affinity.cookie_name, letters(0)));
        }
        if let Some(name) = affinity.primary_cookie_name.as_deref().filter(|n| !n.is_empty())
            && status
                .primary_session_affinity_cookie
                .as_deref()
                .is_none_or(str::is_empty)
        {
            update.primary_session_affinity_cookie = Some(format!("{name}={}", letters(1)));
        }
    } else if let Some(cookie) = current {
        update.previous_session_affinity_cookie = Some(cookie.to_owned());
        update.session_affinity_cookie = Some(String::new());
    }
    d.status = (had_status || update != StatusUpdate::default()).then_some(update);
    d
}

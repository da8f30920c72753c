//! Session affinity cookies.

use super::*;

#[test]
fn session_affinity_cookies_are_chosen_with_the_first_traffic_and_expire_at_zero() {
    let s = with_affinity(spec());
    let d = run(&s, &progressing(0, 0), &observed("rev2", 100, 0), &[]);
    let st = d.status.expect("status");
    assert_eq!(
        (
            st.session_affinity_cookie.as_deref(),
            st.primary_session_affinity_cookie.as_deref()
        ),
        (
            Some("flagger-cookie=abcdefghij"),
            Some("primary-cookie=klmnopqrst")
        )
    );
    // Kept while the canary has traffic.
    let with_cookie = CanaryStatus {
        session_affinity_cookie: Some("flagger-cookie=abcdefghij".into()),
        primary_session_affinity_cookie: Some("primary-cookie=klmnopqrst".into()),
        ..progressing(10, 0)
    };
    let d = run(
        &s,
        &with_cookie,
        &observed("rev2", 90, 10),
        &[(Check::Analysis, passed())],
    );
    assert_eq!(d.actions, [routes(80, 20)]);
    let st = d.status.expect("status");
    assert_eq!(st.session_affinity_cookie, None);
    // Back to 0 (a rollback): the cookie becomes the previous one.
    let failing = CanaryStatus {
        failed_checks: 1,
        ..with_cookie
    };
    let d = run(
        &s,
        &failing,
        &observed("rev2", 90, 10),
        &[(Check::Analysis, failed("Halt"))],
    );
    let st = d.status.expect("status");
    assert_eq!(st.phase, Some(CanaryPhase::Failed));
    assert_eq!(
        (
            st.session_affinity_cookie.as_deref(),
            st.previous_session_affinity_cookie.as_deref()
        ),
        (Some(""), Some("flagger-cookie=abcdefghij"))
    );
}

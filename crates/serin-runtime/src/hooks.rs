//! Test-only hooks, shared by both controllers: with `SERIN_TEST_HOOKS` set (never in
//! production), an object annotated `test.serin.dev/panic` makes its reconcile panic, so that
//! tests can prove a panic is caught for that object alone. Pure but for reading the variable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The environment variable that enables test hooks.
pub const TEST_HOOKS_ENV: &str = "SERIN_TEST_HOOKS";
/// With test hooks on, an object carrying this annotation makes its reconcile panic.
pub const TEST_PANIC_ANNOTATION: &str = "test.serin.dev/panic";

/// Whether `SERIN_TEST_HOOKS` is set in this process's environment.
pub fn enabled_by_env() -> bool {
    std::env::var_os(TEST_HOOKS_ENV).is_some()
}

/// Panics when `enabled` and `meta` carries [`TEST_PANIC_ANNOTATION`].
pub fn panic_if_asked(enabled: bool, kind: &str, meta: &ObjectMeta) {
    if enabled
        && meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(TEST_PANIC_ANNOTATION))
    {
        panic!(
            "test hook {TEST_PANIC_ANNOTATION} on {kind} {}",
            meta.name.as_deref().unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_annotated_object_with_hooks_on_panics() {
        let mut meta = ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        };
        panic_if_asked(true, "Canary", &meta);
        meta.annotations = Some([(TEST_PANIC_ANNOTATION.to_owned(), "true".to_owned())].into());
        panic_if_asked(false, "Canary", &meta);
        let caught = std::panic::catch_unwind(|| panic_if_asked(true, "Canary", &meta));
        let message = caught
            .expect_err("panics")
            .downcast::<String>()
            .expect("a message");
        assert_eq!(*message, "test hook test.serin.dev/panic on Canary x");
    }
}

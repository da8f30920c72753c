//! Shared runtime of serin's controllers (`serin` and `serin-sync`): telemetry, the admin HTTP
//! server, leader election on a Lease, the rustls crypto provider, shutdown signals, common
//! command-line arguments, start-up (connection, CRD check, leadership), CRD files, Go durations,
//! Events aggregated as client-go does,
//! per-object retry backoff, taking over fields for server-side apply, label selectors,
//! structural-schema validation and kstatus health rules.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api_error;
pub mod args;
pub mod backoff;
pub mod crd;
pub mod duration;
pub mod events;
pub mod hooks;
pub mod kstatus;
pub mod leader;
pub mod schema;
pub mod scope;
pub mod selector;
pub mod shutdown;
pub mod ssa;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod yaml;

pub use startup::error_chain;

/// The text of a caught panic (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

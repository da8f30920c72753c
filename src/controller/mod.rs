//! The controller: watches Canaries, the Deployments they target, the ConfigMaps and Secrets
//! those use, and the VirtualServices serin writes (`watches`), and reconciles each Canary
//! (`reconcile`) as `engine::admit` (pure) -> `observe` (caches) -> `engine::decide` (pure, with
//! the `checks` it asks for) -> `act` -> `report` (status, events, metrics) and `alerts`.
//! `compare` judges metrics against the primary; `requests` reads people's requests
//! (`CanaryAction`s) and writes serin's answers. `finalize` restores the target when a Canary
//! is deleted; `context` holds what reconciles
//! share.

pub mod act;
pub mod alerts;
pub mod checks;
pub mod compare;
mod context;
pub mod finalize;
mod index;
pub mod metrics;
pub mod observe;
mod reconcile;
pub mod report;
mod requests;
mod shelf;
pub mod slim;
mod watches;

pub use context::{Config, Context, DEFAULT_CONCURRENCY, Error, Stores};
pub use serin_runtime::hooks::{TEST_HOOKS_ENV, TEST_PANIC_ANNOTATION};
pub use watches::{SHUTDOWN_GRACE, run};

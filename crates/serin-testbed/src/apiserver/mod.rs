//! The Kubernetes API emulator: object store, HTTP API, discovery, patches, server-side apply and
//! Tables, authentication and RBAC.

pub mod discovery;
pub mod error;
pub mod fields;
pub mod inputs;
pub mod patch;
pub mod proto;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;

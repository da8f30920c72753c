//! The Kubernetes API emulator: object store, HTTP API, discovery, patches, server-side apply and
//! Tables.

pub mod discovery;
pub mod error;
pub mod fields;
pub mod patch;
pub mod proto;
pub mod resources;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;

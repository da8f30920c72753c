//! Applying a build to the cluster: order, stages and inventory (`order`), drift and ignore
//! rules (`drift`), and the server-side apply, prune and wait calls (`manager`).

pub mod drift;
pub mod manager;
pub mod order;
pub mod takeover;

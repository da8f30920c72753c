//! The simulated Istio data plane: routing, Istio metrics and load.

pub mod dataplane;
pub mod metrics;
pub mod routing;
pub mod view;

//! serin-sync: serin's Git-to-cluster reconciler. It reads Flux's `GitRepository`,
//! `Kustomization`, `HelmRepository`, `HelmChart` and `HelmRelease` resources unchanged and
//! reconciles a Git repository to the cluster as Flux's source-controller, kustomize-controller
//! and helm-controller do (releases through the `helm` program), and cooperates with serin's
//! Canaries.
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod build;
pub mod cli;
pub mod controller;
pub mod helm;
pub mod inputs;
pub mod notify;
pub mod source;

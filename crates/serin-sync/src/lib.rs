//! serin-sync: serin's Git-to-cluster reconciler. It reads Flux's `GitRepository` and
//! `Kustomization` resources unchanged and reconciles a Git repository to the cluster as Flux's
//! source-controller and kustomize-controller do, and cooperates with serin's Canaries.
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod build;
pub mod cli;
pub mod controller;
pub mod inputs;
pub mod source;

//! serin: a progressive delivery controller for Kubernetes that accepts Flagger's
//! `flagger.app/v1beta1` resources unchanged.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod engine;
pub mod inputs;
pub mod plugin;
pub mod validate;

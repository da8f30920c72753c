//! The one place that turns "a namespace, or all of them" into a kube `Api`, for the watches of
//! both controllers and their command lines. Pure.

use kube::{Api, Client, Resource, core::NamespaceResourceScope};

/// The `Api` of a namespaced kind: in `namespace`, or across the cluster when `None`.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

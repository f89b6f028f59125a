//! Nova: a Kubernetes operator that runs a group's platforms from declarative resources.

pub mod api;
pub mod crdgen;

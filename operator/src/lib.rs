//! Nova: a Kubernetes operator that runs a group's platforms from declarative resources.
//!
//! Data flows one way: watch → reconcile → desired objects (pure functions) → server-side
//! apply → status.

pub mod acme;
pub mod admission;
pub mod alertgen;
pub mod alerts;
pub mod api;
pub mod apply;
pub mod backup;
pub mod bluegreen;
pub mod certs;
pub mod conditions;
pub mod context;
pub mod crdgen;
pub mod documents;
pub mod drift;
pub mod host;
pub mod hostaccess;
pub mod hostapp;
pub mod http;
pub mod kit;
pub mod kubeclient;
pub mod leader;
pub mod local;
pub mod local_alerts;
pub mod local_backups;
pub mod local_training;
pub mod operator;
pub mod platform;
pub mod render;
pub mod rollout;
pub mod rollouts;
pub mod ssh;
pub mod state;
pub mod telemetry;
pub mod tenancy;
pub mod training;
pub mod workload;

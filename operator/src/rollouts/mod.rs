//! The blue-green rollout shared by both places it runs: the pure state machine (`plan`) and
//! the health gate's checks (`gate`). The Kubernetes controller (`bluegreen`) and the host
//! engine (`hostapp`) both build on it; neither reaches into the other for it.

pub mod gate;
pub mod plan;

//! The Kubernetes client Nova's binaries use: kube's usual stack with TCP_NODELAY on.
//!
//! Without it, the first request on a new TLS connection waits for the API server's delayed
//! ACK of the handshake (Nagle's algorithm holds the request back): measured 45 ms per fresh
//! connection here, which every `nova rollout` command paid (see docs/benchmarks.md).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

/// A client for `config` whose connections send at once.
pub fn for_config(config: Config) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

/// A client from the kubeconfig or the in-cluster environment, as `Client::try_default`.
pub async fn infer() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    for_config(config)
}

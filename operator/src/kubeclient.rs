//! The Kubernetes client Nova's binaries use: kube's usual stack (its connect, read and write
//! timeouts) with TCP_NODELAY and TCP keepalive on.
//!
//! Without it, the first request on a new TLS connection waits for the API server's delayed
//! ACK of the handshake (Nagle's algorithm holds the request back): measured 45 ms per fresh
//! connection here, which every `nova rollout` command paid (see docs/benchmarks.md).

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// A client for `config` whose connections send at once.
pub fn for_config(config: Config) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // A peer that vanished without a FIN (a half-open connection) is found within about a
    // minute, and the watch or request on it fails and is retried, instead of waiting forever.
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
    let https = config.rustls_https_connector_with_connector(http)?;
    // As kube's own stack: the timeouts of the config on every connection.
    let mut timed = hyper_timeout::TimeoutConnector::new(https);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    timed.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timed);
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

/// `config` with the User-Agent `agent` (`nova-operator/<identity>`): audit logs and the
/// apiserver's metrics then tell Nova's requests, and one replica's from another's, apart.
pub fn with_user_agent(mut config: Config, agent: &str) -> Config {
    if let Ok(v) = http::HeaderValue::from_str(agent) {
        config.headers.retain(|(k, _)| k != http::header::USER_AGENT);
        config.headers.push((http::header::USER_AGENT, v));
    }
    config
}

/// The User-Agent of the operator replica `identity`.
pub fn operator_agent(identity: &str) -> String {
    format!("nova-operator/{identity}")
}

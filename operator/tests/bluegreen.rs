//! Blue-green on the simulated cluster: the whole lifecycle through the real API server,
//! controller-manager and kwok. The health gate probes real HTTP servers, each in a network
//! namespace the test creates (the API server refuses loopback addresses in EndpointSlices),
//! reached through EndpointSlices the tests write (kube-controller-manager's EndpointSlice
//! controller is off here: kwok's pods have addresses nothing answers on).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use nova::api::Platform;
use nova::api::bluegreen::{BlueGreenDeployment, Color, Phase};
use nova::bluegreen::desired::selected;
use serde_json::json;
use test_cluster::netns::NetNs;
use test_cluster::{ControlPlane, Mode, Options};

mod common;
use common::{Operator, TIMEOUT, install_crds};

async fn cluster() -> Result<&'static ControlPlane> {
    static CP: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
    CP.get_or_try_init(|| async {
        let mut opts = Options::new(Mode::Simulated);
        opts.disabled_controllers = vec!["endpointslice-controller".into()];
        ControlPlane::start(opts).await
    })
    .await
    .map_err(Into::into)
}

async fn setup(prefix: &str) -> Result<(Client, String)> {
    let cp = cluster().await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let ns = cp.namespace(&client, prefix).await?;
    Ok((client, ns))
}

/// An HTTP server in a network namespace of its own: `/healthz` answers with `status`,
/// `/metrics` exposes `ratio` as `app_error_ratio` (a tiny exporter for Prometheus).
struct App {
    netns: NetNs,
    port: u16,
    status: Arc<AtomicU16>,
    ratio: Arc<AtomicU64>,
}

impl App {
    async fn start(status: u16) -> Result<Self> {
        use axum::{Router, http::StatusCode, routing::get};
        let code = Arc::new(AtomicU16::new(status));
        let ratio = Arc::new(AtomicU64::new(0f64.to_bits()));
        let (c, r) = (code.clone(), ratio.clone());
        let app = Router::new()
            .route(
                "/healthz",
                get(move || {
                    let c = c.clone();
                    async move {
                        StatusCode::from_u16(c.load(Ordering::Relaxed)).unwrap_or(StatusCode::IM_A_TEAPOT)
                    }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let r = r.clone();
                    async move { format!("app_error_ratio {}\n", f64::from_bits(r.load(Ordering::Relaxed))) }
                }),
            );
        let netns = NetNs::create()?;
        let listener = tokio::net::TcpListener::from_std(netns.listen(0)?)?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { netns, port, status: code, ratio })
    }
}

/// Plays the EndpointSlice controller for one Service: its one ready endpoint is `app`.
async fn endpoints(client: &Client, ns: &str, service: &str, app: &App) -> Result<()> {
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-test"), "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": app.port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [app.netns.ip.to_string()], "conditions": {"ready": true}}],
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .patch(&format!("{service}-test"), &PatchParams::apply("test").force(), &Patch::Apply(&slice))
        .await?;
    Ok(())
}

fn bgd(name: &str, image: &str, extra: serde_json::Value) -> BlueGreenDeployment {
    let mut spec = json!({
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn set_image(api: &Api<BlueGreenDeployment>, name: &str, image: &str) -> Result<()> {
    let patch = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]);
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(patch)?)).await?;
    Ok(())
}

/// Waits until the object satisfies `cond`; fails with its last status otherwise.
async fn wait(
    api: &Api<BlueGreenDeployment>,
    name: &str,
    what: &str,
    cond: impl Fn(&BlueGreenDeployment) -> bool,
) -> Result<BlueGreenDeployment> {
    let waited = tokio::time::timeout(
        TIMEOUT,
        await_condition(api.clone(), name, |b: Option<&BlueGreenDeployment>| b.is_some_and(&cond)),
    )
    .await;
    match waited {
        Ok(Ok(Some(bg))) => Ok(bg),
        _ => {
            let now = api.get(name).await?;
            bail!("{name} never became {what}; status: {}", serde_json::to_string_pretty(&now.status)?)
        }
    }
}

fn phase(b: &BlueGreenDeployment) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

fn active(b: &BlueGreenDeployment) -> (Option<Color>, Option<String>) {
    let s = b.status.clone().unwrap_or_default();
    (s.active_color, s.active_revision)
}

fn fresh(b: &BlueGreenDeployment) -> bool {
    b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
}

fn healthy_on(color: Color) -> impl Fn(&BlueGreenDeployment) -> bool {
    move |b| {
        fresh(b)
            && phase(b) == Some(Phase::Healthy)
            && active(b).0 == Some(color)
            && b.status.as_ref().is_some_and(|s| s.preview_revision.is_none())
    }
}

async fn replicas(client: &Client, ns: &str, name: &str) -> Result<Option<i32>> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await?.and_then(|d| d.spec?.replicas))
}

async fn service_selects(client: &Client, ns: &str, name: &str) -> Result<Option<(Color, String)>> {
    Ok(Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await?.as_ref().and_then(selected))
}

async fn event_reasons(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await?;
    Ok(events.items.into_iter().filter_map(|e| e.reason).collect())
}

#[tokio::test]
async fn preview_gate_promotion_delay_and_scale_down() -> Result<()> {
    let (client, ns) = setup("bg-life").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let app = App::start(200).await?;

    let gate = json!({"healthCheck": {"path": "/healthz", "intervalSeconds": 1, "successes": 2},
                      "scaleDownDelaySeconds": 8});
    api.create(&PostParams::default(), &bgd("shop", "shop:1", gate)).await?;
    let first = wait(&api, "shop", "Healthy on blue", healthy_on(Color::Blue)).await?;
    let r1 = active(&first).1.context("active revision")?;
    assert_eq!(service_selects(&client, &ns, "shop").await?, Some((Color::Blue, r1.clone())));
    assert_eq!(
        service_selects(&client, &ns, "shop-preview").await?,
        Some((Color::Blue, r1.clone())),
        "no preview: preview = active"
    );
    assert_eq!(replicas(&client, &ns, "shop-blue").await?, Some(2));
    assert_eq!(replicas(&client, &ns, "shop-green").await?, None, "one colour until a second revision");

    set_image(&api, "shop", "shop:2").await?;
    let previewing = wait(&api, "shop", "previewing on green", |b| {
        b.status.as_ref().is_some_and(|s| s.preview_color == Some(Color::Green))
    })
    .await?;
    let r2 =
        previewing.status.as_ref().and_then(|s| s.preview_revision.clone()).context("preview revision")?;
    assert_ne!(r1, r2);
    // Traffic stays on blue while the preview starts and is checked.
    assert_eq!(service_selects(&client, &ns, "shop").await?, Some((Color::Blue, r1.clone())));
    assert_eq!(service_selects(&client, &ns, "shop-preview").await?, Some((Color::Green, r2.clone())));
    endpoints(&client, &ns, "shop-preview", &app).await?;

    let promoted = wait(&api, "shop", "Healthy on green", healthy_on(Color::Green)).await?;
    let st = promoted.status.clone().unwrap();
    assert_eq!(st.active_revision.as_deref(), Some(r2.as_str()));
    assert_eq!(st.previous_revision.as_deref(), Some(r1.as_str()));
    assert_eq!(st.history.iter().map(|h| h.revision.clone()).collect::<Vec<_>>(), [r2.clone(), r1.clone()]);
    assert_eq!(service_selects(&client, &ns, "shop").await?, Some((Color::Green, r2.clone())));
    // The old colour is kept for the delay, then scaled to zero.
    assert_eq!(
        replicas(&client, &ns, "shop-blue").await?,
        Some(2),
        "blue is kept inside scaleDownDelaySeconds"
    );
    test_cluster::eventually("blue scaled to zero", TIMEOUT, || async {
        Ok::<_, anyhow::Error>(replicas(&client, &ns, "shop-blue").await? == Some(0))
    })
    .await?;
    // The status is written after the scale-down it records: await it as well.
    wait(&api, "shop", "scale-down recorded", |b| {
        b.status.as_ref().is_some_and(|s| s.previous_revision.is_none() && s.scale_down_at.is_none())
    })
    .await?;
    let switched = st.last_switch_time.unwrap().0;
    let scaled_at = k8s_openapi::jiff::Timestamp::now();
    assert!(scaled_at.duration_since(switched).as_secs_f64() >= 8.0, "not scaled down before the delay");

    let reasons = event_reasons(&client, &ns, "shop").await?;
    for r in ["PreviewStarted", "HealthGatePassed", "Promoted", "ScaledDown"] {
        assert!(reasons.iter().any(|x| x == r), "event {r} missing in {reasons:?}");
    }
    let metrics = op.metrics().await?;
    assert!(metrics.contains("nova_bluegreen_switch_seconds_count{kind=\"promote\"} 2"), "{metrics}");

    let state = op.stop_keeping_state().await?;
    let db = nova::state::State::connect(&state.path().join("state.db").display().to_string()).await?;
    let releases = db.releases("BlueGreenDeployment", &ns, "shop").await?;
    assert_eq!(releases.iter().map(|r| r.revision.clone()).collect::<Vec<_>>(), [r1, r2]);
    assert_eq!(releases[1].image, "shop:2");
    let audit = db.audit_log("BlueGreenDeployment", &ns, "shop").await?;
    let switches: Vec<_> = audit.iter().filter(|a| a.action == "switch").map(|a| a.detail.clone()).collect();
    assert_eq!(switches.len(), 2, "first deploy and one promotion, each once: {switches:?}");
    Ok(())
}

#[tokio::test]
async fn failing_gate_degrades_without_a_switch_then_abort_scales_the_preview_down() -> Result<()> {
    let (client, ns) = setup("bg-fail").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let app = App::start(500).await?;

    let gate = json!({"healthCheck": {"path": "/healthz", "intervalSeconds": 1, "failures": 2}});
    api.create(&PostParams::default(), &bgd("api", "api:1", gate)).await?;
    let first = wait(&api, "api", "Healthy on blue", healthy_on(Color::Blue)).await?;
    let r1 = active(&first).1.unwrap();
    endpoints(&client, &ns, "api-preview", &app).await?;
    set_image(&api, "api", "api:2").await?;

    let failed = wait(&api, "api", "Degraded", |b| fresh(b) && phase(b) == Some(Phase::Degraded)).await?;
    let st = failed.status.clone().unwrap();
    let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "HealthGateFailed"));
    assert!(degraded.message.contains("answered 500"), "{}", degraded.message);
    assert_eq!(active(&failed), (Some(Color::Blue), Some(r1.clone())));
    assert_eq!(service_selects(&client, &ns, "api").await?, Some((Color::Blue, r1.clone())));
    assert!(event_reasons(&client, &ns, "api").await?.iter().any(|r| r == "HealthGateFailed"));

    // Promotion of a failed preview is refused; abort scales it down and keeps traffic.
    let refused = nova::rollout::promote(&client, &ns, "api").await.unwrap_err().to_string();
    assert!(refused.contains("failed its health gate"), "{refused}");
    nova::rollout::abort(&client, &ns, "api").await?;
    let aborted = wait(&api, "api", "Aborted", |b| phase(b) == Some(Phase::Aborted)).await?;
    assert_eq!(active(&aborted), (Some(Color::Blue), Some(r1.clone())));
    test_cluster::eventually("green scaled to zero", TIMEOUT, || async {
        Ok::<_, anyhow::Error>(replicas(&client, &ns, "api-green").await? == Some(0))
    })
    .await?;
    assert_eq!(service_selects(&client, &ns, "api").await?, Some((Color::Blue, r1)));

    // A fixed release goes through.
    app.status.store(200, Ordering::Relaxed);
    set_image(&api, "api", "api:3").await?;
    wait(&api, "api", "Healthy on green", healthy_on(Color::Green)).await?;
    op.stop().await
}

#[tokio::test]
async fn abort_inside_the_delay_and_undo_flip_traffic_at_once() -> Result<()> {
    let (client, ns) = setup("bg-abort").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &bgd("web", "web:1", json!({"scaleDownDelaySeconds": 300}))).await?;
    let r1 = active(&wait(&api, "web", "Healthy on blue", healthy_on(Color::Blue)).await?).1.unwrap();
    set_image(&api, "web", "web:2").await?;
    let r2 = active(&wait(&api, "web", "Healthy on green", healthy_on(Color::Green)).await?).1.unwrap();

    // spec.abort inside the delay: back to blue by one selector flip, green scaled down.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"abort": true}}))).await?;
    let aborted = wait(&api, "web", "Aborted on blue", |b| {
        phase(b) == Some(Phase::Aborted) && active(b).0 == Some(Color::Blue)
    })
    .await?;
    assert_eq!(active(&aborted).1.as_deref(), Some(r1.as_str()));
    assert_eq!(aborted.status.as_ref().unwrap().aborted_revision.as_deref(), Some(r2.as_str()));
    assert_eq!(service_selects(&client, &ns, "web").await?, Some((Color::Blue, r1.clone())));
    test_cluster::eventually("green scaled to zero", TIMEOUT, || async {
        Ok::<_, anyhow::Error>(replicas(&client, &ns, "web-green").await? == Some(0))
    })
    .await?;

    // Release r2 again by clearing abort? It stays aborted until the template changes.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"abort": false}}))).await?;
    let still = wait(&api, "web", "observed", fresh).await?;
    assert_eq!(phase(&still), Some(Phase::Aborted));

    // A third revision, promoted; then undo inside its delay re-uses blue, still running.
    set_image(&api, "web", "web:3").await?;
    let third = wait(&api, "web", "Healthy on green", healthy_on(Color::Green)).await?;
    let r3 = active(&third).1.unwrap();
    assert_ne!(r3, r2);
    let history = nova::rollout::history(&client, &ns, "web").await?;
    assert!(history.contains("web:1") && history.contains("web:2") && history.contains("web:3"), "{history}");
    assert!(history.lines().any(|l| l.contains(&r3) && l.contains("(active)")), "{history}");
    let said = nova::rollout::undo(&client, &ns, "web", None).await?;
    assert!(said.contains(&r1), "undo goes to the revision before the active one: {said}");
    let undone = wait(&api, "web", "Healthy on blue", healthy_on(Color::Blue)).await?;
    assert_eq!(active(&undone).1.as_deref(), Some(r1.as_str()));
    assert_eq!(service_selects(&client, &ns, "web").await?, Some((Color::Blue, r1.clone())));
    let reasons = event_reasons(&client, &ns, "web").await?;
    assert!(
        reasons.iter().any(|r| r == "RolledBack"),
        "undo inside the delay is a fast rollback: {reasons:?}"
    );
    let metrics = op.metrics().await?;
    assert!(metrics.contains("nova_bluegreen_switch_seconds_count{kind=\"rollback\"} 2"), "{metrics}");

    // Undo to an explicit revision after the delay goes through a preview again.
    let err = nova::rollout::undo(&client, &ns, "web", Some("99")).await.unwrap_err().to_string();
    assert!(err.contains("not in the history"), "{err}");
    op.stop().await
}

#[tokio::test]
async fn manual_promotion_survives_restarts_in_every_phase_without_a_double_switch() -> Result<()> {
    let (client, ns) = setup("bg-restart").await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let app = App::start(200).await?;
    let mut op = Operator::start(client.clone(), &ns).await?;
    let spec = json!({"autoPromotionEnabled": false, "scaleDownDelaySeconds": 6, "previewReplicaCount": 1,
                      "healthCheck": {"path": "/healthz", "intervalSeconds": 1, "successes": 3}});
    api.create(&PostParams::default(), &bgd("pay", "pay:1", spec)).await?;
    wait(&api, "pay", "Healthy on blue", healthy_on(Color::Blue)).await?;
    let restart = |op: Operator| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let state = op.stop_keeping_state().await?;
            Operator::start_with_state(client, &ns, state).await
        }
    };

    // Restart while the preview starts (no endpoints yet, so the gate cannot pass).
    set_image(&api, "pay", "pay:2").await?;
    wait(&api, "pay", "previewing", |b| b.status.as_ref().is_some_and(|s| s.preview_revision.is_some()))
        .await?;
    op = restart(op).await?;
    // Restart in the middle of the gate: after the first successful check of three.
    endpoints(&client, &ns, "pay-preview", &app).await?;
    wait(&api, "pay", "one check passed", |b| {
        b.status.as_ref().and_then(|s| s.gate.as_ref()).is_some_and(|g| g.successes >= 1)
    })
    .await?;
    op = restart(op).await?;
    let paused = wait(&api, "pay", "Paused", |b| phase(b) == Some(Phase::Paused)).await?;
    assert_eq!(active(&paused).0, Some(Color::Blue), "manual promotion: no switch without a request");
    assert_eq!(
        replicas(&client, &ns, "pay-green").await?,
        Some(2),
        "scaled to full size, ready for the switch"
    );
    // Restart while paused: still paused, still blue.
    op = restart(op).await?;
    let still = wait(&api, "pay", "Paused after restart", |b| phase(b) == Some(Phase::Paused)).await?;
    assert_eq!(active(&still).0, Some(Color::Blue));

    let said = nova::rollout::promote(&client, &ns, "pay").await?;
    assert!(said.contains("promotion"), "{said}");
    wait(&api, "pay", "Healthy on green", healthy_on(Color::Green)).await?;
    // Restart inside the scale-down delay: blue still goes down once, traffic stays on green.
    op = restart(op).await?;
    test_cluster::eventually("blue scaled to zero", TIMEOUT, || async {
        Ok::<_, anyhow::Error>(replicas(&client, &ns, "pay-blue").await? == Some(0))
    })
    .await?;
    let done = api.get("pay").await?;
    assert_eq!(active(&done).0, Some(Color::Green));
    let st = done.status.unwrap();
    assert_eq!(st.history.len(), 2, "one entry per switch: {:?}", st.history);
    let reasons = event_reasons(&client, &ns, "pay").await?;
    assert_eq!(reasons.iter().filter(|r| *r == "Promoted").count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "HealthGatePassed").count(), 1, "{reasons:?}");
    op.stop().await
}

#[tokio::test]
async fn progress_deadline_degrades_or_aborts() -> Result<()> {
    let (client, ns) = setup("bg-deadline").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    // No EndpointSlice for the preview is ever written: the gate never sees a ready endpoint.
    let spec = json!({"progressDeadlineSeconds": 3, "abortOnProgressDeadline": true,
                      "healthCheck": {"path": "/healthz", "intervalSeconds": 1}});
    api.create(&PostParams::default(), &bgd("slow", "slow:1", spec)).await?;
    wait(&api, "slow", "Healthy on blue", healthy_on(Color::Blue)).await?;
    set_image(&api, "slow", "slow:2").await?;
    let aborted = wait(&api, "slow", "Aborted", |b| phase(b) == Some(Phase::Aborted)).await?;
    let ready = aborted.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "ProgressDeadlineExceeded");
    assert!(ready.message.contains("no ready endpoints"), "{}", ready.message);
    assert_eq!(service_selects(&client, &ns, "slow").await?.map(|s| s.0), Some(Color::Blue));
    op.stop().await
}

#[tokio::test]
async fn platform_with_blue_green_strategy_owns_a_rollout_behind_its_ingress() -> Result<()> {
    let (client, ns) = setup("bg-plat").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let platforms: Api<Platform> = Api::namespaced(client.clone(), &ns);
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let p: Platform = serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "Platform", "metadata": {"name": "shop"},
        "spec": {"image": "shop:1", "replicas": 2, "domains": ["shop.example.com"],
                 "strategy": {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 5}}},
    }))?;
    platforms.create(&PostParams::default(), &p).await?;
    let first = wait(&api, "shop", "Healthy on blue", healthy_on(Color::Blue)).await?;
    let ready = |p: Option<&Platform>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "shop", ready)).await??;
    assert_eq!(first.spec.strategy.active_service.as_deref(), Some("shop"));
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("shop").await?.is_none(),
        "no Rolling Deployment"
    );
    let ing =
        Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), &ns).get("shop").await?;
    let backend =
        ing.spec.unwrap().rules.unwrap()[0].http.as_ref().unwrap().paths[0].backend.service.clone().unwrap();
    assert_eq!(backend.name, "shop", "the Ingress points at the active Service");
    assert_eq!(service_selects(&client, &ns, "shop").await?.map(|s| s.0), Some(Color::Blue));

    platforms
        .patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": "shop:2"}})))
        .await?;
    let second = wait(&api, "shop", "Healthy on green", healthy_on(Color::Green)).await?;
    assert_eq!(service_selects(&client, &ns, "shop").await?.map(|s| s.0), Some(Color::Green));
    let r2 = active(&second).1;
    let follows =
        |p: Option<&Platform>| p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.active_revision == r2);
    tokio::time::timeout(TIMEOUT, await_condition(platforms.clone(), "shop", follows))
        .await
        .context("the Platform's status never showed the promoted revision")??;
    let refused = nova::rollout::undo(&client, &ns, "shop", None).await.unwrap_err().to_string();
    assert!(refused.contains("managed by Platform shop"), "{refused}");
    op.stop().await
}

#[tokio::test]
async fn analysis_through_a_real_prometheus() -> Result<()> {
    use nova::api::bluegreen::Analysis;
    use nova::bluegreen::{gate::analysis_round, plan::Outcome};
    let (client, ns) = setup("bg-prom").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    let app = App::start(200).await?;
    let target = format!("{}:{}", app.netns.ip, app.port);
    let prom =
        tokio::task::spawn_blocking(move || test_cluster::prometheus::Prometheus::start(&[target])).await??;
    let analysis = |condition: &str| Analysis {
        prometheus_url: prom.url().to_owned(),
        query: "app_error_ratio".into(),
        success_condition: condition.into(),
        interval_seconds: 1,
        count: 2,
    };
    let http = reqwest::Client::new();
    let sees = |v: f64| {
        let a = analysis(&format!("result == {v}"));
        let http = http.clone();
        async move { Ok::<_, anyhow::Error>(matches!(analysis_round(&http, &a).await, Outcome::Pass(_))) }
    };
    test_cluster::eventually("Prometheus to scrape the exporter", TIMEOUT, || sees(0.0)).await?;

    let spec = json!({"analysis": serde_json::to_value(analysis("result < 0.01"))?});
    api.create(&PostParams::default(), &bgd("ml", "ml:1", spec)).await?;
    wait(&api, "ml", "Healthy on blue", healthy_on(Color::Blue)).await?;
    set_image(&api, "ml", "ml:2").await?;
    wait(&api, "ml", "Healthy on green", healthy_on(Color::Green)).await?;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().fields("regarding.name=ml"))
        .await?;
    let passed = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("HealthGatePassed"))
        .context("gate event")?;
    assert!(passed.note.as_deref().unwrap_or("").contains("satisfies result < 0.01"), "{:?}", passed.note);

    // The application starts failing: the next release is measured, fails, and is not switched to.
    app.ratio.store(0.5f64.to_bits(), Ordering::Relaxed);
    test_cluster::eventually("Prometheus to see the new ratio", TIMEOUT, || sees(0.5)).await?;
    set_image(&api, "ml", "ml:3").await?;
    let failed = wait(&api, "ml", "Degraded", |b| fresh(b) && phase(b) == Some(Phase::Degraded)).await?;
    let msg = failed.status.as_ref().unwrap().gate.as_ref().unwrap().message.clone();
    assert!(msg.contains("app_error_ratio = 0.5 does not satisfy result < 0.01"), "{msg}");
    assert_eq!(active(&failed).0, Some(Color::Green));
    op.stop().await
}

/// Runs `program args` with the test cluster's kubeconfig and `dir` first on PATH.
async fn run_cli(program: &std::path::Path, args: &[&str], dir: &std::path::Path) -> Result<(bool, String)> {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", cluster().await?.kubeconfig())
        .env("PATH", path)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn the_cli_and_the_kubectl_plugin_drive_a_manual_rollout() -> Result<()> {
    let (client, ns) = setup("bg-cli").await?;
    let op = Operator::start(client.clone(), &ns).await?;
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &bgd("cli", "cli:1", json!({"autoPromotionEnabled": false}))).await?;
    wait(&api, "cli", "Healthy on blue", healthy_on(Color::Blue)).await?;

    // The same binary is the kubectl plugin when it is called kubectl-nova.
    let nova = std::path::PathBuf::from(env!("CARGO_BIN_EXE_nova"));
    let plugins = tempfile::tempdir()?;
    std::os::unix::fs::symlink(&nova, plugins.path().join("kubectl-nova"))?;
    let kubectl = test_cluster::bin_dir()?.join("kubectl");

    set_image(&api, "cli", "cli:2").await?;
    let (ok, out) =
        run_cli(&nova, &["rollout", "status", "cli", "-n", &ns, "--watch"], plugins.path()).await?;
    assert!(ok, "{out}");
    assert!(out.contains("Phase:    Paused") && out.contains("Preview:  green"), "{out}");
    assert!(out.contains("nova rollout promote"), "status says what to do: {out}");

    let (ok, out) =
        run_cli(&kubectl, &["nova", "rollout", "promote", "cli", "-n", &ns], plugins.path()).await?;
    assert!(ok && out.contains("promotion of revision"), "{out}");
    let (ok, out) =
        run_cli(&nova, &["rollout", "status", "cli", "-n", &ns, "--watch"], plugins.path()).await?;
    assert!(ok && out.contains("Phase:    Healthy") && out.contains("Active:   green"), "{out}");

    let (ok, out) =
        run_cli(&kubectl, &["nova", "rollout", "history", "cli", "-n", &ns], plugins.path()).await?;
    assert!(ok && out.contains("cli:1") && out.contains("cli:2"), "{out}");
    let (ok, out) = run_cli(&nova, &["rollout", "promote", "cli", "-n", &ns], plugins.path()).await?;
    assert!(!ok && out.contains("no preview to promote"), "a clear refusal: {out}");
    let (ok, out) = run_cli(&nova, &["rollout", "status", "nope", "-n", &ns], plugins.path()).await?;
    assert!(!ok && out.contains("\"nope\" not found"), "{out}");
    op.stop().await
}

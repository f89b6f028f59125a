//! The state machine step by step. `World` plays the cluster the simplest way it can: a colour
//! runs what it was last asked for, and `ready` decides whether its pods are available.

use super::*;
use crate::api::bluegreen::BlueGreenDeploymentSpec;
use serde_json::json;

fn spec(extra: serde_json::Value) -> BlueGreenDeploymentSpec {
    let mut v = json!({"template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}, "replicas": 3});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

struct World {
    spec: BlueGreenDeploymentSpec,
    status: BlueGreenDeploymentStatus,
    blue: Option<ColorLive>,
    green: Option<ColorLive>,
    now: Timestamp,
    /// Pods become available as soon as they are asked for.
    ready: bool,
    switches: Vec<Switch>,
    events: Vec<&'static str>,
    /// The backup gate's Backup; a request the plan makes lands on it, as the annotation would.
    backup: Option<BackupView>,
}

impl World {
    fn new(spec: BlueGreenDeploymentSpec) -> Self {
        Self {
            spec,
            status: Default::default(),
            blue: None,
            green: None,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            ready: true,
            switches: vec![],
            events: vec![],
            backup: None,
        }
    }

    fn input<'a>(&'a self, desired: &'a str, round: Option<GateRound>) -> Input<'a> {
        Input {
            spec: &self.spec,
            desired,
            status: &self.status,
            blue: self.blue.clone(),
            green: self.green.clone(),
            promote: false,
            abort_requested: false,
            round,
            backup: self.backup.clone(),
            now: self.now,
        }
    }

    /// Reconciles until nothing changes, as the watches would trigger them: plan, run due
    /// checks with `gate`, apply the wants, keep the status.
    fn step_with(&mut self, desired: &str, promote: bool, gate: impl Fn(GateDue) -> GateRound) -> Plan {
        for _ in 0..8 {
            let before = (self.status.clone(), self.blue.clone(), self.green.clone());
            let p = self.once(desired, promote, &gate);
            if before == (self.status.clone(), self.blue.clone(), self.green.clone()) {
                return p;
            }
        }
        panic!("no steady state after 8 reconciles");
    }

    fn once(&mut self, desired: &str, promote: bool, gate: &impl Fn(GateDue) -> GateRound) -> Plan {
        let mut input = self.input(desired, None);
        input.promote = promote;
        let mut p = plan(&input);
        if p.gate_due.any() {
            input.round = Some(gate(p.gate_due));
            p = plan(&input);
            assert!(!p.gate_due.any(), "a round with results never asks for more");
        }
        for (c, want) in [(Color::Blue, p.blue), (Color::Green, p.green)] {
            let Some(w) = want else { continue };
            let slot = match c {
                Color::Blue => &mut self.blue,
                Color::Green => &mut self.green,
            };
            let live = slot.get_or_insert_with(Default::default);
            if w.template == Template::Spec {
                live.revision = Some(desired.to_owned());
            }
            live.replicas = w.replicas;
            live.available = if self.ready { w.replicas } else { 0 };
        }
        if let (Some(r), Some(b)) = (&p.backup_request, &mut self.backup) {
            b.requested = Some(r.clone());
        }
        self.status = p.status.clone();
        self.switches.extend(p.switch.clone());
        self.events.extend(p.events.iter().map(|e| e.1));
        p
    }

    fn step(&mut self, desired: &str) -> Plan {
        self.step_with(desired, false, |_| GateRound::default())
    }

    fn wait(&mut self, secs: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(secs)).unwrap();
    }

    fn active(&self) -> (Option<Color>, Option<&str>) {
        (self.status.active_color, self.status.active_revision.as_deref())
    }
}

fn pass(due: GateDue) -> GateRound {
    GateRound {
        health: due.health.then(|| Outcome::Pass("2 of 2 endpoints answered 200".into())),
        analysis: due.analysis.then(|| Outcome::Pass("result 0 < 0.01".into())),
    }
}

fn fail(due: GateDue) -> GateRound {
    GateRound {
        health: due.health.then(|| Outcome::Fail("10.0.0.1:8080 answered 500".into())),
        analysis: None,
    }
}

#[test]
fn first_deploy_goes_straight_to_blue() {
    let mut w = World::new(spec(json!({})));
    let p = w.step("r1");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    assert_eq!(p.blue, Some(Want { template: Template::Spec, replicas: 3 }));
    assert_eq!(p.green, None, "no second colour before a second revision");
    assert_eq!(p.phase, Phase::Healthy);
    assert_eq!(w.switches.len(), 1);
}

#[test]
fn new_revision_previews_checks_promotes_keeps_old_colour_then_scales_it_down() {
    let mut w = World::new(spec(json!({"healthCheck": {"successes": 2, "intervalSeconds": 5}})));
    w.step("r1");
    let p = w.step_with("r2", false, pass);
    assert_eq!(p.green, Some(Want { template: Template::Spec, replicas: 3 }));
    assert_eq!(p.blue, Some(Want { template: Template::Live, replicas: 3 }));
    assert_eq!(w.status.preview_color, Some(Color::Green));
    assert_eq!(p.phase, Phase::Progressing, "one success of two");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    assert_eq!(p.requeue, Some(Duration::from_secs(5)));

    // Not due yet: no check, no count.
    let p = w.step_with("r2", false, |_| panic!("no check before the interval"));
    assert_eq!(w.status.gate.as_ref().unwrap().successes, 1);
    assert!(p.requeue.unwrap() <= Duration::from_secs(5));

    w.wait(5);
    let p = w.step_with("r2", false, pass);
    assert_eq!(p.phase, Phase::Healthy);
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
    assert_eq!(
        w.switches.last().unwrap(),
        &Switch { from: Color::Blue, to: Color::Green, revision: "r2".into(), rollback: false }
    );
    assert_eq!(w.status.previous_revision.as_deref(), Some("r1"));
    assert_eq!(p.blue, Some(Want { template: Template::Live, replicas: 3 }), "old colour kept");
    assert_eq!(p.requeue, Some(Duration::from_secs(30)));
    assert_eq!(w.status.history.iter().map(|h| h.revision.as_str()).collect::<Vec<_>>(), ["r2", "r1"]);

    w.wait(10);
    let p = w.step("r2");
    assert_eq!(p.blue, Some(Want { template: Template::Live, replicas: 3 }), "still inside the delay");
    w.wait(20);
    let p = w.step("r2");
    assert_eq!(p.blue, Some(Want { template: Template::Live, replicas: 0 }));
    assert!(w.status.previous_revision.is_none() && w.status.scale_down_at.is_none());
    assert_eq!(w.switches.len(), 2, "a steady state never switches again");
}

#[test]
fn failing_health_gate_degrades_without_switching() {
    let mut w = World::new(spec(json!({"healthCheck": {"failures": 2, "intervalSeconds": 1}})));
    w.step("r1");
    w.step_with("r2", false, fail);
    w.wait(1);
    let p = w.step_with("r2", false, fail);
    assert_eq!(p.phase, Phase::Degraded);
    assert_eq!(
        p.conditions[2],
        Cond::new(CondType::Degraded, true, "HealthGateFailed", p.conditions[2].message.clone())
    );
    assert!(p.conditions[2].message.contains("answered 500"), "{}", p.conditions[2].message);
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    // Later reconciles neither check again nor switch.
    w.wait(60);
    let p = w.step_with("r2", true, |_| panic!("a failed gate is final for the revision"));
    assert_eq!(p.phase, Phase::Degraded);
    assert_eq!(w.switches.len(), 1);
}

#[test]
fn a_success_resets_the_failure_count() {
    let mut w =
        World::new(spec(json!({"healthCheck": {"failures": 2, "successes": 3, "intervalSeconds": 1}})));
    w.step("r1");
    for round in [fail, pass, fail, pass, fail] {
        w.step_with("r2", false, round);
        w.wait(1);
    }
    assert!(!w.status.gate.as_ref().unwrap().failed);
    assert_eq!(w.status.gate.as_ref().unwrap().failures, 1);
}

#[test]
fn no_endpoints_counts_neither_way_until_the_deadline() {
    let mut w =
        World::new(spec(json!({"healthCheck": {"intervalSeconds": 1}, "progressDeadlineSeconds": 10})));
    w.step("r1");
    let none =
        |_| GateRound { health: Some(Outcome::Inconclusive("no ready endpoints".into())), analysis: None };
    for _ in 0..9 {
        let p = w.step_with("r2", false, none);
        assert_eq!(p.phase, Phase::Progressing);
        w.wait(1);
    }
    w.wait(1);
    let p = w.step_with("r2", false, none);
    assert_eq!(p.phase, Phase::Degraded);
    assert_eq!(p.conditions[0].reason, "ProgressDeadlineExceeded");
    assert!(p.conditions[0].message.contains("no ready endpoints"));
}

#[test]
fn deadline_with_auto_abort_scales_the_preview_down() {
    let mut w = World::new(spec(json!({"progressDeadlineSeconds": 10, "abortOnProgressDeadline": true})));
    w.step("r1");
    w.ready = false;
    w.step("r2");
    w.wait(11);
    let p = w.step("r2");
    assert_eq!(p.phase, Phase::Aborted);
    assert_eq!(p.green, Some(Want { template: Template::Live, replicas: 0 }));
    assert_eq!(w.status.aborted_revision.as_deref(), Some("r2"));
    // It stays aborted: no new preview of the same revision.
    w.ready = true;
    let p = w.step("r2");
    assert_eq!((p.phase, p.green.unwrap().replicas), (Phase::Aborted, 0));
    // A new template releases again.
    let p = w.step("r3");
    assert_eq!(p.phase, Phase::Healthy);
    assert_eq!(w.active(), (Some(Color::Green), Some("r3")));
}

#[test]
fn manual_promotion_pauses_until_asked() {
    let mut w = World::new(spec(json!({"autoPromotionEnabled": false, "previewReplicaCount": 1})));
    w.step("r1");
    let p = w.step("r2");
    assert_eq!(p.phase, Phase::Paused);
    assert_eq!(
        p.green.unwrap().replicas,
        3,
        "a passed gate scales the preview to full size ahead of promotion"
    );
    let p = w.step("r2");
    assert_eq!(p.phase, Phase::Paused);
    let p = w.step_with("r2", true, pass);
    assert_eq!(p.phase, Phase::Healthy);
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
}

#[test]
fn preview_runs_its_own_size_until_the_gate_passes() {
    let mut w = World::new(spec(json!({"previewReplicaCount": 1, "healthCheck": {"successes": 2}})));
    w.step("r1");
    let p = w.step_with("r2", false, pass);
    assert_eq!(p.green.unwrap().replicas, 1);
    w.wait(5);
    let p = w.step_with("r2", false, pass);
    assert_eq!(p.green.unwrap().replicas, 3);
    assert_eq!(p.phase, Phase::Healthy, "scaled and switched once available");
}

#[test]
fn auto_promotion_waits_its_seconds() {
    let mut w = World::new(spec(json!({"autoPromotionSeconds": 20})));
    w.step("r1");
    let p = w.step("r2");
    assert_eq!(p.conditions[0].reason, "AwaitingPromotion");
    assert_eq!(p.requeue, Some(Duration::from_secs(20)));
    w.wait(20);
    w.step("r2");
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
}

#[test]
fn abort_inside_the_delay_flips_back_at_once() {
    let mut w = World::new(spec(json!({})));
    w.step("r1");
    w.step("r2");
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
    w.wait(5);
    w.spec.abort = true;
    let p = w.step("r2");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    assert_eq!(
        w.switches.last().unwrap(),
        &Switch { from: Color::Green, to: Color::Blue, revision: "r1".into(), rollback: true }
    );
    assert_eq!(p.green, Some(Want { template: Template::Live, replicas: 0 }));
    assert_eq!(p.phase, Phase::Aborted);
    // Still asked for r2 with abort set: stays aborted, no second switch.
    let p = w.step("r2");
    assert_eq!((p.phase, p.switch), (Phase::Aborted, None));
    w.spec.abort = false;
    let p = w.step("r2");
    assert_eq!(p.phase, Phase::Aborted, "an aborted revision is not released again");
    assert_eq!(w.switches.len(), 3);
}

#[test]
fn abort_after_the_delay_is_too_late_to_flip() {
    let mut w = World::new(spec(json!({"scaleDownDelaySeconds": 10})));
    w.step("r1");
    w.step("r2");
    w.wait(11);
    w.step("r2");
    w.spec.abort = true;
    let p = w.step("r2");
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
    assert_eq!(p.switch, None);
}

#[test]
fn abort_of_a_preview_keeps_traffic_and_scales_it_down() {
    let mut w = World::new(spec(json!({"autoPromotionEnabled": false})));
    w.step("r1");
    w.step("r2");
    let mut input = w.input("r2", None);
    input.abort_requested = true;
    let p = plan(&input);
    assert_eq!(p.phase, Phase::Aborted);
    assert_eq!(p.green, Some(Want { template: Template::Live, replicas: 0 }));
    assert_eq!(p.status.active_revision.as_deref(), Some("r1"));
    assert_eq!(p.switch, None);
}

#[test]
fn undo_inside_the_delay_reuses_the_running_colour() {
    let mut w = World::new(spec(json!({"healthCheck": {}})));
    w.step("r1");
    w.step_with("r2", false, pass);
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
    w.step_with("r1", false, |_| panic!("the retained colour needs no gate"));
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    assert!(w.switches.last().unwrap().rollback);
    // The colour that was left ran the release being undone: it goes to zero at once.
    w.step("r1");
    assert_eq!(w.green.as_ref().unwrap().replicas, 0);
}

#[test]
fn undo_after_the_delay_previews_the_old_revision_again() {
    let mut w = World::new(spec(json!({"scaleDownDelaySeconds": 5})));
    w.step("r1");
    w.step("r2");
    w.wait(6);
    w.step("r2");
    assert_eq!(w.blue.as_ref().unwrap().replicas, 0);
    let p = w.step("r1");
    assert_eq!(p.blue, Some(Want { template: Template::Spec, replicas: 3 }));
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    assert!(!w.switches.last().unwrap().rollback);
}

#[test]
fn a_newer_revision_replaces_the_preview() {
    let mut w = World::new(spec(json!({"autoPromotionEnabled": false})));
    w.step("r1");
    w.step("r2");
    w.now = w.now.checked_add(SignedDuration::from_secs(3)).unwrap();
    let p = w.step("r3");
    assert_eq!(w.status.preview_revision.as_deref(), Some("r3"));
    assert_eq!(w.status.preview_started_at, Some(Time(w.now)));
    assert_eq!(p.phase, Phase::Paused);
}

#[test]
fn analysis_needs_count_passes_and_fails_on_one_bad_measurement() {
    let analysis = json!({"prometheusUrl": "http://p:9090", "query": "q", "successCondition": "result < 1",
                          "count": 2, "intervalSeconds": 10});
    let mut w = World::new(spec(json!({"analysis": analysis})));
    w.step("r1");
    let p = w.step_with("r2", false, pass);
    assert_eq!(p.phase, Phase::Progressing);
    assert_eq!(p.requeue, Some(Duration::from_secs(10)));
    w.wait(10);
    w.step_with("r2", false, pass);
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));

    let mut w = World::new(spec(json!({"analysis": analysis})));
    w.step("r1");
    let p = w.step_with("r2", false, |_| GateRound {
        health: None,
        analysis: Some(Outcome::Fail("result 5 does not satisfy result < 1".into())),
    });
    assert_eq!(p.phase, Phase::Degraded);
}

#[test]
fn a_restart_replays_to_the_same_decision() {
    // The plan reads only spec, status and the cluster: the same inputs after a restart give
    // the same plan, and once switched there is nothing left to switch.
    let mut w = World::new(spec(json!({})));
    w.step("r1");
    w.step("r2");
    let again = plan(&w.input("r2", None));
    assert_eq!(again.switch, None);
    assert_eq!(again.status, w.status);
}

#[test]
fn history_is_bounded_by_the_limit() {
    let mut w = World::new(spec(json!({"revisionHistoryLimit": 2, "scaleDownDelaySeconds": 0})));
    for r in ["r1", "r2", "r3", "r4"] {
        w.step(r);
        w.step(r);
    }
    assert_eq!(w.status.history.iter().map(|h| h.revision.as_str()).collect::<Vec<_>>(), ["r4", "r3"]);
}

fn gated() -> World {
    let mut w = World::new(spec(json!({"backupGate": {"backupRef": {"name": "db"}, "maxAgeSeconds": 600}})));
    // A verified artifact from long before any release.
    let old = w.now.checked_sub(SignedDuration::from_secs(86_400)).unwrap();
    w.backup =
        Some(BackupView { exists: true, verifies: true, newest_verified: Some(old), ..Default::default() });
    w
}

/// The Backup answers the request it holds: a verified artifact now, or a failure.
fn answer(w: &mut World, failure: Option<&str>) {
    let now = w.now;
    let b = w.backup.as_mut().unwrap();
    b.answered = b.requested.clone();
    match failure {
        Some(f) => b.failure = Some(f.into()),
        None => b.newest_verified = Some(now),
    }
}

#[test]
fn a_backup_gate_asks_for_a_run_and_promotes_only_after_a_fresh_verified_artifact() {
    let mut w = gated();
    w.step("r1");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")), "a first deploy has nothing to protect");
    let p = w.step("r2");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")), "the day-old artifact does not count");
    assert_eq!(p.conditions.iter().find(|c| c.type_ == CondType::Ready).unwrap().reason, "AwaitingBackup");
    let asked = w.backup.as_ref().unwrap().requested.clone().expect("a run asked");
    assert!(asked.starts_with("r2@"), "{asked}");
    w.wait(5);
    let p = w.step("r2");
    assert!(p.backup_request.is_none(), "asked once: the run is awaited, not asked again");
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
    w.wait(30);
    answer(&mut w, None);
    let p = w.step("r2");
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")), "{:?}", p.conditions);
    assert_eq!(w.events.iter().filter(|e| **e == "BackupRequested").count(), 1);
}

#[test]
fn a_failed_backup_holds_the_rollout_paused_and_a_missing_one_names_the_field() {
    let mut w = gated();
    w.step("r1");
    w.step("r2");
    w.wait(10);
    answer(&mut w, Some("pg_dump: connection refused"));
    let p = w.step("r2");
    assert_eq!(p.phase, Phase::Paused);
    let ready = p.conditions.iter().find(|c| c.type_ == CondType::Ready).unwrap();
    assert_eq!(ready.reason, "BackupFailed");
    assert!(ready.message.contains("pg_dump: connection refused"), "{}", ready.message);
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")), "traffic stays on the old revision");
    assert!(p.backup_request.is_none(), "a failed run is not asked again on its own");

    let mut w = gated();
    w.step("r1");
    w.backup = Some(BackupView::default());
    let p = w.step("r2");
    let ready = p.conditions.iter().find(|c| c.type_ == CondType::Ready).unwrap();
    assert!(
        ready.message.starts_with("spec.strategy.backupGate.backupRef: Backup db does not exist"),
        "{}",
        ready.message
    );
    assert_eq!(w.active(), (Some(Color::Blue), Some("r1")));
}

/// An artifact's time is whole seconds; one taken in the second the preview started (its time
/// then reads earlier than the preview's) answers the request (seen end to end: a second run
/// was asked).
#[test]
fn an_artifact_of_the_second_the_preview_started_counts() {
    let mut w = gated();
    w.now = w.now.checked_add(SignedDuration::from_millis(700)).unwrap();
    w.step("r1");
    w.step("r2");
    let b = w.backup.as_mut().unwrap();
    b.answered = b.requested.clone();
    b.newest_verified = Some(Timestamp::from_second(w.now.as_second()).unwrap());
    w.step("r2");
    assert_eq!(w.active(), (Some(Color::Green), Some("r2")));
    assert_eq!(w.events.iter().filter(|e| **e == "BackupRequested").count(), 1);
}

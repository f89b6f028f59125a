//! The gang's plan in a small world: workers change as a kubelet would change them, time moves
//! only when a test moves it.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{Observed, Plan, Policy, Worker, decide, pause, reason, resume};
use crate::api::training::{TrainingJobStatus, TrainingPhase};

struct World {
    p: Policy,
    status: TrainingJobStatus,
    workers: BTreeMap<u32, Worker>,
    leftovers: usize,
    now: Timestamp,
}

impl World {
    fn new(workers: u32) -> Self {
        let p = Policy {
            workers,
            backoff_limit: 2,
            active_deadline: None,
            ttl_after_finished: None,
            progress_deadline: None,
            scheduling_timeout: SignedDuration::from_secs(60),
            suspend: false,
            resume: true,
        };
        Self {
            p,
            status: Default::default(),
            workers: BTreeMap::new(),
            leftovers: 0,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    /// One reconcile, carried out: stopped workers become leftovers until `settle`.
    fn tick_with(&mut self, progressed: Option<bool>) -> Plan {
        let seen = Observed { workers: self.workers.clone(), leftovers: self.leftovers, progressed };
        let plan = decide(&self.p, &self.status, &seen, self.now);
        self.status = plan.status.clone();
        if plan.stop_all {
            self.leftovers += self.workers.len();
            self.workers.clear();
        }
        for i in &plan.create {
            self.workers.insert(*i, Worker::Unplaced);
        }
        plan
    }

    fn tick(&mut self) -> Plan {
        self.tick_with(Some(false))
    }

    /// The stopped pods are gone.
    fn settle(&mut self) {
        self.leftovers = 0;
    }

    fn all(&mut self, w: Worker) {
        self.workers.values_mut().for_each(|x| *x = w.clone());
    }

    fn wait(&mut self, secs: i64) {
        self.now = self.now.checked_add(SignedDuration::from_secs(secs)).unwrap();
    }

    fn phase(&self) -> TrainingPhase {
        self.status.phase.unwrap()
    }
}

fn killed() -> Worker {
    Worker::Failed { code: Some(137), why: "OOMKilled".into() }
}

#[test]
fn a_gang_is_created_placed_run_and_finished_and_nothing_is_written_in_steady_state() {
    let mut w = World::new(3);
    let plan = w.tick();
    assert_eq!((plan.create, w.phase(), w.status.attempt), (vec![0, 1, 2], TrainingPhase::Pending, Some(1)));
    assert_eq!(plan.event.unwrap().1, reason::CREATED);
    w.all(Worker::Running);
    w.tick();
    assert_eq!(w.phase(), TrainingPhase::Running);
    let before = w.status.clone();
    let plan = w.tick();
    assert_eq!((plan.status, plan.create.len(), plan.stop_all, plan.event), (before, 0, false, None));
    w.all(Worker::Succeeded);
    let plan = w.tick();
    assert_eq!((w.phase(), plan.reason), (TrainingPhase::Succeeded, reason::SUCCEEDED));
    assert!(w.status.completion_time.is_some());
    // Finished: conditions stay, nothing is created again.
    let plan = w.tick();
    assert_eq!((plan.reason, plan.create.len(), plan.stop_all), ("", 0, false));
}

#[test]
fn one_killed_worker_restarts_the_whole_gang_once_the_old_one_is_gone() {
    let mut w = World::new(3);
    w.tick();
    w.all(Worker::Running);
    w.tick();
    w.workers.insert(1, killed());
    let plan = w.tick();
    assert!(plan.stop_all, "{plan:?}");
    assert_eq!((plan.reason, w.status.restarts), (reason::RESTARTING, Some(1)));
    assert!(plan.message.contains("worker 1 failed (OOMKilled)"), "{}", plan.message);
    // The old workers are still stopping: no new gang yet.
    let plan = w.tick();
    assert!(plan.create.is_empty() && plan.stop_leftovers);
    w.settle();
    let plan = w.tick();
    assert_eq!((plan.create, w.status.attempt), (vec![0, 1, 2], Some(2)));
}

#[test]
fn exit_codes_1_to_127_fail_the_job_and_restarts_stop_at_the_backoff_limit() {
    let mut w = World::new(2);
    w.tick();
    w.all(Worker::Running);
    w.workers.insert(0, Worker::Failed { code: Some(2), why: "Error".into() });
    let plan = w.tick();
    assert_eq!((w.phase(), plan.reason), (TrainingPhase::Failed, reason::FAILED));
    assert!(plan.message.contains("worker 0 exited with 2"), "{}", plan.message);

    // backoffLimit 2, counted across attempts: the third failure fails the job.
    let mut w = World::new(2);
    for round in 0..3 {
        w.settle();
        w.tick();
        w.all(Worker::Running);
        w.workers.insert(1, killed());
        let plan = w.tick();
        if round < 2 {
            assert_eq!((plan.reason, w.status.restarts), (reason::RESTARTING, Some(round + 1)));
        } else {
            assert_eq!((w.phase(), plan.reason), (TrainingPhase::Failed, reason::BACKOFF));
            assert!(plan.message.contains("backoffLimit (2) restarts used up"), "{}", plan.message);
        }
    }
}

#[test]
fn a_missing_worker_restarts_the_gang() {
    let mut w = World::new(3);
    w.tick();
    w.all(Worker::Running);
    w.tick();
    w.workers.remove(&2);
    let plan = w.tick();
    assert!(plan.stop_all && plan.message.contains("worker(s) [2] disappeared"), "{plan:?}");
}

#[test]
fn an_unplaced_gang_is_removed_after_the_timeout_and_placed_again_after_a_backoff() {
    let mut w = World::new(2);
    w.tick();
    w.workers.insert(0, Worker::Running);
    let plan = w.tick();
    assert_eq!((plan.stop_all, plan.recheck), (false, Some(SignedDuration::from_secs(60))));
    w.wait(60);
    let plan = w.tick();
    assert!(plan.stop_all && plan.event.as_ref().unwrap().0, "{plan:?}");
    assert_eq!((w.status.placement_failures, w.status.restarts), (Some(1), Some(0)));
    w.settle();
    w.wait(5);
    let plan = w.tick();
    assert_eq!((plan.create.len(), plan.recheck), (0, Some(SignedDuration::from_secs(5))));
    w.wait(5);
    let plan = w.tick();
    assert_eq!((plan.create, w.status.attempt), (vec![0, 1], Some(2)));
    // Placed this time: the failures in a row are forgotten.
    w.all(Worker::Running);
    w.tick();
    assert_eq!(w.status.placement_failures, None);
}

#[test]
fn a_hung_gang_is_restarted_at_the_progress_deadline() {
    let mut w = World::new(2);
    w.p.progress_deadline = Some(SignedDuration::from_secs(30));
    w.tick();
    w.all(Worker::Running);
    w.tick();
    w.wait(20);
    w.tick_with(Some(true));
    w.wait(20);
    let plan = w.tick();
    assert!(!plan.stop_all, "progress 20 s ago is within the deadline");
    assert_eq!(plan.recheck, Some(SignedDuration::from_secs(10)));
    w.wait(10);
    let plan = w.tick();
    assert!(
        plan.stop_all && plan.message.contains("no progress for spec.runPolicy.progressDeadlineSeconds (30)")
    );
    assert_eq!(w.status.restarts, Some(1));

    // Progress that cannot be read is no evidence of a hang.
    let mut w = World::new(1);
    w.p.progress_deadline = Some(SignedDuration::from_secs(30));
    w.tick();
    w.all(Worker::Running);
    w.wait(300);
    let plan = w.tick_with(None);
    assert!(!plan.stop_all && plan.recheck.is_none(), "{plan:?}");
}

#[test]
fn the_active_deadline_fails_the_job() {
    let mut w = World::new(1);
    w.p.active_deadline = Some(SignedDuration::from_secs(100));
    w.tick();
    w.all(Worker::Running);
    w.wait(99);
    assert_eq!(w.tick().recheck, Some(SignedDuration::from_secs(1)));
    w.wait(1);
    let plan = w.tick();
    assert_eq!((w.phase(), plan.reason, plan.stop_all), (TrainingPhase::Failed, reason::DEADLINE, true));
}

#[test]
fn suspended_no_worker_runs_and_resumed_a_new_attempt_starts_without_a_restart() {
    let mut w = World::new(2);
    w.tick();
    w.all(Worker::Running);
    w.p.suspend = true;
    let plan = w.tick();
    assert_eq!((w.phase(), plan.stop_all), (TrainingPhase::Suspended, true));
    w.settle();
    assert!(w.tick().event.is_none(), "one event per suspension");
    w.p.suspend = false;
    let plan = w.tick();
    assert_eq!((plan.create.len(), w.status.attempt, w.status.restarts), (2, Some(2), Some(0)));
}

#[test]
fn the_ttl_removes_a_finished_jobs_workers() {
    let mut w = World::new(1);
    w.p.ttl_after_finished = Some(SignedDuration::from_secs(60));
    w.tick();
    w.all(Worker::Succeeded);
    w.tick();
    w.wait(30);
    let plan = w.tick();
    assert_eq!((plan.stop_all, plan.recheck), (false, Some(SignedDuration::from_secs(30))));
    w.wait(30);
    let plan = w.tick();
    assert!(plan.stop_all && plan.event.unwrap().1 == reason::EXPIRED);
    w.settle();
    assert!(!w.tick().stop_all);
}

#[test]
fn a_restarted_gang_counts_its_steps_from_the_checkpoint_unless_it_starts_over() {
    use crate::api::training::CheckpointRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    for (resume, want) in [(true, Some(200)), (false, None)] {
        let mut w = World::new(2);
        w.p.resume = resume;
        w.tick();
        w.all(Worker::Running);
        w.tick();
        w.status.step = Some(350);
        w.status.last_checkpoint = Some(CheckpointRef {
            step: 200,
            path: "/c/step-200".into(),
            time: Time(w.now),
            hosts: Vec::new(),
        });
        w.workers.insert(0, killed());
        w.tick();
        w.settle();
        let plan = w.tick();
        assert_eq!((w.status.attempt, plan.status.step), (Some(2), want), "resume {resume}");
    }
}

#[test]
fn a_thermal_pause_of_pods_stops_the_gang_until_resumed_without_a_restart() {
    let mut w = World::new(2);
    w.tick();
    w.all(Worker::Running);
    w.tick();
    let mut plan = w.tick();
    pause(&mut plan, "worker 1 GPU 0 is at 90 °C".into());
    w.status = plan.status.clone();
    assert_eq!(
        (w.phase(), plan.stop_all, plan.event.as_ref().unwrap().1),
        (TrainingPhase::Paused, true, reason::THERMAL_PAUSE)
    );
    w.leftovers += w.workers.len();
    w.workers.clear();
    // Stopped: the workers terminating are stopped again, none is created, nothing is judged
    // (no "worker disappeared" restart), for as long as the guard holds.
    for _ in 0..3 {
        let plan = w.tick();
        assert!(plan.create.is_empty() && plan.event.is_none(), "{plan:?}");
        assert_eq!((w.phase(), plan.reason), (TrainingPhase::Paused, reason::THERMAL_PAUSE));
        w.settle();
        w.wait(60);
    }
    let plan = w.tick();
    let plan = resume(&w.p, plan, "every GPU is below 70 °C".into(), w.now);
    assert_eq!((plan.create.len(), plan.status.attempt, plan.status.restarts), (2, Some(2), Some(0)));
    assert_eq!(plan.event.unwrap().1, reason::THERMAL_RESUME);
    assert!(plan.message.starts_with("every GPU is below 70 °C; attempt 2"), "{}", plan.message);
}

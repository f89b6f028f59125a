use super::*;
use serde_json::json;

fn job(spec: serde_json::Value) -> TrainingJob {
    serde_json::from_value(json!({
        "apiVersion": "nova.infra.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "llm", "namespace": "ml", "uid": "u-1"}, "spec": spec,
    }))
    .unwrap()
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn unit_names_carry_the_attempt_and_the_index() {
    let j = job(json!({"command": ["/usr/bin/python3", "t.py"], "target": {"hosts": {"names": ["a"]}}}));
    let id = id(&j).unwrap();
    assert_eq!(unit(&id, 3, 1), "nova-train-ml--llm-a3-w1.service");
    assert_eq!(parse_unit(&id, "nova-train-ml--llm-a3-w1.service"), Some((3, 1)));
    assert_eq!(parse_unit(&id, "nova-train-ml--llm2-a3-w1.service"), None);
    assert_eq!(parse_unit(&id, "nova-train-ml--llm-a3-w1.timer"), None);
}

#[test]
fn workers_stay_where_their_host_is_up_and_the_others_spread() {
    let none = BTreeMap::new();
    let p = place(3, &hosts(&["b", "a"]), &none).unwrap();
    assert_eq!(p.values().cloned().collect::<Vec<_>>(), ["a", "b", "a"]);
    // Host a is down: its workers move to b and c, worker 1 stays on b.
    let p2 = place(3, &hosts(&["b", "c"]), &p).unwrap();
    assert_eq!(p2[&1], "b");
    assert_eq!(p2.values().filter(|h| *h == "c").count(), 1, "{p2:?}");
    assert!(place(1, &[], &none).unwrap_err().contains("no selected Host"));
}

#[test]
fn the_environment_points_at_rank_zeros_host_and_the_hosts_own_files() {
    let j = job(json!({"command": ["/usr/bin/python3", "t.py"], "workers": 2, "gpusPerWorker": 0,
                       "env": {"NOVA_PROGRESS_FILE": "/elsewhere", "EXTRA": "x"}}));
    let w = pods::Worker {
        attempt: 2,
        index: 1,
        restarts: 1,
        resume_from: Some("/c/step-5.safetensors"),
        trainer_image: "",
    };
    let e = env(&j, "ml--llm", &w, "10.0.0.7");
    assert_eq!(e["MASTER_ADDR"], "10.0.0.7");
    assert_eq!(e["PET_RDZV_ENDPOINT"], "10.0.0.7:29400");
    assert_eq!(e["RANK"], "1");
    assert_eq!(e["WORLD_SIZE"], "2");
    assert_eq!(e["NOVA_PROGRESS_FILE"], "/var/lib/nova/training/ml--llm/progress.jsonl");
    assert_eq!(e["NOVA_CHECKPOINT_DIR"], "/var/lib/nova/training/ml--llm/checkpoints");
    assert_eq!(e["NOVA_RESUME_FROM"], "/c/step-5.safetensors");
    assert_eq!(e["EXTRA"], "x");
    let f = env_file(&e).unwrap();
    assert!(f.contains("RANK=\"1\"\n"), "{f}");
}

#[test]
fn the_unit_runs_the_command_quoted_and_never_restarts_alone() {
    let j = job(json!({"command": ["/usr/bin/python3", "-c", "print('$HOME 100%')"]}));
    let u = service(&j, "ml--llm", 1, 0).unwrap();
    assert!(u.contains("ExecStart=\"/usr/bin/python3\" \"-c\" \"print('$$HOME 100%%')\"\n"), "{u}");
    assert!(
        u.contains("Restart=no\n")
            && u.contains("EnvironmentFile=/var/lib/nova/training/ml--llm/a1-w0.env\n")
    );
    let b =
        job(json!({"trainer": {"model": "mlp", "dataset": "synthetic-classification"}, "gpusPerWorker": 0}));
    assert!(
        service(&b, "ml--llm", 1, 0).unwrap().contains("ExecStart=\"/usr/local/lib/nova/nova\" \"train\"")
    );
}

#[test]
fn what_a_host_cannot_run_is_refused_naming_the_field() {
    let bad = [
        (json!({"image": "t:1", "command": ["t"]}), "spec.image"),
        (json!({"command": ["python3", "t.py"]}), "spec.command[0]"),
        (json!({"command": ["/bin/t"], "checkpoint": {"pvc": "c"}}), "spec.checkpoint.pvc"),
        (json!({"command": ["/bin/t"], "checkpoint": {"path": "rel/dir"}}), "spec.checkpoint.path"),
    ];
    for (spec, field) in bad {
        let e = check(&job(spec)).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
    assert!(check(&job(json!({"command": ["/bin/t"]}))).is_ok());
}

#[test]
fn units_classify_as_systemd_reports_them() {
    let out = "nova-train-ml--llm-a2-w0.service|active|\n\
               nova-train-ml--llm-a2-w1.service|failed|signal killed KILL\n\
               nova-train-ml--llm-a2-w2.service|failed|exit-code exited 2\n\
               nova-train-ml--llm-a2-w3.service|inactive|success exited 0\n\
               nova-train-ml--llm-a1-w0.service|inactive|\n\
               nova-train-ml--llm-a2-w4.service|failed|core-dump dumped SEGV\n\
               nova-train-other-a1-w0.service|active|\n";
    let got = parse_survey("ml--llm", out);
    let killed = |c, s: &str| Worker::Failed { code: Some(c), why: format!("killed by SIG{s}") };
    assert_eq!(
        got,
        [
            (2, 0, Worker::Running),
            (2, 1, killed(137, "KILL")),
            (2, 2, Worker::Failed { code: Some(2), why: "exited with 2".into() }),
            (2, 3, Worker::Succeeded),
            (1, 0, Worker::Unplaced),
            (2, 4, killed(139, "SEGV")),
        ]
    );
    let u = service(&job(json!({"command": ["/bin/t"]})), "ml--llm", 2, 1).unwrap();
    assert!(u.contains("> /var/lib/nova/training/ml--llm/a2-w1.exit'\n"), "{u}");
    assert!(survey("ml--llm").contains("/var/lib/nova/training/ml--llm/a\"$b\".exit"));
}

#[test]
fn workers_on_one_host_share_its_gpus_in_order_and_readings_parse() {
    let placed: BTreeMap<u32, String> =
        [(0, "a"), (1, "b"), (2, "a")].map(|(i, h)| (i, h.to_string())).into();
    assert_eq!(gpus_of(&placed, 0, 2), [0, 1]);
    assert_eq!(gpus_of(&placed, 2, 2), [2, 3]);
    assert_eq!(gpus_of(&placed, 1, 2), [0, 1]);
    assert_eq!(gpus_of(&placed, 1, 0), Vec::<u32>::new());
    let g = parse_gpus("0, 64, 97, 70123\n1, 88, [N/A], 512\nNVIDIA-SMI has failed\n");
    assert_eq!(
        g,
        [
            Gpu {
                index: 0,
                celsius: 64,
                utilization: Some(97),
                memory_mib: Some(70123),
                slowdown_celsius: None
            },
            Gpu { index: 1, celsius: 88, utilization: None, memory_mib: Some(512), slowdown_celsius: None },
        ]
    );
}

/// `nvidia-smi -q -d TEMPERATURE` after the CSV: each GPU's slowdown threshold by its order;
/// `N/A` and a layout without "GPU Slowdown Temp" leave it unknown.
#[test]
fn the_slowdown_thresholds_come_from_the_temperature_report() {
    let out = "0, 64, 97, 70123\n1, 81, 50, 512\n2, 40, 0, 0\n# thresholds\n\
        ==============NVSMI LOG==============\n\nTimestamp : Mon Nov 30 12:00:00 2026\n\
        Driver Version : 535.104.05\nAttached GPUs : 3\n\
        GPU 00000000:01:00.0\n    Temperature\n        GPU Current Temp : 64 C\n\
        GPU Shutdown Temp : 96 C\n        GPU Slowdown Temp : 93 C\n\
        GPU 00000000:41:00.0\n    Temperature\n        GPU Current Temp : 81 C\n\
        GPU Slowdown Temp : 83 C\n        GPU Max Operating Temp : 85 C\n\
        GPU 00000000:81:00.0\n    Temperature\n        GPU Slowdown Temp : N/A\n";
    let g = parse_gpus(out);
    let got: Vec<(u32, Option<i32>)> = g.iter().map(|g| (g.index, g.slowdown_celsius)).collect();
    assert_eq!(got, [(0, Some(93)), (1, Some(83)), (2, None)]);
    assert_eq!(parse_gpus("0, 50, 1, 1\n# thresholds\n")[0].slowdown_celsius, None);
}

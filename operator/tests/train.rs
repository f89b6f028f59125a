//! `nova train` as a process: killed with SIGKILL mid-run and started again with the same
//! command, it resumes from its newest checkpoint and logs the loss curve of a run never killed;
//! a TrainingJob file is refused as admission refuses it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use nova_train::progress::{Kind, Record};

fn nova_train(dir: &Path, progress: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nova"));
    c.args(["train", "--model", "mlp", "--dataset", "fashion-mnist", "--batch-size", "64", "--seed", "7"]);
    // Two epochs: the kill at step ~300 leaves some 1400 steps to run, far more than a poll.
    c.args(["--epochs", "2", "--every-steps", "100", "--log-every", "20"]);
    c.env("NOVA_CHECKPOINT_DIR", dir.join(format!("ckpt-{progress}")));
    c.env("NOVA_PROGRESS_FILE", dir.join(progress));
    c
}

fn records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(Record::parse).collect()
}

#[tokio::test]
async fn killed_and_restarted_it_resumes_with_the_same_loss_curve() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let whole = nova_train(dir.path(), "whole").output()?;
    anyhow::ensure!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let want: BTreeMap<u64, f64> = records(&dir.path().join("whole"))
        .iter()
        .filter(|r| r.kind == Kind::Step)
        .map(|r| (r.step, r.loss.unwrap()))
        .collect();

    let mut child = nova_train(dir.path(), "killed").spawn()?;
    let log = dir.path().join("killed");
    test_cluster::eventually("a checkpoint at step 300", Duration::from_secs(120), || {
        let rs = records(&log);
        async move { Ok::<_, anyhow::Error>(rs.iter().any(|r| r.kind == Kind::Checkpoint && r.step >= 300)) }
    })
    .await?;
    child.kill()?;
    child.wait()?;
    let before = records(&log);
    assert!(!before.iter().any(|r| r.kind == Kind::Finished), "the run ended before it was killed");

    let again = nova_train(dir.path(), "killed").output()?;
    let summary = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{summary}");
    let resumed: u64 = summary
        .split("resumed from ")
        .nth(1)
        .and_then(|p| p.split("step-").nth(1))
        .and_then(|s| s.get(..10))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resume in {summary:?}"));
    assert!(resumed >= 300, "{summary}");

    // Every step line — before the kill, and again after the resume — has the loss the
    // uninterrupted run had at that step, and the resumed run went to the end.
    let got: Vec<(u64, f64)> =
        records(&log).iter().filter(|r| r.kind == Kind::Step).map(|r| (r.step, r.loss.unwrap())).collect();
    for (step, loss) in &got {
        assert_eq!(Some(loss), want.get(step), "step {step}");
    }
    let after: Vec<u64> =
        got.iter().skip(before.iter().filter(|r| r.kind == Kind::Step).count()).map(|g| g.0).collect();
    assert_eq!(
        after.first().copied(),
        Some(resumed + 20),
        "the resumed run did not start after its checkpoint"
    );
    assert_eq!(after.last(), want.keys().last());
    Ok(())
}

#[test]
fn a_training_job_file_is_checked_as_admission_checks_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let run = |spec: &str| -> Result<(bool, String)> {
        let f = dir.path().join("job.yaml");
        let doc = format!(
            "apiVersion: nova.infra.dev/v1alpha1\nkind: TrainingJob\nmetadata: {{name: j, namespace: ml}}\nspec: {spec}\n"
        );
        std::fs::write(&f, doc)?;
        let out = Command::new(env!("CARGO_BIN_EXE_nova"))
            .args(["train", "--max-steps", "3", "-f"])
            .arg(&f)
            .output()?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
    };
    let (ok, err) = run("{workers: 2, trainer: {model: mlp, dataset: synthetic-classification}}")?;
    assert!(!ok && err.contains("the built-in trainer runs one worker"), "{err}");
    let (ok, err) = run("{image: 'trainer:1', command: [python, train.py]}")?;
    assert!(!ok && err.contains("spec.trainer: this job brings its own image"), "{err}");
    let (ok, err) =
        run("{trainer: {model: mlp, dataset: synthetic-classification, epochs: 2, learningRate: '0.01'}}")?;
    assert!(ok && err.contains("trained to step 3 in 0 epochs (max-steps)"), "{err}");
    let (ok, err) = run("{trainer: {model: cnn, dataset: synthetic-regression}}")?;
    assert!(!ok && err.contains("model cnn needs images"), "{err}");
    Ok(())
}

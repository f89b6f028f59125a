//! The built-in trainer end to end, in process: accuracy on the real Fashion-MNIST, exact resume,
//! early stopping.

use std::path::Path;

use nova_train::progress::{Kind, Record, Writer};
use nova_train::{Config, Preset, Resume, train};

fn config(model: Preset, dataset: &str) -> Config {
    Config {
        model,
        dataset: dataset.into(),
        epochs: 1,
        batch_size: 64,
        learning_rate: 1e-3,
        seed: 42,
        checkpoint_dir: None,
        every_steps: 500,
        keep_last: 3,
        patience: None,
        resume: Resume::None,
        log_every: 10,
        max_steps: None,
        worker: 0,
        device: candle_core::Device::Cpu,
    }
}

fn records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path).unwrap().lines().filter_map(Record::parse).collect()
}

fn losses(rs: &[Record]) -> Vec<(u64, f64)> {
    rs.iter().filter(|r| r.kind == Kind::Step).map(|r| (r.step, r.loss.unwrap())).collect()
}

/// The bar: the `mlp` preset reaches 85 % test accuracy on the real data set within 3 epochs.
#[test]
fn mlp_reaches_85_percent_on_fashion_mnist_in_3_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("progress.jsonl");
    let cfg = Config { epochs: 3, ..config(Preset::Mlp, "fashion-mnist") };
    let s = train(&cfg, &mut Writer::to_file(&log).unwrap()).unwrap();
    let acc = s.test_accuracy.unwrap();
    assert!(acc >= 0.85, "test accuracy {acc}");
    eprintln!("fashion-mnist mlp, 3 epochs: test accuracy {acc:.4}");
    assert_eq!((s.epochs, s.reason, s.steps), (3, "completed", 3 * 54000u64.div_ceil(64)));
    let rs = records(&log);
    let epochs: Vec<f64> =
        rs.iter().filter(|r| r.kind == Kind::Epoch).map(|r| r.validation_accuracy.unwrap()).collect();
    assert_eq!(epochs.len(), 3);
    let finished = rs.last().unwrap();
    assert_eq!((finished.kind, finished.test_accuracy), (Kind::Finished, Some(acc)));
    let steps = losses(&rs);
    assert!(steps.last().unwrap().1 < steps[0].1, "the loss did not fall: {steps:?}");
    assert!(rs.iter().filter(|r| r.kind == Kind::Step).all(|r| r.samples_per_second.unwrap_or(0.0) > 0.0));
}

/// Stopped at step 130 (the newest checkpoint is at 100) and resumed, the run logs the same
/// losses, bit for bit, as one that never stopped: weights, optimizer moments and the batch order
/// all come back.
#[test]
fn a_resumed_run_has_the_uninterrupted_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let base = Config { epochs: 3, every_steps: 50, ..config(Preset::Mlp, "synthetic-classification") };
    let whole = dir.path().join("whole.jsonl");
    train(&base, &mut Writer::to_file(&whole).unwrap()).unwrap();

    let ckpt = dir.path().join("ckpt");
    let split = dir.path().join("split.jsonl");
    let first = Config { checkpoint_dir: Some(ckpt.clone()), max_steps: Some(130), ..base.clone() };
    let s = train(&first, &mut Writer::to_file(&split).unwrap()).unwrap();
    assert_eq!((s.steps, s.reason), (130, "max-steps"));
    let second = Config { checkpoint_dir: Some(ckpt.clone()), resume: Resume::Latest, ..base.clone() };
    let s = train(&second, &mut Writer::to_file(&split).unwrap()).unwrap();
    assert_eq!(s.resumed_from, Some(ckpt.join("step-0000000100.safetensors")));
    assert_eq!(s.reason, "completed");

    let want = losses(&records(&whole));
    let got = losses(&records(&split));
    // Steps 110..130 ran twice (before the stop and after the resume): both times alike.
    let after: Vec<_> = got.iter().filter(|(s, _)| *s > 100).skip(3).copied().collect();
    assert_eq!(after, want.iter().filter(|(s, _)| *s > 100).copied().collect::<Vec<_>>());
    assert_eq!(&got[..13], &want[..13]);
    // keepLast 3: only the three newest step checkpoints remain, and the best one.
    let names: Vec<String> =
        nova_train::checkpoint::list(&ckpt).into_iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(ckpt.join("best.safetensors").exists());
}

/// A checkpoint of another model is refused, naming both.
#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let base = Config {
        every_steps: 10,
        max_steps: Some(10),
        checkpoint_dir: Some(ckpt.clone()),
        ..config(Preset::Linear, "synthetic-classification")
    };
    train(&base, &mut Writer::to_file(&dir.path().join("p")).unwrap()).unwrap();
    let other = Config { model: Preset::Mlp, resume: Resume::Latest, ..base };
    let e = train(&other, &mut Writer::to_file(&dir.path().join("p")).unwrap()).unwrap_err().to_string();
    assert!(
        e.contains("written by model linear on synthetic-classification with seed 42, this run is model mlp"),
        "{e}"
    );
}

/// With nothing to learn (learning rate 0) the validation loss never improves: patience 2 stops
/// after epoch 3. Learning, the same run goes on to the end.
#[test]
fn early_stopping_stops_when_validation_stops_improving() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("p");
    let base = Config { epochs: 6, patience: Some(2), ..config(Preset::Linear, "synthetic-regression") };
    let stuck = Config { learning_rate: 0.0, ..base.clone() };
    let s = train(&stuck, &mut Writer::to_file(&log).unwrap()).unwrap();
    assert_eq!((s.reason, s.epochs), ("early-stopped", 3));
    let s = train(&base, &mut Writer::to_file(&log).unwrap()).unwrap();
    assert_eq!((s.reason, s.epochs), ("completed", 6));
}

//! The training loop: deterministic batch order from the seed and the epoch, so a run resumed from
//! a checkpoint continues exactly where the killed one stood.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};

use crate::Error;
use crate::checkpoint::{self, Position};
use crate::data::{Dataset, Split, Targets};
use crate::model::{self, Model, Preset};
use crate::optim::{AdamW, Hyper};
use crate::progress::{Kind, Record, Writer};
use crate::rng::Rng;

/// Where a run starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Resume {
    /// From the newest step checkpoint in the checkpoint directory, if any.
    Latest,
    /// From scratch.
    None,
    /// From this checkpoint file (`NOVA_RESUME_FROM`).
    From(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub model: Preset,
    pub dataset: String,
    pub epochs: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub checkpoint_dir: Option<PathBuf>,
    pub every_steps: u64,
    pub keep_last: usize,
    /// Stop after this many epochs without a better validation loss.
    pub patience: Option<u64>,
    pub resume: Resume,
    /// A step record every this many steps.
    pub log_every: u64,
    /// Stop after this many steps in all (benchmarks, tests).
    pub max_steps: Option<u64>,
    pub worker: u32,
    pub device: Device,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub steps: u64,
    pub epochs: u64,
    pub reason: &'static str,
    pub resumed_from: Option<PathBuf>,
    pub validation_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
}

struct Run<'a> {
    cfg: &'a Config,
    data: Dataset,
    model: Model,
    opt: AdamW,
    pos: Position,
    out: &'a mut Writer,
}

/// Trains per `cfg`, writing the progress protocol to `out`.
pub fn train(cfg: &Config, out: &mut Writer) -> Result<Summary, Error> {
    if cfg.batch_size == 0 || cfg.epochs == 0 || cfg.every_steps == 0 || cfg.keep_last == 0 {
        return Err(Error::Config(
            "batch size, epochs, checkpoint interval and keepLast must be at least 1".into(),
        ));
    }
    let data = Dataset::load(&cfg.dataset, cfg.seed)?;
    let outputs = match &data.train.targets {
        Targets::Classes { classes, .. } => *classes,
        Targets::Values(_) => 1,
    };
    let model = Model::new(cfg.model, data.train.dim, outputs, data.image, cfg.seed, &cfg.device)?;
    let opt = AdamW::new(&model.params, Hyper::with_lr(cfg.learning_rate))?;
    let pos = Position {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        best_validation_loss: None,
        epochs_since_best: 0,
        model: cfg.model.as_str().into(),
        dataset: cfg.dataset.clone(),
        seed: cfg.seed,
    };
    let mut run = Run { cfg, data, model, opt, pos, out };
    let resumed_from = run.resume()?;
    let reason = run.epochs()?;
    run.finish(reason, resumed_from)
}

impl Run<'_> {
    fn resume(&mut self) -> Result<Option<PathBuf>, Error> {
        let path = match (&self.cfg.resume, &self.cfg.checkpoint_dir) {
            (Resume::None, _) | (Resume::Latest, None) => return Ok(None),
            (Resume::From(p), _) => p.clone(),
            (Resume::Latest, Some(dir)) => match checkpoint::list(dir).pop() {
                Some((_, p)) => p,
                None => return Ok(None),
            },
        };
        let (tensors, pos) = checkpoint::load(&path, &self.cfg.device)?;
        let bad = |why: String| Error::Checkpoint(format!("{}: {why}", path.display()));
        let want = (&self.pos.model, &self.pos.dataset, self.pos.seed);
        if (&pos.model, &pos.dataset, pos.seed) != want {
            return Err(bad(format!(
                "written by model {} on {} with seed {}, this run is model {} on {} with seed {}",
                pos.model, pos.dataset, pos.seed, want.0, want.1, want.2
            )));
        }
        for (name, var) in &self.model.params {
            let t = tensors.get(name).ok_or_else(|| bad(format!("no tensor {name}")))?;
            var.set(t).map_err(|e| bad(format!("{name}: {e}")))?;
        }
        self.opt.restore(pos.step, &tensors).map_err(bad)?;
        self.pos = pos;
        Ok(Some(path))
    }

    /// Trains the remaining epochs; returns why it stopped.
    fn epochs(&mut self) -> Result<&'static str, Error> {
        let n = self.data.train.len();
        let batches = n.div_ceil(self.cfg.batch_size) as u64;
        let mut since = (Instant::now(), self.pos.step);
        while self.pos.epoch < self.cfg.epochs {
            let mut order: Vec<usize> = (0..n).collect();
            Rng::derive(self.cfg.seed, 1 + self.pos.epoch).shuffle(&mut order);
            for b in self.pos.batch_in_epoch..batches {
                if self.cfg.max_steps.is_some_and(|m| self.pos.step >= m) {
                    return Ok("max-steps");
                }
                let start = b as usize * self.cfg.batch_size;
                let rows = &order[start..(start + self.cfg.batch_size).min(n)];
                let loss = self.step(rows)?;
                self.pos.batch_in_epoch = b + 1;
                self.after_step(loss, &mut since)?;
            }
            if self.end_epoch()? {
                return Ok("early-stopped");
            }
        }
        Ok("completed")
    }

    fn step(&mut self, rows: &[usize]) -> Result<f64, Error> {
        let (x, y) = batch(&self.data.train, rows, &self.cfg.device)?;
        let loss = model::loss(&self.model.forward(&x)?, &y)?;
        let grads = loss.backward()?;
        self.opt.step(&self.model.params, &grads)?;
        self.pos.step += 1;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }

    fn after_step(&mut self, loss: f64, since: &mut (Instant, u64)) -> Result<(), Error> {
        let step = self.pos.step;
        if step.is_multiple_of(self.cfg.log_every) {
            let mut r = self.record(Kind::Step);
            r.loss = Some(loss);
            let secs = since.0.elapsed().as_secs_f64();
            let samples = (step - since.1) as f64 * self.cfg.batch_size as f64;
            r.samples_per_second = (secs > 0.0).then(|| samples / secs);
            *since = (Instant::now(), step);
            self.emit(&r)?;
        }
        if let Some(dir) =
            self.cfg.checkpoint_dir.clone().filter(|_| step.is_multiple_of(self.cfg.every_steps))
        {
            let path = self.save(&dir, false)?;
            checkpoint::prune(&dir, self.cfg.keep_last)?;
            let mut r = self.record(Kind::Checkpoint);
            r.checkpoint = Some(path.display().to_string());
            self.emit(&r)?;
        }
        Ok(())
    }

    /// Validates, keeps the best checkpoint; true when early stopping says stop.
    fn end_epoch(&mut self) -> Result<bool, Error> {
        let (loss, accuracy) = evaluate(&self.model, &self.data.validation, &self.cfg.device)?;
        let mut r = self.record(Kind::Epoch);
        (r.validation_loss, r.validation_accuracy) = (Some(loss), accuracy);
        self.pos.epoch += 1;
        self.pos.batch_in_epoch = 0;
        if self.pos.best_validation_loss.is_none_or(|best| loss < best) {
            self.pos.best_validation_loss = Some(loss);
            self.pos.epochs_since_best = 0;
            if let Some(dir) = self.cfg.checkpoint_dir.clone() {
                self.save(&dir, true)?;
            }
        } else {
            self.pos.epochs_since_best += 1;
        }
        self.emit(&r)?;
        Ok(self.cfg.patience.is_some_and(|p| self.pos.epochs_since_best >= p))
    }

    fn finish(mut self, reason: &'static str, resumed_from: Option<PathBuf>) -> Result<Summary, Error> {
        let (_, test_accuracy) = evaluate(&self.model, &self.data.test, &self.cfg.device)?;
        let mut r = self.record(Kind::Finished);
        (r.reason, r.test_accuracy) = (Some(reason.into()), test_accuracy);
        self.emit(&r)?;
        Ok(Summary {
            steps: self.pos.step,
            epochs: self.pos.epoch,
            reason,
            resumed_from,
            validation_loss: self.pos.best_validation_loss,
            test_accuracy,
        })
    }

    /// A checkpoint of the weights and the optimizer's moments at the current position.
    fn save(&self, dir: &Path, best: bool) -> Result<PathBuf, Error> {
        let weights = self.model.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone()));
        let tensors: Vec<(String, Tensor)> = weights.chain(self.opt.state()?).collect();
        checkpoint::save(dir, best, &self.pos, tensors.iter().map(|(n, t)| (n.clone(), t)))
    }

    fn record(&self, kind: Kind) -> Record {
        Record::new(kind, self.cfg.worker, self.pos.step, self.pos.epoch)
    }

    fn emit(&mut self, r: &Record) -> Result<(), Error> {
        self.out.write(r).map_err(|e| Error::Progress(e.to_string()))
    }
}

/// The rows of `split` as a batch on `dev`.
fn batch(split: &Split, rows: &[usize], dev: &Device) -> Result<(Tensor, Tensor), Error> {
    let dim = split.dim;
    let mut x = Vec::with_capacity(rows.len() * dim);
    rows.iter().for_each(|&i| x.extend_from_slice(&split.features[i * dim..(i + 1) * dim]));
    let x = Tensor::from_vec(x, (rows.len(), dim), dev)?;
    let y = match &split.targets {
        Targets::Classes { labels, .. } => {
            Tensor::from_vec(rows.iter().map(|&i| labels[i]).collect(), rows.len(), dev)?
        }
        Targets::Values(v) => Tensor::from_vec(rows.iter().map(|&i| v[i]).collect(), rows.len(), dev)?,
    };
    Ok((x, y))
}

/// Mean loss, and accuracy for classifiers, over a whole split.
pub(crate) fn evaluate(model: &Model, split: &Split, dev: &Device) -> Result<(f64, Option<f64>), Error> {
    let n = split.len();
    let (mut loss, mut correct) = (0.0, 0u64);
    for start in (0..n).step_by(1000) {
        let rows: Vec<usize> = (start..(start + 1000).min(n)).collect();
        let (x, y) = batch(split, &rows, dev)?;
        let out = model.forward(&x)?;
        loss += f64::from(model::loss(&out, &y)?.to_scalar::<f32>()?) * rows.len() as f64;
        if y.dtype() == DType::U32 {
            let hits = out.argmax(D::Minus1)?.eq(&y)?.to_dtype(DType::U32)?.sum_all()?;
            correct += u64::from(hits.to_scalar::<u32>()?);
        }
    }
    let accuracy = matches!(split.targets, Targets::Classes { .. }).then(|| correct as f64 / n as f64);
    Ok((loss / n as f64, accuracy))
}

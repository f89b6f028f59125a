//! Checkpoints: one safetensors file per checkpoint holding the weights and the optimizer's
//! moments, with the position in the run in the file's own metadata. Written to a temporary name
//! and renamed, so a run killed mid-write leaves the previous checkpoint as the newest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Where the run stood when the checkpoint was written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// Optimizer steps done (the global step).
    pub step: u64,
    /// The epoch being trained (0-based) and how many of its batches are done.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Best validation loss so far and epochs since it improved (early stopping).
    #[serde(default)]
    pub best_validation_loss: Option<f64>,
    #[serde(default)]
    pub epochs_since_best: u64,
    /// What trained: a checkpoint of another model or data set is refused on resume.
    pub model: String,
    pub dataset: String,
    pub seed: u64,
}

const META: &str = "nova";
const BEST: &str = "best.safetensors";

fn step_file(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:010}.safetensors"))
}

/// Writes `step-<step>.safetensors` (or `best.safetensors`) and returns its path.
pub fn save<'a>(
    dir: &Path,
    best: bool,
    pos: &Position,
    tensors: impl Iterator<Item = (String, &'a Tensor)>,
) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Checkpoint(format!("{}: {e}", dir.display())))?;
    let path = if best { dir.join(BEST) } else { step_file(dir, pos.step) };
    let tmp = dir.join(format!(".tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("ckpt")));
    let meta = HashMap::from([(META.to_string(), serde_json::to_string(pos).expect("plain struct"))]);
    let data: Vec<(String, &Tensor)> = tensors.collect();
    safetensors::serialize_to_file(data, Some(meta), &tmp)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    Ok(path)
}

/// The step checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Deletes all but the newest `keep` step checkpoints (the best one is never pruned).
pub fn prune(dir: &Path, keep: usize) -> Result<(), Error> {
    let found = list(dir);
    for (_, path) in found.iter().take(found.len().saturating_sub(keep)) {
        std::fs::remove_file(path).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Reads a checkpoint's tensors and position.
pub fn load(path: &Path, dev: &Device) -> Result<(HashMap<String, Tensor>, Position), Error> {
    let bad = |why: String| Error::Checkpoint(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let pos = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META))
        .ok_or_else(|| bad("not a Nova checkpoint (no \"nova\" metadata)".into()))?;
    let pos: Position = serde_json::from_str(pos).map_err(|e| bad(e.to_string()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, dev).map_err(|e| bad(e.to_string()))?;
    Ok((tensors, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(step: u64) -> Position {
        Position {
            step,
            epoch: 1,
            batch_in_epoch: 3,
            best_validation_loss: Some(0.5),
            epochs_since_best: 0,
            model: "mlp".into(),
            dataset: "synthetic-classification".into(),
            seed: 1,
        }
    }

    #[test]
    fn saved_checkpoints_read_back_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::new(&[1.5f32, -2.0], &Device::Cpu).unwrap();
        for step in [10, 20, 30] {
            save(dir.path(), false, &pos(step), [("w".to_string(), &t)].into_iter()).unwrap();
        }
        save(dir.path(), true, &pos(20), [("w".to_string(), &t)].into_iter()).unwrap();
        prune(dir.path(), 2).unwrap();
        let steps: Vec<u64> = list(dir.path()).into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [20, 30]);
        let (tensors, p) = load(&step_file(dir.path(), 30), &Device::Cpu).unwrap();
        assert_eq!(p, pos(30));
        assert_eq!(tensors["w"].to_vec1::<f32>().unwrap(), [1.5, -2.0]);
        assert!(dir.path().join(BEST).exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
    }

    #[test]
    fn a_foreign_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.safetensors");
        let t = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("w", t)]), &f).unwrap();
        let e = load(&f, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("x.safetensors: not a Nova checkpoint"), "{e}");
    }
}

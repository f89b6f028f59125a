//! The presets: the parameters are named `Var`s in a fixed order, so a checkpoint is a flat map of
//! names to tensors and the optimizer's moments sit beside them under the same names.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor, Var};

use crate::Error;
use crate::rng::Rng;

/// Model presets of the built-in trainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// One linear layer (softmax regression or linear regression).
    Linear,
    /// One hidden layer of 256 ReLU units.
    Mlp,
    /// Two 3×3 convolutions (16, 32 channels) with max pooling, then a linear layer; images only.
    Cnn,
}

impl Preset {
    /// The name `--model` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "linear" => Ok(Self::Linear),
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            _ => Err(Error::Config(format!("model {s:?}: use linear, mlp or cnn"))),
        }
    }
}

const HIDDEN: usize = 256;

/// A preset with its parameters.
pub struct Model {
    preset: Preset,
    pub params: BTreeMap<String, Var>,
    image: Option<(usize, usize, usize)>,
}

impl Model {
    /// Weights drawn as PyTorch draws them for `nn.Linear` / `nn.Conv2d` (uniform in
    /// ±1/√fan_in), from the seed.
    pub fn new(
        preset: Preset,
        inputs: usize,
        outputs: usize,
        image: Option<(usize, usize, usize)>,
        seed: u64,
        dev: &Device,
    ) -> Result<Self, Error> {
        let mut r = Rng::derive(seed, 0x1417);
        let mut params = BTreeMap::new();
        let mut layer = |name: &str, shape: &[usize], fan_in: usize| -> Result<(), Error> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w: Vec<f32> = (0..shape.iter().product()).map(|_| r.symmetric(bound)).collect();
            let b: Vec<f32> = (0..shape[0]).map(|_| r.symmetric(bound)).collect();
            params.insert(format!("{name}.weight"), Var::from_tensor(&Tensor::from_vec(w, shape, dev)?)?);
            params.insert(format!("{name}.bias"), Var::from_tensor(&Tensor::from_vec(b, shape[0], dev)?)?);
            Ok(())
        };
        match preset {
            Preset::Linear => layer("fc", &[outputs, inputs], inputs)?,
            Preset::Mlp => {
                layer("fc1", &[HIDDEN, inputs], inputs)?;
                layer("fc2", &[outputs, HIDDEN], HIDDEN)?;
            }
            Preset::Cnn => {
                let Some((c, h, w)) = image else {
                    return Err(Error::Config(
                        "model cnn needs an image data set (fashion-mnist or IDX files)".into(),
                    ));
                };
                layer("conv1", &[16, c, 3, 3], c * 9)?;
                layer("conv2", &[32, 16, 3, 3], 16 * 9)?;
                // valid 3×3 convolution, then 2×2 pooling, twice
                let side = |s: usize| ((s - 2) / 2 - 2) / 2;
                let flat = 32 * side(h) * side(w);
                layer("fc", &[outputs, flat], flat)?;
            }
        }
        Ok(Self { preset, params, image })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params[name].as_tensor()
    }

    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let w = self.p(&format!("{name}.weight"));
        x.matmul(&w.t()?)?.broadcast_add(self.p(&format!("{name}.bias")))
    }

    fn conv(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let b = self.p(&format!("{name}.bias"));
        x.conv2d(self.p(&format!("{name}.weight")), 0, 1, 1, 1)?.broadcast_add(&b.reshape((
            1,
            b.dim(0)?,
            1,
            1,
        ))?)
    }

    /// Logits (classification) or one value per row (regression).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.preset {
            Preset::Linear => self.linear(x, "fc"),
            Preset::Mlp => self.linear(&self.linear(x, "fc1")?.relu()?, "fc2"),
            Preset::Cnn => {
                let (c, h, w) = self.image.expect("checked in new");
                let x = x.reshape((x.dim(0)?, c, h, w))?;
                let x = self.conv(&x, "conv1")?.relu()?.max_pool2d(2)?;
                let x = self.conv(&x, "conv2")?.relu()?.max_pool2d(2)?;
                self.linear(&x.flatten_from(1)?, "fc")
            }
        }
    }
}

/// Cross-entropy against class indices, or mean squared error against values.
pub fn loss(out: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if targets.dtype() == DType::U32 {
        candle_nn::loss::cross_entropy(out, targets)
    } else {
        candle_nn::loss::mse(&out.squeeze(D::Minus1)?, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_weights() {
        let dev = Device::Cpu;
        let a = Model::new(Preset::Mlp, 16, 4, None, 9, &dev).unwrap();
        let b = Model::new(Preset::Mlp, 16, 4, None, 9, &dev).unwrap();
        let w = |m: &Model| m.p("fc1.weight").flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&Model::new(Preset::Mlp, 16, 4, None, 10, &dev).unwrap()));
        let bound = 1.0 / 4.0;
        assert!(w(&a).iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn the_cnn_shapes_fit_28_by_28_and_it_needs_images() {
        let dev = Device::Cpu;
        let m = Model::new(Preset::Cnn, 784, 10, Some((1, 28, 28)), 1, &dev).unwrap();
        let x = Tensor::zeros((3, 784), DType::F32, &dev).unwrap();
        assert_eq!(m.forward(&x).unwrap().dims(), &[3, 10]);
        let e = Model::new(Preset::Cnn, 16, 4, None, 1, &dev).err().unwrap().to_string();
        assert!(e.contains("model cnn needs an image data set"), "{e}");
    }
}
